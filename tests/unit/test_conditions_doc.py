"""docs/conditions.md documents exactly the condition reasons the operator can set.

The reasons are collected from the code, not from a list kept by hand: every place a reason
enters a condition (a *sink*) is named below, and each argument found there is resolved to
its string values (a literal, a module constant such as `plan.STORE_NOT_FOUND`, both branches
of `a if c else b`, or what a local variable is assigned in the same function). Arguments
that only forward a reason decided elsewhere (`error.reason`, a parameter) resolve to nothing:
their origin is itself a sink. So a new reason, in a new constant or a literal, fails
`test_every_reason_the_code_sets_is_documented` until docs/conditions.md explains it, and a
documented reason the code no longer sets fails the reverse test.

A callable of Paved's with a parameter named like a reason must be classified (a sink, or
listed in NOT_CONDITION_REASONS with why), so a new way of carrying a reason cannot slip past.
"""

from __future__ import annotations

import ast
import enum
import importlib
import inspect
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "paved"
DOC = ROOT / "docs" / "conditions.md"

# Callables whose parameters (by name) carry a condition reason, by qualified name.
SINKS: dict[str, tuple[str, ...]] = {
    "paved.api.common.set_condition": ("reason",),
    "paved.engines.compose.model.ComposeError": ("reason",),
    "paved.identity.chain.Decision": ("reason",),
    "paved.identity.chain.DelegationError": ("broken_after_accept",),
    "paved.identity.chain.decide.<locals>.refuse_or_expire": ("reason", "expire_reason"),
    "paved.secretsync.plan.Decision": ("reason",),
    "paved.secretsync.plan.failure": ("reason",),
    "paved.secretsync.plan.invalid_status": ("reason",),
    "paved.secretsync.model.KeyFailure": ("reason",),
    "paved.secretsync.model.StoreFailure": ("reason",),
    "paved.secretsync.values.ResolveError": ("reason",),
    "paved.providers.secretstores.StoreError": ("reason",),
    "paved.engines.secretsync.engine._TargetProblem": ("reason",),
    "paved.engines.rollout.runner._Refused": ("reason",),
    "paved.engines.rollout.sources.SourceProblems": ("reason",),
    "paved.rollout.refusal.refuse": ("reason",),
    "paved.engines.rollout.runner.RolloutRunner._refuse": ("reason",),
}
# Callables with a reason-like parameter that is not a condition reason (a name ending in "."
# covers a whole package).
NOT_CONDITION_REASONS = {
    "paved.kube.events.": "an Event's reason",
    "paved.kube.port.": "an Event's reason (KubePort.event)",
    "paved.engines.secretsync.kube.KubeApi.event": "an Event's reason",
    "paved.engines.identity.IdentityEngine.audit": "an audit Event's reason",
    "paved.kube.client.": "the API server's (or the write fence's) reason for a failed request",
    "paved.handlers.platform._rerender_users": "why intents are re-rendered (a log line)",
    "paved.api.common.Condition": "the condition's shape, filled by set_condition",
    "paved.api.platform.PolicyExceptionSpec": "the platform team's own words for an exception",
    # the rollout core's "reasons" are Events and the words of status.message; its condition
    # reasons are its phases (VOCABULARIES) and its refusals (the sink paved.rollout.refusal.refuse)
    "paved.rollout.": "Events, verdicts and status.message of a rollout",
}
REASON_PARAMETERS = {"reason", "expire_reason", "broken_after_accept"}
# Conditions whose reason is a value of an enumeration rather than a constant at the sink.
VOCABULARIES = {"paved.rollout.state.conditions_for": "paved.rollout.state.Phase"}
CONDITION_TYPE_NAMES = {"READY", "SYNCED", "STALE", "POLICY_COMPLIANT", "EXPIRED", "PROGRESSING", "ACCEPTED", "ROLLED_OUT"}
REASON_FORM = re.compile(r"^[A-Z][A-Za-z0-9]*$")


@dataclass
class Found:
    reasons: dict[str, set[str]] = field(default_factory=dict)  # reason -> where (module:line)
    types: dict[str, set[str]] = field(default_factory=dict)  # condition type -> where
    sinks_used: set[str] = field(default_factory=set)
    built: list[str] = field(default_factory=list)  # reasons built at run time (f-strings): never allowed

    def reason(self, value: str, where: str) -> None:
        self.reasons.setdefault(value, set()).add(where)


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if "dev" in parts[:2]:
            continue  # the local control plane: no conditions
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


class Scope:
    """One module's (or function's) view: names resolvable to values."""

    def __init__(self, module: Any, function: ast.AST | None, owner: Any) -> None:
        self.module = module
        self.function = function
        self.owner = owner  # the class whose method this is (resolves `self.x`), or None

    def values(self, node: ast.AST | None, found: Found, where: str, depth: int = 0) -> set[str]:
        """Every string `node` can evaluate to that is knowable without running the code."""
        if node is None or depth > 3:
            return set()
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {node.value}
        if isinstance(node, ast.JoinedStr):
            found.built.append(where)
            return set()
        if isinstance(node, ast.IfExp):
            return self.values(node.body, found, where, depth) | self.values(node.orelse, found, where, depth)
        if isinstance(node, ast.BoolOp):
            return set().union(*(self.values(value, found, where, depth) for value in node.values))
        if isinstance(node, (ast.Name, ast.Attribute)):
            value = self.evaluate(node)
            if value is not None:
                return {value}
            if isinstance(node, ast.Name) and self.function is not None:
                return set().union(*(self.values(assigned, found, where, depth + 1)
                                     for assigned in assignments(self.function, node.id)))
        return set()

    def evaluate(self, node: ast.AST) -> str | None:
        """A Name or dotted Attribute resolved through the module's globals, if it is a string."""
        names = dotted(node)
        if not names or names[0] not in vars(self.module):
            return None
        value: Any = vars(self.module)[names[0]]
        for name in names[1:]:
            value = getattr(value, name, None)
        if isinstance(value, enum.Enum):
            value = value.value
        return value if isinstance(value, str) else None

    def callee(self, node: ast.AST, nested: dict[str, str]) -> tuple[str, Any] | None:
        """(qualified name, object or None for a nested function) of a call's target; a method
        called on `self` is named by its class (the caller drops `self` from its parameters)."""
        names = dotted(node)
        if not names:
            return None
        if len(names) == 1 and names[0] in nested:
            return nested[names[0]], None
        if names[0] == "self" and self.owner is not None:
            target: Any = self.owner
        elif names[0] in vars(self.module):
            target = vars(self.module)[names[0]]
        else:
            return None
        for name in names[1:]:
            target = getattr(target, name, None)
        if target is None or not callable(target):
            return None
        return f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', '')}", target


def dotted(node: ast.AST) -> list[str]:
    names: list[str] = []
    while isinstance(node, ast.Attribute):
        names.insert(0, node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *names]
    return []


def assignments(function: ast.AST, name: str) -> list[ast.AST]:
    return [node.value for node in ast.walk(function)
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)]


def parameter_names(target: Any, definition: ast.FunctionDef | ast.AsyncFunctionDef | None) -> list[str]:
    """Positional parameter names, in order (a class's without `self`)."""
    if definition is not None:
        return [arg.arg for arg in definition.args.posonlyargs + definition.args.args]
    return [name for name, parameter in inspect.signature(target).parameters.items()
            if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD)]


def walk(module_name: str, tree: ast.AST, found: Found) -> None:
    module = importlib.import_module(module_name)
    definitions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}

    def visit(node: ast.AST, function: ast.AST | None, qualname: str, nested: dict[str, str], owner: Any = None) -> None:
        scope = Scope(module, function, owner)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = f"{qualname}.{child.name}" if qualname else child.name
                local = f"{qualname}.<locals>.{child.name}" if function is not None else inner
                definitions[f"{module_name}.{local}"] = child
                names = dict(nested)
                for grandchild in child.body:
                    if isinstance(grandchild, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        names[grandchild.name] = f"{module_name}.{local}.<locals>.{grandchild.name}"
                visit(child, child, local, names, owner)
                continue
            if isinstance(child, ast.ClassDef):
                inner = f"{qualname}.{child.name}" if qualname else child.name
                visit(child, function, inner, nested, object_at(f"{module_name}.{inner}"))
                continue
            where = f"{module_name}:{getattr(child, 'lineno', '?')}"
            if isinstance(child, ast.Tuple) and len(child.elts) == 4:
                first = dotted(child.elts[0])
                if first and first[-1] in CONDITION_TYPE_NAMES:
                    for value in scope.values(child.elts[0], found, where):
                        found.types.setdefault(value, set()).add(where)
                    for value in scope.values(child.elts[2], found, where):
                        found.reason(value, where)
            if isinstance(child, ast.Call):
                resolved = scope.callee(child.func, nested)
                if resolved is not None and resolved[0] in SINKS:
                    name, target = resolved
                    found.sinks_used.add(name)
                    positional = parameter_names(target, definitions.get(name))
                    if dotted(child.func)[0] == "self":
                        positional = positional[1:]
                    for parameter in SINKS[name]:
                        argument = next((k.value for k in child.keywords if k.arg == parameter), None)
                        if argument is None and parameter in positional and positional.index(parameter) < len(child.args):
                            argument = child.args[positional.index(parameter)]
                        for value in scope.values(argument, found, where):
                            found.reason(value, where)
                    if name == "paved.api.common.set_condition":
                        type_argument = next((k.value for k in child.keywords if k.arg == "type"), None)
                        type_argument = type_argument or (child.args[1] if len(child.args) > 1 else None)
                        for value in scope.values(type_argument, found, where):
                            found.types.setdefault(value, set()).add(where)
            visit(child, function, qualname, nested, owner)

    visit(tree, None, "", {})


@cache
def collected() -> Found:
    found = Found()
    for name, path in modules():
        walk(name, ast.parse(path.read_text(), str(path)), found)
    for sink, parameters in SINKS.items():  # defaults of a sink's reason parameters are reasons too
        target = object_at(sink)
        if target is not None:
            for parameter in inspect.signature(target).parameters.values():
                if parameter.name in parameters and isinstance(parameter.default, str) and parameter.default:
                    found.reason(parameter.default, f"{sink} default")
    for function, vocabulary in VOCABULARIES.items():
        assert object_at(function) is not None, f"{function} is gone: update VOCABULARIES"
        for member in object_at(vocabulary):  # type: ignore[union-attr]
            found.reason(member.value, function)
    return found


def object_at(qualified: str) -> Any:
    """The object a qualified name names (None for nested functions or when it is gone)."""
    if "<locals>" in qualified:
        return None
    parts = qualified.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            target: Any = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for name in parts[split:]:
            target = getattr(target, name, None)
        return target
    return None


def documented() -> tuple[set[str], set[str]]:
    """Every reason and every condition type docs/conditions.md documents, from its table rows:
    `| `Type`, ... | status | `Reason`, ... | meaning | what to do |`."""
    reasons: set[str] = set()
    types: set[str] = set()
    for line in DOC.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) == 5 and cells[0].startswith("`"):
            types.update(re.findall(r"`([A-Za-z]+)`", cells[0]))
            reasons.update(re.findall(r"`([A-Za-z0-9]+)`", cells[2]))
    return reasons, types


def test_the_sinks_are_where_reasons_are_set() -> None:
    found = collected()
    unused = sorted(set(SINKS) - found.sinks_used)
    assert not unused, f"sinks never called (renamed or moved? update SINKS): {unused}"
    assert not found.built, f"a condition reason must be a fixed word, not built at run time: {found.built}"
    malformed = sorted(reason for reason in found.reasons if not REASON_FORM.match(reason))
    assert not malformed, f"reasons must be CamelCase words: {malformed}"


def classified(qualified: str) -> bool:
    known = set(SINKS) | set(NOT_CONDITION_REASONS)
    return qualified in known or any(name.endswith(".") and qualified.startswith(name) for name in known)


def test_every_callable_with_a_reason_parameter_is_classified() -> None:
    unclassified = set()
    for name, _ in modules():
        module = importlib.import_module(name)
        for _, target in inspect.getmembers(module, lambda obj: inspect.isclass(obj) or inspect.isfunction(obj)):
            if getattr(target, "__module__", "") != name:
                continue
            members = [member for _, member in inspect.getmembers(target, inspect.isfunction)] if inspect.isclass(target) else []
            owner = f"{target.__module__}.{target.__qualname__}"
            for candidate in [target, *members]:
                try:
                    parameters = set(inspect.signature(candidate).parameters)
                except (TypeError, ValueError):
                    continue
                qualified = f"{candidate.__module__}.{candidate.__qualname__}"
                if parameters & REASON_PARAMETERS and not (classified(qualified) or classified(owner)):
                    unclassified.add(owner if candidate.__name__ == "__init__" else qualified)
    assert not unclassified, f"classify these in SINKS or NOT_CONDITION_REASONS: {sorted(unclassified)}"


def test_every_reason_the_code_sets_is_documented() -> None:
    reasons, _ = documented()
    missing = {reason: sorted(where) for reason, where in collected().reasons.items() if reason not in reasons}
    assert not missing, f"reasons missing from docs/conditions.md (reason: where the code sets it): {missing}"


def test_every_documented_reason_is_one_the_code_sets() -> None:
    reasons, _ = documented()
    stale = sorted(reasons - set(collected().reasons))
    assert not stale, f"docs/conditions.md documents reasons the code never sets: {stale}"


def test_every_condition_type_is_documented() -> None:
    _, types = documented()
    missing = sorted(set(collected().types) - types)
    assert not missing, f"condition types missing from docs/conditions.md: {missing}"
