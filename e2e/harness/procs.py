"""Ending exactly the processes a session started, by PID.

kwokctl starts the control plane as detached processes and records their PIDs; `kwokctl delete
cluster` normally stops them. When it cannot (a start that failed half way, a killed test run), the
session's processes are still recognisable: every one of them has the session's unique run directory
on its command line. Nothing here matches processes by program name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def pids_mentioning(marker: str) -> list[int]:
    """PIDs of live processes whose command line contains `marker` (this process excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if (
            entry.name.isdigit()
            and int(entry.name) != os.getpid()
            and marker in cmdline(int(entry.name))
        ):
            found.append(int(entry.name))
    return found


def pids_from_files(pid_dir: Path) -> list[int]:
    """PIDs recorded in `*.pid` files (kwokctl's binary runtime writes one per component)."""
    pids = []
    for pid_file in sorted(pid_dir.glob("*.pid")) if pid_dir.is_dir() else []:
        with contextlib.suppress(ValueError, OSError):
            pids.append(int(pid_file.read_text().strip()))
    return pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie has exited; it only waits to be reaped by its parent.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def terminate(pids: list[int], grace_seconds: float = 10.0) -> list[int]:
    """SIGTERM `pids`, SIGKILL what still lives after `grace_seconds`; return the ones signalled."""
    live = [pid for pid in pids if alive(pid)]
    for pid in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline and any(alive(pid) for pid in live):
        time.sleep(0.1)
    for pid in live:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for pid in live:
        # Reap our own children (Prometheus) so they do not linger as zombies.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    return live


def _listening_sockets() -> dict[str, str]:
    """Socket inode -> "address:port" of every listening TCP socket in this network namespace."""
    listening = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A":  # TCP_LISTEN
                    listening[inode] = _decode_address(local)
    return listening


def _decode_address(hex_address: str) -> str:
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        address = ".".join(str(octet) for octet in reversed(raw))
    else:  # IPv6: four 32-bit words, each little-endian
        words = [raw[i : i + 4][::-1].hex() for i in range(0, 16, 4)]
        address = ":".join("".join(words)[i : i + 4] for i in range(0, 32, 4))
    return f"{address}:{int(port, 16)}"


def listening_addresses(pids: list[int]) -> dict[int, list[str]]:
    """The TCP addresses each of `pids` listens on (from /proc, no external tools)."""
    sockets = _listening_sockets()
    result: dict[int, list[str]] = {}
    for pid in pids:
        found = []
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inode = target[len("socket:[") : -1]
                        if inode in sockets:
                            found.append(sockets[inode])
        result[pid] = sorted(found)
    return result
