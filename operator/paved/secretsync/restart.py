"""Rotation reaches consumers: which opted-in workloads get a rolling restart, and how.

A Deployment or StatefulSet opts in with the annotation
`paved.dev/restart-on-secret-change: <secret>[,<secret>...]` (Secrets of its namespace).
When a cycle changes the content of any of them, the workload's pod template gets the
annotation `paved.dev/secret-hash: <hash of the named Secrets' content hashes>`, which the
workload controller turns into one rolling restart.

Why a hash and not a timestamp: the value is a function of the Secrets' content, so
- several Secrets changed in one cycle give ONE new value, one restart (debounced per cycle);
- writing the same value again (a retry, an operator restart mid-way) changes nothing, so a
  rotation can never restart a workload twice;
- a Secret that is created (not changed) does not restart anything: pods waiting for it
  start by themselves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

OPT_IN_ANNOTATION = "paved.dev/restart-on-secret-change"
TEMPLATE_ANNOTATION = "paved.dev/secret-hash"


@dataclass(frozen=True)
class RestartPatch:
    kind: str
    namespace: str
    name: str
    value: str  # the new pod-template annotation value
    secrets: tuple[str, ...]  # the changed Secrets that caused it


def opted_in_secrets(workload: Mapping[str, Any]) -> list[str]:
    """The Secret names a workload's opt-in annotation lists (empty: not opted in)."""
    annotations = (workload.get("metadata") or {}).get("annotations") or {}
    text = annotations.get(OPT_IN_ANNOTATION) or ""
    return sorted({name.strip() for name in text.split(",") if name.strip()})


def combined_hash(names: Iterable[str], hashes: Mapping[str, str]) -> str:
    """Hash over the content hashes of the named Secrets (unknown ones count as absent)."""
    digest = hashlib.sha256()
    for name in sorted(set(names)):
        digest.update(f"{name}={hashes.get(name, '')}\n".encode())
    return digest.hexdigest()[:16]


def restart_patches(
    workloads: Iterable[Mapping[str, Any]], changed: Iterable[str], hashes: Mapping[str, str]
) -> list[RestartPatch]:
    """One patch per opted-in workload that names a Secret in `changed` and is not yet stamped.

    `workloads` are live Deployments/StatefulSets of one namespace, `changed` the names of
    Secrets of that namespace whose content changed this cycle, `hashes` the current content
    hash of every Secret Paved knows there.
    """
    changed = set(changed)
    patches = []
    for workload in workloads:
        names = opted_in_secrets(workload)
        hit = tuple(sorted(changed.intersection(names)))
        if not hit:
            continue
        value = combined_hash(names, hashes)
        template = ((workload.get("spec") or {}).get("template") or {}).get("metadata") or {}
        if (template.get("annotations") or {}).get(TEMPLATE_ANNOTATION) == value:
            continue
        metadata = workload.get("metadata") or {}
        patches.append(RestartPatch(workload.get("kind", ""), metadata.get("namespace", ""), metadata.get("name", ""), value, hit))
    return patches


def patch_body(patch: RestartPatch) -> dict[str, Any]:
    """The JSON merge patch that stamps the pod template (touching nothing else)."""
    return {"spec": {"template": {"metadata": {"annotations": {TEMPLATE_ANNOTATION: patch.value}}}}}
