"""Failover of the leader under mixed load: how long until the new leader writes, and what is lost.

    .venv/bin/python bench/bench_failover.py [--kills 10] [--handovers 5] [--quick]

Real parts only: a fresh control plane (its API server's audit log records the operator's
requests), moto, and two `paved run` replicas as deploy/ runs them (one Lease with deploy/'s
timings, 15/10/2 s; one webhook port). The load, all along:
- AgentIdentities (RBAC through the composition) and DatabaseIntents (RDS on moto), created
  before and during the failovers;
- ExternalSecretRefs on a ClusterSecretStore over moto's Secrets Manager, refreshing every 10 s;
- admission requests: a spec change every 0.2 s through the API server (so through the webhook).

Each SIGKILL round: kill the leader, create a new AgentIdentity (work only a leader does), wait
for the standby to lead, start the killed replica again as the new standby. Each SIGTERM round
stops the leader gracefully instead. Measured from the API server's audit log (by the
replicas' User-Agent, which names their pid):
- kill -> first write by the new leader (goal: p50 <= lease duration + 2 s);
- SIGTERM -> first write by the new leader (goal: < 3 s);
- writes by a replica outside its leadership (duplicate writes; goal 0);
- RDS instances per DatabaseIntent (duplicate cloud resources; goal 0 extra) and RDS creates
  per DatabaseIntent (duplicate cloud calls; goal 1);
- admission requests that failed (goal 0).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))
sys.path.insert(0, str(ROOT / "bench"))

import yaml  # noqa: E402

from harness import log, percentile, print_table  # noqa: E402
from paved.dev.controlplane import ControlPlane  # noqa: E402
from paved.dev.moto import start_moto  # noqa: E402
from paved.dev.operator import Replicas, start_replicas  # noqa: E402

NAMESPACE = "failover"
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
LEASE_DURATION = 15.0


def audit(plane: ControlPlane) -> list[dict[str, Any]]:
    """The operator's write requests: (pid, epoch seconds, verb, resource)."""
    found = []
    for line in plane.audit_log.read_text().splitlines():
        entry = json.loads(line)
        agent = entry.get("userAgent", "")
        if not agent.startswith("paved/") or entry.get("verb") not in WRITE_VERBS:
            continue
        pid = int(agent.rsplit("/", 1)[-1].rstrip(")"))
        when = datetime.fromisoformat(entry["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp()
        resource = (entry.get("objectRef") or {}).get("resource", "")
        found.append({"pid": pid, "time": when, "verb": entry["verb"], "resource": resource})
    return found


def outside_leadership(writes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Writes by a replica while it did not hold the Lease. A term begins with the replica's
    first write of the Lease (its acquisition: a standby never writes it) and ends with the
    next replica's acquisition; anything a replica writes outside its terms is a duplicate."""
    acquisitions: list[tuple[float, int]] = []
    holder: int | None = None
    for write in sorted((w for w in writes if w["resource"] == "leases"), key=lambda w: w["time"]):
        if write["pid"] != holder:
            holder = write["pid"]
            acquisitions.append((write["time"], holder))
    def leader_at(moment: float) -> int | None:
        current = None
        for since, pid in acquisitions:
            if since > moment:
                break
            current = pid
        return current
    return [w for w in writes if w["resource"] != "leases" and leader_at(w["time"]) != w["pid"]]


def first_write(writes: list[dict[str, Any]], pid: int, after: float) -> float | None:
    """When `pid` first wrote anything but its Lease after `after` (epoch seconds)."""
    times = [w["time"] for w in writes if w["pid"] == pid and w["time"] > after and w["resource"] != "leases"]
    return min(times) if times else None


class AdmissionLoad:
    """A spec change through the API server every 0.2 s; failed calls are kept."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane, self.sent, self.failures = plane, 0, []  # type: ignore[var-annotated]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sent += 1
            body = identity("admission-probe", ttl=f"{1 + self.sent % 48}h")
            result = self.plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(body), check=False)
            if result.returncode != 0:
                self.failures.append(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "?")
            self._stop.wait(0.2)

    def __enter__(self) -> AdmissionLoad:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)


def identity(name: str, *, ttl: str = "24h") -> dict[str, Any]:
    return {"apiVersion": "paved.dev/v1alpha1", "kind": "AgentIdentity", "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"capabilities": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}], "ttl": ttl}}


def database(name: str) -> dict[str, Any]:
    return {"apiVersion": "paved.dev/v1alpha1", "kind": "DatabaseIntent", "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"engine": "postgresql", "version": "16", "encryption": True, "deletionPolicy": "Delete"}}


def apply(plane: ControlPlane, *documents: dict[str, Any]) -> None:
    plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(documents))


def ready(plane: ControlPlane, kind: str, name: str) -> bool:
    found = plane.kubectl("get", kind, name, "-n", NAMESPACE, "-o", "json", check=False)
    if found.returncode != 0:
        return False
    return any(c["type"] == "Ready" and c["status"] == "True" for c in (json.loads(found.stdout).get("status") or {}).get("conditions") or [])


def wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench failover: timed out waiting for {what}")
        time.sleep(0.2)


def load(plane: ControlPlane, moto: Any, identities: int, databases: int, refs: int) -> list[dict[str, Any]]:
    sm = moto.client("secretsmanager")
    for index in range(refs):
        sm.create_secret(Name=f"failover/key-{index}", SecretString=json.dumps({"value": f"v{index}"}))
    store = {"apiVersion": "paved.dev/v1alpha1", "kind": "ClusterSecretStore", "metadata": {"name": "failover"},
             "spec": {"provider": {"aws": {"service": "SecretsManager", "region": moto.region}},
                      "access": [{"namespaces": [NAMESPACE], "keyPrefixes": ["failover/"]}]}}
    bodies = [identity(f"agent-{index}") for index in range(identities)]
    bodies += [database(f"db-{index}") for index in range(databases)]
    bodies += [{"apiVersion": "paved.dev/v1alpha1", "kind": "ExternalSecretRef", "metadata": {"name": f"ref-{index}", "namespace": NAMESPACE},
                "spec": {"storeRef": {"name": "failover", "kind": "ClusterSecretStore"}, "refreshInterval": "10s",
                         "data": [{"secretKey": "value", "remoteRef": {"key": f"failover/key-{index}", "property": "value"}}]}}
               for index in range(refs)]
    apply(plane, store, *bodies)
    return bodies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--handovers", type=int, default=5)
    parser.add_argument("--identities", type=int, default=20)
    parser.add_argument("--databases", type=int, default=5)
    parser.add_argument("--refs", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="3 kills, 2 handovers, a smaller load")
    args = parser.parse_args(argv)
    if args.quick:
        args.kills, args.handovers, args.identities, args.databases, args.refs = 3, 2, 5, 2, 3

    with tempfile.TemporaryDirectory(prefix="paved-bench-failover-") as tmp:
        workdir = Path(tmp)
        plane = ControlPlane(workdir / "controlplane", die_with_parent=True, log=log)
        plane.up()
        moto = start_moto(workdir / "moto")
        replicas: Replicas | None = None
        try:
            replicas = start_replicas(plane, workdir / "replicas", 2, env=moto.env())
            moto.start_recording()  # every AWS call, to count creates per database
            plane.kubectl("create", "namespace", NAMESPACE)
            bodies = load(plane, moto, args.identities, args.databases, args.refs)
            for body in bodies:
                wait(lambda body=body: ready(plane, body["kind"].lower(), body["metadata"]["name"]), 180,
                     f"{body['kind']} {body['metadata']['name']} Ready")
            log(f"{len(bodies)} intents Ready; {args.kills} kills, {args.handovers} handovers")
            kills: list[float] = []
            handovers: list[float] = []
            leader = replicas.wait_leader()
            with AdmissionLoad(plane) as admission:
                for round_ in range(args.kills + args.handovers):
                    graceful = round_ >= args.kills
                    before = time.time()
                    leader.stop() if graceful else leader.kill()
                    work = [identity(f"during-{round_}")] + ([database(f"db-during-{round_}")] if round_ % 3 == 0 else [])
                    apply(plane, *work)  # only a leader acts on these
                    bodies += work
                    successor = replicas.wait_leader(timeout=60, other_than=leader)
                    wait(lambda: first_write(audit(plane), successor.pid or 0, before) is not None, 60,
                         "the new leader's first write")
                    took = (first_write(audit(plane), successor.pid or 0, before) or 0.0) - before
                    (handovers if graceful else kills).append(took)
                    log(f"{'SIGTERM' if graceful else 'SIGKILL'} #{round_ + 1}: first write by the new leader after {took:.2f}s")
                    leader.start()  # back, as the standby
                    leader = successor
                    time.sleep(3)
                for body in bodies:
                    wait(lambda body=body: ready(plane, body["kind"].lower(), body["metadata"]["name"]), 180, "convergence")
            writes = audit(plane)
            print_summary(plane, moto, kills, handovers, writes, admission, args)
            moto.stop_recording()
        finally:
            if replicas is not None:
                replicas.stop()
            moto.stop()
            plane.down()
    return 0


def print_summary(plane: ControlPlane, moto: Any, kills: list[float], handovers: list[float], writes: list[dict[str, Any]],
                  admission: AdmissionLoad, args: argparse.Namespace) -> None:
    rds = moto.client("rds")
    instances = rds.describe_db_instances()["DBInstances"]
    by_uid: dict[str, int] = {}
    for instance in instances:
        uid = next((t["Value"] for t in instance.get("TagList") or [] if t["Key"] == "paved.dev/uid"), None)
        if uid:
            by_uid[uid] = by_uid.get(uid, 0) + 1
    duplicates = sum(count - 1 for count in by_uid.values())
    creates: dict[str, int] = {}
    for request in moto.recorded():
        body = request.get("body") or ""
        if "Action=CreateDBInstance" in body:
            identifier = next((part.split("=", 1)[1] for part in body.split("&") if part.startswith("DBInstanceIdentifier=")), "?")
            creates[identifier] = creates.get(identifier, 0) + 1
    stray = outside_leadership(writes)
    print()
    print_table(["figure", "value", "goal"], [
        ("SIGKILLs", len(kills), ">= 10"),
        ("kill -> first write by the new leader, p50 (s)", f"{percentile(kills, 50):.2f}", f"<= {LEASE_DURATION + 2:g}"),
        ("kill -> first write by the new leader, max (s)", f"{max(kills):.2f}", ""),
        ("SIGTERM handovers", len(handovers), ""),
        ("SIGTERM -> first write by the new leader, p50 (s)", f"{percentile(handovers, 50):.2f}" if handovers else "-", "< 3"),
        ("SIGTERM -> first write by the new leader, max (s)", f"{max(handovers):.2f}" if handovers else "-", "< 3"),
        ("RDS instances beyond one per DatabaseIntent", duplicates, "0"),
        ("CreateDBInstance calls per database, max", max(creates.values(), default=0), "1"),
        ("writes by a replica that did not hold the Lease", len(stray), "0"),
        ("admission requests sent / failed", f"{admission.sent} / {len(admission.failures)}", "0 failed"),
    ])
    for write in stray[:5]:
        print("stray write:", write)
    if admission.failures:
        print("admission failures (first 3):", *admission.failures[:3], sep="\n  ")


if __name__ == "__main__":
    sys.exit(main())
