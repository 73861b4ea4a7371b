"""`paved dev`: a real local control plane (etcd, kube-apiserver, controllers, kwok).

The implementation lives in paved.dev.controlplane; this module only parses options and
prints. It is imported by `paved --help`, so paved.dev is imported inside the commands.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from paved.dev.controlplane import ControlPlane

_STATE_DIR = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where this control plane keeps data, certificates, logs and ports "
    "[default: $PAVED_DEV_DIR or ~/.cache/paved/dev].",
)
_ASSETS = click.option(
    "--assets",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder with prebuilt binaries (like KUBEBUILDER_ASSETS); the missing ones are built.",
)


def _log(message: str) -> None:
    click.echo(message, err=True)


def _control_plane(state_dir: Path | None, assets: Path | None = None) -> ControlPlane:
    from paved.dev.controlplane import ControlPlane

    return ControlPlane(state_dir, assets, log=_log)


@click.group()
def dev() -> None:
    """Local real control plane: build, up, down, env, demo, status."""


@dev.command()
@_STATE_DIR
@_ASSETS
@click.option("--timeout", type=float, default=180.0, show_default=True, help="Seconds to wait.")
def up(state_dir: Path | None, assets: Path | None, timeout: float) -> None:
    """Start the control plane, or reuse it if it already runs."""
    from paved.dev.binaries import BinaryError
    from paved.dev.controlplane import ControlPlaneError

    plane = _control_plane(state_dir, assets)
    try:
        result = plane.up(timeout=timeout)
    except (BinaryError, ControlPlaneError) as error:
        raise click.ClickException(str(error)) from error
    timings = ", ".join(f"{phase} {seconds:.1f}s" for phase, seconds in result.timings.items())
    verb = "already running" if result.reused else "started"
    click.echo(
        f"control plane {verb} at {result.server} in {result.total:.1f}s ({timings})", err=True
    )
    click.echo(f"export KUBECONFIG={shlex.quote(str(plane.kubeconfig))}")


@dev.command()
@_ASSETS
def build(assets: Path | None) -> None:
    """Build (or find) the control-plane binaries and fetch the Gateway API and SecurityGroupPolicy
    CRDs; print paths.

    Safe to run repeatedly: cached binaries are reused, so this is what bootstrap scripts call.
    """
    from paved.dev.binaries import (
        BinaryError,
        ensure_binaries,
        gateway_api_crd_dir,
        go_module_dir,
        security_group_policy_crd,
    )

    try:
        binaries = ensure_binaries(assets, log=_log)
        crds = gateway_api_crd_dir()
        sgp_crd = security_group_policy_crd()
        go_module_dir("kwok", "sigs.k8s.io/kwok")  # its RBAC role is read at `up`
    except BinaryError as error:
        raise click.ClickException(str(error)) from error
    for name, path in binaries.items():
        click.echo(f"{name}\t{path}")
    click.echo(f"gateway-api-crds\t{crds}")
    click.echo(f"security-group-policy-crd\t{sgp_crd}")


@dev.command()
@_STATE_DIR
@click.option("--purge", is_flag=True, help="Also delete the state dir (data, certificates, logs).")
def down(state_dir: Path | None, purge: bool) -> None:
    """Stop the control plane."""
    from paved.dev.demo import stop_demo

    plane = _control_plane(state_dir)
    for name in stop_demo(plane):  # before the API server goes, so the operator exits cleanly
        click.echo(f"{name} started by `paved dev demo` stopped", err=True)
    plane.down(purge=purge)
    click.echo(
        f"control plane in {plane.state_dir} stopped" + (" and removed" if purge else ""), err=True
    )


@dev.command()
@_STATE_DIR
def env(state_dir: Path | None) -> None:
    """Print shell exports for the control plane: eval "$(paved dev env)"."""
    from paved.dev.controlplane import ControlPlaneError

    plane = _control_plane(state_dir)
    try:
        kubectl = plane.kubectl_path
    except ControlPlaneError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"export KUBECONFIG={shlex.quote(str(plane.kubeconfig))}")
    click.echo(f"export PAVED_KUBECTL={shlex.quote(str(kubectl))}")


@dev.command()
@_STATE_DIR
@click.option(
    "--examples",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder of NN-topic/ example folders [default: the repo's examples/].",
)
@click.option("--timeout", type=float, default=180.0, show_default=True, help="Seconds to wait for start-ups.")
@click.option("--wait", type=float, default=90.0, show_default=True, help="Seconds to wait for the intents to settle.")
def demo(state_dir: Path | None, examples: Path | None, timeout: float, wait: float) -> None:
    """The main job: control plane, CRDs, moto (fake AWS), the operator, examples/, status.

    Idempotent: what already runs is reused (the operator is restarted). Stop it all with
    `paved dev down`.
    """
    from paved.dev.binaries import BinaryError
    from paved.dev.controlplane import ControlPlaneError
    from paved.dev.demo import format_table, run_demo
    from paved.dev.moto import MotoError
    from paved.dev.operator import OperatorError

    plane = _control_plane(state_dir)
    try:
        result = run_demo(
            plane, examples=examples, timeout=timeout, wait=wait,
            log=lambda message: click.echo(f"==> {message}", err=True),
        )
    except (BinaryError, ControlPlaneError, MotoError, OperatorError) as error:
        raise click.ClickException(str(error)) from error
    ready = sum(row.ready == "True" for row in result.rows)
    click.echo("")
    click.echo(format_table(result.rows))
    click.echo("")
    click.echo(f"{ready}/{len(result.rows)} Ready after {result.seconds:.0f}s.")
    paved, kubectl = _command_name("paved"), _command_name("kubectl")
    flag = "" if state_dir is None else f" --state-dir {shlex.quote(str(plane.state_dir))}"
    click.echo(
        "\nUse it:\n"
        f'  eval "$({paved} dev env{flag})"     # or: export KUBECONFIG={shlex.quote(str(plane.kubeconfig))}\n'
        f"  {kubectl} get paved -A\n"
        f"  {kubectl} get agid -n orders-app pod-reader -o yaml\n"
        f"  {paved} dev status{flag}             # this table again\n"
        f"  operator log: {result.operator.log_path}\n"
        + _canary_lines(kubectl, paved) +
        "Stop it:\n"
        f"  make down   (or: {paved} dev down{flag}; add --purge to delete the state)"
    )


@dev.command()
@_STATE_DIR
def status(state_dir: Path | None) -> None:
    """Print the control plane, the demo's processes and a status table of every intent."""
    from paved.dev.controlplane import ControlPlaneError
    from paved.dev.demo import demo_processes, format_table, status_rows

    plane = _control_plane(state_dir)
    if not plane.is_running():
        raise click.ClickException(f"no control plane runs in {plane.state_dir}; start it with `make demo`")
    click.echo(f"control plane: running at {plane.server} (state {plane.state_dir})")
    for name, state in demo_processes(plane).items():
        click.echo(f"{name}: {state}")
    try:
        rows = status_rows(plane)
    except ControlPlaneError as error:
        raise click.ClickException(str(error)) from error
    click.echo("")
    click.echo(format_table(rows))


def _canary_lines(kubectl: str, paved: str) -> str:
    from paved.dev.demo_canary import canary_commands

    lines = "".join(f"  # {what}\n  {command}\n" for what, command in canary_commands(kubectl, paved))
    return f"Watch a canary (shop/checkout; docs/rollout.md#the-demo):\n{lines}"


def _command_name(name: str) -> str:
    """``name`` if it is on PATH; else how to call it after `eval "$(paved dev env)"`."""
    import shutil
    import sys

    if shutil.which(name):
        return name
    if name == "kubectl":
        return '"$PAVED_KUBECTL"'
    venv = Path(sys.executable).with_name(name)
    try:
        return str(venv.relative_to(Path.cwd()))
    except ValueError:
        return str(venv)
