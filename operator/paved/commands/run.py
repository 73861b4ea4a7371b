"""`paved run`: Run the operator against the current kubeconfig."""

from __future__ import annotations

import click


@click.command()
@click.option("--namespace", "-n", "namespaces", multiple=True, help="Watch only this namespace (repeatable). Default: cluster-wide.")
@click.option("--metrics-port", default=8080, show_default=True, type=int, help="Port of the Prometheus /metrics endpoint.")
@click.option("--health-port", default=8081, show_default=True, type=int, help="Port of the /healthz liveness endpoint.")
@click.option("--bind-address", default="0.0.0.0", show_default=True, help="Address the metrics and health endpoints listen on.")
@click.option("--verbose", "-v", is_flag=True, help="Log at DEBUG level.")
def run(namespaces: tuple[str, ...], metrics_port: int, health_port: int, bind_address: str, verbose: bool) -> None:
    """Run the operator against the current kubeconfig (or in-cluster credentials)."""
    from paved import runtime  # heavy imports (kopf, kubernetes) only when running

    runtime.main(
        runtime.RunOptions(
            namespaces=runtime.namespaces_option(namespaces),
            metrics_port=metrics_port,
            health_port=health_port,
            bind_address=bind_address,
            verbose=verbose,
        )
    )
