"""Pipelines on real worker processes over 127.0.0.1: values, delivery policies, node styles, taps, events."""

from __future__ import annotations

import pytest
from conftest import Cluster, node_metric, wait_until
from pipeline_nodes import AsyncScale, Count, InOrder, OwnLoop, Scale, Slow, Zip

import chimera_lab as cp

SEED = '''
import time, numpy as np, chimera_lab as cp

class SourceNode(cp.Node):
    def prep(self): self.value = 2
    def step(self):
        time.sleep(0.5)
        return self.value

class StepNode(cp.Node):
    def prep(self): self.coef = 3
    def step(self, data):
        return self.coef * data["source"].get("default")["value"]

if __name__ == "__main__":
    source_node, step_node = SourceNode(name="source"), StepNode(name="step")
    graph = cp.Graph()
    graph.add_nodes_from([source_node, step_node])
    graph.add_edge(source_node, step_node)
    manager = cp.Manager(port=0)
    worker = cp.Worker(name="local")
    worker.connect(host=manager.host, port=manager.port)
    manager.commit_graph(graph=graph, mapping={"local": ["source", "step"]})
    tap = manager.tap("step")
    manager.start()
    print("VALUES", [tap.get(5).get("default")["value"] for _ in range(3)], flush=True)
    manager.stop()
    print("STEPS", manager.metrics()["step"]["steps"], flush=True)
    manager.shutdown()
'''


def test_seed_example_runs_as_written(tmp_path):
    """The seed's script, as a __main__ file: 2 * 3 arrives downstream, three times."""
    import subprocess
    import sys

    script = tmp_path / "seed.py"
    script.write_text(SEED)
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "VALUES [6, 6, 6]" in out.stdout
    steps = int(out.stdout.split("STEPS")[1].split()[0])
    assert steps >= 3


def test_values_flow_across_two_workers(cluster: Cluster):
    cluster.worker("a")
    cluster.worker("b")
    m = cluster.manager
    g = cp.Graph()
    src, step = Count("source", rate_hz=50), Scale("step", coef=3)
    g.add_edge(src, step)
    m.commit_graph(g, {"a": [src], "b": ["step"]})
    assert {n["state"] for n in m.status()["nodes"].values()} == {"ready"}
    with m.tap("step") as tap:
        m.start()
        got = [tap.get(5).get("default")["value"] for _ in range(3)]
    m.stop()
    assert all(v % 3 == 0 and v > 0 for v in got), got
    assert got == sorted(got)
    met = m.metrics()
    assert met["step"]["steps"] == met["source"]["steps"]  # "all": every value was stepped on
    assert met["step"]["latency_p50_ms"] is not None and met["step"]["latency_p50_ms"] < 100


def test_all_policy_loses_nothing(cluster: Cluster):
    """20k unpaced values through a step into a checking sink: sent == received, in order."""
    cluster.worker("a")
    cluster.worker("b")
    m = cluster.manager
    n = 20000
    g = cp.Graph()
    src, mid, sink = Count("source", n=n), Scale("mid", coef=1), InOrder("sink")
    g.add_edge(src, mid)
    g.add_edge(mid, sink)
    m.commit_graph(g, {"a": ["source", "sink"], "b": ["mid"]})
    m.start()
    wait_until(lambda: node_metric(m, "source", "steps") >= n, 30, "the source to send everything")
    m.stop()
    met = m.metrics()
    assert met["source"]["outputs"]["mid"]["sent"] == n
    assert met["mid"]["inputs"]["source"]["received"] == n
    assert met["sink"]["inputs"]["mid"]["received"] == n
    assert met["sink"]["inputs"]["mid"]["dropped"] == 0
    assert met["sink"]["errors"] == 0, m.status()["nodes"]["sink"]["last_error"]
    assert met["sink"]["steps"] == n


def test_latest_policy_drops_are_counted(cluster: Cluster):
    """A fast source into a slow step on a 'latest' edge: the step sees fresh values, drops are counted."""
    cluster.worker("a")
    m = cluster.manager
    g = cp.Graph()
    src, slow = Count("source", rate_hz=500), Slow("slow", delay=0.05)
    g.add_edge(src, slow, policy="latest")
    m.commit_graph(g, {"a": [src, slow]})
    with m.tap("slow") as tap:
        m.start()
        wait_until(lambda: node_metric(m, "slow", "steps") >= 10, 10, "the slow step to run")
        fresh = tap.get(5).get("default")["value"]
        sent_then = node_metric(m, "source", "steps")
    m.stop()
    met = m.metrics()
    edge = met["slow"]["inputs"]["source"]
    assert edge["policy"] == "latest"
    assert edge["dropped"] > 0
    # every value was either stepped on or counted as dropped
    assert edge["received"] + edge["dropped"] >= met["source"]["outputs"]["slow"]["sent"] - 1
    # what the slow step works on is recent, not the head of a backlog
    assert fresh > sent_then - 100, (fresh, sent_then)


def test_multi_input_steps_on_followed_input_with_latest_of_others(cluster: Cluster):
    cluster.worker("a")
    m = cluster.manager
    g = cp.Graph()
    fast, slow, z = Count("fast", rate_hz=200), Count("slow", rate_hz=20), Zip("zip")
    g.add_edge(fast, z)
    g.add_edge(slow, z, follow=True)
    m.commit_graph(g, {"a": [fast, slow, z]})
    with m.tap("zip") as tap:
        m.start()
        chunks = [tap.get(5).get("default")["value"] for _ in range(4)]
    m.stop()
    assert all(set(c) == {"fast", "slow"} for c in chunks)
    met = m.metrics()
    # zip steps at the pace of the followed (slow) input, not the fast one
    assert met["zip"]["steps"] <= met["slow"]["steps"] + 1
    assert met["zip"]["steps"] < met["fast"]["steps"] / 3
    assert met["zip"]["inputs"]["fast"]["superseded"] > 0


def test_rate_hz_paces_a_source(cluster: Cluster):
    cluster.worker("a")
    m = cluster.manager
    g = cp.Graph()
    g.add_edge(Count("source", rate_hz=100), Scale("sink"))
    m.commit_graph(g, {"a": ["source", "sink"]})
    m.start()
    wait_until(lambda: node_metric(m, "source", "steps") >= 150, 10, "150 steps")
    rate = node_metric(m, "source", "rate")  # measured by the node over its own report window
    sink_rate = node_metric(m, "sink", "rate")
    m.stop()
    assert 90 < rate < 110, rate
    assert 85 < sink_rate < 115, sink_rate


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_async_step_main_loop_and_thread_mode(cluster: Cluster, mode: str):
    cluster.worker("a", mode=mode)
    m = cluster.manager
    g = cp.Graph()
    own, step = OwnLoop("own"), AsyncScale("step", coef=2)
    g.add_edge(own, step)
    m.commit_graph(g, {"a": [own, step]})
    with m.tap("step") as tap:
        m.start()
        values = [tap.get(5).get("default")["value"] for _ in range(3)]
    m.stop()
    assert all(v % 20 == 0 and v > 0 for v in values), values
    assert m.status()["nodes"]["own"]["state"] == "stopped"
    assert m.metrics()["step"]["errors"] == 0


def test_falsy_values_are_sent_and_none_is_not(cluster: Cluster):
    class Falsy(cp.Node):
        def prep(self):
            self.items = [0, None, False, "", [], None]

        def step(self):
            if not self.items:
                raise StopIteration
            return self.items.pop(0)

    cluster.worker("a")
    m = cluster.manager
    g = cp.Graph()
    g.add_edge(Falsy("src"), Scale("sink", coef=1))
    m.commit_graph(g, {"a": ["src", "sink"]})
    m.start()
    wait_until(lambda: m.status()["nodes"]["src"]["state"] == "stopped", 10, "the source to finish")
    m.stop()
    met = m.metrics()
    assert met["src"]["outputs"]["sink"]["sent"] == 4  # 0, False, "" and [] travel; None does not
    assert met["sink"]["inputs"]["src"]["received"] == 4


def test_start_stop_start_and_reset_then_commit_again(cluster: Cluster):
    cluster.worker("a")
    m = cluster.manager
    g = cp.Graph()
    g.add_edge(Count("source", rate_hz=200), InOrder("sink"))
    m.commit_graph(g, {"a": ["source", "sink"]})
    m.start()
    wait_until(lambda: node_metric(m, "sink", "steps") >= 20, 10, "steps")
    m.stop()
    first = node_metric(m, "sink", "steps")
    assert first == node_metric(m, "source", "steps")
    m.start()
    wait_until(lambda: node_metric(m, "sink", "steps") >= first + 20, 10, "more steps after a restart")
    m.stop()
    assert node_metric(m, "sink", "errors") == 0
    pids = [n["pid"] for n in m.status()["nodes"].values()]
    m.reset()
    assert m.status()["nodes"]["sink"]["state"] == "finished"
    from conftest import pid_alive

    wait_until(lambda: not any(pid_alive(p) for p in pids), 10, "node processes to exit after reset")
    g2 = cp.Graph()
    g2.add_edge(Count("again", rate_hz=100), Scale("scaled"))
    m.commit_graph(g2, {"a": ["again", "scaled"]})
    with m.tap("scaled") as tap:
        m.start()
        assert tap.get(5).get("default")["value"] % 3 == 0


def test_events_stream_states_and_metrics(cluster: Cluster):
    events: list[dict] = []
    m = cluster.manager
    unsubscribe = m.subscribe(events.append)
    cluster.worker("a")
    g = cp.Graph()
    g.add_edge(Count("source", rate_hz=100), Scale("sink"))
    m.commit_graph(g, {"a": ["source", "sink"]})
    m.start()
    wait_until(lambda: any(e["type"] == "metrics" and e["metrics"]["sink"]["steps"] > 0 for e in events), 10,
               "a metrics event")
    m.stop()
    kinds = {(e["type"], e.get("worker") or e.get("node"), e.get("state")) for e in events}
    assert ("worker", "a", "connected") in kinds
    assert ("node", "sink", "running") in kinds
    assert ("node", "sink", "stopped") in kinds
    times = [e["time"] for e in events if e["type"] == "metrics"]
    assert all(b - a >= 0.2 for a, b in zip(times, times[1:], strict=False)), "metrics events must be debounced"
    unsubscribe()
    n = len(events)
    m.start()
    m.stop()
    assert len(events) == n


def test_clock_offsets_are_estimated(cluster: Cluster):
    cluster.worker("a")
    m = cluster.manager
    w = wait_until(lambda: m.status()["workers"]["a"]["rtt"] is not None and m.status()["workers"]["a"], 5,
                   "a clock estimate")
    assert abs(w["clock_offset"]) < 0.005  # same machine: the estimate is close to zero
    assert 0 < w["rtt"] < 0.05


def test_manager_listening_on_all_interfaces_still_taps(tmp_path):
    """host="0.0.0.0" (for remote workers): workers join and taps get a connectable address."""
    with cp.Manager(host="0.0.0.0", port=0) as m:
        w = cp.Worker("a").connect("127.0.0.1", m.port)  # in-process: finds the key itself
        try:
            g = cp.Graph()
            g.add_edge(Count("source", rate_hz=50), Scale("step"))
            m.commit_graph(g, {"a": ["source", "step"]})
            with m.tap("step") as tap:
                m.start()
                assert tap.get(5).get("default")["value"] % 3 == 0
            m.stop()
        finally:
            m.shutdown()
            w.shutdown()


class SetupAndTeardown(cp.Node):
    """Uses the setup() alias and writes a file in teardown."""

    def __init__(self, name: str, path: str) -> None:
        super().__init__(name=name)
        self.path = path

    def setup(self) -> None:
        self.seen = 0

    def step(self, data: dict[str, cp.DataChunk]) -> None:
        self.seen += 1

    def teardown(self) -> None:
        with open(self.path, "w") as f:
            f.write(str(self.seen))


def test_setup_alias_and_teardown_run_on_the_worker(cluster: Cluster, tmp_path):
    cluster.worker("a")
    m = cluster.manager
    out = tmp_path / "seen.txt"
    g = cp.Graph()
    g.add_edge(Count("source", n=25), SetupAndTeardown("node", str(out)))
    m.commit_graph(g, {"a": ["source", "node"]})
    m.start()
    wait_until(lambda: m.status()["nodes"]["source"]["state"] == "stopped", 10, "the source to finish")
    m.stop()
    assert not out.exists()  # teardown runs at reset, not at stop
    m.reset()
    assert out.read_text() == "25"
