"""The bounded sandbox (paved.render.sandbox): a template that is too expensive fails its own
render with a message, in both sandboxes (Compositions and ExternalSecretRef templates).

Sizes are chosen so that each attack would *complete* without the limits (a few megabytes, a
few million steps), so every test here fails, rather than hangs, on an unbounded sandbox.
"""

from __future__ import annotations

import copy
import re
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml
from paved.api.kinds import with_defaults
from paved.render import RenderError, check_composition, render, select_composition
from paved.render.sandbox import MAX_STEPS, RenderLimitError, budget, stop_when
from paved.secretsync.model import RemoteKey, RemoteValue, ref_spec_from
from paved.secretsync.values import ResolveError, resolve
from paved.api.secrets import ExternalSecretRefSpec

ROOT = Path(__file__).resolve().parents[2]


def composition(template: str, **resource: Any) -> dict[str, Any]:
    return {"metadata": {"name": "bomb"}, "spec": {"compositeKind": "AgentIdentity", "resources": [
        {"name": "r", "provider": "kubernetes", "template": template, **resource}]}}


def config_map(value: str, block: str = "") -> str:
    return f"{block}\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  x: {{{{ ({value}) | string | to_json }}}}\n"


INTENT = {"apiVersion": "paved.dev/v1alpha1", "kind": "AgentIdentity",
          "metadata": {"name": "a", "namespace": "n", "uid": "u"}, "spec": {"capabilities": []}}

# str methods whose result is far larger than their arguments: refused before they run (peak
# memory stays near the template's own values, see the test below).
GROWING_METHODS = {
    "join method": config_map("('x' * 1000000).join(['a'] * 50) | length"),
    "translate method": config_map("('x' * 1000).translate({120: 'y' * 50000}) | length"),
    "expandtabs method": config_map("('\\t' * 1000).expandtabs(50000) | length"),
    "replace method": config_map("('ab' * 400000).replace('a', 'x' * 100) | length"),
}

BOMBS = {
    "string product": config_map("'a' * 2000000"),
    "list product": config_map("([1] * 2000000) | length"),
    "power": config_map("7 ** 100000"),
    "center": config_map("'x' | center(2000000)"),
    "batch fill": config_map("[1] | batch(2000000, 0) | list | length"),
    "percent width": config_map("'%2000000s' % 'a'"),
    "format width": config_map("'{:>2000000}'.format('a')"),
    "ljust": config_map("'a'.ljust(2000000)"),
    "replace growth": config_map("'ab' | replace('a', 'a' * 1000) | replace('a', 'a' * 1000)"),
    "join growth": config_map("range(2000) | map('string') | join('-' * 1000)"),
    "nested loops": config_map("1", "{% for i in range(2000) %}{% for j in range(2000) %}{% endfor %}{% endfor %}"),
    "doubling": config_map("ns.s | length", "{% set ns = namespace(s='ab') %}{% for i in range(22) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"),
    "output flood": config_map("1", "{% for i in range(5000) %}{{ '0123456789' * 100 }}{% endfor %}"),
    "list building in a loop": config_map("1", "{% for i in range(50) %}{{ range(100000) | list | length }}{% endfor %}"),
    **GROWING_METHODS,
}



@pytest.mark.parametrize("template", BOMBS.values(), ids=BOMBS.keys())
def test_a_composition_bomb_fails_its_render_naming_resource_and_limit(template: str) -> None:
    with pytest.raises(RenderError) as error:
        render(composition(template), INTENT)
    assert error.value.resource == "r"
    assert re.search(r"larger than|more than", error.value.message), error.value.message


@pytest.mark.parametrize("template", GROWING_METHODS.values(), ids=GROWING_METHODS.keys())
def test_a_growing_str_method_is_refused_before_it_allocates(template: str) -> None:
    # Each result would be 50 MB or more; refused up front, the render never holds it.
    tracemalloc.start()
    try:
        with pytest.raises(RenderError):
            render(composition(template), INTENT)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000, f"peak {peak:,} bytes"


def test_lipsum_is_not_offered_and_escapes_stay_refused() -> None:
    for attack in ("lipsum(n=10)", "''.__class__", "cycler.__init__.__globals__"):
        with pytest.raises(RenderError):
            render(composition(config_map(attack)), INTENT)


def test_huge_constants_are_not_folded_at_compile_time() -> None:
    """Jinja folds constant expressions while compiling; `'a' * 2000000` would be built then."""
    assert check_composition(composition(config_map("'a' * 2000000"))) == []
    with pytest.raises(RenderError, match="larger than"):
        render(composition(config_map("'a' * 2000000")), INTENT)


def test_when_and_for_each_expressions_are_bounded() -> None:
    spec = {"forEach": "range(60000) | map('string') | list",
            "template": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ ('x-' ~ item) | to_json }}\n"}
    with pytest.raises(RenderError, match="steps"):
        render(composition(**spec), INTENT)


def test_renders_inside_one_budget_share_it() -> None:
    template = config_map("1", "{% for i in range(60000) %}{% endfor %}")
    with budget() as shared:
        render(composition(template), INTENT)
        render(composition(template), INTENT)
    assert shared.limit - shared.left > 120_000


def test_a_caller_can_stop_a_render() -> None:
    template = config_map("1", "{% for i in range(100000) %}{% endfor %}")
    with stop_when(lambda: True), pytest.raises(RenderError, match="time ran out"):
        render(composition(template), INTENT)


def largest_agent() -> dict[str, Any]:
    """The largest AgentIdentity the API admits, in the shape the default composition loops over most."""
    body = copy.deepcopy(INTENT)
    body["spec"] = {"capabilities": [
        {"apiGroups": [f"g{k}" for k in range(8)], "resources": [f"r{j}" for j in range(32)], "verbs": ["get", "list", "watch"],
         "namespaces": [f"ns-{i}-{k}" for k in range(8)]} for i in range(32)],
        "secrets": [{"path": f"secret/data/x{i}/*", "capabilities": ["read", "list"]} for i in range(32)]}
    return body


def test_the_default_compositions_render_the_largest_intents_well_inside_the_budget() -> None:
    compositions = [yaml.safe_load(path.read_text()) for path in sorted((ROOT / "compositions").glob("*.yaml"))]
    agent = with_defaults(largest_agent())
    chosen = select_composition(agent, compositions, {})
    with budget() as used:
        result = render(chosen, agent, allowed={"clusterScope": [], "wildcards": []})
    assert len([r for r in result.resources if r.body.get("kind") == "Role"]) == 1 + 32 * 8
    assert MAX_STEPS - used.left < MAX_STEPS // 2


def secret_ref(template: str) -> tuple[Any, dict[RemoteKey, RemoteValue]]:
    spec = ExternalSecretRefSpec.model_validate({"storeRef": {"name": "s"}, "data": [
        {"secretKey": "password", "remoteRef": {"key": "db", "property": "password"}}],
        "target": {"template": {"data": {"dsn": template}}}})
    ref = ref_spec_from("n", "r", "u", 1, spec)
    return ref, {RemoteKey("db"): RemoteValue("1", {"password": "hunter2-secret"})}


@pytest.mark.parametrize("template", [
    "{{ password * 200000 }}",
    "{{ 'a' * 2000000 }}",
    "{{ password | center(2000000) }}",
    "{{ '%2000000s' | format(password) }}",
    "{% macro twice(s, n) %}{% if n %}{{ twice(s ~ s, n - 1) }}{% else %}{{ s }}{% endif %}{% endmacro %}{{ twice(password, 17) }}",
], ids=["value product", "constant product", "center", "format width", "doubling"])
def test_an_external_secret_template_bomb_names_the_key_and_never_the_value(template: str) -> None:
    ref, values = secret_ref(template)
    with pytest.raises(ResolveError) as error:
        resolve(ref, values)
    assert error.value.field == "spec.target.template.data.dsn"
    assert "hunter2" not in str(error.value)


def test_limit_errors_are_security_errors_with_fixed_text() -> None:
    error = RenderLimitError("the product would be larger than 1,000,000 characters or items")
    assert str(error).startswith("the product")
