"""deploy/'s RBAC for the operator's own work holds exactly what it uses: every rule is needed.

The end-to-end tests run the operator as deploy/'s ServiceAccount (a missing rule fails them);
the API server's audit log of the same session records every request that ServiceAccount made
(tests/fixtures/audit.py). This test, run last, breaks each rule into its atoms (API group x
resource x verb, per resource name when the rule names some) and fails on any atom no request
used, on any `*`, on any request RBAC refused, and on any request only the agents' ceiling
(which the operator also holds) allowed: the operator's own work must not depend on it. It skips unless the whole e2e suite ran and
passed in this session: after a subset, an unused atom proves nothing.

What the audit log cannot show, accounted for here:
- a server-side apply that creates an object is a `patch` answered 201, and needs `create`;
- `update` on <kind>/finalizers is checked by the OwnerReferencesPermissionEnforcement
  admission plugin while another request is admitted, never requested itself;
- the composed child kinds (paved.kube.apply.MANAGED_KINDS) are handled by one kind-generic
  code path (observe, apply, drift watch, prune): a verb on one of them is needed when the run
  used it on any of them (a Composition may render any of these kinds);
- a few code paths the suite does not reach, each named in NOT_EXERCISED.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

from fixtures.audit import Request, operator_requests
from paved.dev.controlplane import ControlPlane
from paved.identity.ceiling import CLUSTER_ROLE as CEILING
from paved.kube.apply import MANAGED_KINDS

pytestmark = [pytest.mark.cluster, pytest.mark.after_e2e]

RBAC = Path(__file__).resolve().parents[2] / "deploy" / "rbac.yaml"
Atom = tuple[str, str, str, str | None]  # (apiGroup, resource, verb, resourceName or None)

# Atoms used by a check inside the API server rather than by a request of their own.
CHECKED_BY_ADMISSION = {
    (group, f"{plural}/finalizers", "update"): "OwnerReferencesPermissionEnforcement: blockOwnerDeletion on a child"
    for group, plural in [("paved.dev", "agentidentities"), ("paved.dev", "databaseintents"),
                          ("paved.dev", "externalsecretrefs"), ("paved.dev", "progressiverollouts"),
                          ("paved.dev", "compositions")]
}


# (apiGroup, resource) of each composed child kind.
MANAGED = {(api_version.rpartition("/")[0], {"NetworkPolicy": "networkpolicies", "SecurityGroupPolicy": "securitygrouppolicies"}.get(kind, kind.lower() + "s"))
           for kind, api_version in MANAGED_KINDS.items()}
# Needed by a code path the e2e suite does not reach; the path that needs each.
NOT_EXERCISED = {
    ("paved.dev", "externalsecretrefs", "get"): "paved.handlers.policy audit: re-reading an intent it wrote after the body it holds",
    ("paved.dev", "clustersecretstores", "get"): "paved.handlers._secretsync get_store: a ref naming a ClusterSecretStore",
    ("apps", "replicasets", "list"): "paved.providers.routing.workloads template_for: a revision on neither the target nor a copy",
}


def operator_rules() -> list[dict[str, Any]]:
    """The rules of every Role and ClusterRole deploy/ gives the operator for its own work
    (paved-operator, and any namespaced Role such as leader election's); not the agents'
    ceiling, which it holds only to grant it."""
    return [rule for doc in yaml.safe_load_all(RBAC.read_text())
            if doc and doc["kind"] in ("Role", "ClusterRole") and not doc["metadata"]["name"].startswith(CEILING)
            for rule in doc.get("rules") or []]


def atoms(rule: dict[str, Any]) -> list[Atom]:
    return [(group, resource, verb, name) for group in rule["apiGroups"] for resource in rule["resources"]
            for verb in rule["verbs"] for name in rule.get("resourceNames") or [None]]


def used(requests: Iterable[Request]) -> set[Atom]:
    """The atoms the requests exercised, both with their object's name and without."""
    found: set[Atom] = set()
    for request in requests:
        if not request.authorized:
            continue
        verbs = [request.verb] + (["create"] if request.verb == "patch" and request.code == 201 else [])
        for verb in verbs:
            found |= {(request.group, request.resource, verb, None), (request.group, request.resource, verb, request.name)}
    return found


def test_every_rule_of_the_operators_cluster_role_is_used(request: pytest.FixtureRequest, e2e_suite_incomplete: str) -> None:
    rules = operator_rules()
    wildcards = [rule for rule in rules if "*" in rule["verbs"] + rule["resources"] + rule["apiGroups"]]
    assert not wildcards, f"wildcards in paved-operator: {wildcards}"
    if e2e_suite_incomplete:
        pytest.skip(f"the audit log proves nothing here: {e2e_suite_incomplete}")
    control_plane: ControlPlane = request.getfixturevalue("control_plane")  # the session's: only now, never just to skip
    if not control_plane.audit_log.is_file():
        pytest.skip(f"no audit log at {control_plane.audit_log} (a control plane started before auditing existed)")

    requests = list(operator_requests(control_plane.audit_log))
    refused = sorted({f"{r.verb} {r.resource} ({r.group or 'core'}) {r.namespace}/{r.name}" for r in requests if not r.authorized})
    assert not refused, "RBAC refused the operator (a rule is missing):\n" + "\n".join(refused)
    exercised = used(requests)
    generic = {verb for group, resource, verb, name in exercised if (group, resource) in MANAGED and name is None}
    unused = [f"{verb} {resource} ({group or 'core'})" + (f" named {name}" if name else "")
              for rule in rules for group, resource, verb, name in atoms(rule)
              if (group, resource, verb, name) not in exercised and (group, resource, verb) not in CHECKED_BY_ADMISSION
              and (group, resource, verb) not in NOT_EXERCISED and not ((group, resource) in MANAGED and verb in generic)]
    held = {atom for rule in rules for atom in atoms(rule)}
    borrowed = sorted({f"{r.verb} {r.resource} ({r.group or 'core'})" for r in requests if r.authorized
                       and (r.group, r.resource, r.verb, None) not in held and (r.group, r.resource, r.verb, r.name) not in held})
    assert not borrowed, "requests paved-operator does not allow (held only through the agents' ceiling?):\n" + "\n".join(borrowed)
    assert not unused, ("rules of deploy/rbac.yaml's paved-operator that no request of the operator used in a full, passing "
                        "e2e run (remove them, or say here why a request cannot show them):\n" + "\n".join(unused))
