"""The demo's canary (paved.dev.demo_canary) and `paved rollout status --watch`: the pure parts.
The demo itself runs in tests/integration/test_demo.py."""

from __future__ import annotations

from pathlib import Path

from paved.commands.rollout import watch_line
from paved.dev.demo import example_objects
from paved.dev.demo_canary import (
    BROKEN_SUFFIX, at_demo_tempo, canary_commands, error_rate_for, image_of, route_weights,
)
from paved.rollout import validate_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_a_version_fails_by_its_image_tag() -> None:
    assert error_rate_for("registry.example/checkout:1.0") == 0.0
    assert error_rate_for(f"registry.example:5000/checkout:17{BROKEN_SUFFIX}") == 0.5
    assert error_rate_for("registry.example/checkout-broken") == 0.0  # the name is not the tag
    assert error_rate_for(None) == 0.0


def test_the_example_rollout_runs_at_demo_tempo_against_the_demos_prometheus() -> None:
    objects = example_objects(EXAMPLES)
    said: list[str] = []
    at_demo_tempo(objects, "http://127.0.0.1:9999", said.append)
    [rollout] = [o for o in objects if o["kind"] == "ProgressiveRollout" and o["metadata"]["name"] == "checkout"]
    spec = rollout["spec"]
    assert spec["analysis"]["prometheus"] == {"address": "http://127.0.0.1:9999"}
    assert [s.get("setWeight") for s in spec["steps"] if "setWeight" in s] == [5, 20, 50, 100]
    assert {s["pause"]["duration"] for s in spec["steps"] if "pause" in s} == {"10s"}
    assert validate_spec(spec) == [] and said


def test_the_traffic_follows_the_route_and_the_copies_images() -> None:
    route = {"spec": {"rules": [{"backendRefs": [{"name": "admin", "port": 8080}]},
                                {"backendRefs": [{"name": "checkout-stable", "weight": 80},
                                                 {"name": "checkout-canary", "weight": 20}]}]}}
    assert route_weights(route) == (80, 20) and route_weights(None) is None
    deployment = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "x:1-broken"}]}}}}
    assert image_of(deployment) == "x:1-broken" and image_of(None) is None


def test_the_printed_commands_start_a_new_rollout_each_time() -> None:
    commands = dict(canary_commands("kubectl", "paved"))
    assert len(commands) == 3
    assert any("rollout status checkout -n shop --watch" in c for c in commands.values())
    set_images = [c for c in commands.values() if "set image" in c]
    assert len(set_images) == 2 and all("$(date +%s)" in c for c in set_images)
    assert sum(c.endswith(BROKEN_SUFFIX) for c in set_images) == 1


def test_watch_line_shows_weight_each_metric_and_the_reason() -> None:
    body = {"status": {"phase": "Progressing", "canaryWeight": 20, "message": "step 3/8 (20%): pausing",
                       "analysisHistory": [
                           {"metric": "success-rate", "value": 0.5, "samples": 3, "verdict": "Failed"},
                           {"metric": "success-rate", "value": 0.99123, "samples": 41, "verdict": "Successful"},
                           {"metric": "latency", "value": None, "verdict": "Inconclusive"}]}}
    line = watch_line(body)
    assert "weight  20%" in line and "success-rate=0.9912 (41 samples) Successful" in line
    assert "latency=no data Inconclusive" in line and line.endswith("| step 3/8 (20%): pausing")
