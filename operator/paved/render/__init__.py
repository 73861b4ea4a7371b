"""The composition engine: pure functions from (Composition, intent) to desired resources.

Public surface:
- select_composition(intent, compositions, namespace_labels) -> composition
- render(composition, intent, *, outputs, generated, namespace_labels) -> RenderResult
- check_composition(composition) -> [RenderError]   (problems found without an intent)
- generate_missing(composition, existing) -> {secret name: value}; declared_secrets(composition)
- RenderError, RenderResult, RenderedResource
"""

from paved.render.engine import check_composition, render
from paved.render.errors import RenderError
from paved.render.generated import declared_secrets, generate_missing
from paved.render.select import select_composition
from paved.render.types import RenderedResource, RenderResult

__all__ = [
    "RenderError",
    "RenderResult",
    "RenderedResource",
    "check_composition",
    "declared_secrets",
    "generate_missing",
    "render",
    "select_composition",
]
