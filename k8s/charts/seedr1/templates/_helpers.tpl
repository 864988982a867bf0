{{/* Names ---------------------------------------------------------------------------------------------------- */}}
{{- define "seedr1.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "seedr1.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "seedr1.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "seedr1.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "seedr1.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "seedr1.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Labels (app.kubernetes.io/*) -------------------------------------------------------------------------------- */}}
{{- define "seedr1.selectorLabels" -}}
app.kubernetes.io/name: {{ include "seedr1.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "seedr1.labels" -}}
helm.sh/chart: {{ include "seedr1.chart" . }}
{{ include "seedr1.selectorLabels" . }}
app.kubernetes.io/version: {{ default .Chart.AppVersion .Values.image.tag | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: seedr1
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels with a component: (dict "ctx" $ "component" "training-grpo") */}}
{{- define "seedr1.componentLabels" -}}
{{ include "seedr1.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Paths inside the containers ---------------------------------------------------------------------------------- */}}
{{- define "seedr1.configDir" -}}/etc/seedr1/config{{- end -}}
{{- define "seedr1.apiKeysDir" -}}/etc/seedr1/api-keys{{- end -}}

{{/* Rendered job configs (the YAML files in the ConfigMap) ------------------------------------------------------- */}}
{{/* Sets data.shards or data.root of a job config (dict cfg, data: {uri, format}); the other one is emptied. */}}
{{- define "seedr1.setData" -}}
{{- $d := deepCopy (default dict (get .cfg "data")) -}}
{{- if eq .data.format "shards" -}}
{{- $_ := set $d "shards" .data.uri -}}
{{- $_ := set $d "root" "" -}}
{{- else -}}
{{- $_ := set $d "root" .data.uri -}}
{{- $_ := set $d "shards" "" -}}
{{- end -}}
{{- $_ := set .cfg "data" $d -}}
{{- end -}}

{{/* Credentials travel by Secret reference only: a literal key in a job config would land in a plain ConfigMap. */}}
{{- define "seedr1.noLiteralSecrets" -}}
{{- $found := list -}}
{{- if get .cfg "api_key" }}{{ $found = append $found "api_key" }}{{ end -}}
{{- $top := get .cfg "s3" | default dict -}}
{{- $data := get (get .cfg "data" | default dict) "s3" | default dict -}}
{{- range $k := list "access_key" "secret_key" "session_token" -}}
{{- if and (kindIs "map" $top) (get $top $k) }}{{ $found = append $found (printf "s3.%s" $k) }}{{ end -}}
{{- if and (kindIs "map" $data) (get $data $k) }}{{ $found = append $found (printf "data.s3.%s" $k) }}{{ end -}}
{{- end -}}
{{- if $found -}}
{{- fail (printf "%s sets %s: credentials never go into the ConfigMap; give them by Secret (s3.existingSecret, serving.apiKey, evaluation.apiKey)" .key (join ", " $found)) -}}
{{- end -}}
{{- end -}}

{{/* Serve replica bounds: KubeRay would refuse them only at reconcile time, Serve would pin the minimum. */}}
{{- define "seedr1.checkServeReplicas" -}}
{{- $s := .Values.serving -}}
{{- if gt (int $s.autoscaling.minReplicas) (int $s.autoscaling.maxReplicas) -}}
{{- fail (printf "serving.autoscaling.minReplicas (%v) is above serving.autoscaling.maxReplicas (%v)" $s.autoscaling.minReplicas $s.autoscaling.maxReplicas) -}}
{{- end -}}
{{- $w := $s.workers -}}
{{- if or (gt (int $w.minReplicas) (int $w.maxReplicas)) (lt (int $w.replicas) (int $w.minReplicas)) (gt (int $w.replicas) (int $w.maxReplicas)) -}}
{{- fail (printf "serving.workers: need minReplicas <= replicas <= maxReplicas, got %v <= %v <= %v" $w.minReplicas $w.replicas $w.maxReplicas) -}}
{{- end -}}
{{- end -}}

{{/*
A job config's group (rollout | trainer) placed on its own worker group: node_labels {seedr1.io/group: <group>},
the Ray label the chart gives that worker group's nodes, unless the config names labels itself. Args: dict cfg, group.
*/}}
{{- define "seedr1.groupLabels" -}}
{{- $section := deepCopy (default dict (get .cfg .group)) -}}
{{- if not (hasKey $section "node_labels") }}{{ $_ := set $section "node_labels" (dict "seedr1.io/group" .group) }}{{ end -}}
{{- $_ := set .cfg .group $section -}}
{{- end -}}

{{- define "seedr1.grpoConfig" -}}
{{- $g := .Values.training.grpo -}}
{{- $cfg := deepCopy (default dict $g.config) -}}
{{- $ckpt := merge (dict "dir" $g.checkpointDir) (deepCopy (default dict (get $cfg "checkpoint"))) -}}
{{- $_ := set $cfg "checkpoint" $ckpt -}}
{{- if not (hasKey $cfg "run_dir") }}{{ $_ := set $cfg "run_dir" (printf "/tmp/seedr1/runs/%s-grpo" (include "seedr1.fullname" $)) }}{{ end -}}
{{- include "seedr1.groupLabels" (dict "cfg" $cfg "group" "rollout") -}}
{{- include "seedr1.groupLabels" (dict "cfg" $cfg "group" "trainer") -}}
{{- $_ := include "seedr1.setData" (dict "cfg" $cfg "data" $g.data) -}}
{{- include "seedr1.noLiteralSecrets" (dict "cfg" $cfg "key" "training.grpo.config") -}}
{{- toYaml $cfg -}}
{{- end -}}

{{- define "seedr1.sftConfig" -}}
{{- $s := .Values.training.sft -}}
{{- $cfg := deepCopy (default dict $s.config) -}}
{{- $ckpt := merge (dict "dir" $s.checkpointDir) (deepCopy (default dict (get $cfg "checkpoint"))) -}}
{{- $_ := set $cfg "checkpoint" $ckpt -}}
{{- if not (hasKey $cfg "run_dir") }}{{ $_ := set $cfg "run_dir" (printf "/tmp/seedr1/runs/%s-sft" (include "seedr1.fullname" $)) }}{{ end -}}
{{- include "seedr1.groupLabels" (dict "cfg" $cfg "group" "trainer") -}}
{{- $_ := include "seedr1.setData" (dict "cfg" $cfg "data" $s.data) -}}
{{- include "seedr1.noLiteralSecrets" (dict "cfg" $cfg "key" "training.sft.config") -}}
{{- toYaml $cfg -}}
{{- end -}}

{{- define "seedr1.serveConfig" -}}
{{- $s := .Values.serving -}}
{{- $cfg := deepCopy (default dict $s.config) -}}
{{- $_ := set $cfg "model" $s.model -}}
{{- $_ := set $cfg "host" "0.0.0.0" -}}
{{- $_ := set $cfg "port" 8000 -}}
{{- $_ := set $cfg "auth" "key" -}}
{{- $_ := set $cfg "api_keys_file" (printf "%s/keys" (include "seedr1.apiKeysDir" .)) -}}
{{- $_ := set $cfg "min_replicas" $s.autoscaling.minReplicas -}}
{{- $_ := set $cfg "max_replicas" $s.autoscaling.maxReplicas -}}
{{- $_ := set $cfg "target_ongoing_requests" $s.autoscaling.targetOngoingRequests -}}
{{- include "seedr1.checkServeReplicas" . -}}
{{- include "seedr1.noLiteralSecrets" (dict "cfg" $cfg "key" "serving.config") -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* The Serve application's route prefix without its trailing slash ("" for "/"): the API is under <prefix>/v1. */}}
{{- define "seedr1.routePrefix" -}}
{{- trimSuffix "/" (default "/" (get (default dict .Values.serving.config) "route_prefix")) -}}
{{- end -}}

{{- define "seedr1.evaluateEndpoint" -}}
{{- if .Values.evaluation.endpoint -}}
{{- .Values.evaluation.endpoint -}}
{{- else if not .Values.serving.enabled -}}
{{- fail "evaluation.target=endpoint needs evaluation.endpoint or serving.enabled=true (this release's endpoint)" -}}
{{- else -}}
{{- printf "http://%s-serve.%s.svc:%v%s/v1" (include "seedr1.fullname" .) .Release.Namespace .Values.serving.service.port (include "seedr1.routePrefix" .) -}}
{{- end -}}
{{- end -}}

{{- define "seedr1.evaluateConfig" -}}
{{- $e := .Values.evaluation -}}
{{- $cfg := deepCopy (default dict $e.config) -}}
{{- $_ := set $cfg "out_dir" "/tmp/seedr1/eval" -}}
{{- $_ := include "seedr1.setData" (dict "cfg" $cfg "data" $e.data) -}}
{{- if eq $e.target "endpoint" -}}
{{- $_ := set $cfg "endpoint" (include "seedr1.evaluateEndpoint" .) -}}
{{- if not (hasKey $cfg "served_model") }}{{ $_ := set $cfg "served_model" (default "seedr1" (get (default dict .Values.serving.config) "served_model_name")) }}{{ end -}}
{{- else -}}
{{- $_ := set $cfg "model" $e.model -}}
{{- end -}}
{{- include "seedr1.noLiteralSecrets" (dict "cfg" $cfg "key" "evaluation.config") -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* Container pieces ------------------------------------------------------------------------------------------- */}}
{{/* Environment of every seedr1 container: S3 endpoint and credentials by reference, seedr1's cache under /tmp. */}}
{{- define "seedr1.env" -}}
- name: SEEDR1_CACHE
  value: /tmp/seedr1/cache
{{- with .Values.s3.endpointUrl }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.s3.region }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
{{- if .Values.s3.existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .Values.s3.existingSecret }}
      key: {{ .Values.s3.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.s3.existingSecret }}
      key: {{ .Values.s3.secretAccessKeyKey }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "seedr1.podSpecCommon" -}}
serviceAccountName: {{ include "seedr1.serviceAccountName" . }}
automountServiceAccountToken: false
{{ include "seedr1.podSpecSecurity" . }}
{{- end -}}

{{/* Pod security and pull secrets without a ServiceAccount: the head of an autoscaling Ray cluster runs KubeRay's
autoscaler sidecar, which needs the ServiceAccount (and RBAC) that KubeRay creates when the template names none. */}}
{{- define "seedr1.podSpecSecurity" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- end -}}

{{- define "seedr1.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
A Ray pod template (head or worker group). Args: dict
  ctx: root context, group: the group's values, component, container: ray-head | ray-worker,
  apiKeys: mount the serving API key Secret, ports: container ports (head only).
*/}}
{{- define "seedr1.rayPodTemplate" -}}
{{- $ctx := .ctx -}}
metadata:
  labels:
    {{- include "seedr1.componentLabels" (dict "ctx" $ctx "component" .component) | nindent 4 }}
    seedr1.io/ray-group: {{ .rayGroup }}
spec:
  {{- if .autoscalerHead }}
  {{- include "seedr1.podSpecSecurity" $ctx | nindent 2 }}
  {{- else }}
  {{- include "seedr1.podSpecCommon" $ctx | nindent 2 }}
  {{- end }}
  {{- with (include "seedr1.scheduling" .group | trim) }}
  {{- . | nindent 2 }}
  {{- end }}
  containers:
    - name: {{ .container }}
      image: {{ include "seedr1.image" $ctx }}
      imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
      workingDir: {{ $ctx.Values.image.workdir }}
      securityContext:
        {{- toYaml $ctx.Values.securityContext | nindent 8 }}
      resources:
        {{- toYaml .group.resources | nindent 8 }}
      env:
        {{- include "seedr1.env" $ctx | nindent 8 }}
      {{- if eq .container "ray-head" }}
      ports:
        - {name: gcs-server, containerPort: 6379}
        - {name: dashboard, containerPort: 8265}
        - {name: client, containerPort: 10001}
        - {name: metrics, containerPort: 8080}
        {{- if .serve }}
        - {name: serve, containerPort: 8000}
        {{- end }}
      {{- else if .serve }}
      ports:
        - {name: metrics, containerPort: 8080}
        - {name: serve, containerPort: 8000}
      {{- else }}
      ports:
        - {name: metrics, containerPort: 8080}
      {{- end }}
      volumeMounts:
        - {name: config, mountPath: {{ include "seedr1.configDir" $ctx }}, readOnly: true}
        - {name: tmp, mountPath: /tmp}
        - {name: dshm, mountPath: /dev/shm}
        {{- if .apiKeys }}
        - {name: api-keys, mountPath: {{ include "seedr1.apiKeysDir" $ctx }}, readOnly: true}
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "seedr1.fullname" $ctx }}-config
    - name: tmp
      emptyDir: {}
    - name: dshm
      emptyDir:
        medium: Memory
        sizeLimit: {{ $ctx.Values.shmSizeLimit }}
    {{- if .apiKeys }}
    - name: api-keys
      secret:
        secretName: {{ $ctx.Values.serving.apiKey.existingSecret }}
        items:
          - {key: {{ $ctx.Values.serving.apiKey.key }}, path: keys}
    {{- end }}
{{- end -}}

{{/* rayStartParams of a head: the dashboard listens on all interfaces (the job submitter reaches it). */}}
{{- define "seedr1.headStartParams" -}}
{{- $p := merge (dict "dashboard-host" "0.0.0.0") (default dict .) -}}
{{- toYaml $p -}}
{{- end -}}

{{/*
A training RayJob. Args: dict ctx, kind (grpo | sft), run (its values), groups (list of dicts name/values).
*/}}
{{- define "seedr1.trainingRayJob" -}}
{{- $ctx := .ctx -}}
{{- $run := .run -}}
{{- $component := printf "training-%s" .kind -}}
apiVersion: ray.io/v1
kind: RayJob
metadata:
  name: {{ include "seedr1.fullname" $ctx }}-{{ .kind }}
  labels:
    {{- include "seedr1.componentLabels" (dict "ctx" $ctx "component" $component) | nindent 4 }}
spec:
  entrypoint: {{ printf "python %s/jobs/%s.py --config %s/%s.yaml" $ctx.Values.image.workdir .kind (include "seedr1.configDir" $ctx) .kind }}{{ range $run.overrides }} {{ . | squote }}{{ end }}
  {{- with $run.runtimeEnv }}
  runtimeEnvYAML: |
    {{- toYaml . | nindent 4 }}
  {{- end }}
  shutdownAfterJobFinishes: {{ $run.shutdownAfterJobFinishes }}
  {{- if $run.shutdownAfterJobFinishes }}{{/* KubeRay refuses a TTL on a cluster it does not shut down */}}
  ttlSecondsAfterFinished: {{ $run.ttlSecondsAfterFinished }}
  {{- end }}
  activeDeadlineSeconds: {{ $run.activeDeadlineSeconds }}
  backoffLimit: {{ $run.backoffLimit }}
  submissionMode: K8sJobMode
  submitterPodTemplate:
    metadata:
      labels:
        {{- include "seedr1.componentLabels" (dict "ctx" $ctx "component" $component) | nindent 8 }}
    spec:
      {{- include "seedr1.podSpecCommon" $ctx | nindent 6 }}
      restartPolicy: Never
      containers:
        - name: ray-job-submitter
          image: {{ include "seedr1.image" $ctx }}
          imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
          securityContext:
            {{- toYaml $ctx.Values.securityContext | nindent 12 }}
          resources:
            requests: {cpu: 100m, memory: 256Mi}
            limits: {cpu: "1", memory: 1Gi}
  rayClusterSpec:
    rayVersion: {{ $ctx.Values.ray.version | quote }}
    authOptions:
      mode: {{ $ctx.Values.ray.authMode }}
    headGroupSpec:
      rayStartParams:
        {{- include "seedr1.headStartParams" $run.head.rayStartParams | nindent 8 }}
      template:
        {{- include "seedr1.rayPodTemplate" (dict "ctx" $ctx "group" $run.head "component" $component "container" "ray-head" "rayGroup" "head") | nindent 8 }}
    workerGroupSpecs:
      {{- range .groups }}
      - groupName: {{ .name }}
        replicas: {{ .values.replicas }}
        minReplicas: {{ .values.replicas }}
        maxReplicas: {{ .values.replicas }}
        rayStartParams: {{- with .values.rayStartParams }}{{ toYaml . | nindent 10 }}{{ else }} {}{{ end }}
        labels:
          seedr1.io/group: {{ .name }}
        template:
          {{- include "seedr1.rayPodTemplate" (dict "ctx" $ctx "group" .values "component" $component "container" "ray-worker" "rayGroup" .name) | nindent 10 }}
      {{- end }}
{{- end -}}

{{/* The evaluation pod spec (Job and CronJob). */}}
{{- define "seedr1.evaluationPodTemplate" -}}
{{- $e := .Values.evaluation -}}
{{- $keySecret := default .Values.serving.apiKey.existingSecret $e.apiKey.existingSecret -}}
{{- $keyKey := default .Values.serving.apiKey.key $e.apiKey.key -}}
metadata:
  labels:
    {{- include "seedr1.componentLabels" (dict "ctx" . "component" "evaluation") | nindent 4 }}
spec:
  {{- include "seedr1.podSpecCommon" . | nindent 2 }}
  {{- with (include "seedr1.scheduling" $e | trim) }}
  {{- . | nindent 2 }}
  {{- end }}
  restartPolicy: Never
  {{- if and (eq $e.target "endpoint") (gt (int $e.endpointWaitSeconds) 0) }}
  {{- /* The endpoint has no ready Serve proxy until the model is loaded: wait for it (stdlib Python, no curl). */}}
  initContainers:
    - name: wait-for-endpoint
      image: {{ include "seedr1.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      resources:
        requests: {cpu: 10m, memory: 64Mi}
        limits: {cpu: 200m, memory: 256Mi}
      {{- with .Values.extraEnv }}
      env:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      command: ["python", "{{ include "seedr1.configDir" . }}/wait_for_endpoint.py", {{ include "seedr1.evaluateEndpoint" . | quote }}, "{{ $e.endpointWaitSeconds }}"]
      volumeMounts:
        - {name: config, mountPath: {{ include "seedr1.configDir" . }}, readOnly: true}
  {{- end }}
  containers:
    - name: evaluate
      image: {{ include "seedr1.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      workingDir: {{ .Values.image.workdir }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      resources:
        {{- toYaml $e.resources | nindent 8 }}
      env:
        {{- include "seedr1.env" . | nindent 8 }}
        - name: RESULTS_URI
          value: {{ $e.resultsUri | quote }}
        {{- if and (eq $e.target "endpoint") $keySecret }}
        - name: SEEDR1_API_KEY
          valueFrom:
            secretKeyRef:
              name: {{ $keySecret }}
              key: {{ $keyKey }}
        {{- end }}
      command: ["/bin/sh", "-c"]
      args:
        - >-
          set -e;
          STAMP=$(date -u +%Y%m%dT%H%M%SZ);
          python {{ .Values.image.workdir }}/jobs/evaluate.py --config {{ include "seedr1.configDir" . }}/evaluate.yaml
          out_dir=/tmp/seedr1/eval/$STAMP{{ range $e.overrides }} {{ . | squote }}{{ end }};
          python {{ include "seedr1.configDir" . }}/upload_results.py /tmp/seedr1/eval/$STAMP "$RESULTS_URI/$STAMP"
      volumeMounts:
        - {name: config, mountPath: {{ include "seedr1.configDir" . }}, readOnly: true}
        - {name: tmp, mountPath: /tmp}
        - {name: dshm, mountPath: /dev/shm}
  volumes:
    - name: config
      configMap:
        name: {{ include "seedr1.fullname" . }}-config
    - name: tmp
      emptyDir: {}
    - name: dshm
      emptyDir:
        medium: Memory
        sizeLimit: {{ .Values.shmSizeLimit }}
{{- end -}}
