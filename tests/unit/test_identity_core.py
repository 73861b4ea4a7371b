"""The pure AgentIdentity core: subset, exact excess naming, narrowing, chains, expiry."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from paved.identity import Ancestor, ancestry_digest, decide, excess, grants, narrow, own_expiry
from paved.identity.scope import not_allowed, vault_covers, within_allowances

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)
PARENT = {
    "capabilities": [
        {"apiGroups": [""], "resources": ["pods", "configmaps"], "verbs": ["get", "list", "watch"], "namespaces": ["shared"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"], "resourceNames": ["web"]},
    ],
    "secrets": [{"path": "secret/data/team/*", "capabilities": ["read", "list"]}],
    "cloud": {"aws": {"actions": ["s3:Get*", "s3:ListBucket"], "resources": ["arn:aws:s3:::reports/*"]}},
    "expiresAt": "2030-01-01T08:00:00Z",
}


def child(**spec):
    return {"delegatedFrom": {"name": "parent"}, **spec}


def test_subset_is_accepted():
    spec = child(capabilities=[{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"], "namespaces": ["shared"]}],
                 secrets=[{"path": "secret/data/team/a", "capabilities": ["read"]}],
                 cloud={"aws": {"actions": ["s3:GetObject"], "resources": ["arn:aws:s3:::reports/2024/*"]}})
    assert excess(spec, "ns", PARENT, "ns") == []


def test_excess_names_the_exact_permission():
    spec = child(capabilities=[{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "delete"]}])
    found = excess(spec, "ns", PARENT, "ns")
    assert [str(e) for e in found] == ['spec.capabilities[0]: verb "delete" on pods in namespace ns']


def test_excess_namespace_resource_name_vault_and_aws():
    spec = child(
        capabilities=[
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"], "namespaces": ["other"]},
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},  # all names, parent has only "web"
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"], "resourceNames": ["web"]},
        ],
        secrets=[{"path": "secret/data/other", "capabilities": ["read"]}, {"path": "secret/data/team/x", "capabilities": ["update"]}],
        cloud={"aws": {"actions": ["s3:PutObject", "s3:GetObject"], "resources": ["arn:aws:s3:::reports/x"]}},
    )
    text = [str(e) for e in excess(spec, "ns", PARENT, "ns")]
    assert text == [
        'spec.capabilities[0]: verb "get" on pods in namespace other',
        'spec.capabilities[1]: verb "get" on deployments.apps in namespace ns',
        'spec.secrets[0]: Vault capability "read" on path secret/data/other',
        'spec.secrets[1]: Vault capability "update" on path secret/data/team/x',
        'spec.cloud.aws: AWS action "s3:PutObject" on arn:aws:s3:::reports/x',
    ]


def test_wildcards_in_parent_cover_and_in_child_do_not_escalate():
    wide = {"capabilities": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}
    assert excess(child(capabilities=[{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["delete"]}]), "ns", wide, "ns") == []
    # a child wildcard is checked literally against the parent: "*" is not "get"
    assert excess(child(capabilities=[{"resources": ["pods"], "verbs": ["*"]}]), "ns", PARENT, "ns")
    assert vault_covers("secret/data/team/*", "secret/data/team/a/*")
    assert not vault_covers("secret/data/team/a", "secret/data/team/*")
    assert vault_covers("secret/+/x", "secret/data/x") and not vault_covers("secret/+/x", "secret/a/b/x")


def test_narrow_keeps_only_what_the_parent_holds():
    spec = child(
        capabilities=[{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "delete"], "namespaces": ["shared", "other"]},
                      {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]}],
        secrets=[{"path": "secret/data/team/a", "capabilities": ["read", "update"]}, {"path": "secret/x", "capabilities": ["read"]}],
        cloud={"aws": {"actions": ["s3:GetObject", "s3:PutObject"], "resources": ["arn:aws:s3:::reports/a"]}},
    )
    narrowed = narrow(spec, "ns", PARENT, "ns")
    assert narrowed["capabilities"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"], "namespaces": ["shared"]}]
    assert narrowed["secrets"] == [{"path": "secret/data/team/a", "capabilities": ["read"]}]
    assert narrowed["cloud"]["aws"]["actions"] == ["s3:GetObject"]
    assert excess(narrowed, "ns", PARENT, "ns") == []


def test_own_expiry_from_expires_at_or_ttl():
    created = NOW
    assert own_expiry({"ttl": "2h"}, created) == NOW + timedelta(hours=2)
    assert own_expiry({"expiresAt": "2030-01-01T01:00:00Z"}, created) == NOW + timedelta(hours=1)
    assert own_expiry({}, created) is None


def _world(*identities: Ancestor):
    by_key = {(i.namespace, i.name): i for i in identities}
    return lambda ns, name: by_key.get((ns, name))


PARENT_ID = Ancestor("ns", "parent", PARENT, NOW - timedelta(hours=1))


def test_decide_grants_caps_expiry_and_builds_chain():
    spec = child(capabilities=[{"resources": ["pods"], "verbs": ["get"]}], ttl="24h")
    subject = Ancestor("ns", "child", spec, NOW)
    decision = decide(subject, accepted=False, now=NOW, lookup=_world(PARENT_ID))
    assert decision.action == "grant"
    assert decision.expires_at == NOW + timedelta(hours=8)  # capped at the parent's expiry
    # a ttl is a duration: the message names it, and the moment it computes to as such
    assert decision.message == ("granted until 2030-01-01T08:00:00Z (capped at the parent's expiry; "
                                "spec.ttl 24h would end it at 2030-01-02T00:00:00Z)")
    assert [(h["issuer"], h["subject"]) for h in decision.chain] == [("ns/parent", "ns/child")]
    assert decision.chain[0]["scope"] == ["k8s get pods (core) in ns"]


def test_decide_refuses_excess_on_new_generation_and_narrows_accepted_one():
    spec = child(capabilities=[{"resources": ["pods"], "verbs": ["get", "delete"]}])
    subject = Ancestor("ns", "child", spec, NOW)
    refused = decide(subject, accepted=False, now=NOW, lookup=_world(PARENT_ID))
    assert (refused.action, refused.field) == ("refuse", "spec.capabilities[0]")
    assert 'verb "delete" on pods in namespace ns' in refused.message
    narrowed = decide(subject, accepted=True, now=NOW, lookup=_world(PARENT_ID))
    assert narrowed.action == "grant" and narrowed.reason == "Narrowed"
    assert narrowed.spec["capabilities"][0]["verbs"] == ["get"]


def test_decide_bad_input_names_the_field():
    past = Ancestor("ns", "a", {"expiresAt": "2029-01-01T00:00:00Z"}, NOW - timedelta(days=400))
    assert decide(past, accepted=False, now=NOW, lookup=_world()).field == "spec.expiresAt"
    missing = Ancestor("ns", "a", child(), NOW)
    assert decide(missing, accepted=False, now=NOW, lookup=_world()).field == "spec.delegatedFrom.name"
    forbidden = Ancestor("ns", "a", {"delegatedFrom": {"name": "parent", "namespace": "root"}}, NOW)
    root_parent = Ancestor("root", "parent", PARENT, NOW)
    assert decide(forbidden, accepted=False, now=NOW, lookup=_world(root_parent)).field == "spec.delegatedFrom.namespace"
    allowed = decide(forbidden, accepted=False, now=NOW, lookup=_world(root_parent), namespace_allowed=lambda c, p: p == "root")
    assert allowed.action == "grant"
    a = Ancestor("ns", "a", {"delegatedFrom": {"name": "b"}}, NOW)
    b = Ancestor("ns", "b", {"delegatedFrom": {"name": "a"}}, NOW)
    cycle = decide(a, accepted=False, now=NOW, lookup=_world(a, b))
    assert cycle.action == "refuse" and "cycle" in cycle.message and cycle.field.startswith("spec.delegatedFrom")


def test_chain_length_is_capped():
    links = [Ancestor("ns", "i0", PARENT, NOW)] + [
        Ancestor("ns", f"i{n}", {**PARENT, "delegatedFrom": {"name": f"i{n - 1}"}}, NOW) for n in range(1, 6)
    ]
    lookup = _world(*links)
    assert decide(links[3], accepted=False, now=NOW, lookup=lookup, max_depth=3).action == "grant"
    too_deep = decide(links[4], accepted=False, now=NOW, lookup=lookup, max_depth=3)
    assert too_deep.action == "refuse" and "cap of 3" in too_deep.message
    assert len(decide(links[3], accepted=False, now=NOW, lookup=lookup).chain) == 3


def test_expiry_of_self_and_of_parent():
    own = Ancestor("ns", "x", {"expiresAt": "2030-01-01T00:00:00Z"}, NOW - timedelta(hours=1))
    assert decide(own, accepted=True, now=NOW, lookup=_world()).action == "expire"
    expired_parent = Ancestor("ns", "parent", PARENT, NOW, expired=True)
    kid = Ancestor("ns", "kid", child(), NOW)
    decision = decide(kid, accepted=True, now=NOW, lookup=_world(expired_parent))
    assert (decision.action, decision.reason) == ("expire", "ParentExpired")
    assert decide(kid, accepted=True, now=NOW, lookup=_world()).reason == "ParentMissing"


def test_ancestry_digest_changes_with_an_ancestor_only():
    kid = Ancestor("ns", "kid", child(), NOW)
    before = ancestry_digest(kid, _world(PARENT_ID), 3)
    assert ancestry_digest(Ancestor("ns", "kid", child(ttl="1h"), NOW), _world(PARENT_ID), 3) == before  # own spec: not ancestry
    narrowed = Ancestor("ns", "parent", {**PARENT, "secrets": []}, PARENT_ID.created)
    assert ancestry_digest(kid, _world(narrowed), 3) != before
    assert ancestry_digest(kid, _world(Ancestor("ns", "parent", PARENT, PARENT_ID.created, expired=True)), 3) != before
    assert ancestry_digest(kid, _world(), 3) != before


def test_grants_are_worded_stamped_once_and_diffed():
    role = {"kind": "Role", "metadata": {"name": "r", "namespace": "ns"},
            "rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"], "resourceNames": ["web"]}]}
    entry = grants.grant_entry("kubernetes", role, "Role/ns/r")
    assert entry == {"kind": "Role", "name": "r", "namespace": "ns", "detail": "get deployments (apps) named web"}
    assert grants.grant_entry("kubernetes", {"kind": "ServiceAccount", "metadata": {"name": "r"}}, "ServiceAccount/ns/r") is None
    policy = grants.grant_entry("vault-policy", {"policy": 'path "secret/a" {\n  capabilities = ["read"]\n}'}, "sys/policies/acl/p")
    assert policy == {"kind": "VaultPolicy", "name": "sys/policies/acl/p", "detail": 'path "secret/a" { capabilities = ["read"] }'}
    first = grants.stamped([entry, policy], [], "2030-01-01T00:00:00Z")
    assert grants.stamped([entry, policy], first, "2030-01-02T00:00:00Z") == first  # unchanged: same grantedAt
    assert grants.changes([], first) == (['Role ns/r: get deployments (apps) named web',
                                          'VaultPolicy /sys/policies/acl/p: path "secret/a" { capabilities = ["read"] }'], [])
    assert grants.changes(first, first[1:]) == ([], ["Role ns/r: get deployments (apps) named web"])


# --- cluster scope and allowances -----------------------------------------------------------

NODES = {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"], "clusterWide": True}


def test_cluster_wide_parent_covers_any_namespace_and_cluster_wide_child_needs_a_cluster_wide_parent():
    parent = {"capabilities": [{**NODES, "resources": ["nodes", "pods"]}]}
    namespaced = child(capabilities=[{"resources": ["pods"], "verbs": ["get"], "namespaces": ["other"]}])
    assert excess(namespaced, "ns", parent, "ns") == []
    assert excess(child(capabilities=[NODES]), "ns", parent, "ns") == []
    found = excess(child(capabilities=[NODES]), "ns", PARENT, "ns")
    assert str(found[0]) == 'spec.capabilities[0]: verb "get" on nodes in every namespace (clusterWide)'
    # narrowing a cluster-wide child under a namespaced parent keeps what the own namespace holds
    pods = {**NODES, "resources": ["pods"]}
    assert narrow(child(capabilities=[pods]), "ns", PARENT, "ns")["capabilities"] == [{**pods, "clusterWide": False, "namespaces": None}]


def test_not_allowed_names_each_field_that_needs_an_allowance():
    spec = {"capabilities": [NODES, {"resources": ["pods/*"], "verbs": ["*"]}],
            "secrets": [{"path": "+/*"}, {"path": "secret/data/a/*"}], "cloud": {"aws": {"actions": ["*", "s3:Get*"]}}}
    fields = [e.field for e in not_allowed(spec, {})]
    assert fields == ["spec.capabilities[0].clusterWide", "spec.capabilities[1].verbs", "spec.capabilities[1].resources",
                      "spec.secrets[0].path", "spec.cloud.aws.actions[0]"]
    assert [e.field for e in not_allowed(spec, {"wildcards": ["p"]})] == ["spec.capabilities[0].clusterWide"]
    assert not_allowed(spec, {"wildcards": ["p"], "clusterScope": ["q"]}) == []
    kept = within_allowances(spec, {})
    assert kept["capabilities"] == [{**NODES, "clusterWide": False}]
    assert kept["secrets"] == [{"path": "secret/data/a/*"}] and kept["cloud"]["aws"]["actions"] == ["s3:Get*"]


def test_decide_refuses_a_new_generation_that_is_not_allowed_and_narrows_an_accepted_one():
    subject = Ancestor("ns", "ops", {"capabilities": [NODES, {"resources": ["pods"], "verbs": ["get"]}]}, NOW)
    refused = decide(subject, accepted=False, now=NOW, lookup=_world(), allowed={"clusterScope": []})
    assert (refused.action, refused.reason, refused.field) == ("refuse", "NotAllowed", "spec.capabilities[0].clusterWide")
    assert "ClusterScope" in refused.message
    granted = decide(subject, accepted=False, now=NOW, lookup=_world(), allowed={"clusterScope": ["platform"]})
    assert granted.action == "grant" and granted.spec["capabilities"][0]["clusterWide"] is True
    withdrawn = decide(subject, accepted=True, now=NOW, lookup=_world(), allowed={})
    assert (withdrawn.action, withdrawn.reason) == ("grant", "Narrowed")
    assert [c.get("clusterWide", False) for c in withdrawn.spec["capabilities"]] == [False, False]
    assert "what IntentPolicies allow" in withdrawn.message


def test_a_refused_identity_whose_ttl_elapses_reports_expiry_not_a_bad_date():
    """A ttl is a duration: when it elapses on an identity that was never granted (here: not
    allowed), the identity expires like any other; only an expiry already past when the object
    was written is the user's mistake."""
    created = NOW - timedelta(hours=3)
    refused_then_elapsed = Ancestor("ns", "ops", {"capabilities": [NODES], "ttl": "2h"}, created)
    decision = decide(refused_then_elapsed, accepted=False, now=NOW, lookup=_world(), allowed={})
    assert (decision.action, decision.reason, decision.field) == ("expire", "Expired", "spec.ttl")
    assert decision.message == "expired at 2029-12-31T23:00:00Z (never granted)"
    written_past = Ancestor("ns", "late", {"expiresAt": "2029-12-31T00:00:00Z"}, NOW)
    mistake = decide(written_past, accepted=False, now=NOW, lookup=_world())
    assert (mistake.action, mistake.reason, mistake.field) == ("refuse", "InvalidExpiry", "spec.expiresAt")
    assert mistake.message == "2029-12-31T00:00:00Z was already past when the AgentIdentity was created; set a future expiry"


def test_a_zero_ttl_is_refused_as_a_duration_not_as_a_date():
    """`ttl: 0s` passes the schema (a duration) but ends the identity at once: the refusal
    speaks of the duration the user wrote, not of a timestamp they never wrote."""
    zero = decide(Ancestor("ns", "blink", {"ttl": "0s"}, NOW), accepted=False, now=NOW, lookup=_world())
    assert (zero.action, zero.reason, zero.field) == ("refuse", "InvalidExpiry", "spec.ttl")
    assert zero.message == "0s ends the identity the moment it is created; set a longer ttl"


def test_a_refusal_names_its_first_field_once():
    """The condition message is '<decision.field>: <decision.message>', so the message must
    not start with that field again (every other excess keeps its field)."""
    spec = child(capabilities=[{"resources": ["pods"], "verbs": ["get", "delete"]}, {"resources": ["secrets"], "verbs": ["get"]}])
    refused = decide(Ancestor("ns", "child", spec, NOW), accepted=False, now=NOW, lookup=_world(PARENT_ID))
    assert refused.field == "spec.capabilities[0]"
    assert refused.message == ('asks for more than parent ns/parent holds: verb "delete" on pods in namespace ns; '
                               'spec.capabilities[1]: verb "get" on secrets in namespace ns')
    wild = Ancestor("ns", "ops", {"capabilities": [NODES, {"resources": ["pods"], "verbs": ["*"]}]}, NOW)
    not_allowed_ = decide(wild, accepted=False, now=NOW, lookup=_world(), allowed={})
    assert not not_allowed_.message.startswith("spec.") and not_allowed_.message.count(not_allowed_.field) == 0
    assert "spec.capabilities[1].verbs: " in not_allowed_.message
