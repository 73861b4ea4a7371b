"""The write fence (paved.fence) and the webhook certificate's life (paved.runtime.webhook), pure parts."""

from __future__ import annotations

import datetime

from cryptography import x509

from paved.fence import WriteFence
from paved.runtime import webhook
from paved.runtime.leadership import LeaseTimings

HOSTS = ["paved-webhook.paved-system.svc", "127.0.0.1"]
NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_unarmed_fence_permits_everything() -> None:
    assert WriteFence().permits()


def test_an_armed_fence_permits_only_until_its_deadline() -> None:
    clock = Clock()
    fence = WriteFence(clock)
    fence.arm()
    assert not fence.permits()
    fence.open_until(clock.now + 10)
    assert fence.permits()
    clock.now += 9.9
    assert fence.permits()
    clock.now += 0.2  # a process frozen past the deadline wakes with the fence shut
    assert not fence.permits()
    fence.open_until(clock.now + 10)
    fence.close()
    assert not fence.permits()


def test_lease_timings_are_checked_as_client_go_checks_them() -> None:
    assert LeaseTimings().problems() == []
    assert LeaseTimings(10, 10.0, 2.0).problems()  # no margin for clock drift
    assert LeaseTimings(15, 2.0, 2.0).problems()  # no room for a retry
    assert LeaseTimings(15, 10.0, 0.5).problems()


def cert_of(certificate: webhook.ServingCertificate) -> x509.Certificate:
    return x509.load_pem_x509_certificate(certificate.cert)


def cas_in(bundle: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(bundle)


def test_a_new_certificate_is_made_once_and_kept() -> None:
    planned = webhook.plan_certificate(None, HOSTS, NOW)
    assert planned is not None and planned[0] == "created"
    certificate = planned[1]
    assert webhook.ServingCertificate.from_secret({"data": certificate.secret_data()}) == certificate
    assert cas_in(certificate.ca_bundle) == cas_in(certificate.ca_cert)
    now = datetime.datetime.now(datetime.UTC)
    assert webhook.plan_certificate(certificate, HOSTS, now) is None  # no write at every start
    assert webhook.plan_certificate(certificate, HOSTS, now + datetime.timedelta(days=300)) is None


def test_the_serving_certificate_is_renewed_from_the_same_ca_well_before_expiry() -> None:
    now = datetime.datetime.now(datetime.UTC)
    _, certificate = webhook.plan_certificate(None, HOSTS, now)  # type: ignore[misc]
    later = now + webhook.CERT_VALIDITY - webhook.RENEW_CERT_BEFORE + datetime.timedelta(days=1)
    planned = webhook.plan_certificate(certificate, HOSTS, later)
    assert planned is not None and planned[0] == "serving certificate renewed"
    renewed = planned[1]
    assert renewed.ca_cert == certificate.ca_cert and renewed.ca_bundle == certificate.ca_bundle  # no caBundle write
    assert cert_of(renewed).serial_number != cert_of(certificate).serial_number  # a new certificate (issued now)
    assert cert_of(renewed).issuer == x509.load_pem_x509_certificate(certificate.ca_cert).subject


def test_new_names_get_a_new_serving_certificate() -> None:
    now = datetime.datetime.now(datetime.UTC)
    _, certificate = webhook.plan_certificate(None, HOSTS, now)  # type: ignore[misc]
    planned = webhook.plan_certificate(certificate, [*HOSTS, "paved.example"], now)
    assert planned is not None and planned[0] == "serving certificate renewed"


def test_the_ca_is_replaced_a_year_ahead_and_the_old_one_stays_trusted_until_it_expires() -> None:
    now = datetime.datetime.now(datetime.UTC)
    _, first = webhook.plan_certificate(None, HOSTS, now)  # type: ignore[misc]
    near_end = now + webhook.CA_VALIDITY - webhook.RENEW_CA_BEFORE + datetime.timedelta(days=1)
    planned = webhook.plan_certificate(first, HOSTS, near_end)
    assert planned is not None and planned[0] == "certificate authority replaced before it expires"
    second = planned[1]
    old_ca = x509.load_pem_x509_certificate(first.ca_cert)
    assert second.ca_cert != first.ca_cert and old_ca in cas_in(second.ca_bundle)  # both trusted
    after_old_expiry = old_ca.not_valid_after_utc + datetime.timedelta(days=1)
    dropped = webhook.plan_certificate(second, HOSTS, after_old_expiry)
    assert dropped is not None and old_ca not in cas_in(dropped[1].ca_bundle)


def test_the_configuration_is_written_only_when_it_differs() -> None:
    desired = webhook.webhook_configuration({"url": "https://127.0.0.1:9443", "caBundle": "Q0E="},
                                            [webhook.Webhook("validate-intents", ("databaseintents",))])
    live = {"webhooks": [{**hook, "namespaceSelector": {}, "objectSelector": {}} for hook in desired["webhooks"]]}
    assert not webhook._differs(live, desired)  # noqa: SLF001 - fields the API server defaults do not count
    changed = {"webhooks": [{**hook, "clientConfig": {**hook["clientConfig"], "caBundle": "T0xE"}} for hook in desired["webhooks"]]}
    assert webhook._differs(changed, desired)  # noqa: SLF001
    assert webhook._differs(None, desired)  # noqa: SLF001
