"""The pure secret sync core: specs, values, templates, hashes, access, schedule, plan, restarts."""

from __future__ import annotations

import dataclasses
import functools

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paved.api.kinds import SpecError
from paved.api.secrets import ClusterSecretStoreSpec, ExternalSecretRefSpec
from paved.secretsync import access, breaker, missing, plan, restart, schedule, target
from paved.secretsync.model import (
    KeyFailure,
    Missing,
    Present,
    RefSpec,
    RemoteKey,
    RemoteValue,
    StoreContext,
    StoreFailure,
    StoreKey,
    ref_spec_from,
)
from paved.secretsync.state import SyncState
from paved.secretsync.values import (
    CONTENT_HASH_ANNOTATION,
    ResolveError,
    content_hash,
    live_content_hash,
    resolve,
    template_problems,
)

MARKER = "s3cr3t-MARKER-value-7f1c"
NOW = "2025-01-01T00:00:00Z"
LATER = "2025-01-01T01:00:00Z"

KEY = b"0" * 32  # the operator's content-digest key (a Secret in its namespace, in a cluster)
decide = functools.partial(plan.decide, hash_key=KEY)


def ref(name: str = "db", namespace: str = "app", **spec: object) -> RefSpec:
    body = {
        "storeRef": {"name": "vault"},
        "refreshInterval": "1h",
        "data": [
            {"secretKey": "username", "remoteRef": {"key": "production/database", "property": "username"}},
            {"secretKey": "password", "remoteRef": {"key": "production/database", "property": "password"}},
        ],
    }
    body.update(spec)
    return ref_spec_from(namespace, name, f"uid-{namespace}-{name}", 1, ExternalSecretRefSpec.model_validate(body))


DB = RemoteKey("production/database")
DB_VALUE = RemoteValue("1", {"username": "app", "password": MARKER})


# --- spec ----------------------------------------------------------------------------------------


def test_ref_spec_normalises_and_dedups_keys() -> None:
    spec = ref()
    assert spec.remote_keys == (DB,)
    assert spec.interval == 3600
    assert spec.target.name == "db"
    assert spec.store == StoreKey("SecretStore", "app", "vault")
    assert spec.fields_of(DB) == ["spec.data[0].remoteRef.key", "spec.data[1].remoteRef.key"]


def test_cluster_store_ref_has_no_namespace() -> None:
    spec = ref(storeRef={"name": "shared", "kind": "ClusterSecretStore"})
    assert spec.store == StoreKey("ClusterSecretStore", "", "shared")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"refreshInterval": "100ms"}, "spec.refreshInterval"),
        ({"data": [{"secretKey": "a", "remoteRef": {"key": "teams/x/../y"}}]}, "spec.data[0].remoteRef.key"),
        (
            {"data": [{"secretKey": "a", "remoteRef": {"key": "k1"}}, {"secretKey": "a", "remoteRef": {"key": "k2"}}]},
            "spec.data[1].secretKey",
        ),
    ],
)
def test_semantic_spec_errors_name_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError) as caught:
        ref(**change)
    assert any(problem.startswith(field) for problem in caught.value.problems), caught.value.problems


def test_zero_interval_means_once() -> None:
    assert ref(refreshInterval="0").interval == 0
    assert schedule.next_due(100.0, 0, StoreKey("SecretStore", "a", "b")) == math.inf


# --- values ----------------------------------------------------------------------------------------


def test_properties_from_a_kv_map_and_from_json_text() -> None:
    spec = ref()
    assert resolve(spec, {DB: DB_VALUE}) == {"username": b"app", "password": MARKER.encode()}
    as_json = RemoteValue("v1", json.dumps({"username": "app", "password": MARKER}))
    assert resolve(spec, {DB: as_json}) == {"username": b"app", "password": MARKER.encode()}


def test_dotted_property_and_whole_value() -> None:
    spec = ref(data=[
        {"secretKey": "host", "remoteRef": {"key": "cfg", "property": "db.host"}},
        {"secretKey": "all", "remoteRef": {"key": "plain"}},
    ])
    values = {RemoteKey("cfg"): RemoteValue("1", '{"db": {"host": "h1"}}'), RemoteKey("plain"): RemoteValue("3", "just text")}
    assert resolve(spec, values) == {"host": b"h1", "all": b"just text"}


def test_missing_property_names_field_and_property_not_the_value() -> None:
    spec = ref(data=[{"secretKey": "pw", "remoteRef": {"key": "production/database", "property": "passwd"}}])
    with pytest.raises(ResolveError) as caught:
        resolve(spec, {DB: DB_VALUE})
    assert caught.value.field == "spec.data[0].remoteRef.property"
    assert "passwd" in str(caught.value) and "production/database" in str(caught.value)
    assert MARKER not in str(caught.value)


def test_property_of_a_non_json_value() -> None:
    spec = ref(data=[{"secretKey": "pw", "remoteRef": {"key": "plain", "property": "x"}}])
    with pytest.raises(ResolveError) as caught:
        resolve(spec, {RemoteKey("plain"): RemoteValue("1", MARKER)})
    assert caught.value.reason == "InvalidRemoteData" and MARKER not in str(caught.value)


def test_data_from_extracts_every_property() -> None:
    spec = ref(data=[], dataFrom=[{"extract": {"key": "production/database"}}])
    assert resolve(spec, {DB: DB_VALUE}) == {"username": b"app", "password": MARKER.encode()}


def test_template_shapes_values_in_a_sandbox() -> None:
    spec = ref(target={"template": {"data": {"url": "postgres://{{ username }}:{{ password }}@db/{{ namespace }}"}}})
    assert resolve(spec, {DB: DB_VALUE}) == {"url": f"postgres://app:{MARKER}@db/app".encode()}


def test_template_error_names_the_key_and_never_the_value() -> None:
    # The lookup error of a missing dict key would echo the key, which is the secret value here.
    spec = ref(target={"template": {"data": {"bad": "{{ {}[password] }}"}}})
    with pytest.raises(ResolveError) as caught:
        resolve(spec, {DB: DB_VALUE})
    assert caught.value.field == "spec.target.template.data.bad"
    assert caught.value.reason == "TemplateError"
    assert MARKER not in str(caught.value)


def test_template_cannot_escape_the_sandbox() -> None:
    spec = ref(target={"template": {"data": {"x": "{{ username.__class__.__mro__ }}"}}})
    with pytest.raises(ResolveError) as caught:
        resolve(spec, {DB: DB_VALUE})
    assert caught.value.reason == "TemplateError"


def test_template_syntax_errors_are_found_without_values() -> None:
    assert template_problems([("ok", "{{ a }}")]) == []
    problems = template_problems([("url", "{{ username ")])
    assert problems and problems[0].startswith("spec.target.template.data.url: line 1")


def test_content_hash_changes_exactly_with_content() -> None:
    a = content_hash(KEY, "ns", "s", "Opaque", {"k": b"v"})
    assert a == content_hash(KEY, "ns", "s", "Opaque", {"k": b"v"})
    assert a != content_hash(KEY, "ns", "s", "Opaque", {"k": b"w"})
    assert a != content_hash(KEY, "ns", "s", "Opaque", {"k2": b"v"})
    assert a != content_hash(KEY, "ns", "other", "Opaque", {"k": b"v"})  # salted with the Secret's name
    live = {"metadata": {"namespace": "ns", "name": "s"}, "type": "Opaque", "data": {"k": "dg=="}}
    assert live_content_hash(KEY, live) == a
    assert a != content_hash(b"another operator", "ns", "s", "Opaque", {"k": b"v"})  # keyed: no key, no guessing


# --- access ----------------------------------------------------------------------------------------


def cluster_access(*rules: dict[str, object]) -> ClusterSecretStoreSpec:
    return ClusterSecretStoreSpec.model_validate({"provider": {"aws": {"region": "eu-west-1"}}, "access": list(rules)})


def test_access_by_name_and_prefix_template() -> None:
    store = cluster_access({"namespaces": ["app"], "keyPrefixes": ["teams/{namespace}/"]})
    good = ref(data=[{"secretKey": "a", "remoteRef": {"key": "teams/app/db"}}])
    bad = ref(data=[{"secretKey": "a", "remoteRef": {"key": "teams/app/db"}}, {"secretKey": "b", "remoteRef": {"key": "teams/other/db"}}])
    assert access.check("shared", store.access, good, {}).allowed
    verdict = access.check("shared", store.access, bad, {})
    assert not verdict.allowed and verdict.field == "spec.data[1].remoteRef.key"
    assert "teams/app/" in verdict.message and "nothing was read" in verdict.message


def test_access_by_namespace_labels() -> None:
    store = cluster_access({"namespaceSelector": {"matchLabels": {"tenant": "yes"}}, "keyPrefixes": ["shared/"]})
    spec = ref(data=[{"secretKey": "a", "remoteRef": {"key": "shared/x"}}])
    assert access.check("s", store.access, spec, {"tenant": "yes"}).allowed
    assert not access.check("s", store.access, spec, {"tenant": "no"}).allowed
    assert not access.check("s", store.access, spec, None).allowed  # labels unknown: refuse
    assert not access.check("s", [], spec, {"tenant": "yes"}).allowed  # empty access: nobody


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab/.-", min_size=1, max_size=20))
def test_access_never_grants_outside_the_prefix(key: str) -> None:
    store = cluster_access({"namespaces": ["app"], "keyPrefixes": ["a/{namespace}/"]})
    try:
        spec = ref(data=[{"secretKey": "k", "remoteRef": {"key": key}}])
    except SpecError:
        return  # refused before access is even considered ('..' segments)
    if access.check("s", store.access, spec, {}).allowed:
        assert key.startswith("a/app/") and ".." not in key.split("/")


# --- schedule --------------------------------------------------------------------------------------

STORE = StoreKey("SecretStore", "app", "vault")


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0, max_value=1e9), st.sampled_from([5.0, 60.0, 900.0, 3600.0]))
def test_next_due_is_on_the_grid_and_within_one_interval(after: float, interval: float) -> None:
    due = schedule.next_due(after, interval, STORE)
    assert after < due <= after + interval + 1e-6
    assert math.isclose((due - schedule.phase(STORE, interval)) / interval % 1, 0, abs_tol=1e-6) or math.isclose(
        (due - schedule.phase(STORE, interval)) / interval % 1, 1, abs_tol=1e-6
    )


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0, max_value=1e6), st.sampled_from([10.0, 60.0, 3600.0]))
def test_a_late_refresh_is_not_followed_by_another_a_moment_later(late: float, interval: float) -> None:
    # A refresh taken at a grid point, however late it ran (a new leader's first cycle), is
    # followed by the next between half an interval and one and a half intervals later, on the grid.
    point = schedule.next_due(late - interval, interval, STORE)  # the grid point it was due at
    due = schedule.after_refresh(point, late, interval, STORE)
    assert late + interval / 2 <= due + 1e-6 and due <= late + 1.5 * interval + 1e-6
    steps = (due - schedule.phase(STORE, interval)) / interval
    assert math.isclose(steps, round(steps), abs_tol=1e-6)  # on the store's grid
    assert schedule.after_refresh(point, point, interval, STORE) == pytest.approx(point + interval)


def test_dividing_intervals_share_grid_points() -> None:
    hourly = schedule.next_due(1_000_000.0, 3600, STORE)
    assert schedule.next_due(hourly - 0.001, 900, STORE) == pytest.approx(hourly)


def test_stores_get_different_phases() -> None:
    phases = {schedule.phase(StoreKey("SecretStore", "ns", f"s{i}"), 3600) for i in range(50)}
    assert len(phases) > 45


def test_a_store_check_is_due_sooner_while_the_store_is_not_ready() -> None:
    now = 1_000_000.0
    assert schedule.store_check_due(True, None, now, 300, 30)  # never checked
    assert not schedule.store_check_due(True, now - 200, now, 300, 30)
    assert schedule.store_check_due(True, now - 300, now, 300, 30)
    assert not schedule.store_check_due(False, now - 20, now, 300, 30)
    assert schedule.store_check_due(False, now - 30, now, 300, 30)


def test_resume_spreads_overdue_refs_over_a_window() -> None:
    now = 10_000.0
    assert schedule.resume_due(None, now, 3600, STORE) == now  # never synced: at once
    assert schedule.resume_due(now - 60, now, 3600, STORE) > now  # not overdue: grid
    overdue = [schedule.resume_due(now - 7200, now, 3600, StoreKey("SecretStore", "n", f"s{i}")) for i in range(100)]
    assert all(now <= due < now + schedule.RESUME_WINDOW for due in overdue)
    assert len({round(due) for due in overdue}) > 30  # spread, not a thundering herd


def test_retry_backoff_is_jittered_and_capped_below_the_interval() -> None:
    delays = [schedule.retry_delay(attempt, 60) for attempt in range(1, 30)]
    assert all(schedule.MIN_RETRY_DELAY <= d <= 15 for d in delays)
    assert max(schedule.retry_delay(20, 0) for _ in range(20)) <= schedule.MAX_RETRY_DELAY
    assert len({round(schedule.retry_delay(6, 3600), 3) for _ in range(20)}) > 1  # jitter


# --- missing rule ----------------------------------------------------------------------------------


def test_missing_needs_two_consecutive_cycles() -> None:
    first = missing.judge({}, ["k"], NOW)
    assert first.pending == {"k"} and not first.confirmed and first.missing_since == {"k": NOW}
    second = missing.judge(first.missing_since, ["k"], LATER)
    assert second.confirmed == {"k"} and second.missing_since == {"k": NOW}
    back = missing.judge(first.missing_since, [], LATER)
    assert back.missing_since == {} and not back.confirmed


def test_missing_needs_two_refreshes_at_least_the_grace_period_apart() -> None:
    first = missing.judge({}, ["k"], NOW, grace=600)
    assert first.pending == {"k"} and first.confirm_after == "2025-01-01T00:10:00Z"
    soon = missing.judge(first.missing_since, ["k"], "2025-01-01T00:09:59Z", grace=600)
    assert soon.pending == {"k"} and not soon.confirmed and soon.missing_since == {"k": NOW}
    due = missing.judge(first.missing_since, ["k"], "2025-01-01T00:10:00Z", grace=600)
    assert due.confirmed == {"k"} and due.missing_since == {"k": NOW}
    # Grace 0 still needs a second refresh: the first observation alone never confirms.
    assert missing.judge({}, ["k"], NOW, grace=0).pending == {"k"}


def test_an_unreadable_or_future_missing_since_starts_over() -> None:
    for since in ("not a time", "2026-01-01T00:00:00Z"):
        verdict = missing.judge({"k": since}, ["k"], LATER, grace=0)
        assert verdict.pending == {"k"} and not verdict.confirmed and verdict.missing_since == {"k": LATER}


# --- plan ------------------------------------------------------------------------------------------


def memory(spec: RefSpec | None = None, **fields: object) -> plan.RefMemory:
    return plan.RefMemory(spec=spec or ref(), **fields)  # type: ignore[arg-type]


def missing_since(done: plan.RefMemory, since: dict[str, str], store: StoreContext = StoreContext()) -> plan.RefMemory:
    """`done` with missing-key observations recorded against `store` (as a previous cycle would)."""
    done.missing_since, done.missing_basis = since, plan.missing_basis(done.spec, store)
    return done


def settled(spec: RefSpec | None = None) -> plan.RefMemory:
    spec = spec or ref()
    data = resolve(spec, {DB: DB_VALUE})
    return memory(spec, synced_generation=1, source_versions={DB.label: "1"},
                  content_hash=content_hash(KEY, spec.namespace, spec.target.name, "Opaque", data))


def test_grouping_and_dedup_across_refs() -> None:
    refs = [ref(f"r{i}") for i in range(30)] + [ref("other", storeRef={"name": "aws"})]
    groups = plan.group_by_store(refs)
    assert [len(v) for v in groups.values()] == [1, 30]
    assert plan.distinct_keys(groups[StoreKey("SecretStore", "app", "vault")]) == [DB]


def test_unchanged_versions_need_no_values() -> None:
    done = settled()
    assert not plan.needs_values(done, {DB: Present("1")})
    assert plan.keys_to_fetch([done], {DB: Present("1")}, {}) == []
    assert plan.needs_values(done, {DB: Present("2")})
    assert plan.keys_to_fetch([done], {DB: Present("2")}, {}) == [DB]
    assert plan.keys_to_fetch([done], {DB: Present("2")}, {DB: RemoteValue("2", {})}) == []  # cached at that version
    assert plan.needs_values(memory(), {DB: Present("1")})  # never synced


def test_decide_unchanged_writes_nothing() -> None:
    decision = decide(settled(), {DB: Present("1")}, {}, NOW)
    assert decision.action == "none" and decision.success and decision.ready


def test_decide_rotation_writes_once_with_new_hash() -> None:
    done = settled()
    rotated = RemoteValue("2", {"username": "app", "password": "new"})
    decision = decide(done, {DB: Present("2")}, {DB: rotated}, NOW)
    assert decision.action == "write" and decision.content_hash != done.content_hash
    assert decision.source_versions == {DB.label: "2"}
    # A version bump whose content is equal (e.g. metadata only) writes nothing.
    same = decide(done, {DB: Present("3")}, {DB: RemoteValue("3", dict(DB_VALUE.data))}, NOW)  # type: ignore[arg-type]
    assert same.action == "none" and same.source_versions == {DB.label: "3"}


def test_failures_leave_the_secret_alone_and_go_stale() -> None:
    done = settled()
    for observed in ({DB: KeyFailure("PermissionDenied", "denied")}, {}):
        decision = decide(done, observed, {}, NOW)
        assert decision.action == "none" and not decision.ready and not decision.success and decision.retry
    status = plan.status_for(memory(done.spec, status={"lastGoodSyncTime": NOW}),
                             plan.failure("StoreUnreachable", "vault down"), LATER)
    stale = next(c for c in status["conditions"] if c["type"] == "Stale")
    assert stale["status"] == "True" and NOW in stale["message"]
    assert status["lastGoodSyncTime"] == NOW and status["lastRefreshTime"] == LATER


def test_a_refresh_that_changes_nothing_moves_last_refresh_time_only_when_it_is_old() -> None:
    done = settled()
    unchanged = decide(done, {DB: Present("1")}, {}, NOW)
    first = plan.status_for(done, unchanged, NOW)
    assert first["lastRefreshTime"] == NOW  # never stamped
    done.status = first
    soon = "2025-01-01T00:09:00Z"
    assert plan.status_for(done, decide(done, {DB: Present("1")}, {}, soon), soon) == first  # no write
    later = "2025-01-01T00:10:00Z"
    assert plan.status_for(done, decide(done, {DB: Present("1")}, {}, later), later)["lastRefreshTime"] == later
    failed = plan.status_for(done, plan.failure("StoreUnreachable", "vault down"), soon)
    assert failed["lastRefreshTime"] == soon  # a status change carries the stamp with it


def test_missing_key_acts_only_on_a_refresh_the_grace_period_later() -> None:
    done = settled(ref(target={"deletionPolicy": "Delete"}))
    first = decide(done, {DB: Missing()}, {}, NOW)
    assert first.action == "none" and first.reason == plan.REMOTE_KEY_MISSING and first.missing_since == {DB.label: NOW}
    assert "2025-01-01T00:10:00Z" in first.message  # when it may be acted on (default grace: 10 minutes)
    assert first.message.startswith(f"{first.field}, spec.data[1].remoteRef.key: remote key(s) {DB.label} not found;")  # fields first
    missing_since(done, first.missing_since)
    assert first.missing_basis == done.missing_basis
    soon = "2025-01-01T00:05:00Z"
    assert not plan.needs_values(done, {DB: Missing()}, soon)
    assert decide(done, {DB: Missing()}, {}, soon).reason == plan.REMOTE_KEY_MISSING
    assert plan.needs_values(done, {DB: Missing()}, LATER)
    second = decide(done, {DB: Missing()}, {}, LATER)
    assert second.action == "delete" and second.reason == plan.REMOTE_KEY_DELETED


def test_missing_observations_of_another_ref_generation_or_store_revision_start_over() -> None:
    store = StoreContext(revision="uid-1/1")
    spec = ref(target={"deletionPolicy": "Delete"})
    edited_ref = dataclasses.replace(spec, generation=2)
    assert decide(missing_since(settled(spec), {DB.label: NOW}, store), {DB: Missing()}, {}, LATER, store=store).action == "delete"
    for done, context in ((missing_since(settled(spec), {DB.label: NOW}, store), StoreContext(revision="uid-1/2")),
                          (missing_since(settled(edited_ref), {DB.label: NOW}, store), store)):
        done.missing_basis = plan.missing_basis(spec, store)  # observed before the edit
        decision = decide(done, {DB: Missing()}, {}, LATER, store=context)
        assert decision.action == "none" and decision.reason == plan.REMOTE_KEY_MISSING
        assert decision.missing_since == {DB.label: LATER} and decision.missing_basis == plan.missing_basis(done.spec, context)
        assert not plan.needs_values(done, {DB: Missing()}, LATER, context)


def test_missing_basis_goes_to_status_with_missing_since_and_leaves_with_it() -> None:
    done = settled()
    pending = decide(done, {DB: Missing()}, {}, NOW)
    status = plan.status_for(done, pending, NOW)
    assert status["missingSince"] == {DB.label: NOW} and status["missingBasis"] == plan.missing_basis(done.spec, StoreContext())
    assert plan.RefMemory.from_status(done.spec, status).missing_basis == status["missingBasis"]
    back = plan.status_for(memory(done.spec, status=status), decide(done, {DB: Present("1")}, {}, LATER), LATER)
    assert back["missingSince"] == {} and "missingBasis" not in back


def test_an_ambiguous_not_found_neither_starts_nor_confirms_the_missing_rule() -> None:
    done = missing_since(settled(ref(target={"deletionPolicy": "Delete"})), {DB.label: NOW})
    unconfirmed = KeyFailure("NotFoundUnconfirmed", "vault answered 404, mount not confirmed")
    decision = decide(done, {DB: unconfirmed}, {}, LATER)
    assert decision.action == "none" and decision.reason == "NotFoundUnconfirmed" and decision.missing_since is None
    assert not plan.needs_values(done, {DB: unconfirmed}, LATER)


def test_an_empty_secret_is_never_written() -> None:
    spec = ref(data=[], dataFrom=[{"extract": {"key": DB.key}}])
    empty = RemoteValue("2", {})
    decision = decide(memory(spec), {DB: Present("2")}, {DB: empty}, NOW)
    assert decision.action == "none" and not decision.ready and decision.reason == plan.EMPTY_SECRET
    assert "spec.dataFrom[0].extract.key" in decision.message and decision.data is None
    rotated_to_nothing = decide(settled(spec), {DB: Present("2")}, {DB: empty}, NOW)
    assert rotated_to_nothing.action == "none" and rotated_to_nothing.reason == plan.EMPTY_SECRET


def test_confirmed_missing_with_retain_keeps_the_secret() -> None:
    done = missing_since(settled(), {DB.label: NOW})
    decision = decide(done, {DB: Missing()}, {}, LATER)
    assert decision.action == "none" and decision.reason == plan.REMOTE_KEY_DELETED and "Retain" in decision.message


def test_confirmed_missing_with_delete_keeps_other_keys() -> None:
    spec = ref(data=[{"secretKey": "a", "remoteRef": {"key": "k1"}}, {"secretKey": "b", "remoteRef": {"key": "k2"}}],
               target={"deletionPolicy": "Delete"})
    done = missing_since(memory(spec, synced_generation=1, content_hash="x"), {"k2": NOW})
    decision = decide(done, {RemoteKey("k1"): Present("1"), RemoteKey("k2"): Missing()},
                           {RemoteKey("k1"): RemoteValue("1", "A")}, LATER)
    assert decision.action == "write" and decision.data == {"a": b"A"}


def test_bad_property_is_ready_false_naming_it() -> None:
    spec = ref(data=[{"secretKey": "pw", "remoteRef": {"key": "production/database", "property": "nope"}}])
    decision = decide(memory(spec), {DB: Present("1")}, {DB: DB_VALUE}, NOW)
    assert not decision.ready and decision.reason == "PropertyNotFound"
    assert "spec.data[0].remoteRef.property" in decision.message and MARKER not in decision.message


def test_status_never_holds_values() -> None:
    decision = decide(memory(), {DB: Present("1")}, {DB: DB_VALUE}, NOW)
    status = plan.status_for(memory(), decision, NOW)
    assert MARKER not in json.dumps(status)
    assert status["sourceVersions"] == {"production/database": "1"} and status["contentHash"] == decision.content_hash
    assert {c["type"]: c["status"] for c in status["conditions"]} == {"Ready": "True", "Stale": "False"}
    assert MARKER not in repr(decision) and MARKER not in repr(DB_VALUE)


def test_events_on_writes_and_transitions_only() -> None:
    written = decide(memory(), {DB: Present("1")}, {DB: DB_VALUE}, NOW)
    status = plan.status_for(memory(), written, NOW)
    assert plan.event_for(ref(), {}, status, written)[0] == "SecretSynced"  # type: ignore[index]
    unchanged = decide(settled(), {DB: Present("1")}, {}, LATER)
    assert plan.event_for(ref(), status, plan.status_for(memory(status=status), unchanged, LATER), unchanged) is None
    down = plan.failure("StoreUnreachable", "vault down")
    reason, message, type_ = plan.event_for(ref(), status, plan.status_for(memory(status=status), down, LATER), down)  # type: ignore[misc]
    assert (reason, type_) == ("StoreUnreachable", "Warning") and message == "vault down"


# --- state -----------------------------------------------------------------------------------------


def test_state_first_sync_is_immediate_and_resume_keeps_the_grid() -> None:
    state = SyncState()
    fresh = ref("fresh")
    assert state.register(fresh, None, 1000.0) == 1000.0  # never synced
    synced_status = {"observedGeneration": 1, "contentHash": "h", "lastRefreshTime": "1970-01-01T00:16:30Z",
                     "conditions": [{"type": "Ready", "status": "True"}]}
    resumed = ref("resumed")
    due = state.register(resumed, synced_status, 1000.0)
    assert due == schedule.next_due(990.0, 3600, resumed.store)
    assert [m.spec.name for m in state.take_due(1000.0)] == ["fresh"]
    assert state.take_due(1000.0) == []  # in flight: not taken twice


def test_state_retries_failures_with_backoff_and_reschedules_success() -> None:
    state = SyncState()
    spec = ref()
    state.register(spec, None, 0.0)
    [taken] = state.take_due(0.0)
    due = state.complete(taken, plan.failure("StoreUnreachable", "down"), {}, 0.0)
    assert due is not None and 0 < due <= schedule.retry_cap(3600)
    [taken] = state.take_due(due)
    decision = decide(taken, {DB: Present("1")}, {DB: DB_VALUE}, NOW)
    retried_at = due
    due = state.complete(taken, decision, {}, retried_at)
    assert due == schedule.next_due(retried_at, 3600, spec.store)


def test_state_skips_the_refs_of_busy_stores_and_honours_retry_at() -> None:
    state = SyncState()
    vault, aws = ref("a"), ref("b", storeRef={"name": "aws"})
    state.register(vault, None, 0.0)
    state.register(aws, None, 5.0)
    assert state.next_due(busy={vault.store}) == 5.0
    assert [m.spec.name for m in state.take_due(10.0, busy={vault.store})] == ["b"]
    assert state.next_due(busy={vault.store}) == schedule.NEVER  # b in flight, a's store busy
    [taken] = state.take_due(10.0)
    assert state.overdue([taken], 12.5) == [12.5]
    refused = plan.failure(breaker.CIRCUIT_OPEN, "open")
    refused.retry_at = 500.0
    assert state.complete(taken, refused, {}, 12.5) == 500.0  # not before the cool-down ends


def test_breaker_opens_after_repeated_failures_probes_once_then_closes() -> None:
    board = breaker.Breakers()
    store = StoreKey("SecretStore", "app", "vault")
    down = StoreFailure("StoreTimeout", "no answer")
    assert board.allow(store, 0.0) is None
    assert [board.failed(store, down, t) for t in (1.0, 2.0)] == [False, False]
    assert board.allow(store, 2.0) is None  # still closed
    assert board.failed(store, down, 3.0) is True
    refusal = board.allow(store, 4.0)
    assert refusal is not None and refusal.reason == breaker.CIRCUIT_OPEN
    assert "3 consecutive failures" in refusal.message and "StoreTimeout: no answer" in refusal.message
    assert board.retry_at(store) == 3.0 + breaker.COOL_DOWN and board.open_count() == 1
    assert board.refusal(store, 3.0 + breaker.COOL_DOWN) is None  # a check would be let through ...
    assert board.allow(store, 3.0 + breaker.COOL_DOWN) is None  # ... the probe is taken
    assert board.allow(store, 3.0 + breaker.COOL_DOWN) is not None  # only one probe
    assert board.state(store).state == "HalfOpen"
    assert board.failed(store, down, 40.0) is True  # the probe failed: open twice as long
    assert board.retry_at(store) == 40.0 + 2 * breaker.COOL_DOWN
    assert board.allow(store, 40.0 + 2 * breaker.COOL_DOWN) is None
    board.succeeded(store)
    assert board.state(store).state == "Closed" and board.allow(store, 200.0) is None and board.open_count() == 0


def test_breaker_cool_down_is_capped_and_forgotten_on_change() -> None:
    board = breaker.Breakers()
    store = StoreKey("ClusterSecretStore", "", "shared")
    down = StoreFailure("StoreUnreachable", "refused")
    now = 0.0
    for _ in range(breaker.FAILURE_THRESHOLD):
        board.failed(store, down, now)
    for _ in range(10):
        now = board.retry_at(store) or now
        assert board.allow(store, now) is None
        board.failed(store, down, now)
    assert board.retry_at(store) == now + breaker.MAX_COOL_DOWN
    board.forget(store)
    assert board.allow(store, now) is None and board.state(store).state == "Closed"


def test_state_cache_is_evicted_when_unused() -> None:
    state = SyncState()
    spec = ref()
    state.register(spec, None, 0.0)
    state.remember(spec.store, {DB: DB_VALUE, RemoteKey("unused"): RemoteValue("1", "x")})
    assert state.evict() == 1
    assert state.cached(spec.store, [DB]) == {DB: DB_VALUE}
    state.unregister(spec.uid)
    assert state.evict() == 1


# --- restarts --------------------------------------------------------------------------------------


def deployment(name: str, secrets: str, stamp: str | None = None) -> dict[str, object]:
    template: dict[str, object] = {"metadata": {"annotations": {restart.TEMPLATE_ANNOTATION: stamp}} if stamp else {}}
    return {"kind": "Deployment", "metadata": {"name": name, "namespace": "app", "annotations": {restart.OPT_IN_ANNOTATION: secrets}},
            "spec": {"template": template}}


def test_restart_once_per_cycle_and_idempotent() -> None:
    hashes = {"db": "h2", "api": "a1"}
    workloads = [deployment("web", "db, api"), deployment("worker", "other"), {"kind": "Deployment", "metadata": {"name": "plain"}}]
    patches = restart.restart_patches(workloads, {"db", "api"}, hashes)
    assert [(p.name, p.secrets) for p in patches] == [("web", ("api", "db"))]  # one patch for two changes
    stamped = deployment("web", "db, api", patches[0].value)
    assert restart.restart_patches([stamped], {"db"}, hashes) == []  # same content: no second restart
    assert restart.restart_patches([stamped], {"db"}, {**hashes, "db": "h3"})  # a new change: restart
    assert restart.patch_body(patches[0]) == {"spec": {"template": {"metadata": {"annotations": {restart.TEMPLATE_ANNOTATION: patches[0].value}}}}}


def test_the_live_view_of_a_secret_keeps_what_a_write_needs_and_no_value() -> None:
    live = {"apiVersion": "v1", "kind": "Secret", "data": {"password": "TUFSS0VS"},
            "metadata": {"name": "db", "namespace": "app", "uid": "u1", "resourceVersion": "7", "labels": {"team": "a"},
                         "managedFields": [{"manager": "kubectl"}],
                         "annotations": {CONTENT_HASH_ANNOTATION: "sha256:abc",
                                         "kubectl.kubernetes.io/last-applied-configuration": '{"data":{"password":"TUFSS0VS"}}'}}}
    view = target.live_view(live)
    assert view == {"apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": "db", "namespace": "app", "uid": "u1", "resourceVersion": "7", "labels": {"team": "a"},
                                 "annotations": {CONTENT_HASH_ANNOTATION: "sha256:abc"}}}
    assert target.written_hash(view) == "sha256:abc"
    assert "annotations" not in target.live_view({"metadata": {"name": "plain"}})["metadata"]
