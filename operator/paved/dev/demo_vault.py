"""The OpenBao the demo starts, so the ExternalSecretRef examples sync from a real Vault API.

The examples name the server a real cluster would use (`EXAMPLE_VAULT_SERVER`); the demo
points those stores at its own dev server on loopback instead and says so. What a platform
team would configure once (Kubernetes auth against the API server, a read policy and a
role per store, the example secret) is done here, the way an operator of Vault would do
it, never by Paved itself.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from paved.dev.controlplane import ControlPlane
from paved.dev.openbao import OpenBaoError, OpenBaoServer, configure_kubernetes_auth, start_openbao
from paved.dev.processes import is_alive, read_record, stop_all

EXAMPLE_VAULT_SERVER = "https://vault.vault.svc:8200"

# role -> (bound ServiceAccount namespace, name, readable KV v2 prefix); mirrors examples/03-external-secret.
_ROLES = {
    "orders": ("orders-app", "secrets-reader", "production/"),
    "paved-shared": ("paved-system", "paved-secrets", "teams/"),
}
_EXAMPLE_SECRETS = {"production/database": ("username", "orders")}


def start_demo_openbao(workdir: Path, plane: ControlPlane, log: Callable[[str], None]) -> OpenBaoServer | None:
    """A fresh dev server (its storage is in memory, so it is re-seeded on every demo run)."""
    stop_demo_openbao(workdir)
    try:
        server = start_openbao(workdir, die_with_parent=False)
    except OpenBaoError as error:
        log(f"OpenBao did not start, the Vault examples will not become Ready: {error}")
        return None
    vault = server.client()
    configure_kubernetes_auth(vault, plane)
    for role, (namespace, account, prefix) in _ROLES.items():
        policy = (
            f'path "secret/data/{prefix}*" {{ capabilities = ["read"] }}\n'
            f'path "secret/metadata/{prefix}*" {{ capabilities = ["read"] }}\n'
        )
        vault.sys.create_or_update_policy(name=f"demo-{role}", policy=policy)
        vault.auth.kubernetes.create_role(
            name=role,
            bound_service_account_names=[account],
            bound_service_account_namespaces=[namespace],
            policies=[f"demo-{role}"],
            ttl="15m",
            mount_point="kubernetes",
        )
    for path, (user_key, user) in _EXAMPLE_SECRETS.items():
        # A random password each run: the demo shows it arriving, never prints it.
        vault.secrets.kv.v2.create_or_update_secret(
            path=path, secret={user_key: user, "password": secrets.token_urlsafe(18)}, mount_point="secret"
        )
    log(f"OpenBao (Vault API) started at {server.addr}, Kubernetes auth against the control plane, example secrets written")
    return server


def point_stores_at(objects: list[dict[str, Any]], server: OpenBaoServer, log: Callable[[str], None]) -> None:
    """Stores that name `EXAMPLE_VAULT_SERVER` use the demo's server (with its CA) instead."""
    ca_bundle = Path(server.ca_cert).read_text()
    for obj in objects:
        if obj.get("kind") not in {"SecretStore", "ClusterSecretStore"}:
            continue
        vault = ((obj.get("spec") or {}).get("provider") or {}).get("vault")
        if vault and vault.get("server") == EXAMPLE_VAULT_SERVER:
            vault["server"] = server.addr
            vault["caBundle"] = ca_bundle
            log(f"{obj['kind']} {obj['metadata']['name']}: {EXAMPLE_VAULT_SERVER} -> {server.addr} (the demo's OpenBao)")


def stop_demo_openbao(workdir: Path) -> bool:
    """Stop the demo's OpenBao if it runs; True if it did."""
    record = read_record(workdir / "openbao.pid")
    if record is None or not is_alive(record):
        return False
    stop_all([record])
    return True
