"""The sync core's data: what a ref asks for, what a store answered, what a cycle decided.

Plain frozen dataclasses, built once from the API models (`ref_spec_from`) so the planning
functions never re-parse specs. Secret material only ever lives in `RemoteValue.data`, whose
repr is masked, so a stray log line or an exception that prints a value object shows
`<redacted>` instead of a password.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from paved.api.common import parse_duration
from paved.api.kinds import SpecError
from paved.api.secrets import ExternalSecretRefSpec

SECRET_STORE = "SecretStore"  # noqa: S105 - a name, not a secret
CLUSTER_SECRET_STORE = "ClusterSecretStore"  # noqa: S105 - a name, not a secret

MIN_REFRESH_SECONDS = 5.0
"""Shortest accepted refreshInterval other than 0 (sync once): a floor against hot loops."""

DEFAULT_MISSING_GRACE_SECONDS = 600.0
"""How long a remote key must stay missing before a deletionPolicy applies, unless the store
says otherwise (spec.missingKeyGracePeriod; see paved.secretsync.missing)."""


@dataclass(frozen=True, order=True)
class StoreKey:
    """A store as a ref names it; `namespace` is "" for a ClusterSecretStore."""

    kind: str
    namespace: str
    name: str

    @property
    def cluster(self) -> bool:
        return self.kind == CLUSTER_SECRET_STORE

    def __str__(self) -> str:
        return f"{self.kind} {self.name}" if self.cluster else f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class RemoteKey:
    """One remote secret: a Vault path under the KV mount, a secret name/ARN or a parameter name.

    `version` pins a version (Vault version number, Secrets Manager VersionId or stage, SSM
    version or label); None means the latest.
    """

    key: str
    version: str | None = None

    @property
    def label(self) -> str:
        """How the key appears in status.sourceVersions and messages: `key` or `key@version`."""
        return self.key if self.version is None else f"{self.key}@{self.version}"

    def __str__(self) -> str:
        return self.label

    def __lt__(self, other: RemoteKey) -> bool:
        return (self.key, self.version or "") < (other.key, other.version or "")


@dataclass(frozen=True)
class DataRef:
    """spec.data[i]: one Secret key from one remote key (optionally one property of it)."""

    secret_key: str
    remote: RemoteKey
    property: str | None
    field: str  # "spec.data[0]"


@dataclass(frozen=True)
class ExtractRef:
    """spec.dataFrom[i].extract: every property of one remote key."""

    remote: RemoteKey
    field: str  # "spec.dataFrom[0].extract"


@dataclass(frozen=True)
class TargetSpec:
    name: str
    type: str = "Opaque"
    labels: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    template: tuple[tuple[str, str], ...] = ()  # secret key -> Jinja2 text
    creation_policy: Literal["Owner", "Merge"] = "Owner"
    deletion_policy: Literal["Retain", "Delete"] = "Retain"


@dataclass(frozen=True)
class RefSpec:
    """Everything the engine needs from one ExternalSecretRef (no values, no status)."""

    namespace: str
    name: str
    uid: str
    generation: int
    store: StoreKey
    interval: float  # seconds; 0 = sync once
    data: tuple[DataRef, ...] = ()
    extracts: tuple[ExtractRef, ...] = ()
    target: TargetSpec = field(default_factory=lambda: TargetSpec(name=""))

    @property
    def remote_keys(self) -> tuple[RemoteKey, ...]:
        """Distinct remote keys, in spec order."""
        seen: dict[RemoteKey, None] = {}
        for item in self.data:
            seen.setdefault(item.remote)
        for extract in self.extracts:
            seen.setdefault(extract.remote)
        return tuple(seen)

    def fields_of(self, remote: RemoteKey) -> list[str]:
        """The spec paths that read `remote` (for messages that name the field)."""
        paths = [f"{item.field}.remoteRef.key" for item in self.data if item.remote == remote]
        paths += [f"{extract.field}.key" for extract in self.extracts if extract.remote == remote]
        return paths

    def __str__(self) -> str:
        return f"ExternalSecretRef {self.namespace}/{self.name}"


def ref_spec_from(
    namespace: str, name: str, uid: str, generation: int, spec: ExternalSecretRefSpec
) -> RefSpec:
    """Normalise a validated spec; raise SpecError naming the field for semantic problems."""
    problems: list[str] = []
    try:
        interval = parse_duration(spec.refreshInterval, "spec.refreshInterval").total_seconds()
    except ValueError as error:
        problems.append(str(error))
        interval = 0.0
    if 0 < interval < MIN_REFRESH_SECONDS:
        problems.append(
            f"spec.refreshInterval: {spec.refreshInterval} is shorter than the minimum "
            f"{MIN_REFRESH_SECONDS:g}s; use 0 (sync once) or at least {MIN_REFRESH_SECONDS:g}s"
        )
    store_namespace = "" if spec.storeRef.kind == CLUSTER_SECRET_STORE else namespace
    data = tuple(
        DataRef(
            secret_key=item.secretKey,
            remote=RemoteKey(item.remoteRef.key, item.remoteRef.version),
            property=item.remoteRef.property,
            field=f"spec.data[{index}]",
        )
        for index, item in enumerate(spec.data)
    )
    seen: dict[str, str] = {}
    for item in data:
        if item.secret_key in seen:
            problems.append(f"{item.field}.secretKey: {item.secret_key!r} is already set by {seen[item.secret_key]}")
        seen.setdefault(item.secret_key, item.field)
    extracts = tuple(
        ExtractRef(RemoteKey(entry.extract.key, entry.extract.version), f"spec.dataFrom[{index}].extract")
        for index, entry in enumerate(spec.dataFrom)
    )
    for ref_field, remote in [(d.field + ".remoteRef.key", d.remote) for d in data] + [
        (e.field + ".key", e.remote) for e in extracts
    ]:
        problem = key_problem(remote.key)
        if problem:
            problems.append(f"{ref_field}: {problem}")
    template = spec.target.template.data if spec.target.template else {}
    if problems:
        raise SpecError("ExternalSecretRef", problems)
    return RefSpec(
        namespace=namespace,
        name=name,
        uid=uid,
        generation=generation,
        store=StoreKey(spec.storeRef.kind, store_namespace, spec.storeRef.name),
        interval=interval,
        data=data,
        extracts=extracts,
        target=TargetSpec(
            name=spec.target_name(name),
            type=spec.target.type,
            labels=tuple(sorted(spec.target.labels.items())),
            annotations=tuple(sorted(spec.target.annotations.items())),
            template=tuple(sorted(template.items())),
            creation_policy=spec.target.creationPolicy,
            deletion_policy=spec.target.deletionPolicy,
        ),
    )


def key_problem(key: str) -> str | None:
    """Why a remote key is unacceptable (path tricks that could escape a prefix), or None."""
    segments = key.split("/")
    if any(segment in (".", "..") for segment in segments):
        return f"{key!r} contains a '.' or '..' path segment"
    if "//" in key.strip("/"):
        return f"{key!r} contains an empty path segment"
    if any(ord(char) < 32 for char in key):
        return f"{key!r} contains a control character"
    return None


# --- what stores answer -------------------------------------------------------------------


class RemoteValue:
    """A fetched remote secret: its version and its data (a string, bytes or a KV map).

    The data never shows in repr/str, so it cannot leak through a log line or an assertion
    message by accident.
    """

    __slots__ = ("version", "data")

    def __init__(self, version: str, data: str | bytes | Mapping[str, Any]) -> None:
        self.version = str(version)
        self.data = data

    def __repr__(self) -> str:
        return f"RemoteValue(version={self.version!r}, data=<redacted>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemoteValue) and (self.version, self.data) == (other.version, other.data)

    def __hash__(self) -> int:  # pragma: no cover - values are not used as keys
        return hash(self.version)


@dataclass(frozen=True)
class Present:
    """The key exists; `version` is its current version (None: unknown, fetch to learn it)."""

    version: str | None


@dataclass(frozen=True)
class Missing:
    """The store confirmed that the key (or the pinned version) does not exist.

    Providers answer Missing only for an explicit not-found of that exact key from a call
    about that one key (Secrets Manager GetSecretValue/DescribeSecret, SSM GetParameter, a
    Vault KV v2 metadata read on a mount confirmed to be the store's KV v2 mount). A key
    left out of a batch answer, a partial ARN that matched nothing, a 404 that may be a
    disabled or mistyped mount, an answer without data: those are KeyFailures.
    """

    detail: str = "not found"


@dataclass(frozen=True)
class KeyFailure:
    """The store refused or failed for this one key (permission, decryption, bad data)."""

    reason: str  # CamelCase, e.g. PermissionDenied
    message: str  # never a value


KeyState = Union[Present, Missing, KeyFailure]
FetchResult = Union[RemoteValue, Missing, KeyFailure]


@dataclass(frozen=True)
class StoreContext:
    """What a cycle knows about a ref's store besides its answers (for the missing-key rule).

    `revision` identifies the store object as it was read (uid and generation): missing-key
    observations made against another revision do not count. `missing_grace` is the store's
    spec.missingKeyGracePeriod in seconds.
    """

    revision: str = ""
    missing_grace: float = DEFAULT_MISSING_GRACE_SECONDS


@dataclass(frozen=True)
class StoreFailure:
    """The whole store failed this cycle (unreachable, authentication refused, bad config)."""

    reason: str
    message: str
    retryable: bool = True
