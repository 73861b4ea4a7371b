"""The composition engine: pure functions from (Composition, intent) to desired resources.

Public surface:
- render_intent(body, compositions, *, namespace_labels, allowed, ...) -> IntentRender: THE way
  every caller renders an intent (selection, defaults, allowances in one place)
- select_composition(intent, compositions, namespace_labels) -> composition
- render(composition, intent, *, outputs, generated, namespace_labels) -> RenderResult
- check_composition(composition) -> [RenderError]   (problems found without an intent)
- generate_missing(composition, existing) -> {secret name: value}; declared_secrets(composition)
- RenderError, RenderResult, RenderedResource
"""

from paved.render.engine import check_composition, render
from paved.render.errors import RenderError
from paved.render.generated import declared_secrets, generate_missing
from paved.render.intent import IntentRender, everything_allowed, render_intent
from paved.render.select import select_composition
from paved.render.types import RenderedResource, RenderResult

__all__ = [
    "IntentRender",
    "RenderError",
    "RenderResult",
    "RenderedResource",
    "check_composition",
    "declared_secrets",
    "everything_allowed",
    "generate_missing",
    "render",
    "render_intent",
    "select_composition",
]
