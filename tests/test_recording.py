"""Recording sessions on real worker processes, collecting them, and reading them back."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import cv2
import pytest
from conftest import Cluster, node_metric, pid_alive, wait_until
from pipeline_nodes import BadSaver, BigFrames, Camera, Count, Logger, Sensor

import chimera_lab as cp


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def three_node_graph(n_frames: int = 150, n_sensor: int = 500) -> cp.Graph:
    g = cp.Graph()
    cam, sensor = Camera("camera", n=n_frames, rate_hz=30), Sensor("sensor", n=n_sensor, rate_hz=100)
    logger = Logger("logger")
    g.add_edge(cam, logger, follow=True)
    g.add_edge(sensor, logger)
    return g


def wait_sources_done(m: cp.Manager, *names: str, timeout: float = 30) -> None:
    wait_until(lambda: all(m.status()["nodes"][n]["state"] == "stopped" for n in names), timeout,
               f"{', '.join(names)} to finish")


def test_record_collect_and_read_back(cluster: Cluster, tmp_path: Path):
    """5 s from 3 nodes on 2 workers, one a cp-worker in another working directory."""
    m = cluster.manager
    cluster.worker("a")
    remote_cwd = tmp_path / "remote-cwd"
    cluster.cli_worker("remote", cwd=remote_cwd)
    m.commit_graph(three_node_graph(), {"remote": ["camera"], "a": ["sensor", "logger"]})
    folder = m.record("lab")
    assert folder.parent == m.logdir and folder.name.endswith("-lab")
    wait_sources_done(m, "camera", "sensor")
    logger_steps_before_stop = node_metric(m, "logger", "steps")
    m.stop()
    logger_steps = node_metric(m, "logger", "steps")
    assert logger_steps >= logger_steps_before_stop
    path = m.collect(progress=False)
    assert path == folder

    info = json.loads((path / "session.json").read_text())
    assert set(info["workers"]) == {"a", "remote"} and info["mapping"]["remote"] == ["camera"]
    assert {e["src"] for e in info["graph"]["edges"]} == {"camera", "sensor"}
    assert len(info["segments"]) == 1 and info["segments"][0]["stop"] > info["segments"][0]["start"]
    assert abs(info["workers"]["remote"]["clock_offset"]) < 0.01
    # every file arrived intact
    files = [f for s in info["streams"] for f in s["files"]]
    assert len(files) >= 12
    for f in files:
        p = path / f["path"]
        assert p.stat().st_size == f["size"] and sha256(p) == f["sha256"], f["path"]
    # sample counts equal what the nodes produced
    counts = {(s["node"], s["name"]): s["samples"] for s in info["streams"]}
    assert counts[("camera", "cam")] == 150 and counts[("camera", "meta")] == 150
    assert counts[("sensor", "imu")] == 500 and counts[("sensor", "mic")] == 500
    assert counts[("logger", "events")] == logger_steps == counts[("logger", "log")]
    assert not any(s["truncated"] for s in info["streams"])
    # moved, not copied, from the workers on this machine
    assert not list((remote_cwd / "chimera-data").glob(f"{path.name}/**/*.avi"))

    s = cp.Session(path)
    frames = list(s.frames("camera", "cam"))
    assert len(frames) == 150
    times = [t for t, _ in frames]
    assert times == sorted(times) and 4.0 < times[-1] - times[0] < 6.0  # 150 frames at 30 fps
    assert frames[10][1].shape == (120, 160, 3)
    cap = cv2.VideoCapture(str(path / "remote" / "camera" / "segment-1" / "cam.avi"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 150  # a standard player sees every frame too
    imu = s.table("sensor", "imu")
    assert list(imu["i"]) == list(range(1, 501))
    assert (imu["written"] >= imu["created"]).all() and set(imu.columns) >= {"segment", "created", "x", "ok"}
    samples, rate = s.audio("sensor", "mic")
    assert rate == 16000 and samples.shape == (500 * 160, 1) and samples[-1, 0] == 500
    events = s.json("logger", "events")
    assert len(events) == logger_steps and events[-1]["inputs"]["camera"] == 150
    assert s.text("logger", "log").splitlines()[:2] == ["step 1", "step 2"]
    summary = s.summary()
    assert len(summary) == 6 and summary.set_index("stream").loc["cam", "samples"] == 150


def test_preview_writes_nothing_and_each_record_is_a_segment(cluster: Cluster):
    m = cluster.manager
    cluster.worker("a")
    g = cp.Graph()
    g.add_edge(Sensor("sensor", rate_hz=200), Logger("logger"))
    m.commit_graph(g, {"a": ["sensor", "logger"]})
    m.start()  # preview
    wait_until(lambda: node_metric(m, "sensor", "steps") > 40, 10, "a preview")
    m.record()
    wait_until(lambda: node_metric(m, "sensor", "recording")["streams"].get("imu", {}).get("written", 0) > 50,
               10, "a first segment")
    m.stop()
    m.record()  # re-recording after stop: a second segment
    wait_until(lambda: node_metric(m, "sensor", "recording")["streams"].get("imu", {}).get("written", 0) > 50,
               10, "a second segment")
    m.stop()
    s = cp.Session(m.collect(progress=False))
    imu = s.table("sensor", "imu")
    assert set(imu["segment"]) == {1, 2}
    seg1 = imu[imu["segment"] == 1]["i"]
    seg2 = imu[imu["segment"] == 2]["i"]
    assert seg1.iloc[0] > 40  # what the preview made was not written
    assert seg2.iloc[0] > seg1.iloc[-1]
    info = s.info
    assert [seg["index"] for seg in info["segments"]] == [1, 2]
    for seg in info["segments"]:  # the nodes' own counts at stop equal what was collected
        assert seg["samples"]["sensor"]["imu"] == (imu["segment"] == seg["index"]).sum()


def test_sigkill_while_recording_leaves_data_up_to_the_last_flush(cluster: Cluster, tmp_path: Path):
    m = cluster.manager
    cwd = tmp_path / "victim-cwd"
    victim = cluster.cli_worker("victim", cwd=cwd)
    g = cp.Graph()
    g.add_edge(Sensor("sensor", rate_hz=200), Logger("logger"))
    m.commit_graph(g, {"victim": ["sensor", "logger"]})
    node_pids = [n["pid"] for n in m.status()["nodes"].values()]
    m.record()

    def written() -> int:
        return node_metric(m, "sensor", "recording")["streams"].get("imu", {}).get("written", 0)

    wait_until(lambda: written() > 100, 10, "recording")
    flushed = written()  # written by now, so on disk within the next flush (≤ 0.5 s)
    wait_until(lambda: written() > flushed + 200, 10, "another second of recording")
    for pid in node_pids:  # cut the node processes off first, so nothing can close cleanly
        os.kill(pid, signal.SIGKILL)
    os.kill(victim.pid, signal.SIGKILL)  # the cp-worker this test started
    victim.wait(10)
    wait_until(lambda: not any(pid_alive(p) for p in node_pids), 10, "the processes to be gone")
    wait_until(lambda: m.status()["workers"]["victim"]["state"] == "lost", 6, "the worker to be reported lost")
    cluster.cli_worker("victim", cwd=cwd)  # restarted, in the same place
    s = cp.Session(m.collect(progress=False))
    imu = s.table("sensor", "imu")
    assert len(imu) >= flushed
    assert list(imu["i"]) == list(range(imu["i"].iloc[0], imu["i"].iloc[0] + len(imu)))  # whole rows, in order
    samples, _ = s.audio("sensor", "mic")
    assert len(samples) >= 160 * flushed
    entries = {st["name"]: st for st in s.info["streams"]}
    assert entries["imu"]["truncated"] and entries["mic"]["truncated"]
    assert s.summary().set_index("stream").loc["imu", "truncated"]


def test_bad_content_is_reported_and_the_pipeline_goes_on(cluster: Cluster):
    m = cluster.manager
    cluster.worker("a")
    g = cp.Graph()
    g.add_edge(Count("source", rate_hz=100), BadSaver("bad"))
    m.commit_graph(g, {"a": ["source", "bad"]})
    m.record()
    wait_until(lambda: node_metric(m, "bad", "errors") >= 3, 10, "errors")
    steps = node_metric(m, "bad", "steps")
    wait_until(lambda: node_metric(m, "bad", "steps") > steps + 20, 10, "the node to go on")
    m.stop()
    err = m.status()["nodes"]["bad"]["last_error"]
    assert "save_video('oops')" in err and "numpy.ndarray" in err


def test_unwritable_logdir_is_a_clear_error(tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with cp.Manager(port=0, logdir=blocker / "logs") as m:
        w = cp.Worker("a").connect(m.host, m.port)
        try:
            g = cp.Graph()
            g.add_edge(Sensor("sensor"), Logger("logger"))
            m.commit_graph(g, {"a": ["sensor", "logger"]})
            with pytest.raises(cp.ManagerError, match="cannot write the session folder.*logdir"):
                m.record()
            assert m.state != "recording"
        finally:
            m.shutdown()
            w.shutdown()


def test_unwritable_worker_data_dir_is_a_clear_error(cluster: Cluster, tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    m = cluster.manager
    w = cp.Worker("a", data_dir=blocker / "data").connect(m.host, m.port)
    cluster.workers.append(w)
    g = cp.Graph()
    g.add_edge(Sensor("sensor"), Logger("logger"))
    m.commit_graph(g, {"a": ["sensor", "logger"]})
    with pytest.raises(cp.ManagerError, match="cannot record: node 'sensor' on worker 'a': cannot write to"):
        m.record()
    assert m.state == "stopped"


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 3 MB tmpfs (root only; in CI a missing capability is a failure)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the disk-full test as root")
        pytest.skip("the disk-full test mounts a small tmpfs: run as root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_is_reported_by_the_manager(cluster: Cluster, tiny_disk: Path):
    errors: list[dict] = []
    m = cluster.manager
    m.subscribe(lambda e: e["type"] == "error" and errors.append(e))
    w = cp.Worker("a", data_dir=tiny_disk).connect(m.host, m.port)
    cluster.workers.append(w)
    g = cp.Graph()
    g.add_edge(BigFrames("noise"), Logger("logger"))
    m.commit_graph(g, {"a": ["noise", "logger"]})
    m.record()
    wait_until(lambda: any("No space left" in e["error"] for e in errors), 20, "the disk-full error")
    m.stop()
    assert any(e["node"] == "noise" and e["error"].startswith("disk") for e in errors)
    rec = node_metric(m, "noise", "recording")["streams"]["noise"]
    assert rec["lost"] > 0  # counted, not silent
    s = cp.Session(m.collect(progress=False))
    entry = next(st for st in s.info["streams"] if st["name"] == "noise")
    assert entry["lost"] > 0 and "No space left" in entry["error"]
    assert any(e["node"] == "noise" for e in s.info["errors"])


def test_collect_with_a_worker_gone_reports_it_and_collects_the_rest(cluster: Cluster):
    m = cluster.manager
    cluster.worker("a")
    gone = cluster.cli_worker("gone")
    g = cp.Graph()
    g.add_edge(Sensor("here", rate_hz=100), Logger("log_here"))
    g.add_edge(Sensor("there", rate_hz=100), Logger("log_there"))
    m.commit_graph(g, {"a": ["here", "log_here"], "gone": ["there", "log_there"]})
    m.record()
    wait_until(lambda: node_metric(m, "there", "recording")["streams"].get("imu", {}).get("written", 0) > 20, 10,
               "recording on both")
    os.kill(gone.pid, signal.SIGKILL)  # the cp-worker this test started
    wait_until(lambda: m.status()["workers"]["gone"]["state"] == "lost", 6, "the loss")
    m.stop()
    with pytest.warns(UserWarning, match="no data from worker.*gone"):
        path = m.collect(progress=False)
    s = cp.Session(path)
    assert len(s.table("here", "imu")) > 20
    assert "gone" in s.info["missing_workers"]
    assert not any(st["worker"] == "gone" for st in s.info["streams"])


def test_transfer_is_chunked_verified_and_resumable(cluster: Cluster, tmp_path: Path):
    m = cluster.manager
    w = cluster.worker("a")
    g = cp.Graph()
    g.add_edge(Camera("camera", n=60, rate_hz=None, width=320, height=240, noise=True), Logger("logger"))
    m.commit_graph(g, {"a": ["camera", "logger"]})
    m.record()
    wait_sources_done(m, "camera")
    m.stop()
    staged = w.data_dir / m.session.id / "camera" / "segment-1" / "cam.avi"
    size = staged.stat().st_size
    assert size > 3 << 20  # several chunks
    # a transfer that was cut off half-way left a .part: collect resumes it
    dest = m.session.path / "a" / "camera" / "segment-1" / "cam.avi"
    dest.parent.mkdir(parents=True)
    dest.with_name("cam.avi.part").write_bytes(staged.read_bytes()[: size // 2])
    path = m.collect(move=False, progress=False)
    stats = m.session.last_collect
    assert stats["moved_bytes"] == 0 and stats["resumed_bytes"] == size // 2
    assert stats["transferred_bytes"] >= size - size // 2
    assert not staged.exists()  # transferred and verified, then forgotten by the worker
    assert dest.stat().st_size == size
    assert len(list(cp.Session(path).frames("camera", "cam"))) == 60


def test_a_corrupt_partial_transfer_is_detected_and_redone(cluster: Cluster):
    m = cluster.manager
    w = cluster.worker("a")
    g = cp.Graph()
    g.add_edge(Camera("camera", n=30, rate_hz=None, width=320, height=240), Logger("logger"))
    m.commit_graph(g, {"a": ["camera", "logger"]})
    m.record()
    wait_sources_done(m, "camera")
    m.stop()
    staged = w.data_dir / m.session.id / "camera" / "segment-1" / "cam.avi"
    dest = m.session.path / "a" / "camera" / "segment-1" / "cam.avi"
    dest.parent.mkdir(parents=True)
    dest.with_name("cam.avi.part").write_bytes(b"\0" * 1000)  # bytes that are not the file's
    with pytest.raises(cp.CollectError, match="checksum"):
        m.collect(move=False, progress=False)
    assert staged.exists() and not dest.with_name("cam.avi.part").exists()
    m.collect(move=False, progress=False)
    assert len(list(cp.Session(m.session.path).frames("camera", "cam"))) == 30


def test_long_video_rolls_over_to_new_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """AVI files stop at 4 GiB: a long recording goes on in <name>.002.avi, read back as one stream."""
    import numpy as np

    from chimera_lab.records import files as worker_files
    from chimera_lab.records import recorder

    monkeypatch.setattr(recorder, "VIDEO_FILE_BYTES", 200_000)
    rng = np.random.default_rng(0)
    stream = recorder.VideoStream(tmp_path, "cam")
    for i in range(40):
        stream.write(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8), float(i), float(i), {})
    stream.close()
    avis = [f for f in stream.entry()["files"] if f.endswith(".avi")]
    assert len(avis) >= 3 and avis[:2] == ["cam.avi", "cam.002.avi"]
    from chimera_lab.records.media import count_avi_frames

    assert sum(count_avi_frames(tmp_path / f) for f in avis) == 40
    # a crash before streams.json: the roll-over files are found again
    seg = tmp_path / "run" / "node" / "segment-1"
    seg.mkdir(parents=True)
    for f in [*avis, "cam.timestamps.csv"]:
        (seg / f).write_bytes((tmp_path / f).read_bytes())
    (found,) = worker_files.segments(tmp_path / "run")[0]["streams"]
    assert found["kind"] == "video" and found["samples"] == 40
    assert [f for f in found["files"] if f.endswith(".avi")] == avis


def test_summary_rate_ignores_pauses_between_segments(tmp_path: Path):
    """Two segments of 10 Hz with a long pause between them read as 10 Hz, not less."""
    streams = [{"worker": "w", "node": "n", "name": "s", "kind": "tabular", "segment": k, "samples": 11,
                "lost": 0, "truncated": False, "first": t0, "last": t0 + 1.0, "files": []}
               for k, t0 in ((1, 100.0), (2, 200.0))]
    (tmp_path / "session.json").write_text(json.dumps({"id": "x", "segments": [], "streams": streams}))
    row = cp.Session(tmp_path).summary().iloc[0]
    assert row["segments"] == 2 and row["samples"] == 22
    assert row["duration_s"] == pytest.approx(2.0) and row["rate_hz"] == pytest.approx(10.0)


def test_a_worker_that_records_nothing_writes_nothing(cluster: Cluster, tmp_path: Path):
    m = cluster.manager
    w = cluster.worker("a")
    g = cp.Graph()
    g.add_edge(Count("source", rate_hz=100), Logger("logger"))
    m.commit_graph(g, {"a": ["source", "logger"]})
    m.start()
    wait_until(lambda: node_metric(m, "logger", "steps") > 10, 10, "steps")
    m.stop()
    assert not w.data_dir.exists()  # no folder until something is recorded
    assert not m.logdir.exists()
