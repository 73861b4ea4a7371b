"""Certificates and kubeconfigs for the local control plane (and for test webhooks).

Everything is generated locally with `cryptography`: one CA per state dir that signs the
serving certificates (etcd, API server, controller-manager, scheduler) and the client
certificates each component authenticates with, plus the key pair that signs ServiceAccount
tokens. Keys are ECDSA P-256: as strong as needed for loopback and fast to generate.

Private keys and kubeconfigs are written with mode 0600 and never logged.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CertificateAuthority",
    "DevPKI",
    "ensure_pki",
    "issue_client_cert",
    "issue_serving_cert",
    "write_kubeconfig",
]

_VALIDITY = datetime.timedelta(days=3650)
_BACKDATE = datetime.timedelta(minutes=5)  # tolerate small clock skew between processes
_PRIVATE = 0o600

# Names the API server answers to inside and outside the cluster.
API_SERVER_HOSTS = (
    "127.0.0.1",
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class CertificateAuthority:
    """A signing certificate and its key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, common_name: str = "paved-dev-ca") -> CertificateAuthority:
        """A new self-signed CA, valid for ten years."""
        key = _new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        cert = (
            _builder(name, name, key.public_key(), ca=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert=cert, key=key)

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
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, *, ca: bool
) -> x509.CertificateBuilder:
    """What CA and leaf certificates share: names, key, serial, ten years' validity, usages."""
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _VALIDITY)
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
) -> tuple[bytes, bytes]:
    key = _new_key()
    builder = (
        _builder(subject, ca.cert.subject, key.public_key(), ca=False)
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
    return _leaf(ca, subject, usages, [_san(h) for h in hosts])


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


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_kubeconfig(
    path: Path,
    server: str,
    ca_pem: bytes,
    user: str,
    *,
    cert_pem: bytes | None = None,
    key_pem: bytes | None = None,
    token: str | None = None,
    cluster: str = "paved-dev",
    namespace: str | None = None,
) -> Path:
    """Write a self-contained kubeconfig (credentials embedded) with mode 0600.

    Exactly one of a client certificate (``cert_pem`` + ``key_pem``) or a bearer ``token``.
    """
    if (token is None) == (cert_pem is None or key_pem is None):
        raise ValueError("give either cert_pem and key_pem, or token")
    credentials: dict[str, str] = (
        {"token": token}
        if token is not None
        else {
            "client-certificate-data": _b64(cert_pem or b""),
            "client-key-data": _b64(key_pem or b""),
        }
    )
    context: dict[str, str] = {"cluster": cluster, "user": user}
    if namespace:
        context["namespace"] = namespace
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)},
            }
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": cluster, "context": context}],
        "current-context": cluster,
        "preferences": {},
    }
    write_private(path, yaml.safe_dump(config, sort_keys=False).encode())
    return path


@dataclass(frozen=True)
class DevPKI:
    """Paths of every certificate and key of one control plane (files under ``root``)."""

    root: Path

    def cert(self, name: str) -> Path:
        return self.root / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.root / f"{name}.key"

    @property
    def ca_cert(self) -> Path:
        return self.cert("ca")

    @property
    def sa_public_key(self) -> Path:
        return self.root / "sa.pub"

    @property
    def sa_private_key(self) -> Path:
        return self.root / "sa.key"


# name -> (common name, organisations) of the client certificates components use.
CLIENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "admin": ("paved-dev-admin", ("system:masters",)),
    "apiserver-etcd-client": ("kube-apiserver-etcd-client", ()),
    "controller-manager": ("system:kube-controller-manager", ()),
    "scheduler": ("system:kube-scheduler", ()),
    "kwok": ("paved-dev:kwok-controller", ()),
    # The API server's identity towards aggregated API servers (front proxy / request header).
    "front-proxy-client": ("front-proxy-client", ()),
}
KWOK_USER = CLIENTS["kwok"][0]

# name -> hosts of the serving certificates.
SERVERS: dict[str, tuple[str, ...]] = {
    "apiserver": API_SERVER_HOSTS,
    "etcd": ("127.0.0.1", "localhost"),
    "components": ("127.0.0.1", "localhost"),  # controller-manager and scheduler endpoints
}


def ensure_pki(root: Path, extra_api_hosts: Sequence[str] = ()) -> DevPKI:
    """Create the PKI under ``root`` unless it is already complete; return its paths.

    Reusing an existing PKI keeps kubeconfigs handed out earlier valid across restarts.
    """
    pki = DevPKI(root)
    expected = [pki.ca_cert, pki.key("ca"), pki.sa_public_key, pki.sa_private_key]
    expected += [pki.cert(n) for n in (*CLIENTS, *SERVERS)]
    if all(path.is_file() for path in expected):
        return pki
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    ca = CertificateAuthority.create()
    write_private(pki.key("ca"), ca.key_pem)
    for name, hosts in SERVERS.items():
        all_hosts = (*hosts, *extra_api_hosts) if name == "apiserver" else hosts
        _write_pair(pki, name, issue_serving_cert(ca, all_hosts, client_auth=name == "etcd"))
    for name, (common_name, organizations) in CLIENTS.items():
        _write_pair(pki, name, issue_client_cert(ca, common_name, organizations))
    sa_key = _new_key()
    write_private(pki.sa_private_key, _key_pem(sa_key))
    pki.sa_public_key.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    # The CA certificate last: its presence marks the PKI as complete.
    pki.ca_cert.write_bytes(ca.cert_pem)
    return pki


def _write_pair(pki: DevPKI, name: str, pair: tuple[bytes, bytes]) -> None:
    cert_pem, key_pem = pair
    write_private(pki.key(name), key_pem)
    pki.cert(name).write_bytes(cert_pem)
