{{/*
The release's base name: the release name when it already contains the
chart name (release "flowmesh" → "flowmesh"), else "<release>-flowmesh".
*/}}
{{- define "flowmesh.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 54 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 54 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The operator's objects: Deployment, ClusterRole, Lease. */}}
{{- define "flowmesh.operatorName" -}}
{{- printf "%s-operator" (include "flowmesh.fullname" .) -}}
{{- end -}}

{{- define "flowmesh.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "flowmesh.operatorName" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "flowmesh.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Selector labels: stable across upgrades. */}}
{{- define "flowmesh.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "flowmesh.labels" -}}
{{ include "flowmesh.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/*
The operator's rules on FlowGraphs and their children, the same in the
ClusterRole (all namespaces) and in each per-namespace Role
(watchNamespaces). deploy/rbac.yaml holds the same rules; docs/operator.md
("RBAC") explains each one.
*/}}
{{- define "flowmesh.operatorRules" -}}
# Watch the FlowGraphs it reconciles; also required to create the workers'
# Role granting get/list/watch on flowgraphs (no one grants what they lack).
- apiGroups: [flowmesh.dev]
  resources: [flowgraphs]
  verbs: [get, list, watch]
# Report phase, conditions and per-segment state in the status subresource.
- apiGroups: [flowmesh.dev]
  resources: [flowgraphs/status]
  verbs: [get, patch, update]
# ownerReferences with blockOwnerDeletion on children, and the finalizer.
- apiGroups: [flowmesh.dev]
  resources: [flowgraphs/finalizers]
  verbs: [update]
# One Deployment (1 replica, Recreate) per segment.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
# Per segment a headless Service and a PVC when it declares storage; per
# FlowGraph the token Secret and the workers' ServiceAccount.
- apiGroups: [""]
  resources: [services, serviceaccounts, secrets, persistentvolumeclaims]
  verbs: [get, list, watch, create, patch, delete]
# Segment status: restarts, addresses, last termination message; the health
# watcher deletes a failed or stalled pod (its Deployment makes a new one).
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, delete]
# The health watcher: a pod on a NotReady or vanished node (read only;
# without it, lost nodes show only as pods stuck terminating).
- apiGroups: [""]
  resources: [nodes]
  verbs: [get, list]
# A scalable segment's optional HorizontalPodAutoscaler (scaling.hpa).
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, create, patch, delete]
# Per FlowGraph the workers' Role and RoleBinding.
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, list, watch, create, patch, delete]
# The optional NetworkPolicy in front of the workers' ports.
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch, create, patch, delete]
# Events on FlowGraphs (events.k8s.io/v1).
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
# Core v1 events, for older recorders.
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
{{- end -}}
