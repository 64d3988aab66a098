"""kwokctl with the binary runtime, pointed at the binaries e2e/build.sh cached.

Everything kwokctl writes (PKI, etcd data, logs, PID files, its component links) lives in the
session's run directory through KWOK_WORKDIR, so sessions and `kwokctl` users never share state, and
every component path names the run directory (which is how stray processes are found and ended).
Every component gets a local binary, so kwokctl never tries to download one; no container runtime is
involved.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.ports import LOOPBACK

# kwokctl flag -> cached binary. kubectl has no flag; it is passed as KWOK_KUBECTL_BINARY.
BINARY_FLAGS = {
    "--kube-apiserver-binary": "kube-apiserver",
    "--kube-controller-manager-binary": "kube-controller-manager",
    "--kube-scheduler-binary": "kube-scheduler",
    "--etcd-binary": "etcd",
    "--kwok-controller-binary": "kwok",
}
REQUIRED_BINARIES = (*BINARY_FLAGS.values(), "kubectl", "kwokctl", "helm")
CREATE_TIMEOUT_SECONDS = 300.0
DELETE_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class KwokPorts:
    kube_apiserver: int
    etcd: int
    etcd_peer: int
    kwok_controller: int
    kube_controller_manager: int
    kube_scheduler: int


def missing_binaries(bin_dir: Path) -> list[str]:
    return [name for name in REQUIRED_BINARIES if not os.access(bin_dir / name, os.X_OK)]


def workdir(run_dir: Path) -> Path:
    return run_dir / "kwok"


def cluster_dir(run_dir: Path, name: str) -> Path:
    return workdir(run_dir) / "clusters" / name


def _env(run_dir: Path, bin_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "KWOK_WORKDIR": str(workdir(run_dir)),
        "KWOK_KUBECTL_BINARY": str(bin_dir / "kubectl"),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def _write_config(run_dir: Path, ports: KwokPorts) -> Path:
    # bindAddress has no command-line flag; its default (0.0.0.0) would expose etcd and the API
    # server on every interface.
    config = {
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokctlConfiguration",
        "options": {"bindAddress": LOOPBACK, "etcdPeerPort": ports.etcd_peer},
    }
    path = run_dir / "kwokctl.yaml"
    path.write_text(json.dumps(config, indent=2))
    return path


def _service_range() -> list[str]:
    """THRIFTY_E2E_SERVICE_CIDR widens the Service IP range (kube-apiserver's default /24 holds
    254 ClusterIPs): the control-loop bench runs 1,000 ModelServices, each with a Service."""
    cidr = os.environ.get("THRIFTY_E2E_SERVICE_CIDR")
    return [f"--extra-args=kube-apiserver=service-cluster-ip-range={cidr}"] if cidr else []


MANAGED_ANNOTATION = "kwok.x-k8s.io/node"
"""KWOK keeps a node Ready (heartbeats, its pods' status) only while it carries this annotation
(= "fake"): a test removes it to make a node stop reporting, as a real node that lost power."""


def _managed_nodes() -> list[str]:
    """kwokctl starts the KWOK controller with --manage-all-nodes=true; these come later on its
    command line and win, so a node without the annotation is left alone (kwok docs: "Manage
    Nodes and Pods")."""
    return [
        "--extra-args=kwok-controller=manage-all-nodes=false",
        f"--extra-args=kwok-controller=manage-nodes-with-annotation-selector={MANAGED_ANNOTATION}=fake",
    ]


def _no_leader_election() -> list[str]:
    """One controller-manager and one scheduler need no election, and with it each exits for good
    ("leaderelection lost") once the API server has not answered a lease renewal for 10 s: a
    restarted API server or two real vLLM engines starving a 2-core machine were enough, and every
    later test then waited for ReplicaSets, namespace deletion and scheduling that never came."""
    return [
        f"--extra-args={component}=leader-elect=false"
        for component in ("kube-controller-manager", "kube-scheduler")
    ]


def create(name: str, run_dir: Path, bin_dir: Path, ports: KwokPorts, kubeconfig: Path) -> None:
    """Create and start the cluster; raise RuntimeError with kwokctl's output on failure."""
    config = _write_config(run_dir, ports)
    (run_dir / "ports.json").write_text(json.dumps(asdict(ports)))
    cmd = [
        str(bin_dir / "kwokctl"),
        "create",
        "cluster",
        f"--name={name}",
        f"--config={config}",
        f"--kubeconfig={kubeconfig}",
        "--runtime=binary",
        "--kube-authorization=true",
        "--kube-admission=true",
        "--quiet-pull=true",
        f"--kube-apiserver-port={ports.kube_apiserver}",
        f"--etcd-port={ports.etcd}",
        f"--controller-port={ports.kwok_controller}",
        f"--kube-controller-manager-port={ports.kube_controller_manager}",
        f"--kube-scheduler-port={ports.kube_scheduler}",
        "--wait=2m",
        *(f"{flag}={bin_dir / binary}" for flag, binary in BINARY_FLAGS.items()),
        *_service_range(),
        *_managed_nodes(),
        *_no_leader_election(),
    ]
    log_path = run_dir / "kwokctl-create.log"
    with log_path.open("w") as log:
        result = subprocess.run(
            cmd,
            env=_env(run_dir, bin_dir),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=CREATE_TIMEOUT_SECONDS,
            check=False,
        )
    if result.returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(
            f"kwokctl create cluster failed (exit {result.returncode}); component logs in "
            f"{cluster_dir(run_dir, name) / 'logs'}:\n{tail}"
        )


def delete(name: str, run_dir: Path, bin_dir: Path, kubeconfig: Path) -> str | None:
    """`kwokctl delete cluster`; return an error text instead of raising (stop must go on)."""
    if not cluster_dir(run_dir, name).exists():
        return None
    try:
        result = subprocess.run(
            [
                str(bin_dir / "kwokctl"),
                "delete",
                "cluster",
                f"--name={name}",
                f"--kubeconfig={kubeconfig}",
            ],
            env=_env(run_dir, bin_dir),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=DELETE_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"kwokctl delete cluster {name}: {error}"
    if result.returncode != 0:
        return f"kwokctl delete cluster {name} exited {result.returncode}: {result.stderr[-2000:]}"
    return None
