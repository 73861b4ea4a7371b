"""Hostile input against the real parts: every case of support.hostile, in one batch.

The API server, Paved's admission webhook and `paved run` (deploy/'s RBAC, moto as its AWS,
OpenBao as its Vault with the operator's own policy) receive 500+ hostile objects: schema
violations of every kind generated from the CRDs, 1 MiB strings and 10,000-item lists,
control and bidirectional characters, remote keys that try to leave a ClusterSecretStore's
prefix, Jinja2 sandbox escapes and resource bombs (Compositions and ExternalSecretRef
templates), CEL cost bombs, delegation cycles and chains, and names at the 63/253-character
limits. Each must stop where its case says (the schema, the webhook, the handler's Ready
condition, or be accepted and harmless) with a message naming the field it attacked.

Meanwhile (support.hostile_run.OperatorWatch) the operator must stay the same process,
ready, and log no unexpected error; afterwards nothing may be left in moto or OpenBao for a
refused case, no Kubernetes object may be owned by one, no Secret may hold the value of a
key outside the namespace's prefix, and intents unrelated to the batch must keep (and reach)
Ready. The module prints the table of cases by stopping point, and the batch's duration.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fixtures.aws import MotoServer
from fixtures.cluster import Kubectl
from fixtures.operator import OperatorProcess
from fixtures.vault import OpenBao, configure_kubernetes_auth
from paved.dev.moto import FAKE_AWS_ENV
from support.hostile import World, agent_spec, database_spec, hostile_cases, infrastructure, obj, ref_spec, remote_secrets
from support.hostile_run import CloudResource, HostileRun, Kube, OperatorWatch, cloud_resources, partial_resources, ready_condition

pytestmark = [pytest.mark.cluster, pytest.mark.aws, pytest.mark.vault]

MAX_OUTAGE_SECONDS = 10.0  # the longest the operator may stop answering /readyz during the batch
ISSUER = "oidc.paved.test/id/HOSTILE"
GOOD_KINDS = ("AgentIdentity", "ExternalSecretRef", "DatabaseIntent")


@dataclass
class Result:
    world: World
    run: HostileRun
    watch: OperatorWatch
    pid_before: int | None
    pid_after: int | None
    alive: bool
    new_cloud: set[CloudResource]
    good_before: dict[str, dict[str, Any]]  # name -> its Ready condition before the batch
    good_after_batch: dict[str, dict[str, Any]] = field(default_factory=dict)
    good_new: dict[str, dict[str, Any]] = field(default_factory=dict)
    children: list[str] = field(default_factory=list)
    leaked: list[str] = field(default_factory=list)


def good_intents(world: World, stem: str) -> list[dict[str, Any]]:
    """One intent of each composed kind that must become Ready whatever the batch does."""
    ns = world.main
    return [
        obj("AgentIdentity", f"{stem}-agent", agent_spec(), ns),
        obj("ExternalSecretRef", f"{stem}-ref", ref_spec(world.vault_store, world.key(ns)), ns),
        obj("DatabaseIntent", f"{stem}-db", database_spec(), ns),
    ]


def wait_ready(kube: Kube, bodies: list[dict[str, Any]], timeout: float = 120.0) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    conditions: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        conditions = {b["metadata"]["name"]: ready_condition(kube.get(b["kind"], b["metadata"]["name"], b["metadata"].get("namespace")))
                      for b in bodies}
        if all(c.get("status") == "True" for c in conditions.values()):
            return conditions
        time.sleep(1.0)
    pytest.fail(f"not Ready within {timeout:.0f}s: {json.dumps(conditions, indent=1)}")


def prepare_backends(world: World, openbao: OpenBao, moto_server: MotoServer) -> str:
    """The remote secrets in OpenBao's KV and in Secrets Manager; a Vault token reading `teams/*`."""
    vault = openbao.client
    for key, value in remote_secrets(world).items():
        vault.secrets.kv.v2.create_or_update_secret(path=key, secret=value, mount_point="secret")
        moto_server.client("secretsmanager").create_secret(Name=key, SecretString=json.dumps(value))
    vault.sys.create_or_update_policy(f"{world.prefix}-teams", 'path "secret/data/teams/*" { capabilities = ["read"] }\n'
                                                              'path "secret/metadata/teams/*" { capabilities = ["read"] }')
    return vault.auth.token.create(policies=[f"{world.prefix}-teams"], ttl="2h")["auth"]["client_token"]


def cleanup(kube: Kube, kubectl: Kubectl, world: World, run: HostileRun) -> None:
    """Intents first, while the operator runs (their finalizers need it), then everything of the world."""
    from paved.api.kinds import INTENT_KINDS, kind_info

    namespaces = run.namespaces()
    plurals = ",".join(kind_info(kind).plural for kind in INTENT_KINDS)
    for namespace in namespaces:
        kubectl("delete", plurals, "--all", "-n", namespace, "--wait=false", check=False)
    deadline = time.monotonic() + 90
    for namespace in namespaces:
        for kind in INTENT_KINDS:
            while kube.list(kind, namespace) and time.monotonic() < deadline:
                time.sleep(1)
    for kind in ("Composition", "IntentPolicy", "ClusterSecretStore"):
        for item in kube.list(kind):
            if item["metadata"]["name"].startswith(world.prefix):
                kube.delete(kind, item["metadata"]["name"])
    for namespace in namespaces:
        kube.delete("Namespace", namespace)
    for name in (f"{world.vault_store}-token", f"{world.aws_store}-keys"):
        kube.delete("Secret", name, "paved-system")


@pytest.fixture(scope="module")
def hostile(operator: OperatorProcess, control_plane: Any, kube_admin: Any, kubectl: Kubectl, openbao: OpenBao,
            moto_server: MotoServer) -> Iterator[Result]:
    kube = Kube(kube_admin, timeout=90)
    world = World.new(vault_addr=openbao.addr, aws_endpoint=moto_server.endpoint_url, aws_region=moto_server.region)
    cases = hostile_cases(world)
    run = HostileRun(kube, world, cases)

    # The operator as a platform runs it: moto as its AWS, OpenBao as its Vault (its own policy).
    configure_kubernetes_auth(openbao, control_plane, mount="kubernetes")
    composition = kube.get("Composition", "agent-identity-default") or {}
    issuer = (((composition.get("spec") or {}).get("parameters") or {}).get("aws") or {}).get("oidcIssuer")
    if not issuer:
        kubectl("patch", "composition", "agent-identity-default", "--type=merge",
                "-p", json.dumps({"spec": {"parameters": {"aws": {"oidcIssuer": ISSUER}}}}))
    token = prepare_backends(world, openbao, moto_server)
    operator.env = {**moto_server.operator_env(), **openbao.operator_env(("kubernetes",))}
    operator.restart()
    try:
        for body in infrastructure(world, cases, vault_token=token, vault_ca=Path(openbao.ca_cert).read_text(),
                                   aws_keys=(FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"], FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"])):
            kube.apply(body)
        wait_ready(kube, [obj("ClusterSecretStore", world.vault_store, {}), obj("ClusterSecretStore", world.aws_store, {}),
                          obj("SecretStore", world.tenant_store, {}, world.main)])
        before = good_intents(world, "good-before")
        for body in before:
            kube.apply(body)
        good_before = wait_ready(kube, before)
        cloud_before = cloud_resources(moto_server, openbao.client)
        run.apply_setup()
        pid_before = operator.pid
        with OperatorWatch(operator) as watch:
            run.apply_cases()
            run.settle()
            after = good_intents(world, "good-after")
            for body in after:
                kube.apply(body)
            good_new = wait_ready(kube, after)
        new_cloud = cloud_resources(moto_server, openbao.client) - cloud_before
        result = Result(world, run, watch, pid_before, operator.pid, operator.alive(), new_cloud, good_before,
                        good_new=good_new)
        result.good_after_batch = {b["metadata"]["name"]: ready_condition(kube.get(b["kind"], b["metadata"]["name"], world.main))
                                   for b in before}
        result.children = run.children_of_refused()
        result.leaked = run.secrets_holding(world.marker)
        print(f"\n{len(cases)} hostile cases; operator processed the batch in {run.batch_seconds:.1f}s "
              f"(longest outage {watch.longest_outage:.1f}s, {watch.samples} readiness samples)\n{run.table()}\n"
              + "\n".join(run.slowest()))
        yield result
    finally:
        cleanup(kube, kubectl, world, run)
        if not issuer:
            kubectl("patch", "composition", "agent-identity-default", "--type=merge",
                    "-p", json.dumps({"spec": {"parameters": {"aws": {"oidcIssuer": ""}}}}), check=False)
        operator.env = {}
        operator.restart()


def test_every_case_stops_where_it_may_naming_the_field_it_attacked(hostile: Result) -> None:
    cases = hostile.run.cases
    assert len(cases) >= 200
    assert {case.attack for case in cases} >= {"schema", "oversized", "unicode", "traversal", "jinja", "cel",
                                               "delegation", "names"}
    wrong = [outcome.describe() for outcome in hostile.run.unexpected()]
    assert not wrong, f"{len(wrong)} cases did not stop as expected:\n" + "\n".join(wrong)


def test_the_operator_stayed_up_and_logged_no_unexpected_error(hostile: Result) -> None:
    assert hostile.alive and hostile.pid_before == hostile.pid_after, "the operator restarted or died"
    assert hostile.watch.pids == {hostile.pid_before}
    assert hostile.watch.longest_outage <= MAX_OUTAGE_SECONDS
    assert not hostile.watch.unexpected_errors(), "\n".join(hostile.watch.unexpected_errors()[:40])
    slowest = max(hostile.run.outcomes.values(), key=lambda o: o.admission_seconds)
    assert slowest.stop != "error", slowest.describe()


def test_a_refused_case_leaves_nothing_behind(hostile: Result) -> None:
    assert not partial_resources(hostile.new_cloud, hostile.run.handled_uids() | good_uids(hostile)), hostile.new_cloud
    assert not hostile.children
    assert not hostile.leaked, f"the victim's value reached Secrets {hostile.leaked}"


def test_unrelated_intents_keep_their_status_and_new_ones_become_ready(hostile: Result) -> None:
    for name, before in hostile.good_before.items():
        after = hostile.good_after_batch[name]
        assert after.get("status") == "True", (name, after)
        assert after.get("lastTransitionTime") == before.get("lastTransitionTime"), (name, before, after)
    assert all(c.get("status") == "True" for c in hostile.good_new.values())


def good_uids(hostile: Result) -> set[str]:
    kube = hostile.run.kube
    uids = set()
    for stem in ("good-before", "good-after"):
        for body in good_intents(hostile.world, stem):
            live = kube.get(body["kind"], body["metadata"]["name"], hostile.world.main)
            if live:
                uids.add(live["metadata"]["uid"])
    return uids
