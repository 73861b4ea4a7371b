"""The composed reconcile (paved.engines.compose) over FakeKube instead of a cluster.

The engine and the real `kubernetes` provider both talk to one FakeKube
(tests/support/kube.py, held to the API server's contract), so the tests see exactly what
was written, how often (its call log), and what was pruned. The e2e tests run the same code
against the real control plane.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kopf
import pytest
from support.kube import FakeKube

from paved.commands.inputs import load_compositions
from paved.engines import compose as _compose
from paved.engines import Engines
from paved.engines.identity import IdentityEngine
from paved.handlers.common import raise_for_kopf
from paved.handlers.identity import reconcile_identity
from paved.identity.ceiling import Ceiling
from paved.handlers.platform import problems_of
from paved.kube import apply as kube
from paved.kube import status as kube_status
from paved.kube.client import ApiError, error_from_status
from paved.kube.status import with_conditions
from paved.providers import base as providers
from paved.providers.base import DeletionResult, Owner
from paved.providers.kubernetes import KubernetesProvider
from paved.render.types import RenderedResource

REPO = Path(__file__).resolve().parents[2]
NS = "team-a"

class Cluster:
    """The FakeKube the engine and the `kubernetes` provider share, and the intent kind over it."""

    def __init__(self) -> None:
        self.kube = FakeKube([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": {"team": "a"}}}])
        self.engine = _compose.ComposeEngine(self.kube)
        self.kind = IdentityEngine(self.engine).kind

    def children(self) -> dict[kube.ObjectKey, dict[str, Any]]:
        """Every object but the namespace, by key."""
        return {kube.key_of(body): body for body in self.kube.objects() if body["kind"] != "Namespace"}

    def reasons(self) -> list[tuple[str, str]]:
        """(type, reason) of every Event posted."""
        return [(type_, reason) for _, reason, _, type_ in self.kube.events]


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    fake = Cluster()
    with providers.PROVIDERS.substituted("kubernetes", lambda: KubernetesProvider(fake.kube)):
        yield fake


@pytest.fixture(scope="module")
def compositions() -> list[dict[str, Any]]:
    return load_compositions((), REPO / "compositions")


def identity(spec: dict[str, Any], *, status: dict[str, Any] | None = None, generation: int = 1) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "paved.dev/v1alpha1",
        "kind": "AgentIdentity",
        "metadata": {"name": "reporter", "namespace": NS, "uid": "uid-reporter", "generation": generation},
        "spec": spec,
    }
    if status is not None:
        body["status"] = status
    return body


READ_CONFIGMAPS = {"capabilities": [{"resources": ["configmaps"], "verbs": ["get", "list"]}]}


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_fresh_identity_creates_account_role_and_binding(cluster: Cluster, compositions: list) -> None:
    outcome = cluster.engine.reconcile(cluster.kind, identity(READ_CONFIGMAPS), compositions)
    kinds = sorted(key.kind for key in cluster.children())
    assert kinds == ["Role", "RoleBinding", "ServiceAccount"]
    for body in cluster.children().values():
        assert body["metadata"]["labels"][kube.MANAGED_BY_LABEL] == "paved"
        assert body["metadata"]["ownerReferences"][0]["uid"] == "uid-reporter"
    status = outcome.status
    assert condition(status, "Ready")["status"] == "True"
    assert condition(status, "Ready")["observedGeneration"] == 1
    assert condition(status, "Synced")["status"] == "True"
    assert status["observedGeneration"] == 1
    assert status["composition"] == "agent-identity-default"
    assert status["renderHash"] and status["serviceAccount"] == "reporter"
    assert [(g["kind"], g["namespace"]) for g in status["grants"]] == [("Role", NS), ("RoleBinding", NS)]
    assert status["grants"][0]["detail"] == "get,list configmaps"
    assert [r["ready"] for r in status["resources"]] == [True, True, True]
    assert outcome.changed == {"observedGeneration", "composition", "compositionRevision", "renderHash", "resources", "serviceAccount", "grants",
                               "conditions"}
    reasons = [reason for _, reason in cluster.reasons()]
    assert "Ready" in reasons and reasons.count("Granted") == 2


def test_unchanged_identity_is_quiet(cluster: Cluster, compositions: list) -> None:
    first = cluster.engine.reconcile(cluster.kind, identity(READ_CONFIGMAPS), compositions)
    cluster.kube.calls.clear()
    cluster.kube.events.clear()
    again = cluster.engine.reconcile(cluster.kind, identity(READ_CONFIGMAPS, status=first.status), compositions)
    assert cluster.kube.writes() == []
    assert again.changed == frozenset()
    assert cluster.kube.events == []
    assert again.result.result_label == "unchanged"


def test_an_idle_reconcile_sends_no_status_request(cluster: Cluster, compositions: list,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the Kopf handler: the first reconcile applies the reconcile's part of the status
    once; a re-run that changes nothing (a resume, a re-listing, another writer's condition
    added meanwhile) sends no status request at all."""
    engines = Engines(kube=cluster.kube)
    monkeypatch.setattr(engines.identities, "ceiling",
                        lambda: Ceiling(rules=({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]},)))

    def status_writers() -> list[str | None]:
        return [call.field_manager for call in cluster.kube.calls if call.verb == "apply_fields" and call.subresource == "status"]

    cluster.kube.put(identity(READ_CONFIGMAPS))
    reconcile_identity(body=cluster.kube.obj("AgentIdentity", "reporter", NS), retry=0, composition_index=compositions,
                       identity_summaries={}, memo=engines)
    assert status_writers() == ["paved-reconcile"]
    assert condition(cluster.kube.obj("AgentIdentity", "reporter", NS)["status"], "Ready")["status"] == "True"  # type: ignore[index]
    # What the API server now holds: the reconcile's part, and the audit's condition next to it.
    audit = with_conditions({}, [("PolicyCompliant", True, "NoPolicies", "no IntentPolicy applies")], 1)
    cluster.kube.apply_fields(kube_status.status_body("paved.dev/v1alpha1", "AgentIdentity", NS, "reporter", audit),
                              field_manager="paved-audit", subresource="status")
    for _ in range(3):
        reconcile_identity(body=cluster.kube.obj("AgentIdentity", "reporter", NS), retry=0, composition_index=compositions,
                           identity_summaries={}, memo=engines)
    assert status_writers() == ["paved-reconcile", "paved-audit"]  # no second request of the reconcile's
    engines.stop()


def test_a_path_reading_an_older_body_never_puts_back_what_another_path_wrote(cluster: Cluster, compositions: list) -> None:
    """An identity's daemon narrows it (Accepted=Narrowed) while a children drift restore,
    triggered by that narrowing, still holds the intent as read before: the restore computes
    from, and compares with, the status as last written, so it keeps Narrowed."""
    engine = _compose.ComposeEngine(cluster.kube)
    kind = IdentityEngine(engine).kind
    before = identity(READ_CONFIGMAPS)
    cluster.kube.put(before)
    engine.reconcile_and_write(kind, before, lambda current: (with_conditions(
        current.get("status"), [("Accepted", True, "Narrowed", "the parent no longer holds pods")], 1), None))
    engine.reconcile_written(kind, before, compositions, trigger="DELETED of Role/team-a/reporter")
    applied = (cluster.kube.obj("AgentIdentity", "reporter", NS) or {})["status"]
    assert cluster.kube.count("apply_fields", subresource="status") == 2
    assert condition(applied, "Accepted")["reason"] == "Narrowed" and condition(applied, "Ready")["status"] == "True"
    engine.forget("uid-reporter")
    assert engine.as_written(kind, before) is before


def test_the_policy_audit_yields_while_an_intent_is_reconciled(monkeypatch: pytest.MonkeyPatch) -> None:
    from paved import ratelimit

    monkeypatch.setattr(kube_status, "apply_status", lambda *args, **kwargs: {})
    engine = _compose.ComposeEngine(FakeKube())
    seen: list[bool] = []
    engine.reconcile_and_write(IdentityEngine(engine).kind, identity(READ_CONFIGMAPS),
                               lambda current: (seen.append(ratelimit.BURST.active()) or None, None))
    assert seen == [True] and not ratelimit.BURST.active()


def test_drifted_and_deleted_children_are_restored(cluster: Cluster, compositions: list) -> None:
    first = cluster.engine.reconcile(cluster.kind, identity(READ_CONFIGMAPS), compositions)
    role_key = next(k for k in cluster.children() if k.kind == "Role")
    binding_key = next(k for k in cluster.children() if k.kind == "RoleBinding")
    role = cluster.children()[role_key]
    role["rules"][0]["verbs"] = ["get", "list", "delete"]
    cluster.kube.put(role)  # as `kubectl edit` would
    cluster.kube.delete(binding_key.api_version, binding_key.kind, binding_key.name, binding_key.namespace)
    cluster.kube.calls.clear()

    again = cluster.engine.reconcile(cluster.kind, identity(READ_CONFIGMAPS, status=first.status), compositions)
    assert sorted(call.verb for call in cluster.kube.writes()) == ["apply", "apply"]
    assert cluster.children()[role_key]["rules"][0]["verbs"] == ["get", "list"]
    assert binding_key in cluster.children()
    assert again.changed == frozenset()  # the desired state did not change; only reality was corrected
    drift_events = [message for _, reason, message, _ in cluster.kube.events if reason == "DriftCorrected"]
    assert drift_events and "rules[0].verbs" in drift_events[-1] and "(missing)" in drift_events[-1]


def test_wildcard_verb_is_refused_before_anything_is_written(cluster: Cluster, compositions: list) -> None:
    spec = {"capabilities": [{"resources": ["configmaps"], "verbs": ["*"]}]}
    outcome = cluster.engine.reconcile(cluster.kind, identity(spec), compositions)
    assert cluster.children() == {} and cluster.kube.writes() == []
    ready = condition(outcome.status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "RenderFailed")
    assert ready["message"].startswith("spec.capabilities[0].verbs: ")
    assert outcome.result.error is not None and outcome.result.error.field == "spec.capabilities[0].verbs"
    assert not outcome.result.error.retryable
    raise_for_kopf(outcome, retry=0)  # permanent: no Kopf retry
    assert ("Warning", "RenderFailed") in cluster.reasons()


def test_schema_invalid_spec_names_the_field_and_writes_nothing(cluster: Cluster, compositions: list) -> None:
    spec = {"capabilities": [{"resources": ["configmaps"], "verbs": ["get"], "colour": "red"}]}
    outcome = cluster.engine.reconcile(cluster.kind, identity(spec), compositions)
    assert cluster.kube.writes() == [] and cluster.kube.count("get") == cluster.kube.count("list") == 0
    ready = condition(outcome.status, "Ready")
    assert ready["reason"] == "InvalidSpec"
    assert "spec.capabilities[0].colour" in ready["message"]


def test_invalid_new_generation_keeps_the_previous_grants(cluster: Cluster, compositions: list) -> None:
    first = cluster.engine.reconcile(cluster.kind, identity(READ_CONFIGMAPS), compositions)
    spec = {"capabilities": [{"resources": ["configmaps"], "verbs": ["*"]}]}
    second = cluster.engine.reconcile(cluster.kind, identity(spec, status=first.status, generation=2), compositions)
    assert second.status["grants"] == first.status["grants"]
    assert second.status["renderHash"] == first.status["renderHash"]
    assert second.status["observedGeneration"] == 2
    assert condition(second.status, "Ready")["status"] == "False"
    assert len(cluster.children()) == 3


def test_dropping_a_namespace_prunes_its_role_and_binding(cluster: Cluster, compositions: list) -> None:
    wide = {"capabilities": [{"resources": ["configmaps"], "verbs": ["get"], "namespaces": ["team-b"]}]}
    first = cluster.engine.reconcile(cluster.kind, identity(wide), compositions)
    in_b = {k for k in cluster.children() if k.namespace == "team-b"}
    assert {k.kind for k in in_b} == {"Role", "RoleBinding"}
    for key in in_b:  # another namespace: no ownerReference possible, the annotation instead
        assert "ownerReferences" not in cluster.children()[key]["metadata"]
        assert cluster.children()[key]["metadata"]["annotations"][kube.OWNER_ANNOTATION].endswith(f"/{NS}/reporter")

    second = cluster.engine.reconcile(cluster.kind, identity(READ_CONFIGMAPS, status=first.status, generation=2), compositions)
    assert not {k for k in cluster.children() if k.namespace == "team-b"}
    assert sorted(second.result.pruned) == sorted(str(k) for k in in_b)
    assert [g["namespace"] for g in second.status["grants"]] == [NS, NS]
    assert any(reason == "Revoked" for _, reason in cluster.reasons())


def test_missing_composition_is_reported(cluster: Cluster) -> None:
    outcome = cluster.engine.reconcile(cluster.kind, identity(READ_CONFIGMAPS), [])
    ready = condition(outcome.status, "Ready")
    assert ready["reason"] == "NoComposition"
    assert "spec.compositionRef.name" in ready["message"]
    assert cluster.kube.writes() == []


def test_retryable_provider_error_asks_kopf_to_retry_with_backoff(cluster: Cluster, compositions: list) -> None:
    for kind in ("ServiceAccount", "Role", "RoleBinding"):
        cluster.kube.fail("apply", kind, ApiError(503, "ServiceUnavailable", "try later", method="PATCH"))
    outcome = cluster.engine.reconcile(cluster.kind, identity(READ_CONFIGMAPS), compositions)
    assert condition(outcome.status, "Ready")["reason"] == "ProviderError"
    with pytest.raises(kopf.TemporaryError) as raised:
        raise_for_kopf(outcome, retry=3)
    assert 8 <= raised.value.delay <= 16

    for kind in ("ServiceAccount", "Role", "RoleBinding"):
        cluster.kube.fail("apply", kind, ApiError(403, "Forbidden", "forbidden", method="PATCH"))
    permanent = cluster.engine.reconcile(cluster.kind, identity(READ_CONFIGMAPS), compositions)
    raise_for_kopf(permanent, retry=0)


def test_backoff_grows_and_is_capped() -> None:
    assert 1 <= _compose.backoff(0) <= 2
    assert _compose.backoff(50) <= _compose.BACKOFF_CAP


CHAINED = {
    "apiVersion": "paved.dev/v1alpha1",
    "kind": "Composition",
    "metadata": {"name": "chained"},
    "spec": {
        "compositeKind": "AgentIdentity",
        "default": True,
        "generatedSecrets": [{"name": "token", "length": 24}],
        "resources": [
            {"name": "first", "provider": "kubernetes", "template": (
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: first}\ndata: {token: {{ generated.token | to_json }}}\n")},
            {"name": "second", "provider": "kubernetes", "template": (
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: second}\ndata: {peer: {{ outputs.first.uid | to_json }}}\n")},
        ],
    },
}


def test_outputs_flow_to_later_resources_and_generated_values_are_made_once(cluster: Cluster) -> None:
    assert problems_of(CHAINED) == []
    first = cluster.engine.reconcile(cluster.kind, identity({}), [CHAINED])
    assert first.result.ready and first.result.pending == []
    secret = cluster.children()[kube.ObjectKey("v1", "Secret", NS, "reporter-paved-generated")]
    token = base64.b64decode(secret["data"]["token"]).decode()
    first_cm = cluster.children()[kube.ObjectKey("v1", "ConfigMap", NS, "first")]
    assert first_cm["data"]["token"] == token
    second_cm = cluster.children()[kube.ObjectKey("v1", "ConfigMap", NS, "second")]
    assert second_cm["data"]["peer"] == first_cm["metadata"]["uid"]
    assert token not in str(first.status) and token not in str(cluster.kube.events)

    cluster.engine.reconcile(cluster.kind, identity({}, status=first.status), [CHAINED])
    assert base64.b64decode(cluster.children()[kube.ObjectKey("v1", "Secret", NS, "reporter-paved-generated")]["data"]["token"]).decode() == token


def test_generated_values_echoed_by_the_api_server_never_reach_status(cluster: Cluster) -> None:
    def echoing_apply() -> None:
        # As the API server answers a value it refuses: quoted, in the message and in the cause.
        generated = cluster.kube.obj("Secret", "reporter-paved-generated", NS) or {}
        token = base64.b64decode(generated["data"]["token"]).decode()
        refused = f'Invalid value: "{token}" ({token.upper()}, {base64.b64encode(token.encode()).decode()}): too secret'
        status = {"code": 422, "reason": "Invalid", "message": f'ConfigMap "first" is invalid: data[token]: {refused}',
                  "details": {"name": "first", "kind": "ConfigMap", "causes": [
                      {"reason": "FieldValueInvalid", "field": "data[token]", "message": refused}]}}
        raise error_from_status(status)

    cluster.kube.before("apply", "ConfigMap", echoing_apply)
    outcome = cluster.engine.reconcile(cluster.kind, identity({}), [CHAINED])
    secret = cluster.children()[kube.ObjectKey("v1", "Secret", NS, "reporter-paved-generated")]
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert outcome.result.error is not None and "data[token]: invalid value" in outcome.result.error.message
    for form in (token, token.upper(), secret["data"]["token"]):
        assert form not in str(outcome.status) and form not in str(cluster.kube.events)


def test_broken_template_is_a_composition_problem() -> None:
    broken = copy.deepcopy(CHAINED)
    broken["spec"]["resources"][0]["template"] = "{% if %}"
    problems = problems_of(broken)
    assert problems and "first" in problems[0]


def test_finalize_prunes_only_unowned_children(cluster: Cluster, compositions: list) -> None:
    wide = {"capabilities": [{"resources": ["configmaps"], "verbs": ["get"], "namespaces": ["team-b"]}]}
    cluster.engine.reconcile(cluster.kind, identity(wide), compositions)
    assert cluster.engine.finalize(cluster.kind, identity(wide), compositions) == []
    assert {k.namespace for k in cluster.children()} == {NS}  # owned ones are left to the garbage collector


class SlowCloud:
    """A cloud provider whose deletions take `deleting` checks to finish, resource by resource."""

    name = "slow-cloud"

    def __init__(self, deleting: dict[str, int]) -> None:
        self.deleting = deleting
        self.deletes: list[str] = []

    def delete(self, resource: RenderedResource, owner: Owner, policy: str) -> DeletionResult:
        self.deletes.append(resource.name)
        self.deleting[resource.name] = self.deleting.get(resource.name, 0) - 1
        return DeletionResult(done=self.deleting[resource.name] < 0, message="still deleting")


NETWORKED = {
    "apiVersion": "paved.dev/v1alpha1", "kind": "Composition", "metadata": {"name": "networked"},
    "spec": {"compositeKind": "AgentIdentity", "default": True, "resources": [
        {"name": name, "provider": "slow-cloud", "template": f"Name: {name}\n"} for name in ("subnets", "group", "database")]},
}


def test_finalize_deletes_in_reverse_order_each_after_the_later_ones_are_gone(cluster: Cluster) -> None:
    cloud = SlowCloud({"database": 1})  # the database takes one more check to go
    with providers.PROVIDERS.substituted("slow-cloud", lambda: cloud):
        assert cluster.engine.finalize(cluster.kind, identity({}), [NETWORKED]) == ["database: still deleting"]
        assert cloud.deletes == ["database"]  # its network is not touched while it exists
        assert cluster.engine.finalize(cluster.kind, identity({}), [NETWORKED]) == []
    assert cloud.deletes == ["database", "database", "group", "subnets"]


def test_scope_follows_the_namespaces_of_paved_run() -> None:
    assert _compose.in_scope("any", frozenset())
    assert _compose.in_scope("team-a", frozenset({"team-a"}))
    assert not _compose.in_scope("team-b", frozenset({"team-a"}))
