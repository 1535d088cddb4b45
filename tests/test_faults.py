"""Faults and bad input on real processes: failing prep and step, forged messages, lost workers, validation."""

from __future__ import annotations

import os
import signal
import time

import msgpack
import pytest
import zmq
from conftest import Cluster, node_metric, pid_alive, wait_until
from pipeline_nodes import Count, FailPrep, FailStep, Scale, Sink

import chimera_lab as cp


def test_failing_prep_raises_from_commit_with_remote_traceback(cluster: Cluster):
    w = cluster.worker("a")
    m = cluster.manager
    g = cp.Graph()
    g.add_edge(Count("source", rate_hz=10), FailPrep("camera"))
    with pytest.raises(cp.CommitError) as info:
        m.commit_graph(g, {"a": ["source", "camera"]})
    err = info.value
    assert err.node == "camera"
    assert "camera 7 is unplugged" in str(err)
    assert "Remote traceback" in str(err) and "in prep" in err.remote_traceback
    # nothing is left running
    assert m.graph is None and m.status()["nodes"] == {}
    wait_until(lambda: not w.children, 10, "the worker's node processes to end")
    # and the cluster is usable again
    g2 = cp.Graph()
    g2.add_edge(Count("source", rate_hz=10), Scale("step"))
    m.commit_graph(g2, {"a": ["source", "step"]})


def test_failing_step_is_reported_and_the_node_goes_on(cluster: Cluster):
    errors: list[dict] = []
    cluster.manager.subscribe(lambda e: e["type"] == "error" and errors.append(e))
    cluster.worker("a")
    m = cluster.manager
    g = cp.Graph()
    g.add_edge(Count("source", rate_hz=100), FailStep("flaky"))
    m.commit_graph(g, {"a": ["source", "flaky"]})
    m.start()
    wait_until(lambda: node_metric(m, "flaky", "errors") >= 5, 10, "errors to be reported")
    m.stop()
    st = m.status()["nodes"]["flaky"]
    assert "ZeroDivisionError" in st["last_error"] and "in step" in st["last_error"]
    assert errors and "ZeroDivisionError" in errors[0]["error"] and "Traceback" in errors[0]["traceback"]
    met = m.metrics()["flaky"]
    assert met["steps"] > met["errors"]  # even values went through: the node kept going


def test_on_error_stop_stops_the_node(cluster: Cluster):
    cluster.worker("a")
    m = cluster.manager
    g = cp.Graph()
    g.add_edge(Count("source", rate_hz=100), FailStep("fragile", on_error="stop"))
    m.commit_graph(g, {"a": ["source", "fragile"]})
    m.start()
    wait_until(lambda: m.status()["nodes"]["fragile"]["state"] == "stopped", 10, "the node to stop itself")
    assert node_metric(m, "fragile", "errors") == 1
    m.stop()


def test_a_peer_without_the_cluster_credentials_is_refused_at_the_handshake(cluster: Cluster):
    m = cluster.manager
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(f"tcp://{m.host}:{m.port}")
    try:
        s.send_multipart([b"\0" * 32, msgpack.packb({"op": "hello", "name": "intruder"})])
        wait_until(lambda: m.status()["rejected"] >= 1, 10, "the connection to be refused and counted")
        assert not s.poll(200) and m.status()["forged_messages"] == 0  # nothing got through to be read
        assert "intruder" not in m.status()["workers"]
    finally:
        s.close()


def test_forged_control_messages_are_dropped_and_counted(cluster: Cluster):
    # a peer past the handshake (it has the transport credentials) still cannot sign
    m = cluster.manager
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    cp.transport.client(s, m._key)
    s.connect(f"tcp://{m.host}:{m.port}")
    try:
        hello = msgpack.packb({"op": "hello", "name": "intruder"})
        s.send_multipart([b"\0" * 32, hello])  # a MAC that is not one
        assert s.poll(5000), "the Manager should say why it ignores us"
        reply = s.recv_multipart()
        assert reply[0] == b"CHIMERA-REJECT" and b"token" in reply[1]
        s.send_multipart([hello])  # unsigned
        signer = cp.wire.Signer(cp.wire.new_key())  # signed under another key
        s.send_multipart(cp.wire.encode_control(signer, {"op": "hello", "name": "intruder"}))
        wait_until(lambda: m.status()["forged_messages"] >= 3, 5, "forged messages to be counted")
        assert "intruder" not in m.status()["workers"]
    finally:
        s.close()


def test_forged_data_messages_are_dropped_and_counted(cluster: Cluster):
    cluster.worker("a")
    m = cluster.manager
    g = cp.Graph()
    g.add_edge(Count("source", rate_hz=100), Sink("sink"))
    m.commit_graph(g, {"a": ["source", "sink"]})
    addr = m.status()["nodes"]["sink"]["inputs"]["source"]
    assert addr.startswith("tcp://127.0.0.1:")
    m.start()
    s = zmq.Context.instance().socket(zmq.PUSH)
    s.setsockopt(zmq.LINGER, 1000)
    cp.transport.client(s, m._key)
    s.connect(addr)
    other = cp.wire.Signer(cp.wire.new_key())
    chunk = cp.DataChunk()
    chunk.add("default", 10**6)
    for _ in range(5):
        s.send_multipart(cp.wire.encode_chunk(other, chunk, 10**6, time.time(), []))
    s.send_multipart([b"x" * 32, msgpack.packb({"q": 1})])
    s.send_multipart(cp.wire.encode_chunk(m.signer, chunk, 10**6, time.time(), []))  # the cluster key, not the commit's
    s.close()
    stranger = zmq.Context.instance().socket(zmq.PUSH)  # and one without the credentials: refused at the handshake
    stranger.setsockopt(zmq.LINGER, 0)
    stranger.connect(addr)
    stranger.send_multipart(cp.wire.encode_chunk(other, chunk, 10**6, time.time(), []), zmq.NOBLOCK)
    wait_until(lambda: node_metric(m, "sink", "forged") >= 7, 10, "forged data to be counted")
    wait_until(lambda: node_metric(m, "sink", "rejected") >= 1, 10, "the stranger to be refused")
    stranger.close()
    m.stop()
    met = m.metrics()["sink"]
    assert met["errors"] == 0 and met["forged"] == 7
    assert met["inputs"]["source"]["received"] == met["steps"] == m.metrics()["source"]["steps"]


def test_sigkilled_worker_is_reported_lost_and_the_rest_go_on(cluster: Cluster):
    events: list[dict] = []
    m = cluster.manager
    m.subscribe(events.append)
    cluster.worker("a")
    victim = cluster.cli_worker("victim")
    g = cp.Graph()
    src, keep, doomed = Count("source", rate_hz=100), Sink("keep"), Sink("doomed")
    g.add_edge(src, keep)
    g.add_edge(src, doomed)
    m.commit_graph(g, {"a": ["source", "keep"], "victim": ["doomed"]})
    doomed_pid = m.status()["nodes"]["doomed"]["pid"]
    m.start()
    wait_until(lambda: node_metric(m, "doomed", "steps") > 10, 10, "the victim's node to run")
    os.kill(victim.pid, signal.SIGKILL)  # the cp-worker process this test started
    t_kill = time.monotonic()
    wait_until(lambda: m.status()["workers"]["victim"]["state"] == "lost", 6, "the worker to be reported lost")
    elapsed = time.monotonic() - t_kill
    assert elapsed <= 3.5, f"lost reported after {elapsed:.2f} s"
    assert m.status()["nodes"]["doomed"]["state"] == "lost"
    assert any(e["type"] == "worker" and e["worker"] == "victim" and e["state"] == "lost" for e in events)
    # the rest goes on: the source no longer waits for the lost branch
    before = node_metric(m, "keep", "steps")
    wait_until(lambda: node_metric(m, "keep", "steps") > before + 50, 10, "the surviving branch to keep stepping")
    # the killed worker's node process does not outlive it
    wait_until(lambda: not pid_alive(doomed_pid), 10, "the orphaned node process to exit")
    m.stop()
    assert m.status()["nodes"]["source"]["state"] == "stopped"


def test_crashed_node_process_is_reported(cluster: Cluster):
    cluster.worker("a")
    m = cluster.manager
    g = cp.Graph()
    g.add_edge(Count("source", rate_hz=50), Sink("sink"))
    m.commit_graph(g, {"a": ["source", "sink"]})
    m.start()
    pid = m.status()["nodes"]["sink"]["pid"]
    os.kill(pid, signal.SIGKILL)  # a node process of this test's own worker
    wait_until(lambda: m.status()["nodes"]["sink"]["state"] == "crashed", 5, "the crash to be reported")
    assert "exited unexpectedly" in m.status()["nodes"]["sink"]["last_error"]
    m.stop()


def test_commit_validation_errors_name_what_is_wrong(cluster: Cluster):
    cluster.worker("a")
    m = cluster.manager
    g = cp.Graph()
    src, sink = Count("source"), Sink("sink")
    g.add_edge(src, sink)
    with pytest.raises(cp.GraphError, match="not connected.*connected: a"):
        m.commit_graph(g, {"nope": ["source", "sink"]})
    with pytest.raises(cp.GraphError, match="not mapped to any worker: sink"):
        m.commit_graph(g, {"a": ["source"]})
    with pytest.raises(cp.GraphError, match="'ghost'.*no such node"):
        m.commit_graph(g, {"a": ["source", "sink", "ghost"]})
    with pytest.raises(cp.GraphError, match="chimera_lab.Graph"):
        m.commit_graph(object(), {"a": []})  # type: ignore[arg-type]

    class Unpicklable(Count):
        def __init__(self, name: str) -> None:
            super().__init__(name)
            self.lock = __import__("threading").Lock()

    g2 = cp.Graph()
    g2.add_edge(Unpicklable("bad"), Sink("sink"))
    with pytest.raises(cp.GraphError, match="'bad' cannot be sent.*prep"):
        m.commit_graph(g2, {"a": ["bad", "sink"]})
    with pytest.raises(cp.ManagerError, match="commit_graph"):
        m.start()
    assert m.status()["nodes"] == {}


def test_port_taken_falls_back_to_a_free_one(caplog):
    with cp.Manager(port=0) as first:
        with caplog.at_level("INFO", logger="chimera_lab"):
            second = cp.Manager(port=first.port)
        try:
            assert second.port != first.port
            assert f"Port {first.port} is taken" in caplog.text
            assert f"Server started at Port {second.port}" in caplog.text
            w = cp.Worker("w").connect(second.host, second.port)
            assert second.status()["workers"]["w"]["state"] == "connected"
            w.shutdown()
        finally:
            second.shutdown()


def test_duplicate_worker_name_is_rejected(cluster: Cluster):
    cluster.worker("a")
    with pytest.raises(cp.WorkerError, match="already connected"):
        cp.Worker("a").connect(cluster.manager.host, cluster.manager.port)


def test_in_process_worker_without_token_for_unknown_manager(monkeypatch):
    monkeypatch.delenv("CHIMERA_TOKEN", raising=False)
    with pytest.raises(cp.WorkerError, match="no token"):
        cp.Worker("w").connect("127.0.0.1", 1)
