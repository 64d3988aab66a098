"""The operator reads metrics from a Prometheus as real clusters run it: HTTPS with a CA the test
makes, a client certificate, and basic auth, all configured through the chart's values.

A second Prometheus scrapes the same simulated engines as the first, behind its own web config.
The chart is rendered with those values; the Secrets it names are created in the cluster and their
keys laid out as the Deployment's projected volume would mount them, and the operator process gets
exactly the THRIFTY_PROMETHEUS_* environment the chart sets (the mount path mapped to a local
directory). A wrong password then shows as MetricsAvailable=False with the HTTP status, replicas
held and the operator still running; the right one restores it without a restart.
"""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

import fleet_process
from harness import Cluster
from harness import prometheus as prometheus_process
from harness.cluster import wait_until
from harness.ports import free_port
from operator_process import StartOperator, operator_process
from test_autoscale import OPERATOR_ENV, crds, model_service_manifest, pool_manifest
from test_autoscale import stop_prometheus as stop
from test_helm import CHART, helm

__all__ = ["crds", "operator_process"]  # fixtures, re-exported for pytest

USER = "thrifty"
PASSWORD = "correct-horse-battery-staple"
MOUNT = "/etc/thrifty/prometheus"  # the chart's mount path, mapped to a local directory here
WAIT_SECONDS = 120


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_pki(directory: Path) -> Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it."""
    d = directory
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=e2e-ca",
        "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"),
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=keyCertSign",
    )  # fmt: skip
    for name, extension in (
        ("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        (d / f"{name}.ext").write_text(extension + "\n")
        openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=e2e-{name}",
            "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"),
        )  # fmt: skip
        openssl(
            "x509", "-req", "-in", str(d / f"{name}.csr"), "-days", "1",
            "-CA", str(d / "ca.crt"), "-CAkey", str(d / "ca.key"), "-CAcreateserial",
            "-extfile", str(d / f"{name}.ext"), "-out", str(d / f"{name}.crt"),
        )  # fmt: skip
    return Pki(d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt", d / "client.key")


def web_config(pki: Pki) -> str:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    return yaml.safe_dump(
        {
            "tls_server_config": {
                "cert_file": str(pki.server_cert),
                "key_file": str(pki.server_key),
                "client_auth_type": "RequireAndVerifyClientCert",
                "client_ca_file": str(pki.ca),
            },
            "basic_auth_users": {USER: hashed},
        }
    )


def ready_with(pki: Pki) -> Callable[[str], bool | None]:
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    def ready(url: str) -> bool | None:
        request = urllib.request.Request(f"{url}/-/ready", headers={"Authorization": auth})
        try:
            with urllib.request.urlopen(request, timeout=2, context=context) as response:
                return True if response.status == 200 else None
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None

    return ready


def chart_prometheus_env(
    cluster: Cluster, namespace: str, values: list[str], local_mount: Path
) -> dict[str, str]:
    """The THRIFTY_PROMETHEUS_* environment the chart gives the operator with `values`, and the
    files its projected volume would mount, read from the Secrets in the cluster."""
    out = helm("template", "thrifty", str(CHART), "-n", namespace, *values)
    docs = [doc for doc in yaml.safe_load_all(out.stdout) if doc]
    (deployment,) = [
        doc
        for doc in docs
        if doc["kind"] == "Deployment"
        and doc["metadata"]["labels"].get("app.kubernetes.io/component") == "operator"
    ]  # the operator's, not the gateway's
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "prometheus-credentials"]
    assert mount["mountPath"] == MOUNT and mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == "prometheus-credentials"]
    local_mount.mkdir(parents=True, exist_ok=True)
    for source in volume["projected"]["sources"]:
        secret: dict[str, Any] = cluster.kubectl_json(
            "get", "secret", source["secret"]["name"], "-n", namespace
        )
        for item in source["secret"]["items"]:
            data = base64.b64decode(secret["data"][item["key"]])
            (local_mount / item["path"]).write_bytes(data)
    return {
        e["name"]: e["value"].replace(MOUNT, str(local_mount))
        for e in container["env"]
        if e["name"].startswith("THRIFTY_PROMETHEUS_")
    }


def secret(cluster: Cluster, namespace: str, name: str, files: dict[str, Path]) -> None:
    args = [f"--from-file={key}={path}" for key, path in files.items()]
    cluster.kubectl("create", "secret", "generic", name, "-n", namespace, *args)


@pytest.fixture
def engines(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[Path]:
    """Simulated engines of the namespace, scraped by a plain Prometheus; yields its file_sd dir."""
    plain = prometheus_process.start(tmp_path, free_port())
    mirror = fleet_process.start_fleet_mirror(
        cluster.kubeconfig,
        namespace,
        plain.sd_dir / "fleet.json",
        tmp_path / "fleet.json",
        tmp_path / "mirror.log",
    )
    try:
        yield plain.sd_dir
    finally:
        fleet_process.stop(mirror)
        stop(plain)


def test_operator_reads_through_tls_client_cert_and_basic_auth_from_chart_values(
    cluster: Cluster,
    crds: None,
    namespace: str,
    engines: Path,
    operator_process: StartOperator,
    tmp_path: Path,
) -> None:
    pki = make_pki(tmp_path)
    secured = prometheus_process.start(
        tmp_path, free_port(), sd_dir=engines, web_config=web_config(pki), ready=ready_with(pki)
    )
    try:
        assert secured.url.startswith("https://127.0.0.1:")
        (tmp_path / "user").write_text(USER)
        (tmp_path / "password").write_text(PASSWORD)
        secret(
            cluster,
            namespace,
            "prom-auth",
            {"user": tmp_path / "user", "pass": tmp_path / "password"},
        )
        secret(
            cluster,
            namespace,
            "prom-tls",
            {"ca.crt": pki.ca, "tls.crt": pki.client_cert, "tls.key": pki.client_key},
        )
        mounted = tmp_path / "mounted"
        env = chart_prometheus_env(
            cluster,
            namespace,
            [
                "--set", f"prometheus.url={secured.url}",
                "--set", "prometheus.basicAuth.secretName=prom-auth",
                "--set", "prometheus.basicAuth.usernameKey=user",
                "--set", "prometheus.basicAuth.passwordKey=pass",
                "--set", "prometheus.tls.secretName=prom-tls",
                "--set", "prometheus.tls.certKey=tls.crt",
                "--set", "prometheus.tls.keyKey=tls.key",
            ],
            mounted,
        )  # fmt: skip
        assert env["THRIFTY_PROMETHEUS_CA_FILE"] == str(mounted / "ca.crt")
        assert env["THRIFTY_PROMETHEUS_INSECURE_SKIP_VERIFY"] == "false"
        operator = operator_process(namespaces=[namespace], env={**OPERATOR_ENV, **env})

        pool = f"pool-{namespace}"[:60]
        cluster.apply(pool_manifest(pool))
        manifest = model_service_manifest("chat", pool, minReplicas=1, maxReplicas=3)
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest)

        def condition() -> dict[str, Any]:
            body = cluster.kubectl_json("get", "ms", "chat", "-n", namespace)
            for found in (body.get("status") or {}).get("conditions", []):
                if found["type"] == "MetricsAvailable":
                    return dict(found)
            return {}

        def replicas() -> int:
            body = cluster.kubectl_json("get", "ms", "chat", "-n", namespace)
            return int(body["spec"].get("replicas", -1))

        wait_until(
            lambda: condition().get("status") == "True" or None,
            timeout_seconds=WAIT_SECONDS,
            what=f"MetricsAvailable=True read through {secured.url} (now: {condition()})",
        )
        held = replicas()

        # The Secret's password changes to a wrong one; the kubelet would update the file.
        (mounted / "password").write_text("wrong-password")
        refused = wait_until(
            lambda: condition() if condition().get("status") == "False" else None,
            timeout_seconds=WAIT_SECONDS,
            what="MetricsAvailable=False after the password went wrong",
        )
        assert "HTTP 401 Unauthorized" in refused["message"], refused
        assert replicas() == held
        assert operator.running, operator.logs(tail_lines=40)

        (mounted / "password").write_text(PASSWORD)
        wait_until(
            lambda: condition().get("status") == "True" or None,
            timeout_seconds=WAIT_SECONDS,
            what="MetricsAvailable=True again once the password is right, without a restart",
        )
        assert operator.running
        assert json.loads(env.get("THRIFTY_PROMETHEUS_HEADERS") or "{}") == {}
    finally:
        stop(secured)
