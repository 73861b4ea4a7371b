"""Prometheus instant queries over HTTP (`GET /api/v1/query`), with timeouts and retries.

One `PrometheusProvider` per server address, shared by every rollout that queries it (one
pooled `requests.Session`). Answers, as `QueryResult`:

- one sample (a vector of one series, or a scalar)        -> value (NaN stays NaN: the
  state machine treats it as "no data", e.g. 0/0 while the canary has no traffic);
- an empty vector                                         -> value None ("no data");
- HTTP 400 `bad_data` (syntax, unknown function), or a
  range vector where a number is needed                   -> error, rejected=True: the
  query itself is wrong, the handler shows it on the field and moves no traffic;
- several series                                          -> error (aggregate the query);
- timeouts, connection errors, 5xx                        -> retried (tenacity, exponential
  backoff with jitter, a few attempts within about two seconds so that step timing
  keeps its 1 s precision), then an error. Inconclusive, never a silent pass;
- a connection to an address the endpoint rule forbids     -> error, rejected=True (the
  rollout's tick refuses such an address before any query; paved.providers.egress);
- HTTP 401/403 (credentials refused)                       -> error (inconclusive).

Credentials (bearer token or basic auth), a CA bundle and extra headers come with the
settings (`Access`); they are set on the session once and never appear in a message.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
import tenacity

from paved.metrics import count_call
from paved.policy.endpoints import without_credentials
from paved.providers.cafile import CaFile
from paved.providers.egress import STRICT, Egress, refused_reason
from paved.providers.metrics import QueryResult

NAME = "prometheus"
CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 5.0
ATTEMPTS = 3
MAX_WAIT_SECONDS = 1.0
POOL_SIZE = 16


class _Transient(Exception):
    """A failure worth one more try: no answer, a timeout, a 5xx."""


class PrometheusProvider:
    name = NAME

    def __init__(self, address: str, *, egress: Egress = STRICT,
                 timeout: tuple[float, float] = (CONNECT_TIMEOUT, READ_TIMEOUT), attempts: int = ATTEMPTS,
                 access: Access | None = None) -> None:
        self.address = address.rstrip("/")
        self.shown = without_credentials(self.address)  # for messages: they reach status and Events
        self.timeout = timeout
        self.attempts = attempts
        self.session = egress.session(pool_connections=1, pool_maxsize=POOL_SIZE)
        self._ca_file = CaFile(access.ca_bundle, prefix="paved-prometheus-ca-") if access and access.ca_bundle is not None else None
        # Per request, not on the session: requests lets REQUESTS_CA_BUNDLE override a session's `verify`.
        self.verify: str | bool = self._ca_file.path if self._ca_file else True
        if access is not None:
            access.apply(self.session)

    def __repr__(self) -> str:
        return f"PrometheusProvider({self.shown!r})"

    def close(self) -> None:
        """Close the pooled connections and remove the CA bundle's file."""
        self.session.close()
        if self._ca_file:
            self._ca_file.close()

    def query(self, promql: str) -> QueryResult:
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Transient),
            wait=tenacity.wait_random_exponential(multiplier=0.1, max=MAX_WAIT_SECONDS),
            stop=tenacity.stop_after_attempt(self.attempts),
            reraise=True,
        )
        try:
            return retrying(self._query_once, promql)
        except _Transient as exc:
            return QueryResult(error=str(exc))

    def _query_once(self, promql: str) -> QueryResult:
        count_call(NAME, "query")
        url = f"{self.address}/api/v1/query"
        try:
            response = self.session.get(url, params={"query": promql}, timeout=self.timeout, verify=self.verify)
        except requests.Timeout:
            raise _Transient(f"Prometheus at {self.shown} did not answer within {self.timeout[1]:g}s") from None
        except requests.ConnectionError as exc:
            refused = refused_reason(exc)
            if refused:
                return QueryResult(error=refused, rejected=True)
            raise _Transient(f"cannot reach Prometheus at {self.shown}: {_reason(exc)}") from None
        except requests.RequestException as exc:  # an unusable address (bad port, scheme): its text quotes the URL
            return QueryResult(error=f"Prometheus address {self.shown} is not usable: {type(exc).__name__}", rejected=True)
        if response.status_code in (401, 403):  # not the query's fault: inconclusive, never a rejection
            return QueryResult(error=f"Prometheus at {self.shown} refused the credentials (HTTP {response.status_code}); "
                                     "check spec.analysis.prometheus.auth")
        if response.status_code >= 500:
            raise _Transient(f"Prometheus at {self.shown} answered HTTP {response.status_code}: "
                             f"{_error_text(response)}")
        return parse_answer(response.status_code, _json(response))


def parse_answer(status_code: int, body: Mapping[str, Any] | None) -> QueryResult:
    """The QueryResult for one /api/v1/query answer (pure; see the module docstring)."""
    if body is None:
        return QueryResult(error=f"Prometheus answered HTTP {status_code} without a JSON body")
    if body.get("status") != "success":
        error_type = body.get("errorType") or "error"
        text = f"{error_type}: {body.get('error') or 'unknown error'}"
        return QueryResult(error=text, rejected=status_code == 400 or error_type == "bad_data")
    data = body.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        return QueryResult(value=_number(result))
    if kind == "vector":
        series = result or []
        if not series:
            return QueryResult(value=None)
        if len(series) > 1:
            return QueryResult(error=f"the query returned {len(series)} series; aggregate it to one number, "
                                     "e.g. sum(...)")
        return QueryResult(value=_number(series[0].get("value")))
    if kind == "matrix":
        return QueryResult(error="the query returns a range vector; wrap it in a function such as rate(...[1m])",
                           rejected=True)
    return QueryResult(error=f"the query returns a {kind}, not a number", rejected=True)


def _number(sample: Any) -> float:
    try:
        return float(sample[1])
    except (TypeError, ValueError, IndexError):
        return math.nan


def _json(response: requests.Response) -> Mapping[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, Mapping) else None


def _error_text(response: requests.Response) -> str:
    body = _json(response)
    if body and body.get("error"):
        return str(body["error"])[:200]
    return (response.text or response.reason or "").strip()[:200]


def _reason(exc: Exception) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "timed out", "No route to host"):
        if marker in text:
            return marker.lower()
    return type(exc).__name__


@dataclass(frozen=True, repr=False)
class Access:
    """What a session sends besides the query: credentials, the CAs it trusts, extra headers.
    Holds secret values: it has no repr, and nothing here is ever put in a message."""

    bearer_token: str | None = None
    basic_auth: tuple[str, str] | None = None
    ca_bundle: str | None = None  # PEM
    headers: tuple[tuple[str, str], ...] = ()

    def apply(self, session: requests.Session) -> None:
        session.headers.update(dict(self.headers))
        if self.bearer_token is not None:
            session.headers["Authorization"] = f"Bearer {self.bearer_token}"
        if self.basic_auth is not None:
            session.auth = self.basic_auth


def from_settings(settings: Mapping[str, Any], egress: Egress) -> PrometheusProvider:
    """The `prometheus` factory of paved.providers.metrics.METRICS: `address`, and optionally
    `bearerToken`, `basicAuth` (user, password), `caBundle` (PEM), `headers` ((name, value), ...)
    as paved.engines.rollout.sources resolves them from the spec."""
    basic = settings.get("basicAuth")
    access = Access(
        bearer_token=settings.get("bearerToken"),
        basic_auth=(str(basic[0]), str(basic[1])) if basic else None,
        ca_bundle=settings.get("caBundle"),
        headers=tuple(settings.get("headers") or ()),
    )
    return PrometheusProvider(str(settings["address"]), egress=egress, access=access)
