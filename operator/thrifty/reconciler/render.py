"""Turn a ModelService and its chosen GPUPool into the Deployment, Service and PodDisruptionBudget.

Pure: the same inputs give byte-identical manifests, so server-side apply of an unchanged spec is a
no-op and a restarted operator changes nothing. Every vLLM flag spelling follows
``shared/reference/vllm.md``; the reasons behind each pod setting are in the comments where they
are not obvious, because each one was learned from a failure mode.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import math
import re
from dataclasses import dataclass
from typing import Any

from thrifty.api import API_VERSION, engine_flags, gpupool, modelservice
from thrifty.reconciler import placement, pod_template

Manifest = dict[str, Any]

ENGINE_PORT = 8000
CONTAINER_NAME = "engine"
PRE_STOP_SLEEP_SECONDS = 10
"""Time for endpoint removal to reach every proxy before the engine stops taking requests."""
GRACE_MARGIN_SECONDS = 15
"""Added to the preStop sleep and drain: vLLM's own drain of what the hook's budget left, and its
exit, before the kubelet's SIGKILL."""
STARTUP_PERIOD_SECONDS = 10
DRAIN_HOOK = importlib.resources.files(__package__).joinpath("drain_hook.py").read_text()
"""The preStop drain (drain_hook.py), run by the image's python3."""
CACHE_PATH = "/root/.cache"
"""Both caches of the vLLM image live below it: huggingface/ (weights) and vllm/ (compiled)."""
MODEL_MOUNT_ROOT = "/models"
NODE_LOSS_TOLERATION_SECONDS = 30
"""How long a pod stays on a NotReady or unreachable node before eviction (Kubernetes: 300 s);
the operator's setting THRIFTY_NODE_LOSS_TOLERATION_SECONDS."""
NODE_LOSS_TAINTS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")
PLACED_ANNOTATION = "thrifty.dev/placed-replicas"
"""On a pool's Deployment: of its replicas, those the spread placed there; the others replace
replicas lost with their node. Written with the replica count, so a pass reads both as one: once a
lost pod is gone, its replacement is a pod like any other, and only this tells them apart."""


@dataclass(frozen=True)
class Target:
    """One ModelService, placed: everything rendering needs."""

    name: str
    namespace: str
    uid: str
    spec: modelservice.ModelServiceSpec
    pool_name: str
    pool: gpupool.GPUPoolSpec
    replicas: int
    node_loss_toleration_seconds: int = NODE_LOSS_TOLERATION_SECONDS
    do_not_disrupt: bool = True
    """Annotate the pods so node autoscalers do not evict a serving replica (a setting)."""
    placed: int | None = None
    """Of ``replicas``, those the spread placed (`PLACED_ANNOTATION`); None: all of them."""


ENGINE_SUFFIX = "-engine"
MAX_CHILD_NAME_LENGTH = 63
_DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_NAME_HASH_LENGTH = 10


def engine_name(name: str) -> str:
    """Deployment, Service and PDB name: a DNS-1035 label (what a Service needs) for any
    ModelService name, stable, and distinct for distinct names of one namespace.

    ``NAME-engine`` when that is a valid label (so existing workloads keep their names);
    otherwise the name with every character a label cannot hold turned into ``-``, ``ms-`` in
    front when it does not start with a letter, cut to fit, then ``-engine-`` and 10 hex digits of
    the name's SHA-256. The two forms cannot meet: the first always ends in ``-engine``, the
    second in hex digits, and two names that shorten alike differ in their hash. Never ``vllm``:
    a Service of that name makes Kubernetes inject VLLM_PORT=tcp://..., which vLLM refuses."""
    plain = name + ENGINE_SUFFIX
    if len(plain) <= MAX_CHILD_NAME_LENGTH and _DNS_1035_LABEL.fullmatch(plain):
        return plain
    digest = hashlib.sha256(name.encode()).hexdigest()[:_NAME_HASH_LENGTH]
    base = re.sub(r"[^a-z0-9-]", "-", name.lower())
    if not base[:1].isalpha():
        base = "ms-" + base
    tail = f"{ENGINE_SUFFIX}-{digest}"
    base = base[: MAX_CHILD_NAME_LENGTH - len(tail)].rstrip("-")
    return base + tail


def selector_labels(name: str) -> dict[str, str]:
    """The Service's, the PDB's and the scale subresource's selector: every pool's replicas."""
    return {placement.MODEL_SERVICE_LABEL: name}


def pool_selector_labels(name: str, pool: str) -> dict[str, str]:
    """A per-pool Deployment's immutable selector: its pool's replicas only, so the Deployments of
    one ModelService never fight over each other's pods."""
    return {**selector_labels(name), placement.POOL_LABEL: pool}


def deployment_name(name: str, pool: str) -> str:
    """The Deployment of one (ModelService, pool): the two names as far as they fit, and 8 hex
    digits of their SHA-256, so that distinct pairs never share a name (``a`` on pool ``b-c``
    and ``a-b`` on pool ``c`` differ in their hash)."""
    digest = hashlib.sha256(f"{name}/{pool}".encode()).hexdigest()[:8]
    base = re.sub(r"[^a-z0-9-]", "-", f"{name}-{pool}".lower())
    if not base[:1].isalpha():
        base = "ms-" + base
    base = base[: MAX_CHILD_NAME_LENGTH - len(digest) - 1].rstrip("-")
    return f"{base}-{digest}"


def selector_string(name: str) -> str:
    return ",".join(f"{k}={v}" for k, v in selector_labels(name).items())


def labels(name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "vllm",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "engine",
        "app.kubernetes.io/managed-by": "thrifty",
        "app.kubernetes.io/part-of": "thrifty",
        **selector_labels(name),
    }


def owner_reference(target: Target) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelService",
        "name": target.name,
        "uid": target.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(target: Target) -> dict[str, Any]:
    return {
        "name": engine_name(target.name),
        "namespace": target.namespace,
        "labels": labels(target.name),
        "ownerReferences": [owner_reference(target)],
    }


def served_model_name(name: str, spec: modelservice.ModelServiceSpec) -> str:
    return spec.served_model_name or name


def model_argument(spec: modelservice.ModelServiceSpec) -> list[str]:
    """``--model`` (and what goes with it) for each kind of model source."""
    uri = spec.model.uri
    scheme, _, rest = uri.partition("://")
    if scheme == "hf":
        args = [engine_flags.MODEL, rest]
        if spec.model.revision:
            args += [engine_flags.REVISION, spec.model.revision]
        return args
    if scheme == "pvc":
        return [engine_flags.MODEL, f"{MODEL_MOUNT_ROOT}/{rest}"]
    # s3: streamed by the Run:ai model streamer that vLLM images include.
    return [engine_flags.MODEL, uri, engine_flags.LOAD_FORMAT, "runai_streamer"]


def engine_args(name: str, spec: modelservice.ModelServiceSpec) -> list[str]:
    """The flags come from engine_flags, whose MANAGED list extraArgs may not repeat."""
    engine = spec.engine
    args = [
        *model_argument(spec),
        engine_flags.SERVED_MODEL_NAME,
        served_model_name(name, spec),
        engine_flags.TENSOR_PARALLEL_SIZE,
        str(engine.tensor_parallel_size),
        engine_flags.PIPELINE_PARALLEL_SIZE,
        str(engine.pipeline_parallel_size),
        engine_flags.PORT,
        str(ENGINE_PORT),
        engine_flags.SHUTDOWN_TIMEOUT,
        str(engine.shutdown_timeout_seconds),
    ]
    optional: list[tuple[str, object | None]] = [
        (engine_flags.MAX_MODEL_LEN, engine.max_model_len),
        (engine_flags.GPU_MEMORY_UTILIZATION, engine.gpu_memory_utilization),
        (engine_flags.MAX_NUM_SEQS, engine.max_num_seqs),
        (engine_flags.QUANTIZATION, engine.quantization),
        (engine_flags.KV_CACHE_DTYPE, engine.kv_cache_dtype),
    ]
    for flag, value in optional:
        if value is not None:
            args += [flag, str(value)]
    return args + list(engine.extra_args)


def _env(spec: modelservice.ModelServiceSpec) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = []
    token = spec.engine.hf_token_secret_ref
    if token is not None:
        # Referenced, never read by the operator: a missing Secret shows up on the pod
        # (CreateContainerConfigError) and becomes the SecretNotFound condition.
        env.append(
            {
                "name": "HF_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": token.name, "key": token.key}},
            }
        )
    for var in spec.engine.env:
        if var.secret_key_ref is not None:
            ref = var.secret_key_ref
            env.append(
                {
                    "name": var.name,
                    "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
                }
            )
        else:
            env.append({"name": var.name, "value": var.value or ""})
    return env


def shared_memory(spec: modelservice.ModelServiceSpec) -> str:
    """NCCL and PyTorch workers exchange tensors through /dev/shm: more with parallelism."""
    if spec.resources.shared_memory is not None:
        return spec.resources.shared_memory
    return "2Gi" if spec.engine.gpus_per_replica == 1 else "8Gi"


def _volumes(spec: modelservice.ModelServiceSpec) -> tuple[list[Any], list[Any]]:
    volumes: list[dict[str, Any]] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shared_memory(spec)}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "model-cache", "mountPath": CACHE_PATH},
    ]
    cache = spec.model_cache
    if cache.claim_name is not None:
        volumes.append(
            {"name": "model-cache", "persistentVolumeClaim": {"claimName": cache.claim_name}}
        )
    else:
        volumes.append({"name": "model-cache", "emptyDir": {"sizeLimit": cache.size_limit}})
    scheme, _, rest = spec.model.uri.partition("://")
    if scheme == "pvc":
        claim = rest.split("/", 1)[0]
        volumes.append(
            {"name": "model", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        )
        mounts.append(
            {"name": "model", "mountPath": f"{MODEL_MOUNT_ROOT}/{claim}", "readOnly": True}
        )
    return volumes, mounts


def _probes(spec: modelservice.ModelServiceSpec) -> dict[str, Any]:
    health = {"httpGet": {"path": "/health", "port": "http"}}
    # /health does not answer until the engine is up: the startup probe carries the whole cold
    # start (download, load, compile); liveness only starts after it has passed.
    startup_failures = math.ceil(spec.engine.startup_timeout_seconds / STARTUP_PERIOD_SECONDS)
    return {
        "startupProbe": {
            **health,
            "periodSeconds": STARTUP_PERIOD_SECONDS,
            "failureThreshold": startup_failures,
            "timeoutSeconds": 5,
        },
        "readinessProbe": {
            **health,
            "periodSeconds": 5,
            "failureThreshold": 3,
            "timeoutSeconds": 5,
        },
        "livenessProbe": {
            **health,
            "periodSeconds": 15,
            "failureThreshold": 4,
            "timeoutSeconds": 10,
        },
    }


def termination_grace_seconds(spec: modelservice.ModelServiceSpec) -> int:
    return spec.engine.shutdown_timeout_seconds + PRE_STOP_SLEEP_SECONDS + GRACE_MARGIN_SECONDS


def pre_stop(spec: modelservice.ModelServiceSpec) -> dict[str, Any]:
    """Endpoints go first, then the drain, in the hook: SIGTERM finds the engine idle, as
    vLLM's own drain can lose its last answers (drain_hook.py). Without a drain (timeout 0) a
    native sleep, which needs nothing in the image."""
    timeout = spec.engine.shutdown_timeout_seconds
    if timeout == 0:
        return {"sleep": {"seconds": PRE_STOP_SLEEP_SECONDS}}
    url = f"http://127.0.0.1:{ENGINE_PORT}/metrics"
    command = ["python3", "-c", DRAIN_HOOK, str(PRE_STOP_SLEEP_SECONDS), str(timeout), url]
    return {"exec": {"command": command}}


def _container(target: Target) -> dict[str, Any]:
    spec = target.spec
    gpus = str(spec.engine.gpus_per_replica)
    _, mounts = _volumes(spec)
    return {
        "name": CONTAINER_NAME,
        "image": spec.engine.image,
        "args": engine_args(target.name, spec),
        "env": _env(spec),
        "ports": [{"name": "http", "containerPort": ENGINE_PORT, "protocol": "TCP"}],
        "resources": {
            "requests": {
                "cpu": spec.resources.cpu,
                "memory": spec.resources.memory,
                "nvidia.com/gpu": gpus,
            },
            "limits": {
                "cpu": spec.resources.cpu,
                "memory": spec.resources.memory,
                "nvidia.com/gpu": gpus,
            },
        },
        "volumeMounts": mounts,
        "lifecycle": {"preStop": pre_stop(spec)},
        **_probes(spec),
    }


def _tolerations(target: Target) -> list[dict[str, Any]]:
    """The pool's, and a short stay on a lost node: without one, the admission plugin
    DefaultTolerationSeconds gives 300 s, five minutes of a replica that serves nobody before its
    ReplicaSet may replace it. A pool that sets its own for these taints keeps them."""
    tolerations = [t.to_kube() for t in target.pool.tolerations]
    own = {t.get("key") for t in tolerations if t.get("effect") in (None, "NoExecute")}
    for key in NODE_LOSS_TAINTS:
        if key not in own:
            tolerations.append(
                {
                    "key": key,
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": target.node_loss_toleration_seconds,
                }
            )
    return tolerations


def deployment(target: Target) -> Manifest:
    """The replicas of one pool: one Deployment per (ModelService, pool), found by its labels."""
    volumes, _ = _volumes(target.spec)
    pod_labels = {**labels(target.name), placement.POOL_LABEL: target.pool_name}
    metadata = {
        **_metadata(target),
        "name": deployment_name(target.name, target.pool_name),
        "labels": pod_labels,
    }
    if target.placed is not None:
        metadata["annotations"] = {PLACED_ANNOTATION: str(target.placed)}
    manifest: Manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": target.replicas,
            "selector": {"matchLabels": pool_selector_labels(target.name, target.pool_name)},
            # Surge instead of unavailability: a rollout never drops serving capacity, at the price
            # of one replica's GPUs held twice for the duration of a cold start.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(ENGINE_PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    # No *_PORT variables from other Services in the namespace: vLLM reads VLLM_*.
                    "enableServiceLinks": False,
                    "nodeSelector": dict(target.pool.node_selector),
                    "tolerations": _tolerations(target),
                    "terminationGracePeriodSeconds": termination_grace_seconds(target.spec),
                    "containers": [_container(target)],
                    "volumes": volumes,
                },
            },
        },
    }
    manifest["spec"]["template"] = pod_template.merge(
        manifest["spec"]["template"],
        target.spec.pod_template,
        container=CONTAINER_NAME,
        defaults=pod_template.disruption_annotations(target.do_not_disrupt),
    )
    return manifest


def service(target: Target) -> Manifest:
    """Headless: no ClusterIP taken from the cluster's finite Service range per ModelService.
    Traffic reaches replicas by the EndpointSlices it gets (thrifty-gateway, Prometheus's pod
    discovery) or by DNS (one A record per ready replica), never through a virtual IP."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(target),
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "None",
            "selector": selector_labels(target.name),
            "ports": [
                {"name": "http", "port": ENGINE_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def pod_disruption_budget(target: Target) -> Manifest:
    """At most one replica evicted at a time by drains and node upgrades."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(target),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(target.name)}},
    }


def manifests(targets: list[Target]) -> list[Manifest]:
    """Everything a ModelService owns, in apply order: a Deployment per pool first (the first
    target's pool is its main one), then one PDB and one Service across its pools, so that
    nothing the Service or PDB could fail on (a quota, an admission webhook) keeps replicas
    from starting."""
    return [
        *(deployment(target) for target in targets),
        pod_disruption_budget(targets[0]),
        service(targets[0]),
    ]
