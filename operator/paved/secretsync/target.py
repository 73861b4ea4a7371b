"""What the engine writes to a ref's target Secret: pure builders, sent by paved.engines.secretsync.

- creationPolicy Owner: `owned_secret` is the whole Secret, server-side applied as the ref's
  child (ownerReference and Paved's labels are added by paved.kube.apply);
- creationPolicy Merge: `merge_patch` adds the ref's keys to a Secret someone else owns;
- deletionPolicy Delete with nothing left: `removal_patch` takes the ref's keys out again
  (Merge; an owned Secret is deleted instead).

Every write carries the content hash as an annotation, so a later cycle (or an operator
restart) can tell whether the live Secret is still what the ref wrote.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from paved.secretsync.model import RefSpec
from paved.secretsync.values import CONTENT_HASH_ANNOTATION

# On every Secret a ref owns: the operator watches these itself (paved.handlers.secrets),
# and Kopf's watch of Paved's other Secrets leaves them out (paved.runtime).
TARGET_LABEL = "paved.dev/target-of"
TARGET_LABEL_VALUE = "ExternalSecretRef"


def encoded(data: Mapping[str, bytes]) -> dict[str, str]:
    """Secret data as the API takes it (base64), in key order."""
    return {key: base64.b64encode(value).decode() for key, value in sorted(data.items())}


def written_hash(live: Mapping[str, Any] | None) -> str | None:
    """The content hash the ref last wrote into `live` (None: not written by a ref)."""
    return ((live or {}).get("metadata", {}).get("annotations") or {}).get(CONTENT_HASH_ANNOTATION)


def live_view(secret: Mapping[str, Any]) -> dict[str, Any]:
    """What the engine needs of a live Secret to write over it: who owns it (labels), the hash
    it carries, and name, uid and resourceVersion for a guarded write. Nothing else is kept
    (a listing of thousands: managedFields and other annotations, such as kubectl's
    last-applied-configuration, which can quote the data, would only cost memory)."""
    metadata = secret.get("metadata") or {}
    kept = {key: metadata[key] for key in ("name", "namespace", "uid", "resourceVersion", "labels") if key in metadata}
    digest = written_hash(secret)
    if digest is not None:
        kept["annotations"] = {CONTENT_HASH_ANNOTATION: digest}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": kept}


def _annotations(ref: RefSpec, digest: str) -> dict[str, str]:
    return {**dict(ref.target.annotations), CONTENT_HASH_ANNOTATION: digest}


def owned_secret(ref: RefSpec, data: Mapping[str, bytes], digest: str) -> dict[str, Any]:
    """The target Secret of creationPolicy Owner, for server-side apply."""
    target = ref.target
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": target.name, "namespace": ref.namespace, "labels": {**dict(target.labels), TARGET_LABEL: TARGET_LABEL_VALUE},
                     "annotations": _annotations(ref, digest)},
        "type": target.type,
        "data": encoded(data),
    }


def merge_patch(ref: RefSpec, data: Mapping[str, bytes], digest: str) -> dict[str, Any]:
    """The merge patch of creationPolicy Merge: the ref's keys, labels and hash, nothing else."""
    return {"metadata": {"annotations": _annotations(ref, digest), "labels": dict(ref.target.labels)}, "data": encoded(data)}


def removal_patch(ref: RefSpec) -> dict[str, Any]:
    """The merge patch that takes the ref's keys (and its hash) out of a Merge target."""
    ours = [item.secret_key for item in ref.data] + list(dict(ref.target.template))
    return {"data": {key: None for key in ours}, "metadata": {"annotations": {CONTENT_HASH_ANNOTATION: None}}}
