"""Detached long-running processes with pid files that survive the Python process.

`paved dev up` returns while etcd and the Kubernetes components keep running, and a later
`paved dev down` (another Python process) stops them. Each process therefore runs in its own
session / process group (Ctrl-C in the shell does not reach it, and stopping the group also
stops anything it spawned) and is recorded in a pid file together with its start time, so a
recycled pid is never mistaken for ours and never signalled.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

__all__ = [
    "PortTaken",
    "ProcessRecord",
    "free_port",
    "is_alive",
    "log_tail",
    "port_in_use",
    "read_record",
    "start_detached",
    "start_with_free_port",
    "stop_all",
]

# Children started by this interpreter, so their exit status can be collected (no zombies).
_children: dict[int, subprocess.Popen[bytes]] = {}

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ProcessRecord:
    """What a pid file holds: enough to find and safely signal the process later."""

    name: str
    pid: int
    start_time: str | None  # /proc/<pid>/stat starttime; None where /proc does not exist
    log: str

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(asdict(self)))
        os.replace(tmp, path)


def read_record(path: Path) -> ProcessRecord | None:
    """The record in ``path``, or None when there is no (readable) pid file."""
    try:
        return ProcessRecord(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, starttime) from /proc/<pid>/stat, or None if the process does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name may contain spaces
    return fields[0], fields[19]


def _start_time(pid: int) -> str | None:
    stat = _proc_stat(pid)
    return stat[1] if stat else None


def is_alive(record: ProcessRecord) -> bool:
    """True if the recorded process still runs (and is the same process, not a reused pid)."""
    child = _children.get(record.pid)
    if child is not None and child.poll() is not None:
        return False
    if Path("/proc").is_dir():
        stat = _proc_stat(record.pid)
        if stat is None or stat[0] == "Z":
            return False
        return record.start_time is None or stat[1] == record.start_time
    try:
        os.kill(record.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pdeathsig_setter() -> Callable[[], None] | None:
    """A function for ``preexec_fn`` that makes Linux SIGKILL the child when we die.

    SIGKILL, not SIGTERM: all components would get the signal at once, and an API server
    whose etcd is already gone hangs in its graceful shutdown. Only throw-away clusters ask
    for this, so nothing of value is lost.
    libc is resolved here, in the parent: between fork and exec the child may only do
    async-signal-safe work, so the pre-exec function itself is a single prctl() call.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def set_pdeathsig() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return set_pdeathsig


def start_detached(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    pid_path: Path,
    env: Mapping[str, str] | None = None,
    die_with_parent: bool = False,
) -> ProcessRecord:
    """Start ``argv`` in a new session with output appended to ``log_path``; write its pid file.

    ``die_with_parent`` is for throw-away processes owned by a test session: if the session
    is killed without running its teardown, the kernel SIGKILLs them (Linux) instead of
    leaking them.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        log_file.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {name}\n".encode())
        log_file.flush()
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=dict(env) if env is not None else None,
            preexec_fn=_pdeathsig_setter() if die_with_parent else None,
        )
    _children[popen.pid] = popen
    record = ProcessRecord(
        name=name, pid=popen.pid, start_time=_start_time(popen.pid), log=str(log_path)
    )
    record.write(pid_path)
    return record


def _signal_group(record: ProcessRecord, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(record.pid, signum)


def _wait_gone(records: Sequence[ProcessRecord], timeout: float) -> list[ProcessRecord]:
    deadline = time.monotonic() + timeout
    remaining = [r for r in records if is_alive(r)]
    while remaining and time.monotonic() < deadline:
        time.sleep(0.05)
        remaining = [r for r in remaining if is_alive(r)]
    return remaining


def stop_all(records: Sequence[ProcessRecord], timeout: float = 10.0) -> None:
    """SIGTERM each process group, wait up to ``timeout``, then SIGKILL what is left."""
    alive = [r for r in records if is_alive(r)]
    for record in alive:
        _signal_group(record, signal.SIGTERM)
    for record in _wait_gone(alive, timeout):
        _signal_group(record, signal.SIGKILL)
    _wait_gone(alive, 5.0)
    for record in records:
        child = _children.pop(record.pid, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=1)


def log_tail(path: Path | str, lines: int = 25) -> str:
    """The last ``lines`` lines of a log file, for error messages."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True if something already listens on ``host:port`` (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = "127.0.0.1", avoid: Callable[[int], bool] = lambda _: False) -> int:
    """A port the kernel considers free right now on ``host`` (not in ``avoid``)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if not avoid(port):
            return port


class PortTaken(RuntimeError):
    """A server could not bind the port chosen for it: another process took it in between."""


def port_taken(log_text: str) -> bool:
    """Whether a server's log says its listening address was taken (the Go and Python wording)."""
    return "address already in use" in log_text.lower()


def start_with_free_port(start: Callable[[int], T], *, attempts: int = 3) -> T:
    """Start a server on a free loopback port and return it once it serves.

    `start(port)` starts the server on `port` and waits for it. Between choosing a free port and
    the server binding it, another process may take the port; `start` then stops its server and
    raises PortTaken (see `port_taken`), and the server is started again on another port, up to
    `attempts` times in all. Any other failure of `start` is raised at once.
    """
    for attempt in range(1, attempts + 1):
        try:
            return start(free_port())
        except PortTaken:
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")

