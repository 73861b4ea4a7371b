"""One measurement of one metric -> one verdict, with the clause that explains it.

The order of the checks is the policy, and it exists to avoid the two classic failures of
canary analysis: a healthy canary aborted by an empty result, and a broken canary passed by
an ignored one.

1. a query error is inconclusive (hold), never a silent pass;
2. fewer samples than `minSamples` is inconclusive: too little traffic to judge;
3. no data follows `noData` (hold by default, or fail, or pass);
4. a met `failureCondition` is a breach: roll back at once, whatever `failureLimit` says;
5. otherwise `successCondition` decides pass or fail (failures count up to `failureLimit`).

A condition that cannot be evaluated for this value is inconclusive too. Pure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from paved.rollout import cel
from paved.rollout.observation import MetricMeasurement
from paved.rollout.plan import Metric, NoDataPolicy


class VerdictKind(str, Enum):
    PASS = "pass"  # noqa: S105 - a name, not a secret
    FAIL = "fail"          # success condition missed: counts towards failureLimit
    BREACH = "breach"      # failure condition met: roll back now
    HOLD = "hold"          # inconclusive: extend the step, count towards maxHolds


@dataclass(frozen=True)
class Verdict:
    kind: VerdictKind
    reason: str  # a clause to follow the metric name: "0.81 < 0.95", "returned no data"
    error: bool = False  # the query itself failed (still a hold)

    @property
    def label(self) -> str:
        """The verdict as status.analysisHistory spells it (Successful/Failed/Inconclusive/Error)."""
        if self.error:
            return "Error"
        return {VerdictKind.PASS: "Successful", VerdictKind.HOLD: "Inconclusive"}.get(self.kind, "Failed")


def judge(metric: Metric, measurement: MetricMeasurement) -> Verdict:
    """The verdict for one measurement; see the module docstring for the order."""
    if measurement.error:
        return Verdict(VerdictKind.HOLD, f"query failed: {measurement.error}", error=True)
    if metric.min_samples and (measurement.samples or 0) < metric.min_samples:
        return Verdict(VerdictKind.HOLD, f"has {measurement.samples or 0} samples < minSamples {metric.min_samples}")
    value = measurement.value
    if value is None or math.isnan(value):
        return _no_data(metric.no_data)
    if metric.failure_condition:
        try:
            if cel.evaluate(metric.failure_condition, value, measurement.samples):
                return Verdict(VerdictKind.BREACH, cel.explain(metric.failure_condition, value, held=True))
        except cel.ConditionError as exc:
            return Verdict(VerdictKind.HOLD, f"failureCondition: {exc}")
    try:
        passed = cel.evaluate(metric.success_condition, value, measurement.samples)
    except cel.ConditionError as exc:
        return Verdict(VerdictKind.HOLD, f"successCondition: {exc}")
    kind = VerdictKind.PASS if passed else VerdictKind.FAIL
    return Verdict(kind, cel.explain(metric.success_condition, value, held=passed))


def _no_data(policy: NoDataPolicy) -> Verdict:
    if policy is NoDataPolicy.FAIL:
        return Verdict(VerdictKind.FAIL, "returned no data (noData=fail)")
    if policy is NoDataPolicy.PASS:
        return Verdict(VerdictKind.PASS, "returned no data (noData=pass)")
    return Verdict(VerdictKind.HOLD, "returned no data")
