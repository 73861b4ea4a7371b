"""What the offline commands (`paved render`, `paved validate`) read: files and folders of
YAML documents as they sit in Git, Compositions, and the labels of the namespaces intents go to.

Both commands read the same way, so an intent that one of them finds, the other finds too:
folders recursively (sorted; hidden folders and --exclude globs skipped), every mapping
document, `List` kinds unpacked; each document keeps its file and position for messages.
Nothing here quotes a document's content: a file may hold a Secret next to the intents.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import yaml

from paved import API_VERSION, GROUP

if TYPE_CHECKING:  # CEL is imported when a command runs, so `paved --help` stays fast
    from paved.api.common import Model
    from paved.policy import CompiledPolicy

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

exclude_option = click.option(
    "--exclude",
    "excludes",
    multiple=True,
    metavar="GLOB",
    help="Skip files and folders whose path matches (repeatable), e.g. '*/drafts'.",
)

namespace_labels_option = click.option(
    "--namespace-labels",
    "namespace_labels",
    multiple=True,
    metavar="K=V[,K=V]",
    help="Labels of the namespace the intents go to (repeatable), e.g. paved.dev/environment=production.",
)


# --- documents ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Document:
    """One mapping document of a file: `index` counts the file's documents from 1, `item` is
    its position in a `List` kind's items (None for a plain document)."""

    file: Path
    index: int
    body: dict[str, Any]
    item: int | None = None

    @property
    def where(self) -> str:
        """`FILE, document N` (`, items[I]` inside a List): where to look, for every message."""
        return f"{self.file}, document {self.index}" + (f", items[{self.item}]" if self.item is not None else "")

    @property
    def subject(self) -> str:
        """`Kind/name`, as findings and errors name an object."""
        return f"{self.body.get('kind')}/{(self.body.get('metadata') or {}).get('name') or '<unnamed>'}"


def documents(
    paths: Iterable[Path], unreadable: Callable[[Path, str], None], excludes: Iterable[str] = ()
) -> Iterator[Document]:
    """Every mapping document in `paths` (folders recursively, sorted; `List` kinds unpacked).

    A file that is not valid YAML is reported to `unreadable(file, problem)`, never silently
    ignored; its documents are not read.
    """
    for file in yaml_files(paths, tuple(excludes)):
        try:
            docs = list(yaml.safe_load_all(file.read_text()))
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            unreadable(file, yaml_problem(error))
            continue
        for index, doc in enumerate(docs, start=1):
            if not isinstance(doc, dict):
                continue
            items = doc.get("items")
            if str(doc.get("kind", "")).endswith("List") and isinstance(items, list):
                yield from (Document(file, index, item, i) for i, item in enumerate(items) if isinstance(item, dict))
            else:
                yield Document(file, index, doc)


def yaml_files(paths: Iterable[Path], excludes: tuple[str, ...]) -> list[Path]:
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


def read_yaml(path: Path) -> list[Any]:
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


# --- intents -------------------------------------------------------------------------------------


def is_intent(doc: Mapping[str, Any]) -> bool:
    """Intents, and anything in the paved.dev group that is not a known kind (a typo must not be
    skipped as "not ours"); other Paved kinds and foreign objects are skipped."""
    from paved.api.kinds import BY_KIND, INTENT_KINDS

    api_version = str(doc.get("apiVersion") or "")
    kind = doc.get("kind")
    if not api_version.startswith(f"{GROUP}/"):
        return False
    return kind in INTENT_KINDS or kind not in BY_KIND or api_version != API_VERSION


def parse_intent(document: Mapping[str, Any]) -> Model:
    """The intent's parsed spec; SpecError lists every problem naming its field (apiVersion,
    kind, spec, and metadata.name, which offline documents must carry)."""
    from paved.api.kinds import SpecError, parse_object

    _, spec = parse_object(document)
    if not (document.get("metadata") or {}).get("name"):
        raise SpecError(str(document.get("kind")), ["metadata.name: required"])
    return spec


def offline_intent(document: Mapping[str, Any], namespace: str | None = None) -> dict[str, Any]:
    """`document` with what the API server would add (namespace, uid, generation, labels) filled in
    with fixed offline values; `namespace` overrides the document's own."""
    metadata = {"uid": OFFLINE_UID, "generation": 1, "labels": {}}
    metadata.update({key: value for key, value in (document.get("metadata") or {}).items() if value is not None})
    metadata["namespace"] = namespace or metadata.get("namespace") or DEFAULT_NAMESPACE
    return {**document, "metadata": metadata}


@dataclass(frozen=True)
class NamespaceLabels:
    """Labels per namespace: the API server's name label, then Namespace documents, then the CLI."""

    from_documents: dict[str, dict[str, str]]
    extra: dict[str, str]

    def labels(self, namespace: str) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": namespace, **self.from_documents.get(namespace, {}), **self.extra}


def namespaces_from(docs: Iterable[Document], extra: dict[str, str]) -> NamespaceLabels:
    """Labels of the Namespace documents among `docs`, plus `extra` (--namespace-labels) for all."""
    found = {
        str(doc.body["metadata"]["name"]): dict(doc.body["metadata"].get("labels") or {})
        for doc in docs
        if doc.body.get("kind") == "Namespace" and doc.body.get("apiVersion") == "v1" and (doc.body.get("metadata") or {}).get("name")
    }
    return NamespaceLabels(found, extra)


def parse_labels(values: tuple[str, ...]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in (part for value in values for part in value.split(",") if part.strip()):
        key, sep, val = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r} is not K=V", param_hint="--namespace-labels")
        labels[key.strip()] = val.strip()
    return labels


# --- compositions --------------------------------------------------------------------------------


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
        doc for path in paths for doc in read_yaml(path) if isinstance(doc, dict) and doc.get("kind") == "Composition"
    ]
    if not found:
        raise click.ClickException(f"no Composition objects in {', '.join(str(p) for p in paths) or directory}")
    return found


# --- policies ------------------------------------------------------------------------------------


def load_policies(
    folder: Path, unreadable: Callable[[Path, str], None], refused: Callable[[Document, str], None]
) -> tuple[list[CompiledPolicy], list[dict[str, Any]]]:
    """The IntentPolicies of `folder` (compiled, by name) and its PolicyExceptions.

    A policy that does not compile, or a second one with a name, goes to `refused(document,
    problem)` and is left out, as the webhook would refuse it."""
    from paved.policy import PolicyCompileError, compile_policy

    compiled: dict[str, CompiledPolicy] = {}
    exceptions: list[dict[str, Any]] = []
    for found in documents([folder], unreadable):
        if found.body.get("kind") == "PolicyException":
            exceptions.append(found.body)
        if found.body.get("kind") != "IntentPolicy":
            continue
        try:
            policy = compile_policy(found.body)
        except PolicyCompileError as error:
            refused(found, "does not compile: " + "; ".join(str(problem) for problem in error.errors))
            continue
        if policy.name in compiled:
            refused(found, "a second IntentPolicy with this name")
            continue
        compiled[policy.name] = policy
    return sorted(compiled.values(), key=lambda policy: policy.name), exceptions
