"""`aws` store provider, SSM Parameter Store side (`service: ParameterStore`).

Cost model, per cycle and store: `GetParameters` with up to 10 names per call
(`GET_PARAMETERS_MAX`, the API's limit) and `WithDecryption=True`, so N distinct parameters
cost ceil(N/10) calls whether or not anything changed. The same answer carries each
parameter's version, which is what change detection compares, and its value, which is kept
for the fetch that follows, so a changed parameter costs no extra call. (DescribeParameters
could list versions without values, 50 per page on AWS, but it is throttled far harder than
GetParameters and moto pages it by 10, so it would not be cheaper where it matters.)

Pins: `version: "3"` reads `name:3`, `version: "prod"` reads the label `name:prod` (the
GetParameters selector syntax). Names missing from the answer come back in
InvalidParameters, which is a batch answer: each of them is asked about alone with
GetParameter, and only its ParameterNotFound / ParameterVersionNotFound makes the key
Missing (paved.secretsync.model.Missing); a missing parameter costs one more call per cycle.

Credentials, endpoint and calls: as for Secrets Manager (AwsStore in
paved.providers.aws.store). Calls are counted in
`paved_provider_api_calls_total{provider="aws-ssm"}`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from paved.providers.aws.store import AwsStore, store_error
from paved.providers.aws.session import AwsError
from paved.secretsync.model import FetchResult, KeyFailure, KeyState, Missing, Present, RemoteKey, RemoteValue

PROVIDER = "aws-ssm"
GET_PARAMETERS_MAX = 10
_NOT_FOUND = {"ParameterNotFound": "no such parameter", "ParameterVersionNotFound": "no such version",
              "ParameterVersionLabelNotFound": "no such label"}


def selector(remote: RemoteKey) -> str:
    """The GetParameters name of a key: `name`, `name:version` or `name:label`."""
    return remote.key if remote.version is None else f"{remote.key}:{remote.version}"


def unique_name_chunks(keys: Sequence[RemoteKey]) -> list[list[RemoteKey]]:
    """Batches of at most GET_PARAMETERS_MAX keys, no two of the same parameter in one batch."""
    batches: list[list[RemoteKey]] = []
    for remote in sorted(set(keys)):
        home = next((b for b in batches if len(b) < GET_PARAMETERS_MAX and all(k.key != remote.key for k in b)), None)
        if home is None:
            batches.append(home := [])
        home.append(remote)
    return batches


class ParameterStore(AwsStore):
    name = PROVIDER
    service = "ssm"
    batch_size = GET_PARAMETERS_MAX

    def check(self) -> str:
        self._call("describe_parameters", MaxResults=1)
        return f"aws ssm parameter store in {self.aws.spec.region} with {self.aws.how}"

    def _get(self, keys: Sequence[RemoteKey]) -> dict[RemoteKey, FetchResult]:
        result: dict[RemoteKey, FetchResult] = {}
        for chunk in unique_name_chunks(keys):
            names = [selector(k) for k in chunk]
            answer = self._call("get_parameters", Names=names, WithDecryption=True)
            # A chunk never holds two selectors of one parameter, so the answer maps back by name
            # (not every endpoint returns the Selector field).
            by_name: dict[str, FetchResult] = {}
            for parameter in answer.get("Parameters", []):
                value = _value(parameter)
                by_name[parameter.get("Name", "")] = value
                if parameter.get("ARN"):
                    by_name[parameter["ARN"]] = value
            for remote in chunk:
                # Not in the answer (InvalidParameters, or not at all): ask about it alone.
                result[remote] = by_name.get(remote.key) or self._get_one(remote)
        return result

    def _get_one(self, remote: RemoteKey) -> FetchResult:
        """GetParameter of exactly `remote` (the per-key call behind every Missing)."""
        try:
            answer = self._aws_call("get_parameter", Name=selector(remote), WithDecryption=True)
        except AwsError as error:
            if error.code in _NOT_FOUND:
                return Missing(_NOT_FOUND[error.code])
            if error.code in ("AccessDeniedException", "AccessDenied"):
                return KeyFailure("PermissionDenied", f"access to parameter {remote.key!r} denied")
            raise store_error(error, "ssm get_parameter") from None
        return _value(answer.get("Parameter") or {})

    def versions(self, keys: Sequence[RemoteKey]) -> dict[RemoteKey, KeyState]:
        with self._lock:
            self._prefetched = self._get(keys)
            states: dict[RemoteKey, KeyState] = {}
            for remote, value in self._prefetched.items():
                states[remote] = Present(value.version) if isinstance(value, RemoteValue) else value
            return states

    def fetch(self, keys: Sequence[RemoteKey]) -> dict[RemoteKey, FetchResult]:
        with self._lock:
            result = self._take_prefetched(keys)
            rest = [k for k in keys if k not in result]
            if rest:
                result.update(self._get(rest))
            return result


def _value(parameter: dict[str, Any]) -> RemoteValue:
    return RemoteValue(str(parameter.get("Version", "")), parameter.get("Value", ""))
