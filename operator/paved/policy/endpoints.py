"""Where Paved may connect on a tenant's behalf: the rule for URLs written in tenants' objects.

A URL in a namespaced object (a ProgressiveRollout's Prometheus address, webhooks and
notifications) makes Paved, from inside the operator's network position, send a request
there. Two kinds of
destination are refused unless an IntentPolicy allows the namespace `AnyEndpoint`:

- link-local addresses, 169.254.0.0/16 and fe80::/10: the cloud metadata endpoint lives
  there (169.254.169.254), and with it the node's cloud credentials; so do the metadata
  endpoints outside that range, AWS's over IPv6 (fd00:ec2::254) and Alibaba Cloud's
  (100.100.100.200);
- the Kubernetes API server's own address: the names `kubernetes.default` and
  `kubernetes.default.svc*` on any port, the host of the operator's kube client
  configuration at its port, and every address those resolve to, at that port.

The API server is matched by address *and port* on purpose: in a development setup every
server shares 127.0.0.1, and a host runs more than the API server; the rule is about the API
server. A loopback API server address stands for all of 127.0.0.0/8 and ::1 (a server bound
to every local address answers on each). The unspecified address (0.0.0.0, ::) is refused
outright: connecting to it reaches the local host. IPv4-mapped IPv6 addresses
(::ffff:169.254.169.254) are judged as the IPv4 address they carry.

Names are judged by what they resolve to, at the moment of the call (a name can resolve to a
forbidden address; the providers' connection guard judges the address actually connected to,
so a name that changes its answer between the check and the connection gains nothing).

Pure: URLs, addresses and the API server's description in, a reason (or None) out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
API_SERVER_NAMES = ("kubernetes.default", "kubernetes.default.svc")  # and kubernetes.default.svc.<cluster domain>
DEFAULT_PORTS = {"http": 80, "https": 443}
METADATA = frozenset({ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")})
LINK_LOCAL_REASON = "a link-local address (where the cloud metadata endpoint lives)"
METADATA_REASON = "a cloud metadata endpoint"
API_SERVER_REASON = "the Kubernetes API server"


@dataclass(frozen=True)
class ApiServer:
    """How the operator reaches the Kubernetes API server: names and (address, port) pairs."""

    hosts: frozenset[tuple[str, int]] = frozenset()  # (lower-case host name, port) from the kube client configuration
    addresses: frozenset[tuple[IPAddress, int]] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Target:
    """Where a URL points: scheme, lower-case host (no brackets, no trailing dot) and port."""

    scheme: str
    host: str
    port: int
    path: str


def target(url: str) -> Target | None:
    """The parts of an http(s) URL that say where it connects; None when it is not one."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:  # a port that is no number or out of range
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if scheme not in DEFAULT_PORTS or not host:
        return None
    return Target(scheme, host, port or DEFAULT_PORTS[scheme], parts.path.rstrip("/"))


def same_endpoint(url: str, other: str | None) -> bool:
    """Whether two URLs name the same server and base path (case, default ports and a trailing
    slash aside); False when `other` is None or either is not an http(s) URL."""
    if other is None:
        return False
    mine, theirs = target(url), target(other)
    return mine is not None and mine == theirs


def without_credentials(url: str) -> str:
    """`url` without a `user:password@` part (clients send it as basic auth): for messages."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def literal_address(host: str) -> IPAddress | None:
    """`host` as an IP address when it is written as one (dotted IPv4 or IPv6), else None."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])  # an IPv6 zone (fe80::1%eth0) does not change the address
    except ValueError:
        return None


def _plain(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _same_server(address: IPAddress, server: IPAddress) -> bool:
    if address == server:
        return True
    return server.is_loopback and address.is_loopback  # a loopback server answers on every loopback address


def is_api_server_name(host: str) -> bool:
    host = host.lower().rstrip(".")
    return host in API_SERVER_NAMES or host.startswith("kubernetes.default.svc.")


def address_problem(address: IPAddress, port: int, api_server: ApiServer) -> str | None:
    """Why Paved must not connect to `address`:`port` for a tenant (None: it may)."""
    plain = _plain(address)
    if plain.is_unspecified:
        return "the unspecified address (connecting to it reaches the operator's own host)"
    if any(plain in network for network in LINK_LOCAL if network.version == plain.version):
        return LINK_LOCAL_REASON
    if plain in METADATA:
        return METADATA_REASON
    if any(port == server_port and _same_server(plain, _plain(server)) for server, server_port in api_server.addresses):
        return API_SERVER_REASON
    return None


def url_problem(url: str, resolved: Iterable[IPAddress], api_server: ApiServer) -> str | None:
    """Why Paved must not call `url` for a tenant, given the addresses its host resolves to now
    (None: it may). A URL that is not http(s) is left to the schema and the client."""
    where = target(url)
    if where is None:
        return None
    if is_api_server_name(where.host) or (where.host, where.port) in api_server.hosts:
        return f"{where.host} names {API_SERVER_REASON}"
    literal = literal_address(where.host)
    for address in ([literal] if literal is not None else resolved):
        problem = address_problem(address, where.port, api_server)
        if problem:
            shown = where.host if literal is not None else f"{where.host} (resolves to {_plain(address)})"
            return f"{shown} is {problem}"
    return None
