"""The test tree collects in one pytest session: test modules are imported by basename
(rootdir-relative, no packages), so two test files with one name break collection of both."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_two_test_files_share_a_name() -> None:
    places: dict[str, list[str]] = defaultdict(list)
    for path in TESTS.rglob("test_*.py"):
        places[path.name].append(str(path.relative_to(TESTS)))
    assert not {name: found for name, found in places.items() if len(found) > 1}
