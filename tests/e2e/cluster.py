"""The e2e modules' one way to apply, read and wait on objects of the test control plane.

`Cluster` (the `cluster` fixture of tests/e2e/conftest.py) goes through the session's `kubectl`
fixture, as a user would, and waits with fixtures.cluster.wait_for. Only tests/e2e uses it
(tests/unit/test_e2e_cluster_scope.py checks that): unit tests use tests/support/kube.FakeKube,
integration tests paved.kube itself.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from fixtures.cluster import Kubectl, wait_for
from paved.api.common import get_condition

Json = dict[str, Any]


def condition(obj: Mapping[str, Any] | None, type_: str = "Ready") -> Json:
    """The condition `type_` of `obj`'s status ({} when there is none)."""
    return get_condition(((obj or {}).get("status") or {}).get("conditions"), type_) or {}


def _scope(namespace: str | None) -> list[str]:
    return ["-n", namespace] if namespace else []


class Cluster:
    def __init__(self, kubectl: Kubectl) -> None:
        self.kubectl = kubectl

    def apply(self, *docs: Mapping[str, Any] | str, namespace: str | None = None,
              check: bool = True) -> subprocess.CompletedProcess[str]:
        """`kubectl apply` the documents (dicts or YAML text); with check=False the result,
        refused or not, is returned instead of failing the test."""
        text = "---\n".join(doc if isinstance(doc, str) else yaml.safe_dump(dict(doc)) for doc in docs)
        return self.kubectl("apply", *_scope(namespace), "-f", "-", input=text, check=check)

    def refused(self, obj: Mapping[str, Any], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """The webhook's refusal of `obj`, retried until the operator has registered its webhook.
        An apply that got in before is undone first: applying the same spec again changes
        nothing, which the webhook's matchConditions let through unjudged."""
        def attempt() -> subprocess.CompletedProcess[str] | None:
            result = self.apply(obj, check=False)
            if result.returncode == 0:
                self.kubectl("delete", "-f", "-", "--wait=false", input=yaml.safe_dump(dict(obj)), check=False)
                return None
            return result

        refusal: subprocess.CompletedProcess[str] = wait_for(attempt, timeout=timeout, what="the webhook to refuse it")
        return refusal

    def get(self, kind: str, name: str | None = None, namespace: str | None = None, *, selector: str | None = None) -> Json | None:
        """The object (or, without a name, the List of `kind`, which may be comma-separated kinds),
        None when it does not exist; any other error fails the test."""
        args = ["get", kind, *([name] if name else []), *_scope(namespace), *(["-l", selector] if selector else []), "-o", "json"]
        result = self.kubectl(*args, check=False)
        if result.returncode != 0:
            if "NotFound" in result.stderr:
                return None
            pytest.fail(f"kubectl {' '.join(args)}: {result.stderr}")
        found: Json = json.loads(result.stdout)
        return found

    def items(self, kind: str, namespace: str | None = None, *, selector: str | None = None) -> list[Json]:
        return list((self.get(kind, None, namespace, selector=selector) or {}).get("items") or [])

    def condition(self, kind: str, name: str, namespace: str | None = None, type_: str = "Ready") -> Json:
        return condition(self.get(kind, name, namespace), type_)

    def wait_condition(self, kind: str, name: str, namespace: str | None = None, type_: str = "Ready", *,
                       status: str | None = "True", reason: str | None = None, current: bool = False,
                       timeout: float = 60, interval: float = 0.5) -> Json:
        """The object once its condition `type_` has `status` (None: any) and `reason` (None: any);
        with `current`, also once the condition is of the object's generation."""
        def reached() -> Json | None:
            obj = self.get(kind, name, namespace)
            found = condition(obj, type_)
            if not found or status not in (None, found.get("status")) or reason not in (None, found.get("reason")):
                return None
            assert obj is not None
            generation = obj["metadata"].get("generation")
            return obj if not current or found.get("observedGeneration", generation) == generation else None

        return wait_for(reached, timeout=timeout, interval=interval,
                        what=f"{kind} {namespace or ''}/{name} {type_}={status or '*'} {reason or ''} "
                             f"(last: {self.condition(kind, name, namespace, type_)})")

    def allowed(self, user: str, verb: str, resource: str, namespace: str, group: str = "") -> bool:
        """Whether the API server lets ServiceAccount `user` (system:serviceaccount:<ns>:<name>)
        `verb` `resource` in `namespace` ("": cluster-wide), by a SubjectAccessReview."""
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user,
                "groups": ["system:serviceaccounts", f"system:serviceaccounts:{user.split(':')[2]}", "system:authenticated"],
                "resourceAttributes": {"verb": verb, "resource": resource, "group": group, "namespace": namespace},
            },
        }
        result = self.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(review))
        return bool(json.loads(result.stdout)["status"].get("allowed"))

    def delete_and_wait(self, kind: str, name: str, namespace: str | None = None, timeout: float = 90) -> None:
        """Delete the object and wait until it is gone (its finalizers have run)."""
        self.kubectl("delete", kind, name, *_scope(namespace), "--wait=false", check=False)
        wait_for(lambda: self.get(kind, name, namespace) is None, timeout=timeout, what=f"{kind} {name} to be deleted")
