"""crds/ and docs/api.md are exactly what `paved crds` generates from the models."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from paved.cli import main

ROOT = Path(__file__).resolve().parents[2]


def generate(tmp_path: Path) -> Path:
    result = CliRunner().invoke(main, ["crds", "--out", str(tmp_path / "crds"), "--docs", str(tmp_path / "api.md")])
    assert result.exit_code == 0, result.output
    return tmp_path


def test_committed_crds_and_docs_are_fresh(tmp_path: Path) -> None:
    fresh = generate(tmp_path)
    generated = sorted(path.name for path in (fresh / "crds").iterdir())
    committed = sorted(path.name for path in (ROOT / "crds").glob("*.paved.dev.yaml"))
    assert committed == generated, "crds/ lists other kinds than the models; run `paved crds`"
    stale = [name for name in generated if (ROOT / "crds" / name).read_text() != (fresh / "crds" / name).read_text()]
    assert not stale, f"stale CRDs {stale}; run `paved crds`"
    assert (ROOT / "docs/api.md").read_text() == (fresh / "api.md").read_text(), "docs/api.md is stale; run `paved crds`"


def test_generation_is_deterministic(tmp_path: Path) -> None:
    first = generate(tmp_path / "a")
    second = generate(tmp_path / "b")
    for path in sorted((first / "crds").iterdir()):
        assert path.read_text() == (second / "crds" / path.name).read_text()


def test_check_names_stale_and_leftover_files(tmp_path: Path) -> None:
    out = generate(tmp_path)
    args = ["crds", "--check", "--out", str(out / "crds"), "--docs", str(out / "api.md")]
    assert CliRunner().invoke(main, args).exit_code == 0
    edited = out / "crds" / "databaseintents.paved.dev.yaml"
    edited.write_text(edited.read_text() + "# hand edit\n")
    leftover = out / "crds" / "olds.paved.dev.yaml"
    leftover.write_text("kind: CustomResourceDefinition\n")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert f"stale: {edited}" in result.output and f"stale: {leftover}" in result.output
    CliRunner().invoke(main, args[:1] + args[2:])  # regenerate: rewrites and removes
    assert CliRunner().invoke(main, args).exit_code == 0
    assert not leftover.exists()
