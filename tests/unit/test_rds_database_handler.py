"""Pure parts of the DatabaseIntent engine and handlers: drift timing, status extras, immutable drift."""

from __future__ import annotations

from typing import Any

import pytest

from paved.api.database import DatabaseIntentSpec
from paved.engines import compose as _compose
from paved.engines import database
from paved.handlers.database import remove_cleanup_finalizer
from paved.providers.base import Observation
from paved.render.types import RenderedResource


def state(name: str, provider: str, observation: Observation, body: dict[str, Any] | None = None) -> _compose.ResourceState:
    return _compose.ResourceState(RenderedResource(name=name, provider=provider, body=body or {}), observation)


def test_drift_waits_are_never_shorter_than_the_interval_and_spread_out() -> None:
    spec = {"driftCheckInterval": "10m"}
    assert database.next_drift_wait(spec, first=False, uniform=lambda a, b: a) == 600
    assert database.next_drift_wait(spec, first=False, uniform=lambda a, b: b) == 660
    assert database.next_drift_wait(spec, first=True, uniform=lambda a, b: b) == 1200
    waits = {round(database.next_drift_wait(spec, first=True), 3) for _ in range(50)}
    assert len(waits) > 40 and min(waits) >= 600


def test_drift_interval_defaults_and_floor() -> None:
    assert database.drift_interval({}) == 600
    assert database.drift_interval({"driftCheckInterval": "5s"}) == 5
    assert database.drift_interval({"driftCheckInterval": "0"}) == database.MIN_DRIFT_INTERVAL


def test_status_extras_name_the_endpoint_and_the_secret_once_it_exists() -> None:
    spec = DatabaseIntentSpec(engine="postgresql", version="16")
    result = _compose.ComposeResult(generation=1, spec=spec)
    result.states = [
        state("instance", "aws-rds", Observation(exists=True, ready=True, outputs={"address": "db.example", "port": 5432})),
        state("connection-secret", "kubernetes", Observation(exists=True), {"kind": "Secret", "metadata": {"name": "orders-db-connection"}}),
    ]
    extras = database.database_status({"metadata": {"name": "orders-db"}}, result, {})
    assert extras == {"endpoint": {"host": "db.example", "port": 5432}, "connectionSecret": "orders-db-connection"}
    result.states = result.states[:1]
    assert "connectionSecret" not in database.database_status({"metadata": {"name": "orders-db"}}, result, {})


def test_in_cluster_endpoint_comes_from_the_service() -> None:
    result = _compose.ComposeResult(generation=1)
    outputs = {"kind": "Service", "host": "orders-db.team.svc", "ports": {"postgres": 5432}}
    result.states = [state("service", "kubernetes", Observation(exists=True, outputs=outputs))]
    assert database.endpoint_of(result) == {"host": "orders-db.team.svc", "port": 5432}


def test_immutable_drift_turns_synced_false_naming_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    observation = Observation(exists=True, ready=True, external_id="paved-x", immutable_drift=["StorageEncrypted"], message="m")
    result = _compose.ComposeResult(generation=2)
    result.states = [state("instance", "aws-rds", observation)]
    outcome = _compose.Outcome(result, {"conditions": []}, frozenset())
    body = {"apiVersion": "paved.dev/v1alpha1", "kind": "DatabaseIntent", "metadata": {"name": "n", "namespace": "ns", "uid": "u"}, "status": {}}
    events: list[tuple[Any, ...]] = []
    monkeypatch.setattr(database.events, "post_event", lambda *args, **kwargs: events.append(args))
    adjusted = database.with_immutable_drift(outcome, body)
    [synced] = [c for c in adjusted.status["conditions"] if c["type"] == "Synced"]
    assert synced["status"] == "False" and synced["reason"] == "ImmutableFieldChanged"
    assert "StorageEncrypted" in synced["message"] and synced["observedGeneration"] == 2
    assert adjusted.changed == {"conditions"}
    assert [event[1] for event in events] == ["ImmutableFieldChanged"]


def test_no_immutable_drift_leaves_the_outcome_alone() -> None:
    result = _compose.ComposeResult(generation=1)
    result.states = [state("instance", "aws-rds", Observation(exists=True, ready=True))]
    outcome = _compose.Outcome(result, {"conditions": []}, frozenset())
    assert database.with_immutable_drift(outcome, {"status": {}}) is outcome


def test_removing_the_cleanup_finalizer_keeps_the_others() -> None:
    body: Any = {"metadata": {"finalizers": ["paved.dev/cleanup", database.CLEANUP_FINALIZER, "other/x"]}}
    remove_cleanup_finalizer(body)
    assert body["metadata"]["finalizers"] == ["paved.dev/cleanup", "other/x"]
