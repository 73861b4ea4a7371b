"""`paved validate`: check intents against the platform's policies, offline.

For CI pipelines and pre-commit hooks: reads intents from files, renders each through its
composition with the pure engine and evaluates the IntentPolicies exactly as the admission
webhook would, without a cluster. Exit status 1 when anything would be rejected (an Enforce
violation, an invalid intent, an intent that cannot be rendered, a policy that does not
compile), 0 otherwise; Warn and Audit findings are printed but do not fail the run.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import yaml

from paved import API_VERSION, GROUP
from paved.commands.render import (
    REPO_COMPOSITIONS,
    compositions_option,
    load_compositions,
    offline_intent,
    parse_labels,
    yaml_problem,
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
@click.option(
    "--namespace-labels",
    "namespace_labels",
    multiple=True,
    metavar="K=V[,K=V]",
    help="Labels of the namespace the intents go to (repeatable), e.g. paved.dev/environment=production.",
)
@click.option(
    "--exclude",
    "excludes",
    multiple=True,
    metavar="GLOB",
    help="Skip files and folders whose path matches (repeatable), e.g. '*/drafts'.",
)
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
    documents = list(_documents(paths, findings, excludes))
    namespaces = _namespace_labels(documents, labels)
    now = datetime.now(timezone.utc)
    for file, doc in documents:
        if not _is_intent(doc):
            run.skipped += 1
            continue
        run.intents += 1
        findings += _check(file, doc, compositions, policies, namespaces, exceptions, now)
    _report(findings, run, output)
    if any(finding.blocking for finding in findings):
        raise SystemExit(1)


def _check(
    file: Path,
    doc: dict[str, Any],
    compositions: list[dict[str, Any]],
    policies: list[CompiledPolicy],
    namespaces: _NamespaceLabels,
    exceptions: list[dict[str, Any]],
    now: datetime,
) -> list[Finding]:
    from paved.api.kinds import SpecError, parse_object
    from paved.policy import Mode, Outcome, check_intent

    name = (doc.get("metadata") or {}).get("name")
    subject = f"{doc.get('kind')}/{name or '<unnamed>'}"
    try:
        parse_object(doc)
        if not name:
            raise SpecError(str(doc.get("kind")), ["metadata.name: required"])
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


@dataclass(frozen=True)
class _NamespaceLabels:
    """Labels per namespace: the API server's name label, then Namespace documents, then the CLI."""

    from_documents: dict[str, dict[str, str]]
    extra: dict[str, str]

    def labels(self, namespace: str) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": namespace, **self.from_documents.get(namespace, {}), **self.extra}


def _namespace_labels(documents: Iterable[tuple[Path, dict[str, Any]]], extra: dict[str, str]) -> _NamespaceLabels:
    found = {
        str(doc["metadata"]["name"]): dict(doc["metadata"].get("labels") or {})
        for _, doc in documents
        if doc.get("kind") == "Namespace" and doc.get("apiVersion") == "v1" and (doc.get("metadata") or {}).get("name")
    }
    return _NamespaceLabels(found, extra)


def _is_intent(doc: Mapping[str, Any]) -> bool:
    """Intents, and anything in the paved.dev group that is not a known kind (a typo must not be
    skipped as "not ours"); other Paved kinds and foreign objects are skipped."""
    from paved.api.kinds import BY_KIND, INTENT_KINDS

    api_version = str(doc.get("apiVersion") or "")
    kind = doc.get("kind")
    if not api_version.startswith(f"{GROUP}/"):
        return False
    return kind in INTENT_KINDS or kind not in BY_KIND or api_version != API_VERSION


def _load_policies(
    folder: Path, findings: list[Finding], run: Run
) -> tuple[list[CompiledPolicy], list[dict[str, Any]]]:
    """IntentPolicies (compiled; compile errors are blocking findings) and PolicyExceptions."""
    from paved.policy import PolicyCompileError, compile_policy

    compiled: dict[str, CompiledPolicy] = {}
    exceptions: list[dict[str, Any]] = []
    for file, doc in _documents([folder], findings):
        if doc.get("kind") == "PolicyException":
            exceptions.append(doc)
        if doc.get("kind") != "IntentPolicy":
            continue
        subject = f"IntentPolicy/{(doc.get('metadata') or {}).get('name', '<unnamed>')}"
        try:
            policy = compile_policy(doc)
        except PolicyCompileError as error:
            problems = "; ".join(str(problem) for problem in error.errors)
            findings.append(Finding(str(file), subject, "policy", f"does not compile: {problems}", True))
            continue
        if policy.name in compiled:
            findings.append(Finding(str(file), subject, "policy", "a second IntentPolicy with this name", True))
            continue
        compiled[policy.name] = policy
    run.policies = len(compiled)
    return sorted(compiled.values(), key=lambda policy: policy.name), exceptions


# --- reading files ---------------------------------------------------------------------------


def _documents(
    paths: Iterable[Path], findings: list[Finding], excludes: Iterable[str] = ()
) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every mapping document in `paths` (folders recursively, sorted; `List` kinds unpacked).

    A file that is not valid YAML is a blocking finding, never silently ignored.
    """
    for file in _yaml_files(paths, tuple(excludes)):
        try:
            docs = list(yaml.safe_load_all(file.read_text()))
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            findings.append(Finding(str(file), "", "yaml", yaml_problem(error), True))
            continue
        for doc in docs:
            if (
                isinstance(doc, dict)
                and str(doc.get("kind", "")).endswith("List")
                and isinstance(doc.get("items"), list)
            ):
                yield from ((file, item) for item in doc["items"] if isinstance(item, dict))
            elif isinstance(doc, dict):
                yield file, doc


def _yaml_files(paths: Iterable[Path], excludes: tuple[str, ...]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = (p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
            files += sorted(p for p in found if not _hidden(p.relative_to(path)) and not _excluded(p, excludes))
        elif not _excluded(path, excludes):
            files.append(path)
    return files


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _excluded(path: Path, excludes: tuple[str, ...]) -> bool:
    """`path` or one of its folders matches an --exclude glob (as written on the command line)."""
    candidates = [path, *path.parents]
    return any(
        fnmatch.fnmatch(candidate.as_posix(), pattern.rstrip("/")) for pattern in excludes for candidate in candidates
    )


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
