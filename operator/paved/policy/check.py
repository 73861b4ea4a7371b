"""Render an intent through its composition, then evaluate the policies: the one sequence that
the admission webhook, the continuous audit and `paved validate` all need.

Rendering here never sees real outputs or generated secrets: placeholders are enough to
judge what *would* be created, and the rendered bodies then cannot contain a secret.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from paved.api.kinds import with_defaults
from paved.policy.allowances import allowances_for
from paved.policy.compile import CompiledPolicy
from paved.policy.evaluate import evaluate
from paved.policy.types import Verdict
from paved.render import RenderedResource, RenderError, render, select_composition


@dataclass(frozen=True)
class CheckResult:
    """Verdicts for one intent, plus what it was rendered with (or why it could not be).

    With a `render_error` the verdicts come from an empty `rendered` list, so rules about the
    intent itself still report; the caller must treat the render error as blocking.
    """

    verdicts: list[Verdict]
    composition: str | None = None
    resources: tuple[RenderedResource, ...] = field(default=())
    render_error: RenderError | None = None


def check_intent(
    intent: Mapping[str, Any],
    compositions: Iterable[Mapping[str, Any]],
    policies: Iterable[CompiledPolicy],
    namespace_object: Mapping[str, Any] | None = None,
    exceptions: Iterable[Mapping[str, Any]] = (),
    *,
    now: datetime,
) -> CheckResult:
    """Select and render the intent's composition, then evaluate `policies` against both.

    Kinds that no composition serves (e.g. ProgressiveRollout, driven by the rollout state
    machine) are evaluated with an empty `rendered`, unless the intent names a composition.
    """
    full = with_defaults(intent)
    labels = ((namespace_object or {}).get("metadata") or {}).get("labels") or {}
    policies = list(policies)
    candidates = list(compositions)
    composition_name: str | None = None
    resources: tuple[RenderedResource, ...] = ()
    render_error: RenderError | None = None
    if _needs_composition(full, candidates):
        try:
            composition = select_composition(full, candidates, labels)
            composition_name = str((composition.get("metadata") or {}).get("name", ""))
            allowed = allowances_for(policies, str(full.get("kind") or ""), labels if namespace_object is not None else None)  # as evaluate() reads it
            resources = render(composition, full, namespace_labels=labels, allowed=allowed).resources
        except RenderError as error:
            render_error = error
    verdicts = evaluate(policies, full, resources, namespace_object, exceptions, now=now)
    return CheckResult(verdicts, composition_name, resources, render_error)


def _needs_composition(intent: Mapping[str, Any], compositions: list[Mapping[str, Any]]) -> bool:
    if ((intent.get("spec") or {}).get("compositionRef") or {}).get("name"):
        return True
    kind = intent.get("kind")
    return any((c.get("spec") or {}).get("compositeKind") == kind for c in compositions)
