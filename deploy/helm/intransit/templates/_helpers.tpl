{{/* Chart name, overridable. */}}
{{- define "intransit.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects. */}}
{{- define "intransit.fullname" -}}
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

{{/* Labels that select the agent pods; never change them on upgrade. */}}
{{- define "intransit.selectorLabels" -}}
app.kubernetes.io/name: {{ include "intransit.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "intransit.labels" -}}
{{ include "intransit.selectorLabels" . }}
app.kubernetes.io/component: agent
app.kubernetes.io/part-of: intransit
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "intransit.serviceAccountName" -}}
{{- default (include "intransit.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{- define "intransit.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* Port of config.metrics.listen (host:port), for the probes. */}}
{{- define "intransit.metricsPort" -}}
{{- regexFind "[0-9]+$" (dig "metrics" "listen" "127.0.0.1:9464" .Values.config | toString) | default "9464" }}
{{- end }}
