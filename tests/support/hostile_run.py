"""Apply the hostile cases (support.hostile) to a real API server and operator, and judge them.

    kube = Kube(api_client)                       # a kubernetes ApiClient as cluster admin
    token = prepare_backends(world, vault, moto, plane)  # remote secrets, the cluster network; a Vault token
    batch = run_batch(kube, operator, moto, vault, world, cases, vault_ca=..., vault_token=token)
    print(batch.run.table())                      # cases by attack and stopping point
    cleanup(kube, world, batch.run)

`run_batch` applies what the cases need (namespaces, stores, the Compositions and policies of
their `setup`), makes a few good intents Ready, then applies every case while an
OperatorWatch samples the operator's health and log, waits until every accepted case settled,
makes more good intents Ready, and reports what is new in moto and OpenBao.

Where a case stopped is read from what the API server answered (`schema`: refused with a
validation message; `webhook`: refused by Paved's admission webhook) and, for an accepted
object, from its Ready condition once it settled (`handler`: False naming the field;
`handled`: True). Requests are plain JSON through the ApiClient's connection pool, so an
answer is a status code and a body, never an exception.

Shared by tests/e2e/test_hostile_input.py and bench/bench_hostile.py.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hvac.exceptions

from paved import API_VERSION
from paved.api.common import READY, get_condition
from paved.api.kinds import BY_KIND
from paved.dev.demo import use_cluster_network
from paved.render.helpers import stable_id
from support.hostile import (
    HANDLED, HANDLER, SCHEMA, STOPS, WEBHOOK, Case, World, agent_spec, database_spec, infrastructure, obj, ref_spec,
    remote_secrets,
)
from support.hostile import namespaces as all_namespaces

_BUILTIN: dict[str, tuple[str, str, bool]] = {  # kind -> (api prefix, plural, namespaced)
    "Namespace": ("/api/v1", "namespaces", False),
    "Secret": ("/api/v1", "secrets", True),
    "Service": ("/api/v1", "services", True),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "ConfigMap": ("/api/v1", "configmaps", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "StatefulSet": ("/apis/apps/v1", "statefulsets", True),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies", True),
}
CHILD_KINDS = ("Secret", "ServiceAccount", "ConfigMap", "Role", "RoleBinding", "NetworkPolicy", "Deployment", "Service",
               "StatefulSet")
FIELD_MANAGER = "paved-hostile-test"
_PATH = re.compile(r"""(?:spec|metadata)(?:\.[\w/-]+|\[[^\]]*\])*|resource "[^"]*"|[\w-]+/[\w-]+ \((?:Enforce|Warn)\)""")


class Kube:
    """Raw JSON requests to the API server: (status, body) for every answer, errors included."""

    def __init__(self, api: Any, timeout: float = 60.0) -> None:
        self.api = api
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
                query: Mapping[str, str] | None = None) -> tuple[int, Any]:
        url = self.api.configuration.host + path
        if query:
            url += "?" + "&".join(f"{key}={value}" for key, value in query.items())
        headers = {"Accept": "application/json", "Content-Type": content_type}
        token = self.api.configuration.get_api_key_with_prefix("BearerToken") if self.api.configuration.api_key else None
        if token:
            headers["Authorization"] = token
        # The client serialises JSON bodies itself and sends text bodies as they are.
        payload = body if body is None or content_type == "application/json" else json.dumps(body)
        response = self.api.rest_client.request(method, url, headers=headers, body=payload, _request_timeout=self.timeout)
        data = response.read()
        try:
            return response.status, json.loads(data) if data else None
        except ValueError:
            return response.status, {"message": data.decode(errors="replace")}

    @staticmethod
    def collection(kind: str, namespace: str | None) -> str:
        if kind in _BUILTIN:
            prefix, plural, namespaced = _BUILTIN[kind]
        else:
            info = BY_KIND[kind]
            prefix, plural, namespaced = f"/apis/{API_VERSION}", info.plural, info.namespaced
        return f"{prefix}/namespaces/{namespace}/{plural}" if namespaced else f"{prefix}/{plural}"

    def path(self, body: Mapping[str, Any]) -> str:
        metadata = body["metadata"]
        return f"{self.collection(body['kind'], metadata.get('namespace'))}/{metadata['name']}"

    def create(self, body: Mapping[str, Any]) -> tuple[int, Any]:
        """POST as `kubectl create` does, refusing unknown fields (kubectl's strict field validation)."""
        collection = self.collection(body["kind"], body["metadata"].get("namespace"))
        return self.request("POST", collection, body, query={"fieldValidation": "Strict"})

    def apply(self, body: Mapping[str, Any]) -> Any:
        """Server-side apply; raises on refusal (for objects that must be accepted)."""
        status, answer = self.request("PATCH", self.path(body), body, content_type="application/apply-patch+yaml",
                                      query={"fieldManager": FIELD_MANAGER, "force": "true", "fieldValidation": "Strict"})
        if status >= 300:
            raise RuntimeError(f"apply {body['kind']} {body['metadata']['name']} failed ({status}): {(answer or {}).get('message')}")
        return answer

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        status, answer = self.request("GET", f"{self.collection(kind, namespace)}/{name}")
        return answer if status == 200 else None

    def list(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        status, answer = self.request("GET", self.collection(kind, namespace))
        if status != 200:
            raise RuntimeError(f"list {kind} in {namespace} failed ({status}): {(answer or {}).get('message')}")
        return list(answer.get("items") or [])

    def delete(self, kind: str, name: str, namespace: str | None = None) -> None:
        self.request("DELETE", f"{self.collection(kind, namespace)}/{name}")


def ready_condition(body: Mapping[str, Any] | None) -> dict[str, Any]:
    return get_condition(((body or {}).get("status") or {}).get("conditions"), READY) or {}


@dataclass
class Outcome:
    """Where one case stopped, what the refusal said, and the field it named."""

    case: Case
    stop: str | None = None  # one of STOPS; "error" for a 5xx or a timeout; None: undecided
    message: str = ""
    reason: str = ""
    uid: str | None = None
    admission_seconds: float = 0.0
    settled_at: float | None = None  # monotonic time its final state was first seen

    @property
    def names_field(self) -> bool:
        return bool(self.case.field) and self.case.field in self.message

    @property
    def named(self) -> str:
        """The field the refusal named: the case's own when it appears, else the first path in the message."""
        if self.names_field:
            return self.case.field
        found = _PATH.search(self.message)
        return found.group(0) if found else ""

    @property
    def as_expected(self) -> bool:
        if self.stop not in self.case.stops:
            return False
        return self.stop == HANDLED or self.names_field

    def describe(self) -> str:
        shown = re.sub(r"(.)\1{15,}", lambda m: f"{m.group(1)}x{len(m.group(0))}", self.message)  # 1 MiB values
        shown = shown if len(shown) < 600 else shown[:597] + "..."
        return (f"{self.case.id}: stopped at {self.stop} (expected {'/'.join(sorted(self.case.stops))}); "
                f"field {self.case.field!r}, named {self.named!r}; {self.reason} {shown}")


class HostileRun:
    """The cases of one world, applied once, with the outcome of each."""

    def __init__(self, kube: Kube, world: World, cases: list[Case], *, workers: int = 6) -> None:
        self.kube = kube
        self.world = world
        self.cases = cases
        self.workers = workers
        self.outcomes: dict[str, Outcome] = {case.id: Outcome(case) for case in cases}
        self.started: float | None = None
        self.finished: float | None = None

    # --- setup ----------------------------------------------------------------------------

    def setup_objects(self) -> list[dict[str, Any]]:
        seen: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        for case in self.cases:
            for body in case.setup:
                seen.setdefault((body["kind"], body["metadata"].get("namespace"), body["metadata"]["name"]), body)
        return list(seen.values())

    def apply_setup(self, timeout: float = 90.0) -> None:
        """Apply what the cases need first and wait until the operator marked each Ready: the
        webhook's indexes then hold the IntentPolicies the CEL cases rely on."""
        bodies = self.setup_objects()
        for body in bodies:
            self.kube.apply(body)
        deadline = time.monotonic() + timeout
        waiting = [body for body in bodies if body["kind"] in BY_KIND]
        while waiting and time.monotonic() < deadline:
            waiting = [b for b in waiting
                       if ready_condition(self.kube.get(b["kind"], b["metadata"]["name"], b["metadata"].get("namespace"))).get("status") != "True"]
            if waiting:
                time.sleep(0.5)
        if waiting:
            raise RuntimeError(f"setup objects not Ready after {timeout:.0f}s: {[b['metadata']['name'] for b in waiting]}")
        time.sleep(2.0)  # every replica's indexes see the same watch events; give them a moment

    # --- apply ----------------------------------------------------------------------------

    def _apply_one(self, case: Case) -> None:
        outcome = self.outcomes[case.id]
        started = time.monotonic()
        try:
            status, answer = self.kube.create(case.body)
        except Exception as error:  # noqa: BLE001 - a timeout is an outcome to report
            outcome.stop, outcome.message = "error", f"{type(error).__name__}: {error}"
            outcome.admission_seconds = time.monotonic() - started
            return
        outcome.admission_seconds = time.monotonic() - started
        answer = answer if isinstance(answer, dict) else {}
        if status < 300:
            outcome.uid = (answer.get("metadata") or {}).get("uid")
            return
        message = str(answer.get("message") or "")
        causes = ((answer.get("details") or {}).get("causes")) or []
        fields = " ".join(str(c.get("field")) for c in causes if c.get("field"))
        outcome.message = f"{message} [{fields}]" if fields else message
        outcome.reason = str(answer.get("reason") or status)
        if status >= 500:
            outcome.stop = "error"
        elif "admission webhook" in message:
            outcome.stop = WEBHOOK
        else:
            outcome.stop = SCHEMA
        outcome.settled_at = time.monotonic()

    def apply_cases(self) -> None:
        """The cases to apply alone (CEL bombs, 10,000-item lists) first, one by one (Case.alone);
        then delegation chains in order (parents first) and everything else concurrently."""
        self.started = time.monotonic()
        for case in self.cases:
            if case.alone:
                self._apply_one(case)
        ordered = [case for case in self.cases if case.attack == "delegation" and not case.alone]
        rest = [case for case in self.cases if case.attack != "delegation" and not case.alone]
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            futures = [pool.submit(self._apply_one, case) for case in rest]
            for case in ordered:
                self._apply_one(case)
            for future in futures:
                future.result()

    # --- settle ---------------------------------------------------------------------------

    def accepted(self) -> list[Outcome]:
        return [o for o in self.outcomes.values() if o.uid is not None]

    def _observe(self, outcome: Outcome, body: Mapping[str, Any] | None) -> None:
        if body is None or (body.get("metadata") or {}).get("uid") != outcome.uid:
            outcome.stop, outcome.message = None, "gone"
            return
        condition = ready_condition(body)
        generation = (body.get("metadata") or {}).get("generation")
        current = condition.get("observedGeneration") in (None, generation)
        outcome.reason = str(condition.get("reason") or "")
        outcome.message = str(condition.get("message") or "")
        if condition.get("status") == "True" and current:
            outcome.stop = HANDLED
        elif condition.get("status") == "False" and current:
            outcome.stop = HANDLER
        else:
            outcome.stop = None

    def observe_all(self) -> None:
        """One LIST per kind and namespace for every accepted case."""
        groups: dict[tuple[str, str | None], list[Outcome]] = {}
        for outcome in self.accepted():
            groups.setdefault((outcome.case.kind, outcome.case.namespace), []).append(outcome)
        for (kind, namespace), outcomes in groups.items():
            items = {item["metadata"]["name"]: item for item in self.kube.list(kind, namespace)}
            for outcome in outcomes:
                self._observe(outcome, items.get(outcome.case.name))

    def settle(self, timeout: float = 240.0, interval: float = 1.0) -> None:
        """Until every accepted case is as expected (or `timeout`); then one last look at all."""
        deadline = time.monotonic() + timeout
        while True:
            self.observe_all()
            now = time.monotonic()
            for outcome in self.accepted():
                if outcome.as_expected and outcome.settled_at is None:
                    outcome.settled_at = now
            if all(o.as_expected for o in self.accepted()) or now >= deadline:
                break
            time.sleep(interval)
        self.finished = time.monotonic()
        time.sleep(2 * interval)
        self.observe_all()  # a state that flips after it looked final is not final

    # --- results --------------------------------------------------------------------------

    def unexpected(self) -> list[Outcome]:
        return [o for o in self.outcomes.values() if not o.as_expected]

    def by_stop(self) -> Counter[str]:
        return Counter(str(o.stop) for o in self.outcomes.values())

    def table(self) -> str:
        """Cases per attack category and stopping point, with totals."""
        attacks = list(dict.fromkeys(case.attack for case in self.cases))
        stops = [*STOPS, "error", "None"]
        counts = Counter((o.case.attack, str(o.stop)) for o in self.outcomes.values())
        used = [s for s in stops if any(counts[(a, s)] for a in attacks)]
        header = f"{'attack':<12}" + "".join(f"{s:>9}" for s in used) + f"{'total':>8}{'named':>8}"
        lines = [header]
        for attack in [*attacks, "total"]:
            selected = [o for o in self.outcomes.values() if attack in ("total", o.case.attack)]
            row = Counter(str(o.stop) for o in selected)
            named = sum(1 for o in selected if o.case.refused and o.names_field)
            refused = sum(1 for o in selected if o.case.refused)
            lines.append(f"{attack:<12}" + "".join(f"{row[s]:>9}" for s in used) + f"{len(selected):>8}"
                         + f"{f'{named}/{refused}':>8}")
        return "\n".join(lines)

    @property
    def batch_seconds(self) -> float:
        """From the first request to the last case seen in its final state (or the end of settle)."""
        start = self.started or time.monotonic()
        settled = [o.settled_at for o in self.outcomes.values() if o.settled_at is not None]
        end = max(settled) if settled and not self.unexpected() else (self.finished or time.monotonic())
        return end - start

    def slowest(self, count: int = 5) -> list[str]:
        """The slowest admission answers and the cases that settled last."""
        start = self.started or 0.0
        answers = sorted(self.outcomes.values(), key=lambda o: o.admission_seconds, reverse=True)[:count]
        settles = sorted((o for o in self.outcomes.values() if o.settled_at), key=lambda o: o.settled_at or 0, reverse=True)[:count]
        return ([f"answer {o.admission_seconds:6.2f}s  {o.case.id}" for o in answers]
                + [f"settled {(o.settled_at or 0) - start:6.1f}s  {o.case.id}" for o in settles])

    def handled_uids(self) -> set[str]:
        return {o.uid for o in self.outcomes.values() if o.uid and o.stop == HANDLED}

    def refused_uids(self) -> set[str]:
        return {o.uid for o in self.outcomes.values() if o.uid and o.stop == HANDLER}

    def namespaces(self) -> list[str]:
        return sorted({o.case.namespace for o in self.outcomes.values() if o.case.namespace})

    # --- what the refused ones left behind ------------------------------------------------

    def children_of_refused(self) -> list[str]:
        """Kubernetes objects owned by a case its handler refused (there must be none)."""
        refused = self.refused_uids()
        found = []
        for namespace in self.namespaces():
            for kind in CHILD_KINDS:
                for item in self.kube.list(kind, namespace):
                    owners = {ref.get("uid") for ref in item["metadata"].get("ownerReferences") or []}
                    if owners & refused:
                        found.append(f"{kind} {namespace}/{item['metadata']['name']}")
        return found

    def secrets_holding(self, marker: str) -> list[str]:
        """Secrets in the cases' namespaces whose data holds `marker` (the victim's value)."""
        found = []
        for namespace in self.namespaces():
            for item in self.kube.list("Secret", namespace):
                for value in (item.get("data") or {}).values():
                    if marker in base64.b64decode(value).decode(errors="replace"):
                        found.append(f"{namespace}/{item['metadata']['name']}")
        return found


# --- cloud: what exists in moto and OpenBao -------------------------------------------------------


@dataclass(frozen=True)
class CloudResource:
    kind: str
    name: str
    uid: str | None  # the paved.dev/uid tag (AWS), or None where the name is all there is (Vault)


def cloud_resources(moto: Any, vault: Any | None) -> set[CloudResource]:
    """RDS instances, DB subnet groups, Paved's security groups and IAM roles (with their paved.dev/uid
    tag), Vault policies and Kubernetes-auth roles."""
    found: set[CloudResource] = set()
    rds = moto.client("rds")
    for instance in rds.describe_db_instances()["DBInstances"]:
        tags = {t["Key"]: t["Value"] for t in instance.get("TagList") or []}
        found.add(CloudResource("RDS instance", instance["DBInstanceIdentifier"], tags.get("paved.dev/uid")))
    for group in rds.describe_db_subnet_groups()["DBSubnetGroups"]:
        tag_list = rds.list_tags_for_resource(ResourceName=group["DBSubnetGroupArn"])["TagList"]
        tags = {t["Key"]: t["Value"] for t in tag_list}
        found.add(CloudResource("DB subnet group", group["DBSubnetGroupName"], tags.get("paved.dev/uid")))
    paved_groups = [{"Name": "tag-key", "Values": ["paved.dev/uid"]}]
    for group in moto.client("ec2").describe_security_groups(Filters=paved_groups)["SecurityGroups"]:
        tags = {t["Key"]: t["Value"] for t in group.get("Tags") or []}
        found.add(CloudResource("security group", group["GroupId"], tags["paved.dev/uid"]))
    iam = moto.client("iam")
    for role in iam.list_roles(PathPrefix="/paved/")["Roles"]:
        tags = {t["Key"]: t["Value"] for t in iam.list_role_tags(RoleName=role["RoleName"])["Tags"]}
        found.add(CloudResource("IAM role", role["RoleName"], tags.get("paved.dev/uid")))
    if vault is not None:
        for policy in vault.sys.list_acl_policies()["data"]["keys"]:
            if policy.startswith("paved-"):
                found.add(CloudResource("Vault policy", policy, None))
        try:
            roles = vault.auth.kubernetes.list_roles(mount_point="kubernetes")["keys"]
        except hvac.exceptions.InvalidPath:  # no role yet: the list is a 404 (any other failure fails the check)
            roles = []
        found.update(CloudResource("Vault role", role, None) for role in roles if role.startswith("paved-"))
    return found


def partial_resources(new: Iterable[CloudResource], allowed_uids: set[str]) -> list[CloudResource]:
    """Resources created during the batch that no accepted, Ready intent accounts for.

    AWS resources carry their intent's uid as a tag; Vault's names end with the stable id of
    it (the default composition's `stable_id(metadata.uid)`)."""
    suffixes = {stable_id(uid) for uid in allowed_uids}
    return [resource for resource in new
            if (resource.uid not in allowed_uids if resource.uid is not None
                else not any(resource.name.endswith(suffix) for suffix in suffixes))]


# --- the operator meanwhile -----------------------------------------------------------------------


@dataclass
class OperatorWatch:
    """Samples the operator's readiness while a batch runs; reads what it logged meanwhile.

    `operator` is a paved.dev.operator.OperatorProcess."""

    operator: Any
    interval: float = 0.5
    samples: int = 0
    longest_outage: float = 0.0
    pids: set[int] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _log_offset: int = 0

    def __enter__(self) -> OperatorWatch:
        path = Path(self.operator.log_path)
        self._log_offset = path.stat().st_size if path.exists() else 0
        self._thread = threading.Thread(target=self._run, name="operator-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        down_since: float | None = None
        while not self._stop.is_set():
            self.samples += 1
            if self.operator.pid:
                self.pids.add(self.operator.pid)
            now = time.monotonic()
            if self.operator.ready():
                down_since = None
            else:
                down_since = down_since or now
                self.longest_outage = max(self.longest_outage, now - down_since)
            self._stop.wait(self.interval)

    def log(self) -> str:
        path = Path(self.operator.log_path)
        with path.open("rb") as handle:
            handle.seek(self._log_offset)
            return handle.read().decode(errors="replace")

    def unexpected_errors(self) -> list[str]:
        """Log lines of tracebacks and of handlers that raised an error Paved did not expect."""
        lines = self.log().splitlines()
        return [line for line in lines if "Traceback" in line or re.search(r"handler \S+ raised", line)
                or "Unhandled" in line]


# --- one whole batch ------------------------------------------------------------------------------


def good_intents(world: World, stem: str) -> list[dict[str, Any]]:
    """One intent of each composed kind that must become Ready whatever the batch does."""
    ns = world.main
    return [
        obj("AgentIdentity", f"{stem}-agent", agent_spec(), ns),
        obj("ExternalSecretRef", f"{stem}-ref", ref_spec(world.vault_store, world.key(ns)), ns),
        obj("DatabaseIntent", f"{stem}-db", database_spec(), ns),
    ]


def wait_ready(kube: Kube, bodies: list[dict[str, Any]], timeout: float = 120.0) -> dict[str, dict[str, Any]]:
    """The Ready condition of each of `bodies` once all are True; RuntimeError naming them otherwise."""
    deadline = time.monotonic() + timeout
    conditions: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        conditions = {b["metadata"]["name"]: ready_condition(kube.get(b["kind"], b["metadata"]["name"], b["metadata"].get("namespace")))
                      for b in bodies}
        if all(c.get("status") == "True" for c in conditions.values()):
            return conditions
        time.sleep(1.0)
    raise RuntimeError(f"not Ready within {timeout:.0f}s: {json.dumps(conditions, indent=1)}")


def prepare_backends(world: World, vault: Any, moto: Any, plane: Any) -> str:
    """The remote secrets in OpenBao's KV (`secret/`) and in Secrets Manager, and moto's cluster
    network in the RDS Composition (`plane`: a paved.dev.controlplane.ControlPlane); returns a
    Vault token that reads `teams/*` (the stores' credentials)."""
    use_cluster_network(plane, moto.cluster_network())  # where the DatabaseIntents' instances go
    for key, value in remote_secrets(world).items():
        vault.secrets.kv.v2.create_or_update_secret(path=key, secret=value, mount_point="secret")
        moto.client("secretsmanager").create_secret(Name=key, SecretString=json.dumps(value))
    policy = f"{world.prefix}-teams"
    vault.sys.create_or_update_policy(policy, 'path "secret/data/teams/*" { capabilities = ["read"] }\n'
                                              'path "secret/metadata/teams/*" { capabilities = ["read"] }')
    return str(vault.auth.token.create(policies=[policy], ttl="2h")["auth"]["client_token"])


@dataclass
class Batch:
    """What one batch did: the run with every outcome, the operator meanwhile, what is left."""

    run: HostileRun
    watch: OperatorWatch
    pid_before: int | None
    pid_after: int | None
    alive: bool
    new_cloud: set[CloudResource]
    good_before: dict[str, dict[str, Any]]  # name -> Ready condition before the batch
    good_after_batch: dict[str, dict[str, Any]]  # the same intents' Ready condition after it
    good_new: dict[str, dict[str, Any]]  # intents created after the batch -> their Ready condition
    good_uids: set[str]
    children: list[str]  # Kubernetes objects owned by a case its handler refused
    leaked: list[str]  # Secrets holding the victim's value

    def partial(self) -> list[CloudResource]:
        return partial_resources(self.new_cloud, self.run.handled_uids() | self.good_uids)

    def report(self) -> str:
        return (f"{len(self.run.cases)} hostile cases; the operator processed the batch in {self.run.batch_seconds:.1f}s "
                f"(longest outage {self.watch.longest_outage:.1f}s, {self.watch.samples} readiness samples)\n"
                f"{self.run.table()}\n" + "\n".join(self.run.slowest()))


def run_batch(kube: Kube, operator: Any, moto: Any, vault: Any, world: World, cases: list[Case], *,
              vault_ca: str, vault_token: str, aws_keys: tuple[str, str]) -> Batch:
    """Everything between a running operator (moto as its AWS, OpenBao as its Vault) and the verdict."""
    run = HostileRun(kube, world, cases)
    for body in infrastructure(world, cases, vault_token=vault_token, vault_ca=vault_ca, aws_keys=aws_keys):
        kube.apply(body)
    wait_ready(kube, [obj("ClusterSecretStore", world.vault_store, {}), obj("ClusterSecretStore", world.aws_store, {}),
                      obj("SecretStore", world.tenant_store, {}, world.main)])
    before = good_intents(world, "good-before")
    for body in before:
        kube.apply(body)
    good_before = wait_ready(kube, before)
    cloud_before = cloud_resources(moto, vault)
    run.apply_setup()
    pid_before = operator.pid
    with OperatorWatch(operator) as watch:
        run.apply_cases()
        run.settle()
        after = good_intents(world, "good-after")
        for body in after:
            kube.apply(body)
        good_new = wait_ready(kube, after)
    good = [*before, *after]
    live = [kube.get(b["kind"], b["metadata"]["name"], world.main) for b in good]
    return Batch(
        run, watch, pid_before, operator.pid, operator.alive(), cloud_resources(moto, vault) - cloud_before, good_before,
        {b["metadata"]["name"]: ready_condition(body) for b, body in zip(good, live, strict=True) if b in before},
        good_new, {body["metadata"]["uid"] for body in live if body}, run.children_of_refused(),
        run.secrets_holding(world.marker),
    )


def cleanup(kube: Kube, world: World, run: HostileRun, timeout: float = 90.0) -> None:
    """Intents first, while the operator runs (their finalizers need it), then everything of the world."""
    from paved.api.kinds import INTENT_KINDS

    namespaces = all_namespaces(world, run.cases)
    for namespace in namespaces:
        for kind in INTENT_KINDS:
            for item in kube.list(kind, namespace):
                kube.delete(kind, item["metadata"]["name"], namespace)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(kube.list(kind, namespace) for namespace in namespaces for kind in INTENT_KINDS):
        time.sleep(1.0)
    for kind in ("Composition", "IntentPolicy", "ClusterSecretStore"):
        for item in kube.list(kind):
            if item["metadata"]["name"].startswith(world.prefix):
                kube.delete(kind, item["metadata"]["name"])
    for namespace in namespaces:
        kube.delete("Namespace", namespace)
    for name in (f"{world.vault_store}-token", f"{world.aws_store}-keys"):
        kube.delete("Secret", name, "paved-system")
