"""Benchmark guardrails: admission latency added per request, and a full re-audit.

    python bench/bench_policy.py            # 1,000 intents x 20 policies, 500 admission requests
    python bench/bench_policy.py --quick    # 200 intents, 200 requests

What is measured, and how:
1. Admission latency added per request, with 20 IntentPolicies (the 5 defaults, each x4
   under distinct names, so nothing is shared between them): the webhook's HTTP round trip
   over TLS, measured directly. A loopback aiohttp HTTPS server hands each AdmissionReview to
   the handler Paved registers with Kopf for `validate-intents`, through Kopf's own invocation
   (`kopf._core.actions.invocation.invoke`, with the settings `paved run` uses), so whatever
   thread hop Kopf makes for that handler is measured: defaults, render through the default
   compositions with placeholders, 20 policies in CEL, decision. A keep-alive HTTPS client
   (as the API server keeps its connection to a webhook) posts AdmissionReviews of distinct
   intents (each a new spec, so the per-rule result memo cannot answer: the worst case;
   GitOps re-syncs of unchanged specs are cheaper). The Namespace read is answered from
   memory (the operator caches it); the API server's side of the call is not measured.
   Two arms: idle, and under a reconcile backlog - `--backlog` stand-in reconciles kept
   queued on Kopf's shared handler executor (kopf_settings.MAX_WORKERS threads), each blocking
   `--reconcile-seconds` as a reconcile blocks on API-server and cloud calls (a burst of
   intents created at once). A webhook handler that queues behind them answers after about
   backlog x seconds / workers; the API server gives up after timeoutSeconds (5 s).
   Reported: p50/p99 (target p99 < 50 ms idle; under the backlog, no answer past 5 s).
2. Full re-audit: check_intent for N intents x 20 policies, as the audit does (render +
   evaluate; no API writes), cold (empty compile cache and result memo: a policy changed)
   and warm (nothing changed: the periodic pass). Target: 1,000 intents < 10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import itertools
import json
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))
sys.path.insert(0, str(ROOT / "bench"))

import requests  # noqa: E402
import yaml  # noqa: E402

from harness import percentile  # noqa: E402
from paved.commands.render import load_compositions  # noqa: E402
from paved.policy import check_intent, compile_policies  # noqa: E402
from paved.policy.evaluate import DEFAULT_MEMO  # noqa: E402
from paved.policy.compile import PolicyCache  # noqa: E402

SERIAL = itertools.count(100_000)  # every admission request a new intent (the per-rule memo cannot answer)
NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team", "labels": {"env": "production"}}}


def policies(count: int = 20) -> list[dict[str, Any]]:
    defaults = [doc for path in sorted((ROOT / "compositions" / "policies").glob("*.yaml"))
                for doc in yaml.safe_load_all(path.read_text()) if doc]
    result = []
    for index in range(count):
        policy = copy.deepcopy(defaults[index % len(defaults)])
        policy["metadata"]["name"] = f"{policy['metadata']['name']}-{index}"
        policy["spec"]["mode"] = "Audit"  # report everything, deny nothing: every rule runs
        result.append(policy)
    return result


def intent(index: int) -> dict[str, Any]:
    if index % 4 == 3:
        return {"apiVersion": "paved.dev/v1alpha1", "kind": "AgentIdentity", "metadata": {"name": f"agent-{index}", "namespace": "team"},
                "spec": {"capabilities": [{"resources": ["configmaps"], "verbs": ["get", "list"]}], "ttl": f"{1 + index % 8}h"}}
    return {"apiVersion": "paved.dev/v1alpha1", "kind": "DatabaseIntent", "metadata": {"name": f"db-{index}", "namespace": "team"},
            "spec": {"engine": "postgresql", "version": "16", "availability": "high" if index % 2 else "standard",
                     "encryption": index % 5 != 0, "backup": {"retentionDays": 1 + index % 35},
                     "network": {"allowFrom": [{"namespace": f"app-{index}"}]}}}


def validate_intents_handler() -> Any:
    """The function Paved registers with Kopf for the `validate-intents` webhook, on its own pool."""
    from concurrent.futures import ThreadPoolExecutor

    from paved.handlers import admission, serving_registry

    pool = ThreadPoolExecutor(admission.ADMISSION_WORKERS, thread_name_prefix="paved-admission")
    return next(h.fn for h in serving_registry(pool)._webhooks.get_all_handlers() if h.id == "validate-intents")


class ReconcileBacklog:
    """Keeps `backlog` stand-in reconciles queued on `executor` (each blocks `seconds`)."""

    def __init__(self, executor: Any, workers: int, backlog: int, seconds: float) -> None:
        self.executor, self.seconds = executor, seconds
        self.slots = threading.Semaphore(workers + backlog)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._feed, daemon=True)

    def _reconcile(self) -> None:
        try:
            time.sleep(self.seconds)
        finally:
            self.slots.release()

    def _feed(self) -> None:
        while not self.stopped.is_set():
            if self.slots.acquire(timeout=0.1):
                self.executor.submit(self._reconcile)

    def __enter__(self) -> ReconcileBacklog:
        self.thread.start()
        time.sleep(0.5)  # the queue fills up
        return self

    def __exit__(self, *_: Any) -> None:
        self.stopped.set()
        self.thread.join()


def bench_admission(requests_count: int, backlog: int = 0, reconcile_seconds: float = 0.5) -> dict[str, float]:
    import ssl

    import aiohttp.web
    import kopf
    from kopf._core.actions.invocation import invoke

    from paved.engines import Engines
    from paved.pki import CertificateAuthority, issue_serving_cert, write_private
    from paved.runtime import settings as kopf_settings

    compositions = load_compositions((), ROOT / "compositions")
    raw_policies = policies()
    compiled, errors = compile_policies(raw_policies)
    assert not errors and len(compiled) == 20
    composition_index = {c["metadata"]["name"]: [c] for c in compositions}
    policy_index = {p["metadata"]["name"]: [p] for p in raw_policies}
    engines = Engines()
    engines.namespaces.get = lambda namespace: NAMESPACE  # type: ignore[method-assign] # the operator caches it; no API server here
    handler = validate_intents_handler()
    settings = kopf_settings.leading_settings()  # its executor is the one reconciles queue in
    folder = Path(tempfile.mkdtemp(prefix="paved-bench-webhook-"))
    ca = CertificateAuthority.create("paved-bench-ca")
    cert, key = issue_serving_cert(ca, ["127.0.0.1"])
    for name, data in (("ca.crt", ca.cert_pem), ("tls.crt", cert), ("tls.key", key)):
        write_private(folder / name, data)

    async def serve(request: aiohttp.web.Request) -> aiohttp.web.Response:
        review = await request.json()
        warnings: list[str] = []
        kwargs = {"body": kopf.Body(review["request"]["object"]), "old": None, "operation": "CREATE", "warnings": warnings,
                  "memo": engines, "composition_index": composition_index, "policy_index": policy_index,
                  "exception_index": {}}
        try:
            await invoke(handler, settings=settings, kwargs=kwargs)
            allowed = True
        except kopf.AdmissionError:
            allowed = False
        return aiohttp.web.json_response({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                          "response": {"uid": review["request"]["uid"], "allowed": allowed,
                                                       "warnings": warnings}})

    ready = threading.Event()
    port_box: list[int] = []

    def run_server() -> None:
        async def main() -> None:
            app = aiohttp.web.Application()
            app.add_routes([aiohttp.web.post("/validate-intents", serve)])
            runner = aiohttp.web.AppRunner(app)
            await runner.setup()
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(folder / "tls.crt"), str(folder / "tls.key"))
            site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
            await site.start()
            port_box.append(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
            ready.set()
            await asyncio.Event().wait()

        asyncio.run(main())

    threading.Thread(target=run_server, daemon=True).start()
    ready.wait(10)
    url = f"https://127.0.0.1:{port_box[0]}/validate-intents"
    session = requests.Session()

    def post() -> float:
        serial = next(SERIAL)
        review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                  "request": {"uid": str(serial), "operation": "CREATE", "object": intent(serial)}}
        started = time.perf_counter()
        response = session.post(url, data=json.dumps(review), headers={"Content-Type": "application/json"}, timeout=60,
                                verify=str(folder / "ca.crt"))  # per request: REQUESTS_CA_BUNDLE would override session.verify
        elapsed = time.perf_counter() - started
        response.raise_for_status()
        return elapsed * 1000

    for _ in range(20):  # warm-up: connection, first compiles
        post()
    if backlog:
        with ReconcileBacklog(settings.execution.executor, kopf_settings.MAX_WORKERS, backlog, reconcile_seconds):
            latencies = [post() for _ in range(requests_count)]
    else:
        latencies = [post() for _ in range(requests_count)]
    return {"requests": len(latencies), "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
            "mean_ms": statistics.fmean(latencies), "over_5s": sum(latency > 5000 for latency in latencies)}


def bench_audit(count: int) -> dict[str, float]:
    compositions = load_compositions((), ROOT / "compositions")
    raw = policies()
    intents = [intent(index) for index in range(count)]
    now = datetime.now(timezone.utc)  # one audit pass judges every intent at one moment
    DEFAULT_MEMO.clear()
    started = time.perf_counter()
    compiled, _ = compile_policies(raw, PolicyCache())  # a fresh cache: every policy recompiles
    violations = sum(v.violation for item in intents for v in check_intent(item, compositions, compiled, NAMESPACE, now=now).verdicts)
    cold = time.perf_counter() - started
    started = time.perf_counter()
    for item in intents:
        check_intent(item, compositions, compiled, NAMESPACE, now=now)
    warm = time.perf_counter() - started
    return {"intents": count, "policies": len(compiled), "cold_s": cold, "warm_s": warm, "violations": violations}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 intents and 200 requests")
    parser.add_argument("--intents", type=int, default=None)
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--loaded-requests", type=int, default=20, help="admission requests under the reconcile backlog (0: skip)")
    parser.add_argument("--backlog", type=int, default=240, help="stand-in reconciles kept queued on Kopf's executor")
    parser.add_argument("--reconcile-seconds", type=float, default=0.5, help="how long each stand-in reconcile blocks")
    args = parser.parse_args()
    intents = args.intents or (200 if args.quick else 1000)
    requests_count = args.requests or (200 if args.quick else 500)
    admission_figures = bench_admission(requests_count)
    print(f"admission (20 policies, HTTPS round trip, {admission_figures['requests']} requests): "
          f"p50 {admission_figures['p50_ms']:.1f} ms, p99 {admission_figures['p99_ms']:.1f} ms, "
          f"mean {admission_figures['mean_ms']:.1f} ms (target p99 < 50 ms)")
    if args.loaded_requests:
        loaded = bench_admission(args.loaded_requests, args.backlog, args.reconcile_seconds)
        print(f"admission under a reconcile backlog ({args.backlog} x {args.reconcile_seconds:g} s queued on Kopf's "
              f"executor, {loaded['requests']} requests): p50 {loaded['p50_ms']:.1f} ms, p99 {loaded['p99_ms']:.1f} ms, "
              f"{loaded['over_5s']} past the 5 s webhook timeout")
    audit = bench_audit(intents)
    print(f"full re-audit {audit['intents']} intents x {audit['policies']} policies: cold {audit['cold_s']:.2f} s "
          f"(policy changed), warm {audit['warm_s']:.2f} s (periodic), {audit['violations']} violations "
          f"(target < 10 s for 1,000)")


if __name__ == "__main__":
    main()
