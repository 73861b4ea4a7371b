"""`paved run`: Run the operator against the current kubeconfig."""

from __future__ import annotations

import click


@click.command()
def run() -> None:
    """Run the operator against the current kubeconfig."""
    raise click.ClickException("not implemented yet")
