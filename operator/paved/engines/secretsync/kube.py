"""The Kubernetes side of the secret sync engine, as the engine needs it, over the one KubePort
(paved.kube.port; the unit tests and benchmarks hand it tests/support/kube.FakeKube)."""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from paved import API_VERSION, operator_namespace
from paved.api.common import READY, STALE
from paved.api.secrets import ExternalSecretRefStatus
from paved.kube import events as kube_events
from paved.kube.apply import MANAGED_BY, MANAGED_BY_LABEL
from paved.kube.client import ApiError, request, resource_info
from paved.kube.port import ApiKube, KubePort
from paved.kube.status import StatusWriter
from paved.kube.values import KeyProblem, key_value
from paved.providers.base import Owner
from paved.providers.secretstores import AUTH_FAILED, CREDENTIALS_MISSING, SERVICE_ACCOUNT_TOKENS_LABEL, StoreError
from paved.secretsync import target
from paved.secretsync.model import StoreKey

log = logging.getLogger(__name__)

REF_KIND = "ExternalSecretRef"
HASH_KEY_SECRET = "paved-content-hash-key"  # noqa: S105 - in the operator's namespace; keys every content digest
STATUS_FIELD_MANAGER = "paved-secret-sync"  # owns every status field but other writers' conditions
REF_CONDITIONS = frozenset({READY, STALE})  # the ref's conditions the engine writes; others (PolicyCompliant) are kept
REF_STATUS = StatusWriter.of_model(STATUS_FIELD_MANAGER, ExternalSecretRefStatus, REF_CONDITIONS)
WORKLOADS = (("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"))


class KubeApi:
    """The engine's Kubernetes reads and writes, over a KubePort (real: ApiKube; unit tests and
    benchmarks: tests/support/kube.FakeKube), and the stores' credentials (StoreCredentials)."""

    def __init__(self, kube: KubePort | None = None) -> None:
        # The engine's Events (one per Secret written): a cold start must not post thousands inline.
        self.kube = kube or ApiKube(kube_events.EventRecorder())

    def get_store(self, key: StoreKey) -> dict[str, Any] | None:
        return self.kube.get(API_VERSION, key.kind, key.name, key.namespace or None)

    def namespace_labels(self, name: str) -> dict[str, str] | None:
        try:
            namespace = self.kube.get("v1", "Namespace", name)
        except ApiError as error:  # unreadable: label-selected allowances refuse (paved.secretsync.access)
            log.warning("namespace %s not readable: %s %s", name, error.status, error.reason)
            return None
        return dict((namespace or {}).get("metadata", {}).get("labels") or {}) if namespace else None

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        # From the watch cache (a cycle writing many Secrets of a namespace lists them instead).
        # A Merge write is guarded by the resourceVersion read, so a read a moment behind costs
        # a retry, not data.
        return self.kube.get("v1", "Secret", name, namespace, cached=True)

    def secrets_metadata(self, namespace: str) -> dict[str, dict[str, Any]]:
        """Every Secret of `namespace` by name, as much of its metadata as the engine reads of a
        live target (target.live_view), listed without data a page at a time."""
        return {item["metadata"]["name"]: target.live_view(item)
                for item in self.kube.list("v1", "Secret", namespace, metadata_only=True)}

    def content_hash_key(self) -> bytes:
        """The operator's key for content digests: random, made once, kept in its namespace."""
        namespace = operator_namespace()
        live = self.kube.get("v1", "Secret", HASH_KEY_SECRET, namespace)
        if live is None:
            body = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": HASH_KEY_SECRET, "namespace": namespace, "labels": {MANAGED_BY_LABEL: MANAGED_BY}},
                "type": "Opaque",
                "data": {"key": base64.b64encode(secrets.token_bytes(32)).decode()},
            }
            try:
                self.kube.create(body)
            except ApiError as error:
                if not error.already_exists:  # another replica made it first: use theirs
                    raise
            live = self.kube.get("v1", "Secret", HASH_KEY_SECRET, namespace) or {}
        return base64.b64decode((live.get("data") or {})["key"])

    def apply_secret(self, owner: Owner, body: Mapping[str, Any]) -> None:
        self.kube.apply(body, owner)

    def merge_secret(self, live: Mapping[str, Any], patch: Mapping[str, Any]) -> None:
        self.kube.merge_patch(live, patch)

    def delete_secret(self, namespace: str, name: str, uid: str | None) -> None:
        self.kube.delete("v1", "Secret", name, namespace, uid=uid)

    def apply_ref_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Write the engine's part of the status (REF_STATUS): one request, no read (the engine
        compared it with its own memory of the status), and the policy audit's PolicyCompliant
        is not the engine's to touch."""
        REF_STATUS.write({"apiVersion": API_VERSION, "kind": REF_KIND, "metadata": {"name": name, "namespace": namespace}},
                         status, kube=self.kube)

    def list_workloads(self, namespace: str) -> list[dict[str, Any]]:
        return [item for api_version, kind in WORKLOADS for item in self.kube.list(api_version, kind, namespace)]

    def patch_workload(self, kind: str, namespace: str, name: str, body: Mapping[str, Any]) -> None:
        # Not kube_apply.merge_patch: a resourceVersion guard would lose the restart to any concurrent write.
        self.kube.patch("apps/v1", kind, name, namespace, body)

    def event(self, owner: Owner, reason: str, message: str, type: str = "Normal") -> None:
        self.kube.event(owner, reason, message, type)  # type: ignore[arg-type]

    def secret_value(self, namespace: str, name: str, key: str) -> str:
        try:
            secret = self.kube.get("v1", "Secret", name, namespace)
        except ApiError as error:
            raise StoreError(f"reading Secret {namespace}/{name} failed: {error.status} {error.reason}",
                             reason=CREDENTIALS_MISSING) from None
        try:
            return key_value("Secret", secret, namespace, name, key)
        except KeyProblem as problem:
            raise StoreError(str(problem), reason=CREDENTIALS_MISSING) from None

    def service_account_token(self, namespace: str, name: str, audiences: Sequence[str], seconds: int) -> str:
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": list(audiences), "expirationSeconds": seconds},
        }
        try:
            answer = request("POST", resource_info("v1", "ServiceAccount").path(name, namespace, "token"),
                             operation="token-request", body=body)
        except ApiError as error:
            if error.not_found:
                raise StoreError(f"ServiceAccount {namespace}/{name} not found", reason=CREDENTIALS_MISSING) from None
            if error.status == 403:  # deploy/token-policy.yaml (the namespace did not opt in), or RBAC
                raise StoreError(
                    f"the API server refused a token for ServiceAccount {namespace}/{name} (403): label namespace "
                    f"{namespace} {SERVICE_ACCOUNT_TOKENS_LABEL}=allowed to let Paved authenticate as its "
                    "ServiceAccounts (deploy/token-policy.yaml)", reason=AUTH_FAILED) from None
            raise StoreError(f"TokenRequest for ServiceAccount {namespace}/{name} failed: {error.status} {error.reason}",
                             reason=AUTH_FAILED) from None
        return str(answer["status"]["token"])
