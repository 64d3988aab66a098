{{/*
The operator's permissions, one rule per need. templates/rbac.yaml binds them cluster-wide or per
watched namespace. Keep them in step with what operator/thrifty/control and adapters call.
*/}}

{{- define "thrifty.clusterRules" -}}
# GPUPools are cluster-scoped: watched to place ModelServices, patched for kopf's bookkeeping
# (finalizer and handler-progress annotations).
- apiGroups: ["thrifty.dev"]
  resources: ["gpupools"]
  verbs: ["get", "list", "watch", "patch"]
# GPUPool status: GPUs allocatable and used per ModelService.
- apiGroups: ["thrifty.dev"]
  resources: ["gpupools/status"]
  verbs: ["patch"]
# Nodes, read only: a pool's allocatable GPUs come from the Nodes its selector matches.
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["get", "list", "watch"]
# kopf watches CRDs to notice the thrifty.dev resources (re)appearing; read only.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
{{- end }}

{{- define "thrifty.namespacedRules" -}}
# ModelServices and CostBudgets: watched to reconcile, patched for kopf's bookkeeping (finalizers,
# handler-progress annotations).
- apiGroups: ["thrifty.dev"]
  resources: ["modelservices", "costbudgets"]
  verbs: ["get", "list", "watch", "patch"]
# Their status: replicas, pool, $/hour, conditions, the last decision; budget spend and members.
- apiGroups: ["thrifty.dev"]
  resources: ["modelservices/status", "costbudgets/status"]
  verbs: ["patch"]
# Scaling goes through the scale subresource, the same door kubectl scale and an HPA use, so the
# operator never owns spec.replicas in a GitOps manifest's field set.
- apiGroups: ["thrifty.dev"]
  resources: ["modelservices/scale"]
  verbs: ["get", "patch", "update"]
# The vLLM Deployment each ModelService renders (server-side apply = patch; create for the first
# apply). No delete: owner references let the garbage collector remove it with its ModelService.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
# The Service in front of each ModelService's pods.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch"]
# The PodDisruptionBudget that keeps drains from taking a model's last replicas at once.
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Pods, read only: ready replicas, and GPUs in use on a pool's nodes.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# Events on every significant change (scale, pool choice, Degraded); kopf posts core v1 Events.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
# The same Events through the events.k8s.io API, which newer Kubernetes clients write.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{- define "thrifty.leaderElectionRules" -}}
# One active replica: the replicas compete for a Lease in the release namespace.
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "list", "watch", "create", "update", "patch"]
{{- end }}
