"""`paved dev demo`: the main job on one machine, end to end, with real parts only.

1. the local control plane (`paved dev up`: CRDs, Compositions, Gateway API and
   SecurityGroupPolicy CRDs);
2. a moto server on loopback (fake AWS), so the seed DatabaseIntent goes through the real
   aws-rds provider, with a VPC standing for the cluster's that the RDS Composition's network
   parameters name, and an OpenBao dev server (paved.dev.demo_vault) that the Vault
   SecretStore examples are pointed at; the canary demo (paved.dev.demo_canary): two
   loopback apps with traffic and a Prometheus scraping them, that the example rollout is
   pointed at (at demo tempo);
3. the operator, `paved run` as deploy/'s ServiceAccount with ``PAVED_AWS_ENDPOINT_URL``
   pointing at moto (always restarted, so it runs the current code with a fresh token);
4. every ``examples/NN-topic/`` folder, applied into its namespace; then a bounded wait
   until every intent is Ready (or has settled on a not-Ready condition), and the status
   table of :func:`status_rows`.

Namespace convention for examples: a folder's ``namespace.yaml`` (one v1 Namespace) names
the namespace its namespaced objects go to when they do not name one themselves; without
it they go to ``paved-examples``. The Namespace is created first.

Everything started here is detached and recorded in the state dir (``demo/operator/``,
``demo/moto/``, ``demo/canary/``), so `paved dev down` stops it; running the demo again reuses what runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from paved.dev.binaries import repo_root
from paved.dev.controlplane import ControlPlane
from paved.dev.demo_canary import at_demo_tempo, canary_state, start_demo_canary, stop_demo_canary
from paved.dev.demo_vault import point_stores_at, start_demo_openbao, stop_demo_openbao
from paved.dev.manifests import load_manifests
from paved.render.engine import CLUSTER_SCOPED_KINDS
from paved.dev.moto import RDS_COMPOSITION, ClusterNetwork, MotoError, MotoServer, moto_installed, start_moto
from paved.dev.operator import (
    OPERATOR_ACCOUNT,
    OPERATOR_NAMESPACE,
    OperatorProcess,
    install_operator_prerequisites,
    start_operator,
)

__all__ = [
    "DEFAULT_EXAMPLE_NAMESPACE",
    "DemoResult",
    "StatusRow",
    "example_objects",
    "format_table",
    "run_demo",
    "status_rows",
    "stop_demo",
    "wait_settled",
]

DEFAULT_EXAMPLE_NAMESPACE = "paved-examples"
Log = Callable[[str], None]


def _demo_dir(plane: ControlPlane) -> Path:
    return plane.state_dir / "demo"


# ------------------------------------------------------------------------------ examples


def example_objects(examples: Path) -> list[dict[str, Any]]:
    """Every object of every ``examples/*/`` folder, namespaced by the folder's namespace.yaml."""
    objects: list[dict[str, Any]] = []
    for folder in sorted(p for p in examples.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        manifests = load_manifests([folder])
        namespaces = [m.obj for m in manifests if m.obj.get("kind") == "Namespace"]
        namespace = namespaces[0]["metadata"]["name"] if namespaces else DEFAULT_EXAMPLE_NAMESPACE
        if not namespaces:
            objects.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        for manifest in manifests:
            obj = json.loads(json.dumps(manifest.obj))
            if obj.get("kind") not in CLUSTER_SCOPED_KINDS:
                obj.setdefault("metadata", {}).setdefault("namespace", namespace)
            objects.append(obj)
    return objects


# ------------------------------------------------------------------------------ status


@dataclass(frozen=True)
class StatusRow:
    kind: str
    namespace: str
    name: str
    ready: str
    reason: str
    message: str
    age: str
    settled: bool  # the Ready condition describes the current generation


def _age(created: str | None, now: datetime) -> str:
    if not created:
        return ""
    seconds = int((now - datetime.fromisoformat(created.replace("Z", "+00:00"))).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def status_rows(plane: ControlPlane) -> list[StatusRow]:
    """One row per intent (and secret store) in every namespace, from one `kubectl get`."""
    from paved.api.kinds import INTENT_KINDS, KINDS

    shown = [info for info in KINDS if info.kind in INTENT_KINDS or info.kind.endswith("SecretStore")]
    plurals = ",".join(info.crd_name for info in shown)
    listing = json.loads(plane.kubectl("get", plurals, "-A", "-o", "json").stdout)
    now = datetime.now(timezone.utc)
    rows = []
    for item in listing.get("items", []):
        meta = item.get("metadata", {})
        conditions = (item.get("status") or {}).get("conditions") or []
        ready: dict[str, Any] = next((c for c in conditions if c.get("type") == "Ready"), {})
        observed = ready.get("observedGeneration")
        rows.append(StatusRow(
            kind=item.get("kind", ""),
            namespace=meta.get("namespace", ""),
            name=meta.get("name", ""),
            ready=ready.get("status", "-"),
            reason=ready.get("reason", "" if ready else "NotReconciled"),
            message=" ".join(str(ready.get("message", "")).split()),
            age=_age(meta.get("creationTimestamp"), now),
            settled=bool(ready) and (observed is None or observed == meta.get("generation")),
        ))
    order = {info.kind: index for index, info in enumerate(shown)}
    return sorted(rows, key=lambda r: (order.get(r.kind, 99), r.namespace, r.name))


def format_table(rows: Sequence[StatusRow], message_width: int = 70) -> str:
    header = ("KIND", "NAMESPACE", "NAME", "READY", "REASON", "MESSAGE", "AGE")
    body = [
        (r.kind, r.namespace or "-", r.name, r.ready, r.reason or "-",
         (r.message[: message_width - 1] + "…") if len(r.message) > message_width else (r.message or "-"), r.age)
        for r in rows
    ]
    if not body:
        return "(no intents)"
    widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header))]
    return "\n".join("  ".join(str(cell).ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
                     for line in [header, *body])


def wait_settled(plane: ControlPlane, timeout: float, quiet_period: float = 10.0) -> list[StatusRow]:
    """Wait until every row is Ready=True, or every row has a Ready condition for its current
    generation and nothing changed for ``quiet_period`` seconds, or ``timeout``."""
    deadline = time.monotonic() + timeout
    last: list[tuple[str, ...]] | None = None
    unchanged_since = time.monotonic()
    while True:
        rows = status_rows(plane)
        if rows and all(r.ready == "True" for r in rows):
            return rows
        key: list[tuple[str, ...]] = [(r.kind, r.namespace, r.name, r.ready, r.reason, r.message) for r in rows]
        if key != last:
            unchanged_since = time.monotonic()
        last = key
        settled = all(r.settled for r in rows)
        if (settled and time.monotonic() - unchanged_since >= quiet_period) or time.monotonic() >= deadline:
            return rows
        time.sleep(1.0)


# ------------------------------------------------------------------------------ lifecycle


@dataclass
class DemoResult:
    operator: OperatorProcess
    rows: list[StatusRow]
    seconds: float


def run_demo(
    plane: ControlPlane,
    *,
    examples: Path | None = None,
    timeout: float = 120.0,
    wait: float = 90.0,
    log: Log = print,
) -> DemoResult:
    """Bring everything up (reusing what runs), apply the examples, wait, return the status."""
    started = time.monotonic()
    demo_dir = _demo_dir(plane)
    up = plane.up(timeout=timeout)
    log(f"control plane {'already running' if up.reused else 'started'} at {up.server} ({up.total:.1f}s)")
    install_operator_prerequisites(plane)
    log("installed deploy/ RBAC, crds/ and compositions/")

    moto = MotoServer.find(demo_dir / "moto")
    if moto is not None:
        log(f"moto (fake AWS) already running at {moto.endpoint_url}")
    elif moto_installed():
        try:
            moto = start_moto(demo_dir / "moto", die_with_parent=False)
            log(f"moto (fake AWS) started at {moto.endpoint_url}")
        except MotoError as error:
            log(f"moto did not start, DatabaseIntents will not become Ready: {error}")
    else:
        log("moto is not installed (run scripts/bootstrap); DatabaseIntents will not become Ready")

    if moto is not None:
        network = moto.cluster_network()
        use_cluster_network(plane, network)
        log(f"the RDS composition places databases in moto's VPC {network.vpc_id} (subnets {', '.join(network.subnet_ids)})")

    openbao = start_demo_openbao(demo_dir / "openbao", plane, log)
    canary = start_demo_canary(demo_dir / "canary", plane.state_dir, log)

    _stop_operator(demo_dir)  # always the current code, a fresh token and moto's address
    operator_env = {**(moto.env() if moto else {}), **(openbao.operator_env() if openbao else {})}
    operator = start_operator(
        plane, demo_dir / "operator", env=operator_env or None,
        die_with_parent=False, install=False, timeout=timeout,
    )
    log(f"operator started (pid {operator.pid}, as ServiceAccount {OPERATOR_NAMESPACE}/{OPERATOR_ACCOUNT}), "
        f"log {operator.log_path}")

    plane.apply([repo_root() / "compositions" / "policies"], timeout=timeout)
    log("installed the default IntentPolicies (compositions/policies/)")

    objects = example_objects(examples or repo_root() / "examples")
    if openbao is not None:
        point_stores_at(objects, openbao, log)
    if canary is not None:
        at_demo_tempo(objects, canary.prometheus_url, log)
    plane.apply_objects(objects, timeout=timeout)
    log(f"applied {len(objects)} objects from examples/; waiting up to {wait:.0f}s for Ready")
    rows = wait_settled(plane, wait)
    return DemoResult(operator, rows, time.monotonic() - started)


def use_cluster_network(plane: ControlPlane, network: ClusterNetwork) -> None:
    """Give the default RDS Composition the cluster's network (its platform parameters), as a
    platform team's kustomize patch would."""
    plane.kubectl("patch", "composition", RDS_COMPOSITION, "--type=merge", "-p", json.dumps(network.composition_patch()))


def _stop_operator(demo_dir: Path) -> bool:
    operator = OperatorProcess.find(demo_dir / "operator")
    if operator is None or not operator.alive():
        return False
    operator.stop()
    return True


def demo_processes(plane: ControlPlane) -> dict[str, str]:
    """What the demo started and whether it runs: {"operator": "...", "moto": "..."}."""
    demo_dir = _demo_dir(plane)
    operator = OperatorProcess.find(demo_dir / "operator")
    moto = MotoServer.find(demo_dir / "moto")
    return {
        "operator": (f"running (pid {operator.pid}), log {operator.log_path}, metrics {operator.metrics_url}"
                     if operator is not None and operator.alive() else "not running"),
        "moto": f"running at {moto.endpoint_url} (pid {moto.pid})" if moto else "not running",
        "canary demo": canary_state(demo_dir / "canary"),
    }


def stop_demo(plane: ControlPlane) -> list[str]:
    """Stop the operator, then moto and OpenBao, started by the demo in this state dir; names what stopped."""
    demo_dir = _demo_dir(plane)
    stopped = []
    if _stop_operator(demo_dir):
        stopped.append("operator")
    moto = MotoServer.find(demo_dir / "moto")
    if moto is not None:
        moto.stop()
        stopped.append("moto")
    if stop_demo_openbao(demo_dir / "openbao"):
        stopped.append("openbao")
    stopped += stop_demo_canary(demo_dir / "canary")
    return stopped
