"""Provider calls per sync cycle: N ExternalSecretRefs over K distinct remote secrets.

    .venv/bin/python bench/bench_secrets.py            # 1,000 refs over 100 secrets
    .venv/bin/python bench/bench_secrets.py --quick    # 100 refs over 10 secrets
    .venv/bin/python bench/bench_secrets.py --refs 5000 --secrets 500 --changed 5

Real backends, real providers: a moto server (Secrets Manager, SSM) and an OpenBao dev
server are started on loopback (paved.dev.moto, paved.dev.openbao); the operator's sync engine (paved.engines.secretsync
.SyncEngine) runs in this process with the production providers. Only Kubernetes is
replaced by the tests' in-memory FakeKube (tests/support/kube.py) (Secret and status writes are not what is measured here;
the e2e tests cover them). Calls are read from `paved_provider_api_calls_total`, which counts
every real HTTP request the providers send.

Per backend, three cycles: cold (first sync of every ref), steady (nothing changed) and
rotation (`--changed` secrets got a new version). The ESO column is what one read per ref
per refresh costs (ESO's model): N calls every cycle.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from harness import delta  # noqa: E402
from support.kube import FakeKube  # noqa: E402
from paved.api.platform import nothing_allowed  # noqa: E402
from paved.dev.moto import start_moto  # noqa: E402
from paved.dev.openbao import start_openbao  # noqa: E402
from paved import API_VERSION  # noqa: E402
from paved.engines.secretsync import REF_KIND, KubeApi, SyncEngine  # noqa: E402
from paved.handlers.secrets import parse_ref  # noqa: E402
from paved.metrics import call_counts as calls  # noqa: E402
from paved.secretsync.model import StoreKey  # noqa: E402

NAMESPACE = "bench"
PLATFORM_ALLOWANCES = {**nothing_allowed(), "operatorCredentials": ["bench"], "anyEndpoint": ["bench"]}


def memory_kube(stores: dict[StoreKey, dict[str, Any]], credentials: dict[tuple[str, str, str], str]) -> FakeKube:
    """The Kubernetes side of the engine, in memory (tests/support/kube.FakeKube): the bench's
    namespace, its stores and the stores' credential Secrets."""
    kube = FakeKube([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}])
    for key, body in stores.items():
        kube.put({**body, "apiVersion": API_VERSION, "kind": key.kind,
                  "metadata": {**body["metadata"], "name": key.name, "namespace": key.namespace}})
    for (namespace, name, field), value in credentials.items():
        kube.put({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
                  "data": {field: base64.b64encode(value.encode()).decode()}})
    return kube


def register_ref(engine: SyncEngine, kube: FakeKube, body: dict[str, Any]) -> None:
    """Create the ref (the engine writes its status) and register it."""
    kube.put({**body, "apiVersion": API_VERSION, "kind": REF_KIND})
    engine.register(parse_ref(body), None)


def secret_writes(kube: FakeKube) -> int:
    return sum(1 for call in kube.writes("Secret", NAMESPACE) if call.verb in ("apply", "merge_patch"))


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def ref_body(i: int, key: str, store: str, properties: tuple[str, str] | None) -> dict[str, Any]:
    if properties:
        data = [{"secretKey": p, "remoteRef": {"key": key, "property": p}} for p in properties]
    else:
        data = [{"secretKey": "value", "remoteRef": {"key": key}}]
    return {
        "metadata": {"name": f"ref-{i}", "namespace": NAMESPACE, "uid": f"uid-{i}", "generation": 1},
        "spec": {"storeRef": {"name": store}, "refreshInterval": "1h", "data": data, "target": {"name": f"ref-{i}"}},
    }


def run_scenario(
    label: str,
    providers: Sequence[str],
    store: dict[str, Any],
    credentials: dict[tuple[str, str, str], str],
    keys: list[str],
    refs: int,
    rotate: Any,
    changed: int,
    properties: tuple[str, str] | None,
) -> list[dict[str, Any]]:
    clock = Clock()
    key = StoreKey("SecretStore", NAMESPACE, store["metadata"]["name"])
    kube = memory_kube({key: store}, credentials)
    # write_workers=1: as before the shared fake. The bench is the platform here: its stores
    # use this process's moto credentials and its own OpenBao, as an IntentPolicy could allow.
    engine = SyncEngine(KubeApi(kube), clock=clock, write_workers=1, allowances=lambda kind, namespace: PLATFORM_ALLOWANCES)
    for i in range(refs):
        register_ref(engine, kube, ref_body(i, keys[i % len(keys)], key.name, properties))
    rows = []
    for phase in ("cold", "steady", "rotation"):
        if phase == "rotation":
            for name in keys[:changed]:
                rotate(name)
        if phase != "cold":
            clock.now = max(clock.now, engine.state.next_due())
        before = {p: calls(p) for p in providers}
        writes = secret_writes(kube)
        started = time.perf_counter()
        report = engine.run_cycle()
        seconds = time.perf_counter() - started
        used = {p: delta(calls(p), before[p]) for p in providers}
        total = int(sum(n for ops in used.values() for n in ops.values()))
        detail = ", ".join(f"{op} {n:g}" for ops in used.values() for op, n in sorted(ops.items()))
        rows.append({
            "backend": label, "phase": phase, "refs": report.refs, "distinct": len(keys), "calls": total, "detail": detail,
            "eso": refs, "writes": secret_writes(kube) - writes, "failures": report.failures, "seconds": seconds,
        })
        if report.failures:
            raise SystemExit(f"{label} {phase}: {report.failures} ref(s) failed: {report.reasons}")
    engine.providers.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 refs over 10 secrets")
    parser.add_argument("--refs", type=int, default=1000)
    parser.add_argument("--secrets", type=int, default=100)
    parser.add_argument("--changed", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON too")
    args = parser.parse_args()
    if args.quick:
        args.refs, args.secrets = 100, 10
    workdir = Path(tempfile.mkdtemp(prefix="paved-bench-secrets-"))
    moto = start_moto(workdir / "moto")
    bao = start_openbao(workdir / "openbao")
    os.environ.update(moto.env())
    rows: list[dict[str, Any]] = []
    try:
        names = [f"bench/db-{i:04d}" for i in range(args.secrets)]
        payload = {"username": "app", "password": "bench-value"}

        # --- AWS Secrets Manager ------------------------------------------------------------
        sm = moto.client("secretsmanager")
        for name in names:
            sm.create_secret(Name=name, SecretString=json.dumps(payload))
        aws_store = {"metadata": {"name": "aws"},
                     "spec": {"provider": {"aws": {"service": "SecretsManager", "region": moto.region}}}}
        rows += run_scenario("secretsmanager", ["aws-secretsmanager", "aws-sts"], aws_store, {}, names, args.refs,
                             lambda n: sm.put_secret_value(SecretId=n, SecretString=json.dumps({**payload, "password": "rotated"})),
                             args.changed, ("username", "password"))

        # --- AWS SSM Parameter Store --------------------------------------------------------
        ssm = moto.client("ssm")
        params = [f"/{n}" for n in names]
        for name in params:
            ssm.put_parameter(Name=name, Value="bench-value", Type="SecureString")
        ssm_store = {"metadata": {"name": "ssm"},
                     "spec": {"provider": {"aws": {"service": "ParameterStore", "region": moto.region}}}}
        rows += run_scenario("ssm", ["aws-ssm"], ssm_store, {}, params, args.refs,
                             lambda n: ssm.put_parameter(Name=n, Value="rotated", Type="SecureString", Overwrite=True),
                             args.changed, None)

        # --- Vault / OpenBao (AppRole: the login is counted) -------------------------------
        vault = bao.client()
        for name in names:
            vault.secrets.kv.v2.create_or_update_secret(path=name, secret=payload, mount_point="secret")
        vault.sys.enable_auth_method("approle")
        vault.sys.create_or_update_policy("bench", 'path "secret/*" { capabilities = ["read"] }')
        vault.auth.approle.create_or_update_approle("bench", token_policies=["bench"], token_ttl="1h")
        role_id = vault.auth.approle.read_role_id("bench")["data"]["role_id"]
        secret_id = vault.auth.approle.generate_secret_id("bench")["data"]["secret_id"]
        vault_store = {"metadata": {"name": "vault"}, "spec": {"provider": {"vault": {
            "server": bao.addr, "caBundle": Path(bao.ca_cert).read_text(),
            "auth": {"appRole": {"roleId": role_id, "secretRef": {"name": "approle", "key": "secret-id"}}}}}}}
        rows += run_scenario("vault", ["vault"], vault_store, {(NAMESPACE, "approle", "secret-id"): secret_id}, names, args.refs,
                             lambda n: vault.secrets.kv.v2.create_or_update_secret(path=n, secret={**payload, "password": "rotated"},
                                                                                   mount_point="secret"),
                             args.changed, ("username", "password"))
    finally:
        bao.stop()
        moto.stop()

    print(f"\n{args.refs} ExternalSecretRefs over {args.secrets} distinct remote secrets, {args.changed} changed in the rotation cycle\n")
    header = f"{'backend':<15}{'cycle':<10}{'refs':>6}{'calls':>7}{'ESO':>7}{'Secrets written':>17}{'cycle s':>9}  calls by operation"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['backend']:<15}{row['phase']:<10}{row['refs']:>6}{row['calls']:>7}{row['eso']:>7}{row['writes']:>17}"
              f"{row['seconds']:>9.2f}  {row['detail']}")
    targets = {
        ("secretsmanager", "steady"): math.ceil(args.secrets / 10),
        ("secretsmanager", "rotation"): math.ceil(args.secrets / 10) + math.ceil(args.changed / 20),
        ("vault", "steady"): args.secrets,
    }
    print()
    for (backend, phase), expected in targets.items():
        row = next(r for r in rows if r["backend"] == backend and r["phase"] == phase)
        print(f"{backend} {phase}: {row['calls']} calls (model: {expected})")
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
