"""SwarmCluster on a real single-node Docker Swarm (a private dockerd, so the Docker tests' engine is untouched): a
graph across 2 replicas and a local worker with a replica killed, the token as a secret, scale, nothing left after
close or after a killed process, and clear errors where there is no swarm.

Needs ``../shared/recipes/swarm.sh start`` and the base image loaded into that engine (``swarm.sh load IMAGE``);
CHIMERA_SWARM_URL names the engine (``swarm.sh env`` prints it). Without them these tests skip with that advice,
except in CI (``CI`` set), where that is a failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until
from pipeline_nodes import Count, Scale

import chimera_lab as cp
from chimera_lab.cluster import LocalCluster
from chimera_lab.cluster.docker import LABEL
from chimera_lab.cluster.local import wait_or_kill
from chimera_lab.cluster.swarm import TOKEN_FILE, SwarmCluster, SwarmError

URL = os.environ.get("CHIMERA_SWARM_URL", "")
BASE = os.environ.get("CHIMERA_DOCKER_BASE_IMAGE") or "chimera-lab-base:bookworm"
HOW = ("start one with ../shared/recipes/swarm.sh start, load the base image with ../shared/recipes/swarm.sh load "
       f"{BASE}, and export CHIMERA_SWARM_URL=unix:///var/tmp/chimera-swarm/docker.sock")


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    import docker

    why = None
    if not URL:
        why = "CHIMERA_SWARM_URL is not set"
    else:
        try:
            client = docker.DockerClient(base_url=URL)
            if (client.info().get("Swarm") or {}).get("LocalNodeState") != "active":
                why = f"the engine at {URL} is not a swarm"
            else:
                client.images.get(BASE)
        except docker.errors.ImageNotFound:
            why = f"the base image {BASE} is not on the swarm's engine"
        except Exception as exc:
            why = f"no Docker engine at {URL} ({exc})"
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set and the swarm tests cannot run: {why}", pytrace=False)
        pytest.skip(f"{why}: {HOW}")
    yield client
    client.close()


def leftovers(client: Any, cluster_id: str) -> list[str]:
    """Services, containers and secrets labelled with this cluster's id."""
    f = {"label": f"{LABEL}={cluster_id}"}
    return ([f"service {s.name}" for s in client.services.list(filters=f)]
            + [f"container {c['Names'][0]}" for c in client.api.containers(all=True, filters=f)]
            + [f"secret {s.name}" for s in client.secrets.list(filters=f)])


def test_graph_on_two_replicas_and_a_local_worker_goes_on_when_a_replica_dies(engine: Any, tmp_path: Path) -> None:
    with cp.Manager(port=0, logdir=tmp_path / "logs") as m:
        m.add_workers(LocalCluster(1))
        cluster = m.add_workers(SwarmCluster(2, docker_url=URL, base_image=BASE, progress=False))
        r1, r2 = cluster.alive
        assert (r1, r2) == ("swarm-1", "swarm-2")
        assert {n: w["state"] for n, w in m.status()["workers"].items()} == {
            "local-0": "connected", r1: "connected", r2: "connected"}
        cluster.service.reload()
        assert cluster.service.attrs["Spec"]["Mode"]["Replicated"]["Replicas"] == 2

        src, a, b = Count("source", rate_hz=50), Scale("a", coef=2), Scale("b", coef=3)
        g = cp.Graph()
        g.add_edge(src, a)
        g.add_edge(src, b)
        m.commit_graph(g, {r1: [src], r2: [a], "local-0": [b]})
        with m.tap("a") as tap_a, m.tap("b") as tap_b:
            m.start()
            from_a = [tap_a.get(15).get("default")["value"] for _ in range(3)]
            before = [tap_b.get(15).get("default")["value"] for _ in range(3)]
            assert all(v % 2 == 0 for v in from_a) and all(v % 3 == 0 for v in before)  # replica → replica/local

            cluster.container(r2).kill()
            t0 = time.monotonic()
            wait_until(lambda: m.status()["workers"][r2]["state"] == "lost", 3.0, f"{r2} to be reported lost")
            assert time.monotonic() - t0 < 3.0
            assert m.status()["nodes"]["a"]["state"] == "lost"
            assert "is failed (task: non-zero exit (137)), exit code 137" in cluster.lost[r2]
            after = [tap_b.get(15).get("default")["value"] for _ in range(5)]
            assert min(after) > max(before) and all(v % 3 == 0 for v in after)
            assert m.status()["workers"][r1]["state"] == "connected"
            assert m.status()["workers"]["local-0"]["state"] == "connected"
        m.stop()
        cid = cluster.id
        assert leftovers(engine, cid)  # (the check below can see what it looks for)
    assert leftovers(engine, cid) == []  # the Manager's shutdown removed the service, its containers, the secret


def test_the_token_is_a_secret_file_not_an_environment_variable_or_argument(engine: Any) -> None:
    with SwarmCluster(1, docker_url=URL, base_image=BASE, progress=False) as cluster:
        token = cluster.manager.token
        spec = cluster.service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]
        assert token not in str(spec) and f"CHIMERA_TOKEN_FILE={TOKEN_FILE}" in spec["Env"]
        inspect = cluster.container("swarm-1").attrs
        assert token not in str(inspect["Config"]) and token not in str(inspect["Args"])
        assert inspect["Config"]["User"] == "chimera"
        assert cluster.container("swarm-1").exec_run(["cat", TOKEN_FILE]).output.decode().strip() == token
        assert "cp-worker 'swarm-1' connected" in cluster.manager.logs("swarm-1")


def test_scale_up_and_down_and_back_after_a_loss(engine: Any) -> None:
    with SwarmCluster(1, docker_url=URL, base_image=BASE, progress=False) as cluster:
        m = cluster.manager
        assert cluster.scale(3) == ["swarm-1", "swarm-2", "swarm-3"]
        assert all(m.workers[n].state == "connected" for n in cluster.alive)
        assert cluster.scale(2) == ["swarm-1", "swarm-2"] and cluster.lost == {}  # retired: not lost
        wait_until(lambda: len(engine.api.containers(filters={"label": f"{LABEL}={cluster.id}"})) == 2, 15,
                   "the retired replica's container to stop")
        cluster.container("swarm-1").kill()
        wait_until(lambda: "swarm-1" in cluster.lost, 3.0, "swarm-1 to be lost")
        # a new replica: in the slot scale(2) freed, or in the lost one's (the swarm decides)
        alive = cluster.scale(2)
        assert alive in (["swarm-2", "swarm-3"], ["swarm-1", "swarm-2"]), alive
        assert all(m.workers[n].state == "connected" for n in alive) and len(cluster.worker_names) in (2, 3)
        status = cluster.status()
        assert [status["workers"][n]["state"] for n in alive] == ["connected", "connected"]
        assert status["details"]["service"] == cluster.service.name
        cid = cluster.id
    assert leftovers(engine, cid) == []


def test_no_swarm_and_no_engine_get_errors_that_name_the_fix(engine: Any) -> None:
    import docker

    try:  # the Docker tests' engine: a plain engine, not a swarm (only asked for its info)
        plain = docker.from_env()
        plain_state = (plain.info().get("Swarm") or {}).get("LocalNodeState")
        plain.close()
    except Exception:
        plain_state = None
    if plain_state == "inactive":
        with pytest.raises(SwarmError, match=r"is not part of a swarm \(state: inactive\): run `docker swarm init`"):
            SwarmCluster(1, docker_url="unix:///var/run/docker.sock").start()
    elif os.environ.get("CI"):
        pytest.fail("CI: the main Docker engine should be a plain engine (not a swarm) for this test")
    with pytest.raises(cp.DockerError, match=r"no Docker engine reachable at unix:///nonexistent/docker.sock"):
        SwarmCluster(1, docker_url="unix:///nonexistent/docker.sock").start()
    with pytest.raises(ValueError, match="cpus must be a positive number"):
        SwarmCluster(1, cpus=0)


def test_cleanup_removes_what_a_killed_process_left(engine: Any) -> None:
    script = textwrap.dedent(f"""
        import time
        import chimera_lab as cp
        from chimera_lab.cluster.swarm import SwarmCluster
        m = cp.Manager(port=0)
        c = m.add_workers(SwarmCluster(1, docker_url={URL!r}, base_image={BASE!r}, progress=False))
        print(c.id, flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        cid = proc.stdout.readline().strip()  # type: ignore[union-attr]
        with SwarmCluster(1, docker_url=URL, base_image=BASE, progress=False) as live:
            proc.kill()
            proc.wait(10)
            assert leftovers(engine, cid)
            removed = SwarmCluster.cleanup(URL)
            assert f"chimera-{cid}" in removed and f"chimera-{cid}-token" in removed
            assert f"chimera-{live.id}" not in removed
            wait_until(lambda: leftovers(engine, cid) == [], 30, "the dead process's replicas to go")
            assert live.manager.workers["swarm-1"].state == "connected"
    finally:
        wait_or_kill(proc, 1)


def test_chimera_up_with_swarm_workers(engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHIMERA_SWARM_URL", URL)  # where %chimera up --swarm finds the swarm
    monkeypatch.setenv("CHIMERA_DOCKER_BASE_IMAGE", BASE)
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "chimera_lab")
    try:
        ip.run_line_magic("chimera", "up --workers 1 --swarm 2")
        m = ip.user_ns["manager"]
        assert sorted(m.workers) == ["local-0", "swarm-1", "swarm-2"]
        (swarm,) = [launcher for launcher in m.launchers if isinstance(launcher, SwarmCluster)]
        cid = swarm.id
        assert leftovers(engine, cid)
        ip.run_line_magic("chimera", "down")
        assert m.state == "shutdown" and leftovers(engine, cid) == []
    finally:
        ip.run_line_magic("chimera", "down")
        InteractiveShell.clear_instance()
