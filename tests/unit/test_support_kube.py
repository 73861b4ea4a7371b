"""FakeKube (tests/support/kube.py) passes the KubePort contract (tests/support/kube_contract.py),
which tests/integration/test_kube_port_contract.py runs against the real API server; and the
parts only tests use (call log, seeding, failures, controllers) do what they say."""

from __future__ import annotations

from typing import Any

import pytest
from support.kube import FakeKube
from support.kube_contract import *  # noqa: F403 - the contract's tests and fixtures run here on FakeKube

from paved.kube.client import ApiError
from paved.kube.port import KubePort


@pytest.fixture
def port() -> FakeKube:
    return FakeKube([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "contract"}}])


@pytest.fixture
def space() -> str:
    return "contract"


def test_fake_kube_is_a_kube_port() -> None:
    kube: KubePort = FakeKube()  # mypy checks the structure; this checks every method is there
    assert all(callable(getattr(kube, name)) for name in vars(KubePort) if not name.startswith("_"))


def test_calls_are_logged_and_counted(port: FakeKube, space: str) -> None:
    port.calls.clear()
    port.get("v1", "Secret", "s", space)
    port.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": space}})
    port.apply_fields({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": space, "labels": {"a": "b"}}},
                      field_manager="m")
    assert port.count() == 3 and port.count("get") == 1 and port.count(kind="Secret", namespace=space) == 3
    assert port.calls[-1].field_manager == "m" and port.count("apply_fields", subresource=None) == 1


def test_put_seeds_without_a_call_and_fail_makes_a_verb_fail(port: FakeKube, space: str) -> None:
    port.calls.clear()
    port.put({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": space}, "data": {"k": "dg=="}})
    assert port.calls == [] and port.obj("Secret", "s", space)["data"] == {"k": "dg=="}  # type: ignore[index]
    refused = ApiError(403, "Forbidden", "no", method="PATCH")
    port.fail("apply patch", "Secret", refused)
    with pytest.raises(ApiError):
        port.patch("v1", "Secret", "s", space, {"data": {"x": "eA=="}})
    port.fail("apply patch", "Secret", None)
    port.patch("v1", "Secret", "s", space, {"data": {"x": "eA=="}})


def test_a_controller_answers_a_write_with_its_own(port: FakeKube, space: str) -> None:
    def ready(body: dict[str, Any]) -> None:
        body["status"] = {"readyReplicas": body["spec"]["replicas"]}

    port.react("Deployment", ready)
    written = port.create({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": space},
                           "spec": {"replicas": 2}})
    assert written["status"] == {"readyReplicas": 2} and written["metadata"]["generation"] == 1
    assert port.obj("Deployment", "d", space) == written


def test_before_lands_another_write_between_a_read_and_a_write(port: FakeKube, space: str) -> None:
    read = port.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "raced", "namespace": space}})
    port.before("merge_patch", "ConfigMap", lambda: port.put({**read, "data": {"theirs": "1"}}))
    with pytest.raises(ApiError) as conflict:
        port.merge_patch(read, {"data": {"mine": "1"}})
    assert conflict.value.status == 409 and port.obj("ConfigMap", "raced", space)["data"] == {"theirs": "1"}  # type: ignore[index]
    port.before("merge_patch", "ConfigMap", None)
    port.merge_patch(port.obj("ConfigMap", "raced", space) or {}, {"data": {"mine": "1"}})
    assert port.obj("ConfigMap", "raced", space)["data"] == {"theirs": "1", "mine": "1"}  # type: ignore[index]
