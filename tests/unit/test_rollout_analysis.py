"""One measurement -> one verdict, in the documented order (error, samples, no data, breach, success)."""

from __future__ import annotations

import pytest

from paved.rollout.analysis import VerdictKind, judge
from paved.rollout.observation import MetricMeasurement
from paved.rollout.plan import Metric, NoDataPolicy

METRIC = Metric(name="success-rate", query="q", success_condition="result >= 0.95",
                failure_condition="result < 0.8", failure_limit=2, min_samples=50, samples_query="s")


def verdict(value=None, samples=500, error=None, metric=METRIC):
    return judge(metric, MetricMeasurement("r1", value, samples, error))


def test_pass():
    result = verdict(0.99)
    assert (result.kind, result.reason, result.label) == (VerdictKind.PASS, "0.99 >= 0.95", "Successful")


def test_success_miss_is_a_failure():
    result = verdict(0.9)
    assert (result.kind, result.reason, result.label) == (VerdictKind.FAIL, "0.9 < 0.95", "Failed")


def test_failure_condition_is_a_breach():
    result = verdict(0.7)
    assert (result.kind, result.reason) == (VerdictKind.BREACH, "0.7 < 0.8")


def test_query_error_is_inconclusive_never_a_pass():
    result = verdict(0.99, error="bad_data: parse error at char 5")
    assert (result.kind, result.label) == (VerdictKind.HOLD, "Error")
    assert "parse error at char 5" in result.reason


def test_too_few_samples_is_inconclusive_even_when_the_value_is_terrible():
    result = verdict(0.1, samples=12)
    assert (result.kind, result.reason, result.label) == (VerdictKind.HOLD, "has 12 samples < minSamples 50",
                                                          "Inconclusive")


def test_missing_samples_count_as_zero():
    assert verdict(0.99, samples=None).kind is VerdictKind.HOLD


@pytest.mark.parametrize("policy, kind", [
    (NoDataPolicy.HOLD, VerdictKind.HOLD), (NoDataPolicy.FAIL, VerdictKind.FAIL), (NoDataPolicy.PASS, VerdictKind.PASS),
])
def test_no_data_follows_the_policy(policy, kind):
    metric = Metric(name="m", query="q", success_condition="result >= 0.95", no_data=policy)
    assert verdict(None, metric=metric).kind is kind


def test_nan_is_no_data():
    metric = Metric(name="m", query="q", success_condition="result >= 0.95")
    assert verdict(float("nan"), metric=metric).reason == "returned no data"


def test_a_condition_that_cannot_be_evaluated_is_inconclusive():
    metric = Metric(name="m", query="q", success_condition="result / 0 > 1.0 || result == 1")
    assert verdict(2.0, metric=metric).kind is VerdictKind.HOLD


def test_samples_are_visible_to_conditions():
    metric = Metric(name="m", query="q", success_condition="result >= 0.95 || samples < 10")
    assert verdict(0.5, samples=5, metric=metric).kind is VerdictKind.PASS
