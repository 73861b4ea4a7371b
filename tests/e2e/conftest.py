"""Fixtures shared by the e2e modules."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from paved.dev.apps import VersionedApp
from e2e.cluster import Cluster
from e2e.shop import Shop, user_objects
from fixtures.cluster import Kubectl
from fixtures.prometheus import PrometheusServer


@pytest.fixture(scope="session")
def cluster(kubectl: Kubectl) -> Cluster:
    """Apply, read and wait on objects of the test control plane (tests/e2e/cluster.py)."""
    return Cluster(kubectl)


@pytest.fixture
def shop(kubectl: Kubectl, namespace: str, control_plane: Any,
         prometheus: Callable[..., PrometheusServer]) -> Iterator[Shop]:
    with VersionedApp("stable") as stable, VersionedApp("canary") as canary:
        server = prometheus([stable.address, canary.address], scrape_interval="1s")
        world = Shop(namespace, kubectl, str(server), server, stable, canary, Path(control_plane.kubeconfig))
        world.apply(*user_objects(namespace))
        yield world
        # The finalizer needs an operator (the session's, or the HA module's replicas): delete while it runs.
        kubectl("delete", "progressiverollouts", "--all", "-n", namespace, "--wait=true", "--timeout=30s", check=False)
