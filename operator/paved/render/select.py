"""Which Composition an intent is rendered through.

Order of precedence, so that both app teams and platform teams stay in control:
1. the intent's explicit `spec.compositionRef.name` (must exist and serve the intent's kind);
2. compositions whose `selector` (on the intent's labels) and `namespaceSelector` (on its
   namespace's labels) both match — the most specific wins (more label requirements), ties
   broken by name so every replica of the operator picks the same one;
3. the kind's composition with `default: true` (several: the first by name).
A composition without any selector requirement is never picked by step 2: it is either the
default or reachable only by explicit reference.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from paved.render.errors import RenderError

Composition = Mapping[str, Any]


def select_composition(
    intent: Mapping[str, Any],
    compositions: Iterable[Composition],
    namespace_labels: Mapping[str, str] | None = None,
) -> Composition:
    """The composition `intent` must be rendered through; RenderError if there is none."""
    kind = intent.get("kind", "")
    candidates = sorted(compositions, key=_name)
    ref = ((intent.get("spec") or {}).get("compositionRef") or {}).get("name")
    if ref:
        return _referenced(ref, kind, candidates)

    serving = [c for c in candidates if _spec(c).get("compositeKind") == kind]
    intent_labels = (intent.get("metadata") or {}).get("labels") or {}
    best: tuple[int, Composition] | None = None
    for composition in serving:
        spec = _spec(composition)
        selector, ns_selector = spec.get("selector") or {}, spec.get("namespaceSelector") or {}
        specificity = _size(selector) + _size(ns_selector)
        if specificity == 0:
            continue
        matched = matches(selector, intent_labels) and matches(ns_selector, namespace_labels or {})
        if matched and (best is None or specificity > best[0]):
            best = (specificity, composition)
    if best is not None:
        return best[1]

    defaults = [c for c in serving if _spec(c).get("default") is True]
    if defaults:
        return defaults[0]
    names = ", ".join(_name(c) for c in serving) or "none"
    raise RenderError(
        f"no composition selected for {kind or 'this kind'}: none matches the intent's labels or its "
        f"namespace's labels and none is marked default (compositions serving {kind or 'it'}: {names}); "
        "set spec.compositionRef.name or ask the platform team for a default",
        field="spec.compositionRef.name",
    )


def matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """matchLabels semantics (the API's LabelSelector): every listed label present with that value."""
    return all(labels.get(key) == value for key, value in (selector.get("matchLabels") or {}).items())


def _referenced(ref: str, kind: str, candidates: list[Composition]) -> Composition:
    found = next((c for c in candidates if _name(c) == ref), None)
    serving = ", ".join(_name(c) for c in candidates if _spec(c).get("compositeKind") == kind) or "none"
    if found is None:
        raise RenderError(
            f"composition {ref!r} does not exist; compositions serving {kind}: {serving}",
            field="spec.compositionRef.name",
        )
    served = _spec(found).get("compositeKind")
    if served != kind:
        raise RenderError(
            f"composition {ref!r} serves {served}, not {kind}; compositions serving {kind}: {serving}",
            field="spec.compositionRef.name",
        )
    return found


def _size(selector: Mapping[str, Any]) -> int:
    return len(selector.get("matchLabels") or {})


def _spec(composition: Composition) -> Mapping[str, Any]:
    return composition.get("spec") or {}


def _name(composition: Composition) -> str:
    return str((composition.get("metadata") or {}).get("name", ""))
