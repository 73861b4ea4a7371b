"""Calls Paved makes on a tenant's behalf: resolve, judge (paved.policy.endpoints), guard.

A ProgressiveRollout names URLs (its Prometheus address, its webhooks) and Paved calls them
from the operator's network position. The rule of paved.policy.endpoints (no link-local
address, not the Kubernetes API server) is applied twice, by one `Egress`:

- `refusal(url)`: before a tick does anything, the URL's host is resolved *now* and every
  address it resolves to is judged; a refusal becomes a condition naming the field, and no
  traffic moves. This also covers calls through an HTTP proxy.
- `adapter()`: the requests adapter of every session that calls such URLs judges each new
  connection by the address it actually reached (the socket's peer). A name that resolves
  differently a moment later, or a redirect to a forbidden address, ends in EndpointRefused
  before a byte is sent.

`STRICT` applies the rule; `OPEN` is for namespaces an IntentPolicy allows `AnyEndpoint`.

The API server's addresses: the host of the operator's kube client configuration at its port,
and `kubernetes.default.svc` at 443, with what they resolve to; looked up once per
API_SERVER_TTL seconds. Host resolutions are kept RESOLVE_TTL seconds (a tick checks its URLs
every time; the connection guard does not depend on this cache).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import requests
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions
from requests.adapters import HTTPAdapter

from paved.kube import client as kube_client
from paved.policy.endpoints import ApiServer, IPAddress, address_problem, literal_address, target, url_problem

API_SERVER_TTL = 300.0
RESOLVE_TTL = 5.0
IN_CLUSTER_NAME, IN_CLUSTER_PORT = "kubernetes.default.svc", 443

Resolver = Callable[[str, int], list[IPAddress]]


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to now (empty when it does not resolve)."""
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in answers:
        address = literal_address(str(sockaddr[0]))
        if address is not None and address not in found:
            found.append(address)
    return found


class _Cached:
    """A value computed at most once per `ttl` seconds (thread-safe)."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._values: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any, compute: Callable[[], Any]) -> Any:
        now = time.monotonic()
        with self._lock:
            hit = self._values.get(key)
            if hit is not None and hit[0] > now:
                return hit[1]
        value = compute()
        with self._lock:
            self._values[key] = (now + self.ttl, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()


_api_server_cache = _Cached(API_SERVER_TTL)
_resolve_cache = _Cached(RESOLVE_TTL)


def _operator_api_server(resolver: Resolver = resolve) -> ApiServer:
    hosts: set[tuple[str, int]] = set()
    addresses: set[tuple[IPAddress, int]] = set()
    configured = target(kube_client.server_url())  # None before the client is configured (unit tests)
    places = [(IN_CLUSTER_NAME, IN_CLUSTER_PORT)]
    if configured is not None:
        hosts.add((configured.host, configured.port))
        places.append((configured.host, configured.port))
    for host, port in places:
        addresses.update((address, port) for address in resolver(host, port))
    return ApiServer(frozenset(hosts), frozenset(addresses))


def api_server() -> ApiServer:
    """The operator's Kubernetes API server as the endpoint rule sees it (cached)."""
    value: ApiServer = _api_server_cache.get("api-server", _operator_api_server)
    return value


def cached_resolve(host: str, port: int) -> list[IPAddress]:
    value: list[IPAddress] = _resolve_cache.get((host, port), lambda: resolve(host, port))
    return value


class EndpointRefused(urllib3.exceptions.NewConnectionError):
    """A connection to an address the endpoint rule forbids; closed before anything was sent."""

    def __init__(self, connection: Any, problem: str) -> None:
        super().__init__(connection, problem)
        self.problem = problem


def refused_reason(error: BaseException) -> str | None:
    """The EndpointRefused message inside a requests/urllib3 error, if that is what it was."""
    seen: set[int] = set()
    pending: list[Any] = [error]
    while pending:
        current = pending.pop()
        if not isinstance(current, BaseException) or id(current) in seen:  # a `reason` may be a str (an SSL error's)
            continue
        seen.add(id(current))
        if isinstance(current, EndpointRefused):
            return current.problem
        pending += [getattr(current, "reason", None), current.__cause__, current.__context__,
                    *(arg for arg in getattr(current, "args", ()) if isinstance(arg, BaseException))]
    return None


class Egress:
    """Where calls on a tenant's behalf may go: STRICT applies the rule, OPEN does not."""

    def __init__(self, *, any_endpoint: bool = False, api: Callable[[], ApiServer] = api_server,
                 resolver: Resolver = cached_resolve) -> None:
        self.any_endpoint = any_endpoint
        self.api = api
        self.resolver = resolver

    def __repr__(self) -> str:
        return "Egress(any endpoint)" if self.any_endpoint else "Egress(strict)"

    def refusal(self, url: str) -> str | None:
        """Why Paved must not call `url` for a tenant now (None: it may)."""
        if self.any_endpoint:
            return None
        where = target(url)
        if where is None:
            return None
        resolved = [] if literal_address(where.host) is not None else self.resolver(where.host, where.port)
        return url_problem(url, resolved, self.api())

    def connection_problem(self, address: str, port: int) -> str | None:
        """Why a connection that reached `address`:`port` must be dropped (None: keep it)."""
        if self.any_endpoint:
            return None
        return address_problem(ipaddress.ip_address(address.split("%", 1)[0]), port, self.api())

    def adapter(self, **options: Any) -> HTTPAdapter:
        """A requests adapter for tenant-named URLs (`options` as for HTTPAdapter)."""
        return HTTPAdapter(**options) if self.any_endpoint else _GuardedAdapter(self, **options)

    def session(self, **options: Any) -> requests.Session:
        """A requests session whose http and https connections go through `adapter()`."""
        session = requests.Session()
        adapter = self.adapter(**options)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session


STRICT = Egress()
OPEN = Egress(any_endpoint=True)


def for_allowance(any_endpoint: bool) -> Egress:
    return OPEN if any_endpoint else STRICT


# --- the connection guard -----------------------------------------------------------------


def _judge(connection: Any, sock: socket.socket, egress: Egress) -> None:
    peer = sock.getpeername()
    problem = egress.connection_problem(str(peer[0]), int(peer[1]))
    if problem:
        sock.close()
        raise EndpointRefused(connection, f"Paved does not connect to {connection.host} for a tenant: it is {problem}")


def _guarded_pools(egress: Egress) -> dict[str, type[urllib3.connectionpool.HTTPConnectionPool]]:
    class GuardedHTTPConnection(urllib3.connection.HTTPConnection):
        def _new_conn(self) -> socket.socket:
            sock = super()._new_conn()
            _judge(self, sock, egress)
            return sock

    class GuardedHTTPSConnection(urllib3.connection.HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            sock = super()._new_conn()
            _judge(self, sock, egress)
            return sock

    class GuardedHTTPPool(urllib3.connectionpool.HTTPConnectionPool):
        ConnectionCls = GuardedHTTPConnection

    class GuardedHTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
        ConnectionCls = GuardedHTTPSConnection

    return {"http": GuardedHTTPPool, "https": GuardedHTTPSPool}


class _GuardedAdapter(HTTPAdapter):
    """HTTPAdapter whose pools judge every new connection by its peer address."""

    def __init__(self, egress: Egress, **options: Any) -> None:
        self._pools = _guarded_pools(egress)
        super().__init__(**options)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pools
