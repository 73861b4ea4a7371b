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

from paved.api.common import Model
from paved.api.kinds import COMPOSED_KINDS, SpecError, kind_info
from paved.policy.allowances import allowances_for
from paved.policy.compile import CompiledPolicy
from paved.policy.evaluate import evaluate
from paved.policy.types import Verdict
from paved.render import RenderedResource, RenderError, render_intent


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
    """Render the intent as the reconcile would (paved.render.render_intent: the same
    composition, defaults and allowances), then evaluate `policies` against both.

    Kinds that are not rendered through Compositions (ExternalSecretRef, ProgressiveRollout:
    their own engines) are evaluated with an empty `rendered`: they create nothing a
    Composition describes.
    """
    labels = ((namespace_object or {}).get("metadata") or {}).get("labels") or {}
    policies = list(policies)
    kind = str(intent.get("kind") or "")
    if kind not in COMPOSED_KINDS:
        return CheckResult(evaluate(policies, intent, (), namespace_object, exceptions, now=now))
    try:  # evaluate() applies the defaults to what the rules see; the render takes the parsed spec
        spec: Model | None = kind_info(kind).parse_spec(intent.get("spec"))
    except SpecError:
        spec = None  # the render reports the spec's problems
    allowed = allowances_for(policies, kind, labels if namespace_object is not None else None)  # as evaluate() reads it
    rendering = render_intent(intent, compositions, namespace_labels=labels, allowed=allowed, spec=spec)
    verdicts = evaluate(policies, intent, rendering.resources, namespace_object, exceptions, now=now)
    return CheckResult(verdicts, rendering.composition_name, rendering.resources, rendering.error)
