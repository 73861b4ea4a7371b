"""`paved render`: Render an intent through its composition, offline.

Like `crossplane render`: no cluster, no credentials. It shows every resource an intent would
become — for cloud providers the exact call parameters — with outputs of resources that do not
exist yet as `<pending:RESOURCE.KEY>` and generated secrets as `<generated:NAME>`, so the
output can be pasted into a review without leaking anything.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import yaml

if TYPE_CHECKING:
    from paved.render import RenderResult

OFFLINE_UID = "00000000-0000-0000-0000-000000000000"
DEFAULT_NAMESPACE = "default"
REPO_COMPOSITIONS = Path(__file__).resolve().parents[3] / "compositions"

compositions_option = click.option(
    "--compositions",
    "compositions_dir",
    envvar="PAVED_COMPOSITIONS",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Directory of Composition YAML files [default: the repository's compositions/, or $PAVED_COMPOSITIONS].",
)
"""`--compositions DIR`, shared by `paved render` and `paved validate`."""


@click.command()
@click.argument("intent_file", metavar="INTENT.yaml", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--composition",
    "composition_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Composition file(s) to choose from instead of the directory; a single one serving the kind is used as is.",
)
@compositions_option
@click.option("--namespace", "-n", help=f"Namespace to render into [default: the intent's, else {DEFAULT_NAMESPACE}].")
@click.option(
    "--namespace-labels",
    multiple=True,
    metavar="K=V[,K=V]",
    help="Labels of that namespace, for namespaceSelector matching (e.g. paved.dev/environment=dev).",
)
@click.option("--output", "-o", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
def render(
    intent_file: Path,
    composition_files: tuple[Path, ...],
    compositions_dir: Path | None,
    namespace: str | None,
    namespace_labels: tuple[str, ...],
    output: str,
) -> None:
    """Render an intent through its composition, offline."""
    from paved.render import RenderError
    from paved.render import render as render_intent  # here, not at import: keeps `paved --help` fast

    intent = _load_intent(intent_file, namespace)
    labels = {"kubernetes.io/metadata.name": intent["metadata"]["namespace"], **parse_labels(namespace_labels)}
    candidates = load_compositions(composition_files, compositions_dir)
    try:
        composition = _pick(intent, candidates, labels, explicit=bool(composition_files))
        result = render_intent(composition, intent, outputs=None, generated=None, namespace_labels=labels)
    except RenderError as error:
        click.echo(f"paved render: {error}", err=True)
        if error.variable:
            click.echo(f"  missing variable: {error.variable}", err=True)
        if error.field:
            click.echo(f"  field: {error.field}", err=True)
        raise SystemExit(1) from None

    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(_format(result, output), nl=False)


def _load_intent(path: Path, namespace: str | None) -> dict[str, Any]:
    """The intent as the operator would see it: namespace and uid set, API defaults applied."""
    documents = [doc for doc in _read_yaml(path) if doc is not None]
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise click.ClickException(f"{path}: expected exactly one intent object, found {len(documents)} documents")
    document, metadata = documents[0], documents[0].get("metadata")
    if not document.get("kind") or not isinstance(metadata, dict) or not metadata.get("name"):
        raise click.ClickException(f"{path}: an intent needs kind and metadata.name")
    intent = offline_intent(document, namespace)
    intent["spec"] = _checked_spec(intent["kind"], intent.get("spec") or {})
    return intent


def offline_intent(document: Mapping[str, Any], namespace: str | None = None) -> dict[str, Any]:
    """`document` with what the API server would add (namespace, uid, generation, labels) filled in
    with fixed offline values; `namespace` overrides the document's own."""
    metadata = {"uid": OFFLINE_UID, "generation": 1, "labels": {}}
    metadata.update({key: value for key, value in (document.get("metadata") or {}).items() if value is not None})
    metadata["namespace"] = namespace or metadata.get("namespace") or DEFAULT_NAMESPACE
    return {**document, "metadata": metadata}


def _checked_spec(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Validate `spec` with the kind's API model, which applies the defaults (as the API server
    does from the CRD schema), so offline output matches what the operator renders."""
    from paved.api.kinds import BY_KIND, INTENT_KINDS, SpecError

    if kind not in INTENT_KINDS:
        raise click.ClickException(f"{kind} is not an intent kind; expected one of: {', '.join(INTENT_KINDS)}")
    try:
        return BY_KIND[kind].parse_spec(spec).dump()
    except SpecError as error:
        raise click.ClickException(f"the {kind} is invalid:\n" + "\n".join(f"  {p}" for p in error.problems)) from None


def load_compositions(files: tuple[Path, ...], directory: Path | None) -> list[dict[str, Any]]:
    if files:
        paths = list(files)
    else:
        directory = directory or REPO_COMPOSITIONS
        if not directory.is_dir():
            raise click.ClickException(
                f"no compositions directory at {directory}; pass --compositions DIR or --composition FILE"
            )
        paths = sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml"))
    found = [
        doc for path in paths for doc in _read_yaml(path) if isinstance(doc, dict) and doc.get("kind") == "Composition"
    ]
    if not found:
        raise click.ClickException(f"no Composition objects in {', '.join(str(p) for p in paths) or directory}")
    return found


def _pick(
    intent: dict[str, Any], candidates: list[dict[str, Any]], labels: dict[str, str], *, explicit: bool
) -> dict[str, Any]:
    """Selection as in the cluster; with --composition files, a single one serving the kind is used as is."""
    from paved.render import select_composition

    if explicit and not (intent["spec"].get("compositionRef") or {}).get("name"):
        serving = [c for c in candidates if (c.get("spec") or {}).get("compositeKind") == intent["kind"]]
        if len(serving) == 1:
            return serving[0]
    return dict(select_composition(intent, candidates, labels))


def _read_yaml(path: Path) -> list[Any]:
    try:
        with path.open(encoding="utf-8") as stream:
            return list(yaml.safe_load_all(stream))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise click.ClickException(f"{path}: {yaml_problem(error)}") from None


def yaml_problem(error: yaml.YAMLError | UnicodeDecodeError) -> str:
    """`not valid YAML (line N): PROBLEM`, without PyYAML's quote of the offending line: the file
    may hold a secret (a Secret manifest among the intents)."""
    mark = getattr(error, "problem_mark", None)
    where = f" (line {mark.line + 1})" if mark is not None else ""
    return f"not valid YAML{where}: {getattr(error, 'problem', None) or error}"


def parse_labels(values: tuple[str, ...]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in (part for value in values for part in value.split(",") if part.strip()):
        key, sep, val = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r} is not K=V", param_hint="--namespace-labels")
        labels[key.strip()] = val.strip()
    return labels


class _ReadableDumper(yaml.SafeDumper):
    """Multi-line strings (Vault HCL, scripts) as literal blocks, so reviews can read them."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ReadableDumper.add_representer(str, _represent_str)


def _format(result: RenderResult, output: str) -> str:
    if output == "json":
        document = {
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
    lines = [f"# composition: {result.composition}", f"# hash: {result.hash}"]
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
