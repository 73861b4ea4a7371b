"""The generated CRDs are structural, documented, and agree with the models.

The real API server check (`kubectl apply --dry-run=server`) runs in the cluster tests; here
an offline approximation: the schema validates the examples (jsonschema, draft 4 is what
OpenAPI v3 builds on), unknown fields are found the way strict field validation finds them,
and the CEL rules are evaluated with cel-python against the same inputs as the models.
"""

from __future__ import annotations

from typing import Any

import celpy
import jsonschema
import pytest
import yaml

from paved.api.crdgen import (
    CRDGenerationError,
    crd,
    openapi_schema,
    schema_nodes,
    structural_problems,
    undocumented_fields,
)
from paved.api.kinds import BY_KIND, KINDS, KindInfo, SpecError, parse_object


def root_schema(info: KindInfo) -> dict[str, Any]:
    return crd(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("info", KINDS, ids=lambda info: info.kind)
def test_crd_is_structural_and_documented(info: KindInfo) -> None:
    schema = root_schema(info)
    assert structural_problems(schema) == []
    assert undocumented_fields(schema) == []
    assert schema["properties"]["status"]["type"] == "object"
    assert "x-kubernetes-preserve-unknown-fields" not in schema["properties"]["status"]


@pytest.mark.parametrize("info", KINDS, ids=lambda info: info.kind)
def test_every_string_list_and_map_of_a_spec_is_bounded(info: KindInfo) -> None:
    """paved.api.fields: the API server refuses an oversized value before anything reads it."""
    def unbounded(node: dict[str, Any]) -> bool:
        if node.get("type") == "string":
            return "maxLength" not in node and "enum" not in node and node.get("format") != "date-time"
        if node.get("type") == "array":
            return "maxItems" not in node
        return "additionalProperties" in node and "maxProperties" not in node

    assert [path for path, node in schema_nodes(root_schema(info)["properties"]["spec"], "spec") if unbounded(node)] == []


@pytest.mark.parametrize("info", KINDS, ids=lambda info: info.kind)
def test_crd_metadata(info: KindInfo) -> None:
    document = crd(info)
    names = document["spec"]["names"]
    version = document["spec"]["versions"][0]
    assert document["metadata"]["name"] == f"{info.plural}.paved.dev"
    assert names["shortNames"] and names["categories"] == ["paved"]
    assert document["spec"]["scope"] == info.scope
    assert version["subresources"] == {"status": {}}
    columns = [column["name"] for column in version["additionalPrinterColumns"]]
    if not info.reconciled:  # nothing writes its status: no Ready to show
        assert "Ready" not in columns and columns[-1] == "Age"
        return
    assert columns[0] == "Ready" and columns[-1] == "Age" and len(columns) >= 3


def test_short_names_and_plurals_are_unique() -> None:
    short = [name for info in KINDS for name in info.short_names]
    assert len(short) == len(set(short)) == 12
    assert len({info.plural for info in KINDS}) == len(KINDS)


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"properties": {"a": {"type": "string"}}}, "<root>: no type"),
        ({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": {"type": "string"}}, "mutually exclusive"),
        ({"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}]}}}, ".a: keywords not allowed here: anyOf"),
        ({"type": "array"}, "array without a single items schema"),
        ({"type": "string", "default": 3}, "does not match type"),
        ({"type": "string", "enum": ["a"], "default": "b"}, "not one of the enum"),
        ({"type": "array", "items": {"type": "object", "properties": {"n": {"type": "string"}}},
          "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["n"]}, "must be a required or defaulted property"),
    ],
)
def test_structural_checker_catches(schema: dict[str, Any], problem: str) -> None:
    assert any(problem in found for found in structural_problems(schema)), structural_problems(schema)


def test_unions_of_several_types_are_refused() -> None:
    from pydantic import BaseModel

    class Union(BaseModel):
        value: int | str

    with pytest.raises(CRDGenerationError, match="value: unions"):
        openapi_schema(Union)


# --- the examples against the schema -------------------------------------------------------


def unknown_fields(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    """What strict field validation (`kubectl apply`) reports: fields the schema would prune."""
    if isinstance(value, dict) and not schema.get("x-kubernetes-preserve-unknown-fields"):
        properties = schema.get("properties")
        if properties is None:
            extra = schema.get("additionalProperties")
            return [p for key, sub in value.items() for p in unknown_fields(sub, extra or {}, f"{path}.{key}")]
        return [
            p
            for key, sub in value.items()
            for p in (unknown_fields(sub, properties[key], f"{path}.{key}") if key in properties else [f"{path}.{key}"])
        ]
    if isinstance(value, list):
        return [p for index, item in enumerate(value) for p in unknown_fields(item, schema.get("items", {}), f"{path}[{index}]")]
    return []


def cel_violations(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    """Evaluate every x-kubernetes-validations rule at the node it is attached to."""
    found = []
    for rule in schema.get("x-kubernetes-validations", []):
        if "oldSelf" in rule["rule"]:
            continue  # a transition rule: the API server checks it on updates only
        env = celpy.Environment()
        program = env.program(env.compile(rule["rule"]))
        if not program.evaluate({"self": celpy.json_to_cel(value)}):
            found.append(f"{path}: {rule['message']}")
    if isinstance(value, dict):
        for key, sub in value.items():
            child = (schema.get("properties") or {}).get(key) or (schema.get("additionalProperties") or {})
            found += cel_violations(sub, child if isinstance(child, dict) else {}, f"{path}.{key}")
    if isinstance(value, list):
        for index, item in enumerate(value):
            found += cel_violations(item, schema.get("items", {}), f"{path}[{index}]")
    return found


def api_server_problems(body: dict[str, Any]) -> list[str]:
    schema = root_schema(BY_KIND[body["kind"]])
    validator = jsonschema.Draft4Validator(schema)
    problems = [f"{'.'.join(map(str, error.path))}: {error.message}" for error in validator.iter_errors(body)]
    return problems + unknown_fields(body, schema, "") + cel_violations(body, schema, "")


@pytest.mark.parametrize("info", KINDS, ids=lambda info: info.kind)
def test_examples_pass_the_schema(info: KindInfo) -> None:
    assert api_server_problems(yaml.safe_load(info.example)) == []


SEED = yaml.safe_load(
    'apiVersion: paved.dev/v1alpha1\nkind: DatabaseIntent\nmetadata: {name: orders-db}\n'
    'spec: {engine: postgresql, version: "16", availability: high, encryption: true,'
    " backup: {retentionDays: 30}, network: {allowFrom: [{namespace: orders-app}]}}\n"
)


def test_seed_passes_the_schema_and_typos_do_not() -> None:
    assert api_server_problems(SEED) == []
    typo = {**SEED, "spec": {**SEED["spec"], "engin": "mysql"}}
    assert ".spec.engin" in api_server_problems(typo)
    retention = {**SEED, "spec": {**SEED["spec"], "backup": {"retentionDays": 99}}}
    assert any(problem.startswith("spec.backup.retentionDays") for problem in api_server_problems(retention))


def store(provider: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "paved.dev/v1alpha1", "kind": "SecretStore", "metadata": {"name": "s"}, "spec": {"provider": provider}}


VAULT = {"server": "http://127.0.0.1:8200", "auth": {"tokenSecretRef": {"name": "t", "key": "token"}}}
AWS = {"region": "eu-west-1"}
ROLLOUT = yaml.safe_load(BY_KIND["ProgressiveRollout"].example)
ROLE_ARN = "arn:aws:iam::123456789012:role/r"
AWS_KEYS = {"accessKeyIDSecretRef": {"name": "k", "key": "id"}, "secretAccessKeySecretRef": {"name": "k", "key": "s"}}


def policy(match: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "paved.dev/v1alpha1", "kind": "IntentPolicy", "metadata": {"name": "p"},
            "spec": {"match": match, **spec}}


def rollout(**changes: Any) -> dict[str, Any]:
    spec = {key: value for key, value in {**ROLLOUT["spec"], **changes}.items() if value is not None}
    return {**ROLLOUT, "spec": spec}


@pytest.mark.parametrize(
    "body",
    [
        store({"vault": VAULT}),
        store({"aws": AWS}),
        store({}),
        store({"vault": VAULT, "aws": AWS}),
        store({"vault": {**VAULT, "auth": {}}}),
        store({"aws": {**AWS, "auth": {"serviceAccountRef": {"name": "sa"}}}}),
        store({"aws": {**AWS, "auth": {"serviceAccountRef": {"name": "sa"}, "role": ROLE_ARN}}}),
        store({"aws": {**AWS, "auth": {"serviceAccountRef": {"name": "sa"}, "role": ROLE_ARN, "secretRef": AWS_KEYS}}}),
        policy({"kinds": ["SecretStore"]}, allow=["OperatorCredentials"]),
        policy({"kinds": ["SecretStore", "ProgressiveRollout"]}, rules=[{"name": "r", "expression": "true", "message": "m"}]),
        policy({"kinds": ["ProgressiveRollout"]}, rules=[{"name": "r", "expression": "true", "message": "m"}]),
        rollout(maxWeight=50, stepWeight=10, stepInterval="1m"),
        rollout(steps=None, maxWeight=50, stepWeight=10, stepInterval="1m"),
        rollout(steps=None, maxWeight=50),
        rollout(steps=[{"setWeight": 0}]),
        rollout(steps=[{"setWeight": 10, "pause": {}}]),
        rollout(steps=[]),
        {**SEED, "kind": "AgentIdentity", "spec": {"ttl": "1h", "expiresAt": "2030-01-01T00:00:00Z"}},
        {**SEED, "kind": "AgentIdentity", "spec": {"ttl": "1h"}},
    ],
)
def test_cel_rules_agree_with_the_models(body: dict[str, Any]) -> None:
    try:
        parse_object(body)
        model_ok = True
    except SpecError:
        model_ok = False
    schema = root_schema(BY_KIND[body["kind"]])
    assert (cel_violations(body, schema, "") == []) == model_ok
