"""The platform's ceiling, decided up front (paved.identity.ceiling) with Kubernetes' RBAC semantics."""

from __future__ import annotations

from datetime import datetime, timezone

from paved.identity import Ancestor, decide
from paved.identity.ceiling import Ceiling, beyond, outside_message, refused_capabilities, refused_rules, within

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)
CEILING = Ceiling(rules=(
    {"apiGroups": [""], "resources": ["pods", "configmaps"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]},
    {"apiGroups": ["apps"], "resources": ["deployments", "*/scale"], "verbs": ["get", "patch"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get"], "resourceNames": ["nightly"]},
    {"apiGroups": ["*"], "resources": ["events"], "verbs": ["list"]},
    {"nonResourceURLs": ["/healthz"], "verbs": ["get"]},
))


def caps(*capabilities: dict) -> dict:
    return {"capabilities": list(capabilities)}


def outside(*capabilities: dict) -> list[str]:
    return [str(e) for e in beyond(caps(*capabilities), "ns", CEILING)]


def test_within_the_ceiling_nothing_is_outside():
    assert outside(
        {"resources": ["pods"], "verbs": ["get", "watch"], "namespaces": ["other"]},
        {"resources": ["configmaps"], "verbs": ["*"]},  # a wildcard verb needs a wildcard in the ceiling
        {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["patch"]},  # */scale covers a subresource
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get"], "resourceNames": ["nightly"]},
        {"apiGroups": ["anything.example"], "resources": ["events"], "verbs": ["list"]},  # apiGroups "*"
        {"resources": ["pods"], "verbs": ["list"], "clusterWide": True},  # the ceiling holds it cluster-wide
    ) == []


def test_outside_names_the_field_and_the_exact_permission():
    assert outside({"resources": ["pods"], "verbs": ["get"]}, {"resources": ["secrets"], "verbs": ["get"]}) == [
        'spec.capabilities[1]: verb "get" on secrets in namespace ns']


def test_rbac_semantics_verbs_resources_subresources_names_and_wildcards():
    assert outside({"resources": ["pods"], "verbs": ["*"]})  # "*" is not get+list+watch
    assert outside({"resources": ["*"], "verbs": ["get"]})  # nor is a resource wildcard
    assert outside({"resources": ["pods/log"], "verbs": ["get"]})  # "pods" does not cover a subresource
    assert outside({"resources": ["pods/exec"], "verbs": ["get"]})
    assert outside({"apiGroups": ["apps"], "resources": ["deployments/status"], "verbs": ["patch"]})  # only */scale
    assert outside({"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get"]})  # all names needs a rule without names
    assert outside({"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get"], "resourceNames": ["other"]})
    assert outside({"apiGroups": ["extensions"], "resources": ["deployments"], "verbs": ["get"]})  # the group matters
    assert outside({"resources": ["healthz"], "verbs": ["get"]})  # nonResourceURLs cover no resource


def test_a_missing_ceiling_holds_nothing_and_says_so():
    missing = Ceiling(found=False)
    found = beyond(caps({"resources": ["pods"], "verbs": ["get"]}), "ns", missing)
    assert [e.field for e in found] == ["spec.capabilities[0]"]
    assert "(ClusterRole paved-agent-ceiling, which does not exist)" in outside_message(found, missing)


def test_within_narrows_capabilities_only():
    spec = {**caps({"resources": ["pods"], "verbs": ["get", "delete"]}, {"resources": ["secrets"], "verbs": ["get"]}),
            "secrets": [{"path": "secret/data/x"}], "cloud": {"aws": {"actions": ["s3:GetObject"]}}}
    narrowed = within(spec, "ns", CEILING)
    assert [(c["resources"], c["verbs"]) for c in narrowed["capabilities"]] == [(["pods"], ["get"])]
    assert narrowed["secrets"] == spec["secrets"] and narrowed["cloud"] == spec["cloud"]


def subject(spec: dict) -> Ancestor:
    return Ancestor("ns", "agent", spec, NOW)


def test_decide_refuses_a_new_generation_beyond_the_ceiling():
    spec = caps({"resources": ["pods"], "verbs": ["get"]}, {"resources": ["secrets"], "verbs": ["get", "list"]})
    decision = decide(subject(spec), accepted=False, now=NOW, lookup=lambda ns, n: None, ceiling=CEILING)
    assert (decision.action, decision.reason, decision.field) == ("refuse", "OutsideCeiling", "spec.capabilities[1]")
    assert decision.message.startswith('verb "get" on secrets in namespace ns is outside the platform\'s ceiling '
                                       "(ClusterRole paved-agent-ceiling)")
    assert 'also outside: spec.capabilities[1]: verb "list" on secrets' in decision.message
    # no ceiling given: not checked (callers without one, e.g. offline tools)
    assert decide(subject(spec), accepted=False, now=NOW, lookup=lambda ns, n: None).action == "grant"


def test_decide_narrows_an_accepted_generation_when_the_ceiling_shrinks():
    spec = caps({"resources": ["pods"], "verbs": ["get"]}, {"resources": ["secrets"], "verbs": ["get"]})
    decision = decide(subject(spec), accepted=True, now=NOW, lookup=lambda ns, n: None, ceiling=CEILING)
    assert (decision.action, decision.reason) == ("grant", "Narrowed")
    assert [c["resources"] for c in decision.spec["capabilities"]] == [["pods"]]
    assert "narrowed to the platform's ceiling (ClusterRole paved-agent-ceiling), removed: spec.capabilities[1]" in decision.message


# The API server's own words (kube-apiserver v1.36, ConfirmNoEscalation), as the kubernetes
# provider reports them: the backstop when Paved's own check and the operator's RBAC disagree.
REFUSAL = (
    "resource 'role' (kubernetes): apply Role/ns/paved-ns-agent-1a2b3c: 403 Forbidden: roles.rbac.authorization.k8s.io "
    '"paved-ns-agent-1a2b3c" is forbidden: user "system:serviceaccount:paved-system:paved-operator" '
    '(groups=["system:serviceaccounts" "system:serviceaccounts:paved-system" "system:authenticated"]) is attempting '
    'to grant RBAC permissions not currently held:\n{APIGroups:[""], Resources:["pods"], Verbs:["get" "list"]}\n'
    '{APIGroups:["batch"], Resources:["jobs"], ResourceNames:["nightly"], Verbs:["delete"]}'
)


def test_the_api_servers_refusal_is_read_back():
    assert refused_rules(REFUSAL) == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
        {"apiGroups": ["batch"], "resources": ["jobs"], "resourceNames": ["nightly"], "verbs": ["delete"]},
    ]
    assert refused_rules("resource 'role' (kubernetes): apply Role/ns/x: 422 Invalid: rules[0].verbs: Required value") is None
    spec = caps({"resources": ["configmaps"], "verbs": ["get"]}, {"resources": ["pods"], "verbs": ["get", "watch"]})
    assert [str(e) for e in refused_capabilities(spec, "ns", refused_rules(REFUSAL) or [])] == [
        'spec.capabilities[1]: verb "get" on pods in namespace ns']


def test_the_refusal_stays_readable_through_the_kube_client_which_drops_quoted_values():
    """paved.kube.client rebuilds every API error without the values the request carried; the
    rules of an escalation refusal are names (groups, resources, verbs) and must survive it,
    or the backstop could not say which capability was refused."""
    from paved.kube.client import error_from_status

    message = ('roles.rbac.authorization.k8s.io "paved-x" is forbidden: user "system:serviceaccount:paved-system:paved-operator" '
               '(groups=["system:serviceaccounts"]) is attempting to grant RBAC permissions not currently held:\n'
               '{APIGroups:[""], Resources:["pods"], Verbs:["get" "list"]}')
    error = error_from_status({"code": 403, "reason": "Forbidden", "message": message,
                               "details": {"name": "paved-x", "group": "rbac.authorization.k8s.io", "kind": "roles"}})
    assert refused_rules(error.message) == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]
    assert "system:serviceaccount" not in error.message  # other quoted text is still dropped
