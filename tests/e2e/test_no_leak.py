"""No secret value, in any form, in status, Events or the operator's log at --verbose.

The session operator is restarted for this module with `--verbose` (the root logger at
DEBUG: Kopf's own traces, and botocore's, urllib3's, hvac's and the kubernetes client's
unless Paved pins them) and restored afterwards; one operator at a time. Then, against the
real API server, OpenBao and moto:

- ExternalSecretRefs read a marker from OpenBao and from Secrets Manager and push it through
  every kind of template failure (a transformation of the value fed into a dict lookup, an
  attribute by name, list.index(), an encoding, a format field, an unsafe attribute, ...);
- DatabaseIntents render a Composition whose generated password is the marker: one template
  fails only with the real value, one puts the upper-cased value where the API server
  refuses it (a label), so the server's 422 quotes it;
- a SecretStore authenticates with a wrong token shaped like a marker.

The refs' and intents' whole objects (status and annotations: Kopf's progress lives there),
every Event and the operator's whole log are scanned for each marker and its transformed
forms (fixtures._leaks.leaks). Zero hits; a good ref proves the scan finds a marker where it
belongs (its Secret).
"""

from __future__ import annotations

import base64
import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from fixtures._leaks import FED_TO_SINKS, SINKS, leaks, new_marker, transforms
from fixtures.aws import MotoServer
from e2e.cluster import Cluster, condition
from fixtures.cluster import Kubectl
from fixtures.operator import OperatorProcess
from fixtures.vault import OpenBao
from paved.secretsync import values

pytestmark = [pytest.mark.cluster, pytest.mark.vault, pytest.mark.aws]

VERBOSE = "--verbose"
REFRESH = "10s"


@pytest.fixture(scope="module")
def verbose_operator(operator: OperatorProcess, openbao: OpenBao, moto_server: MotoServer) -> Iterator[OperatorProcess]:
    """The session operator at DEBUG for this module, back to its own arguments afterwards.
    OpenBao and moto are the platform's Vault and AWS endpoint here (the tenants' stores of
    this module name them: docs/secrets.md)."""
    arguments, environment = operator.extra_args, operator.env
    operator.extra_args = (*arguments, VERBOSE)
    operator.env = {**environment, **moto_server.env(), "PAVED_VAULT_ADDR": openbao.addr}
    operator.restart()
    try:
        yield operator
    finally:
        operator.extra_args, operator.env = arguments, environment
        operator.restart()


def failing_templates() -> list[str]:
    """One failing template per transformation the issue names (and the plain value), each fed
    into the next sink in turn, so every sink is reached."""
    chosen = [(label, expression) for label, expression in transforms(values._ENV)
              if label.split(" ")[0] in ("slice", "concatenation", "dict", "percent", "str.format")
              or (label.startswith("filter ") and label.split(" ")[1] in FED_TO_SINKS and label.endswith("on a string"))]
    chosen.append(("the value", "SECRET"))
    sinks = itertools.cycle(shape for _, shape in SINKS)
    found = ["{{ " + next(sinks).replace("X", f"({expression})").replace("SECRET", "password") + " }}"
             for _, expression in chosen]
    return [*found, "{{ password | from_json }}", "{{ password | b64decode }}"]


def ref(name: str, store: str, key: str, template: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "storeRef": {"name": store}, "refreshInterval": REFRESH,
        "data": [{"secretKey": "password", "remoteRef": {"key": key, "property": "password"}}],
        "target": {"name": name},
    }
    if template is not None:
        spec["target"]["template"] = {"data": {"url": template}}
    return {"apiVersion": "paved.dev/v1alpha1", "kind": "ExternalSecretRef", "metadata": {"name": name}, "spec": spec}


def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}


def vault_store(name: str, openbao: OpenBao, token_secret: str) -> dict[str, Any]:
    return {"apiVersion": "paved.dev/v1alpha1", "kind": "SecretStore", "metadata": {"name": name}, "spec": {"provider": {
        "vault": {"server": openbao.addr, "path": "secret", "caBundle": open(openbao.ca_cert).read(),
                  "auth": {"tokenSecretRef": {"name": token_secret, "key": "token"}}}}}}


def composition(name: str, template: str) -> dict[str, Any]:
    return {"apiVersion": "paved.dev/v1alpha1", "kind": "Composition", "metadata": {"name": name}, "spec": {
        "compositeKind": "DatabaseIntent",
        "generatedSecrets": [{"name": "password"}],
        "resources": [{"name": "config", "provider": "kubernetes", "readiness": "none", "template": template}],
    }}


# Fails only with the real value (the placeholder render skips it), on a key computed from it.
RENDER_FAILS = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: {{ metadata.name }}-config}
data:
{% if not generated.password.startswith('<') %}
  url: {{ {}[generated.password | upper] }}
{% endif %}
"""
# Renders, but the API server refuses the upper-cased value as a label and quotes it in its 422.
SERVER_REFUSES = """\
apiVersion: v1
kind: Secret
metadata:
  name: {{ metadata.name }}-labelled
  labels:
    token: {{ generated.password | upper | to_json }}
stringData:
  password: {{ generated.password | to_json }}
"""


def intent(name: str, composition_name: str) -> dict[str, Any]:
    return {"apiVersion": "paved.dev/v1alpha1", "kind": "DatabaseIntent", "metadata": {"name": name},
            "spec": {"engine": "postgresql", "version": "16", "compositionRef": {"name": composition_name}}}


def test_no_marker_in_status_events_or_verbose_log(verbose_operator: OperatorProcess, kubectl: Kubectl, cluster: Cluster,
                                                  namespace: str,
                                                  openbao: OpenBao, moto_server: MotoServer) -> None:
    vault_marker, aws_marker, generated_marker, bad_token = (new_marker() for _ in range(4))
    markers = {"vault": vault_marker, "aws": aws_marker, "generated": generated_marker, "bad token": bad_token}
    key = f"noleak/{namespace}"
    openbao.client.secrets.kv.v2.create_or_update_secret(path=key, secret={"password": vault_marker}, mount_point="secret")
    openbao.client.sys.create_or_update_policy(f"{namespace}-read", """
path "secret/data/noleak/*" { capabilities = ["read"] }
path "secret/metadata/noleak/*" { capabilities = ["read"] }
""")
    token = openbao.client.auth.token.create(policies=[f"{namespace}-read"], ttl="1h")["auth"]["client_token"]
    sm = moto_server.client("secretsmanager")
    try:
        sm.delete_secret(SecretId=key, ForceDeleteWithoutRecovery=True)
    except sm.exceptions.ResourceNotFoundException:
        pass
    sm.create_secret(Name=key, SecretString=json.dumps({"password": aws_marker}))
    aws_store = {"apiVersion": "paved.dev/v1alpha1", "kind": "SecretStore", "metadata": {"name": "aws"}, "spec": {"provider": {"aws": {
        "service": "SecretsManager", "region": moto_server.region, "endpointURL": moto_server.endpoint_url,
        "auth": {"secretRef": {"accessKeyIDSecretRef": {"name": "aws-credentials", "key": "id"},
                               "secretAccessKeySecretRef": {"name": "aws-credentials", "key": "secret"}}}}}}}
    cluster.apply(secret("vault-token", {"token": token}), secret("bad-token", {"token": bad_token}),
                  secret("aws-credentials", {"id": "AKIAPAVEDTEST0000000", "secret": "test-secret-key"}),
                  vault_store("vault", openbao, "vault-token"), vault_store("vault-bad", openbao, "bad-token"), aws_store,
                  namespace=namespace)

    templates = failing_templates()
    refs = [ref(f"vault-{index:02d}", "vault", key, template) for index, template in enumerate(templates)]
    refs += [ref(f"aws-{index:02d}", "aws", key, template) for index, template in enumerate(templates[:6])]
    refs += [ref("good", "vault", key, None), ref("bad-auth", "vault-bad", key, "{{ password }}")]
    cluster.apply(*refs, namespace=namespace)

    names = {"render": f"noleak-render-{namespace}", "refused": f"noleak-refused-{namespace}"}
    cluster.apply(composition(names["render"], RENDER_FAILS), composition(names["refused"], SERVER_REFUSES))
    try:
        for name in names.values():
            cluster.wait_condition("composition", name, timeout=90)
        # Generated once and kept: the operator finds the marker where it would keep its own.
        cluster.apply(*(secret(f"{kind}-paved-generated", {"password": generated_marker}) for kind in names), namespace=namespace)
        cluster.apply(intent("render", names["render"]), intent("refused", names["refused"]), namespace=namespace)

        cluster.wait_condition("esr", "good", namespace, timeout=90)
        for body in refs[:-2]:
            found = condition(cluster.wait_condition("esr", body["metadata"]["name"], namespace, status="False", reason="TemplateError",
                                                     timeout=90))
            assert "spec.target.template.data.url: template does not render" in found["message"]
        cluster.wait_condition("esr", "bad-auth", namespace, status="False", timeout=90)
        rendered = condition(cluster.wait_condition("dbi", "render", namespace, status="False", reason="RenderFailed", timeout=90))
        assert f'composition {names["render"]}, resource "config", line 6' in rendered["message"]
        refused = condition(cluster.wait_condition("dbi", "refused", namespace, status="False", reason="ProviderError", timeout=90))
        assert "metadata.labels" in refused["message"]  # the field the API server refused
        time.sleep(12)  # another refresh and a few retries of everything that failed

        objects = kubectl("get", "esr,secretstores,dbi", "-n", namespace, "-o", "json").stdout
        events = kubectl("get", "events", "-A", "-o", "json").stdout
        log = verbose_operator.log_path.read_text(errors="replace")
        assert "Starting the watch-stream" in log, "the operator logs at DEBUG (one of Kopf's DEBUG lines)"
        for label, text in (("status or annotations", objects), ("an Event", events), ("the operator log", log)):
            for what, marker in markers.items():
                assert not leaks(marker, text), f"the {what} marker is in {label}: {leaks(marker, text)}"
            assert token not in text, f"the Vault token is in {label}"
        written = kubectl("get", "secret", "good", "-n", namespace, "-o", "json").stdout
        assert leaks(vault_marker, written), "the scan finds a marker where it belongs"
        assert base64.b64encode(vault_marker.encode()).decode() in written
    finally:
        kubectl("delete", "dbi", "--all", "-n", namespace, "--wait=true", "--timeout=60s", check=False)
        kubectl("delete", "composition", *names.values(), "--wait=false", check=False)
        sm.delete_secret(SecretId=key, ForceDeleteWithoutRecovery=True)
