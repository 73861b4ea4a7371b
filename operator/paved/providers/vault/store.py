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
cycle backoff is the long-term retry. A request that timed out is not retried here: it
already waited its full timeout, and the engine's next attempt (and the store's circuit
breaker, paved.secretsync.breaker) deal with a store that does not answer. Every request
honours the caller's deadline (paved.providers.deadline): its timeout is capped to the time
left, and nothing is sent once none is left (StoreError StoreTimeout). A 403 on a read
first re-logs in once per call (the token may have been revoked or the server restarted)
before it is reported as a permission problem of that key.

Not found: a KV v2 404 says "nothing here", but not whether "here" is the store's KV v2
mount: a disabled mount, a wrong `path` or a proxy answer 404 too, for every key at once.
So a 404 counts as Missing only once the mount is confirmed, with the same preflight the
`vault kv` CLI makes (`GET sys/internal/ui/mounts/<mount>/<key>`: the mount serving that
key is a KV v2 mount at exactly `spec.provider.vault.path`), at most once per mount and
call; otherwise the key gets a KeyFailure (NotFoundUnconfirmed) and nothing is deleted.
A soft-deleted or destroyed version is an explicit answer about that key (its metadata
says so) and counts as Missing; an answer without data is a KeyFailure, never an empty
value.

Authentication (spec.provider.vault.auth, exactly one):
- kubernetes: a token of the named ServiceAccount from the TokenRequest API (10 minutes,
  optional audiences), presented to `auth/<mountPath>/login` with the role;
- tokenSecretRef: a Vault token from a Secret, checked with `auth/token/lookup-self`;
- appRole: role_id plus the secret_id from a Secret, at `auth/<path>/login`.
There is no way to use the operator's own Vault token (PAVED_VAULT_TOKEN) here. Which server
and which ServiceAccount a SecretStore may name is decided before this provider is built
(paved.secretsync.tenancy). Credentials are never logged; errors carry Vault's error strings
without their quoted spans (where Vault echoes what it was sent), and a failure that never
reached Vault by type.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import hvac
import hvac.exceptions as vault_errors
import requests
import tenacity
from requests.adapters import HTTPAdapter

from paved import fence
from paved.api.secrets import VaultProvider
from paved.metrics import count_call
from paved.providers import deadline
from paved.providers.cafile import CaFile
from paved.providers.vault import error_text
from paved.providers.secretstores import (
    AUTH_FAILED,
    NOT_FOUND_UNCONFIRMED,
    SA_TOKEN_SECONDS,
    STORE_TIMEOUT,
    UNREACHABLE,
    Credentials,
    StoreConfig,
    StoreError,
    credential,
)
from paved.secretsync.model import FetchResult, KeyFailure, KeyState, Missing, Present, RemoteKey, RemoteValue

PROVIDER = "vault"
RELOGIN_MARGIN = 0.2  # re-login when less than 20 % of the token's TTL is left ...
RELOGIN_MIN_SECONDS = 30.0  # ... or less than this
CONNECT_TIMEOUT = 3.0
REQUEST_TIMEOUT = 10.0  # seconds to wait for an answer (per request, capped by the caller's deadline)
ATTEMPTS = 3
MAX_WAIT_SECONDS = 2.0

T = TypeVar("T")

_TRANSIENT = (
    requests.exceptions.ConnectionError,
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
    if path.startswith("/v1/sys/internal/ui/mounts/"):
        return "mount-check"
    if "/metadata/" in path:
        return "read-metadata"
    if "/data/" in path:
        return "read-data"
    return "other"


class _CountingAdapter(HTTPAdapter):
    """Counts every HTTP request the client really sends and caps its timeout to the deadline;
    sends none outside leadership (paved.fence)."""

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        if not fence.WRITES.permits():
            raise requests.exceptions.ConnectionError(fence.WRITES.why_not())
        kwargs["timeout"] = deadline.timeout(kwargs.get("timeout"))
        count_call(PROVIDER, operation_of(request.path_url or ""))
        return super().send(request, *args, **kwargs)


def _retried(error: BaseException) -> bool:
    # ConnectTimeout is a ConnectionError too, but like a read timeout it already waited in full.
    return isinstance(error, _TRANSIENT) and not isinstance(error, requests.exceptions.Timeout)


class VaultStore:
    """One Vault store: an hvac client with a counted session and a reused token."""

    name = PROVIDER
    batch_size = 1

    def __init__(self, config: StoreConfig, credentials: Credentials) -> None:
        spec = config.provider.vault
        assert spec is not None  # noqa: S101
        self.config = config
        self.spec: VaultProvider = spec
        self.credentials = credentials
        self.mount = spec.path.strip("/")
        self._lock = threading.RLock()
        self._expires: float | None = None  # monotonic deadline for a re-login; None: no token
        self._prefetched: dict[RemoteKey, RemoteValue] = {}
        self._ca_file = CaFile(spec.caBundle, prefix="paved-vault-ca-") if spec.caBundle else None
        verify: bool | str = self._ca_file.path if self._ca_file else True
        session = requests.Session()
        session.verify = verify  # hvac takes verification from a given session, not from `verify=`
        adapter = _CountingAdapter(pool_connections=2, pool_maxsize=4)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        self.client = hvac.Client(url=spec.server, verify=verify, timeout=(CONNECT_TIMEOUT, REQUEST_TIMEOUT),
                                  session=session)
        self._kv2_mount: bool | None = None  # this call's mount preflight (None: not made yet)

    # --- plumbing ---------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one hvac call with brief transient retries; map store-level failures to StoreError."""
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(_retried),
            wait=deadline.wait_within(tenacity.wait_random_exponential(multiplier=0.2, max=MAX_WAIT_SECONDS)),
            stop=tenacity.stop_after_attempt(ATTEMPTS) | deadline.stop_at_deadline,
            reraise=True,
        )
        reason = UNREACHABLE
        try:
            return retrying(fn)
        except deadline.DeadlineExceeded as error:
            message, reason = f"vault {self.spec.server}, {what}: {error}", STORE_TIMEOUT
        except requests.exceptions.ReadTimeout:
            message, reason = f"vault {self.spec.server} accepted the connection but did not answer during {what}", STORE_TIMEOUT
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as error:
            kind = "TLS verification failed" if isinstance(error, requests.exceptions.SSLError) else type(error).__name__
            message = f"vault {self.spec.server} unreachable during {what}: {kind}"
        except (vault_errors.VaultDown, vault_errors.InternalServerError, vault_errors.BadGateway,
                vault_errors.RateLimitExceeded, vault_errors.VaultNotInitialized) as error:
            message = f"vault {self.spec.server} failed during {what}: {type(error).__name__}: {error_text(error)}"
        raise StoreError(message, reason=reason)

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
            jwt = credential(field, lambda: self.credentials.service_account_token(
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
            secret_id = credential(f"{field}.secretRef", lambda: self.credentials.secret_value(
                namespace, approle.secretRef.name, approle.secretRef.key))
            try:
                answer = self._call("login", lambda: self.client.auth.approle.login(
                    role_id=approle.roleId, secret_id=secret_id, use_token=False, mount_point=approle.path))
            except (vault_errors.InvalidRequest, vault_errors.Forbidden, vault_errors.Unauthorized, vault_errors.InvalidPath) as error:
                raise self._auth_failed("approle login", error_text(error), field) from None
            self._set_token(answer["auth"]["client_token"], float(answer["auth"].get("lease_duration") or 0))
            return f"vault approle {approle.roleId}"
        assert auth.tokenSecretRef is not None  # noqa: S101
        field = "spec.provider.vault.auth.tokenSecretRef"
        token_ref = auth.tokenSecretRef
        token = credential(field, lambda: self.credentials.secret_value(namespace, token_ref.name, token_ref.key))
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

    def _mount_is_kv2(self, remote: RemoteKey) -> bool:
        """Whether the mount serving `remote` is a KV v2 mount at exactly the store's path (the
        `vault kv` CLI's preflight); asked at most once per versions()/fetch() call."""
        if self._kv2_mount is None:
            try:
                answer = self._call("mount check", lambda: self.client.adapter.get(
                    f"/v1/sys/internal/ui/mounts/{self.mount}/{remote.key}"))
            except vault_errors.VaultError:  # 403 is also the answer for "no such mount"
                self._kv2_mount = False
            else:
                data = (answer or {}).get("data") if isinstance(answer, dict) else None
                data = data if isinstance(data, dict) else {}
                self._kv2_mount = (str(data.get("path", "")).strip("/") == self.mount and data.get("type") == "kv"
                                   and str((data.get("options") or {}).get("version")) == "2")
        return self._kv2_mount

    def _not_found(self, remote: RemoteKey, endpoint: str) -> Missing | KeyFailure:
        """A 404 for `remote`: Missing if the store's KV v2 mount answered it, else unconfirmed."""
        if self._mount_is_kv2(remote):
            return Missing("no such path")
        return KeyFailure(NOT_FOUND_UNCONFIRMED, (
            f"vault answered 404 for {self.mount}/{endpoint}/{remote.key}, but {self.mount!r} is not a KV v2 mount "
            "this token can see (disabled, or a wrong spec.provider.vault.path?); not treated as deleted"))

    def _read_metadata(self, remote: RemoteKey) -> KeyState:
        try:
            answer = self._call("metadata read", lambda: self.client.secrets.kv.v2.read_secret_metadata(
                path=remote.key, mount_point=self.mount))
        except vault_errors.InvalidPath:
            return self._not_found(remote, "metadata")
        except vault_errors.InvalidRequest as error:
            return KeyFailure("InvalidRequest", f"vault refused reading {self.mount}/metadata/{remote.key}: {error_text(error)}")
        except vault_errors.Forbidden:
            # No `read` on metadata/: learn the version from the data endpoint instead.
            value = self._read_data(remote)
            if isinstance(value, RemoteValue):
                self._prefetched[remote] = value
                return Present(value.version)
            return value
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, dict) or not isinstance(data.get("versions"), dict):
            return KeyFailure(NOT_FOUND_UNCONFIRMED, (
                f"vault answered {self.mount}/metadata/{remote.key} without KV v2 metadata (is {self.mount!r} a KV v2 "
                "mount?); not treated as deleted"))
        versions = data["versions"]
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
        except vault_errors.InvalidPath as error:
            # KV v2 answers a deleted or destroyed version with a 404 whose body says so: explicit.
            metadata = ((error.json or {}).get("data") or {}).get("metadata") if isinstance(error.json, dict) else None
            if isinstance(metadata, dict) and (metadata.get("deletion_time") or metadata.get("destroyed")):
                version = metadata.get("version") or remote.version
                return Missing(f"version {version} is deleted" if version else "the latest version is deleted")
            return self._not_found(remote, "data")
        except vault_errors.InvalidRequest as error:
            return KeyFailure("InvalidRequest", f"vault refused reading {self.mount}/data/{remote.key}: {error_text(error)}")
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, dict) or not isinstance(data.get("data"), dict):
            return KeyFailure(NOT_FOUND_UNCONFIRMED, (
                f"vault answered {self.mount}/data/{remote.key} without data; not treated as deleted, nothing written"))
        metadata = data.get("metadata") or {}
        return RemoteValue(str(metadata.get("version") or remote.version or ""), dict(data["data"]))

    def versions(self, keys: Sequence[RemoteKey]) -> dict[RemoteKey, KeyState]:
        with self._lock:
            self._prefetched = {}
            self._kv2_mount = None
            return self._with_relogin(keys, self._read_metadata)

    def fetch(self, keys: Sequence[RemoteKey]) -> dict[RemoteKey, FetchResult]:
        with self._lock:
            self._kv2_mount = None
            ready = {remote: self._prefetched.pop(remote) for remote in keys if remote in self._prefetched}
            rest = [remote for remote in keys if remote not in ready]
            results: dict[RemoteKey, FetchResult] = dict(ready)
            if rest:
                results.update(self._with_relogin(rest, self._read_data))
            return results

    def close(self) -> None:
        with self._lock:
            self._invalidate()
            self._prefetched.clear()
            self.client.adapter.close()
            if self._ca_file:
                self._ca_file.close()


