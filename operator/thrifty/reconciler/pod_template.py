"""Merge a ModelService's ``spec.podTemplate`` onto the rendered engine pod template (pure).

The user's part is added, never substituted for thrifty's: labels and annotations are merged with
thrifty's own winning (admission refuses the keys it sets, this is the second line), variables,
volumes and mounts are appended after thrifty's, and the pod-level settings it does not render
(service account, priority class, affinity, topology spread, pull secrets, security contexts) are
set as written. The disruption annotations are defaults the user may override per ModelService.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from thrifty.api import podtemplate

KARPENTER_DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"
"""Karpenter does not voluntarily disrupt (consolidate, drift, expire) a node running a pod with
this annotation: a replica is never evicted mid-generation to save a node."""
CLUSTER_AUTOSCALER_SAFE_TO_EVICT = "cluster-autoscaler.kubernetes.io/safe-to-evict"
"""The cluster autoscaler's equivalent: "false" keeps it from draining the node to scale down."""


def disruption_annotations(do_not_disrupt: bool) -> dict[str, str]:
    """What keeps node autoscalers from moving serving replicas (when ``do_not_disrupt``).

    Scale-down still frees nodes: the replicas thrifty removes are deleted, the node is empty, and
    the autoscaler removes empty nodes (Karpenter's WhenEmpty, the cluster autoscaler's
    scale-down of unneeded nodes)."""
    if not do_not_disrupt:
        return {}
    return {KARPENTER_DO_NOT_DISRUPT: "true", CLUSTER_AUTOSCALER_SAFE_TO_EVICT: "false"}


_POD_FIELDS = (
    ("service_account_name", "serviceAccountName"),
    ("priority_class_name", "priorityClassName"),
    ("affinity", "affinity"),
    ("security_context", "securityContext"),
)


def merge(
    template: Mapping[str, Any],
    overrides: podtemplate.PodTemplate | None,
    *,
    container: str,
    defaults: Mapping[str, str],
) -> dict[str, Any]:
    """``template`` (a Deployment's spec.template) with ``overrides`` merged in; ``defaults`` are
    annotations the user's own take precedence over. ``container`` names the engine container."""
    merged = copy.deepcopy(dict(template))
    metadata = merged.setdefault("metadata", {})
    pod = merged.setdefault("spec", {})
    user_labels: Mapping[str, str] = {}
    user_annotations: Mapping[str, str] = {}
    if overrides is not None:
        user_labels = overrides.metadata.labels
        user_annotations = overrides.metadata.annotations
    metadata["labels"] = {**user_labels, **metadata.get("labels", {})}
    annotations = {**defaults, **user_annotations, **metadata.get("annotations", {})}
    if annotations:
        metadata["annotations"] = annotations
    if overrides is None:
        return merged
    spec = overrides.spec
    for attribute, key in _POD_FIELDS:
        value = getattr(spec, attribute)
        if value is not None:
            pod[key] = copy.deepcopy(value)
    if spec.topology_spread_constraints:
        pod["topologySpreadConstraints"] = copy.deepcopy(spec.topology_spread_constraints)
    if spec.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": ref.name} for ref in spec.image_pull_secrets]
    if spec.volumes:
        pod["volumes"] = [*pod.get("volumes", []), *(v.to_kube() for v in spec.volumes)]
    for engine in pod.get("containers", []):
        if engine.get("name") != container:
            continue
        if spec.env:
            engine["env"] = [*engine.get("env", []), *(var.to_kube() for var in spec.env)]
        if spec.volume_mounts:
            mounts = (mount.to_kube() for mount in spec.volume_mounts)
            engine["volumeMounts"] = [*engine.get("volumeMounts", []), *mounts]
        if spec.container_security_context is not None:
            engine["securityContext"] = copy.deepcopy(spec.container_security_context)
    return merged
