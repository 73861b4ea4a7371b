"""`paved rollout report NAME -o timeline.png` (paved.commands.timeline): the data prepared from
status, the figure drawn from it, and the command's answers."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from paved.commands import rollout as rollout_command
from paved.commands import timeline
from paved.rollout.simulate import Sample, Scenario, example_spec, simulate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def body(status: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "checkout", "namespace": "shop"}, "status": status}


RECORDED = {
    "phase": "Progressing", "canaryRevision": "abc",
    "weightHistory": [{"weight": 0, "at": "2026-12-06T10:00:00Z"}, {"weight": 20, "at": "2026-12-06T10:00:05Z"}],
    "analysisHistory": [
        {"metric": "success-rate", "value": 0.99, "verdict": "Successful", "at": "2026-12-06T10:00:10Z"},
        {"metric": "latency", "value": None, "verdict": "Inconclusive", "at": "2026-12-06T10:00:10Z"},
        {"metric": "success-rate", "value": 0.5, "verdict": "Failed", "at": "2026-12-06T10:00:20Z"},
    ],
}


def test_the_data_is_the_weight_as_a_step_line_and_one_series_per_metric() -> None:
    data = timeline.timeline(body(RECORDED))
    assert data.weights == (0, 20, 20)  # the last weight holds until the latest recorded moment
    assert [t.second for t in data.weight_times] == [0, 5, 20]
    assert [s.name for s in data.metrics] == ["success-rate", "latency"]
    assert data.metrics[0].values == (0.99, 0.5) and data.metrics[0].verdicts == ("Successful", "Failed")
    assert math.isnan(data.metrics[1].values[0])
    assert data.title == "shop/checkout: Progressing, canary revision abc" and data.measurements == 3


def test_no_history_is_a_clear_error() -> None:
    with pytest.raises(timeline.NoHistory, match=r"shop/checkout has recorded no canary run yet \(status.weightHistory"):
        timeline.timeline(body({"phase": "Succeeded"}))


def test_a_simulated_rollout_is_drawn_as_a_png_with_a_panel_per_metric() -> None:
    result = simulate(example_spec(), Scenario(metrics={"success-rate": lambda t, weight: Sample(0.99, 500)}))
    data = timeline.timeline(body(result.status))
    fig = timeline.figure(data)
    assert len(fig.axes) == 2  # the weight, success-rate
    assert [len(axis.lines) for axis in fig.axes] == [1, 1]
    assert list(fig.axes[0].lines[0].get_ydata()) == list(data.weights)
    assert max(data.weights) == 100
    picture = timeline.png(fig)
    assert picture.startswith(PNG_MAGIC) and len(picture) > 10_000


def test_the_command_writes_the_png_or_says_there_is_nothing_to_draw(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    statuses = {"checkout": RECORDED, "fresh": {"phase": "Succeeded"}}
    monkeypatch.setattr(rollout_command, "_get", lambda namespace, name: body(statuses[name]))
    output = tmp_path / "timeline.png"
    result = CliRunner().invoke(rollout_command.rollout, ["report", "checkout", "-n", "shop", "-o", str(output)])
    assert result.exit_code == 0, result.output
    assert output.read_bytes().startswith(PNG_MAGIC)
    assert "2 metric(s), 3 measurements" in result.output

    result = CliRunner().invoke(rollout_command.rollout, ["report", "fresh", "-n", "shop", "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 1 and "has recorded no canary run yet" in result.output
    assert not (tmp_path / "x.png").exists()
