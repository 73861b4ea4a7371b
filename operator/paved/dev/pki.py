"""Certificates and kubeconfigs for the local control plane.

Everything is generated locally (paved.pki): one CA per state dir that signs the
serving certificates (etcd, API server, controller-manager, scheduler) and the client
certificates each component authenticates with, plus the key pair that signs ServiceAccount
tokens. Keys are ECDSA P-256: as strong as needed for loopback and fast to generate.

Private keys and kubeconfigs are written with mode 0600 and never logged.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from paved.pki import CertificateAuthority, issue_client_cert, issue_serving_cert, signing_key_pair, write_private

__all__ = [
    "CertificateAuthority",
    "DevPKI",
    "ensure_pki",
    "issue_client_cert",
    "issue_serving_cert",
    "write_kubeconfig",
]


# Names the API server answers to inside and outside the cluster.
API_SERVER_HOSTS = (
    "127.0.0.1",
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


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
    sa_private, sa_public = signing_key_pair()
    write_private(pki.sa_private_key, sa_private)
    pki.sa_public_key.write_bytes(sa_public)
    # The CA certificate last: its presence marks the PKI as complete.
    pki.ca_cert.write_bytes(ca.cert_pem)
    return pki


def _write_pair(pki: DevPKI, name: str, pair: tuple[bytes, bytes]) -> None:
    cert_pem, key_pem = pair
    write_private(pki.key(name), key_pem)
    pki.cert(name).write_bytes(cert_pem)
