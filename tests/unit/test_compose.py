"""The composed reconcile (paved.engines.compose) with in-memory fakes instead of a cluster.

A fake `kubernetes` provider and fake paved.kube functions share one dict of objects, so
the tests see exactly what was written, how often, and what was pruned. Only unit tests
use these fakes; the e2e tests run the real provider against the real control plane.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kopf
import pytest

from paved.commands.inputs import load_compositions
from paved.engines import compose as _compose
from paved.engines.compose import engine as compose_engine
from paved.engines import Engines
from paved.engines.identity import IdentityEngine
from paved.handlers.common import raise_for_kopf
from paved.handlers.identity import reconcile_identity
from paved.identity.ceiling import Ceiling
from paved.handlers.platform import problems_of
from paved.kube import apply as kube
from paved.kube import status as kube_status
from paved.kube.client import error_from_status
from paved.kube.status import with_conditions
from paved.providers import kubernetes as kubernetes_provider
from paved.providers import base as providers
from paved.providers.base import DeletionResult, Observation, Owner, ProviderError
from paved.render.types import RenderedResource

ENGINE = _compose.ComposeEngine()
IDENTITY = IdentityEngine(ENGINE).kind
REPO = Path(__file__).resolve().parents[2]
NS = "team-a"


class FakeCluster:
    """Objects by ObjectKey, plus a log of writes; stands in for the API server."""

    def __init__(self) -> None:
        self.objects: dict[kube.ObjectKey, dict[str, Any]] = {}
        self.writes: list[tuple[str, str]] = []
        self.reads = 0
        self.events: list[tuple[str, str, str]] = []
        self.fail_apply: ProviderError | None = None

    def key(self, body: dict[str, Any], owner: Owner) -> kube.ObjectKey:
        metadata = body["metadata"]
        namespaced = body["kind"] not in ("ClusterRole", "ClusterRoleBinding", "Namespace")
        return kube.ObjectKey(body["apiVersion"], body["kind"], (metadata.get("namespace") or owner.namespace) if namespaced else "", metadata["name"])

    # --- paved.kube.apply stand-ins
    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        self.reads += 1
        if kind == "Namespace":
            return {"metadata": {"name": name, "labels": {"team": "a"}}}
        found = self.objects.get(kube.ObjectKey(api_version, kind, namespace or "", name))
        return copy.deepcopy(found)

    def create(self, body: dict[str, Any], owner: Owner) -> dict[str, Any] | None:
        decorated = kube.decorate(body, owner, namespaced=True)
        key = self.key(decorated, owner)
        if key in self.objects:
            return None
        decorated["metadata"]["resourceVersion"] = "1"
        self.objects[key] = decorated
        self.writes.append(("create", str(key)))
        return copy.deepcopy(decorated)

    def merge_patch(self, live: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
        key = kube.key_of(live)
        self.objects[key].setdefault("data", {}).update(patch.get("data") or {})
        self.writes.append(("patch", str(key)))
        return copy.deepcopy(self.objects[key])

    def prune(self, owner: Owner, keep: set[kube.ObjectKey], kinds: Any, *, only_unowned: bool = False) -> list[kube.ObjectKey]:
        wanted = {kind for _, kind in kinds}
        doomed = [
            key for key, body in self.objects.items()
            if key.kind in wanted and key not in keep and kube.is_owned_by(body, owner)
            and not (only_unowned and body["metadata"].get("ownerReferences"))
        ]
        for key in doomed:
            del self.objects[key]
            self.writes.append(("delete", str(key)))
        return doomed

    def post_event(self, owner: Owner, reason: str, message: str, type: str = "Normal") -> None:
        self.events.append((type, reason, message))


class FakeKubernetesProvider:
    """The `kubernetes` provider over FakeCluster (observe = get + drift; apply = store)."""

    name = "kubernetes"

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster

    def observe(self, resource: RenderedResource, owner: Owner) -> Observation:
        desired = kube.decorate(resource.body, owner, namespaced=True, allow_unowned=True)
        key = self.cluster.key(desired, owner)
        self.cluster.reads += 1
        live = self.cluster.objects.get(key)
        if live is None:
            return Observation(exists=False, external_id=str(key))
        return Observation(exists=True, ready=True, outputs={"name": key.name}, external_id=str(key), drift=kube.drift(desired, live))

    def apply(self, resource: RenderedResource, owner: Owner) -> Observation:
        if self.cluster.fail_apply is not None:
            raise self.cluster.fail_apply
        desired = kube.decorate(resource.body, owner, namespaced=True, allow_unowned=True)
        key = self.cluster.key(desired, owner)
        self.cluster.objects[key] = desired
        self.cluster.writes.append(("apply", str(key)))
        return Observation(exists=True, ready=True, outputs={"name": key.name, "uid": f"uid-of-{key.name}"}, external_id=str(key), changed=True)

    def delete(self, resource: RenderedResource, owner: Owner, policy: str) -> DeletionResult:
        return DeletionResult(done=True)


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCluster]:
    fake = FakeCluster()
    for name in ("get", "create", "merge_patch", "prune"):
        monkeypatch.setattr(kube, name, getattr(fake, name))
    monkeypatch.setattr(compose_engine.events, "post_event", fake.post_event)
    with providers.PROVIDERS.substituted("kubernetes", lambda: FakeKubernetesProvider(fake)):
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


def test_fresh_identity_creates_account_role_and_binding(cluster: FakeCluster, compositions: list) -> None:
    outcome = ENGINE.reconcile(IDENTITY, identity(READ_CONFIGMAPS), compositions)
    kinds = sorted(key.kind for key in cluster.objects)
    assert kinds == ["Role", "RoleBinding", "ServiceAccount"]
    for body in cluster.objects.values():
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
    reasons = [reason for _, reason, _ in cluster.events]
    assert "Ready" in reasons and reasons.count("Granted") == 2


def test_unchanged_identity_is_quiet(cluster: FakeCluster, compositions: list) -> None:
    first = ENGINE.reconcile(IDENTITY, identity(READ_CONFIGMAPS), compositions)
    cluster.writes.clear()
    cluster.events.clear()
    again = ENGINE.reconcile(IDENTITY, identity(READ_CONFIGMAPS, status=first.status), compositions)
    assert cluster.writes == []
    assert again.changed == frozenset()
    assert cluster.events == []
    assert again.result.result_label == "unchanged"


def test_an_idle_reconcile_sends_no_status_request(cluster: FakeCluster, compositions: list,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the Kopf handler: the first reconcile applies the reconcile's part of the status
    once; a re-run that changes nothing (a resume, a re-listing, another writer's condition
    added meanwhile) sends no status request at all."""
    engines = Engines()
    monkeypatch.setattr(engines.identities, "ceiling",
                        lambda: Ceiling(rules=({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]},)))
    requests: list[tuple[str, dict[str, Any]]] = []

    def apply_status(api_version: str, kind: str, namespace: str | None, name: str, status: Any, *,
                     field_manager: str) -> dict[str, Any]:
        requests.append((field_manager, copy.deepcopy(dict(status))))
        return {**body, "status": copy.deepcopy(dict(status))}

    monkeypatch.setattr(kube_status, "apply_status", apply_status)
    body = identity(READ_CONFIGMAPS)
    reconcile_identity(body=body, retry=0, composition_index=compositions, identity_summaries={}, memo=engines)
    [(manager, applied)] = requests
    assert manager == "paved-reconcile" and condition(applied, "Ready")["status"] == "True"
    # What the API server now holds: the reconcile's part, and the audit's condition next to it.
    body["status"] = with_conditions(applied, [("PolicyCompliant", True, "NoPolicies", "no IntentPolicy applies")], 1)
    for _ in range(3):
        reconcile_identity(body=copy.deepcopy(body), retry=0, composition_index=compositions, identity_summaries={},
                           memo=engines)
    assert len(requests) == 1
    engines.stop()


def test_a_path_reading_an_older_body_never_puts_back_what_another_path_wrote(
        cluster: FakeCluster, compositions: list, monkeypatch: pytest.MonkeyPatch) -> None:
    """An identity's daemon narrows it (Accepted=Narrowed) while a children drift restore,
    triggered by that narrowing, still holds the intent as read before: the restore computes
    from, and compares with, the status as last written, so it keeps Narrowed."""
    applied: list[dict[str, Any]] = []
    monkeypatch.setattr(kube_status, "apply_status", lambda *args, **kwargs: applied.append(copy.deepcopy(dict(args[4]))) or {})
    engine = _compose.ComposeEngine()
    kind = IdentityEngine(engine).kind
    before = identity(READ_CONFIGMAPS)
    engine.reconcile_and_write(kind, before, lambda current: (with_conditions(
        current.get("status"), [("Accepted", True, "Narrowed", "the parent no longer holds pods")], 1), None))
    engine.reconcile_written(kind, before, compositions, trigger="DELETED of Role/team-a/reporter")
    assert condition(applied[-1], "Accepted")["reason"] == "Narrowed" and condition(applied[-1], "Ready")["status"] == "True"
    engine.forget("uid-reporter")
    assert engine.as_written(kind, before) is before


def test_the_policy_audit_yields_while_an_intent_is_reconciled(monkeypatch: pytest.MonkeyPatch) -> None:
    from paved import ratelimit

    monkeypatch.setattr(kube_status, "apply_status", lambda *args, **kwargs: {})
    engine = _compose.ComposeEngine()
    seen: list[bool] = []
    engine.reconcile_and_write(IDENTITY, identity(READ_CONFIGMAPS),
                               lambda current: (seen.append(ratelimit.BURST.active()) or None, None))
    assert seen == [True] and not ratelimit.BURST.active()


def test_drifted_and_deleted_children_are_restored(cluster: FakeCluster, compositions: list) -> None:
    first = ENGINE.reconcile(IDENTITY, identity(READ_CONFIGMAPS), compositions)
    role_key = next(k for k in cluster.objects if k.kind == "Role")
    binding_key = next(k for k in cluster.objects if k.kind == "RoleBinding")
    cluster.objects[role_key]["rules"][0]["verbs"] = ["get", "list", "delete"]
    del cluster.objects[binding_key]
    cluster.writes.clear()

    again = ENGINE.reconcile(IDENTITY, identity(READ_CONFIGMAPS, status=first.status), compositions)
    assert sorted(op for op, _ in cluster.writes) == ["apply", "apply"]
    assert cluster.objects[role_key]["rules"][0]["verbs"] == ["get", "list"]
    assert binding_key in cluster.objects
    assert again.changed == frozenset()  # the desired state did not change; only reality was corrected
    drift_events = [message for _, reason, message in cluster.events if reason == "DriftCorrected"]
    assert drift_events and "rules[0].verbs" in drift_events[-1] and "(missing)" in drift_events[-1]


def test_wildcard_verb_is_refused_before_anything_is_written(cluster: FakeCluster, compositions: list) -> None:
    spec = {"capabilities": [{"resources": ["configmaps"], "verbs": ["*"]}]}
    outcome = ENGINE.reconcile(IDENTITY, identity(spec), compositions)
    assert cluster.objects == {} and cluster.writes == []
    ready = condition(outcome.status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "RenderFailed")
    assert ready["message"].startswith("spec.capabilities[0].verbs: ")
    assert outcome.result.error is not None and outcome.result.error.field == "spec.capabilities[0].verbs"
    assert not outcome.result.error.retryable
    raise_for_kopf(outcome, retry=0)  # permanent: no Kopf retry
    assert ("Warning", "RenderFailed") in [(t, r) for t, r, _ in cluster.events]


def test_schema_invalid_spec_names_the_field_and_writes_nothing(cluster: FakeCluster, compositions: list) -> None:
    spec = {"capabilities": [{"resources": ["configmaps"], "verbs": ["get"], "colour": "red"}]}
    outcome = ENGINE.reconcile(IDENTITY, identity(spec), compositions)
    assert cluster.writes == [] and cluster.reads == 0
    ready = condition(outcome.status, "Ready")
    assert ready["reason"] == "InvalidSpec"
    assert "spec.capabilities[0].colour" in ready["message"]


def test_invalid_new_generation_keeps_the_previous_grants(cluster: FakeCluster, compositions: list) -> None:
    first = ENGINE.reconcile(IDENTITY, identity(READ_CONFIGMAPS), compositions)
    spec = {"capabilities": [{"resources": ["configmaps"], "verbs": ["*"]}]}
    second = ENGINE.reconcile(IDENTITY, identity(spec, status=first.status, generation=2), compositions)
    assert second.status["grants"] == first.status["grants"]
    assert second.status["renderHash"] == first.status["renderHash"]
    assert second.status["observedGeneration"] == 2
    assert condition(second.status, "Ready")["status"] == "False"
    assert len(cluster.objects) == 3


def test_dropping_a_namespace_prunes_its_role_and_binding(cluster: FakeCluster, compositions: list) -> None:
    wide = {"capabilities": [{"resources": ["configmaps"], "verbs": ["get"], "namespaces": ["team-b"]}]}
    first = ENGINE.reconcile(IDENTITY, identity(wide), compositions)
    in_b = {k for k in cluster.objects if k.namespace == "team-b"}
    assert {k.kind for k in in_b} == {"Role", "RoleBinding"}
    for key in in_b:  # another namespace: no ownerReference possible, the annotation instead
        assert "ownerReferences" not in cluster.objects[key]["metadata"]
        assert cluster.objects[key]["metadata"]["annotations"][kube.OWNER_ANNOTATION].endswith(f"/{NS}/reporter")

    second = ENGINE.reconcile(IDENTITY, identity(READ_CONFIGMAPS, status=first.status, generation=2), compositions)
    assert not {k for k in cluster.objects if k.namespace == "team-b"}
    assert sorted(second.result.pruned) == sorted(str(k) for k in in_b)
    assert [g["namespace"] for g in second.status["grants"]] == [NS, NS]
    assert any(reason == "Revoked" for _, reason, _ in cluster.events)


def test_missing_composition_is_reported(cluster: FakeCluster) -> None:
    outcome = ENGINE.reconcile(IDENTITY, identity(READ_CONFIGMAPS), [])
    ready = condition(outcome.status, "Ready")
    assert ready["reason"] == "NoComposition"
    assert "spec.compositionRef.name" in ready["message"]
    assert cluster.writes == []


def test_retryable_provider_error_asks_kopf_to_retry_with_backoff(cluster: FakeCluster, compositions: list) -> None:
    cluster.fail_apply = ProviderError("503 ServiceUnavailable", retryable=True)
    outcome = ENGINE.reconcile(IDENTITY, identity(READ_CONFIGMAPS), compositions)
    assert condition(outcome.status, "Ready")["reason"] == "ProviderError"
    with pytest.raises(kopf.TemporaryError) as raised:
        raise_for_kopf(outcome, retry=3)
    assert 8 <= raised.value.delay <= 16

    cluster.fail_apply = ProviderError("forbidden", retryable=False)
    permanent = ENGINE.reconcile(IDENTITY, identity(READ_CONFIGMAPS), compositions)
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


def test_outputs_flow_to_later_resources_and_generated_values_are_made_once(cluster: FakeCluster) -> None:
    assert problems_of(CHAINED) == []
    first = ENGINE.reconcile(IDENTITY, identity({}), [CHAINED])
    assert first.result.ready and first.result.pending == []
    secret = cluster.objects[kube.ObjectKey("v1", "Secret", NS, "reporter-paved-generated")]
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert cluster.objects[kube.ObjectKey("v1", "ConfigMap", NS, "first")]["data"]["token"] == token
    second_cm = cluster.objects[kube.ObjectKey("v1", "ConfigMap", NS, "second")]
    assert second_cm["data"]["peer"] == "uid-of-first"
    assert token not in str(first.status) and token not in str(cluster.events)

    ENGINE.reconcile(IDENTITY, identity({}, status=first.status), [CHAINED])
    assert base64.b64decode(cluster.objects[kube.ObjectKey("v1", "Secret", NS, "reporter-paved-generated")]["data"]["token"]).decode() == token


def test_generated_values_echoed_by_the_api_server_never_reach_status(cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    def echoing_apply(self: FakeKubernetesProvider, resource: RenderedResource, owner: Owner) -> Observation:
        # As the API server answers a value it refuses: quoted, in the message and in the cause.
        token = resource.body.get("data", {}).get("token", "none")
        refused = f'Invalid value: "{token}" ({token.upper()}, {base64.b64encode(token.encode()).decode()}): too secret'
        status = {"code": 422, "reason": "Invalid", "message": f'ConfigMap "first" is invalid: data[token]: {refused}',
                  "details": {"name": "first", "kind": "ConfigMap", "causes": [
                      {"reason": "FieldValueInvalid", "field": "data[token]", "message": refused}]}}
        raise kubernetes_provider._provider_error(error_from_status(status), "applying", resource.body)

    monkeypatch.setattr(FakeKubernetesProvider, "apply", echoing_apply)
    outcome = ENGINE.reconcile(IDENTITY, identity({}), [CHAINED])
    secret = cluster.objects[kube.ObjectKey("v1", "Secret", NS, "reporter-paved-generated")]
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert outcome.result.error is not None and "data[token]: invalid value" in outcome.result.error.message
    for form in (token, token.upper(), secret["data"]["token"]):
        assert form not in str(outcome.status) and form not in str(cluster.events)


def test_broken_template_is_a_composition_problem() -> None:
    broken = copy.deepcopy(CHAINED)
    broken["spec"]["resources"][0]["template"] = "{% if %}"
    problems = problems_of(broken)
    assert problems and "first" in problems[0]


def test_finalize_prunes_only_unowned_children(cluster: FakeCluster, compositions: list) -> None:
    wide = {"capabilities": [{"resources": ["configmaps"], "verbs": ["get"], "namespaces": ["team-b"]}]}
    ENGINE.reconcile(IDENTITY, identity(wide), compositions)
    assert ENGINE.finalize(IDENTITY, identity(wide), compositions) == []
    assert {k.namespace for k in cluster.objects} == {NS}  # owned ones are left to the garbage collector


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


def test_finalize_deletes_in_reverse_order_each_after_the_later_ones_are_gone(cluster: FakeCluster) -> None:
    cloud = SlowCloud({"database": 1})  # the database takes one more check to go
    with providers.PROVIDERS.substituted("slow-cloud", lambda: cloud):
        assert ENGINE.finalize(IDENTITY, identity({}), [NETWORKED]) == ["database: still deleting"]
        assert cloud.deletes == ["database"]  # its network is not touched while it exists
        assert ENGINE.finalize(IDENTITY, identity({}), [NETWORKED]) == []
    assert cloud.deletes == ["database", "database", "group", "subnets"]


def test_scope_follows_the_namespaces_of_paved_run() -> None:
    assert _compose.in_scope("any", frozenset())
    assert _compose.in_scope("team-a", frozenset({"team-a"}))
    assert not _compose.in_scope("team-b", frozenset({"team-a"}))
