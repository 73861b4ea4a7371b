"""`paved run`: Run the operator against the current kubeconfig."""

from __future__ import annotations

import click


@click.command()
@click.option("--namespace", "-n", "namespaces", multiple=True, help="Watch only this namespace (repeatable). Default: cluster-wide.")
@click.option("--metrics-port", default=8080, show_default=True, type=int, help="Port of the Prometheus /metrics endpoint.")
@click.option("--health-port", default=8081, show_default=True, type=int,
              help="Port of the probes: /healthz (liveness) and /readyz (the webhook serves).")
@click.option("--bind-address", default="0.0.0.0", show_default=True, help="Address the metrics and health endpoints listen on.")  # noqa: S104 - a pod's probes and scrapes come from outside it
@click.option("--webhook-port", default=None, type=int,
              help="Port of the HTTPS admission webhook. Default: 9443 with --webhook-service, else any free port "
                   "(the registered URL names the port actually used; replicas reached by one URL share a fixed port).")
@click.option("--webhook-address", default=None, help="Address the webhook listens on. Default: --bind-address.")
@click.option("--webhook-host", default=None, help="Host (DNS name or IP) the API server calls in the webhook URL.")
@click.option("--webhook-service", default=None, metavar="NAMESPACE/NAME[:PORT]",
              help="Reach the webhook through this Service instead of a URL (in-cluster).")
@click.option("--webhook-cert", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Serving certificate (PEM). Default: a CA and certificate generated at start-up.")
@click.option("--webhook-key", type=click.Path(exists=True, dir_okay=False), default=None, help="Key of --webhook-cert (PEM).")
@click.option("--webhook-ca", type=click.Path(exists=True, dir_okay=False), default=None,
              help="CA bundle the API server verifies the webhook with (PEM). Default: --webhook-cert.")
@click.option("--webhook-failure-policy", type=click.Choice(["Fail", "Ignore"]), default="Fail", show_default=True,
              help="What the API server does when the webhook cannot answer (docs/guardrails.md).")
@click.option("--webhook-timeout", default=5, show_default=True, type=click.IntRange(1, 30), help="Webhook timeoutSeconds.")
@click.option("--no-webhook-registration", is_flag=True,
              help="Serve the webhook but do not write the ValidatingWebhookConfiguration (it is deployed by other means).")
@click.option("--exception-namespace", "exception_namespaces", multiple=True,
              help="Namespace whose PolicyExceptions are honoured (repeatable; also: namespace label paved.dev/policy-exceptions=allowed).")
@click.option("--audit-interval", default=600.0, show_default=True, type=click.FloatRange(min=1.0),
              help="Seconds between full policy audits (jittered).")
@click.option("--prometheus-address", envvar="PAVED_PROMETHEUS_ADDRESS", default=None, metavar="URL",
              help="Prometheus queried by ProgressiveRollouts whose spec.analysis.prometheus.address is empty "
                   "(env PAVED_PROMETHEUS_ADDRESS). Called under the same endpoint rule as a rollout's own address.")
@click.option("--leader-election/--no-leader-election", default=True, show_default=True,
              help="Take part in leader election on a Lease; only the leader reconciles. Without it this process "
                   "acts as the only replica.")
@click.option("--lease-name", default="paved-operator", show_default=True, help="Name of the leader election Lease.")
@click.option("--lease-namespace", default=None, help="Namespace of the Lease. Default: the operator's namespace.")
@click.option("--lease-duration", default=15, show_default=True, type=click.IntRange(min=1),
              help="Seconds a candidate waits on an unrenewed Lease before taking it.")
@click.option("--renew-deadline", default=10.0, show_default=True, type=click.FloatRange(min=1.0),
              help="Seconds the leader keeps trying to renew before it stops writing and exits.")
@click.option("--retry-period", default=2.0, show_default=True, type=click.FloatRange(min=1.0),
              help="Seconds between renewals, and between a candidate's attempts.")
@click.option("--verbose", "-v", is_flag=True, help="Log at DEBUG level.")
def run(namespaces: tuple[str, ...], metrics_port: int, health_port: int, bind_address: str, webhook_port: int | None,
        webhook_address: str | None, webhook_host: str | None, webhook_service: str | None, webhook_cert: str | None,
        webhook_key: str | None, webhook_ca: str | None, webhook_failure_policy: str, webhook_timeout: int,
        no_webhook_registration: bool, exception_namespaces: tuple[str, ...], audit_interval: float,
        prometheus_address: str | None,
        leader_election: bool, lease_name: str, lease_namespace: str | None, lease_duration: int, renew_deadline: float,
        retry_period: float, verbose: bool) -> None:
    """Run the operator against the current kubeconfig (or in-cluster credentials)."""
    from paved import runtime  # heavy imports (kopf, kubernetes) only when running

    if prometheus_address and not prometheus_address.startswith(("http://", "https://")):
        raise click.BadParameter("an http:// or https:// URL", param_hint="--prometheus-address")
    if bool(webhook_cert) != bool(webhook_key):
        raise click.UsageError("--webhook-cert and --webhook-key go together")
    timings = runtime.LeaseTimings(lease_duration, renew_deadline, retry_period)
    if timings.problems():
        raise click.UsageError("; ".join(timings.problems()))
    try:
        service = runtime.parse_service(webhook_service)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--webhook-service") from None
    runtime.main(
        runtime.RunOptions(
            namespaces=runtime.namespaces_option(namespaces),
            metrics_port=metrics_port,
            health_port=health_port,
            bind_address=bind_address,
            verbose=verbose,
            webhook=runtime.WebhookOptions(
                port=webhook_port if webhook_port is not None else (9443 if service else 0), address=webhook_address or bind_address, host=webhook_host, service=service,
                certfile=webhook_cert, keyfile=webhook_key, cafile=webhook_ca, failure_policy=webhook_failure_policy,
                timeout_seconds=webhook_timeout, register=not no_webhook_registration,
            ),
            exception_namespaces=runtime.namespaces_option(exception_namespaces),
            audit_interval=audit_interval,
            prometheus_address=prometheus_address,
            leader_election=leader_election,
            lease_name=lease_name,
            lease_namespace=lease_namespace,
            lease_timings=timings,
        )
    )
