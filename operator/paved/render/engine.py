"""Composition + intent -> desired resources, with Jinja2 in a sandbox.

Pure: no I/O, no clients. The operator renders every intent on every reconcile, so templates
are compiled once per distinct text (LRU cache) and the happy path avoids anything costly.

A composition resource is `{name, provider, template, when?, forEach?, readiness?}`:
- `template` is Jinja2 text that must produce ONE YAML mapping: the resource's body (a
  Kubernetes manifest for `kubernetes`, the exact call parameters for a cloud provider);
- `when` is a Jinja2 expression; false omits the resource;
- `forEach` is a Jinja2 expression giving a list of strings; the resource is rendered once per
  item, named `<name>-<item>`, with the item in `item` (e.g. one Role per namespace). It sees
  the intent and the parameters, not outputs.

Templates see: `intent`, `spec`, `metadata`, `params` (the composition's parameters, also
as `parameters`), `outputs` (earlier resources' outputs by name; Pending when unknown),
`generated` (generated secret values; placeholders offline), `composition` (its name),
`namespace_labels` (labels of the intent's namespace), `allowed` (what IntentPolicies allow
this intent: {clusterScope, wildcards}, each the list of allowing policies, empty when not
allowed; see paved.policy.allowances), `resource` ({name, provider}), `item`
(forEach only), the helpers of paved.render.helpers and `warn(message)` (adds a warning to
the result). Jinja runs with trim_blocks and lstrip_blocks.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import yaml
from jinja2 import Template, TemplateSyntaxError
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.utils import missing

from paved.api.kinds import KINDS
from paved.api.platform import nothing_allowed
from paved.errors import unquoted
from paved.render.errors import RenderError
from paved.render.generated import declared_secrets
from paved.render.helpers import FILTERS, GLOBALS, b64encode
from paved.render.sandbox import BoundedSandbox, RenderLimitError, in_budget
from paved.render.template_errors import MissingVariable, NamedUndefined, describe_template_error, template_line
from paved.render.types import RenderedResource, RenderResult
from paved.render.values import DependencyTracker, GeneratedView, OutputsView, UnavailableOutputs, holds_values, placeholder

READINESS = ("provider", "none")

# Kinds that must not get a namespace defaulted into them: the usual built-in ones, and Paved's own.
CLUSTER_SCOPED_KINDS = frozenset(
    {
        "Namespace",
        "Node",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "PersistentVolume",
        "StorageClass",
        "PriorityClass",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    }
    | {info.kind for info in KINDS if not info.namespaced}
)


class _Environment(BoundedSandbox):
    """The bounded sandbox (paved.render.sandbox), with `a.b` on plain dicts reading the key first.

    Jinja normally tries the Python attribute first, so `spec.items` would be dict.items and
    every key lookup would pay for an AttributeError. Reading the key is what a data template
    means, and it is as safe as `a['b']`, which the sandbox allows anyway.
    """

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)


_ENV = _Environment(undefined=NamedUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
_ENV.filters.update(FILTERS)
_ENV.globals.update(GLOBALS)


@lru_cache(maxsize=4096)
def _compile_template(composition: str, resource: str, text: str) -> Template:
    """Compile once per (composition, resource, template text): the text is the cache key, so an
    edited composition recompiles and an unchanged one never does."""
    filename = _filename(composition, resource)
    try:
        code = _ENV.compile(text, filename=filename)
    except TemplateSyntaxError as error:
        raise RenderError(
            f"template syntax error: {error.message}", composition=composition, resource=resource, line=error.lineno
        ) from None
    return _ENV.template_class.from_code(_ENV, code, _ENV.make_globals(None), None)


@lru_cache(maxsize=4096)
def _compile_expression(text: str) -> Callable[..., Any]:
    return _ENV.compile_expression(text, undefined_to_none=False)


def _filename(composition: str, resource: str) -> str:
    return f"<composition {composition} resource {resource}>"


def render(
    composition: Mapping[str, Any],
    intent: Mapping[str, Any],
    *,
    outputs: Mapping[str, Mapping[str, Any]] | None = None,
    generated: Mapping[str, str] | None = None,
    namespace_labels: Mapping[str, str] | None = None,
    allowed: Mapping[str, Sequence[str]] | None = None,
) -> RenderResult:
    """Render `intent` (a dict with defaults applied) through `composition` (a Composition dict).

    `outputs`: outputs of resources that exist, by resource name (None or missing -> Pending).
    `generated`: generated secret values by name; None renders `<generated:NAME>` (offline).
    `allowed`: the intent's allowances (paved.policy.allowances); None allows nothing.
    Neither the hash nor an error message ever holds a generated value (see _hash, _without_secrets).
    Raises RenderError; never returns a partial result.
    """
    try:
        return _render(composition, intent, outputs, generated, namespace_labels, allowed)
    except RenderError as error:
        if not generated:
            raise  # nothing secret was in scope: the message may quote what the template saw
        raise _without_secrets(error, composition, intent, outputs, namespace_labels, allowed) from None


def _without_secrets(
    error: RenderError,
    composition: Mapping[str, Any],
    intent: Mapping[str, Any],
    outputs: Mapping[str, Mapping[str, Any]] | None,
    namespace_labels: Mapping[str, str] | None,
    allowed: Mapping[str, Sequence[str]] | None,
) -> RenderError:
    """The error to show for a render with generated values that failed with `error`.

    Generated values (and any transformation a template made of them) must not reach a
    message, so the same render is repeated with their placeholders: its error, if it has
    one, was computed without any secret and says exactly what is wrong. If only the real
    values fail (the template branches on them), `error` is shown, which _convert built from
    names, positions and types alone.
    """
    try:
        _render(composition, intent, outputs, None, namespace_labels, allowed)
    except RenderError as placeholder_error:
        return placeholder_error
    return error


@in_budget  # one budget for every template and expression of this render
def _render(
    composition: Mapping[str, Any],
    intent: Mapping[str, Any],
    outputs: Mapping[str, Mapping[str, Any]] | None,
    generated: Mapping[str, str] | None,
    namespace_labels: Mapping[str, str] | None,
    allowed: Mapping[str, Sequence[str]] | None,
) -> RenderResult:
    name = str((composition.get("metadata") or {}).get("name", ""))
    cspec = composition.get("spec") or {}
    metadata = intent.get("metadata") or {}
    params = cspec.get("parameters") or {}
    warnings: list[str] = []

    def warn(message: Any) -> str:
        if str(message) not in warnings:
            warnings.append(str(message))
        return ""

    base: dict[str, Any] = {
        "intent": intent,
        "spec": intent.get("spec") or {},
        "metadata": metadata,
        "params": params,
        "parameters": params,
        "composition": name,
        "namespace_labels": dict(namespace_labels or {}),
        "allowed": {**nothing_allowed(), **{key: list(value) for key, value in (allowed or {}).items()}},
        "warn": warn,
    }
    declared = frozenset(declared_secrets(composition))
    earlier: set[str] = set()
    omitted: set[str] = set()
    resources: list[RenderedResource] = []
    hashed: list[tuple[str, str, dict[str, Any]]] = []

    for index, resource in enumerate(cspec.get("resources") or []):
        rname, provider, readiness = _describe(resource, index, name)
        for item in _items(resource, base, name, rname):
            full = rname if item is None else f"{rname}-{item}"
            if full in earlier or full in omitted:
                raise RenderError(
                    f"two resources are named {full!r}; names must be unique", composition=name, resource=full
                )
            tracker = DependencyTracker()
            context = dict(base, resource={"name": full, "provider": provider})
            if item is not None:
                context["item"] = item
            context["outputs"] = OutputsView(outputs, earlier, omitted, tracker)
            context["generated"] = GeneratedView(declared, generated)
            if not _when(resource, context, name, full):
                omitted.add(full)
                continue
            source = str(resource["template"])
            body = _render_body(_compile_template(name, rname, source), source, context, provider, name, full, rname)
            resources.append(
                RenderedResource(
                    name=full,
                    provider=provider,
                    body=body,
                    pending=tracker.pending,
                    readiness=readiness,
                    depends_on=tuple(tracker.depends_on),
                )
            )
            hashed.append((full, provider, body))
            earlier.add(full)

    return RenderResult(
        composition=name, resources=tuple(resources), hash=_hash(hashed, generated), warnings=tuple(warnings)
    )


def check_composition(composition: Mapping[str, Any]) -> list[RenderError]:
    """Every problem that can be found without an intent: resource shape, unique names,
    generatedSecrets, template and expression syntax. [] means the composition is usable.

    For the Composition handler (Ready condition) and `paved validate`: a broken template is
    reported when the platform team applies it, not when the first intent hits it.
    """
    name = str((composition.get("metadata") or {}).get("name", ""))
    problems: list[RenderError] = []
    try:
        declared_secrets(composition)
    except RenderError as error:
        problems.append(error)
    seen: set[str] = set()
    for index, resource in enumerate((composition.get("spec") or {}).get("resources") or []):
        try:
            rname, _, _ = _describe(resource, index, name)
            if rname in seen:
                raise RenderError(
                    f"two resources are named {rname!r}; names must be unique", composition=name, resource=rname
                )
            seen.add(rname)
            _compile_template(name, rname, str(resource["template"]))
        except RenderError as error:
            problems.append(error)
            continue
        for what in ("when", "forEach"):
            expression = resource.get(what)
            if isinstance(expression, str):
                try:
                    _compile_expression(expression)
                except TemplateSyntaxError as error:
                    problems.append(
                        RenderError(
                            f"{what} expression syntax error: {error.message}", composition=name, resource=rname
                        )
                    )
    return problems


def _describe(resource: Mapping[str, Any], index: int, composition: str) -> tuple[str, str, str]:
    """Check the static shape of one composition resource; returns (name, provider, readiness)."""
    rname = resource.get("name")
    where = f"spec.resources[{index}]"
    if not isinstance(rname, str) or not rname:
        raise RenderError(f"{where}.name is required", composition=composition)
    for required in ("provider", "template"):
        if not isinstance(resource.get(required), str) or not resource[required]:
            raise RenderError(f"{where}.{required} is required", composition=composition, resource=rname)
    readiness = resource.get("readiness") or "provider"
    if readiness not in READINESS:
        raise RenderError(
            f"{where}.readiness must be one of {', '.join(READINESS)}, not {readiness!r}",
            composition=composition,
            resource=rname,
        )
    return rname, resource["provider"], readiness


def _items(resource: Mapping[str, Any], base: dict[str, Any], composition: str, rname: str) -> list[Any]:
    """[None] for a plain resource; the forEach items otherwise (strings or numbers)."""
    expression = resource.get("forEach")
    if not expression:
        return [None]
    value = _evaluate(expression, base, composition, rname, "forEach")
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise RenderError("forEach must give a list of strings", composition=composition, resource=rname)
    items = list(value)
    for item in items:
        if not isinstance(item, (str, int)) or isinstance(item, bool) or str(item) == "":
            raise RenderError(
                f"forEach items must be non-empty strings, got {item!r}", composition=composition, resource=rname
            )
    return items


def _when(resource: Mapping[str, Any], context: dict[str, Any], composition: str, full: str) -> bool:
    expression = resource.get("when")
    if expression is None or expression is True:
        return True
    if expression is False:
        return False
    return bool(_evaluate(str(expression), context, composition, full, "when"))


def _evaluate(expression: str, context: dict[str, Any], composition: str, resource: str, what: str) -> Any:
    try:
        return _compile_expression(expression)(**context)
    except TemplateSyntaxError as error:
        raise RenderError(
            f"{what} expression syntax error: {error.message}", composition=composition, resource=resource
        ) from None
    except Exception as error:
        raise _convert(error, context, composition, resource, filename=None,
                       source=f"{{{{ {expression} }}}}", prefix=f"{what}: ") from None


def _render_body(
    template: Template, source: str, context: dict[str, Any], provider: str, composition: str, full: str, rname: str
) -> dict[str, Any]:
    try:
        text = template.render(context)
    except Exception as error:
        raise _convert(error, context, composition, full, filename=_filename(composition, rname), source=source) from None
    try:
        body: dict[str, Any] = json.loads(_parse(text))
    except RenderError as error:
        raise error.at(composition=composition, resource=full) from None
    if provider == "kubernetes":
        _complete_manifest(body, context["metadata"].get("namespace"), composition, full)
    return body


@lru_cache(maxsize=4096)  # about 3 resources for each of 1,000+ intents, a few KB each
def _parse(text: str) -> str:
    """The body a rendered text stands for, as JSON (fresh objects on every json.loads).

    YAML parsing is most of a render's cost; the same intent renders to the same text on
    every reconcile, so the text is the cache key. Going through JSON also gives every body
    plain JSON types, which is what the API server and boto3 receive anyway.
    """
    try:
        body = yaml.load(text, Loader=yaml.CSafeLoader)
    except yaml.YAMLError as error:
        # Say where, never quote the text: rendered text may hold secrets (YAML's problem
        # quotes the character it stumbled on).
        mark = getattr(error, "problem_mark", None)
        problem = unquoted(getattr(error, "problem", None) or "invalid YAML")
        where = f" (rendered line {mark.line + 1})" if mark is not None else ""
        raise RenderError(
            f"the template did not produce valid YAML: {problem}{where}; embed values with `| to_json`"
        ) from None
    if not isinstance(body, dict):
        raise RenderError(f"the template must produce one YAML mapping, got {type(body).__name__}")
    return json.dumps(body, ensure_ascii=False, default=str)


def _complete_manifest(body: dict[str, Any], namespace: str | None, composition: str, resource: str) -> None:
    """Check a Kubernetes manifest's identity fields and default its namespace to the intent's."""
    metadata = body.get("metadata")
    if not body.get("apiVersion") or not body.get("kind") or not isinstance(metadata, dict) or not metadata.get("name"):
        raise RenderError(
            "a kubernetes resource needs apiVersion, kind and metadata.name", composition=composition, resource=resource
        )
    if namespace and body["kind"] not in CLUSTER_SCOPED_KINDS and not metadata.get("namespace"):
        # Right after the name, where people look for it in `paved render` output.
        body["metadata"] = {"name": metadata.pop("name"), "namespace": namespace, **metadata}


def _convert(
    error: BaseException,
    context: Mapping[str, Any],
    composition: str,
    resource: str,
    *,
    filename: str | None,
    source: str,
    prefix: str = "",
) -> RenderError:
    """Turn anything a template raised into a RenderError with location, line and variable.

    With generated values in scope the message is built by describe_template_error from
    names, positions and types only: any message a template produced may quote a secret.
    """
    line = template_line(error, filename) if filename else None
    generated = context.get("generated")
    if isinstance(generated, GeneratedView) and holds_values(generated):
        what = describe_template_error(error, environment=_ENV, source=source)
        return RenderError(prefix + what, composition=composition, resource=resource, line=line)
    if isinstance(error, RenderError):
        error.at(composition=composition, resource=resource)
        if error.line is None and line is not None:
            error.line = line
            error.args = (str(error),)
        return error
    if isinstance(error, MissingVariable):
        message, variable = _describe_missing(error, context)
        return RenderError(prefix + message, composition=composition, resource=resource, line=line, variable=variable)
    if isinstance(error, UndefinedError):
        return RenderError(prefix + str(error), composition=composition, resource=resource, line=line)
    if isinstance(error, UnavailableOutputs):
        return RenderError(prefix + str(error.args[0]), composition=composition, resource=resource, line=line)
    if isinstance(error, RenderLimitError):
        return RenderError(f"{prefix}{error}", composition=composition, resource=resource, line=line)
    if isinstance(error, SecurityError):
        return RenderError(
            f"{prefix}not allowed in a composition template: {error}",
            composition=composition,
            resource=resource,
            line=line,
        )
    return RenderError(
        f"{prefix}{type(error).__name__}: {error}", composition=composition, resource=resource, line=line
    )


def _describe_missing(error: MissingVariable, context: Mapping[str, Any]) -> tuple[str, str]:
    """("'spec' has no attribute 'sizee'", "spec.sizee") — names the container by its path."""
    name = error.name
    if error.obj is missing:
        return f"{name!r} is undefined", str(name)
    path = _path_of(error.obj, context)
    if path is None:
        return str(error), str(name)
    variable = f"{path}.{name}" if isinstance(name, str) and name.isidentifier() else f"{path}[{name!r}]"
    return f"'{path}' has no attribute {name!r}", variable


_PATH_ROOTS = ("spec", "metadata", "params", "item", "namespace_labels", "intent")


def _path_of(target: Any, context: Mapping[str, Any]) -> str | None:
    """Where `target` (by identity) sits in the template context, e.g. `spec.capabilities[0]`.

    Only runs on errors, so it may walk; breadth-first gives the shortest name.
    """
    queue: list[tuple[str, Any]] = [(root, context[root]) for root in _PATH_ROOTS if root in context]
    seen: set[int] = set()
    while queue:
        path, value = queue.pop(0)
        if value is target:
            return path
        if id(value) in seen or path.count(".") + path.count("[") > 12:
            continue
        seen.add(id(value))
        if isinstance(value, Mapping):
            queue.extend(
                (f"{path}.{key}" if str(key).isidentifier() else f"{path}[{key!r}]", child)
                for key, child in value.items()
            )
        elif isinstance(value, list):
            queue.extend((f"{path}[{i}]", child) for i, child in enumerate(value))
    return None


def _hash(bodies: list[tuple[str, str, dict[str, Any]]], generated: Mapping[str, str] | None) -> str:
    """sha256 over the canonical JSON of (name, provider, body) in order.

    Generated secret values are masked back to their `<generated:NAME>` placeholders (also in
    base64), so the hash equals the offline one, stays stable across password rotation and is
    never computed over a secret.
    """
    canonical = json.dumps(bodies, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    for name, value in (generated or {}).items():
        if value:
            for secret, shown in ((value, placeholder(name)), (b64encode(value), b64encode(placeholder(name)))):
                canonical = canonical.replace(json.dumps(secret, ensure_ascii=False)[1:-1], shown)
    return hashlib.sha256(canonical.encode()).hexdigest()
