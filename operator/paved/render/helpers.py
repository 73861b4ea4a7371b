"""Filters and functions available to composition templates.

They exist so that compositions never hand-roll escaping, naming or validation: cloud and
Kubernetes names are derived deterministically (a retry or a restart finds what it created),
values are embedded as JSON (valid YAML, so a value can never break the document), and bad
input is refused with `fail()` before anything reaches a provider.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any, NoReturn

import yaml

from paved.api.fields import derived_name
from paved.render.errors import RenderError
from paved.render.values import Pending

DNS_LABEL_MAX = 63
_NOT_LABEL = re.compile(r"[^a-z0-9]+")


def stable_id(*parts: Any, length: int = 8) -> str:
    """A short hex digest of `parts`: the same parts always give the same id.

    Used to make names unique (e.g. from an intent's uid) without making them unreadable.
    """
    if not 1 <= length <= 64:
        raise RenderError(f"stable_id: length must be 1..64, got {length}")
    joined = "\x1f".join(str(part) for part in parts)
    return hashlib.sha256(joined.encode()).hexdigest()[:length]


def dns_label(value: Any, max: int = DNS_LABEL_MAX) -> str:
    """`value` as a DNS-1123 label of at most `max` characters.

    Lowercases, turns every run of other characters into one hyphen (so never `--`, which
    RDS identifiers also forbid) and trims hyphens at both ends. When the result is too long
    it is cut and suffixed with `-` + a stable hash of the original value, so two long names
    that share a prefix stay distinct and the same input always gives the same label.
    """
    if not 1 <= max <= DNS_LABEL_MAX:
        raise RenderError(f"dns_label: max must be 1..{DNS_LABEL_MAX}, got {max}")
    text = str(value)
    label = _NOT_LABEL.sub("-", text.lower()).strip("-")
    if label and len(label) <= max:
        return label
    digest = stable_id(text, length=min(8, max))
    room = max - len(digest) - 1
    prefix = label[:room].rstrip("-") if room > 0 else ""
    return f"{prefix}-{digest}" if prefix else digest


def b64encode(value: Any) -> str:
    """Base64 of the UTF-8 text of `value` (for Secret `data`)."""
    return base64.b64encode(str(value).encode()).decode("ascii")


def _json_default(value: Any) -> str:
    # Pending placeholders become their text; a StrictUndefined raises its own precise error
    # from str(); other non-JSON values (dates from YAML) become their text.
    return str(value)


_ENCODER = json.JSONEncoder(ensure_ascii=False, default=_json_default)


def to_json(value: Any, indent: int | None = None) -> str:
    """`value` as JSON. JSON is YAML, so `key: {{ x | to_json }}` is always a safe embedding."""
    if indent is None:
        return _ENCODER.encode(value)  # one shared encoder: this filter runs dozens of times per render
    return json.dumps(value, default=_json_default, ensure_ascii=False, indent=indent)


class _Dumper(yaml.SafeDumper):
    """A safe YAML dumper that also writes Pending placeholders (as their text)."""


_Dumper.add_representer(Pending, lambda dumper, value: dumper.represent_str(str(value)))


def to_yaml(value: Any) -> str:
    """`value` as block YAML without a trailing newline; combine with `indent` to nest it."""
    return yaml.dump(value, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True).rstrip("\n")


def fail(field: str, message: str) -> NoReturn:
    """Refuse the intent: `{{ fail('spec.version', 'must be one of 14, 15, 16') }}`.

    The engine adds the composition, resource and line; `field` is the path the user must fix.
    """
    raise RenderError(str(message), field=str(field))


def suffixed(name: Any, suffix: str) -> str:
    """`{{ metadata.name | suffixed('-connection') }}`: a name derived from the intent's that
    stays a valid object name however long the intent's is (paved.api.fields.derived_name)."""
    return derived_name(str(name), str(suffix))


FILTERS = {"to_json": to_json, "to_yaml": to_yaml, "b64encode": b64encode, "dns_label": dns_label, "suffixed": suffixed}
GLOBALS = {"stable_id": stable_id, "fail": fail}
