"""A delegation cycle is reported in the order the identities delegate, whatever its length."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from paved.identity import Ancestor, decide

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize("length", [1, 2, 3, 4])
def test_a_cycle_is_shown_as_the_chain_of_parents(length: int) -> None:
    names = [f"i{n}" for n in range(length)]
    identities = {name: Ancestor("ns", name, {"delegatedFrom": {"name": names[(n + 1) % length]}}, NOW)
                  for n, name in enumerate(names)}
    decision = decide(identities["i0"], accepted=False, now=NOW,
                      lookup=lambda namespace, name: identities.get(name) if namespace == "ns" else None)
    assert decision.action == "refuse" and decision.field and decision.field.startswith("spec.delegatedFrom")
    assert decision.message.endswith(" -> ".join(f"ns/{name}" for name in [*names, names[0]]))
