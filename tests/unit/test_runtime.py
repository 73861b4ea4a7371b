"""Kopf settings of `paved run` (pure: no I/O), the two registries, and the fence around Kopf's writes."""

from __future__ import annotations

import logging

import kopf

from paved import runtime
from paved.api.kinds import kind_info
from paved.handlers import leading_registry, serving_registry
from paved.kube.apply import MANAGED_KINDS
from paved.runtime import settings as kopf_settings


def test_settings_use_paved_prefixes_and_bounded_resources() -> None:
    settings = kopf_settings.leading_settings()
    assert settings.persistence.finalizer == "paved.dev/cleanup"
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert settings.persistence.progress_storage.prefix == "paved.dev"
    assert isinstance(settings.persistence.diffbase_storage, kopf.AnnotationsDiffBaseStorage)
    assert settings.persistence.diffbase_storage.prefix == "paved.dev"
    assert settings.posting.level == logging.WARNING
    assert settings.watching.server_timeout < settings.watching.client_timeout
    assert settings.watching.connect_timeout
    assert settings.watching.chunk_size == kopf_settings.LIST_CHUNK
    assert settings.execution.max_workers == kopf_settings.MAX_WORKERS
    assert settings.peering.standalone is True
    # every child kind, and the operator's Namespace (test_target_secrets_of_refs_... for Secret's)
    assert len(settings.watching.label_selectors) == len(MANAGED_KINDS) + 1
    selectors = set(settings.watching.label_selectors._items.values())
    assert all(s.startswith("app.kubernetes.io/managed-by=paved") or s.startswith("kubernetes.io/metadata.name=") for s in selectors)


def test_the_serving_operator_posts_nothing_and_serves_the_webhook() -> None:
    server = kopf.WebhookServer()
    settings = kopf_settings.serving_settings(server)
    assert settings.posting.enabled is False and settings.admission.server is server
    assert settings.peering.standalone is True


def test_namespaces_option() -> None:
    assert runtime.namespaces_option(["a,b", " c ", ""]) == ("a", "b", "c")


def test_the_leading_registry_has_identity_compositions_and_drift_and_the_serving_one_only_reads() -> None:
    registry = leading_registry()
    ids = {handler.id for handler in registry._changing.get_all_handlers()}
    assert {"reconcile_identity", "finalize_identity"} <= ids
    watching = {handler.id for handler in registry._watching.get_all_handlers()}
    assert "composition_changed" in watching and "drift-role" in watching
    assert "composition_index" in {handler.id for handler in registry._indexing.get_all_handlers()}
    serving = serving_registry(None)
    for handlers in (serving._changing, serving._watching, serving._spawning):
        assert not list(handlers.get_all_handlers())  # nothing that writes, whoever leads
    assert {"composition_index", "policy_index", "exception_index"} == {h.id for h in serving._indexing.get_all_handlers()}
    logins = {handler.id for handler in registry._activities.get_all_handlers()}
    assert "login_via_client" in logins  # an explicit registry has no default login


def test_kopfs_writes_go_through_the_fence() -> None:
    """The private request function wrapped by fence_kopf_writes is still the one every Kopf
    patch and post goes through (a Kopf upgrade that changes this must fail here)."""
    import inspect

    from kopf._cogs.clients import api

    for function in (api.patch, api.post, api.delete):
        assert "await request(" in inspect.getsource(function)
    kopf_settings.fence_kopf_writes()
    assert getattr(api.request, "paved_fenced", False)


def test_success_lines_of_busy_watch_handlers_are_dropped_and_the_rest_kept() -> None:
    quiet = kopf_settings.QuietWatchSuccess()

    def kept(message: str) -> bool:
        return quiet.filter(logging.LogRecord("kopf.objects", logging.INFO, "", 0, message, None, None))

    for busy in ("drift-secret", "audit-databaseintents", "secretstores-cache"):
        assert not kept(f"Handler '{busy}' succeeded.")
    assert kept("Handler 'secretstores-auth' succeeded.")  # an authentication check: worth a line
    assert kept("Handler 'register_identity' succeeded.")
    assert kept("Handler 'audit-databaseintents' failed with an exception. Will ignore.")


def test_watch_only_kinds_have_no_handler_that_reads_kopfs_diff_base() -> None:
    registry = leading_registry()
    plurals = {"Secret": "secrets"}
    assert {kind for _, kind in kopf_settings.WATCH_ONLY_KINDS} == set(plurals)
    for api_version, kind in kopf_settings.WATCH_ONLY_KINDS:
        group, _, version = api_version.rpartition("/")
        resource = kopf.Resource(group, version, plurals[kind], kind=kind, namespaced=True)
        assert registry._watching.has_handlers(resource=resource)
        # an on.create/update/resume/delete handler or a daemon on one of these kinds needs
        # Kopf's diff base: take the kind out of WATCH_ONLY_KINDS
        assert not registry._changing.has_handlers(resource=resource), kind
        assert not registry._spawning.has_handlers(resource=resource), kind


def test_the_diff_base_is_skipped_for_watch_only_kinds_only() -> None:
    storage = kopf_settings.leading_settings().persistence.diffbase_storage
    secret = kopf.Body({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "dg=="}})
    assert storage.build(body=secret) is None and storage.fetch(body=secret) is None
    intent = kopf.Body({"apiVersion": "paved.dev/v1alpha1", "kind": "DatabaseIntent", "metadata": {"name": "db"}, "spec": {"engine": "postgres"}})
    assert storage.build(body=intent) == {"spec": {"engine": "postgres"}}


def test_target_secrets_of_refs_are_left_out_of_kopfs_watch_and_selected_by_paveds_own() -> None:
    from paved.secretsync import target
    from paved.secretsync.model import ref_spec_from

    settings = kopf_settings.leading_settings()
    secrets = kopf.Resource("", "v1", "secrets", kind="Secret", namespaced=True)
    selector = ",".join(settings.watching.label_selectors.collect(secrets))
    assert selector == f"app.kubernetes.io/managed-by=paved,!{target.TARGET_LABEL}"
    namespaces = kopf.Resource("", "v1", "namespaces", kind="Namespace", namespaced=False)
    assert list(settings.watching.label_selectors.collect(namespaces)) == ["kubernetes.io/metadata.name=paved-system"]
    spec = kind_info("ExternalSecretRef").parse_spec({"storeRef": {"name": "s"}, "target": {"name": "t", "labels": {"team": "a"}},
                                                      "data": [{"secretKey": "k", "remoteRef": {"key": "r"}}]})
    owned = target.owned_secret(ref_spec_from("ns", "ref", "uid-1", 1, spec), {"k": b"v"}, "digest")  # type: ignore[arg-type]
    assert owned["metadata"]["labels"] == {"team": "a", target.TARGET_LABEL: target.TARGET_LABEL_VALUE}
    handlers = {handler.id for handler in leading_registry()._watching.get_all_handlers()}
    assert "externalsecretref" not in handlers and "audit-externalsecretrefs" not in handlers
    assert "audit-databaseintents" in handlers and "audit-start" in handlers
