"""Smoke tests that prove the local cluster is real: scheduler, controllers, RBAC, CRD validation,
the pinned version, and a Prometheus that scrapes targets added at runtime.

If one of these fails, every other e2e test's result is suspect, so they check the behaviours the
operator relies on rather than just that processes run.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import socket
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from harness import Cluster, HarnessError, kwok, procs, start_local
from harness import session as session_module
from harness.cluster import wait_until
from harness.session import default_bin_dir, pinned_versions

KWOK_TOLERATION = {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}


def _pods(cluster: Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    listing = cluster.kubectl_json("get", "pods", "-n", namespace, "-l", selector)
    items = listing["items"]
    assert isinstance(items, list)
    return items


def _running_and_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
    return bool(pod.get("status", {}).get("phase") == "Running" and ready)


def _failed_scheduling_messages(cluster: Cluster, namespace: str, pod: str) -> list[str]:
    events = cluster.kubectl_json(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        f"reason=FailedScheduling,involvedObject.name={pod}",
    )["items"]
    assert isinstance(events, list)
    return [str(event.get("message", "")) for event in events]


def test_gpu_deployment_fills_h100_pool_and_leaves_one_pending(
    cluster: Cluster, namespace: str
) -> None:
    # 5 replicas x 4 GPUs against the two on-demand H100 nodes (2 x 8 = 16 GPUs): four fit.
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "gpu-hog", "namespace": namespace},
        "spec": {
            "replicas": 5,
            "selector": {"matchLabels": {"app": "gpu-hog"}},
            "template": {
                "metadata": {"labels": {"app": "gpu-hog"}},
                "spec": {
                    "nodeSelector": {"thrifty.dev/pool": "h100-on-demand"},
                    "tolerations": [KWOK_TOLERATION],
                    "containers": [
                        {
                            "name": "engine",
                            "image": "vllm/vllm-openai:v0.11.0",
                            "resources": {"limits": {"nvidia.com/gpu": "4"}},
                        }
                    ],
                },
            },
        },
    }
    cluster.apply(json.dumps(deployment))

    def settled() -> tuple[list[dict[str, Any]], dict[str, Any], list[str]] | None:
        pods = _pods(cluster, namespace, "app=gpu-hog")
        running = [pod for pod in pods if _running_and_ready(pod)]
        pending = [pod for pod in pods if pod["status"].get("phase") == "Pending"]
        if len(pods) != 5 or len(running) != 4 or len(pending) != 1:
            return None
        messages = _failed_scheduling_messages(cluster, namespace, pending[0]["metadata"]["name"])
        if not messages:
            return None
        return running, pending[0], messages

    running, pending, messages = wait_until(
        settled, timeout_seconds=120, what="4 Running+Ready pods, 1 Pending with FailedScheduling"
    )
    nodes = sorted(pod["spec"]["nodeName"] for pod in running)
    assert nodes == ["kwok-h100-od-0", "kwok-h100-od-0", "kwok-h100-od-1", "kwok-h100-od-1"]
    assert not pending["spec"].get("nodeName")
    assert any("Insufficient nvidia.com/gpu" in message for message in messages), messages


def test_deleting_an_owner_deletes_its_dependents(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "configmap", "owner", "-n", namespace, "--from-literal=role=owner")
    owner_uid = cluster.kubectl_json("get", "configmap", "owner", "-n", namespace)["metadata"]
    assert isinstance(owner_uid, dict)
    dependent = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "dependent",
            "namespace": namespace,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner_uid["uid"]}
            ],
        },
        "data": {"role": "dependent"},
    }
    cluster.apply(json.dumps(dependent))
    cluster.kubectl("delete", "configmap", "owner", "-n", namespace, "--cascade=background")

    def dependent_gone() -> bool | None:
        result = cluster.kubectl("get", "configmap", "dependent", "-n", namespace, check=False)
        return True if "NotFound" in result.stderr else None

    wait_until(dependent_gone, timeout_seconds=60, what="the garbage collector to delete dependent")


def _token_request(cluster: Cluster, token: str, path: str) -> tuple[int, str]:
    config = yaml.safe_load(
        cluster.kubectl("config", "view", "--raw", "--minify", "--flatten").stdout
    )
    server = config["clusters"][0]["cluster"]
    context = ssl.create_default_context(
        cadata=base64.b64decode(server["certificate-authority-data"]).decode()
    )
    request = urllib.request.Request(
        server["server"] + path, headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_service_account_without_rights_is_forbidden(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    token = cluster.kubectl("create", "token", "nobody", "-n", namespace).stdout.strip()

    status, body = _token_request(cluster, token, f"/api/v1/namespaces/{namespace}/pods")

    assert status == 403, body
    # Authenticated as the service account (not 401) and denied by RBAC.
    assert f"system:serviceaccount:{namespace}:nobody" in body

    cluster.kubectl(
        "create", "role", "pod-reader", "-n", namespace, "--verb=list", "--resource=pods"
    )
    cluster.kubectl(
        "create",
        "rolebinding",
        "nobody-reads-pods",
        "-n",
        namespace,
        "--role=pod-reader",
        f"--serviceaccount={namespace}:nobody",
    )
    granted = wait_until(
        lambda: (
            _token_request(cluster, token, f"/api/v1/namespaces/{namespace}/pods")[0] == 200 or None
        ),
        timeout_seconds=30,
        what="the RoleBinding to take effect",
    )
    assert granted


CRD_GROUP = "smoke.e2e.thrifty.dev"


@pytest.fixture
def widget_crd(cluster: Cluster) -> Iterator[str]:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{CRD_GROUP}"},
        "spec": {
            "group": CRD_GROUP,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "required": ["spec"],
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["replicas"],
                                    "properties": {"replicas": {"type": "integer", "minimum": 1}},
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    cluster.apply(json.dumps(crd))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", f"crd/widgets.{CRD_GROUP}"
    )
    try:
        yield "widgets"
    finally:
        cluster.kubectl("delete", "crd", f"widgets.{CRD_GROUP}", "--wait=false", check=False)


def _widget(namespace: str, name: str, replicas: object) -> str:
    return json.dumps(
        {
            "apiVersion": f"{CRD_GROUP}/v1",
            "kind": "Widget",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": replicas},
        }
    )


def test_crd_schema_rejects_invalid_objects(
    cluster: Cluster, namespace: str, widget_crd: str
) -> None:
    def applies(manifest: str) -> bool | None:
        # Right after Established the discovery cache may lag: retry only "no matches for kind".
        result = cluster.kubectl("apply", "-f", "-", input=manifest, check=False)
        if "no matches for kind" in result.stderr or "could not find the requested resource" in (
            result.stderr
        ):
            return None
        return result.returncode == 0

    assert wait_until(
        lambda: applies(_widget(namespace, "good", 2)), timeout_seconds=30, what="valid"
    )

    rejected = cluster.kubectl(
        "apply", "-f", "-", input=_widget(namespace, "bad", "many"), check=False
    )
    assert rejected.returncode != 0
    assert "spec.replicas" in rejected.stderr and "Invalid value" in rejected.stderr, (
        rejected.stderr
    )

    too_small = cluster.kubectl(
        "apply", "-f", "-", input=_widget(namespace, "zero", 0), check=False
    )
    assert too_small.returncode != 0
    assert "should be greater than or equal to 1" in too_small.stderr, too_small.stderr

    names = cluster.kubectl("get", widget_crd, "-n", namespace, "-o", "name").stdout.split()
    assert names == [f"widget.{CRD_GROUP}/good"]


def test_api_server_reports_the_pinned_version(cluster: Cluster) -> None:
    if not cluster.local:
        pytest.skip("an existing cluster runs whatever version it runs")
    version = json.loads(cluster.kubectl("get", "--raw", "/version").stdout)
    assert version["gitVersion"] == pinned_versions()["KUBERNETES_VERSION"]
    client = json.loads(cluster.kubectl("version", "--client", "-o", "json").stdout)
    assert client["clientVersion"]["gitVersion"] == pinned_versions()["KUBERNETES_VERSION"]


def test_fake_gpu_nodes_advertise_gpus(cluster: Cluster) -> None:
    nodes = {
        node["metadata"]["name"]: node
        for node in cluster.kubectl_json("get", "nodes", "-l", "type=kwok")["items"]
    }
    expected = {
        "kwok-h100-od-0": "8",
        "kwok-h100-od-1": "8",
        "kwok-h100-spot-0": "8",
        "kwok-l4-0": "4",
    }
    assert {
        name: node["status"]["allocatable"]["nvidia.com/gpu"] for name, node in nodes.items()
    } == expected
    assert nodes["kwok-h100-od-0"]["metadata"]["labels"]["nvidia.com/gpu.product"] == (
        "NVIDIA-H100-80GB-HBM3"
    )


def _query(prometheus_url: str, promql: str) -> list[dict[str, Any]]:
    url = f"{prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    result = body["data"]["result"]
    assert isinstance(result, list)
    return result


def test_prometheus_scrapes_targets_added_at_runtime(cluster: Cluster) -> None:
    registry = CollectorRegistry()
    gauge = Gauge(
        "thrifty_e2e_smoke_value", "A value served to prove scraping works", registry=registry
    )
    gauge.set(42)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        port = server.server_address[1]
        cluster.add_scrape_targets("smoke", [f"127.0.0.1:{port}"], {"purpose": "smoke"})

        def scraped() -> list[dict[str, Any]] | None:
            result = _query(cluster.prometheus_url, 'thrifty_e2e_smoke_value{job="smoke"}')
            return result or None

        series = wait_until(scraped, timeout_seconds=60, what="Prometheus to scrape the new target")
        assert series[0]["metric"]["purpose"] == "smoke"
        assert float(series[0]["value"][1]) == 42.0
    finally:
        cluster.remove_scrape_targets("smoke")
        server.shutdown()
        thread.join(timeout=5)


def _skip_without_binaries() -> None:
    missing = kwok.missing_binaries(default_bin_dir())
    if missing:
        pytest.skip(f"local cluster binaries not built ({', '.join(missing)}): bash e2e/build.sh")


def test_a_port_given_explicitly_and_in_use_is_reported_not_replaced(tmp_path: Path) -> None:
    _skip_without_binaries()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run_dir = tmp_path / "run"
        with pytest.raises(HarnessError, match=f"port {port} for kube-apiserver .* already in use"):
            start_local(
                name=f"thrifty-e2e-port-{os.getpid()}", run_dir=run_dir, kube_apiserver_port=port
            )
    assert not (run_dir / "kwok").exists()


def test_a_failed_start_stops_every_process_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _skip_without_binaries()

    def fail_after_the_control_plane_started(cluster: Cluster) -> None:
        raise RuntimeError("injected failure after kwokctl and Prometheus started")

    monkeypatch.setattr(session_module, "apply_fake_nodes", fail_after_the_control_plane_started)
    run_dir = tmp_path / "run"
    with pytest.raises(HarnessError, match="step 'fake GPU nodes' failed: injected failure"):
        start_local(name=f"thrifty-e2e-broken-{os.getpid()}", run_dir=run_dir)
    assert procs.pids_mentioning(f"{run_dir}/") == []
    # The control plane did run (its logs were kept for the post-mortem) and is gone now.
    assert (run_dir / "failed-start-logs" / "kube-apiserver.log").is_file()


def test_every_process_of_the_session_listens_on_loopback_only(cluster: Cluster) -> None:
    if not cluster.local:
        pytest.skip("only the processes of a cluster the harness started are known")
    # The kubeconfig lives in the session's run directory, which every process it started names
    # (processes of other tests may name it too; only the harness's own programs are checked).
    harness_programs = {
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok-controller",
        "prometheus",
    }
    pids = procs.pids_mentioning(f"{cluster.kubeconfig.parent}/")
    names = {pid: (procs.cmdline(pid).split() or [""])[0].rsplit("/", 1)[-1] for pid in pids}
    by_program = {
        names[pid]: addresses
        for pid, addresses in procs.listening_addresses(pids).items()
        if names[pid] in harness_programs
    }
    assert set(by_program) == harness_programs
    for program, addresses in by_program.items():
        assert addresses, f"{program} listens nowhere?"
        assert all(address.startswith("127.0.0.1:") for address in addresses), (program, addresses)


class _HoldFirstConnection:
    """A loopback TCP relay to the API server that accepts its first connection and never answers
    it (an API server too starved to finish a TLS handshake), then relays every later one."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.accepted = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            self._open.append(client)
            if self.accepted > 1:
                server = socket.create_connection(self.upstream)
                self._open.append(server)
                threading.Thread(target=_pump, args=(client, server), daemon=True).start()
                threading.Thread(target=_pump, args=(server, client), daemon=True).start()

    def close(self) -> None:
        self._listener.close()
        for connection in self._open:
            connection.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    except OSError:
        pass


def test_a_kubectl_call_that_never_reached_the_api_server_is_sent_again(
    cluster: Cluster, tmp_path: Path
) -> None:
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    entry = config["clusters"][0]["cluster"]
    upstream = urllib.parse.urlsplit(entry["server"])
    if upstream.hostname not in ("127.0.0.1", "localhost"):
        pytest.skip("the relay runs on loopback, beside a local API server")
    relay = _HoldFirstConnection((upstream.hostname, upstream.port or 443))
    try:
        entry["server"] = f"https://127.0.0.1:{relay.port}"
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(config))
        relayed = dataclasses.replace(cluster, kubeconfig=kubeconfig)
        assert relayed.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
        assert relay.accepted == 2  # the first timed out in its TLS handshake, unsent
    finally:
        relay.close()
