"""`paved render`: Render an intent through its composition, offline."""

from __future__ import annotations

import click


@click.command()
def render() -> None:
    """Render an intent through its composition, offline."""
    raise click.ClickException("not implemented yet")
