"""Docker workers on a real engine: containers in a graph beside a local worker, loss, cleanup, the image cache,
limits, errors, bridge networks, the seed's CHIMERA_BACKEND=docker and `%chimera up --docker`.

Needs a Docker engine and a local base image with python3 (``../shared/recipes/docker-engine.sh start`` and
``base-image``; CHIMERA_DOCKER_BASE_IMAGE names it, default chimera-lab-base:bookworm). Without them these tests
skip with that advice, except in CI (``CI`` set), where that is a failure. Nothing is pulled from a registry: the
"missing image" cases name a registry on 127.0.0.1, so the engine's pull attempt stays on this machine.
"""

from __future__ import annotations

import io
import os
import random
import socket
import subprocess
import sys
import tarfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import wait_until
from pipeline_nodes import Count, Scale
from test_ml_seed import call, iris, predict_body, worker_file, write_project

import chimera_lab as cp
from chimera_lab.cluster.docker import LABEL, LABEL_OWNER, DockerCluster
from chimera_lab.cluster.image import chimera_lab_wheel, ensure_image, worker_requirements

BASE = os.environ.get("CHIMERA_DOCKER_BASE_IMAGE") or "chimera-lab-base:bookworm"
HOW = ("start one with ../shared/recipes/docker-engine.sh start, and make the base image with "
       "../shared/recipes/docker-engine.sh base-image")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and the Docker tests cannot run: {reason}", pytrace=False)
    pytest.skip(f"{reason}: {HOW}")


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    import docker

    try:
        c = docker.from_env()
        c.ping()
    except Exception as exc:
        _unavailable(f"no Docker engine ({exc})")
    try:
        c.images.get(BASE)
    except docker.errors.ImageNotFound:
        _unavailable(f"the base image {BASE} is not on the engine")
    yield c
    c.close()


@pytest.fixture(scope="module")
def image(client: Any) -> str:
    """The worker image for BASE (built here if this is the first use on this engine)."""
    tag, _ = ensure_image(client, BASE, progress=False)
    return tag


def labelled(client: Any, cluster_id: str) -> list[Any]:
    return client.containers.list(all=True, filters={"label": f"{LABEL}={cluster_id}"})


def networks(client: Any, cluster_id: str) -> list[Any]:
    return client.networks.list(filters={"label": f"{LABEL}={cluster_id}"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_subnet(client: Any) -> str:
    """A /24 in 10.23x.y.0 that no network on the engine uses."""
    used = {c.get("Subnet") for n in client.networks.list() for c in (n.attrs.get("IPAM") or {}).get("Config") or []}
    while True:
        subnet = f"10.{random.randint(230, 239)}.{random.randint(0, 255)}.0/24"
        if subnet not in used:
            return subnet


def derived_image(client: Any, dockerfile_tail: str) -> str:
    """An image of the test's own, FROM the base image plus `dockerfile_tail`; remove it after use."""
    tag = f"chimera-lab-test-base:{uuid.uuid4().hex[:10]}"
    client.images.build(fileobj=io.BytesIO(f"FROM {BASE}\n{dockerfile_tail}\n".encode()), tag=tag, rm=True)
    return tag


# ---------------------------------------------------------------------------------------------------------------
# the scenario: a graph on 2 containers and 1 local worker; a container killed mid-run
# ---------------------------------------------------------------------------------------------------------------
def test_graph_on_two_containers_and_a_local_worker_goes_on_when_a_container_dies(client: Any, image: str,
                                                                                  tmp_path: Path) -> None:
    with cp.Manager(port=0, logdir=tmp_path / "logs") as m:
        cp.LocalCluster(1, manager=m, prefix="local")
        cluster = m.add_workers(DockerCluster(2, base_image=BASE, progress=False))
        d0, d1 = cluster.worker_names
        assert (d0, d1) == ("docker-0", "docker-1") and cluster.image == image and not cluster.image_built
        assert {n: w["state"] for n, w in m.status()["workers"].items()} == {
            "local-0": "connected", d0: "connected", d1: "connected"}

        src, a, b = Count("source", rate_hz=50), Scale("a", coef=2), Scale("b", coef=3)
        g = cp.Graph()
        g.add_edge(src, a)
        g.add_edge(src, b)
        m.commit_graph(g, {d0: [src], d1: [a], "local-0": [b]})
        with m.tap("a") as tap_a, m.tap("b") as tap_b:
            m.start()
            from_a = [tap_a.get(15).get("default")["value"] for _ in range(3)]
            before = [tap_b.get(15).get("default")["value"] for _ in range(3)]
            assert all(v % 2 == 0 for v in from_a) and all(v % 3 == 0 for v in before)  # container → container/local

            cluster.container(d1).kill()
            t0 = time.monotonic()
            wait_until(lambda: m.status()["workers"][d1]["state"] == "lost", 3.0, f"{d1} to be reported lost")
            assert time.monotonic() - t0 < 3.0
            assert m.status()["nodes"]["a"]["state"] == "lost"
            # the rest keeps going: the source in the other container still feeds the local worker
            after = [tap_b.get(15).get("default")["value"] for _ in range(5)]
            assert min(after) > max(before) and all(v % 3 == 0 for v in after)
            assert m.status()["workers"][d0]["state"] == "connected"
            assert m.status()["workers"]["local-0"]["state"] == "connected"
        m.stop()
        cid = cluster.id
    assert labelled(client, cid) == [] and networks(client, cid) == []  # the Manager's shutdown removed them


def test_limits_non_root_health_labels_and_logs(client: Any, image: str) -> None:
    with cp.Manager(port=0) as m:
        cluster = cp.DockerCluster(2, manager=m, base_image=BASE, cpu_shares=[512, 256], mem_limit="256m",
                                   env={"CHIMERA_TEST_GREETING": "hello"}, progress=False)
        for name, shares in zip(cluster.worker_names, (512, 256), strict=True):
            c = cluster.container(name)
            c.reload()
            assert c.attrs["HostConfig"]["CpuShares"] == shares
            assert c.attrs["HostConfig"]["Memory"] == 256 * 2**20
            assert c.labels[LABEL] == cluster.id and c.labels["chimera-lab.worker"] == name
            assert c.exec_run(["id", "-u"]).output.strip() == b"10001"  # not root
            assert c.exec_run(["printenv", "CHIMERA_TEST_GREETING"]).output.strip() == b"hello"

        def healthy() -> bool:
            for name in cluster.worker_names:
                cluster.container(name).reload()
            return all(cluster.container(n).attrs["State"].get("Health", {}).get("Status") == "healthy"
                       for n in cluster.worker_names)

        wait_until(healthy, 30, "both containers to be healthy")
        assert "cp-worker 'docker-0' connected to the Manager" in m.logs("docker-0")
        assert m.call("docker-1", lambda w: (w.name, os.getuid())).result(10) == ("docker-1", 10001)
        with pytest.raises(cp.ManagerError, match="no worker named 'nobody'"):
            m.logs("nobody")
    assert labelled(client, cluster.id) == []


def test_a_worker_started_by_hand_has_no_launcher_log(tmp_path: Path) -> None:
    with cp.Manager(port=0) as m:
        w = cp.Worker("by-hand", data_dir=tmp_path).connect(m.host, m.port)
        try:
            with pytest.raises(cp.ManagerError, match="not started by a launcher of this Manager"):
                m.logs("by-hand")
        finally:
            w.shutdown()


# ---------------------------------------------------------------------------------------------------------------
# the image: reused, rebuilt after a change, clear errors
# ---------------------------------------------------------------------------------------------------------------
def test_the_image_is_reused_and_rebuilt_after_a_change(client: Any, image: str) -> None:
    t = time.perf_counter()
    assert ensure_image(client, BASE, progress=False) == (image, False)
    assert time.perf_counter() - t < 5.0  # no build: the content hash found the image

    changed = derived_image(client, f"LABEL chimera-lab-test={uuid.uuid4().hex}")  # another base: new content
    rebuilt = None
    try:
        rebuilt, built = ensure_image(client, changed, progress=False)
        assert built and rebuilt != image
        assert ensure_image(client, changed, progress=False) == (rebuilt, False)
    finally:
        if rebuilt:
            client.images.remove(rebuilt, force=True)
        client.images.remove(changed, force=True)


def test_the_image_hash_follows_chimera_labs_files(tmp_path: Path) -> None:
    one, two = chimera_lab_wheel(tmp_path / "a").read_bytes(), chimera_lab_wheel(tmp_path / "b").read_bytes()
    assert one == two  # the same files make the same wheel, so the same image tag
    pins = worker_requirements()
    assert {"pyzmq", "numpy", "cloudpickle", "scikit-learn"} <= set(pins)
    assert not {"jupyterlab", "ipywidgets", "docker", "matplotlib"} & set(pins)  # the notebook side stays out
    from importlib import metadata

    assert pins["numpy"] == metadata.version("numpy")  # the host's versions


def test_a_missing_base_image_is_named_with_the_fix(client: Any) -> None:
    missing = f"127.0.0.1:{free_port()}/chimera-lab-missing:404"  # a pull attempt stays on this machine
    from chimera_lab.manager import managers

    running = len(managers())
    with pytest.raises(cp.DockerError, match=rf"base image '{missing}' is not on the Docker engine and could not "
                                             r"be pulled .*docker pull .*base_image="):
        DockerCluster(1, base_image=missing, progress=False).start()
    assert len(managers()) == running  # the Manager it started for itself was shut down again


def test_a_base_image_without_python_and_a_failing_build_step_are_explained(client: Any) -> None:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        info = tarfile.TarInfo("README")
        text = b"no python here\n"
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
    bare = f"chimera-lab-test-bare:{uuid.uuid4().hex[:10]}"
    client.api.import_image_from_data(data.getvalue(), repository=bare.split(":")[0], tag=bare.split(":")[1])
    no_venv = derived_image(client, "USER root\nRUN rm -rf /usr/lib/python3*/venv")
    try:
        with pytest.raises(cp.DockerError, match=rf"base image '{bare}' has no working python3 .*python:3.11-slim"):
            ensure_image(client, bare, progress=False)
        bare_id = client.images.get(bare).id
        assert not [c.name for c in client.containers.list(all=True, filters={"label": "chimera-lab.image=probe"})
                    if c.attrs["Image"] == bare_id], "the failed probe left its container"
        with pytest.raises(cp.ImageBuildError, match=r"failed at step 'RUN python3 -m venv /opt/chimera(.|\n)*venv")\
                as failed:
            ensure_image(client, no_venv, progress=False)
        assert failed.value.step is not None and failed.value.step.startswith("RUN python3 -m venv")
    finally:
        client.images.remove(bare, force=True)
        client.images.remove(no_venv, force=True)


def test_no_engine_says_how_to_start_one() -> None:
    with pytest.raises(cp.DockerError, match=r"no Docker engine reachable at unix:///nonexistent/docker.sock .*"
                                             r"Start one .*DOCKER_HOST"):
        DockerCluster(1, docker_url="unix:///nonexistent/docker.sock").start()


@pytest.mark.parametrize("kwargs, message", [
    ({"n_workers": 0}, "at least one worker"),
    ({"cpu_shares": 1}, "cpu_shares must be whole numbers >= 2"),
    ({"cpu_shares": [512]}, "cpu_shares has 1 entries for 2 workers"),
    ({"network": "none"}, "network='none' cannot be used"),
    ({"ports": {"80/tcp": 8080}}, "ports are published only on a bridge network"),
    ({"subnet": "10.1.2.0/24"}, "subnet= needs a bridge network"),
    ({"network": "chimera-x", "subnet": "10.1.2.300/24"}, "subnet '10.1.2.300/24' is not a network"),
])
def test_bad_arguments_are_named(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DockerCluster(**{"n_workers": 2, **kwargs})


# ---------------------------------------------------------------------------------------------------------------
# cleanup: always, and only what is ours
# ---------------------------------------------------------------------------------------------------------------
def test_cleanup_removes_leftovers_of_dead_runs_and_nothing_else(client: Any, image: str) -> None:
    leftover = client.containers.create(BASE, ["sleep", "300"], network_mode="none", labels={
        LABEL: "crashed-run", LABEL_OWNER: f"{socket.gethostname()}:999999999:1"})
    stranger = client.containers.create(BASE, ["sleep", "300"], network_mode="none",
                                        labels={"purpose": "chimera-lab-test-stranger"})
    try:
        with cp.Manager(port=0) as m:
            live = DockerCluster(1, manager=m, base_image=BASE, progress=False)
            removed = DockerCluster.cleanup()
            assert leftover.name in removed
            assert live.container("docker-0").name not in removed
            live.container("docker-0").reload()
            assert live.container("docker-0").status == "running"  # a live run's containers are not leftovers
            stranger.reload()  # still there: it has no chimera-lab label
        assert labelled(client, "crashed-run") == []
    finally:
        stranger.remove(force=True)


def _script(tmp_path: Path, body: str) -> subprocess.Popen[str]:
    path = tmp_path / "run.py"
    path.write_text(textwrap.dedent(body))
    return subprocess.Popen([sys.executable, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "CHIMERA_DOCKER_BASE_IMAGE": BASE})


def test_interpreter_exit_removes_the_containers_and_cleanup_handles_a_killed_one(client: Any, image: str,
                                                                                  tmp_path: Path) -> None:
    body = """
        import sys, time, chimera_lab as cp
        m = cp.Manager(port=0)
        c = m.add_workers(cp.DockerCluster(2, progress=False))
        print(c.id, flush=True)
        if sys.argv[-1] == "wait":
            time.sleep(600)
    """
    proc = _script(tmp_path, body)  # exits without closing anything: atexit must
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    cid = out.split()[0]
    assert labelled(client, cid) == []

    path = tmp_path / "run.py"
    proc = subprocess.Popen([sys.executable, str(path), "wait"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "CHIMERA_DOCKER_BASE_IMAGE": BASE})
    try:
        assert proc.stdout is not None
        cid = proc.stdout.readline().strip()
        assert len(labelled(client, cid)) == 2
    finally:
        proc.kill()  # SIGKILL, by PID: no atexit, its containers stay behind
        proc.wait(10)
    assert len(labelled(client, cid)) == 2
    removed = DockerCluster.cleanup()
    assert len([r for r in removed if cid in r]) == 2
    assert labelled(client, cid) == []


# ---------------------------------------------------------------------------------------------------------------
# bridge networks, addresses, published ports, conflicts
# ---------------------------------------------------------------------------------------------------------------
def test_a_bridge_network_with_a_subnet_addresses_and_published_ports(client: Any, image: str) -> None:
    name, subnet = f"chimera-test-{uuid.uuid4().hex[:8]}", free_subnet(client)
    prefix = subnet.rsplit(".", 1)[0]
    p0, p1, taken = free_port(), free_port(), socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with cp.Manager(port=0) as m:
            cluster = DockerCluster(2, manager=m, base_image=BASE, network=name, subnet=subnet,
                                    ip_addresses=[f"{prefix}.2", f"{prefix}.3"],
                                    ports=[{"8000/tcp": ("127.0.0.1", p0)}, {"8000/tcp": ("127.0.0.1", p1)}],
                                    progress=False)
            assert f"{prefix}.1" in m.addresses  # the Manager also listens on the gateway, nowhere else new
            for w, ip, port in zip(cluster.worker_names, (f"{prefix}.2", f"{prefix}.3"), (p0, p1), strict=True):
                c = cluster.container(w)
                c.reload()
                assert c.attrs["NetworkSettings"]["Networks"][name]["IPAddress"] == ip
                assert c.attrs["HostConfig"]["PortBindings"] == {"8000/tcp": [{"HostIp": "127.0.0.1",
                                                                              "HostPort": str(port)}]}
            # data flows between the two containers over the bridge
            src, step = Count("source", rate_hz=50), Scale("step", coef=5)
            g = cp.Graph()
            g.add_edge(src, step)
            m.commit_graph(g, {"docker-0": [src], "docker-1": [step]})
            with m.tap("step") as tap:
                m.start()
                got = [tap.get(15).get("default")["value"] for _ in range(3)]
            m.stop()
            assert all(v % 5 == 0 and v > 0 for v in got)

            with pytest.raises(cp.DockerError, match=rf"network named '{name}' already exists with subnet {subnet}, "
                                                     r"not 10\.229\.0\.0/24: choose another network name"):
                DockerCluster(1, manager=m, base_image=BASE, network=name, subnet="10.229.0.0/24", prefix="x",
                              progress=False)
            busy = taken.getsockname()[1]
            with pytest.raises(cp.DockerError, match=rf"cannot start the container of worker 'y-0'.*{busy}.*in use"):
                DockerCluster(1, manager=m, base_image=BASE, network=name, prefix="y",
                              ports={"8000/tcp": ("127.0.0.1", busy)}, progress=False)
            cid = cluster.id
        assert labelled(client, cid) == [] and networks(client, cid) == []
        assert client.networks.list(names=[name]) == []
    finally:
        taken.close()


# ---------------------------------------------------------------------------------------------------------------
# the seed's workflow with CHIMERA_BACKEND=docker; %chimera up --docker
# ---------------------------------------------------------------------------------------------------------------
def test_seed_workflow_with_the_docker_backend(client: Any, image: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from chimera_lab.ml.masters import AggregationMaster
    from chimera_lab.ml.service import serve

    X, y = iris()
    tree = worker_file("ClassificationWorker(DecisionTreeClassifier(), bootstrap=True)",
                       "from sklearn.tree import DecisionTreeClassifier")
    write_project(tmp_path, {"w1": tree, "w2": tree}, {"w1": (X, y), "w2": (X, y)})
    subnet = free_subnet(client)
    prefix = subnet.rsplit(".", 1)[0]
    network = f"chimera-seed-{uuid.uuid4().hex[:8]}"
    ports = [free_port(), free_port()]
    monkeypatch.chdir(tmp_path)
    for key, value in {"CHIMERA_WORKERS_NODES_NAMES": '["w1", "w2"]', "CHIMERA_BACKEND": "docker",
                       "CHIMERA_NETWORK_NAME": network, "CHIMERA_NETWORK_PREFIX": prefix,
                       "CHIMERA_NETWORK_SUBNET_MASK": "24", "CHIMERA_WORKERS_CPU_SHARES": "[512, 1024]",
                       "CHIMERA_WORKERS_MAPPED_PORTS": str(ports), "CHIMERA_WORKERS_HOST": "127.0.0.1",
                       "CHIMERA_WORKERS_PORT": "8080", "CHIMERA_DOCKER_BASE_IMAGE": BASE}.items():
        monkeypatch.setenv(key, value)
    with serve(AggregationMaster(), port=0) as service:
        cluster = service.docker
        status, fit, _ = call(f"{service.url}/v1/chimera/aggregation/fit")
        assert status == 200, fit
        assert fit["contributors"] == ["w1", "w2"] and fit["failed"] == {}
        status, answer, _ = call(f"{service.url}/v1/chimera/aggregation/predict", predict_body(X))
        assert status == 200 and (np.array(answer["y_pred_rows"]) == y.to_numpy()).mean() >= 0.9
        for i, (name, shares) in enumerate((("w1", 512), ("w2", 1024))):
            c = cluster.container(name)
            c.reload()
            assert c.attrs["HostConfig"]["CpuShares"] == shares
            assert c.attrs["NetworkSettings"]["Networks"][network]["IPAddress"] == f"{prefix}.{i + 2}"
            assert c.attrs["HostConfig"]["PortBindings"]["8080/tcp"] == [{"HostIp": "127.0.0.1",
                                                                          "HostPort": str(ports[i])}]
            # its own data only, read-only; nothing of it in the image
            seen = c.exec_run(["ls", "/home/chimera/app/chimera_train_data"]).output.decode().split()
            assert seen == [name]
            assert c.exec_run(["touch", f"/home/chimera/app/chimera_train_data/{name}/x"]).exit_code != 0
        assert "fitted" in (tmp_path / "chimera_status.log").read_text()
        cid = cluster.id
    assert labelled(client, cid) == [] and client.networks.list(names=[network]) == []


def test_parameter_server_with_the_docker_backend(client: Any, image: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # the SGD rounds travel on a channel of their own: containers on a bridge network must reach it too
    import pandas as pd
    from sklearn.datasets import make_classification

    from chimera_lab.ml.masters import ParameterServerMaster
    from chimera_lab.ml.service import serve

    Xa, ya = make_classification(n_samples=400, n_features=4, n_informative=2, n_redundant=0, class_sep=2.0,
                                 random_state=1)
    X, y = pd.DataFrame(Xa, columns=["a", "b", "c", "d"]), pd.Series(ya, name="label")
    sgd = worker_file('SGDWorker("classifier", loss="log_loss")')
    write_project(tmp_path, {"s1": sgd, "s2": sgd}, {"s1": (X[::2], y[::2]), "s2": (X[1::2], y[1::2])})
    subnet = free_subnet(client)
    network = f"chimera-ps-{uuid.uuid4().hex[:8]}"
    monkeypatch.chdir(tmp_path)
    for key, value in {"CHIMERA_WORKERS_NODES_NAMES": '["s1", "s2"]', "CHIMERA_BACKEND": "docker",
                       "CHIMERA_NETWORK_NAME": network, "CHIMERA_NETWORK_PREFIX": subnet.rsplit(".", 1)[0],
                       "CHIMERA_NETWORK_SUBNET_MASK": "24", "CHIMERA_WORKERS_CPU_SHARES": "[1024, 1024]",
                       "CHIMERA_WORKERS_MAPPED_PORTS": str([free_port(), free_port()]),
                       "CHIMERA_DOCKER_BASE_IMAGE": BASE}.items():
        monkeypatch.setenv(key, value)
    with serve(ParameterServerMaster("classifier", max_iter=50, worker_timeout=30), port=0) as service:
        t0 = time.monotonic()
        status, fit, _ = call(f"{service.url}/v1/chimera/parameter-server/fit")
        assert status == 200, fit
        assert fit["contributors"] == ["s1", "s2"] and fit["failed"] == {}
        assert time.monotonic() - t0 < 30
        status, answer, _ = call(f"{service.url}/v1/chimera/parameter-server/predict", predict_body(X))
        assert status == 200 and (np.array(answer["y_pred_rows"]) == y.to_numpy()).mean() >= 0.9
        cid = service.docker.id
    assert labelled(client, cid) == [] and client.networks.list(names=[network]) == []


def test_magic_up_with_docker_workers(client: Any, image: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from IPython.testing.globalipapp import start_ipython

    monkeypatch.setenv("CHIMERA_DOCKER_BASE_IMAGE", BASE)
    ip = start_ipython()
    assert ip is not None
    ip.run_line_magic("load_ext", "chimera_lab")
    magics = ip.magics_manager.registry["ChimeraMagics"]
    try:
        ip.run_line_magic("chimera", "up --workers 1 --docker 2")
        m = ip.user_ns["manager"]
        assert sorted(m.workers) == ["docker-0", "docker-1", "local-0"]
        assert all(w["state"] == "connected" for w in m.status()["workers"].values())
        cid = m._launchers[-1].id
    finally:
        magics.shutdown()
    assert m.state == "shutdown" and labelled(client, cid) == []


# ---------------------------------------------------------------------------------------------------------------
# docker_url="ssh://...": the engine reached through a real sshd (on 127.0.0.1, this machine's engine behind it)
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture
def sshd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An sshd of this test's own on 127.0.0.1 with a fresh key; `ssh` on PATH uses that key. Yields its URL."""
    import shutil

    if not (Path("/usr/sbin/sshd").exists() and shutil.which("ssh") and shutil.which("docker")):
        _unavailable("sshd, ssh or the docker command line is missing (apt-get install openssh-server docker.io)")
    d = tmp_path / "ssh"
    d.mkdir()
    for key in ("host", "user"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    (d / "authorized_keys").write_text((d / "user.pub").read_text())
    port = free_port()
    (d / "sshd_config").write_text(textwrap.dedent(f"""\
        Port {port}
        ListenAddress 127.0.0.1
        HostKey {d / 'host'}
        AuthorizedKeysFile {d / 'authorized_keys'}
        PidFile {d / 'sshd.pid'}
        StrictModes no
        PermitRootLogin prohibit-password
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        UsePAM no
        """))
    (d / "ssh_config").write_text(textwrap.dedent(f"""\
        Host 127.0.0.1
            IdentityFile {d / 'user'}
            IdentitiesOnly yes
            StrictHostKeyChecking no
            UserKnownHostsFile /dev/null
            LogLevel ERROR
        """))
    shim = d / "bin"
    shim.mkdir()
    (shim / "ssh").write_text(f"#!/bin/sh\nexec {shutil.which('ssh')} -F {d / 'ssh_config'} \"$@\"\n")
    (shim / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim}:{os.environ['PATH']}")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.PIPE)
    try:
        def listening() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_until(lambda: listening() or proc.poll() is not None, 10, "sshd to listen")
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "sshd exited"
        yield f"ssh://{os.environ.get('USER') or 'root'}@127.0.0.1:{port}"
    finally:
        proc.terminate()  # by PID: the sshd this fixture started
        proc.wait(10)


def test_workers_on_an_engine_reached_over_ssh(client: Any, image: str, sshd: str) -> None:
    with cp.Manager(port=0) as m:
        cluster = DockerCluster(1, manager=m, docker_url=sshd, base_image=BASE, progress=False)
        assert str(cluster._client.api.base_url).startswith("http+docker://ssh")
        assert m.call("docker-0", lambda w: os.getuid()).result(10) == 10001
        assert "connected to the Manager" in m.logs("docker-0")
        cluster.container("docker-0").kill()
        wait_until(lambda: m.status()["workers"]["docker-0"]["state"] == "lost", 3.0, "the loss, seen over ssh")
        cid = cluster.id
    assert labelled(client, cid) == []


def test_which_engines_are_remote_and_a_loopback_manager_is_refused_for_them() -> None:
    from chimera_lab.cluster.docker import _engine_host

    assert _engine_host("unix:///var/run/docker.sock") is None and _engine_host("ssh://me@127.0.0.1:2222") is None
    assert _engine_host("ssh://me@lab-pc") == "lab-pc" and _engine_host("tcp://10.0.0.5:2376") == "10.0.0.5"
    with cp.Manager(port=0) as m:  # listens on 127.0.0.1 only
        cluster = DockerCluster(1)
        cluster._manager = m  # (as start() sets it; no engine is reached)
        with pytest.raises(cp.DockerError, match="runs on lab-pc, whose containers cannot reach a Manager listening on "
                                                 r"127\.0\.0\.1: create the Manager with host='0\.0\.0\.0'"):
            cluster._network("lab-pc")  # decided before any container is made: nothing is sent anywhere


def test_cleanup_of_images_keeps_the_newest_and_those_in_use(client: Any, image: str) -> None:
    from chimera_lab.cluster.image import IMAGE_REPOSITORY, LABEL_IMAGE

    holder = client.containers.create(image, ["--help"], network_mode="none")  # the current image is in use
    made = []
    try:
        for _ in range(2):  # two worker-labelled images of this test's own, the second the newest of all
            tag = f"{IMAGE_REPOSITORY}:test-{uuid.uuid4().hex[:8]}"
            client.images.build(fileobj=io.BytesIO(f"FROM {BASE}\nLABEL {LABEL_IMAGE}=worker t={tag}\n".encode()),
                                tag=tag, rm=True)
            made.append(tag)
        removed = DockerCluster.cleanup(images=True)
        assert f"image {made[0]}" in removed and f"image {made[1]}" not in removed
        assert client.images.get(image) and client.images.get(made[1])
    finally:
        holder.remove(force=True)
        for tag in made:
            try:
                client.images.remove(tag, force=True)
            except Exception:
                pass
