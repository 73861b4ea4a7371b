"""`paved validate`: offline rendering + policy evaluation over files, as CI runs it."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from paved.commands.validate import validate

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
BAD = ROOT / "tests" / "data" / "bad-intents"
LINE = re.compile(r"^(?P<file>[^:]+\.ya?ml): (?P<subject>\w+/[\w.-]+): (?P<what>invalid: [\w.\[\]]+|\S+)")


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(validate, [str(arg) for arg in args], catch_exceptions=False)


def findings(result: Result) -> list[tuple[str, str, str]]:
    """(file name, Kind/name, policy/rule | "invalid: FIELD" | "cannot") per line; every line must parse."""
    parsed = []
    for line in result.stdout.splitlines():
        match = LINE.match(line)
        assert match, f"unexpected output line: {line!r}"
        parsed.append((Path(match["file"]).name, match["subject"], match["what"]))
    return parsed


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_examples_pass() -> None:
    intents = sorted(p for p in EXAMPLES.rglob("*.yaml") if BAD not in p.parents)
    assert intents, "examples/ has no intents; this test must not pass vacuously"
    result = run(EXAMPLES)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert re.search(r"[1-9]\d* intent\(s\) checked against 5 policies", result.stderr)


def test_bad_examples_fail_with_one_line_per_violation() -> None:
    result = run(BAD)
    assert result.exit_code == 1
    lines = findings(result)
    assert len(lines) == len(set(lines)), "a violation was reported twice"
    expected = {
        ("unencrypted-db.yaml", "DatabaseIntent/plaintext-db", "encryption-required/storage-encrypted"),
        ("unencrypted-db.yaml", "DatabaseIntent/plaintext-db", "encryption-required/rendered-rds-encrypted"),
        ("short-backup-db.yaml", "DatabaseIntent/forgetful-db", "backup-retention-production/min-retention-days"),
        ("unsupported-version-db.yaml", "DatabaseIntent/ancient-db", "cannot"),
        ("unknown-composition-db.yaml", "DatabaseIntent/gold-db", "cannot"),
        ("invalid-db.yaml", "DatabaseIntent/tiny-db", "invalid: spec.storageGB"),
        ("invalid-db.yaml", "DatabaseIntent/tiny-db", "invalid: spec.encrpytion"),
        ("wildcard-agent.yaml", "AgentIdentity/do-everything-agent", "no-wildcard-rbac/no-wildcard-verbs"),
        ("wildcard-agent.yaml", "AgentIdentity/do-everything-agent", "no-wildcard-rbac/no-wildcard-resources"),
        ("big-canary-step.yaml", "ProgressiveRollout/checkout", "canary-max-step/max-set-weight-increase"),
    }
    assert expected <= set(lines)
    # Anything beyond the expected lines may only be the composition refusing the same wildcard.
    assert {line for line in lines if line not in expected} <= {
        ("wildcard-agent.yaml", "AgentIdentity/do-everything-agent", "cannot"),
    }
    out = result.stdout
    assert "spec.version" in out and "spec.compositionRef.name" in out  # render failures name the field
    assert "7 intent(s) checked" in result.stderr and "2 other document(s) skipped" in result.stderr


def test_json_output_mirrors_the_text() -> None:
    text = run(BAD)
    result = run(BAD, "--output", "json")
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert len(document["findings"]) == len(text.stdout.splitlines())
    assert document["summary"]["intents"] == 7 and document["summary"]["skippedDocuments"] == 2
    violation = next(f for f in document["findings"] if f.get("rule") == "storage-encrypted")
    assert violation == {
        "file": str(BAD / "unencrypted-db.yaml"),
        "object": "DatabaseIntent/plaintext-db",
        "type": "violation",
        "blocking": True,
        "policy": "encryption-required",
        "rule": "storage-encrypted",
        "mode": "Enforce",
        "outcome": "fail",
        "message": "databases must be encrypted at rest: set spec.encryption: true",
    }


# --- own fixtures: modes, exceptions, labels, broken inputs -----------------------------------

DB = """\
apiVersion: paved.dev/v1alpha1
kind: DatabaseIntent
metadata: {name: %(name)s, namespace: team}
spec: {engine: postgresql, version: "16", backup: {retentionDays: %(days)d}}
"""


def policy(mode: str, expression: str = "object.spec.backup.retentionDays >= 7", **extra: Any) -> str:
    doc = {
        "apiVersion": "paved.dev/v1alpha1",
        "kind": "IntentPolicy",
        "metadata": {"name": f"retention-{mode.lower()}"},
        "spec": {
            "match": {"kinds": ["DatabaseIntent"], **extra},
            "mode": mode,
            "rules": [{"name": "days", "expression": expression, "message": "keep 7 days"}],
        },
    }
    return json.dumps(doc)  # JSON is YAML


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    write(tmp_path, "intents/db.yaml", DB % {"name": "short", "days": 1})
    write(
        tmp_path,
        "intents/more.yaml",
        (DB % {"name": "long", "days": 30}) + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
    )
    return tmp_path


def test_warn_and_audit_are_reported_but_pass(tree: Path) -> None:
    write(tree, "policies/warn.yaml", policy("Warn"))
    write(tree, "policies/audit.yaml", policy("Audit"))
    result = run(tree / "intents", "--policies", tree / "policies")
    assert result.exit_code == 0
    assert findings(result) == [
        ("db.yaml", "DatabaseIntent/short", "retention-audit/days"),
        ("db.yaml", "DatabaseIntent/short", "retention-warn/days"),
    ]
    assert "(Warn): keep 7 days" in result.stdout and "(Audit): keep 7 days" in result.stdout
    assert "1 other document(s) skipped" in result.stderr


def test_enforce_fails_and_an_exception_in_the_policies_folder_excuses(tree: Path) -> None:
    write(tree, "policies/enforce.yaml", policy("Enforce"))
    assert run(tree / "intents", "--policies", tree / "policies").exit_code == 1
    write(
        tree,
        "policies/exceptions/short.yaml",
        """\
        apiVersion: paved.dev/v1alpha1
        kind: PolicyException
        metadata: {name: short-ok, namespace: team}
        spec:
          policy: retention-enforce
          rules: [days]
          intents: [{kind: DatabaseIntent, name: short}]
          expiresAt: "2999-01-01T00:00:00Z"
          reason: test
        """,
    )
    result = run(tree / "intents", "--policies", tree / "policies")
    assert result.exit_code == 0, result.output
    assert "excepted by PolicyException team/short-ok until 2999-01-01T00:00:00Z" in result.stdout


def test_namespace_labels_select_policies(tree: Path) -> None:
    write(tree, "policies/prod.yaml", policy("Enforce", namespaceSelector={"matchLabels": {"env": "prod"}}))
    assert run(tree / "intents", "--policies", tree / "policies").exit_code == 0
    labelled = run(tree / "intents", "--policies", tree / "policies", "--namespace-labels", "env=prod,x=y")
    assert labelled.exit_code == 1
    assert findings(labelled) == [("db.yaml", "DatabaseIntent/short", "retention-enforce/days")]
    write(tree, "intents/ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: team, labels: {env: prod}}\n")
    assert run(tree / "intents", "--policies", tree / "policies").exit_code == 1


def test_evaluation_error_blocks_under_enforce(tree: Path) -> None:
    write(tree, "policies/broken.yaml", policy("Enforce", expression="object.spec.nosuchfield > 1"))
    result = run(tree / "intents", "--policies", tree / "policies")
    assert result.exit_code == 1
    assert result.stdout.count("rule could not be evaluated: no such member") == 2


def test_policy_that_does_not_compile_is_blocking_with_position(tree: Path) -> None:
    write(tree, "policies/broken.yaml", policy("Audit", expression="object.spec.backup.retentionDays >="))
    result = run(tree / "intents", "--policies", tree / "policies")
    assert result.exit_code == 1
    (line,) = result.stdout.splitlines()
    assert line.startswith(f"{tree / 'policies' / 'broken.yaml'}: IntentPolicy/retention-audit: does not compile: ")
    assert "spec.rules[0].expression (rule 'days') at line 1, column 34: syntax error" in line


def test_unreadable_yaml_and_unknown_paved_kinds_are_blocking(tree: Path) -> None:
    write(tree, "policies/p.yaml", policy("Audit"))
    write(tree, "intents/broken.yaml", "kind: [unclosed\n")
    write(
        tree,
        "intents/typo.yaml",
        "apiVersion: paved.dev/v1alpha1\nkind: DatabseIntent\nmetadata: {name: t}\nspec: {}\n",
    )
    result = run(tree / "intents", "--policies", tree / "policies")
    assert result.exit_code == 1
    assert re.search(r"broken\.yaml: not valid YAML \(line \d+\)", result.stdout)
    assert "typo.yaml: DatabseIntent/t: invalid: kind: unknown kind 'DatabseIntent'" in result.stdout


def test_hidden_and_excluded_folders_are_skipped(tree: Path) -> None:
    write(tree, "policies/p.yaml", policy("Enforce"))
    write(tree, "intents/.cache/x.yaml", DB % {"name": "hidden", "days": 1})
    write(tree, "intents/skip/y.yaml", DB % {"name": "skipped", "days": 1})
    result = run(tree / "intents", "--policies", tree / "policies", "--exclude", "*/skip", "--exclude", "*/db.yaml")
    assert result.exit_code == 0, result.output
    assert "1 intent(s) checked" in result.stderr


def test_bad_namespace_label_is_a_usage_error(tree: Path) -> None:
    result = CliRunner().invoke(validate, [str(tree / "intents"), "--namespace-labels", "novalue"])
    assert result.exit_code == 2 and "K=V" in result.output
