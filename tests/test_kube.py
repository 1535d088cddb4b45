"""The Kubernetes manifests of chimera_lab.cluster.kube, checked against the API schema of the ``kubernetes``
package's models (no cluster: nothing here talks to an API server), and the rules they must keep: the token only
in the Secret, one uniquely named pod per worker, a Service and NetworkPolicies that select the right pods, a Role
without wildcards, and errors that name the bad value."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest

from chimera_lab.cluster import kube
from chimera_lab.cluster.image import HEALTH_CHECK, HEALTH_FILE

CLUSTER, NS, PORT, TOKEN = "cp-3f2a9c", "jupyter-alice", 9000, "a-very-secret-token-3a1f"
IMAGE = "registry.lab:5000/chimera-lab-worker:1a2b3c4d5e6f"
OWNER = ("jupyter-alice", "c8269978-a95b-42e5-b3e3-71f81fe41d68")
API = kubernetes.client.ApiClient()  # only its (de)serializer: no request is ever made

DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")

CONFIGS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "classroom": dict(n_workers=3, cpu=0.5, memory="2Gi", memory_limit="3Gi", notebook="jupyter-alice",
                      owner=OWNER, service_account="jupyter-alice", notebook_pod="jupyter-alice",
                      env={"OMP_NUM_THREADS": "1"}, image_pull_secret="lab-registry"),
    "threads, writable root": dict(n_workers=2, mode="thread", read_only_root=False, cpu="250m",
                                   cpu_limit=2, memory="512Mi", service_account="default"),
}


def make(**kwargs: Any) -> list[dict[str, Any]]:
    args: dict[str, Any] = dict(cluster_id=CLUSTER, n_workers=2, image=IMAGE, namespace=NS, manager_port=PORT,
                                token=TOKEN)
    args.update(kwargs)
    return kube.manifests(**args)


def model_name(manifest: dict[str, Any]) -> str:
    """The kubernetes model class of a manifest: apiVersion "networking.k8s.io/v1", kind "NetworkPolicy" ->
    V1NetworkPolicy."""
    version = manifest["apiVersion"].rsplit("/", 1)[-1]
    return version[0].upper() + version[1:] + manifest["kind"]


def check_schema(manifest: dict[str, Any]) -> None:
    """Deserialize into the model (types and required fields), serialize back: the same dict, or a key the
    schema does not know (which deserializing drops silently) was in it."""
    name = model_name(manifest)
    assert hasattr(kubernetes.client, name), f"the kubernetes package has no model {name}"
    model = API.deserialize(json.dumps(manifest), name, "application/json")
    assert type(model).__name__ == name
    assert API.sanitize_for_serialization(model) == manifest


def of_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] == kind]


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A matchLabels / Service selector applied to a pod's labels."""
    wanted = selector.get("matchLabels", selector)
    return all(labels.get(k) == v for k, v in wanted.items())


# -------------------------------------------------------------------------------------------------------------
# the schema
# -------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config", CONFIGS, ids=list(CONFIGS))
def test_every_manifest_is_valid_against_the_kubernetes_schema(config: str) -> None:
    manifests = make(**CONFIGS[config])
    for manifest in manifests:
        check_schema(manifest)
    kinds = {model_name(m) for m in manifests}
    assert {"V1Secret", "V1Service", "V1NetworkPolicy", "V1Pod"} <= kinds
    if CONFIGS[config].get("service_account"):
        assert {"V1Role", "V1RoleBinding"} <= kinds


def test_the_schema_check_catches_unknown_keys_wrong_types_and_missing_fields() -> None:
    pod = kube.worker_pod(CLUSTER, 0, IMAGE, NS, PORT)
    misspelled = json.loads(json.dumps(pod))
    misspelled["spec"]["restartPolicyy"] = misspelled["spec"].pop("restartPolicy")
    with pytest.raises(AssertionError):
        check_schema(misspelled)
    service = kube.manager_service(CLUSTER, NS, PORT)
    service["spec"]["ports"][0]["port"] = str(PORT)
    with pytest.raises(Exception, match="port"):
        check_schema(service)
    del pod["spec"]["containers"][0]["name"]
    with pytest.raises(Exception, match="name"):
        check_schema(pod)


def test_apply_order_rbac_then_secret_service_policies_then_pods() -> None:
    kinds = [m["kind"] for m in make(n_workers=2, service_account="jupyter-alice")]
    assert kinds == ["Role", "RoleBinding", "Secret", "Service", "NetworkPolicy", "NetworkPolicy", "Pod", "Pod"]
    assert [m["kind"] for m in make(n_workers=1)][:2] == ["Secret", "Service"]  # no RBAC unless asked


def test_names_and_labels_are_what_the_api_server_accepts() -> None:
    for m in make(**CONFIGS["classroom"]):
        meta = m["metadata"]
        assert DNS_SUBDOMAIN.fullmatch(meta["name"]) and len(meta["name"]) <= 63, meta["name"]
        assert meta["namespace"] == NS
        for key, value in meta.get("labels", {}).items():
            prefix, _, name = key.rpartition("/")
            assert not prefix or DNS_SUBDOMAIN.fullmatch(prefix), key
            assert LABEL_NAME.fullmatch(name) and len(name) <= 63, key
            assert LABEL_VALUE.fullmatch(value) and len(value) <= 63, value
        if m["kind"] == "Service":
            assert DNS_1035.fullmatch(meta["name"]), "a Service name must be a DNS-1035 label"


def test_as_json_is_a_list_kubectl_applies_and_loads_back_unchanged() -> None:
    manifests = make(**CONFIGS["classroom"])
    text = kube.as_json(manifests)
    assert json.loads(text) == {"apiVersion": "v1", "kind": "List", "items": manifests}
    assert text == kube.as_json(make(**CONFIGS["classroom"]))  # the same inputs, the same bytes
    assert max(len(line) for line in text.splitlines()) <= 120


def test_the_example_in_the_design_note_is_what_the_code_generates() -> None:
    note = (Path(__file__).resolve().parents[1] / "docs" / "kubernetes.md").read_text()
    example = kube.as_json(kube.manifests("cp-3f2a9c", 1, IMAGE, "jupyter-alice", 9000, "s3cret", cpu="500m",
                                          memory="1Gi", notebook="jupyter-alice", owner=OWNER))
    assert f"```json\n{example}```" in note, "regenerate the example in docs/kubernetes.md"


def test_kube_imports_neither_kubernetes_nor_yaml() -> None:
    code = ("import sys; import chimera_lab.cluster.kube; "
            "print(sorted(m for m in ('kubernetes', 'yaml') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -------------------------------------------------------------------------------------------------------------
# the token
# -------------------------------------------------------------------------------------------------------------
def test_the_token_is_only_in_the_secret_and_pods_reference_it() -> None:
    manifests = make(**CONFIGS["classroom"])
    (secret,) = of_kind(manifests, "Secret")
    assert base64.b64decode(secret["data"][kube.TOKEN_KEY]).decode() == TOKEN
    encoded = secret["data"][kube.TOKEN_KEY]
    for m in manifests:
        if m is not secret:
            text = json.dumps(m)
            assert TOKEN not in text and encoded not in text, f"the token is in the {m['kind']} {m['metadata']}"
    for pod in of_kind(manifests, "Pod"):
        (container,) = pod["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        assert env["CHIMERA_TOKEN"] == {"name": "CHIMERA_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": secret["metadata"]["name"], "key": kube.TOKEN_KEY}}}
        assert "--token" not in container["args"]


# -------------------------------------------------------------------------------------------------------------
# the worker pods
# -------------------------------------------------------------------------------------------------------------
def test_each_worker_pod_has_a_unique_name_its_labels_and_that_name_as_worker_name() -> None:
    pods = of_kind(make(n_workers=4), "Pod")
    names = [p["metadata"]["name"] for p in pods]
    assert names == [f"{CLUSTER}-worker-{i}" for i in range(4)] == [kube.worker_name(CLUSTER, i) for i in range(4)]
    assert len(set(names)) == 4
    for i, pod in enumerate(pods):
        labels = pod["metadata"]["labels"]
        assert labels[kube.LABEL_CLUSTER] == CLUSTER and labels[kube.LABEL_WORKER] == names[i]
        (container,) = pod["spec"]["containers"]
        args, env = container["args"], {e["name"]: e for e in container["env"]}
        assert args[args.index("--name") + 1] == "$(CHIMERA_LAB_WORKER_NAME)"
        assert env["CHIMERA_LAB_WORKER_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
        assert env["CHIMERA_LAB_WORKER_INDEX"]["value"] == str(i)
        # Kubernetes expands $(VAR) only for variables the container defines: every one used must be there
        for var in re.findall(r"\$\(([^)]+)\)", " ".join(args)):
            assert var in env, f"$({var}) in args is not defined in env"


def test_worker_command_is_cp_worker_with_the_managers_service_and_health_file() -> None:
    manifests = make()
    (service,) = of_kind(manifests, "Service")
    pod = of_kind(manifests, "Pod")[0]
    (container,) = pod["spec"]["containers"]
    args = container["args"]
    assert "command" not in container  # the image's ENTRYPOINT, /opt/chimera/bin/cp-worker
    opts = dict(zip(args[::2], args[1::2], strict=True))
    assert opts == {"--ip": f"{service['metadata']['name']}.{NS}.svc", "--port": str(PORT),
                    "--name": "$(CHIMERA_LAB_WORKER_NAME)", "--mode": "process", "--data-dir": kube.DATA_DIR,
                    "--timeout": "30", "--health-file": HEALTH_FILE, "--data-host": "$(CHIMERA_LAB_POD_IP)"}
    assert opts["--ip"] == kube.manager_host(CLUSTER, NS)
    for probe in ("startupProbe", "livenessProbe"):
        command = container[probe]["exec"]["command"]
        assert command[-3:] == ["-c", HEALTH_CHECK, HEALTH_FILE]


def test_worker_pods_run_unprivileged_never_restart_and_write_only_to_empty_dirs() -> None:
    for pod in of_kind(make(), "Pod"):
        spec = pod["spec"]
        assert spec["restartPolicy"] == "Never"
        assert spec["automountServiceAccountToken"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 10001
        (container,) = spec["containers"]
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert set(mounts) == {kube.DATA_DIR, "/tmp"}
        assert all(volumes[name] == {"name": name, "emptyDir": {}} for name in mounts.values())
    pod = of_kind(make(read_only_root=False), "Pod")[0]
    assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is False


@pytest.mark.parametrize(("kwargs", "requests", "limits"), [
    ({}, {"cpu": "1", "memory": "1Gi"}, {"cpu": "1", "memory": "1Gi"}),
    ({"cpu": 0.5, "memory": "512Mi"}, {"cpu": "500m", "memory": "512Mi"}, {"cpu": "500m", "memory": "512Mi"}),
    ({"cpu": 2, "cpu_limit": "2500m", "memory": "2G", "memory_limit": "4Gi"},
     {"cpu": "2", "memory": "2G"}, {"cpu": "2500m", "memory": "4Gi"}),
])
def test_resources_limits_default_to_requests(kwargs: dict[str, Any], requests: dict[str, str],
                                              limits: dict[str, str]) -> None:
    pod = kube.worker_pod(CLUSTER, 0, IMAGE, NS, PORT, **kwargs)
    assert pod["spec"]["containers"][0]["resources"] == {"requests": requests, "limits": limits}


def test_every_cluster_object_has_the_notebook_pod_as_owner_and_the_creator_for_crash_cleanup() -> None:
    ref = {"apiVersion": "v1", "kind": "Pod", "name": OWNER[0], "uid": OWNER[1]}
    creator = "jupyter-alice:4242:123456"
    for m in make(**CONFIGS["classroom"], creator=creator):
        check_schema(m)
        if m["kind"] in ("Role", "RoleBinding"):
            assert "ownerReferences" not in m["metadata"]  # the administrator's, per namespace
            continue
        assert m["metadata"]["ownerReferences"] == [ref]
        assert m["metadata"]["labels"][kube.LABEL_CLUSTER] == CLUSTER  # cleanup by label finds it
        assert m["metadata"]["annotations"][kube.ANNOTATION_CREATOR] == creator
    for m in make():
        assert "ownerReferences" not in m["metadata"]
        assert kube.ANNOTATION_CREATOR not in m["metadata"].get("annotations", {})


# -------------------------------------------------------------------------------------------------------------
# the Service, the NetworkPolicies, the Role
# -------------------------------------------------------------------------------------------------------------
def test_the_service_selects_the_notebook_pod_on_the_managers_port() -> None:
    (service,) = of_kind(make(notebook="jupyter-alice", manager_port=41234), "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == {kube.LABEL_NOTEBOOK: "jupyter-alice"}
    assert service["spec"]["ports"] == [{"name": "manager", "protocol": "TCP", "port": 41234, "targetPort": 41234}]
    (default,) = of_kind(make(), "Service")
    assert default["spec"]["selector"] == {kube.LABEL_NOTEBOOK: CLUSTER}
    for pod in of_kind(make(), "Pod"):
        assert not matches(default["spec"]["selector"], pod["metadata"]["labels"])  # workers are not the Manager


def test_network_policies_admit_only_the_clusters_pods_and_the_notebook() -> None:
    manifests = make(notebook="jupyter-alice")
    workers, notebook = of_kind(manifests, "NetworkPolicy")
    pods = of_kind(manifests, "Pod")
    nb_labels = {kube.LABEL_NOTEBOOK: "jupyter-alice"}
    other_cluster = {kube.LABEL_CLUSTER: "cp-other", kube.LABEL_WORKER: "cp-other-worker-0"}
    stranger = {"app": "something-else"}

    spec = workers["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    assert all(matches(spec["podSelector"], p["metadata"]["labels"]) for p in pods)
    assert not matches(spec["podSelector"], nb_labels)
    (rule,) = spec["ingress"]
    assert "ports" not in rule  # nodes bind ports of their own choosing
    peers = rule["from"]
    assert all(set(peer) == {"podSelector"} for peer in peers)  # same namespace; no ipBlock, no namespaceSelector

    def admitted(labels: dict[str, str], policy: dict[str, Any]) -> bool:
        (ingress,) = policy["spec"]["ingress"]
        return any(matches(peer["podSelector"], labels) for peer in ingress["from"])

    assert all(admitted(p["metadata"]["labels"], workers) for p in pods)
    assert admitted(nb_labels, workers)
    assert not admitted(other_cluster, workers) and not admitted(stranger, workers)

    assert notebook["spec"]["policyTypes"] == ["Ingress"]  # never Egress: it would cut the notebook's own egress
    assert matches(notebook["spec"]["podSelector"], nb_labels)
    assert all(admitted(p["metadata"]["labels"], notebook) for p in pods)
    assert not admitted(other_cluster, notebook) and not admitted(stranger, notebook)


def test_the_role_is_least_privilege_without_wildcards() -> None:
    role, binding = kube.rbac(NS, "jupyter-alice", notebook_pod="jupyter-alice")
    rules = role["rules"]
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], f"wildcard in {field}: {rule}"
        assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule["verbs"])
    granted = {(g, r, v) for rule in rules if "resourceNames" not in rule
               for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    assert {r for _, r, _ in granted} == {"pods", "pods/log", "events", "services", "secrets", "networkpolicies"}
    assert {v for _, r, v in granted if r == "events"} == {"list"}
    assert {v for _, r, v in granted if r == "secrets"} == {"create", "delete"}  # cannot read any Secret
    assert {v for _, r, v in granted if r == "pods"} == {"create", "delete", "get", "list", "watch"}
    assert ("", "pods/log", "get") in granted
    assert not any(v in ("patch", "update") for _, _, v in granted)
    (own,) = [rule for rule in rules if "resourceNames" in rule]
    assert own == {"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"], "resourceNames": ["jupyter-alice"]}
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "jupyter-alice", "namespace": NS}]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == NS
    for m in (role, binding):
        check_schema(m)


# -------------------------------------------------------------------------------------------------------------
# bad inputs
# -------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "message"), [
    ({"cluster_id": "CP_1"}, r"cluster id 'CP_1' .*DNS-1035"),
    ({"cluster_id": "3f2a9c"}, r"cluster id '3f2a9c' .*starting with a letter"),
    ({"cluster_id": "cp-" + "a" * 40}, r"at most 40"),
    ({"cluster_id": "cp-"}, r"cluster id 'cp-'"),
    ({"n_workers": 0}, r"n_workers must be a whole number ≥ 1, got 0"),
    ({"n_workers": True}, r"n_workers .* got True"),
    ({"namespace": "Jupyter_Alice"}, r"namespace 'Jupyter_Alice' is not a valid Kubernetes namespace"),
    ({"manager_port": 0}, r"manager port 0 is not a TCP port"),
    ({"manager_port": 70000}, r"manager port 70000 .*1-65535"),
    ({"manager_port": "9000"}, r"manager port '9000'"),
    ({"token": ""}, r"token must be the Manager's token"),
    ({"image": "Chimera Lab Worker"}, r"image 'Chimera Lab Worker' is not a container image reference"),
    ({"image": ""}, r"image '' is not"),
    ({"memory": "1GB"}, r"memory '1GB' is not a Kubernetes quantity \('1Gi' is probably meant\)"),
    ({"memory": "2 Gi"}, r"memory '2 Gi' is not a Kubernetes quantity"),
    ({"memory": "512m"}, r"memory '512m' is a fraction of a byte.*512Mi"),
    ({"memory": "0"}, r"memory '0' must be more than 0"),
    ({"memory": 2048}, r"memory must be a Kubernetes quantity string"),
    ({"memory": "2Gi", "memory_limit": "1Gi"}, r"memory request '2Gi' is above its limit '1Gi'.*memory_limit"),
    ({"cpu": "500M"}, r"cpu '500M' is not a CPU amount.*'500m'"),
    ({"cpu": 0}, r"cpu must be more than 0 cores, got 0"),
    ({"cpu": float("nan")}, r"cpu must be more than 0 cores"),
    ({"cpu": 0.0005}, r"cpu 0.0005 is finer than a millicore"),
    ({"cpu": "2", "cpu_limit": "1"}, r"cpu request '2' is above its limit '1'.*cpu_limit"),
    ({"mode": "threads"}, r"mode must be one of process, thread, got 'threads'"),
    ({"env": {"CHIMERA_TOKEN": "x"}}, r"env cannot set CHIMERA_TOKEN: the token travels in the Secret"),
    ({"env": {"CHIMERA_LAB_WORKER_NAME": "x"}}, r"env cannot set CHIMERA_LAB_WORKER_NAME"),
    ({"env": {"1X": "a"}}, r"env variable name '1X' is not valid"),
    ({"env": {"THREADS": 1}}, r"env THREADS must be a string, got 1"),
    ({"owner": ("jupyter-alice", "not-a-uid")}, r"owner's uid 'not-a-uid' is not a UID.*metadata.uid"),
    ({"owner": "jupyter-alice"}, r"owner must be \(name, uid\)"),
    ({"notebook": "x" * 64}, r"notebook 'x{64}' is not a valid label value"),
    ({"service_account": "Jupyter Alice"}, r"service_account 'Jupyter Alice' is not a valid Kubernetes object"),
    ({"service_account": "default", "notebook_pod": "Bad_Pod"}, r"notebook_pod 'Bad_Pod'"),
    ({"image_pull_secret": "Lab Registry"}, r"image_pull_secret 'Lab Registry'"),
])
def test_bad_inputs_raise_value_errors_naming_the_value_and_the_fix(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(**kwargs)


def test_worker_name_refuses_bad_indexes() -> None:
    with pytest.raises(ValueError, match=r"worker index must be a whole number ≥ 0, got -1"):
        kube.worker_name(CLUSTER, -1)
    assert kube.cluster_selector(CLUSTER) == f"{kube.LABEL_CLUSTER}={CLUSTER}"
