"""The sync engine's cycles on the in-memory FakeStore and FakeKube (tests/support/kube.py): batching, never
losing a Secret, the missing rule, restarts, access refusal, and no value outside the Secret."""

from __future__ import annotations

import base64
import copy
import json
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from support.kube import FakeKube

from paved import ratelimit
from paved.api.platform import nothing_allowed
from paved import API_VERSION, operator_namespace
from paved.engines.secretsync import REF_KIND, KubeApi
from paved.engines.secretsync.engine import (
    BURST_WRITES, FAILED_STORE_CHECK_INTERVAL, LIST_SECRETS_AT, STORE_CHECK_INTERVAL, SyncEngine,
)
from paved.handlers.secrets import parse_ref
from paved.kube.client import error_from_status
from paved.providers.base import Owner
from paved.providers.secretstores import AUTH_FAILED, UNREACHABLE, FakeStore, StoreConfig, StoreError, StoreProviders
from paved.secretsync import breaker, restart
from paved.secretsync.model import StoreKey

MARKER = "MARKER-9d2e-never-log-me"


def put_store(kube: FakeKube, key: StoreKey, body: Mapping[str, Any]) -> None:
    metadata = {**body.get("metadata", {}), "name": key.name, **({"namespace": key.namespace} if key.namespace else {})}
    kube.put({**body, "apiVersion": API_VERSION, "kind": key.kind, "metadata": metadata})


def store_of(kube: FakeKube, key: StoreKey) -> dict[str, Any]:
    found = kube.obj(key.kind, key.name, key.namespace)
    assert found is not None
    return found


def secret_of(kube: FakeKube, namespace: str, name: str) -> dict[str, Any] | None:
    return kube.obj("Secret", name, namespace)


def put_secret(kube: FakeKube, body: Mapping[str, Any]) -> None:
    kube.put({"apiVersion": "v1", "kind": "Secret", **body})


def data(kube: FakeKube, namespace: str, name: str) -> dict[str, str]:
    found = secret_of(kube, namespace, name)
    assert found is not None, (namespace, name)
    return {k: base64.b64decode(v).decode() for k, v in found.get("data", {}).items()}


def status_of(kube: FakeKube, namespace: str, name: str) -> dict[str, Any]:
    ref = kube.obj(REF_KIND, name, namespace)
    return (ref or {}).get("status") or {}


def condition(kube: FakeKube, namespace: str, name: str, type_: str = "Ready") -> dict[str, Any]:
    return next(c for c in status_of(kube, namespace, name)["conditions"] if c["type"] == type_)


def secret_writes(kube: FakeKube) -> int:
    """Writes of the engine's target Secrets (not its content-hash key in the operator's namespace)."""
    return sum(1 for call in kube.writes("Secret") if call.verb in ("apply", "merge_patch") and call.namespace != operator_namespace())


def status_writes(kube: FakeKube) -> int:
    return kube.count("apply_fields", REF_KIND, subresource="status")


def store_reads(kube: FakeKube) -> int:
    return kube.count("get", "SecretStore") + kube.count("get", "ClusterSecretStore")


def secret_reads(kube: FakeKube) -> list[tuple[str, str]]:
    """("get", name) or ("list", namespace) of target Secrets."""
    return [(call.verb, call.name or call.namespace) for call in kube.calls
            if call.kind == "Secret" and call.verb in ("get", "list") and call.namespace != operator_namespace()]


def workload_patches(kube: FakeKube) -> list[tuple[str, str]]:
    return [(call.kind, call.name) for call in kube.calls if call.verb == "patch"]


def cluster(*namespaces: str) -> FakeKube:
    return FakeKube([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}} for name in namespaces])


NAMESPACES = ("app", "evil", "platform", "small")


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class OneStore(StoreProviders):
    """Every store is the same FakeStore, but those named in `others`, which have their own."""

    def __init__(self, kube: FakeKube, store: FakeStore, others: dict[str, FakeStore] | None = None) -> None:
        super().__init__(kube)
        self.store = store
        self.others = others or {}
        self.gets = 0

    def get(self, config: StoreConfig) -> FakeStore:  # type: ignore[override]
        self.gets += 1
        return self.others.get(config.key.name, self.store)


VAULT_STORE = {"spec": {"provider": {"vault": {"server": "https://vault:8200", "auth": {"tokenSecretRef": {"name": "t", "key": "token"}}}}},
               "metadata": {"name": "vault"}}


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> tuple[SyncEngine, FakeKube, FakeStore, Clock]:
    monkeypatch.setenv("PAVED_VAULT_ADDR", "https://vault:8200")  # VAULT_STORE names the platform's Vault
    kube, store, clock = cluster(*NAMESPACES), FakeStore(batch_size=20), Clock()
    engine = SyncEngine(KubeApi(kube), clock=clock, providers=OneStore(KubeApi(kube), store))
    put_store(kube, StoreKey("SecretStore", "app", "vault"), copy.deepcopy(VAULT_STORE))
    return engine, kube, store, clock


def ref_body(name: str, namespace: str = "app", *, key: str = "production/database", interval: str = "1m",
             uid: str | None = None, **spec: Any) -> dict[str, Any]:
    body = {
        "apiVersion": "paved.dev/v1alpha1",
        "kind": "ExternalSecretRef",
        "metadata": {"name": name, "namespace": namespace, "uid": uid or f"uid-{namespace}-{name}", "generation": 1},
        "spec": {
            "storeRef": {"name": "vault"},
            "refreshInterval": interval,
            "data": [
                {"secretKey": "username", "remoteRef": {"key": key, "property": "username"}},
                {"secretKey": "password", "remoteRef": {"key": key, "property": "password"}},
            ],
            "target": {"name": f"{name}-secret"},
        },
    }
    body["spec"].update(spec)
    return body


def register(engine: SyncEngine, body: Mapping[str, Any]) -> None:
    """Register the ref with the engine, and create it in the cluster (its status is written there)."""
    kube = engine.kube.kube
    assert isinstance(kube, FakeKube)
    metadata = body["metadata"]
    if kube.obj(REF_KIND, metadata["name"], metadata["namespace"]) is None:
        kube.put({key: value for key, value in body.items() if key != "status"})
    engine.register(parse_ref(body), body.get("status"))


def advance_to_next_cycle(engine: SyncEngine, clock: Clock) -> None:
    due = engine.state.next_due()
    assert due < math.inf
    clock.now = max(clock.now, due)


def put_database(store: FakeStore, password: str = MARKER) -> None:
    store.put("production/database", {"username": "app", "password": password})


def synced(engine: SyncEngine, store: FakeStore, body: dict[str, Any]) -> dict[str, Any]:
    """production/database in the store, `body` registered and synced by one cycle."""
    put_database(store)
    register(engine, body)
    engine.run_cycle()
    return body


def everything_visible(kube: FakeKube) -> str:
    """Everything but the Secrets' data: every other object (statuses, patched workloads) and the Events."""
    return json.dumps([kube.objects(kind) for kind in (REF_KIND, "Deployment", "StatefulSet", "Namespace")] + [kube.events],
                      default=str)


# --- batching and change detection ----------------------------------------------------------------


def test_1000_refs_over_100_keys_read_each_key_once_per_cycle(world: Any) -> None:
    engine, kube, store, clock = world
    for i in range(100):
        store.put(f"apps/s{i}", {"username": f"u{i}", "password": MARKER})
    for i in range(1000):
        register(engine, ref_body(f"r{i}", key=f"apps/s{i % 100}"))
    report = engine.run_cycle()
    assert report.refs == 1000 and report.keys_checked == 100 and report.keys_fetched == 100
    assert store.calls == {"versions": 5, "fetch": 5}  # 100 keys / 20 per call
    assert secret_writes(kube) == 1000 and store_reads(kube) == 1

    store.calls.clear()
    advance_to_next_cycle(engine, clock)
    report = engine.run_cycle()
    assert report.refs == 1000 and report.keys_fetched == 0 and secret_writes(kube) == 1000
    assert store.calls == {"versions": 5}

    for i in range(5):
        store.put(f"apps/s{i}", {"username": f"u{i}", "password": "rotated"})
    store.calls.clear()
    advance_to_next_cycle(engine, clock)
    report = engine.run_cycle()
    assert report.keys_fetched == 5 and store.calls == {"versions": 5, "fetch": 1}
    assert secret_writes(kube) == 1000 + 50  # 10 refs per rotated key
    assert data(kube, "app", "r0-secret")["password"] == "rotated"


def test_a_cycle_writing_many_secrets_holds_the_burst_flag_a_small_one_does_not(world: Any) -> None:
    engine, kube, store, clock = world
    seen: list[bool] = []
    write = engine.kube.apply_secret

    def apply_secret(owner: Owner, body: Mapping[str, Any]) -> None:
        seen.append(ratelimit.BURST.active())
        write(owner, body)

    engine.kube.apply_secret = apply_secret  # type: ignore[method-assign]
    put_database(store)
    for i in range(BURST_WRITES - 1):
        register(engine, ref_body(f"small{i}"))
    engine.run_cycle()
    assert len(seen) == BURST_WRITES - 1 and not any(seen)
    seen.clear()
    for i in range(BURST_WRITES):
        register(engine, ref_body(f"big{i}"))
    engine.run_cycle()
    assert len(seen) == BURST_WRITES and all(seen)
    assert not ratelimit.BURST.active()  # released with the cycle


def test_refreshes_that_change_nothing_write_no_status_until_the_stamp_is_old(world: Any) -> None:
    engine, kube, store, clock = world
    put_database(store)
    for i in range(50):
        register(engine, ref_body(f"r{i}"))
    engine.run_cycle()
    assert status_writes(kube) == 50
    stamped, first = status_of(kube, "app", "r0")["lastRefreshTime"], clock.now
    refreshes = 0
    while True:  # 1m refreshes that change nothing write nothing, until the stamps are 10 minutes old
        advance_to_next_cycle(engine, clock)
        assert engine.run_cycle().refs == 50
        refreshes += 1
        if clock.now - first >= 600:
            break
        assert status_writes(kube) == 50
    assert refreshes >= 9 and status_writes(kube) == 100
    assert status_of(kube, "app", "r0")["lastRefreshTime"] > stamped


def test_first_sync_is_immediate_and_later_refreshes_follow_the_grid(world: Any) -> None:
    engine, kube, store, clock = world
    put_database(store)
    register(engine, ref_body("db"))
    assert engine.state.next_due() <= clock.now
    engine.run_cycle()
    assert condition(kube, "app", "db")["status"] == "True"
    assert clock.now < engine.state.next_due() <= clock.now + 60


def test_a_refresh_that_ran_late_is_not_followed_by_another_a_moment_later(world: Any) -> None:
    # A new leader's first cycle, slowed by its start-up, ran 40 s after its grid point: the next
    # grid point is 20 s away, too close; the one after is taken.
    engine, kube, store, clock = world
    body = synced(engine, store, ref_body("db"))
    fresh = SyncEngine(KubeApi(kube), clock=clock, providers=OneStore(KubeApi(kube), store))
    register(fresh, {**body, "status": status_of(kube, "app", "db")})
    clock.now = fresh.state.next_due() + 40
    fresh.run_cycle()
    assert fresh.state.next_due() >= clock.now + 30


def test_new_ref_sharing_a_cached_key_fetches_nothing(world: Any) -> None:
    engine, kube, store, clock = world
    synced(engine, store, ref_body("a"))
    store.calls.clear()
    register(engine, ref_body("b"))
    engine.run_cycle()
    assert store.calls == {"versions": 1}
    assert data(kube, "app", "b-secret") == {"username": "app", "password": MARKER}


def test_restart_costs_version_lookups_not_value_reads(world: Any) -> None:
    engine, kube, store, clock = world
    body = synced(engine, store, ref_body("db"))
    # A new operator process: fresh engine, the ref resumes with the status written before.
    fresh = SyncEngine(KubeApi(kube), clock=clock, providers=OneStore(KubeApi(kube), store))
    resumed = {**body, "status": status_of(kube, "app", "db")}
    register(fresh, resumed)
    assert fresh.state.next_due() > clock.now  # keeps its place on the grid
    store.calls.clear()
    writes = secret_writes(kube)
    advance_to_next_cycle(fresh, clock)
    fresh.run_cycle()
    assert store.calls == {"versions": 1} and secret_writes(kube) == writes


# --- never lose a good Secret ------------------------------------------------------------------------


def test_store_outage_keeps_the_secret_and_marks_stale_then_recovers(world: Any) -> None:
    engine, kube, store, clock = world
    synced(engine, store, ref_body("db"))
    before = copy.deepcopy(secret_of(kube, "app", "db-secret"))
    good = status_of(kube, "app", "db")["lastGoodSyncTime"]

    store.failure = StoreError("vault https://vault:8200 unreachable during metadata read: ConnectionError", reason="StoreUnreachable")
    advance_to_next_cycle(engine, clock)
    engine.run_cycle()
    assert secret_of(kube, "app", "db-secret") == before
    ready, stale = condition(kube, "app", "db"), condition(kube, "app", "db", "Stale")
    assert ready["status"] == "False" and ready["reason"] == "StoreUnreachable"
    assert stale["status"] == "True" and good in stale["message"]
    assert status_of(kube, "app", "db")["lastGoodSyncTime"] == good
    retry_at = engine.state.next_due()
    assert clock.now < retry_at <= clock.now + 15  # backoff capped at interval/4

    store.failure = None
    clock.now = retry_at
    engine.run_cycle()
    assert condition(kube, "app", "db")["status"] == "True"
    assert condition(kube, "app", "db", "Stale")["status"] == "False"
    assert secret_of(kube, "app", "db-secret") == before  # unchanged content: not even rewritten


def synced_then_missing_once(engine: SyncEngine, store: FakeStore, clock: Clock) -> None:
    """db (deletionPolicy Delete) synced, then its remote key vanished for one cycle."""
    synced(engine, store, ref_body("db", target={"name": "db-secret", "deletionPolicy": "Delete"}))
    store.delete("production/database")
    advance_to_next_cycle(engine, clock)
    engine.run_cycle()


def cycles_until_gone(engine: SyncEngine, kube: FakeKube, clock: Clock, secret: str = "db-secret") -> float:
    """Refresh every minute until `secret` loses its keys; the seconds that took."""
    started = clock.now
    while secret_of(kube, "app", secret) is not None and data(kube, "app", secret).get("password"):
        assert clock.now - started < 3600, "never acted on"
        advance_to_next_cycle(engine, clock)
        engine.run_cycle()
    return clock.now - started


def test_missing_key_deleted_only_after_the_grace_period_asked_key_by_key(world: Any) -> None:
    engine, kube, store, clock = world
    synced_then_missing_once(engine, store, clock)
    assert secret_of(kube, "app", "db-secret") is not None and store.calls["confirm"] == 1  # asked about alone
    first = condition(kube, "app", "db")
    assert first["reason"] == "RemoteKeyMissing" and "Delete applies" in first["message"]
    assert cycles_until_gone(engine, kube, clock) >= 600 - 60  # the default 10m grace, counted from the first cycle
    assert secret_of(kube, "app", "db-secret") is None
    assert condition(kube, "app", "db")["reason"] == "RemoteKeyDeleted"
    assert store.calls["confirm"] >= 10  # every refresh asked again


def test_a_key_a_batch_answer_left_out_is_found_by_the_per_key_call(world: Any) -> None:
    engine, kube, store, clock = world
    store.unlisted.add("production/database")
    synced(engine, store, ref_body("db"))
    assert condition(kube, "app", "db")["status"] == "True" and store.calls["confirm"] == 1


def test_an_unconfirmable_not_found_never_deletes(world: Any) -> None:
    engine, kube, store, clock = world
    synced(engine, store, ref_body("db", target={"name": "db-secret", "deletionPolicy": "Delete"}))
    before = copy.deepcopy(secret_of(kube, "app", "db-secret"))
    store.delete("production/database")
    store.unconfirmable.add("production/database")  # e.g. a Vault 404 whose mount could not be confirmed
    for _ in range(60):  # an hour of refreshes
        advance_to_next_cycle(engine, clock)
        engine.run_cycle()
    assert secret_of(kube, "app", "db-secret") == before
    ready, stale = condition(kube, "app", "db"), condition(kube, "app", "db", "Stale")
    assert (ready["status"], ready["reason"]) == ("False", "NotFoundUnconfirmed") and stale["status"] == "True"
    assert not status_of(kube, "app", "db").get("missingSince")


def test_editing_the_store_starts_the_missing_rule_over(world: Any) -> None:
    engine, kube, store, clock = world
    key = StoreKey("SecretStore", "app", "vault")
    live = store_of(kube, key)
    put_store(kube, key, {**live, "metadata": {**live["metadata"], "uid": "store-uid"}})
    synced_then_missing_once(engine, store, clock)
    first_seen = clock.now
    while clock.now - first_seen < 540:
        advance_to_next_cycle(engine, clock)
        engine.run_cycle()
    edited = copy.deepcopy(store_of(kube, key))
    edited["metadata"]["generation"] = 2
    edited["spec"]["missingKeyGracePeriod"] = "5m"
    engine.store_seen(key, edited)
    put_store(kube, key, edited)
    edited_at = clock.now
    assert cycles_until_gone(engine, kube, clock) >= 300 - 60  # the new grace, counted from the edit
    assert clock.now - edited_at >= 300 - 60 and clock.now - first_seen > 600


def test_an_empty_remote_secret_is_never_written(world: Any) -> None:
    engine, kube, store, clock = world
    store.put("apps/empty", {})
    register(engine, ref_body("empty", data=[], dataFrom=[{"extract": {"key": "apps/empty"}}]))
    synced(engine, store, ref_body("db", data=[], dataFrom=[{"extract": {"key": "production/database"}}]))
    assert secret_of(kube, "app", "empty-secret") is None and condition(kube, "app", "empty")["reason"] == "EmptySecret"
    before = copy.deepcopy(secret_of(kube, "app", "db-secret"))
    store.put("production/database", {})
    advance_to_next_cycle(engine, clock)
    engine.run_cycle()
    assert secret_of(kube, "app", "db-secret") == before and condition(kube, "app", "db")["reason"] == "EmptySecret"


def test_a_key_back_before_confirmation_is_forgiven(world: Any) -> None:
    engine, kube, store, clock = world
    synced_then_missing_once(engine, store, clock)
    put_database(store)
    advance_to_next_cycle(engine, clock)
    engine.run_cycle()
    assert condition(kube, "app", "db")["status"] == "True" and status_of(kube, "app", "db")["missingSince"] == {}


# --- one bad store never stalls the others --------------------------------------------------------


def add_store(kube: FakeKube, name: str) -> StoreKey:
    key = StoreKey("SecretStore", "app", name)
    put_store(kube, key, {**copy.deepcopy(VAULT_STORE), "metadata": {"name": name}})
    return key


def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, f"not within {timeout}s: {what}"
        time.sleep(0.02)


def test_a_store_that_hangs_does_not_delay_the_refs_of_other_stores(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's own loop, real time: a hung store's job waits in its own lane while
    another store's refs sync (one thread syncing stores in turn would wait with it)."""
    monkeypatch.setenv("PAVED_VAULT_ADDR", "https://vault:8200")  # VAULT_STORE names the platform's Vault
    kube, fast, hung = cluster(*NAMESPACES), FakeStore(), FakeStore()
    engine = SyncEngine(KubeApi(kube), providers=OneStore(KubeApi(kube), fast, {"hung": hung}), store_deadline=60)
    add_store(kube, "vault")
    add_store(kube, "hung")  # sorts first: a sequential cycle would start with it
    put_database(fast)
    put_database(hung)
    hung.answering.clear()
    engine.start()
    try:
        register(engine, ref_body("stuck", storeRef={"name": "hung"}, interval="5s"))
        register(engine, ref_body("db", interval="5s"))
        eventually(lambda: secret_of(kube, "app", "db-secret") is not None, 5, "the other store's ref synced while one store hangs")
        assert hung.hung.is_set() and not status_of(kube, "app", "stuck")  # its job is still waiting
        hung.answering.set()
        eventually(lambda: secret_of(kube, "app", "stuck-secret") is not None, 5, "the hung store's ref synced once it answers")
    finally:
        hung.answering.set()
        engine.stop()


def test_a_store_deadline_bounds_its_work_and_leaves_its_secrets_alone(world: Any) -> None:
    engine, kube, store, clock = world
    engine.store_deadline = 0.3
    synced(engine, store, ref_body("db"))
    before = copy.deepcopy(secret_of(kube, "app", "db-secret"))
    store.answering.clear()
    advance_to_next_cycle(engine, clock)
    started = time.monotonic()
    try:
        engine.run_cycle()
    finally:
        store.answering.set()
    assert time.monotonic() - started < 5  # bounded by the deadline (0.3 s), not by the store that never answers
    ready, stale = condition(kube, "app", "db"), condition(kube, "app", "db", "Stale")
    assert (ready["status"], ready["reason"]) == ("False", "StoreTimeout") and "no answer" in ready["message"]
    assert stale["status"] == "True" and secret_of(kube, "app", "db-secret") == before


def test_after_repeated_failures_a_store_is_not_called_until_its_cool_down_ends(world: Any) -> None:
    engine, kube, store, clock = world
    key = StoreKey("SecretStore", "app", "vault")
    body = synced(engine, store, ref_body("db"))
    before = copy.deepcopy(secret_of(kube, "app", "db-secret"))
    store.failure = StoreError("vault https://vault:8200 unreachable during metadata read: ConnectionError", reason=UNREACHABLE)
    for _ in range(breaker.FAILURE_THRESHOLD):
        advance_to_next_cycle(engine, clock)
        engine.run_cycle()
    ready = condition(kube, "app", "db")
    assert (ready["status"], ready["reason"]) == ("False", breaker.CIRCUIT_OPEN)
    assert f"{breaker.FAILURE_THRESHOLD} consecutive failures" in ready["message"] and "StoreUnreachable" in ready["message"]
    assert condition(kube, "app", "db", "Stale")["reason"] == breaker.CIRCUIT_OPEN
    opened_at, calls, writes = clock.now, sum(store.calls.values()), status_writes(kube)
    assert engine.state.next_due() >= opened_at + breaker.COOL_DOWN  # its refs come back when the cool-down ends

    engine.repair(body["metadata"]["uid"])  # whatever makes a ref due: nothing calls the store meanwhile
    engine.run_cycle()
    status = engine.check_store(key, store_of(kube, key))
    assert status["conditions"][0]["reason"] == breaker.CIRCUIT_OPEN
    assert sum(store.calls.values()) == calls and status_writes(kube) == writes  # not called, nothing new to say

    store.failure = None  # the probe, once the cool-down is over
    advance_to_next_cycle(engine, clock)
    assert clock.now >= opened_at + breaker.COOL_DOWN
    engine.run_cycle()
    assert condition(kube, "app", "db")["status"] == "True" and sum(store.calls.values()) > calls
    assert secret_of(kube, "app", "db-secret") == before and engine.breakers.state(key).state == "Closed"


def test_a_failed_probe_opens_the_circuit_for_longer(world: Any) -> None:
    engine, kube, store, clock = world
    synced(engine, store, ref_body("db"))
    store.failure = StoreError("vault unreachable", reason=UNREACHABLE)
    for _ in range(breaker.FAILURE_THRESHOLD + 1):  # the last one is the probe
        advance_to_next_cycle(engine, clock)
        engine.run_cycle()
    assert engine.state.next_due() >= clock.now + 2 * breaker.COOL_DOWN
    assert condition(kube, "app", "db")["reason"] == breaker.CIRCUIT_OPEN


def test_an_authentication_refusal_does_not_open_the_circuit(world: Any) -> None:
    engine, kube, store, clock = world
    synced(engine, store, ref_body("db"))
    store.failure = StoreError("spec.provider.vault.auth: login refused", reason=AUTH_FAILED)
    for _ in range(2 * breaker.FAILURE_THRESHOLD):
        advance_to_next_cycle(engine, clock)
        engine.run_cycle()
    assert condition(kube, "app", "db")["reason"] == AUTH_FAILED  # the backend answered: ask again as usual


# --- bad input: conditions naming the field, neighbours keep syncing ---------------------------------


def test_bad_refs_fail_alone(world: Any) -> None:
    engine, kube, store, clock = world
    put_database(store)
    register(engine, ref_body("good"))
    register(engine, ref_body("noprop", data=[{"secretKey": "x", "remoteRef": {"key": "production/database", "property": "nope"}}]))
    register(engine, ref_body("badtpl", target={"name": "t", "template": {"data": {"x": "{{ {}[password] }}"}}}))
    register(engine, ref_body("nostore", storeRef={"name": "absent"}))
    register(engine, ref_body("missing", key="production/absent"))
    engine.run_cycle()
    assert condition(kube, "app", "good")["status"] == "True"
    expect = {
        "noprop": ("PropertyNotFound", "spec.data[0].remoteRef.property"),
        "badtpl": ("TemplateError", "spec.target.template.data.x"),
        "nostore": ("StoreNotFound", "spec.storeRef.name"),
        "missing": ("RemoteKeyMissing", "spec.data[0].remoteRef.key"),
    }
    for name, (reason, field) in expect.items():
        ready = condition(kube, "app", name)
        assert (ready["status"], ready["reason"]) == ("False", reason), name
        assert field in ready["message"], (name, ready["message"])
    assert MARKER not in everything_visible(kube)


@pytest.mark.parametrize("answer", [
    # The API server quotes the offending value (here base64, as the request carried it) ...
    {"code": 422, "reason": "Invalid", "message": 'Secret "db-secret" is invalid: data[password]: Invalid value: "{encoded}": bad',
     "details": {"name": "db-secret", "kind": "Secret", "causes": [
         {"reason": "FieldValueInvalid", "field": "data[password]", "message": 'Invalid value: "{encoded}": bad'}]}},
    # ... and an admission webhook's own words may quote anything, in any form.
    {"code": 400, "reason": "BadRequest",
     "message": 'admission webhook "policy.example" denied the request: password {marker} ({upper}) is weak'},
], ids=["api-server", "webhook"])
def test_a_rejected_secret_write_never_echoes_the_value_in_any_spelling(world: Any, answer: dict[str, Any]) -> None:
    engine, kube, store, clock = world
    encoded = base64.b64encode(MARKER.encode()).decode()
    forms = {"marker": MARKER, "upper": MARKER.upper(), "encoded": encoded}
    status = json.loads(json.dumps(answer).replace("{marker}", MARKER).replace("{upper}", MARKER.upper())
                        .replace("{encoded}", encoded))
    kube.fail("apply", "Secret", error_from_status(status, method="PATCH", path="/api/v1/namespaces/app/secrets/db-secret"))
    put_database(store)
    register(engine, ref_body("db"))
    engine.run_cycle()
    ready = condition(kube, "app", "db")
    assert (ready["status"], ready["reason"]) == ("False", "TargetWriteFailed")
    assert f"{answer['code']} {answer['reason']}" in ready["message"]
    visible = everything_visible(kube)
    assert not [name for name, form in forms.items() if form in visible]


def test_store_auth_failure_is_reported_on_every_ref(world: Any) -> None:
    engine, kube, store, clock = world
    store.failure = StoreError("spec.provider.vault.auth.kubernetes: kubernetes login refused: permission denied", reason=AUTH_FAILED)
    register(engine, ref_body("db"))
    engine.run_cycle()
    ready = condition(kube, "app", "db")
    assert ready["reason"] == AUTH_FAILED and "spec.provider.vault.auth.kubernetes" in ready["message"]
    status = engine.check_store(StoreKey("SecretStore", "app", "vault"), VAULT_STORE)
    assert {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]} == {"Ready": ("False", AUTH_FAILED)}


def test_a_store_not_ready_is_checked_again_within_seconds_a_ready_one_every_few_minutes(world: Any) -> None:
    """A fix made outside the store (its namespace labelled for ServiceAccount tokens) shows soon."""
    engine, kube, store, clock = world
    key = StoreKey("SecretStore", "app", "vault")
    assert engine.store_check_due(VAULT_STORE)  # never checked
    store.failure = StoreError("spec.provider.vault.auth.kubernetes: the API server refused a token", reason=AUTH_FAILED)
    failed = {**VAULT_STORE, "status": engine.check_store(key, VAULT_STORE)}
    clock.now += FAILED_STORE_CHECK_INTERVAL - 1
    assert not engine.store_check_due(failed)
    clock.now += 1
    assert engine.store_check_due(failed)
    store.failure = None
    ready = {**VAULT_STORE, "status": engine.check_store(key, failed)}
    assert ready["status"]["conditions"][0]["status"] == "True"
    clock.now += FAILED_STORE_CHECK_INTERVAL
    assert not engine.store_check_due(ready)
    clock.now += STORE_CHECK_INTERVAL - FAILED_STORE_CHECK_INTERVAL
    assert engine.store_check_due(ready)


def test_cluster_store_refuses_out_of_prefix_keys_and_reads_nothing(world: Any) -> None:
    engine, kube, store, clock = world
    put_store(kube, StoreKey("ClusterSecretStore", "", "shared"), {
        "metadata": {"name": "shared"},
        "spec": {**VAULT_STORE["spec"], "access": [{"namespaces": ["app"], "keyPrefixes": ["teams/{namespace}/"]}]},
    })
    store.put("teams/app/db", {"username": "a", "password": MARKER})
    store.put("teams/other/db", {"username": "b", "password": MARKER})
    register(engine, ref_body("mine", key="teams/app/db", storeRef={"name": "shared", "kind": "ClusterSecretStore"}))
    engine.run_cycle()
    assert condition(kube, "app", "mine")["status"] == "True"
    store.calls.clear()
    register(engine, ref_body("theirs", key="teams/other/db", storeRef={"name": "shared", "kind": "ClusterSecretStore"}))
    engine.run_cycle()
    ready = condition(kube, "app", "theirs")
    assert (ready["status"], ready["reason"]) == ("False", "AccessDenied")
    assert "spec.data[0].remoteRef.key" in ready["message"] and "teams/app/" in ready["message"]
    assert store.calls == {} and secret_of(kube, "app", "theirs-secret") is None


# --- tenancy: a SecretStore never borrows the operator's power ------------------------------------

AWS_DEFAULT_CHAIN = {"metadata": {"name": "aws"}, "spec": {"provider": {"aws": {"region": "eu-west-1"}}}}
FOREIGN_VAULT = {"metadata": {"name": "vault"},
                 "spec": {"provider": {"vault": {**VAULT_STORE["spec"]["provider"]["vault"], "server": "https://vault.attacker:8200"}}}}


def test_a_store_that_would_borrow_the_operators_power_reads_nothing(world: Any) -> None:
    engine, kube, store, clock = world
    put_store(kube, StoreKey("SecretStore", "evil", "aws"), copy.deepcopy(AWS_DEFAULT_CHAIN))
    put_store(kube, StoreKey("SecretStore", "evil", "vault"), copy.deepcopy(FOREIGN_VAULT))
    store.put("team-b/database", {"username": "b", "password": MARKER})
    register(engine, ref_body("borrow", namespace="evil", key="team-b/database", storeRef={"name": "aws"}))
    register(engine, ref_body("foreign", namespace="evil", key="team-b/database"))
    engine.run_cycle()
    for name, field in (("borrow", "spec.provider.aws.auth: "), ("foreign", "spec.provider.vault.server: ")):
        ready = condition(kube, "evil", name)
        assert (ready["status"], ready["reason"]) == ("False", "StoreNotAllowed"), ready
        assert ready["message"].startswith("spec.storeRef.name: SecretStore evil/"), ready["message"]
        assert field in ready["message"] and ready["message"].endswith("nothing was read")
    assert store.calls == {} and engine.providers.gets == 0  # no provider was even built
    assert kube.objects("Secret", "evil") == []
    for key, body, field in ((StoreKey("SecretStore", "evil", "aws"), AWS_DEFAULT_CHAIN, "spec.provider.aws.auth: "),
                             (StoreKey("SecretStore", "evil", "vault"), FOREIGN_VAULT, "spec.provider.vault.server: ")):
        [ready] = engine.check_store(key, body)["conditions"]
        assert (ready["status"], ready["reason"]) == ("False", "NotAllowed") and ready["message"].startswith(field)
    assert store.calls == {}  # the store's check did not log in either
    assert MARKER not in everything_visible(kube)


def test_an_allowance_lets_a_store_act_and_withdrawing_it_stops_the_next_read(world: Any) -> None:
    _, kube, store, clock = world
    allowed: dict[str, list[str]] = {}
    engine = SyncEngine(KubeApi(kube), clock=clock, providers=OneStore(KubeApi(kube), store),
                        allowances=lambda kind, namespace: {**nothing_allowed(), **allowed}
                        if (kind, namespace) == ("SecretStore", "platform") else nothing_allowed())
    key = StoreKey("SecretStore", "platform", "aws")
    put_store(kube, key, copy.deepcopy(AWS_DEFAULT_CHAIN))
    put_database(store)
    register(engine, ref_body("db", namespace="platform", storeRef={"name": "aws"}, interval="1h"))
    engine.run_cycle()
    assert condition(kube, "platform", "db")["reason"] == "StoreNotAllowed" and store.calls == {}

    allowed["operatorCredentials"] = ["platform-aws"]
    assert engine.permissions_changed() == [key]
    assert engine.state.next_due() <= clock.now  # due at once, not at the next refresh an hour away
    engine.run_cycle()
    assert condition(kube, "platform", "db")["status"] == "True" and data(kube, "platform", "db-secret")["password"] == MARKER
    assert engine.check_store(key, AWS_DEFAULT_CHAIN)["conditions"][0]["reason"] == "Authenticated"

    allowed.clear()
    store.calls.clear()
    engine.permissions_changed()
    engine.run_cycle()
    assert condition(kube, "platform", "db")["reason"] == "StoreNotAllowed" and store.calls == {}
    assert data(kube, "platform", "db-secret")["password"] == MARKER  # the last good value stays


def test_target_owned_by_someone_else_is_a_conflict(world: Any) -> None:
    engine, kube, store, clock = world
    put_database(store)
    put_secret(kube, {"metadata": {"name": "db-secret", "namespace": "app"}, "data": {"x": "eA=="}})
    register(engine, ref_body("db"))
    engine.run_cycle()
    assert condition(kube, "app", "db")["reason"] == "TargetConflict"
    assert secret_of(kube, "app", "db-secret")["data"] == {"x": "eA=="}


def test_a_cycle_writing_many_secrets_of_a_namespace_lists_them_once_instead_of_a_get_each(world: Any) -> None:
    engine, kube, store, clock = world
    put_database(store)
    put_secret(kube, {"metadata": {"name": "r3-secret", "namespace": "app"}, "data": {"x": "eA=="}})
    for i in range(LIST_SECRETS_AT):
        register(engine, ref_body(f"r{i}"))
    register(engine, ref_body("twin", target={"name": "r0-secret"}))  # a second ref on r0's Secret
    put_store(kube, StoreKey("SecretStore", "small", "vault"), copy.deepcopy(VAULT_STORE))
    register(engine, ref_body("alone", namespace="small"))
    engine.run_cycle()
    assert sorted(secret_reads(kube)) == [("get", "alone-secret"), ("get", "r0-secret"), ("list", "app")]
    assert condition(kube, "app", "r1")["status"] == "True" and condition(kube, "small", "alone")["status"] == "True"
    assert condition(kube, "app", "r3")["reason"] == "TargetConflict"  # someone else's, seen in the listing
    assert {condition(kube, "app", "r0")["reason"], condition(kube, "app", "twin")["reason"]} == {"Synced", "TargetConflict"}

    kube.calls.clear()  # the next cycle retries only the two conflicts: a GET each
    clock.now += 90  # one and a half intervals: every ref is due again
    engine.run_cycle()
    assert sorted(secret_reads(kube)) == [("get", "r0-secret"), ("get", "r3-secret")]


def test_merge_policy_adds_keys_to_an_existing_secret(world: Any) -> None:
    engine, kube, store, clock = world
    put_database(store)
    put_secret(kube, {"metadata": {"name": "db-secret", "namespace": "app", "resourceVersion": "1"},
                                          "data": {"x": "eA=="}})
    register(engine, ref_body("db", target={"name": "db-secret", "creationPolicy": "Merge"}))
    engine.run_cycle()
    assert data(kube, "app", "db-secret") == {"x": "x", "username": "app", "password": MARKER}


def test_merge_policy_removes_only_its_keys_when_the_remote_key_is_gone(world: Any) -> None:
    engine, kube, store, clock = world
    put_secret(kube, {"metadata": {"name": "db-secret", "namespace": "app", "resourceVersion": "1"},
                                          "data": {"x": "eA=="}})
    synced(engine, store, ref_body("db", target={"name": "db-secret", "creationPolicy": "Merge", "deletionPolicy": "Delete"}))
    store.delete("production/database")
    cycles_until_gone(engine, kube, clock)  # the missing rule: acted on after the grace period
    assert data(kube, "app", "db-secret") == {"x": "x"}
    assert condition(kube, "app", "db")["reason"] == "RemoteKeyDeleted"


# --- rotation reaches consumers -------------------------------------------------------------------


def test_rotation_restarts_opted_in_workloads_once(world: Any) -> None:
    engine, kube, store, clock = world
    put_database(store)
    store.put("other", {"username": "o", "password": "p"})
    register(engine, ref_body("db", target={"name": "db-credentials"}))
    register(engine, ref_body("api", key="other", target={"name": "api-credentials"}))
    kube.put({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {
        "name": "web", "namespace": "app", "annotations": {restart.OPT_IN_ANNOTATION: "db-credentials,api-credentials"}}})
    kube.put({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "idle", "namespace": "app"}})
    engine.run_cycle()
    assert workload_patches(kube) == []  # creation is not a change
    put_database(store, "rotated")
    store.put("other", {"username": "o", "password": "rotated"})
    advance_to_next_cycle(engine, clock)
    engine.run_cycle()
    assert workload_patches(kube) == [("Deployment", "web")]  # two Secrets, one restart
    advance_to_next_cycle(engine, clock)
    engine.run_cycle()
    assert len(workload_patches(kube)) == 1  # nothing changed: no more restarts
    assert any(reason == "WorkloadRestarted" for _, reason, _, _ in kube.events)


def test_drifted_secret_is_repaired(world: Any) -> None:
    engine, kube, store, clock = world
    body = synced(engine, store, ref_body("db"))
    tampered = secret_of(kube, "app", "db-secret")
    assert tampered is not None
    tampered["data"]["password"] = base64.b64encode(b"tampered").decode()
    kube.put(tampered)
    engine.repair(body["metadata"]["uid"])
    assert engine.state.next_due() <= clock.now
    store.calls.clear()
    engine.run_cycle()
    assert data(kube, "app", "db-secret")["password"] == MARKER
    assert "fetch" not in store.calls  # restored from the cached value


def test_spec_change_resyncs_at_once(world: Any) -> None:
    engine, kube, store, clock = world
    body = synced(engine, store, ref_body("db"))
    changed = copy.deepcopy(body)
    changed["metadata"]["generation"] = 2
    changed["spec"]["target"]["labels"] = {"team": "a"}
    register(engine, changed)
    engine.run_cycle()
    assert secret_of(kube, "app", "db-secret")["metadata"]["labels"]["team"] == "a"
    assert status_of(kube, "app", "db")["observedGeneration"] == 2
