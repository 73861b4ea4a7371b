"""Composition revisions and rollout waves end to end: real control plane, the session's `paved run`.

A change of a Composition is recorded as an immutable CompositionRevision and reaches the
intents rendered with it in waves of spec.rollout.maxInFlight, each gated on the previous
wave's Ready; a failing intent halts the rollout with the others untouched; Manual intents
stay. The Compositions here render a ConfigMap (ready at once) and, to hold a wave in flight,
a StatefulSet whose pod fits no node (never ready; kwok would run it otherwise).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from fixtures.cluster import Kubectl, wait_for
from fixtures.operator import OperatorProcess

from e2e.cluster import Cluster, condition

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("operator")]

CONFIG_MAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ intent.metadata.name }}-info
data:
  value: VALUE
"""
STATEFUL_SET = """\
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {{ intent.metadata.name }}-db
spec:
  replicas: 1
  serviceName: {{ intent.metadata.name }}
  selector: {matchLabels: {app: {{ intent.metadata.name }}}}
  template:
    metadata: {labels: {app: {{ intent.metadata.name }}}}
    spec:
      nodeSelector: {example.com/nowhere: "true"}
      containers: [{name: db, image: postgres}]
"""
REFUSE_LARGE = """{% if intent.spec.size == 'large' %}{{ fail('spec.size', 'this revision has no instance class for large') }}{% endif %}\n"""


def composition(name: str, value: str, *, max_in_flight: int = 2, holding: bool = False, refusing: bool = False) -> dict[str, Any]:
    resources = [{"name": "info", "provider": "kubernetes",
                  "template": (REFUSE_LARGE if refusing else "") + CONFIG_MAP.replace("VALUE", value)}]
    if holding:
        resources.append({"name": "db", "provider": "kubernetes", "template": STATEFUL_SET})
    return {"apiVersion": "paved.dev/v1alpha1", "kind": "Composition", "metadata": {"name": name},
            "spec": {"compositeKind": "DatabaseIntent", "rollout": {"maxInFlight": max_in_flight, "maxFailures": 1},
                     "resources": resources}}


def intent(name: str, namespace: str, comp: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "paved.dev/v1alpha1", "kind": "DatabaseIntent", "metadata": {"name": name, "namespace": namespace},
            "spec": {"engine": "postgresql", "version": "16", "compositionRef": {"name": comp}, **spec}}


def intents(cluster: Cluster, namespace: str) -> dict[str, dict[str, Any]]:
    return {item["metadata"]["name"]: item for item in cluster.items("databaseintents", namespace)}


def ready(item: dict[str, Any]) -> dict[str, Any]:
    return condition(item, "Ready")


def on_revision(cluster: Cluster, namespace: str) -> dict[str, str | None]:
    return {name: (item.get("status") or {}).get("compositionRevision") for name, item in intents(cluster, namespace).items()}


def config_value(cluster: Cluster, namespace: str, name: str) -> str:
    return str(cluster.get("configmap", f"{name}-info", namespace)["data"]["value"])  # type: ignore[index]


def rolled_out(cluster: Cluster, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    composition = cluster.get("composition", name) or {}
    return composition.get("status") or {}, condition(composition, "RolledOut")


@pytest.fixture
def comp_name(kubectl: Kubectl) -> Any:
    name = f"waves-{uuid.uuid4().hex[:8]}"
    yield name
    kubectl("delete", "composition", name, "--ignore-not-found", "--wait=false", check=False)


def settled_on_first_revision(cluster: Cluster, namespace: str, name: str, count: int) -> str:
    """Wait until `count` intents are Ready on the Composition's revision; that revision's name."""
    def first() -> str | None:
        status, condition = rolled_out(cluster, name)
        items = intents(cluster, namespace)
        latest = status.get("latestRevision")
        done = (len(items) == count and all(ready(i).get("status") == "True" for i in items.values())
                and all(i["status"].get("compositionRevision") == latest for i in items.values()))
        return latest if done and condition.get("status") == "True" else None
    return str(wait_for(first, timeout=90, what="every intent Ready on the first revision"))


def test_an_edit_reaches_the_intents_in_waves_and_a_manual_one_stays(operator: OperatorProcess, kubectl: Kubectl, cluster: Cluster,
                                                                     namespace: str, comp_name: str) -> None:
    cluster.apply(composition(comp_name, "one"))
    automatic = [f"db-{n}" for n in range(6)]
    cluster.apply(*[intent(name, namespace, comp_name) for name in automatic],
                  intent("manual", namespace, comp_name, compositionUpdatePolicy="Manual"))
    first = settled_on_first_revision(cluster, namespace, comp_name, 7)
    revision = cluster.get("compositionrevision", first)
    assert revision["spec"]["revision"] == 1 and revision["metadata"]["ownerReferences"][0]["name"] == comp_name

    # A wave that does not become Ready holds the rollout: maxInFlight=2 intents move, no more.
    cluster.apply(composition(comp_name, "two", holding=True))
    second = wait_for(lambda: (rolled_out(cluster, comp_name)[0].get("latestRevision") not in (None, first)
                               and rolled_out(cluster, comp_name)[0]["latestRevision"]), timeout=60, what="a second revision")
    wait_for(lambda: list(on_revision(cluster, namespace).values()).count(second) == 2, timeout=60, what="the first wave")
    time.sleep(12)  # two waves' worth of the engine's ticks: nothing more moves while the wave is in flight
    revisions = on_revision(cluster, namespace)
    moved = sorted(name for name, rev in revisions.items() if rev == second)
    assert moved == ["db-0", "db-1"], revisions
    assert all(revisions[name] == first for name in [*automatic[2:], "manual"])
    assert [config_value(cluster, namespace, name) for name in automatic] == ["two", "two", "one", "one", "one", "one"]
    status, condition = rolled_out(cluster, comp_name)
    assert condition["status"] == "False" and condition["reason"] == "Progressing", condition
    assert {entry["name"]: entry["intents"] for entry in status["revisions"]} == {second: 2, first: 5}
    assert status["revisions"][0]["name"] == second and status["revisions"][0]["revision"] == 2

    # The rollout's state is the intents' status: a restarted operator holds the same wave.
    operator.stop()
    operator.start()
    time.sleep(12)
    assert on_revision(cluster, namespace) == revisions

    # A new edit starts a new rollout: waves of two, each as soon as the previous is Ready.
    cluster.apply(composition(comp_name, "three"))
    def third_rolled_out() -> str | None:
        status, condition = rolled_out(cluster, comp_name)
        return status.get("latestRevision") if condition.get("status") == "True" and status.get("latestRevision") not in (first, second) else None
    third = wait_for(third_rolled_out, timeout=90, what="the third revision rolled out")
    revisions = on_revision(cluster, namespace)
    assert all(revisions[name] == third for name in automatic) and revisions["manual"] == first, revisions
    assert [config_value(cluster, namespace, name) for name in automatic] == ["three"] * 6
    assert config_value(cluster, namespace, "manual") == "one"
    status, _ = rolled_out(cluster, comp_name)
    assert status["updatedIntents"] == 6 and status["failedIntents"] == 0
    assert {entry["name"]: entry["intents"] for entry in status["revisions"]} == {third: 6, first: 1}
    statefulsets = cluster.items("statefulsets", namespace)
    assert statefulsets == [], "the third revision's render pruned the held wave's StatefulSets"
    assert cluster.get("compositionrevision", first)["status"]["intents"] == 1

    # Manual with a ref: an explicit upgrade; a ref that is no revision of it names the field.
    cluster.apply(intent("manual", namespace, comp_name, compositionUpdatePolicy="Manual",
                          compositionRevisionRef={"name": third}))
    wait_for(lambda: on_revision(cluster, namespace)["manual"] == third and config_value(cluster, namespace, "manual") == "three",
             timeout=30, what="the manual intent on the revision it names")
    cluster.apply(intent("manual", namespace, comp_name, compositionUpdatePolicy="Manual",
                          compositionRevisionRef={"name": f"{comp_name}-0000000000"}))
    refused = wait_for(lambda: ready(intents(cluster, namespace)["manual"]).get("reason") == "RenderFailed"
                       and ready(intents(cluster, namespace)["manual"]), timeout=30, what="a refused revision ref")
    assert refused["message"].startswith("spec.compositionRevisionRef.name:"), refused
    assert config_value(cluster, namespace, "manual") == "three"  # nothing changed


def test_an_edit_that_fails_for_one_intent_halts_with_the_others_untouched(cluster: Cluster, namespace: str,
                                                                           comp_name: str) -> None:
    cluster.apply(composition(comp_name, "one"))
    names = ["a-large", *[f"b-{n}" for n in range(5)]]  # a-large moves in the first wave (key order)
    cluster.apply(intent("a-large", namespace, comp_name, size="large"),
          *[intent(name, namespace, comp_name) for name in names[1:]])
    first = settled_on_first_revision(cluster, namespace, comp_name, 6)

    cluster.apply(composition(comp_name, "two", refusing=True))
    def halted() -> dict[str, Any] | None:
        _, condition = rolled_out(cluster, comp_name)
        return condition if condition.get("reason") == "Halted" else None
    condition = wait_for(halted, timeout=60, what="the rollout halted")
    assert condition["status"] == "False" and f"{namespace}/a-large: spec.size:" in condition["message"], condition
    time.sleep(12)  # two of the engine's ticks: a halted rollout moves nothing more
    status, _ = rolled_out(cluster, comp_name)
    second = status["latestRevision"]
    assert status["failedIntents"] == 1 and status["updatedIntents"] == 1
    revisions = on_revision(cluster, namespace)
    assert revisions["a-large"] == second and revisions["b-0"] == second
    assert all(revisions[name] == first for name in names[2:]), revisions
    failed = ready(intents(cluster, namespace)["a-large"])
    assert failed["reason"] == "RenderFailed" and failed["message"].startswith("spec.size:"), failed
    assert config_value(cluster, namespace, "a-large") == "one"  # nothing half-applied: its resources as they were
    assert [config_value(cluster, namespace, name) for name in names[1:]] == ["two", "one", "one", "one", "one"]
    assert all(ready(item).get("status") == "True" for name, item in intents(cluster, namespace).items() if name != "a-large")


def test_a_revision_is_immutable(kubectl: Kubectl, cluster: Cluster, namespace: str, comp_name: str) -> None:
    cluster.apply(composition(comp_name, "one"))
    cluster.apply(intent("db", namespace, comp_name))
    first = settled_on_first_revision(cluster, namespace, comp_name, 1)
    refused = kubectl("patch", "compositionrevision", first, "--type=merge", "-p", '{"spec": {"revision": 7}}', check=False)
    assert refused.returncode != 0 and "spec is immutable" in refused.stderr, refused.stderr
    assert cluster.get("compositionrevision", first)["spec"]["revision"] == 1
