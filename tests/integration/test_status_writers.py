"""Status writers on the real API server (paved.kube.status): each applies only its own part.

- Two writers racing on one object (the reconcile's Ready/Synced, the audit's
  PolicyCompliant), each reading the object and writing from what it read, many rounds at
  once: neither ever loses or rolls back the other's condition. With a merge patch of the
  conditions list (what the reconcile sent before), a write computed from an older read puts
  back the other writer's older condition, or drops it.
- Objects written by the old merge patches (`Update` managers in managedFields) converge:
  a field a writer leaves out is removed even though another manager held it, once, and
  other writers' parts stay.

No operator may run against the control plane meanwhile (it would write these objects' status
too): pytest's testpaths run tests/integration before tests/e2e start theirs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from fixtures.cluster import Kubectl

from paved import API_VERSION, ratelimit
from paved.api.common import POLICY_COMPLIANT, READY, SYNCED, get_condition
from paved.engines.audit import AUDIT_WRITE_BURST, AUDIT_WRITE_RATE, write_condition
from paved.engines.compose import ComposeEngine
from paved.engines.database import DATABASES, DRIFT_CHECK_STATUS
from paved.engines.rollout import ROLLOUT_STATUS
from paved.kube import apply as kube
from paved.kube.client import request, resource_info
from paved.kube.status import with_conditions

ROUNDS = 40

DATABASE = """
apiVersion: paved.dev/v1alpha1
kind: DatabaseIntent
metadata: {name: raced}
spec: {engine: postgresql, version: "16"}
"""

ROLLOUT = """
apiVersion: paved.dev/v1alpha1
kind: ProgressiveRollout
metadata: {name: migrated}
spec:
  targetRef: {name: app}
  service: {name: app, port: 80}
  trafficRouting: {gatewayAPI: {httpRoute: app}}
  steps: [{setWeight: 10}]
"""


def read(kind: str, name: str, namespace: str) -> dict[str, Any]:
    live = kube.get(API_VERSION, kind, name, namespace)
    assert live is not None
    return live


def round_of(body: dict[str, Any], type_: str) -> int:
    """The round a writer wrote its condition in (its message says "round N"); -1: none."""
    found = get_condition((body.get("status") or {}).get("conditions"), type_)
    return int(found["message"].split()[-1]) if found else -1


def reconcile_round(shown: dict[str, Any], n: int, engine: ComposeEngine = ComposeEngine()) -> None:
    """What the reconcile does: its status computed from what it read, written as the reconcile."""
    generation = shown["metadata"]["generation"]

    def compute(current: dict[str, Any]) -> tuple[dict[str, Any], None]:
        status = {**(current.get("status") or {}), "observedGeneration": generation, "composition": "c"}
        return with_conditions(status, [(READY, n % 2 == 0, "Round", f"round {n}"), (SYNCED, True, "Round", f"round {n}")],
                               generation), None

    engine.reconcile_and_write(DATABASES, shown, compute)


def audit_round(shown: dict[str, Any], n: int, bucket: ratelimit.TokenBucket = ratelimit.TokenBucket(
        AUDIT_WRITE_RATE, AUDIT_WRITE_BURST)) -> None:
    """What the audit does: its one condition, from what it read."""
    assert write_condition(shown, (POLICY_COMPLIANT, n % 2 == 0, "Round", f"round {n}"), bucket)


def test_two_writers_racing_on_one_object_keep_each_others_conditions(
        admin_kube_client: None, kubectl: Kubectl, namespace: str) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=DATABASE)
    writers: dict[str, tuple[str, Callable[[dict[str, Any], int], None]]] = {
        READY: (POLICY_COMPLIANT, reconcile_round), POLICY_COMPLIANT: (READY, audit_round)}
    completed = {READY: -1, POLICY_COMPLIANT: -1}  # the last round each writer finished
    lost: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(len(writers))

    def run(mine: str) -> None:
        other, write = writers[mine]
        start.wait()
        for n in range(ROUNDS):
            with lock:
                floor = completed[other]  # the other writer's condition is at least this new now
            write(read("DatabaseIntent", "raced", namespace), n)
            with lock:
                completed[mine] = n
            seen = round_of(read("DatabaseIntent", "raced", namespace), other)
            if seen < floor:
                lost.append(f"round {n} of {mine}'s writer: {other} went back to round {seen} from {floor}")

    threads = [threading.Thread(target=run, args=(mine,)) for mine in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not lost, lost[:5]
    final = read("DatabaseIntent", "raced", namespace)
    assert (round_of(final, READY), round_of(final, SYNCED), round_of(final, POLICY_COMPLIANT)) == (ROUNDS - 1,) * 3
    managers = {entry["manager"]: entry for entry in final["metadata"]["managedFields"] if entry.get("subresource") == "status"}
    assert set(managers) == {"paved-reconcile", "paved-policy-audit"}  # no merge patch left any trace
    assert set(managers["paved-policy-audit"]["fieldsV1"]["f:status"]["f:conditions"]) == {'k:{"type":"PolicyCompliant"}'}


def test_the_drift_check_and_the_reconcile_keep_each_others_fields(
        admin_kube_client: None, kubectl: Kubectl, namespace: str) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=DATABASE)
    reconcile_round(read("DatabaseIntent", "raced", namespace), 0, ComposeEngine())
    DRIFT_CHECK_STATUS.write(read("DatabaseIntent", "raced", namespace), {"lastDriftCheck": "2030-01-01T00:00:00Z"})
    stale = read("DatabaseIntent", "raced", namespace)
    reconcile_round({**stale, "status": {}}, 1, ComposeEngine())  # computed from a body without lastDriftCheck
    live = read("DatabaseIntent", "raced", namespace)
    assert live["status"]["lastDriftCheck"] == "2030-01-01T00:00:00Z" and round_of(live, READY) == 1
    assert DATABASES.status_writer.write(live, {**live["status"], "lastDriftCheck": None}) is None  # not the reconcile's


def test_an_object_written_by_the_old_merge_patches_converges(
        admin_kube_client: None, kubectl: Kubectl, namespace: str) -> None:
    """A rollout in flight when the operator was upgraded: its status was merge-patched (an
    Update manager holds every field); the rollout's writer now leaves out the message and
    a pending measurement, which must go, while the audit's condition stays."""
    kubectl("apply", "-n", namespace, "-f", "-", input=ROLLOUT)
    path = resource_info(API_VERSION, "ProgressiveRollout").path("migrated", namespace, subresource="status")
    old = with_conditions({"phase": "Paused", "message": "waiting for promote", "canaryWeight": 10,
                           "progress": {"stage": "StepRun", "pendingMeasure": {"id": "m-1"}}},
                          [(READY, False, "Paused", "p"), ("Progressing", True, "Paused", "p")], 1)
    request("PATCH", path, operation="patch-status", body={"status": old}, content_type="application/merge-patch+json")
    audit_round(read("ProgressiveRollout", "migrated", namespace), 0)
    shown = read("ProgressiveRollout", "migrated", namespace)
    assert {entry["manager"] for entry in shown["metadata"]["managedFields"] if entry.get("subresource") == "status"} == \
        {"paved", "paved-policy-audit"}

    # The machine's next status (from what it read): the message and the measurement gone,
    # the weight unchanged (the same value: an apply only shares what the old manager holds).
    new = {**shown["status"], "phase": "Progressing", "message": None, "progress": {"stage": "StepRun", "pendingMeasure": None}}
    new = with_conditions(new, [(READY, False, "Progressing", "step 1"), ("Progressing", True, "Progressing", "step 1")], 1)
    written = ROLLOUT_STATUS.write(shown, new)
    assert written is not None
    live = read("ProgressiveRollout", "migrated", namespace)
    status = live["status"]
    assert "message" not in status and status["progress"] == {"stage": "StepRun"}
    assert status["phase"] == "Progressing" and status["canaryWeight"] == 10
    assert {c["type"] for c in status["conditions"]} == {READY, "Progressing", POLICY_COMPLIANT}
    assert round_of(live, POLICY_COMPLIANT) == 0
    assert ROLLOUT_STATUS.write(live, new) is None  # converged: nothing to send

    # Later, the rollout's writer drops canaryWeight, which the old manager still shared: gone too.
    ROLLOUT_STATUS.write(live, {**new, "canaryWeight": None})
    assert "canaryWeight" not in read("ProgressiveRollout", "migrated", namespace)["status"]
