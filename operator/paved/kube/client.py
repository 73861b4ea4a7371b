"""The one Kubernetes connection of the process: configuration, raw requests, discovery.

Why a thin REST layer over the official client's ApiClient instead of the DynamicClient:
Paved applies arbitrary kinds (whatever a Composition renders) as plain dicts, and the
DynamicClient keeps its discovery cache in a file under /tmp shared by every process of
the user (stale right after CRDs are installed, unwritable under readOnlyRootFilesystem)
and wraps every answer in ResourceInstance objects. Here discovery is cached in memory per
group/version, answers are plain dicts, and every call goes through one place that
counts it (paved_provider_api_calls_total) and retries transient failures with tenacity.
The ApiClient supplies the configuration and its connection pool; requests skip its
per-call model serialisation and token refresh (see `request` and `_authorization`).

Everything is synchronous: handlers run in Kopf's thread pool (see DESIGN.md).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Mapping
from urllib.parse import urlencode

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_random_exponential

from paved import __version__, fence, metrics
from paved.errors import ELLIPSIS, SafeError, unquoted

log = logging.getLogger(__name__)

# (connect, read) seconds for one request.
REQUEST_TIMEOUT: tuple[float, float] = (5.0, 30.0)
_TIMEOUT = urllib3.Timeout(connect=REQUEST_TIMEOUT[0], read=REQUEST_TIMEOUT[1])
# A watch asks the server to close it after WATCH_SERVER_TIMEOUT seconds (an integer: the API
# server parses timeoutSeconds with ParseInt); a read silent for WATCH_READ_TIMEOUT means a
# dead connection. Bookmarks keep a quiet watch's resourceVersion fresh.
WATCH_SERVER_TIMEOUT = 270
WATCH_READ_TIMEOUT = 300.0
_WATCH_TIMEOUT = urllib3.Timeout(connect=REQUEST_TIMEOUT[0], read=WATCH_READ_TIMEOUT)
# How long a bearer token is reused before the configuration is asked again; a 401 asks
# again at once (an exec plugin's token may expire in between).
AUTH_REFRESH_SECONDS = 10.0
# Names this process in the API server's audit log: replicas share one ServiceAccount, and
# "which replica wrote this" is the question after a failover.
USER_AGENT = f"paved/{__version__} ({socket.gethostname()}/{os.getpid()})"
RETRY_ATTEMPTS = 5
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
# Enough pooled connections for Kopf's worker threads (runtime.MAX_WORKERS) plus slack.
CONNECTION_POOL_SIZE = 32

Json = dict[str, Any]


# The kinds of field errors (k8s.io/apimachinery/pkg/util/validation/field) that print the bad value
# after them, as `<kind>: <value>[: <detail>]`.
_VALUE_ERRORS = ("Invalid value", "Unsupported value", "Duplicate value", "Not found")
_VALUE_ERROR = re.compile("(" + "|".join(_VALUE_ERRORS) + "): ")
_GO_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_DENIED = re.compile(r"admission webhook \"([^\"]*)\" denied the request|ValidatingAdmissionPolicy '([^']*)' with binding '([^']*)' denied request")
# A 422's causes by their reason (metav1.CauseType): what is wrong, without the server's detail.
_CAUSES = {
    "FieldValueInvalid": "invalid value",
    "FieldValueTypeInvalid": "invalid type",
    "FieldValueNotSupported": "unsupported value",
    "FieldValueDuplicate": "duplicate value",
    "FieldValueNotFound": "not found",
    "FieldValueRequired": "required",
    "FieldValueForbidden": "forbidden",
    "FieldValueTooLong": "too long",
    "FieldValueTooMany": "too many items",
    "FieldManagerConflict": "owned by another field manager",
    "InternalError": "internal error",
}
_INVALID_HINT = ("the API server's details are not shown, they may quote the value; "
                "`kubectl apply --dry-run=server` of the rendered object shows them")
# Who asked (the operator's own identity), in a Forbidden answer.
_REQUESTER = re.compile(r'User "([^"]*)" cannot ')
# The rules an RBAC escalation refusal lists (`{APIGroups:["apps"], Resources:["deployments"],
# Verbs:["get"]}`): API groups, resources and verbs of the Role being written, never a value.
_REFUSED_RULE = re.compile(r'\{APIGroups:\[[^\]]*\][^}]*\}')
_QUOTED_NAME = re.compile(r'"([^"]*)"')
# Who else owns a field, in a server-side apply Conflict.
_MANAGER = re.compile(r'conflict with "([^"]*)"')


def _without_values(text: str) -> str:
    """`text` with the value after each field error's kind cut out (a Go-quoted string, or an
    unquoted one up to the next `: ` outside braces and quotes, as `%v`/`%#v` print them)."""
    out, position = [], 0
    for match in _VALUE_ERROR.finditer(text):
        if match.start() < position:
            continue
        out.append(text[position:match.end() - 2])
        end = _value_end(text, match.end())
        out.append(f": {ELLIPSIS}")
        position = end
    out.append(text[position:])
    return "".join(out)


def _value_end(text: str, start: int) -> int:
    quoted = _GO_STRING.match(text, start)
    if quoted:
        return quoted.end()
    depth, index = 0, start
    while index < len(text):
        char = text[index]
        if char == '"':
            inner = _GO_STRING.match(text, index)
            index = inner.end() if inner else len(text)
            continue
        if char in "{[(":
            depth += 1
        elif char in "}])":
            depth -= 1
        elif depth <= 0 and text.startswith(": ", index):
            return index
        elif depth <= 0 and char in ";\n":
            return index
        index += 1
    return len(text)


class ApiError(SafeError):
    """A Kubernetes API call failed; `status` is the HTTP status (0: no response at all).

    The message keeps no value the request carried, however the error was made: the API
    server quotes an invalid field's value ("Invalid value: ..."; it redacts only Secret data
    itself), and a ConfigMap, an annotation or a cloud provider's parameters rendered by a
    Composition may hold a generated password. So every field error's value is cut out, and
    a quoted string survives only when it is a name the request or its answer gave (the
    request path's segments, `names`; `error_from_status` adds the Status's details) or is
    empty. Request bodies are never included.
    """

    def __init__(self, status: int, reason: str, message: str, *, method: str = "", path: str = "",
                 names: Iterable[str] = ()) -> None:
        keep = {part for part in path.split("?")[0].split("/")} | set(names) | {""}
        message = unquoted(_without_values(message), keep=keep)
        super().__init__(f"{method} {path}: {status} {reason}: {message}".strip())
        self.status = status
        self.reason = reason
        self.message = message
        self.method = method
        self.path = path

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def already_exists(self) -> bool:
        return self.status == 409 and self.reason == "AlreadyExists"

    @property
    def transient(self) -> bool:
        """Worth retrying as is: throttled, server-side trouble, or no answer at all (but not a
        request the write fence kept back: retrying cannot make this replica the leader)."""
        return self.status in TRANSIENT_STATUSES or (self.status == 0 and self.reason != fence.REASON)


@dataclass(frozen=True)
class ResourceInfo:
    """Where a kind lives in the API: enough to build request paths."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    def path(self, name: str | None = None, namespace: str | None = None, subresource: str | None = None) -> str:
        """The REST path of the collection (name None) or of one object (and its subresource)."""
        prefix = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            prefix += f"/namespaces/{namespace}"
        path = f"{prefix}/{self.plural}"
        if name:
            path += f"/{name}"
            if subresource:
                path += f"/{subresource}"
        return path


_lock = threading.Lock()
_api_client: k8s_client.ApiClient | None = None
_discovery: dict[str, dict[str, ResourceInfo]] = {}
_auth_header: tuple[k8s_client.Configuration, float, str | None] | None = None
_base_url = ""  # the configuration's host, read once: the property is not free


def configure(kubeconfig: str | None = None, *, context: str | None = None) -> k8s_client.ApiClient:
    """Load credentials once: an explicit kubeconfig, else $KUBECONFIG/~/.kube, else in-cluster.

    Idempotent; later calls return the client built by the first one. Tests that need a
    different identity call `reset()` first.
    """
    global _api_client, _base_url
    with _lock:
        if _api_client is not None:
            return _api_client
        configuration = k8s_client.Configuration()
        if kubeconfig or os.environ.get("KUBECONFIG") or os.path.exists(os.path.expanduser("~/.kube/config")):
            k8s_config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
        else:
            k8s_config.load_incluster_config(client_configuration=configuration)
        configuration.connection_pool_maxsize = CONNECTION_POOL_SIZE
        _api_client = k8s_client.ApiClient(configuration)
        _api_client.user_agent = USER_AGENT
        _base_url = configuration.host.rstrip("/")
        return _api_client


def api_client() -> k8s_client.ApiClient:
    """The shared ApiClient (configured on first use)."""
    return _api_client if _api_client is not None else configure()


def server_url() -> str:
    """The API server's URL as the client configuration names it ("" before `configure`)."""
    return _base_url


def reset() -> None:
    """Forget the client and the discovery cache (tests; a new kubeconfig)."""
    global _api_client, _auth_header
    with _lock:
        _api_client = None
        _auth_header = None
        _discovery.clear()


def _is_retryable(error: BaseException) -> bool:
    if isinstance(error, ApiError):
        return error.transient
    return isinstance(error, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError))


def _to_api_error(status: int, reason: str | None, body: bytes | None, method: str, path: str) -> ApiError:
    status_body: Mapping[str, Any] = {}
    if body:
        try:
            decoded = json.loads(body)
            status_body = decoded if isinstance(decoded, dict) else {}
        except (ValueError, TypeError):
            pass
    return error_from_status(status_body, status=status, reason=reason or "", method=method, path=path)


def error_from_status(status_body: Mapping[str, Any], *, status: int | None = None, reason: str = "", method: str = "",
                      path: str = "") -> ApiError:
    """An ApiError from a Kubernetes Status (an error answer, or a watch's ERROR event).

    Besides what ApiError drops: a 422 is told by its causes, each by field and kind of
    problem only (the API server's detail may quote the value too: a CRD's CEL rule's
    messageExpression, for one); an admission webhook's or ValidatingAdmissionPolicy's
    denial keeps who denied, not its text, which is the policy's own and may quote the
    object. The names kept quoted are the Status's details, the causes' fields, the
    requesting user (of a Forbidden), the other field managers (of an apply Conflict) and
    the denying policy, so `secrets "db" is forbidden: User "..." cannot ...` still says
    which Secret and who.
    """
    code = int(status if status is not None else status_body.get("code") or 0)
    reason = str(status_body.get("reason") or reason)
    found = status_body.get("details")
    details: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    causes = [cause for cause in details.get("causes") or [] if isinstance(cause, Mapping)]
    names = {str(details.get(key)) for key in ("name", "group", "kind") if details.get(key)}
    names |= {str(cause.get("field")) for cause in causes if cause.get("field")}
    text = str(status_body.get("message") or "")
    denied = _DENIED.search(text)
    names |= {name for name in denied.groups() if name} if denied else set()
    names |= set(_REQUESTER.findall(text)) if reason == "Forbidden" else set()
    if reason == "Forbidden":  # the identity engine reads which rules were refused (paved.identity.ceiling)
        names |= {name for rule in _REFUSED_RULE.findall(text) for name in _QUOTED_NAME.findall(rule)}
    names |= set(_MANAGER.findall(text)) if reason == "Conflict" else set()
    if denied:
        message = f"{denied.group(0)} (its reason is not shown: it may quote the object)"
    elif reason == "Invalid" and causes:
        what = f"{details.get('kind', 'object')} {details.get('name', '')!s}".strip()
        problems = "; ".join(f"{cause.get('field') or '(object)'}: {_CAUSES.get(str(cause.get('reason')), 'invalid')}"
                             for cause in causes)
        message = f"{what} is invalid: {problems} ({_INVALID_HINT})"
    else:
        message = text or reason
    return ApiError(code, reason, message, method=method, path=path, names=names)


@retry(
    retry=retry_if_exception(_is_retryable),
    wait=wait_random_exponential(multiplier=0.2, max=5),
    stop=stop_after_attempt(RETRY_ATTEMPTS),
    reraise=True,
)
def request(
    method: str,
    path: str,
    *,
    operation: str,
    body: Mapping[str, Any] | Sequence[Any] | None = None,  # a list: a JSON patch
    query: Mapping[str, Any] | None = None,
    content_type: str = "application/json",
    accept: str = "application/json",
) -> Json:
    """Send one request and return the decoded JSON answer; raise ApiError on any non-2xx.

    Transient failures (429, 5xx, connection errors) are retried with exponential backoff
    and jitter, at most RETRY_ATTEMPTS times; client errors (400, 403, 404, 409, 422) are
    raised at once because repeating the same request cannot fix them.
    """
    metrics.count_call("kubernetes", operation)
    data: bytes | None = None
    if body is not None:
        data = json.dumps(body, separators=(",", ":"), default=_json_default).encode()
    response = _send(method, path, query, data, content_type=content_type, accept=accept, timeout=_TIMEOUT, preload_content=True)
    if not 200 <= response.status <= 299:
        raise _to_api_error(response.status, response.reason, response.data, method, path)
    return json.loads(response.data) if response.data else {}


def list_pages(path: str, *, limit: int, query: Mapping[str, Any] | None = None,
               accept: str = "application/json") -> Iterator[Json]:
    """A collection a page of `limit` objects at a time (following `continue`): thousands of
    objects are never decoded, or held, at once."""
    token: str | None = None
    while True:
        page = request("GET", path, operation="list", query={**(query or {}), "limit": limit, "continue": token}, accept=accept)
        yield page
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return


def open_watch(path: str, query: Mapping[str, Any]) -> urllib3.BaseHTTPResponse:
    """Open a watch (`query` carries watch=1 and its resourceVersion) and return the streaming
    response, whose lines are the events (paved.kube.watch reads them). Not retried here:
    the caller resumes from its last resourceVersion. Raise ApiError on any non-2xx."""
    metrics.count_call("kubernetes", "watch")
    response = _send("GET", path, query, None, timeout=_WATCH_TIMEOUT, preload_content=False)
    if not 200 <= response.status <= 299:
        try:
            raise _to_api_error(response.status, response.reason, response.read(), "GET", path)
        finally:
            response.release_conn()
    return response


def _send(method: str, path: str, query: Mapping[str, Any] | None, data: bytes | None, *, timeout: urllib3.Timeout,
          preload_content: bool, content_type: str = "application/json", accept: str = "application/json") -> urllib3.BaseHTTPResponse:
    """One HTTP exchange with the API server; a 401 fetches the credentials again and repeats it once.
    Anything but a read is sent only while the write fence permits (paved.fence)."""
    if method not in fence.READ_METHODS and not fence.WRITES.permits():
        raise ApiError(0, fence.REASON, fence.WRITES.why_not(), method=method, path=path)
    client = api_client()
    url = _base_url + path
    params = [(key, value) for key, value in (query or {}).items() if value is not None]
    if params:
        url += "?" + urlencode(params)
    headers = {"Accept": accept, "User-Agent": USER_AGENT}
    if data is not None:
        headers["Content-Type"] = content_type
    for fresh_credentials in (False, True):
        authorization = _authorization(client.configuration, refresh=fresh_credentials)
        if authorization:
            headers["Authorization"] = authorization
        try:
            # The pool the ApiClient built from the configuration (TLS, client certificate,
            # proxy), without its per-request model serialisation: paved sends plain dicts.
            response = client.rest_client.pool_manager.request(
                method, url, body=data, headers=headers, timeout=timeout, preload_content=preload_content)
        except urllib3.exceptions.SSLError as error:
            raise ApiError(0, "SSLError", str(error), method=method, path=path) from None
        if response.status != 401 or fresh_credentials:
            break
        if not preload_content:
            response.drain_conn()  # the 401's body, so that the connection can be reused
            response.release_conn()
    return response


def _json_default(value: object) -> object:
    """What json cannot encode by itself: Kopf's mapping views, datetimes."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    raise TypeError(f"cannot send a {type(value).__name__} to the API server")


def _authorization(configuration: k8s_client.Configuration, *, refresh: bool = False) -> str | None:
    """The Authorization header (None: a client certificate authenticates), asked of the
    configuration at most every AUTH_REFRESH_SECONDS or when `refresh`: its loaders' refresh
    hook re-reads token files and re-sets the whole configuration on every call, a
    measurable share of the CPU at thousands of requests a minute."""
    global _auth_header
    now = time.monotonic()
    cached = _auth_header
    if not refresh and cached is not None and cached[0] is configuration and now - cached[1] < AUTH_REFRESH_SECONDS:
        return cached[2]
    value = configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
    _auth_header = (configuration, now, value)
    return value


def resource_info(api_version: str, kind: str) -> ResourceInfo:
    """Plural name and scope of `kind`, from discovery (one request per group/version, cached).

    An unknown group/version or kind is refreshed once (a CRD may have been installed since);
    if still unknown, ApiError 404 is raised naming the kind.
    """
    for refresh in (False, True):
        infos = _discover(api_version, refresh=refresh)
        if kind in infos:
            return infos[kind]
    raise ApiError(404, "NotFound", f"the server has no kind {kind!r} in {api_version!r}", names=(kind, api_version))


def _discover(api_version: str, *, refresh: bool) -> dict[str, ResourceInfo]:
    with _lock:
        cached = _discovery.get(api_version)
    if cached is not None and not refresh:
        return cached
    path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    try:
        answer = request("GET", path, operation="discover")
    except ApiError as error:
        if not error.not_found:
            raise
        answer = {"resources": []}
    infos = {
        item["kind"]: ResourceInfo(api_version, item["kind"], item["name"], bool(item.get("namespaced")))
        for item in answer.get("resources", [])
        if "/" not in item["name"]  # subresources such as roles/status
    }
    with _lock:
        _discovery[api_version] = infos
    return infos
