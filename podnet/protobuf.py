"""Decode Kubernetes protobuf request bodies into the JSON-shaped dicts the API uses.

kubectl builds some objects itself (`create namespace`, `create deployment`, `create
configmap`/`secret`, `create service`) and sends them as `application/vnd.kubernetes.protobuf`.
That body is the 4-byte magic `k8s\\x00` followed by a `runtime.Unknown` message whose
`typeMeta` names the kind and whose `raw` bytes hold the object itself.

This module is a small generic proto2 wire reader driven by a schema table written here
(field numbers from the `generated.proto` files of k8s.io/api and k8s.io/apimachinery). It
is pure: no I/O and no generated code. Anything malformed raises `ProtobufError`, never any
other exception, and every loop advances through a bounded buffer, so it cannot hang.

The output matches what kubectl would have sent as JSON: the Go encoder behind Kubernetes
protobuf writes every non-pointer field, even when empty, while the JSON form leaves such
fields out (`omitempty`). So zero values of ordinary scalar fields are dropped, and kept
only for fields that are pointers in Go (`replicas: 0` must survive) or that the JSON form
always writes. Messages that are present stay, even when empty (`"resources": {}`), as in
JSON; a zero `Time` is dropped, as JSON writes it as `null`.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

MEDIA_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"
MAX_DEPTH = 32         # a Deployment nests about 10 deep; anything far deeper is hostile
MAX_VARINT_BYTES = 10  # a 64-bit value needs at most 10 groups of 7 bits

# Wire types (protobuf encoding spec).
VARINT, FIXED64, LEN, START_GROUP, END_GROUP, FIXED32 = 0, 1, 2, 3, 4, 5


class ProtobufError(ValueError):
    """The body is not a well-formed Kubernetes protobuf object this server can read."""


# ---------------------------------------------------------------------- schema

# Scalar kinds, and the Kubernetes wrapper messages that JSON shows as scalars.
STR, BYTES, I32, I64, BOOL = "string", "bytes", "int32", "int64", "bool"
RAW = "raw"            # bytes kept as bytes (the envelope's payload), not base64 as in JSON
TIME = "Time"          # meta/v1.Time {seconds=1, nanos=2} -> RFC 3339 string
QTY = "Quantity"       # api/resource.Quantity {string=1} -> "100m"
IOS = "IntOrString"    # util/intstr.IntOrString {type=1, intVal=2, strVal=3} -> int | str
_VARINT_KINDS = frozenset({I32, I64, BOOL})
_MAP_VALUE_KINDS = (STR, BYTES, QTY)


@dataclass(frozen=True)
class Msg:
    """A message type: its name (for error messages) and its fields by number."""

    name: str
    fields: Mapping[int, Field]


@dataclass(frozen=True)
class Field:
    name: str                 # the JSON name
    kind: str | Msg
    repeated: bool = False
    map: bool = False         # map<string, kind>: repeated {key=1, value=2} entries
    keep_zero: bool = False   # a Go pointer (or non-omitempty) field: zero is a real value
    inline: bool = False      # an embedded Go struct whose fields JSON shows in the parent


def msg(name: str, fields: Mapping[int, Field]) -> Msg:
    return Msg(name, dict(fields))


def f(name: str, kind: str | Msg, *, ptr: bool = False) -> Field:
    return Field(name, kind, keep_zero=ptr)


def rep(name: str, kind: str | Msg) -> Field:
    return Field(name, kind, repeated=True)


def mapf(name: str, kind: str) -> Field:
    assert kind in _MAP_VALUE_KINDS, kind  # the only map values Kubernetes' types use
    return Field(name, kind, map=True)


def inline(kind: Msg) -> Field:
    return Field(kind.name, kind, inline=True)


# meta/v1 (k8s.io/apimachinery/pkg/apis/meta/v1/generated.proto)
OWNER_REFERENCE = msg("OwnerReference", {
    5: f("apiVersion", STR), 1: f("kind", STR), 3: f("name", STR), 4: f("uid", STR),
    6: f("controller", BOOL, ptr=True), 7: f("blockOwnerDeletion", BOOL, ptr=True)})
OBJECT_META = msg("ObjectMeta", {
    1: f("name", STR), 2: f("generateName", STR), 3: f("namespace", STR),
    4: f("selfLink", STR), 5: f("uid", STR), 6: f("resourceVersion", STR),
    7: f("generation", I64), 8: f("creationTimestamp", TIME),
    9: f("deletionTimestamp", TIME), 10: f("deletionGracePeriodSeconds", I64, ptr=True),
    11: mapf("labels", STR), 12: mapf("annotations", STR),
    13: rep("ownerReferences", OWNER_REFERENCE), 14: rep("finalizers", STR)})
LABEL_SELECTOR_REQUIREMENT = msg("LabelSelectorRequirement", {
    1: f("key", STR), 2: f("operator", STR), 3: rep("values", STR)})
LABEL_SELECTOR = msg("LabelSelector", {
    1: mapf("matchLabels", STR), 2: rep("matchExpressions", LABEL_SELECTOR_REQUIREMENT)})
PRECONDITIONS = msg("Preconditions", {
    1: f("uid", STR, ptr=True), 2: f("resourceVersion", STR, ptr=True)})
DELETE_OPTIONS = msg("DeleteOptions", {
    1: f("gracePeriodSeconds", I64, ptr=True), 2: f("preconditions", PRECONDITIONS),
    3: f("orphanDependents", BOOL, ptr=True), 4: f("propagationPolicy", STR, ptr=True),
    5: rep("dryRun", STR)})

# core/v1 (k8s.io/api/core/v1/generated.proto)
LOCAL_OBJECT_REFERENCE = msg("LocalObjectReference", {1: f("name", STR)})
OBJECT_REFERENCE = msg("ObjectReference", {
    1: f("kind", STR), 2: f("namespace", STR), 3: f("name", STR), 4: f("uid", STR),
    5: f("apiVersion", STR), 6: f("resourceVersion", STR), 7: f("fieldPath", STR)})
OBJECT_FIELD_SELECTOR = msg("ObjectFieldSelector", {
    1: f("apiVersion", STR), 2: f("fieldPath", STR)})
RESOURCE_FIELD_SELECTOR = msg("ResourceFieldSelector", {
    1: f("containerName", STR), 2: f("resource", STR), 3: f("divisor", QTY)})
CONFIG_MAP_KEY_SELECTOR = msg("ConfigMapKeySelector", {
    1: inline(LOCAL_OBJECT_REFERENCE), 2: f("key", STR), 3: f("optional", BOOL, ptr=True)})
SECRET_KEY_SELECTOR = msg("SecretKeySelector", {
    1: inline(LOCAL_OBJECT_REFERENCE), 2: f("key", STR), 3: f("optional", BOOL, ptr=True)})
ENV_VAR_SOURCE = msg("EnvVarSource", {
    1: f("fieldRef", OBJECT_FIELD_SELECTOR), 2: f("resourceFieldRef", RESOURCE_FIELD_SELECTOR),
    3: f("configMapKeyRef", CONFIG_MAP_KEY_SELECTOR),
    4: f("secretKeyRef", SECRET_KEY_SELECTOR)})
ENV_VAR = msg("EnvVar", {1: f("name", STR), 2: f("value", STR), 3: f("valueFrom", ENV_VAR_SOURCE)})
CONFIG_MAP_ENV_SOURCE = msg("ConfigMapEnvSource", {
    1: inline(LOCAL_OBJECT_REFERENCE), 2: f("optional", BOOL, ptr=True)})
SECRET_ENV_SOURCE = msg("SecretEnvSource", {
    1: inline(LOCAL_OBJECT_REFERENCE), 2: f("optional", BOOL, ptr=True)})
ENV_FROM_SOURCE = msg("EnvFromSource", {
    1: f("prefix", STR), 2: f("configMapRef", CONFIG_MAP_ENV_SOURCE),
    3: f("secretRef", SECRET_ENV_SOURCE)})
CONTAINER_PORT = msg("ContainerPort", {
    1: f("name", STR), 2: f("hostPort", I32), 3: f("containerPort", I32, ptr=True),
    4: f("protocol", STR), 5: f("hostIP", STR)})
RESOURCE_REQUIREMENTS = msg("ResourceRequirements", {
    1: mapf("limits", QTY), 2: mapf("requests", QTY)})
VOLUME_MOUNT = msg("VolumeMount", {
    1: f("name", STR), 2: f("readOnly", BOOL), 3: f("mountPath", STR), 4: f("subPath", STR),
    5: f("mountPropagation", STR, ptr=True), 6: f("subPathExpr", STR)})
VOLUME_DEVICE = msg("VolumeDevice", {1: f("name", STR), 2: f("devicePath", STR)})
EXEC_ACTION = msg("ExecAction", {1: rep("command", STR)})
HTTP_HEADER = msg("HTTPHeader", {1: f("name", STR), 2: f("value", STR)})
HTTP_GET_ACTION = msg("HTTPGetAction", {
    1: f("path", STR), 2: f("port", IOS, ptr=True), 3: f("host", STR), 4: f("scheme", STR),
    5: rep("httpHeaders", HTTP_HEADER)})
TCP_SOCKET_ACTION = msg("TCPSocketAction", {1: f("port", IOS, ptr=True), 2: f("host", STR)})
PROBE_HANDLER = msg("ProbeHandler", {
    1: f("exec", EXEC_ACTION), 2: f("httpGet", HTTP_GET_ACTION),
    3: f("tcpSocket", TCP_SOCKET_ACTION)})
PROBE = msg("Probe", {
    1: inline(PROBE_HANDLER), 2: f("initialDelaySeconds", I32), 3: f("timeoutSeconds", I32),
    4: f("periodSeconds", I32), 5: f("successThreshold", I32), 6: f("failureThreshold", I32),
    7: f("terminationGracePeriodSeconds", I64, ptr=True)})
LIFECYCLE_HANDLER = msg("LifecycleHandler", {
    1: f("exec", EXEC_ACTION), 2: f("httpGet", HTTP_GET_ACTION),
    3: f("tcpSocket", TCP_SOCKET_ACTION)})
LIFECYCLE = msg("Lifecycle", {
    1: f("postStart", LIFECYCLE_HANDLER), 2: f("preStop", LIFECYCLE_HANDLER)})
CAPABILITIES = msg("Capabilities", {1: rep("add", STR), 2: rep("drop", STR)})
SE_LINUX_OPTIONS = msg("SELinuxOptions", {
    1: f("user", STR), 2: f("role", STR), 3: f("type", STR), 4: f("level", STR)})
SECCOMP_PROFILE = msg("SeccompProfile", {
    1: f("type", STR), 2: f("localhostProfile", STR, ptr=True)})
SECURITY_CONTEXT = msg("SecurityContext", {
    1: f("capabilities", CAPABILITIES), 2: f("privileged", BOOL, ptr=True),
    3: f("seLinuxOptions", SE_LINUX_OPTIONS), 4: f("runAsUser", I64, ptr=True),
    5: f("runAsNonRoot", BOOL, ptr=True), 6: f("readOnlyRootFilesystem", BOOL, ptr=True),
    7: f("allowPrivilegeEscalation", BOOL, ptr=True), 8: f("runAsGroup", I64, ptr=True),
    9: f("procMount", STR, ptr=True), 11: f("seccompProfile", SECCOMP_PROFILE)})
CONTAINER = msg("Container", {
    1: f("name", STR), 2: f("image", STR), 3: rep("command", STR), 4: rep("args", STR),
    5: f("workingDir", STR), 6: rep("ports", CONTAINER_PORT),
    19: rep("envFrom", ENV_FROM_SOURCE), 7: rep("env", ENV_VAR),
    8: f("resources", RESOURCE_REQUIREMENTS), 9: rep("volumeMounts", VOLUME_MOUNT),
    21: rep("volumeDevices", VOLUME_DEVICE), 10: f("livenessProbe", PROBE),
    11: f("readinessProbe", PROBE), 22: f("startupProbe", PROBE),
    12: f("lifecycle", LIFECYCLE), 13: f("terminationMessagePath", STR),
    20: f("terminationMessagePolicy", STR), 14: f("imagePullPolicy", STR),
    15: f("securityContext", SECURITY_CONTEXT), 16: f("stdin", BOOL), 17: f("stdinOnce", BOOL),
    18: f("tty", BOOL), 24: f("restartPolicy", STR, ptr=True)})
KEY_TO_PATH = msg("KeyToPath", {
    1: f("key", STR), 2: f("path", STR), 3: f("mode", I32, ptr=True)})
HOST_PATH_VOLUME_SOURCE = msg("HostPathVolumeSource", {
    1: f("path", STR), 2: f("type", STR, ptr=True)})
EMPTY_DIR_VOLUME_SOURCE = msg("EmptyDirVolumeSource", {
    1: f("medium", STR), 2: f("sizeLimit", QTY)})
SECRET_VOLUME_SOURCE = msg("SecretVolumeSource", {
    1: f("secretName", STR), 2: rep("items", KEY_TO_PATH), 3: f("defaultMode", I32, ptr=True),
    4: f("optional", BOOL, ptr=True)})
CONFIG_MAP_VOLUME_SOURCE = msg("ConfigMapVolumeSource", {
    1: inline(LOCAL_OBJECT_REFERENCE), 2: rep("items", KEY_TO_PATH),
    3: f("defaultMode", I32, ptr=True), 4: f("optional", BOOL, ptr=True)})
PVC_VOLUME_SOURCE = msg("PersistentVolumeClaimVolumeSource", {
    1: f("claimName", STR), 2: f("readOnly", BOOL)})
DOWNWARD_API_VOLUME_FILE = msg("DownwardAPIVolumeFile", {
    1: f("path", STR), 2: f("fieldRef", OBJECT_FIELD_SELECTOR),
    3: f("resourceFieldRef", RESOURCE_FIELD_SELECTOR), 4: f("mode", I32, ptr=True)})
DOWNWARD_API_VOLUME_SOURCE = msg("DownwardAPIVolumeSource", {
    1: rep("items", DOWNWARD_API_VOLUME_FILE), 2: f("defaultMode", I32, ptr=True)})
VOLUME_SOURCE = msg("VolumeSource", {
    1: f("hostPath", HOST_PATH_VOLUME_SOURCE), 2: f("emptyDir", EMPTY_DIR_VOLUME_SOURCE),
    6: f("secret", SECRET_VOLUME_SOURCE), 10: f("persistentVolumeClaim", PVC_VOLUME_SOURCE),
    16: f("downwardAPI", DOWNWARD_API_VOLUME_SOURCE),
    19: f("configMap", CONFIG_MAP_VOLUME_SOURCE)})
VOLUME = msg("Volume", {1: f("name", STR), 2: inline(VOLUME_SOURCE)})
TOLERATION = msg("Toleration", {
    1: f("key", STR), 2: f("operator", STR), 3: f("value", STR), 4: f("effect", STR),
    5: f("tolerationSeconds", I64, ptr=True)})
NODE_SELECTOR_REQUIREMENT = msg("NodeSelectorRequirement", {
    1: f("key", STR), 2: f("operator", STR), 3: rep("values", STR)})
NODE_SELECTOR_TERM = msg("NodeSelectorTerm", {
    1: rep("matchExpressions", NODE_SELECTOR_REQUIREMENT),
    2: rep("matchFields", NODE_SELECTOR_REQUIREMENT)})
NODE_SELECTOR = msg("NodeSelector", {1: rep("nodeSelectorTerms", NODE_SELECTOR_TERM)})
PREFERRED_SCHEDULING_TERM = msg("PreferredSchedulingTerm", {
    1: f("weight", I32, ptr=True), 2: f("preference", NODE_SELECTOR_TERM)})
NODE_AFFINITY = msg("NodeAffinity", {
    1: f("requiredDuringSchedulingIgnoredDuringExecution", NODE_SELECTOR),
    2: rep("preferredDuringSchedulingIgnoredDuringExecution", PREFERRED_SCHEDULING_TERM)})
POD_AFFINITY_TERM = msg("PodAffinityTerm", {
    1: f("labelSelector", LABEL_SELECTOR), 2: rep("namespaces", STR),
    3: f("topologyKey", STR), 4: f("namespaceSelector", LABEL_SELECTOR)})
WEIGHTED_POD_AFFINITY_TERM = msg("WeightedPodAffinityTerm", {
    1: f("weight", I32, ptr=True), 2: f("podAffinityTerm", POD_AFFINITY_TERM)})
POD_AFFINITY = msg("PodAffinity", {
    1: rep("requiredDuringSchedulingIgnoredDuringExecution", POD_AFFINITY_TERM),
    2: rep("preferredDuringSchedulingIgnoredDuringExecution", WEIGHTED_POD_AFFINITY_TERM)})
AFFINITY = msg("Affinity", {
    1: f("nodeAffinity", NODE_AFFINITY), 2: f("podAffinity", POD_AFFINITY),
    3: f("podAntiAffinity", POD_AFFINITY)})
SYSCTL = msg("Sysctl", {1: f("name", STR), 2: f("value", STR)})
POD_SECURITY_CONTEXT = msg("PodSecurityContext", {
    1: f("seLinuxOptions", SE_LINUX_OPTIONS), 2: f("runAsUser", I64, ptr=True),
    3: f("runAsNonRoot", BOOL, ptr=True), 4: rep("supplementalGroups", I64),
    5: f("fsGroup", I64, ptr=True), 6: f("runAsGroup", I64, ptr=True),
    7: rep("sysctls", SYSCTL), 9: f("fsGroupChangePolicy", STR, ptr=True),
    10: f("seccompProfile", SECCOMP_PROFILE)})
HOST_ALIAS = msg("HostAlias", {1: f("ip", STR), 2: rep("hostnames", STR)})
POD_DNS_CONFIG_OPTION = msg("PodDNSConfigOption", {
    1: f("name", STR), 2: f("value", STR, ptr=True)})
POD_DNS_CONFIG = msg("PodDNSConfig", {
    1: rep("nameservers", STR), 2: rep("searches", STR),
    3: rep("options", POD_DNS_CONFIG_OPTION)})
TOPOLOGY_SPREAD_CONSTRAINT = msg("TopologySpreadConstraint", {
    1: f("maxSkew", I32, ptr=True), 2: f("topologyKey", STR), 3: f("whenUnsatisfiable", STR),
    4: f("labelSelector", LABEL_SELECTOR)})
POD_SPEC = msg("PodSpec", {
    1: rep("volumes", VOLUME), 20: rep("initContainers", CONTAINER),
    2: rep("containers", CONTAINER), 3: f("restartPolicy", STR),
    4: f("terminationGracePeriodSeconds", I64, ptr=True),
    5: f("activeDeadlineSeconds", I64, ptr=True), 6: f("dnsPolicy", STR),
    7: mapf("nodeSelector", STR), 8: f("serviceAccountName", STR),
    9: f("serviceAccount", STR), 21: f("automountServiceAccountToken", BOOL, ptr=True),
    10: f("nodeName", STR), 11: f("hostNetwork", BOOL), 12: f("hostPID", BOOL),
    13: f("hostIPC", BOOL), 27: f("shareProcessNamespace", BOOL, ptr=True),
    14: f("securityContext", POD_SECURITY_CONTEXT),
    15: rep("imagePullSecrets", LOCAL_OBJECT_REFERENCE), 16: f("hostname", STR),
    17: f("subdomain", STR), 18: f("affinity", AFFINITY), 19: f("schedulerName", STR),
    22: rep("tolerations", TOLERATION), 23: rep("hostAliases", HOST_ALIAS),
    24: f("priorityClassName", STR), 25: f("priority", I32, ptr=True),
    26: f("dnsConfig", POD_DNS_CONFIG),
    28: rep("readinessGates", msg("PodReadinessGate", {1: f("conditionType", STR)})),
    29: f("runtimeClassName", STR, ptr=True), 30: f("enableServiceLinks", BOOL, ptr=True),
    31: f("preemptionPolicy", STR, ptr=True), 32: mapf("overhead", QTY),
    33: rep("topologySpreadConstraints", TOPOLOGY_SPREAD_CONSTRAINT),
    35: f("setHostnameAsFQDN", BOOL, ptr=True), 36: f("os", msg("PodOS", {1: f("name", STR)})),
    37: f("hostUsers", BOOL, ptr=True),
    38: rep("schedulingGates", msg("PodSchedulingGate", {1: f("name", STR)})),
    40: f("resources", RESOURCE_REQUIREMENTS), 41: f("hostnameOverride", STR, ptr=True)})
POD_CONDITION = msg("PodCondition", {
    1: f("type", STR), 2: f("status", STR), 3: f("lastProbeTime", TIME),
    4: f("lastTransitionTime", TIME), 5: f("reason", STR), 6: f("message", STR)})
CONTAINER_STATE = msg("ContainerState", {
    1: f("waiting", msg("ContainerStateWaiting", {1: f("reason", STR), 2: f("message", STR)})),
    2: f("running", msg("ContainerStateRunning", {1: f("startedAt", TIME)})),
    3: f("terminated", msg("ContainerStateTerminated", {
        1: f("exitCode", I32, ptr=True), 2: f("signal", I32), 3: f("reason", STR),
        4: f("message", STR), 5: f("startedAt", TIME), 6: f("finishedAt", TIME),
        7: f("containerID", STR)}))})
CONTAINER_STATUS = msg("ContainerStatus", {
    1: f("name", STR), 2: f("state", CONTAINER_STATE), 3: f("lastState", CONTAINER_STATE),
    4: f("ready", BOOL, ptr=True), 5: f("restartCount", I32, ptr=True), 6: f("image", STR),
    7: f("imageID", STR), 8: f("containerID", STR), 9: f("started", BOOL, ptr=True)})
IP_ADDRESS = msg("PodIP", {1: f("ip", STR)})
POD_STATUS = msg("PodStatus", {
    17: f("observedGeneration", I64), 1: f("phase", STR), 2: rep("conditions", POD_CONDITION),
    3: f("message", STR), 4: f("reason", STR), 11: f("nominatedNodeName", STR),
    5: f("hostIP", STR), 16: rep("hostIPs", IP_ADDRESS), 6: f("podIP", STR),
    12: rep("podIPs", IP_ADDRESS), 7: f("startTime", TIME),
    10: rep("initContainerStatuses", CONTAINER_STATUS),
    8: rep("containerStatuses", CONTAINER_STATUS), 9: f("qosClass", STR)})
POD = msg("Pod", {1: f("metadata", OBJECT_META), 2: f("spec", POD_SPEC),
                  3: f("status", POD_STATUS)})
POD_TEMPLATE_SPEC = msg("PodTemplateSpec", {1: f("metadata", OBJECT_META),
                                            2: f("spec", POD_SPEC)})
NAMESPACE = msg("Namespace", {
    1: f("metadata", OBJECT_META),
    2: f("spec", msg("NamespaceSpec", {1: rep("finalizers", STR)})),
    3: f("status", msg("NamespaceStatus", {
        1: f("phase", STR),
        2: rep("conditions", msg("NamespaceCondition", {
            1: f("type", STR), 2: f("status", STR), 4: f("lastTransitionTime", TIME),
            5: f("reason", STR), 6: f("message", STR)}))}))})
CONFIG_MAP = msg("ConfigMap", {
    1: f("metadata", OBJECT_META), 4: f("immutable", BOOL, ptr=True),
    2: mapf("data", STR), 3: mapf("binaryData", BYTES)})
SECRET = msg("Secret", {
    1: f("metadata", OBJECT_META), 5: f("immutable", BOOL, ptr=True),
    2: mapf("data", BYTES), 4: mapf("stringData", STR), 3: f("type", STR)})
SERVICE_PORT = msg("ServicePort", {
    1: f("name", STR), 2: f("protocol", STR), 6: f("appProtocol", STR, ptr=True),
    3: f("port", I32, ptr=True), 4: f("targetPort", IOS), 5: f("nodePort", I32)})
SERVICE_SPEC = msg("ServiceSpec", {
    1: rep("ports", SERVICE_PORT), 2: mapf("selector", STR), 3: f("clusterIP", STR),
    18: rep("clusterIPs", STR), 4: f("type", STR), 5: rep("externalIPs", STR),
    7: f("sessionAffinity", STR), 8: f("loadBalancerIP", STR),
    9: rep("loadBalancerSourceRanges", STR), 10: f("externalName", STR),
    11: f("externalTrafficPolicy", STR), 12: f("healthCheckNodePort", I32),
    13: f("publishNotReadyAddresses", BOOL),
    14: f("sessionAffinityConfig", msg("SessionAffinityConfig", {
        1: f("clientIP", msg("ClientIPConfig", {1: f("timeoutSeconds", I32, ptr=True)}))})),
    19: rep("ipFamilies", STR), 17: f("ipFamilyPolicy", STR, ptr=True),
    20: f("allocateLoadBalancerNodePorts", BOOL, ptr=True),
    21: f("loadBalancerClass", STR, ptr=True), 22: f("internalTrafficPolicy", STR, ptr=True)})
LOAD_BALANCER_STATUS = msg("LoadBalancerStatus", {
    1: rep("ingress", msg("LoadBalancerIngress", {1: f("ip", STR), 2: f("hostname", STR)}))})
SERVICE = msg("Service", {
    1: f("metadata", OBJECT_META), 2: f("spec", SERVICE_SPEC),
    3: f("status", msg("ServiceStatus", {1: f("loadBalancer", LOAD_BALANCER_STATUS)}))})
SERVICE_ACCOUNT = msg("ServiceAccount", {
    1: f("metadata", OBJECT_META), 2: rep("secrets", OBJECT_REFERENCE),
    3: rep("imagePullSecrets", LOCAL_OBJECT_REFERENCE),
    4: f("automountServiceAccountToken", BOOL, ptr=True)})
BINDING = msg("Binding", {1: f("metadata", OBJECT_META), 2: f("target", OBJECT_REFERENCE)})

# apps/v1 (k8s.io/api/apps/v1/generated.proto)
DEPLOYMENT_STRATEGY = msg("DeploymentStrategy", {
    1: f("type", STR),
    2: f("rollingUpdate", msg("RollingUpdateDeployment", {
        1: f("maxUnavailable", IOS, ptr=True), 2: f("maxSurge", IOS, ptr=True)}))})
DEPLOYMENT_SPEC = msg("DeploymentSpec", {
    1: f("replicas", I32, ptr=True), 2: f("selector", LABEL_SELECTOR),
    3: f("template", POD_TEMPLATE_SPEC), 4: f("strategy", DEPLOYMENT_STRATEGY),
    5: f("minReadySeconds", I32), 6: f("revisionHistoryLimit", I32, ptr=True),
    7: f("paused", BOOL), 9: f("progressDeadlineSeconds", I32, ptr=True)})
DEPLOYMENT_STATUS = msg("DeploymentStatus", {
    1: f("observedGeneration", I64), 2: f("replicas", I32), 3: f("updatedReplicas", I32),
    7: f("readyReplicas", I32), 4: f("availableReplicas", I32),
    5: f("unavailableReplicas", I32),
    6: rep("conditions", msg("DeploymentCondition", {
        1: f("type", STR), 2: f("status", STR), 6: f("lastUpdateTime", TIME),
        7: f("lastTransitionTime", TIME), 4: f("reason", STR), 5: f("message", STR)})),
    8: f("collisionCount", I32, ptr=True)})
DEPLOYMENT = msg("Deployment", {
    1: f("metadata", OBJECT_META), 2: f("spec", DEPLOYMENT_SPEC),
    3: f("status", DEPLOYMENT_STATUS)})
REPLICA_SET_STATUS = msg("ReplicaSetStatus", {
    1: f("replicas", I32, ptr=True), 2: f("fullyLabeledReplicas", I32),
    4: f("readyReplicas", I32), 5: f("availableReplicas", I32),
    3: f("observedGeneration", I64),
    6: rep("conditions", msg("ReplicaSetCondition", {
        1: f("type", STR), 2: f("status", STR), 3: f("lastTransitionTime", TIME),
        4: f("reason", STR), 5: f("message", STR)}))})
REPLICA_SET = msg("ReplicaSet", {
    1: f("metadata", OBJECT_META),
    2: f("spec", msg("ReplicaSetSpec", {
        1: f("replicas", I32, ptr=True), 4: f("minReadySeconds", I32),
        2: f("selector", LABEL_SELECTOR), 3: f("template", POD_TEMPLATE_SPEC)})),
    3: f("status", REPLICA_SET_STATUS)})

# batch/v1 (k8s.io/api/batch/v1/generated.proto): what `kubectl create job` sends. Status and
# the failure/success policies are left to the skip rule for unknown fields.
JOB = msg("Job", {
    1: f("metadata", OBJECT_META),
    2: f("spec", msg("JobSpec", {
        1: f("parallelism", I32, ptr=True), 2: f("completions", I32, ptr=True),
        3: f("activeDeadlineSeconds", I64, ptr=True), 4: f("selector", LABEL_SELECTOR),
        5: f("manualSelector", BOOL, ptr=True), 6: f("template", POD_TEMPLATE_SPEC),
        7: f("backoffLimit", I32, ptr=True), 8: f("ttlSecondsAfterFinished", I32, ptr=True),
        9: f("completionMode", STR, ptr=True), 10: f("suspend", BOOL, ptr=True),
        12: f("backoffLimitPerIndex", I32, ptr=True), 13: f("maxFailedIndexes", I32, ptr=True),
        14: f("podReplacementPolicy", STR, ptr=True), 15: f("managedBy", STR, ptr=True)}))})

# autoscaling/v1 and policy/v1
SCALE = msg("Scale", {
    1: f("metadata", OBJECT_META),
    # Scale to zero is the point of some requests: keep replicas even when 0.
    2: f("spec", msg("ScaleSpec", {1: f("replicas", I32, ptr=True)})),
    3: f("status", msg("ScaleStatus", {
        1: f("replicas", I32, ptr=True), 2: f("selector", STR)}))})
EVICTION = msg("Eviction", {
    1: f("metadata", OBJECT_META), 2: f("deleteOptions", DELETE_OPTIONS)})

# kind -> (apiVersions it is accepted under, schema).
KINDS: dict[str, tuple[frozenset[str], Msg]] = {
    "Namespace": (frozenset({"v1"}), NAMESPACE),
    "Pod": (frozenset({"v1"}), POD),
    "Service": (frozenset({"v1"}), SERVICE),
    "ConfigMap": (frozenset({"v1"}), CONFIG_MAP),
    "Secret": (frozenset({"v1"}), SECRET),
    "ServiceAccount": (frozenset({"v1"}), SERVICE_ACCOUNT),
    "Binding": (frozenset({"v1"}), BINDING),
    # DeleteOptions is registered in every group; clients label it either way.
    "DeleteOptions": (frozenset({"v1", "meta.k8s.io/v1"}), DELETE_OPTIONS),
    "Deployment": (frozenset({"apps/v1"}), DEPLOYMENT),
    "ReplicaSet": (frozenset({"apps/v1"}), REPLICA_SET),
    "Job": (frozenset({"batch/v1"}), JOB),
    "Scale": (frozenset({"autoscaling/v1"}), SCALE),
    "Eviction": (frozenset({"policy/v1", "policy/v1beta1"}), EVICTION),
}

UNKNOWN = msg("Unknown", {  # runtime.Unknown, the envelope after the magic
    1: f("typeMeta", msg("TypeMeta", {1: f("apiVersion", STR), 2: f("kind", STR)})),
    2: f("raw", RAW), 3: f("contentEncoding", STR), 4: f("contentType", STR)})


# ---------------------------------------------------------------------- wire reader

@dataclass
class _Reader:
    """A cursor over `buf[pos:end]`; nested messages get their own reader on a sub-range."""

    buf: bytes
    pos: int
    end: int
    path: list[str] = field(default_factory=list)  # where we are, for error messages

    def fail(self, what: str, at: int | None = None) -> ProtobufError:
        where = ".".join(self.path) or "body"
        return ProtobufError(f"{what} (in {where}, at byte {self.pos if at is None else at})")

    def varint(self) -> int:
        result = 0
        for i in range(MAX_VARINT_BYTES):
            if self.pos >= self.end:
                raise self.fail("truncated varint")
            byte = self.buf[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << (7 * i)
            if byte < 0x80:
                if result >> 64:
                    raise self.fail("varint does not fit in 64 bits")
                return result
        raise self.fail(f"varint longer than {MAX_VARINT_BYTES} bytes")

    def take(self, n: int) -> int:
        """Skip n bytes and return where they started."""
        if n > self.end - self.pos:
            raise self.fail(f"field of {n} bytes runs past the end of its message "
                            f"({self.end - self.pos} bytes left)")
        start = self.pos
        self.pos += n
        return start

    def fields(self) -> Iterator[tuple[int, int, int]]:
        """(field number, wire type, value) for each field. The value of a varint or
        fixed field is the number; of a length-delimited field, its start offset (its
        end is then `self.pos`). Every step consumes at least one byte."""
        while self.pos < self.end:
            tag = self.varint()
            number, wire = tag >> 3, tag & 7
            if number < 1 or number > 0x1FFFFFFF:
                raise self.fail(f"invalid field number {number}")
            if wire == VARINT:
                yield number, wire, self.varint()
            elif wire == LEN:
                n = self.varint()
                yield number, wire, self.take(n)
            elif wire == FIXED64:
                start = self.take(8)
                yield number, wire, int.from_bytes(self.buf[start:start + 8], "little")
            elif wire == FIXED32:
                start = self.take(4)
                yield number, wire, int.from_bytes(self.buf[start:start + 4], "little")
            elif wire in (START_GROUP, END_GROUP):
                raise self.fail(f"field {number} uses the deprecated group encoding, "
                                f"which Kubernetes never sends")
            else:
                raise self.fail(f"invalid wire type {wire} for field {number}")


def _signed(value: int, bits: int) -> int:
    """Two's complement: proto int32/int64 put negatives in the top of the 64-bit range."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _scalar(kind: str, wire: int, value: int, end: int, r: _Reader, depth: int) -> Any:
    """One value of a scalar or scalar-like kind, from a field already read by `fields()`."""
    if kind in _VARINT_KINDS:
        if wire != VARINT:
            raise r.fail(f"expected a varint for a {kind}, got wire type {wire}")
        if kind == BOOL:
            return value != 0
        return _signed(value, 32 if kind == I32 else 64)
    if wire != LEN:
        raise r.fail(f"expected a length-delimited {kind}, got wire type {wire}")
    raw = r.buf[value:end]
    if kind == STR:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise r.fail("string is not valid UTF-8", value) from None
    if kind == BYTES:  # JSON carries []byte as base64
        return base64.b64encode(raw).decode("ascii")
    if kind == RAW:
        return raw
    sub = _Reader(r.buf, value, end, r.path)
    if depth + 1 > MAX_DEPTH:
        raise r.fail(f"messages nested deeper than {MAX_DEPTH}")
    if kind == QTY:
        return _decode(_QUANTITY, sub, depth + 1).get("string", "")
    if kind == TIME:
        return _time(_decode(_TIMESTAMP, sub, depth + 1), r, value)
    if kind == IOS:
        parts = _decode(_INT_OR_STRING, sub, depth + 1)
        if parts.get("type", 0) == 1:
            return parts.get("strVal", "")
        return parts.get("intVal", 0)
    raise AssertionError(f"unhandled kind {kind}")  # the schema table is static


# The wrapper messages behind TIME, QTY and IOS, decoded like any other message.
_QUANTITY = msg("Quantity", {1: f("string", STR)})
_TIMESTAMP = msg("Time", {1: f("seconds", I64), 2: f("nanos", I32)})
_INT_OR_STRING = msg("IntOrString", {1: f("type", I64), 2: f("intVal", I32),
                                     3: f("strVal", STR)})


def _time(parts: Mapping[str, Any], r: _Reader, at: int) -> str | None:
    seconds = parts.get("seconds", 0)
    if not seconds and not parts.get("nanos"):
        return None  # the zero Time, which JSON writes as null
    try:
        # JSON (RFC 3339 at second precision) drops the nanoseconds too.
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        raise r.fail(f"timestamp {seconds} is out of range", at) from None


def _is_zero(value: Any) -> bool:
    return value is None or value in ("", b"") or value is False or (
        type(value) is int and value == 0)


def _decode(schema: Msg, r: _Reader, depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for number, wire, value in r.fields():
        fld = schema.fields.get(number)
        if fld is None:
            continue  # unknown (newer) field: skipped, as protobuf requires
        end = r.pos  # a length-delimited value spans [value, end)
        r.path.append(fld.name)
        try:
            if fld.map:
                key, item = _map_entry(fld, r, value, end, wire, depth)
                out.setdefault(fld.name, {})[key] = item
            elif fld.repeated:
                out.setdefault(fld.name, []).extend(_repeated(fld, r, value, end, wire, depth))
            else:
                item = _one(fld.kind, r, value, end, wire, depth)
                if fld.inline:
                    out.update(item)
                elif isinstance(item, dict) and isinstance(out.get(fld.name), dict):
                    out[fld.name].update(item)  # a repeated message field merges
                elif (fld.keep_zero and item is not None) or not _is_zero(item):
                    out[fld.name] = item
                else:
                    out.pop(fld.name, None)  # a later zero overrides an earlier value
        finally:
            r.path.pop()
    return out


def _one(kind: str | Msg, r: _Reader, value: int, end: int, wire: int, depth: int) -> Any:
    if isinstance(kind, Msg):
        if wire != LEN:
            raise r.fail(f"expected a length-delimited {kind.name}, got wire type {wire}")
        if depth + 1 > MAX_DEPTH:
            raise r.fail(f"messages nested deeper than {MAX_DEPTH}")
        return _decode(kind, _Reader(r.buf, value, end, r.path), depth + 1)
    return _scalar(kind, wire, value, end, r, depth)


def _repeated(fld: Field, r: _Reader, value: int, end: int, wire: int,
              depth: int) -> list[Any]:
    if wire == LEN and isinstance(fld.kind, str) and fld.kind in _VARINT_KINDS:
        # Packed encoding: many varints in one length-delimited field.
        packed = _Reader(r.buf, value, end, r.path)
        items = []
        while packed.pos < packed.end:
            items.append(_scalar(fld.kind, VARINT, packed.varint(), end, r, depth))
        return items
    return [_one(fld.kind, r, value, end, wire, depth)]


def _map_entry(fld: Field, r: _Reader, value: int, end: int, wire: int,
               depth: int) -> tuple[str, Any]:
    if wire != LEN:
        raise r.fail(f"expected a length-delimited map entry, got wire type {wire}")
    if depth + 1 > MAX_DEPTH:
        raise r.fail(f"messages nested deeper than {MAX_DEPTH}")
    parts = _decode(_MAP_ENTRIES[str(fld.kind)], _Reader(r.buf, value, end, r.path),
                    depth + 1)
    # A missing key or value is the type's zero value.
    default = "0" if fld.kind == QTY else ""
    item = parts.get("value", default)
    return parts.get("key", ""), default if item is None else item


# map<string, V> is encoded as repeated {key=1, value=2} messages.
_MAP_ENTRIES = {kind: msg("MapEntry", {1: Field("key", STR, keep_zero=True),
                                       2: Field("value", kind, keep_zero=True)})
                for kind in _MAP_VALUE_KINDS}


# ---------------------------------------------------------------------- entry points

def is_protobuf(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == MEDIA_TYPE


def decode(body: bytes) -> dict[str, Any]:
    """A `k8s\\x00`-framed Kubernetes protobuf object as its JSON-shaped dict, with `kind`
    and `apiVersion` set from the envelope. Raises `ProtobufError` on anything else."""
    data = bytes(body)
    if not data.startswith(MAGIC):
        raise ProtobufError("not a Kubernetes protobuf body: it must start with the 4-byte "
                            "magic 'k8s\\x00'")
    envelope = _Reader(data, len(MAGIC), len(data), ["Unknown"])
    parts = _decode(UNKNOWN, envelope, 1)
    encoding = parts.get("contentEncoding", "")
    if encoding:
        raise ProtobufError(f'unsupported contentEncoding "{encoding}" in the envelope')
    inner_type = parts.get("contentType", "")
    if inner_type and not is_protobuf(inner_type):
        raise ProtobufError(f'unsupported contentType "{inner_type}" in the envelope')
    type_meta = parts.get("typeMeta") or {}
    kind, api_version = type_meta.get("kind", ""), type_meta.get("apiVersion", "")
    if not kind or not api_version:
        raise ProtobufError("the envelope does not name the object's kind and apiVersion")
    known = KINDS.get(kind)
    if known is None or api_version not in known[0]:
        raise ProtobufError(f"cannot read {kind} ({api_version}) from protobuf; "
                            f"send it as JSON or YAML instead")
    raw = parts.get("raw", b"")
    obj = _decode(known[1], _Reader(raw, 0, len(raw), [kind]), 1)
    return {"kind": kind, "apiVersion": api_version, **obj}


def decode_message(schema: Msg, data: bytes) -> dict[str, Any]:
    """One bare message (no envelope) with `schema`: for tests and nested payloads."""
    return _decode(schema, _Reader(bytes(data), 0, len(data), [schema.name]), 1)
