"""Benchmark plumbing shared by the bench/ scenarios: real parts, measured from outside.

    from harness import BenchEnv, create_objects, ReadyWatcher, summarize

    with BenchEnv.start(moto=False) as env:          # control plane + operator (+ moto)
        with ReadyWatcher(env.api, group, version, plural, namespace) as watcher:
            started = create_objects(env.api, bodies)  # {name: monotonic time before create}
            ready = watcher.wait(started, timeout=120)  # {name: monotonic time seen Ready}
        print(summarize(latencies(started, ready)))

What is here (used by bench_identity.py, bench_identity_expiry.py, bench_database.py and
bench_secrets_scale.py):
- :func:`load_example` — one object of examples/, the template a scenario copies.
- :class:`BenchEnv` — a fresh control plane in a temporary state dir (or an existing one with
  ``state_dir``), optional moto, and `paved run` started by the shared launcher
  (paved.dev.operator: deploy/'s ServiceAccount, not admin), plus an admin ApiClient and an
  :class:`RssSampler` on the operator; ``stop_operator``/``start_operator`` for a restart.
  Everything it started stops on exit.
- :func:`create_objects` — creates custom objects through the API with a small thread pool
  (the same API call `kubectl apply` makes for a new object), recording per-object start times.
- :class:`ReadyWatcher` — ONE list+watch over a namespace, recording the first time each object
  is seen with ``Ready=True`` (or another :func:`condition_true`, or :func:`exists` for core
  objects such as Secrets); ``wait`` blocks until a set of names is Ready (no polling).
- :func:`percentile`, :func:`summarize` — nearest-rank percentiles of latencies.
- :class:`RssSampler` — the operator's resident memory (with its children) sampled in a thread;
  ``peak_mb`` over the run, ``reset()`` per phase.
- :func:`operator_counters` — counters from the operator's /metrics (either metric prefix).
- :class:`CounterSampler` — a cumulative counter read every second: its increase per second
  (calls per second of a provider, through a restart of the operator).
- :func:`apiserver_writes` — mutating requests counted by the API server itself
  (``apiserver_request_total``), by resource, for the resources a filter selects.
- :func:`print_table` — fixed-width tables.
"""

from __future__ import annotations

import contextlib
import math
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

from paved.dev.controlplane import ControlPlane
from paved.dev.moto import MotoServer, start_moto
from paved.dev.operator import OperatorProcess, parse_metric, start_operator

__all__ = [
    "BenchEnv",
    "CounterSampler",
    "ReadyWatcher",
    "RssSampler",
    "apiserver_writes",
    "condition_true",
    "create_objects",
    "delta",
    "exists",
    "latencies",
    "load_example",
    "log",
    "operator_counters",
    "percentile",
    "print_table",
    "summarize",
]

ROOT = Path(__file__).resolve().parents[1]

MUTATING_VERBS = frozenset({"POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"})


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load_example(relative: str) -> dict[str, Any]:
    """One object of the repo's examples/, e.g. ``load_example("02-agent-identity/pod-reader.yaml")``."""
    return dict(yaml.safe_load((ROOT / "examples" / relative).read_text()))


# ------------------------------------------------------------------------------ statistics


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latencies(started: Mapping[str, float], done: Mapping[str, float]) -> list[float]:
    """Per-object seconds from ``started`` to ``done`` for the objects in both."""
    return [done[name] - started[name] for name in started if name in done]


@dataclass(frozen=True)
class Summary:
    count: int
    p50: float
    p95: float
    max: float


def summarize(values: Sequence[float]) -> Summary:
    return Summary(len(values), percentile(values, 50), percentile(values, 95), max(values, default=math.nan))


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], file: Any = None) -> None:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "-" if math.isnan(value) else f"{value:.3f}" if value < 10 else f"{value:.1f}"
        return str(value)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) if text else len(h) for i, h in enumerate(headers)]
    out = file or sys.stdout
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)), file=out)
    for row in text:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)), file=out)
    out.flush()


# ------------------------------------------------------------------------------ memory


class RssSampler:
    """Samples the resident memory of a process and all its children every ``interval`` s."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_bytes = 0
        self.last_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def sample(self) -> int:
        try:
            process = psutil.Process(self.pid)
            members = [process, *process.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        for member in members:
            with contextlib.suppress(psutil.Error):
                total += member.memory_info().rss
        self.last_bytes = total
        self.peak_bytes = max(self.peak_bytes, total)
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> RssSampler:
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def reset(self) -> None:
        """Start a new peak from the current value."""
        self.peak_bytes = self.sample()

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20

    @property
    def last_mb(self) -> float:
        return self.last_bytes / 2**20


# ------------------------------------------------------------------------------ metrics


def operator_counters(operator: OperatorProcess, name: str, label: str, **labels: str) -> dict[str, float]:
    """{value of ``label``: sum} for the operator's counter ``name`` (filtered by ``labels``)."""
    import re

    text = operator.metrics()
    keys = {match.group(1) for match in re.finditer(rf'^{re.escape(name)}\{{[^}}]*{label}="([^"]*)"', text, re.M)}
    return {key: parse_metric(text, name, **labels, **{label: key}) for key in keys}


class CounterSampler:
    """Reads a cumulative counter every ``interval`` s in a thread: its increase per interval.

    ``read`` returns the counter's current value and may raise while its source is down (an
    operator being restarted); those ticks are skipped. ``source`` names the process that
    counts (e.g. the operator's pid): a sample from a new source counts from zero, and a
    sample during which the source changed is dropped. Start the sampler while the source is
    up, before the windows you will ask about.
    """

    def __init__(self, read: Callable[[], float], source: Callable[[], object] = lambda: None,
                 interval: float = 1.0) -> None:
        self.read, self.source, self.interval = read, source, interval
        self.samples: list[tuple[float, object, float]] = []  # (monotonic time, source, counter value)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="counter-sampler", daemon=True)

    def _run(self) -> None:
        tick = time.monotonic()
        while not self._stop.is_set():
            source = self.source()
            try:
                value = self.read()
            except Exception:  # noqa: BLE001, S110 - the source is down: skip this tick
                pass
            else:
                if self.source() == source:
                    self.samples.append((time.monotonic(), source, value))
            tick += self.interval
            self._stop.wait(max(0.0, tick - time.monotonic()))

    def __enter__(self) -> CounterSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def increases(self, since: float, until: float = math.inf) -> list[tuple[float, float, float]]:
        """(start, end, increase) between consecutive samples, for every step that ends in [since, until]."""
        samples = list(self.samples)
        inside = [index for index, sample in enumerate(samples) if since <= sample[0] <= until]
        if not inside:
            return []
        window = samples[max(0, inside[0] - 1) : inside[-1] + 1]  # from the last sample before ``since``
        return [(t0, t1, v1 - v0 if s1 == s0 else v1) for (t0, s0, v0), (t1, s1, v1) in zip(window, window[1:])]


def apiserver_writes(plane: ControlPlane, select: Callable[[dict[str, str]], bool]) -> dict[str, float]:
    """Mutating requests the API server has served, by "verb resource", for label sets ``select`` accepts.

    The API server's metrics carry no user label, so attribution is by resource: choose
    resources only the operator writes (its kinds, and the children it owns).
    """
    import re

    text = plane.kubectl("get", "--raw", "/metrics").stdout
    counts: dict[str, float] = {}
    for match in re.finditer(r"^apiserver_request_total\{(.*)\} (\S+)$", text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        if labels.get("verb") in MUTATING_VERBS and select(labels):
            sub = f"/{labels['subresource']}" if labels.get("subresource") else ""
            key = f"{labels['verb']} {labels.get('resource', '')}{sub}"
            counts[key] = counts.get(key, 0.0) + float(match.group(2))
    return counts


def delta(after: Mapping[str, float], before: Mapping[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after if after[k] - before.get(k, 0.0)}


# ------------------------------------------------------------------------------ objects


def create_objects(api: Any, bodies: Sequence[dict[str, Any]], workers: int = 8) -> dict[str, float]:
    """Create namespaced custom objects concurrently; {name: monotonic time just before its create}.

    ``api`` is a kubernetes ApiClient. Raises the first API error.
    """
    from kubernetes import client

    custom = client.CustomObjectsApi(api)
    started: dict[str, float] = {}

    def create(body: dict[str, Any]) -> None:
        group, version = body["apiVersion"].split("/")
        plural = _plural(body["kind"])
        started[body["metadata"]["name"]] = time.monotonic()
        custom.create_namespaced_custom_object(group, version, body["metadata"]["namespace"], plural, body)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(create, body) for body in bodies]:
            future.result()
    return started


def _plural(kind: str) -> str:
    from paved.api.kinds import kind_info

    return kind_info(kind).plural


def condition_true(type_: str) -> Callable[[Mapping[str, Any]], bool]:
    """A predicate: the object has condition ``type_`` with status True."""

    def check(obj: Mapping[str, Any]) -> bool:
        conditions = (obj.get("status") or {}).get("conditions") or []
        return any(c.get("type") == type_ and c.get("status") == "True" for c in conditions)

    return check


is_ready = condition_true("Ready")


def exists(obj: Mapping[str, Any]) -> bool:
    """A predicate for :class:`ReadyWatcher`: the object is there (e.g. a target Secret)."""
    return True


class ReadyWatcher:
    """One list+watch of a resource in a namespace; the first time each object was Ready.

    ``group`` "" with ``version`` "v1" watches a core kind (``plural`` "secrets", with
    ``ready=exists`` to record when each Secret appeared); anything else is a custom resource.
    Use as a context manager around the creates. A watch the server ends is resumed from the
    last resourceVersion seen (only an error re-lists), so long waits over thousands of
    objects cost no repeated lists.
    """

    def __init__(self, api: Any, group: str, version: str, plural: str, namespace: str,
                 ready: Callable[[Mapping[str, Any]], bool] = is_ready) -> None:
        self.api, self.group, self.version, self.plural, self.namespace = api, group, version, plural, namespace
        self._ready_fn = ready
        self.ready: dict[str, float] = {}
        self.seen: set[str] = set()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ready-watcher", daemon=True)
        self._listed = threading.Event()

    def __enter__(self) -> ReadyWatcher:
        self._thread.start()
        if not self._listed.wait(30):
            raise TimeoutError("the watch did not start within 30s")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _observe(self, obj: Mapping[str, Any], now: float) -> None:
        name = obj["metadata"]["name"]
        with self._cond:
            self.seen.add(name)
            if name not in self.ready and self._ready_fn(obj):
                self.ready[name] = now
                self._cond.notify_all()

    def _lister(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        """The namespaced list function of the resource and its positional arguments."""
        from kubernetes import client

        if self.group:
            return client.CustomObjectsApi(self.api).list_namespaced_custom_object, (
                self.group, self.version, self.namespace, self.plural)
        # A core kind whose plural just adds an s: secrets -> CoreV1Api.list_namespaced_secret.
        return getattr(client.CoreV1Api(self.api), f"list_namespaced_{self.plural.removesuffix('s')}"), (self.namespace,)

    def _run(self) -> None:
        import json

        from kubernetes import watch

        list_function, args = self._lister()
        resource_version: str | None = None
        while not self._stop.is_set():
            try:
                if resource_version is None:
                    # Raw JSON, not client models: thousands of objects deserialise slowly.
                    listing = json.loads(list_function(*args, _preload_content=False).data)
                    now = time.monotonic()
                    for obj in listing.get("items", []):
                        self._observe(obj, now)
                    resource_version = listing["metadata"]["resourceVersion"]
                    self._listed.set()
                stream = watch.Watch().stream(
                    list_function, *args, resource_version=resource_version, timeout_seconds=5,
                    allow_watch_bookmarks=True,
                )
                for event in stream:
                    obj = event["raw_object"]
                    resource_version = obj.get("metadata", {}).get("resourceVersion") or resource_version
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._observe(obj, time.monotonic())
                    if self._stop.is_set():
                        break
            except Exception as error:  # noqa: BLE001 - restart the watch with a fresh list
                if self._stop.is_set():
                    return
                log(f"watch restarted: {type(error).__name__}: {error}")
                resource_version = None
                time.sleep(0.5)

    def wait(self, names: Iterable[str], timeout: float) -> dict[str, float]:
        """Block until every name in ``names`` is Ready (or ``timeout``); {name: time Ready}."""
        wanted = set(names)
        deadline = time.monotonic() + timeout
        with self._cond:
            while not wanted <= self.ready.keys():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(min(remaining, 1.0))
            return {name: self.ready[name] for name in wanted if name in self.ready}


# ------------------------------------------------------------------------------ environment


@dataclass
class BenchEnv:
    """A control plane, the operator (deploy/'s ServiceAccount), optional moto; stopped on close."""

    plane: ControlPlane
    operator: OperatorProcess
    api: Any
    rss: RssSampler
    moto: MotoServer | None = None
    owned_plane: bool = True
    workdir: Path = field(default_factory=Path)
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    @classmethod
    def start(cls, *, state_dir: Path | None = None, moto: bool = False,
              operator_env: Mapping[str, str] | None = None, extra_args: tuple[str, ...] = ()) -> BenchEnv:
        from kubernetes import client, config

        tmp = tempfile.TemporaryDirectory(prefix="paved-bench-")
        workdir = Path(tmp.name)
        owned = state_dir is None
        plane = ControlPlane(state_dir or workdir / "controlplane", die_with_parent=owned,
                             log=lambda message: log(message))
        started = time.monotonic()
        up = plane.up()
        log(f"control plane {'reused' if up.reused else 'started'} at {up.server} in {time.monotonic() - started:.1f}s")
        moto_server = None
        operator = None
        try:
            env = dict(operator_env or {})
            if moto:
                moto_server = start_moto(workdir / "moto")
                env = {**moto_server.env(), **env}
                log(f"moto at {moto_server.endpoint_url}")
            operator = start_operator(plane, workdir / "operator", env=env, extra_args=extra_args)
            log(f"operator pid {operator.pid} (metrics {operator.metrics_url}), log {operator.log_path}")
            configuration = client.Configuration()
            config.load_kube_config(config_file=str(plane.kubeconfig), client_configuration=configuration)
            configuration.connection_pool_maxsize = 32
            api = client.ApiClient(configuration)
        except BaseException:
            if operator is not None:
                operator.stop()
            if moto_server is not None:
                moto_server.stop()
            if owned:
                plane.down()
            tmp.cleanup()
            raise
        rss = RssSampler(operator.pid or 0).start()
        return cls(plane, operator, api, rss, moto_server, owned, workdir, tmp)

    def close(self) -> None:
        self.rss.stop()
        self.operator.stop()
        if self.moto is not None:
            self.moto.stop()
        self.api.close()
        if self.owned_plane:
            self.plane.down()
        if self._tmp is not None:
            self._tmp.cleanup()

    def stop_operator(self) -> None:
        """Stop `paved run` (SIGTERM); the control plane and moto keep running."""
        self.rss.stop()
        self.operator.stop()

    def start_operator(self) -> None:
        """Start `paved run` again (after :meth:`stop_operator`); ``rss`` samples the new process."""
        self.operator.start()
        self.rss = RssSampler(self.operator.pid or 0).start()

    def __enter__(self) -> BenchEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create_namespace(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        metadata = {"name": name, **({"labels": dict(labels)} if labels else {})}
        self.plane.apply_objects([{"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}])

    def delete_namespace(self, name: str, timeout: float = 300.0) -> float:
        """Delete a namespace and wait until it is gone (its intents first); seconds taken."""
        started = time.monotonic()
        self.plane.kubectl("delete", "namespace", name, "--wait=true", f"--timeout={int(timeout)}s",
                           check=False, timeout=timeout + 30)
        return time.monotonic() - started
