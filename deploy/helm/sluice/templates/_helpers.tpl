{{/*
Names and labels shared by every template. tests/deploy (scripts/check-deploy) renders the
chart with Helm's own Go SDK (the helm-python-sdk wheel) and checks it against the binary.
*/}}

{{- define "sluice.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sluice.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if eq .Release.Name (include "sluice.name" .) -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "sluice.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sluice.controlPlane.fullname" -}}
{{- printf "%s-control-plane" (include "sluice.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sluice.proxy.fullname" -}}
{{- printf "%s-proxy" (include "sluice.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sluice.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sluice.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sluice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sluice.labels" -}}
helm.sh/chart: {{ include "sluice.chart" . }}
{{ include "sluice.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sluice
{{- end -}}

{{- define "sluice.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The Secret holding tokens and the database URL: made by the chart or brought by you. */}}
{{- define "sluice.secretName" -}}
{{- default (printf "%s-secrets" (include "sluice.fullname" .)) .Values.secrets.name -}}
{{- end -}}

{{/* URL the proxies follow: the chart's control-plane Service unless set. */}}
{{- define "sluice.controlPlaneUrl" -}}
{{- default (printf "http://%s:%d" (include "sluice.controlPlane.fullname" .) (int .Values.controlPlane.grpcPort)) .Values.proxy.controlPlaneUrl -}}
{{- end -}}

{{/*
OTEL_* variables of one component's container (a list of EnvVar, indented by the caller).
Called with (dict "root" $ "serviceName" NAME). With telemetry.otlpEndpoint set: the endpoint,
the service name, resource attributes naming the pod (service.instance.id keeps the replicas'
metric series apart in the backend) and the optional sampler and interval; telemetry.extraEnv
whenever it is set.
*/}}
{{- define "sluice.otelEnv" -}}
{{- $root := .root -}}
{{- $t := $root.Values.telemetry -}}
{{- if $t.otlpEndpoint }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $t.otlpEndpoint | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ .serviceName | quote }}
{{- $attributes := list "service.instance.id=$(POD_NAME)" "k8s.pod.name=$(POD_NAME)" (printf "k8s.namespace.name=%s" $root.Release.Namespace) (printf "service.version=%s" (default $root.Chart.AppVersion $root.Values.image.tag)) }}
{{- range $key, $value := $t.resourceAttributes }}
{{- $attributes = append $attributes (printf "%s=%v" $key $value) }}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $attributes | quote }}
{{- with $t.sampler }}
- name: OTEL_TRACES_SAMPLER
  value: {{ . | quote }}
{{- end }}
{{- with $t.samplerArg }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ . | quote }}
{{- end }}
{{- with $t.metricExportIntervalMs }}
- name: OTEL_METRIC_EXPORT_INTERVAL
  value: {{ . | int | quote }}
{{- end }}
{{- end }}
{{- with $t.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* SLUICE_AZURE_CREDENTIAL, SLUICE_KEYVAULT_URL_TEMPLATE and SLUICE_SECRET_REFRESH_SECS of the
proxy container, each only when set. */}}
{{- define "sluice.azureEnv" -}}
{{- $azure := .Values.azure -}}
{{- with $azure.credential }}
{{- $kinds := list "auto" "client-secret" "client-certificate" "workload-identity" "managed-identity" "azure-cli" }}
{{- if not (has . $kinds) }}
{{- fail (printf "azure.credential must be one of %s (got %q)" (join ", " $kinds) .) }}
{{- end }}
- name: SLUICE_AZURE_CREDENTIAL
  value: {{ . | quote }}
{{- end }}
{{- with $azure.keyvaultUrlTemplate }}
{{- if not (and (hasPrefix "https://" .) (contains "{vault}" .)) }}
{{- fail (printf "azure.keyvaultUrlTemplate must be an https:// URL containing {vault} (got %q)" .) }}
{{- end }}
- name: SLUICE_KEYVAULT_URL_TEMPLATE
  value: {{ . | quote }}
{{- end }}
{{- with $azure.secretRefreshSecs }}
{{- if lt (int .) 1 }}
{{- fail (printf "azure.secretRefreshSecs must be a positive number of seconds (got %v)" .) }}
{{- end }}
- name: SLUICE_SECRET_REFRESH_SECS
  value: {{ . | int | quote }}
{{- end }}
{{- end -}}

{{/* SLUICE_REDIS_URL (a plain value, or from redis.existingSecret) and SLUICE_LIMITS_SYNC_MS of
the proxy container, each only when set. A password never goes into a plain value. */}}
{{- define "sluice.redisEnv" -}}
{{- $redis := .Values.redis -}}
{{- if and $redis.url $redis.existingSecret }}
{{- fail "set redis.url or redis.existingSecret, not both" }}
{{- end }}
{{- with $redis.url }}
{{- range $seed := splitList "," . }}
{{- if not (regexMatch `^rediss?://[^\s/?#]+` (trim $seed)) }}
{{- fail "redis.url: each comma-separated URL must be redis://HOST:PORT or rediss://HOST:PORT" }}
{{- end }}
{{- if regexMatch `^rediss?://[^/@]*:[^/@]*@` (trim $seed) }}
{{- fail "redis.url holds a password: put the whole URL in a Secret and set redis.existingSecret (and redis.secretKey) instead" }}
{{- end }}
{{- end }}
- name: SLUICE_REDIS_URL
  value: {{ . | quote }}
{{- end }}
{{- with $redis.existingSecret }}
{{- if not $redis.secretKey }}
{{- fail "redis.secretKey: the key of redis.existingSecret that holds the URL" }}
{{- end }}
- name: SLUICE_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: {{ $redis.secretKey | quote }}
{{- end }}
{{- with $redis.syncMs }}
{{- if or (lt (int .) 10) (gt (int .) 10000) }}
{{- fail (printf "redis.syncMs must be between 10 and 10000 milliseconds (got %v)" .) }}
{{- end }}
- name: SLUICE_LIMITS_SYNC_MS
  value: {{ . | int | quote }}
{{- end }}
{{- end -}}
