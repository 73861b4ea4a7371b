"""`paved crds`: Generate crds/*.yaml from the API models."""

from __future__ import annotations

import click


@click.command()
def crds() -> None:
    """Generate crds/*.yaml from the API models."""
    raise click.ClickException("not implemented yet")
