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
{{- include "thrifty.prometheusEnv" . }}
- name: THRIFTY_DECISION_INTERVAL_SECONDS
  value: {{ .Values.operator.decisionIntervalSeconds | quote }}
- name: THRIFTY_LOG_FORMAT
  value: {{ .Values.operator.logFormat | quote }}
- name: THRIFTY_NODE_LOSS_TOLERATION_SECONDS
  value: {{ .Values.operator.nodeLossTolerationSeconds | quote }}
- name: THRIFTY_METRICS_PORT
  value: {{ .Values.operator.metricsPort | quote }}
- name: THRIFTY_METRICS_ADDRESS
  value: {{ .Values.operator.metricsAddress | quote }}
- name: THRIFTY_LIVENESS_ENDPOINT
  value: {{ printf "http://0.0.0.0:%d/healthz" (int .Values.operator.healthPort) | quote }}
- name: THRIFTY_DO_NOT_DISRUPT
  value: {{ .Values.operator.doNotDisrupt | quote }}
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

{{/* Where the Prometheus credentials volume is mounted in the operator container. */}}
{{- define "thrifty.prometheusCredentialsDir" -}}
/etc/thrifty/prometheus
{{- end }}

{{/* The projected volume's sources: a ServiceAccount token and the Secrets' keys, as files. */}}
{{- define "thrifty.prometheusCredentialSources" -}}
{{- $p := .Values.prometheus }}
{{- if $p.bearerToken.serviceAccountToken.enabled }}
- serviceAccountToken:
    path: token
    expirationSeconds: {{ int $p.bearerToken.serviceAccountToken.expirationSeconds }}
    {{- with $p.bearerToken.serviceAccountToken.audience }}
    audience: {{ . | quote }}
    {{- end }}
{{- end }}
{{- if $p.bearerToken.secretName }}
- secret:
    name: {{ $p.bearerToken.secretName | quote }}
    items:
      - key: {{ $p.bearerToken.secretKey | quote }}
        path: token
{{- end }}
{{- if $p.basicAuth.secretName }}
- secret:
    name: {{ $p.basicAuth.secretName | quote }}
    items:
      - key: {{ $p.basicAuth.usernameKey | quote }}
        path: username
      - key: {{ $p.basicAuth.passwordKey | quote }}
        path: password
{{- end }}
{{- if and $p.tls.secretName (or $p.tls.caKey $p.tls.certKey) }}
- secret:
    name: {{ $p.tls.secretName | quote }}
    items:
      {{- with $p.tls.caKey }}
      - key: {{ . | quote }}
        path: ca.crt
      {{- end }}
      {{- if $p.tls.certKey }}
      - key: {{ $p.tls.certKey | quote }}
        path: tls.crt
      - key: {{ $p.tls.keyKey | quote }}
        path: tls.key
      {{- end }}
{{- end }}
{{- end }}

{{/* THRIFTY_PROMETHEUS_* beyond the URL; refuses combinations the operator would refuse. */}}
{{- define "thrifty.prometheusEnv" -}}
{{- $p := .Values.prometheus }}
{{- $dir := include "thrifty.prometheusCredentialsDir" . }}
{{- if and $p.bearerToken.serviceAccountToken.enabled $p.bearerToken.secretName }}
{{- fail "prometheus.bearerToken: set serviceAccountToken.enabled or secretName, not both" }}
{{- end }}
{{- $bearer := or $p.bearerToken.serviceAccountToken.enabled $p.bearerToken.secretName }}
{{- if and $bearer $p.basicAuth.secretName }}
{{- fail "prometheus: bearerToken and basicAuth both set; Prometheus takes one Authorization header" }}
{{- end }}
{{- if ne (empty $p.tls.certKey) (empty $p.tls.keyKey) }}
{{- fail "prometheus.tls.certKey and prometheus.tls.keyKey go together: set both or neither" }}
{{- end }}
{{- if and $p.tls.certKey (not $p.tls.secretName) }}
{{- fail "prometheus.tls.certKey needs prometheus.tls.secretName" }}
{{- end }}
- name: THRIFTY_PROMETHEUS_PATH_PREFIX
  value: {{ $p.pathPrefix | quote }}
- name: THRIFTY_PROMETHEUS_HEADERS
  value: {{ if $p.headers }}{{ toJson $p.headers | quote }}{{ else }}""{{ end }}
- name: THRIFTY_PROMETHEUS_INSECURE_SKIP_VERIFY
  value: {{ $p.tls.insecureSkipVerify | quote }}
{{- if $bearer }}
- name: THRIFTY_PROMETHEUS_BEARER_TOKEN_FILE
  value: {{ printf "%s/token" $dir | quote }}
{{- end }}
{{- if $p.basicAuth.secretName }}
- name: THRIFTY_PROMETHEUS_BASIC_AUTH_USERNAME_FILE
  value: {{ printf "%s/username" $dir | quote }}
- name: THRIFTY_PROMETHEUS_BASIC_AUTH_PASSWORD_FILE
  value: {{ printf "%s/password" $dir | quote }}
{{- end }}
{{- if and $p.tls.secretName $p.tls.caKey }}
- name: THRIFTY_PROMETHEUS_CA_FILE
  value: {{ printf "%s/ca.crt" $dir | quote }}
{{- end }}
{{- if $p.tls.certKey }}
- name: THRIFTY_PROMETHEUS_CERT_FILE
  value: {{ printf "%s/tls.crt" $dir | quote }}
- name: THRIFTY_PROMETHEUS_KEY_FILE
  value: {{ printf "%s/tls.key" $dir | quote }}
{{- end }}
{{- end }}

{{/* The gateway's objects: same instance, component gateway (never matched by the operator's
selectors, whose component is operator). */}}
{{- define "thrifty.gatewayName" -}}
{{- include "thrifty.fullname" . | trunc 55 | trimSuffix "-" }}-gateway
{{- end }}

{{- define "thrifty.gatewaySelectorLabels" -}}
app.kubernetes.io/name: {{ include "thrifty.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "thrifty.gatewayLabels" -}}
helm.sh/chart: {{ include "thrifty.chart" . }}
{{ include "thrifty.gatewaySelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: thrifty
{{- end }}
