"""Secret store providers against the real parts: OpenBao (hvac) and moto (boto3).

Request counts are read from `paved_provider_api_calls_total`, which the providers increment for
every real HTTP request (Vault: a counting adapter on the session; AWS: the session wrapper),
so "one read per distinct key" and "one login per store" are measured, not assumed.
"""

from __future__ import annotations

import secrets as random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from fixtures.vault import OpenBao, configure_kubernetes_auth
from paved.api.secrets import SecretStoreProvider
from paved.metrics import call_counts as calls
from paved.providers import secretstores
from paved.providers.aws import secretsmanager, ssm, store as aws_store
from paved.dev.stall import StallingProxy
from paved.providers import deadline
from paved.providers.secretstores import AUTH_FAILED, NOT_FOUND_UNCONFIRMED, STORE_TIMEOUT, UNREACHABLE, StoreConfig, StoreError
from paved.providers.vault import store as vault_store
from paved.secretsync.model import KeyFailure, Missing, Present, RemoteKey, RemoteValue, StoreKey

MARKER = "MARKER-integration-4b1e"


class Counted:
    """Deltas of the call counter of one provider between two points of a test."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.reset()

    def reset(self) -> None:
        self.start = calls(self.provider)

    def __call__(self, operation: str | None = None) -> int:
        """Calls of `operation` (None: of every operation) since creation or reset()."""
        now = calls(self.provider)
        return sum(count - self.start.get(op, 0) for op, count in now.items() if operation in (None, op))


@dataclass
class StaticCredentials:
    """Credentials port for tests: Secret values from a dict, tokens from a callable."""

    values: dict[tuple[str, str, str], str] = field(default_factory=dict)
    token: Any = None

    def secret_value(self, namespace: str, name: str, key: str) -> str:
        try:
            return self.values[(namespace, name, key)]
        except KeyError:
            raise StoreError(f"Secret {namespace}/{name} not found", reason="CredentialsMissing") from None

    def service_account_token(self, namespace: str, name: str, audiences: Sequence[str], seconds: int) -> str:
        return self.token(namespace, name, audiences, seconds)


def config(provider: dict[str, Any], name: str = "store", namespace: str = "app") -> StoreConfig:
    return StoreConfig(StoreKey("SecretStore", namespace, name), SecretStoreProvider.model_validate(provider), namespace)


# --- Vault / OpenBao ---------------------------------------------------------------------------


@pytest.fixture
def kv(openbao: OpenBao) -> str:
    """A fresh path prefix in the dev server's KV v2 mount `secret/`."""
    return f"it-{random.token_hex(4)}"


def vault_provider(openbao: OpenBao, auth: dict[str, Any]) -> dict[str, Any]:
    with open(openbao.ca_cert) as file:
        ca = file.read()
    return {"vault": {"server": openbao.addr, "path": "secret", "caBundle": ca, "auth": auth}}


def put(openbao: OpenBao, path: str, data: dict[str, str]) -> None:
    openbao.client.secrets.kv.v2.create_or_update_secret(path=path, secret=data, mount_point="secret")


@pytest.fixture
def approle(openbao: OpenBao, kv: str) -> dict[str, str]:
    """An AppRole whose policy reads `<kv>/*` (data and metadata) and nothing else."""
    client = openbao.client
    if "approle/" not in client.sys.list_auth_methods()["data"]:
        client.sys.enable_auth_method("approle")
    client.sys.create_or_update_policy(f"{kv}-read", f"""
path "secret/data/{kv}/*" {{ capabilities = ["read"] }}
path "secret/metadata/{kv}/*" {{ capabilities = ["read"] }}
path "secret/data/{kv}-dataonly/*" {{ capabilities = ["read"] }}
""")
    client.auth.approle.create_or_update_approle(kv, token_policies=[f"{kv}-read"], token_ttl="1h")
    role_id = client.auth.approle.read_role_id(kv)["data"]["role_id"]
    secret_id = client.auth.approle.generate_secret_id(kv)["data"]["secret_id"]
    return {"role_id": role_id, "secret_id": secret_id, "role": kv}


def approle_store(openbao: OpenBao, approle: dict[str, str]) -> vault_store.VaultStore:
    credentials = StaticCredentials({("app", "approle", "secret-id"): approle["secret_id"]})
    auth = {"appRole": {"roleId": approle["role_id"], "secretRef": {"name": "approle", "key": "secret-id"}}}
    provider = secretstores.create(config(vault_provider(openbao, auth)), credentials)
    assert isinstance(provider, vault_store.VaultStore)
    return provider


def test_vault_reads_one_request_per_distinct_path_and_logs_in_once(openbao: OpenBao, kv: str, approle: dict[str, str]) -> None:
    for i in range(30):
        put(openbao, f"{kv}/s{i}", {"username": f"u{i}", "password": MARKER})
    store = approle_store(openbao, approle)
    keys = [RemoteKey(f"{kv}/s{i}") for i in range(30)]
    count = Counted("vault")

    assert "approle" in store.check()
    assert count("login") == 1
    observed = store.versions(keys)
    assert observed == {k: Present("1") for k in keys}
    assert count("read-metadata") == 30 and count("read-data") == 0
    values = store.fetch(keys[:3])
    assert values[keys[0]] == RemoteValue("1", {"username": "u0", "password": MARKER})
    assert count("read-data") == 3

    count.reset()
    put(openbao, f"{kv}/s7", {"username": "u7", "password": "rotated"})
    observed = store.versions(keys)  # the next cycle: one metadata read per path, no login
    assert observed[keys[7]] == Present("2") and count() == 30 and count("login") == 0
    store.close()


def test_vault_token_is_renewed_near_its_ttl(openbao: OpenBao, kv: str, approle: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    openbao.client.auth.approle.create_or_update_approle(approle["role"], token_policies=[f"{kv}-read"], token_ttl="4s")
    monkeypatch.setattr(vault_store, "RELOGIN_MIN_SECONDS", 1.0)
    put(openbao, f"{kv}/a", {"k": "v"})
    store = approle_store(openbao, approle)
    count = Counted("vault")
    for _ in range(3):
        store.versions([RemoteKey(f"{kv}/a")])
    assert count("login") == 1
    time.sleep(3.5)  # past TTL minus the margin: the next call logs in again first
    store.versions([RemoteKey(f"{kv}/a")])
    assert count("login") == 2
    store.close()


def test_vault_missing_deleted_pinned_and_denied(openbao: OpenBao, kv: str, approle: dict[str, str]) -> None:
    put(openbao, f"{kv}/multi", {"v": "1"})
    put(openbao, f"{kv}/multi", {"v": "2"})
    put(openbao, f"{kv}/gone", {"v": "x"})
    openbao.client.secrets.kv.v2.delete_latest_version_of_secret(path=f"{kv}/gone", mount_point="secret")
    put(openbao, f"{kv}-dataonly/x", {"v": "d"})
    put(openbao, "elsewhere/x", {"v": MARKER})
    store = approle_store(openbao, approle)
    keys = {
        "latest": RemoteKey(f"{kv}/multi"),
        "pinned": RemoteKey(f"{kv}/multi", "1"),
        "nopin": RemoteKey(f"{kv}/multi", "9"),
        "absent": RemoteKey(f"{kv}/absent"),
        "deleted": RemoteKey(f"{kv}/gone"),
        "dataonly": RemoteKey(f"{kv}-dataonly/x"),
        "dataonly-absent": RemoteKey(f"{kv}-dataonly/absent"),
        "denied": RemoteKey("elsewhere/x"),
    }
    observed = store.versions(list(keys.values()))
    assert observed[keys["latest"]] == Present("2")
    assert observed[keys["pinned"]] == Present("1")
    assert isinstance(observed[keys["nopin"]], Missing)
    assert isinstance(observed[keys["absent"]], Missing)
    assert isinstance(observed[keys["deleted"]], Missing)
    assert observed[keys["dataonly"]] == Present("1")  # metadata denied: learned from the data read
    assert isinstance(observed[keys["dataonly-absent"]], Missing)  # a data read's 404, on the confirmed mount
    denied = observed[keys["denied"]]
    assert isinstance(denied, KeyFailure) and denied.reason == "PermissionDenied" and MARKER not in denied.message
    count = Counted("vault")
    fetched = store.fetch([keys["pinned"], keys["dataonly"]])
    assert fetched[keys["pinned"]] == RemoteValue("1", {"v": "1"})
    assert fetched[keys["dataonly"]] == RemoteValue("1", {"v": "d"})
    assert count("read-data") == 1  # the data-only path was read once, during versions()
    store.close()


def root_store(openbao: OpenBao, path: str) -> vault_store.VaultStore:
    """A store with a token that may read everything: a path no mount serves answers 404, not 403."""
    provider = vault_provider(openbao, {"tokenSecretRef": {"name": "t", "key": "token"}})
    provider["vault"]["path"] = path
    store = secretstores.create(config(provider), StaticCredentials({("app", "t", "token"): openbao.root_token}))
    assert isinstance(store, vault_store.VaultStore)
    return store


def test_vault_404_counts_as_missing_only_from_the_stores_kv_v2_mount(openbao: OpenBao, kv: str) -> None:
    """A disabled mount, a mistyped path, a KV v1 mount: every key 404s (or comes without KV v2
    metadata), which says nothing about the key. Only the store's own KV v2 mount's 404 does."""
    client = openbao.client
    client.sys.enable_secrets_engine("kv", path=f"{kv}-mount", options={"version": "2"})
    client.secrets.kv.v2.create_or_update_secret(path="db", secret={"v": MARKER}, mount_point=f"{kv}-mount")
    client.sys.enable_secrets_engine("kv", path=f"{kv}-v1", options={"version": "1"})
    client.secrets.kv.v1.create_or_update_secret(path="metadata/db", secret={"v": "1"}, mount_point=f"{kv}-v1")
    moved = root_store(openbao, f"{kv}-mount")
    assert moved.versions([RemoteKey("db")]) == {RemoteKey("db"): Present("1")}
    client.sys.disable_secrets_engine(f"{kv}-mount")
    for path in (f"{kv}-mount", "no-such-mount", "secret/sub", f"{kv}-v1"):
        store = root_store(openbao, path) if path != f"{kv}-mount" else moved
        for key in ("db", "absent"):
            state = store.versions([RemoteKey(key)])[RemoteKey(key)]
            assert isinstance(state, KeyFailure) and state.reason == NOT_FOUND_UNCONFIRMED, (path, key, state)
            assert "not treated as deleted" in state.message and MARKER not in state.message
            fetched = store.fetch([RemoteKey(key)])[RemoteKey(key)]
            assert isinstance(fetched, KeyFailure) and fetched.reason == NOT_FOUND_UNCONFIRMED, (path, key, fetched)
        store.close()

    put(openbao, f"{kv}/there", {"v": "1"})
    store = root_store(openbao, "secret")
    count = Counted("vault")
    observed = store.versions([RemoteKey(f"{kv}/there"), RemoteKey(f"{kv}/absent"), RemoteKey(f"{kv}/absent2")])
    assert observed[RemoteKey(f"{kv}/there")] == Present("1")
    assert isinstance(observed[RemoteKey(f"{kv}/absent")], Missing) and isinstance(observed[RemoteKey(f"{kv}/absent2")], Missing)
    assert count("mount-check") == 1  # once per call, not per key
    store.close()


def test_vault_deleted_versions_are_missing_when_read_from_the_data_endpoint(openbao: OpenBao, kv: str,
                                                                               approle: dict[str, str]) -> None:
    put(openbao, f"{kv}-dataonly/soft", {"v": "1"})
    openbao.client.secrets.kv.v2.delete_latest_version_of_secret(path=f"{kv}-dataonly/soft", mount_point="secret")
    put(openbao, f"{kv}-dataonly/hard", {"v": "1"})
    openbao.client.secrets.kv.v2.destroy_secret_versions(path=f"{kv}-dataonly/hard", versions=[1], mount_point="secret")
    store = approle_store(openbao, approle)
    soft, hard, pinned = RemoteKey(f"{kv}-dataonly/soft"), RemoteKey(f"{kv}-dataonly/hard"), RemoteKey(f"{kv}-dataonly/soft", "1")
    observed = store.versions([soft, hard])  # metadata denied: the data endpoint's 404 body says "deleted"
    assert all(isinstance(observed[key], Missing) for key in (soft, hard)), observed
    assert isinstance(store.fetch([pinned])[pinned], Missing)
    store.close()


def test_vault_auth_failures_and_outage_are_store_errors(openbao: OpenBao, approle: dict[str, str]) -> None:
    wrong = dict(approle, secret_id="not-the-secret-id-" + random.token_hex(8))
    store = approle_store(openbao, wrong)
    with pytest.raises(StoreError) as caught:
        store.check()
    assert caught.value.reason == AUTH_FAILED and "spec.provider.vault.auth.appRole" in str(caught.value)
    assert wrong["secret_id"] not in str(caught.value)

    token_store = secretstores.create(
        config(vault_provider(openbao, {"tokenSecretRef": {"name": "t", "key": "token"}})),
        StaticCredentials({("app", "t", "token"): "s.not-a-token"}),
    )
    with pytest.raises(StoreError) as caught:
        token_store.check()
    assert caught.value.reason == AUTH_FAILED and "s.not-a-token" not in str(caught.value)

    root = secretstores.create(
        config(vault_provider(openbao, {"tokenSecretRef": {"name": "t", "key": "token"}})),
        StaticCredentials({("app", "t", "token"): openbao.root_token}),
    )
    assert "vault token" in root.check()

    provider = vault_provider(openbao, {"tokenSecretRef": {"name": "t", "key": "token"}})
    provider["vault"]["server"] = "https://127.0.0.1:1"  # nothing listens there
    down = secretstores.create(config(provider), StaticCredentials({("app", "t", "token"): openbao.root_token}))
    with pytest.raises(StoreError) as caught:
        down.versions([RemoteKey("x")])
    assert caught.value.reason == UNREACHABLE and openbao.root_token not in str(caught.value)


def test_vault_kubernetes_auth_with_a_real_token_review(openbao: OpenBao, control_plane: Any, kube_admin: Any, kv: str) -> None:
    from kubernetes import client as k8s

    auth = configure_kubernetes_auth(openbao, control_plane, mount="kubernetes-it")
    core = k8s.CoreV1Api(kube_admin)
    namespace = "default"
    account = f"reader-{kv}"
    core.create_namespaced_service_account(namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name=account)))
    openbao.client.sys.create_or_update_policy(f"{kv}-k8s", 'path "secret/*" { capabilities = ["read"] }')
    openbao.client.auth.kubernetes.create_role(
        kv, bound_service_account_names=[account], bound_service_account_namespaces=[namespace],
        policies=[f"{kv}-k8s"], ttl="1h", mount_point=auth.mount,
    )
    put(openbao, f"{kv}/db", {"username": "app", "password": MARKER})

    def token(ns: str, name: str, audiences: Sequence[str], seconds: int) -> str:
        request = k8s.AuthenticationV1TokenRequest(spec=k8s.V1TokenRequestSpec(audiences=list(audiences), expiration_seconds=seconds))
        return core.create_namespaced_service_account_token(name, ns, request).status.token

    def store_for(role: str) -> Any:
        spec = {"kubernetes": {"mountPath": auth.mount, "role": role, "serviceAccountRef": {"name": account}}}
        return secretstores.create(config(vault_provider(openbao, spec), namespace=namespace), StaticCredentials(token=token))

    count = Counted("vault")
    store = store_for(kv)
    assert account in store.check()
    assert store.versions([RemoteKey(f"{kv}/db")]) == {RemoteKey(f"{kv}/db"): Present("1")}
    assert count("login") == 1
    with pytest.raises(StoreError) as caught:
        store_for("no-such-role").check()
    assert caught.value.reason == AUTH_FAILED and "no-such-role" in str(caught.value)


# --- AWS Secrets Manager (moto) ------------------------------------------------------------------


def sm_store(aws_env: Any, auth: dict[str, Any] | None = None, credentials: StaticCredentials | None = None) -> secretsmanager.SecretsManagerStore:
    provider: dict[str, Any] = {"aws": {"service": "SecretsManager", "region": aws_env.region}}
    if auth:
        provider["aws"]["auth"] = auth
    store = secretstores.create(config(provider), credentials or StaticCredentials())
    assert isinstance(store, secretsmanager.SecretsManagerStore)
    return store


def test_secrets_manager_lists_versions_in_batches_and_fetches_only_what_changed(aws_env: Any, boto3_client: Any) -> None:
    sm = boto3_client("secretsmanager")
    for i in range(45):
        sm.create_secret(Name=f"apps/s{i}", SecretString=f'{{"username": "u{i}", "password": "{MARKER}"}}')
    sm.create_secret(Name="apps/s1-longer-name", SecretString="not wanted")  # matched by the prefix filter
    store = sm_store(aws_env)
    keys = [RemoteKey(f"apps/s{i}") for i in range(45)]
    count = Counted("aws-secretsmanager")

    observed = store.versions(keys)
    assert all(isinstance(state, Present) and state.version for state in observed.values())
    assert count("list_secrets") == 5 and count() == 5  # 45 names / 10 per call
    values = store.fetch(keys)
    assert count("batch_get_secret_value") == 3  # 45 / 20 per call
    assert isinstance(values[keys[0]], RemoteValue) and MARKER in values[keys[0]].data  # type: ignore[operator]

    count.reset()
    sm.put_secret_value(SecretId="apps/s3", SecretString='{"username": "u3", "password": "rotated"}')
    again = store.versions(keys)
    changed = [k for k in keys if again[k] != observed[k]]
    assert changed == [RemoteKey("apps/s3")] and count() == 5
    assert store.fetch(changed)[changed[0]].data == '{"username": "u3", "password": "rotated"}'  # type: ignore[union-attr]
    assert count("batch_get_secret_value") == 1


def test_secrets_manager_missing_scheduled_pinned_and_stages(aws_env: Any, boto3_client: Any) -> None:
    sm = boto3_client("secretsmanager")
    first = sm.create_secret(Name="pinned", SecretString="v1")["VersionId"]
    sm.put_secret_value(SecretId="pinned", SecretString="v2")
    sm.create_secret(Name="doomed", SecretString="x")
    sm.delete_secret(SecretId="doomed", RecoveryWindowInDays=7)
    store = sm_store(aws_env)
    keys = {
        "absent": RemoteKey("absent"),
        "doomed": RemoteKey("doomed"),
        "by-id": RemoteKey("pinned", first),
        "previous": RemoteKey("pinned", "AWSPREVIOUS"),
        "latest": RemoteKey("pinned"),
    }
    count = Counted("aws-secretsmanager")
    observed = store.versions(list(keys.values()))
    assert isinstance(observed[keys["absent"]], Missing) and isinstance(observed[keys["doomed"]], Missing)
    assert observed[keys["by-id"]] == Present(first) and observed[keys["previous"]] == Present(first)
    assert count("list_secrets") == 1 and count("batch_get_secret_value") == 1  # one confirmation batch
    fetched = store.fetch([keys["by-id"], keys["previous"], keys["latest"]])
    assert fetched[keys["by-id"]] == RemoteValue(first, "v1") and fetched[keys["previous"]].data == "v1"  # type: ignore[union-attr]
    assert fetched[keys["latest"]].data == "v2"  # type: ignore[union-attr]


def test_secrets_manager_missing_only_after_a_per_key_not_found(aws_env: Any, boto3_client: Any) -> None:
    sm = boto3_client("secretsmanager")
    arn = sm.create_secret(Name="apps/by-arn", SecretString=f'{{"password": "{MARKER}"}}')["ARN"]
    sm.create_secret(Name="apps/named", SecretString="v")
    store = sm_store(aws_env)
    partial = RemoteKey(arn[: -secretsmanager.ARN_SUFFIX])  # the ARN as a user may write it, without AWS's suffix
    absent, named = RemoteKey("apps/absent"), RemoteKey("apps/named")
    fetched = store.fetch([partial, RemoteKey(arn)])  # a batch answer names the full ARN only
    assert isinstance(fetched[partial], RemoteValue) and MARKER in fetched[partial].data  # type: ignore[operator]
    assert fetched[RemoteKey(arn)] == fetched[partial]
    count = Counted("aws-secretsmanager")
    observed = store.versions([partial, absent, named, RemoteKey(arn)])
    assert isinstance(observed[absent], Missing)
    assert count("get_secret_value") == 1  # the batch said not found; a call about that key alone confirmed it
    assert isinstance(store.fetch([partial])[partial], RemoteValue) and count("get_secret_value") == 1

    pending = RemoteKey("apps/named", "AWSPENDING")  # a stage the secret does not have
    assert isinstance(store.versions([pending])[pending], Missing)
    assert isinstance(store.fetch([pending])[pending], Missing)


def test_secrets_manager_credentials_from_a_secret_and_an_assumed_role(aws_env: Any, boto3_client: Any) -> None:
    boto3_client("secretsmanager").create_secret(Name="db", SecretString="x")
    credentials = StaticCredentials({("app", "aws", "id"): "AKIAEXAMPLEEXAMPLE12", ("app", "aws", "secret"): "secret-" + MARKER})
    static = {"secretRef": {"accessKeyIDSecretRef": {"name": "aws", "key": "id"},
                            "secretAccessKeySecretRef": {"name": "aws", "key": "secret"}}}
    store = sm_store(aws_env, static, credentials)
    assert "credentials from a Secret" in store.check()

    count = Counted("aws-sts")
    assumed = sm_store(aws_env, {**static, "role": "arn:aws:iam::123456789012:role/secrets-reader"}, credentials)
    assert "role arn:aws:iam::123456789012:role/secrets-reader" in assumed.check()
    for _ in range(3):
        assumed.versions([RemoteKey("db")])
    assert count("assume_role") == 1  # assumed once, reused until near expiry

    missing = sm_store(aws_env, static, StaticCredentials())
    with pytest.raises(StoreError) as caught:
        missing.check()
    assert caught.value.reason == "CredentialsMissing" and "app/aws" in str(caught.value)


def test_secrets_manager_as_a_service_account_exchanged_for_a_role(aws_env: Any, boto3_client: Any,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """AssumeRoleWithWebIdentity with a token of the store's ServiceAccount: once, audience
    sts.amazonaws.com, and without the operator's own credentials, which are not even looked up:
    its environment holds half a key pair here, so any lookup would fail (PartialCredentialsError)."""
    boto3_client("secretsmanager").create_secret(Name="db", SecretString="x")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    minted: list[tuple[str, str, list[str], int]] = []

    def token(namespace: str, name: str, audiences: Sequence[str], seconds: int) -> str:
        minted.append((namespace, name, list(audiences), seconds))
        return "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0ZXN0In0.c2lnbmF0dXJl"

    role = "arn:aws:iam::123456789012:role/secrets-reader"
    count = Counted("aws-sts")
    aws_env.start_recording()
    try:
        store = sm_store(aws_env, {"serviceAccountRef": {"name": "reader"}, "role": role}, StaticCredentials(token=token))
        assert store.check().endswith(f"role {role} assumed with a token of ServiceAccount app/reader")
        for _ in range(3):
            store.versions([RemoteKey("db")])
        requests = aws_env.recorded()
    finally:
        aws_env.stop_recording()
    assert minted == [("app", "reader", ["sts.amazonaws.com"], 600)] and count("assume_role_with_web_identity") == 1
    [exchange] = [r for r in requests if "Action=AssumeRoleWithWebIdentity" in r["body"]]
    assert "Authorization" not in exchange["headers"] and "WebIdentityToken=eyJ" in exchange["body"]
    signed = [r["headers"]["Authorization"] for r in requests if r is not exchange]
    assert signed and all("Credential=ASIA" in header for header in signed)

    def refused(namespace: str, name: str, audiences: Sequence[str], seconds: int) -> str:
        raise StoreError(f"ServiceAccount {namespace}/{name} not found", reason="CredentialsMissing")

    missing = sm_store(aws_env, {"serviceAccountRef": {"name": "gone"}, "role": role}, StaticCredentials(token=refused))
    with pytest.raises(StoreError) as caught:
        missing.check()
    assert caught.value.field == "spec.provider.aws.auth.serviceAccountRef" and "app/gone" in str(caught.value)


def test_secrets_manager_unreachable_is_a_store_error(aws_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAVED_AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    store = sm_store(aws_env)
    with pytest.raises(StoreError) as caught:
        store.versions([RemoteKey("x")])
    assert caught.value.reason == UNREACHABLE


# --- a store that accepts connections and never answers ---------------------------------------------


def test_a_vault_that_never_answers_fails_within_the_callers_deadline(openbao: OpenBao) -> None:
    with StallingProxy() as stalled:
        provider = vault_provider(openbao, {"tokenSecretRef": {"name": "t", "key": "token"}})
        provider["vault"]["server"] = stalled.url("https")
        store = secretstores.create(config(provider), StaticCredentials({("app", "t", "token"): openbao.root_token}))
        started = time.monotonic()
        with pytest.raises(StoreError) as caught, deadline.within(1.5):
            store.versions([RemoteKey("x")])
        assert caught.value.reason == STORE_TIMEOUT and time.monotonic() - started < 2.5  # each request capped to the deadline
        assert openbao.root_token not in str(caught.value)
        store.close()


def test_secrets_manager_that_never_answers_fails_after_one_request_timeout(aws_env: Any) -> None:
    with StallingProxy() as stalled:
        store = secretstores.create(config({"aws": {"region": aws_env.region, "endpointURL": stalled.url()}}), StaticCredentials())
        started = time.monotonic()
        with pytest.raises(StoreError) as caught, deadline.within(1.5):
            store.versions([RemoteKey("x")])
        # botocore cannot cut a request short: it ends at its own read timeout, and nothing is retried past the deadline.
        assert caught.value.reason == STORE_TIMEOUT
        assert time.monotonic() - started < aws_store.CONNECT_TIMEOUT + aws_store.REQUEST_TIMEOUT + 1
        store.close()


# --- SSM Parameter Store (moto) --------------------------------------------------------------------


def test_ssm_reads_ten_per_call_with_decryption_and_no_second_fetch(aws_env: Any, boto3_client: Any) -> None:
    client = boto3_client("ssm")
    for i in range(25):
        client.put_parameter(Name=f"/apps/p{i}", Value=f"value-{i}-{MARKER}", Type="SecureString")
    client.put_parameter(Name="/apps/p0", Value="second", Type="SecureString", Overwrite=True)
    provider = {"aws": {"service": "ParameterStore", "region": aws_env.region}}
    store = secretstores.create(config(provider), StaticCredentials())
    assert isinstance(store, ssm.ParameterStore)
    keys = [RemoteKey(f"/apps/p{i}") for i in range(25)] + [RemoteKey("/apps/p0", "1"), RemoteKey("/apps/absent")]
    count = Counted("aws-ssm")
    observed = store.versions(keys)
    assert count("get_parameters") == 3  # 27 names / 10 per call
    assert observed[RemoteKey("/apps/p0")] == Present("2") and observed[RemoteKey("/apps/p0", "1")] == Present("1")
    assert isinstance(observed[RemoteKey("/apps/absent")], Missing)
    fetched = store.fetch([RemoteKey("/apps/p0"), RemoteKey("/apps/p0", "1"), RemoteKey("/apps/p5")])
    assert count("get_parameters") == 3 and count("get_parameter") == 1  # values came with the version look-up;
    # the absent parameter, in InvalidParameters, was asked about alone before it counted as Missing
    assert fetched[RemoteKey("/apps/p0")] == RemoteValue("2", "second")
    assert fetched[RemoteKey("/apps/p0", "1")] == RemoteValue("1", f"value-0-{MARKER}")
    assert "parameter store" in store.check()


def test_ssm_missing_only_after_a_per_key_not_found(aws_env: Any, boto3_client: Any) -> None:
    boto3_client("ssm").put_parameter(Name="/apps/there", Value=MARKER, Type="SecureString")
    store = secretstores.create(config({"aws": {"service": "ParameterStore", "region": aws_env.region}}), StaticCredentials())
    keys = [RemoteKey("/apps/absent"), RemoteKey("/apps/there", "9"), RemoteKey("/apps/there", "nolabel"), RemoteKey("/apps/there")]
    count = Counted("aws-ssm")
    observed = store.versions(keys)
    assert [type(observed[k]).__name__ for k in keys] == ["Missing", "Missing", "Missing", "Present"]
    assert count("get_parameters") == 3 and count("get_parameter") == 3  # one batch per selector of /apps/there;
    # each key in InvalidParameters then asked about alone
    assert MARKER not in repr(observed)
