"""`paved validate`: check intents against the platform's policies, offline.

For CI pipelines and pre-commit hooks: reads intents from files, renders each through its
composition with the pure engine and evaluates the IntentPolicies exactly as the admission
webhook would, without a cluster. Exit status 1 when anything would be rejected (an Enforce
violation, an invalid intent, an intent that cannot be rendered, a policy that does not
compile), 0 otherwise; Warn and Audit findings are printed but do not fail the run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from paved.commands.inputs import (
    REPO_COMPOSITIONS,
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

if TYPE_CHECKING:  # the models and CEL are imported when the command runs, so `paved --help` stays fast
    from paved.policy import CompiledPolicy, Verdict


@dataclass(frozen=True)
class Finding:
    """One output line: a policy verdict, or a problem that stops an intent from being admitted."""

    file: str
    subject: str  # Kind/name
    type: str  # violation | excepted | invalid | render | policy | yaml
    message: str
    blocking: bool
    verdict: Verdict | None = None

    def line(self) -> str:
        return f"{self.file}: {self.subject}: {self.message}" if self.subject else f"{self.file}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"file": self.file, "object": self.subject, "type": self.type, "blocking": self.blocking}
        data.update(self.verdict.to_dict() if self.verdict else {"message": self.message})
        return data


@dataclass
class Run:
    """What was read, for the summary: nothing is skipped without being counted."""

    intents: int = 0
    skipped: int = 0
    policies: int = 0


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--policies",
    "policies_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of IntentPolicy (and PolicyException) YAML, read recursively [default: <compositions>/policies].",
)
@compositions_option
@namespace_labels_option
@exclude_option
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text", show_default=True)
def validate(
    paths: tuple[Path, ...],
    policies_dir: Path | None,
    compositions_dir: Path | None,
    namespace_labels: tuple[str, ...],
    excludes: tuple[str, ...],
    output: str,
) -> None:
    """Render intents in FILES_OR_DIRS and evaluate IntentPolicies against them, offline.

    Prints one line per finding (FILE: Kind/name: policy/rule (Mode): message) and exits 1
    if any intent would be rejected. Documents that are not Paved intents are skipped and
    counted; Namespace documents among them give their labels to the intents in them
    (--namespace-labels are added to every namespace). Folders are read recursively, except
    hidden ones and those matching --exclude.
    """
    labels = parse_labels(namespace_labels)
    run = Run()
    findings: list[Finding] = []
    compositions = load_compositions((), compositions_dir)
    policies_dir = policies_dir or (compositions_dir or REPO_COMPOSITIONS) / "policies"
    if not policies_dir.is_dir():
        raise click.BadParameter(f"{policies_dir} is not a folder", param_hint="--policies")
    policies, exceptions = _load_policies(policies_dir, findings, run)
    found = list(documents(paths, _unreadable(findings), excludes))
    namespaces = namespaces_from(found, labels)
    now = datetime.now(timezone.utc)
    for doc in found:
        if not is_intent(doc.body):
            run.skipped += 1
            continue
        run.intents += 1
        findings += _check(doc.file, doc.body, compositions, policies, namespaces, exceptions, now)
    _report(findings, run, output)
    if any(finding.blocking for finding in findings):
        raise SystemExit(1)


def _check(
    file: Path,
    doc: dict[str, Any],
    compositions: list[dict[str, Any]],
    policies: list[CompiledPolicy],
    namespaces: NamespaceLabels,
    exceptions: list[dict[str, Any]],
    now: datetime,
) -> list[Finding]:
    from paved.api.kinds import SpecError
    from paved.policy import Mode, Outcome, check_intent

    name = (doc.get("metadata") or {}).get("name")
    subject = f"{doc.get('kind')}/{name or '<unnamed>'}"
    try:
        parse_intent(doc)
    except SpecError as error:
        return [Finding(str(file), subject, "invalid", f"invalid: {problem}", True) for problem in error.problems]
    intent = offline_intent(doc)
    namespace = intent["metadata"]["namespace"]
    namespace_object = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace, "labels": namespaces.labels(namespace)},
    }
    result = check_intent(intent, compositions, policies, namespace_object, exceptions, now=now)
    findings = []
    if result.render_error is not None:
        findings.append(Finding(str(file), subject, "render", f"cannot render: {result.render_error}", True))
    for verdict in result.verdicts:
        if verdict.outcome is Outcome.PASS:
            continue
        kind = "excepted" if verdict.outcome is Outcome.EXCEPTED else "violation"
        blocking = verdict.violation and verdict.mode is Mode.ENFORCE
        findings.append(Finding(str(file), subject, kind, verdict.describe(), blocking, verdict))
    return findings


def _load_policies(
    folder: Path, findings: list[Finding], run: Run
) -> tuple[list[CompiledPolicy], list[dict[str, Any]]]:
    """IntentPolicies (compiled; compile errors are blocking findings) and PolicyExceptions."""

    def refused(doc: Document, problem: str) -> None:
        findings.append(Finding(str(doc.file), doc.subject, "policy", problem, True))

    policies, exceptions = load_policies(folder, _unreadable(findings), refused)
    run.policies = len(policies)
    return policies, exceptions


def _unreadable(findings: list[Finding]) -> Callable[[Path, str], None]:
    """A file that is not valid YAML is a blocking finding."""
    return lambda file, problem: findings.append(Finding(str(file), "", "yaml", problem, True))


# --- output ----------------------------------------------------------------------------------


def _report(findings: list[Finding], run: Run, output: str) -> None:
    blocking = sum(finding.blocking for finding in findings)
    summary = {
        "intents": run.intents,
        "skippedDocuments": run.skipped,
        "policies": run.policies,
        "blocking": blocking,
        "nonBlocking": len(findings) - blocking,
    }
    if output == "json":
        click.echo(json.dumps({"findings": [f.to_dict() for f in findings], "summary": summary}, indent=2))
        return
    for finding in findings:
        click.echo(finding.line())
    click.echo(
        f"{run.intents} intent(s) checked against {run.policies} policies, {run.skipped} other document(s) skipped: "
        f"{blocking} blocking, {len(findings) - blocking} non-blocking finding(s)",
        err=True,
    )
