"""The docs cannot rot: every path, module, test and link they name exists; the README stands
alone and lists every package; every `paved.dev/` key the code uses is documented.

docs/conditions.md has its own check (test_conditions_doc.py), docs/api.md is generated
(test_crds_fresh.py).
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

from paved.api.metadata import METADATA

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "paved"
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
DOCUMENTS = [README, *PAGES]

TOP_LEVEL = ("operator", "paved", "tests", "deploy", "compositions", "examples", "bench", "crds", "docs", "scripts", "hack")
PATH = re.compile(rf"(?<![\w./~-])((?:{'|'.join(TOP_LEVEL)})/[\w./-]*)(::\w+)?")
MODULE = re.compile(r"(?<![\w./-])paved(?:\.[A-Za-z_]\w*)+(?![\w/-])")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
KEY = re.compile(r"paved\.dev/([a-z0-9][a-z0-9.-]*[a-z0-9])")


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("document", DOCUMENTS, ids=relative)
def test_every_path_and_test_named_exists(document: Path) -> None:
    missing = []
    for match in PATH.finditer(document.read_text()):
        text, test = match.group(1).rstrip("."), match.group(2)
        path = ROOT / ("operator/" + text if text.startswith("paved/") else text)
        if not path.exists():
            missing.append(text)
        elif test and not re.search(rf"^(async )?def {test[2:]}\(", path.read_text(), re.MULTILINE):
            missing.append(f"{text}{test}")
    assert not missing, f"{relative(document)} names what does not exist: {sorted(set(missing))}"


@cache
def top_level_names(path: Path) -> dict[str, ast.AST]:
    """Names a module defines or imports at its top level -> their definition node."""
    names: dict[str, ast.AST] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        names[name.id] = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names[(alias.asname or alias.name).split(".")[0]] = node
    return names


def module_problem(reference: str) -> str | None:
    """Why `paved.a.b.Name.attr` names nothing (None: it names a module, or a name in one)."""
    parts = reference.split(".")[1:]
    directory, source = PACKAGE, PACKAGE / "__init__.py"
    for index, part in enumerate(parts):
        if (directory / part / "__init__.py").exists():
            directory, source = directory / part, directory / part / "__init__.py"
        elif (directory / f"{part}.py").exists():
            source, rest = directory / f"{part}.py", parts[index + 1:]
            break
        else:
            rest = parts[index:]
            break
    else:
        return None
    if not rest:
        return None
    definition = top_level_names(source).get(rest[0])
    if definition is None:
        return f"{relative(source)} defines no {rest[0]}"
    if len(rest) > 1 and isinstance(definition, ast.ClassDef):
        members = {getattr(node, "name", None) for node in definition.body} | {
            target.id for node in definition.body if isinstance(node, (ast.Assign, ast.AnnAssign))
            for target in ast.walk(node.targets[0] if isinstance(node, ast.Assign) else node.target)
            if isinstance(target, ast.Name)}
        if rest[1] not in members:
            return f"{rest[0]} in {relative(source)} has no {rest[1]}"
    return None


@pytest.mark.parametrize("document", DOCUMENTS, ids=relative)
def test_every_module_named_exists(document: Path) -> None:
    problems = {match.group(0): module_problem(match.group(0)) for match in MODULE.finditer(document.read_text())}
    problems = {reference: problem for reference, problem in problems.items() if problem}
    assert not problems, f"{relative(document)} names modules or names that do not exist: {problems}"


def anchors(page: Path) -> set[str]:
    """The fragment of every heading of a Markdown page, as GitHub makes them."""
    found = set()
    for line in page.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


@pytest.mark.parametrize("document", DOCUMENTS, ids=relative)
def test_every_link_leads_somewhere(document: Path) -> None:
    broken = []
    for target in LINK.findall(document.read_text()):
        if re.match(r"[a-z]+://", target):
            continue  # outside the repository (the README has none: see below)
        file, _, fragment = target.partition("#")
        page = (document.parent / file).resolve() if file else document
        if not page.exists():
            broken.append(target)
        elif fragment and page.suffix == ".md" and fragment not in anchors(page):
            broken.append(target)
    assert not broken, f"{relative(document)} links to what does not exist: {broken}"


def test_the_readme_stands_alone() -> None:
    outside = re.findall(r"[a-z]+://\S+", README.read_text())
    assert not outside, f"README.md must not send a newcomer outside the repository: {outside}"


def test_the_readme_links_every_page() -> None:
    linked = {(README.parent / target.partition("#")[0]).resolve() for target in LINK.findall(README.read_text())}
    assert [relative(page) for page in PAGES if page.resolve() not in linked] == []


def readme_layout() -> str:
    text = README.read_text()
    start = text.index("```\noperator/paved/")
    return text[start:text.index("```", start + 3)]


def test_the_readme_layout_lists_every_package_and_module() -> None:
    layout = readme_layout()
    missing = []
    for path in sorted(PACKAGE.iterdir()):
        if (path / "__init__.py").exists():
            if not re.search(rf"^\s+{path.name}/", layout, re.MULTILINE):
                missing.append(f"{path.name}/")
            block = re.search(rf"^\s+{path.name}/.*?(?=^\s+\S+/\s|^\S)", layout, re.MULTILINE | re.DOTALL)
            for sub in sorted(p.name for p in path.iterdir() if (p / "__init__.py").exists()):
                if block is None or not re.search(rf"\b{sub}\b", block.group(0)):
                    missing.append(f"{path.name}/{sub}/")
        elif path.suffix == ".py" and path.name != "__init__.py" and path.name not in layout:
            missing.append(path.name)
    assert not missing, f"README.md's layout does not list: {missing}"


TABLE = PACKAGE / "api" / "metadata.py"


def sources() -> list[Path]:
    """The operator's code (but the table itself), the compositions, deploy/ and the examples."""
    code = [path for path in PACKAGE.rglob("*.py") if path != TABLE]
    return code + [path for top in ("compositions", "deploy", "examples") for path in (ROOT / top).rglob("*") if path.is_file()]


def used_keys() -> dict[str, set[str]]:
    """Every `paved.dev/<key>` the sources use -> where."""
    found: dict[str, set[str]] = {}
    for path in sources():
        for name in KEY.findall(path.read_text()):
            if name != "v1alpha1":
                found.setdefault(f"paved.dev/{name}", set()).add(relative(path))
    return found


def test_every_paved_dev_key_in_use_is_documented() -> None:
    documented = {key.key for key in METADATA}
    missing = {key: sorted(where) for key, where in used_keys().items() if key not in documented}
    assert not missing, f"paved.api.metadata does not explain these keys (key: where they are used): {missing}"


def test_every_documented_key_is_in_use() -> None:
    used = set(used_keys())
    text = "".join(path.read_text() for path in sources())
    # Kopf builds its keys from the prefix (paved.runtime.settings passes `key="..."`).
    stale = [key.key for key in METADATA
             if "<" not in key.key and key.key not in used and f'key="{key.key.split("/", 1)[1]}"' not in text]
    assert not stale, f"paved.api.metadata documents keys nothing uses: {stale}"
