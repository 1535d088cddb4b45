"""Clock offsets: a worker whose clock is 5 s ahead (libfaketime) still yields true end-to-end latency."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import Cluster, cli_worker_path, node_metric, wait_until
from pipeline_nodes import Count, Scale, Sink

import chimera_lab as cp

SKEW = 5.0


@pytest.fixture
def faketime() -> str:
    path = shutil.which("faketime")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the clock-skew test: install faketime (apt-get install faketime)")
        pytest.skip("needs libfaketime (apt-get install faketime)")
    return path


def test_skewed_worker_clock_is_corrected(cluster: Cluster, faketime: str, tmp_path: Path):
    m = cluster.manager
    cluster.worker("here")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(CHIMERA_TOKEN=m.token, FAKETIME_DONT_FAKE_MONOTONIC="1")
    (tmp_path / "skewed").mkdir()
    proc = subprocess.Popen([faketime, "-f", f"+{SKEW:g}s", cli_worker_path(), "--ip", m.host, "--port",
                             str(m.port), "--name", "skewed"], cwd=tmp_path / "skewed", env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cluster.procs.append(proc)
    wait_until(lambda: m.status()["workers"].get("skewed", {}).get("state") == "connected", 15, "skewed worker")
    # the estimate converges on the skew (the worker's clock is ahead, so its offset is negative)
    wait_until(lambda: abs(m.status()["workers"]["skewed"]["clock_offset"] + SKEW) < 0.02, 5,
               "the clock offset estimate")
    g = cp.Graph()
    ahead, behind = Count("ahead", rate_hz=100), Count("behind", rate_hz=100)  # sources on each clock
    g.add_edge(ahead, Scale("to_here"))  # skewed -> here
    g.add_edge(behind, Sink("to_skewed"))  # here -> skewed
    m.commit_graph(g, {"skewed": ["ahead", "to_skewed"], "here": ["behind", "to_here"]})
    m.start()
    wait_until(lambda: node_metric(m, "to_here", "steps") > 50 and node_metric(m, "to_skewed", "steps") > 50,
               10, "data across the skewed clock")
    wait_until(lambda: node_metric(m, "to_here", "latency_p50_ms") is not None
               and node_metric(m, "to_skewed", "latency_p50_ms") is not None, 5, "latency reports")
    met = m.metrics()
    m.stop()
    # uncorrected, these would read about -5000 ms and +5000 ms
    for node in ("to_here", "to_skewed"):
        p50 = met[node]["latency_p50_ms"]
        assert -2 < p50 < 50, f"{node}: latency {p50:.1f} ms across a {SKEW:g} s clock skew"
