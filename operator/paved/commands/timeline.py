"""The picture of `paved rollout report NAME -o timeline.png`: the canary weight and each
metric over time, drawn from what the rollout's status records.

The source is status alone: `status.weightHistory` (every weight of the current or last run,
with when it was set) and `status.analysisHistory` (the latest measurements, at most
ANALYSIS_HISTORY_LIMIT, all metrics together, each with its time, value and verdict). No
Prometheus query: the picture shows exactly what Paved saw and decided on, for a rollout whose
Prometheus the reader may not reach; a long run's early measurements have left the capped
history by then (the picture says how many measurements it shows).

`timeline` prepares the data (pure); `figure` draws it with matplotlib's object API on the Agg
canvas (no display, no pyplot state); `png` encodes it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from paved.api.common import parse_rfc3339
from paved.errors import SafeError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

VERDICT_COLOURS = {"Successful": "tab:green", "Failed": "tab:red", "Inconclusive": "tab:orange", "Error": "tab:purple"}


class NoHistory(SafeError, ValueError):
    """The rollout's status records nothing to draw."""


@dataclass(frozen=True)
class Series:
    """One metric's measurements, oldest first; a value is NaN where there was no data."""

    name: str
    times: tuple[datetime, ...]
    values: tuple[float, ...]
    verdicts: tuple[str, ...]


@dataclass(frozen=True)
class Timeline:
    title: str
    weight_times: tuple[datetime, ...]  # a step line: each weight holds until the next time
    weights: tuple[int, ...]
    metrics: tuple[Series, ...]
    measurements: int


def timeline(body: Mapping[str, Any]) -> Timeline:
    """The data of the picture for a ProgressiveRollout `body`; NoHistory when its status records
    neither a weight nor a measurement. The weight line ends at the latest recorded moment."""
    metadata, status = body.get("metadata") or {}, body.get("status") or {}
    where = f"{metadata.get('namespace')}/{metadata.get('name')}"
    weights = [(at, int(entry.get("weight") or 0)) for entry in status.get("weightHistory") or []
               if (at := parse_rfc3339(entry.get("at"))) is not None]
    measured = [(at, entry) for entry in status.get("analysisHistory") or []
                if (at := parse_rfc3339(entry.get("at"))) is not None]
    if not weights and not measured:
        raise NoHistory(f"ProgressiveRollout {where} has recorded no canary run yet (status.weightHistory and "
                        "status.analysisHistory are empty): there is nothing to draw until a new revision rolls out")
    names = list(dict.fromkeys(str(entry.get("metric")) for _, entry in measured))
    series = []
    for name in names:
        mine = [(at, entry) for at, entry in measured if str(entry.get("metric")) == name]
        series.append(Series(name, tuple(at for at, _ in mine), tuple(_number(e.get("value")) for _, e in mine),
                             tuple(str(e.get("verdict")) for _, e in mine)))
    end = max([at for at, _ in weights] + [at for at, _ in measured])
    if weights and weights[-1][0] < end:
        weights.append((end, weights[-1][1]))
    title = f"{where}: {status.get('phase') or 'Unknown'}, canary revision {status.get('canaryRevision') or '-'}"
    return Timeline(title, tuple(at for at, _ in weights), tuple(w for _, w in weights), tuple(series), len(measured))


def figure(data: Timeline) -> Figure:
    """The weight (top) and one panel per metric, sharing the time axis; each measurement is a
    point coloured by its verdict."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 2.4 * (1 + len(data.metrics))), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1 + len(data.metrics), 1, sharex=True, squeeze=False)[:, 0]
    weight_axis = axes[0]
    weight_axis.step(data.weight_times, data.weights, where="post", color="tab:blue")
    weight_axis.set_ylim(-2, 102)
    weight_axis.set_ylabel("canary weight (%)")
    for axis, series in zip(axes[1:], data.metrics):
        axis.plot(series.times, series.values, color="tab:gray", linewidth=1)
        axis.scatter(series.times, series.values, c=[VERDICT_COLOURS.get(v, "black") for v in series.verdicts],
                     s=18, zorder=3)
        axis.set_ylabel(series.name)
    axes[-1].set_xlabel("time (UTC)")
    shown = f"{data.measurements} latest measurements" if data.measurements else "no measurements"
    fig.suptitle(f"{data.title}\n{shown}; green passed, red failed, orange inconclusive, purple query error")
    return fig


def png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
