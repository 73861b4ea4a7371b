"""Two `paved run` replicas, as deploy/ runs them, against the real control plane.

One Lease (deploy/'s defaults: 15 s duration, 10 s renew deadline, 2 s retry), one webhook
port shared by both replicas (SO_REUSEPORT: the kernel spreads the API server's calls over
the replicas that listen, as the paved-webhook Service spreads them over ready pods), the
operator's ServiceAccount and RBAC from deploy/, moto as its AWS. The session's single
replica stands aside for this module and comes back afterwards.

What is proved here, each against the real API server:
- exactly one replica leads (it holds the Lease), every replica serves admission;
- the standby answers admission while the leader is dead and before it takes over;
- SIGKILL of the leader during mixed load (databases, identities, refs refreshing, a canary
  mid-step, admission requests): the standby takes over; no duplicate RDS instance; the
  canary neither skips nor repeats a step; no remote key read twice within its refresh
  interval; every intent converges; no admission call failed;
- SIGTERM hands the Lease over at once;
- SIGSTOP of the leader until the standby has taken over, then SIGCONT: the old leader sends
  no write (the API server's audit log, by the replica's User-Agent) and exits;
- with every replica stopped, an administrator can still remove a finalizer and relabel an
  intent, while a spec change is refused (guardrails stay closed).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
import yaml

from e2e.cluster import Cluster
from e2e.shop import Shop, canary_weights, seed_steps, start
from fixtures.aws import MotoServer
from fixtures.cluster import Kubectl, wait_for
from fixtures.operator import OperatorProcess
from paved.dev.controlplane import ControlPlane
from paved.dev.demo import use_cluster_network
from paved.runtime.webhook import CONFIGURATION_NAME
from paved.dev.operator import Replicas, start_replicas

pytestmark = [pytest.mark.cluster]

LEASE = "paved-operator"
OPERATOR_NAMESPACE = "paved-system"
REFRESH = 10  # seconds: the refs' refreshInterval
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


@pytest.fixture(scope="module")
def replicas(operator: OperatorProcess, control_plane: ControlPlane, moto_server: MotoServer,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    operator.stop()  # one Lease, two candidates: the session's replica stands aside
    use_cluster_network(control_plane, moto_server.cluster_network())  # where the databases go
    pair = start_replicas(control_plane, tmp_path_factory.mktemp("replicas"), 2, env=moto_server.env(),
                          process_class=OperatorProcess, install=False)
    try:
        # The API server calls the URLs the leader writes when it takes the Lease: until then
        # they name the session operator's port (another address than the pair's shared one).
        port = pair.processes[0].webhook_port
        wait_for(lambda: webhook_urls(control_plane) and all(f":{port}/" in url for url in webhook_urls(control_plane)),
                 timeout=60, what=f"the webhook configuration to name the replicas' port {port}")
        yield pair
    finally:
        if any(process.pid is not None for process in pair.processes):
            for process in pair.processes:
                if process.record is not None and process.pid is not None:
                    try:
                        os.kill(process.pid, signal.SIGCONT)  # a stopped one cannot answer SIGTERM
                    except OSError:
                        pass
        pair.stop()
        operator.start()


def webhook_urls(control_plane: ControlPlane) -> list[str]:
    found = control_plane.kubectl("get", "validatingwebhookconfiguration", CONFIGURATION_NAME, "-o", "json", check=False)
    if found.returncode != 0:
        return []
    return [str(hook["clientConfig"].get("url") or "") for hook in json.loads(found.stdout).get("webhooks") or []]


def lease_holder(kubectl: Kubectl) -> str | None:
    lease = json.loads(kubectl("get", "lease", LEASE, "-n", OPERATOR_NAMESPACE, "-o", "json").stdout)
    return (lease.get("spec") or {}).get("holderIdentity")


def ensure_pair(replicas: Replicas) -> OperatorProcess:
    """Both replicas running (a killed one started again), one of them leading."""
    for process in replicas.processes:
        if not process.alive():
            process.start()
    return replicas.wait_leader(timeout=60)


def writes_after(control_plane: ControlPlane, user_agent_pid: int, since: datetime) -> list[dict[str, Any]]:
    """Write requests the API server received from the replica with this pid after `since`."""
    found = []
    for line in control_plane.audit_log.read_text().splitlines():
        entry = json.loads(line)
        if f"/{user_agent_pid})" not in entry.get("userAgent", "") or entry.get("verb") not in WRITE_VERBS:
            continue
        received = datetime.fromisoformat(entry["requestReceivedTimestamp"].replace("Z", "+00:00"))
        if received > since:
            found.append(entry)
    return found


@dataclass
class AdmissionLoad:
    """Spec changes sent through the API server (so through the webhook) all along, from a
    thread: each should be judged; a refusal by the webhook's absence is counted."""

    kubectl: Kubectl
    namespace: str
    name: str = "admission-probe"
    sent: int = 0
    sent_at: list[float] = field(default_factory=list)  # time.monotonic() of each request
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> AdmissionLoad:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sent += 1
            self.sent_at.append(time.monotonic())
            body = identity(self.name, self.namespace, ttl=f"{1 + self.sent % 48}h")
            result = self.kubectl("apply", "-f", "-", input=yaml.safe_dump(body), check=False)
            if result.returncode != 0:
                self.failures.append(result.stderr.strip())
            self._stop.wait(0.2)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)


def identity(name: str, namespace: str, *, ttl: str = "24h", verbs: tuple[str, ...] = ("get", "list")) -> dict[str, Any]:
    return {"apiVersion": "paved.dev/v1alpha1", "kind": "AgentIdentity", "metadata": {"name": name, "namespace": namespace},
            "spec": {"capabilities": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": list(verbs)}], "ttl": ttl}}


def database(name: str, namespace: str) -> dict[str, Any]:
    return {"apiVersion": "paved.dev/v1alpha1", "kind": "DatabaseIntent", "metadata": {"name": name, "namespace": namespace},
            "spec": {"engine": "postgresql", "version": "16", "encryption": True, "deletionPolicy": "Delete"}}


# --- the cases --------------------------------------------------------------------------------


def test_one_replica_leads_and_every_replica_serves_admission(replicas: Replicas, kubectl: Kubectl) -> None:
    leader = ensure_pair(replicas)
    assert [process.leads() for process in replicas.processes].count(True) == 1
    assert all(process.ready() for process in replicas.processes)  # /readyz: the webhook serves
    holder = lease_holder(kubectl)
    assert holder is not None and holder == leader_identity(leader)


def leader_identity(process: OperatorProcess) -> str:
    log = process.log_path.read_text(errors="replace")
    marker = "leader election: "
    leads = [line for line in log.splitlines() if line.startswith(marker) and line.endswith(f"leads (Lease {OPERATOR_NAMESPACE}/{LEASE})")]
    return leads[-1][len(marker):].split(" ", 1)[0]


def test_the_standby_answers_admission_while_the_leader_is_dead(replicas: Replicas, kubectl: Kubectl, cluster: Cluster, namespace: str) -> None:
    leader = ensure_pair(replicas)
    (standby,) = [process for process in replicas.processes if process is not leader]
    guard = {"apiVersion": "paved.dev/v1alpha1", "kind": "IntentPolicy", "metadata": {"name": f"ha-{namespace}"},
             "spec": {"match": {"kinds": ["AgentIdentity"], "namespaceSelector": {
                 "matchLabels": {"kubernetes.io/metadata.name": namespace}}},
                 "mode": "Enforce", "rules": [{"name": "no-delete", "message": "agents may not delete",
                                               "expression": "!object.spec.capabilities.exists(c, 'delete' in c.verbs)"}]}}
    cluster.apply(guard)
    try:
        wait_for(lambda: kubectl("apply", "--dry-run=server", "-f", "-", check=False,
                                 input=yaml.safe_dump(identity("probe", namespace, verbs=("delete",)))).returncode != 0,
                 timeout=30, what="the policy in the webhook's index")
        leader.kill()
        killed = time.monotonic()
        allowed = kubectl("apply", "-f", "-", input=yaml.safe_dump(identity("reader", namespace)), check=False)
        denied = kubectl("apply", "-f", "-", input=yaml.safe_dump(identity("deleter", namespace, verbs=("delete",))), check=False)
        assert time.monotonic() - killed < 10 and not standby.leads()  # answered before any takeover
        assert allowed.returncode == 0, allowed.stderr
        assert denied.returncode != 0 and "agents may not delete" in denied.stderr, denied.stderr  # judged, not failed open
        replicas.wait_leader(timeout=30, other_than=leader)
        cluster.wait_condition("agentidentity", "reader", namespace)
    finally:
        kubectl("delete", "intentpolicy", guard["metadata"]["name"], check=False)
        ensure_pair(replicas)


def test_sigterm_hands_the_lease_over_at_once(replicas: Replicas) -> None:
    leader = ensure_pair(replicas)
    stopping = time.monotonic()
    leader.stop()
    successor = replicas.wait_leader(timeout=10, other_than=leader)
    handover = time.monotonic() - stopping
    print(f"\n[ha] SIGTERM handover: {handover:.2f} s (stop included)")
    assert successor is not leader and handover < 5  # not a lease duration (15 s): the Lease was released
    ensure_pair(replicas)


def test_a_frozen_leader_that_wakes_after_losing_the_lease_writes_nothing(
        replicas: Replicas, kubectl: Kubectl, cluster: Cluster, namespace: str, control_plane: ControlPlane) -> None:
    leader = ensure_pair(replicas)
    cluster.apply(identity("watched", namespace))
    cluster.wait_condition("agentidentity", "watched", namespace)
    pid = leader.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        successor = replicas.wait_leader(timeout=40, other_than=leader)
        # Work the old leader would act on the moment it runs again. The frozen replica still
        # accepts connections (its socket is open), so an admission call may reach it and time
        # out; in a cluster its failing readiness probe takes it out of the Service. Retried.
        work = yaml.safe_dump_all([identity("watched", namespace, verbs=("get", "list", "watch")), identity("fresh", namespace)])
        wait_for(lambda: kubectl("apply", "-f", "-", input=work, check=False).returncode == 0, timeout=60, interval=0.5,
                 what="the work applied through the live replica's webhook")
        woke = datetime.now().astimezone()
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: not leader.alive(), timeout=30, what="the old leader to exit after losing the Lease")
    cluster.wait_condition("agentidentity", "fresh", namespace)
    assert successor.leads()
    assert writes_after(control_plane, pid, woke) == []
    assert "lost the leader Lease: exiting" in leader.tail(200)
    ensure_pair(replicas)


def test_killing_the_leader_under_mixed_load_loses_and_repeats_nothing(
        replicas: Replicas, kubectl: Kubectl, cluster: Cluster, namespace: str, moto_server: MotoServer, shop: Shop) -> None:
    leader = ensure_pair(replicas)
    sm = moto_server.client("secretsmanager")
    keys = [f"ha/{namespace}/key-{index}" for index in range(3)]
    for key in keys:
        sm.create_secret(Name=key, SecretString=json.dumps({"value": key}))
    store = {"apiVersion": "paved.dev/v1alpha1", "kind": "ClusterSecretStore", "metadata": {"name": f"ha-{namespace}"},
             "spec": {"provider": {"aws": {"service": "SecretsManager", "region": moto_server.region}},
                      "access": [{"namespaces": [shop.namespace], "keyPrefixes": [f"ha/{namespace}/"]}]}}
    refs = [{"apiVersion": "paved.dev/v1alpha1", "kind": "ExternalSecretRef", "metadata": {"name": f"ref-{index}", "namespace": shop.namespace},
             "spec": {"storeRef": {"name": store["metadata"]["name"], "kind": "ClusterSecretStore"}, "refreshInterval": f"{REFRESH}s",
                      "data": [{"secretKey": "value", "remoteRef": {"key": key, "property": "value"}}]}}
            for index, key in enumerate(keys)]
    databases = [database(f"db-{index}", shop.namespace) for index in range(3)]
    identities = [identity(f"agent-{index}", shop.namespace) for index in range(3)]
    cluster.apply(store, *refs, *databases, *identities)
    try:
        for body in (*refs, *databases, *identities):
            cluster.wait_condition(body["kind"].lower(), body["metadata"]["name"], shop.namespace, timeout=120)
        start(shop, steps=seed_steps(pause="20s"))
        reader, traffic = shop.traffic()
        admission = AdmissionLoad(kubectl, shop.namespace).start()
        moto_server.start_recording()
        try:
            shop.new_version("v2")
            wait_for(lambda: shop.status().get("canaryWeight") == 20, timeout=90, interval=0.2, what="20%")
            leader.kill()  # SIGKILL in the middle of the 20% pause, everything in flight
            killed_at = time.monotonic()
            late = [database(f"db-late-{index}", shop.namespace) for index in range(2)]
            cluster.apply(*late, identity("agent-0", shop.namespace, verbs=("get",)))  # changes while nobody leads
            successor = replicas.wait_leader(timeout=40, other_than=leader)
            led_at = time.monotonic()
            leader.start()  # back, as a standby
            for body in (*refs, *databases, *late, *identities):
                cluster.wait_condition(body["kind"].lower(), body["metadata"]["name"], shop.namespace, timeout=120)
            status = shop.wait_promoted(timeout=180)
            reader.poll_once()
        finally:
            admission.stop()
            traffic.stop()
            reader.stop()
            recorded = moto_server.recorded()
            moto_server.stop_recording()
        assert successor.leads() and not leader.leads()
        # Admission was asked while nobody led (how often depends on the machine's load), and never failed.
        assert sum(killed_at <= at <= led_at for at in admission.sent_at) >= 5, (led_at - killed_at, admission.sent)
        assert admission.failures == [], admission.failures[:3]

        rds = moto_server.client("rds")
        instances = rds.describe_db_instances()["DBInstances"]
        for body in (*databases, *late):
            uid = cluster.get("databaseintent", body["metadata"]["name"], shop.namespace)["metadata"]["uid"]  # type: ignore[index]
            owned = [i for i in instances if any(t["Key"] == "paved.dev/uid" and t["Value"] == uid for t in i.get("TagList") or [])]
            assert len(owned) == 1, (body["metadata"]["name"], [i["DBInstanceIdentifier"] for i in owned])

        weights = canary_weights(reader)
        assert [w for w in weights if w] == [5, 20, 50, 100], weights  # no step skipped, none backwards
        started = [e["message"] for e in shop.events("StepStarted")]
        assert len(started) == len(set(started)), started  # no step acted twice
        assert status["message"].startswith("promoted")

        asked: dict[str, list[datetime]] = defaultdict(list)  # remote key -> when Secrets Manager was asked about it
        for request in recorded:
            headers = request.get("headers") or {}
            if not str(headers.get("X-Amz-Target", "")).startswith("secretsmanager."):
                continue
            when = datetime.strptime(headers["X-Amz-Date"] + "+0000", "%Y%m%dT%H%M%SZ%z")
            for key in keys:
                if key in (request.get("body") or ""):
                    asked[key].append(when)
        assert set(asked) == set(keys)
        for key, times in asked.items():
            gaps = [(later - earlier).total_seconds() for earlier, later in zip(sorted(times), sorted(times)[1:])]
            assert all(gap >= REFRESH / 2 for gap in gaps), (key, gaps)  # never twice in one refresh cycle
    finally:
        kubectl("delete", "externalsecretrefs,databaseintents,agentidentities", "--all", "-n", shop.namespace, "--wait=false",
                check=False)
        kubectl("delete", "clustersecretstore", store["metadata"]["name"], check=False)
        ensure_pair(replicas)


def test_with_every_replica_stopped_metadata_changes_pass_and_spec_changes_are_refused(
        replicas: Replicas, kubectl: Kubectl, cluster: Cluster, namespace: str) -> None:
    ensure_pair(replicas)
    cluster.apply(identity("stranded", namespace))
    cluster.wait_condition("agentidentity", "stranded", namespace)
    replicas.stop()
    try:
        kubectl("delete", "agentidentity", "stranded", "-n", namespace, "--wait=false")  # DELETE never reaches the webhook
        time.sleep(2)
        stuck = cluster.get("agentidentity", "stranded", namespace)
        assert stuck is not None
        assert stuck["metadata"].get("deletionTimestamp") and stuck["metadata"].get("finalizers")  # nobody to finalize it
        relabelled = kubectl("label", "agentidentity", "stranded", "-n", namespace, "team=ops", check=False)
        assert relabelled.returncode == 0, relabelled.stderr
        changed = kubectl("patch", "agentidentity", "stranded", "-n", namespace, "--type=merge",
                          "-p", '{"spec": {"ttl": "2h"}}', check=False)
        assert changed.returncode != 0 and "failed calling webhook" in changed.stderr, changed.stderr
        unstuck = kubectl("patch", "agentidentity", "stranded", "-n", namespace, "--type=merge",
                          "-p", '{"metadata": {"finalizers": null}}', check=False)
        assert unstuck.returncode == 0, unstuck.stderr
        wait_for(lambda: cluster.get("agentidentity", "stranded", namespace) is None, timeout=30, what="the unstuck identity to be gone")
    finally:
        ensure_pair(replicas)
