"""The stage table (paved.rollout.machine.STAGES): every stage's behaviour is found there."""

from __future__ import annotations

from paved.rollout.machine import STAGES
from paved.rollout.state import Stage


def test_every_stage_has_its_entry_in_the_stage_table() -> None:
    assert set(STAGES) == set(Stage)
    assert all(callable(handler.run) for handler in STAGES.values())
