"""`paved render`: Render intents through their compositions, offline.

Like `crossplane render`: no cluster, no credentials. It shows every resource an intent would
become — for cloud providers the exact call parameters — with outputs of resources that do not
exist yet as `<pending:RESOURCE.KEY>` and generated secrets as `<generated:NAME>`, so the
output can be pasted into a review without leaking anything.

It reads files and folders as `paved validate` does (paved.commands.inputs): every intent found
is rendered through paved.render.render_intent, the entry point the operator itself renders
through; other documents (a Namespace next to an intent, as in Git) are skipped, and Namespace
documents give their labels to the intents in them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import yaml

from paved.commands.inputs import (
    Document,
    NamespaceLabels,
    parse_intent,
    compositions_option,
    documents,
    exclude_option,
    is_intent,
    load_compositions,
    load_policies,
    namespace_labels_option,
    namespaces_from,
    offline_intent,
    parse_labels,
)

if TYPE_CHECKING:  # the models, CEL and Jinja are imported when the command runs, so `paved --help` stays fast
    from paved.policy import CompiledPolicy
    from paved.render import RenderError, RenderResult


@dataclass
class _Run:
    """What was read, for the summary and the exit status."""

    rendered: int = 0
    skipped: int = 0
    failed: int = 0


@click.command()
@click.argument("paths", nargs=-1, required=True, metavar="FILES_OR_DIRS...",
                type=click.Path(exists=True, path_type=Path))
@click.option(
    "--composition",
    "composition_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Composition file(s) to choose from instead of the directory; a single one serving the kind is used as is.",
)
@compositions_option
@click.option(
    "--policies",
    "policies_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of IntentPolicy YAML whose allowances (Adopt, ClusterScope, ...) apply, as in the cluster "
         "[default: nothing is allowed].",
)
@click.option("--namespace", "-n", help="Namespace to render into [default: each intent's, else default].")
@namespace_labels_option
@exclude_option
@click.option("--output", "-o", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
def render(
    paths: tuple[Path, ...],
    composition_files: tuple[Path, ...],
    compositions_dir: Path | None,
    policies_dir: Path | None,
    namespace: str | None,
    namespace_labels: tuple[str, ...],
    excludes: tuple[str, ...],
    output: str,
) -> None:
    """Render the intents in FILES_OR_DIRS through their compositions, offline.

    Folders are read recursively (hidden ones and --exclude matches skipped). Documents that
    are not intents rendered through a Composition are skipped and counted; Namespace
    documents give their labels to the intents in them (--namespace-labels are added to
    every namespace). YAML output is one stream, each intent's resources after a comment
    naming it; JSON output is one JSON object per intent. An intent that cannot be rendered
    is reported on stderr naming its file, document and field, and the exit status is 1.
    """
    candidates = load_compositions(composition_files, compositions_dir)
    run = _Run()

    def unreadable(file: Path, problem: str) -> None:
        click.echo(f"paved render: {file}: {problem}", err=True)
        run.failed += 1

    def refused(doc: Document, problem: str) -> None:
        click.echo(f"paved render: {doc.where}: {doc.subject}: {problem}", err=True)
        run.failed += 1

    policies = load_policies(policies_dir, unreadable, refused)[0] if policies_dir else []
    found = list(documents(paths, unreadable, excludes))
    namespaces = namespaces_from(found, parse_labels(namespace_labels))
    for doc in found:
        rendered = _render_one(doc, candidates, namespaces, namespace, policies, explicit=bool(composition_files), run=run)
        if rendered is not None:
            for warning in rendered.result.warnings:
                click.echo(f"warning: {doc.where}: {doc.subject}: {warning}", err=True)
            click.echo(_format(rendered, output), nl=False)
    click.echo(f"{run.rendered} intent(s) rendered, {run.skipped} other document(s) skipped"
               + (f", {run.failed} failed" if run.failed else ""), err=True)
    if run.failed:
        raise SystemExit(1)
    if not run.rendered:
        raise click.ClickException(f"no intent rendered through a Composition in {', '.join(str(p) for p in paths)}")


@dataclass(frozen=True)
class _Rendered:
    document: Document
    intent: Mapping[str, Any]
    result: RenderResult


def _render_one(doc: Document, candidates: list[dict[str, Any]], namespaces: NamespaceLabels, namespace: str | None,
                policies: list[CompiledPolicy], *, explicit: bool, run: _Run) -> _Rendered | None:
    """Render one document if it is an intent rendered through a Composition; report why not otherwise."""
    from paved.api.kinds import COMPOSED_KINDS, INTENT_KINDS, SpecError
    from paved.policy.allowances import allowances_for
    from paved.render import render_intent

    if not is_intent(doc.body):
        run.skipped += 1
        return None
    if doc.body.get("kind") in INTENT_KINDS and doc.body.get("kind") not in COMPOSED_KINDS:
        # ExternalSecretRef, ProgressiveRollout: their own engines (`paved validate` checks them)
        click.echo(f"skipped: {doc.where}: {doc.subject}: not rendered through a Composition", err=True)
        run.skipped += 1
        return None
    try:
        spec = parse_intent(doc.body)
    except SpecError as error:
        for problem in error.problems:
            click.echo(f"paved render: {doc.where}: {doc.subject}: {problem}", err=True)
        run.failed += 1
        return None
    intent = offline_intent(doc.body, namespace)
    labels = namespaces.labels(intent["metadata"]["namespace"])
    rendering = render_intent(
        intent, candidates, namespace_labels=labels, allowed=allowances_for(policies, intent["kind"], labels), spec=spec,
        composition=_explicit(intent, candidates) if explicit else None,
    )
    if rendering.error is not None or rendering.result is None:
        _report(doc, rendering.error)
        run.failed += 1
        return None
    run.rendered += 1
    return _Rendered(doc, rendering.intent, rendering.result)


def _explicit(intent: Mapping[str, Any], candidates: list[dict[str, Any]]) -> dict[str, Any] | None:
    """With --composition files, a single one serving the kind is used as is (unless the intent
    names one); otherwise selection is as in the cluster."""
    if ((intent.get("spec") or {}).get("compositionRef") or {}).get("name"):
        return None
    serving = [c for c in candidates if (c.get("spec") or {}).get("compositeKind") == intent.get("kind")]
    return serving[0] if len(serving) == 1 else None


def _report(doc: Document, error: RenderError | None) -> None:
    click.echo(f"paved render: {doc.where}: {doc.subject}: {error}", err=True)
    if error is not None and error.variable:
        click.echo(f"  missing variable: {error.variable}", err=True)
    if error is not None and error.field:
        click.echo(f"  field: {error.field}", err=True)


class _ReadableDumper(yaml.SafeDumper):
    """Multi-line strings (Vault HCL, scripts) as literal blocks, so reviews can read them."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ReadableDumper.add_representer(str, _represent_str)


def _format(rendered: _Rendered, output: str) -> str:
    result, metadata = rendered.result, rendered.intent["metadata"]
    intent = f"{rendered.intent['kind']} {metadata['namespace']}/{metadata['name']}"
    if output == "json":
        document = {
            "intent": {"kind": rendered.intent["kind"], "namespace": metadata["namespace"], "name": metadata["name"]},
            "source": {"file": str(rendered.document.file), "document": rendered.document.index,
                       **({"item": rendered.document.item} if rendered.document.item is not None else {})},
            "composition": result.composition,
            "hash": result.hash,
            "warnings": list(result.warnings),
            "resources": [
                {
                    "name": r.name,
                    "provider": r.provider,
                    "pending": r.pending,
                    "readiness": r.readiness,
                    "dependsOn": list(r.depends_on),
                    "body": r.body,
                }
                for r in result.resources
            ],
        }
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    lines = [f"# intent: {intent} ({rendered.document.where})", f"# composition: {result.composition}",
             f"# hash: {result.hash}"]
    lines += [f"# warning: {warning}" for warning in result.warnings]
    for resource in result.resources:
        lines.append("---")
        lines.append(f"# resource: {resource.name} (provider: {resource.provider})")
        if resource.pending:
            lines.append(f"# pending: reads outputs of {', '.join(resource.depends_on)} that exist only once created")
        body = yaml.dump(
            resource.body, Dumper=_ReadableDumper, sort_keys=False, default_flow_style=False, allow_unicode=True
        )
        lines.append(body.rstrip("\n"))
    return "\n".join(lines) + "\n"
