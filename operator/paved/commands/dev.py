"""`paved dev`: Local real control plane: up, down, env (owned by paved.dev)."""

from __future__ import annotations

import click


@click.group()
def dev() -> None:
    """Local real control plane: up, down, env (owned by paved.dev)."""
    raise click.ClickException("not implemented yet")
