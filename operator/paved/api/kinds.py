"""The registry of Paved's kinds: names, scope, models, printer columns and examples.

Everything that needs to know "which kinds exist" (CRD generation, docs, handlers, the
webhook, `paved validate`) reads KINDS, so adding a kind is one entry here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from pydantic import ValidationError

from paved import API_VERSION, GROUP
from paved.api import database, identity, platform, rollout, secrets
from paved.api.common import DURATION_PATTERN, NOT_A_DURATION, Model
from paved.errors import ELLIPSIS, SafeError

ColumnType = Literal["string", "integer", "number", "boolean", "date"]


@dataclass(frozen=True)
class PrinterColumn:
    """One `kubectl get` column (additionalPrinterColumns)."""

    name: str
    json_path: str
    type: ColumnType = "string"
    description: str = ""
    priority: int = 0  # 0: always shown; 1: only with -o wide

    def dump(self) -> dict[str, Any]:
        column: dict[str, Any] = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.description:
            column["description"] = self.description
        if self.priority:
            column["priority"] = self.priority
        return column


_READY_CONDITION = '.status.conditions[?(@.type=="Ready")]'
READY = PrinterColumn("Ready", f"{_READY_CONDITION}.status", description="Whether the object is ready.")
REASON = PrinterColumn("Reason", f"{_READY_CONDITION}.reason", description="Reason of the Ready condition.")
MESSAGE = PrinterColumn("Message", f"{_READY_CONDITION}.message", description="Message of the Ready condition.",
                        priority=1)
AGE = PrinterColumn("Age", ".metadata.creationTimestamp", "date", "Time since creation.")


def _columns(*key_columns: PrinterColumn) -> tuple[PrinterColumn, ...]:
    """The usual layout: Ready, Reason, the kind's key fields, Message (wide), Age."""
    return (READY, REASON, *key_columns, MESSAGE, AGE)


@dataclass(frozen=True)
class KindInfo:
    """Everything about one kind that is not in its models."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    scope: Literal["Namespaced", "Cluster"]
    spec: type[Model]
    status: type[Model]
    columns: tuple[PrinterColumn, ...]
    example: str
    categories: tuple[str, ...] = ("paved",)
    reconciled: bool = True
    """False for kinds nothing watches or writes status on (analysis templates: checked when
    admitted and read when a rollout resolves them)."""

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def namespaced(self) -> bool:
        return self.scope == "Namespaced"

    def parse_spec(self, spec: Mapping[str, Any] | None) -> Model:
        """Validate a spec; raise SpecError whose problems name each field path."""
        if spec is not None and not isinstance(spec, Mapping):
            raise SpecError(self.kind, ["spec: must be an object"])
        try:
            return self.spec.model_validate(dict(spec or {}))
        except ValidationError as error:
            raise SpecError(self.kind, field_problems(error, "spec")) from None

    def parse_status(self, status: Mapping[str, Any] | None) -> Model:
        return self.status.model_validate(dict(status or {}))


class SpecError(SafeError, ValueError):
    """An object failed validation; `problems` are lines of the form "spec.path: message"."""

    def __init__(self, kind: str, problems: list[str]) -> None:
        self.kind = kind
        self.problems = problems
        super().__init__(f"invalid {kind}: " + "; ".join(problems))


def field_problems(error: ValidationError, prefix: str) -> list[str]:
    """Turn pydantic errors into "spec.a.b[0].c: message" lines users can act on."""
    return [f"{path}: {message}" for path, message in field_errors(error, prefix)]


# Context entries of pydantic errors that come from the input (a parser's complaint about it,
# a discriminator's tag, an attribute's name): pydantic's message spells them out.
_FROM_INPUT = ("error", "tag", "tz_actual", "attribute", "encoding_error")


def field_errors(error: ValidationError, prefix: str) -> list[tuple[str, str]]:
    """(field path, message) of each pydantic error, the message never quoting the input.

    Pydantic's messages spell out parts of the input for some errors ("Input tag 'x' found
    ...", "Input should be a valid datetime, <the parser's complaint>"); those parts are cut.
    Paved's own validators (value_error) name fields only.
    """
    problems = []
    for detail in error.errors(include_url=False):
        path = prefix
        for part in detail["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        context = detail.get("ctx") or {}
        if detail["type"] == "extra_forbidden":
            message = "unknown field; check the spelling against `kubectl explain`"
        elif detail["type"] == "string_pattern_mismatch" and context.get("pattern") == DURATION_PATTERN:
            message = NOT_A_DURATION
        elif detail["type"] in ("value_error", "assertion_error"):
            message = detail["msg"].removeprefix("Value error, ")
        else:
            message = detail["msg"]
            for key in _FROM_INPUT:
                if context.get(key) not in (None, ""):
                    message = message.replace(str(context[key]), ELLIPSIS)
        problems.append((path, message))
    return problems


# Analysis templates have no Ready: nothing reconciles them (the webhook checks them when
# admitted, the rollout engine when it resolves them for a rollout).
TEMPLATE_COLUMNS = (
    PrinterColumn("Args", ".spec.args[*].name", description="Arguments the template declares."),
    PrinterColumn("Metrics", ".spec.metrics[*].name", description="Metrics the template defines."),
    AGE,
)

KINDS: tuple[KindInfo, ...] = (
    KindInfo(
        kind="DatabaseIntent",
        plural="databaseintents",
        short_names=("dbi",),
        scope="Namespaced",
        spec=database.DatabaseIntentSpec,
        status=database.DatabaseIntentStatus,
        columns=_columns(
            PrinterColumn("Engine", ".spec.engine", description="Database engine."),
            PrinterColumn("Version", ".spec.version", description="Engine version."),
            PrinterColumn("Endpoint", ".status.endpoint.host", description="Database host.", priority=1),
        ),
        example=database.EXAMPLE,
    ),
    KindInfo(
        kind="ExternalSecretRef",
        plural="externalsecretrefs",
        short_names=("esr",),
        scope="Namespaced",
        spec=secrets.ExternalSecretRefSpec,
        status=secrets.ExternalSecretRefStatus,
        columns=_columns(
            PrinterColumn("Store", ".spec.storeRef.name", description="Store read from."),
            PrinterColumn("Last Sync", ".status.lastSyncTime", "date", "Last time the Secret was written.", priority=1),
        ),
        example=secrets.EXAMPLE,
    ),
    KindInfo(
        kind="AgentIdentity",
        plural="agentidentities",
        short_names=("agid",),
        scope="Namespaced",
        spec=identity.AgentIdentitySpec,
        status=identity.AgentIdentityStatus,
        columns=_columns(
            PrinterColumn("SA", ".status.serviceAccount", description="ServiceAccount of the identity."),
            PrinterColumn("Expires", ".status.expiresAt", description="Effective expiry.", priority=1),
        ),
        example=identity.EXAMPLE,
    ),
    KindInfo(
        kind="ProgressiveRollout",
        plural="progressiverollouts",
        short_names=("pro",),
        scope="Namespaced",
        spec=rollout.ProgressiveRolloutSpec,
        status=rollout.ProgressiveRolloutStatus,
        columns=(
            READY,
            PrinterColumn("Phase", ".status.phase", description="Rollout phase."),
            PrinterColumn("Weight", ".status.canaryWeight", "integer", "Percentage of traffic on the canary."),
            PrinterColumn("Step", ".status.currentStepIndex", "integer", "Current step index.", priority=1),
            PrinterColumn("Message", ".status.message", description="Why the rollout is in this phase.", priority=1),
            AGE,
        ),
        example=rollout.EXAMPLE,
    ),
    KindInfo(
        kind="AnalysisTemplate",
        plural="analysistemplates",
        short_names=("at",),
        scope="Namespaced",
        spec=rollout.AnalysisTemplateSpec,
        status=rollout.AnalysisTemplateStatus,
        columns=TEMPLATE_COLUMNS,
        example=rollout.ANALYSIS_TEMPLATE_EXAMPLE,
        reconciled=False,
    ),
    KindInfo(
        kind="ClusterAnalysisTemplate",
        plural="clusteranalysistemplates",
        short_names=("cat",),
        scope="Cluster",
        spec=rollout.AnalysisTemplateSpec,
        status=rollout.AnalysisTemplateStatus,
        columns=TEMPLATE_COLUMNS,
        example=rollout.CLUSTER_ANALYSIS_TEMPLATE_EXAMPLE,
        reconciled=False,
    ),
    KindInfo(
        kind="SecretStore",
        plural="secretstores",
        short_names=("ss",),
        scope="Namespaced",
        spec=secrets.SecretStoreSpec,
        status=secrets.SecretStoreStatus,
        columns=_columns(),
        example=secrets.SECRET_STORE_EXAMPLE,
    ),
    KindInfo(
        kind="ClusterSecretStore",
        plural="clustersecretstores",
        short_names=("css",),
        scope="Cluster",
        spec=secrets.ClusterSecretStoreSpec,
        status=secrets.SecretStoreStatus,
        columns=_columns(),
        example=secrets.CLUSTER_SECRET_STORE_EXAMPLE,
    ),
    KindInfo(
        kind="Composition",
        plural="compositions",
        short_names=("comp",),
        scope="Cluster",
        spec=platform.CompositionSpec,
        status=platform.CompositionStatus,
        columns=_columns(
            PrinterColumn("Kind", ".spec.compositeKind", description="Intent kind rendered."),
            PrinterColumn("Default", ".spec.default", "boolean", "Default for the kind."),
            PrinterColumn("Revision", ".status.latestRevision", description="Revision of the current spec.", priority=1),
            PrinterColumn("Updated", ".status.updatedIntents", "integer", "Intents Ready on the latest revision."),
        ),
        example=platform.COMPOSITION_EXAMPLE,
    ),
    KindInfo(
        kind="CompositionRevision",
        plural="compositionrevisions",
        short_names=("comprev",),
        scope="Cluster",
        spec=platform.CompositionRevisionSpec,
        status=platform.CompositionRevisionStatus,
        columns=(
            READY,
            PrinterColumn("Revision", ".spec.revision", "integer", "Revision number."),
            PrinterColumn("Kind", ".spec.compositionSpec.compositeKind", description="Intent kind rendered."),
            PrinterColumn("Intents", ".status.intents", "integer", "Intents rendered with this revision."),
            AGE,
        ),
        example=platform.COMPOSITION_REVISION_EXAMPLE,
    ),
    KindInfo(
        kind="IntentPolicy",
        plural="intentpolicies",
        short_names=("ipol",),
        scope="Cluster",
        spec=platform.IntentPolicySpec,
        status=platform.PlatformStatus,
        columns=_columns(
            PrinterColumn("Mode", ".spec.mode", description="Enforce, Warn or Audit."),
        ),
        example=platform.INTENT_POLICY_EXAMPLE,
    ),
    KindInfo(
        kind="PolicyException",
        plural="policyexceptions",
        short_names=("pex",),
        scope="Namespaced",
        spec=platform.PolicyExceptionSpec,
        status=platform.PlatformStatus,
        columns=(
            READY,
            REASON,
            PrinterColumn("Policy", ".spec.policy", description="Exempted policy."),
            PrinterColumn("Expires", ".spec.expiresAt", description="When the exception stops applying."),
            AGE,
        ),
        example=platform.POLICY_EXCEPTION_EXAMPLE,
    ),
)

BY_KIND: dict[str, KindInfo] = {info.kind: info for info in KINDS}
INTENT_KINDS: tuple[str, ...] = get_args(platform.IntentKindName)
"""The kinds app teams write; the rest are platform kinds."""
COMPOSED_KINDS: tuple[str, ...] = get_args(platform.CompositeKind)
"""The intent kinds rendered through Compositions (the others have their own engines)."""


def kind_info(kind: str) -> KindInfo:
    try:
        return BY_KIND[kind]
    except KeyError:
        raise SpecError(kind, [f"kind: unknown kind {kind!r}; Paved serves {', '.join(BY_KIND)}"]) from None


def parse_object(body: Mapping[str, Any]) -> tuple[KindInfo, Model]:
    """Validate a whole Paved object (apiVersion, kind, spec) as `paved validate` and the webhook do."""
    info = kind_info(str(body.get("kind")))
    if body.get("apiVersion") != API_VERSION:
        raise SpecError(info.kind, [f"apiVersion: expected {API_VERSION}, got {body.get('apiVersion')!r}"])
    return info, info.parse_spec(body.get("spec"))


def with_defaults(intent: Mapping[str, Any]) -> Mapping[str, Any]:
    """The intent with every model default filled in, as compositions render it.

    The API server only applies scalar defaults (object and list defaults stay out of the CRD
    schema), so `spec.backup` may be missing in the cluster but present offline. Defaulting
    here makes a rule mean the same thing at admission, in the audit and in `paved validate`.
    An intent that does not validate is returned unchanged; its rules may then error.
    """
    info = BY_KIND.get(str(intent.get("kind") or ""))
    if info is None or not isinstance(intent.get("spec"), Mapping):
        return intent
    try:
        spec = info.parse_spec(intent["spec"]).dump()
    except SpecError:
        return intent
    return {**intent, "spec": spec}
