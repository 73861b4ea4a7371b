"""Prometheus on loopback: Debian's ``prometheus`` package (/usr/bin/prometheus).

The one place that knows how to configure and start it: the demo (paved.dev.demo_canary)
starts it detached, the test fixture (tests/fixtures/prometheus.py) and bench/ in their own
process. A scrape target is ``host:port`` (scraped at ``/metrics``) or a full URL
(``http://host:port/path``). ``web_config`` is Prometheus' ``--web.config.file`` (TLS,
basic_auth_users). ``PAVED_PROMETHEUS_BIN`` overrides the binary.
"""

from __future__ import annotations

import os
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from paved.dev.processes import (
    PortTaken,
    ProcessRecord,
    is_alive,
    log_tail,
    port_taken,
    read_record,
    start_detached,
    start_with_free_port,
    stop_all,
)

__all__ = ["HOW_TO_GET_PROMETHEUS", "PrometheusError", "PrometheusProcess", "prometheus_argv", "prometheus_binary",
           "start_prometheus", "write_config"]

DEFAULT_BINARY = "/usr/bin/prometheus"
DEBIAN_WEB_ASSETS = Path("/usr/share/prometheus/web")
HOW_TO_GET_PROMETHEUS = (
    "Install Debian's package: run scripts/bootstrap, or as root "
    "`apt-get update && apt-get install -y --no-install-recommends prometheus`. "
    "Set PAVED_PROMETHEUS_BIN to use another prometheus binary."
)


class PrometheusError(RuntimeError):
    """prometheus is missing or did not start; the message says why and how to fix it."""


def prometheus_binary() -> str:
    """$PAVED_PROMETHEUS_BIN, else Debian's /usr/bin/prometheus, else one on PATH."""
    path = os.environ.get("PAVED_PROMETHEUS_BIN") or (
        DEFAULT_BINARY if os.path.exists(DEFAULT_BINARY) else shutil.which("prometheus"))
    if not path or not os.access(path, os.X_OK):
        raise PrometheusError(f"prometheus not found or not executable at {path!r}. {HOW_TO_GET_PROMETHEUS}")
    return str(path)


def _scrape_configs(targets: Sequence[str]) -> list[dict[str, Any]]:
    """Group targets into one job per (scheme, metrics_path)."""
    jobs: dict[tuple[str, str], list[str]] = {}
    for target in targets:
        if "://" in target:
            parts = urllib.parse.urlsplit(target)
            key = (parts.scheme, parts.path or "/metrics")
            hostport = parts.netloc
        else:
            key, hostport = ("http", "/metrics"), target
        jobs.setdefault(key, []).append(hostport)
    return [
        {"job_name": f"test-{i}", "scheme": scheme, "metrics_path": path, "static_configs": [{"targets": hosts}]}
        for i, ((scheme, path), hosts) in enumerate(sorted(jobs.items()))
    ]


def write_config(workdir: Path, scrape_targets: Sequence[str], scrape_interval: str = "1s") -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,  # must not exceed the interval
            "evaluation_interval": scrape_interval,
        },
        "scrape_configs": _scrape_configs(scrape_targets),
    }, sort_keys=False))
    return config


def prometheus_argv(binary: str, workdir: Path, config: Path, port: int, web_config: Path | None = None) -> list[str]:
    # Debian's build serves the web UI from files; without them only the UI is missing, so
    # point at an empty folder rather than failing. The API and /-/ready do not need them.
    assets = DEBIAN_WEB_ASSETS
    if not assets.is_dir():
        assets = workdir / "no-web-assets"
        assets.mkdir(exist_ok=True)
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        "--storage.tsdb.retention.time=1d",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--web.local-assets={assets}",
        f"--web.console.templates={workdir}",
        f"--web.console.libraries={workdir}",
    ]
    if web_config is not None:
        argv.append(f"--web.config.file={web_config}")
    return argv


@dataclass
class PrometheusProcess:
    """A detached Prometheus recorded in ``workdir`` (found again by :meth:`find`)."""

    port: int
    workdir: Path
    record: ProcessRecord | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.record.pid if self.record else None

    def alive(self) -> bool:
        return self.record is not None and is_alive(self.record)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as answer:  # noqa: S310 - loopback
                return bool(answer.status == 200)
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        if self.record is not None:
            stop_all([self.record], timeout=timeout)
            self.record = None
        (self.workdir / "prometheus.pid").unlink(missing_ok=True)

    @classmethod
    def find(cls, workdir: Path) -> PrometheusProcess | None:
        record = read_record(workdir / "prometheus.pid")
        try:
            port = int((workdir / "port").read_text())
        except (OSError, ValueError):
            return None
        if record is None or not is_alive(record):
            return None
        return cls(port, workdir, record)


def start_prometheus(workdir: Path, scrape_targets: Sequence[str], scrape_interval: str = "1s", *,
                     die_with_parent: bool = True, timeout: float = 60.0) -> PrometheusProcess:
    """Start Prometheus detached on a free loopback port scraping ``scrape_targets``; wait until ready."""
    binary = prometheus_binary()
    config = write_config(workdir, scrape_targets, scrape_interval)

    def start(port: int) -> PrometheusProcess:
        server = PrometheusProcess(port, workdir)
        log = workdir / "prometheus.log"
        server.record = start_detached("prometheus", prometheus_argv(binary, workdir, config, port), log,
                                       workdir / "prometheus.pid", die_with_parent=die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and server.alive() and not server.ready():
            time.sleep(0.2)
        if server.ready():
            (workdir / "port").write_text(str(port))
            return server
        tail = log_tail(log)
        server.stop()
        if port_taken(tail):
            raise PortTaken(f"prometheus: port {port} taken")
        raise PrometheusError(f"prometheus did not become ready; log {log}:\n{tail}")

    return start_with_free_port(start)
