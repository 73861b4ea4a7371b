"""The canary demo's traffic process (paved.dev.demo_canary) starts, or says why it did not."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from paved.dev.demo_canary import _start_traffic
from paved.dev.processes import PortTaken, free_port, is_alive, port_in_use, read_record, stop_all


def test_the_traffic_process_is_returned_once_both_apps_serve(tmp_path: Path) -> None:
    traffic, (stable, canary) = _start_traffic(tmp_path, tmp_path / "state", free_port())
    try:
        assert stable != canary and port_in_use(stable) and port_in_use(canary)
    finally:
        stop_all([traffic])


def test_a_port_taken_in_between_is_reported_as_taken_and_nothing_keeps_running(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        with pytest.raises(PortTaken):
            _start_traffic(tmp_path, tmp_path / "state", squatter.getsockname()[1])
    started = read_record(tmp_path / "traffic.pid")
    assert started is not None and not is_alive(started)  # it was started, and stopped again
