"""`paved render` on the examples: offline, no credentials, nothing secret in the output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from paved.cli import main

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples/01-database/orders-db.yaml"
POD_READER = ROOT / "examples/02-agent-identity/pod-reader.yaml"


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["render", *args], env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_seed_renders_every_resource_with_headers_and_placeholders() -> None:
    code, out, err = run(str(SEED), "--namespace", "orders")
    assert code == 0, err
    assert out.startswith("# composition: postgres-aws-rds\n# hash: ")
    assert "# resource: instance (provider: aws-rds)" in out
    assert "# resource: connection-secret (provider: kubernetes)\n# pending: reads outputs of instance" in out
    assert "# resource: security-group-policy-0 (provider: kubernetes)" in out
    # As shipped, the composition has no subnets of a cluster VPC: shown, not fatal offline.
    assert "warning: spec.parameters.network.subnetIds of composition postgres-aws-rds lists no subnets" in err
    subnets, client, database, instance, secret, policy = list(yaml.safe_load_all(out))
    assert subnets["SubnetIds"] == [] and client["GroupName"].endswith("-client") and database["GroupName"].endswith("-db")
    assert instance["MultiAZ"] is True and instance["BackupRetentionPeriod"] == 30 and instance["EngineVersion"] == "16"
    assert instance["MasterUserPassword"] == "<generated:masterPassword>"
    assert instance["VpcSecurityGroupIds"] == ["<pending:database-security-group.groupId>"]
    assert instance["Tags"][2] == {"Key": "paved.dev/uid", "Value": "00000000-0000-0000-0000-000000000000"}
    assert secret["stringData"]["password"] == "<generated:masterPassword>"
    assert secret["metadata"]["namespace"] == "orders" and policy["metadata"]["namespace"] == "orders-app"


def test_json_output_and_default_namespace() -> None:
    code, out, _ = run(str(SEED), "-o", "json")
    assert code == 0
    document = json.loads(out)
    assert document["composition"] == "postgres-aws-rds" and len(document["hash"]) == 64
    assert [r["name"] for r in document["resources"]] == ["subnet-group", "client-security-group", "database-security-group",
                                                          "instance", "connection-secret", "security-group-policy-0"]
    assert document["resources"][4]["pending"] is True and document["resources"][4]["dependsOn"] == ["instance"]
    assert document["resources"][4]["body"]["metadata"]["namespace"] == "default"


def test_namespace_labels_select_the_dev_composition_and_warnings_go_to_stderr() -> None:
    code, out, err = run(str(SEED), "--namespace-labels", "paved.dev/environment=dev,team=orders")
    assert code == 0
    assert out.startswith("# composition: postgres-in-cluster")
    assert "# resource: statefulset (provider: kubernetes)" in out
    assert "warning: spec.availability: high is not honoured" in err


def test_composition_file_is_used_as_is(tmp_path: Path) -> None:
    source = yaml.safe_load((ROOT / "compositions/postgres-in-cluster.yaml").read_text())
    source["metadata"]["name"] = "mine"
    del source["spec"]["namespaceSelector"]
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(source))
    code, out, _ = run(str(SEED), "--composition", str(path))
    assert code == 0 and out.startswith("# composition: mine")


def test_compositions_directory_from_the_environment(tmp_path: Path) -> None:
    source = yaml.safe_load((ROOT / "compositions/postgres-in-cluster.yaml").read_text())
    source["spec"]["default"] = True
    (tmp_path / "db.yaml").write_text(yaml.safe_dump(source))
    code, out, _ = run(str(SEED), env={"PAVED_COMPOSITIONS": str(tmp_path)})
    assert code == 0 and out.startswith("# composition: postgres-in-cluster")


def test_agent_identity_example_renders() -> None:
    code, out, err = run(str(POD_READER), "-n", "agents")
    assert code == 0, err
    role, binding, account = list(yaml.safe_load_all(out))  # RBAC first (see the composition)
    assert account["kind"] == "ServiceAccount" and role["kind"] == "Role" and binding["kind"] == "RoleBinding"
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods", "configmaps"], "verbs": ["get", "list", "watch"]}
    ]


def test_render_error_names_composition_resource_line_and_variable(tmp_path: Path) -> None:
    broken = (
        (ROOT / "compositions/postgres-aws-rds.yaml")
        .read_text()
        .replace(
            "DBInstanceClass: {{ params.instanceClasses[size] | to_json }}",
            "DBInstanceClass: {{ spec.sizee | to_json }}",
        )
    )
    path = tmp_path / "broken.yaml"
    path.write_text(broken)
    code, out, err = run(str(SEED), "--composition", str(path))
    assert code == 1 and out == ""
    first, second = err.splitlines()[:2]
    assert first.startswith('paved render: composition postgres-aws-rds, resource "instance", line ')
    assert first.endswith(": 'spec' has no attribute 'sizee'")
    assert second == "  missing variable: spec.sizee"


def test_refused_input_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "old.yaml"
    path.write_text(SEED.read_text().replace('"16"', '"13"'))
    code, _, err = run(str(path))
    assert code == 1
    assert 'spec.version: postgresql version "13" is not supported' in err
    assert "  field: spec.version" in err


@pytest.mark.parametrize("content", ["kind: DatabaseIntent\n", "a: 1\n---\nb: 2\n"])
def test_malformed_intent_files_are_usage_errors(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    code, _, err = run(str(path))
    assert code == 1 and "Error:" in err


def test_invalid_yaml_is_located_without_quoting_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("kind: DatabaseIntent\npassword: hunter2: [\n")
    code, _, err = run(str(path))
    assert code == 1 and "not valid YAML (line 2)" in err
    assert "hunter2" not in err
