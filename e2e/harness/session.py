"""One test session's cluster and Prometheus: start them, describe them, always stop them.

A local session owns a run directory (a temporary one for pytest, a fixed one for `make
cluster-up`) holding the kubeconfig, kwokctl's work directory, Prometheus's data and a state file,
so `stop` can find and end every process later, even from another process.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness import kwok, procs, prometheus
from harness.cluster import Cluster, wait_until
from harness.ports import PortPicker, start_lock

E2E_DIR = Path(__file__).resolve().parent.parent
NODES_DIR = E2E_DIR / "nodes"
VERSIONS_FILE = E2E_DIR / "versions.env"
STATE_FILE = "state.json"
NODES_READY_TIMEOUT_SECONDS = 120.0


class HarnessError(RuntimeError):
    """A failed start, naming the step and how to retry."""


def cache_dir() -> Path:
    return Path(os.environ.get("THRIFTY_CACHE", Path.home() / ".cache" / "thrifty"))


def default_bin_dir() -> Path:
    return cache_dir() / "bin"


def pinned_versions() -> dict[str, str]:
    """The versions in e2e/versions.env (KUBERNETES_VERSION, ETCD_VERSION, ...)."""
    versions = {}
    for line in VERSIONS_FILE.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            versions[key.strip()] = value.strip()
    return versions


@dataclass
class Session:
    """A running cluster + Prometheus and what is needed to stop them."""

    cluster: Cluster
    name: str
    run_dir: Path | None
    prometheus_pid: int | None
    keep_run_dir: bool = False

    def save(self) -> None:
        if self.run_dir is None:
            return
        state = {
            "name": self.name,
            "kubeconfig": str(self.cluster.kubeconfig),
            "bin_dir": str(self.cluster.bin_dir),
            "kubectl_path": str(self.cluster.kubectl_path),
            "prometheus_url": self.cluster.prometheus_url,
            "scrape_sd_dir": str(self.cluster.scrape_sd_dir or ""),
            "local": self.cluster.local,
            "prometheus_pid": self.prometheus_pid,
        }
        (self.run_dir / STATE_FILE).write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, run_dir: Path) -> Session:
        state = json.loads((run_dir / STATE_FILE).read_text())
        cluster = Cluster(
            kubeconfig=Path(state["kubeconfig"]),
            bin_dir=Path(state["bin_dir"]),
            prometheus_url=state["prometheus_url"],
            kubectl_path=Path(state["kubectl_path"]),
            scrape_sd_dir=Path(state["scrape_sd_dir"]) if state["scrape_sd_dir"] else None,
            local=bool(state["local"]),
        )
        return cls(cluster, state["name"], run_dir, state["prometheus_pid"])

    def stop(self) -> list[str]:
        """End every process this session started; return problems met on the way (never raise)."""
        if self.run_dir is None:
            return []
        problems = []
        if self.cluster.local:
            error = kwok.delete(
                self.name, self.run_dir, self.cluster.bin_dir, self.cluster.kubeconfig
            )
            if error:
                problems.append(error)
        # Whatever kwokctl left behind, and Prometheus: every one of them names the run directory.
        marker = f"{self.run_dir}{os.sep}"
        recorded = procs.pids_from_files(kwok.cluster_dir(self.run_dir, self.name) / "pids")
        if self.prometheus_pid is not None:
            recorded.append(self.prometheus_pid)
        ours = [pid for pid in recorded if marker in procs.cmdline(pid)]
        procs.terminate(sorted(set(ours) | set(procs.pids_mentioning(marker))))
        leftover = procs.pids_mentioning(marker)
        if leftover:
            problems.append(f"processes still running after stop: {leftover}")
        if not self.keep_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        return problems


def _check_binaries(bin_dir: Path) -> None:
    missing = kwok.missing_binaries(bin_dir)
    if missing:
        raise HarnessError(
            f"step 'binaries': {', '.join(missing)} missing in {bin_dir}; build them with "
            f"`bash e2e/build.sh` (or `make bootstrap`), then retry"
        )


def _port_from_env(variable: str) -> int | None:
    raw = os.environ.get(variable)
    return int(raw) if raw else None


def start_local(
    *,
    name: str | None = None,
    run_dir: Path | None = None,
    kube_apiserver_port: int | None = None,
    prometheus_port: int | None = None,
    keep_run_dir: bool = False,
) -> Session:
    """Start a KWOK cluster with the fake GPU nodes and a Prometheus; stop everything on failure.

    Ports not given are picked free; explicit ones (arguments, else THRIFTY_E2E_APISERVER_PORT and
    THRIFTY_E2E_PROMETHEUS_PORT) are checked and reported when taken.
    """
    bin_dir = default_bin_dir()
    _check_binaries(bin_dir)
    prometheus.find_binary()
    name = name or f"thrifty-e2e-{os.getpid()}"
    if run_dir is None:
        run_dir = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    elif (run_dir / STATE_FILE).exists():
        raise HarnessError(f"a cluster is already recorded in {run_dir}; stop it first")
    run_dir.mkdir(parents=True, exist_ok=True)
    api_source = "argument" if kube_apiserver_port else "THRIFTY_E2E_APISERVER_PORT"
    prom_source = "argument" if prometheus_port else "THRIFTY_E2E_PROMETHEUS_PORT"
    kube_apiserver_port = kube_apiserver_port or _port_from_env("THRIFTY_E2E_APISERVER_PORT")
    prometheus_port = prometheus_port or _port_from_env("THRIFTY_E2E_PROMETHEUS_PORT")
    kubeconfig = run_dir / "kubeconfig"
    session = Session(
        cluster=Cluster(
            kubeconfig=kubeconfig,
            bin_dir=bin_dir,
            prometheus_url="",
            kubectl_path=bin_dir / "kubectl",
            scrape_sd_dir=None,
            local=True,
        ),
        name=name,
        run_dir=run_dir,
        prometheus_pid=None,
        keep_run_dir=keep_run_dir,
    )
    step = "ports"
    try:
        with start_lock(cache_dir() / "run" / "start.lock"):
            picker = PortPicker()
            ports = kwok.KwokPorts(
                kube_apiserver=picker.explicit(kube_apiserver_port, "kube-apiserver", api_source)
                if kube_apiserver_port
                else picker.free(),
                etcd=picker.free(),
                etcd_peer=picker.free(),
                kwok_controller=picker.free(),
                kube_controller_manager=picker.free(),
                kube_scheduler=picker.free(),
            )
            prom_port = (
                picker.explicit(prometheus_port, "prometheus", prom_source)
                if prometheus_port
                else picker.free()
            )
            step = "kwokctl create cluster"
            kwok.create(name, run_dir, bin_dir, ports, kubeconfig)
            step = "prometheus"
            prom = prometheus.start(run_dir, prom_port)
        session.prometheus_pid = prom.pid
        session.cluster = Cluster(
            kubeconfig=kubeconfig,
            bin_dir=bin_dir,
            prometheus_url=prom.url,
            kubectl_path=bin_dir / "kubectl",
            scrape_sd_dir=prom.sd_dir,
            local=True,
        )
        session.save()
        step = "fake GPU nodes"
        apply_fake_nodes(session.cluster)
        step = "default service account"
        _wait_default_service_account(session.cluster)
    except BaseException as error:
        _preserve_logs(run_dir, name)
        session.keep_run_dir = not isinstance(error, KeyboardInterrupt)
        problems = session.stop()
        if isinstance(error, KeyboardInterrupt):
            raise  # an interrupted run stops, it is not a failed start to report per test
        raise HarnessError(
            f"step '{step}' failed: {error}\n"
            f"Logs kept in {run_dir}. Everything started was stopped"
            f"{' (with problems: ' + '; '.join(problems) + ')' if problems else ''}; "
            f"fix the cause and retry."
        ) from error
    return session


def _preserve_logs(run_dir: Path, name: str) -> None:
    # kwokctl delete removes the cluster directory, logs included; keep them for the post-mortem.
    logs = kwok.cluster_dir(run_dir, name) / "logs"
    if logs.is_dir():
        shutil.copytree(logs, run_dir / "failed-start-logs", dirs_exist_ok=True)


LOOPBACK_POD_NETWORK = "10.0.0.0/8"
"""The fake nodes' pod CIDRs are inside it; the fleet mirror and the gateway are told it, and
use each pod IP's loopback twin (thrifty_runtime.podnet): the API server refuses loopback
addresses in EndpointSlices, so the pod CIDRs themselves cannot be in 127.0.0.0/8."""


def pod_cidrs(names: list[str], existing: dict[str, str], second_octet: int) -> dict[str, str]:
    """A /24 per node: KWOK gives pods IPs from their node's podCIDR, and the fleet mirror serves
    each pod's engine on its IP's loopback twin, so a pod's EndpointSlice address leads to it as
    in a real cluster. A node that has one keeps it (podCIDR is immutable); new nodes take
    10.<second_octet>.<n>.0/24, the octet drawn per cluster so that two clusters on one machine
    give their pods different twins."""
    cidrs = dict(existing)
    taken = set(existing.values())
    index = 0
    for name in names:
        if name in cidrs:
            continue
        while f"10.{second_octet}.{index}.0/24" in taken:
            index += 1
        cidrs[name] = f"10.{second_octet}.{index}.0/24"
        taken.add(cidrs[name])
    return cidrs


def apply_fake_nodes(cluster: Cluster) -> None:
    """Create the KWOK GPU nodes of e2e/nodes/ with their pod CIDRs (`pod_cidrs`) and wait
    until KWOK reports them Ready."""
    paths = sorted(NODES_DIR.glob("*.yaml"))
    names = [path.stem for path in paths]
    listed = cluster.kubectl_json("get", "nodes")
    existing = {
        node["metadata"]["name"]: node["spec"]["podCIDR"]
        for node in listed.get("items", [])
        if node.get("spec", {}).get("podCIDR")
    }
    cidrs = pod_cidrs(names, existing, random.SystemRandom().randint(2, 254))
    documents = []
    for path in paths:
        node = yaml.safe_load(path.read_text())
        node["spec"]["podCIDR"] = cidrs[path.stem]
        node["spec"]["podCIDRs"] = [cidrs[path.stem]]
        documents.append(node)
    cluster.apply(json.dumps({"apiVersion": "v1", "kind": "List", "items": documents}))
    cluster.kubectl(
        "wait",
        "--for=condition=Ready",
        f"--timeout={int(NODES_READY_TIMEOUT_SECONDS)}s",
        *(f"node/{node}" for node in names),
        timeout=NODES_READY_TIMEOUT_SECONDS + 30,
    )


def _wait_default_service_account(cluster: Cluster) -> None:
    # With admission on, pods need their namespace's `default` ServiceAccount, which the
    # controller-manager creates shortly after start; tests should not race it.
    def probe() -> bool | None:
        return (
            cluster.kubectl("get", "serviceaccount", "default", "-n", "default").returncode == 0
            or None
        )

    wait_until(probe, timeout_seconds=60, what="ServiceAccount default/default")


def connect_existing(kubeconfig: Path) -> Session:
    """Use a cluster someone else runs; start a local Prometheus unless one is named.

    THRIFTY_E2E_PROMETHEUS_URL names a running Prometheus (then THRIFTY_E2E_PROMETHEUS_SD_DIR may
    name the directory its file_sd watches). THRIFTY_E2E_APPLY_NODES=0 skips creating the fake
    nodes (they need a KWOK controller running in that cluster).
    """
    if not kubeconfig.is_file():
        raise HarnessError(f"THRIFTY_E2E_KUBECONFIG={kubeconfig} is not a file")
    bin_dir = default_bin_dir()
    found = shutil.which("kubectl")
    kubectl_path = (
        bin_dir / "kubectl" if (bin_dir / "kubectl").exists() else Path(found or "kubectl")
    )
    remote_url = os.environ.get("THRIFTY_E2E_PROMETHEUS_URL")
    run_dir: Path | None = None
    prometheus_pid: int | None = None
    if remote_url:
        sd = os.environ.get("THRIFTY_E2E_PROMETHEUS_SD_DIR")
        url, sd_dir = remote_url.rstrip("/"), Path(sd) if sd else None
    else:
        run_dir = Path(tempfile.mkdtemp(prefix=f"thrifty-e2e-prom-{os.getpid()}-"))
        with start_lock(cache_dir() / "run" / "start.lock"):
            picker = PortPicker()
            port = _port_from_env("THRIFTY_E2E_PROMETHEUS_PORT")
            chosen = (
                picker.explicit(port, "prometheus", "THRIFTY_E2E_PROMETHEUS_PORT")
                if port
                else picker.free()
            )
            prom = prometheus.start(run_dir, chosen)
        url, sd_dir, prometheus_pid = prom.url, prom.sd_dir, prom.pid
    cluster = Cluster(
        kubeconfig=kubeconfig,
        bin_dir=bin_dir,
        prometheus_url=url,
        kubectl_path=kubectl_path,
        scrape_sd_dir=sd_dir,
        local=False,
    )
    session = Session(cluster, f"existing-{os.getpid()}", run_dir, prometheus_pid)
    if os.environ.get("THRIFTY_E2E_APPLY_NODES", "1") != "0":
        try:
            apply_fake_nodes(cluster)
        except BaseException:
            session.stop()
            raise
    return session
