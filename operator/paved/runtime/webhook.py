"""The admission webhook's plumbing: its configuration, its one shared certificate, its server.

Every replica serves the webhook (paved.handlers.admission judges, from the replica's own
Kopf indexes), so an admission answer never depends on who leads. What the replicas share:

- **One serving certificate**, in the Secret `paved-webhook-tls` of the operator's namespace
  (`tls.crt`, `tls.key`, the CA's `ca.crt`/`ca.key`, and `ca-bundle.crt`, what the API
  server trusts). Only the leader writes it: created once; the serving certificate renewed
  (from the same CA) when less than RENEW_CERT_BEFORE of it is left or its names changed; the
  CA itself replaced when less than RENEW_CA_BEFORE is left, the old CA staying in the
  bundle until it expires, so replicas still serving the old certificate stay trusted.
  Every replica reads the Secret every few seconds, writes it to private files, and Kopf's
  server picks changed files up (`file_check_interval`). A replica is ready (/readyz) once
  it serves with that certificate.
- **The ValidatingWebhookConfiguration** `paved.dev`, written by the leader only when it
  differs from what it should be: the caBundle changes once per CA, not at every start.

The alternative is cert-manager: mount its Certificate's Secret and pass `--webhook-cert`,
`--webhook-key`, and either `--no-webhook-registration` with the configuration deployed
by other means and cert-manager's CA injector (annotation `cert-manager.io/inject-ca-from`)
filling the caBundle, or `--webhook-ca` for Paved to write it (docs/guardrails.md).

The configuration: failurePolicy Fail and timeout 5 s by default (docs/guardrails.md);
CREATE and UPDATE of the paved.dev intent kinds, IntentPolicy and PolicyException only,
and `matchConditions` (CEL, evaluated by the API server) keep every request that changes no
`spec` away from the webhook: metadata-only updates (finalizer removal, labels, Kopf's
annotations), and so with every replica down an administrator can still unstick an object.
Status subresources and DELETE are never matched.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import logging
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kopf
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from paved import GROUP, VERSION
from paved.errors import located
from paved.handlers.admission import Webhook
from paved.kube import apply as kube
from paved.kube.client import ApiError, ResourceInfo, request, resource_info
from paved.pki import CertificateAuthority, issue_serving_cert, write_private

log = logging.getLogger(__name__)

CONFIGURATION_NAME = "paved.dev"
CONFIGURATION_INFO = ResourceInfo("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration",
                                  "validatingwebhookconfigurations", namespaced=False)
DEFAULT_FAILURE_POLICY = "Fail"
DEFAULT_TIMEOUT_SECONDS = 5
SECRET_NAME = "paved-webhook-tls"  # noqa: S105 - a name, not a secret
CA_VALIDITY = datetime.timedelta(days=5 * 365)
CERT_VALIDITY = datetime.timedelta(days=365)
RENEW_CA_BEFORE = datetime.timedelta(days=365)
RENEW_CERT_BEFORE = datetime.timedelta(days=30)
POLL_SECONDS = 10.0  # how often a replica re-reads the Secret (and Kopf its files)
POLL_WHILE_MISSING = 1.0

# Only requests that change `spec` (or create an object) reach the webhook. CEL's `||` is
# true when either side is, even if the other side errs (oldObject is null on CREATE).
SPEC_CHANGES = ("request.operation == 'CREATE' || has(object.spec) != has(oldObject.spec) || "
                "(has(object.spec) && object.spec != oldObject.spec)")


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class WebhookOptions:
    """`paved run` webhook options: where to listen, how the API server reaches us, TLS, policy."""

    port: int = 0  # 0: any free port (a single replica in URL mode: the URL names the port used)
    address: str = "0.0.0.0"  # noqa: S104 - in a pod the API server calls from outside
    host: str | None = None  # hostname/IP in the webhook URL (default: derived from address)
    service: tuple[str, str, int] | None = None  # (namespace, name, port): in-cluster Service instead of a URL
    certfile: str | None = None  # given (e.g. by cert-manager): no shared Secret
    keyfile: str | None = None
    cafile: str | None = None
    failure_policy: str = DEFAULT_FAILURE_POLICY
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    register: bool = True  # the leader writes the ValidatingWebhookConfiguration

    @property
    def shared_certificate(self) -> bool:
        return not (self.certfile and self.keyfile)

    def hosts(self) -> list[str]:
        """The names the serving certificate is for (the same on every replica)."""
        hosts = [self.host] if self.host else []
        if self.service is not None:
            namespace, name, _ = self.service
            hosts += [f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"]
        if self.address not in ("0.0.0.0", "::", ""):  # noqa: S104
            hosts.append(self.address)
        hosts += ["127.0.0.1", "localhost"]
        return list(dict.fromkeys(hosts))


def parse_service(text: str | None) -> tuple[str, str, int] | None:
    """`namespace/name[:port]` -> (namespace, name, port); port defaults to 443."""
    if not text:
        return None
    ref, _, port = text.partition(":")
    namespace, _, name = ref.partition("/")
    if not namespace or not name:
        raise ValueError(f"--webhook-service must be NAMESPACE/NAME[:PORT], got {text!r}")
    return namespace, name, int(port or 443)


# --------------------------------------------------------------------------- the configuration


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
    webhooks: Sequence[Webhook],
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
                "matchConditions": [{"name": "changes-spec", "expression": SPEC_CHANGES}],
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
            for webhook in webhooks
        ],
    }


def _differs(live: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """Whether the live configuration lacks anything of `desired` (fields the API server
    defaults, such as namespaceSelector, do not count)."""
    if live is None:
        return True
    live_hooks = {hook.get("name"): hook for hook in live.get("webhooks") or []}
    if set(live_hooks) != {hook["name"] for hook in desired["webhooks"]}:
        return True
    return any(live_hooks[hook["name"]].get(key) != value for hook in desired["webhooks"] for key, value in hook.items())


def ensure_configuration(configuration: Mapping[str, Any]) -> bool:
    """Write the configuration when it differs from the live one (the leader only); True when written."""
    live = kube.get(CONFIGURATION_INFO.api_version, CONFIGURATION_INFO.kind, CONFIGURATION_NAME)
    if not _differs(live, configuration):
        return False
    kube.server_side_apply(configuration, CONFIGURATION_INFO)
    log.info("admission webhook configuration %s written", CONFIGURATION_NAME)
    return True


# --------------------------------------------------------------------------- the certificate


@dataclass(frozen=True)
class ServingCertificate:
    """What the Secret holds (PEM)."""

    ca_cert: bytes
    ca_key: bytes
    ca_bundle: bytes  # the current CA, and the previous one until it expires
    cert: bytes
    key: bytes

    KEYS = {"ca.crt": "ca_cert", "ca.key": "ca_key", "ca-bundle.crt": "ca_bundle", "tls.crt": "cert", "tls.key": "key"}

    @classmethod
    def from_secret(cls, secret: Mapping[str, Any] | None) -> ServingCertificate | None:
        data = (secret or {}).get("data") or {}
        if any(key not in data for key in cls.KEYS):
            return None
        return cls(**{attribute: base64.b64decode(data[key]) for key, attribute in cls.KEYS.items()})

    def secret_data(self) -> dict[str, str]:
        return {key: base64.b64encode(getattr(self, attribute)).decode() for key, attribute in self.KEYS.items()}


def _certificates(bundle: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(bundle) if bundle.strip() else []


def _names(cert: x509.Certificate) -> set[str]:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(name) for name in sans.get_values_for_type(x509.DNSName)} | \
        {str(address) for address in sans.get_values_for_type(x509.IPAddress)}


def plan_certificate(current: ServingCertificate | None, hosts: Sequence[str],
                     now: datetime.datetime) -> tuple[str, ServingCertificate] | None:
    """What the leader must write, and why (None: nothing). Pure but for key generation."""
    if current is None:
        return "created", _issue(CertificateAuthority.create("paved-webhook-ca", validity=CA_VALIDITY), hosts, bundle=())
    ca = CertificateAuthority.from_pem(current.ca_cert, current.ca_key)
    if ca.cert.not_valid_after_utc - now < RENEW_CA_BEFORE:
        new_ca = CertificateAuthority.create("paved-webhook-ca", validity=CA_VALIDITY)
        return "certificate authority replaced before it expires", _issue(new_ca, hosts, bundle=(ca.cert,))
    cert = x509.load_pem_x509_certificate(current.cert)
    still_trusted = tuple(c for c in _certificates(current.ca_bundle) if c != ca.cert and c.not_valid_after_utc > now)
    if cert.not_valid_after_utc - now < RENEW_CERT_BEFORE or _names(cert) != set(hosts) or cert.issuer != ca.cert.subject:
        return "serving certificate renewed", _issue(ca, hosts, bundle=still_trusted)
    if len(still_trusted) + 1 != len(_certificates(current.ca_bundle)):
        return "expired certificate authority dropped", ServingCertificate(
            current.ca_cert, current.ca_key, _bundle(ca, still_trusted), current.cert, current.key)
    return None


def _bundle(ca: CertificateAuthority, previous: Sequence[x509.Certificate]) -> bytes:
    return ca.cert_pem + b"".join(c.public_bytes(serialization.Encoding.PEM) for c in previous)


def _issue(ca: CertificateAuthority, hosts: Sequence[str], *, bundle: Sequence[x509.Certificate]) -> ServingCertificate:
    cert, key = issue_serving_cert(ca, hosts, validity=CERT_VALIDITY)
    return ServingCertificate(ca.cert_pem, ca.key_pem, _bundle(ca, bundle), cert, key)


def read_certificate(namespace: str) -> tuple[ServingCertificate | None, dict[str, Any] | None]:
    secret = kube.get("v1", "Secret", SECRET_NAME, namespace)
    return ServingCertificate.from_secret(secret), secret


def ensure_certificate(namespace: str, hosts: Sequence[str], now: datetime.datetime) -> ServingCertificate:
    """The leader's part: create or renew the shared certificate; returns what the Secret holds."""
    current, secret = read_certificate(namespace)
    planned = plan_certificate(current, hosts, now)
    if planned is None:
        assert current is not None  # noqa: S101
        return current
    why, wanted = planned
    if secret is None:
        body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": wanted.secret_data(),
                "metadata": {"name": SECRET_NAME, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": "paved"}}}
        request("POST", resource_info("v1", "Secret").path(namespace=namespace), operation="create", body=body)
    else:  # guarded by the version read: a concurrent writer makes this fail, not overwrite
        kube.merge_patch(secret, {"data": wanted.secret_data()})
    log.info("admission webhook certificate: %s (Secret %s/%s)", why, namespace, SECRET_NAME)
    return wanted


@dataclass
class CertificateFiles:
    """This replica's copy of the shared certificate, as files Kopf's server loads (0600),
    refreshed from the Secret every POLL_SECONDS by a thread of its own."""

    namespace: str
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="paved-webhook-")))
    available: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _loaded: ServingCertificate | None = None

    @property
    def certfile(self) -> str:
        return str(self.folder / "tls.crt")

    @property
    def keyfile(self) -> str:
        return str(self.folder / "tls.key")

    @property
    def cafile(self) -> str:
        return str(self.folder / "ca-bundle.crt")

    def start(self) -> None:
        threading.Thread(target=self._loop, name="paved-webhook-cert", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def refresh(self) -> None:
        current, _ = read_certificate(self.namespace)
        if current is None or current == self._loaded:
            return
        # The key before the certificate: Kopf reloads on any change, and a new certificate
        # must never be read together with the old key.
        for name, data in (("tls.key", current.key), ("tls.crt", current.cert), ("ca-bundle.crt", current.ca_bundle)):
            write_private(self.folder / name, data)
        first = self._loaded is None
        self._loaded = current
        self.available.set()
        log.info("admission webhook certificate %s from Secret %s/%s", "loaded" if first else "reloaded",
                 self.namespace, SECRET_NAME)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except (ApiError, OSError, ValueError) as error:
                log.warning("admission webhook certificate not read: %s", located(error))
            self._stop.wait(POLL_SECONDS if self.available.is_set() else POLL_WHILE_MISSING)


# --------------------------------------------------------------------------- the server


class PavedWebhookServer(kopf.WebhookServer):
    """Kopf's TLS webhook server, serving once the certificate is there; `serving` says so
    (readiness). It writes nothing: the configuration is the leader's (`ensure_configuration`)."""

    def __init__(self, options: WebhookOptions, files: CertificateFiles | None) -> None:
        certfile, keyfile, cafile = ((files.certfile, files.keyfile, files.cafile) if files is not None
                                     else (options.certfile, options.keyfile, options.cafile))
        super().__init__(addr=options.address, port=options.port or None, host=options.host, certfile=certfile,
                         pkeyfile=keyfile, cafile=cafile, file_check_interval=POLL_SECONDS)
        self.options = options
        self.files = files
        self.serving = threading.Event()
        self.client_config: dict[str, Any] | None = None  # url and caBundle as Kopf built them

    async def __call__(self, fn: Any) -> AsyncIterator[Any]:
        # A threading.Event set by the certificate thread: polled, an asyncio.Event cannot be set from there.
        while self.files is not None and not self.files.available.is_set():  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        try:
            async for client_config in super().__call__(fn):
                self.client_config = dict(client_config)
                self.serving.set()
                log.info("admission webhook serving at %s", client_config.get("url"))
                yield client_config
        finally:
            self.serving.clear()


def leader_duties(options: WebhookOptions, server: PavedWebhookServer, webhooks: Sequence[Webhook], namespace: str,
                  *, now: Callable[[], datetime.datetime]) -> None:
    """What the leader keeps true about the webhook: the shared certificate, then the
    configuration (its caBundle from the certificate's bundle)."""
    if options.shared_certificate:
        certificate = ensure_certificate(namespace, options.hosts(), now())
        ca_bundle = certificate.ca_bundle
    elif options.cafile or options.certfile:
        ca_bundle = Path(options.cafile or options.certfile or "").read_bytes()
    else:
        ca_bundle = b""
    if not options.register:
        return
    url = (server.client_config or {}).get("url")
    if options.service is None and not url:
        return  # URL mode: this replica's server has not started yet; the next round writes it
    client_config = {"url": url, "caBundle": base64.b64encode(ca_bundle).decode() if ca_bundle else None}
    ensure_configuration(webhook_configuration(client_config, webhooks, failure_policy=options.failure_policy,
                                               timeout_seconds=options.timeout_seconds, service=options.service))
