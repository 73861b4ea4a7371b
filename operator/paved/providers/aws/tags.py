"""The tags that make an AWS resource an intent's: namespace, name and uid, on every resource
Paved creates. Ownership is the `paved.dev/uid` tag: a resource is an intent's when it holds
that intent's uid, so a retry or a restart finds what it created and never takes what it did not."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from paved.providers.base import Owner

TAG_NAMESPACE = "paved.dev/namespace"
TAG_NAME = "paved.dev/name"
TAG_UID = "paved.dev/uid"


def tags_of(resource: Mapping[str, Any]) -> dict[str, str]:
    """Tags of a described resource: RDS answers `TagList`, EC2 `Tags`."""
    return {t["Key"]: t["Value"] for t in resource.get("TagList") or resource.get("Tags") or []}


def owner_tags(owner: Owner) -> list[dict[str, str]]:
    return [
        {"Key": TAG_NAMESPACE, "Value": owner.namespace or ""},
        {"Key": TAG_NAME, "Value": owner.name},
        {"Key": TAG_UID, "Value": owner.uid},
    ]


def merge_tags(tags: Iterable[Mapping[str, str]], overrides: Iterable[Mapping[str, str]]) -> list[dict[str, str]]:
    """`tags` with `overrides` winning, as a Key/Value list."""
    merged = {t["Key"]: t["Value"] for t in tags}
    merged.update({t["Key"]: t["Value"] for t in overrides})
    return [{"Key": k, "Value": v} for k, v in merged.items()]
