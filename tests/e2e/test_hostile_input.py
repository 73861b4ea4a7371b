"""Hostile input against the real parts: every case of support.hostile, in one batch.

The API server, Paved's admission webhook and `paved run` (deploy/'s RBAC, moto as its AWS,
OpenBao as its Vault with the operator's own policy) receive 670 hostile objects: schema
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
Ready. The module prints the table of cases by stopping point and the batch's duration
(bench/bench_hostile.py prints the same on a fresh control plane).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.aws import MotoServer
from fixtures.cluster import Kubectl
from fixtures.operator import OperatorProcess
from fixtures.vault import OpenBao, configure_kubernetes_auth
from paved.dev.moto import FAKE_AWS_ENV
from support.hostile import World, hostile_cases
from support.hostile_run import Batch, Kube, cleanup, prepare_backends, run_batch

pytestmark = [pytest.mark.cluster, pytest.mark.aws, pytest.mark.vault]

ISSUER = "oidc.paved.test/id/HOSTILE"


@pytest.fixture(scope="module")
def hostile(operator: OperatorProcess, control_plane: Any, kube_admin: Any, kubectl: Kubectl, openbao: OpenBao,
            moto_server: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Batch]:
    """One batch of every case, against the session's operator restarted as a platform runs it:
    moto as its AWS (its cluster network in the RDS Composition), OpenBao as its Vault (its own
    policy), IAM roles enabled in the default AgentIdentity composition. Afterwards everything of
    the batch is deleted and the operator goes back to the session's plain environment."""
    kube = Kube(kube_admin, timeout=90)
    world = World.new(vault_addr=openbao.addr, aws_endpoint=moto_server.endpoint_url, aws_region=moto_server.region)
    cases = hostile_cases(world)
    configure_kubernetes_auth(openbao, control_plane, mount="kubernetes")
    composition = kube.get("Composition", "agent-identity-default") or {}
    issuer = (((composition.get("spec") or {}).get("parameters") or {}).get("aws") or {}).get("oidcIssuer")
    if not issuer:
        kubectl("patch", "composition", "agent-identity-default", "--type=merge",
                "-p", json.dumps({"spec": {"parameters": {"aws": {"oidcIssuer": ISSUER}}}}))
    token = prepare_backends(world, openbao.client, moto_server, control_plane)
    operator.env = {**moto_server.operator_env(), **openbao.operator_env(("kubernetes",))}
    operator.restart()
    batch: Batch | None = None
    try:
        batch = run_batch(kube, operator, moto_server, openbao.client, world, cases,
                          vault_ca=Path(openbao.ca_cert).read_text(), vault_token=token,
                          aws_keys=(FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"], FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"]))
        report = tmp_path_factory.mktemp("hostile") / "cases.txt"
        report.write_text("\n".join(o.describe() for o in batch.run.outcomes.values()) + "\n")
        print(f"\n{batch.report()}\n(every case's outcome: {report})")
        yield batch
    finally:
        if batch is not None:
            cleanup(kube, world, batch.run)
        if not issuer:
            kubectl("patch", "composition", "agent-identity-default", "--type=merge",
                    "-p", json.dumps({"spec": {"parameters": {"aws": {"oidcIssuer": ""}}}}), check=False)
        operator.env = {}
        operator.restart()


def test_every_case_stops_where_it_may_naming_the_field_it_attacked(hostile: Batch) -> None:
    cases = hostile.run.cases
    assert len(cases) >= 200
    assert {case.attack for case in cases} >= {"schema", "oversized", "unicode", "traversal", "jinja", "cel",
                                               "delegation", "names"}
    wrong = [outcome.describe() for outcome in hostile.run.unexpected()]
    assert not wrong, f"{len(wrong)} cases did not stop as expected:\n" + "\n".join(wrong)


def test_the_operator_stayed_up_and_logged_no_unexpected_error(hostile: Batch) -> None:
    assert hostile.alive and hostile.pid_before == hostile.pid_after, "the operator restarted or died"
    assert hostile.watch.pids == {hostile.pid_before}
    assert not hostile.watch.unexpected_errors(), "\n".join(hostile.watch.unexpected_errors()[:40])
    assert "error" not in hostile.run.by_stop(), [o.describe() for o in hostile.run.outcomes.values() if o.stop == "error"]


def test_a_refused_case_leaves_nothing_behind(hostile: Batch) -> None:
    assert not hostile.partial(), hostile.new_cloud
    assert not hostile.children
    assert not hostile.leaked, f"the victim's value reached Secrets {hostile.leaked}"


def test_unrelated_intents_keep_their_status_and_new_ones_become_ready(hostile: Batch) -> None:
    for name, before in hostile.good_before.items():
        after = hostile.good_after_batch[name]
        assert after.get("status") == "True", (name, after)
        assert after.get("lastTransitionTime") == before.get("lastTransitionTime"), (name, before, after)
    assert hostile.good_new and all(c.get("status") == "True" for c in hostile.good_new.values())
