"""The KubePort contract (tests/support/kube_contract.py) on the real API server, through ApiKube:
what the unit tests' FakeKube is held to (tests/unit/test_support_kube.py) is what the API
server does."""

from __future__ import annotations

import pytest
from support.kube_contract import *  # noqa: F403 - the contract's tests and fixtures run here on the API server

from paved.kube.port import ApiKube


@pytest.fixture
def port(admin_kube_client: None) -> ApiKube:
    return ApiKube()


@pytest.fixture
def space(namespace: str) -> str:
    return namespace
