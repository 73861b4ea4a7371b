"""tests/e2e/cluster.py (the e2e `cluster` fixture's helper) is for the e2e modules only: unit
tests have tests/support/kube.FakeKube, integration tests and benchmarks paved.kube. Nothing
outside tests/e2e imports it."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODULE = "e2e.cluster"


def importers(roots: list[Path]) -> list[str]:
    found = []
    for path in sorted(path for root in roots for path in root.rglob("*.py")):
        if path.is_relative_to(REPO / "tests" / "e2e"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([node.module or ""] + [f"{node.module}.{alias.name}" for alias in node.names]
                     if isinstance(node, ast.ImportFrom) else
                     [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
            if any(name in (MODULE, f"tests.{MODULE}") or name.startswith((f"{MODULE}.", f"tests.{MODULE}.")) for name in names):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def test_only_the_e2e_modules_import_the_cluster_helper() -> None:
    assert importers([REPO / folder for folder in ("operator", "tests", "bench", "hack", "scripts") if (REPO / folder).is_dir()]) == []
