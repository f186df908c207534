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

{{/*
The agent's intransit.yaml, without the final newline. The ConfigMap holds it
in a block scalar, which adds one: the pod template's checksum/config is the
sha256 of that, so a config change rolls the pods.
*/}}
{{- define "intransit.configYAML" -}}
{{- toYaml .Values.config }}
{{- end }}

{{/* metrics.listen as host:port; the agent's default when unset. */}}
{{- define "intransit.metricsListen" -}}
{{- dig "metrics" "listen" "127.0.0.1:9464" .Values.config | toString }}
{{- end }}

{{/* Port of config.metrics.listen, for the probes and the Service. */}}
{{- define "intransit.metricsPort" -}}
{{- regexFind "[0-9]+$" (include "intransit.metricsListen" .) }}
{{- end }}

{{/*
Host of config.metrics.listen without brackets; "" for every address (empty,
0.0.0.0, ::), where the kubelet's default (the pod IP, i.e. the node's) is
right.
*/}}
{{- define "intransit.metricsHost" -}}
{{- $host := regexReplaceAll ":[0-9]+$" (include "intransit.metricsListen" .) "" | trimPrefix "[" | trimSuffix "]" }}
{{- if not (has $host (list "" "0.0.0.0" "::")) }}{{ $host }}{{ end }}
{{- end }}

{{/* Port of config.inbound.listen (default 15008); "" without inbound. */}}
{{- define "intransit.inboundPort" -}}
{{- with .Values.config.inbound }}
{{- regexFind "[0-9]+$" (dig "listen" "0.0.0.0:15008" . | toString) }}
{{- end }}
{{- end }}

{{/*
Refuses values that would render a pod that runs but does not do its job.
The agent validates the rest of its config when it starts.
*/}}
{{- define "intransit.checkConfig" -}}
{{- $cfg := .Values.config }}
{{- $cgroup := dig "cgroup" "" $cfg | toString }}
{{- if not (or (eq $cgroup "/host/sys/fs/cgroup") (hasPrefix "/host/sys/fs/cgroup/" $cgroup)) }}
{{- fail (printf "config.cgroup %q: must be /host/sys/fs/cgroup (the host's cgroup v2 root, mounted there) or a directory below it; anything else, empty included, covers only the agent's own cgroup namespace" $cgroup) }}
{{- end }}
{{- $pin := dig "bpf" "pinPath" "/sys/fs/bpf/intransit" $cfg | toString }}
{{- if not (hasPrefix "/sys/fs/bpf/" $pin) }}
{{- fail (printf "config.bpf.pinPath %q: must be below /sys/fs/bpf, the host's bpffs, or the pins would vanish with the pod" $pin) }}
{{- end }}
{{- if eq (include "intransit.metricsListen" .) "off" }}
{{- fail "config.metrics.listen: off would leave the startup, liveness and readiness probes nothing to probe" }}
{{- end }}
{{- with $cfg.inbound }}
{{- $ic := dig "cgroup" "" . | toString }}
{{- if not (or (eq $ic "/host/sys/fs/cgroup") (hasPrefix "/host/sys/fs/cgroup/" $ic)) }}
{{- fail (printf "config.inbound.cgroup %q: must be set to /host/sys/fs/cgroup or a directory below it (the executors' cgroup): its default, the agent's own cgroup namespace root, would leave the executors' ports unchecked" $ic) }}
{{- end }}
{{- end }}
{{- if not (or .Values.podNetworkNamespaces .Values.privileged (dig "proxy" "podAddress" "" $cfg)) }}
{{- range $i, $r := $cfg.rules | default (list) }}
{{- if eq (dig "mode" "" $r | toString) "enforce" }}
{{- range dig "workloads" (list) $r }}
{{- if or .namespace .labels }}
{{- fail (printf "config.rules[%d] (%s) enforces connects from pods (a workloads namespace or labels selector), which cannot reach the node's loopback: set podNetworkNamespaces: true (or config.proxy.podAddress), or they are refused" $i (dig "name" "" $r)) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- $host := include "intransit.metricsHost" . }}
{{- if and .Values.serviceMonitor.enabled (or (hasPrefix "127." $host) (eq $host "::1") (eq $host "localhost")) }}
{{- fail (printf "serviceMonitor.enabled: config.metrics.listen %q is loopback, which Prometheus cannot scrape; use 0.0.0.0:%s and firewall the port" (include "intransit.metricsListen" .) (include "intransit.metricsPort" .)) }}
{{- end }}
{{- end }}
