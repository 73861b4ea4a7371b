"""What both `aws` store services share: the store's credentials, clients and calls.

Credentials (spec.provider.aws.auth): static keys from a Secret (`secretRef`), optionally
followed by `sts:AssumeRole` of `role`; or `serviceAccountRef` + `role`: a token of the
ServiceAccount (TokenRequest API, audience sts.amazonaws.com by default) exchanged with
`sts:AssumeRoleWithWebIdentity`, on an unsigned STS client (no AWS credentials of the
operator's are looked up or sent); or the operator's own default chain (IRSA, environment),
alone or to assume `role` — which a SecretStore may only use where the platform allows it
(paved.secretsync.tenancy decides before this provider is built). Assumed-role credentials
refresh themselves before they expire (botocore RefreshableCredentials), so a store assumes
its role once per hour, not once per cycle. `endpointURL` (else PAVED_AWS_ENDPOINT_URL)
points the store's service client elsewhere; STS uses PAVED_AWS_ENDPOINT_URL or AWS's own
endpoint, never the store's.

Timeouts: the store's clients wait at most REQUEST_TIMEOUT for an answer (STORE_BOTOCORE_CONFIG,
one botocore attempt); a timed-out call is not retried, and every call honours the engine's
deadline for the store's work (paved.providers.deadline).

The store's auth check is one cheap call on the store's own service (`ListSecrets` with
MaxResults=1 / SSM `DescribeParameters` with MaxResults=1): it proves the credentials and
the permission to list, which change detection needs anyway.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

import boto3
import botocore.config
import botocore.credentials
import botocore.session
from botocore import UNSIGNED

from paved.api.secrets import AwsProvider, AwsServiceAccountRef
from paved.providers import deadline
from paved.providers.aws import session as aws
from paved.providers.aws.session import AwsError
from paved.providers.secretstores import (
    AUTH_FAILED,
    PROVIDER_ERROR,
    SA_TOKEN_SECONDS,
    STORE_TIMEOUT,
    UNREACHABLE,
    Credentials,
    StoreConfig,
    StoreError,
    credential,
)
from paved.secretsync.model import FetchResult, RemoteKey

STS_PROVIDER = "aws-sts"
ROLE_SESSION_SECONDS = 3600
CONNECT_TIMEOUT = 3
REQUEST_TIMEOUT = 10  # seconds for an answer to one store call
# One botocore attempt per call: the wrapper's loop retries what is worth it, within the deadline.
STORE_BOTOCORE_CONFIG = aws.BOTOCORE_CONFIG.merge(botocore.config.Config(
    connect_timeout=CONNECT_TIMEOUT, read_timeout=REQUEST_TIMEOUT, retries={"mode": "standard", "total_max_attempts": 1}))

_AUTH_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "InvalidClientTokenId",
        "ExpiredTokenException",
        "AccessDeniedException",
        "AccessDenied",
        "NoCredentialsError",
        "PartialCredentialsError",
    }
)

def store_error(error: AwsError, what: str) -> StoreError:
    """An AWS failure of the whole store, with the reason the refs and the store will show."""
    if error.code in _AUTH_CODES:
        return StoreError(f"{what}: {error}", reason=AUTH_FAILED, field="spec.provider.aws.auth")
    if error.code.endswith("ReadTimeoutError"):
        return StoreError(f"{what}: the endpoint accepted the connection but did not answer: {error}", reason=STORE_TIMEOUT)
    if error.code.endswith(("ConnectionError", "ConnectTimeoutError", "ConnectionClosedError")):
        return StoreError(f"{what}: {error}", reason=UNREACHABLE)
    return StoreError(f"{what}: {error}", reason=PROVIDER_ERROR, retryable=error.retryable)


class AwsStoreSession:
    """boto3 clients of one store, with its credentials (default chain, Secret, assumed role)."""

    def __init__(self, config: StoreConfig, credentials: Credentials) -> None:
        spec = config.provider.aws
        assert spec is not None  # noqa: S101
        self.config = config
        self.spec: AwsProvider = spec
        self.credentials = credentials
        self._lock = threading.Lock()
        self._session: boto3.session.Session | None = None
        self._clients: dict[str, Any] = {}

    @property
    def how(self) -> str:
        auth = self.spec.auth
        if auth and auth.serviceAccountRef:
            account = auth.serviceAccountRef
            return (f"role {auth.role} assumed with a token of ServiceAccount "
                    f"{account.namespace or self.config.credentials_namespace}/{account.name}")
        base = "credentials from a Secret" if auth and auth.secretRef else "the operator's default credential chain"
        return f"role {auth.role} assumed with {base}" if auth and auth.role else base

    def _new_session(self) -> boto3.session.Session:
        auth = self.spec.auth
        if auth and auth.serviceAccountRef and auth.role:
            return self._refreshing(self._web_identity(auth.serviceAccountRef, auth.role))
        base = self._base_session()
        return self._refreshing(self._assume_role(base, auth.role)) if auth and auth.role else base

    def _base_session(self) -> boto3.session.Session:
        auth = self.spec.auth
        if auth and auth.secretRef:
            namespace = self.config.credentials_namespace
            refs = auth.secretRef
            field = "spec.provider.aws.auth.secretRef"
            key_id = credential(field, lambda: self.credentials.secret_value(
                namespace, refs.accessKeyIDSecretRef.name, refs.accessKeyIDSecretRef.key))
            secret = credential(field, lambda: self.credentials.secret_value(
                namespace, refs.secretAccessKeySecretRef.name, refs.secretAccessKeySecretRef.key))
            return boto3.session.Session(aws_access_key_id=key_id.strip(), aws_secret_access_key=secret.strip(), region_name=self.spec.region)
        return boto3.session.Session(region_name=self.spec.region)

    @property
    def _session_name(self) -> str:
        return f"paved-{self.config.key.name}"[:64]

    def _assume_role(self, base: boto3.session.Session, role: str) -> Callable[[], dict[str, Any]]:
        """sts:AssumeRole with the base session's credentials."""
        sts = base.client("sts", region_name=self.spec.region, endpoint_url=aws.endpoint_url(), config=aws.BOTOCORE_CONFIG)
        return lambda: self._assume("spec.provider.aws.auth.role", role, lambda: aws.call(
            STS_PROVIDER, sts, "assume_role", RoleArn=role, RoleSessionName=self._session_name,
            DurationSeconds=ROLE_SESSION_SECONDS))

    def _web_identity(self, account: AwsServiceAccountRef, role: str) -> Callable[[], dict[str, Any]]:
        """sts:AssumeRoleWithWebIdentity with a fresh token of the ServiceAccount (TokenRequest API).

        The STS client is unsigned: the call needs no AWS credentials, so none of the
        operator's are even looked up, let alone sent."""
        sts = boto3.session.Session().client("sts", region_name=self.spec.region, endpoint_url=aws.endpoint_url(),
                                             config=aws.BOTOCORE_CONFIG.merge(botocore.config.Config(signature_version=UNSIGNED)))
        namespace = account.namespace or self.config.credentials_namespace
        field = "spec.provider.aws.auth.serviceAccountRef"

        def exchange() -> dict[str, Any]:
            token = credential(field, lambda: self.credentials.service_account_token(
                namespace, account.name, account.audiences, SA_TOKEN_SECONDS))
            return aws.call(STS_PROVIDER, sts, "assume_role_with_web_identity", RoleArn=role,
                            RoleSessionName=self._session_name, WebIdentityToken=token,
                            DurationSeconds=ROLE_SESSION_SECONDS)

        return lambda: self._assume(field, role, exchange)

    @staticmethod
    def _assume(field: str, role: str, call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """One STS exchange as botocore's refreshable-credentials metadata."""
        try:
            answer = call()
        except AwsError as error:
            raise StoreError(f"{field}: assuming {role} refused: {error}", reason=AUTH_FAILED, field=field) from None
        creds = answer["Credentials"]
        expiry = creds["Expiration"]
        if isinstance(expiry, datetime):
            expiry = expiry.astimezone(timezone.utc).isoformat()
        return {"access_key": creds["AccessKeyId"], "secret_key": creds["SecretAccessKey"], "token": creds["SessionToken"],
                "expiry_time": expiry}

    def _refreshing(self, assume: Callable[[], dict[str, Any]]) -> boto3.session.Session:
        """A session on assumed-role credentials that assume again before they expire."""
        refreshable = botocore.credentials.RefreshableCredentials.create_from_metadata(
            metadata=assume(), refresh_using=assume, method="sts-assume-role"
        )
        core = botocore.session.get_session()
        core._credentials = refreshable  # botocore has no public setter; this private attribute is the usual way
        core.set_config_variable("region", self.spec.region)
        return boto3.session.Session(botocore_session=core)

    def client(self, service: str) -> Any:
        with self._lock:
            if service not in self._clients:
                if self._session is None:
                    self._session = self._new_session()
                endpoint = self.spec.endpointURL or aws.endpoint_url()
                self._clients[service] = self._session.client(
                    service, region_name=self.spec.region, endpoint_url=endpoint, config=STORE_BOTOCORE_CONFIG
                )
            return self._clients[service]

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()
            self._session = None


class AwsStore:
    """What both AWS stores share: the store's session and its calls (counted, retried, scrubbed)."""

    name: str  # the `provider` label of paved_provider_api_calls_total
    service: str  # the boto3 service name

    def __init__(self, config: StoreConfig, credentials: Credentials) -> None:
        self.aws = AwsStoreSession(config, credentials)
        self._lock = threading.Lock()
        self._prefetched: dict[RemoteKey, FetchResult] = {}  # values the version look-up brought, for fetch()

    def _take_prefetched(self, keys: Sequence[RemoteKey]) -> dict[RemoteKey, FetchResult]:
        return {key: self._prefetched.pop(key) for key in keys if key in self._prefetched}

    def _aws_call(self, operation: str, **params: Any) -> dict[str, Any]:
        """One call through paved.providers.aws.session.call; raises AwsError (or StoreError
        StoreTimeout when the deadline leaves no time for it)."""
        try:
            return aws.call(self.name, self.aws.client(self.service), operation, retry_timeouts=False, **params)
        except deadline.DeadlineExceeded as error:
            raise StoreError(f"{self.service} {operation}: {error}", reason=STORE_TIMEOUT) from None

    def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        """One call; any failure is a failure of the whole store (StoreError)."""
        try:
            return self._aws_call(operation, **params)
        except AwsError as error:
            raise store_error(error, f"{self.service} {operation}") from None

    def close(self) -> None:
        with self._lock:
            self._prefetched.clear()
        self.aws.close()
