"""The one way an intent is rendered through its Composition, for every caller.

The reconcile (paved.engines.compose), the deletion render, the database engine's checks
before its first cloud call, the policy check (admission, audit, `paved validate`) and
`paved render` must all judge and act on the same resources. They differ only in what they
read, and how (the live Namespace or a document, the policy index or policy files), so they
read it and pass it here; everything else is decided once:

- the intent as templates see it: identity, labels, annotations and the spec with the kind's
  defaults (`intent_document`);
- that only COMPOSED_KINDS are rendered (ExternalSecretRef and ProgressiveRollout have their
  own engines, see paved.api.platform.CompositeKind);
- the Composition (paved.render.select), unless the caller names one, and the revision of it
  the intent is rendered with (paved.render.waves) when the caller knows the revisions;
- the render itself, with the caller's namespace labels and allowances, placeholders for
  outputs and generated values first (`IntentRender.result`), the real values on demand
  (`IntentRender.with_values`).

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from paved import API_VERSION
from paved.api.common import Model
from paved.api.kinds import COMPOSED_KINDS, SpecError, kind_info
from paved.api.platform import ALLOWED_KEYS
from paved.render.engine import render
from paved.render.errors import RenderError
from paved.render.select import select_composition
from paved.render.types import RenderedResource, RenderResult
from paved.render.waves import revision_for, revision_name


@dataclass(frozen=True)
class IntentRender:
    """An intent rendered through its Composition, or why it could not be.

    Exactly one of `result` and `error` is set. `composition` is the selected Composition
    (also when its render failed: a fix to it re-renders the intent); None when none was
    selected, and `error` says why.
    """

    intent: Mapping[str, Any]
    namespace_labels: Mapping[str, str]
    allowed: Mapping[str, Sequence[str]]
    composition: Mapping[str, Any] | None = None
    result: RenderResult | None = None
    error: RenderError | None = None
    revision: str | None = None  # the CompositionRevision rendered (None: none could be chosen)

    @property
    def composition_name(self) -> str | None:
        if self.composition is None:
            return None
        return str((self.composition.get("metadata") or {}).get("name", ""))

    @property
    def resources(self) -> tuple[RenderedResource, ...]:
        """What the intent renders to; () when it does not render."""
        return self.result.resources if self.result is not None else ()

    def with_values(
        self, *, outputs: Mapping[str, Mapping[str, Any]] | None = None, generated: Mapping[str, str] | None = None
    ) -> RenderResult:
        """The same render with what exists now: outputs of applied resources, generated values.

        Only after a successful render (`result` set); raises RenderError (a template may
        fail on a real output)."""
        if self.composition is None or self.error is not None:
            raise RuntimeError("with_values() after a failed render")  # a caller's bug, never the user's
        return render(
            self.composition, self.intent, outputs=outputs, generated=generated,
            namespace_labels=self.namespace_labels, allowed=self.allowed,
        )


def render_intent(
    body: Mapping[str, Any],
    compositions: Iterable[Mapping[str, Any]],
    *,
    namespace_labels: Mapping[str, str] | None,
    allowed: Mapping[str, Sequence[str]] | None,
    spec: Model | None = None,
    composition: Mapping[str, Any] | None = None,
    revisions: Mapping[str, Mapping[str, Any]] | None = None,
    move: bool = False,
) -> IntentRender:
    """Render the intent `body` (as read: from the API server, a file, an admission request).

    `namespace_labels`: labels of the intent's namespace (selection, templates).
    `allowed`: what IntentPolicies allow this intent (paved.policy.allowances_for); None
    allows nothing.
    `spec`: the kind's parsed spec when the caller has it (else parsed here; an invalid one is
    an error naming its fields, as the reconcile would report it).
    `composition`: use this Composition as is instead of selecting one (`paved render
    --composition FILE`).
    `revisions`: every CompositionRevision by name (the reconcile): the intent is rendered
    with the revision it is on, its compositionRevisionRef, or (`move`, or none yet) the
    latest (paved.render.waves.revision_for). None: the Composition as it is now (admission,
    `paved render`: what a new intent would get).

    Never raises for the user's input: a kind that is not composed, an invalid spec, no
    Composition and a failing template all come back as `error`.
    """
    labels = dict(namespace_labels or {})
    allowances = dict(allowed or {})
    kind = str(body.get("kind") or "")
    if kind not in COMPOSED_KINDS:
        error = RenderError(f"{kind or 'an object without a kind'} is not rendered through a Composition; "
                            f"Compositions render {', '.join(COMPOSED_KINDS)}", field="kind")
        return IntentRender(dict(body), labels, allowances, error=error)
    if spec is None:
        try:
            spec = kind_info(kind).parse_spec(body.get("spec"))
        except SpecError as error:
            return IntentRender(dict(body), labels, allowances, error=_invalid_spec(error))
    intent = intent_document(body, spec)
    if composition is None:
        try:
            composition = select_composition(intent, compositions, labels)
        except RenderError as error:
            return IntentRender(intent, labels, allowances, error=error)
    revision = revision_name(composition)
    if revisions is not None:
        try:
            revision, composition = revision_for(body, spec, composition, revisions, move=move)
        except RenderError as error:
            return IntentRender(intent, labels, allowances, composition, error=error)
    try:
        result = render(composition, intent, outputs=None, generated=None, namespace_labels=labels, allowed=allowances)
    except RenderError as error:
        return IntentRender(intent, labels, allowances, composition, error=error, revision=revision)
    return IntentRender(intent, labels, allowances, composition, result, revision=revision)


def intent_document(body: Mapping[str, Any], spec: Model) -> dict[str, Any]:
    """The intent as templates see it: identity, labels and the spec WITH defaults applied."""
    metadata = body.get("metadata") or {}
    return {
        "apiVersion": body.get("apiVersion", API_VERSION),
        "kind": body.get("kind"),
        "metadata": {
            key: metadata.get(key)
            for key in ("name", "namespace", "uid", "generation", "labels", "annotations")
            if metadata.get(key) is not None
        },
        "spec": spec.dump(),
    }


def everything_allowed(by: str) -> dict[str, list[str]]:
    """`allowed` with every allowance granted by `by`: the deletion render, so that what a
    since-revoked allowance let an intent create is found and removed too."""
    return {key: [by] for key in ALLOWED_KEYS.values()}


def _invalid_spec(error: SpecError) -> RenderError:
    """The problems as one error naming the first field (shown once: `field: problem; others`)."""
    if not error.problems:
        return RenderError(str(error))
    field, _, first = error.problems[0].partition(": ")
    return RenderError("; ".join([first or field, *error.problems[1:]]), field=field if first else None)
