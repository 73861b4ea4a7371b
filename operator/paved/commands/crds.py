"""`paved crds`: Generate crds/*.yaml and docs/api.md from the API models."""

from __future__ import annotations

from pathlib import Path

import click

CRD_SUFFIX = ".paved.dev.yaml"


def generated_files(out: Path, docs: Path | None) -> dict[Path, str]:
    """Path -> content of every generated file (deterministic)."""
    from paved.api.crdgen import render_crds
    from paved.api.docs import render_api_doc

    files = {out / name: text for name, text in render_crds().items()}
    if docs is not None:
        files[docs] = render_api_doc()
    return files


def stale_files(files: dict[Path, str], out: Path) -> list[Path]:
    """Generated files that are missing or differ on disk, plus leftovers of removed kinds."""
    stale = [path for path, text in files.items() if not path.is_file() or path.read_text() != text]
    leftovers = [path for path in out.glob(f"*{CRD_SUFFIX}") if path not in files] if out.is_dir() else []
    return sorted(stale + leftovers)


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("crds"), show_default=True,
              help="Directory for the CRD files.")
@click.option("--docs", type=click.Path(dir_okay=False, path_type=Path), default=Path("docs/api.md"),
              show_default=True, help="API reference to generate alongside.")
@click.option("--no-docs", is_flag=True, help="Do not generate the API reference.")
@click.option("--check", is_flag=True, help="Write nothing; exit 1 naming every stale file.")
def crds(out: Path, docs: Path, no_docs: bool, check: bool) -> None:
    """Generate crds/*.yaml (and docs/api.md) from the API models."""
    from paved.api.crdgen import CRDGenerationError

    try:
        files = generated_files(out, None if no_docs else docs)
    except CRDGenerationError as error:
        raise click.ClickException(str(error)) from None
    stale = stale_files(files, out)
    if check:
        if stale:
            for path in stale:
                click.echo(f"stale: {path}", err=True)
            raise click.ClickException("generated files are out of date; run `paved crds`")
        click.echo(f"{len(files)} generated files are up to date")
        return
    for path in stale:
        if path in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(files[path])
            click.echo(f"wrote {path}")
        else:
            path.unlink()
            click.echo(f"removed {path}")
    click.echo(f"{len(files)} generated files, {len(stale)} changed")
