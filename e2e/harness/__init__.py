"""Local test cluster harness: control plane built by e2e/build.sh, KWOK GPU nodes, Prometheus.

It exists so that every e2e test talks to a real kube-apiserver, kube-scheduler,
kube-controller-manager and Prometheus on 127.0.0.1 without Docker or GPUs, and so that several test
sessions on one machine never share ports or processes. `start_local` brings a session up,
`Session.stop` always ends every process it started; `connect_existing` uses a cluster someone else
runs (kind, k3d, a `make cluster-up` cluster) instead.
"""

from harness.cluster import Cluster, KubectlError
from harness.session import HarnessError, Session, connect_existing, start_local

__all__ = [
    "Cluster",
    "HarnessError",
    "KubectlError",
    "Session",
    "connect_existing",
    "start_local",
]
