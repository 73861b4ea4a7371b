"""A moto server (fake AWS: RDS, IAM, STS, Secrets Manager, SSM) on loopback, detached.

Used by `paved dev demo` (the seed DatabaseIntent goes through the real aws-rds provider
against it), by bench/ and by the test fixtures (tests/fixtures/aws.py). The operator is
pointed at it with :meth:`MotoServer.env` (``PAVED_AWS_ENDPOINT_URL`` plus fake credentials;
nothing can reach a real account). Its pid file and log live in the given folder, so another
process (`paved dev down`) can stop it.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paved.dev.processes import ProcessRecord, free_port, is_alive, log_tail, read_record, start_detached, stop_all

__all__ = ["FAKE_AWS_ENV", "MotoError", "MotoServer", "moto_installed", "start_moto"]

REGION = "us-east-1"
#: Credentials and region for anything that talks to moto (moto accepts any).
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}


class MotoError(RuntimeError):
    """moto is not installed or did not start; the message holds the log tail."""


def moto_installed() -> bool:
    return importlib.util.find_spec("moto.server") is not None and importlib.util.find_spec("flask") is not None


@dataclass
class MotoServer:
    port: int
    workdir: Path
    record: ProcessRecord | None = None
    region: str = REGION

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.record.pid if self.record else None

    @property
    def log_path(self) -> Path:
        return self.workdir / "moto.log"

    @property
    def pid_path(self) -> Path:
        return self.workdir / "moto.pid"

    def env(self) -> dict[str, str]:
        """Variables for a process (e.g. the operator) that must use this moto server."""
        return {
            **FAKE_AWS_ENV,
            "PAVED_AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }

    def client(self, service: str, **kwargs: Any) -> Any:
        """A boto3 client for ``service`` on this server, with explicit fake credentials."""
        import boto3

        kwargs.setdefault("region_name", self.region)
        return boto3.session.Session(
            aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        ).client(service, endpoint_url=self.endpoint_url, **kwargs)

    def reset(self) -> None:
        """Forget every resource in every service (moto's ``/moto-api/reset``)."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - loopback
            if resp.status != 200:
                raise MotoError(f"moto reset answered {resp.status}")

    def _moto_api(self, path: str, method: str = "POST") -> str:
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/{path}", method=method)
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - loopback
            return str(resp.read().decode())

    def start_recording(self) -> None:
        """Record every request moto receives from now on (moto's recorder), forgetting earlier ones."""
        self._moto_api("recorder/reset-recording")
        self._moto_api("recorder/start-recording")

    def stop_recording(self) -> None:
        self._moto_api("recorder/stop-recording")

    def recorded(self) -> list[dict[str, Any]]:
        """The requests recorded since start_recording: method, url, headers and body (text)."""
        entries = []
        for line in self._moto_api("recorder/download-recording", method="GET").splitlines():
            if not line.strip():
                continue
            entry = json.loads(line)
            body = entry.get("body") or ""
            if entry.get("body_encoded"):
                body = base64.b64decode(body).decode(errors="replace")
            entries.append({**entry, "body": body})
        return entries

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/data.json", timeout=2) as resp:  # noqa: S310
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def alive(self) -> bool:
        return self.record is not None and is_alive(self.record)

    def stop(self, timeout: float = 10.0) -> None:
        if self.record is not None:
            stop_all([self.record], timeout=timeout)
            self.record = None

    @classmethod
    def find(cls, workdir: Path) -> MotoServer | None:
        """The moto server a previous process started in ``workdir``, if it still runs."""
        try:
            port = int(json.loads((workdir / "moto.json").read_text())["port"])
        except (OSError, ValueError, KeyError):
            return None
        server = cls(port=port, workdir=workdir, record=read_record(workdir / "moto.pid"))
        return server if server.alive() else None


def start_moto(workdir: Path, *, die_with_parent: bool = True, timeout: float = 60.0) -> MotoServer:
    """Start ``python -m moto.server`` on 127.0.0.1:<free port> and wait until it serves."""
    if not moto_installed():
        raise MotoError(
            f"moto's server mode is not installed for {sys.executable}; run scripts/bootstrap "
            "(pip install -e '.[test]' -c constraints.txt installs moto[server])"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KUBECONFIG", "VAULT_", "BAO_"))}
    env.update(FAKE_AWS_ENV, PYTHONUNBUFFERED="1", MOTO_RECORDER_FILEPATH=str(workdir / "recording.jsonl"))
    for _attempt in range(3):
        port = free_port()
        server = MotoServer(port=port, workdir=workdir)
        server.record = start_detached(
            "moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            server.log_path, server.pid_path, env=env, die_with_parent=die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and server.alive() and not server.answers():
            time.sleep(0.2)
        if server.answers():
            (workdir / "moto.json").write_text(json.dumps({"port": port}))
            return server
        lost_port = "address already in use" in log_tail(server.log_path).lower()
        server.stop()
        if not lost_port:
            break
    raise MotoError(f"moto did not start; log {server.log_path}:\n{log_tail(server.log_path)}")
