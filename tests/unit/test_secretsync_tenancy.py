"""paved.secretsync.tenancy: a namespaced SecretStore acts only with its namespace's credentials,
at the platform's endpoints, unless an IntentPolicy allowance says otherwise."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paved.api.platform import nothing_allowed
from paved.api.secrets import SecretStoreProvider
from paved.secretsync.model import StoreKey
from paved.secretsync.tenancy import PlatformEndpoints, describe, refusals

TENANT = StoreKey("SecretStore", "evil", "store")
CLUSTER = StoreKey("ClusterSecretStore", "", "store")
ROLE = "arn:aws:iam::123456789012:role/reader"
PLATFORM = PlatformEndpoints(aws="http://127.0.0.1:5000", vault="https://vault.platform:8200")
SECRET_REF = {"accessKeyIDSecretRef": {"name": "k", "key": "id"}, "secretAccessKeySecretRef": {"name": "k", "key": "secret"}}


def aws(**fields: Any) -> SecretStoreProvider:
    return SecretStoreProvider.model_validate({"aws": {"region": "eu-west-1", **fields}})


def vault(server: str = "https://vault.platform:8200", **auth: Any) -> SecretStoreProvider:
    auth = auth or {"tokenSecretRef": {"name": "t", "key": "token"}}
    return SecretStoreProvider.model_validate({"vault": {"server": server, "auth": auth}})


def allowing(*names: str) -> dict[str, list[str]]:
    keys = {"OperatorCredentials": "operatorCredentials", "AnyEndpoint": "anyEndpoint"}
    return {**nothing_allowed(), **{keys[name]: ["platform-policy"] for name in names}}


def fields(provider: SecretStoreProvider, allowed: dict[str, list[str]] | None = None, key: StoreKey = TENANT,
           platform: PlatformEndpoints = PLATFORM) -> list[str]:
    return [r.path for r in refusals(key, provider, allowed or nothing_allowed(), platform)]


def test_aws_without_own_credentials_would_borrow_the_operators_and_is_refused() -> None:
    [refusal] = refusals(TENANT, aws(), nothing_allowed(), PLATFORM)
    assert refusal.path == "spec.provider.aws.auth"
    text = str(refusal)
    assert "operator's own AWS credentials" in text and "namespace evil" in text
    assert "auth.secretRef" in text and "auth.serviceAccountRef" in text and "OperatorCredentials" in text
    # A role alone is assumed with the operator's credentials: the same borrowing.
    [alone] = refusals(TENANT, aws(auth={"role": ROLE}), nothing_allowed(), PLATFORM)
    assert alone.path == "spec.provider.aws.auth" and f"assume {ROLE} with the operator's own" in alone.message


@pytest.mark.parametrize("auth", [
    {"secretRef": SECRET_REF},
    {"secretRef": SECRET_REF, "role": ROLE},
    {"serviceAccountRef": {"name": "reader"}, "role": ROLE},
    {"serviceAccountRef": {"name": "reader", "namespace": "evil"}, "role": ROLE},
], ids=["keys", "keys+role", "serviceaccount", "serviceaccount-own-namespace"])
def test_aws_with_credentials_of_its_namespace_may_act(auth: dict[str, Any]) -> None:
    assert fields(aws(auth=auth)) == []


def test_operator_credentials_only_where_an_allowance_says_so() -> None:
    assert fields(aws(), allowing("OperatorCredentials")) == []
    assert fields(aws(auth={"role": ROLE}), allowing("OperatorCredentials")) == []
    assert fields(aws(), allowing("AnyEndpoint")) == ["spec.provider.aws.auth"]  # the other allowance lends nothing
    assert fields(aws(), key=CLUSTER) == []  # the platform's own store


def test_a_service_account_of_another_namespace_is_refused_whatever_is_allowed() -> None:
    everything = allowing("OperatorCredentials", "AnyEndpoint")
    foreign = aws(auth={"serviceAccountRef": {"name": "reader", "namespace": "victim"}, "role": ROLE})
    assert fields(foreign, everything) == ["spec.provider.aws.auth.serviceAccountRef.namespace"]
    kubernetes = {"kubernetes": {"role": "r", "serviceAccountRef": {"name": "reader", "namespace": "victim"}}}
    [refusal] = refusals(TENANT, vault(**kubernetes), everything, PLATFORM)
    assert refusal.path == "spec.provider.vault.auth.kubernetes.serviceAccountRef.namespace"
    assert "its own namespace (evil), not of victim" in refusal.message
    assert fields(foreign, key=CLUSTER) == [] and fields(vault(**kubernetes), key=CLUSTER) == []


@pytest.mark.parametrize("url", ["http://127.0.0.1:5000", "http://127.0.0.1:5000/", "http://127.0.0.1:5000//"])
def test_aws_endpoint_may_only_be_the_platforms(url: str) -> None:
    assert fields(aws(endpointURL=url, auth={"secretRef": SECRET_REF})) == []


def test_a_foreign_aws_endpoint_is_refused_unless_allowed() -> None:
    store = aws(endpointURL="http://attacker.example:80", auth={"secretRef": SECRET_REF})
    [refusal] = refusals(TENANT, store, nothing_allowed(), PLATFORM)
    assert refusal.path == "spec.provider.aws.endpointURL"
    assert "http://127.0.0.1:5000" in refusal.message and "AnyEndpoint" in refusal.message
    assert "attacker" not in refusal.message  # messages name the platform's endpoint, not echo the tenant's
    assert fields(store, allowing("AnyEndpoint")) == []
    # Without PAVED_AWS_ENDPOINT_URL the platform uses AWS's own endpoints: any endpointURL is foreign.
    [none] = refusals(TENANT, aws(endpointURL="http://127.0.0.1:5000", auth={"secretRef": SECRET_REF}),
                      nothing_allowed(), PlatformEndpoints())
    assert "AWS's own endpoints" in none.message
    # Both problems at once are both named.
    assert fields(aws(endpointURL="http://x:1")) == ["spec.provider.aws.auth", "spec.provider.aws.endpointURL"]


def test_vault_server_may_only_be_the_platforms() -> None:
    assert fields(vault()) == []
    assert fields(vault("https://VAULT.platform:8200/")) == []
    [refusal] = refusals(TENANT, vault("https://vault.attacker:8200"), nothing_allowed(), PLATFORM)
    assert refusal.path == "spec.provider.vault.server" and "https://vault.platform:8200" in refusal.message
    assert fields(vault("https://vault.platform:8201")) == ["spec.provider.vault.server"]  # another port
    assert fields(vault("http://vault.platform:8200")) == ["spec.provider.vault.server"]  # another scheme
    assert fields(vault("https://vault.attacker:8200"), allowing("AnyEndpoint")) == []
    [unset] = refusals(TENANT, vault(), nothing_allowed(), PlatformEndpoints())
    assert "names no Vault" in unset.message
    assert fields(vault("https://vault.attacker:8200"), key=CLUSTER) == []


def test_describe_names_every_field() -> None:
    text = describe(refusals(TENANT, aws(endpointURL="http://x:1"), nothing_allowed(), PLATFORM))
    assert text.startswith("spec.provider.aws.auth: ") and "; spec.provider.aws.endpointURL: " in text


# --- properties -------------------------------------------------------------------------------------

auths = st.sampled_from([None, {}, {"role": ROLE}, {"secretRef": SECRET_REF}, {"secretRef": SECRET_REF, "role": ROLE},
                         {"serviceAccountRef": {"name": "sa"}, "role": ROLE},
                         {"serviceAccountRef": {"name": "sa", "namespace": "victim"}, "role": ROLE}])
endpoints = st.sampled_from([None, "http://127.0.0.1:5000", "http://127.0.0.1:5000/", "http://other:5000",
                             "https://169.254.169.254"])
allowances = st.sets(st.sampled_from(["OperatorCredentials", "AnyEndpoint"]))


@given(auth=auths, endpoint=endpoints, allowed=allowances)
def test_every_aws_store_is_judged_by_exactly_these_three_questions(auth: dict[str, Any] | None, endpoint: str | None,
                                                                   allowed: set[str]) -> None:
    fields_ = {} if auth is None else {"auth": auth}
    if endpoint:
        fields_["endpointURL"] = endpoint
    found = fields(aws(**fields_), allowing(*allowed))
    own = bool(auth) and ("secretRef" in auth or "serviceAccountRef" in auth)
    borrows = not own and "OperatorCredentials" not in allowed
    foreign_account = bool(auth) and (auth.get("serviceAccountRef") or {}).get("namespace") == "victim"
    foreign_endpoint = endpoint not in (None, "http://127.0.0.1:5000", "http://127.0.0.1:5000/") and "AnyEndpoint" not in allowed
    expected = [name for name, refused in (
        ("spec.provider.aws.auth", borrows),
        ("spec.provider.aws.auth.serviceAccountRef.namespace", foreign_account),
        ("spec.provider.aws.endpointURL", foreign_endpoint)) if refused]
    assert found == expected
    assert fields(aws(**fields_), allowing(*allowed), key=CLUSTER) == []
