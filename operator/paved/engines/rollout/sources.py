"""The Prometheus a rollout queries, as the provider needs it: the address (the rollout's, else
the operator's default) and the credentials, CA and headers its spec names, read from the
rollout's own namespace.

`spec.analysis.prometheus` names Secrets and ConfigMaps; `resolve_prometheus` turns it into the
settings of paved.providers.metrics.prometheus (`from_settings`), reading each object through a
`Read` port (the operator's own read of that namespace's Secret: the tenant's Secret, used
for the tenant's rollout). What it returns holds secret values: it is handed to the provider
and never written to status, an Event, a log or a message. Every problem names the field to
fix and never quotes a value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

from paved.errors import FieldError
from paved.kube import apply as kube_apply
from paved.kube.values import KeyProblem, key_value
from paved.rollout.refusal import REASON_CREDENTIALS_MISSING, REASON_INVALID_SPEC

Read = Callable[[str, str], Mapping[str, Any] | None]
"""(kind "Secret" or "ConfigMap", name) -> the object in the rollout's namespace, None if absent."""

FIELD = "spec.analysis.prometheus"


class SourceProblems(Exception):
    """The spec names an object or key that is not there or not usable (`reason`
    CredentialsMissing), or there is no address at all (InvalidSpec); `problems` name each field."""

    def __init__(self, problems: list[FieldError], reason: str = REASON_CREDENTIALS_MISSING) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems
        self.reason = reason


def resolve_prometheus(analysis: Mapping[str, Any], namespace: str, default_address: str | None,
                       read: Read) -> dict[str, Any]:
    """The provider settings for `analysis` (the rollout's spec.analysis): `address`, and when
    the spec asks for them `bearerToken`, `basicAuth` (user, password), `caBundle` (PEM) and
    `headers` (name, value pairs). Raises SourceProblems naming every field at fault."""
    source: Mapping[str, Any] = analysis.get("prometheus") or {}
    problems: list[FieldError] = []
    settings: dict[str, Any] = {"address": source.get("address") or default_address}
    if not settings["address"]:
        problems.append(FieldError(f"{FIELD}.address", (
            "is not set and the operator has no default Prometheus; set it, or start the operator with "
            "--prometheus-address (PAVED_PROMETHEUS_ADDRESS)")))
    values = _Values(namespace, read, problems)
    auth = source.get("auth") or {}
    if auth.get("bearerToken"):
        token = values.secret(f"{FIELD}.auth.bearerToken", auth["bearerToken"])
        if token is not None:
            token = token.strip()  # `echo token | kubectl create secret --from-file` leaves a newline
            if not token or any(ord(c) < 0x21 or ord(c) == 0x7F for c in token):
                problems.append(FieldError(f"{FIELD}.auth.bearerToken.secretKeyRef.key",
                                           "the value is empty or holds whitespace or control characters"))
            settings["bearerToken"] = token
    if auth.get("basic"):
        user = values.secret(f"{FIELD}.auth.basic.username", auth["basic"].get("username") or {})
        password = values.secret(f"{FIELD}.auth.basic.password", auth["basic"].get("password") or {})
        settings["basicAuth"] = (user, password)
    ca = (source.get("tls") or {}).get("ca") or {}
    if ca:
        pem = values.secret(f"{FIELD}.tls.ca", ca) if ca.get("secretKeyRef") else values.config(f"{FIELD}.tls.ca", ca)
        if pem is not None and "-----BEGIN CERTIFICATE-----" not in pem:
            where = "secretKeyRef" if ca.get("secretKeyRef") else "configMapKeyRef"
            problems.append(FieldError(f"{FIELD}.tls.ca.{where}.key", "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"))
        settings["caBundle"] = pem
    headers = source.get("headers") or []
    if headers:
        settings["headers"] = tuple((str(h.get("name")), str(h.get("value", ""))) for h in headers)
    if problems:
        raise SourceProblems(problems, REASON_INVALID_SPEC if not settings["address"] else REASON_CREDENTIALS_MISSING)
    return settings


class _Values:
    """Reads each referenced object once per resolution and names the field of a missing one."""

    def __init__(self, namespace: str, read: Read, problems: list[FieldError]) -> None:
        self.namespace, self.read, self.problems = namespace, read, problems
        self.objects: dict[tuple[str, str], Mapping[str, Any] | None] = {}

    def secret(self, field: str, ref: Mapping[str, Any]) -> str | None:
        return self._value("Secret", f"{field}.secretKeyRef", ref.get("secretKeyRef") or {})

    def config(self, field: str, ref: Mapping[str, Any]) -> str | None:
        return self._value("ConfigMap", f"{field}.configMapKeyRef", ref.get("configMapKeyRef") or {})

    def _value(self, kind: Literal["Secret", "ConfigMap"], field: str, selector: Mapping[str, Any]) -> str | None:
        name, key = str(selector.get("name") or ""), str(selector.get("key") or "")
        if (kind, name) not in self.objects:
            self.objects[(kind, name)] = self.read(kind, name)
        try:
            return key_value(kind, self.objects[(kind, name)], self.namespace, name, key)
        except KeyProblem as problem:
            self.problems.append(FieldError(f"{field}.{problem.part}", str(problem)))
            return None


def kube_read(namespace: str) -> Read:
    """The `Read` port on the Kubernetes API: the operator's own read in the rollout's namespace."""

    def read(kind: str, name: str) -> Mapping[str, Any] | None:
        return kube_apply.get("v1", kind, name, namespace)

    return read
