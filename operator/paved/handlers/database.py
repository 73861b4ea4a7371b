"""DatabaseIntent: Kopf's side of the database engine (paved.engines.database).

- create/update/resume: the checks and the composed reconcile; the status is written (one
  server-side apply as the reconcile) only when it changed.
- a per-intent daemon re-reads cloud resources every `spec.driftCheckInterval`. It is `async`
  only to sleep without holding a thread (hundreds of intents would otherwise pin hundreds of
  worker threads); the check itself is the same synchronous reconcile, run in a worker
  thread. It runs only for intents with the cleanup finalizer, i.e. with a cloud resource
  (Kopf's own `paved.dev/cleanup` finalizer, which Kopf requires for daemons, comes with it).
- delete (`optional=True`: Kopf adds no finalizer of its own for it): spec.deletionPolicy on
  the cloud resources, then the `paved.dev/database-cleanup` finalizer goes. A failed cloud
  call keeps the finalizer and retries with bounded exponential backoff.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import kopf

from paved import GROUP, VERSION
from paved.engines import Engines
from paved.engines.compose import HANDLER_RETRIES, backoff, compositions_from
from paved.engines.database import CLEANUP_FINALIZER, IntentChanging, has_cleanup_finalizer, next_drift_wait
from paved.handlers.common import raise_for_kopf
from paved.kube.client import ApiError
from paved.providers.base import ProviderError

PLURAL = "databaseintents"


def remove_cleanup_finalizer(body: kopf.RawBody) -> None:
    """A Kopf patch function: applied to the freshest body as a resourceVersion-tested JSON patch."""
    finalizers = (body.get("metadata") or {}).get("finalizers") or []
    if CLEANUP_FINALIZER in finalizers:
        body["metadata"]["finalizers"] = [f for f in finalizers if f != CLEANUP_FINALIZER]


async def watch_cloud_drift(stopped: kopf.DaemonStopped, body: kopf.Body, composition_index: kopf.Index,
                            logger: kopf.Logger, memo: Engines, **_: Any) -> None:
    """Re-read and correct cloud resources every spec.driftCheckInterval (live: a changed
    interval applies from the next wait). Errors are logged and retried next interval."""
    first = True
    while not stopped:
        if await stopped.wait(next_drift_wait(body.get("spec"), first=first)):
            return
        first = False
        snapshot = copy.deepcopy(dict(body))
        try:
            await asyncio.to_thread(memo.databases.check_drift, snapshot, compositions_from(composition_index))
        except (ApiError, ProviderError) as error:
            logger.warning(f"drift check failed, retrying in one interval: {error}")


def reconcile_database(body: kopf.Body, retry: int, composition_index: kopf.Index, memo: Engines, **_: Any) -> None:
    """Check, render and apply; the status is written only when it changed."""
    try:
        outcome = memo.databases.reconcile_and_write(body, compositions_from(composition_index), trigger="handler")
    except IntentChanging as changing:
        raise kopf.TemporaryError(str(changing), delay=changing.delay) from None
    if outcome is not None:
        raise_for_kopf(outcome, retry)


def finalize_database(body: kopf.Body, patch: kopf.Patch, retry: int, composition_index: kopf.Index, memo: Engines,
                      **_: Any) -> None:
    """Carry out spec.deletionPolicy on the cloud resources, then release the intent."""
    if not has_cleanup_finalizer(body):
        return
    try:
        unfinished = memo.databases.finalize(body, compositions_from(composition_index))
    except (ProviderError, ApiError) as error:
        message = (f"deletion (spec.deletionPolicy={body.get('spec', {}).get('deletionPolicy', 'Snapshot')}) failed "
                   f"and will be retried; nothing was released: {error}")
        memo.databases.deletion_failed(body, message)
        raise kopf.TemporaryError(message, delay=backoff(retry)) from None
    if unfinished:
        raise kopf.TemporaryError(f"still deleting: {'; '.join(unfinished)}", delay=backoff(retry))
    patch.fns.append(remove_cleanup_finalizer)


def register(registry: kopf.OperatorRegistry) -> None:
    """Add the DatabaseIntent handlers to the leader's registry."""
    kopf.daemon(GROUP, VERSION, PLURAL, when=lambda body, **_: has_cleanup_finalizer(body), cancellation_timeout=60,
                registry=registry)(watch_cloud_drift)  # type: ignore[arg-type]  # indexes by name: see paved.handlers
    for on in (kopf.on.resume, kopf.on.create, kopf.on.update):
        on(GROUP, VERSION, PLURAL, retries=HANDLER_RETRIES, registry=registry)(reconcile_database)  # type: ignore[arg-type]  # indexes by name: see paved.handlers
    kopf.on.delete(GROUP, VERSION, PLURAL, optional=True, retries=HANDLER_RETRIES, registry=registry)(finalize_database)  # type: ignore[arg-type]  # indexes by name: see paved.handlers
