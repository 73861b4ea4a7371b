"""Field types and cross-field rules shared by the kinds' models.

Every constraint here is declared once and enforced twice: by pydantic (handlers, the
admission webhook, `paved validate`) and by the API server, because the same declaration
lands in the generated CRD schema (`pattern`, `x-kubernetes-list-type`,
`x-kubernetes-validations`). That keeps the offline checks and the cluster in agreement.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from types import UnionType
from typing import Annotated, Any, ClassVar, Literal, Self, Union, cast, get_args, get_origin

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, ConfigDict, Field, GetCoreSchemaHandler, GetJsonSchemaHandler, model_validator
from pydantic_core import CoreSchema, core_schema

from paved.api.common import DURATION_PATTERN, IntentStatus, Model

Duration = Annotated[str, Field(pattern=DURATION_PATTERN, max_length=64)]
"""Go-style duration such as `30s`, `10m`, `1h30m`, `7d`; `0` means zero. Parse with parse_duration."""

Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
"""An RFC 3339 time written by the operator (see common.now_rfc3339); the API server checks the format."""


def _time_text(value: Any) -> Any:
    """Pydantic would read a number as seconds since 1970; the API server refuses anything but text."""
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 time such as 2030-01-01T00:00:00Z")
    return value


Time = Annotated[AwareDatetime, BeforeValidator(_time_text)]
"""An RFC 3339 time with a zone written by a user (expiries), validated as the API server does."""

DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

DNSLabel = Annotated[str, Field(pattern=DNS_LABEL_PATTERN, min_length=1, max_length=63)]
"""An RFC 1123 label: namespace names, Service names, composed resource names."""

ObjectName = Annotated[str, Field(pattern=DNS_SUBDOMAIN_PATTERN, min_length=1, max_length=253)]
"""An RFC 1123 subdomain: the name of most Kubernetes objects."""

OBJECT_NAME_MAX, LABEL_VALUE_MAX = 253, 63
_DIGEST = 8
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_DIGEST]


def derived_name(name: str, suffix: str, limit: int = OBJECT_NAME_MAX) -> str:
    """The name of an object Paved derives from `name`: `name + suffix` (`orders-connection`),
    or, when that would be longer than `limit`, `name` cut short and followed by a hash of the
    whole of it, then `suffix`: still a valid name, the same for the same input, and distinct
    for two long names that share a beginning. Names short enough (all but the longest) are
    unchanged."""
    if len(name) + len(suffix) <= limit:
        return name + suffix
    room = limit - len(suffix) - _DIGEST - 1
    return f"{name[:room].rstrip('.-')}-{_digest(name)}{suffix}"


def derived_label_value(text: str) -> str:
    """`text` as a label value: unchanged when it is one, else cut short (at most 63
    characters) and followed by a hash of the whole text."""
    if len(text) <= LABEL_VALUE_MAX and _LABEL_VALUE.fullmatch(text):
        return text
    kept = re.sub(r"[^-A-Za-z0-9_.]", "-", text)[: LABEL_VALUE_MAX - _DIGEST - 1].strip("-_.")
    return f"{kept}-{_digest(text)}" if kept else _digest(text)

HTTP_URL_PATTERN = r"^https?://.+"

# Bounds. Every string and list of the API has a maximum, so the API server refuses an
# oversized value naming its field before the webhook, a CEL rule or a template ever reads
# it (a 1 MiB string or a 10,000-item list would otherwise be rendered, evaluated and stored),
# and the CRDs' own validation rules stay cheap for the API server.
NAME_MAX = 253  # names of things elsewhere: roles, mounts, audiences, types, resources
TEXT_MAX = 1024  # human text: purposes, reasons, rule messages; paths and prefixes
URL_MAX = 2048  # URLs, ARNs, remote keys (SSM parameter names go to 2048)
EXPRESSION_MAX = 4096  # CEL expressions, Jinja expressions
QUERY_MAX = 8192  # PromQL, ExternalSecretRef templates
MAP_MAX = 64  # entries of a string map (labels, annotations, templates)

LabelValue = Annotated[str, Field(max_length=63, pattern=r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")]
"""A Kubernetes label value: at most 63 characters, alphanumeric at both ends."""

QUALIFIED_NAME_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
QUALIFIED_NAME_MAX = 253 + 1 + 63
KEYS_MESSAGE = ("keys must be label or annotation keys: an optional DNS prefix and '/', then at most 63 letters, "
                "digits, '-', '_' or '.', beginning and ending with a letter or digit")


def _qualified_keys(value: dict[str, Any]) -> dict[str, Any]:
    for key in value:
        if len(key) > QUALIFIED_NAME_MAX or not re.fullmatch(QUALIFIED_NAME_PATTERN, key):
            raise ValueError(KEYS_MESSAGE)
    return value


_KEYS_RULE = {"x-kubernetes-validations": [{
    "rule": f"self.all(k, size(k) <= {QUALIFIED_NAME_MAX} && k.matches(r'{QUALIFIED_NAME_PATTERN}'))",
    "message": KEYS_MESSAGE,
}]}

LabelMap = Annotated[dict[str, LabelValue], Field(max_length=MAP_MAX, json_schema_extra=_KEYS_RULE),
                     AfterValidator(_qualified_keys)]
"""Kubernetes labels: keys and values as the API server checks them on objects, checked here first."""

AnnotationMap = Annotated[dict[str, Annotated[str, Field(max_length=QUERY_MAX)]],
                          Field(max_length=MAP_MAX, json_schema_extra=_KEYS_RULE), AfterValidator(_qualified_keys)]
"""Kubernetes annotations: keys as the API server checks them on objects, values of bounded size."""


class LabelSelector(Model):
    """Selects objects by their labels (equality only, like a Service selector)."""

    matchLabels: LabelMap = Field(
        default_factory=dict, description="Labels that must all be present with exactly these values."
    )


class SecretKeySelector(Model):
    """One key of a Kubernetes Secret in the namespace of the object that refers to it."""

    name: ObjectName = Field(description="Name of the Secret.")
    key: str = Field(min_length=1, max_length=NAME_MAX, description="Key inside the Secret's data.")


class ConfigMapKeySelector(Model):
    """One key of a ConfigMap in the namespace of the object that refers to it."""

    name: ObjectName = Field(description="Name of the ConfigMap.")
    key: str = Field(min_length=1, max_length=NAME_MAX, description="Key inside the ConfigMap's data.")


class CompositionReference(Model):
    """Names a Composition explicitly, bypassing selector and default matching."""

    name: ObjectName = Field(description="Name of the (cluster-scoped) Composition to render this intent with.")


CompositionUpdatePolicy = Literal["Automatic", "Manual"]
"""How an intent follows changes of its Composition (docs/database.md, "Revisions and waves")."""


class CompositionRevisionReference(Model):
    """Names a CompositionRevision of the intent's Composition: the revision a Manual intent is pinned to."""

    name: ObjectName = Field(description="Name of the (cluster-scoped) CompositionRevision, <composition>-<hash>.")


UpdatePolicyField = Annotated[CompositionUpdatePolicy, Field(
    description="Automatic: a change of the Composition reaches this intent in the Composition's rollout waves; "
    "Manual: the intent stays on its revision (compositionRevisionRef, else the one it is on) until changed here.",
)]
RevisionRefField = Annotated[CompositionRevisionReference | None, Field(
    description="With compositionUpdatePolicy Manual: the CompositionRevision to render with (pin or upgrade by changing it).",
)]
"""The two fields every composed intent kind has (default "Automatic" and None)."""


class ComposedResourceStatus(Model):
    """Observed state of one resource rendered from the Composition."""

    name: str = Field(description="Resource name as declared in the Composition.")
    provider: str = Field(description="Provider that manages it, e.g. kubernetes, aws-rds, vault.")
    externalId: str | None = Field(
        default=None, description="Identifier in the provider: RDS identifier, Vault role path, Kind/namespace/name."
    )
    ready: bool = Field(default=False, description="Whether the provider reports the resource ready.")
    message: str | None = Field(default=None, description="Why the resource is not ready, or what was last corrected.")


class ComposedStatus(IntentStatus):
    """Status of an intent rendered through a Composition."""

    composition: str | None = Field(default=None, description="Name of the Composition the intent was rendered with.")
    compositionRevision: str | None = Field(
        default=None,
        description="Name of the CompositionRevision the intent was last rendered with (also when that render failed).",
    )
    renderHash: str | None = Field(
        default=None, description="Hash of the rendered desired state; changes exactly when the desired state changes."
    )
    resources: list[ComposedResourceStatus] = Field(
        default_factory=list, description="One entry per composed resource with its own readiness."
    )


# --- cross-field rules --------------------------------------------------------------------

GroupKind = Literal["exactly-one", "at-most-one", "at-least-one", "all-or-none"]


@dataclass(frozen=True)
class FieldGroup:
    """How many of `fields` may be set on one object.

    A field counts as set when it is present and, for lists, not empty. `cel()` is the same
    check as an API-server rule, so both sides agree by construction.
    """

    fields: tuple[str, ...]
    kind: GroupKind = "exactly-one"
    text: str = ""  # a better message than the generated one, when the fields need explaining

    def allows(self, count: int) -> bool:
        return {
            "exactly-one": count == 1,
            "at-most-one": count <= 1,
            "at-least-one": count >= 1,
            "all-or-none": count in (0, len(self.fields)),
        }[self.kind]

    def message(self) -> str:
        if self.text:
            return self.text
        names = ", ".join(self.fields)
        return {
            "exactly-one": f"set exactly one of: {names}",
            "at-most-one": f"set at most one of: {names}",
            "at-least-one": f"set at least one of: {names}",
            "all-or-none": f"set all or none of: {names}",
        }[self.kind]

    def cel(self, list_fields: frozenset[str]) -> str:
        def present(name: str) -> str:
            if name in list_fields:
                return f"(has(self.{name}) && size(self.{name}) > 0)"
            return f"has(self.{name})"

        count = " + ".join(f"({present(name)} ? 1 : 0)" for name in self.fields)
        return {
            "exactly-one": f"{count} == 1",
            "at-most-one": f"{count} <= 1",
            "at-least-one": f"{count} >= 1",
            "all-or-none": f"{count} == 0 || {count} == {len(self.fields)}",
        }[self.kind]


@dataclass(frozen=True)
class CelRule:
    """An API-server rule for a check that a hand-written model validator also makes."""

    rule: str
    message: str


def _add_rules(schema: dict[str, Any], cls: type) -> None:
    """json_schema_extra hook: emit the class's rules as x-kubernetes-validations."""
    model = cast("type[RuledModel]", cls)
    rules = [{"rule": group.cel(model._list_fields()), "message": group.message()} for group in model.field_groups]
    rules += [{"rule": rule.rule, "message": rule.message} for rule in model.cel_rules]
    if rules:
        schema["x-kubernetes-validations"] = rules


def _is_list_type(annotation: Any) -> bool:
    if get_origin(annotation) is Annotated:
        return _is_list_type(get_args(annotation)[0])
    if get_origin(annotation) in (Union, UnionType):
        return any(_is_list_type(arg) for arg in get_args(annotation))
    return get_origin(annotation) is list


class RuledModel(Model):
    """A Model with cross-field rules that the API server enforces too.

    Subclasses declare `field_groups` (checked here) and `cel_rules` (CEL for checks that a
    model validator in the subclass makes); both are copied into the CRD schema.
    """

    field_groups: ClassVar[tuple[FieldGroup, ...]] = ()
    cel_rules: ClassVar[tuple[CelRule, ...]] = ()

    model_config = ConfigDict(json_schema_extra=_add_rules)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        for group in cls.field_groups:
            unknown = set(group.fields) - set(cls.model_fields)
            if unknown:
                raise TypeError(f"{cls.__name__}.field_groups names unknown fields {sorted(unknown)}")

    @classmethod
    def _list_fields(cls) -> frozenset[str]:
        """Fields whose type is a list (possibly optional): "set" means non-empty for them."""
        return frozenset(name for name, info in cls.model_fields.items() if _is_list_type(info.annotation))

    def _is_set(self, name: str) -> bool:
        value = getattr(self, name)
        return value is not None and not (isinstance(value, list) and not value)

    @model_validator(mode="after")
    def _check_field_groups(self) -> Self:
        for group in type(self).field_groups:
            chosen = [name for name in group.fields if self._is_set(name)]
            if not group.allows(len(chosen)):
                got = ", ".join(chosen) if chosen else "none"
                raise ValueError(f"{group.message()} (got {got})")
        return self


@dataclass(frozen=True)
class UniqueBy:
    """Annotated metadata for a list of objects keyed by `key` (usually `name`).

    Duplicates are refused by pydantic, and the schema gets `x-kubernetes-list-type: map`,
    so the API server refuses them too and server-side apply merges items by key.
    """

    key: str = "name"

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        json_schema = handler(schema)
        json_schema["x-kubernetes-list-type"] = "map"
        json_schema["x-kubernetes-list-map-keys"] = [self.key]
        return json_schema

    def _check(self, items: list[Any]) -> list[Any]:
        seen: set[Any] = set()
        for item in items:
            value = getattr(item, self.key)
            if value in seen:
                raise ValueError(f"duplicate {self.key} {value!r}: each {self.key} may appear once")
            seen.add(value)
        return items
