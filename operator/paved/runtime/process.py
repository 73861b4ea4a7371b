"""`Runtime`: the one object that owns a `paved run` process.

What it owns, and in which order it starts them:

1. the Kubernetes connection (fail fast on bad credentials) and the write fence, armed
   (paved.fence): from here on, nothing that writes leaves this process unless it leads;
2. the metrics server and the probes (paved.runtime.health);
3. the admission side, on every replica: the shared certificate's files
   (paved.runtime.webhook), and a Kopf operator on the serving registry (admission handlers
   and their indexes) in a thread of its own;
4. the leader election (paved.runtime.leadership) in a thread of its own. When this replica
   takes the Lease: the engines' threads (paved.engines: secret sync and its watches), a
   second Kopf operator on the leading registry (every reconcile, daemon and timer) in its
   own thread, and the leader's webhook duties (certificate, configuration).

Shutdown (SIGTERM or SIGINT): the fence closes and the Lease is released at once (a rolling
update hands over in about a retry period); then the leading operator and the engines stop,
then the serving operator. Losing the Lease any other way (renewals failed for the renew
deadline) ends the process with LOST_LEASE_EXIT_CODE, as client-go programs do: the fence
is already closed, and a fresh process brings no state of its past leadership along.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import kopf
from prometheus_client import start_http_server

from paved import fence, logsafety, metrics, operator_namespace
from paved.engines import Engines, Scope
from paved.errors import located
from paved.handlers import admission, leading_registry, secrets, serving_registry
from paved.kube import client as kube_client
from paved.kube.client import ApiError
from paved.kube.watch import Informer
from paved.runtime import settings as kopf_settings
from paved.runtime.leadership import DEFAULT_LEASE_NAME, Elector, LeaseTimings, candidate_identity
from paved.runtime.webhook import CertificateFiles, PavedWebhookServer, WebhookOptions, leader_duties

log = logging.getLogger(__name__)

LOST_LEASE_EXIT_CODE = 3
STOP_TIMEOUT = 10.0  # seconds each Kopf operator gets to finish its handlers on shutdown
DUTIES_EVERY = 3600.0  # seconds between the leader's webhook checks (certificate expiry)
DUTIES_RETRY = 5.0


@dataclass(frozen=True)
class RunOptions:
    namespaces: tuple[str, ...] = ()  # empty: cluster-wide
    metrics_port: int = 8080
    health_port: int = 8081
    bind_address: str = "0.0.0.0"  # noqa: S104 - in a pod, probes and scrapes come from outside
    verbose: bool = False
    webhook: WebhookOptions = field(default_factory=WebhookOptions)
    exception_namespaces: tuple[str, ...] = ()  # namespaces allowed to hold PolicyExceptions
    audit_interval: float = 600.0  # seconds between full policy audits (jittered)
    prometheus_address: str | None = None  # default spec.analysis.prometheus.address
    leader_election: bool = True
    lease_name: str = DEFAULT_LEASE_NAME
    lease_namespace: str | None = None  # default: the operator's namespace
    lease_timings: LeaseTimings = field(default_factory=LeaseTimings)


class KopfThread:
    """One Kopf operator on its own registry, in its own thread and event loop (Kopf keeps
    per-loop context, so two operators in one process stay apart), stopped by a flag."""

    def __init__(self, name: str, registry: kopf.OperatorRegistry, settings: kopf.OperatorSettings, memo: Engines,
                 namespaces: tuple[str, ...]) -> None:
        self.name = name
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name=f"paved-kopf-{name}", daemon=True)
        self._operator = dict(registry=registry, settings=settings, memo=memo, stop_flag=self._stop, ready_flag=self.ready,
                              standalone=True, clusterwide=not namespaces, namespaces=list(namespaces))

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(kopf.operator(**self._operator))  # type: ignore[arg-type]
        except Exception as error:  # noqa: BLE001 - reported; the runtime decides what happens next
            log.error("Kopf operator %r ended: %s", self.name, located(error))
        finally:
            loop.close()

    def start(self) -> None:
        self._thread.start()

    @property
    def started(self) -> bool:
        return self._thread.ident is not None

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def responsive(self, timeout: float = 5.0) -> bool:
        """Whether its event loop runs a no-op within `timeout` (a wedged loop answers nothing)."""
        loop = self._loop
        if loop is None or not self.alive or loop.is_closed():
            return False
        try:
            asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(timeout)
        except Exception:  # noqa: BLE001 - any failure is "not responsive"
            return False
        return True


class Runtime:
    """Everything a `paved run` process runs (see the module docstring)."""

    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.engines = Engines(Scope(frozenset(options.namespaces), frozenset(options.exception_namespaces),
                                     options.audit_interval, options.prometheus_address))
        namespace = operator_namespace()
        self.certificate_files = CertificateFiles(namespace) if options.webhook.shared_certificate else None
        self.webhook = PavedWebhookServer(options.webhook, self.certificate_files)
        self.admission_pool = ThreadPoolExecutor(admission.ADMISSION_WORKERS, thread_name_prefix="paved-admission")
        self.serving = KopfThread("serving", serving_registry(self.admission_pool), kopf_settings.serving_settings(self.webhook),
                                  self.engines, options.namespaces)
        self.leading = KopfThread("leading", leading_registry(), kopf_settings.leading_settings(), self.engines,
                                  options.namespaces)
        self.elector: Elector | None = None
        self._lease_watch: Informer | None = None
        self.leads = threading.Event()
        self._terminate = threading.Event()

    # --- probes ---------------------------------------------------------------------------

    def live(self) -> bool:
        return self.serving.responsive()

    def ready(self) -> bool:
        return self.webhook.serving.is_set() and self.serving.ready.is_set()

    # --- the process ----------------------------------------------------------------------

    def run(self) -> int:
        """Start everything, wait for SIGTERM/SIGINT, shut down; the process's exit code."""
        from paved.runtime.health import HealthServer  # http.server: only when running

        kube_client.configure()  # fail fast on bad credentials, before anything runs
        if self.options.leader_election:
            fence.WRITES.arm()
            kopf_settings.fence_kopf_writes()
        start_http_server(self.options.metrics_port, addr=self.options.bind_address)
        health = HealthServer(self.options.bind_address, self.options.health_port, live=self.live, ready=self.ready)
        health.start()
        if self.certificate_files is not None:
            self.certificate_files.start()
        self.serving.start()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        if self.options.leader_election:
            self.elector = self._elector()
            self._lease_watch = self._watch_lease(self.elector)
            threading.Thread(target=self.elector.run, name="paved-leader-election", daemon=True).start()
        else:
            self._start_leading()
        code = self._watch()
        self.shutdown()
        health.stop()
        return code

    def _watch(self) -> int:
        """Wait for a signal; 0 then. A Kopf operator that ended by itself (it cannot log in,
        a bug) leaves this replica unable to serve or lead: exit 1, to be restarted."""
        while not self._terminate.wait(1.0):
            for operator in (self.serving, self.leading):
                if operator.started and not operator.alive:
                    log.error("the %s Kopf operator stopped by itself: exiting", operator.name)
                    return 1
        return 0

    def _elector(self) -> Elector:
        return Elector(
            namespace=self.options.lease_namespace or operator_namespace(), name=self.options.lease_name,
            identity=candidate_identity(), timings=self.options.lease_timings, fence=fence.WRITES,
            api_client=kube_client.api_client(), on_started=self._start_leading, on_stopped=self._lost_lease,
        )

    @staticmethod
    def _watch_lease(elector: Elector) -> Informer:
        """A waiting candidate tries again the moment the Lease changes (a released Lease is taken
        at once, not at the next retry period): a rolling update hands over in well under a second."""
        def changed(type: str | None, body: dict[str, Any]) -> None:
            if (body.get("metadata") or {}).get("name") == elector.name and not elector.leading:
                elector.nudge()

        watch = Informer("coordination.k8s.io/v1", "Lease", changed, namespaces=[elector.namespace])
        watch.start()
        return watch

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: handing over and stopping", signal.Signals(signum).name)
        self._terminate.set()

    def _start_leading(self) -> None:
        """This replica leads: engines first (they are fed by the leading operator's handlers)."""
        metrics.LEADER.set(1)
        self.leads.set()
        self.engines.start_leading(watches=secrets.watches(self.engines))
        self.leading.start()
        threading.Thread(target=self._leader_duties, name="paved-webhook-duties", daemon=True).start()

    def _leader_duties(self) -> None:
        """Keep the webhook's certificate and configuration right while leading."""
        done = False
        while self.leads.is_set() and not self._terminate.is_set():
            try:
                leader_duties(self.options.webhook, self.webhook, admission.WEBHOOKS, operator_namespace(),
                              now=lambda: datetime.datetime.now(datetime.UTC))
                done = self.webhook.serving.is_set() or self.options.webhook.service is not None
            except (ApiError, OSError, ValueError) as error:
                log.warning("admission webhook certificate or configuration not written: %s", located(error))
                done = False
            self._terminate.wait(DUTIES_EVERY if done else DUTIES_RETRY)

    def _lost_lease(self) -> None:
        """Renewals failed: the fence is closed; end the process (nothing of this leadership lingers)."""
        metrics.LEADER.set(0)
        log.error("lost the leader Lease: exiting (code %d) so that a fresh process stands by", LOST_LEASE_EXIT_CODE)
        logging.shutdown()
        os._exit(LOST_LEASE_EXIT_CODE)

    def shutdown(self) -> None:
        """Hand over first (fence closed, Lease released), then stop every thread."""
        if self.elector is not None:
            self.elector.release()
        else:
            fence.WRITES.close()
        if self._lease_watch is not None:
            self._lease_watch.stop()
        self.leads.clear()
        metrics.LEADER.set(0)
        if self.leading.started:
            self.leading.stop()
        self.engines.stop()
        self.serving.stop()
        if self.certificate_files is not None:
            self.certificate_files.stop()
        self.admission_pool.shutdown(wait=False, cancel_futures=True)


def main(options: RunOptions) -> None:
    """Run the operator until SIGTERM/SIGINT (see Runtime)."""
    kopf.configure(verbose=options.verbose, log_format=kopf.LogFormat.PLAIN)
    logsafety.secure()  # wire loggers pinned, tracebacks without messages, whatever the level
    if not options.verbose:
        logging.getLogger("kopf.objects").addFilter(kopf_settings.QuietWatchSuccess())
    problems = options.lease_timings.problems()
    if problems:
        raise SystemExit(f"paved run: {'; '.join(problems)}")
    sys.exit(Runtime(options).run())
