"""A worker on another host: a `cp-worker` in a network namespace of its own, with its own address.

The namespace and its veth pair are created by this test (root and iproute2 needed; in CI both are there,
and a missing one is a failure, not a skip).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import cli_worker_path, node_metric, wait_until
from pipeline_nodes import Count, Scale, WhereAmI

import chimera_lab as cp
from chimera_lab.cluster.local import wait_or_kill


def _can_make_namespaces() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create a network namespace"
    if shutil.which("ip") is None:
        return "needs iproute2 (apt-get install iproute2)"
    return None


@pytest.fixture
def far_host() -> Iterator[tuple[str, str, str]]:
    """(namespace, host-side address, namespace-side address) of a fresh veth pair."""
    why = _can_make_namespaces()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the remote-worker test: {why}")
        pytest.skip(f"{why}; run as root with iproute2 to enable")
    tag = uuid.uuid4().hex[:6]
    ns, here, there = f"cl-{tag}", f"clh{tag}", f"cln{tag}"
    octet = int(tag[:2], 16) % 200 + 20
    host_ip, far_ip = f"10.231.{octet}.1", f"10.231.{octet}.2"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    ip("netns", "add", ns)
    try:
        ip("link", "add", here, "type", "veth", "peer", "name", there)
        ip("link", "set", there, "netns", ns)
        ip("addr", "add", f"{host_ip}/24", "dev", here)
        ip("link", "set", here, "up")
        ip("netns", "exec", ns, "ip", "addr", "add", f"{far_ip}/24", "dev", there)
        ip("netns", "exec", ns, "ip", "link", "set", there, "up")
        ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield ns, host_ip, far_ip
    finally:
        subprocess.run(["ip", "link", "del", here], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_worker_on_another_host_joins_and_streams(far_host: tuple[str, str, str], tmp_path: Path):
    ns, host_ip, far_ip = far_host
    with cp.Manager(host=host_ip, port=0) as m:
        here = cp.Worker("here").connect(m.host, m.port)
        workdir = tmp_path / "far"
        workdir.mkdir()
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
        argv = ["ip", "netns", "exec", ns, cli_worker_path(), *m.worker_command("far").split()[1:]]
        assert f"--ip {host_ip}" in m.worker_command("far")
        proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: m.status()["workers"].get("far", {}).get("state") == "connected", 15,
                       "the far worker to join")
            g = cp.Graph()
            src, mid, where = Count("source", rate_hz=100), Scale("mid", coef=2), WhereAmI("where")
            g.add_edge(src, mid)
            g.add_edge(mid, where)
            m.commit_graph(g, {"far": ["source", "where"], "here": ["mid"]})
            nodes = m.status()["nodes"]
            # each side listens on its own interface, never on all of them
            assert nodes["mid"]["inputs"]["source"].startswith(f"tcp://{host_ip}:")
            assert nodes["where"]["inputs"]["mid"].startswith(f"tcp://{far_ip}:")
            with m.tap("where") as tap:  # the tap crosses back from the far host
                m.start()
                report = tap.get(10).get("default")["value"]
            wait_until(lambda: node_metric(m, "where", "steps") > 20, 10, "data to cross both ways")
            # latency is reported per window: measure one window past the start (connections being made, the
            # first messages waiting for them) so the figure is the steady state's
            start = node_metric(m, "where", "steps")
            wait_until(lambda: node_metric(m, "where", "steps") > start + 150, 10, "1.5 s more of data")
            m.stop()
            met = m.metrics()
            assert report["cwd"] == str(workdir) and report["value"] % 2 == 0
            assert met["where"]["inputs"]["mid"]["received"] == met["source"]["outputs"]["mid"]["sent"]
            assert met["where"]["inputs"]["mid"]["dropped"] == 0
            far = m.status()["workers"]["far"]
            assert far["rtt"] is not None and abs(far["clock_offset"]) < 0.01
            assert met["where"]["latency_p50_ms"] is not None and 0 < met["where"]["latency_p50_ms"] < 50
        finally:
            m.shutdown()
            here.shutdown()
            wait_or_kill(proc, 15)  # the cp-worker this test started
