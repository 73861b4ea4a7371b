"""The validating admission webhook's handlers: IntentPolicies enforced when intents are
created or changed (the server, its certificate and its configuration: paved.runtime.webhook).

Every replica serves them, from its own Kopf indexes (paved.handlers.indexes): an admission
answer never depends on who leads. What is judged (pure, see paved.policy.decisions):
- intents: `check_intent` (defaults, render with placeholders, evaluate) then
  `admission_decision`: Enforce fail/error -> denied naming policy, rule and message; Warn ->
  admitted with warnings; Audit -> admitted. A render failure does not deny (the intent's
  own Ready condition reports it); the rules about the intent still run and the response
  carries a warning that the rendered output was not checked. Renders and rules stop at
  ADMISSION_SECONDS (a render then fails, a rule errs, as above), so the answer always
  leaves before the webhook's timeout.
- IntentPolicy: refused when its CEL does not compile, naming rule, line and column.
- PolicyException: refused outside the namespaces the platform names (see handlers.policy).
- AnalysisTemplate, ClusterAnalysisTemplate: refused when a CEL condition does not compile or
  an argument stands where it could not be substituted safely, naming the field
  (paved.rollout.templates.template_problems; the rollout engine checks again when it uses one).

Updates that leave `spec` unchanged never reach the webhook (the configuration's
matchConditions), and are admitted without evaluation if they do.

The handlers run on the webhook's own small thread pool, not in Kopf's handler executor
(see `_on_own_threads`): an answer must never wait behind a backlog of reconciles.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import kopf

from paved import GROUP, VERSION
from paved.api.kinds import INTENT_KINDS, kind_info
from paved.engines import Engines
from paved.engines.audit import compiled_policies, exceptions_for
from paved.engines.compose import compositions_from, in_scope
from paved.policy.decisions import Review, review_exception, review_intent, review_policy, spec_unchanged
from paved.render.sandbox import stop_when
from paved.rollout.templates import template_problems

DENIED_CODE = 403
ADMISSION_WORKERS = 4  # the work is CPU-bound under the GIL: more threads add no throughput
ADMISSION_SECONDS = 3.0
"""Renders and CEL evaluations of one request stop after this long (paved.render.sandbox.stop_when),
so the answer (a rule that could not be evaluated denies, naming it) leaves well inside the
webhook's timeout (5 s by default) even on a starved CPU; past the timeout the API server
refuses the object with a message that names nothing."""


@dataclass(frozen=True)
class Webhook:
    """One webhook of the configuration: the Kopf handler id (URL path) and what it matches."""

    id: str
    plurals: tuple[str, ...]


WEBHOOKS: tuple[Webhook, ...] = (
    Webhook("validate-intents", tuple(kind_info(kind).plural for kind in INTENT_KINDS)),
    Webhook("validate-intentpolicies", ("intentpolicies",)),
    Webhook("validate-policyexceptions", ("policyexceptions",)),
    Webhook("validate-analysistemplates", ("analysistemplates", "clusteranalysistemplates")),
)


def _on_own_threads(fn: Callable[..., None], executor: concurrent.futures.Executor) -> Callable[..., Coroutine[Any, Any, None]]:
    """`fn` as an async Kopf handler that runs it on the webhook's own threads.

    Kopf runs a synchronous handler in `settings.execution.executor`, the pool every
    reconcile shares (FIFO): behind a backlog of reconciles blocked on API-server or cloud
    calls, an admission request waited there past the webhook's 5 s timeout
    (bench/bench_policy.py, "under a reconcile backlog"). Kopf awaits an async handler on its
    event loop instead; the blocking work (a Namespace read on a cache miss) still runs in a
    thread, one of `executor`'s. No `__wrapped__`: Kopf would follow it and treat the handler
    as synchronous again.
    """

    async def handler(**kwargs: Any) -> None:
        call = functools.partial(contextvars.copy_context().run, fn, **kwargs)  # as Kopf does for sync handlers
        await asyncio.get_running_loop().run_in_executor(executor, call)

    handler.__name__ = handler.__qualname__ = fn.__name__
    return handler


def _deny(review: Review, warnings: list[str]) -> None:
    warnings.extend(review.warnings)
    if not review.allowed:
        raise kopf.AdmissionError(review.message, code=DENIED_CODE)


def validate_intent(
    body: kopf.Body, old: kopf.Body | None, operation: str | None, warnings: list[str], memo: Engines,
    composition_index: kopf.Index, policy_index: kopf.Index, exception_index: kopf.Index, **_: Any,
) -> None:
    namespace = (body.get("metadata") or {}).get("namespace")
    if not in_scope(namespace, memo.scope.namespaces):
        return
    namespace_object = memo.namespaces.get(namespace)
    deadline = time.monotonic() + ADMISSION_SECONDS
    with stop_when(lambda: time.monotonic() > deadline):
        review = review_intent(
            operation, body, old,
            compiled_policies(policy_index),
            compositions_from(composition_index),
            namespace_object,
            exceptions_for(namespace, namespace_object, exception_index, memo.scope.exception_namespaces),
            now=datetime.now(timezone.utc),
        )
    _deny(review, warnings)


def validate_policy(body: kopf.Body, operation: str | None, warnings: list[str], **_: Any) -> None:
    if operation in ("CREATE", "UPDATE"):
        _deny(review_policy(body), warnings)


def validate_exception(body: kopf.Body, operation: str | None, warnings: list[str], memo: Engines, **_: Any) -> None:
    if operation not in ("CREATE", "UPDATE") or spec_unchanged(operation, body, None):
        return
    namespace = (body.get("metadata") or {}).get("namespace")
    _deny(review_exception(body, memo.namespaces.get(namespace), memo.scope.exception_namespaces), warnings)


def validate_template(body: kopf.Body, operation: str | None, **_: Any) -> None:
    if operation not in ("CREATE", "UPDATE"):
        return
    problems = template_problems(body.get("spec") or {})
    if problems:
        raise kopf.AdmissionError("; ".join(str(problem) for problem in problems), code=DENIED_CODE)


def register(registry: kopf.OperatorRegistry, executor: concurrent.futures.Executor) -> None:
    """Add the validation handlers to the serving registry, running on `executor`."""
    functions: dict[str, Callable[..., None]] = {
        "validate-intents": validate_intent, "validate-intentpolicies": validate_policy,
        "validate-policyexceptions": validate_exception, "validate-analysistemplates": validate_template,
    }
    for webhook in WEBHOOKS:
        handler = _on_own_threads(functions[webhook.id], executor)
        for plural in webhook.plurals:
            kopf.on.validate(GROUP, VERSION, plural, id=webhook.id, operations=["CREATE", "UPDATE"],
                             registry=registry)(handler)
