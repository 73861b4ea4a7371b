"""Certificates with `cryptography`: a CA, serving and client certificates signed by it.

Used by the local control plane (paved.dev.pki) and by the admission webhook's shared serving
certificate (paved.runtime.webhook). Keys are ECDSA P-256. Private keys are written with mode
0600 and never logged.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=3650)
_BACKDATE = datetime.timedelta(minutes=5)  # tolerate small clock skew between processes
_PRIVATE = 0o600


@dataclass(frozen=True)
class CertificateAuthority:
    """A signing certificate and its key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, common_name: str = "paved-dev-ca", *, validity: datetime.timedelta = VALIDITY) -> CertificateAuthority:
        """A new self-signed CA (valid for ten years unless told otherwise)."""
        key = _new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        cert = (
            _builder(name, name, key.public_key(), ca=True, validity=validity)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert=cert, key=key)

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes) -> CertificateAuthority:
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the CA key is not an ECDSA key")
        return cls(cert=x509.load_pem_x509_certificate(cert_pem), key=key)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return _key_pem(self.key)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, *, ca: bool,
    validity: datetime.timedelta = VALIDITY,
) -> x509.CertificateBuilder:
    """What CA and leaf certificates share: names, key, serial, validity, usages."""
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )


def _leaf(
    ca: CertificateAuthority,
    subject: x509.Name,
    usages: Sequence[x509.ObjectIdentifier],
    sans: Sequence[x509.GeneralName] = (),
    validity: datetime.timedelta = VALIDITY,
) -> tuple[bytes, bytes]:
    key = _new_key()
    builder = (
        _builder(subject, ca.cert.subject, key.public_key(), ca=False, validity=validity)
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def issue_serving_cert(
    ca: CertificateAuthority,
    hosts: Sequence[str],
    *,
    client_auth: bool = False,
    validity: datetime.timedelta = VALIDITY,
) -> tuple[bytes, bytes]:
    """A TLS server certificate for ``hosts`` (DNS names or IP addresses), signed by ``ca``.

    Returns ``(cert_pem, key_pem)``. Used for the control plane's own endpoints and for
    anything the API server must call back, such as the operator's admission webhook.
    ``client_auth`` also allows it as a client certificate (etcd dials itself with it).
    """
    if not hosts:
        raise ValueError("a serving certificate needs at least one host")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    usages = [ExtendedKeyUsageOID.SERVER_AUTH]
    if client_auth:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    return _leaf(ca, subject, usages, [_san(h) for h in hosts], validity)


def issue_client_cert(
    ca: CertificateAuthority,
    common_name: str,
    organizations: Sequence[str] = (),
) -> tuple[bytes, bytes]:
    """A TLS client certificate; the API server reads CN as user name and O as groups."""
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return _leaf(ca, x509.Name(attributes), [ExtendedKeyUsageOID.CLIENT_AUTH])


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` readable by the owner only, replacing any old file atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _PRIVATE)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def signing_key_pair() -> tuple[bytes, bytes]:
    """A new key pair as (private key PEM, public key PEM), e.g. to sign ServiceAccount tokens."""
    key = _new_key()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return _key_pem(key), public
