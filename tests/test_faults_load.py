"""Faults under load, on real processes: node, worker and Manager processes SIGKILLed while data flows and is
recorded, a worker stopped past its heartbeat timeout and resumed, and a disk that fills up while recording."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Cluster, node_metric, pid_alive, wait_until
from pipeline_nodes import BigFrames, Count, Logger, Sensor, Sink

import chimera_lab as cp
from chimera_lab.records.recorder import Recorder
from chimera_lab.worker import MANAGER_SILENCE

TESTS = Path(__file__).parent


def written(m: cp.Manager, node: str, stream: str) -> int:
    """How many samples of a stream the node's recorder has written so far."""
    return int(node_metric(m, node, "recording")["streams"].get(stream, {}).get("written", 0))


def steps(m: cp.Manager, node: str) -> int:
    return int(node_metric(m, node, "steps"))


def keeps_rising(m: cp.Manager, what: dict[str, Any], by: int, timeout: float = 10) -> None:
    """Wait until every counter in `what` (name -> callable) has grown by `by` from now."""
    before = {k: f() for k, f in what.items()}
    wait_until(lambda: all(f() >= before[k] + by for k, f in what.items()), timeout,
               f"{', '.join(what)} to keep rising (from {before})")


def stream_entries(session: cp.Session) -> dict[tuple[str, str], dict[str, Any]]:
    return {(st["node"], st["name"]): st for st in session.info["streams"]}


def test_sigkilled_node_while_recording_is_reported_and_the_others_record_on(cluster: Cluster):
    m = cluster.manager
    cluster.worker("a")
    g = cp.Graph()
    sensor = Sensor("sensor", rate_hz=250)
    g.add_edge(sensor, Logger("keep"))
    g.add_edge(sensor, Logger("doomed"))
    m.commit_graph(g, {"a": ["sensor", "keep", "doomed"]})
    m.record("node-kill")
    wait_until(lambda: written(m, "doomed", "events") > 100 and written(m, "keep", "events") > 100, 10,
               "both loggers to record")
    flushed = written(m, "doomed", "events")  # written by now, so on disk within the next flush (≤ 0.5 s)
    wait_until(lambda: written(m, "doomed", "events") > flushed + 200, 10, "another flush")
    pid = m.status()["nodes"]["doomed"]["pid"]
    os.kill(pid, signal.SIGKILL)  # a node process of this test's own worker
    t_kill = time.monotonic()
    wait_until(lambda: m.status()["nodes"]["doomed"]["state"] == "crashed", 5, "the crash to be reported")
    elapsed = time.monotonic() - t_kill
    print(f"\nnode SIGKILL reported as crashed after {elapsed:.2f} s")
    assert elapsed < 2.0
    err = m.status()["nodes"]["doomed"]["last_error"]
    assert "'doomed'" in err and "'a'" in err and "exited unexpectedly" in err and "-9" in err
    # the rest goes on, and goes on recording
    keeps_rising(m, {"keep steps": lambda: steps(m, "keep"), "keep events": lambda: written(m, "keep", "events"),
                     "sensor imu": lambda: written(m, "sensor", "imu"),
                     "sensor mic": lambda: written(m, "sensor", "mic")}, by=150)
    assert {n: s["state"] for n, s in m.status()["nodes"].items()} == {
        "sensor": "running", "keep": "running", "doomed": "crashed"}
    assert node_metric(m, "keep", "errors") == 0 and node_metric(m, "sensor", "errors") == 0
    m.stop()
    session = cp.Session(m.collect(progress=False))
    entries = stream_entries(session)
    seg = session.info["segments"][0]["samples"]
    # what the survivors recorded is all there, whole and counted
    for node, stream in (("sensor", "imu"), ("sensor", "mic"), ("keep", "events"), ("keep", "log")):
        st = entries[(node, stream)]
        assert st["samples"] == seg[node][stream] and st["lost"] == 0 and not st["truncated"], (node, stream)
    imu = session.table("sensor", "imu")
    assert list(imu["i"]) == list(range(1, len(imu) + 1))
    assert len(session.json("keep", "events")) == seg["keep"]["events"]
    # the killed node's recording is there up to its last flush, and marked cut short
    assert entries[("doomed", "events")]["truncated"] and entries[("doomed", "events")]["samples"] >= flushed
    assert "doomed" not in seg


def test_sigkilled_worker_while_recording_is_lost_and_collect_names_what_is_missing(cluster: Cluster):
    m = cluster.manager
    cluster.worker("a")
    victim = cluster.cli_worker("victim")
    g = cp.Graph()
    sensor, there = Sensor("sensor", rate_hz=250), Sensor("there", rate_hz=250)
    g.add_edge(sensor, Logger("log_here"))
    g.add_edge(sensor, Logger("log_there"))  # an edge into the victim: the sensor must not wait for it
    g.add_edge(there, Logger("log_there2"))
    m.commit_graph(g, {"a": ["sensor", "log_here"], "victim": ["log_there", "there", "log_there2"]})
    victim_nodes = [m.status()["nodes"][n]["pid"] for n in ("log_there", "there", "log_there2")]
    m.record("worker-kill")
    wait_until(lambda: written(m, "log_there", "events") > 50 and written(m, "there", "imu") > 50, 10,
               "the victim to record")
    os.kill(victim.pid, signal.SIGKILL)  # the cp-worker this test started
    t_kill = time.monotonic()
    wait_until(lambda: m.status()["workers"]["victim"]["state"] == "lost", 6, "the worker to be reported lost")
    elapsed = time.monotonic() - t_kill
    print(f"\nworker SIGKILL reported lost after {elapsed:.2f} s")
    assert elapsed <= 3.6
    nodes = m.status()["nodes"]
    assert all(nodes[n]["state"] == "lost" for n in ("log_there", "there", "log_there2"))
    keeps_rising(m, {"log_here events": lambda: written(m, "log_here", "events"),
                     "sensor imu": lambda: written(m, "sensor", "imu")}, by=150)
    assert nodes["sensor"]["state"] == nodes["log_here"]["state"] == "running"
    wait_until(lambda: not any(pid_alive(p) for p in victim_nodes), 10, "the victim's node processes to exit")
    m.stop()
    with pytest.warns(UserWarning, match=r"no data from worker\(s\) victim: worker 'victim' is lost, so what its "
                                         r"nodes \(log_there, log_there2, there\) recorded was not collected"):
        path = m.collect(progress=False)
    session = cp.Session(path)
    assert "log_there2, there" in session.info["missing_workers"]["victim"]
    assert session.info["workers"]["victim"]["missing"] == session.info["missing_workers"]["victim"]
    entries = stream_entries(session)
    assert {st["worker"] for st in entries.values()} == {"a"}
    seg = session.info["segments"][0]["samples"]
    for node, stream in (("sensor", "imu"), ("sensor", "mic"), ("log_here", "events")):
        st = entries[(node, stream)]
        assert st["samples"] == seg[node][stream] > 150 and not st["truncated"], (node, stream)
    assert len(session.table("sensor", "imu")) == seg["sensor"]["imu"]


MANAGER_SCRIPT = """
import json, os, sys, time
sys.path.insert(0, {tests!r})
import pipeline_nodes
from pipeline_nodes import Count, Logger, Sensor, Sink
import chimera_lab as cp
from chimera_lab.cluster import LocalCluster

cp.send_by_value(pipeline_nodes)
out = sys.argv[1]
m = cp.Manager(port=0, logdir=os.path.join(out, "logs"))
m.add_workers(LocalCluster(2, data_dir=os.path.join(out, "data")))
g = cp.Graph()
sensor, count = Sensor("sensor", rate_hz=250), Count("count", rate_hz=500)
g.add_edge(sensor, Logger("logger"))
g.add_edge(count, Sink("sink"))
m.commit_graph(g, {{"local-0": ["sensor", "sink"], "local-1": ["count", "logger"]}})
m.record("doomed")
while m.metrics()["logger"]["steps"] < 100 or m.metrics()["sink"]["steps"] < 100:  # data flows on both workers
    time.sleep(0.02)
st = m.status()
pids = {{"workers": {{w: i["pid"] for w, i in st["workers"].items()}},
        "nodes": {{n: i["pid"] for n, i in st["nodes"].items()}}}}
with open(os.path.join(out, "pids.json.tmp"), "w") as f:
    json.dump(pids, f)
os.replace(os.path.join(out, "pids.json.tmp"), os.path.join(out, "pids.json"))
sys.stdin.read()  # until the test closes our stdin (it SIGKILLs us first)
m.shutdown()
"""


def test_sigkilled_manager_leaves_no_worker_or_node_process_behind(tmp_path: Path):
    script = tmp_path / "manager.py"
    script.write_text(MANAGER_SCRIPT.format(tests=str(TESTS)))
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the LocalCluster's log folder lands here too
    with open(tmp_path / "manager.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stdin=subprocess.PIPE, stdout=log,
                                stderr=subprocess.STDOUT, env=env)
    pids: dict[str, dict[str, int]] = {}
    try:
        wait_until(lambda: (tmp_path / "pids.json").exists() or proc.poll() is not None, 60,
                   "the Manager's graph to run")
        assert proc.poll() is None, (tmp_path / "manager.log").read_text()
        pids = json.loads((tmp_path / "pids.json").read_text())
        everything = {**{f"worker {w}": p for w, p in pids["workers"].items()},
                      **{f"node {n}": p for n, p in pids["nodes"].items()}}
        assert len(everything) == 6 and all(pid_alive(p) for p in everything.values())
        proc.kill()  # SIGKILL, by PID, the Manager process this test started
        t_kill = time.monotonic()
        proc.wait(5)

        def survivors() -> list[str]:
            return [what for what, p in everything.items() if pid_alive(p)]

        wait_until(lambda: not survivors(), 15, "every worker and node process to exit")
        elapsed = time.monotonic() - t_kill
        print(f"\nall {len(everything)} worker and node processes gone {elapsed:.2f} s after the Manager's SIGKILL "
              f"(MANAGER_SILENCE = {MANAGER_SILENCE} s)")
        assert elapsed <= 10.0, f"orphans outlived the Manager by {elapsed:.2f} s"
        # each worker said why it went
        logs = list(tmp_path.glob("chimera-local-logs-*/local-*.log"))
        assert len(logs) == 2 and all("lost contact with the Manager" in p.read_text() for p in logs)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        if proc.stdin is not None:
            proc.stdin.close()
        for p in [*pids.get("nodes", {}).values(), *pids.get("workers", {}).values()]:
            if pid_alive(p):  # a process of the Manager this test started, left over by a failure above
                os.kill(p, signal.SIGKILL)


def test_a_lost_worker_that_comes_back_is_readmitted_without_its_nodes(cluster: Cluster,
                                                                       caplog: pytest.LogCaptureFixture):
    events: list[dict[str, Any]] = []
    m = cluster.manager
    m.subscribe(lambda e: events.append(e) if e["type"] == "worker" else None)
    cluster.worker("a")
    sleepy = cluster.cli_worker("sleepy")
    g = cp.Graph()
    src = Count("source", rate_hz=200)
    g.add_edge(src, Sink("keep"))
    g.add_edge(src, Sink("far"))
    m.commit_graph(g, {"a": ["source", "keep"], "sleepy": ["far"]})
    far_pid = m.status()["nodes"]["far"]["pid"]
    m.start()
    wait_until(lambda: steps(m, "far") > 20, 10, "the far node to run")
    os.kill(sleepy.pid, signal.SIGSTOP)  # the cp-worker this test started; its node process runs on
    t_stop = time.monotonic()
    try:
        wait_until(lambda: m.status()["workers"]["sleepy"]["state"] == "lost", 6, "the worker to be reported lost")
        assert time.monotonic() - t_stop <= 3.6
        assert m.status()["nodes"]["far"]["state"] == "lost"
        # stopped for longer than a worker waits for a silent Manager: its own stop must not count as that
        before = steps(m, "keep")
        wait_until(lambda: time.monotonic() - t_stop > MANAGER_SILENCE + 1 and steps(m, "keep") > before + 100,
                   MANAGER_SILENCE + 10, "the outage to last, while the rest goes on")
    finally:
        os.kill(sleepy.pid, signal.SIGCONT)
    wait_until(lambda: m.status()["workers"]["sleepy"]["state"] == "connected", 5, "the worker to be back")
    back = wait_until(lambda: next((e for e in events if e["state"] == "connected" and e.get("readmitted")), None),
                      5, "the re-admission event")
    assert "came back" in back["reason"] and "commit_graph again" in back["reason"]
    assert "worker 'sleepy' was lost and came back" in caplog.text
    st = m.status()
    assert st["workers"]["sleepy"]["nodes"] == []  # it runs nothing now
    assert st["nodes"]["far"]["state"] == "lost" and "was ended" in st["nodes"]["far"]["last_error"]
    assert st["nodes"]["source"]["state"] == st["nodes"]["keep"]["state"] == "running"
    wait_until(lambda: not pid_alive(far_pid), 10, "the worker to end the node the graph went on without")
    assert sleepy.poll() is None  # the worker itself stays
    assert m.status()["nodes"]["far"]["state"] == "lost"  # late reports from it did not bring it back
    # and it takes new work
    g2 = cp.Graph()
    g2.add_edge(Count("source2", rate_hz=200), Sink("far2"))
    m.commit_graph(g2, {"a": ["source2"], "sleepy": ["far2"]})
    assert m.status()["workers"]["sleepy"]["nodes"] == ["far2"]
    m.start()
    wait_until(lambda: steps(m, "far2") > 50, 10, "the re-admitted worker to step a new node")
    m.stop()
    assert m.metrics()["far2"]["inputs"]["source2"]["received"] == steps(m, "source2")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs (root only; in CI a missing capability is a failure)."""
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the disk-full tests as root")
        pytest.skip("the disk-full test mounts a small tmpfs: run as root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_disk_filling_up_while_recording_counts_the_loss_and_the_rest_goes_on(cluster: Cluster,
                                                                                small_disk: Path):
    errors: list[dict[str, Any]] = []
    m = cluster.manager
    m.subscribe(lambda e: errors.append(e) if e["type"] == "error" else None)
    small = cp.Worker("small", data_dir=small_disk).connect(m.host, m.port)
    cluster.workers.append(small)
    cluster.worker("big")
    g = cp.Graph()
    noise, sensor = BigFrames("noise", rate_hz=100), Sensor("sensor", rate_hz=250)
    g.add_edge(noise, Logger("log_small"))
    g.add_edge(noise, Sink("watch"))  # the full disk's node goes on feeding another worker
    g.add_edge(sensor, Logger("log_big"))
    m.commit_graph(g, {"small": ["noise", "log_small"], "big": ["watch", "sensor", "log_big"]})
    m.record("full-disk")

    def lost() -> int:
        return int(node_metric(m, "noise", "recording")["streams"].get("noise", {}).get("lost", 0))

    wait_until(lambda: lost() > 20, 20, "frames to be counted lost once the disk is full")
    assert shutil.disk_usage(small_disk).free < 300_000  # full: not even one more frame fits
    keeps_rising(m, {"noise steps": lambda: steps(m, "noise"), "watch steps": lambda: steps(m, "watch"),
                     "log_small steps": lambda: steps(m, "log_small"), "lost frames": lost,
                     "log_big events": lambda: written(m, "log_big", "events"),
                     "sensor imu": lambda: written(m, "sensor", "imu")}, by=50)
    assert all(s["state"] == "running" for s in m.status()["nodes"].values())
    assert all(node_metric(m, n, "errors") == 0 for n in ("watch", "sensor", "log_big"))
    assert m.status()["workers"]["small"]["state"] == "connected"
    disk_errors = [e for e in errors if e["node"] == "noise"]
    assert len(disk_errors) == 1 and "No space left" in disk_errors[0]["error"]  # reported once, then counted
    m.stop()
    rec = node_metric(m, "noise", "recording")["streams"]["noise"]
    print(f"\nfull disk: {rec['written']} frames written, {rec['lost']} lost of {rec['saved']} saved")
    assert rec["saved"] == rec["written"] + rec["lost"] and rec["written"] >= 5  # every frame is accounted for
    session = cp.Session(m.collect(progress=False))
    entries = stream_entries(session)
    frames = entries[("noise", "noise")]
    assert frames["lost"] == rec["lost"] and "No space left" in frames["error"]
    assert frames["samples"] == rec["written"] == len(list((session.path / "small").rglob("*.png")))
    assert any(e["node"] == "noise" and "No space left" in e["error"] for e in session.info["errors"])
    assert session.summary().set_index(["node", "stream"]).loc[("noise", "noise"), "lost"] == rec["lost"]
    # the other worker's recording is whole
    seg = session.info["segments"][0]["samples"]
    for node, stream in (("sensor", "imu"), ("log_big", "events")):
        st = entries[(node, stream)]
        assert st["lost"] == 0 and st["error"] is None and st["samples"] == seg[node][stream] > 100
    assert not list(small_disk.rglob("*.tmp"))  # no half-written frame is left taking room


def test_a_stream_that_cannot_be_created_counts_its_samples_lost_and_reports_once(tmp_path: Path):
    import numpy as np

    rec = Recorder("node", time.time)
    folder = tmp_path / "segment-1"
    rec.start_segment(folder)
    (folder / "mic.timestamps.csv").mkdir()  # where its first file would go: opening it fails (even as root)
    for i in range(20):
        rec.save("audio", "mic", np.zeros(160, np.int16), float(i), {"rate": 16000, "channels": 1})
        rec.save("tabular", "imu", {"i": i}, float(i), {})
    manifest = {s["name"]: s for s in rec.end_segment()}
    assert manifest["mic"]["lost"] == 20 and manifest["mic"]["samples"] == 0
    assert "cannot be created" in manifest["mic"]["error"]
    assert manifest["imu"]["samples"] == 20 and manifest["imu"]["lost"] == 0
    assert rec.stats()["streams"]["mic"] == {"kind": "audio", "saved": 20, "written": 0, "lost": 20}
    reported = []
    while not rec.errors.empty():
        reported.append(rec.errors.get())
    assert len(reported) == 1 and "'mic'" in reported[0] and "counted as lost" in reported[0]
