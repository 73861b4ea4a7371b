"""No secret value in any message, in any form: the pure renderers and every error builder.

A marker stands for a secret (a fetched value, a generated password); it is pushed through
everything the two template sandboxes offer (enumerated from the environments: filters,
tests, globals, str methods, slicing, formatting, lookups) into every error a template can
raise, and through the error builders of the API server, AWS, Vault, pydantic, CEL, the
logging set-up and the Kopf handler guard. Each message is scanned for the marker and each
transformed form of it (fixtures._leaks.leaks). Zero hits.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.exceptions
import hvac.exceptions
import kopf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixtures._leaks import SINKS, leaks, new_marker, templates, transforms
from paved.api.kinds import KINDS, SpecError
from paved.errors import SafeError, safe_traceback
from paved.handlers import _guard
from paved.kube.client import ApiError, error_from_status
from paved.logsafety import WIRE_LOGGERS, secure
from paved.policy.cel import FUNCTIONS, compile_expression, to_cel
from paved.providers.aws import session
from paved.providers.vault import error_text
from paved.render import RenderError, render
from paved.render import engine
from paved.secretsync import values
from paved.secretsync.values import ResolveError, render_templates

MARKER = new_marker()
WINDOW = 5  # messages are short: a run of five marker letters is already a leak


def assert_clean(text: str, what: str) -> None:
    found = leaks(MARKER, text, window=WINDOW)
    assert not found, f"{what}: {found} in {text!r}"


# --- ExternalSecretRef templates --------------------------------------------------------------

REF_CONTEXT = {"password": MARKER, "namespace": "app", "name": "db"}


def ref_error(expression: str) -> str | None:
    try:
        render_templates([("url", "{{ " + expression + " }}")], REF_CONTEXT)
    except ResolveError as error:
        return str(error)
    return None


def test_the_issue_example_names_key_line_and_kind_but_not_the_value() -> None:
    message = ref_error("{}[password|upper]")
    assert message is not None and message.startswith("spec.target.template.data.url: template does not render: line 1:")
    assert "dict object" in message
    assert_clean(message, "the issue's example")


def test_every_ref_template_transformation_into_every_sink() -> None:
    failures = 0
    for label, expression in templates(values._ENV, "password"):
        message = ref_error(expression)
        if message is not None:
            failures += 1
            assert_clean(message, label)
    assert failures > len(SINKS) * 50, "the sinks must really fail"


def test_names_the_template_spells_are_kept() -> None:
    assert "'passwrd' is undefined" in (ref_error("passwrd") or "")
    assert "has no attribute or key 'nope'" in (ref_error("password.nope") or "")
    assert "(in filter 'from_json')" in (ref_error("password | from_json") or "")


# --- Composition templates ----------------------------------------------------------------------


def composition(expression: str, *, only_with_values: bool = False) -> dict[str, Any]:
    body = "  v: {{ (" + expression + ") | string | to_json }}\n"
    if only_with_values:  # the placeholder render skips it: only the real value fails
        body = "{% if not generated.password.startswith('<') %}\n" + body + "{% endif %}\n"
    template = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata:\n" + body
    return {"metadata": {"name": "leaky"}, "spec": {
        "compositeKind": "DatabaseIntent",
        "generatedSecrets": [{"name": "password"}],
        "resources": [{"name": "config", "provider": "kubernetes", "template": template}],
    }}


INTENT = {"apiVersion": "paved.dev/v1alpha1", "kind": "DatabaseIntent",
          "metadata": {"name": "db", "namespace": "app", "uid": "u1"}, "spec": {"engine": "postgresql"}}


def composition_error(expression: str, **options: bool) -> str | None:
    try:
        render(composition(expression, **options), INTENT, generated={"password": MARKER})
    except RenderError as error:
        return str(error)
    return None


@pytest.mark.parametrize("only_with_values", [False, True], ids=["placeholder-render-fails-too", "only-real-values-fail"])
def test_every_composition_transformation_of_a_generated_value_into_every_sink(only_with_values: bool) -> None:
    failures = 0
    for label, expression in templates(engine._ENV, "generated.password"):
        message = composition_error(expression, only_with_values=only_with_values)
        if message is not None:
            failures += 1
            assert_clean(message, label)
    assert failures > len(SINKS) * 50, "the sinks must really fail"


def test_a_failure_only_real_values_cause_is_located_and_typed() -> None:
    message = composition_error("[0].index(generated.password | upper)", only_with_values=True)
    assert message == 'composition leaky, resource "config", line 6: ValueError (its message is not shown: it may quote a value)'


def test_fail_with_a_generated_value_shows_the_placeholder() -> None:
    message = composition_error("fail('spec.engine', 'weak: ' ~ generated.password)")
    assert message is not None and "weak: <generated:password>" in message


# --- property: chains of transformations ---------------------------------------------------------

_REF_TRANSFORMS = [expression for _, expression in transforms(values._ENV)]


@settings(max_examples=150, deadline=None)
@given(chain=st.lists(st.sampled_from(_REF_TRANSFORMS), min_size=1, max_size=3),
       sink=st.sampled_from([shape for _, shape in SINKS] + ["X"]))
def test_chained_transformations_never_leak(chain: list[str], sink: str) -> None:
    expression = "password"
    for step in chain:
        expression = step.replace("SECRET", f"({expression})")
    for message in (ref_error(sink.replace("X", f"({expression})")),
                    composition_error(sink.replace("X", f"({expression.replace('password', 'generated.password')})"),
                                      only_with_values=True)):
        if message is not None:
            assert_clean(message, expression)


# --- the API server --------------------------------------------------------------------------------


def _status(template: dict[str, Any]) -> dict[str, Any]:
    """The Status with the marker's forms filled in where the API server puts values: inside
    Go-quoted strings (%q escapes quotes and backslashes, as JSON does)."""
    text = json.dumps(template)
    for name, form in (("{marker}", MARKER), ("{upper}", MARKER.upper()), ("{reversed}", MARKER[::-1])):
        go_quoted_inside = json.dumps(form, ensure_ascii=False)[1:-1]
        text = text.replace(name, json.dumps(go_quoted_inside, ensure_ascii=False)[1:-1])
    return json.loads(text)


API_ANSWERS = {
    "invalid label, quoted": {"code": 422, "reason": "Invalid",
        "message": 'ConfigMap "cm" is invalid: metadata.labels: Invalid value: "{upper}": a valid label must ...',
        "details": {"name": "cm", "kind": "ConfigMap", "causes": [
            {"reason": "FieldValueInvalid", "field": "metadata.labels", "message": 'Invalid value: "{upper}": must ...'}]}},
    "CRD rule quoting the value in its detail": {"code": 422, "reason": "Invalid",
        "message": 'Thing.x "t" is invalid: spec.token: Invalid value: "string": token {marker} is weak',
        "details": {"name": "t", "kind": "Thing", "causes": [
            {"reason": "FieldValueInvalid", "field": "spec.token", "message": 'Invalid value: "string": token {marker} is weak'}]}},
    "Go map value": {"code": 422, "reason": "Invalid",
        "message": 'Thing "t" is invalid: spec: Invalid value: map[string]interface {}{"p":"{marker}"}: must be a string'},
    "unsupported value": {"code": 400, "reason": "BadRequest",
        "message": 'spec.mode: Unsupported value: "{reversed}": supported values: "a", "b"'},
    "number": {"code": 422, "reason": "Invalid", "message": "spec.port: Invalid value: 123456789: must be below 65536"},
    "webhook": {"code": 400, "reason": "BadRequest",
        "message": 'admission webhook "policy.example.com" denied the request: {marker} ({upper}) is weak'},
    "validating admission policy": {"code": 422, "reason": "Invalid",
        "message": "ValidatingAdmissionPolicy 'p' with binding 'b' denied request: token {reversed} is weak"},
    "apply conflict": {"code": 409, "reason": "Conflict",
        "message": 'Apply failed with 1 conflict: conflict with "argocd-controller": .spec.rules',
        "details": {"causes": [{"reason": "FieldManagerConflict", "message": 'conflict with "argocd-controller"',
                                "field": ".spec.rules"}]}},
    "forbidden": {"code": 403, "reason": "Forbidden",
        "message": 'secrets "db" is forbidden: User "system:serviceaccount:paved-system:paved-operator" cannot '
                   'get resource "secrets" in API group "" in the namespace "app"', "details": {"name": "db", "kind": "secrets"}},
}


@pytest.mark.parametrize("name", list(API_ANSWERS))
def test_api_errors_keep_names_and_drop_values(name: str) -> None:
    error = error_from_status(_status(API_ANSWERS[name]), method="PATCH", path="/api/v1/namespaces/app/configmaps/cm")
    assert_clean(str(error), name)
    assert_clean(safe_traceback(error), name)
    assert "123456789" not in str(error)
    if name == "apply conflict":
        assert 'conflict with "argocd-controller": .spec.rules' in str(error)
    if name == "forbidden":
        assert 'secrets "db" is forbidden: User "system:serviceaccount:paved-system:paved-operator"' in str(error)
    if name == "invalid label, quoted":
        assert "ConfigMap cm is invalid: metadata.labels: invalid value" in str(error)


def test_an_api_error_made_directly_drops_values_too() -> None:
    error = ApiError(422, "Invalid", f'data[x]: Invalid value: "{MARKER.upper()}": bad', method="PUT", path="/api/v1/x")
    assert_clean(str(error), "ApiError()")


# --- AWS ---------------------------------------------------------------------------------------------


class _Failing:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def create_db_instance(self, **_: Any) -> dict[str, Any]:
        raise self.error


@pytest.mark.parametrize("code,message", [
    ("ValidationException", "1 validation error detected: Value '{upper}' at 'masterUserPassword' failed to satisfy constraint"),
    ("InvalidParameterValue", "The parameter MasterUserPassword is not valid: {marker}"),
    ("InvalidDBInstanceState", "Instance db is not available: password '{reversed}' rotating"),
])
def test_aws_answers_never_echo_a_parameter(code: str, message: str) -> None:
    text = message.replace("{marker}", MARKER).replace("{upper}", MARKER.upper()).replace("{reversed}", MARKER[::-1])
    client = _Failing(botocore.exceptions.ClientError({"Error": {"Code": code, "Message": text}}, "CreateDBInstance"))
    with pytest.raises(session.AwsError) as caught:
        session.call("aws-rds", client, "create_db_instance", MasterUserPassword=MARKER, DBInstanceIdentifier="db")
    assert_clean(str(caught.value), code)
    assert code in str(caught.value)
    if code != "InvalidDBInstanceState":
        assert "MasterUserPassword" in str(caught.value)


def test_botocore_parameter_validation_keeps_names_only() -> None:
    client = boto3.client("rds", region_name="us-east-1", endpoint_url="http://127.0.0.1:9",
                          aws_access_key_id="a", aws_secret_access_key="b")  # refused before any request
    with pytest.raises(session.AwsError) as caught:
        session.call("aws-rds", client, "create_db_instance", DBInstanceIdentifier="db", DBInstanceClass="c",
                     Engine="postgres", MasterUserPassword=[MARKER], AllocatedStorage=MARKER.upper())
    assert_clean(str(caught.value), "ParamValidationError")
    assert "AllocatedStorage, MasterUserPassword" in str(caught.value)


# --- Vault --------------------------------------------------------------------------------------------


def test_vault_errors_without_echoed_values() -> None:
    error = hvac.exceptions.InvalidRequest(errors=[f'invalid secret_id "{MARKER}"', f"role '{MARKER.upper()}' not found"])
    assert_clean(error_text(error), "vault")
    assert "invalid secret_id" in error_text(error)


# --- pydantic ------------------------------------------------------------------------------------------


def _leaf_paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaf_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaf_paths(item, (*path, index))
    yield path


def _replaced(spec: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = dict(spec) if isinstance(spec, dict) else list(spec)
    copy[path[0]] = _replaced(spec[path[0]], path[1:], new)  # type: ignore[index]
    return copy


@pytest.mark.parametrize("info", KINDS, ids=lambda info: info.kind)
def test_spec_errors_never_quote_the_input(info: Any) -> None:
    import yaml

    example = yaml.safe_load(info.example)["spec"]
    refused = 0
    for path in _leaf_paths(example):
        for bad in (MARKER, MARKER.upper(), {"key": MARKER}, [MARKER], f"2024-13-{MARKER}", f"{MARKER}ms"):
            try:
                info.parse_spec(_replaced(example, path, bad))
            except SpecError as error:
                refused += 1
                assert_clean(str(error), f"{info.kind} {path} = {bad!r}")
    assert refused


def test_pydantic_messages_that_spell_the_input_lose_it() -> None:
    from typing import Annotated, Literal, Union
    from uuid import UUID

    from pydantic import BaseModel, Field, ValidationError

    from paved.api.kinds import field_problems

    class A(BaseModel):
        kind: Literal["a"]

    class B(BaseModel):
        kind: Literal["b"]

    class Model(BaseModel):
        choice: Annotated[Union[A, B], Field(discriminator="kind")]
        id: UUID

    with pytest.raises(ValidationError) as caught:
        Model.model_validate({"choice": {"kind": MARKER}, "id": MARKER.upper()})
    problems = field_problems(caught.value, "spec")
    assert [problem.split(":")[0] for problem in problems] == ["spec.choice", "spec.id"]
    assert "expected tags: 'a', 'b'" in problems[0] and problems[1].startswith("spec.id: Input should be a valid UUID")
    assert_clean("; ".join(problems), "pydantic")


# --- CEL -----------------------------------------------------------------------------------------------


def _cel_expressions() -> Iterator[str]:
    from celpy.evaluation import base_functions

    value = "object.spec.pw"
    for name in sorted(set(base_functions) | set(FUNCTIONS)):
        if name.isidentifier():
            yield f"{name}({value}) == 1"
            yield f"{value}.{name}({value}) == 1"
            yield f"{value}.{name}() == 1"
    yield from (f"{value}.foo == 1", f"{value}[0] == 1", f"object.spec.m[{value}] == 1", f"{value} + 1 == 1",
                f"int({value}) == 1", f"{value}.matches('[' + {value})", f"duration({value}) > duration('1s')",
                f"timestamp({value}) > timestamp('2020-01-01T00:00:00Z')", f"[{value}].all(x, x > 1)")


def test_cel_evaluation_errors_never_quote_values(capfd: pytest.CaptureFixture[str]) -> None:
    activation = {"object": to_cel({"spec": {"pw": MARKER, "m": {}}}), "rendered": to_cel([]),
                  "namespaceObject": to_cel({}), "params": to_cel({}), "allowed": to_cel({})}
    errors = 0
    for expression in _cel_expressions():
        try:
            program = compile_expression(expression)
        except ValueError:
            continue
        result, reason = program.run(activation)
        if result is None:
            errors += 1
            assert_clean(reason, expression)
    assert errors > 20
    captured = capfd.readouterr()  # re2 writes bad patterns to stderr unless told not to
    assert_clean(captured.out + captured.err, "process output")


# --- logging at DEBUG -------------------------------------------------------------------------------------


@pytest.fixture
def debug_root() -> Iterator[list[str]]:
    """The root logger at DEBUG (as `paved run -v` sets it) with a handler keeping formatted lines."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    root = logging.getLogger()
    handler, level = Keep(), root.level
    saved = {name: logging.getLogger(name).level for name in WIRE_LOGGERS}
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        for name, saved_level in saved.items():
            logging.getLogger(name).setLevel(saved_level)


def test_wire_loggers_stay_quiet_at_debug(debug_root: list[str]) -> None:
    logging.getLogger("botocore.parsers").setLevel(logging.DEBUG)  # a child set low by someone: reset
    secure()
    for name in WIRE_LOGGERS:
        logging.getLogger(f"{name}.child").debug("body: %s", MARKER)
    logging.getLogger("celpy.evaluation").error("f(*%s)", MARKER)
    client = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url="http://127.0.0.1:9",
                          aws_access_key_id="a", aws_secret_access_key="b",
                          config=botocore.config.Config(retries={"total_max_attempts": 1}, connect_timeout=0.2))
    with pytest.raises(botocore.exceptions.BotoCoreError):
        client.create_secret(Name="n", SecretString=MARKER)  # botocore logs the params at DEBUG
    logging.getLogger("paved.test").debug("paved's own debug line")
    assert any("paved's own debug line" in line for line in debug_root), "the capture works"
    assert_clean("\n".join(debug_root), "log lines")


def test_tracebacks_are_logged_by_frames_and_types(debug_root: list[str]) -> None:
    secure()
    try:
        try:
            {}[MARKER.upper()]
        except KeyError as inner:
            raise ValueError(MARKER) from inner
    except ValueError:
        logging.getLogger("paved.test").exception("it failed")
    text = "\n".join(debug_root)
    assert "Traceback" in text and "ValueError at test_leak_paths.py" in text and "KeyError at" in text
    assert_clean(text, "traceback")


# --- Kopf's view of handler errors ------------------------------------------------------------------------


def _registry_with(fn: Any) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    for cause in (kopf.on.resume, kopf.on.create, kopf.on.update):
        cause("paved.dev", "v1alpha1", "databaseintents", registry=registry, backoff=7)(fn)
    return registry


def test_unexpected_handler_errors_reach_kopf_by_type_and_place(caplog: pytest.LogCaptureFixture) -> None:
    def sync_handler(**_: Any) -> None:
        [0].index(MARKER.upper())

    async def async_handler(**_: Any) -> None:
        {}[MARKER]

    sync_handler.__module__ = async_handler.__module__ = "paved.handlers.example"
    for fn in (sync_handler, async_handler):
        registry = _registry_with(fn)
        _guard.guard_handlers(registry)
        handlers = registry._changing.get_all_handlers()
        assert len(handlers) == 3 and len({id(handler.fn) for handler in handlers}) == 1, "Kopf de-duplicates by it"
        wrapped = handlers[0].fn
        with pytest.raises(kopf.TemporaryError) as caught:
            result = wrapped()
            if asyncio.iscoroutine(result):
                asyncio.run(result)
        assert str(caught.value).startswith(("ValueError at test_leak_paths.py:", "KeyError at test_leak_paths.py:"))
        assert caught.value.delay == 7  # the handler's backoff, as Kopf would have waited
        assert caught.value.__cause__ is None and caught.value.__suppress_context__
        assert_clean(str(caught.value) + caplog.text, fn.__name__)


def test_paved_and_kopf_errors_pass_the_guard_unchanged() -> None:
    raised: list[Exception] = [kopf.TemporaryError("waiting for x", delay=3), kopf.PermanentError("no"),
                               kopf.AdmissionError("denied"), SafeError("spec.x: bad")]

    def handler(**_: Any) -> None:
        raise raised[0]

    handler.__module__ = "paved.handlers.example"
    wrapped = _guard.guarded(handler, delay=1)
    for error in list(raised):
        raised[0] = error
        with pytest.raises(type(error)) as caught:
            wrapped()
        assert caught.value is error


def test_every_paved_handler_is_guarded() -> None:
    """Both registries the runtime runs come guarded (paved.handlers.serving_registry / leading_registry)."""
    from paved.handlers import leading_registry, serving_registry

    for registry, least in ((leading_registry(), 20), (serving_registry(None), 3)):  # type: ignore[arg-type]
        handlers = [handler for handlers in (registry._activities, registry._indexing, registry._watching,
                                             registry._spawning, registry._changing, registry._webhooks)
                    for handler in handlers.get_all_handlers()]
        paved_handlers = [handler for handler in handlers if handler.fn.__module__.startswith("paved.")]
        assert len(paved_handlers) > least
        assert all(getattr(handler.fn, "__paved_guarded__", False) for handler in paved_handlers)
