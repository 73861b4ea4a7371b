"""Hostile input for Paved, as data: every case says what it attacks and where it must stop.

    from support.hostile import World, hostile_cases, infrastructure

    world = World.new(vault_addr=..., aws_endpoint=...)
    cases = hostile_cases(world)                        # 500+ Case objects
    objects = infrastructure(world, vault_token=..., vault_ca=..., aws_keys=(..., ...))

A `Case` is one object to apply (plus the objects it needs first, `setup`), what it attacks,
the stopping points that are acceptable, and the field the refusal must name:

- schema   the API server refuses it (CRD schema, object metadata, strict field validation)
- webhook  Paved's validating admission webhook refuses it
- handler  accepted, then its Ready condition is False with a message naming the field
- handled  accepted and harmless (Ready, where the kind has a Ready condition)

`field` is what the refusal must name: a field path (`spec.capabilities[0].verbs[0]`), or,
where the attacked object is a platform object read by another one, what names it there
(`resource "bomb"` of a Composition in the intent's condition, `policy/rule` of an
IntentPolicy in the webhook's denial).

Categories (`Case.attack`): schema (generated from the CRDs: wrong types, missing required
fields, unknown enum values, out-of-range numbers, patterns, lengths, unknown fields, for
every kind), oversized (1 MiB strings, 10,000-item lists), unicode (U+202E, U+0000, U+001B,
U+200B in names, labels, annotations, keys and free text), traversal (remote keys that try
to leave a ClusterSecretStore's prefix), jinja (sandbox escapes and resource bombs in
Composition and ExternalSecretRef templates), cel (cost bombs in IntentPolicies), delegation
(cycles and chains of AgentIdentities), names (63/253 characters and one over, and what Paved
derives from them).

Everything a case needs is named from `World.prefix`, so a run never collides with another
one or with the rest of a test session. The module is pure data: applying the cases and
judging where they stopped is the caller's (tests/e2e/test_hostile_input.py, bench/bench_hostile.py).
"""

from __future__ import annotations

import copy
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from paved import API_VERSION
from paved.api.crdgen import crd
from paved.api.fields import derived_label_value
from paved.api.kinds import BY_KIND, KINDS

SCHEMA, WEBHOOK, HANDLER, HANDLED = "schema", "webhook", "handler", "handled"
STOPS = (SCHEMA, WEBHOOK, HANDLER, HANDLED)
REFUSED = frozenset({SCHEMA, WEBHOOK, HANDLER})

MIB = 1 << 20
LIST_ITEMS = 10_000
HOSTILE_CHARACTERS = {"U+202E": "\u202e", "U+0000": "\u0000", "U+001B": "\u001b", "U+200B": "\u200b"}
DELEGATION_DEPTH = 3  # the operator's default cap (paved.identity.chain.DEFAULT_MAX_DEPTH)


@dataclass(frozen=True)
class Case:
    """One hostile object: what it attacks, where it may stop, and the field the refusal names."""

    id: str
    kind: str
    attack: str
    what: str
    body: dict[str, Any]
    field: str
    stops: frozenset[str]
    setup: tuple[dict[str, Any], ...] = ()
    alone: bool = False
    """Applied on its own before the rest (support.hostile_run): its admission answer (a CEL bomb
    evaluated by the webhook, a 10,000-item list the API server decodes, tracks and validates) is
    then timed against the request's own timeout, not against a queue of other hostile requests."""

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def namespace(self) -> str | None:
        return self.body["metadata"].get("namespace")

    @property
    def refused(self) -> bool:
        """Whether every acceptable outcome refuses it (then it must name `field`)."""
        return self.stops <= REFUSED


@dataclass(frozen=True)
class World:
    """Names (and the few values) the cases and their infrastructure share."""

    prefix: str
    vault_addr: str
    aws_endpoint: str
    aws_region: str = "us-east-1"
    marker: str = field(default_factory=lambda: f"VICTIM-{secrets.token_hex(8)}")

    @classmethod
    def new(cls, **kwargs: Any) -> World:
        return cls(prefix=f"hx{secrets.token_hex(3)}", **kwargs)

    # namespaces
    @property
    def main(self) -> str:
        return f"{self.prefix}-main"

    @property
    def delegation(self) -> str:
        return f"{self.prefix}-deleg"

    @property
    def long(self) -> str:
        """A namespace with a name of exactly 63 characters (the most a namespace may have)."""
        return (f"{self.prefix}-long-" + "n" * 63)[:63]

    @property
    def victim(self) -> str:
        """A namespace name whose keys no case may read."""
        return f"{self.prefix}-victim"

    def cel(self, index: int) -> str:
        """One namespace per CEL bomb: each IntentPolicy matches only its own."""
        return f"{self.prefix}-cel-{index}"

    # cluster-scoped and shared objects
    @property
    def vault_store(self) -> str:
        return f"{self.prefix}-vault"

    @property
    def aws_store(self) -> str:
        return f"{self.prefix}-aws"

    @property
    def tenant_store(self) -> str:
        """A SecretStore in `main` with the tenant's own Vault token."""
        return "tenant-vault"

    def key(self, namespace: str) -> str:
        """The remote key holding {username, password} for `namespace` (Vault and AWS)."""
        return f"teams/{namespace}/db"

    def cluster_name(self, suffix: str) -> str:
        return _dns(f"{self.prefix}-{suffix}", 253)


# --- helpers ----------------------------------------------------------------------------------


def _dns(text: str, limit: int = 63) -> str:
    """A lowercase DNS label (or subdomain) made from `text`, for object names."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return cleaned[:limit].rstrip("-") or "x"


def obj(kind: str, name: str, spec: Any, namespace: str | None = None, **metadata: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, **metadata}
    if namespace is not None and BY_KIND[kind].namespaced:
        meta["namespace"] = namespace
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": meta, "spec": spec}


def agent_spec(**extra: Any) -> dict[str, Any]:
    """A small valid AgentIdentity spec (Kubernetes only: Ready without any cloud)."""
    return {"capabilities": [{"resources": ["configmaps"], "verbs": ["get", "list"]}], **extra}


def database_spec(**extra: Any) -> dict[str, Any]:
    return {"engine": "postgresql", "version": "16", **extra}


def ref_spec(store: str, key: str, kind: str = "ClusterSecretStore", **extra: Any) -> dict[str, Any]:
    return {
        "storeRef": {"name": store, "kind": kind},
        "refreshInterval": "0",
        "data": [
            {"secretKey": "username", "remoteRef": {"key": key, "property": "username"}},
            {"secretKey": "password", "remoteRef": {"key": key, "property": "password"}},
        ],
        **extra,
    }


def _set(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `body` with `value` at `path` (`spec.a[0].b`); `_DELETE` removes the key."""
    result = copy.deepcopy(body)
    parts = _parts(path)
    target: Any = result
    for part in parts[:-1]:
        target = target[part]
    if value is _DELETE:
        del target[parts[-1]]
    else:
        target[parts[-1]] = value
    return result


_DELETE = object()


def _parts(path: str) -> list[Any]:
    parts: list[Any] = []
    for name, index in re.findall(r"\.?([^.\[\]]+)|\[(\d+)\]", path):
        parts.append(int(index) if index else name)
    return parts


def _examples(world: World) -> dict[str, dict[str, Any]]:
    """One valid object per kind: the kinds' documented examples."""
    return {info.kind: yaml.safe_load(info.example) for info in KINDS}


# --- schema: generated from the CRDs -----------------------------------------------------------

_UNLIKELY = ("NOT a valid value!", "", "x" * 300)


def _wrong_type(schema: Mapping[str, Any]) -> Any:
    return {"string": 12345, "integer": "twenty", "number": "twenty", "boolean": "perhaps",
            "array": {"not": "a list"}, "object": "not an object"}[schema["type"]]


def _not_matching(pattern: str, schema: Mapping[str, Any]) -> str | None:
    for candidate in _UNLIKELY:
        if not re.search(pattern, candidate) and len(candidate) <= schema.get("maxLength", 10**9):
            if len(candidate) >= schema.get("minLength", 0):
                return candidate
    return None


def _violations(value: Any, schema: Mapping[str, Any], path: str) -> Iterator[tuple[str, Any, str]]:
    """(field path, bad value or _DELETE, what) for `value` at `path`; recursing into present fields."""
    kind = schema.get("type")
    if kind is None:
        return
    yield path, _wrong_type(schema), f"{path} of the wrong type (not {kind})"
    if "enum" in schema:
        yield path, "not-an-option", f"{path} outside its enum"
    if kind in ("integer", "number"):
        if "minimum" in schema:
            yield path, schema["minimum"] - 1, f"{path} below its minimum"
        if "maximum" in schema:
            yield path, schema["maximum"] + 1, f"{path} above its maximum"
    if kind == "string":
        if "pattern" in schema and "enum" not in schema:
            bad = _not_matching(schema["pattern"], schema)
            if bad is not None:
                yield path, bad, f"{path} not matching its pattern"
        if schema.get("minLength", 0) >= 1:
            yield path, "", f"{path} empty"
        if "maxLength" in schema and schema.get("format") != "date-time":
            yield path, "a" * (schema["maxLength"] + 1), f"{path} one character too long"
    if kind == "array":
        if schema.get("minItems", 0) >= 1:
            yield path, [], f"{path} empty"
        if "maxItems" in schema and isinstance(value, list) and value and not schema.get("x-kubernetes-list-map-keys"):
            yield path, [value[0]] * (schema["maxItems"] + 1), f"{path} one item too many"
        if isinstance(value, list) and value and isinstance(schema.get("items"), dict):
            yield from _violations(value[0], schema["items"], f"{path}[0]")
    if kind == "object":
        properties = schema.get("properties") or {}
        if properties:
            yield f"{path}.colour", "red", f"{path} with an unknown field"
        if isinstance(value, Mapping):
            for required in schema.get("required") or ():
                if required in value:
                    yield f"{path}.{required}", _DELETE, f"{path} without its required field {required}"
            for name, sub in properties.items():
                if name in value:
                    yield from _violations(value[name], sub, f"{path}.{name}")
                elif sub.get("type") in ("string", "integer", "number", "boolean"):
                    yield from (v for v in _violations(None, sub, f"{path}.{name}"))
        if "maxProperties" in schema and isinstance(schema.get("additionalProperties"), dict):
            entries = {f"key-{i}": "v" for i in range(schema["maxProperties"] + 1)}
            yield path, entries, f"{path} with one entry too many"


def schema_cases(world: World) -> list[Case]:
    """Every violation the CRD schemas declare, once per field of each kind's example."""
    cases: list[Case] = []
    examples = _examples(world)
    for info in KINDS:
        example = examples[info.kind]
        schema = crd(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        seen: set[tuple[str, str]] = set()
        for index, (path, bad, what) in enumerate(_violations(example["spec"], schema, "spec")):
            if path == "spec" and bad is not _DELETE and not isinstance(bad, Mapping):
                continue  # a spec that is not an object: once is enough (below)
            key = (path, what)
            if key in seen:
                continue
            seen.add(key)
            name = world.cluster_name(f"s{index}-{info.singular}")
            body = _set(obj(info.kind, name, example["spec"], world.main), path, bad)
            cases.append(Case(f"schema/{info.kind}/{what}", info.kind, "schema", what, body, path, frozenset({SCHEMA})))
        cases.append(Case(f"schema/{info.kind}/spec is a string", info.kind, "schema", "spec that is not an object",
                          obj(info.kind, world.cluster_name(f"sx-{info.singular}"), "not an object", world.main), "spec",
                          frozenset({SCHEMA})))
    return cases


def rule_cases(world: World) -> list[Case]:
    """The CRDs' cross-field rules (x-kubernetes-validations), one violation each."""
    ns = world.main
    vault = {"server": world.vault_addr, "auth": {"tokenSecretRef": {"name": "t", "key": "token"}}}
    aws = {"region": world.aws_region}
    rules = [
        ("SecretStore", "two providers", {"provider": {"vault": vault, "aws": aws}}, "spec.provider"),
        ("SecretStore", "no provider", {"provider": {}}, "spec.provider"),
        ("SecretStore", "two vault auth methods",
         {"provider": {"vault": {**vault, "auth": {"tokenSecretRef": {"name": "t", "key": "k"},
                                                    "appRole": {"roleId": "r", "secretRef": {"name": "s", "key": "k"}}}}}},
         "spec.provider.vault.auth"),
        ("SecretStore", "serviceAccountRef without role",
         {"provider": {"aws": {**aws, "auth": {"serviceAccountRef": {"name": "sa"}}}}}, "spec.provider.aws.auth"),
        ("ClusterSecretStore", "access by name and selector",
         {"provider": {"aws": aws}, "access": [{"namespaces": [ns], "namespaceSelector": {"matchLabels": {"a": "b"}},
                                                "keyPrefixes": ["x/"]}]}, "spec.access[0]"),
        ("AgentIdentity", "ttl and expiresAt", agent_spec(ttl="1h", expiresAt="2031-01-01T00:00:00Z"), "spec"),
        ("AgentIdentity", "clusterWide with namespaces",
         {"capabilities": [{"resources": ["pods"], "verbs": ["get"], "clusterWide": True, "namespaces": [ns]}]},
         "spec.capabilities[0]"),
        ("ExternalSecretRef", "neither data nor dataFrom", {"storeRef": {"name": "s"}}, "spec"),
        ("ProgressiveRollout", "steps and the shorthand",
         {"targetRef": {"name": "web"}, "service": {"name": "web", "port": 80}, "steps": [{"setWeight": 10}],
          "maxWeight": 50, "stepWeight": 10, "stepInterval": "1m"}, "spec"),
        ("ProgressiveRollout", "a step with two actions",
         {"targetRef": {"name": "web"}, "service": {"name": "web", "port": 80},
          "steps": [{"setWeight": 10, "pause": {}}]}, "spec.steps[0]"),
        ("IntentPolicy", "rules matching SecretStores",
         {"match": {"kinds": ["SecretStore"]}, "rules": [{"name": "r", "expression": "true", "message": "m"}]}, "spec"),
        ("IntentPolicy", "neither rules nor allow", {"match": {"kinds": ["DatabaseIntent"]}}, "spec"),
    ]
    return [Case(f"schema/{kind}/{what}", kind, "schema", what,
                 obj(kind, world.cluster_name(f"rule-{i}"), spec, ns),
                 path, frozenset({SCHEMA}))
            for i, (kind, what, spec, path) in enumerate(rules)]


# --- oversized values -----------------------------------------------------------------------------


def oversized_cases(world: World) -> list[Case]:
    """1 MiB strings and 10,000-item lists in every kind: refused by the schema, naming the field."""
    ns, big = world.main, "x" * MIB
    capability = {"resources": ["configmaps"], "verbs": ["get"]}
    examples = _examples(world)
    strings = [
        ("AgentIdentity", agent_spec(), "spec.purpose"),
        ("AgentIdentity", agent_spec(), "spec.owner"),
        ("AgentIdentity", agent_spec(secrets=[{"path": "secret/data/x"}]), "spec.secrets[0].path"),
        ("AgentIdentity", agent_spec(), "spec.capabilities[0].resources[0]"),
        ("DatabaseIntent", database_spec(), "spec.version"),
        ("ExternalSecretRef", ref_spec(world.vault_store, world.key(ns)), "spec.data[0].remoteRef.key"),
        ("ExternalSecretRef", ref_spec(world.vault_store, world.key(ns)), "spec.data[0].remoteRef.property"),
        ("ExternalSecretRef", ref_spec(world.vault_store, world.key(ns), target={"template": {"data": {}}}),
         "spec.target.template.data.password"),
        ("ExternalSecretRef", ref_spec(world.vault_store, world.key(ns), target={"annotations": {}}),
         "spec.target.annotations.note"),
        ("ProgressiveRollout", examples["ProgressiveRollout"]["spec"], "spec.analysis.metrics[0].query"),
        ("ProgressiveRollout", examples["ProgressiveRollout"]["spec"], "spec.analysis.metrics[0].successCondition"),
        ("SecretStore", examples["SecretStore"]["spec"], "spec.provider.vault.caBundle"),
        ("SecretStore", examples["SecretStore"]["spec"], "spec.provider.vault.server"),
        ("ClusterSecretStore", examples["ClusterSecretStore"]["spec"], "spec.access[0].keyPrefixes[0]"),
        ("Composition", examples["Composition"]["spec"], "spec.resources[0].template"),
        ("Composition", examples["Composition"]["spec"], "spec.resources[0].when"),
        ("IntentPolicy", examples["IntentPolicy"]["spec"], "spec.rules[0].expression"),
        ("IntentPolicy", examples["IntentPolicy"]["spec"], "spec.rules[0].message"),
        ("PolicyException", examples["PolicyException"]["spec"], "spec.reason"),
    ]
    cases = []
    for i, (kind, spec, path) in enumerate(strings):
        name = world.cluster_name(f"big{i}") if not BY_KIND[kind].namespaced else f"big-{i}"
        value = f"https://{big}" if path.endswith(".server") else big
        cases.append(Case(f"oversized/{kind}/1 MiB {path}", kind, "oversized", f"a 1 MiB string in {path}",
                          _set(obj(kind, name, spec, ns), path, value), path, frozenset({SCHEMA})))
    lists = [
        ("AgentIdentity", agent_spec(), "spec.capabilities", capability),
        ("AgentIdentity", agent_spec(), "spec.secrets", {"path": "secret/data/x"}),
        ("AgentIdentity", agent_spec(), "spec.capabilities[0].verbs", "get"),
        ("AgentIdentity", agent_spec(cloud={"aws": {"actions": ["s3:GetObject"]}}), "spec.cloud.aws.actions", "s3:GetObject"),
        ("DatabaseIntent", database_spec(network={"allowFrom": []}), "spec.network.allowFrom", {"namespace": "app"}),
        ("ExternalSecretRef", ref_spec(world.vault_store, world.key(ns)), "spec.data", None),
        ("ExternalSecretRef", ref_spec(world.vault_store, world.key(ns)), "spec.dataFrom", {"extract": {"key": "k"}}),
        ("ClusterSecretStore", examples["ClusterSecretStore"]["spec"], "spec.access[0].keyPrefixes", "teams/"),
        ("Composition", examples["Composition"]["spec"], "spec.resources", None),
        ("IntentPolicy", examples["IntentPolicy"]["spec"], "spec.rules", None),
        ("IntentPolicy", examples["IntentPolicy"]["spec"], "spec.match.kinds", "DatabaseIntent"),
        ("PolicyException", examples["PolicyException"]["spec"], "spec.intents", None),
        ("ProgressiveRollout", {"targetRef": {"name": "web"}, "service": {"name": "web", "port": 80}}, "spec.steps",
         {"setWeight": 10}),
    ]
    for i, (kind, spec, path, item) in enumerate(lists):
        name = world.cluster_name(f"long{i}") if not BY_KIND[kind].namespaced else f"long-{i}"
        body = obj(kind, name, spec, ns)
        if item is None:  # items keyed by name: each a distinct copy of the first
            first = _get(body, f"{path}[0]")
            items: list[Any] = [_unique(first, n) for n in range(LIST_ITEMS)]
        else:
            items = [item] * LIST_ITEMS
        cases.append(Case(f"oversized/{kind}/10,000 items in {path}", kind, "oversized", f"10,000 items in {path}",
                          _set(body, path, items), path, frozenset({SCHEMA}), alone=True))
    # Free-form platform data may be large: accepted, and harmless.
    # (Not a default: an accepted Composition must not be selected for anyone else's intents.)
    cases.append(Case("oversized/Composition/1 MiB parameter", "Composition", "oversized",
                      "a 1 MiB string in free-form spec.parameters (platform data)",
                      _set(obj("Composition", world.cluster_name("bigparam"), {**examples["Composition"]["spec"], "default": False}),
                           "spec.parameters.blob", big), "spec.parameters", frozenset({HANDLED})))
    cases.append(Case("oversized/IntentPolicy/10,000 params", "IntentPolicy", "oversized",
                      "10,000 items in free-form spec.params, read by a rule",
                      obj("IntentPolicy", world.cluster_name("bigparams"), {
                          "match": {"kinds": ["DatabaseIntent"], "namespaceSelector": {"matchLabels": {
                              "kubernetes.io/metadata.name": world.cel(99)}}},
                          "params": {"items": list(range(LIST_ITEMS))},
                          "rules": [{"name": "size", "expression": "size(params.items) > 0", "message": "m"}]}),
                      "spec.params", frozenset({HANDLED})))
    return cases


def _get(body: Any, path: str) -> Any:
    for part in _parts(path):
        body = body[part]
    return body


def _unique(item: Any, n: int) -> Any:
    copied = copy.deepcopy(item)
    if isinstance(copied, dict) and "name" in copied:
        copied["name"] = f"{copied['name']}-{n}"
    if isinstance(copied, dict) and "secretKey" in copied:
        copied["secretKey"] = f"k{n}"
    if isinstance(copied, dict) and "kind" in copied and "name" in copied:
        copied["name"] = f"intent-{n}"
    return copied


# --- control and bidirectional characters ---------------------------------------------------------


def unicode_cases(world: World) -> list[Case]:
    ns = world.main
    exceptions = obj("PolicyException", "x", {"policy": "encryption-required", "rules": ["storage-encrypted"],
                                              "intents": [{"kind": "DatabaseIntent", "name": "legacy"}],
                                              "expiresAt": "2031-01-01T00:00:00Z", "reason": "r"}, ns)
    cases: list[Case] = []
    for label, char in HOSTILE_CHARACTERS.items():
        tag = label.lower().replace("+", "")
        refused: list[tuple[str, dict[str, Any], str]] = [
            ("in metadata.name", {**obj("AgentIdentity", f"evil{char}{tag}", agent_spec(), ns)}, "metadata.name"),
            ("in a label value", obj("AgentIdentity", f"lv-{tag}", agent_spec(), ns, labels={"team": f"a{char}b"}),
             "metadata.labels"),
            ("in a label key", obj("AgentIdentity", f"lk-{tag}", agent_spec(), ns, labels={f"te{char}am": "a"}),
             "metadata.labels"),
            ("in an annotation key", obj("AgentIdentity", f"ak-{tag}", agent_spec(), ns, annotations={f"no{char}te": "a"}),
             "metadata.annotations"),
            ("in a Secret key", obj("ExternalSecretRef", f"sk-{tag}", _set(ref_spec(world.vault_store, world.key(ns)),
                                                                           "data[0].secretKey", f"user{char}"), ns),
             "spec.data[0].secretKey"),
            ("in a namespace of allowFrom", obj("DatabaseIntent", f"af-{tag}",
                                                database_spec(network={"allowFrom": [{"namespace": f"app{char}"}]}), ns),
             "spec.network.allowFrom[0].namespace"),
            ("in a target label value", obj("ExternalSecretRef", f"tl-{tag}", ref_spec(
                world.vault_store, world.key(ns), target={"labels": {"team": f"a{char}b"}}), ns), "spec.target.labels.team"),
            ("in a target label key", obj("ExternalSecretRef", f"tk-{tag}", ref_spec(
                world.vault_store, world.key(ns), target={"labels": {f"te{char}am": "a"}}), ns), "spec.target.labels"),
            ("in a target annotation key", obj("ExternalSecretRef", f"ta-{tag}", ref_spec(
                world.vault_store, world.key(ns), target={"annotations": {f"no{char}te": "a"}}), ns),
             "spec.target.annotations"),
            ("in a rule name", obj("IntentPolicy", world.cluster_name(f"rn-{tag}"), {
                "match": {"kinds": ["DatabaseIntent"]}, "mode": "Audit",
                "rules": [{"name": f"r{char}", "expression": "true", "message": "m"}]}), "spec.rules[0].name"),
        ]
        for what, body, path in refused:
            cases.append(Case(f"unicode/{label} {what}", body["kind"], "unicode", f"{label} {what}", body, path,
                              frozenset({SCHEMA})))
        handler = [
            ("in a remote key", obj("ExternalSecretRef", f"rk-{tag}", ref_spec(
                world.vault_store, f"{world.key(ns)}{char}"), ns), "spec.data[0].remoteRef.key"),
            ("in a remote key of a tenant store", obj("ExternalSecretRef", f"rt-{tag}", ref_spec(
                world.tenant_store, f"{world.key(ns)}{char}", kind="SecretStore"), ns), "spec.data[0].remoteRef.key"),
            ("in an extracted key", obj("ExternalSecretRef", f"rx-{tag}", {
                "storeRef": {"name": world.aws_store, "kind": "ClusterSecretStore"}, "refreshInterval": "0",
                "dataFrom": [{"extract": {"key": f"{world.key(ns)}{char}"}}]}, ns), "spec.dataFrom[0].extract.key"),
            ("in the adopt annotation", obj("DatabaseIntent", f"ad-{tag}", database_spec(), ns,
                                            annotations={"paved.dev/adopt-db-instance": f"db{char}"}),
             "metadata.annotations[paved.dev/adopt-db-instance]"),
        ]
        for what, body, path in handler:
            cases.append(Case(f"unicode/{label} {what}", body["kind"], "unicode", f"{label} {what}", body, path,
                              frozenset({HANDLER})))
        harmless = [
            ("in an annotation value", obj("AgentIdentity", f"av-{tag}", agent_spec(), ns,
                                           annotations={"note": f"a{char}b"})),
            ("in spec.purpose and spec.owner", obj("AgentIdentity", f"fp-{tag}",
                                                   agent_spec(purpose=f"evil{char}purpose", owner=f"team{char}"), ns)),
            ("in a target annotation value", obj("ExternalSecretRef", f"tv-{tag}", ref_spec(
                world.vault_store, world.key(ns), target={"annotations": {"note": f"a{char}b"}}), ns)),
            ("in a rule message", obj("IntentPolicy", world.cluster_name(f"rm-{tag}"), {
                "match": {"kinds": ["DatabaseIntent"], "namespaceSelector": {"matchLabels": {
                    "kubernetes.io/metadata.name": world.cel(99)}}},
                "rules": [{"name": "r", "expression": "true", "message": f"fix{char}it"}]})),
            ("in a PolicyException reason", _set(_set(exceptions, "metadata.name", f"pr-{tag}"), "spec.reason",
                                                 f"because{char}")),
        ]
        for what, body in harmless:
            cases.append(Case(f"unicode/{label} {what}", body["kind"], "unicode", f"{label} {what}", body, "",
                              frozenset({HANDLED})))
    return cases


# --- path traversal in remote keys -----------------------------------------------------------------


def traversal_cases(world: World) -> list[Case]:
    """Keys that try to leave `teams/<namespace>/`, the prefix the ClusterSecretStores allow."""
    ns, victim = world.main, world.victim
    own = f"teams/{ns}"
    keys = [
        ("dot-dot", f"{own}/../{victim}/db", HANDLER),
        ("dot-dot at the end", f"{own}/db/..", HANDLER),
        ("dot", f"{own}/./db", HANDLER),
        ("encoded dot-dot", f"{own}/%2e%2e/{victim}/db", HANDLER),
        ("upper-case encoded dot-dot", f"{own}/%2E%2E/{victim}/db", HANDLER),
        ("half-encoded dot-dot", f"{own}/.%2e/{victim}/db", HANDLER),
        ("encoded slash", f"{own}/..%2f{victim}/db", HANDLER),
        ("double-encoded dot-dot", f"{own}/%252e%252e/{victim}/db", HANDLER),
        ("absolute path", f"/teams/{victim}/db", HANDLER),
        ("absolute path into the prefix", f"/{own}/../{victim}/db", HANDLER),
        ("empty segment", f"{own}//../{victim}/db", HANDLER),
        ("backslash dot-dot", f"{own}/..\\{victim}/db", HANDLER),
        ("other namespace", f"teams/{victim}/db", HANDLER),
        ("prefix without its slash", f"teams/{ns}-evil/db", HANDLER),
    ]
    cases = []
    for store, kind in ((world.vault_store, "Vault"), (world.aws_store, "AWS")):
        for i, (what, key, stop) in enumerate(keys):
            name = f"tr-{kind.lower()}-{i}"
            cases.append(Case(f"traversal/{kind}/{what}", "ExternalSecretRef", "traversal",
                              f"{kind} remote key with {what}: {key!r}", obj("ExternalSecretRef", name, ref_spec(store, key), ns),
                              "spec.data[0].remoteRef.key", frozenset({stop})))
        cases.append(Case(f"traversal/{kind}/dot-dot in dataFrom", "ExternalSecretRef", "traversal",
                          f"{kind} dataFrom key with dot-dot", obj("ExternalSecretRef", f"tr-{kind.lower()}-x", {
                              "storeRef": {"name": store, "kind": "ClusterSecretStore"}, "refreshInterval": "0",
                              "dataFrom": [{"extract": {"key": f"{own}/../{victim}/db"}}]}, ns),
                          "spec.dataFrom[0].extract.key", frozenset({HANDLER})))
    for i, (what, key, _stop) in enumerate(keys[:4]):
        cases.append(Case(f"traversal/tenant Vault/{what}", "ExternalSecretRef", "traversal",
                          f"tenant SecretStore key with {what}", obj("ExternalSecretRef", f"tr-tenant-{i}", ref_spec(
                              world.tenant_store, key, kind="SecretStore"), ns),
                          "spec.data[0].remoteRef.key", frozenset({HANDLER})))
    return cases


# --- Jinja2 sandbox escapes and bombs ---------------------------------------------------------------

TEMPLATE_ATTACKS: dict[str, str] = {
    "__class__": "''.__class__",
    "__subclasses__": "().__class__.__bases__[0].__subclasses__()",
    "__mro__ through attr": "(spec | attr('__class__')).__mro__",
    "cycler globals": "cycler.__init__.__globals__",
    "joiner globals": "joiner.__init__.__globals__",
    "namespace globals": "namespace.__init__.__globals__",
    "lipsum globals": "lipsum.__globals__",
    "lipsum(n=10**6)": "lipsum(n=1000000)",
    "self": "self.__init__",
    "config": "config.items()",
    "format string attribute": "'{0.__class__}'.format(spec)",
    "dict.update": "spec.update({'x': 1})",
    "range(10**9)": "range(10**9) | list | length",
    "string * 10**9": "'a' * 10**9",
    "string * 10**10 (folded at compile time)": "'aaaaaaaaaa' * 10000000000",
    "list * 10**9": "([1] * 10**9) | length",
    "power tower": "10 ** (10 ** 8)",
    "center(10**9)": "'x' | center(1000000000)",
    "batch fill": "[1] | batch(1000000000, 0) | list",
    "%-width": "'%999999999s' % 'a'",
    "format width": "'{:>999999999}'.format('a')",
    "ljust": "'a'.ljust(10**9)",
    "replace growth": "'ab' | replace('a', 'a' * 1000) | replace('a', 'a' * 1000) | replace('a', 'a' * 1000)",
    "join growth": "range(100000) | map('string') | join('-' * 1000)",
}

BLOCK_ATTACKS: dict[str, str] = {
    "nested loops": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "string doubling": "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "recursive loop": "{% for x in range(100) recursive %}{{ loop(range(100)) }}{% endfor %}",
    "output flood": "{% for i in range(100000) %}{{ '0123456789' * 100 }}{% endfor %}",
}


def jinja_cases(world: World) -> list[Case]:
    """Compositions (selected only by compositionRef) whose template attacks, and an intent using each.

    The Composition is the platform's, so it is accepted; the intent's render must fail
    quickly and name the composition's resource, and the operator must not notice."""
    ns = world.main
    cases = []
    attacks = [(what, "{{ (" + expression + ") | string | to_json }}", "") for what, expression in TEMPLATE_ATTACKS.items()]
    attacks += [(what, "{{ '' | to_json }}", block) for what, block in BLOCK_ATTACKS.items()]
    for i, (what, value, block) in enumerate(attacks):
        name = world.cluster_name(f"jinja-{i}")
        template = (f"{block}\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{{{ metadata.name | to_json }}}}\n"
                    f"data:\n  x: {value}\n")
        composition = obj("Composition", name, {"compositeKind": "AgentIdentity",
                                                "resources": [{"name": "bomb", "provider": "kubernetes", "template": template}]})
        intent = obj("AgentIdentity", f"jinja-{i}", agent_spec(compositionRef={"name": name}), ns)
        cases.append(Case(f"jinja/{what}", "AgentIdentity", "jinja", f"Composition template: {what}", intent,
                          'resource "bomb"', frozenset({HANDLER}), setup=(composition,)))
    expressions = [("when", "'a' * 10**10"), ("when", "range(10**9) | list"),
                   ("forEach", "range(100000) | map('string') | list"), ("forEach", "cycler.__init__.__globals__")]
    for i, (where, expression) in enumerate(expressions):
        name = world.cluster_name(f"jinja-x{i}")
        composition = obj("Composition", name, {"compositeKind": "AgentIdentity", "resources": [{
            "name": "bomb", "provider": "kubernetes", where: expression,
            "template": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ (metadata.name ~ '-' ~ (item | default('x'))) | to_json }}\n"}]})
        intent = obj("AgentIdentity", f"jinja-x{i}", agent_spec(compositionRef={"name": name}), ns)
        cases.append(Case(f"jinja/{where}: {expression}", "AgentIdentity", "jinja", f"Composition {where}: {expression}",
                          intent, 'resource "bomb', frozenset({HANDLER}), setup=(composition,)))
    # ExternalSecretRef templates: written by tenants, rendered with the fetched values.
    secret_attacks = {
        "value * 10**9": "{{ password * 1000000000 }}",
        "constant * 10**10": "{{ 'a' * 10000000000 }}",
        "__class__": "{{ password.__class__ }}",
        "range is not there": "{{ range(10) }}",
        "center(10**9)": "{{ password | center(1000000000) }}",
        "%-width": "{{ '%999999999s' | format(password) }}",
        "recursion": "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
        "doubling": "{% macro twice(s, n) %}{% if n %}{{ twice(s ~ s, n - 1) }}{% else %}{{ s }}{% endif %}{% endmacro %}"
                    "{{ twice(password, 64) }}",
    }
    for i, (what, template) in enumerate(secret_attacks.items()):
        body = obj("ExternalSecretRef", f"tpl-{i}", ref_spec(world.vault_store, world.key(ns),
                                                             target={"template": {"data": {"dsn": template}}}), ns)
        cases.append(Case(f"jinja/ExternalSecretRef template: {what}", "ExternalSecretRef", "jinja",
                          f"ExternalSecretRef template: {what}", body, "spec.target.template.data.dsn", frozenset({HANDLER})))
    return cases


# --- CEL cost bombs ---------------------------------------------------------------------------------

CEL_BOMBS: dict[str, tuple[str, dict[str, Any]]] = {
    "nested comprehensions": ("params.items.all(a, params.items.all(b, a != b || a == b))", {"items": list(range(2000))}),
    "triple nesting over the intent": (
        "object.spec.capabilities.all(a, object.spec.capabilities.all(b, object.spec.capabilities.all(c, "
        "a.verbs == b.verbs || b.verbs == c.verbs)))", {}),
    "exponential string growth": ("[object.metadata.name]" + ".map(a, a + a)" * 40 + ".size() > 0", {}),
    "list of lists": ("params.items.map(a, params.items + [a]).size() > 0", {"items": list(range(2000))}),
    "list doubling": ("[params.items]" + ".map(l, l + l)" * 30 + ".size() > 0", {"items": list(range(100))}),
    "string concatenation in a comprehension": ("params.items.map(a, object.metadata.name + object.metadata.name"
                                                " + object.metadata.name).size() > 0", {"items": list(range(20000))}),
}


def cel_cases(world: World) -> list[Case]:
    """An Enforce IntentPolicy with a cost bomb per namespace, and an intent there.

    The webhook evaluates the rule for the intent: it must stop at the cost limit and deny
    naming policy and rule, long before the API server's webhook timeout."""
    cases = []
    big_agent = {"capabilities": [{"resources": [f"r{i}"], "verbs": ["get", "list"]} for i in range(32)]}
    for i, (what, (expression, params)) in enumerate(CEL_BOMBS.items()):
        policy = world.cluster_name(f"cel-{i}")
        namespace = world.cel(i)
        setup = obj("IntentPolicy", policy, {
            "match": {"kinds": ["AgentIdentity"], "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}},
            "mode": "Enforce", "params": params,
            "rules": [{"name": "bomb", "expression": expression, "message": "cost bomb"}]})
        intent = obj("AgentIdentity", f"cel-{i}", big_agent, namespace)
        cases.append(Case(f"cel/{what}", "AgentIdentity", "cel", f"IntentPolicy rule: {what}", intent, f"{policy}/bomb",
                          frozenset({WEBHOOK}), setup=(setup,), alone=True))
    shapes = (("2,000 nested parentheses", "(" * 2000 + "true" + ")" * 2000, frozenset({WEBHOOK})),
              ("500 alternatives", " || ".join(["true"] * 500), frozenset({HANDLED})))
    for j, (what, expression, stops) in enumerate(shapes):
        body = obj("IntentPolicy", world.cluster_name(f"cel-deep-{j}"), {
            "match": {"kinds": ["AgentIdentity"], "namespaceSelector": {"matchLabels": {
                "kubernetes.io/metadata.name": world.cel(99)}}},
            "mode": "Audit", "rules": [{"name": "deep", "expression": expression, "message": "m"}]})
        cases.append(Case(f"cel/{what}", "IntentPolicy", "cel", f"IntentPolicy rule with {what}", body,
                          "spec.rules[0].expression" if stops != {HANDLED} else "", stops, alone=True))
    return cases


# --- delegation ---------------------------------------------------------------------------------------


def delegation_cases(world: World) -> list[Case]:
    ns = world.delegation

    def agent(name: str, parent: str | None, namespace: str | None = None, **extra: Any) -> dict[str, Any]:
        spec = agent_spec(**extra)
        if parent is not None:
            spec["delegatedFrom"] = {"name": parent, **({"namespace": namespace} if namespace else {})}
        return obj("AgentIdentity", name, spec, ns)

    refused = frozenset({HANDLER})
    cases = [
        Case("delegation/chain root", "AgentIdentity", "delegation", "the root of a long chain and parent of others",
             agent("root", None), "", frozenset({HANDLED})),
        Case("delegation/self", "AgentIdentity", "delegation", "delegates from itself", agent("self", "self"),
             "spec.delegatedFrom", refused),
        Case("delegation/cycle of two (a)", "AgentIdentity", "delegation", "a -> b -> a", agent("two-a", "two-b"),
             "spec.delegatedFrom", refused),
        Case("delegation/cycle of two (b)", "AgentIdentity", "delegation", "b -> a -> b", agent("two-b", "two-a"),
             "spec.delegatedFrom", refused),
        Case("delegation/cycle of three (a)", "AgentIdentity", "delegation", "a -> b -> c -> a", agent("three-a", "three-b"),
             "spec.delegatedFrom", refused),
        Case("delegation/cycle of three (b)", "AgentIdentity", "delegation", "b -> c -> a -> b", agent("three-b", "three-c"),
             "spec.delegatedFrom", refused),
        Case("delegation/cycle of three (c)", "AgentIdentity", "delegation", "c -> a -> b -> c", agent("three-c", "three-a"),
             "spec.delegatedFrom", refused),
        Case("delegation/missing parent", "AgentIdentity", "delegation", "parent does not exist",
             agent("orphan", "nobody-here"), "spec.delegatedFrom.name", refused),
        Case("delegation/other namespace", "AgentIdentity", "delegation", "parent in a namespace not allowed to delegate",
             agent("foreign", "root", world.main), "spec.delegatedFrom.namespace", refused),
        Case("delegation/wider than the parent", "AgentIdentity", "delegation", "asks for a verb its parent lacks",
             agent("greedy", "root", capabilities=[{"resources": ["configmaps"], "verbs": ["get", "delete"]}]),
             "spec.capabilities", refused),
    ]
    parent = "root"
    for depth in range(1, DELEGATION_DEPTH + 4):
        name = f"chain-{depth}"
        within = depth <= DELEGATION_DEPTH
        cases.append(Case(f"delegation/chain depth {depth}", "AgentIdentity", "delegation",
                          f"a delegation chain {depth} deep (the cap is {DELEGATION_DEPTH})", agent(name, parent),
                          "" if within else "spec.delegatedFrom", frozenset({HANDLED}) if within else refused))
        parent = name
    return cases


# --- names at the limits ---------------------------------------------------------------------------


def _long_name(stem: str, length: int) -> str:
    """A DNS subdomain of exactly `length` characters starting with `stem`, in labels of at most 61."""
    text = stem
    while len(text) < length:
        remaining = length - len(text)
        text += "a" if remaining == 1 else "." + "a" * min(60, remaining - 1)
    return text


def name_cases(world: World) -> list[Case]:
    """Intents named at 63 and 253 characters (and 254), in a namespace of 63: what Paved derives
    from their names (ServiceAccounts, Roles, RDS identifiers, Secrets, labels, Events) must stay valid."""
    cases = []
    ns, long_ns = world.main, world.long
    specs = {
        "AgentIdentity": agent_spec(),
        "DatabaseIntent": database_spec(),
        "ExternalSecretRef": ref_spec(world.vault_store, world.key(ns)),
    }
    for kind, spec in specs.items():
        short = kind.lower()[:3]
        for length in (63, 253):
            for namespace in ((ns, long_ns) if kind != "ExternalSecretRef" else (ns,)):
                name = _long_name(f"{short}{length}-{'l' if namespace == long_ns else 'm'}", length)
                cases.append(Case(f"names/{kind} named with {length} characters in a {len(namespace)}-character namespace",
                                  kind, "names", f"{kind} name of {length} characters", obj(kind, name, spec, namespace),
                                  "", frozenset({HANDLED})))
        name = _long_name(f"{short}254", 254)
        cases.append(Case(f"names/{kind} named with 254 characters", kind, "names", f"{kind} name of 254 characters",
                          obj(kind, name, spec, ns), "metadata.name", frozenset({SCHEMA})))
    cases.append(Case("names/AgentIdentity with a 253-character serviceAccountName", "AgentIdentity", "names",
                      "serviceAccountName of 253 characters",
                      obj("AgentIdentity", "long-sa", agent_spec(serviceAccountName=_long_name("sa", 253)), ns),
                      "", frozenset({HANDLED})))
    cases.append(Case("names/AgentIdentity with a 254-character serviceAccountName", "AgentIdentity", "names",
                      "serviceAccountName of 254 characters",
                      obj("AgentIdentity", "longer-sa", agent_spec(serviceAccountName=_long_name("sa", 254)), ns),
                      "spec.serviceAccountName", frozenset({SCHEMA})))
    cases.append(Case("names/ExternalSecretRef with a 253-character target", "ExternalSecretRef", "names",
                      "target Secret name of 253 characters",
                      obj("ExternalSecretRef", "long-target", ref_spec(world.vault_store, world.key(ns),
                                                                       target={"name": _long_name("target", 253)}), ns),
                      "", frozenset({HANDLED})))
    cases.append(Case("names/DatabaseIntent with a 253-character connection Secret", "DatabaseIntent", "names",
                      "connectionSecret name of 253 characters",
                      obj("DatabaseIntent", "long-secret", database_spec(connectionSecret={"name": _long_name("conn", 253)}), ns),
                      "", frozenset({HANDLED})))
    cases.append(Case("names/DatabaseIntent with a 64-character allowFrom namespace", "DatabaseIntent", "names",
                      "allowFrom namespace of 64 characters",
                      obj("DatabaseIntent", "long-peer", database_spec(network={"allowFrom": [{"namespace": "p" * 64}]}), ns),
                      "spec.network.allowFrom[0].namespace", frozenset({SCHEMA})))
    cloud_agent = agent_spec(secrets=[{"path": f"secret/data/{long_ns}/*"}],
                             cloud={"aws": {"actions": ["s3:GetObject"], "resources": ["arn:aws:s3:::reports/*"]}})
    cases.append(Case("names/AgentIdentity with Vault and IAM grants named with 253 characters in a 63-character namespace",
                      "AgentIdentity", "names", "Vault policy and role, IAM role derived from a 253-character name",
                      obj("AgentIdentity", _long_name("cloud253", 253), cloud_agent, long_ns), "", frozenset({HANDLED})))
    for length in (63, 253):
        name = _long_name(f"pro{length}", length)
        app = f"web{length}"
        cases.append(Case(f"names/ProgressiveRollout named with {length} characters", "ProgressiveRollout", "names",
                          f"ProgressiveRollout name of {length} characters (its pods' label, its copies' names)",
                          obj("ProgressiveRollout", name, {
                              "targetRef": {"name": app}, "service": {"name": app, "port": 80},
                              "steps": [{"setWeight": 20}, {"pause": {}}]}, ns), "", frozenset({HANDLED}),
                          setup=_workload(app, ns, derived_label_value(name))))
    return cases


def _workload(app: str, namespace: str, rollout_label: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Deployment and the Service in front of it, selecting the rollout's pods as Paved asks."""
    return (
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": app, "namespace": namespace},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": app}},
                  "template": {"metadata": {"labels": {"app": app}},
                               "spec": {"containers": [{"name": "web", "image": "registry.k8s.io/pause:3.10"}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": app, "namespace": namespace},
         "spec": {"selector": {"app": app, "paved.dev/rollout": rollout_label}, "ports": [{"port": 80, "targetPort": 8080}]}},
    )


# --- all of them ------------------------------------------------------------------------------------

GENERATORS: tuple[Callable[[World], list[Case]], ...] = (
    schema_cases, rule_cases, oversized_cases, unicode_cases, traversal_cases, jinja_cases, cel_cases,
    delegation_cases, name_cases,
)


def hostile_cases(world: World) -> list[Case]:
    """Every case, in an order that applies: parents before the children of a delegation chain."""
    cases = [case for generate in GENERATORS for case in generate(world)]
    ids = [case.id for case in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"duplicate case ids: {duplicates}")
    keys = [(case.kind, case.namespace, case.name) for case in cases if SCHEMA not in case.stops]
    clashing = sorted({str(k) for k in keys if keys.count(k) > 1})
    if clashing:
        raise ValueError(f"accepted cases share an object: {clashing}")
    return cases


def namespaces(world: World, cases: list[Case]) -> list[str]:
    """Every namespace the cases (and their setup) live in, plus the victim's."""
    found = {world.main, world.delegation, world.long, world.victim}
    for case in cases:
        for body in (case.body, *case.setup):
            namespace = (body.get("metadata") or {}).get("namespace")
            if isinstance(namespace, str) and re.fullmatch(r"[a-z0-9-]{1,63}", namespace):
                found.add(namespace)
    return sorted(found)


def infrastructure(world: World, cases: list[Case], *, vault_token: str, vault_ca: str,
                   aws_keys: tuple[str, str], operator_namespace: str = "paved-system") -> list[dict[str, Any]]:
    """What the cases expect to exist: their namespaces (PolicyExceptions allowed in `main`), the two
    ClusterSecretStores granting `teams/{namespace}/` to `main` only (credentials in the operator's
    namespace), and the tenant's own Vault SecretStore."""
    objects: list[dict[str, Any]] = []
    for namespace in namespaces(world, cases):
        labels = {"paved.dev/test": "true", "paved.dev/hostile": world.prefix}
        if namespace == world.main:
            labels["paved.dev/policy-exceptions"] = "allowed"
        objects.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels}})
    access = [{"namespaces": [world.main], "keyPrefixes": ["teams/{namespace}/"]}]
    token_secret = f"{world.vault_store}-token"
    keys_secret = f"{world.aws_store}-keys"
    objects += [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": token_secret, "namespace": operator_namespace},
         "stringData": {"token": vault_token}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": keys_secret, "namespace": operator_namespace},
         "stringData": {"id": aws_keys[0], "secret": aws_keys[1]}},
        obj("ClusterSecretStore", world.vault_store, {"provider": {"vault": {
            "server": world.vault_addr, "caBundle": vault_ca,
            "auth": {"tokenSecretRef": {"name": token_secret, "key": "token"}}}}, "access": access}),
        obj("ClusterSecretStore", world.aws_store, {"provider": {"aws": {
            "region": world.aws_region, "endpointURL": world.aws_endpoint, "auth": {"secretRef": {
                "accessKeyIDSecretRef": {"name": keys_secret, "key": "id"},
                "secretAccessKeySecretRef": {"name": keys_secret, "key": "secret"}}}}}, "access": access}),
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tenant-vault-token", "namespace": world.main},
         "stringData": {"token": vault_token}},
        obj("SecretStore", world.tenant_store, {"provider": {"vault": {
            "server": world.vault_addr, "caBundle": vault_ca,
            "auth": {"tokenSecretRef": {"name": "tenant-vault-token", "key": "token"}}}}}, world.main),
    ]
    return objects


def remote_secrets(world: World) -> dict[str, dict[str, str]]:
    """Remote key -> value the backends must hold (Vault KV under `secret/`, Secrets Manager as JSON):
    the main namespace's credentials, and the victim's, which no case may read."""
    return {
        world.key(world.main): {"username": "app", "password": "main-password"},
        world.key(world.victim): {"username": "victim", "password": world.marker},
    }


__all__ = [
    "Case", "HANDLED", "HANDLER", "REFUSED", "SCHEMA", "STOPS", "WEBHOOK", "World", "hostile_cases",
    "infrastructure", "namespaces", "remote_secrets",
]
