{{/*
The operator's permissions, one rule per need, each with the reason. templates/rbac.yaml binds
them cluster-wide or per watched namespace. They follow what the code calls: thrifty.control
(kopf handlers and timers), thrifty.adapters.kube, .scale and .lease. When that code starts calling
something new, add the rule here with its reason; e2e/test_helm.py runs the operator with exactly
these permissions and checks that nothing more is granted.
*/}}

{{- define "thrifty.clusterRules" -}}
# GPUPools are cluster-scoped: kopf lists and watches them for the pool timer and patches its
# bookkeeping annotations (prefix thrifty.dev) on them; the autoscaler and the reconciler read a
# ModelService's pool by name. The operator never changes a pool's spec.
- apiGroups: ["thrifty.dev"]
  resources: ["gpupools"]
  verbs: ["get", "list", "watch", "patch"]
# GPUPool status: GPUs allocatable on the pool's nodes and GPUs used per ModelService.
- apiGroups: ["thrifty.dev"]
  resources: ["gpupools/status"]
  verbs: ["patch"]
# Nodes, read only: a pool's allocatable GPUs come from the Nodes its selector matches (watched
# into the operator's cache).
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["list", "watch"]
# Pods, read only, in every namespace: GPUs in use on a pool's nodes count every pod there, not
# only thrifty's, and a ModelService's replica pods tell ready and starting replicas apart. Watched
# for the autoscaler's cache of replica pods (read once per pass from memory, not listed).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# Autoscaled GPUPools, only while a pod waits for a node: Karpenter's NodeClaims of the pool's
# NodePool (a launch that failed marks the pool short, see docs/node-autoscalers.md). Read only.
- apiGroups: ["karpenter.sh"]
  resources: ["nodeclaims"]
  verbs: ["list"]
# kopf watches CRDs to notice the thrifty.dev resources appearing or going away; read only.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- if .Values.operator.watchNamespaces }}
# Namespaced mode only: kopf lists and watches namespaces to learn which watched ones exist (and
# when one is created later). Without it kopf retries the refused list for a minute at every start.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}
{{- end }}

{{- define "thrifty.namespacedRules" -}}
# ModelServices: kopf lists and watches them (reconcile on change, resync and decision timers) and
# patches its bookkeeping annotations (prefix thrifty.dev) on them; the autoscaler reads each one
# before deciding. The spec is never written here: replicas go through the scale subresource.
- apiGroups: ["thrifty.dev"]
  resources: ["modelservices"]
  verbs: ["get", "list", "watch", "patch"]
# ModelService status: replicas, pool, $/hour, $/1M tokens, conditions, the last decision.
- apiGroups: ["thrifty.dev"]
  resources: ["modelservices/status"]
  verbs: ["patch"]
# The Deployment, Service and PDB carry an owner reference with blockOwnerDeletion to their
# ModelService; clusters running the OwnerReferencesPermissionEnforcement admission plugin (e.g.
# OpenShift) allow setting it only to who may update the owner's finalizers.
- apiGroups: ["thrifty.dev"]
  resources: ["modelservices/finalizers"]
  verbs: ["update"]
# Scaling writes only the scale subresource (the door kubectl scale and an HPA use): spec.replicas
# is then owned by the autoscaler's field manager, never by a GitOps tool's manifest.
- apiGroups: ["thrifty.dev"]
  resources: ["modelservices/scale"]
  verbs: ["patch"]
# CostBudgets: kopf lists and watches them for the budget timer and patches its bookkeeping
# annotations on them; the autoscaler reads a member's budget by name.
- apiGroups: ["thrifty.dev"]
  resources: ["costbudgets"]
  verbs: ["get", "list", "watch", "patch"]
# CostBudget status: current spend per hour and its members.
- apiGroups: ["thrifty.dev"]
  resources: ["costbudgets/status"]
  verbs: ["patch"]
# The vLLM Deployments of each ModelService, one per GPUPool: server-side apply (a patch,
# authorised as create too when the object does not exist yet), read back for ready replicas,
# watched so a change to it triggers a reconcile at once. Delete: a pool removed from the
# ModelService's list loses its Deployment (the garbage collector removes the rest with the
# ModelService through owner references).
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The Service in front of each ModelService's pods, by server-side apply (create, then patch).
- apiGroups: [""]
  resources: ["services"]
  verbs: ["create", "patch"]
# The PodDisruptionBudget that keeps drains from taking a model's last replicas, by server-side
# apply (create, then patch).
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["create", "patch"]
# HPAs, read only: an HPA targeting a ModelService's scale subresource takes precedence, and the
# autoscaler then only advises. Watched into the autoscaler's cache.
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["list", "watch"]
# Events on every significant change (scale, pool choice, Degraded), and kopf's own warnings;
# patched to count a repeat of the same Event instead of creating another. Listed (only while a
# pod of an Autoscaled GPUPool waits for a node) for the cluster autoscaler's NotTriggerScaleUp on
# that pod and Karpenter's InsufficientCapacityError on a NodeClaim (in namespace default).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch", "list"]
{{- end }}

{{- define "thrifty.leaderElectionRules" -}}
# Leader election: the first replica creates the Lease (a create cannot be limited by name).
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create"]
# Leader election: read and renew (or take over) this release's Lease, and no other.
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames: [{{ include "thrifty.leaseName" . | quote }}]
  verbs: ["get", "update"]
{{- end }}

{{/*
The gateway's permissions (thrifty_runtime.gateway.kube): read only, in the served namespaces.
*/}}
{{- define "thrifty.gatewayRules" -}}
# ModelServices, read only: the model names clients send (spec.servedModelName) and which
# ModelServices exist, so /v1/models lists them and requests for one at zero replicas are held.
- apiGroups: ["thrifty.dev"]
  resources: ["modelservices"]
  verbs: ["list", "watch"]
# EndpointSlices, read only: the ready addresses of each ModelService's Service, where requests go.
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["list", "watch"]
{{- end }}

{{- define "thrifty.gatewayKeyRules" -}}
# Secrets, read only, in the release namespace only: the API keys of tenants (label
# thrifty.dev/tenant; the gateway asks for that label and keeps only each key's SHA-256).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["list", "watch"]
{{- end }}

{{- define "thrifty.gatewayNodeRules" -}}
# Nodes, read only (cluster-scoped): an endpoint whose node was deleted or is not Ready gets no
# request, though its EndpointSlice still says ready until the pod is evicted or collected.
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["list", "watch"]
{{- end }}
