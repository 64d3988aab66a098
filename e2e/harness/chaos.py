"""Faults for chaos tests: kill a component of the local cluster with SIGKILL and start it again.

The kube-apiserver of a local session is one of kwokctl's detached processes; its PID file, command
line, working directory and environment say everything needed to start the same server again (same
port, certificates and etcd, so clients reconnect as after a crash). Prometheus is the harness's
own process (`harness.prometheus.start`); started again on the same port and run directory, it
keeps its data, as a restarted pod with a volume does. Only processes of this session are touched,
found by PID file and checked by command line (see `harness.procs`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from harness import procs
from harness import prometheus as prometheus_process
from harness.cluster import Cluster, wait_until
from harness.kwok import workdir

KILL_TIMEOUT_SECONDS = 10.0
READY_TIMEOUT_SECONDS = 90.0


class ChaosUnsupported(RuntimeError):
    """The cluster was not started by this harness (THRIFTY_E2E_KUBECONFIG): nothing to kill."""


@dataclass(frozen=True)
class Component:
    """A control-plane process as kwokctl started it."""

    name: str
    pid_file: Path
    argv: list[str]
    cwd: Path
    env: dict[str, str]
    log_path: Path


def _cluster_dir(cluster: Cluster) -> Path:
    if not cluster.local:
        raise ChaosUnsupported("only a cluster the harness started can be killed and restarted")
    clusters = sorted((workdir(cluster.kubeconfig.parent) / "clusters").glob("*"))
    if len(clusters) != 1:
        raise ChaosUnsupported(f"expected one kwok cluster beside {cluster.kubeconfig}")
    return clusters[0]


def component(cluster: Cluster, name: str) -> Component:
    """The running `name` (kube-apiserver, etcd, kube-scheduler...) of this session's cluster."""
    directory = _cluster_dir(cluster)
    pid_file = directory / "pids" / f"{name}.pid"
    pid = int(pid_file.read_text().strip())
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    if not argv or str(directory) not in argv[0]:
        raise ChaosUnsupported(f"PID {pid} in {pid_file} is not this cluster's {name}")
    raw_env = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
    env = dict(item.split("=", 1) for item in raw_env if "=" in item)
    return Component(
        name=name,
        pid_file=pid_file,
        argv=argv,
        cwd=Path(os.readlink(f"/proc/{pid}/cwd")),
        env=env,
        log_path=directory / "logs" / f"{name}.log",
    )


def kill(target: Component) -> None:
    """SIGKILL: no graceful shutdown, as a crashed process or a lost node."""
    pid = int(target.pid_file.read_text().strip())
    if str(target.cwd) not in procs.cmdline(pid):
        raise ChaosUnsupported(f"PID {pid} is no longer {target.name}")
    os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: None if procs.alive(pid) else True,
        timeout_seconds=KILL_TIMEOUT_SECONDS,
        what=f"{target.name} (PID {pid}) gone after SIGKILL",
        interval_seconds=0.05,
    )


def start(target: Component) -> int:
    """Starts `target` again as it was started (detached, appending to its log)."""
    with target.log_path.open("ab") as log:
        process = subprocess.Popen(
            target.argv,
            cwd=target.cwd,
            env=target.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    target.pid_file.write_text(str(process.pid))  # so `Session.stop` ends the new one
    return process.pid


def stall(target: Component, seconds: float) -> None:
    """SIGSTOP for `seconds`, then SIGCONT: a process that holds its connections but answers
    nothing, as a server starved of CPU or paused by the kernel."""
    pid = int(target.pid_file.read_text().strip())
    if str(target.cwd) not in procs.cmdline(pid):
        raise ChaosUnsupported(f"PID {pid} is no longer {target.name}")
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)


CONTROL_PLANE = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok-controller",
)


def dead_components(cluster: Cluster) -> list[str]:
    """The control-plane components of this session whose recorded process has ended."""
    pids = _cluster_dir(cluster) / "pids"
    return [
        name
        for name in CONTROL_PLANE
        if not procs.alive(int((pids / f"{name}.pid").read_text().strip()))
    ]


def api_ready(cluster: Cluster) -> bool | None:
    found = cluster.kubectl("get", "--raw", "/readyz", check=False, timeout=10, attempts=1)
    return True if found.returncode == 0 and found.stdout.strip() == "ok" else None


def restart_api_server(cluster: Cluster, down_seconds: float = 0.0) -> float:
    """Kills the kube-apiserver, keeps it down `down_seconds`, starts it again and waits until it
    is ready; returns how long it was unreachable."""
    target = component(cluster, "kube-apiserver")
    killed = time.monotonic()
    kill(target)
    time.sleep(down_seconds)
    start(target)
    wait_until(
        lambda: api_ready(cluster),
        timeout_seconds=READY_TIMEOUT_SECONDS,
        what="kube-apiserver ready after restart",
    )
    return time.monotonic() - killed


def kill_prometheus(process: prometheus_process.PrometheusProcess) -> None:
    """SIGKILL a Prometheus this harness started (its child: reaped here)."""
    if procs.alive(process.pid):
        os.kill(process.pid, signal.SIGKILL)

    def reaped() -> bool | None:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(process.pid, os.WNOHANG)  # our child: a zombie until reaped
        return None if procs.alive(process.pid) else True

    wait_until(
        reaped,
        timeout_seconds=KILL_TIMEOUT_SECONDS,
        what=f"prometheus (PID {process.pid}) gone after SIGKILL",
        interval_seconds=0.05,
    )


def restart_prometheus(
    process: prometheus_process.PrometheusProcess, run_dir: Path
) -> prometheus_process.PrometheusProcess:
    """Starts a killed Prometheus again on its port and data (`run_dir` as given to `start`)."""
    port = int(process.url.rsplit(":", 1)[1])
    return prometheus_process.start(run_dir, port)
