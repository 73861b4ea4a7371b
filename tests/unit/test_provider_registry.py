"""One registry shape for every kind of provider: built-ins resolve lazily, a taken name is
refused, a test substitutes a provider and gets the original back."""

from __future__ import annotations

import sys

import pytest

from paved.providers import base, metrics, routing, secretstores
from paved.providers.base import ProviderError
from paved.providers.registry import DuplicateProvider, Registry


def test_every_kind_of_provider_has_one_registry_with_its_built_ins() -> None:
    assert base.PROVIDERS.names() == ["aws-db-subnet-group", "aws-iam-role", "aws-rds", "aws-security-group", "kubernetes",
                                      "vault-k8s-role", "vault-policy"]
    assert secretstores.STORES.names() == ["aws", "vault"]
    assert metrics.METRICS.names() == ["prometheus"]
    assert routing.ROUTERS.names() == ["gatewayAPI", "replicaRatio"]
    for registry in (base.PROVIDERS, secretstores.STORES, metrics.METRICS, routing.ROUTERS):
        for name in registry.names():
            assert callable(registry.factory(name)), (registry.what, name)


def test_a_taken_name_is_refused_and_a_substitute_is_undone() -> None:
    registry: Registry[str] = Registry("thing", builtin={"json": "json:dumps"})
    with pytest.raises(DuplicateProvider, match="thing 'json' is already registered"):
        registry.register("json", "other")
    registry.register("new", "first")
    with pytest.raises(DuplicateProvider):
        registry.register("new", "second")
    with registry.substituted("json", "fake"), registry.substituted("new", "fake too"):
        assert (registry.factory("json"), registry.factory("new")) == ("fake", "fake too")
    assert registry.factory("new") == "first"
    import json

    assert registry.factory("json") is json.dumps


def test_importing_a_provider_module_registers_nothing_and_unknown_names_say_what_is_known() -> None:
    seen: list[str] = []
    registry: Registry[object] = Registry("thing", builtin={"colors": "colorsys:rgb_to_hsv"},
                                          unknown=lambda name, known: ProviderError(f"no {name}; known: {known}"))
    registry.on_change(seen.append)
    sys.modules.pop("colorsys", None)
    assert registry.names() == ["colors"] and "colorsys" not in sys.modules  # lazy: nothing imported yet
    with pytest.raises(ProviderError, match="no nope; known: colors"):
        registry.factory("nope")
    registry.register("x", object())
    registry.unregister("x")
    assert seen == ["x", "x"]


def test_a_substituted_resource_provider_replaces_the_cached_instance() -> None:
    real = base.get("kubernetes")

    class Fake:
        name = "kubernetes"

    with base.PROVIDERS.substituted("kubernetes", Fake):
        assert isinstance(base.get("kubernetes"), Fake)
    assert type(base.get("kubernetes")) is type(real)
