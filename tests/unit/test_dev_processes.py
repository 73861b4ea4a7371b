"""Local servers (moto, OpenBao, Prometheus) start on a free port through one function."""

from __future__ import annotations

import pytest

from paved.dev.processes import PortTaken, port_taken, start_with_free_port


def test_a_taken_port_is_retried_on_another_and_other_failures_are_not() -> None:
    tried: list[int] = []

    def taken_twice(port: int) -> str:
        tried.append(port)
        if len(tried) < 3:
            raise PortTaken(f"port {port} taken")
        return f"serving on {port}"

    assert start_with_free_port(taken_twice) == f"serving on {tried[-1]}"
    assert len(tried) == 3 and all(1024 <= port < 65536 for port in tried)

    with pytest.raises(PortTaken):
        start_with_free_port(lambda port: (_ for _ in ()).throw(PortTaken("always")), attempts=2)
    calls: list[int] = []

    def broken(port: int) -> str:
        calls.append(port)
        raise RuntimeError("no binary")

    with pytest.raises(RuntimeError, match="no binary"):
        start_with_free_port(broken)
    assert len(calls) == 1


def test_the_go_and_python_wordings_of_a_taken_port_are_recognised() -> None:
    assert port_taken("listen tcp 127.0.0.1:8200: bind: address already in use")
    assert port_taken("OSError: [Errno 98] Address already in use")
    assert not port_taken("permission denied")
