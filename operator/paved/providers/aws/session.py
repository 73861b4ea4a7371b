"""boto3 clients and the one wrapper every AWS call goes through.

Why one wrapper: it is the single place that (1) counts calls for
`paved_provider_api_calls_total{provider,operation}` (the steady-state cost of an intent is
a product promise, so it is measured where the calls are made, not inferred), (2) retries
transient failures with bounded exponential backoff and jitter, and (3) turns botocore
errors into ProviderError with messages rebuilt without any value the request carried: an
answer about the request's values (ValidationError, InvalidParameterValue, ...) is shown by
its code and the names of the parameters it mentions, since AWS may echo an offending value
("Value '...' at 'masterUserPassword' failed to satisfy constraint", "... password
<value> ..."); other answers lose their quoted spans; botocore's ParamValidationError,
which echoes every offending value, keeps only the parameters' names; other botocore errors
are named by type (and endpoint, for connection failures). It honours the caller's deadline
(paved.providers.deadline): no attempt starts and no backoff sleeps past it.

Clients are created once per (service, region, endpoint) and shared between Kopf's handler
threads: boto3 clients are thread-safe, sessions are not, so creation is locked.
`PAVED_AWS_ENDPOINT_URL` points every client at an AWS-compatible endpoint (moto in tests).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import botocore.parsers
import tenacity

from paved import fence
from paved.errors import unquoted
from paved.metrics import count_call
from paved.providers import deadline
from paved.providers.base import ProviderError

log = logging.getLogger(__name__)

ENDPOINT_ENV = "PAVED_AWS_ENDPOINT_URL"
REGION_ENVS = ("PAVED_AWS_REGION", "AWS_REGION", "AWS_DEFAULT_REGION")
DEFAULT_REGION = "us-east-1"

# botocore's own retries stay in "standard" mode (it knows the throttling codes and keeps a
# retry quota) but bounded to 2 attempts; the wrapper's tenacity loop is the outer bound.
# Worst case per logical call: ATTEMPTS x 2 HTTP attempts within roughly MAX_WAIT x ATTEMPTS.
BOTOCORE_CONFIG = botocore.config.Config(
    retries={"mode": "standard", "total_max_attempts": 2},
    connect_timeout=5,
    read_timeout=30,
)
ATTEMPTS = 3
MAX_WAIT_SECONDS = 4.0

_THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "SlowDown",
        "PriorRequestNotComplete",
    }
)
# Answers about the values of the request: their messages may echo a value.
_VALIDATION_CODES = frozenset(
    {
        "ValidationError",
        "ValidationException",
        "InvalidParameter",
        "InvalidParameterValue",
        "InvalidParameterValueException",
        "InvalidParameterCombination",
        "InvalidParameterException",
        "InvalidInput",
        "MalformedPolicyDocument",
        "MalformedPolicyDocumentException",
        "SerializationException",
    }
)
_SERVER_CODES = frozenset({"InternalFailure", "InternalError", "ServiceUnavailable", "RequestTimeout", "RequestTimeoutException"})
_CONNECTION_ERRORS = (
    botocore.exceptions.ConnectionError,  # EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError, ...
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.HTTPClientError,
)

_clients: dict[tuple[str, str, str | None], Any] = {}
_clients_lock = threading.Lock()


def region() -> str:
    return next((os.environ[name] for name in REGION_ENVS if os.environ.get(name)), DEFAULT_REGION)


def endpoint_url() -> str | None:
    return os.environ.get(ENDPOINT_ENV) or None


def client(service: str, region_name: str | None = None) -> Any:
    """The shared boto3 client for `service` in `region_name` (default: the configured region)."""
    key = (service, region_name or region(), endpoint_url())
    with _clients_lock:
        if key not in _clients:
            _clients[key] = boto3.session.Session().client(
                service, region_name=key[1], endpoint_url=key[2], config=BOTOCORE_CONFIG
            )
        return _clients[key]


def reset_clients() -> None:
    """Forget cached clients (tests that change the endpoint or region)."""
    with _clients_lock:
        _clients.clear()


class AwsError(ProviderError):
    """A failed AWS call: `code` is the AWS error code ("DBInstanceNotFound", ...) or the
    botocore exception name for failures that never reached AWS."""

    def __init__(self, message: str, *, code: str, operation: str, retryable: bool, field: str | None = None) -> None:
        super().__init__(message, retryable=retryable, field=field)
        self.code = code
        self.operation = operation


@dataclass(frozen=True)
class _Failure:
    code: str
    message: str  # AWS's own words for a ClientError: call() never shows them as they are
    transient: bool  # worth retrying right now (throttling, 5xx, connection)
    retryable: bool  # worth retrying later (the handler's backoff)


def _classify(exc: Exception) -> _Failure:
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        transient = code in _THROTTLING_CODES or code in _SERVER_CODES or status >= 500
        # 4xx other than throttling: the request itself is wrong or not allowed now. State
        # conflicts ("instance is modifying") clear up by themselves, so they stay retryable.
        state_conflict = code.startswith("Invalid") and "State" in code  # InvalidDBInstanceState, ...
        retryable = transient or state_conflict
        return _Failure(code, str(error.get("Message", "")), transient, retryable)  # AWS's words: see call()
    if isinstance(exc, botocore.parsers.ResponseParserError):
        # An error page instead of an AWS answer (an overloaded endpoint or proxy answering
        # 5xx in HTML): transient. Its body is not repeated here.
        return _Failure("ResponseParserError", "the endpoint answered with an unparsable response", True, True)
    if isinstance(exc, _CONNECTION_ERRORS):
        endpoint = exc.kwargs.get("endpoint_url")
        return _Failure(type(exc).__name__, f"no answer from {endpoint}" if endpoint else "no answer", True, True)
    if isinstance(exc, (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError)):
        return _Failure(type(exc).__name__, "no usable AWS credentials in the operator's environment", False, False)
    if isinstance(exc, botocore.exceptions.ParamValidationError):
        names = sorted(set(_INVALID_PARAMETER.findall(str(exc.kwargs.get("report", "")))))
        return _Failure(type(exc).__name__, f"invalid parameters: {', '.join(names) or 'unknown'}", False, False)
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return _Failure(type(exc).__name__, "refused by botocore before any request", False, False)
    raise exc


# "Invalid type for parameter X, value: ..." / "Missing required parameter in input: \"X\"" / ...
_INVALID_PARAMETER = re.compile(r"""parameter(?: in input)?:? "?([\w.\[\]]+?)"?(?:,|$)""", re.MULTILINE)


def _parameter_names(params: Any) -> set[str]:
    """Every key of the request's parameters, nested ones included (`Tags`, `Key`, ...)."""
    if isinstance(params, dict):
        return set(params) | {name for value in params.values() for name in _parameter_names(value)}
    if isinstance(params, (list, tuple)):
        return {name for item in params for name in _parameter_names(item)}
    return set()


def _about_parameters(message: str, params: dict[str, Any]) -> str:
    """A validation answer by the names of the parameters it mentions (AWS writes them in
    either case: `MasterUserPassword`, `masterUserPassword`), never by its text."""
    lowered = message.lower()
    named = sorted(name for name in _parameter_names(params) if name.lower() in lowered)
    return f"the request was refused as invalid; parameters named in the answer: {', '.join(named)}" if named \
        else "the request was refused as invalid"


_TIMEOUTS = (botocore.exceptions.ReadTimeoutError, botocore.exceptions.ConnectTimeoutError)


def call(provider: str, aws_client: Any, operation: str, *, retry_timeouts: bool = True, **params: Any) -> dict[str, Any]:
    """Call `aws_client.<operation>(**params)`: counted, retried when transient, errors mapped.

    Every attempt is counted (an attempt is a call AWS may bill or throttle). Raises AwsError;
    its message names the operation and the AWS code and never contains a parameter's value.
    `retry_timeouts=False`: an attempt that timed out is final (it already waited in full;
    the secret stores leave slow backends to the engine's backoff and circuit breaker).
    """
    if not fence.WRITES.permits():
        raise AwsError(f"{operation} not sent: {fence.WRITES.why_not()}", code=fence.REASON, operation=operation, retryable=True)
    method = getattr(aws_client, operation)

    def attempt() -> dict[str, Any]:
        deadline.check()
        count_call(provider, operation)
        return method(**params)

    def transient(exc: BaseException) -> bool:
        if not retry_timeouts and isinstance(exc, _TIMEOUTS):
            return False
        return isinstance(exc, Exception) and not isinstance(exc, ProviderError) and _is_transient(exc)

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(transient),
        wait=deadline.wait_within(tenacity.wait_random_exponential(multiplier=0.5, max=MAX_WAIT_SECONDS)),
        stop=tenacity.stop_after_attempt(ATTEMPTS) | deadline.stop_at_deadline,
        reraise=True,
        before_sleep=lambda state: log.info("aws %s %s: transient failure, retry %d", provider, operation, state.attempt_number),
    )
    try:
        return retrying(attempt)
    except Exception as exc:  # noqa: BLE001 - non-AWS errors are re-raised unchanged by _classify
        failure = _classify(exc)
    # Raised outside the except block so the original exception (whose text may hold a secret
    # parameter) is not even attached as __context__.
    detail = _about_parameters(failure.message, params) if failure.code in _VALIDATION_CODES else unquoted(failure.message)
    message = f"{operation} failed: {failure.code}: {detail}"
    raise AwsError(message, code=failure.code, operation=operation, retryable=failure.retryable)


def _is_transient(exc: Exception) -> bool:
    try:
        return _classify(exc).transient
    except Exception:  # noqa: BLE001 - not an AWS error: never retried here
        return False
