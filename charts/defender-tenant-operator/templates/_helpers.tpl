{{/*
The prefix of every object's name. With the release name defender-tenant-operator
the objects get the names that config/default gives them.
*/}}
{{- define "dto.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "dto.fullname" -}}
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

{{/* The labels config/ gives every object, and Helm's. */}}
{{- define "dto.labels" -}}
app.kubernetes.io/part-of: defender-tenant-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/*
The manager pod's labels, as in config/manager/manager.yaml: the Service, the
ServiceMonitor and the NetworkPolicy select the pod by them.
*/}}
{{- define "dto.selectorLabels" -}}
app.kubernetes.io/name: defender-tenant-operator
control-plane: controller-manager
{{- end }}

{{- define "dto.serviceAccountName" -}}
{{ include "dto.fullname" . }}-controller-manager
{{- end }}

{{/* A Service name has at most 63 characters; config/default's has exactly 63. */}}
{{- define "dto.metricsServiceName" -}}
{{- printf "%s-controller-manager-metrics-service" (include "dto.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The namespaces served: watchNamespaces, or the release namespace when namespaced. */}}
{{- define "dto.watchNamespaces" -}}
{{- if .Values.watchNamespaces }}
{{- join "," .Values.watchNamespaces }}
{{- else if .Values.namespaced }}
{{- .Release.Namespace }}
{{- end }}
{{- end }}

{{- define "dto.clusterResourceNamespace" -}}
{{- default .Release.Namespace .Values.clusterResourceNamespace }}
{{- end }}

{{- define "dto.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The subject of every binding: the operator's ServiceAccount. */}}
{{- define "dto.subjects" -}}
subjects:
- kind: ServiceAccount
  name: {{ include "dto.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}
