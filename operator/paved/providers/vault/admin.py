"""`vault-policy` and `vault-k8s-role`: Vault/OpenBao administration for AgentIdentity (hvac).

Operator settings (environment of `paved run`):
- PAVED_VAULT_ADDR     https://vault.example:8200 (required once an identity declares secrets)
- PAVED_VAULT_CACERT   CA bundle that signed the server's certificate (default: system CAs)
- PAVED_VAULT_TOKEN    the operator's token, or PAVED_VAULT_TOKEN_FILE naming a file holding it
                       (re-read on every new client, so a rotated file is picked up). The token
                       holds exactly `operator_policy()` (below; `paved dev` and the tests create
                       the policy and a token with it, never run the operator with root):
                       sys/policies/acl/paved-* (create, read, update, delete) but not its own
                       policy, auth/<mount>/role/paved-* (create, read, update, delete) with only
                       the role fields Paved writes, auth/token/accessors (list, sudo),
                       auth/token/lookup-accessor and auth/token/revoke-accessor (update).
                       Vault cannot bound what a written policy grants or which policies a role
                       names: whoever holds this token can write a paved-* policy reaching any
                       path and a role handing it out, so guard the token like root.

Revocation: deleting the role stops new logins; deleting the policy makes every token that
still names it powerless at once (Vault resolves policies per request); then the tokens
issued by logins to the role are revoked by accessor (auth/token/accessors, each looked up:
path auth/<mount>/login and meta.role = the role). `revoke-prefix auth/<mount>/login` is not
used: it would revoke every identity's tokens on that mount, not only this one's.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable, TypeVar

import hvac
import hvac.exceptions as vault_errors
import requests

from paved import fence
from paved.metrics import count_call
from paved.providers.base import DeletionResult, Observation, Owner, ProviderError
from paved.providers.vault import error_text
from paved.render.types import RenderedResource

log = logging.getLogger(__name__)
T = TypeVar("T")

ADDR_ENV, CACERT_ENV, TOKEN_ENV, TOKEN_FILE_ENV = "PAVED_VAULT_ADDR", "PAVED_VAULT_CACERT", "PAVED_VAULT_TOKEN", "PAVED_VAULT_TOKEN_FILE"
TIMEOUT = 10
ROLE_FIELDS = ("bound_service_account_names", "bound_service_account_namespaces", "token_ttl", "token_max_ttl", "audience", "token_policies")

OPERATOR_POLICY_NAME = "paved-operator"


def operator_policy(mounts: tuple[str, ...] = ("kubernetes",)) -> str:
    """The Vault policy of the operator's token (HCL), for the Kubernetes-auth `mounts` the
    compositions use (parameters.vault.authMount). Nothing else: no secret paths, no sys/ beyond
    ACL policies, no other auth method.

    Roles may carry exactly the fields the provider writes (ROLE_FIELDS), so no periodic or
    unbounded tokens. Which policies a role names cannot be bounded here: Vault matches
    allowed_parameters against a list value as a whole (a glob never matches a list, and a
    comma-separated string "paved-a,other" would match paved-*), so it is not attempted."""
    fields = "".join(f'    "{name}" = []\n' for name in ROLE_FIELDS)
    roles = "".join(f'''
# The Kubernetes-auth roles of identities (paved-<namespace>-<name>-<id>).
path "auth/{mount}/role/paved-*" {{
  capabilities = ["create", "read", "update", "delete"]
  allowed_parameters = {{
{fields}  }}
}}
''' for mount in mounts)
    return f'''# The ACL policies of identities: sys/policies/acl/paved-<namespace>-<name>-<id>.
path "sys/policies/acl/paved-*" {{
  capabilities = ["create", "read", "update", "delete"]
}}
# Not its own policy (the exact path is more specific than the glob, so it wins). A hurdle, not a
# boundary: whoever holds the token can write some paved-* policy reaching any path.
path "sys/policies/acl/{OPERATOR_POLICY_NAME}" {{
  capabilities = ["deny"]
}}
{roles}
# Revoking an expired identity's tokens: list the accessors, look each up, revoke by accessor.
path "auth/token/accessors" {{
  capabilities = ["list", "sudo"]
}}
path "auth/token/lookup-accessor" {{
  capabilities = ["update"]
}}
path "auth/token/revoke-accessor" {{
  capabilities = ["update"]
}}
'''


_lock = threading.Lock()
_client: hvac.Client | None = None


def settings_problem() -> str | None:
    if not os.environ.get(ADDR_ENV):
        return f"the operator has no Vault address: set {ADDR_ENV} (and {CACERT_ENV}, {TOKEN_ENV} or {TOKEN_FILE_ENV}) in its environment"
    if not os.environ.get(TOKEN_ENV) and not os.environ.get(TOKEN_FILE_ENV):
        return f"the operator has no Vault token: set {TOKEN_ENV} or {TOKEN_FILE_ENV}"
    return None


def client() -> hvac.Client:
    """The operator's admin client (one per process; hvac's session is shared by the handler threads)."""
    global _client
    with _lock:
        if _client is None:
            problem = settings_problem()
            if problem:
                raise ProviderError(problem, retryable=False)
            token = os.environ.get(TOKEN_ENV) or Path(os.environ[TOKEN_FILE_ENV]).read_text().strip()
            verify: str | bool = os.environ.get(CACERT_ENV) or True
            _client = hvac.Client(url=os.environ[ADDR_ENV], token=token, verify=verify, timeout=TIMEOUT)
        return _client


def reset_client() -> None:
    global _client
    with _lock:
        _client = None


def call(provider: str, operation: str, fn: Callable[[], T]) -> T:
    """One counted Vault call; errors become ProviderError (no secret values: paths and codes only)."""
    if not fence.WRITES.permits():
        raise ProviderError(f"vault {operation} not sent: {fence.WRITES.why_not()}", retryable=True)
    count_call(provider, operation)
    try:
        return fn()
    except vault_errors.Forbidden:
        raise ProviderError(f"vault {operation}: permission denied for the operator's token", retryable=False) from None
    except vault_errors.InvalidRequest as error:
        raise ProviderError(f"vault {operation}: invalid request: {error_text(error)}", retryable=False) from None
    except (vault_errors.VaultDown, vault_errors.InternalServerError, vault_errors.BadGateway, requests.RequestException) as error:
        raise ProviderError(f"vault {operation}: server unavailable ({type(error).__name__})", retryable=True) from None
    except vault_errors.VaultError as error:
        raise ProviderError(f"vault {operation}: {type(error).__name__}", retryable=True) from None
    except OSError as error:  # e.g. PAVED_VAULT_CACERT names no file, an unreadable token file, a socket error
        raise ProviderError(f"vault {operation}: {_os_problem(error)}", retryable=True) from None


def _os_problem(error: OSError) -> str:
    """What went wrong locally, naming settings and paths only (never the token or a response)."""
    cacert = os.environ.get(CACERT_ENV)
    if cacert and not Path(cacert).is_file():
        return f"{CACERT_ENV} names no readable file ({cacert})"
    token_file = os.environ.get(TOKEN_FILE_ENV)
    if token_file and not os.environ.get(TOKEN_ENV) and not Path(token_file).is_file():
        return f"{TOKEN_FILE_ENV} names no readable file ({token_file})"
    return f"cannot reach the server at {os.environ.get(ADDR_ENV)} ({type(error).__name__})"


def _read(provider: str, operation: str, path: str) -> dict[str, Any] | None:
    def read() -> dict[str, Any] | None:
        try:
            response = client().adapter.get(f"/v1/{path}")
        except vault_errors.InvalidPath:
            return None
        return response if isinstance(response, dict) else None

    return call(provider, operation, read)


class VaultPolicyProvider:
    """An ACL policy at sys/policies/acl/<name>; body: {name, policy (HCL)}."""

    name = "vault-policy"

    def observe(self, resource: RenderedResource, owner: Owner) -> Observation:
        name = resource.body["name"]
        found = _read(self.name, "read-policy", f"sys/policies/acl/{name}")
        if found is None:
            return Observation(exists=False, external_id=f"sys/policies/acl/{name}", message="policy not found")
        current = (found.get("data") or {}).get("policy", "")
        drift = [] if current.strip() == resource.body["policy"].strip() else ["policy"]
        return Observation(exists=True, ready=True, external_id=f"sys/policies/acl/{name}", drift=drift, outputs={"name": name})

    def apply(self, resource: RenderedResource, owner: Owner) -> Observation:
        name = resource.body["name"]
        call(self.name, "write-policy", lambda: client().sys.create_or_update_acl_policy(name=name, policy=resource.body["policy"]))
        return Observation(exists=True, ready=True, external_id=f"sys/policies/acl/{name}", outputs={"name": name}, changed=True)

    def delete(self, resource: RenderedResource, owner: Owner, policy: str) -> DeletionResult:
        name = resource.body["name"]
        call(self.name, "delete-policy", lambda: client().sys.delete_acl_policy(name=name))
        return DeletionResult(done=True, message=f"deleted policy {name}")


class VaultKubernetesRoleProvider:
    """A Kubernetes-auth role at auth/<mount_point>/role/<name>; body: the role's fields."""

    name = "vault-k8s-role"

    @staticmethod
    def _path(body: dict[str, Any]) -> str:
        return f"auth/{body['mount_point']}/role/{body['name']}"

    @staticmethod
    def _desired(body: dict[str, Any]) -> dict[str, Any]:
        return {key: body[key] for key in ROLE_FIELDS if key in body}

    def observe(self, resource: RenderedResource, owner: Owner) -> Observation:
        path = self._path(resource.body)
        found = _read(self.name, "read-role", path)
        if found is None:
            return Observation(exists=False, external_id=path, message="role not found")
        current = found.get("data") or {}
        drift = []
        for key, value in self._desired(resource.body).items():
            have = current.get(key)
            if key in ("token_ttl", "token_max_ttl"):
                value = _seconds(value)
            if (sorted(have or []) != sorted(value)) if isinstance(value, list) else have != value:
                drift.append(key)
        return Observation(exists=True, ready=True, external_id=path, drift=drift, outputs={"role": resource.body["name"]})

    def apply(self, resource: RenderedResource, owner: Owner) -> Observation:
        path = self._path(resource.body)
        call(self.name, "write-role", lambda: client().adapter.post(f"/v1/{path}", json=self._desired(resource.body)))
        return Observation(exists=True, ready=True, external_id=path, outputs={"role": resource.body["name"]}, changed=True)

    def delete(self, resource: RenderedResource, owner: Owner, policy: str) -> DeletionResult:
        body = resource.body
        path = self._path(body)
        call(self.name, "delete-role", lambda: client().adapter.delete(f"/v1/{path}"))
        revoked = revoke_role_tokens(self.name, body["mount_point"], body["name"])
        return DeletionResult(done=True, message=f"deleted {path}, revoked {revoked} token(s)")


def revoke_role_tokens(provider: str, mount: str, role: str) -> int:
    """Revoke every token issued by a login to auth/<mount> role `role`; returns how many."""
    listing = call(provider, "list-accessors", lambda: client().adapter.list("/v1/auth/token/accessors"))
    accessors = ((listing or {}).get("data") or {}).get("keys") or []
    revoked = 0
    for accessor in accessors:
        try:
            info = call(provider, "lookup-accessor", lambda: client().auth.token.lookup_accessor(accessor))
        except ProviderError:
            continue  # revoked or expired meanwhile
        data = (info or {}).get("data") or {}
        if str(data.get("path", "")).startswith(f"auth/{mount}/login") and (data.get("meta") or {}).get("role") == role:
            call(provider, "revoke-accessor", lambda: client().auth.token.revoke_accessor(accessor))
            revoked += 1
    if revoked:
        log.info("vault: revoked %d token(s) issued to auth/%s role %s", revoked, mount, role)
    return revoked


def _seconds(value: Any) -> Any:
    if isinstance(value, str):
        from paved.api.common import parse_duration

        return int(parse_duration(value, "token_ttl").total_seconds())
    return value

