"""THE Kubernetes port: the object operations the engines and providers are written against.

`KubePort` is what code that reads and writes Kubernetes objects depends on when it wants a
substitute in unit tests and benchmarks (tests/support/kube.py: FakeKube, held to the same
contract as `ApiKube` by tests/support/kube_contract.py on both). `ApiKube` is the real one,
over paved.kube.apply and paved.kube.client (the operator's ServiceAccount, deploy/rbac.yaml).

Errors are the real adapter's: ApiError (404 `not_found`, 409 `already_exists` or a
resourceVersion Conflict), never a substitute's own type.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from paved.kube import apply as kube_apply
from paved.kube import events as kube_events
from paved.kube.apply import FIELD_MANAGER, ObjectKey, key_of, owner_selector
from paved.kube.client import ApiError, Json, list_pages, request, resource_info
from paved.providers.base import Owner

log = logging.getLogger(__name__)

LIST_PAGE_SIZE = 500
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"


class KubePort(Protocol):
    """Kubernetes objects as plain dicts (real: ApiKube; unit tests and benchmarks: FakeKube)."""

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None, *,
            cached: bool = False) -> Json | None:
        """The live object, None when absent; `cached` may trail the latest write a moment."""

    def list(self, api_version: str, kind: str, namespace: str | None = None, selector: str = "", *,
             metadata_only: bool = False) -> list[Json]:
        """Every object of `kind` (in `namespace`, or everywhere) matching the label `selector`,
        each with its apiVersion and kind; only apiVersion, kind and metadata with `metadata_only`."""

    def apply(self, body: Mapping[str, Any], owner: Owner, *, field_manager: str = FIELD_MANAGER,
              allow_unowned: bool = False) -> Json:
        """Server-side apply `body` as `owner`'s child (paved.kube.apply.apply: labels, ownerReference;
        OwnershipError for a child that cannot have one, unless `allow_unowned`: the owner annotation)."""

    def apply_fields(self, body: Mapping[str, Any], *, field_manager: str, subresource: str | None = None) -> Json:
        """Server-side apply `body` as given (no owner, no labels), forced: a few fields of an
        object Paved does not own, or (`subresource="status"`) a status part."""

    def create(self, body: Mapping[str, Any], owner: Owner | None = None) -> Json:
        """Create `body` (as `owner`'s child when given: paved.kube.apply.decorate); ApiError
        `already_exists` when the name is taken."""

    def merge_patch(self, live: Mapping[str, Any], patch: Mapping[str, Any]) -> Json:
        """JSON merge patch of `live`, guarded by its resourceVersion (409 when written since)."""

    def patch(self, api_version: str, kind: str, name: str, namespace: str | None, patch: Mapping[str, Any]) -> Json:
        """JSON merge patch, unguarded (lands on whatever is live); 404 when absent."""

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None, *,
               uid: str | None = None) -> bool:
        """Delete (only the incarnation `uid` when given); False when there was nothing to delete."""

    def event(self, owner: Owner, reason: str, message: str, type: kube_events.EventType = "Normal") -> None:
        """Record an Event on `owner` (never raises)."""

    def namespaced(self, api_version: str, kind: str) -> bool:
        """Whether objects of `kind` live in a namespace; ApiError 404 when the kind is not served."""


class ApiKube:
    """KubePort over the API server. With a `recorder`, Events are posted in its background
    thread (for writers whose Events come by the thousand), else inline."""

    def __init__(self, recorder: kube_events.EventRecorder | None = None) -> None:
        self.recorder = recorder

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None, *,
            cached: bool = False) -> Json | None:
        return kube_apply.get(api_version, kind, name, namespace, cached=cached)

    def list(self, api_version: str, kind: str, namespace: str | None = None, selector: str = "", *,
             metadata_only: bool = False) -> list[Json]:
        path = resource_info(api_version, kind).path(namespace=namespace)
        found: list[Json] = []
        for page in list_pages(path, limit=LIST_PAGE_SIZE, query={"labelSelector": selector or None},
                               accept=METADATA_ONLY if metadata_only else "application/json"):
            for item in page.get("items") or []:
                item.setdefault("apiVersion", api_version)  # list items carry no apiVersion/kind of their own
                item.setdefault("kind", kind)
                found.append(item)
        return found

    def apply(self, body: Mapping[str, Any], owner: Owner, *, field_manager: str = FIELD_MANAGER,
              allow_unowned: bool = False) -> Json:
        return kube_apply.apply(body, owner, field_manager=field_manager, allow_unowned=allow_unowned)

    def apply_fields(self, body: Mapping[str, Any], *, field_manager: str, subresource: str | None = None) -> Json:
        return kube_apply.server_side_apply(body, field_manager=field_manager, subresource=subresource)

    def create(self, body: Mapping[str, Any], owner: Owner | None = None) -> Json:
        info = kube_apply.info_for(body)
        if owner is not None:
            body = kube_apply.decorate(body, owner, namespaced=info.namespaced)
        metadata = body.get("metadata") or {}
        return request("POST", info.path(namespace=metadata.get("namespace")), operation="create", body=body)

    def merge_patch(self, live: Mapping[str, Any], patch: Mapping[str, Any]) -> Json:
        return kube_apply.merge_patch(live, patch)

    def patch(self, api_version: str, kind: str, name: str, namespace: str | None, patch: Mapping[str, Any]) -> Json:
        return request("PATCH", resource_info(api_version, kind).path(name, namespace), operation="patch", body=patch,
                       content_type="application/merge-patch+json")

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None, *,
               uid: str | None = None) -> bool:
        return kube_apply.delete(api_version, kind, name, namespace, uid=uid)

    def event(self, owner: Owner, reason: str, message: str, type: kube_events.EventType = "Normal") -> None:
        if self.recorder is not None:
            self.recorder.record(owner, reason, message, type)
        else:
            kube_events.post_event(owner, reason, message, type)

    def namespaced(self, api_version: str, kind: str) -> bool:
        return resource_info(api_version, kind).namespaced


def prune(kube: KubePort, owner: Owner, keep: set[ObjectKey], kinds: Iterable[tuple[str, str]], *,
          only_unowned: bool = False) -> list[ObjectKey]:
    """Delete `owner`'s objects of `kinds` that are not in `keep`; return what was deleted.

    Used when an intent stops rendering something (an identity drops a namespace) and, with
    `keep=set()` and `only_unowned=True`, by finalizers to remove the children the garbage
    collector cannot reach. Only objects carrying both of Paved's labels for this owner are
    ever considered, in every namespace (children may live elsewhere).
    """
    deleted: list[ObjectKey] = []
    for api_version, kind in sorted(set(kinds)):
        try:
            items = kube.list(api_version, kind, None, owner_selector(owner))
        except ApiError as error:
            if error.not_found:  # kind not served (e.g. an optional CRD): nothing of it to prune
                continue
            raise
        for item in items:
            key = key_of(item)
            if key in keep:
                continue
            references = (item.get("metadata") or {}).get("ownerReferences") or []
            if only_unowned and any(ref.get("uid") == owner.uid for ref in references):
                continue
            if kube.delete(api_version, kind, key.name, key.namespace or None, uid=item["metadata"].get("uid")):
                log.info("pruned %s (no longer rendered for %s %s/%s)", key, owner.kind, owner.namespace, owner.name)
                deleted.append(key)
    return deleted
