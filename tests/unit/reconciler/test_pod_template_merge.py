"""spec.podTemplate merged onto the rendered engine pod: added, never replacing thrifty's."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from thrifty.api import gpupool, modelservice, podtemplate
from thrifty.reconciler import pod_template, render

POOL = gpupool.GPUPoolSpec.model_validate(
    {
        "accelerator": "NVIDIA-H100-80GB-HBM3",
        "gpuMemoryGib": 80,
        "gpusPerNode": 8,
        "nodeSelector": {"thrifty.dev/pool": "h100"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "pricePerGpuHour": 2.5,
    }
)

AFFINITY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
            ]
        }
    }
}

TEMPLATE: dict[str, Any] = {
    "metadata": {
        "labels": {"team": "search", "cost-center": "42"},
        "annotations": {"example.com/owner": "search", "karpenter.sh/do-not-disrupt": "false"},
    },
    "spec": {
        "serviceAccountName": "weights-reader",
        "priorityClassName": "serving",
        "affinity": AFFINITY,
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"thrifty.dev/model-service": "llama"}},
            }
        ],
        "imagePullSecrets": [{"name": "registry"}],
        "securityContext": {"runAsNonRoot": True, "fsGroup": 1000},
        "containerSecurityContext": {"allowPrivilegeEscalation": False},
        "env": [
            {"name": "AWS_REGION", "value": "eu-west-1"},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ],
        "volumes": [{"name": "certs", "secret": {"secretName": "ca-bundle"}}],
        "volumeMounts": [{"name": "certs", "mountPath": "/etc/ssl/extra", "readOnly": True}],
    },
}


def spec(**changes: Any) -> modelservice.ModelServiceSpec:
    body = {"model": {"uri": "hf://meta-llama/Llama-3.1-8B-Instruct"}, "pools": ["h100"]}
    return modelservice.ModelServiceSpec.model_validate({**body, **changes})


def pod(ms: modelservice.ModelServiceSpec, *, do_not_disrupt: bool = True) -> dict[str, Any]:
    target = render.Target(
        name="llama",
        namespace="team-a",
        uid="u1",
        spec=ms,
        pool_name="h100",
        pool=POOL,
        replicas=1,
        do_not_disrupt=do_not_disrupt,
    )
    template: dict[str, Any] = render.deployment(target)["spec"]["template"]
    return template


def engine(template: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = template["spec"]["containers"][0]
    return found


def test_every_part_of_the_template_reaches_the_pod() -> None:
    merged = pod(spec(podTemplate=TEMPLATE))
    meta, pod_spec = merged["metadata"], merged["spec"]
    assert meta["labels"]["team"] == "search"
    assert meta["labels"]["thrifty.dev/model-service"] == "llama"
    assert meta["labels"]["thrifty.dev/pool"] == "h100"
    assert meta["annotations"]["example.com/owner"] == "search"
    assert pod_spec["serviceAccountName"] == "weights-reader"
    assert pod_spec["priorityClassName"] == "serving"
    assert pod_spec["affinity"] == AFFINITY
    assert pod_spec["topologySpreadConstraints"][0]["maxSkew"] == 1
    assert pod_spec["imagePullSecrets"] == [{"name": "registry"}]
    assert pod_spec["securityContext"] == {"runAsNonRoot": True, "fsGroup": 1000}
    container = engine(merged)
    assert container["securityContext"] == {"allowPrivilegeEscalation": False}
    assert {"name": "AWS_REGION", "value": "eu-west-1"} in container["env"]
    assert {
        "name": "POD_IP",
        "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
    } in container["env"]
    assert pod_spec["volumes"][-1] == {"name": "certs", "secret": {"secretName": "ca-bundle"}}
    assert container["volumeMounts"][-1] == {
        "name": "certs",
        "mountPath": "/etc/ssl/extra",
        "readOnly": True,
    }


def test_what_thrifty_manages_is_unchanged_by_a_template() -> None:
    plain, merged = pod(spec()), pod(spec(podTemplate=TEMPLATE))
    for key in ("nodeSelector", "tolerations", "terminationGracePeriodSeconds"):
        assert merged["spec"][key] == plain["spec"][key]
    for key in ("image", "args", "ports", "resources", "startupProbe", "readinessProbe"):
        assert engine(merged)[key] == engine(plain)[key]
    assert merged["spec"]["volumes"][: len(plain["spec"]["volumes"])] == plain["spec"]["volumes"]
    assert engine(merged)["env"][: len(engine(plain)["env"])] == engine(plain)["env"]
    for key, value in plain["metadata"]["labels"].items():
        assert merged["metadata"]["labels"][key] == value
    assert merged["metadata"]["annotations"]["prometheus.io/port"] == "8000"


def test_pods_do_not_disrupt_by_default_the_setting_and_the_template_turn_it_off() -> None:
    annotations = pod(spec())["metadata"]["annotations"]
    assert annotations["karpenter.sh/do-not-disrupt"] == "true"
    assert annotations["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "false"
    off = pod(spec(), do_not_disrupt=False)["metadata"]["annotations"]
    assert "karpenter.sh/do-not-disrupt" not in off
    assert "cluster-autoscaler.kubernetes.io/safe-to-evict" not in off
    overridden = pod(spec(podTemplate=TEMPLATE))["metadata"]["annotations"]
    assert overridden["karpenter.sh/do-not-disrupt"] == "false"


def test_thrifty_labels_win_even_if_a_template_slipped_past_admission() -> None:
    template = podtemplate.PodTemplate.model_construct(
        metadata=podtemplate.PodMetadata.model_construct(
            labels={"thrifty.dev/pool": "elsewhere"}, annotations={}
        ),
        spec=podtemplate.PodTemplateSpec(),
    )
    rendered = {"metadata": {"labels": {"thrifty.dev/pool": "h100"}}, "spec": {"containers": []}}
    merged = pod_template.merge(rendered, template, container="engine", defaults={})
    assert merged["metadata"]["labels"]["thrifty.dev/pool"] == "h100"


def test_the_labels_thrifty_sets_are_the_ones_the_template_may_not_set() -> None:
    rendered = pod(spec())["metadata"]["labels"]
    for key in rendered:
        assert podtemplate.label_problem(key) is not None, key


REFUSED: list[tuple[dict[str, Any], str]] = [
    (
        {"spec": {"containers": [{"name": "engine", "ports": [{"containerPort": 9000}]}]}},
        "containers",
    ),
    ({"spec": {"resources": {"limits": {"nvidia.com/gpu": 8}}}}, "resources"),
    ({"spec": {"ports": [{"containerPort": 9000}]}}, "ports"),
    ({"spec": {"nodeSelector": {"zone": "a"}}}, "nodeSelector"),
    ({"spec": {"tolerations": [{"operator": "Exists"}]}}, "tolerations"),
    ({"spec": {"startupProbe": {}}}, "startupProbe"),
    ({"spec": {"args": ["--port", "1"]}}, "args"),
    ({"metadata": {"labels": {"thrifty.dev/pool": "x"}}}, "thrifty.dev/pool"),
    ({"metadata": {"labels": {"app.kubernetes.io/name": "x"}}}, "app.kubernetes.io/name"),
    ({"metadata": {"annotations": {"prometheus.io/port": "9"}}}, "prometheus.io/port"),
    ({"metadata": {"labels": {"bad key!": "x"}}}, "not a label key"),
    ({"spec": {"env": [{"name": "VLLM_PORT", "value": "1"}]}}, "VLLM_PORT"),
    ({"spec": {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}}, "repeat"),
    ({"spec": {"volumes": [{"name": "dshm", "emptyDir": {}}]}}, "dshm"),
    ({"spec": {"volumeMounts": [{"name": "x", "mountPath": "/x"}]}}, "volumeMounts"),
    (
        {
            "spec": {
                "volumes": [{"name": "x", "emptyDir": {}}],
                "volumeMounts": [{"name": "x", "mountPath": "/root/.cache"}],
            }
        },
        "/root/.cache",
    ),
]


@pytest.mark.parametrize(("template", "field"), REFUSED, ids=[f for _, f in REFUSED])
def test_what_thrifty_manages_is_refused_naming_the_field(
    template: dict[str, Any], field: str
) -> None:
    with pytest.raises(pydantic.ValidationError) as error:
        spec(podTemplate=template)
    assert field in str(error.value)


def test_a_variable_in_both_engine_env_and_the_template_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match=r"also in engine\.env"):
        spec(
            engine={"env": [{"name": "A", "value": "1"}]},
            podTemplate={"spec": {"env": [{"name": "A", "value": "2"}]}},
        )


def test_the_paths_and_volumes_refused_are_the_ones_render_uses() -> None:
    rendered = pod(spec(model={"uri": "pvc://weights/llama"}))
    for volume in rendered["spec"]["volumes"]:
        assert volume["name"] in podtemplate.MANAGED_VOLUMES
    for mount in engine(rendered)["volumeMounts"]:
        assert podtemplate.mount_path_problem(mount["mountPath"]) is not None, mount
