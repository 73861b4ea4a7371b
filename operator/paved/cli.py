"""The `paved` command: run, dev, render, validate, rollout, crds, bench.

Each sub-command lives in its own module under paved.commands and keeps its heavy imports
(kopf, kubernetes, boto3) inside the command function, so `paved --help` stays fast.
"""

from __future__ import annotations

import click

from paved.commands.crds import crds
from paved.commands.dev import dev
from paved.commands.render import render
from paved.commands.rollout import rollout
from paved.commands.run import run
from paved.commands.validate import validate


@click.group()
@click.version_option(package_name="paved")
def main() -> None:
    """Paved: intent-driven platform operator for Kubernetes."""


for _command in (run, dev, render, validate, rollout, crds):
    main.add_command(_command)
