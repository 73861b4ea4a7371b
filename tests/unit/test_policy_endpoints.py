"""paved.policy.endpoints: no call on a tenant's behalf to a link-local address (the cloud
metadata endpoint) or to the Kubernetes API server, however the address is spelled."""

from __future__ import annotations

import ipaddress
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paved.policy.endpoints import (
    API_SERVER_REASON,
    LINK_LOCAL_REASON,
    METADATA,
    METADATA_REASON,
    ApiServer,
    address_problem,
    same_endpoint,
    target,
    url_problem,
    without_credentials,
)

ip = ipaddress.ip_address
API = ApiServer(hosts=frozenset({("api.cluster.example", 6443), ("127.0.0.1", 6443)}),
                addresses=frozenset({(ip("127.0.0.1"), 6443), (ip("10.96.0.1"), 443), (ip("192.0.2.10"), 6443)}))
NOTHING = ApiServer()


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.170.2/v2/credentials",  # ECS task credentials
    "http://[fe80::1]:9090",
    "http://[fe80::a9fe:a9fe%25eth0]/",
    "http://[::ffff:169.254.169.254]/",  # IPv4-mapped IPv6
    "http://[::ffff:a9fe:a9fe]/",
])
def test_link_local_literals_are_refused(url: str) -> None:
    problem = url_problem(url, [], NOTHING)
    assert problem is not None and LINK_LOCAL_REASON in problem


@pytest.mark.parametrize("url", ["http://[fd00:ec2::254]/latest/meta-data/", "http://100.100.100.200/latest/meta-data/",
                                 "http://[::ffff:100.100.100.200]/"])
def test_metadata_endpoints_outside_link_local_are_refused(url: str) -> None:
    assert url_problem(url, [], NOTHING) == f"{target(url).host} is {METADATA_REASON}"  # type: ignore[union-attr]


@pytest.mark.parametrize(("host", "resolved"), [
    ("2852039166", ["169.254.169.254"]),  # the decimal spelling getaddrinfo accepts
    ("0251.0376.0251.0376", ["169.254.169.254"]),  # octal
    ("metadata.google.internal", ["169.254.169.254"]),
    ("rebind.example", ["203.0.113.7", "169.254.169.254"]),  # one bad answer is enough
])
def test_names_are_judged_by_every_address_they_resolve_to(host: str, resolved: list[str]) -> None:
    problem = url_problem(f"http://{host}/", [ip(a) for a in resolved], NOTHING)
    assert problem == f"{host} (resolves to 169.254.169.254) is {LINK_LOCAL_REASON}"


@pytest.mark.parametrize("url", [
    "https://127.0.0.1:6443/api",
    "https://127.0.0.2:6443/",  # a loopback server answers on every loopback address
    "https://[::1]:6443/",
    "https://10.96.0.1/",  # the kubernetes Service, port 443 implied
    "https://192.0.2.10:6443/",
    "https://kubernetes.default.svc.cluster.local:9090/",  # by name, on any port
    "https://KUBERNETES.DEFAULT.SVC./",
    "http://kubernetes.default:80/",
    "https://api.cluster.example:6443/",  # the host of the operator's kube configuration
])
def test_the_api_server_is_refused_by_name_and_address(url: str) -> None:
    problem = url_problem(url, [], API)
    assert problem is not None and API_SERVER_REASON in problem, url


def test_a_name_resolving_to_the_api_server_is_refused_at_its_port_only() -> None:
    assert url_problem("https://localhost:6443/", [ip("127.0.0.1"), ip("::1")], API) == \
        f"localhost (resolves to 127.0.0.1) is {API_SERVER_REASON}"
    assert url_problem("http://localhost:9090/", [ip("127.0.0.1"), ip("::1")], API) is None  # Prometheus next to it
    assert url_problem("https://api.cluster.example:443/", [ip("198.51.100.1")], API) is None


@pytest.mark.parametrize("url", ["http://0.0.0.0:6443/", "http://[::]:80/"])
def test_the_unspecified_address_is_refused(url: str) -> None:
    assert "unspecified address" in (url_problem(url, [], NOTHING) or "")


@pytest.mark.parametrize("url", ["http://prometheus.monitoring:9090", "https://hooks.example/x", "http://10.0.0.5:80",
                                 "http://127.0.0.1:9090", "ftp://169.254.169.254/", "not a url"])
def test_ordinary_destinations_pass(url: str) -> None:
    assert url_problem(url, [ip("10.0.0.5")], API) is None


def test_target_same_endpoint_and_credentials() -> None:
    assert target("https://Vault.Example.:8200/v1/") == target("https://vault.example:8200/v1")
    assert target("http://x:99999/") is None and target("mailto:a@b") is None
    assert same_endpoint("https://vault.example", "https://vault.example:443/")
    assert not same_endpoint("https://vault.example", "http://vault.example:443")
    assert not same_endpoint("https://vault.example", None)
    assert without_credentials("http://user:pw@prom:9090/x") == "http://prom:9090/x"


# --- properties -------------------------------------------------------------------------------------

link_local_v4 = st.integers(0, 2**16 - 1).map(lambda n: ipaddress.IPv4Address((169 << 24) + (254 << 16) + n))
link_local_v6 = st.integers(0, 2**118 - 1).map(lambda n: ipaddress.IPv6Address((0xFE80 << 112) + n))
ports = st.integers(1, 65535)
public_v4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address).filter(
    lambda a: not (a.is_link_local or a.is_unspecified or a.is_loopback or a in METADATA))


@given(address=st.one_of(link_local_v4, link_local_v6), port=ports)
def test_every_link_local_address_is_refused_on_every_port(address: ipaddress.IPv4Address | ipaddress.IPv6Address,
                                                           port: int) -> None:
    assert address_problem(address, port, NOTHING) == LINK_LOCAL_REASON


@given(address=st.one_of(link_local_v4, public_v4), port=ports)
def test_an_ipv4_mapped_address_is_judged_as_the_ipv4_address(address: ipaddress.IPv4Address, port: int) -> None:
    mapped = ipaddress.IPv6Address(f"::ffff:{address}")
    assert address_problem(mapped, port, API) == address_problem(address, port, API)


@given(address=public_v4, port=ports)
def test_other_addresses_pass_unless_they_are_the_api_server(address: ipaddress.IPv4Address, port: int) -> None:
    expected = API_SERVER_REASON if (address, port) in API.addresses else None
    assert address_problem(address, port, API) == expected
    assert url_problem(f"http://{address}:{port}/", [], API) == (f"{address} is {expected}" if expected else None)


def test_the_pure_cores_stay_pure() -> None:
    """The endpoint rule and the store tenancy rule import no client (DESIGN: pure cores)."""
    code = ("import sys, paved.policy.endpoints, paved.secretsync.tenancy;"
            " print(sorted(m for m in ('kopf', 'kubernetes', 'boto3', 'hvac', 'requests', 'urllib3') if m in sys.modules))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"
