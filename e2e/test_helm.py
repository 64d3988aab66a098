"""The Helm chart as users meet it: lint, rendering, values validation, install/upgrade/uninstall on
the local cluster, and proof that its RBAC is both sufficient and minimal.

Sufficient: the operator runs as a local process with nothing but the chart's ServiceAccount token
and reconciles a ModelService to Ready. Minimal: `kubectl auth can-i` as that ServiceAccount is
refused Secrets, ConfigMaps, RBAC objects and everything the operator does not call.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import Cluster
from harness.session import default_bin_dir, pinned_versions

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "thrifty"
MONITORING_API = "monitoring.coreos.com/v1"

Manifest = dict[str, Any]

# helm template assumes Kubernetes 1.20 unless told; the chart requires what the CRDs' CEL needs.
TEMPLATE_FLAGS = ("--kube-version", pinned_versions()["KUBERNETES_VERSION"].lstrip("v"))


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
    out = helm("template", "thrifty", str(CHART), *TEMPLATE_FLAGS, "--namespace", namespace, *args)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def of_kind(docs: list[Manifest], kind: str) -> list[Manifest]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[Manifest], kind: str) -> Manifest:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
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


def test_chart_crds_are_identical_to_the_generated_crds() -> None:
    generated = sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    in_chart = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert in_chart == generated, "run charts/sync-crds.sh"
    for name in generated:
        assert (CHART / "crds" / name).read_bytes() == (REPO / "crds" / name).read_bytes(), (
            f"charts/thrifty/crds/{name} differs from crds/{name}: run charts/sync-crds.sh"
        )


def test_default_render_runs_two_replicas_under_the_restricted_pod_security_standard() -> None:
    deployment = one(render(), "Deployment")
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
    deployment = one(
        render(
            "--set",
            "operator.watchNamespaces={team-a,team-b}",
            "--set",
            "prometheus.url=https://prom.example:9091/prefix",
            "--set",
            "operator.decisionIntervalSeconds=7",
            "--set",
            "operator.logFormat=json",
        ),
        "Deployment",
    )
    env = {
        e["name"]: e.get("value")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["THRIFTY_NAMESPACES"] == "team-a,team-b"
    assert env["THRIFTY_PROMETHEUS_URL"] == "https://prom.example:9091/prefix"
    assert env["THRIFTY_DECISION_INTERVAL_SECONDS"] == "7"
    assert env["THRIFTY_LOG_FORMAT"] == "json"


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
    for where, rule in rules:
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
        ("operator.decisionIntervalSeconds=0", "decisionIntervalSeconds"),
        ("operator.watchNamespaces={Not_A_Namespace}", "watchNamespaces"),
        ("replicas=3", "replicas"),
    ],
)
def test_schema_rejects_bad_values_naming_the_value(setting: str, named: str) -> None:
    result = helm("template", "thrifty", str(CHART), *TEMPLATE_FLAGS, "--set", setting, check=False)
    assert result.returncode != 0, f"--set {setting} was accepted"
    assert named in result.stderr, result.stderr
    assert "schema" in result.stderr


def test_monitoring_objects_only_when_the_prometheus_operator_api_exists() -> None:
    without = render()
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
        assert not of_kind(without, kind), f"{kind} rendered without {MONITORING_API}"
    with_api = render("--api-versions", MONITORING_API)
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
        one(with_api, kind)


def test_pod_monitor_gives_vllm_series_the_operator_query_labels() -> None:
    from thrifty.adapters import prometheus

    pod_monitor = one(render("--api-versions", MONITORING_API), "PodMonitor")
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
            queries[f"alert {rule['alert']}"] = rule["expr"]
    dashboard = json.loads(one(docs, "ConfigMap")["data"]["thrifty.json"])
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            # Grafana substitutes the multi-value variables with a regex; ".*" is "All".
            expr = re.sub(r"\$(namespace|modelservice)\b", ".*", target["expr"])
            queries[f"panel {panel['title']!r} {target['refId']}"] = expr
    return queries


def exported_metric_names() -> set[str]:
    """Sample names the operator exports (labelled series created as the operator does) and the
    metric names of a real vLLM scrape (../shared/reference)."""
    from thrifty.adapters.operator_metrics import OperatorMetrics

    metrics = OperatorMetrics()
    metrics.init_modelservice("ns", "ms")
    names = {sample.name for family in metrics.registry.collect() for sample in family.samples}
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
