"""A moto server (fake AWS: RDS, EC2, IAM, STS, Secrets Manager, SSM) on loopback, detached.

Used by `paved dev demo` (the seed DatabaseIntent goes through the real aws-rds provider
against it), by bench/ and by the test fixtures (tests/fixtures/aws.py). The operator is
pointed at it with :meth:`MotoServer.env` (``PAVED_AWS_ENDPOINT_URL`` plus fake credentials;
nothing can reach a real account). Its pid file and log live in the given folder, so another
process (`paved dev down`) can stop it.

:meth:`MotoServer.enforce_iam` turns on moto's IAM enforcement (what moto's
``INITIAL_NO_AUTH_ACTION_COUNT`` does, switched at run time through ``/moto-api/reset-auth``), so
the operator runs as an IAM user holding deploy/aws/iam-policy.json and nothing else. What moto
5.2 enforces then, for every service it serves through its common request handler (RDS, IAM,
STS, Secrets Manager, SSM, EC2 and S3 among them): the signature must come from an access key
of an IAM user (or assumed role) on this server, and the action must be allowed by that
principal's identity policies (an explicit Deny wins). What it does not: `Resource` is matched
against "*" for every request except IAM calls on an existing role, STS AssumeRole and SQS (so a
resource-scoped statement would deny CreateRole); conditions of identity policies are not
evaluated; dependent actions (iam:TagRole for tags on CreateRole, ...) are not required. Hence
:func:`actions_only`.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import secrets
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paved.dev.processes import (
    PortTaken,
    ProcessRecord,
    is_alive,
    log_tail,
    port_taken,
    read_record,
    start_detached,
    start_with_free_port,
    stop_all,
)

__all__ = ["FAKE_AWS_ENV", "RDS_COMPOSITION", "AwsKeys", "ClusterNetwork", "MotoError", "MotoServer", "actions_only",
           "moto_installed", "operator_iam_policy", "start_moto"]

REGION = "us-east-1"
#: Credentials and region for anything that talks to moto (moto accepts any).
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}


class MotoError(RuntimeError):
    """moto is not installed or did not start; the message holds the log tail."""


#: The Name tag of the VPC that stands for the cluster's (see MotoServer.cluster_network).
CLUSTER_VPC_NAME = "paved-dev-cluster"
RDS_COMPOSITION = "postgres-aws-rds"


@dataclass(frozen=True)
class ClusterNetwork:
    """The cluster VPC on this moto server: what the RDS Composition's platform parameters name."""

    vpc_id: str
    subnet_ids: tuple[str, ...]
    cluster_security_group_id: str

    def composition_patch(self) -> dict[str, Any]:
        """A merge patch giving the default RDS Composition this network (its `network` parameters)."""
        network = {"subnetIds": list(self.subnet_ids), "podSecurityGroupIds": [self.cluster_security_group_id]}
        return {"spec": {"parameters": {"network": network}}}


@dataclass(frozen=True)
class AwsKeys:
    """An IAM user's access key on this moto server."""

    access_key_id: str
    secret_access_key: str = field(repr=False)


def operator_iam_policy() -> dict[str, Any]:
    """deploy/aws/iam-policy.json: what the operator may ask of AWS."""
    from paved.dev.binaries import repo_root

    return dict(json.loads((repo_root() / "deploy" / "aws" / "iam-policy.json").read_text()))


def actions_only(policy: Mapping[str, Any]) -> dict[str, Any]:
    """`policy` with every statement's Resource widened to "*" and its Condition dropped: the
    form moto can evaluate (see the module docstring); the actions, what moto does check, are
    exactly the same."""
    statements = policy["Statement"] if isinstance(policy["Statement"], list) else [policy["Statement"]]
    return {**policy, "Statement": [{**{k: v for k, v in statement.items() if k != "Condition"}, "Resource": "*"}
                                    for statement in statements]}


def moto_installed() -> bool:
    return importlib.util.find_spec("moto.server") is not None and importlib.util.find_spec("flask") is not None


@dataclass
class MotoServer:
    port: int
    workdir: Path
    record: ProcessRecord | None = None
    region: str = REGION
    admin_keys: AwsKeys | None = None  # set while IAM is enforced: what client() signs with
    operator_keys: AwsKeys | None = None  # ... and what operator_env() hands out

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.record.pid if self.record else None

    @property
    def log_path(self) -> Path:
        return self.workdir / "moto.log"

    @property
    def pid_path(self) -> Path:
        return self.workdir / "moto.pid"

    def env(self) -> dict[str, str]:
        """Variables for a process (e.g. the operator) that must use this moto server."""
        return {
            **FAKE_AWS_ENV,
            "PAVED_AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }

    def operator_env(self) -> dict[str, str]:
        """env(), with the operator's IAM user's keys while IAM is enforced."""
        env = self.env()
        if self.operator_keys is not None:
            env.update(AWS_ACCESS_KEY_ID=self.operator_keys.access_key_id, AWS_SECRET_ACCESS_KEY=self.operator_keys.secret_access_key)
        return env

    def client(self, service: str, **kwargs: Any) -> Any:
        """A boto3 client for ``service`` on this server: fake credentials, or an administrator's
        while IAM is enforced."""
        import boto3

        keys = self.admin_keys or AwsKeys(FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"], FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"])
        kwargs.setdefault("region_name", self.region)
        return boto3.session.Session(
            aws_access_key_id=keys.access_key_id, aws_secret_access_key=keys.secret_access_key,
        ).client(service, endpoint_url=self.endpoint_url, **kwargs)

    def cluster_network(self) -> ClusterNetwork:
        """The VPC standing for the cluster's (two subnets in two zones, a "cluster" security
        group), made on first use and found again by its Name tag after that (a reset removes it)."""
        ec2 = self.client("ec2")
        name_filter = [{"Name": "tag:Name", "Values": [CLUSTER_VPC_NAME]}]
        vpcs = ec2.describe_vpcs(Filters=name_filter)["Vpcs"]
        if vpcs:
            vpc = vpcs[0]["VpcId"]
            subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]
            group = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]},
                                                          {"Name": "group-name", "Values": [CLUSTER_VPC_NAME]}])["SecurityGroups"]
            return ClusterNetwork(vpc, tuple(sorted(s["SubnetId"] for s in subnets)), group[0]["GroupId"])
        tags = [{"ResourceType": kind, "Tags": [{"Key": "Name", "Value": CLUSTER_VPC_NAME}]} for kind in ("vpc", "subnet")]
        vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16", TagSpecifications=[tags[0]])["Vpc"]["VpcId"]
        subnets = tuple(sorted(
            ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.42.{index}.0/24", AvailabilityZone=f"{self.region}{zone}",
                              TagSpecifications=[tags[1]])["Subnet"]["SubnetId"]
            for index, zone in enumerate("ab", start=1)))
        group = ec2.create_security_group(GroupName=CLUSTER_VPC_NAME, Description="the cluster's pods and nodes", VpcId=vpc)
        return ClusterNetwork(vpc, subnets, group["GroupId"])

    def enforce_iam(self, operator_policy: Mapping[str, Any]) -> None:
        """From now on every request must be signed by an IAM user of this server and allowed by
        its policies. Two users are made first, while moto still accepts anyone: an administrator
        (Allow * on *; :meth:`client` signs with it) and `paved-operator-<random>` holding exactly
        `operator_policy` (:meth:`operator_env` hands out its keys). Ended by
        :meth:`stop_enforcing` or :meth:`reset`."""
        self.stop_enforcing()
        iam = self.client("iam")
        everything = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        suffix = secrets.token_hex(3)  # users of an earlier enforcement may still exist
        keys = []
        for user, policy in ((f"paved-e2e-admin-{suffix}", everything), (f"paved-operator-{suffix}", operator_policy)):
            iam.create_user(UserName=user)
            iam.put_user_policy(UserName=user, PolicyName=user, PolicyDocument=json.dumps(policy))
            key = iam.create_access_key(UserName=user)["AccessKey"]
            keys.append(AwsKeys(key["AccessKeyId"], key["SecretAccessKey"]))
        self.admin_keys, self.operator_keys = keys
        self._post("/moto-api/reset-auth", b"0")  # enforce from the next request on

    def stop_enforcing(self) -> None:
        """Accept any credentials again (the IAM users stay until a reset)."""
        self._post("/moto-api/reset-auth", b"inf")
        self.admin_keys = self.operator_keys = None

    def reset(self) -> None:
        """Forget every resource in every service (moto's ``/moto-api/reset``); IAM enforcement ends
        with it (its users are gone)."""
        self.stop_enforcing()
        self._post("/moto-api/reset", b"")

    def _post(self, path: str, data: bytes) -> None:
        # text/plain: moto reads the raw body (a form content type would hide it from moto).
        request = urllib.request.Request(f"{self.endpoint_url}{path}", data=data, method="POST",  # noqa: S310 - loopback
                                         headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - loopback
            if resp.status != 200:
                raise MotoError(f"moto {path} answered {resp.status}")

    def _moto_api(self, path: str, method: str = "POST") -> str:
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/{path}", method=method)  # noqa: S310 - loopback
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - loopback
            return str(resp.read().decode())

    def start_recording(self) -> None:
        """Record every request moto receives from now on (moto's recorder), forgetting earlier ones."""
        self._moto_api("recorder/reset-recording")
        self._moto_api("recorder/start-recording")

    def stop_recording(self) -> None:
        self._moto_api("recorder/stop-recording")

    def recorded(self) -> list[dict[str, Any]]:
        """The requests recorded since start_recording: method, url, headers and body (text)."""
        entries = []
        for line in self._moto_api("recorder/download-recording", method="GET").splitlines():
            if not line.strip():
                continue
            entry = json.loads(line)
            body = entry.get("body") or ""
            if entry.get("body_encoded"):
                body = base64.b64decode(body).decode(errors="replace")
            entries.append({**entry, "body": body})
        return entries

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/data.json", timeout=2) as resp:  # noqa: S310
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def alive(self) -> bool:
        return self.record is not None and is_alive(self.record)

    def stop(self, timeout: float = 10.0) -> None:
        if self.record is not None:
            stop_all([self.record], timeout=timeout)
            self.record = None

    @classmethod
    def find(cls, workdir: Path) -> MotoServer | None:
        """The moto server a previous process started in ``workdir``, if it still runs."""
        try:
            port = int(json.loads((workdir / "moto.json").read_text())["port"])
        except (OSError, ValueError, KeyError):
            return None
        server = cls(port=port, workdir=workdir, record=read_record(workdir / "moto.pid"))
        return server if server.alive() else None


def start_moto(workdir: Path, *, die_with_parent: bool = True, timeout: float = 60.0) -> MotoServer:
    """Start ``python -m moto.server`` on 127.0.0.1:<free port> and wait until it serves."""
    if not moto_installed():
        raise MotoError(
            f"moto's server mode is not installed for {sys.executable}; run scripts/bootstrap "
            "(pip install -e '.[test]' -c constraints.txt installs moto[server])"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KUBECONFIG", "VAULT_", "BAO_"))}
    env.update(FAKE_AWS_ENV, PYTHONUNBUFFERED="1", MOTO_RECORDER_FILEPATH=str(workdir / "recording.jsonl"))

    def start(port: int) -> MotoServer:
        server = MotoServer(port=port, workdir=workdir)
        server.record = start_detached(
            "moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            server.log_path, server.pid_path, env=env, die_with_parent=die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and server.alive() and not server.answers():
            time.sleep(0.2)
        if server.answers():
            (workdir / "moto.json").write_text(json.dumps({"port": port}))
            return server
        tail = log_tail(server.log_path)
        server.stop()
        if port_taken(tail):
            raise PortTaken(f"moto: port {port} taken")
        raise MotoError(f"moto did not start; log {server.log_path}:\n{tail}")

    return start_with_free_port(start)
