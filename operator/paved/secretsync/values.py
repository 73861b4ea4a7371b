"""Fetched remote values -> the target Secret's data: properties, extraction, templates, hash.

Everything here may touch secret values, so every error it raises is a `ResolveError` whose
message is built from names, positions and types only: the field, the remote key, the
property, the template key and line, the filter and the exception type (a template error is
described by paved.render.template_errors, never by its message). No value, and no
transformation of one (`password | upper` as a dict key), can reach a status message, an
Event or a log.

Templates run in Paved's bounded sandbox (paved.render.sandbox: Jinja2's immutable sandbox, plus
limits on steps, value sizes and output) with strict undefined values: a template
sees the fetched values by Secret key (from `data[]` and `dataFrom[]`), plus `namespace`
and `name` of the ref; it can call the filters `b64encode`, `b64decode`, `to_json`,
`from_json`, and nothing outside the sandbox. With `target.template.data` set, the Secret
holds exactly the template keys (ESO's default "Replace" merge policy).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from jinja2 import Template, TemplateSyntaxError

from paved.api.secrets import SECRET_KEY_PATTERN
from paved.errors import SafeError
from paved.render.helpers import b64encode, to_json
from paved.render.sandbox import BoundedSandbox, in_budget
from paved.render.template_errors import NamedUndefined, TemplateValueError, describe_template_error, template_line
from paved.secretsync.model import RefSpec, RemoteKey, RemoteValue

CONTENT_HASH_ANNOTATION = "paved.dev/content-hash"
TEMPLATE_FILENAME = "<template>"  # Jinja's name of a template made from a string


class ResolveError(SafeError, ValueError):
    """A ref cannot be turned into Secret data; `field` is the spec path to fix, `reason` CamelCase."""

    def __init__(self, field: str, message: str, *, reason: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = reason
        self.message = message


def _parse_json(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return None


def _as_text(value: Any) -> str | bytes:
    """A property value as Secret data: strings as they are, anything else as JSON."""
    if isinstance(value, (str, bytes)):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def as_map(remote: RemoteKey, value: RemoteValue, field: str) -> dict[str, Any]:
    """The remote value as a mapping: a KV map as is, a JSON object string parsed."""
    if isinstance(value.data, Mapping):
        return dict(value.data)
    parsed = _parse_json(value.data)
    if not isinstance(parsed, dict):
        raise ResolveError(
            field,
            f"remote key {remote.label!r} is not a JSON object, so it has no properties; "
            "store a JSON object or drop the property",
            reason="InvalidRemoteData",
        )
    return parsed


def extract_property(remote: RemoteKey, value: RemoteValue, prop: str | None, field: str) -> str | bytes:
    """One Secret value from a remote value: the whole value, or one (dotted) property of it."""
    if prop is None:
        if isinstance(value.data, Mapping):
            return _as_text(dict(value.data))
        return value.data
    mapping = as_map(remote, value, f"{field}.remoteRef.property")
    if prop in mapping:
        return _as_text(mapping[prop])
    current: Any = mapping
    for part in prop.split("."):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        else:
            raise ResolveError(
                f"{field}.remoteRef.property",
                f"property {prop!r} is not in remote key {remote.label!r}",
                reason="PropertyNotFound",
            )
    return _as_text(current)


def extract_all(remote: RemoteKey, value: RemoteValue, field: str) -> dict[str, str | bytes]:
    """Every top-level property of a remote JSON object / KV map, one Secret key each."""
    mapping = as_map(remote, value, f"{field}.key")
    result: dict[str, str | bytes] = {}
    for key, item in mapping.items():
        if not re.fullmatch(SECRET_KEY_PATTERN, str(key)) or len(str(key)) > 253:
            raise ResolveError(
                f"{field}.key",
                f"remote key {remote.label!r} has a property name that is not a valid Secret key "
                "(letters, digits, '-', '_', '.'); use data[] with remoteRef.property instead",
                reason="InvalidRemoteData",
            )
        result[str(key)] = _as_text(item)
    return result


# --- templates ----------------------------------------------------------------------------


def _b64decode(value: Any) -> str:
    try:
        return base64.b64decode(str(value), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise TemplateValueError("b64decode: input is not base64 of UTF-8 text") from None


def _from_json(value: Any) -> Any:
    try:
        return json.loads(str(value))
    except ValueError:
        raise TemplateValueError("from_json: input is not JSON") from None


_ENV = BoundedSandbox(undefined=NamedUndefined, autoescape=False, keep_trailing_newline=True)
_ENV.filters.update({"b64encode": b64encode, "b64decode": _b64decode, "to_json": to_json, "from_json": _from_json})
_ENV.globals.clear()  # no range/dict/lipsum/cycler: templates only shape values


@lru_cache(maxsize=2048)
def compile_template(text: str) -> Template:
    """Compile once per text; raise TemplateSyntaxError (its message holds no values)."""
    return _ENV.from_string(text)


def template_problems(template: Iterable[tuple[str, str]]) -> list[str]:
    """Syntax errors of spec.target.template.data, found without any value ("" list = fine)."""
    problems = []
    for key, text in template:
        try:
            compile_template(text)
        except TemplateSyntaxError as error:
            problems.append(f"spec.target.template.data.{key}: line {error.lineno}: {error.message}")
    return problems


@in_budget  # one budget for all the templates of a ref
def render_templates(template: Iterable[tuple[str, str]], context: Mapping[str, Any]) -> dict[str, str]:
    """Render each template; errors name the key, the line, the filter and the type, never a value."""
    return {key: _render_one(key, text, context) for key, text in template}


def _render_one(key: str, text: str, context: Mapping[str, Any]) -> str:
    field = f"spec.target.template.data.{key}"
    try:
        return compile_template(text).render(context)
    except TemplateSyntaxError as error:
        raise ResolveError(field, f"line {error.lineno}: {error.message}", reason="TemplateError") from None
    except Exception as error:  # noqa: BLE001 - any failure inside a user template
        line = template_line(error, TEMPLATE_FILENAME)
        where = f"line {line}: " if line is not None else ""
        what = describe_template_error(error, environment=_ENV, source=text)
        raise ResolveError(field, f"template does not render: {where}{what}", reason="TemplateError") from None


# --- the whole ref ------------------------------------------------------------------------


def resolve(ref: RefSpec, values: Mapping[RemoteKey, RemoteValue]) -> dict[str, bytes]:
    """The target Secret's data for `ref` from `values` (which must hold every key of the ref)."""
    fetched: dict[str, str | bytes] = {}
    for extract in ref.extracts:
        fetched.update(extract_all(extract.remote, values[extract.remote], extract.field))
    for item in ref.data:
        fetched[item.secret_key] = extract_property(item.remote, values[item.remote], item.property, item.field)
    if ref.target.template:
        context = {key: _text(value) for key, value in fetched.items()}
        context.update({"namespace": ref.namespace, "name": ref.name})
        out: dict[str, str | bytes] = dict(render_templates(ref.target.template, context))
    else:
        out = fetched
    return {key: value.encode() if isinstance(value, str) else bytes(value) for key, value in out.items()}


def _text(value: str | bytes) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return base64.b64encode(value).decode()
    return value


def content_hash(key: bytes, namespace: str, name: str, secret_type: str, data: Mapping[str, bytes]) -> str:
    """A stable, keyed digest of a Secret's content (HMAC-SHA256 under the operator's key).

    Changes exactly when a key, a value or the type changes. It is shown where Secret values
    are not (status, Events, workloads' pod templates), so it is keyed: without the key, which
    lives in a Secret of the operator's namespace, a low-entropy value cannot be guessed by
    hashing candidates. Namespace and name are mixed in so equal content in two Secrets
    digests differently.
    """
    digest = hmac.new(key, digestmod=hashlib.sha256)
    for part in (namespace, name, secret_type):
        digest.update(part.encode() + b"\x00")
    for item in sorted(data):
        digest.update(item.encode() + b"\x00" + hashlib.sha256(data[item]).digest())
    return digest.hexdigest()[:32]


def live_content_hash(key: bytes, secret: Mapping[str, Any]) -> str:
    """content_hash of a live Secret object (data is base64 on the wire)."""
    metadata = secret.get("metadata") or {}
    data = {item: base64.b64decode(value or "") for item, value in (secret.get("data") or {}).items()}
    return content_hash(key, metadata.get("namespace", ""), metadata.get("name", ""), secret.get("type") or "Opaque", data)
