"""Port choice for concurrent test sessions on one machine.

kwokctl's own free-port search counts down from 32767 in every process, so two sessions starting at
once would pick the same ports. The harness picks every port itself, at random below Linux's
ephemeral range (so outgoing connections do not hold them), while holding a machine-wide file lock
until the processes listen. A port given explicitly is checked and reported when taken, never
silently replaced.
"""

from __future__ import annotations

import contextlib
import fcntl
import random
import socket
from collections.abc import Iterator
from pathlib import Path

LOOPBACK = "127.0.0.1"
_RANGE = (20000, 32000)


def free_port() -> int:
    """A port the kernel just handed out on 127.0.0.1, for one process a test starts: free now,
    as any other process may take it before that one binds (the session's own components use
    `PortPicker` under `start_lock`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


class PortInUseError(RuntimeError):
    """An explicitly requested port is already taken."""


def port_is_free(port: int) -> bool:
    """True when nothing listens on `port` on 127.0.0.1 or on the wildcard address."""
    for host in (LOOPBACK, ""):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                return False
    return True


class PortPicker:
    """Hands out distinct free ports for one session (call only under `start_lock`)."""

    def __init__(self) -> None:
        self._taken: set[int] = set()
        self._random = random.SystemRandom()

    def explicit(self, port: int, component: str, source: str) -> int:
        if port in self._taken or not port_is_free(port):
            raise PortInUseError(
                f"port {port} for {component} (from {source}) is already in use on {LOOPBACK}; "
                f"stop whatever listens there or choose another port"
            )
        self._taken.add(port)
        return port

    def free(self) -> int:
        for _ in range(1000):
            port = self._random.randrange(*_RANGE)
            if port not in self._taken and port_is_free(port):
                self._taken.add(port)
                return port
        raise RuntimeError(f"no free port found in {_RANGE} on {LOOPBACK}")


@contextlib.contextmanager
def start_lock(lock_path: Path) -> Iterator[None]:
    """Serialise port choice and startup across every session on this machine."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
