"""How the AWS call wrapper classifies failures: retry now, retry later, or never."""

from __future__ import annotations

from typing import Any

import botocore.exceptions
import botocore.parsers
import pytest

from paved.providers.aws import session
from paved.providers.aws.session import AwsError


def client_error(code: str, status: int = 400) -> botocore.exceptions.ClientError:
    response: Any = {"Error": {"Code": code, "Message": f"{code} happened"}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return botocore.exceptions.ClientError(response, "DescribeDBInstances")


@pytest.mark.parametrize(
    ("error", "transient", "retryable"),
    [
        (client_error("Throttling"), True, True),
        (client_error("InternalFailure", 500), True, True),
        (client_error("Whatever", 503), True, True),
        (client_error("InvalidDBInstanceState"), False, True),
        (client_error("InvalidParameterValue"), False, False),
        (client_error("AccessDenied", 403), False, False),
        (botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), True, True),
        (botocore.parsers.ResponseParserError("<html>500</html>"), True, True),
        (botocore.exceptions.NoCredentialsError(), False, False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
def test_failures_are_classified(error: Exception, transient: bool, retryable: bool) -> None:
    failure = session._classify(error)
    assert (failure.transient, failure.retryable) == (transient, retryable)


class FlakyClient:
    """Fails `failures` times with `error`, then answers."""

    def __init__(self, error: Exception, failures: int) -> None:
        self.error, self.failures, self.calls = error, failures, 0

    def describe_db_instances(self, **params: Any) -> dict[str, Any]:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return {"DBInstances": []}


def test_transient_failures_are_retried_then_succeed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session, "MAX_WAIT_SECONDS", 0.01)
    flaky = FlakyClient(client_error("Throttling"), failures=2)
    assert session.call("test", flaky, "describe_db_instances") == {"DBInstances": []}
    assert flaky.calls == 3


def test_permanent_failures_are_not_retried() -> None:
    flaky = FlakyClient(client_error("AccessDenied", 403), failures=5)
    with pytest.raises(AwsError) as error:
        session.call("test", flaky, "describe_db_instances")
    assert flaky.calls == 1 and not error.value.retryable and error.value.code == "AccessDenied"


def test_unknown_exceptions_pass_through_unchanged() -> None:
    flaky = FlakyClient(KeyError("bug"), failures=1)
    with pytest.raises(KeyError):
        session.call("test", flaky, "describe_db_instances")
    assert flaky.calls == 1


def test_secret_parameters_never_reach_the_message() -> None:
    flaky = FlakyClient(client_error("InvalidParameterValue"), failures=1)
    flaky.error = botocore.exceptions.ClientError(
        {"Error": {"Code": "InvalidParameterValue", "Message": "bad MasterUserPassword hunter2hunter2"}}, "CreateDBInstance"
    )
    with pytest.raises(AwsError) as error:
        session.call("test", flaky, "describe_db_instances", MasterUserPassword="hunter2hunter2")
    assert "hunter2hunter2" not in str(error.value) and error.value.__context__ is None
