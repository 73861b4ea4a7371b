"""The hostile-input generator (tests/support/hostile.py) and what it proves offline.

The e2e module applies these cases to the real API server; here, without a cluster: the
generator covers every kind and category, and the API models (what `paved validate`, the
webhook and the handlers check) refuse every case the CRD schema must refuse, naming the
same field, and accept every case the API server must accept.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest
from paved.api.kinds import KINDS, SpecError, kind_info

from support.hostile import HANDLED, SCHEMA, World, hostile_cases

WORLD = World.new(vault_addr="https://vault.example:8200", aws_endpoint="http://aws.example:5000")
CASES = hostile_cases(WORLD)


def test_there_are_hundreds_of_cases_in_every_category_and_for_every_kind() -> None:
    assert len(CASES) >= 200
    by_attack = Counter(case.attack for case in CASES)
    assert set(by_attack) == {"schema", "oversized", "unicode", "traversal", "jinja", "cel", "delegation", "names"}
    schema_kinds = {case.kind for case in CASES if case.attack == "schema"}
    assert schema_kinds == {info.kind for info in KINDS}
    for info in KINDS:
        whats = " ".join(case.what for case in CASES if case.attack == "schema" and case.kind == info.kind)
        for violation in ("wrong type", "unknown field"):
            assert violation in whats, (info.kind, violation)
    whats = " ".join(case.what for case in CASES if case.attack == "schema")
    for violation in ("without its required field", "outside its enum", "below its minimum", "above its maximum",
                      "not matching its pattern", "too long", "one item too many"):
        assert violation in whats, violation


def test_every_case_says_where_it_may_stop_and_what_it_names() -> None:
    for case in CASES:
        assert case.stops, case.id
        assert case.field or case.stops == {HANDLED}, case.id


def _problem_paths(case_body: dict) -> list[str] | None:
    try:
        kind_info(case_body["kind"]).parse_spec(case_body["spec"])
    except SpecError as error:
        return [problem.split(": ", 1)[0] for problem in error.problems]
    return None


@pytest.mark.parametrize("case", [c for c in CASES if c.stops == {SCHEMA} and not c.field.startswith("metadata")],
                         ids=lambda c: c.id)
def test_the_models_refuse_what_the_schema_refuses_naming_the_same_field(case) -> None:  # type: ignore[no-untyped-def]
    paths = _problem_paths(case.body)
    assert paths is not None, "accepted offline, refused by the API server"
    assert any(path == case.field or re.match(re.escape(case.field) + r"[.\[]", path) for path in paths), paths


def _remote_key_case(case) -> bool:  # type: ignore[no-untyped-def]
    """Refused by the handler's semantic checks of remote keys, which come after the schema."""
    return case.attack == "traversal" or "remote key" in case.what or "extracted key" in case.what


@pytest.mark.parametrize("case", [c for c in CASES if SCHEMA not in c.stops and not _remote_key_case(c)],
                         ids=lambda c: c.id)
def test_the_models_accept_what_the_api_server_accepts(case) -> None:  # type: ignore[no-untyped-def]
    assert _problem_paths(case.body) is None
