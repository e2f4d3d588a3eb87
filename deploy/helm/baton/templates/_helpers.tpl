{{/* The release's name prefix, at most 63 characters. */}}
{{- define "baton.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "baton.etcdName" -}}
{{- printf "%s-etcd" (include "baton.fullname" .) | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{- define "baton.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: baton
{{- end -}}

{{/* The labels of an object that is neither a worker's nor etcd's. */}}
{{- define "baton.otherLabels" -}}
{{ include "baton.labels" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "baton.workerSelector" -}}
app.kubernetes.io/name: baton-worker
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "baton.authJobSelector" -}}
app.kubernetes.io/name: baton-etcd-auth
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "baton.etcdSelector" -}}
app.kubernetes.io/name: baton-etcd
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The etcd scheme: https with TLS on. */}}
{{- define "baton.etcdScheme" -}}
{{- if .Values.etcd.tls.enabled }}https{{ else }}http{{ end -}}
{{- end -}}

{{/* The client URLs the sidecars use, comma separated. */}}
{{- define "baton.etcdEndpoints" -}}
{{- if .Values.etcd.enabled -}}
{{- $name := include "baton.etcdName" . -}}
{{- $scheme := include "baton.etcdScheme" . -}}
{{- $urls := list -}}
{{- range $i := until (int .Values.etcd.replicas) -}}
{{- $urls = append $urls (printf "%s://%s-%d.%s-headless.%s.svc:2379" $scheme $name $i $name $.Release.Namespace) -}}
{{- end -}}
{{- join "," $urls -}}
{{- else -}}
{{- required "etcd.endpoints: give the client URLs of the existing etcd cluster (or etcd.enabled: true)" (join "," .Values.etcd.endpoints) -}}
{{- end -}}
{{- end -}}

{{- define "baton.etcdUser" -}}
{{- default (printf "%s-baton" .Release.Name) .Values.etcd.auth.user -}}
{{- end -}}

{{- define "baton.userSecret" -}}
{{- default (printf "%s-etcd-user" (include "baton.fullname" .)) .Values.etcd.auth.passwordSecret -}}
{{- end -}}

{{- define "baton.rootSecret" -}}
{{- default (printf "%s-etcd-root" (include "baton.fullname" .)) .Values.etcd.auth.rootPasswordSecret -}}
{{- end -}}

{{/* The auth Job runs: with the chart's etcd, or a root password given. */}}
{{- define "baton.authJob" -}}
{{- if and .Values.etcd.auth.enabled (or .Values.etcd.enabled .Values.etcd.auth.rootPasswordSecret) }}true{{ end -}}
{{- end -}}

{{/*
The backlog query: pending plus claimed tasks of the release's queues. Only
the elected scheduler sidecar samples baton_queue_depth_tasks; a sidecar
whose term ended reports 0, so the max over sidecars of each (queue, state)
is the fleet's one value. The same expression is the recording rule
baton:queue_backlog:tasks in deploy/observability/baton-rules.yml.
*/}}
{{- define "baton.backlogQuery" -}}
sum(max by (queue, state) (baton_queue_depth_tasks{namespace="{{ .Release.Namespace }}", queue=~"{{ join "|" .Values.queues }}", state=~"pending|claimed"}))
{{- end -}}

{{- define "baton.validate" -}}
{{- if not .Values.queues -}}{{- fail "queues: give at least one queue" -}}{{- end -}}
{{- if or (contains "/" .Values.namespace) (eq .Values.namespace "") -}}{{- fail "namespace: one name without \"/\" (baton --namespace)" -}}{{- end -}}
{{- if and .Values.autoscaling.keda.enabled .Values.autoscaling.hpa.enabled -}}{{- fail "autoscaling: turn on keda or hpa, not both" -}}{{- end -}}
{{- if and .Values.etcd.tls.enabled (not .Values.etcd.tls.clientSecret) -}}{{- fail "etcd.tls.clientSecret: the Secret with the sidecars' client certificate (ca.crt, tls.crt, tls.key)" -}}{{- end -}}
{{- if and .Values.etcd.enabled .Values.etcd.tls.enabled (not .Values.etcd.tls.serverSecret) -}}{{- fail "etcd.tls.serverSecret: the Secret with the members' certificate (ca.crt, tls.crt, tls.key)" -}}{{- end -}}
{{- if and .Values.etcd.enabled (lt (int .Values.etcd.replicas) 1) -}}{{- fail "etcd.replicas: at least 1 (3 or 5 in production)" -}}{{- end -}}
{{- if and .Values.etcd.auth.enabled (not .Values.etcd.enabled) (not .Values.etcd.auth.passwordSecret) (not .Values.etcd.auth.rootPasswordSecret) -}}{{- fail "etcd.auth.passwordSecret: with an existing etcd, the Secret holding the password of etcd.auth.user (or etcd.auth.rootPasswordSecret for the chart to create the user)" -}}{{- end -}}
{{- end -}}
