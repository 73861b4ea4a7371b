"""One sync cycle, decided: grouping, de-duplication, change detection, per-ref outcome, status.

A cycle over the refs that are due runs in three steps; this module decides each of them and
the engine (paved.engines.secretsync) does the I/O in between:

1. `group_by_store` + `distinct_keys`: every remote key needed by the due refs of one
   store, once, however many refs use it. The store is asked for their versions only
   (metadata, batched by the provider).
2. `needs_values` + `keys_to_fetch`: a ref needs values only if it never synced, its spec
   changed, its Secret drifted, or a key's version differs from the one it last synced;
   a key is fetched only if some such ref needs it and the in-memory cache does not already
   hold that exact version. An unchanged cycle therefore fetches nothing.
3. `decide`: from versions, values and the ref's memory, what to do with the Secret
   (nothing / write / delete) and what the ref's status says. Any store or key failure, a
   missing key not yet confirmed (paved.secretsync.missing), or values that would leave the
   Secret without a single key, leave the Secret exactly as it is.

`status_for` turns a decision into the ref's status (never a value in it), and `event_for`
picks the Event it is worth (on writes and Ready transitions only).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from paved.api.common import READY, STALE, get_condition, parse_rfc3339, set_condition
from paved.secretsync import missing as missing_rule
from paved.secretsync.model import (
    KeyFailure,
    KeyState,
    Missing,
    Present,
    RefSpec,
    RemoteKey,
    RemoteValue,
    StoreContext,
    StoreFailure,
    StoreKey,
)
from paved.secretsync.values import ResolveError, content_hash, resolve

# Ready reasons
SYNCED = "Synced"
INVALID_SPEC = "InvalidSpec"
STORE_NOT_FOUND = "StoreNotFound"
STORE_INVALID = "StoreInvalid"
ACCESS_DENIED = "AccessDenied"
REMOTE_KEY_MISSING = "RemoteKeyMissing"
REMOTE_KEY_DELETED = "RemoteKeyDeleted"
TARGET_CONFLICT = "TargetConflict"
TARGET_WRITE_FAILED = "TargetWriteFailed"
EMPTY_SECRET = "EmptySecret"  # noqa: S105 - a name, not a secret
REFRESH_STAMP_SECONDS = 600.0  # lastRefreshTime moves on every status change, else at most this often


@dataclass
class RefMemory:
    """What the engine remembers about a ref between cycles (seeded from its status)."""

    spec: RefSpec
    synced_generation: int | None = None
    source_versions: dict[str, str] = field(default_factory=dict)
    content_hash: str | None = None
    missing_since: dict[str, str] = field(default_factory=dict)
    missing_basis: str | None = None  # what missing_since was observed against (missing_basis())
    repair: bool = False  # the live Secret drifted or disappeared: write even if nothing changed
    status: dict[str, Any] = field(default_factory=dict)  # last status written (for deltas)

    @classmethod
    def from_status(cls, spec: RefSpec, status: Mapping[str, Any] | None) -> RefMemory:
        status = dict(status or {})
        ready = get_condition(status.get("conditions"), READY) or {}
        synced = status.get("observedGeneration") if ready.get("status") == "True" else None
        return cls(
            spec=spec,
            synced_generation=synced,
            source_versions=dict(status.get("sourceVersions") or {}),
            content_hash=status.get("contentHash"),
            missing_since=dict(status.get("missingSince") or {}),
            missing_basis=status.get("missingBasis"),
            status=status,
        )

    @property
    def settled(self) -> bool:
        """Synced this generation and the Secret is believed intact."""
        return self.synced_generation == self.spec.generation and self.content_hash is not None and not self.repair


# --- steps 1 and 2 ------------------------------------------------------------------------


def group_by_store(refs: Iterable[RefSpec]) -> dict[StoreKey, list[RefSpec]]:
    groups: dict[StoreKey, list[RefSpec]] = defaultdict(list)
    for ref in refs:
        groups[ref.store].append(ref)
    return dict(sorted(groups.items()))


def distinct_keys(refs: Iterable[RefSpec]) -> list[RemoteKey]:
    """Every remote key the refs need, each once, in a stable order."""
    return sorted({remote for ref in refs for remote in ref.remote_keys})


def missing_basis(spec: RefSpec, store: StoreContext) -> str:
    """What missing-key observations of `spec` are valid for: this generation of the ref and
    this revision of its store (a change of either starts the missing-key rule over)."""
    return f"generation {spec.generation}; store {store.revision or '-'}"


def judge_missing(memory: RefMemory, missing_now: Iterable[str], now: str, store: StoreContext) -> missing_rule.MissingVerdict:
    """The missing-key rule for this ref: earlier observations count only on the same basis."""
    previous = memory.missing_since if memory.missing_basis == missing_basis(memory.spec, store) else {}
    return missing_rule.judge(previous, missing_now, now, store.missing_grace)


def needs_values(memory: RefMemory, observed: Mapping[RemoteKey, KeyState], now: str = "",
                 store: StoreContext = StoreContext()) -> bool:
    """Whether this ref must be (re)rendered, which needs the values of its present keys."""
    states = [observed.get(remote) for remote in memory.spec.remote_keys]
    if any(isinstance(state, KeyFailure) or state is None for state in states):
        return False  # nothing will be rendered this cycle
    missing_now = [r.label for r, s in zip(memory.spec.remote_keys, states) if isinstance(s, Missing)]
    if missing_now:
        verdict = judge_missing(memory, missing_now, now, store)
        # Only a confirmed loss under deletionPolicy Delete rewrites the Secret.
        return bool(verdict.confirmed) and not verdict.pending and memory.spec.target.deletion_policy == "Delete"
    if not memory.settled:
        return True
    for remote, state in zip(memory.spec.remote_keys, states):
        assert isinstance(state, Present)  # noqa: S101
        if state.version is None or memory.source_versions.get(remote.label) != state.version:
            return True
    return False


def keys_to_fetch(
    refs: Iterable[RefMemory],
    observed: Mapping[RemoteKey, KeyState],
    cached: Mapping[RemoteKey, RemoteValue],
    now: str = "",
    store: StoreContext = StoreContext(),
) -> list[RemoteKey]:
    """Present keys that some ref needs and the cache does not hold at the observed version."""
    wanted: set[RemoteKey] = set()
    for memory in refs:
        if not needs_values(memory, observed, now, store):
            continue
        for remote in memory.spec.remote_keys:
            state = observed.get(remote)
            if not isinstance(state, Present):
                continue
            hit = cached.get(remote)
            if hit is None or state.version is None or hit.version != state.version:
                wanted.add(remote)
    return sorted(wanted)


# --- step 3 -------------------------------------------------------------------------------


@dataclass
class Decision:
    """What to do with one ref's Secret this cycle, and what its status should say."""

    action: Literal["none", "write", "delete"]
    ready: bool
    reason: str
    message: str
    asked_backend: bool = True
    success: bool = False  # the Secret matches the backend (lastGoodSyncTime moves)
    retry: bool = False  # retry soon with backoff instead of waiting for the next grid point
    data: dict[str, bytes] | None = field(default=None, repr=False)
    content_hash: str | None = None
    source_versions: dict[str, str] = field(default_factory=dict)
    missing_since: dict[str, str] | None = None
    missing_basis: str | None = None  # with missing_since: what it was observed against
    retry_at: float | None = None  # not before this moment (engine clock), e.g. a store's circuit is open
    field: str = ""  # the spec path at fault, when there is one

    @property
    def touches_secret(self) -> bool:
        """Whether carrying it out writes to the target Secret (a write, or removing keys)."""
        return self.action in ("write", "delete")


def failure(reason: str, message: str, *, field: str = "", asked_backend: bool = True, retry: bool = True) -> Decision:
    return Decision("none", False, reason, message, asked_backend=asked_backend, retry=retry, field=field)


def store_failed(error: StoreFailure) -> Decision:
    return failure(error.reason, error.message, retry=error.retryable)


def decide(
    memory: RefMemory,
    observed: Mapping[RemoteKey, KeyState],
    values: Mapping[RemoteKey, RemoteValue | Missing | KeyFailure],
    now: str,
    *,
    hash_key: bytes,
    store: StoreContext = StoreContext(),
) -> Decision:
    """The outcome for one ref; `values` holds fetched or cached values of its present keys;
    `hash_key` keys the content digest (values.content_hash); `store` says which store
    revision answered and its grace period for missing keys."""
    spec = memory.spec
    once = spec.interval <= 0
    states = {remote: observed.get(remote) for remote in spec.remote_keys}
    # Values fetched this cycle may reveal a key that vanished or failed after the version check.
    for remote, value in values.items():
        if remote in states and isinstance(value, (Missing, KeyFailure)):
            states[remote] = value
    for remote, state in states.items():
        if state is None:
            return failure("ProviderError", f"store gave no answer for remote key {remote.label!r}")
        if isinstance(state, KeyFailure):
            fields = ", ".join(spec.fields_of(remote))
            return failure(state.reason, f"{fields}: remote key {remote.label!r}: {state.message}", field=spec.fields_of(remote)[0])
    missing_now = [remote for remote, state in states.items() if isinstance(state, Missing)]
    verdict = judge_missing(memory, [r.label for r in missing_now], now, store)
    basis = missing_basis(spec, store) if missing_now else None
    if verdict.pending:
        labels = ", ".join(sorted(verdict.pending))
        decision = failure(
            REMOTE_KEY_MISSING,
            f"{', '.join(f for r in missing_now for f in spec.fields_of(r))}: remote key(s) {labels} not found; "
            "the Secret is left as it is; if the store still reports it missing at a refresh after "
            f"{verdict.confirm_after}, deletionPolicy {spec.target.deletion_policy} applies",
            field=spec.fields_of(missing_now[0])[0],
            retry=once,
        )
        decision.missing_since, decision.missing_basis = verdict.missing_since, basis
        return decision
    if verdict.confirmed:
        confirmed = _confirmed_missing(memory, states, values, verdict, hash_key, store)
        confirmed.missing_basis = basis
        return confirmed
    versions = {remote.label: state.version for remote, state in states.items() if isinstance(state, Present) and state.version}
    if memory.settled and all(memory.source_versions.get(label) == version for label, version in versions.items()) and len(
        versions
    ) == len(states):
        return _good(memory, "none", memory.content_hash, memory.source_versions)
    try:
        present = {remote: _value(values, remote) for remote in states}
        data = resolve(spec, present)
    except ResolveError as error:
        return failure(error.reason, str(error), field=error.field, retry=once)
    except _NoValue as error:
        return failure("ProviderError", f"no value fetched for remote key {error.remote.label!r}")
    if not data:
        # An empty Secret is never written: to its consumers it looks like every credential was revoked.
        keys = ", ".join(remote.label for remote in states)
        return failure(EMPTY_SECRET, f"{', '.join(f for r in states for f in spec.fields_of(r))}: remote key(s) {keys} "
                       f"hold no properties, so Secret {spec.target.name} would have no keys; it is left as it is",
                       field=spec.fields_of(next(iter(states)))[0], retry=once)
    digest = content_hash(hash_key, spec.namespace, spec.target.name, spec.target.type, data)
    fetched_versions = {remote.label: present[remote].version for remote in states}
    # A spec change rewrites the Secret even with equal content: labels, annotations or type may differ.
    unchanged = digest == memory.content_hash and not memory.repair and memory.synced_generation == spec.generation
    action: Literal["none", "write"] = "none" if unchanged else "write"
    decision = _good(memory, action, digest, fetched_versions)
    decision.data = data
    return decision


class _NoValue(LookupError):
    def __init__(self, remote: RemoteKey) -> None:
        super().__init__(remote.label)
        self.remote = remote


def _value(values: Mapping[RemoteKey, Any], remote: RemoteKey) -> RemoteValue:
    value = values.get(remote)
    if not isinstance(value, RemoteValue):
        raise _NoValue(remote)
    return value


def _good(memory: RefMemory, action: Literal["none", "write"], digest: str | None, versions: Mapping[str, str]) -> Decision:
    spec = memory.spec
    count = len(spec.remote_keys)
    return Decision(
        action,
        True,
        SYNCED,
        f"Secret {spec.target.name} matches {count} remote key(s)",
        success=True,
        content_hash=digest,
        source_versions=dict(versions),
        missing_since={},
    )


def _confirmed_missing(
    memory: RefMemory,
    states: Mapping[RemoteKey, KeyState | Missing | KeyFailure | None],
    values: Mapping[RemoteKey, Any],
    verdict: missing_rule.MissingVerdict,
    hash_key: bytes,
    store: StoreContext,
) -> Decision:
    spec = memory.spec
    labels = ", ".join(sorted(verdict.confirmed))
    since = min(verdict.missing_since[label] for label in verdict.confirmed)
    how = f"not found, key by key, on refreshes at least {store.missing_grace:g}s apart"
    if spec.target.deletion_policy == "Retain":
        decision = failure(
            REMOTE_KEY_DELETED,
            f"remote key(s) {labels} gone since {since} ({how}); "
            "Secret retained per deletionPolicy Retain",
            field=spec.fields_of(next(r for r in states if r.label in verdict.confirmed))[0],
            retry=False,
        )
        decision.missing_since = verdict.missing_since
        return decision
    gone = {remote for remote in states if remote.label in verdict.confirmed}
    remaining = without_keys(spec, gone)
    decision = Decision(
        "delete",
        False,
        REMOTE_KEY_DELETED,
        f"remote key(s) {labels} gone since {since} ({how}); "
        "their Secret keys were removed per deletionPolicy Delete",
        success=False,
        missing_since=verdict.missing_since,
    )
    if remaining is not None:
        try:
            data = resolve(remaining, {remote: _value(values, remote) for remote in remaining.remote_keys})
        except (ResolveError, _NoValue):
            data = None
        if data:
            decision.action = "write"
            decision.data = data
            decision.content_hash = content_hash(hash_key, spec.namespace, spec.target.name, spec.target.type, data)
    decision.source_versions = {
        remote.label: state.version for remote, state in states.items() if isinstance(state, Present) and state.version
    }
    return decision


def without_keys(spec: RefSpec, gone: set[RemoteKey]) -> RefSpec | None:
    """`spec` minus the items that read `gone` keys; None when templated or nothing is left."""
    if spec.target.template:
        return None
    data = tuple(item for item in spec.data if item.remote not in gone)
    extracts = tuple(extract for extract in spec.extracts if extract.remote not in gone)
    if not data and not extracts:
        return None
    return replace(spec, data=data, extracts=extracts)


# --- status -------------------------------------------------------------------------------


def status_for(memory: RefMemory, decision: Decision, now: str) -> dict[str, Any]:
    """The ref's new status after `decision` (to be diffed against memory.status)."""
    spec = memory.spec
    status = dict(memory.status)
    status["observedGeneration"] = spec.generation
    if decision.touches_secret:
        status["lastSyncTime"] = now
    if decision.success:
        status["contentHash"] = decision.content_hash
        status["sourceVersions"] = dict(sorted(decision.source_versions.items()))
    elif decision.action == "write":
        status["contentHash"] = decision.content_hash
    elif decision.action == "delete":
        status.pop("contentHash", None)
    if decision.missing_since is not None:
        status["missingSince"] = dict(decision.missing_since)
        status["missingBasis"] = decision.missing_basis if decision.missing_since else None
    conditions = set_condition(status.get("conditions"), READY, decision.ready, decision.reason, decision.message, spec.generation)
    if decision.success:
        stale = (False, SYNCED, "")
    else:
        last_good = status.get("lastGoodSyncTime")
        keeps = (
            f"Secret {spec.target.name} keeps the content of the last good sync at {last_good}"
            if last_good
            else f"no good sync yet; Secret {spec.target.name} not written by this ref"
        )
        if decision.action == "delete":
            keeps = f"Secret {spec.target.name} reflects the backend: keys of deleted remote keys removed"
        stale = (decision.action != "delete", decision.reason, keeps)
    conditions = set_condition(conditions, STALE, stale[0], stale[1], stale[2], spec.generation)
    status["conditions"] = conditions
    status = {key: value for key, value in status.items() if value is not None}
    stamps = {"lastRefreshTime": now} if decision.asked_backend else {}
    if decision.success:
        stamps["lastGoodSyncTime"] = now
    if stamps and (status != memory.status or _stamp_due(memory.status.get("lastRefreshTime"), now)):
        status.update(stamps)
    return status


def _stamp_due(last: str | None, now: str) -> bool:
    """Whether a refresh that changed nothing else must still move the refresh stamps: one status
    write per ref per refresh would be 5,000 writes a minute at rest for 5,000 refs on 1m."""
    then, moment = parse_rfc3339(last), parse_rfc3339(now)
    return then is None or moment is None or (moment - then).total_seconds() >= REFRESH_STAMP_SECONDS


def invalid_status(old: Mapping[str, Any] | None, generation: int | None, problems: list[str], reason: str = INVALID_SPEC) -> dict[str, Any]:
    """Status of a ref whose spec cannot be synced at all (the Secret is left alone)."""
    status = dict(old or {})
    message = "; ".join(problems)
    status["observedGeneration"] = generation
    conditions = set_condition(status.get("conditions"), READY, False, reason, message, generation)
    last_good = status.get("lastGoodSyncTime")
    keeps = f"the Secret keeps the content of the last good sync at {last_good}" if last_good else "no good sync yet"
    status["conditions"] = set_condition(conditions, STALE, True, reason, keeps, generation)
    return {key: value for key, value in status.items() if value is not None}


def event_for(spec: RefSpec, old: Mapping[str, Any], new: Mapping[str, Any], decision: Decision) -> tuple[str, str, str] | None:
    """(reason, message, type) of the Event a cycle posts on the ref, or None.

    One on each write and one on each Ready transition: a quiet operator at steady state.
    """
    if decision.action == "write" and decision.success:
        return "SecretSynced", f"wrote Secret {spec.target.name} (content hash {decision.content_hash})", "Normal"
    before = get_condition(old.get("conditions"), READY) or {}
    after = get_condition(new.get("conditions"), READY) or {}
    if (before.get("status"), before.get("reason")) == (after.get("status"), after.get("reason")):
        return None
    if after.get("status") == "True":
        return "Synced", after.get("message", ""), "Normal"
    return after.get("reason", "SyncFailed"), after.get("message", ""), "Warning"
