"""paved.kube.watch.Informer on the real API server: listing, events, re-listing, stopping."""

from __future__ import annotations

import threading
import time
from typing import Any

from fixtures.cluster import Kubectl, wait_for

from paved.kube.watch import Informer, _Cursor

SELECTOR = "paved.dev/test-watch=yes"


class Recorder:
    """The events an informer delivered, as (type, name) pairs."""

    def __init__(self) -> None:
        self.events: list[tuple[str | None, str]] = []
        self.lock = threading.Lock()

    def __call__(self, type: str | None, body: dict[str, Any]) -> None:
        assert body["kind"] == "ConfigMap" and body["apiVersion"] == "v1"  # set on listed items too
        with self.lock:
            self.events.append((type, body["metadata"]["name"]))

    def seen(self, event: tuple[str | None, str]) -> bool:
        with self.lock:
            return event in self.events


def configmap(kubectl: Kubectl, namespace: str, name: str, labelled: bool = True) -> None:
    kubectl("create", "configmap", name, "-n", namespace, "--from-literal=k=v")
    if labelled:
        kubectl("label", "configmap", name, "-n", namespace, SELECTOR)


def test_lists_then_watches_only_the_selected_objects(admin_kube_client: None, kubectl: Kubectl, namespace: str) -> None:
    configmap(kubectl, namespace, "before")
    configmap(kubectl, namespace, "other", labelled=False)
    recorder = Recorder()
    informer = Informer("v1", "ConfigMap", recorder, label_selector=SELECTOR, namespaces=[namespace], page_size=1)
    informer.start()
    try:
        assert informer.listed.wait(30)
        assert recorder.events == [(None, "before")]
        configmap(kubectl, namespace, "after")  # created unlabelled, then labelled: selected from then on
        wait_for(lambda: recorder.seen(("ADDED", "after")), what="ADDED after")
        kubectl("annotate", "configmap", "after", "-n", namespace, "touched=1")
        wait_for(lambda: recorder.seen(("MODIFIED", "after")), what="MODIFIED after")
        kubectl("delete", "configmap", "before", "-n", namespace)
        wait_for(lambda: recorder.seen(("DELETED", "before")), what="DELETED before")
        assert all(name != "other" for _, name in recorder.events)
    finally:
        informer.stop()


def test_a_relisting_reports_objects_deleted_meanwhile(admin_kube_client: None, kubectl: Kubectl, namespace: str) -> None:
    configmap(kubectl, namespace, "stays")
    configmap(kubectl, namespace, "goes")
    recorder = Recorder()
    informer = Informer("v1", "ConfigMap", recorder, label_selector=SELECTOR, namespaces=[namespace])
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    cursor = _Cursor()
    informer._list(path, cursor)
    version = cursor.version
    assert sorted(name for _, name in recorder.events) == ["goes", "stays"] and {t for t, _ in recorder.events} == {None}
    kubectl("delete", "configmap", "goes", "-n", namespace)  # while no watch was open
    recorder.events.clear()
    informer._list(path, cursor)
    assert int(cursor.version or 0) > int(version or 0)
    assert sorted(recorder.events, key=str) == [("DELETED", "goes"), (None, "stays")]
    assert [item["metadata"]["name"] for item in cursor.known.values()] == ["stays"]


def test_stop_ends_a_watch_that_is_waiting_for_events(admin_kube_client: None, namespace: str) -> None:
    informer = Informer("v1", "ConfigMap", Recorder(), label_selector=SELECTOR, namespaces=[namespace])
    informer.start()
    assert informer.listed.wait(30)
    time.sleep(0.5)  # the watch is open and quiet
    started = time.monotonic()
    informer.stop(timeout=10)
    assert time.monotonic() - started < 5
    assert not any(thread.is_alive() for thread in threading.enumerate() if thread.name.startswith("paved-watch-configmap"))


def test_a_broken_watch_resumes_after_the_last_event_delivered(admin_kube_client: None, kubectl: Kubectl, namespace: str) -> None:
    recorder = Recorder()
    informer = Informer("v1", "ConfigMap", recorder, label_selector=SELECTOR, namespaces=[namespace])
    informer.start()
    try:
        assert informer.listed.wait(30)
        configmap(kubectl, namespace, "first")
        wait_for(lambda: recorder.seen(("ADDED", "first")), what="ADDED first")
        with informer._lock:
            watches = list(informer._open)
        for response in watches:
            response.shutdown()  # the connection breaks mid-stream
        configmap(kubectl, namespace, "second")
        wait_for(lambda: recorder.seen(("ADDED", "second")), timeout=15, what="ADDED second after the break")
        assert recorder.events.count(("ADDED", "first")) == 1  # not delivered again
    finally:
        informer.stop()


def test_a_kind_not_served_yet_is_retried_not_fatal(admin_kube_client: None) -> None:
    informer = Informer("example.com/v1", "Widget", Recorder())
    informer.start()
    threads = list(informer._threads)
    try:
        time.sleep(1.5)  # discovery answered 404: the thread backs off and asks again
        assert not informer.listed.is_set()
        assert threads and all(thread.is_alive() for thread in threads)
    finally:
        informer.stop(timeout=10)
    assert not any(thread.is_alive() for thread in threads)
