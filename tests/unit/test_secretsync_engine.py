"""The sync engine's cycles on the in-memory FakeStore and a fake Kubernetes: batching, never
losing a Secret, the missing rule, restarts, access refusal, and no value outside the Secret."""

from __future__ import annotations

import base64
import copy
import json
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from paved import ratelimit
from paved.api.platform import nothing_allowed
from paved.engines.secretsync.engine import BURST_WRITES, LIST_SECRETS_AT, SyncEngine
from paved.handlers.secrets import parse_ref
from paved.kube import apply as kube_apply
from paved.kube.client import ApiError, error_from_status
from paved.providers.base import Owner
from paved.providers.secretstores import AUTH_FAILED, UNREACHABLE, FakeStore, StoreConfig, StoreError, StoreProviders
from paved.secretsync import breaker, restart, target
from paved.secretsync.model import StoreKey

MARKER = "MARKER-9d2e-never-log-me"


class FakeKube:
    """Just enough Kubernetes for the engine: objects in dicts, every write recorded (the
    engine writes from several threads, hence the lock)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stores: dict[StoreKey, dict[str, Any]] = {}
        self.labels: dict[str, dict[str, str]] = {}
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.status: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[tuple[str, str, str, str]] = []
        self.workloads: dict[str, list[dict[str, Any]]] = {}
        self.workload_patches: list[tuple[str, str, str, Mapping[str, Any]]] = []
        self.secret_writes = 0
        self.status_writes = 0
        self.store_reads = 0
        self.secret_write_error: ApiError | None = None  # raised by the next Secret writes
        self.secret_reads: list[tuple[str, str]] = []  # ("get", name) or ("list", namespace)

    def content_hash_key(self) -> bytes:
        return b"0" * 32

    # KubePort
    def get_store(self, key: StoreKey) -> dict[str, Any] | None:
        self.store_reads += 1
        return copy.deepcopy(self.stores.get(key))

    def namespace_labels(self, name: str) -> dict[str, str] | None:
        return self.labels.get(name, {})

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            self.secret_reads.append(("get", name))
        return copy.deepcopy(self.secrets.get((namespace, name)))

    def secrets_metadata(self, namespace: str) -> dict[str, dict[str, Any]]:
        with self.lock:
            self.secret_reads.append(("list", namespace))
        return {name: target.live_view(secret) for (ns, name), secret in self.secrets.items() if ns == namespace}

    def apply_secret(self, owner: Owner, body: Mapping[str, Any]) -> None:
        if self.secret_write_error is not None:
            raise self.secret_write_error
        with self.lock:
            self.secret_writes += 1
        self.secrets[(owner.namespace or "", body["metadata"]["name"])] = kube_apply.decorate(body, owner, namespaced=True)

    def merge_secret(self, live: Mapping[str, Any], patch: Mapping[str, Any]) -> None:
        with self.lock:
            self.secret_writes += 1
        key = (live["metadata"]["namespace"], live["metadata"]["name"])
        secret = self.secrets[key]
        for name, value in patch.get("data", {}).items():
            if value is None:
                secret.setdefault("data", {}).pop(name, None)
            else:
                secret.setdefault("data", {})[name] = value

    def delete_secret(self, namespace: str, name: str, uid: str | None) -> None:
        self.secrets.pop((namespace, name), None)

    def apply_ref_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Server-side apply as the API server does it here: the applied fields replace the
        engine's, conditions of other types (other managers') stay."""
        applied = copy.deepcopy(dict(status))
        with self.lock:
            self.status_writes += 1
            live = self.status.get((namespace, name), {})
            types = {c["type"] for c in applied.get("conditions", [])}
            others = [c for c in live.get("conditions", []) if c["type"] not in types]
            self.status[(namespace, name)] = {**applied, "conditions": applied.get("conditions", []) + others}

    def list_workloads(self, namespace: str) -> list[dict[str, Any]]:
        return copy.deepcopy(self.workloads.get(namespace, []))

    def patch_workload(self, kind: str, namespace: str, name: str, body: Mapping[str, Any]) -> None:
        self.workload_patches.append((kind, namespace, name, body))
        for workload in self.workloads.get(namespace, []):
            if workload["metadata"]["name"] == name:
                template = workload.setdefault("spec", {}).setdefault("template", {}).setdefault("metadata", {})
                template.setdefault("annotations", {}).update(body["spec"]["template"]["metadata"]["annotations"])

    def event(self, owner: Owner, reason: str, message: str, type: str = "Normal") -> None:
        with self.lock:
            self.events.append((owner.name, reason, message, type))

    def secret_value(self, namespace: str, name: str, key: str) -> str:
        raise StoreError(f"Secret {namespace}/{name} not found", reason="CredentialsMissing")

    def service_account_token(self, namespace: str, name: str, audiences: Sequence[str], seconds: int) -> str:
        return "jwt"

    # helpers
    def data(self, namespace: str, name: str) -> dict[str, str]:
        secret = self.secrets[(namespace, name)]
        return {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}

    def condition(self, namespace: str, name: str, type_: str = "Ready") -> dict[str, Any]:
        return next(c for c in self.status[(namespace, name)]["conditions"] if c["type"] == type_)


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
    kube, store, clock = FakeKube(), FakeStore(batch_size=20), Clock()
    engine = SyncEngine(kube, clock=clock, providers=OneStore(kube, store))
    kube.stores[StoreKey("SecretStore", "app", "vault")] = copy.deepcopy(VAULT_STORE)
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
    return json.dumps([list(kube.status.values()), kube.events, kube.workload_patches], default=str)


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
    assert kube.secret_writes == 1000 and kube.store_reads == 1

    store.calls.clear()
    advance_to_next_cycle(engine, clock)
    report = engine.run_cycle()
    assert report.refs == 1000 and report.keys_fetched == 0 and kube.secret_writes == 1000
    assert store.calls == {"versions": 5}

    for i in range(5):
        store.put(f"apps/s{i}", {"username": f"u{i}", "password": "rotated"})
    store.calls.clear()
    advance_to_next_cycle(engine, clock)
    report = engine.run_cycle()
    assert report.keys_fetched == 5 and store.calls == {"versions": 5, "fetch": 1}
    assert kube.secret_writes == 1000 + 50  # 10 refs per rotated key
    assert kube.data("app", "r0-secret")["password"] == "rotated"


def test_a_cycle_writing_many_secrets_holds_the_burst_flag_a_small_one_does_not(world: Any) -> None:
    engine, kube, store, clock = world
    seen: list[bool] = []
    write = kube.apply_secret

    def apply_secret(owner: Owner, body: Mapping[str, Any]) -> None:
        seen.append(ratelimit.BURST.active())
        write(owner, body)

    kube.apply_secret = apply_secret  # type: ignore[method-assign]
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
    assert kube.status_writes == 50
    stamped, first = kube.status[("app", "r0")]["lastRefreshTime"], clock.now
    refreshes = 0
    while True:  # 1m refreshes that change nothing write nothing, until the stamps are 10 minutes old
        advance_to_next_cycle(engine, clock)
        assert engine.run_cycle().refs == 50
        refreshes += 1
        if clock.now - first >= 600:
            break
        assert kube.status_writes == 50
    assert refreshes >= 9 and kube.status_writes == 100
    assert kube.status[("app", "r0")]["lastRefreshTime"] > stamped


def test_first_sync_is_immediate_and_later_refreshes_follow_the_grid(world: Any) -> None:
    engine, kube, store, clock = world
    put_database(store)
    register(engine, ref_body("db"))
    assert engine.state.next_due() <= clock.now
    engine.run_cycle()
    assert kube.condition("app", "db")["status"] == "True"
    assert clock.now < engine.state.next_due() <= clock.now + 60


def test_a_refresh_that_ran_late_is_not_followed_by_another_a_moment_later(world: Any) -> None:
    # A new leader's first cycle, slowed by its start-up, ran 40 s after its grid point: the next
    # grid point is 20 s away, too close; the one after is taken.
    engine, kube, store, clock = world
    body = synced(engine, store, ref_body("db"))
    fresh = SyncEngine(kube, clock=clock, providers=OneStore(kube, store))
    register(fresh, {**body, "status": kube.status[("app", "db")]})
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
    assert kube.data("app", "b-secret") == {"username": "app", "password": MARKER}


def test_restart_costs_version_lookups_not_value_reads(world: Any) -> None:
    engine, kube, store, clock = world
    body = synced(engine, store, ref_body("db"))
    # A new operator process: fresh engine, the ref resumes with the status written before.
    fresh = SyncEngine(kube, clock=clock, providers=OneStore(kube, store))
    resumed = {**body, "status": kube.status[("app", "db")]}
    register(fresh, resumed)
    assert fresh.state.next_due() > clock.now  # keeps its place on the grid
    store.calls.clear()
    writes = kube.secret_writes
    advance_to_next_cycle(fresh, clock)
    fresh.run_cycle()
    assert store.calls == {"versions": 1} and kube.secret_writes == writes


# --- never lose a good Secret ------------------------------------------------------------------------


def test_store_outage_keeps_the_secret_and_marks_stale_then_recovers(world: Any) -> None:
    engine, kube, store, clock = world
    synced(engine, store, ref_body("db"))
    before = copy.deepcopy(kube.secrets[("app", "db-secret")])
    good = kube.status[("app", "db")]["lastGoodSyncTime"]

    store.failure = StoreError("vault https://vault:8200 unreachable during metadata read: ConnectionError", reason="StoreUnreachable")
    advance_to_next_cycle(engine, clock)
    engine.run_cycle()
    assert kube.secrets[("app", "db-secret")] == before
    ready, stale = kube.condition("app", "db"), kube.condition("app", "db", "Stale")
    assert ready["status"] == "False" and ready["reason"] == "StoreUnreachable"
    assert stale["status"] == "True" and good in stale["message"]
    assert kube.status[("app", "db")]["lastGoodSyncTime"] == good
    retry_at = engine.state.next_due()
    assert clock.now < retry_at <= clock.now + 15  # backoff capped at interval/4

    store.failure = None
    clock.now = retry_at
    engine.run_cycle()
    assert kube.condition("app", "db")["status"] == "True"
    assert kube.condition("app", "db", "Stale")["status"] == "False"
    assert kube.secrets[("app", "db-secret")] == before  # unchanged content: not even rewritten


def synced_then_missing_once(engine: SyncEngine, store: FakeStore, clock: Clock) -> None:
    """db (deletionPolicy Delete) synced, then its remote key vanished for one cycle."""
    synced(engine, store, ref_body("db", target={"name": "db-secret", "deletionPolicy": "Delete"}))
    store.delete("production/database")
    advance_to_next_cycle(engine, clock)
    engine.run_cycle()


def cycles_until_gone(engine: SyncEngine, kube: FakeKube, clock: Clock, secret: str = "db-secret") -> float:
    """Refresh every minute until `secret` loses its keys; the seconds that took."""
    started = clock.now
    while ("app", secret) in kube.secrets and kube.data("app", secret).get("password"):
        assert clock.now - started < 3600, "never acted on"
        advance_to_next_cycle(engine, clock)
        engine.run_cycle()
    return clock.now - started


def test_missing_key_deleted_only_after_the_grace_period_asked_key_by_key(world: Any) -> None:
    engine, kube, store, clock = world
    synced_then_missing_once(engine, store, clock)
    assert ("app", "db-secret") in kube.secrets and store.calls["confirm"] == 1  # asked about alone
    first = kube.condition("app", "db")
    assert first["reason"] == "RemoteKeyMissing" and "Delete applies" in first["message"]
    assert cycles_until_gone(engine, kube, clock) >= 600 - 60  # the default 10m grace, counted from the first cycle
    assert ("app", "db-secret") not in kube.secrets
    assert kube.condition("app", "db")["reason"] == "RemoteKeyDeleted"
    assert store.calls["confirm"] >= 10  # every refresh asked again


def test_a_key_a_batch_answer_left_out_is_found_by_the_per_key_call(world: Any) -> None:
    engine, kube, store, clock = world
    store.unlisted.add("production/database")
    synced(engine, store, ref_body("db"))
    assert kube.condition("app", "db")["status"] == "True" and store.calls["confirm"] == 1


def test_an_unconfirmable_not_found_never_deletes(world: Any) -> None:
    engine, kube, store, clock = world
    synced(engine, store, ref_body("db", target={"name": "db-secret", "deletionPolicy": "Delete"}))
    before = copy.deepcopy(kube.secrets[("app", "db-secret")])
    store.delete("production/database")
    store.unconfirmable.add("production/database")  # e.g. a Vault 404 whose mount could not be confirmed
    for _ in range(60):  # an hour of refreshes
        advance_to_next_cycle(engine, clock)
        engine.run_cycle()
    assert kube.secrets[("app", "db-secret")] == before
    ready, stale = kube.condition("app", "db"), kube.condition("app", "db", "Stale")
    assert (ready["status"], ready["reason"]) == ("False", "NotFoundUnconfirmed") and stale["status"] == "True"
    assert not kube.status[("app", "db")].get("missingSince")


def test_editing_the_store_starts_the_missing_rule_over(world: Any) -> None:
    engine, kube, store, clock = world
    key = StoreKey("SecretStore", "app", "vault")
    kube.stores[key]["metadata"].update(uid="store-uid", generation=1)
    synced_then_missing_once(engine, store, clock)
    first_seen = clock.now
    while clock.now - first_seen < 540:
        advance_to_next_cycle(engine, clock)
        engine.run_cycle()
    edited = copy.deepcopy(kube.stores[key])
    edited["metadata"]["generation"] = 2
    edited["spec"]["missingKeyGracePeriod"] = "5m"
    engine.store_seen(key, edited)
    kube.stores[key] = edited
    edited_at = clock.now
    assert cycles_until_gone(engine, kube, clock) >= 300 - 60  # the new grace, counted from the edit
    assert clock.now - edited_at >= 300 - 60 and clock.now - first_seen > 600


def test_an_empty_remote_secret_is_never_written(world: Any) -> None:
    engine, kube, store, clock = world
    store.put("apps/empty", {})
    register(engine, ref_body("empty", data=[], dataFrom=[{"extract": {"key": "apps/empty"}}]))
    synced(engine, store, ref_body("db", data=[], dataFrom=[{"extract": {"key": "production/database"}}]))
    assert ("app", "empty-secret") not in kube.secrets and kube.condition("app", "empty")["reason"] == "EmptySecret"
    before = copy.deepcopy(kube.secrets[("app", "db-secret")])
    store.put("production/database", {})
    advance_to_next_cycle(engine, clock)
    engine.run_cycle()
    assert kube.secrets[("app", "db-secret")] == before and kube.condition("app", "db")["reason"] == "EmptySecret"


def test_a_key_back_before_confirmation_is_forgiven(world: Any) -> None:
    engine, kube, store, clock = world
    synced_then_missing_once(engine, store, clock)
    put_database(store)
    advance_to_next_cycle(engine, clock)
    engine.run_cycle()
    assert kube.condition("app", "db")["status"] == "True" and kube.status[("app", "db")]["missingSince"] == {}


# --- one bad store never stalls the others --------------------------------------------------------


def add_store(kube: FakeKube, name: str) -> StoreKey:
    key = StoreKey("SecretStore", "app", name)
    kube.stores[key] = {**copy.deepcopy(VAULT_STORE), "metadata": {"name": name}}
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
    kube, fast, hung = FakeKube(), FakeStore(), FakeStore()
    engine = SyncEngine(kube, providers=OneStore(kube, fast, {"hung": hung}), store_deadline=60)
    add_store(kube, "vault")
    add_store(kube, "hung")  # sorts first: a sequential cycle would start with it
    put_database(fast)
    put_database(hung)
    hung.answering.clear()
    engine.start()
    try:
        register(engine, ref_body("stuck", storeRef={"name": "hung"}, interval="5s"))
        register(engine, ref_body("db", interval="5s"))
        eventually(lambda: ("app", "db-secret") in kube.secrets, 5, "the other store's ref synced while one store hangs")
        assert hung.hung.is_set() and ("app", "stuck") not in kube.status  # its job is still waiting
        hung.answering.set()
        eventually(lambda: ("app", "stuck-secret") in kube.secrets, 5, "the hung store's ref synced once it answers")
    finally:
        hung.answering.set()
        engine.stop()


def test_a_store_deadline_bounds_its_work_and_leaves_its_secrets_alone(world: Any) -> None:
    engine, kube, store, clock = world
    engine.store_deadline = 0.3
    synced(engine, store, ref_body("db"))
    before = copy.deepcopy(kube.secrets[("app", "db-secret")])
    store.answering.clear()
    advance_to_next_cycle(engine, clock)
    started = time.monotonic()
    try:
        engine.run_cycle()
    finally:
        store.answering.set()
    assert time.monotonic() - started < 5  # bounded by the deadline (0.3 s), not by the store that never answers
    ready, stale = kube.condition("app", "db"), kube.condition("app", "db", "Stale")
    assert (ready["status"], ready["reason"]) == ("False", "StoreTimeout") and "no answer" in ready["message"]
    assert stale["status"] == "True" and kube.secrets[("app", "db-secret")] == before


def test_after_repeated_failures_a_store_is_not_called_until_its_cool_down_ends(world: Any) -> None:
    engine, kube, store, clock = world
    key = StoreKey("SecretStore", "app", "vault")
    body = synced(engine, store, ref_body("db"))
    before = copy.deepcopy(kube.secrets[("app", "db-secret")])
    store.failure = StoreError("vault https://vault:8200 unreachable during metadata read: ConnectionError", reason=UNREACHABLE)
    for _ in range(breaker.FAILURE_THRESHOLD):
        advance_to_next_cycle(engine, clock)
        engine.run_cycle()
    ready = kube.condition("app", "db")
    assert (ready["status"], ready["reason"]) == ("False", breaker.CIRCUIT_OPEN)
    assert f"{breaker.FAILURE_THRESHOLD} consecutive failures" in ready["message"] and "StoreUnreachable" in ready["message"]
    assert kube.condition("app", "db", "Stale")["reason"] == breaker.CIRCUIT_OPEN
    opened_at, calls, writes = clock.now, sum(store.calls.values()), kube.status_writes
    assert engine.state.next_due() >= opened_at + breaker.COOL_DOWN  # its refs come back when the cool-down ends

    engine.repair(body["metadata"]["uid"])  # whatever makes a ref due: nothing calls the store meanwhile
    engine.run_cycle()
    status = engine.check_store(key, kube.stores[key])
    assert status["conditions"][0]["reason"] == breaker.CIRCUIT_OPEN
    assert sum(store.calls.values()) == calls and kube.status_writes == writes  # not called, nothing new to say

    store.failure = None  # the probe, once the cool-down is over
    advance_to_next_cycle(engine, clock)
    assert clock.now >= opened_at + breaker.COOL_DOWN
    engine.run_cycle()
    assert kube.condition("app", "db")["status"] == "True" and sum(store.calls.values()) > calls
    assert kube.secrets[("app", "db-secret")] == before and engine.breakers.state(key).state == "Closed"


def test_a_failed_probe_opens_the_circuit_for_longer(world: Any) -> None:
    engine, kube, store, clock = world
    synced(engine, store, ref_body("db"))
    store.failure = StoreError("vault unreachable", reason=UNREACHABLE)
    for _ in range(breaker.FAILURE_THRESHOLD + 1):  # the last one is the probe
        advance_to_next_cycle(engine, clock)
        engine.run_cycle()
    assert engine.state.next_due() >= clock.now + 2 * breaker.COOL_DOWN
    assert kube.condition("app", "db")["reason"] == breaker.CIRCUIT_OPEN


def test_an_authentication_refusal_does_not_open_the_circuit(world: Any) -> None:
    engine, kube, store, clock = world
    synced(engine, store, ref_body("db"))
    store.failure = StoreError("spec.provider.vault.auth: login refused", reason=AUTH_FAILED)
    for _ in range(2 * breaker.FAILURE_THRESHOLD):
        advance_to_next_cycle(engine, clock)
        engine.run_cycle()
    assert kube.condition("app", "db")["reason"] == AUTH_FAILED  # the backend answered: ask again as usual


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
    assert kube.condition("app", "good")["status"] == "True"
    expect = {
        "noprop": ("PropertyNotFound", "spec.data[0].remoteRef.property"),
        "badtpl": ("TemplateError", "spec.target.template.data.x"),
        "nostore": ("StoreNotFound", "spec.storeRef.name"),
        "missing": ("RemoteKeyMissing", "spec.data[0].remoteRef.key"),
    }
    for name, (reason, field) in expect.items():
        ready = kube.condition("app", name)
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
    kube.secret_write_error = error_from_status(status, method="PATCH", path="/api/v1/namespaces/app/secrets/db-secret")
    put_database(store)
    register(engine, ref_body("db"))
    engine.run_cycle()
    ready = kube.condition("app", "db")
    assert (ready["status"], ready["reason"]) == ("False", "TargetWriteFailed")
    assert f"{answer['code']} {answer['reason']}" in ready["message"]
    visible = everything_visible(kube)
    assert not [name for name, form in forms.items() if form in visible]


def test_store_auth_failure_is_reported_on_every_ref(world: Any) -> None:
    engine, kube, store, clock = world
    store.failure = StoreError("spec.provider.vault.auth.kubernetes: kubernetes login refused: permission denied", reason=AUTH_FAILED)
    register(engine, ref_body("db"))
    engine.run_cycle()
    ready = kube.condition("app", "db")
    assert ready["reason"] == AUTH_FAILED and "spec.provider.vault.auth.kubernetes" in ready["message"]
    status = engine.check_store(StoreKey("SecretStore", "app", "vault"), VAULT_STORE)
    assert {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]} == {"Ready": ("False", AUTH_FAILED)}


def test_cluster_store_refuses_out_of_prefix_keys_and_reads_nothing(world: Any) -> None:
    engine, kube, store, clock = world
    kube.stores[StoreKey("ClusterSecretStore", "", "shared")] = {
        "metadata": {"name": "shared"},
        "spec": {**VAULT_STORE["spec"], "access": [{"namespaces": ["app"], "keyPrefixes": ["teams/{namespace}/"]}]},
    }
    store.put("teams/app/db", {"username": "a", "password": MARKER})
    store.put("teams/other/db", {"username": "b", "password": MARKER})
    register(engine, ref_body("mine", key="teams/app/db", storeRef={"name": "shared", "kind": "ClusterSecretStore"}))
    engine.run_cycle()
    assert kube.condition("app", "mine")["status"] == "True"
    store.calls.clear()
    register(engine, ref_body("theirs", key="teams/other/db", storeRef={"name": "shared", "kind": "ClusterSecretStore"}))
    engine.run_cycle()
    ready = kube.condition("app", "theirs")
    assert (ready["status"], ready["reason"]) == ("False", "AccessDenied")
    assert "spec.data[0].remoteRef.key" in ready["message"] and "teams/app/" in ready["message"]
    assert store.calls == {} and ("app", "theirs-secret") not in kube.secrets


# --- tenancy: a SecretStore never borrows the operator's power ------------------------------------

AWS_DEFAULT_CHAIN = {"metadata": {"name": "aws"}, "spec": {"provider": {"aws": {"region": "eu-west-1"}}}}
FOREIGN_VAULT = {"metadata": {"name": "vault"},
                 "spec": {"provider": {"vault": {**VAULT_STORE["spec"]["provider"]["vault"], "server": "https://vault.attacker:8200"}}}}


def test_a_store_that_would_borrow_the_operators_power_reads_nothing(world: Any) -> None:
    engine, kube, store, clock = world
    kube.stores[StoreKey("SecretStore", "evil", "aws")] = copy.deepcopy(AWS_DEFAULT_CHAIN)
    kube.stores[StoreKey("SecretStore", "evil", "vault")] = copy.deepcopy(FOREIGN_VAULT)
    store.put("team-b/database", {"username": "b", "password": MARKER})
    register(engine, ref_body("borrow", namespace="evil", key="team-b/database", storeRef={"name": "aws"}))
    register(engine, ref_body("foreign", namespace="evil", key="team-b/database"))
    engine.run_cycle()
    for name, field in (("borrow", "spec.provider.aws.auth: "), ("foreign", "spec.provider.vault.server: ")):
        ready = kube.condition("evil", name)
        assert (ready["status"], ready["reason"]) == ("False", "StoreNotAllowed"), ready
        assert ready["message"].startswith("spec.storeRef.name: SecretStore evil/"), ready["message"]
        assert field in ready["message"] and ready["message"].endswith("nothing was read")
    assert store.calls == {} and engine.providers.gets == 0  # no provider was even built
    assert not [key for key in kube.secrets if key[0] == "evil"]
    for key, body, field in ((StoreKey("SecretStore", "evil", "aws"), AWS_DEFAULT_CHAIN, "spec.provider.aws.auth: "),
                             (StoreKey("SecretStore", "evil", "vault"), FOREIGN_VAULT, "spec.provider.vault.server: ")):
        [ready] = engine.check_store(key, body)["conditions"]
        assert (ready["status"], ready["reason"]) == ("False", "NotAllowed") and ready["message"].startswith(field)
    assert store.calls == {}  # the store's check did not log in either
    assert MARKER not in everything_visible(kube)


def test_an_allowance_lets_a_store_act_and_withdrawing_it_stops_the_next_read(world: Any) -> None:
    _, kube, store, clock = world
    allowed: dict[str, list[str]] = {}
    engine = SyncEngine(kube, clock=clock, providers=OneStore(kube, store),
                        allowances=lambda kind, namespace: {**nothing_allowed(), **allowed}
                        if (kind, namespace) == ("SecretStore", "platform") else nothing_allowed())
    key = StoreKey("SecretStore", "platform", "aws")
    kube.stores[key] = copy.deepcopy(AWS_DEFAULT_CHAIN)
    put_database(store)
    register(engine, ref_body("db", namespace="platform", storeRef={"name": "aws"}, interval="1h"))
    engine.run_cycle()
    assert kube.condition("platform", "db")["reason"] == "StoreNotAllowed" and store.calls == {}

    allowed["operatorCredentials"] = ["platform-aws"]
    assert engine.permissions_changed() == [key]
    assert engine.state.next_due() <= clock.now  # due at once, not at the next refresh an hour away
    engine.run_cycle()
    assert kube.condition("platform", "db")["status"] == "True" and kube.data("platform", "db-secret")["password"] == MARKER
    assert engine.check_store(key, AWS_DEFAULT_CHAIN)["conditions"][0]["reason"] == "Authenticated"

    allowed.clear()
    store.calls.clear()
    engine.permissions_changed()
    engine.run_cycle()
    assert kube.condition("platform", "db")["reason"] == "StoreNotAllowed" and store.calls == {}
    assert kube.data("platform", "db-secret")["password"] == MARKER  # the last good value stays


def test_target_owned_by_someone_else_is_a_conflict(world: Any) -> None:
    engine, kube, store, clock = world
    put_database(store)
    kube.secrets[("app", "db-secret")] = {"metadata": {"name": "db-secret", "namespace": "app"}, "data": {"x": "eA=="}}
    register(engine, ref_body("db"))
    engine.run_cycle()
    assert kube.condition("app", "db")["reason"] == "TargetConflict"
    assert kube.secrets[("app", "db-secret")]["data"] == {"x": "eA=="}


def test_a_cycle_writing_many_secrets_of_a_namespace_lists_them_once_instead_of_a_get_each(world: Any) -> None:
    engine, kube, store, clock = world
    put_database(store)
    kube.secrets[("app", "r3-secret")] = {"metadata": {"name": "r3-secret", "namespace": "app"}, "data": {"x": "eA=="}}
    for i in range(LIST_SECRETS_AT):
        register(engine, ref_body(f"r{i}"))
    register(engine, ref_body("twin", target={"name": "r0-secret"}))  # a second ref on r0's Secret
    kube.stores[StoreKey("SecretStore", "small", "vault")] = copy.deepcopy(VAULT_STORE)
    register(engine, ref_body("alone", namespace="small"))
    engine.run_cycle()
    assert sorted(kube.secret_reads) == [("get", "alone-secret"), ("get", "r0-secret"), ("list", "app")]
    assert kube.condition("app", "r1")["status"] == "True" and kube.condition("small", "alone")["status"] == "True"
    assert kube.condition("app", "r3")["reason"] == "TargetConflict"  # someone else's, seen in the listing
    assert {kube.condition("app", "r0")["reason"], kube.condition("app", "twin")["reason"]} == {"Synced", "TargetConflict"}

    kube.secret_reads.clear()  # the next cycle retries only the two conflicts: a GET each
    clock.now += 90  # one and a half intervals: every ref is due again
    engine.run_cycle()
    assert sorted(kube.secret_reads) == [("get", "r0-secret"), ("get", "r3-secret")]


def test_merge_policy_adds_keys_to_an_existing_secret(world: Any) -> None:
    engine, kube, store, clock = world
    put_database(store)
    kube.secrets[("app", "db-secret")] = {"metadata": {"name": "db-secret", "namespace": "app", "resourceVersion": "1"},
                                          "data": {"x": "eA=="}}
    register(engine, ref_body("db", target={"name": "db-secret", "creationPolicy": "Merge"}))
    engine.run_cycle()
    assert kube.data("app", "db-secret") == {"x": "x", "username": "app", "password": MARKER}


def test_merge_policy_removes_only_its_keys_when_the_remote_key_is_gone(world: Any) -> None:
    engine, kube, store, clock = world
    kube.secrets[("app", "db-secret")] = {"metadata": {"name": "db-secret", "namespace": "app", "resourceVersion": "1"},
                                          "data": {"x": "eA=="}}
    synced(engine, store, ref_body("db", target={"name": "db-secret", "creationPolicy": "Merge", "deletionPolicy": "Delete"}))
    store.delete("production/database")
    cycles_until_gone(engine, kube, clock)  # the missing rule: acted on after the grace period
    assert kube.data("app", "db-secret") == {"x": "x"}
    assert kube.condition("app", "db")["reason"] == "RemoteKeyDeleted"


# --- rotation reaches consumers -------------------------------------------------------------------


def test_rotation_restarts_opted_in_workloads_once(world: Any) -> None:
    engine, kube, store, clock = world
    put_database(store)
    store.put("other", {"username": "o", "password": "p"})
    register(engine, ref_body("db", target={"name": "db-credentials"}))
    register(engine, ref_body("api", key="other", target={"name": "api-credentials"}))
    kube.workloads["app"] = [
        {"kind": "Deployment", "metadata": {"name": "web", "namespace": "app",
                                            "annotations": {restart.OPT_IN_ANNOTATION: "db-credentials,api-credentials"}}},
        {"kind": "StatefulSet", "metadata": {"name": "idle", "namespace": "app"}},
    ]
    engine.run_cycle()
    assert kube.workload_patches == []  # creation is not a change
    put_database(store, "rotated")
    store.put("other", {"username": "o", "password": "rotated"})
    advance_to_next_cycle(engine, clock)
    engine.run_cycle()
    assert [(k, n) for k, _, n, _ in kube.workload_patches] == [("Deployment", "web")]  # two Secrets, one restart
    advance_to_next_cycle(engine, clock)
    engine.run_cycle()
    assert len(kube.workload_patches) == 1  # nothing changed: no more restarts
    assert any(reason == "WorkloadRestarted" for _, reason, _, _ in kube.events)


def test_drifted_secret_is_repaired(world: Any) -> None:
    engine, kube, store, clock = world
    body = synced(engine, store, ref_body("db"))
    kube.secrets[("app", "db-secret")]["data"]["password"] = base64.b64encode(b"tampered").decode()
    engine.repair(body["metadata"]["uid"])
    assert engine.state.next_due() <= clock.now
    store.calls.clear()
    engine.run_cycle()
    assert kube.data("app", "db-secret")["password"] == MARKER
    assert "fetch" not in store.calls  # restored from the cached value


def test_spec_change_resyncs_at_once(world: Any) -> None:
    engine, kube, store, clock = world
    body = synced(engine, store, ref_body("db"))
    changed = copy.deepcopy(body)
    changed["metadata"]["generation"] = 2
    changed["spec"]["target"]["labels"] = {"team": "a"}
    register(engine, changed)
    engine.run_cycle()
    assert kube.secrets[("app", "db-secret")]["metadata"]["labels"]["team"] == "a"
    assert kube.status[("app", "db")]["observedGeneration"] == 2


def test_every_kube_port_has_every_method_the_engine_calls() -> None:
    """The real port, this module's fake and the bench's in-memory one (bench/bench_secrets.py)
    stay in step with the Protocol: a missing read fails here, not in the middle of a bench."""
    import importlib.util
    from pathlib import Path

    from paved.engines.secretsync import KubeApi, KubePort

    path = Path(__file__).resolve().parents[2] / "bench" / "bench_secrets.py"
    spec = importlib.util.spec_from_file_location("bench_secrets_for_test", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    wanted = {name for name in vars(KubePort) if not name.startswith("_")}
    assert "secrets_metadata" in wanted
    for port in (KubeApi, FakeKube, bench.MemoryKube):
        assert wanted <= set(dir(port)), (port.__name__, wanted - set(dir(port)))
