{{/* Names and labels shared by every template of the chart. */}}

{{- define "thrifty.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name; the release name alone when it already contains the chart name. */}}
{{- define "thrifty.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "thrifty.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "thrifty.selectorLabels" -}}
app.kubernetes.io/name: {{ include "thrifty.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "thrifty.labels" -}}
helm.sh/chart: {{ include "thrifty.chart" . }}
{{ include "thrifty.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: thrifty
{{- end }}

{{- define "thrifty.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "thrifty.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "thrifty.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* True (non-empty) when the Prometheus Operator's API is served by the cluster. */}}
{{- define "thrifty.hasMonitoringAPI" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" }}true{{ end }}
{{- end }}

{{/* The operator's settings as container env; the names are the operator's settings names. */}}
{{- define "thrifty.settingsEnv" -}}
- name: THRIFTY_NAMESPACES
  value: {{ join "," .Values.operator.watchNamespaces | quote }}
- name: THRIFTY_PROMETHEUS_URL
  value: {{ .Values.prometheus.url | quote }}
- name: THRIFTY_HELD_REQUESTS_METRIC
  value: {{ .Values.prometheus.heldRequestsMetric | quote }}
- name: THRIFTY_DECISION_INTERVAL_SECONDS
  value: {{ .Values.operator.decisionIntervalSeconds | quote }}
- name: THRIFTY_LOG_FORMAT
  value: {{ .Values.operator.logFormat | quote }}
- name: THRIFTY_METRICS_PORT
  value: {{ .Values.operator.metricsPort | quote }}
- name: THRIFTY_LIVENESS_ENDPOINT
  value: {{ printf "http://0.0.0.0:%d/healthz" (int .Values.operator.healthPort) | quote }}
- name: THRIFTY_LEADER_ELECTION
  value: "true"
- name: THRIFTY_LEASE_NAME
  value: {{ include "thrifty.leaseName" . | quote }}
{{- end }}

{{/* The leader-election Lease, in the release namespace (POD_NAMESPACE). */}}
{{- define "thrifty.leaseName" -}}
{{- include "thrifty.fullname" . }}-leader
{{- end }}

{{/* The name of the vLLM container port in the pods the operator renders. */}}
{{- define "thrifty.vllmPortName" -}}
http
{{- end }}


{{/*
Kubernetes >= 1.29: the CRDs' CEL validation rules (x-kubernetes-validations) are GA from 1.29.
Checked only when Helm knows the version: it talks to a cluster (lookup finds kube-system; offline
rendering returns nothing) or --kube-version moved it off Helm's offline placeholder v1.20.0.
*/}}
{{- define "thrifty.requireKubeVersion" -}}
{{- $version := .Capabilities.KubeVersion.Version -}}
{{- $live := lookup "v1" "Namespace" "" "kube-system" -}}
{{- if and (or $live (ne $version "v1.20.0")) (semverCompare "<1.29.0-0" $version) -}}
{{- fail (printf "thrifty needs Kubernetes >= 1.29 (its CRDs use CEL validation rules); the target is %s" $version) -}}
{{- end -}}
{{- end }}
