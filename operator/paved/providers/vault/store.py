"""`vault` store provider: HashiCorp Vault / OpenBao KV v2 through hvac.

Cost model (what the bench measures): per cycle, one metadata read per distinct path
(`GET <mount>/metadata/<path>`: current_version, deletion state; no value travels), one data
read only per path whose version changed (`GET <mount>/data/<path>?version=N`), and at most
one login per store: the token from Kubernetes auth or AppRole is kept and reused until it
is near the end of its TTL (`RELOGIN_MARGIN`). KV v2 has no batch read, so "batched" here
means de-duplicated: one request per distinct path per cycle, however many refs read it.

If a policy grants `read` on `<mount>/data/...` but not on `<mount>/metadata/...` (common in
ESO setups), the version look-up falls back to a data read for that path, which yields the
version and the value in one request; the value is kept for the fetch that follows.

Every HTTP request (login included) is counted in
`paved_provider_api_calls_total{provider="vault", operation=...}` by a requests adapter on
the client's session, so the counts are real requests, retries included. Transient
failures (connection refused, 5xx, 429) are retried by tenacity, briefly: the engine's
cycle backoff is the long-term retry. A 403 on a read first re-logs in once per call (the
token may have been revoked or the server restarted) before it is reported as a
permission problem of that key.

Authentication (spec.provider.vault.auth, exactly one):
- kubernetes: a token of the named ServiceAccount from the TokenRequest API (10 minutes,
  optional audiences), presented to `auth/<mountPath>/login` with the role;
- tokenSecretRef: a Vault token from a Secret, checked with `auth/token/lookup-self`;
- appRole: role_id plus the secret_id from a Secret, at `auth/<path>/login`.
Credentials are never logged; errors carry Vault's error strings without their quoted
spans (where Vault echoes what it was sent), and a failure that never reached Vault by type.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import hvac
import hvac.exceptions as vault_errors
import requests
import tenacity
from requests.adapters import HTTPAdapter

from paved.api.secrets import VaultProvider
from paved.metrics import count_call
from paved.providers import secretstores
from paved.providers.vault import error_text
from paved.providers.secretstores import (
    AUTH_FAILED,
    UNREACHABLE,
    Credentials,
    StoreConfig,
    StoreError,
)
from paved.secretsync.model import FetchResult, KeyFailure, KeyState, Missing, Present, RemoteKey, RemoteValue

PROVIDER = "vault"
SA_TOKEN_SECONDS = 600  # the TokenRequest minimum; used once, for the login
RELOGIN_MARGIN = 0.2  # re-login when less than 20 % of the token's TTL is left ...
RELOGIN_MIN_SECONDS = 30.0  # ... or less than this
REQUEST_TIMEOUT = 10
ATTEMPTS = 3
MAX_WAIT_SECONDS = 2.0

T = TypeVar("T")

_TRANSIENT = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    vault_errors.VaultDown,
    vault_errors.InternalServerError,
    vault_errors.BadGateway,
    vault_errors.RateLimitExceeded,
)


def operation_of(path: str) -> str:
    """The metric operation of a Vault request path (low cardinality: no key names)."""
    path = path.split("?", 1)[0]
    if path.startswith("/v1/auth/") and path.endswith("/login"):
        return "login"
    if path.startswith("/v1/auth/token/lookup-self"):
        return "lookup-self"
    if "/metadata/" in path:
        return "read-metadata"
    if "/data/" in path:
        return "read-data"
    return "other"


class _CountingAdapter(HTTPAdapter):
    """Counts every HTTP request the client really sends."""

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        count_call(PROVIDER, operation_of(request.path_url or ""))
        return super().send(request, *args, **kwargs)


def _credential(field: str, read: Callable[[], str]) -> str:
    """Read a credential from Kubernetes; a failure names the store field that points at it."""
    try:
        return read()
    except StoreError as error:
        raise StoreError(f"{field}: {error}", reason=error.reason, retryable=error.retryable, field=field) from None


class VaultStore:
    """One Vault store: an hvac client with a counted session and a reused token."""

    name = PROVIDER
    batch_size = 1

    def __init__(self, config: StoreConfig, credentials: Credentials) -> None:
        spec = config.provider.vault
        assert spec is not None
        self.config = config
        self.spec: VaultProvider = spec
        self.credentials = credentials
        self.mount = spec.path.strip("/")
        self._lock = threading.RLock()
        self._expires: float | None = None  # monotonic deadline for a re-login; None: no token
        self._ca_file: str | None = None
        self._prefetched: dict[RemoteKey, RemoteValue] = {}
        self._validate()
        verify: bool | str = True
        if spec.caBundle:
            handle, self._ca_file = tempfile.mkstemp(prefix="paved-vault-ca-", suffix=".pem")
            with os.fdopen(handle, "w") as file:
                file.write(spec.caBundle)
            verify = self._ca_file
        session = requests.Session()
        session.verify = verify  # hvac takes verification from a given session, not from `verify=`
        adapter = _CountingAdapter(pool_connections=2, pool_maxsize=4)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        self.client = hvac.Client(url=spec.server, verify=verify, timeout=REQUEST_TIMEOUT, session=session)

    def _validate(self) -> None:
        auth = self.spec.auth
        if auth.kubernetes and auth.kubernetes.serviceAccountRef.namespace and not self.config.key.cluster:
            if auth.kubernetes.serviceAccountRef.namespace != self.config.credentials_namespace:
                raise StoreError(
                    "spec.provider.vault.auth.kubernetes.serviceAccountRef.namespace: a SecretStore may only use "
                    "ServiceAccounts of its own namespace; remove the field or use a ClusterSecretStore",
                    reason="StoreInvalid",
                    retryable=False,
                    field="spec.provider.vault.auth.kubernetes.serviceAccountRef.namespace",
                )

    # --- plumbing ---------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one hvac call with brief transient retries; map store-level failures to StoreError."""
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_TRANSIENT),
            wait=tenacity.wait_random_exponential(multiplier=0.2, max=MAX_WAIT_SECONDS),
            stop=tenacity.stop_after_attempt(ATTEMPTS),
            reraise=True,
        )
        try:
            return retrying(fn)
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as error:
            kind = "TLS verification failed" if isinstance(error, requests.exceptions.SSLError) else type(error).__name__
            message = f"vault {self.spec.server} unreachable during {what}: {kind}"
        except (vault_errors.VaultDown, vault_errors.InternalServerError, vault_errors.BadGateway,
                vault_errors.RateLimitExceeded, vault_errors.VaultNotInitialized) as error:
            message = f"vault {self.spec.server} failed during {what}: {type(error).__name__}: {error_text(error)}"
        raise StoreError(message, reason=UNREACHABLE)

    def _auth_failed(self, what: str, detail: str, field: str) -> StoreError:
        return StoreError(f"{field}: {what} refused: {detail}", reason=AUTH_FAILED, field=field)

    # --- authentication ------------------------------------------------------------------------

    def _token_valid(self) -> bool:
        return self._expires is not None and time.monotonic() < self._expires

    def _invalidate(self) -> None:
        self._expires = None
        self.client.token = None

    def _set_token(self, token: str, lease: float) -> None:
        self.client.token = token
        if lease <= 0:
            self._expires = float("inf")
        else:
            margin = max(RELOGIN_MIN_SECONDS, lease * RELOGIN_MARGIN)
            self._expires = time.monotonic() + max(1.0, lease - margin)

    def _login(self) -> str:
        """Log in (or load the token) and return a description of the identity."""
        auth = self.spec.auth
        namespace = self.config.credentials_namespace
        if auth.kubernetes:
            kubernetes = auth.kubernetes
            account = kubernetes.serviceAccountRef
            account_ns = account.namespace or namespace
            field = "spec.provider.vault.auth.kubernetes"
            jwt = _credential(field, lambda: self.credentials.service_account_token(
                account_ns, account.name, account.audiences, SA_TOKEN_SECONDS))
            try:
                answer = self._call("login", lambda: self.client.auth.kubernetes.login(
                    role=kubernetes.role, jwt=jwt, use_token=False, mount_point=kubernetes.mountPath))
            except (vault_errors.InvalidRequest, vault_errors.Forbidden, vault_errors.Unauthorized, vault_errors.InvalidPath) as error:
                raise self._auth_failed(f"kubernetes login as role {kubernetes.role!r} with ServiceAccount "
                                        f"{account_ns}/{account.name}", error_text(error), field) from None
            self._set_token(answer["auth"]["client_token"], float(answer["auth"].get("lease_duration") or 0))
            return f"vault role {kubernetes.role} (kubernetes auth, ServiceAccount {account_ns}/{account.name})"
        if auth.appRole:
            approle = auth.appRole
            field = "spec.provider.vault.auth.appRole"
            secret_id = _credential(f"{field}.secretRef", lambda: self.credentials.secret_value(
                namespace, approle.secretRef.name, approle.secretRef.key))
            try:
                answer = self._call("login", lambda: self.client.auth.approle.login(
                    role_id=approle.roleId, secret_id=secret_id, use_token=False, mount_point=approle.path))
            except (vault_errors.InvalidRequest, vault_errors.Forbidden, vault_errors.Unauthorized, vault_errors.InvalidPath) as error:
                raise self._auth_failed("approle login", error_text(error), field) from None
            self._set_token(answer["auth"]["client_token"], float(answer["auth"].get("lease_duration") or 0))
            return f"vault approle {approle.roleId}"
        assert auth.tokenSecretRef is not None
        field = "spec.provider.vault.auth.tokenSecretRef"
        token_ref = auth.tokenSecretRef
        token = _credential(field, lambda: self.credentials.secret_value(namespace, token_ref.name, token_ref.key))
        self.client.token = token
        try:
            answer = self._call("token lookup", self.client.auth.token.lookup_self)
        except (vault_errors.Forbidden, vault_errors.Unauthorized, vault_errors.InvalidRequest) as error:
            self._invalidate()
            raise self._auth_failed("token", error_text(error), field) from None
        data = answer.get("data") or {}
        self._set_token(token, float(data.get("ttl") or 0))
        return f"vault token {data.get('display_name') or data.get('accessor', '')}".strip()

    def _ensure_token(self) -> bool:
        """Log in unless a token is still comfortably valid; True if this call logged in."""
        if self._token_valid():
            return False
        self._login()
        return True

    def check(self) -> str:
        """A real authentication check: lookup-self with the reused token, else a fresh login."""
        with self._lock:
            if self._token_valid():
                try:
                    answer = self._call("token lookup", self.client.auth.token.lookup_self)
                    data = answer.get("data") or {}
                    return f"vault token {data.get('display_name', '')} (ttl {data.get('ttl', '?')}s)"
                except (vault_errors.Forbidden, vault_errors.Unauthorized):
                    self._invalidate()
            return self._login()

    # --- reads ---------------------------------------------------------------------------------

    def _with_relogin(self, keys: Sequence[RemoteKey], read: Callable[[RemoteKey], T]) -> dict[RemoteKey, T | KeyFailure]:
        """Read every key; on 403s re-login once (if the token was not fresh) and retry those."""
        fresh = self._ensure_token()
        results: dict[RemoteKey, T | KeyFailure] = {}
        denied: list[RemoteKey] = []
        for remote in keys:
            try:
                results[remote] = read(remote)
            except vault_errors.Forbidden:
                denied.append(remote)
        if denied and not fresh:
            self._invalidate()
            self._ensure_token()
            retry, denied = denied, []
            for remote in retry:
                try:
                    results[remote] = read(remote)
                except vault_errors.Forbidden:
                    denied.append(remote)
        for remote in denied:
            results[remote] = KeyFailure("PermissionDenied", f"vault policy denies reading {self.mount}/{remote.key}")
        return results

    def _read_metadata(self, remote: RemoteKey) -> KeyState:
        try:
            answer = self._call("metadata read", lambda: self.client.secrets.kv.v2.read_secret_metadata(
                path=remote.key, mount_point=self.mount))
        except vault_errors.InvalidPath:
            return Missing("no such path")
        except vault_errors.InvalidRequest as error:
            return KeyFailure("InvalidRequest", f"vault refused reading {self.mount}/metadata/{remote.key}: {error_text(error)}")
        except vault_errors.Forbidden:
            # No `read` on metadata/: learn the version from the data endpoint instead.
            value = self._read_data(remote)
            if isinstance(value, RemoteValue):
                self._prefetched[remote] = value
                return Present(value.version)
            return value
        data = answer.get("data") or {}
        versions = data.get("versions") or {}
        version = remote.version or str(data.get("current_version") or "")
        entry = versions.get(version)
        if not entry:
            return Missing(f"version {version} does not exist" if remote.version else "no versions")
        if entry.get("destroyed") or entry.get("deletion_time"):
            return Missing(f"version {version} is deleted")
        return Present(version)

    def _read_data(self, remote: RemoteKey) -> FetchResult:
        try:
            answer = self._call("data read", lambda: self.client.secrets.kv.v2.read_secret_version(
                path=remote.key, version=remote.version, mount_point=self.mount, raise_on_deleted_version=True))
        except vault_errors.InvalidPath:
            return Missing("no such path or version")
        except vault_errors.InvalidRequest as error:
            return KeyFailure("InvalidRequest", f"vault refused reading {self.mount}/data/{remote.key}: {error_text(error)}")
        data = answer.get("data") or {}
        metadata = data.get("metadata") or {}
        return RemoteValue(str(metadata.get("version") or remote.version or ""), dict(data.get("data") or {}))

    def versions(self, keys: Sequence[RemoteKey]) -> dict[RemoteKey, KeyState]:
        with self._lock:
            self._prefetched = {}
            return self._with_relogin(keys, self._read_metadata)  # type: ignore[return-value]

    def fetch(self, keys: Sequence[RemoteKey]) -> dict[RemoteKey, FetchResult]:
        with self._lock:
            ready = {remote: self._prefetched.pop(remote) for remote in keys if remote in self._prefetched}
            rest = [remote for remote in keys if remote not in ready]
            results: dict[RemoteKey, FetchResult] = dict(ready)
            if rest:
                results.update(self._with_relogin(rest, self._read_data))  # type: ignore[arg-type]
            return results

    def close(self) -> None:
        with self._lock:
            self._invalidate()
            self._prefetched.clear()
            self.client.adapter.close()
            if self._ca_file:
                try:
                    os.unlink(self._ca_file)
                except OSError:
                    pass
                self._ca_file = None


def _factory(config: StoreConfig, credentials: Credentials) -> VaultStore:
    return VaultStore(config, credentials)


secretstores.register("vault", _factory)
