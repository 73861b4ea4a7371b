"""Head-of-line blocking: how late the other stores' refreshes are while one store hangs.

    .venv/bin/python bench/bench_secrets_isolation.py            # 4 healthy stores, 60 s per phase
    .venv/bin/python bench/bench_secrets_isolation.py --quick    # 2 healthy stores, 30 s per phase
    .venv/bin/python bench/bench_secrets_isolation.py --stores 8 --refs 20 --seconds 120

Real parts, real providers, the engine's own loop in real time: an OpenBao dev server
(paved.dev.openbao), `--stores` healthy Vault SecretStores and one more that will hang,
each reached through its own loopback proxy (paved.dev.stall.StallingProxy), `--refs` refs
per store with refreshInterval `--interval`. Only Kubernetes is the in-memory stand-in of
bench_secrets.py. Two phases of `--seconds` each: every store answering, then the hung
store's proxy stalls (accepts connections, never answers). Lateness is measured outside
the engine, by the proxies: for each grid point of a healthy store
(paved.secretsync.schedule), the seconds until that store received its refresh's first
bytes. Refreshes that never came before the next one are "skipped".

It only uses the engine's public surface (SyncEngine(kube, clock=..., providers=...,
allowances=...), register, start, stop), so the same script measures an older engine too
(drop `allowances=` for one from before the tenant rules), e.g.
    git archive <commit> operator | tar -x -C /tmp/base && cp operator/paved/dev/stall.py /tmp/base/operator/paved/dev/
    PYTHONPATH=/tmp/base/operator .venv/bin/python bench/bench_secrets_isolation.py --label before
No timed asserts: the figures are printed (the goal: p95 under 1 s while a store hangs).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_secrets import PLATFORM_ALLOWANCES, memory_kube, register_ref  # noqa: E402
from support.kube import FakeKube  # noqa: E402
from harness import print_table, summarize  # noqa: E402
from paved.dev.openbao import start_openbao  # noqa: E402
from paved.dev.stall import StallingProxy  # noqa: E402
from paved.engines.secretsync import REF_KIND, KubeApi, SyncEngine  # noqa: E402
from paved.kube.apply import MANAGED_BY_LABEL  # noqa: E402
from paved.secretsync.model import StoreKey  # noqa: E402

NAMESPACE = "bench"
HUNG = "hung"


def written(kube: FakeKube) -> int:
    """Target Secrets the engine wrote (not the stores' credentials)."""
    return sum(1 for secret in kube.objects("Secret", NAMESPACE) if secret["metadata"].get("labels", {}).get(MANAGED_BY_LABEL))


def ready_reason(status: Mapping[str, Any] | None) -> str:
    return next((c.get("reason", "") for c in (status or {}).get("conditions") or [] if c.get("type") == "Ready"), "-")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 healthy stores, 30 s per phase")
    parser.add_argument("--stores", type=int, default=4, help="healthy stores (one more hangs)")
    parser.add_argument("--refs", type=int, default=10, help="refs per store")
    parser.add_argument("--interval", type=int, default=5, help="refreshInterval of every ref, seconds")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each phase")
    parser.add_argument("--label", default="", help="a label for the printed figures (e.g. before / after)")
    args = parser.parse_args()
    if args.quick:
        args.stores, args.seconds = 2, 30.0
    workdir = Path(tempfile.mkdtemp(prefix="paved-bench-isolation-"))
    bao = start_openbao(workdir / "openbao")
    upstream = ("127.0.0.1", int(bao.addr.rsplit(":", 1)[1]))
    names = [f"healthy-{i}" for i in range(args.stores)] + [HUNG]
    proxies = {name: StallingProxy(upstream, name=name).start() for name in names}
    engine: SyncEngine | None = None
    try:
        vault = bao.client()
        vault.sys.create_or_update_policy("bench", 'path "secret/*" { capabilities = ["read"] }')
        token = vault.auth.token.create(policies=["bench"], ttl="2h")["auth"]["client_token"]
        ca = Path(bao.ca_cert).read_text()
        stores = {StoreKey("SecretStore", NAMESPACE, name): {
            "metadata": {"name": name, "namespace": NAMESPACE, "uid": f"uid-{name}", "generation": 1},
            "spec": {"provider": {"vault": {"server": proxies[name].url("https"), "caBundle": ca,
                                            "auth": {"tokenSecretRef": {"name": "vault-token", "key": "token"}}}}}}
            for name in names}
        kube = memory_kube(stores, {(NAMESPACE, "vault-token", "token"): token})
        # Real clock. The stores' proxies are endpoints the
        # bench (the platform here) allows, as an IntentPolicy allowing AnyEndpoint would.
        engine = SyncEngine(KubeApi(kube), write_workers=1, allowances=lambda kind, namespace: PLATFORM_ALLOWANCES)
        refs = []
        for name in names:
            for i in range(args.refs):
                key = f"bench/{name}/s{i}"
                vault.secrets.kv.v2.create_or_update_secret(path=key, secret={"password": "bench-value"}, mount_point="secret")
                refs.append({"metadata": {"name": f"{name}-{i}", "namespace": NAMESPACE, "uid": f"uid-{name}-{i}", "generation": 1},
                             "spec": {"storeRef": {"name": name}, "refreshInterval": f"{args.interval}s",
                                      "data": [{"secretKey": "password", "remoteRef": {"key": key, "property": "password"}}]}})
        engine.start()
        for body in refs:
            register_ref(engine, kube, body)
        deadline = time.monotonic() + 60
        while written(kube) < len(refs):
            if time.monotonic() > deadline:
                raise SystemExit(f"only {written(kube)} of {len(refs)} Secrets written after 60 s")
            time.sleep(0.1)

        phases = []
        for phase in ("all stores answer", "one store hangs"):
            if phase == "one store hangs":
                proxies[HUNG].stall()
            start = time.time()
            time.sleep(args.seconds)
            end = time.time()
            late = [x for name in names[:-1] for x in proxies[name].refresh_lateness(
                StoreKey("SecretStore", NAMESPACE, name), args.interval, start + 1, end - args.interval)]
            summary = summarize([x for x in late if x < math.inf])
            phases.append((phase, len(late), summary.p50, summary.p95, summary.max, sum(1 for x in late if x >= args.interval)))
        hung = sorted({ready_reason((kube.obj(REF_KIND, f"{HUNG}-{i}", NAMESPACE) or {}).get("status")) for i in range(args.refs)})
    finally:
        if engine is not None:
            engine.stop(timeout=2)
        for proxy in proxies.values():
            proxy.stop()
        bao.stop()

    label = f" [{args.label}]" if args.label else ""
    print(f"\nHead-of-line{label}: {args.stores} healthy Vault stores + 1 that hangs, {args.refs} refs each, "
          f"refreshInterval {args.interval}s, {args.seconds:.0f}s per phase; lateness of the healthy stores' refreshes "
          "(seconds from the grid point to the store's first bytes, measured by the proxies)\n")
    print_table(["phase", "refreshes", "p50 s", "p95 s", "max s", "skipped"], phases)
    print(f"\nthe hung store's refs at the end: Ready reason {', '.join(hung)}")


if __name__ == "__main__":
    main()
