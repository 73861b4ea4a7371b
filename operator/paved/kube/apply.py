"""THE server-side-apply helper: every object Paved creates goes through `apply` here.

Two halves, kept apart on purpose (crate-operator's habit): `decorate` and `drift` are pure
functions over dicts (unit-tested without a cluster), `apply`/`get`/`merge_patch`/`delete`
send them (paved.kube.port.ApiKube over them; paved.kube.port.prune removes what an intent no
longer renders). Every object Paved writes carries:

- label `app.kubernetes.io/managed-by: paved` (the children watch selects on it),
- label `paved.dev/owner-uid: <intent uid>` (finds an object's intent and its leftovers),
- an ownerReference to the intent (controller, blockOwnerDeletion) so that the cluster's
  garbage collector, not Paved, removes it with the intent.

Kubernetes allows an ownerReference only to an owner in the same namespace, or to a
cluster-scoped owner. A cluster-scoped child (ClusterRole) or a child in another namespace
(a Role granting access to a neighbour namespace) of a namespaced intent cannot have one:
`apply` refuses such a body with OwnershipError unless the caller passes
`allow_unowned=True`, which means "my intent carries a finalizer that prunes these". Such
objects get annotation `paved.dev/owner: <apiVersion>/<Kind>/<namespace>/<name>` instead.
"""

from __future__ import annotations

import base64
import copy
from typing import Any, Mapping, NamedTuple

from paved.kube.client import ApiError, Json, ResourceInfo, request, resource_info
from paved.providers.base import Owner

FIELD_MANAGER = "paved"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "paved"
OWNER_UID_LABEL = "paved.dev/owner-uid"
OWNER_ANNOTATION = "paved.dev/owner"

# Kinds Paved composes out of the box, with their apiVersion: watched for drift (labelled
# managed-by=paved only), searched when pruning and finalizing, granted in deploy/rbac.yaml.
MANAGED_KINDS: dict[str, str] = {
    "ServiceAccount": "v1",
    "Secret": "v1",
    "ConfigMap": "v1",
    "Service": "v1",
    "Role": "rbac.authorization.k8s.io/v1",
    "RoleBinding": "rbac.authorization.k8s.io/v1",
    "ClusterRole": "rbac.authorization.k8s.io/v1",
    "ClusterRoleBinding": "rbac.authorization.k8s.io/v1",
    "NetworkPolicy": "networking.k8s.io/v1",
    "StatefulSet": "apps/v1",
    # EKS security groups for pods (DatabaseIntents on RDS); where the CRD is not installed
    # Kopf cannot watch it and pruning skips it, and only a composition rendering one fails.
    "SecurityGroupPolicy": "vpcresources.k8s.aws/v1beta1",
    # The connection Secret of a database whose password the cloud manages is synced by one.
    "ExternalSecretRef": "paved.dev/v1alpha1",
}

# Set by the API server or by other controllers: never part of what Paved declares.
_SERVER_METADATA = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink")


class ObjectKey(NamedTuple):
    """Identity of one Kubernetes object (namespace "" for cluster-scoped)."""

    api_version: str
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}" if self.namespace else f"{self.kind}/{self.name}"


class OwnershipError(ValueError):
    """The child cannot carry an ownerReference to its intent (cluster-scoped or another namespace)."""


def key_of(body: Mapping[str, Any]) -> ObjectKey:
    metadata = body.get("metadata") or {}
    return ObjectKey(body.get("apiVersion", ""), body.get("kind", ""), metadata.get("namespace") or "", metadata.get("name", ""))


def owner_reference(owner: Owner) -> Json:
    """The controller ownerReference that lets the garbage collector remove the child with `owner`."""
    return {
        "apiVersion": owner.api_version,
        "kind": owner.kind,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owner_selector(owner: Owner) -> str:
    """Label selector matching every object Paved made for `owner`."""
    return f"{MANAGED_BY_LABEL}={MANAGED_BY},{OWNER_UID_LABEL}={owner.uid}"


def can_own(owner: Owner, *, child_namespace: str | None, child_namespaced: bool) -> bool:
    """Whether Kubernetes accepts an ownerReference from such a child to `owner`."""
    if owner.namespace is None:  # a cluster-scoped owner may own anything
        return True
    return child_namespaced and (child_namespace or "") == owner.namespace


def decorate(body: Mapping[str, Any], owner: Owner, *, namespaced: bool, allow_unowned: bool = False) -> Json:
    """Return a copy of `body` with Paved's labels and the ownerReference (or owner annotation).

    A namespaced child without a namespace is placed in the owner's namespace. Pure.
    Raises OwnershipError for a child that cannot be owned unless `allow_unowned`.
    """
    result = copy.deepcopy(dict(body))
    metadata = result.setdefault("metadata", {})
    if not metadata.get("name"):
        raise ValueError(f"{result.get('kind', 'object')} has no metadata.name")
    if namespaced:
        metadata.setdefault("namespace", owner.namespace)
    else:
        metadata.pop("namespace", None)
    labels = metadata.setdefault("labels", {})
    labels[MANAGED_BY_LABEL] = MANAGED_BY
    labels[OWNER_UID_LABEL] = owner.uid
    if can_own(owner, child_namespace=metadata.get("namespace"), child_namespaced=namespaced):
        references = [ref for ref in metadata.get("ownerReferences", []) if ref.get("uid") != owner.uid]
        metadata["ownerReferences"] = [*references, owner_reference(owner)]
        return result
    if not allow_unowned:
        where = f"namespace {metadata.get('namespace')!r}" if namespaced else "cluster scope"
        raise OwnershipError(
            f"{result.get('kind')}/{metadata['name']} in {where} cannot have an ownerReference to "
            f"{owner.kind} {owner.namespace}/{owner.name}: Kubernetes allows owners only in the same "
            "namespace; pass allow_unowned=True and clean it up with a finalizer"
        )
    annotations = metadata.setdefault("annotations", {})
    annotations[OWNER_ANNOTATION] = f"{owner.api_version}/{owner.kind}/{owner.namespace or ''}/{owner.name}"
    return result


def is_owned_by(live: Mapping[str, Any], owner: Owner) -> bool:
    """Whether `live` is labelled for `owner` (with or without an ownerReference)."""
    labels = (live.get("metadata") or {}).get("labels") or {}
    return labels.get(OWNER_UID_LABEL) == owner.uid and labels.get(MANAGED_BY_LABEL) == MANAGED_BY


def drift(desired: Any, live: Any, path: str = "") -> list[str]:
    """Field paths where `live` no longer holds what `desired` declares. Pure.

    Desired is a subset of live: fields the API server or other controllers add (defaults,
    status, managedFields, other owners' references) are not drift. Lists are compared
    position by position and must have the same length, except `ownerReferences`, which
    only has to contain every desired reference (matched by uid).
    """
    if not path and isinstance(desired, Mapping):
        desired = as_stored(desired)
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return [path or "."]
        differences: list[str] = []
        for key, value in desired.items():
            child_path = f"{path}.{key}" if path else str(key)
            if key == "ownerReferences" and isinstance(value, list):
                live_uids = {ref.get("uid") for ref in live.get(key) or []}
                if any(ref.get("uid") not in live_uids for ref in value):
                    differences.append(child_path)
                continue
            if key not in live:
                if value in (None, {}, []):  # an empty declaration is not drift
                    continue
                differences.append(child_path)
                continue
            differences.extend(drift(value, live[key], child_path))
        return differences
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return [path]
        return [d for index, (want, have) in enumerate(zip(desired, live)) for d in drift(want, have, f"{path}[{index}]")]
    return [] if desired == live else [path]


def as_stored(desired: Mapping[str, Any]) -> Mapping[str, Any]:
    """`desired` as the API server stores it, where that differs from how it is written.

    A Secret's `stringData` is write-only: the API server folds it into base64 `data`, so
    comparing it as written would report drift on every check and re-apply the Secret.
    """
    string_data = desired.get("stringData")
    if desired.get("kind") != "Secret" or not isinstance(string_data, Mapping):
        return desired
    encoded = {key: base64.b64encode(str(value).encode()).decode() for key, value in string_data.items()}
    stored = {key: value for key, value in desired.items() if key != "stringData"}
    stored["data"] = {**(desired.get("data") or {}), **encoded}
    return stored


def info_for(body: Mapping[str, Any]) -> ResourceInfo:
    return resource_info(body["apiVersion"], body["kind"])


def apply(
    body: Mapping[str, Any],
    owner: Owner,
    *,
    field_manager: str = FIELD_MANAGER,
    force: bool = True,
    allow_unowned: bool = False,
) -> Json:
    """Server-side apply `body` as `owner`'s child and return the live object.

    `force=True` takes ownership of fields another manager changed: that is how drift made
    with `kubectl edit` is undone. Idempotent: applying the same body twice writes nothing
    the second time (the API server answers without a new resourceVersion).
    """
    info = info_for(body)
    decorated = decorate(body, owner, namespaced=info.namespaced, allow_unowned=allow_unowned)
    for field in _SERVER_METADATA:
        decorated["metadata"].pop(field, None)
    decorated.pop("status", None)
    return server_side_apply(decorated, info, field_manager=field_manager, force=force)


def server_side_apply(
    body: Mapping[str, Any], info: ResourceInfo | None = None, *, field_manager: str = FIELD_MANAGER, force: bool = True,
    subresource: str | None = None,
) -> Json:
    """The SSA request itself, for `body` as given: `apply` sends intents' children through it
    after decorating them; objects that belong to no intent (PolicyReports) are sent as is;
    paved.kube.status.apply_status sends status (`subresource="status"`)."""
    info = info or info_for(body)
    metadata = body["metadata"]
    return request(
        "PATCH",
        info.path(metadata["name"], metadata.get("namespace"), subresource=subresource),
        operation=f"apply-{subresource}" if subresource else "apply",
        body=body,
        query={"fieldManager": field_manager, "force": "true" if force else None},
        content_type="application/apply-patch+yaml",
    )


def get(api_version: str, kind: str, name: str, namespace: str | None = None, *, cached: bool = False) -> Json | None:
    """The live object, or None when it does not exist.

    `cached`: served from the API server's watch cache (resourceVersion=0), which may trail
    etcd by a moment but costs the server no storage read; for reads on a hot path whose
    writes are guarded anyway.
    """
    info = resource_info(api_version, kind)
    try:
        return request("GET", info.path(name, namespace), operation="get", query={"resourceVersion": "0"} if cached else None)
    except ApiError as error:
        if error.not_found:
            return None
        raise


def merge_patch(live: Mapping[str, Any], patch: Mapping[str, Any]) -> Json:
    """JSON-merge-patch `live` guarded by its resourceVersion: 409 if someone wrote in between.

    For the rare write that must not be a server-side apply (adding keys to a Secret whose
    other keys must never be replaced).
    """
    metadata = live["metadata"]
    info = info_for(live)
    guarded = dict(patch)
    guarded["metadata"] = {**dict(patch.get("metadata") or {}), "resourceVersion": metadata["resourceVersion"]}
    return request("PATCH", info.path(metadata["name"], metadata.get("namespace")), operation="patch",
                   body=guarded, content_type="application/merge-patch+json")


def delete(api_version: str, kind: str, name: str, namespace: str | None = None, *, uid: str | None = None) -> bool:
    """Delete one object (background propagation); False if it was already gone.

    With `uid`, the API server deletes only that incarnation, never a namesake created since.
    """
    info = resource_info(api_version, kind)
    options: Json = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
    if uid:
        options["preconditions"] = {"uid": uid}
    try:
        request("DELETE", info.path(name, namespace), operation="delete", body=options)
        return True
    except ApiError as error:
        if error.not_found or (error.status == 409 and uid):  # gone, or replaced by a namesake
            return False
        raise
