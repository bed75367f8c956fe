{{/*
Naming: objects are named after the release, so several releases (spokes) can share a cluster and a namespace.
The fullname is the release name when it already contains the chart name ("wormhole-server" stays
"wormhole-server"), otherwise "<chart>-<release>": releases "server" and "client" — the ones glothriel/wormhole's
tests and docs use — give "wormhole-server" and "wormhole-client", the reference's own names.
Capped at 52 characters so "<fullname>-metrics" stays a valid Service name (63).
*/}}
{{- define "wormhole.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" $name .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Cluster-scoped objects (ClusterRole, ClusterRoleBinding) also carry the namespace: releases of the same name in
two namespaces must not fight over them. */}}
{{- define "wormhole.clusterName" -}}
{{- printf "%s-%s" (include "wormhole.fullname" .) .Release.Namespace -}}
{{- end -}}

{{/* "server" or "client": which side this release runs (one per release). Empty when neither is enabled. */}}
{{- define "wormhole.role" -}}
{{- if and .Values.server.enabled .Values.client.enabled -}}
{{- fail "server.enabled and client.enabled are both true: install the hub and each spoke as separate releases (one side per release)." -}}
{{- else if .Values.server.enabled -}}
server
{{- else if .Values.client.enabled -}}
client
{{- end -}}
{{- end -}}

{{- define "wormhole.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* What selects our pod, also passed as --kubernetes-labels: the generated Services select the same pod. */}}
{{- define "wormhole.selectorLabels" -}}
application: {{ include "wormhole.fullname" . }}
{{- end -}}

{{- define "wormhole.labels" -}}
helm.sh/chart: {{ include "wormhole.chart" . }}
app.kubernetes.io/name: {{ default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/component: {{ include "wormhole.role" . }}
app.kubernetes.io/part-of: wormhole
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The side's image; the tag is docker.version, or the chart's appVersion when that is empty. */}}
{{- define "wormhole.image" -}}
{{- $repository := ternary .Values.docker.image .Values.docker.clientImage (eq (include "wormhole.role" .) "server") -}}
{{- $tag := include "wormhole.str" .Values.docker.version | default .Chart.AppVersion -}}
{{- if .Values.docker.registry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" .Values.docker.registry) $repository $tag -}}
{{- else -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}
{{- end -}}

{{/* docker.pullSecrets (the documented key, unused by glothriel/wormhole's templates) and docker.imagePullSecrets
(the key those templates read), each a list of names or {name: ...}; duplicates dropped. */}}
{{- define "wormhole.imagePullSecrets" -}}
{{- $names := list -}}
{{- range (concat (.Values.docker.pullSecrets | default list) (.Values.docker.imagePullSecrets | default list)) -}}
{{- $name := . -}}
{{- if kindIs "map" . }}{{ $name = .name }}{{ end -}}
{{- if and $name (not (has $name $names)) -}}
{{- $names = append $names $name -}}
{{- end -}}
{{- end -}}
{{- if $names -}}
imagePullSecrets:
{{- range $names }}
  - name: {{ . | quote }}
{{- end }}
{{- end -}}
{{- end -}}

{{/* The checks that need a clear sentence rather than a schema error. */}}
{{- define "wormhole.validate" -}}
{{- $role := include "wormhole.role" . -}}
{{- if eq $role "server" -}}
{{- $_ := required "Please set server.wg.publicHost: the address or DNS name spokes dial for WireGuard (the LoadBalancer's address, or <service>.<namespace>.svc.cluster.local for spokes in this cluster), e.g. --set server.wg.publicHost=hub.example.com" .Values.server.wg.publicHost -}}
{{- else if eq $role "client" -}}
{{- $_ := required "Please set client.name: this spoke's peer name, a DNS label unique per hub, e.g. --set client.name=site-b" .Values.client.name -}}
{{- $_ := required "Please set client.serverDsn: the hub's pairing URL, e.g. --set client.serverDsn=http://<server.wg.publicHost>:8080" .Values.client.serverDsn -}}
{{- end -}}
{{- end -}}

{{/* A value as the string a user meant: --set turns 12345678 into an int, a values file into a float64. */}}
{{- define "wormhole.str" -}}
{{- if kindIs "float64" . -}}
{{- if eq (floor .) . }}{{ printf "%.0f" . }}{{ else }}{{ toString . }}{{ end -}}
{{- else if kindIs "invalid" . -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}
