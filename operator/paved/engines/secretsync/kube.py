"""The Kubernetes side of the secret sync engine, as the engine needs it: a Protocol and the
real implementation over paved.kube (the unit tests use an in-memory fake)."""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from paved import API_VERSION, operator_namespace
from paved.api.common import READY, STALE
from paved.api.secrets import ExternalSecretRefStatus
from paved.kube import apply as kube_apply
from paved.kube import events as kube_events
from paved.kube.apply import MANAGED_BY, MANAGED_BY_LABEL
from paved.kube.client import ApiError, list_pages, request, resource_info
from paved.kube.status import StatusWriter
from paved.kube.values import KeyProblem, key_value
from paved.providers.base import Owner
from paved.providers.secretstores import AUTH_FAILED, CREDENTIALS_MISSING, StoreError
from paved.secretsync import target
from paved.secretsync.model import StoreKey

log = logging.getLogger(__name__)

REF_KIND = "ExternalSecretRef"
HASH_KEY_SECRET = "paved-content-hash-key"  # noqa: S105 - in the operator's namespace; keys every content digest
STATUS_FIELD_MANAGER = "paved-secret-sync"  # owns every status field but other writers' conditions
REF_CONDITIONS = frozenset({READY, STALE})  # the ref's conditions the engine writes; others (PolicyCompliant) are kept
REF_STATUS = StatusWriter.of_model(STATUS_FIELD_MANAGER, ExternalSecretRefStatus, REF_CONDITIONS)
LIST_PAGE_SIZE = 500
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
WORKLOADS = (("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"))


class KubePort(Protocol):
    """The Kubernetes reads and writes of the engine (real: KubeApi; unit tests: a fake)."""

    def get_store(self, key: StoreKey) -> dict[str, Any] | None: ...
    def namespace_labels(self, name: str) -> dict[str, str] | None: ...
    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def secrets_metadata(self, namespace: str) -> dict[str, dict[str, Any]]: ...
    def apply_secret(self, owner: Owner, body: Mapping[str, Any]) -> None: ...
    def merge_secret(self, live: Mapping[str, Any], patch: Mapping[str, Any]) -> None: ...
    def delete_secret(self, namespace: str, name: str, uid: str | None) -> None: ...
    def apply_ref_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None: ...
    def list_workloads(self, namespace: str) -> list[dict[str, Any]]: ...
    def patch_workload(self, kind: str, namespace: str, name: str, body: Mapping[str, Any]) -> None: ...
    def event(self, owner: Owner, reason: str, message: str, type: str = "Normal") -> None: ...
    def secret_value(self, namespace: str, name: str, key: str) -> str: ...
    def service_account_token(self, namespace: str, name: str, audiences: Sequence[str], seconds: int) -> str: ...
    def content_hash_key(self) -> bytes: ...


class KubeApi:
    """KubePort over paved.kube (the operator's ServiceAccount, deploy/rbac.yaml)."""

    def __init__(self) -> None:
        # The engine's Events (one per Secret written): a cold start must not post thousands inline.
        self.recorder = kube_events.EventRecorder()

    def get_store(self, key: StoreKey) -> dict[str, Any] | None:
        return kube_apply.get(API_VERSION, key.kind, key.name, key.namespace or None)

    def namespace_labels(self, name: str) -> dict[str, str] | None:
        try:
            namespace = kube_apply.get("v1", "Namespace", name)
        except ApiError as error:  # unreadable: label-selected allowances refuse (paved.secretsync.access)
            log.warning("namespace %s not readable: %s %s", name, error.status, error.reason)
            return None
        return dict((namespace or {}).get("metadata", {}).get("labels") or {}) if namespace else None

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        # From the watch cache (a cycle writing many Secrets of a namespace lists them instead).
        # A Merge write is guarded by the resourceVersion read, so a read a moment behind costs
        # a retry, not data.
        return kube_apply.get("v1", "Secret", name, namespace, cached=True)

    def secrets_metadata(self, namespace: str) -> dict[str, dict[str, Any]]:
        """Every Secret of `namespace` by name, as much of its metadata as the engine reads of a
        live target (target.live_view), listed without data a page at a time."""
        path = resource_info("v1", "Secret").path(namespace=namespace)
        return {item["metadata"]["name"]: target.live_view(item)
                for page in list_pages(path, limit=LIST_PAGE_SIZE, accept=METADATA_ONLY) for item in page.get("items") or []}

    def content_hash_key(self) -> bytes:
        """The operator's key for content digests: random, made once, kept in its namespace."""
        namespace = operator_namespace()
        live = kube_apply.get("v1", "Secret", HASH_KEY_SECRET, namespace)
        if live is None:
            body = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": HASH_KEY_SECRET, "namespace": namespace, "labels": {MANAGED_BY_LABEL: MANAGED_BY}},
                "type": "Opaque",
                "data": {"key": base64.b64encode(secrets.token_bytes(32)).decode()},
            }
            try:
                request("POST", resource_info("v1", "Secret").path(namespace=namespace), operation="create", body=body)
            except ApiError as error:
                if not error.already_exists:  # another replica made it first: use theirs
                    raise
            live = kube_apply.get("v1", "Secret", HASH_KEY_SECRET, namespace) or {}
        return base64.b64decode((live.get("data") or {})["key"])

    def apply_secret(self, owner: Owner, body: Mapping[str, Any]) -> None:
        kube_apply.apply(body, owner)

    def merge_secret(self, live: Mapping[str, Any], patch: Mapping[str, Any]) -> None:
        kube_apply.merge_patch(live, patch)

    def delete_secret(self, namespace: str, name: str, uid: str | None) -> None:
        kube_apply.delete("v1", "Secret", name, namespace, uid=uid)

    def apply_ref_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Write the engine's part of the status (REF_STATUS): one request, no read (the engine
        compared it with its own memory of the status), and the policy audit's PolicyCompliant
        is not the engine's to touch."""
        REF_STATUS.write({"apiVersion": API_VERSION, "kind": REF_KIND, "metadata": {"name": name, "namespace": namespace}},
                         status)

    def list_workloads(self, namespace: str) -> list[dict[str, Any]]:
        found = []
        for api_version, kind in WORKLOADS:
            answer = request("GET", resource_info(api_version, kind).path(namespace=namespace), operation="list")
            for item in answer.get("items", []):
                item.setdefault("apiVersion", api_version)
                item.setdefault("kind", kind)
                found.append(item)
        return found

    def patch_workload(self, kind: str, namespace: str, name: str, body: Mapping[str, Any]) -> None:
        # Not kube_apply.merge_patch: a resourceVersion guard would lose the restart to any concurrent write.
        request("PATCH", resource_info("apps/v1", kind).path(name, namespace), operation="patch", body=body,
                content_type="application/merge-patch+json")

    def event(self, owner: Owner, reason: str, message: str, type: str = "Normal") -> None:
        self.recorder.record(owner, reason, message, type)  # type: ignore[arg-type]

    def secret_value(self, namespace: str, name: str, key: str) -> str:
        try:
            secret = kube_apply.get("v1", "Secret", name, namespace)
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
            raise StoreError(f"TokenRequest for ServiceAccount {namespace}/{name} failed: {error.status} {error.reason}",
                             reason=AUTH_FAILED) from None
        return str(answer["status"]["token"])
