"""`paved rollout status|report|promote|abort|retry NAME [-n NAMESPACE]`.

`status` prints where a ProgressiveRollout is and why (phase, weight, step, the one-sentence
message, conditions, the latest measurements); with `--watch`, then one line (phase, weight,
each metric's latest value, the message) whenever it changes. `report -o timeline.png` draws
the weight and each metric over time from what status records (paved.commands.timeline). The three commands set two annotations on
the rollout, `paved.dev/command: <command>` and `paved.dev/command-id: <a new id>`, in one
patch; the operator acts on each id once:

- promote: ends the current step now (a pause, a hold on inconclusive analysis);
- abort:   rolls back (traffic returns to stable once it is ready at full scale);
- retry:   starts a rolled-back or failed revision again from the first step.

Without the CLI: `kubectl annotate pro NAME paved.dev/command=promote
paved.dev/command-id=$(date +%s) --overwrite`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

import click

KIND = "ProgressiveRollout"


def _namespace(explicit: str | None) -> str:
    if explicit:
        return explicit
    from kubernetes import config

    try:
        _, context = config.list_kube_config_contexts()
    except Exception:  # noqa: BLE001 - no kubeconfig (in a pod): the default namespace
        return "default"
    return str(((context or {}).get("context") or {}).get("namespace") or "default")


def _path(namespace: str, name: str) -> str:
    from paved import API_VERSION
    from paved.kube.client import resource_info

    return resource_info(API_VERSION, KIND).path(name, namespace)


def _get(namespace: str, name: str) -> dict[str, Any]:
    from paved import API_VERSION
    from paved.kube.apply import get
    from paved.kube.client import ApiError

    try:
        body = get(API_VERSION, KIND, name, namespace)
    except ApiError as error:
        raise click.ClickException(str(error)) from None
    if body is None:
        raise click.ClickException(f"ProgressiveRollout {namespace}/{name} not found")
    return body


def _send(command: str, name: str, namespace: str | None) -> None:
    from paved.kube.client import ApiError, request
    from paved.providers.routing import COMMAND_ANNOTATION, COMMAND_ID_ANNOTATION

    ns = _namespace(namespace)
    _get(ns, name)
    command_id = uuid.uuid4().hex[:12]
    body = {"metadata": {"annotations": {COMMAND_ANNOTATION: command, COMMAND_ID_ANNOTATION: command_id}}}
    try:
        request("PATCH", _path(ns, name), operation="patch", body=body, content_type="application/merge-patch+json")
    except ApiError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"{command} requested for ProgressiveRollout {ns}/{name} (command id {command_id})")


def describe(body: Mapping[str, Any], history: int = 5) -> str:
    """The human summary `paved rollout status` prints. Pure."""
    metadata, status = body.get("metadata") or {}, body.get("status") or {}
    progress = status.get("progress") or {}
    lines = [
        f"{metadata.get('namespace')}/{metadata.get('name')}: {status.get('phase') or 'Unknown'}, "
        f"canary weight {status.get('canaryWeight') or 0}%, step {int(status.get('currentStepIndex') or 0) + 1}",
        f"  {status.get('message') or '(no message yet)'}",
        f"  stable revision {status.get('stableRevision') or '-'}, canary revision {status.get('canaryRevision') or '-'}"
        f", stage {progress.get('stage') or '-'}",
    ]
    for condition in status.get("conditions") or []:
        lines.append(f"  {condition.get('type')}={condition.get('status')} ({condition.get('reason')})")
    for metric, checks in (status.get("checks") or {}).items():
        lines.append(f"  {metric}: {checks.get('successes', 0)} passed, {checks.get('failures', 0)} failed, "
                     f"{checks.get('holds', 0)} holds in a row")
    entries = (status.get("analysisHistory") or [])[-history:]
    if entries:
        lines.append("  latest measurements:")
        for entry in entries:
            value = entry.get("value")
            shown = "no data" if value is None else f"{value:.4g}"
            samples = f", {entry['samples']} samples" if entry.get("samples") is not None else ""
            lines.append(f"    {entry.get('at')} {entry.get('metric')} = {shown}{samples}: {entry.get('verdict')}")
    return "\n".join(lines)


def watch_line(body: Mapping[str, Any]) -> str:
    """One line of `paved rollout status --watch`: phase, weight, the latest value of each
    metric, and the one-sentence reason. Pure."""
    status = body.get("status") or {}
    latest: dict[str, Mapping[str, Any]] = {}
    for entry in status.get("analysisHistory") or []:
        latest[str(entry.get("metric"))] = entry
    metrics = []
    for metric, entry in latest.items():
        value = entry.get("value")
        samples = f" ({entry['samples']} samples)" if entry.get("samples") is not None else ""
        metrics.append(f"{metric}={'no data' if value is None else f'{value:.4g}'}{samples} {entry.get('verdict')}")
    return (f"{status.get('phase') or 'Unknown':<11} weight {int(status.get('canaryWeight') or 0):>3}%  "
            f"{'; '.join(metrics) or '-'}  | {status.get('message') or '(no message yet)'}")


def _watch(namespace: str, name: str, every: float) -> None:
    """Print a line whenever the rollout's line changes, until interrupted."""
    import time
    from datetime import datetime

    body = _get(namespace, name)
    click.echo(describe(body))
    shown = None
    try:
        while True:
            line = watch_line(body)
            if line != shown:
                click.echo(f"{datetime.now().astimezone():%H:%M:%S} {line}")
                shown = line
            time.sleep(every)
            body = _get(namespace, name)
    except KeyboardInterrupt:
        return


@click.group()
def rollout() -> None:
    """Inspect and steer ProgressiveRollouts."""


_name = click.argument("name")
_ns = click.option("--namespace", "-n", default=None, help="Namespace (default: the kubeconfig context's).")


@rollout.command()
@_name
@_ns
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--watch", "-w", is_flag=True, help="Keep going: a line (phase, weight, each metric, the reason) on every change.")
@click.option("--every", default=1.0, show_default=True, type=click.FloatRange(min=0.2), help="Seconds between reads with --watch.")
def status(name: str, namespace: str | None, output: str, watch: bool, every: float) -> None:
    """Where the rollout is and why."""
    if watch:
        if output == "json":
            raise click.UsageError("--watch prints text lines; leave out -o json")
        _watch(_namespace(namespace), name, every)
        return
    body = _get(_namespace(namespace), name)
    if output == "json":
        click.echo(json.dumps(body.get("status") or {}, indent=2, sort_keys=True))
    else:
        click.echo(describe(body))


@rollout.command()
@_name
@_ns
@click.option("--output", "-o", "output", required=True, type=click.Path(dir_okay=False, writable=True),
              help="PNG file to write, e.g. timeline.png.")
def report(name: str, namespace: str | None, output: str) -> None:
    """Draw the canary weight and each metric over time (from the rollout's status) into a PNG."""
    from paved.commands import timeline

    try:
        data = timeline.timeline(_get(_namespace(namespace), name))
    except timeline.NoHistory as error:
        raise click.ClickException(str(error)) from None
    try:
        picture = timeline.png(timeline.figure(data))
    except ImportError:
        raise click.ClickException("drawing needs matplotlib: pip install 'paved[report]'") from None
    with open(output, "wb") as file:
        file.write(picture)
    click.echo(f"wrote {output}: canary weight and {len(data.metrics)} metric(s), {data.measurements} measurements")


@rollout.command()
@_name
@_ns
def promote(name: str, namespace: str | None) -> None:
    """End the current step now (a pause, or a hold on inconclusive analysis)."""
    _send("promote", name, namespace)


@rollout.command()
@_name
@_ns
def abort(name: str, namespace: str | None) -> None:
    """Roll back: traffic returns to stable once it is ready at full scale."""
    _send("abort", name, namespace)


@rollout.command()
@_name
@_ns
def retry(name: str, namespace: str | None) -> None:
    """Start a rolled-back or failed revision again from the first step."""
    _send("retry", name, namespace)
