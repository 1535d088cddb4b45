"""Kubernetes manifests for workers: what a future ``KubeCluster`` would create, as plain dicts.

This is a design with generated manifests, untested against a live cluster: no code here talks to a Kubernetes
API server, and nothing has been applied to one. What is tested (tests/test_kube.py) is that every manifest
deserializes into the models of the ``kubernetes`` Python package and serializes back unchanged. The design is
in docs/kubernetes.md.

One cluster is, in the order ``manifests()`` returns them (the order ``kubectl apply`` needs):

- optionally the Role and RoleBinding the notebook's ServiceAccount needs (``rbac()``: once per namespace,
  applied by an administrator; the notebook cannot grant itself rights);
- a Secret with the Manager's token (``token_secret()``), which worker pods read through ``secretKeyRef``:
  the token is never in a pod spec or on a command line;
- a ClusterIP Service in front of the notebook pod's Manager port (``manager_service()``), so workers reach
  the Manager by a stable DNS name;
- two NetworkPolicies: worker pods accept connections only from the cluster's pods and the notebook pod
  (``network_policy()``), the notebook pod accepts the cluster's workers (``notebook_network_policy()``);
- one Pod per worker, ``<cluster>-worker-<i>`` (``worker_pod()``), running the image ``ensure_image`` builds.

Labels: Docker's ``chimera-lab.cluster`` / ``chimera-lab.worker`` become ``chimera-lab/cluster`` and
``chimera-lab/worker`` (a Kubernetes label key is an optional DNS-subdomain prefix, a ``/`` and a name; the
dotted form is valid too, but a prefix is the convention). The notebook pod carries ``chimera-lab/notebook``,
which the KubeCluster would add to its own pod. Only the standard library is used: no PyYAML, no kubernetes.
"""

from __future__ import annotations

import base64
import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from .image import HEALTH_CHECK, HEALTH_FILE

LABEL_CLUSTER = "chimera-lab/cluster"  # the cluster's id, on everything a cluster creates
LABEL_WORKER = "chimera-lab/worker"  # the worker's name, on its pod
LABEL_NOTEBOOK = "chimera-lab/notebook"  # on the notebook pod: what the Service and the NetworkPolicies select
MANAGED = {"app.kubernetes.io/managed-by": "chimera-lab"}  # the standard label of the tool that manages it
ANNOTATION_MANAGER = "chimera-lab/manager"  # host:port of the Manager, on worker pods (for people reading them)
ANNOTATION_CREATOR = "chimera-lab/creator"  # owner_id() of the kernel that made it: what crash cleanup goes by
ROLE = "chimera-lab-launcher"  # the Role and RoleBinding that rbac() makes
TOKEN_KEY = "token"  # the key of the token in the Secret
CONTAINER = "worker"  # the worker pod's one container
WORKER_UID = 10001  # the image's user chimera
DATA_DIR = "/home/chimera/data"
WORKER_BIN = "/opt/chimera/bin"
WORKER_TIMEOUT = 30  # cp-worker --timeout: seconds to reach the Manager before the worker gives up
MODES = ("process", "thread")
#: environment variables the pod spec sets itself: env= cannot set them
RESERVED_ENV = ("CHIMERA_TOKEN", "CHIMERA_LAB_WORKER_NAME", "CHIMERA_LAB_WORKER_INDEX", "CHIMERA_LAB_POD_IP",
                "CHIMERA_LAB_MANAGER", "CHIMERA_LAB_HEALTH_FILE")

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
# a container image reference, as the distribution/reference grammar has it
_IMG_DOMAIN = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*" \
              r"[a-zA-Z0-9]))*(?::[0-9]+)?"
_IMG_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE = re.compile(rf"(?:{_IMG_DOMAIN}/)?{_IMG_PATH}(?:/{_IMG_PATH})*(?::[\w][\w.-]{{0,127}})?"
                    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?")
# a resource quantity, as Kubernetes parses it: a number and a suffix (binary SI, decimal SI or an exponent)
_QUANTITY = re.compile(r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
                       r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?")
_SUFFIX: dict[str, Decimal | int] = {
    "": 1, "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_MAX_ID = 40  # so that <id>-worker-<i>, <id>-notebook and <id>-manager stay within 63 characters


# -------------------------------------------------------------------------------------------------------------
# names
# -------------------------------------------------------------------------------------------------------------
def worker_name(cluster_id: str, index: int) -> str:
    """The name of worker `index` of a cluster: its pod's name, its ``--name`` and its label."""
    _check_cluster_id(cluster_id)
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"worker index must be a whole number ≥ 0, got {index!r}")
    name = f"{cluster_id}-worker-{index}"
    if len(name) > 63:
        raise ValueError(f"worker name {name!r} is longer than 63 characters (a label value's limit): "
                         "use a shorter cluster id")
    return name


def manager_host(cluster_id: str, namespace: str) -> str:
    """The DNS name workers reach the Manager by: the manager Service's ``<name>.<namespace>.svc``."""
    _check_cluster_id(cluster_id)
    _check_namespace(namespace)
    return f"{cluster_id}-manager.{namespace}.svc"


def cluster_selector(cluster_id: str) -> str:
    """The label selector (``kubectl -l``, ``list_namespaced_pod(label_selector=)``) of a cluster's objects."""
    _check_cluster_id(cluster_id)
    return f"{LABEL_CLUSTER}={cluster_id}"


# -------------------------------------------------------------------------------------------------------------
# the manifests
# -------------------------------------------------------------------------------------------------------------
def token_secret(cluster_id: str, namespace: str, token: str, owner: tuple[str, str] | None = None,
                 creator: str | None = None) -> dict[str, Any]:
    """The Secret holding the Manager's token, which worker pods read as ``CHIMERA_TOKEN``."""
    if not isinstance(token, str) or not token:
        raise ValueError("token must be the Manager's token (manager.token), a non-empty string; got "
                         f"{type(token).__name__ if not isinstance(token, str) else 'an empty string'}")
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": _metadata(f"{cluster_id}-token", namespace, cluster_id, owner, creator),
            "type": "Opaque", "immutable": True,
            "data": {TOKEN_KEY: base64.b64encode(token.encode()).decode()}}


def manager_service(cluster_id: str, namespace: str, manager_port: int, notebook: str | None = None,
                    owner: tuple[str, str] | None = None, creator: str | None = None) -> dict[str, Any]:
    """The ClusterIP Service that gives the notebook pod's Manager port a stable DNS name (``manager_host``)."""
    _check_port(manager_port)
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _metadata(f"{cluster_id}-manager", namespace, cluster_id, owner, creator),
            "spec": {"type": "ClusterIP",
                     "selector": {LABEL_NOTEBOOK: _notebook(cluster_id, notebook)},
                     "ports": [{"name": "manager", "protocol": "TCP", "port": manager_port,
                                "targetPort": manager_port}]}}


def network_policy(cluster_id: str, namespace: str, notebook: str | None = None,
                   owner: tuple[str, str] | None = None, creator: str | None = None) -> dict[str, Any]:
    """The NetworkPolicy that lets into a cluster's worker pods only its own pods and the notebook pod."""
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": _metadata(f"{cluster_id}-workers", namespace, cluster_id, owner, creator),
            "spec": {"podSelector": {"matchLabels": {LABEL_CLUSTER: cluster_id}},
                     "policyTypes": ["Ingress"],
                     "ingress": [{"from": [
                         {"podSelector": {"matchLabels": {LABEL_CLUSTER: cluster_id}}},
                         {"podSelector": {"matchLabels": {LABEL_NOTEBOOK: _notebook(cluster_id, notebook)}}}]}]}}


def notebook_network_policy(cluster_id: str, namespace: str, notebook: str | None = None,
                            owner: tuple[str, str] | None = None, creator: str | None = None) -> dict[str, Any]:
    """The NetworkPolicy that lets a cluster's workers into the notebook pod (the Manager, taps, parameters)."""
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": _metadata(f"{cluster_id}-notebook", namespace, cluster_id, owner, creator),
            "spec": {"podSelector": {"matchLabels": {LABEL_NOTEBOOK: _notebook(cluster_id, notebook)}},
                     "policyTypes": ["Ingress"],  # Ingress only: adding Egress would cut the notebook's own egress
                     "ingress": [{"from": [{"podSelector": {"matchLabels": {LABEL_CLUSTER: cluster_id}}}]}]}}


def worker_pod(cluster_id: str, index: int, image: str, namespace: str, manager_port: int, *,
               cpu: str | float = "1", memory: str = "1Gi", cpu_limit: str | float | None = None,
               memory_limit: str | None = None, mode: str = "process", read_only_root: bool = True,
               env: Mapping[str, str] | None = None, image_pull_secret: str | None = None,
               owner: tuple[str, str] | None = None, creator: str | None = None) -> dict[str, Any]:
    """The Pod of worker `index`: ``cp-worker`` as uid 10001, the token from the Secret, restartPolicy Never."""
    name = worker_name(cluster_id, index)
    _check_image(image)
    _check_port(manager_port)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    resources = _resources(cpu, memory, cpu_limit, memory_limit)
    host = manager_host(cluster_id, namespace)
    args = ["--ip", host, "--port", str(manager_port), "--name", "$(CHIMERA_LAB_WORKER_NAME)",
            "--mode", mode, "--data-dir", DATA_DIR, "--timeout", str(WORKER_TIMEOUT),
            "--health-file", HEALTH_FILE, "--data-host", "$(CHIMERA_LAB_POD_IP)"]
    health = {"exec": {"command": [f"{WORKER_BIN}/python", "-I", "-S", "-c", HEALTH_CHECK, HEALTH_FILE]}}
    container: dict[str, Any] = {
        "name": CONTAINER, "image": image, "imagePullPolicy": "IfNotPresent", "args": args,
        "env": [_field_env("CHIMERA_LAB_WORKER_NAME", "metadata.name"),
                _field_env("CHIMERA_LAB_POD_IP", "status.podIP"),
                {"name": "CHIMERA_TOKEN",
                 "valueFrom": {"secretKeyRef": {"name": f"{cluster_id}-token", "key": TOKEN_KEY}}},
                {"name": "CHIMERA_LAB_WORKER_INDEX", "value": str(index)},
                {"name": "CHIMERA_LAB_MANAGER", "value": f"{host}:{manager_port}"},
                {"name": "CHIMERA_LAB_HEALTH_FILE", "value": HEALTH_FILE},
                *_extra_env(env)],
        "resources": resources,
        # the file is touched at every heartbeat once the worker has joined: up to 60 s to join, then 5 s stale
        # three times in a row means a stuck worker; the kubelet kills it and (restartPolicy Never) it is lost
        "startupProbe": {**health, "periodSeconds": 2, "timeoutSeconds": 5, "failureThreshold": 30},
        "livenessProbe": {**health, "periodSeconds": 5, "timeoutSeconds": 5, "failureThreshold": 3},
        "securityContext": {"runAsNonRoot": True, "runAsUser": WORKER_UID, "runAsGroup": WORKER_UID,
                            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": bool(read_only_root),
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "data", "mountPath": DATA_DIR}, {"name": "tmp", "mountPath": "/tmp"}],
    }
    meta = _metadata(name, namespace, cluster_id, owner, creator, labels={LABEL_WORKER: name},
                     annotations={ANNOTATION_MANAGER: f"{host}:{manager_port}"})
    spec: dict[str, Any] = {
        "restartPolicy": "Never",  # a lost worker is reported lost, as with Docker and Slurm
        "automountServiceAccountToken": False,  # workers never talk to the API server
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 10,
        "securityContext": {"runAsNonRoot": True, "runAsUser": WORKER_UID, "runAsGroup": WORKER_UID,
                            "fsGroup": WORKER_UID, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [{"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
    }
    if image_pull_secret is not None:
        _check_name(image_pull_secret, "image_pull_secret", "the name of a docker-registry Secret in the namespace")
        spec["imagePullSecrets"] = [{"name": image_pull_secret}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def rbac(namespace: str, service_account: str, notebook_pod: str | None = None) -> list[dict[str, Any]]:
    """The Role and RoleBinding that let the notebook's ServiceAccount run clusters in its namespace, no more."""
    _check_namespace(namespace)
    _check_name(service_account, "service_account", "the notebook pod's spec.serviceAccountName")
    rules: list[dict[str, Any]] = [
        # worker pods: create, watch (loss), delete (scale down, close, cleanup by label)
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "delete", "get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},  # the log tail of a lost worker
        {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},  # why: FailedScheduling, Unhealthy
        {"apiGroups": [""], "resources": ["services"], "verbs": ["create", "delete", "get", "list"]},
        # no get/list/watch on secrets: those would let the notebook read every Secret in the namespace
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "delete"]},
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"],
         "verbs": ["create", "delete", "get", "list"]},
    ]
    # to add chimera-lab/notebook to its own pod; without notebook_pod, to any pod: a per-student namespace only
    own = {"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]}
    if notebook_pod is not None:
        _check_name(notebook_pod, "notebook_pod", "the notebook pod's metadata.name (jupyter-<user> in Z2JH)")
        own["resourceNames"] = [notebook_pod]
    rules.append(own)
    labels = {"app.kubernetes.io/part-of": "chimera-lab"}  # applied by an administrator, not managed by chimera-lab
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": ROLE, "namespace": namespace, "labels": labels}, "rules": rules}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": ROLE, "namespace": namespace, "labels": labels},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ROLE},
               "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}]}
    return [role, binding]


def manifests(cluster_id: str, n_workers: int, image: str, namespace: str, manager_port: int, token: str, *,
              cpu: str | float = "1", memory: str = "1Gi", cpu_limit: str | float | None = None,
              memory_limit: str | None = None, mode: str = "process", read_only_root: bool = True,
              env: Mapping[str, str] | None = None, image_pull_secret: str | None = None,
              notebook: str | None = None, owner: tuple[str, str] | None = None, creator: str | None = None,
              service_account: str | None = None, notebook_pod: str | None = None) -> list[dict[str, Any]]:
    """Everything a cluster of `n_workers` needs, in apply order (with the RBAC first if `service_account`)."""
    _check_cluster_id(cluster_id)
    _check_namespace(namespace)
    if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
        raise ValueError(f"n_workers must be a whole number ≥ 1, got {n_workers!r}")
    _notebook(cluster_id, notebook)
    _owner_references(owner)
    out = rbac(namespace, service_account, notebook_pod) if service_account is not None else []
    out += [token_secret(cluster_id, namespace, token, owner, creator),
            manager_service(cluster_id, namespace, manager_port, notebook, owner, creator),
            network_policy(cluster_id, namespace, notebook, owner, creator),
            notebook_network_policy(cluster_id, namespace, notebook, owner, creator)]
    out += [worker_pod(cluster_id, i, image, namespace, manager_port, cpu=cpu, memory=memory, cpu_limit=cpu_limit,
                       memory_limit=memory_limit, mode=mode, read_only_root=read_only_root, env=env,
                       image_pull_secret=image_pull_secret, owner=owner, creator=creator) for i in range(n_workers)]
    return out


def as_json(manifests: Sequence[Mapping[str, Any]]) -> str:
    """The manifests as one JSON ``List`` document, which ``kubectl apply -f`` takes as it is."""
    return _dump({"apiVersion": "v1", "kind": "List", "items": list(manifests)}, 0, 0) + "\n"


# -------------------------------------------------------------------------------------------------------------
# parts and checks
# -------------------------------------------------------------------------------------------------------------
def _dump(value: Any, level: int, used: int, width: int = 110) -> str:
    """JSON indented by two spaces, with an object or array that fits in what is left of its line on that line."""
    flat = json.dumps(value)
    if used + len(flat) <= width or not isinstance(value, dict | list) or not value:
        return flat
    inner = "  " * (level + 1)
    if isinstance(value, dict):
        items = [f"{inner}{json.dumps(k)}: {_dump(v, level + 1, len(inner) + len(json.dumps(k)) + 2, width)}"
                 for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + "  " * level + "}"
    if all(not isinstance(v, dict | list) for v in value):  # scalars: as many to a line as fit
        lines, line = [], ""
        for text in (json.dumps(v) for v in value):
            if line and len(inner) + len(line) + len(text) + 2 > width:
                lines.append(line + ",")
                line = ""
            line = f"{line}, {text}" if line else text
        items = [inner + ln for ln in [*lines, line]]
        return "[\n" + "\n".join(items) + "\n" + "  " * level + "]"
    items = [inner + _dump(v, level + 1, len(inner), width) for v in value]
    return "[\n" + ",\n".join(items) + "\n" + "  " * level + "]"


def _metadata(name: str, namespace: str, cluster_id: str, owner: tuple[str, str] | None, creator: str | None,
              labels: Mapping[str, str] | None = None, annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    _check_cluster_id(cluster_id)
    _check_namespace(namespace)
    meta: dict[str, Any] = {"name": name, "namespace": namespace,
                            "labels": {LABEL_CLUSTER: cluster_id, **(labels or {}), **MANAGED}}
    notes = dict(annotations or {})
    if creator is not None:
        if not isinstance(creator, str) or not creator:
            raise ValueError(f"creator must be the owner_id() of the process making the cluster, got {creator!r}")
        notes[ANNOTATION_CREATOR] = creator
    if notes:
        meta["annotations"] = notes
    refs = _owner_references(owner)
    if refs:
        meta["ownerReferences"] = refs
    return meta


def _owner_references(owner: tuple[str, str] | None) -> list[dict[str, Any]]:
    """The notebook pod as owner: Kubernetes' garbage collector deletes the cluster's objects with it."""
    if owner is None:
        return []
    if not (isinstance(owner, tuple) and len(owner) == 2):
        raise ValueError(f"owner must be (name, uid) of the notebook pod, got {owner!r}")
    name, uid = owner
    _check_name(name, "owner's name", "the notebook pod's metadata.name")
    try:
        uuid.UUID(str(uid))
    except ValueError:
        raise ValueError(f"owner's uid {uid!r} is not a UID: use the notebook pod's metadata.uid "
                         "(read it from the API, e.g. read_namespaced_pod(name, namespace).metadata.uid)") from None
    return [{"apiVersion": "v1", "kind": "Pod", "name": name, "uid": str(uid)}]


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _extra_env(env: Mapping[str, str] | None) -> list[dict[str, Any]]:
    if env is None:
        return []
    if not isinstance(env, Mapping):
        raise ValueError(f"env must be a mapping of variable names to strings, got {env!r}")
    out = []
    for key, value in env.items():
        if not isinstance(key, str) or not _ENV_NAME.fullmatch(key):
            raise ValueError(f"env variable name {key!r} is not valid in Kubernetes: use letters, digits, '_', "
                             "'-' and '.', not starting with a digit")
        if key in RESERVED_ENV:
            hint = "the token travels in the Secret" if key == "CHIMERA_TOKEN" else "the pod spec sets it itself"
            raise ValueError(f"env cannot set {key}: {hint}; remove it from env")
        if not isinstance(value, str):
            raise ValueError(f"env {key} must be a string, got {value!r}: write it as str({value!r})")
        out.append({"name": key, "value": value})
    return out


def _resources(cpu: str | float, memory: str, cpu_limit: str | float | None,
               memory_limit: str | None) -> dict[str, Any]:
    """Requests and limits; limits default to the requests (QoS Guaranteed: the last to be evicted)."""
    req_cpu = _cpu(cpu, "cpu")
    lim_cpu = req_cpu if cpu_limit is None else _cpu(cpu_limit, "cpu_limit")
    req_mem = _memory(memory, "memory")
    lim_mem = req_mem if memory_limit is None else _memory(memory_limit, "memory_limit")
    for what, req, lim in (("cpu", req_cpu, lim_cpu), ("memory", req_mem, lim_mem)):
        if _quantity(req) > _quantity(lim):
            raise ValueError(f"{what} request {req!r} is above its limit {lim!r}, which Kubernetes refuses: "
                             f"raise {what}_limit or lower {what}")
    return {"requests": {"cpu": req_cpu, "memory": req_mem}, "limits": {"cpu": lim_cpu, "memory": lim_mem}}


def _cpu(value: str | float, what: str) -> str:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number of cores (2, 0.5) or a quantity ('500m'), got {value!r}")
    if isinstance(value, int | float):
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{what} must be more than 0 cores, got {value!r}")
        milli = Decimal(str(value)) * 1000
        if milli != milli.to_integral_value():
            raise ValueError(f"{what} {value!r} is finer than a millicore, which Kubernetes rounds: use a multiple "
                             "of 0.001")
        return str(int(value)) if milli % 1000 == 0 else f"{int(milli)}m"
    text = _quantity_text(value, what, "cores, e.g. '2', '0.5' or '500m'")
    suffix = _match_quantity(text).group("suffix") or ""
    if suffix not in ("", "m"):
        raise ValueError(f"{what} {text!r} is not a CPU amount: write cores ('2', '0.5') or millicores ('500m')")
    return text


def _memory(value: str, what: str) -> str:
    text = _quantity_text(value, what, "bytes, e.g. '512Mi' or '2Gi'")
    suffix = _match_quantity(text).group("suffix") or ""
    if suffix in ("m", "u", "n"):
        raise ValueError(f"{what} {text!r} is a fraction of a byte ('{suffix}' is {_SUFFIX[suffix]}): "
                         f"for mebibytes write {text[:-1]}Mi")
    return text


def _quantity_text(value: Any, what: str, example: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a Kubernetes quantity string in {example}; got {value!r}")
    if not _QUANTITY.fullmatch(value):
        hint = ""
        m = re.fullmatch(r"\s*([0-9.]+)\s*([kKmMgGtTpP])i?[bB]?\s*", value)
        if m:
            hint = f" ('{m.group(1)}{m.group(2).upper()}i' is probably meant)"
        raise ValueError(f"{what} {value!r} is not a Kubernetes quantity{hint}: write a number and a suffix, no "
                         f"space, no 'B': {example} (Ki, Mi, Gi, Ti are powers of 1024; k, M, G, T of 1000)")
    if _quantity(value) <= 0:
        raise ValueError(f"{what} {value!r} must be more than 0: {example}")
    return value


def _match_quantity(text: str) -> re.Match[str]:
    m = _QUANTITY.fullmatch(text)
    assert m is not None
    return m


def _quantity(text: str) -> Decimal:
    m = _match_quantity(text)
    number, suffix = Decimal(m.group("number")), m.group("suffix") or ""
    if suffix[:1] in ("e", "E"):
        return number * Decimal(10) ** int(suffix[1:])
    return number * _SUFFIX[suffix]


def _check_cluster_id(cluster_id: Any) -> None:
    if not isinstance(cluster_id, str) or not _DNS_1035.fullmatch(cluster_id) or len(cluster_id) > _MAX_ID:
        raise ValueError(f"cluster id {cluster_id!r} cannot name Kubernetes objects: use at most {_MAX_ID} "
                         "lowercase letters, digits and '-', starting with a letter and ending with a letter or "
                         "digit (a DNS-1035 label, as Service names must be), e.g. 'cp-3f2a9c'")


def _check_namespace(namespace: Any) -> None:
    if not isinstance(namespace, str) or not _DNS_LABEL.fullmatch(namespace) or len(namespace) > 63:
        raise ValueError(f"namespace {namespace!r} is not a valid Kubernetes namespace: use at most 63 lowercase "
                         "letters, digits and '-', starting and ending with a letter or digit (a DNS-1123 label)")


def _check_name(name: Any, what: str, meaning: str) -> None:
    if not isinstance(name, str) or not _DNS_SUBDOMAIN.fullmatch(name) or len(name) > 253:
        raise ValueError(f"{what} {name!r} is not a valid Kubernetes object name: give {meaning} (lowercase "
                         "letters, digits, '-' and '.', at most 253 characters)")


def _check_port(port: Any) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"manager port {port!r} is not a TCP port: use the Manager's port (manager.port, "
                         "1-65535); a Manager made with port=0 has its real port in manager.port")


def _check_image(image: Any) -> None:
    if not isinstance(image, str) or not _IMAGE.fullmatch(image) or len(image) > 4096:
        raise ValueError(f"image {image!r} is not a container image reference: give what ensure_image returns, "
                         "pushed where the cluster can pull it, e.g. 'registry.lab:5000/chimera-lab-worker:<hash>'")


def _notebook(cluster_id: str, notebook: str | None) -> str:
    value = cluster_id if notebook is None else notebook
    if not isinstance(value, str) or not value or len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
        raise ValueError(f"notebook {value!r} is not a valid label value for {LABEL_NOTEBOOK}: use at most 63 "
                         "letters, digits, '-', '_' and '.', starting and ending with a letter or digit")
    return value
