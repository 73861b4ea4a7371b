"""Secret store providers: the Protocol, the registry keyed by the store's provider field, a fake.

ESO's shape: a SecretStore's `spec.provider` is a one-of (`vault`, `aws`); the name of the
field that is set picks the factory. A factory builds a `StoreProvider` for one store; the
engine keeps one instance per store (`StoreProviders`) so that a Vault token or assumed-role
credentials are reused across cycles, and replaces it when the store's spec changes.

A provider answers in batches and never raises for a single key: per key it returns
Present(version) / Missing / KeyFailure (paved.secretsync.model); only failures of the
whole store (unreachable, authentication refused, no answer in time) raise `StoreError`.
Messages never contain secret values or credentials.

Missing is a strong statement: the engine may delete Secret keys on it (two refreshes apart,
paved.secretsync.missing). A provider answers Missing only after a call about that one key
answered not-found for exactly that key; a key a batch answer left out is asked about alone
(`confirm` in the cost models below), and a not-found that cannot be pinned on the key (a
Vault 404 from a mount that is not the store's KV v2 mount) is a KeyFailure
(NOT_FOUND_UNCONFIRMED).

Every call honours the deadline of the calling block (paved.providers.deadline): the engine
bounds each store's work per cycle, and a provider stops, raising StoreError(StoreTimeout),
rather than start a request it has no time left for.

Providers need credentials that live in Kubernetes (a token in a Secret, a ServiceAccount
token from the TokenRequest API). They get them through the `Credentials` port, which the
handler layer implements with the Kubernetes client, so this layer does not import kube/.

`FakeStore` is the in-memory provider for unit tests of the layers above; every new feature
is tried on it first. It is never registered by production code.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from paved.api.secrets import SecretStoreProvider
from paved.providers import deadline
from paved.providers.base import ProviderError
from paved.providers.registry import Registry
from paved.secretsync.model import FetchResult, KeyFailure, KeyState, Missing, Present, RemoteKey, RemoteValue, StoreKey
from paved.secretsync.tenancy import PlatformEndpoints

# Reasons of StoreError (they become the refs' and the store's condition reasons).
AUTH_FAILED = "AuthFailed"
UNREACHABLE = "StoreUnreachable"
PROVIDER_ERROR = "ProviderError"
CREDENTIALS_MISSING = "CredentialsMissing"
STORE_TIMEOUT = "StoreTimeout"  # the store accepted the request but did not answer in time
# Reason of KeyFailure: the store said not-found in a way that does not prove the key is gone.
NOT_FOUND_UNCONFIRMED = "NotFoundUnconfirmed"


class StoreError(ProviderError):
    """The whole store failed (not one key). `reason` is CamelCase; `field` the store spec path."""

    def __init__(self, message: str, *, reason: str = PROVIDER_ERROR, retryable: bool = True, field: str | None = None) -> None:
        super().__init__(message, retryable=retryable, field=field)
        self.reason = reason


SA_TOKEN_SECONDS = 600  # ServiceAccount tokens (TokenRequest API): the minimum; each is used once, right away
# On a Namespace, value `allowed`: deploy/token-policy.yaml gives the operator tokens of its
# ServiceAccounts there only (an opt-in: a stolen operator token mints no other account's).
SERVICE_ACCOUNT_TOKENS_LABEL = "paved.dev/service-account-tokens"


class Credentials(Protocol):
    """Credentials a store reads from Kubernetes (implemented by the handler layer)."""

    def secret_value(self, namespace: str, name: str, key: str) -> str:
        """One key of a Secret, decoded; raise StoreError(reason=CredentialsMissing) if absent."""

    def service_account_token(self, namespace: str, name: str, audiences: Sequence[str], seconds: int) -> str:
        """A fresh token of the ServiceAccount (TokenRequest API)."""


def credential(field: str, read: Callable[[], str]) -> str:
    """Read a credential from Kubernetes; a failure names the store field that points at it."""
    try:
        return read()
    except StoreError as error:
        raise StoreError(f"{field}: {error}", reason=error.reason, retryable=error.retryable, field=field) from None


def platform_endpoints() -> PlatformEndpoints:
    """The endpoints the platform gave the operator (its environment): what a SecretStore may name."""
    from paved.providers.aws.session import endpoint_url
    from paved.providers.vault.admin import ADDR_ENV

    return PlatformEndpoints(aws=endpoint_url(), vault=os.environ.get(ADDR_ENV) or None)


@dataclass(frozen=True)
class StoreConfig:
    """One store as a provider factory sees it."""

    key: StoreKey
    provider: SecretStoreProvider
    credentials_namespace: str  # where secretRefs and ServiceAccounts of the store live

    @property
    def field(self) -> str:
        return one_of(self.provider)

    def fingerprint(self) -> str:
        return json.dumps([self.credentials_namespace, self.provider.dump()], sort_keys=True)


@runtime_checkable
class StoreProvider(Protocol):
    name: str  # the `provider` label of paved_provider_api_calls_total
    batch_size: int  # how many keys one value read covers (1 = no batching)

    def check(self) -> str:
        """Authenticate for real; return who we are (no secrets). Raise StoreError."""

    def versions(self, keys: Sequence[RemoteKey]) -> dict[RemoteKey, KeyState]:
        """Current version of each key, without reading values where the backend allows."""

    def fetch(self, keys: Sequence[RemoteKey]) -> dict[RemoteKey, FetchResult]:
        """The values of `keys`, batched."""

    def close(self) -> None:
        """Release connections and forget credentials."""


StoreFactory = Callable[[StoreConfig, Credentials], StoreProvider]

STORES: Registry[StoreFactory] = Registry(
    "secret store provider",
    builtin={"vault": "paved.providers.vault.store:VaultStore", "aws": "paved.providers.aws.services:store_for"},
    unknown=lambda field, known: StoreError(f"spec.provider.{field}: no such store provider (known: {known})",
                                            reason="StoreInvalid", retryable=False, field=f"spec.provider.{field}"),
)
"""Store providers by the one-of field of a store's spec.provider."""


def one_of(provider: SecretStoreProvider) -> str:
    for name in type(provider).model_fields:
        if getattr(provider, name) is not None:
            return name
    raise StoreError("spec.provider: set exactly one provider", reason="StoreInvalid", retryable=False, field="spec.provider")


def create(config: StoreConfig, credentials: Credentials) -> StoreProvider:
    return STORES.factory(config.field)(config, credentials)


class StoreProviders:
    """One provider instance per store, rebuilt when the store's spec changes."""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials
        self._lock = threading.Lock()
        self._instances: dict[StoreKey, tuple[str, StoreProvider]] = {}

    def get(self, config: StoreConfig) -> StoreProvider:
        fingerprint = config.fingerprint()
        with self._lock:
            found = self._instances.get(config.key)
            if found and found[0] == fingerprint:
                return found[1]
        provider = create(config, self.credentials)
        with self._lock:
            old = self._instances.get(config.key)
            self._instances[config.key] = (fingerprint, provider)
        if old:
            old[1].close()
        return provider

    def forget(self, key: StoreKey) -> None:
        with self._lock:
            found = self._instances.pop(key, None)
        if found:
            found[1].close()

    def close(self) -> None:
        with self._lock:
            instances, self._instances = list(self._instances.values()), {}
        for _, provider in instances:
            provider.close()


def chunks(items: Sequence[Any], size: int) -> list[list[Any]]:
    """`items` in consecutive lists of at most `size` (the batch limits of the APIs)."""
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


# --- the fake -------------------------------------------------------------------------------


class FakeStore:
    """In-memory store for unit tests: versioned keys, batch accounting, injectable failures.

    `calls` counts requests as a real batched backend would make them: one `versions` call
    per `batch_size` keys, one `fetch` call per `batch_size` keys, one `login` per check,
    one `confirm` per key that a batch answer did not show (asked about alone, as the real
    providers do before they answer Missing).

    Injectable behaviour: `failure` (every call raises it), `denied` (keys answered with
    PermissionDenied), `unlisted` (keys a batch answer leaves out although they exist: the
    per-key call finds them), `unconfirmable` (keys whose per-key not-found cannot be pinned
    on the key: NOT_FOUND_UNCONFIRMED), and `answering` (clear it and every call hangs until
    it is set again or the caller's deadline passes, then raises StoreError(StoreTimeout)).
    """

    name = "fake"

    def __init__(self, batch_size: int = 20) -> None:
        self.batch_size = batch_size
        self.secrets: dict[str, list[str | Mapping[str, Any] | None]] = {}  # key -> versions (None = deleted)
        self.calls: Counter[str] = Counter()
        self.failure: StoreError | None = None
        self.denied: set[str] = set()
        self.unlisted: set[str] = set()
        self.unconfirmable: set[str] = set()
        self.answering = threading.Event()
        self.answering.set()
        self.hung = threading.Event()  # set once a call found the store not answering

    def put(self, key: str, data: str | Mapping[str, Any]) -> str:
        self.secrets.setdefault(key, []).append(data)
        return str(len(self.secrets[key]))

    def delete(self, key: str) -> None:
        self.secrets.setdefault(key, []).append(None)

    def _current(self, remote: RemoteKey) -> tuple[str, Any] | None:
        versions = self.secrets.get(remote.key) or []
        if remote.version is None:
            if not versions or versions[-1] is None:
                return None
            return str(len(versions)), versions[-1]
        index = int(remote.version) - 1 if remote.version.isdigit() else -1
        if not 0 <= index < len(versions) or versions[index] is None:
            return None
        return remote.version, versions[index]

    def _guard(self, operation: str, count: int) -> None:
        self.calls[operation] += max(1, math.ceil(count / self.batch_size))
        self._answer_or_hang()
        if self.failure is not None:
            raise self.failure

    def _answer_or_hang(self) -> None:
        """Return when the store answers; a hung store waits out the caller's deadline."""
        deadline.check()
        if self.answering.is_set():
            return
        self.hung.set()
        left = deadline.remaining()
        started = time.monotonic()
        if not self.answering.wait(timeout=max(0.0, left) if left is not None else None):
            raise StoreError(f"fake store: no answer within {time.monotonic() - started:.1f}s", reason=STORE_TIMEOUT)

    def _confirm(self, remote: RemoteKey) -> KeyState:
        """The per-key call behind every Missing (it finds `unlisted` keys)."""
        self.calls["confirm"] += 1
        self._answer_or_hang()
        found = self._current(remote)
        if found:
            return Present(found[0])
        if remote.key in self.unconfirmable:
            return KeyFailure(NOT_FOUND_UNCONFIRMED, f"not found, and the fake cannot tell whether {remote.label!r} is gone")
        return Missing()

    def check(self) -> str:
        self.calls["login"] += 1
        self._answer_or_hang()
        if self.failure is not None:
            raise self.failure
        return "fake identity"

    def versions(self, keys: Sequence[RemoteKey]) -> dict[RemoteKey, KeyState]:
        self._guard("versions", len(keys))
        result: dict[RemoteKey, KeyState] = {}
        for remote in keys:
            if remote.key in self.denied:
                result[remote] = KeyFailure("PermissionDenied", "permission denied")
                continue
            found = None if remote.key in self.unlisted else self._current(remote)
            result[remote] = Present(found[0]) if found else self._confirm(remote)
        return result

    def fetch(self, keys: Sequence[RemoteKey]) -> dict[RemoteKey, FetchResult]:
        self._guard("fetch", len(keys))
        result: dict[RemoteKey, FetchResult] = {}
        for remote in keys:
            found = self._current(remote)
            if found:
                result[remote] = RemoteValue(found[0], found[1])
                continue
            state = self._confirm(remote)
            assert not isinstance(state, Present)  # noqa: S101 - nothing changes between two calls of the fake
            result[remote] = state
        return result

    def close(self) -> None:
        pass
