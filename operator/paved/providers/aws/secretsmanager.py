"""`aws` store provider, Secrets Manager side (`service: SecretsManager`, the default).

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

Credentials, endpoint, timeouts and the auth check: paved.providers.aws.store.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from paved.providers.aws.session import AwsError
from paved.providers.aws.store import AwsStore, store_error
from paved.providers.secretstores import NOT_FOUND_UNCONFIRMED, chunks
from paved.secretsync.model import FetchResult, KeyFailure, KeyState, Missing, Present, RemoteKey, RemoteValue

log = logging.getLogger(__name__)

PROVIDER = "aws-secretsmanager"
LIST_NAMES_PER_CALL = 10
LIST_PAGE = 100
BATCH_GET_MAX = 20
ARN_SUFFIX = 7  # "-" and the six random characters AWS appends to a secret's name in its ARN

_VERSION_ID = re.compile(r"^[A-Za-z0-9-]{32,64}$")


def is_version_id(pin: str) -> bool:
    """VersionIds are UUID-like; anything else is a staging label (AWSCURRENT, AWSPREVIOUS, ...)."""
    return bool(_VERSION_ID.fullmatch(pin)) and not pin.startswith("AWS")


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
