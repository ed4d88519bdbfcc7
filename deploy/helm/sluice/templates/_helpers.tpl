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

{{- define "sluice.proxy.opsFullname" -}}
{{- printf "%s-proxy-ops" (include "sluice.fullname" .) | trunc 63 | trimSuffix "-" -}}
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

{{/* The Secret the database URL is read from: the tokens' Secret unless databaseUrlSecret. */}}
{{- define "sluice.databaseUrlSecretName" -}}
{{- default (include "sluice.secretName" .) .Values.secrets.databaseUrlSecret -}}
{{- end -}}

{{/* One env entry (a list item) read from a Secret: (dict "name" VAR "secret" NAME "key" KEY). */}}
{{- define "sluice.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secret | quote }}
      key: {{ .key | quote }}
{{- end -}}

{{/*
Pod annotations that restart a component when something it reads at start changes outside its
pod template: checksum/secret over the values it reads from a Secret the chart makes (called
with (dict "root" $ "secretValues" LIST)), checksum/config over the CA bundle ConfigMap.
*/}}
{{- define "sluice.checksums" -}}
{{- $root := .root -}}
{{- if $root.Values.secrets.create }}
checksum/secret: {{ toJson (list .secretValues $root.Values.secrets.keys) | sha256sum }}
{{- end }}
{{- if and $root.Values.grpcTls.enabled $root.Values.grpcTls.caBundle }}
checksum/config: {{ include (print $root.Template.BasePath "/grpc-ca-configmap.yaml") $root | sha256sum }}
{{- end }}
{{- end -}}

{{/* URL the proxies follow: the chart's control-plane Service unless set. */}}
{{- define "sluice.controlPlaneUrl" -}}
{{- $scheme := ternary "https" "http" .Values.grpcTls.enabled -}}
{{- if .Values.proxy.controlPlaneUrl -}}
{{- if and .Values.grpcTls.enabled (not (hasPrefix "https://" .Values.proxy.controlPlaneUrl)) -}}
{{- fail "proxy.controlPlaneUrl must be an https:// URL while grpcTls.enabled is true" -}}
{{- end -}}
{{- .Values.proxy.controlPlaneUrl -}}
{{- else if .Values.controlPlane.enabled -}}
{{- printf "%s://%s:%d" $scheme (include "sluice.controlPlane.fullname" .) (int .Values.controlPlane.grpcPort) -}}
{{- else -}}
{{- fail "proxy.controlPlaneUrl is required when controlPlane.enabled is false (the gRPC URL of the control plane the proxies follow)" -}}
{{- end -}}
{{- end -}}

{{/* gRPC TLS: Secret and ConfigMap names, and where the pods mount them. */}}
{{- define "sluice.grpcTls.serverSecret" -}}
{{- default (printf "%s-grpc-server" (include "sluice.fullname" .)) .Values.grpcTls.serverSecret -}}
{{- end -}}

{{- define "sluice.grpcTls.clientSecret" -}}
{{- default (printf "%s-grpc-client" (include "sluice.fullname" .)) .Values.grpcTls.clientSecret -}}
{{- end -}}

{{- define "sluice.grpcTls.caConfigMap" -}}
{{- printf "%s-grpc-ca" (include "sluice.fullname" .) -}}
{{- end -}}

{{- define "sluice.grpcTls.dir" -}}/etc/sluice/grpc{{- end -}}

{{/*
The CA file proxies verify the control plane with: the caBundle ConfigMap, else the ca.crt of
their client Secret (clientAuth), else the ca.crt of the release's server Secret (projected
alone, never its key). Proxies following another release's control plane need one of the first
two.
*/}}
{{- define "sluice.grpcTls.proxyCaFile" -}}
{{- $dir := include "sluice.grpcTls.dir" . -}}
{{- if .Values.grpcTls.caBundle -}}
{{- printf "%s/ca/ca.crt" $dir -}}
{{- else if .Values.grpcTls.clientAuth -}}
{{- printf "%s/client/ca.crt" $dir -}}
{{- else if .Values.controlPlane.enabled -}}
{{- printf "%s/ca/ca.crt" $dir -}}
{{- else -}}
{{- fail "grpcTls: proxies following another release's control plane need a CA: set grpcTls.caBundle, or grpcTls.clientAuth with a client Secret holding ca.crt (or leave grpcTls off and use an https:// proxy.controlPlaneUrl that the system's roots verify)" -}}
{{- end -}}
{{- end -}}

{{/* Control-plane args for gRPC TLS (list items, indented by the caller). */}}
{{- define "sluice.grpcTls.controlPlaneArgs" -}}
{{- if .Values.grpcTls.enabled }}
{{- $dir := include "sluice.grpcTls.dir" . }}
- --grpc-tls-cert
- {{ printf "%s/server/tls.crt" $dir | quote }}
- --grpc-tls-key
- {{ printf "%s/server/tls.key" $dir | quote }}
{{- if .Values.grpcTls.clientAuth }}
- --grpc-client-ca
- {{ ternary (printf "%s/ca/ca.crt" $dir) (printf "%s/server/ca.crt" $dir) (not (empty .Values.grpcTls.caBundle)) | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Proxy args for gRPC TLS (list items, indented by the caller). */}}
{{- define "sluice.grpcTls.proxyArgs" -}}
{{- if .Values.grpcTls.enabled }}
{{- $dir := include "sluice.grpcTls.dir" . }}
- --control-plane-ca
- {{ include "sluice.grpcTls.proxyCaFile" . | quote }}
{{- if .Values.grpcTls.clientAuth }}
- --client-cert
- {{ printf "%s/client/tls.crt" $dir | quote }}
- --client-key
- {{ printf "%s/client/tls.key" $dir | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* gRPC TLS volumes and mounts of one component: (dict "root" $ "component" "proxy"|"control-plane" "part" "volumes"|"mounts"). */}}
{{- define "sluice.grpcTls.volumes" -}}
{{- $root := .root -}}
{{- $tls := $root.Values.grpcTls -}}
{{- if $tls.enabled }}
{{- $dir := include "sluice.grpcTls.dir" $root }}
{{- $volumes := list }}
{{- if eq .component "control-plane" }}
{{- $volumes = append $volumes (dict "name" "grpc-server" "path" (printf "%s/server" $dir) "secret" (include "sluice.grpcTls.serverSecret" $root)) }}
{{- else }}
{{- if $tls.clientAuth }}
{{- $volumes = append $volumes (dict "name" "grpc-client" "path" (printf "%s/client" $dir) "secret" (include "sluice.grpcTls.clientSecret" $root)) }}
{{- else if not $tls.caBundle }}
{{- $volumes = append $volumes (dict "name" "grpc-ca" "path" (printf "%s/ca" $dir) "secret" (include "sluice.grpcTls.serverSecret" $root) "items" (list "ca.crt")) }}
{{- end }}
{{- end }}
{{- if and $tls.caBundle (or (eq .component "proxy") $tls.clientAuth) }}
{{- $volumes = append $volumes (dict "name" "grpc-ca" "path" (printf "%s/ca" $dir) "configMap" (include "sluice.grpcTls.caConfigMap" $root)) }}
{{- end }}
{{- range $volumes }}
{{- if eq $.part "mounts" }}
- name: {{ .name }}
  mountPath: {{ .path | quote }}
  readOnly: true
{{- else }}
- name: {{ .name }}
  {{- if .configMap }}
  configMap:
    name: {{ .configMap | quote }}
  {{- else }}
  secret:
    secretName: {{ .secret | quote }}
    {{- with .items }}
    items:
      {{- range . }}
      - key: {{ . }}
        path: {{ . }}
      {{- end }}
    {{- end }}
  {{- end }}
{{- end }}
{{- end }}
{{- end }}
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
- name: SLUICE_AZURE_CREDENTIAL
  value: {{ . | quote }}
{{- end }}
{{- with $azure.keyvaultUrlTemplate }}
- name: SLUICE_KEYVAULT_URL_TEMPLATE
  value: {{ . | quote }}
{{- end }}
{{- with $azure.secretRefreshSecs }}
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
- name: SLUICE_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: {{ $redis.secretKey | quote }}
{{- end }}
{{- with $redis.syncMs }}
- name: SLUICE_LIMITS_SYNC_MS
  value: {{ . | int | quote }}
{{- end }}
{{- end -}}

{{/*
HTTPS on a component's own listener (proxy client port, control-plane admin port), from
proxy.tls / controlPlane.tls. Called with (dict "root" $ "component" "proxy"|"control-plane").
*/}}
{{- define "sluice.tls.values" -}}
{{- toJson (ternary .root.Values.proxy.tls .root.Values.controlPlane.tls (eq .component "proxy")) -}}
{{- end -}}

{{/* The kubernetes.io/tls Secret a component serves with; default "<fullname>-<component>-tls". */}}
{{- define "sluice.tls.secretName" -}}
{{- $tls := include "sluice.tls.values" . | fromJson -}}
{{- default (printf "%s-%s-tls" (include "sluice.fullname" .root) .component) $tls.secretName -}}
{{- end -}}

{{- define "sluice.tls.dir" -}}/etc/sluice/tls{{- end -}}

{{/* SLUICE_TLS_CERT / SLUICE_TLS_KEY of a component's container (list items), only with TLS on. */}}
{{- define "sluice.tls.env" -}}
{{- $tls := include "sluice.tls.values" . | fromJson -}}
{{- if $tls.enabled }}
{{- $dir := include "sluice.tls.dir" .root }}
- name: SLUICE_TLS_CERT
  value: {{ printf "%s/tls.crt" $dir | quote }}
- name: SLUICE_TLS_KEY
  value: {{ printf "%s/tls.key" $dir | quote }}
{{- end }}
{{- end -}}

{{/*
The serving certificate's volume or its mount ("part": "volumes"|"mounts"), only with TLS on.
A whole-directory mount, never subPath: the kubelet swaps the files in place on renewal and
Sluice re-reads them, which a subPath mount would never show it.
*/}}
{{- define "sluice.tls.volume" -}}
{{- $tls := include "sluice.tls.values" . | fromJson -}}
{{- if $tls.enabled }}
{{- if eq .part "mounts" }}
- name: tls
  mountPath: {{ include "sluice.tls.dir" .root | quote }}
  readOnly: true
{{- else }}
- name: tls
  secret:
    secretName: {{ include "sluice.tls.secretName" . | quote }}
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- end }}
{{- end }}
{{- end -}}

{{/* Name and appProtocol of the proxies' client port: https once they serve TLS themselves. */}}
{{- define "sluice.proxy.clientPortName" -}}
{{- ternary "https" "http" .Values.proxy.tls.enabled -}}
{{- end -}}

{{/* SLUICE_WORKERS and SLUICE_MAX_CONCURRENT_REQUESTS of the proxy container, each only when set. */}}
{{- define "sluice.proxy.concurrencyEnv" -}}
{{- with .Values.proxy.workers }}
- name: SLUICE_WORKERS
  value: {{ . | int | quote }}
{{- end }}
{{- with .Values.proxy.maxConcurrentRequests }}
- name: SLUICE_MAX_CONCURRENT_REQUESTS
  value: {{ . | int | quote }}
{{- end }}
{{- end -}}
