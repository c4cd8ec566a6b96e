"""Running docsort's processes on one machine: start in order, restart what dies, end everything together.

Each service runs in its own process group (Celery's pool children included). A watchdog process, which
holds the read end of a pipe from the supervisor, kills every group the supervisor started when that
pipe closes: however the supervisor ends (Ctrl-C, SIGTERM, SIGKILL, a crash), nothing it started
outlives it. A service that dies is restarted with exponential back-off (logged, and shown in
`data_dir/services.json`, which /readyz and /v1/stats read).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from core.errors import DocsortError

log = logging.getLogger("docsort.services")
BACKOFF_MAX_S = 60.0
STABLE_AFTER_S = 60.0  # a service up this long has its back-off reset


class StartError(DocsortError):
    """A process did not come up, or cannot (its port is taken)."""


@dataclass
class Service:
    """A process docsort runs, how to tell it is ready, what it listens on, and whether to restart it."""

    name: str
    argv: list[str]
    ready: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 120.0
    ports: list[tuple[str, int]] = field(default_factory=list)
    restart: bool = True
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    next_start: float | None = None  # when a dead service is due to start again
    last_exit: int | None = None


def port_taken(host: str, port: int) -> bool:
    """Whether something already listens on (or holds) host:port."""
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def _watchdog() -> None:
    """The watchdog's loop: read process groups from stdin; at end of input, kill them all."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is for the supervisor, which stops cleanly
    groups: set[int] = set()
    for line in sys.stdin:
        text = line.strip()
        if text.startswith("-"):
            groups.discard(int(text[1:]))
        elif text:
            groups.add(int(text))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for group in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, sig)
        if sig == signal.SIGTERM and groups:
            time.sleep(5)


class Supervisor:
    """Starts services in order, restarts those that die, and stops them all (newest first)."""

    def __init__(self, log_dir: Path, status_file: Path | None = None) -> None:
        self.log_dir = log_dir
        self.status_file = status_file
        self.services: list[Service] = []
        self._watchdog: subprocess.Popen[bytes] | None = None

    def _tell_watchdog(self, line: str) -> None:
        if self._watchdog is None:
            self._watchdog = subprocess.Popen(
                [sys.executable, "-c", "from docsort.supervisor import _watchdog; _watchdog()"],
                stdin=subprocess.PIPE,
                start_new_session=True,  # not in the terminal's group: it must outlive a Ctrl-C storm
            )
        stdin: IO[bytes] | None = self._watchdog.stdin
        if stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                stdin.write(f"{line}\n".encode())
                stdin.flush()

    def check_ports(self, services: list[Service]) -> None:
        """StartError naming every port a service needs that something else holds."""
        taken = [
            f"{host}:{port} ({service.name})"
            for service in services
            for host, port in service.ports
            if port_taken(host, port)
        ]
        if taken:
            raise StartError(
                f"port(s) already in use: {', '.join(taken)}; is docsort (or something else) running? "
                "Stop it, or choose other ports (DOCSORT_API__PORT, DOCSORT_FLOWER__PORT)"
            )

    def _spawn(self, service: Service) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / f"{service.name}.log").open("ab") as out:
            service.process = subprocess.Popen(
                service.argv,
                env={**os.environ, **service.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: its children (a pool) end with it
            )
        service.started_at = time.monotonic()
        service.next_start = None
        self._tell_watchdog(str(service.process.pid))

    def start(self, service: Service) -> None:
        """Start service and wait until it answers."""
        self._spawn(service)
        self.services.append(service)
        assert service.process is not None
        deadline = time.monotonic() + service.timeout_s
        while time.monotonic() < deadline:
            if service.process.poll() is not None:
                raise StartError(
                    f"{service.name} exited with {service.process.returncode}; "
                    f"see {self.log_dir / (service.name + '.log')}"
                )
            if service.ready():
                log.info("%s is up", service.name)
                self.write_status()
                return
            time.sleep(0.25)
        raise StartError(f"{service.name} not ready after {service.timeout_s:.0f}s")

    def watch(self) -> None:
        """Restart services that died (with back-off); call it every fraction of a second."""
        now = time.monotonic()
        changed = False
        for service in self.services:
            process = service.process
            if process is None or not service.restart:
                continue
            if service.next_start is None and process.poll() is not None:
                self._reap(service)
                uptime = now - service.started_at
                delay = (
                    1.0 if uptime > STABLE_AFTER_S else min(BACKOFF_MAX_S, 2.0 ** min(service.restarts, 6))
                )
                service.next_start = now + delay
                service.last_exit = process.returncode
                service.restarts += 1
                log.warning(
                    "%s exited with %s after %.0fs; restarting in %.0fs (restart %d)",
                    service.name,
                    process.returncode,
                    uptime,
                    delay,
                    service.restarts,
                )
                changed = True
            elif service.next_start is not None and now >= service.next_start:
                self._spawn(service)
                log.info("%s restarted", service.name)
                changed = True
        if changed:
            self.write_status()

    def _reap(self, service: Service) -> None:
        """Kill what is left of a dead service's group (a pool whose master died) and forget the group."""
        assert service.process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(service.process.pid, signal.SIGKILL)
        self._tell_watchdog(f"-{service.process.pid}")

    def status(self) -> dict[str, Any]:
        """Each service's state, pid, restarts and last exit code."""
        out: dict[str, Any] = {}
        for service in self.services:
            running = service.process is not None and service.process.poll() is None
            out[service.name] = {
                "state": "up" if running and service.next_start is None else "restarting",
                "pid": service.process.pid if service.process else None,
                "restarts": service.restarts,
                "last_exit": service.last_exit,
            }
        return out

    def write_status(self) -> None:
        """Write status() to the status file (atomically), if there is one."""
        if self.status_file is None:
            return
        self.status_file.parent.mkdir(parents=True, exist_ok=True)
        partial = self.status_file.with_suffix(".partial")
        partial.write_text(json.dumps({"supervisor_pid": os.getpid(), "services": self.status()}))
        os.replace(partial, self.status_file)

    def stop(self) -> None:
        """SIGTERM every service group (newest first), then SIGKILL what is left after a grace period."""
        for service in reversed(self.services):
            if service.process and service.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(service.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for service in reversed(self.services):
            if service.process is None:
                continue
            with contextlib.suppress(subprocess.TimeoutExpired):
                service.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            # The group may outlive its leader (pool children): end it either way.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(service.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                service.process.wait(timeout=5)
        self.services.clear()
        if self._watchdog is not None and self._watchdog.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self._watchdog.stdin.close()  # nothing left for it to kill; it exits
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._watchdog.wait(timeout=10)
            self._watchdog = None
        if self.status_file is not None:
            self.status_file.unlink(missing_ok=True)

    def check_alive(self) -> None:
        """Raise if any service that is not restarted died."""
        for service in self.services:
            if not service.restart and service.process and service.process.poll() is not None:
                raise StartError(f"{service.name} exited with {service.process.returncode}")
