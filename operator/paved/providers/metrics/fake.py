"""The in-memory metrics provider for unit tests of the layers above. Never registered by
production code: a test calls `FakeMetrics().install()` (which substitutes it for `prometheus`)
and `paved.providers.metrics.METRICS.unregister("prometheus")` afterwards."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from paved.providers import metrics as registry
from paved.providers.egress import Egress
from paved.providers.metrics import QueryResult

Answer = QueryResult | float | None | Callable[[], QueryResult | float | None]


class FakeMetrics:
    """Answers queries from a dict: query text -> a number, None (no data), a QueryResult or
    a callable returning one of those. Unknown queries answer "no data". Records every query."""

    name = "prometheus"

    def __init__(self, answers: Mapping[str, Answer] | None = None) -> None:
        self.answers: dict[str, Answer] = dict(answers or {})
        self.queries: list[str] = []

    def query(self, promql: str) -> QueryResult:
        self.queries.append(promql)
        answer = self.answers.get(promql)
        if callable(answer):
            answer = answer()
        if isinstance(answer, QueryResult):
            return answer
        return QueryResult(value=None if answer is None else float(answer))

    def install(self, name: str = "prometheus") -> FakeMetrics:
        def factory(_settings: Mapping[str, Any], _egress: Egress) -> FakeMetrics:
            return self

        registry.METRICS.register(name, factory, force=True)
        return self
