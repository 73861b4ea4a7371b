"""Logging that cannot show a secret value, whatever the level: `paved run -v` included.

`paved run --verbose` sets the root logger to DEBUG (kopf.configure), and every library
logger inherits it unless it has a level of its own. At DEBUG, botocore logs each request's
parameters (a MasterUserPassword) and each response body (a SecretString); urllib3 and
requests log request lines; hvac and the kubernetes client log what they send and receive;
aiohttp (Kopf's client) likewise; celpy logs the arguments of each evaluated function, and
at ERROR those of a function that failed unexpectedly. So `secure()`:

- pins those libraries' loggers to WARNING (celpy to CRITICAL, above anything it logs),
  whatever the root level: their own warnings and errors still show, their wire traces
  never do;
- makes every handler of the root logger format tracebacks by frames and type names only
  (paved.errors.safe_traceback): an exception's message, which may quote a value, never
  reaches the log through `log.exception`, `exc_info=True` or a library's traceback.

`paved run` calls it right after configuring Kopf's logging (paved.runtime).
"""

from __future__ import annotations

import logging
from typing import Any

from paved.errors import safe_traceback

WIRE_LOGGERS = {
    "aiohttp": logging.WARNING,
    "boto3": logging.WARNING,
    "botocore": logging.WARNING,
    "celpy": logging.CRITICAL,  # its ERROR lines print a failed function's arguments
    "hvac": logging.WARNING,
    "kubernetes": logging.WARNING,
    "oauthlib": logging.WARNING,
    "requests": logging.WARNING,
    "requests_oauthlib": logging.WARNING,
    "s3transfer": logging.WARNING,
    "urllib3": logging.WARNING,
}


def pin_wire_loggers() -> None:
    """Each of WIRE_LOGGERS at its level; their child loggers inherit it (a lower level set on
    one of them is reset)."""
    for name, level in WIRE_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    for name, child in list(logging.root.manager.loggerDict.items()):
        wire = name.split(".", 1)[0]
        if isinstance(child, logging.Logger) and "." in name and wire in WIRE_LOGGERS:
            if child.level != logging.NOTSET and child.level < WIRE_LOGGERS[wire]:
                child.setLevel(logging.NOTSET)


def _format_exception(exc_info: Any) -> str:
    return safe_traceback(exc_info[1]) if exc_info and exc_info[1] is not None else ""


def safe_tracebacks(logger: logging.Logger | None = None) -> None:
    """Every handler of `logger` (the root) formats exceptions by frames and type names only."""
    for handler in (logger or logging.getLogger()).handlers:
        if handler.formatter is None:
            handler.setFormatter(logging.Formatter())
        handler.formatter.formatException = _format_exception  # type: ignore[union-attr, method-assign]


def secure() -> None:
    pin_wire_loggers()
    safe_tracebacks()
