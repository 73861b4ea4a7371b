"""`aws` store provider, Secrets Manager side (and what it shares with SSM: credentials, calls).

Cost model (what the bench measures), per cycle and store:
- change detection: `ListSecrets` with a `name` filter of up to 10 names per call
  (`LIST_NAMES_PER_CALL`, the API's limit on filter values) returns each secret's version
  ids and stages without any value, so N distinct secrets cost ceil(N/10) calls;
- values only for secrets whose AWSCURRENT (or pinned stage's) version id changed, with
  `BatchGetSecretValue`, up to 20 secrets per call (`BATCH_GET_MAX`);
- a secret absent from ListSecrets (or listed without the pinned stage) is read with
  BatchGetSecretValue (the listing is eventually consistent); a key that the batch answer
  does not give a value for (an Errors entry, or not in the answer at all) is asked about
  alone with GetSecretValue, and only that call's ResourceNotFoundException, or
  DescribeSecret's DeletedDate after an InvalidRequestException, makes it Missing
  (paved.secretsync.model.Missing); so a missing key costs one more call, once per cycle;
- keys given as ARNs, and keys pinned to a VersionId, skip the listing: a VersionId is
  immutable (fetched once, then cached by the engine), an ARN is read with the batch; a
  partial ARN (without the random suffix AWS appends) is matched to the full ARN the batch
  answers with;
- credentials without `secretsmanager:ListSecrets` (common in ESO setups, which only grant
  GetSecretValue) still work: versions then come from BatchGetSecretValue itself, so every
  cycle costs ceil(N/20) value reads instead of ceil(N/10) listings.
Every call goes through paved.providers.aws.session.call: counted in
`paved_provider_api_calls_total{provider="aws-secretsmanager"}`, retried with backoff and
jitter when transient, errors scrubbed.

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

import logging
import re
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
from paved.providers import deadline, secretstores
from paved.providers.aws import session as aws
from paved.providers.aws.session import AwsError
from paved.providers.secretstores import (
    AUTH_FAILED,
    NOT_FOUND_UNCONFIRMED,
    PROVIDER_ERROR,
    SA_TOKEN_SECONDS,
    STORE_TIMEOUT,
    UNREACHABLE,
    Credentials,
    StoreConfig,
    StoreError,
    chunks,
    credential,
)
from paved.secretsync.model import FetchResult, KeyFailure, KeyState, Missing, Present, RemoteKey, RemoteValue

log = logging.getLogger(__name__)

PROVIDER = "aws-secretsmanager"
STS_PROVIDER = "aws-sts"
LIST_NAMES_PER_CALL = 10
LIST_PAGE = 100
BATCH_GET_MAX = 20
ROLE_SESSION_SECONDS = 3600
CONNECT_TIMEOUT = 3
REQUEST_TIMEOUT = 10  # seconds for an answer to one store call
# One botocore attempt per call: the wrapper's loop retries what is worth it, within the deadline.
STORE_BOTOCORE_CONFIG = aws.BOTOCORE_CONFIG.merge(botocore.config.Config(
    connect_timeout=CONNECT_TIMEOUT, read_timeout=REQUEST_TIMEOUT, retries={"mode": "standard", "total_max_attempts": 1}))
ARN_SUFFIX = 7  # "-" and the six random characters AWS appends to a secret's name in its ARN

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
_VERSION_ID = re.compile(r"^[A-Za-z0-9-]{32,64}$")


def is_version_id(pin: str) -> bool:
    """VersionIds are UUID-like; anything else is a staging label (AWSCURRENT, AWSPREVIOUS, ...)."""
    return bool(_VERSION_ID.fullmatch(pin)) and not pin.startswith("AWS")


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
        assert spec is not None
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
            raise StoreError(f"{self.service} {operation}: no answer before {error}", reason=STORE_TIMEOUT) from None

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


class SecretsManagerStore(AwsStore):
    """Secrets Manager: ListSecrets for versions, BatchGetSecretValue for values."""

    name = PROVIDER
    service = "secretsmanager"
    batch_size = BATCH_GET_MAX
    _list_denied = False  # set once ListSecrets was refused: versions then come with the values

    def _list(self, **params: Any) -> dict[str, Any] | None:
        """ListSecrets, or None when the policy does not allow it (then values are read directly)."""
        if self._list_denied:
            return None
        try:
            return self._aws_call("list_secrets", **params)
        except AwsError as error:
            if error.code in ("AccessDeniedException", "AccessDenied"):
                log.info("secretsmanager store %s may not ListSecrets; reading versions with BatchGetSecretValue",
                         self.aws.config.key)
                self._list_denied = True
                return None
            raise store_error(error, "secretsmanager list_secrets") from None

    def check(self) -> str:
        where = f"aws secretsmanager in {self.aws.spec.region} with {self.aws.how}"
        if self._list(MaxResults=1) is None:
            # Denied is an answer from AWS to these credentials: they authenticated.
            return f"{where} (no ListSecrets permission: every cycle reads values)"
        return where

    def versions(self, keys: Sequence[RemoteKey]) -> dict[RemoteKey, KeyState]:
        with self._lock:
            self._prefetched = {}
            result: dict[RemoteKey, KeyState] = {}
            listed = [k for k in keys if not k.key.startswith("arn:") and (k.version is None or not is_version_id(k.version))]
            for remote in keys:
                if remote not in listed:  # ARN (read with the batch) or an immutable VersionId
                    result[remote] = Present(remote.version if remote.version else None)
            names = sorted({k.key for k in listed})
            found: dict[str, dict[str, list[str]]] = {}
            for chunk in chunks(names, LIST_NAMES_PER_CALL):
                token: str | None = None
                while True:
                    params: dict[str, Any] = {"Filters": [{"Key": "name", "Values": chunk}], "MaxResults": LIST_PAGE}
                    if token:
                        params["NextToken"] = token
                    answer = self._list(**params)
                    if answer is None:  # no ListSecrets permission: learn versions from the values
                        return {**result, **self._versions_from_values(listed)}
                    for entry in answer.get("SecretList", []):
                        if entry.get("Name") in chunk:  # the filter matches prefixes
                            found[entry["Name"]] = entry.get("SecretVersionsToStages") or {}
                    token = answer.get("NextToken")
                    if not token:
                        break
            unconfirmed = []
            for remote in listed:
                stages = found.get(remote.key)
                if stages is None:
                    unconfirmed.append(remote)
                    continue
                stage = remote.version or "AWSCURRENT"
                version = next((vid for vid, labels in stages.items() if stage in labels), None)
                if version:
                    result[remote] = Present(version)
                else:
                    unconfirmed.append(remote)  # listed without that stage: only a read of it tells
            if unconfirmed:
                # Not listed: read them (listing is eventually consistent; _batch_get asks about
                # each key it gets no value for alone, so Missing is a per-key answer).
                for remote, outcome in self._batch_get(unconfirmed).items():
                    if isinstance(outcome, RemoteValue):
                        self._prefetched[remote] = outcome
                        result[remote] = Present(outcome.version)
                    else:
                        result[remote] = outcome
            return result

    def _versions_from_values(self, keys: Sequence[RemoteKey]) -> dict[RemoteKey, KeyState]:
        """Versions through BatchGetSecretValue (20 per call), keeping the values for fetch()."""
        result: dict[RemoteKey, KeyState] = {}
        latest = [k for k in keys if k.version is None]
        for remote, outcome in self._batch_get(latest).items():
            if isinstance(outcome, RemoteValue):
                self._prefetched[remote] = outcome
                result[remote] = Present(outcome.version)
            else:
                result[remote] = outcome
        for remote in keys:
            result.setdefault(remote, Present(None))  # stage pins: resolved by fetch()
        return result

    def _batch_get(self, keys: Sequence[RemoteKey]) -> dict[RemoteKey, FetchResult]:
        """Latest values of `keys` (pins are read one by one), 20 per BatchGetSecretValue; a key
        the answer gives no value for is asked about alone (_get_one) unless the answer already
        names a per-key failure that is not a not-found (denied, undecryptable)."""
        result: dict[RemoteKey, FetchResult] = {}
        for chunk in chunks(sorted(k for k in keys if k.version is None), BATCH_GET_MAX):
            answer = self._call("batch_get_secret_value", SecretIdList=[k.key for k in chunk])
            values = answer.get("SecretValues", [])
            errors = {error.get("SecretId", ""): error.get("ErrorCode", "") for error in answer.get("Errors", [])}
            for remote in chunk:
                entry = _entry_for(remote.key, values)
                if entry is not None:
                    result[remote] = _value(entry)
                elif errors.get(remote.key) in _PER_KEY_FAILURES:
                    result[remote] = _key_error(errors[remote.key], remote.key)
                else:  # not-found, scheduled for deletion, or not in the answer at all: ask about it alone
                    result[remote] = self._get_one(remote)
        for remote in keys:
            if remote.version is not None:
                result[remote] = self._get_one(remote)
        return result

    def _get_one(self, remote: RemoteKey) -> FetchResult:
        """GetSecretValue of exactly `remote` (the per-key call behind every Missing)."""
        pin = {} if remote.version is None else (
            {"VersionId": remote.version} if is_version_id(remote.version) else {"VersionStage": remote.version})
        try:
            return _value(self._aws_call("get_secret_value", SecretId=remote.key, **pin))
        except AwsError as error:
            if error.code == "ResourceNotFoundException":
                return Missing("no such version" if pin else "no such secret")
            if error.code == "InvalidRequestException":
                return self._scheduled_for_deletion(remote, error)
            if error.code in _PER_KEY_FAILURES:
                return _key_error(error.code, remote.key)
            raise store_error(error, "secretsmanager get_secret_value") from None

    def _scheduled_for_deletion(self, remote: RemoteKey, refused: AwsError) -> Missing | KeyFailure:
        """InvalidRequestException on a read is how AWS answers for a secret scheduled for
        deletion, but not only that: DescribeSecret's DeletedDate tells."""
        try:
            described = self._aws_call("describe_secret", SecretId=remote.key)
        except AwsError as error:
            if error.code == "ResourceNotFoundException":
                return Missing("no such secret")
            described = {}
        if described.get("DeletedDate"):
            return Missing("secret is scheduled for deletion")
        return KeyFailure(NOT_FOUND_UNCONFIRMED, f"secret {remote.key!r} cannot be read ({refused.code}) and is not "
                                                 "known to be scheduled for deletion; not treated as deleted")

    def fetch(self, keys: Sequence[RemoteKey]) -> dict[RemoteKey, FetchResult]:
        with self._lock:
            result = self._take_prefetched(keys)
            result.update(self._batch_get([k for k in keys if k not in result]))
            return result


_PER_KEY_FAILURES = frozenset({"AccessDeniedException", "AccessDenied", "DecryptionFailure"})


def _value(entry: dict[str, Any]) -> RemoteValue:
    data = entry.get("SecretString")
    return RemoteValue(entry.get("VersionId", ""), data if data is not None else bytes(entry.get("SecretBinary") or b""))


def _entry_for(key: str, entries: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The batch answer's entry for `key`: by name, by full ARN, or by a partial ARN (the full
    ARN minus the "-xxxxxx" suffix AWS appends)."""
    for entry in entries:
        arn = str(entry.get("ARN") or "")
        if key in (entry.get("Name"), arn) or (
                key.startswith("arn:") and len(arn) == len(key) + ARN_SUFFIX and arn.startswith(key + "-")):
            return entry
    return None


def _key_error(code: str, key: str) -> KeyFailure:
    if code in ("AccessDeniedException", "AccessDenied"):
        return KeyFailure("PermissionDenied", f"access to secret {key!r} denied")
    return KeyFailure("DecryptionFailure", f"secret {key!r} cannot be decrypted with its KMS key")


def _factory(config: StoreConfig, credentials: Credentials) -> Any:
    spec = config.provider.aws
    assert spec is not None
    if spec.service == "ParameterStore":
        from paved.providers.aws.ssm import ParameterStore

        return ParameterStore(config, credentials)
    return SecretsManagerStore(config, credentials)


secretstores.register("aws", _factory)
