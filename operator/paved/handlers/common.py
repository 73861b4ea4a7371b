"""What every Kopf handler module shares: mapping an engine's outcome to Kopf's retries."""

from __future__ import annotations

import kopf

from paved.engines.compose import Outcome, backoff


def raise_for_kopf(outcome: Outcome, retry: int) -> None:
    """Map an outcome to Kopf's retry semantics.

    Invalid spec, missing composition, render errors and permanent provider errors return
    normally: the condition says what to fix, and Kopf must not retry (a retry storm cannot
    fix a spec); the next spec change triggers the update handler. Retryable provider errors
    and resources that are not ready yet raise TemporaryError with exponential backoff.
    """
    result = outcome.result
    if result.error is not None:
        if result.error.retryable:
            raise kopf.TemporaryError(f"{result.error.reason}: {result.error.message}", delay=backoff(retry))
        return
    if not result.ready:
        raise kopf.TemporaryError(f"waiting for {', '.join(result.waiting_for())}", delay=backoff(retry))
