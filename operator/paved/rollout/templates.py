"""Analysis templates: a rollout's references resolved into metrics, arguments substituted
safely, and the snapshot that keeps a canary run on the templates it started with.

Argo Rollouts' model: an AnalysisTemplate (namespaced) or ClusterAnalysisTemplate declares
`args` (a name, an optional default) and `metrics`; a rollout lists the templates in
`spec.analysis.templates` with values for their arguments, and analysis steps may name them.
The rollout's own Prometheus (address and credentials from its namespace) runs every query.

Arguments (`{{args.NAME}}`) may stand only inside a quoted string of a query (usually a label
value); the value is escaped so that it stays that one string, and regex-escaped when the
string follows `=~` or `!~`, so an argument can neither add PromQL nor widen a matcher. A
placeholder anywhere else (bare, in a raw `backtick` string, in a comment) is refused when the
template is admitted, naming the field.

Snapshot: when a canary run starts, the resolved metrics are written to
`status.analysisTemplates` (with the run, the revision and a digest of the references), and
every later tick of that run measures those, whatever happens to the templates: an edited or
deleted template changes the next run. The snapshot is status, so a restarted operator keeps it.

Pure: the engine reads the templates (paved.engines.rollout) and hands them in.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from paved.api import rollout as api
from paved.api.kinds import field_errors
from paved.errors import FieldError
from paved.rollout.plan import conditions_problems

PLACEHOLDER = re.compile(r"\{\{\s*args\.([A-Za-z_][A-Za-z0-9_-]*)\s*\}\}")
QUERY_KEYS = ("query", "samplesQuery")
NAMESPACED, CLUSTER = "AnalysisTemplate", "ClusterAnalysisTemplate"
FIELD = "spec.analysis.templates"

_REGEX_MATCHER = re.compile(r"[=!]~\s*$")
_REGEX_SPECIAL = re.compile(r"([\\.+*?()|\[\]{}^$])")
_NOT_IN_FLIGHT = ("Idle", "Bootstrap")  # stages without a canary run (status.progress.stage)

TemplateKey = tuple[str, str]
"""(kind, name) of a template; the namespace of an AnalysisTemplate is the rollout's."""


# --- references ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """spec.analysis.templates[index] of a rollout."""

    index: int
    kind: str
    name: str
    args: tuple[tuple[str, str], ...]

    @property
    def field(self) -> str:
        return f"{FIELD}[{self.index}]"

    @property
    def key(self) -> TemplateKey:
        return self.kind, self.name


def kind_of(reference: Mapping[str, Any]) -> str:
    return CLUSTER if reference.get("clusterScope") else NAMESPACED


def references(spec: Mapping[str, Any]) -> list[Reference]:
    """The templates `spec` references, in order (what the engine has to read)."""
    return [Reference(index, kind_of(ref), str(ref.get("templateName") or ""),
                      tuple((str(a.get("name")), str(a.get("value"))) for a in _list(ref.get("args"))))
            for index, ref in enumerate(_list(_mapping(spec.get("analysis")).get("templates")))]


def references_digest(spec: Mapping[str, Any]) -> str:
    """A digest of everything in the spec that decides what the templates resolve to."""
    steps = [_mapping(s.get("analysis")).get("templates") for s in _list(spec.get("steps"))]
    text = json.dumps([_mapping(spec.get("analysis")).get("templates"), steps], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- arguments in queries -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Segment:
    """A run of query text: code (quote None, comments included) or a string literal's content."""

    text: str
    quote: str | None = None
    regex: bool = False  # a string right after =~ or !~


def _segments(query: str) -> tuple[list[_Segment], bool]:
    """The query cut into code and string literals (PromQL's three quotes, `#` comments);
    False when a string literal is not closed."""
    segments: list[_Segment] = []
    code_start = index = 0
    while index < len(query):
        char = query[index]
        if char == "#":
            end = query.find("\n", index)
            index = len(query) if end < 0 else end
            continue
        if char not in "\"'`":
            index += 1
            continue
        code = query[code_start:index]
        segments.append(_Segment(code))
        end = index + 1
        while end < len(query) and query[end] != char:
            end += 2 if query[end] == "\\" and char != "`" else 1
        if end >= len(query):
            return segments, False
        segments.append(_Segment(query[index + 1:end], char, bool(_REGEX_MATCHER.search(code))))
        index = code_start = end + 1
    segments.append(_Segment(query[code_start:]))
    return segments, True


def placeholder_problems(query: str, declared: set[str]) -> list[str]:
    """Why the placeholders of `query` cannot be substituted safely (empty: they can)."""
    segments, closed = _segments(query)
    if not closed:
        return ["a string literal is not closed"]
    problems = []
    for segment in segments:
        if segment.quote is None and "{{" in segment.text:
            problems.append("an argument may only stand inside a quoted string, e.g. a label value: "
                            'service="{{args.service}}"')
        elif segment.quote == "`" and PLACEHOLDER.search(segment.text):
            problems.append("an argument cannot stand in a raw `backtick` string (it could not be escaped); "
                            "use double quotes")
        problems += [f"{{{{args.{name}}}}} names no argument of spec.args"
                     for name in PLACEHOLDER.findall(segment.text) if name not in declared]
    return list(dict.fromkeys(problems))


def substitute(query: str, values: Mapping[str, str]) -> str:
    """`query` with each `{{args.NAME}}` replaced by its value, escaped to stay inside its
    string literal (and regex-escaped after =~ or !~). The query must have passed
    `placeholder_problems` with every name in `values`."""
    segments, _ = _segments(query)
    parts = []
    for segment in segments:
        if segment.quote is None:
            parts.append(segment.text)
            continue
        quote = segment.quote
        text = segment.text if quote == "`" else PLACEHOLDER.sub(
            lambda match: _escaped(values[match.group(1)], quote, segment.regex), segment.text)
        parts.append(f"{quote}{text}{quote}")
    return "".join(parts)


def _escaped(value: str, quote: str, regex: bool) -> str:
    if regex:
        value = _REGEX_SPECIAL.sub(r"\\\1", value)
    return value.replace("\\", "\\\\").replace(quote, "\\" + quote)


# --- one template ---------------------------------------------------------------------------------


def template_problems(spec: Any) -> list[FieldError]:
    """Every problem of an AnalysisTemplate's (or ClusterAnalysisTemplate's) spec, each naming its
    field: the schema, CEL conditions that do not compile, arguments that cannot be substituted
    safely or that are not declared. Checked when a template is admitted and when it is used."""
    try:
        model = api.AnalysisTemplateSpec.model_validate(spec)
    except ValidationError as error:
        return [FieldError(path, message) for path, message in field_errors(error, "spec")]
    metrics = [m.model_dump(mode="json", exclude_none=True) for m in model.metrics]
    problems = conditions_problems(metrics, "spec.metrics")
    declared = {arg.name for arg in model.args}
    for index, metric in enumerate(metrics):
        for key in QUERY_KEYS:
            if metric.get(key):
                problems += [FieldError(f"spec.metrics[{index}].{key}", problem)
                             for problem in placeholder_problems(metric[key], declared)]
    return problems


# --- resolution ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resolution:
    """The templates of a rollout as it would use them now: metrics (as spec.analysis.metrics
    entries, arguments substituted) and what was read (status.analysisTemplates.templates), or
    every problem, each naming the rollout's field."""

    metrics: tuple[dict[str, Any], ...] = ()
    uses: tuple[dict[str, Any], ...] = ()
    problems: tuple[FieldError, ...] = ()


def resolve(spec: Mapping[str, Any], templates: Mapping[TemplateKey, Mapping[str, Any] | None],
            namespace: str) -> Resolution:
    """Resolve `spec`'s references against `templates` (the objects read: None when absent)."""
    taken = {str(m.get("name")): f"spec.analysis.metrics[{i}]"
             for i, m in enumerate(_list(_mapping(spec.get("analysis")).get("metrics")))}
    metrics: list[dict[str, Any]] = []
    uses: list[dict[str, Any]] = []
    problems: list[FieldError] = []
    for ref in references(spec):
        shown = f"{ref.kind} {namespace + '/' if ref.kind == NAMESPACED else ''}{ref.name}"
        body = templates.get(ref.key)
        if body is None:
            problems.append(FieldError(f"{ref.field}.templateName", f"{shown} not found"))
            continue
        template_spec = _mapping(body.get("spec"))
        invalid = template_problems(template_spec)
        if invalid:
            problems += [FieldError(ref.field, f"{shown} is invalid: {problem}") for problem in invalid]
            continue
        model = api.AnalysisTemplateSpec.model_validate(template_spec)
        values = {arg.name: arg.value for arg in model.args if arg.value is not None}
        declared = {arg.name for arg in model.args}
        for position, (name, value) in enumerate(ref.args):
            if name not in declared:
                problems.append(FieldError(f"{ref.field}.args[{position}].name", (
                    f"{shown} declares no argument {name!r} (it declares: {', '.join(sorted(declared)) or 'none'})")))
            values[name] = value
        unset = [arg.name for arg in model.args if arg.name not in values]
        problems += [FieldError(f"{ref.field}.args", f"argument {name!r} of {shown} has no default: give its value "
                                                     f"here ({{name: {name}, value: ...}})") for name in unset]
        if unset or any(name not in declared for name, _ in ref.args):
            continue
        names = []
        for metric in model.metrics:
            if metric.name in taken:
                problems.append(FieldError(f"{ref.field}.templateName", (
                    f"metric {metric.name!r} of {shown} is also defined by {taken[metric.name]}")))
                continue
            taken[metric.name] = f"{ref.field} ({shown})"
            resolved = metric.model_dump(mode="json", exclude_none=True)
            for key in QUERY_KEYS:
                if resolved.get(key):
                    resolved[key] = substitute(resolved[key], values)
            metrics.append(resolved)
            names.append(metric.name)
        uses.append({"kind": ref.kind, "name": ref.name,
                     "generation": _mapping(body.get("metadata")).get("generation"), "metrics": names})
    if not problems and len(taken) > api.MAX_METRICS:
        problems.append(FieldError(FIELD, f"with the templates' metrics the rollout would measure {len(taken)}; "
                                          f"at most {api.MAX_METRICS} per rollout"))
    if problems:
        return Resolution(problems=tuple(problems))
    return Resolution(tuple(metrics), tuple(uses))


def effective_spec(spec: Mapping[str, Any], metrics: Any, uses: Any) -> dict[str, Any]:
    """`spec` as the state machine runs it: the templates' metrics joined to spec.analysis.metrics
    and each analysis step's templates turned into the names of their metrics (no references left,
    so the spec's own checks cover the result). `spec` unchanged when it references no template."""
    analysis = dict(_mapping(spec.get("analysis")))
    if not analysis.get("templates") and not any(
            _mapping(s.get("analysis")).get("templates") for s in _list(spec.get("steps"))):
        return dict(spec)
    analysis.pop("templates", None)
    analysis["metrics"] = [*_list(analysis.get("metrics")), *_list(metrics)]
    contributed = {(str(u.get("kind")), str(u.get("name"))): list(u.get("metrics") or []) for u in _list(uses)}
    steps = []
    for step in _list(spec.get("steps")):
        step_analysis = _mapping(step.get("analysis"))
        if step_analysis.get("templates"):
            names = list(step_analysis.get("metrics") or [])
            for ref in step_analysis["templates"]:
                names += [n for n in contributed.get((kind_of(ref), str(ref.get("templateName"))), []) if n not in names]
            step = {**step, "analysis": {"metrics": names}}
        steps.append(step)
    result = {**spec, "analysis": analysis}
    if "steps" in spec:
        result["steps"] = steps
    return result


def relocate(problems: list[FieldError], spec: Mapping[str, Any], uses: Any) -> list[FieldError]:
    """Problems found in the effective spec, named where the user fixes them: a template's
    metric (spec.analysis.metrics[k] there) as the reference and the template's own field."""
    inline = len(_list(_mapping(spec.get("analysis")).get("metrics")))
    origins = [(index, use, position) for index, use in enumerate(_list(uses))
               for position in range(len(use.get("metrics") or []))]
    moved = []
    for problem in problems:
        match = re.match(r"spec\.analysis\.metrics\[(\d+)\](.*)", problem.path)
        if match is None or not inline <= int(match.group(1)) < inline + len(origins):
            moved.append(problem)
            continue
        index, use, position = origins[int(match.group(1)) - inline]
        moved.append(FieldError(f"{FIELD}[{index}]", f"{use.get('kind')} {use.get('name')} "
                                                     f"spec.metrics[{position}]{match.group(2)}: {problem.message}"))
    return moved


# --- the snapshot ---------------------------------------------------------------------------------


def in_force(spec: Mapping[str, Any], status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The snapshot the canary run in flight measures, if any: taken for this run and revision,
    from the references the spec has now (a changed reference resolves again)."""
    snapshot = _mapping(status.get("analysisTemplates"))
    progress = _mapping(status.get("progress"))
    if not snapshot or progress.get("stage", "Idle") in _NOT_IN_FLIGHT:
        return None
    if (snapshot.get("run"), snapshot.get("revision")) != (progress.get("run"), status.get("canaryRevision")):
        return None
    return snapshot if snapshot.get("referencesDigest") == references_digest(spec) else None


def record(spec: Mapping[str, Any], status: Mapping[str, Any], fresh: Resolution | None) -> dict[str, Any]:
    """`status` (after a decision) with the snapshot its run measures: kept while in force,
    taken from `fresh` when a run started, absent when a run started without it (the next tick
    resolves the templates again). Between runs the last snapshot stays, to be looked at."""
    stage = _mapping(status.get("progress")).get("stage", "Idle")
    if stage in _NOT_IN_FLIGHT or in_force(spec, status) is not None:
        return dict(status)
    snapshot = None
    if fresh is not None and not fresh.problems and references(spec):
        snapshot = {"revision": status.get("canaryRevision"), "run": _mapping(status.get("progress")).get("run"),
                    "referencesDigest": references_digest(spec), "templates": list(fresh.uses),
                    "metrics": list(fresh.metrics)}
    return {**status, "analysisTemplates": snapshot}


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else []
