"""The admission glue (pure parts): decisions, the webhook configuration and TLS options."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from paved.handlers import admission
from paved.runtime import webhook
from paved.policy import compile_policies, decisions

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)


def policy(mode: str = "Enforce", expression: str = "object.spec.encryption == true") -> dict[str, Any]:
    return {"apiVersion": "paved.dev/v1alpha1", "kind": "IntentPolicy", "metadata": {"name": "enc"},
            "spec": {"match": {"kinds": ["DatabaseIntent"]}, "mode": mode,
                     "rules": [{"name": "encrypted", "expression": expression, "message": "encrypt it"}]}}


def intent(encryption: bool, name: str = "db") -> dict[str, Any]:
    return {"apiVersion": "paved.dev/v1alpha1", "kind": "DatabaseIntent", "metadata": {"name": name, "namespace": "team"},
            "spec": {"engine": "postgresql", "version": "16", "encryption": encryption}}


def compiled(mode: str = "Enforce") -> list[Any]:
    return compile_policies([policy(mode)])[0]


def test_enforce_denies_naming_policy_rule_and_message() -> None:
    review = decisions.review_intent("CREATE", intent(False), None, compiled(), [], None, now=NOW)
    assert not review.allowed
    assert "enc/encrypted (Enforce): encrypt it" in review.message


CONFIG_MAP = {"apiVersion": "paved.dev/v1alpha1", "kind": "Composition", "metadata": {"name": "cm"},
              "spec": {"compositeKind": "DatabaseIntent", "default": True, "resources": [
                  {"name": "cm", "provider": "kubernetes", "template": "{apiVersion: v1, kind: ConfigMap, metadata: {name: x}}"}]}}


def test_warn_admits_with_a_warning_and_audit_admits_silently() -> None:
    warn = decisions.review_intent("CREATE", intent(False), None, compiled("Warn"), [CONFIG_MAP], None, now=NOW)
    assert warn.allowed and any("enc/encrypted (Warn)" in w for w in warn.warnings)
    audit = decisions.review_intent("CREATE", intent(False), None, compiled("Audit"), [CONFIG_MAP], None, now=NOW)
    assert audit.allowed and not audit.warnings


def test_an_intent_no_composition_serves_is_admitted_with_a_warning_that_its_output_was_not_checked() -> None:
    review = decisions.review_intent("CREATE", intent(False), None, compiled("Audit"), [], None, now=NOW)
    assert review.allowed
    assert review.warnings == (review.warnings[0],) and review.warnings[0].startswith(
        "rendered output not checked by IntentPolicies: spec.compositionRef.name: no composition selected for DatabaseIntent")


def test_updates_that_leave_spec_alone_and_deletions_are_never_judged() -> None:
    old = intent(False)
    relabelled = copy.deepcopy(old)
    relabelled["metadata"]["labels"] = {"x": "y"}
    assert decisions.review_intent("UPDATE", relabelled, old, compiled(), [], None, now=NOW).allowed
    deleting = copy.deepcopy(old)
    deleting["metadata"]["deletionTimestamp"] = "2030-01-01T00:00:00Z"
    assert decisions.review_intent("UPDATE", deleting, old, compiled(), [], None, now=NOW).allowed
    assert decisions.review_intent("DELETE", old, old, compiled(), [], None, now=NOW).allowed
    changed = copy.deepcopy(old)
    changed["spec"]["version"] = "17"
    assert not decisions.review_intent("UPDATE", changed, old, compiled(), [], None, now=NOW).allowed


def test_active_exception_admits_and_expired_one_does_not() -> None:
    exception = {"metadata": {"name": "legacy", "namespace": "team"},
                 "spec": {"policy": "enc", "rules": ["encrypted"], "intents": [{"kind": "DatabaseIntent", "name": "db"}],
                          "expiresAt": (NOW + timedelta(minutes=5)).isoformat(), "reason": "r"}}
    active = decisions.review_intent("CREATE", intent(False), None, compiled(), [], None, [exception], now=NOW)
    assert active.allowed and any("excepted by PolicyException team/legacy" in w for w in active.warnings)
    later = decisions.review_intent("CREATE", intent(False), None, compiled(), [], None, [exception], now=NOW + timedelta(hours=1))
    assert not later.allowed


def test_policy_with_bad_cel_is_refused_with_rule_and_position() -> None:
    review = decisions.review_policy(policy(expression="object.spec.encryption =="))
    assert not review.allowed
    assert "encrypted" in review.message and "line 1, column" in review.message
    assert decisions.review_policy(policy()).allowed


def test_exceptions_only_in_named_or_labelled_namespaces() -> None:
    body = {"metadata": {"name": "e", "namespace": "team"}}
    assert not decisions.review_exception(body, {"metadata": {"labels": {}}}, []).allowed
    assert decisions.review_exception(body, None, ["team"]).allowed
    labelled = {"metadata": {"labels": {"paved.dev/policy-exceptions": "allowed"}}}
    assert decisions.review_exception(body, labelled, []).allowed


def test_webhook_configuration_is_scoped_and_short() -> None:
    config = webhook.webhook_configuration({"url": "https://127.0.0.1:9443", "caBundle": "Q0E="}, admission.WEBHOOKS)
    assert config["metadata"]["name"] == "paved.dev"
    hooks = {hook["name"]: hook for hook in config["webhooks"]}
    assert set(hooks) == {"validate-intents.paved.dev", "validate-intentpolicies.paved.dev", "validate-policyexceptions.paved.dev",
                          "validate-analysistemplates.paved.dev"}
    for hook in hooks.values():
        assert hook["failurePolicy"] == "Fail" and hook["timeoutSeconds"] == 5 and hook["sideEffects"] == "None"
        (rule,) = hook["rules"]
        assert rule["apiGroups"] == ["paved.dev"] and rule["operations"] == ["CREATE", "UPDATE"]
        assert hook["clientConfig"]["caBundle"] == "Q0E="
        assert hook["matchConditions"] == [{"name": "changes-spec", "expression": webhook.SPEC_CHANGES}]
    assert hooks["validate-intents.paved.dev"]["clientConfig"]["url"] == "https://127.0.0.1:9443/validate-intents"
    assert set(hooks["validate-intents.paved.dev"]["rules"][0]["resources"]) == {
        "databaseintents", "agentidentities", "externalsecretrefs", "progressiverollouts"}


def test_service_mode_and_parse_service() -> None:
    service = webhook.parse_service("paved-system/paved-webhook")
    assert service == ("paved-system", "paved-webhook", 443)
    config = webhook.webhook_configuration({"url": "https://x:1"}, admission.WEBHOOKS, service=service, failure_policy="Ignore")
    hook = config["webhooks"][0]
    assert hook["failurePolicy"] == "Ignore"
    assert hook["clientConfig"] == {"service": {"namespace": "paved-system", "name": "paved-webhook", "port": 443,
                                                "path": "/validate-intents"}}
    with pytest.raises(ValueError):
        webhook.parse_service("no-slash")


def _serving_handlers(executor: Any) -> list[Any]:
    from paved.handlers import serving_registry

    return list(serving_registry(executor)._webhooks.get_all_handlers())


def test_webhook_handlers_are_registered_for_every_kind() -> None:
    ids = {(h.id, h.selector.any_name if h.selector else None) for h in _serving_handlers(None)}
    assert ("validate-intentpolicies", "intentpolicies") in ids
    assert ("validate-policyexceptions", "policyexceptions") in ids
    assert ("validate-intents", "databaseintents") in ids
    assert ("validate-analysistemplates", "clusteranalysistemplates") in ids


def test_only_the_serving_registry_has_webhooks_and_the_leading_one_has_no_validation() -> None:
    from paved.handlers import leading_registry

    assert not list(leading_registry()._webhooks.get_all_handlers())
    assert _serving_handlers(None)


def test_webhook_handlers_run_on_their_own_threads_not_kopfs_shared_executor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kopf queues a sync handler behind every reconcile in its executor; an async one it awaits."""
    import asyncio
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import kopf
    from kopf._core.actions.invocation import invoke, is_async_fn

    from paved.engines import Engines

    executor = ThreadPoolExecutor(1, thread_name_prefix="paved-admission")
    (handler,) = {h.fn for h in _serving_handlers(executor) if h.id == "validate-intents"}
    assert is_async_fn(handler)
    threads: list[str] = []
    engines = Engines()

    def namespace_object(namespace: str | None) -> None:
        threads.append(threading.current_thread().name)

    monkeypatch.setattr(engines.namespaces, "get", namespace_object)
    warnings: list[str] = []
    kwargs = {"body": kopf.Body(intent(False)), "old": None, "operation": "CREATE", "warnings": warnings, "memo": engines,
              "composition_index": {}, "policy_index": {"enc": [policy()]}, "exception_index": {}}
    with pytest.raises(kopf.AdmissionError, match="enc/encrypted"):
        asyncio.run(invoke(handler, settings=kopf.OperatorSettings(), kwargs=kwargs))
    assert threads and threads[0].startswith("paved-admission")
