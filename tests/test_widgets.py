"""The notebook widgets' Python side, headless: front-end messages are simulated by calling the registered
handlers, and what would go to the browser is captured by replacing `send` on the instance."""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pipeline_nodes
import pytest
from conftest import Cluster, pid_alive, wait_until

import chimera_lab as cp
from chimera_lab.jupyter import widgets as W
from chimera_lab.jupyter.launcher_panel import LauncherPanel
from chimera_lab.nodes import NullSink, TestPatternSource

REPO = Path(__file__).resolve().parent.parent
cp.send_by_value(sys.modules[__name__])  # GrayArrays below travels by value, like a notebook's class


@pytest.fixture(autouse=True)
def _no_cell_running() -> None:
    """Start each test as between cells (an IPython shell of another test may have left the flag set)."""
    W._cell_ended()


class Capture:
    """Stands in for `widget.send`: keeps every (content, buffers) it is given."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[tuple[dict[str, Any], list[Any]]] = []

    def __call__(self, content: dict[str, Any], buffers: list[Any] | None = None) -> None:
        with self.lock:
            self.messages.append((content, list(buffers or [])))

    def of(self, kind: str) -> list[tuple[dict[str, Any], list[Any]]]:
        with self.lock:
            return [(c, b) for c, b in self.messages if c.get("type") == kind]


def capture(widget: Any) -> Capture:
    cap = Capture()
    widget.send = cap
    return cap


def front(widget: Any, **content: Any) -> None:
    """A custom message from the browser, through the handlers the widget registered."""
    widget._handle_custom_msg(content, [])


def image(value: int = 0, shape: tuple[int, ...] = (48, 64, 3)) -> np.ndarray:
    return np.full(shape, value, np.uint8)


class GrayArrays(cp.Node):
    """Source: uint8 HxW arrays sent as plain ndarray records (not images)."""

    def prep(self) -> None:
        self.i = 0

    def step(self) -> cp.DataChunk:
        self.i += 1
        chunk = cp.DataChunk()
        chunk.add("mask", np.full((24, 32), self.i % 256, np.uint8), content_type="ndarray")
        chunk.add("n", self.i)
        return chunk


def commit(cluster: Cluster, *nodes: cp.Node, edges: tuple[tuple[cp.Node, cp.Node], ...] = ()) -> cp.Manager:
    cluster.worker("a")
    graph = cp.Graph()
    graph.add_nodes_from(nodes)
    for u, v in edges:
        graph.add_edge(u, v)
    m = cluster.manager
    m.commit_graph(graph, {"a": [n.name for n in nodes]})
    return m


# ------------------------------------------------------------------------------------------------------------
# FrameView
# ------------------------------------------------------------------------------------------------------------
def test_frame_view_keeps_two_in_flight_and_the_newest_pending() -> None:
    fv = W.FrameView(title="cam")
    cap = capture(fv)
    try:
        fv.show(image(1))
        wait_until(lambda: len(cap.of("frame")) == 1, 2, "the first frame")
        fv.show(image(2))
        wait_until(lambda: len(cap.of("frame")) == 2, 2, "the second frame")
        for v in range(3, 8):  # no acks: these wait, each replacing the one before
            fv.show(image(v))
        time.sleep(0.3)
        frames = cap.of("frame")
        assert [c["seq"] for c, _ in frames] == [1, 2]
        assert fv.stats["sent"] == 2 and fv.stats["dropped"] == 4
        content, buffers = frames[0]
        assert set(content) == {"type", "sent", "created", "seq"} and content["created"] is None
        assert abs(content["sent"] - time.time()) < 5
        assert len(buffers) == 1 and bytes(buffers[0][:2]) == b"\xff\xd8"  # a JPEG

        front(fv, type="ack", seq=1)  # one acknowledged: the newest waiting frame goes
        wait_until(lambda: len(cap.of("frame")) == 3, 2, "a frame after the ack")
        time.sleep(0.2)
        assert len(cap.of("frame")) == 3  # nothing else was waiting
        last = cap.of("frame")[-1][1][0]
        decoded = __import__("cv2").imdecode(np.frombuffer(last, np.uint8), 1)
        assert abs(int(decoded.mean()) - 7) <= 2  # latest wins: the 7th image
        front(fv, type="ack", seq=99)  # unknown or repeated acks are harmless
        front(fv, type="ack", seq=2)
        front(fv, type="bogus")
    finally:
        fv.close()
    assert not fv._pump.is_alive()


def test_frame_view_forgets_unacknowledged_frames_and_resyncs() -> None:
    fv = W.FrameView()
    fv.ACK_TIMEOUT = 0.3  # no view open: frames trickle instead of stalling for good
    cap = capture(fv)
    try:
        for v in range(3):
            fv.show(image(v))
            time.sleep(0.05)
        wait_until(lambda: len(cap.of("frame")) == 3, 3, "a frame after the timeout")
        n = len(cap.of("frame"))
        front(fv, type="sync")  # a fresh page: it gets the newest frame again
        wait_until(lambda: len(cap.of("frame")) == n + 1, 2, "the frame resent on sync")
    finally:
        fv.close()


def test_frame_view_paces_itself_while_a_cell_runs() -> None:
    fv = W.FrameView()
    cap = capture(fv)
    try:
        fv.show(image(0))
        wait_until(lambda: cap.of("frame"), 2, "a frame")
        front(fv, type="ack", seq=1)
        assert len(fv._rtts) == 1  # the round trip is measured while no cell runs
        fv._rtts.extend([0.05] * 5)
        W._cell_started()  # the browser's acks now wait for the cell: pace by the round trip instead
        try:
            t0 = time.monotonic()
            for v in range(1, 13):
                fv.show(image(v))
                time.sleep(0.03)
            sent = len(cap.of("frame"))
            assert sent >= 6, f"only {sent} frames went out in {time.monotonic() - t0:.2f} s without acks"
        finally:
            W._cell_ended()
        n = len(cap.of("frame"))
        for v in range(5):  # the cell is over: no acks, nothing more than the 2 in flight
            fv.show(image(v))
            time.sleep(0.05)
        assert len(cap.of("frame")) <= n + 2
    finally:
        fv.close()


def test_frame_view_rate_cap() -> None:
    fv = W.FrameView(max_fps=10)
    cap = capture(fv)
    try:
        t0 = time.monotonic()
        for v in range(4):
            fv.show(image(v))
            wait_until(lambda v=v: len(cap.of("frame")) == v + 1, 2, "a frame")
            front(fv, type="ack", seq=v + 1)
        assert time.monotonic() - t0 >= 0.28  # 4 frames at most 10 per second
    finally:
        fv.close()


def test_frame_view_stats_come_from_the_front_end() -> None:
    fv = W.FrameView()
    try:
        # what model.set(...) + model.save_changes() in the browser does
        fv.set_state({"shown": 12, "fps": 29.5, "delay_ms": 4.2, "latency_ms": 11.0})
        assert fv.stats == {"shown": 12, "fps": 29.5, "delay_ms": 4.2, "latency_ms": 11.0, "sent": 0, "dropped": 0}
        fv.set_state({"latency_ms": None})
        assert fv.stats["latency_ms"] is None
    finally:
        fv.close()


def test_frame_view_show_checks_images() -> None:
    fv = W.FrameView()
    cap = capture(fv)
    try:
        with pytest.raises(TypeError, match="uint8"):
            fv.show(np.zeros((4, 4), np.float32))
        with pytest.raises(ValueError, match="HxW"):
            fv.show(np.zeros((4, 4, 2), np.uint8))
        with pytest.raises(TypeError, match="ndarray"):
            fv.show([[1, 2]])  # type: ignore[arg-type]
        fv.show(image(5, (10, 12)))  # gray
        wait_until(lambda: cap.of("frame"), 2, "a gray frame")
        fv.show(image(5, (10, 12, 4)))  # BGRA
        wait_until(lambda: len(cap.of("frame")) == 2, 2, "a BGRA frame")
    finally:
        fv.close()
    fv.show(image(1))  # after close: ignored, no error


def test_frame_view_attach_streams_jpeg_with_flow_control(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    m = commit(cluster, TestPatternSource(name="pattern", width=160, height=120, rate_hz=100))
    m.start()
    fv = W.FrameView(title="pattern")
    cap = capture(fv)
    fv.attach(m, "pattern")
    feeder = fv._feeder
    assert feeder is not None
    try:
        wait_until(lambda: len(cap.of("frame")) >= 2, 15, "two frames from the test pattern")
        time.sleep(0.5)  # no acks: nothing more goes out
        frames = cap.of("frame")
        assert len(frames) == 2
        for content, buffers in frames:
            assert bytes(buffers[0][:2]) == b"\xff\xd8"
            assert isinstance(content["created"], float) and abs(content["created"] - time.time()) < 5
            img = __import__("cv2").imdecode(np.frombuffer(buffers[0], np.uint8), 1)
            assert img.shape == (120, 160, 3)
        wait_until(lambda: fv.stats["dropped"] > 0, 5, "frames to be dropped while none are acked")

        for seq in range(1, 6):  # each ack lets one more frame through
            front(fv, type="ack", seq=seq)
            wait_until(lambda seq=seq: len(cap.of("frame")) >= seq + 2, 5, f"the frame after ack {seq}")
        seqs = [c["seq"] for c, _ in cap.of("frame")]
        assert seqs == list(range(1, len(seqs) + 1))
        assert len(seqs) - 5 <= 2  # never more than 2 unacknowledged
    finally:
        fv.close()
    assert feeder.tap.closed and not feeder.thread.is_alive()
    assert capsys.readouterr().out == ""


def test_frame_view_encodes_ndarray_records_and_says_what_is_wrong(cluster: Cluster) -> None:
    m = commit(cluster, GrayArrays(name="gray", rate_hz=50))
    m.start()
    fv = W.FrameView()
    cap = capture(fv)
    try:
        fv.attach(m, "gray")  # no image record: the first 2-D uint8 array is encoded
        wait_until(lambda: cap.of("frame"), 15, "an encoded array frame")
        img = __import__("cv2").imdecode(np.frombuffer(cap.of("frame")[0][1][0], np.uint8), 0)
        assert img.shape == (24, 32)
        fv.attach(m, "gray", record="n")  # a number is no image: said in the view, nothing sent
        wait_until(lambda: "not an image" in fv.message, 10, "the notice")
        fv.attach(m, "gray", record="missing")
        wait_until(lambda: "no record 'missing'" in fv.message, 10, "the notice")
    finally:
        fv.close()


# ------------------------------------------------------------------------------------------------------------
# LiveChart
# ------------------------------------------------------------------------------------------------------------
def test_live_chart_batches_points() -> None:
    chart = W.LiveChart(title="x", rate_hz=10)
    cap = capture(chart)
    try:
        for i in range(1000):
            chart.append("a", i, i * 2)
        chart.extend("b", np.arange(10), np.arange(10) * 0.5)
        wait_until(lambda: sum(len(c["series"].get("a", [])) for c, _ in cap.of("points")) == 1000, 3,
                   "all points to be sent")
        msgs = cap.of("points")
        assert len(msgs) <= 3, f"{len(msgs)} messages for 1010 points"
        a = [p for c, _ in msgs for p in c["series"].get("a", [])]
        assert a[0] == [0.0, 0.0] or tuple(a[0]) == (0.0, 0.0)
        assert [tuple(p) for p in a] == [(float(i), float(2 * i)) for i in range(1000)]
        n = len(cap.messages)
        time.sleep(0.4)
        assert len(cap.messages) == n  # nothing new: nothing sent
    finally:
        chart.close()
    assert not chart._flusher.thread.is_alive()


def test_live_chart_rate_limits_caps_and_gaps() -> None:
    for asked, used in ((100, 20), (1, 5), (12, 12)):
        c = W.LiveChart(rate_hz=asked)
        assert c.rate_hz == used
        c.close()
    chart = W.LiveChart(max_points=100)
    cap = capture(chart)
    try:
        chart.extend("s", range(250), range(250))
        chart.append("s", 250, float("nan"))  # a gap
        chart.append("s", float("inf"), 1)  # no x: ignored
        assert len(chart.series["s"]) == 100 and chart.series["s"][-1] == (250.0, None)
        wait_until(lambda: cap.of("points"), 2, "a batch")
        assert sum(len(c["series"]["s"]) for c, _ in cap.of("points")) <= 100
        with pytest.raises(ValueError, match="2 x values but 3 y values"):
            chart.extend("s", [1, 2], [1, 2, 3])
        with pytest.raises(ValueError, match="max_points"):
            W.LiveChart(max_points=0)
        front(chart, type="sync")  # a fresh page gets everything held, as a reset
        wait_until(lambda: any(c.get("reset") for c, _ in cap.of("points")), 2, "the resync")
        reset = [c for c, _ in cap.of("points") if c.get("reset")][-1]
        assert len(reset["series"]["s"]) == 100
    finally:
        chart.close()


def test_live_chart_attach_plots_numbers_and_latency(cluster: Cluster) -> None:
    count = pipeline_nodes.Count("count", rate_hz=100)
    sink = pipeline_nodes.Sink(name="sink")
    m = commit(cluster, count, sink, edges=((count, sink),))
    values = W.LiveChart(title="count")
    latency = W.LiveChart(title="latency", y_label="ms")
    capture(values), capture(latency)
    values.attach(m, "count")
    latency.attach_latency(m)
    try:
        m.start()
        wait_until(lambda: len(values.series.get("count", [])) > 10, 15, "count's values")
        wait_until(lambda: "sink p50" in latency.series and "sink p99" in latency.series, 15, "latency points")
        pts = values.series["count"]
        assert all(b[1] > a[1] for a, b in zip(pts, pts[1:], strict=False))  # counting up
        assert all(0 <= x < 60 for x, _ in pts)  # seconds since attach
        assert all(y is not None and y >= 0 for _, y in latency.series["sink p50"])
        values.detach(), latency.detach()
        assert not m._subscribers
        n = len(values.series["count"])
        time.sleep(0.5)
        assert len(values.series["count"]) == n
    finally:
        values.close(), latency.close()


# ------------------------------------------------------------------------------------------------------------
# LogView
# ------------------------------------------------------------------------------------------------------------
def test_log_view_batches_and_levels() -> None:
    view = W.LogView(max_lines=500)
    cap = capture(view)
    try:
        for i in range(2000):
            view.append(f"line {i}", "error" if i % 100 == 0 else "info")
        wait_until(lambda: cap.of("lines"), 2, "a batch")
        time.sleep(0.25)
        msgs = cap.of("lines")
        assert len(msgs) <= 3
        sent = [tuple(x) for c, _ in msgs for x in c["lines"]]
        assert len(sent) == 500 and sent[-1] == ("info", "line 1999")  # only what the view keeps
        assert ("error", "line 1900") in sent
        view.append("careful", level="WARN")
        assert view.lines[-1] == ("warning", "careful")
        with pytest.raises(ValueError, match="level must be one of"):
            view.append("x", level="loud")
        front(view, type="sync")
        wait_until(lambda: any(c.get("reset") for c, _ in cap.of("lines")), 2, "the resync")
    finally:
        view.close()


def test_log_view_attach_logs_states_errors_and_outputs(cluster: Cluster) -> None:
    count = pipeline_nodes.Count("count", rate_hz=50)
    fail = pipeline_nodes.FailStep("fail")
    m = commit(cluster, count, fail, edges=((count, fail),))
    events = W.LogView()
    outputs = W.LogView()
    capture(events), capture(outputs)
    events.attach(m)
    outputs.attach_tap(m, "count")
    try:
        m.start()
        wait_until(lambda: any("node count: running" in t for _, t in events.lines), 10, "a state line")
        wait_until(lambda: any(lvl == "error" and "ZeroDivisionError" in t for lvl, t in events.lines), 15,
                   "an error line with its traceback")
        assert any(lvl == "error" and "node fail: " in t for lvl, t in events.lines)
        wait_until(lambda: any(t.startswith("count: ") for _, t in outputs.lines), 10, "an output line")
        assert all(lvl == "info" and len(t) <= 310 for lvl, t in outputs.lines)
    finally:
        events.close(), outputs.close()
    assert not m._subscribers


# ------------------------------------------------------------------------------------------------------------
# ClusterPanel and html_summary
# ------------------------------------------------------------------------------------------------------------
def test_cluster_panel_snapshot_and_commands(cluster: Cluster) -> None:
    src = TestPatternSource(name="pattern", width=64, height=48, rate_hz=30)
    sink = NullSink(name="sink")
    m = commit(cluster, src, sink, edges=((src, sink),))
    panel = W.ClusterPanel(m)
    try:
        snap = panel.snapshot
        assert snap["state"] == "committed" and snap["port"] == m.port
        assert snap["workers"]["a"]["nodes"] == ["pattern", "sink"]
        assert set(snap["nodes"]["sink"]) == {"state", "worker", "kind", "rate", "p50", "p99", "dropped", "errors",
                                              "last_error"}

        t0 = time.monotonic()
        front(panel, type="command", cmd="start")
        assert time.monotonic() - t0 < 0.2  # the comm handler never waits for the Manager
        wait_until(lambda: panel.last_command == {"cmd": "start", "ok": True, "error": None}, 20, "start")
        wait_until(lambda: panel.snapshot["state"] == "running" and panel.snapshot["nodes"]["sink"]["rate"] > 0, 10,
                   "the panel to show the pipeline running")

        front(panel, type="command", cmd="stop")
        wait_until(lambda: panel.last_command.get("ok") is True and panel.last_command["cmd"] == "stop", 30, "stop")
        assert m.state == "stopped"
        wait_until(lambda: panel.snapshot["state"] == "stopped", 5, "the panel to say stopped")

        front(panel, type="command", cmd="explode")
        assert panel.last_command == {"cmd": "explode", "ok": False, "error": "unknown command 'explode'"}
        front(panel, type="command", cmd="record")
        wait_until(lambda: panel.last_command.get("ok") is True and panel.last_command["cmd"] == "record", 30,
                   "record")
        assert m.state == "recording"
        front(panel, type="command", cmd="stop")
        wait_until(lambda: panel.last_command.get("ok") is True and m.state == "stopped", 30, "stop")

        html = panel._repr_mimebundle_()[0]["text/html"]
        assert "pattern" in html and "sink" in html and "stopped" in html
    finally:
        panel.close()
    assert not m._subscribers and not panel._refresher.thread.is_alive()


def test_cluster_panel_reports_failed_commands(cluster: Cluster) -> None:
    cluster.worker("a")
    panel = W.ClusterPanel(cluster.manager)  # no graph: start fails, and says why
    try:
        front(panel, type="command", cmd="start")
        wait_until(lambda: panel.last_command.get("ok") is False, 10, "the failure")
        assert "no graph is committed" in panel.last_command["error"]
        wait_until(lambda: "a" in panel.snapshot["workers"], 5, "the worker in the snapshot")
    finally:
        panel.close()


def test_html_summary_escapes_and_lists() -> None:
    class FakeManager:  # what html_summary reads: status() and metrics()
        def status(self) -> dict[str, Any]:
            return {"state": "running", "host": "127.0.0.1", "port": 9000,
                    "workers": {"w<1>": {"state": "lost", "hostname": "h&h", "nodes": ["n<b>"]}},
                    "nodes": {"n<b>": {"state": "crashed", "worker": "w<1>", "kind": "source", "errors": 3,
                                       "last_error": "Traceback <x>"}}}

        def metrics(self) -> dict[str, Any]:
            return {"n<b>": {"rate": 29.97, "latency_p50_ms": 1.234, "latency_p99_ms": None,
                             "inputs": {"u": {"dropped": 2}, "v": {"dropped": 3}}}}

    fake: Any = FakeManager()
    snap = W.cluster_snapshot(fake)
    assert snap["nodes"]["n<b>"] == {"state": "crashed", "worker": "w<1>", "kind": "source", "rate": 30.0,
                                     "p50": 1.23, "p99": None, "dropped": 5, "errors": 3,
                                     "last_error": "Traceback <x>"}
    html = W.html_summary(fake)
    assert "n&lt;b&gt;" in html and "w&lt;1&gt;" in html and "h&amp;h" in html and "<b>n" not in html
    assert "crashed" in html and "30.0" in html and "1.23" in html and "<script" not in html


# ------------------------------------------------------------------------------------------------------------
# the fallbacks, and the bundles
# ------------------------------------------------------------------------------------------------------------
def test_every_widget_has_a_text_html_fallback() -> None:
    fv, chart, log = W.FrameView(title="t"), W.LiveChart(), W.LogView()
    try:
        fv._last = (b"\xff\xd8jpeg", None)
        chart.append("s", 0, 1)
        chart.append("s", 1, 2)
        log.append("<oops>", "error")
        for w, expect in ((fv, "data:image/jpeg;base64,"), (chart, "<polyline"), (log, "&lt;oops&gt;")):
            data, _ = w._repr_mimebundle_()
            assert "application/vnd.jupyter.widget-view+json" in data and "text/plain" in data
            assert expect in data["text/html"]
    finally:
        fv.close(), chart.close(), log.close()


def test_widgets_load_their_bundles() -> None:
    from chimera_lab.jupyter.graph_view import GraphView

    for cls, name in ((W.FrameView, "frame_view"), (W.LiveChart, "live_chart"), (W.LogView, "log_view"),
                      (W.ClusterPanel, "cluster_panel"), (GraphView, "graph_view"),
                      (LauncherPanel, "launcher_panel")):
        assert cls._esm == (W.STATIC / f"{name}.js").read_text()
        assert cls._css == (W.STATIC / "chimera.css").read_text()


def test_static_bundles_are_up_to_date(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("chimera_widget_build", REPO / "widgets" / "build.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    written = build.build(tmp_path)
    assert {p.name for p in written} == {"frame_view.js", "live_chart.js", "log_view.js", "cluster_panel.js",
                                         "graph_view.js", "launcher_panel.js", "chimera.css"}
    for path in written:
        shipped = W.STATIC / path.name
        assert shipped.read_bytes() == path.read_bytes(), f"{shipped} is stale: run `python widgets/build.py`"
        text = path.read_text()
        assert not any(line.lstrip().startswith("import ") for line in text.splitlines())  # self-contained
        assert "http://" not in text and "https://" not in text  # nothing from a CDN
    for name, cls in (("frame_view", "chimera-frameview"), ("live_chart", "chimera-livechart"),
                      ("log_view", "chimera-logview"), ("cluster_panel", "chimera-panel"),
                      ("launcher_panel", "chimera-launcher chimera-launcher-panel")):
        assert f'"{cls}"' in (W.STATIC / f"{name}.js").read_text()
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'chimera_lab = ["jupyter/static/*"]' in pyproject


# ------------------------------------------------------------------------------------------------------------
# LauncherPanel
# ------------------------------------------------------------------------------------------------------------
def command_done(panel: LauncherPanel, after: int) -> bool:
    """Whether the panel has reported the outcome of a command sent after report number `after`."""
    last = panel.last_command
    return last.get("seq", 0) > after and last.get("ok") is not None


def test_launcher_panel_lists_workers_and_scales_up_and_down() -> None:
    with cp.LocalCluster(1) as lc:
        m = lc.manager
        panel = LauncherPanel(lc)
        try:
            snap = panel.snapshot
            assert snap["type"] == "LocalCluster" and snap["kind"] == "local" and snap["state"] == "running"
            assert snap["requested"] == 1 and snap["connected"] == 1 and snap["live"] == 1
            assert snap["manager"] == f"{m.host}:{m.port}" and snap["owns_manager"] is True
            assert list(snap["workers"]) == ["local-0"] and snap["columns"] == ["pid"]
            assert snap["workers"]["local-0"]["state"] == "connected" and snap["workers"]["local-0"]["reason"] is None

            t0 = time.monotonic()
            front(panel, type="command", cmd="scale", n=2)
            assert time.monotonic() - t0 < 0.2  # the comm handler never waits for the workers
            assert panel.last_command["ok"] is None and panel.last_command["n"] == 2
            front(panel, type="command", cmd="scale", n=3)  # one command at a time
            assert panel.last_command["ok"] is False and panel.last_command["n"] == 3
            assert panel.last_command["error"] == "another command is still running"
            wait_until(lambda: command_done(panel, 2), 60, "the scale to 2")
            assert {k: v for k, v in panel.last_command.items() if k != "seq"} == \
                {"cmd": "scale", "n": 2, "ok": True, "error": None}
            assert lc.alive == ["local-0", "local-1"]
            # shown before the outcome is reported: when the front end hears "done", its table agrees
            assert panel.snapshot["connected"] == 2 and panel.snapshot["requested"] == 2
            assert panel.snapshot["workers"]["local-1"]["state"] == "connected"
            pid = panel.snapshot["workers"]["local-1"]["pid"]
            assert isinstance(pid, int) and pid_alive(pid)

            seq = panel.last_command["seq"]
            front(panel, type="command", cmd="scale", n=1)
            wait_until(lambda: command_done(panel, seq), 60, "the scale down to 1")
            assert panel.last_command["ok"] is True and panel.last_command["n"] == 1
            assert lc.alive == ["local-0"]
            assert list(panel.snapshot["workers"]) == ["local-0"] and panel.snapshot["connected"] == 1
            wait_until(lambda: not pid_alive(pid), 10, "the retired worker's process to end")
        finally:
            panel.close()
        assert panel._on_event not in m._subscribers and not panel._refresher.thread.is_alive()


def test_launcher_panel_refuses_bad_counts_and_unconfirmed_close(monkeypatch: pytest.MonkeyPatch) -> None:
    with cp.LocalCluster(1) as lc:
        panel = LauncherPanel(lc)
        calls: list[Any] = []
        monkeypatch.setattr(lc, "scale", lambda n: calls.append(n))
        monkeypatch.setattr(lc, "close", lambda *a, **k: calls.append("close"))
        try:
            for n, says in ((-1, "number of workers >= 0, got -1"), (2.5, "whole number of workers, got 2.5"),
                            ("2", "whole number of workers, got '2'"), (True, "whole number of workers, got True"),
                            (None, "whole number of workers, got None"), (1001, "at most 1000 workers")):
                front(panel, type="command", cmd="scale", n=n)
                last = panel.last_command
                assert last["cmd"] == "scale" and last["ok"] is False and says in last["error"], (n, last)
                assert last["n"] == n
            front(panel, type="command", cmd="close")  # a close must be confirmed
            assert panel.last_command["ok"] is False and "confirm: true" in panel.last_command["error"]
            front(panel, type="command", cmd="explode")
            assert panel.last_command["ok"] is False and panel.last_command["error"] == "unknown command 'explode'"
            front(panel, type="bogus")  # not a command: ignored
            assert panel.last_command["cmd"] == "explode"
            assert calls == [] and lc.alive == ["local-0"] and lc.n_workers == 1
            assert lc.manager.workers["local-0"].state == "connected"
        finally:
            panel.close()


def test_launcher_panel_close_command_ends_the_launcher() -> None:
    lc = cp.LocalCluster(1)
    try:
        m = lc.manager
        pid = lc.status()["workers"]["local-0"]["pid"]
        panel = LauncherPanel(lc)
        front(panel, type="command", cmd="close", confirm=True)
        wait_until(lambda: lc.closed and panel.closed, 60, "the launcher and its panel to close")
        assert m.state == "shutdown"  # it made its own Manager: that goes too
        wait_until(lambda: not pid_alive(pid), 10, "the worker's process to end")
        # (the refresher may be the thread that closed the panel: it ends once out of that call)
        wait_until(lambda: not panel._refresher.thread.is_alive(), 5, "the panel's refresher to stop")
        assert panel._on_event not in m._subscribers
    finally:
        lc.close()


def test_launcher_panel_html_fallback_and_closes_with_the_launcher() -> None:
    lc = cp.LocalCluster(1)
    try:
        m = lc.manager
        data, _ = lc._repr_mimebundle_()
        panel = lc._panel
        assert isinstance(panel, LauncherPanel)
        assert "application/vnd.jupyter.widget-view+json" in data and "text/plain" in data
        html = data["text/html"]
        assert "LocalCluster" in html and "local-0" in html and "connected" in html and "<script" not in html
        assert html == lc._repr_html_()
        again, _ = lc._repr_mimebundle_()  # displayed twice: the same panel
        assert again["application/vnd.jupyter.widget-view+json"]["model_id"] == panel.model_id
        assert panel._on_event in m._subscribers
        by_hand = LauncherPanel(lc)  # not the launcher's own: it notices the close by itself
    finally:
        lc.close()
    assert panel.closed and not panel._refresher.thread.is_alive() and panel._on_event not in m._subscribers
    wait_until(lambda: by_hand.closed, 5, "a hand-made panel to close with its launcher")
    by_hand._refresher.thread.join(2)
    assert not by_hand._refresher.thread.is_alive()
    assert by_hand.snapshot["state"] == "closed"


def test_launcher_panel_of_a_launcher_not_started() -> None:
    lc = cp.LocalCluster(1)
    panel = LauncherPanel(lc)
    try:
        assert panel.snapshot["state"] == "not started" and panel.snapshot["manager"] is None
        assert panel.snapshot["workers"] == {} and not lc.started  # showing it does not start it
        assert "no workers" in panel._html()
    finally:
        panel.close()
        lc.close()
    assert not lc.started
