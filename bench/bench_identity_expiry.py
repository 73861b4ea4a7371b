"""Benchmark AgentIdentity with Vault + AWS parts: apply->Ready next to K others, expiry-to-revocation, idle writes.

    .venv/bin/python bench/bench_identity_expiry.py                  # K=1000 existing, M=500 expiring, 300 s idle
    .venv/bin/python bench/bench_identity_expiry.py --quick          # K=100, M=50, 60 s idle, 3 probes
    scripts/bench identity-expiry --quick

Real parts only: a fresh control plane, `paved run` as deploy/'s ServiceAccount, an OpenBao
dev server (paved.dev.openbao; Kubernetes auth configured against the real API server) and
moto (IAM). The default composition gets `parameters.aws.oidcIssuer` so IAM roles render.
Everything happens in one namespace ``bench-expiry``.

1. Existing load: K RBAC-only identities (examples/02-agent-identity/pod-reader.yaml) and M
   identities that will expire (every ``--vault-every``-th one also declares a Vault secret
   path, so it has a Vault policy and Kubernetes-auth role), all created and waited Ready.
2. apply->Ready (a): ``--probes`` identities with RBAC + Vault + AWS parts, created one at a
   time next to the K+M others; per probe from its create request to the watch event with
   Ready=True. p50/p95/max.
3. Idle (c): mutating API requests during ``--idle`` seconds with every identity Ready,
   counted by the API server (apiserver_request_total for paved.dev objects and status,
   ServiceAccounts, Roles, RoleBindings, Events) and by the operator's own client
   (paved_provider_api_calls_total{provider="kubernetes"}). The operator runs with
   ``--audit-interval`` (default: half the idle window, at least 30 s) so that at least one
   periodic policy audit pass falls inside the window.
4. Expiry (b): the M identities get ``spec.expiresAt`` spread evenly over ``--spread`` seconds
   (default 60: "within the same minute"), starting ``--lead`` seconds after the patches are
   sent. Per identity, from its expiresAt to: its RoleBinding's DELETED watch event (one
   watch on RoleBindings of the namespace), its Vault role gone (a LIST of the auth mount's
   roles every 0.2 s), and Expired=True on the intent (one watch). p50/p95/max of each, and of
   "all grants" (the later of RoleBinding and Vault role).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from bench_identity import GROUP, PLURAL, TEMPLATE, VERSION, bodies, idle_writes
from harness import BenchEnv, ReadyWatcher, condition_true, create_objects, latencies, log, print_table, summarize

from paved.dev.openbao import OpenBaoServer, configure_kubernetes_auth, start_openbao

NAMESPACE = "bench-expiry"
ISSUER = "oidc.paved.bench/id/BENCH"
MOUNT = "kubernetes"


def identity(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": TEMPLATE["apiVersion"], "kind": "AgentIdentity",
            "metadata": {"name": name, "namespace": NAMESPACE}, "spec": {"owner": "bench", "purpose": "bench", **spec}}


def expiring(name: str, vault: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {"capabilities": [{"resources": ["configmaps"], "verbs": ["get"]}]}
    if vault:
        spec["secrets"] = [{"path": f"secret/data/bench/{name}", "capabilities": ["read"]}]
        spec["tokenTTL"] = "10m"
    return identity(name, spec)


def full(name: str) -> dict[str, Any]:
    return identity(name, {
        "capabilities": [{"resources": ["configmaps"], "verbs": ["get", "list"]}],
        "secrets": [{"path": f"secret/data/bench/{name}/*", "capabilities": ["read"]}],
        "cloud": {"aws": {"actions": ["s3:GetObject"], "resources": [f"arn:aws:s3:::bench/{name}/*"]}},
        "tokenTTL": "10m",
    })


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# ------------------------------------------------------------------------------ revocation watchers


class BindingDeletions:
    """One watch on the namespace's Paved RoleBindings: wall time of each DELETED event, by owner name."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.deleted: dict[str, float] = {}
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="binding-watch", daemon=True)

    def __enter__(self) -> BindingDeletions:
        self._thread.start()
        self._started.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _run(self) -> None:
        from kubernetes import client, watch
        from kubernetes.client.rest import ApiException

        rbac = client.RbacAuthorizationV1Api(self.api)
        selector = "app.kubernetes.io/managed-by=paved"
        version = None
        while not self._stop.is_set():
            try:
                if version is None:
                    version = rbac.list_namespaced_role_binding(NAMESPACE, label_selector=selector).metadata.resource_version
                self._started.set()
                for event in watch.Watch().stream(rbac.list_namespaced_role_binding, NAMESPACE, label_selector=selector,
                                                  resource_version=version, timeout_seconds=5, allow_watch_bookmarks=True):
                    raw = event.get("raw_object") or {}
                    metadata = raw.get("metadata") or {}
                    version = metadata.get("resourceVersion") or version
                    if event["type"] == "DELETED":
                        for ref in metadata.get("ownerReferences") or []:
                            self.deleted.setdefault(ref["name"], time.time())
                    if self._stop.is_set():
                        return
            except Exception as error:  # noqa: BLE001 - a dropped stream resumes from `version`; 410 re-lists
                if self._stop.is_set():
                    return
                if isinstance(error, ApiException) and error.status == 410:
                    version = None
                log(f"rolebinding watch restarted: {type(error).__name__}: {error}")
                time.sleep(0.2)


class VaultRoleGone(threading.Thread):
    """Lists the auth mount's roles every ``interval`` s; wall time each watched role was first missing."""

    def __init__(self, server: OpenBaoServer, roles: dict[str, str], interval: float = 0.2) -> None:
        super().__init__(name="vault-roles", daemon=True)
        self.client = server.client()
        self.roles = dict(roles)  # identity name -> role name
        self.gone: dict[str, float] = {}
        self.interval = interval
        self.stop = threading.Event()

    def present(self) -> set[str]:
        import hvac.exceptions

        try:
            listing = self.client.adapter.list(f"/v1/auth/{MOUNT}/role")
        except hvac.exceptions.InvalidPath:
            return set()
        return set(((listing or {}).get("data") or {}).get("keys") or [])

    def run(self) -> None:
        while not self.stop.is_set() and len(self.gone) < len(self.roles):
            try:
                present, now = self.present(), time.time()
            except Exception:  # noqa: BLE001 - keep polling
                time.sleep(self.interval)
                continue
            for name, role in self.roles.items():
                if name not in self.gone and role not in present:
                    self.gone[name] = now
            time.sleep(self.interval)


# ------------------------------------------------------------------------------ phases


def get_identity(env: BenchEnv, name: str) -> dict[str, Any]:
    from kubernetes import client

    return client.CustomObjectsApi(env.api).get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)


def vault_role_of(obj: dict[str, Any]) -> str | None:
    for entry in (obj.get("status") or {}).get("resources") or []:
        if entry.get("provider") == "vault-k8s-role" and entry.get("externalId"):
            return str(entry["externalId"]).rsplit("/", 1)[1]
    return None


def create_and_wait(env: BenchEnv, bodies: list[dict[str, Any]], what: str, timeout: float) -> list[float]:
    with ReadyWatcher(env.api, GROUP, VERSION, PLURAL, NAMESPACE) as watcher:
        first = time.monotonic()
        started = create_objects(env.api, bodies)
        ready = watcher.wait(started, timeout)
    log(f"{what}: {len(ready)}/{len(bodies)} Ready in {time.monotonic() - first:.1f}s")
    if len(ready) < len(bodies):
        raise SystemExit(f"{what}: {len(bodies) - len(ready)} not Ready after {timeout:.0f}s (operator log: {env.operator.log_path})")
    return latencies(started, ready)


def probes(env: BenchEnv, count: int) -> list[float]:
    result = []
    with ReadyWatcher(env.api, GROUP, VERSION, PLURAL, NAMESPACE) as watcher:
        for index in range(count):
            started = create_objects(env.api, [full(f"probe-{index}")])
            ready = watcher.wait(started, 120)
            if not ready:
                log(f"probe-{index} not Ready after 120s")
            result.extend(latencies(started, ready))
            time.sleep(0.5)
    return result


def expire(env: BenchEnv, names: list[str], vault_roles: dict[str, str], server: OpenBaoServer,
           lead: float, spread: float, timeout: float) -> dict[str, list[float]]:
    from kubernetes import client

    custom = client.CustomObjectsApi(env.api)
    start = (datetime.now(timezone.utc) + timedelta(seconds=lead)).replace(microsecond=0)
    expires = {name: start + timedelta(seconds=int(index * spread / max(len(names), 1))) for index, name in enumerate(names)}
    vault_watch = VaultRoleGone(server, vault_roles)
    with BindingDeletions(env.api) as bindings, ReadyWatcher(env.api, GROUP, VERSION, PLURAL, NAMESPACE, ready=condition_true("Expired")) as expired:
        offset = time.time() - time.monotonic()  # ReadyWatcher records monotonic times
        vault_watch.start()
        sent = time.monotonic()
        for name in names:
            for attempt in range(5):  # the admission webhook may time out on a loaded machine (HTTP 500)
                try:
                    custom.patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name, {"spec": {"expiresAt": iso(expires[name])}})
                    break
                except client.exceptions.ApiException as error:
                    if error.status < 500 or attempt == 4:
                        raise
                    log(f"patching {name}: HTTP {error.status}, retrying")
                    time.sleep(1)
        log(f"expiresAt set on {len(names)} identities in {time.monotonic() - sent:.1f}s; "
            f"they expire from {iso(start)} over {spread:.0f}s")
        last = max(expires.values()).timestamp()
        seen = expired.wait(names, max(0.0, last - time.time()) + timeout)
        deadline = time.time() + 10
        while time.time() < deadline and (len(bindings.deleted) < len(names) or len(vault_watch.gone) < len(vault_roles)):
            time.sleep(0.2)
        vault_watch.stop.set()
        vault_watch.join(timeout=5)
        binding_deleted = dict(bindings.deleted)
    def after(times: dict[str, float], name: str) -> float | None:
        return times[name] - expires[name].timestamp() if name in times else None

    rows: dict[str, list[float]] = {"RoleBinding deleted": [], "Vault role deleted": [], "all grants revoked": [], "Expired=True": []}
    missing = {"RoleBinding deleted": 0, "Vault role deleted": 0, "Expired=True": 0}
    for name in names:
        rb = after(binding_deleted, name)
        vr = after(vault_watch.gone, name) if name in vault_roles else None
        ex = after({k: v + offset for k, v in seen.items()}, name)
        for label, value in (("RoleBinding deleted", rb), ("Expired=True", ex)):
            if value is None:
                missing[label] += 1
            else:
                rows[label].append(value)
        if name in vault_roles:
            if vr is None:
                missing["Vault role deleted"] += 1
            else:
                rows["Vault role deleted"].append(vr)
        if rb is not None and (name not in vault_roles or vr is not None):
            rows["all grants revoked"].append(max(rb, vr if vr is not None else rb))
    for label, count in missing.items():
        if count:
            log(f"expiry: {count} identities never showed '{label}' within the timeout")
    return rows


def run(env: BenchEnv, server: OpenBaoServer, args: argparse.Namespace) -> int:
    env.create_namespace(NAMESPACE)
    env.plane.kubectl("patch", "composition", "agent-identity-default", "--type=merge",
                      "-p", json.dumps({"spec": {"parameters": {"aws": {"oidcIssuer": ISSUER}}}}))
    configure_kubernetes_auth(server.client(), env.plane, mount=MOUNT)
    env.rss.reset()
    if args.existing:
        create_and_wait(env, bodies(NAMESPACE, "existing", args.existing), f"{args.existing} existing RBAC-only", max(180.0, args.existing * 0.6))
    expiring_names = [f"expiring-{i:04d}" for i in range(args.expiring)]
    vault_names = set(expiring_names[::args.vault_every]) if args.vault_every else set()
    if expiring_names:
        create_and_wait(env, [expiring(name, name in vault_names) for name in expiring_names],
                        f"{args.expiring} to expire ({len(vault_names)} with Vault)", max(180.0, args.expiring * 1.0))
    probe = summarize(probes(env, args.probes)) if args.probes else None
    total = args.existing + args.expiring + args.probes
    server_idle: dict[str, float] = {}
    own_idle: dict[str, float] = {}
    if args.idle:
        log(f"idle window: {args.idle:.0f}s with {total} Ready identities (audit interval {args.audit_interval:.0f}s)")
        server_idle, own_idle = idle_writes(env, args.idle)
        log(f"idle: API server {dict(sorted(server_idle.items()))}, operator {dict(sorted(own_idle.items()))}")
    rows: dict[str, list[float]] = {}
    if expiring_names:
        roles = {}
        for name in sorted(vault_names):
            role = vault_role_of(get_identity(env, name))
            if role:
                roles[name] = role
        lead = args.lead if args.lead is not None else 20.0 + args.expiring * 0.15  # > the time the patches take
        rows = expire(env, expiring_names, roles, server, lead, args.spread, timeout=120.0)

    print(f"\nAgentIdentity with RBAC + Vault + AWS (OpenBao dev server, moto IAM); operator as deploy/'s ServiceAccount; "
          f"K={args.existing} existing RBAC-only, M={args.expiring} expiring ({len(vault_names)} with Vault)")
    if probe is not None:
        print(f"\n(a) apply->Ready of one new RBAC+Vault+AWS identity with {args.existing + args.expiring} existing, "
              f"{probe.count} probes one at a time:")
        print_table(("probes", "p50 s", "p95 s", "max s"), [(probe.count, probe.p50, probe.p95, probe.max)])
    if rows:
        print(f"\n(b) expiry -> revocation, {args.expiring} identities expiring within {args.spread:.0f}s "
              f"(seconds after each one's expiresAt; expiresAt has whole-second precision):")
        table = []
        for label, values in rows.items():
            s = summarize(values) if values else None
            table.append((label, len(values), s.p50 if s else math.nan, s.p95 if s else math.nan, s.max if s else math.nan))
        print_table(("event", "count", "p50 s", "p95 s", "max s"), table)
    if args.idle:
        print(f"\n(c) at rest: mutating API requests in {args.idle:.0f}s with {total} Ready identities "
              f"(policy audit every {args.audit_interval:.0f}s)")
        print(f"  API server (paved.dev + SA/Role/RoleBinding/Event): {sum(server_idle.values()):.0f} {dict(sorted(server_idle.items())) or ''}")
        print(f"  operator's own client (non-read): {sum(own_idle.values()):.0f} {dict(sorted(own_idle.items())) or ''}")
    print(f"\nOperator peak RSS over the run: {env.rss.peak_mb:.0f} MB")
    incomplete = bool(rows) and any(len(rows[label]) < (len(vault_names) if label == "Vault role deleted" else args.expiring)
                                     for label in rows if label != "all grants revoked")
    return 1 if incomplete else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--existing", type=int, default=1000, help="K: RBAC-only identities that exist throughout")
    parser.add_argument("--expiring", type=int, default=500, help="M: identities that expire within --spread seconds")
    parser.add_argument("--vault-every", type=int, default=2, help="every n-th expiring identity has Vault grants (0: none)")
    parser.add_argument("--probes", type=int, default=5, help="single RBAC+Vault+AWS identities for apply->Ready")
    parser.add_argument("--idle", type=float, default=300.0, help="seconds of the at-rest window (0: skip)")
    parser.add_argument("--audit-interval", type=float, default=None, help="operator's --audit-interval (default: idle/2, >= 30)")
    parser.add_argument("--spread", type=float, default=60.0, help="expiresAt values spread over this many seconds")
    parser.add_argument("--lead", type=float, default=None, help="seconds from the expiresAt patches to the first expiry")
    parser.add_argument("--quick", action="store_true", help="K=100, M=50, 3 probes, 60 s idle")
    args = parser.parse_args(argv)
    if args.quick:
        args.existing, args.expiring, args.probes, args.idle = min(args.existing, 100), min(args.expiring, 50), min(args.probes, 3), min(args.idle, 60.0)
    if args.audit_interval is None:
        args.audit_interval = max(30.0, args.idle / 2) if args.idle else 600.0
    import signal
    import tempfile

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop everything started below on `kill`
    with tempfile.TemporaryDirectory(prefix="paved-bench-bao-") as tmp:
        server = start_openbao(Path(tmp))
        log(f"OpenBao at {server.addr}")
        try:
            with BenchEnv.start(moto=True, operator_env=server.operator_env(),
                                extra_args=("--audit-interval", str(args.audit_interval))) as env:
                return run(env, server, args)
        finally:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
