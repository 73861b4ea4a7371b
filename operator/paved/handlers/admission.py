"""The validating admission webhook: IntentPolicies enforced when intents are created or changed.

Served by the operator itself (Kopf's admission server, aiohttp over TLS). Paved writes its
own ValidatingWebhookConfiguration `paved.dev` (instead of Kopf's `settings.admission.managed`)
because Kopf's managed mode hard-codes timeoutSeconds=30 and removes the webhooks when the
operator exits; the failure policy is a platform decision (docs/guardrails.md):

- failurePolicy **Fail**, timeoutSeconds **5**, scoped to CREATE and UPDATE of the paved.dev
  intent kinds, IntentPolicy and PolicyException only. DELETE is never intercepted (a
  finalizer must always be removable), nor are status subresources or any other kind, so
  an operator outage blocks only new or changed intents - which nothing would reconcile
  while the operator is down anyway - and never the rest of the cluster.
- An UPDATE that leaves `spec` unchanged is admitted without evaluation (metadata, labels,
  finalizers, Kopf's own annotations): an existing intent that violates a policy added later
  is never blocked or changed, only reported by the audit.

What is judged (pure, see `review_intent`, `review_policy`, `review_exception`):
- intents: `check_intent` (defaults, render with placeholders, evaluate) then
  `admission_decision`: Enforce fail/error -> denied naming policy, rule and message; Warn ->
  admitted with warnings; Audit -> admitted. A render failure does not deny (the intent's
  own Ready condition reports it); the rules about the intent still run and the response
  carries a warning that the rendered output was not checked.
- IntentPolicy: refused when its CEL does not compile, naming rule, line and column.
- PolicyException: refused outside the namespaces the platform names (see handlers.policy).

The handlers run on the webhook's own small thread pool, not in Kopf's handler executor
(see `_on_own_threads`): an answer must never wait behind a backlog of reconciles.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import dataclasses
import functools
import logging
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import kopf

from paved import GROUP, VERSION
from paved.api.kinds import INTENT_KINDS, kind_info
from paved.errors import describe
from paved.handlers import _compose
from paved.handlers import policy as policy_handlers
from paved.kube.apply import server_side_apply
from paved.kube.client import ResourceInfo
from paved.policy.decisions import Review, review_exception, review_intent, review_policy, spec_unchanged

log = logging.getLogger(__name__)

CONFIGURATION_NAME = "paved.dev"
DEFAULT_FAILURE_POLICY = "Fail"
DEFAULT_TIMEOUT_SECONDS = 5
DENIED_CODE = 403
CONFIGURATION_INFO = ResourceInfo("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration",
                                  "validatingwebhookconfigurations", namespaced=False)
ADMISSION_WORKERS = 4  # the work is CPU-bound under the GIL: more threads add no throughput


# --------------------------------------------------------------------------- pure decisions


# --------------------------------------------------------------------------- webhook configuration


@dataclass(frozen=True)
class Webhook:
    """One webhook of the configuration: the Kopf handler id (URL path) and what it matches."""

    id: str
    plurals: tuple[str, ...]


WEBHOOKS: tuple[Webhook, ...] = (
    Webhook("validate-intents", tuple(kind_info(kind).plural for kind in INTENT_KINDS)),
    Webhook("validate-intentpolicies", ("intentpolicies",)),
    Webhook("validate-policyexceptions", ("policyexceptions",)),
)


def client_config_for(client_config: Mapping[str, Any], handler_id: str, service: tuple[str, str, int] | None) -> dict[str, Any]:
    """Kopf's client config (url + caBundle) pointed at one handler, by URL or by Service."""
    config: dict[str, Any] = {}
    if client_config.get("caBundle"):
        config["caBundle"] = client_config["caBundle"]
    if service is not None:
        namespace, name, port = service
        config["service"] = {"namespace": namespace, "name": name, "port": port, "path": f"/{handler_id}"}
    else:
        config["url"] = f"{str(client_config['url']).rstrip('/')}/{handler_id}"
    return config


def webhook_configuration(
    client_config: Mapping[str, Any],
    *,
    failure_policy: str = DEFAULT_FAILURE_POLICY,
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS,
    service: tuple[str, str, int] | None = None,
) -> dict[str, Any]:
    """The ValidatingWebhookConfiguration Paved serves (pure)."""
    return {
        "apiVersion": CONFIGURATION_INFO.api_version,
        "kind": CONFIGURATION_INFO.kind,
        "metadata": {"name": CONFIGURATION_NAME, "labels": {"app.kubernetes.io/managed-by": "paved"}},
        "webhooks": [
            {
                "name": f"{webhook.id}.{CONFIGURATION_NAME}",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": failure_policy,
                "timeoutSeconds": timeout_seconds,
                "matchPolicy": "Equivalent",
                "rules": [
                    {
                        "apiGroups": [GROUP],
                        "apiVersions": [VERSION],
                        "resources": list(webhook.plurals),
                        "operations": ["CREATE", "UPDATE"],
                        "scope": "*",
                    }
                ],
                "clientConfig": client_config_for(client_config, webhook.id, service),
            }
            for webhook in WEBHOOKS
        ],
    }


@dataclass(frozen=True)
class WebhookOptions:
    """`paved run` webhook options: where to listen, how the API server reaches us, TLS, policy."""

    port: int = 0  # 0: any free port (URL mode registers the port actually used)
    address: str = "0.0.0.0"  # noqa: S104 - in a pod the API server calls from outside
    host: str | None = None  # hostname/IP in the webhook URL (default: derived from address)
    service: tuple[str, str, int] | None = None  # (namespace, name, port): in-cluster Service instead of a URL
    certfile: str | None = None
    keyfile: str | None = None
    cafile: str | None = None
    failure_policy: str = DEFAULT_FAILURE_POLICY
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    register: bool = True  # write the ValidatingWebhookConfiguration


def parse_service(text: str | None) -> tuple[str, str, int] | None:
    """`namespace/name[:port]` -> (namespace, name, port); port defaults to 443."""
    if not text:
        return None
    ref, _, port = text.partition(":")
    namespace, _, name = ref.partition("/")
    if not namespace or not name:
        raise ValueError(f"--webhook-service must be NAMESPACE/NAME[:PORT], got {text!r}")
    return namespace, name, int(port or 443)


def self_signed(options: WebhookOptions, directory: Path | None = None) -> WebhookOptions:
    """Options with a freshly generated CA and serving certificate (when no cert files were given).

    The CA lives only as long as the process: the operator writes the caBundle into its own
    webhook configuration at every start, so nothing else needs to trust it.
    """
    if options.certfile and options.keyfile:
        return options
    from paved.dev.pki import CertificateAuthority, issue_serving_cert, write_private  # cryptography: only when needed

    hosts = [options.host] if options.host else []
    if options.service is not None:
        namespace, name, _ = options.service
        hosts += [f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"]
    if options.address not in ("0.0.0.0", "::", ""):  # noqa: S104
        hosts.append(options.address)
    hosts += ["127.0.0.1", "localhost"]
    hosts = list(dict.fromkeys(hosts))
    ca = CertificateAuthority.create("paved-webhook-ca")
    cert, key = issue_serving_cert(ca, hosts)
    folder = directory or Path(tempfile.mkdtemp(prefix="paved-webhook-"))
    paths = {"ca.crt": ca.cert_pem, "tls.crt": cert, "tls.key": key}
    for name, data in paths.items():
        write_private(folder / name, data)  # created 0600: the key is never readable by others, even briefly
    return dataclasses.replace(options, certfile=str(folder / "tls.crt"), keyfile=str(folder / "tls.key"),
                               cafile=str(folder / "ca.crt"))


def register_configuration(configuration: Mapping[str, Any]) -> None:
    """Server-side apply the ValidatingWebhookConfiguration (blocking; run it in a thread)."""
    server_side_apply(configuration, CONFIGURATION_INFO)  # a built-in kind: no discovery needed


class PavedWebhookServer(kopf.WebhookServer):
    """Kopf's TLS webhook server that also (re)writes Paved's ValidatingWebhookConfiguration
    every time the server (re)starts with a client config (new port or certificate)."""

    def __init__(self, options: WebhookOptions) -> None:
        super().__init__(
            addr=options.address, port=options.port or None, host=options.host,
            certfile=options.certfile, pkeyfile=options.keyfile, cafile=options.cafile,
        )
        self.options = options

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:  # type: ignore[override]
        async for client_config in super().__call__(fn):
            if self.options.register:
                configuration = webhook_configuration(
                    client_config, failure_policy=self.options.failure_policy,
                    timeout_seconds=self.options.timeout_seconds, service=self.options.service,
                )
                try:
                    await asyncio.to_thread(register_configuration, configuration)
                    log.info("admission webhook %s registered (failurePolicy %s, timeout %ss)", CONFIGURATION_NAME,
                             self.options.failure_policy, self.options.timeout_seconds)
                except Exception as error:  # noqa: BLE001 - serving must go on; the audit still reports
                    log.error("cannot register the admission webhook %s: %s", CONFIGURATION_NAME, describe(error))
            yield client_config


# --------------------------------------------------------------------------- Kopf handlers


_executor = concurrent.futures.ThreadPoolExecutor(max_workers=ADMISSION_WORKERS, thread_name_prefix="paved-admission")


def _on_own_threads(fn: Callable[..., None]) -> Callable[..., Coroutine[Any, Any, None]]:
    """`fn` as an async Kopf handler that runs it on the webhook's own threads.

    Kopf runs a synchronous handler in `settings.execution.executor`, the pool every
    reconcile shares (runtime.MAX_WORKERS threads, FIFO): behind a backlog of reconciles
    blocked on API-server or cloud calls, an admission request waited there past the
    webhook's 5 s timeout (bench/bench_policy.py, "under a reconcile backlog"). Kopf awaits an
    async handler on its event loop instead; the blocking work (a Namespace read on a cache
    miss) still runs in a thread, one of `_executor`'s. No `__wrapped__`: Kopf would follow it
    and treat the handler as synchronous again.
    """

    async def handler(**kwargs: Any) -> None:
        call = functools.partial(contextvars.copy_context().run, fn, **kwargs)  # as Kopf does for sync handlers
        await asyncio.get_running_loop().run_in_executor(_executor, call)

    handler.__name__ = handler.__qualname__ = fn.__name__
    return handler


def _deny(review: Review, warnings: list[str]) -> None:
    warnings.extend(review.warnings)
    if not review.allowed:
        raise kopf.AdmissionError(review.message, code=DENIED_CODE)


def _validate_intent(
    body: kopf.Body, old: kopf.Body | None, operation: str | None, warnings: list[str], memo: kopf.Memo,
    composition_index: kopf.Index, policy_index: kopf.Index, exception_index: kopf.Index, **_: Any,
) -> None:
    namespace = (body.get("metadata") or {}).get("namespace")
    if not _compose.in_scope(namespace, memo):
        return
    namespace_object = policy_handlers.namespace_object(namespace)
    review = review_intent(
        operation, body, old,
        policy_handlers.compiled_policies(policy_index),
        _compose.compositions_from(composition_index),
        namespace_object,
        policy_handlers.exceptions_for(namespace, namespace_object, exception_index, memo),
        now=datetime.now(timezone.utc),
    )
    _deny(review, warnings)


def _validate_policy(body: kopf.Body, operation: str | None, warnings: list[str], **_: Any) -> None:
    if operation in ("CREATE", "UPDATE"):
        _deny(review_policy(body), warnings)


def _validate_exception(body: kopf.Body, operation: str | None, warnings: list[str], memo: kopf.Memo, **_: Any) -> None:
    if operation not in ("CREATE", "UPDATE") or spec_unchanged(operation, body, None):
        return
    namespace = (body.get("metadata") or {}).get("namespace")
    _deny(review_exception(body, policy_handlers.namespace_object(namespace), policy_handlers.allowed_exception_namespaces(memo)),
          warnings)


def _register(webhooks: Sequence[Webhook]) -> None:
    functions: dict[str, Callable[..., None]] = {
        "validate-intents": _validate_intent, "validate-intentpolicies": _validate_policy,
        "validate-policyexceptions": _validate_exception,
    }
    for webhook in webhooks:
        handler = _on_own_threads(functions[webhook.id])
        for plural in webhook.plurals:
            kopf.on.validate(GROUP, VERSION, plural, id=webhook.id, operations=["CREATE", "UPDATE"])(handler)


_register(WEBHOOKS)
