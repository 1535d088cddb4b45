"""Live notebook widgets (anywidget): FrameView, LiveChart, LogView, ClusterPanel, and `html_summary`.

The front-end code is in ``static/`` (built from ``widgets/`` at the repository root by ``widgets/build.py``):
plain ES modules, nothing loaded from a CDN. Everything that goes to the browser is batched or flow-controlled,
so a widget sends a few tens of messages per second at most. Background threads are daemon threads that stop
on ``close()``; they never print: what goes wrong there is logged to ``logging.getLogger("chimera_lab.jupyter")``.
"""

from __future__ import annotations

import base64
import html
import logging
import math
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anywidget
import numpy as np
import traitlets

from .. import wire
from .graph_svg import fmt_number

if TYPE_CHECKING:
    from ..manager import Manager

log = logging.getLogger("chimera_lab.jupyter")

STATIC = Path(__file__).resolve().parent / "static"
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
LEVELS = ("debug", "info", "warning", "error")
_BAD_STATES = ("error", "crashed", "lost")


def _static(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------------------
# plumbing shared by the widgets
# --------------------------------------------------------------------------------------------------
class _Every:
    """A daemon thread calling `fn` every `period` seconds (sooner after `wake()`) until `stop()`."""

    def __init__(self, name: str, period: float, fn: Callable[[], None]) -> None:
        self.period, self.fn = period, fn
        self._stop, self._wake = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            self._wake.wait(self.period)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.fn()
            except Exception:
                failures += 1
                if failures <= 3 or failures % 100 == 0:
                    log.exception("%s failed (%d times so far)", self.thread.name, failures)

    def wake(self) -> None:
        """Run `fn` now rather than at the next period."""
        self._wake.set()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread (and wait for it, unless called from it)."""
        self._stop.set()
        self._wake.set()
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout)


class _TapFeeder:
    """A daemon thread handing each output of `node` (a verified raw header) to `handle`; it owns its Tap."""

    def __init__(self, manager: Manager, node: str, handle: Callable[[dict[str, Any]], None], name: str) -> None:
        self.node, self.handle = node, handle
        self.tap = manager.tap(node)  # an unknown node raises ManagerError here, in the caller
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        failures = 0
        try:
            while not self._stop.is_set() and not self.tap.closed:
                try:
                    header = self.tap.get_raw(0.2)
                    if header is not None and not self._stop.is_set():
                        self.handle(header)
                except Exception:
                    if self._stop.is_set():
                        break
                    failures += 1
                    if failures <= 3 or failures % 100 == 0:
                        log.exception("%s: handling an output of node %r failed (%d times so far)",
                                      self.thread.name, self.node, failures)
                    self._stop.wait(0.2)
        finally:
            try:
                self.tap.close()  # here, not in stop(): a zmq socket belongs to one thread at a time
            except Exception:
                log.exception("%s: closing the tap of node %r failed", self.thread.name, self.node)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop feeding; the tap is closed once the thread is out of its current wait (≤ 0.2 s)."""
        self._stop.set()
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout)


def _answer_on_the_subshell_asked_for(comm: Any) -> None:
    """Let the front end's own messages to this widget (button clicks, frame acks) run on the kernel subshell the
    front end sent them to, so they are handled while a cell is busy.

    JupyterLab 4.4+ and Notebook 7.4+ send widget messages to a subshell of their own (the `commsOverSubshells`
    setting, on by default) when the kernel supports subshells (ipykernel 7). But ipykernel then routes every
    comm message to the subshell that last *sent* on that comm (`BaseComm._reply_subshell_for`, so a cell
    awaiting a widget's reply gets it); our widgets were created and updated by cells on the main shell, so
    clicks would wait in the main shell's queue behind the busy cell. Our custom messages expect no reply on a
    particular loop, and every handler is thread-safe, so for them the subshell the front end chose wins. Other
    messages (state sync) keep ipykernel's routing. Without subshells nothing changes: they wait for the cell.
    """
    route = getattr(comm, "_reply_subshell_for", None)
    if route is None:  # another kernel, or an ipykernel that routes by the message's subshell_id alone
        return

    def reply_subshell_for(data: Any, default: str | None) -> str | None:
        if isinstance(data, dict) and data.get("method") == "custom":
            return default  # the subshell named in the message's header
        return route(data, default)

    comm._reply_subshell_for = reply_subshell_for


class _Widget(anywidget.AnyWidget):
    """What every chimera widget shares: the stylesheet, a per-instance id for the front end's shared state,
    front-end messages dispatched to `_on_message`, and a text/html fallback for saved notebooks."""

    _css = _static("chimera.css")
    _uid = traitlets.Unicode("").tag(sync=True)

    @traitlets.default("_uid")
    def _default_uid(self) -> str:
        return uuid.uuid4().hex

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._closed = False
        self.on_msg(self._dispatch)
        _answer_on_the_subshell_asked_for(self.comm)

    def _dispatch(self, widget: Any, content: Any, buffers: list[Any]) -> None:
        if not isinstance(content, dict):
            return
        try:
            self._on_message(content)
        except Exception:
            log.exception("%s: handling the front end's message %r failed", type(self).__name__, content.get("type"))

    def _on_message(self, content: dict[str, Any]) -> None:
        """Handle a message from the front end (subclasses)."""

    def _html(self) -> str:
        """What a notebook without a live kernel shows (subclasses)."""
        return f"<div><em>{html.escape(type(self).__name__)}</em> (live view; needs a running kernel)</div>"

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None:
            return None
        data, metadata = bundle
        try:
            data = {**data, "text/html": self._html()}
        except Exception:
            log.exception("%s: the text/html summary failed", type(self).__name__)
        return data, metadata

    @property
    def closed(self) -> bool:
        """Whether `close()` was called."""
        return self._closed


def _image_array(value: Any) -> bool:
    return (isinstance(value, np.ndarray) and value.dtype == np.uint8 and value.size > 0
            and (value.ndim == 2 or (value.ndim == 3 and value.shape[2] in (1, 3, 4))))


def encode_jpeg(img: np.ndarray, quality: int = 80) -> bytes:
    """JPEG bytes of a uint8 HxW, HxWx1, HxWx3 (BGR) or HxWx4 (BGRA) image."""
    import cv2

    if not isinstance(img, np.ndarray):
        raise TypeError(f"an image must be a numpy.ndarray, got {type(img).__name__}")
    if img.dtype != np.uint8:
        raise TypeError(f"an image must be uint8, got {img.dtype}; convert with img.astype(numpy.uint8) "
                        "(scale floats in 0..1 by 255 first)")
    if not _image_array(img):
        raise ValueError(f"an image must be HxW, HxWx1, HxWx3 (BGR) or HxWx4 (BGRA), got shape {img.shape}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - only invalid input fails, which is checked above
        raise ValueError("OpenCV could not JPEG-encode the image")
    return buf.tobytes()


def _number(value: Any) -> float | None:
    """`value` as a float if it is a number (int, float, numpy number, or a 1-element numeric array)."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "iuf":
        return float(value.reshape(-1)[0])
    return None


def _describe(recs: dict[str, dict[str, Any]]) -> str:
    parts = []
    for name, rec in recs.items():
        if "jpeg" in rec:
            parts.append(f"{name}=image")
        else:
            v = rec.get("value")
            parts.append(f"{name}=ndarray{v.shape}:{v.dtype}" if isinstance(v, np.ndarray)
                         else f"{name}={type(v).__name__}")
    return ", ".join(parts) or "none"


# While the kernel runs a cell, messages from the browser (a FrameView's acks) wait until it is done: a FrameView
# then paces itself by the round trip it measured instead of waiting for acks. (pre/post_run_cell, not
# pre/post_execute: the comm package fires those around every message it hands to a widget.)
_executing = threading.Event()
_watched: weakref.WeakSet[Any] = weakref.WeakSet()


def _cell_started(*_: Any) -> None:
    _executing.set()


def _cell_ended(*_: Any) -> None:
    _executing.clear()


def _watch_executions() -> None:
    """Follow IPython's pre/post_run_cell events (once per shell), if running under IPython."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with ipywidgets
        return
    ip = get_ipython()
    if ip is None or ip in _watched:
        return
    _watched.add(ip)
    ip.events.register("pre_run_cell", _cell_started)
    ip.events.register("post_run_cell", _cell_ended)
    if threading.current_thread() is threading.main_thread():
        _executing.set()  # made by a cell (the usual case): that execution started before we were watching


# --------------------------------------------------------------------------------------------------
# FrameView
# --------------------------------------------------------------------------------------------------
class FrameView(_Widget):
    """JPEG frames in the notebook: at most 2 in flight to the browser, the newest pending one wins.

    ``FrameView(title).attach(manager, node, record=None)`` shows a node's image outputs (the named record, or
    its first image); ``show(img)`` shows one frame by hand. ``stats`` says how it goes.
    """

    MAX_IN_FLIGHT = 2
    ACK_TIMEOUT = 2.0  # a frame not acknowledged by then is forgotten (no view open, or a reloaded page)
    BUSY_TIMEOUT = (0.02, 0.5)  # while a cell runs: the measured round trip, within these bounds (s); the upper
    #                             bound until a view has answered at least once

    _esm = _static("frame_view.js")
    title = traitlets.Unicode("").tag(sync=True)
    message = traitlets.Unicode("").tag(sync=True)  # a notice for the stats line (e.g. "not an image")
    shown = traitlets.Int(0).tag(sync=True)
    fps = traitlets.Float(0.0).tag(sync=True)
    delay_ms = traitlets.Float(0.0).tag(sync=True)
    latency_ms = traitlets.Float(None, allow_none=True).tag(sync=True)

    def __init__(self, title: str = "", max_fps: float = 60.0, quality: int = 80, **kwargs: Any) -> None:
        if not max_fps > 0:
            raise ValueError(f"FrameView: max_fps must be > 0, got {max_fps!r}")
        if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
            raise ValueError(f"FrameView: quality must be an int in 1..100 (JPEG quality), got {quality!r}")
        super().__init__(title=title, **kwargs)
        self.max_fps, self.quality = float(max_fps), quality
        self._cond = threading.Condition()
        self._in_flight: dict[int, float] = {}  # seq -> when it was sent (monotonic)
        self._pending: tuple[bytes, float | None] | None = None
        self._last: tuple[bytes, float | None] | None = None
        self._seq = self._sent = self._dropped = 0
        self._rtts: deque[float] = deque(maxlen=30)  # send -> ack, measured while no cell was running
        self._feeder: _TapFeeder | None = None
        _watch_executions()
        self._pump = threading.Thread(target=self._pump_loop, name="chimera-frameview-send", daemon=True)
        self._pump.start()

    # -- the kernel side of the flow control -----------------------------------------------------------
    def _submit(self, jpeg: bytes, created: float | None) -> None:
        with self._cond:
            if self._closed:
                return
            if self._pending is not None:
                self._dropped += 1
            self._pending = self._last = (jpeg, created)
            self._cond.notify_all()

    def _pump_loop(self) -> None:
        next_ok = 0.0
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    now = time.monotonic()
                    timeout = self._ack_timeout()
                    for seq, t in list(self._in_flight.items()):
                        if now - t > timeout:
                            del self._in_flight[seq]
                    if self._pending is not None and len(self._in_flight) < self.MAX_IN_FLIGHT and now >= next_ok:
                        break
                    waits = []
                    if self._pending is not None and len(self._in_flight) < self.MAX_IN_FLIGHT:
                        waits.append(next_ok - now)
                    if self._in_flight:
                        waits.append(min(0.1, min(self._in_flight.values()) + timeout - now))  # 0.1: see _executing
                    self._cond.wait(max(0.001, min(waits)) if waits else 1.0)
                jpeg, created = self._pending
                self._pending = None
                self._seq += 1
                seq = self._seq
                self._in_flight[seq] = now
                self._sent += 1
            next_ok = now + 1.0 / self.max_fps
            try:
                self.send({"type": "frame", "sent": time.time(), "created": created, "seq": seq}, buffers=[jpeg])
            except Exception:
                log.exception("FrameView: sending a frame failed")

    def _ack_timeout(self) -> float:
        """How long an unacknowledged frame counts as in flight (with the lock held)."""
        if not _executing.is_set():
            return self.ACK_TIMEOUT
        lo, hi = self.BUSY_TIMEOUT
        if not self._rtts:  # no view has answered yet (maybe none is open): a slow trickle
            return hi
        rtt = sorted(self._rtts)[len(self._rtts) // 2]
        return min(hi, max(lo, rtt, 1.0 / self.max_fps))

    def _on_message(self, content: dict[str, Any]) -> None:
        kind = content.get("type")
        with self._cond:
            if kind == "ack" and isinstance(content.get("seq"), int):
                sent = self._in_flight.pop(content["seq"], None)
                if sent is not None and not _executing.is_set():
                    self._rtts.append(time.monotonic() - sent)
            elif kind == "sync":  # a new front end: what was in flight went nowhere; show it the newest frame
                self._in_flight.clear()
                if self._pending is None and self._last is not None:
                    self._pending = self._last
            self._cond.notify_all()

    # -- public ------------------------------------------------------------------------------------------
    def show(self, img: np.ndarray) -> None:
        """Show one image (uint8 HxW, HxWx3 BGR as OpenCV has it, or HxWx4 BGRA)."""
        self._submit(encode_jpeg(img, self.quality), None)

    def attach(self, manager: Manager, node: str, record: str | None = None) -> FrameView:
        """Show `node`'s outputs: record `record`, or the first image record; returns this view."""
        self.detach()
        warned: set[str] = set()
        self.message = ""

        def notice(text: str) -> None:
            if text not in warned:
                warned.add(text)
                log.warning("FrameView: %s", text)
                self.message = text

        def handle(header: dict[str, Any]) -> None:
            recs = wire.raw_records(header)
            if record is not None:
                if record not in recs:
                    notice(f"node {node!r} sent no record {record!r} (records: {_describe(recs)})")
                    return
                candidates = [recs[record]]
            else:
                candidates = sorted(recs.values(), key=lambda r: "jpeg" not in r)  # JPEGs first
            for rec in candidates:
                if "jpeg" in rec:
                    self._submit(rec["jpeg"], header.get("t"))
                    return
                if _image_array(rec.get("value")):
                    self._submit(encode_jpeg(rec["value"], self.quality), header.get("t"))
                    return
            what = f"record {record!r}" if record is not None else "any record"
            notice(f"node {node!r}: {what} is not an image ({_describe(recs)})")

        self._feeder = _TapFeeder(manager, node, handle, f"chimera-frameview-{node}")
        return self

    def detach(self) -> None:
        """Stop showing the attached node (if any)."""
        feeder, self._feeder = self._feeder, None
        if feeder is not None:
            feeder.stop()

    @property
    def stats(self) -> dict[str, Any]:
        """Frames shown, display rate, kernel-to-screen delay, end-to-end latency, frames sent and dropped."""
        with self._cond:
            sent, dropped = self._sent, self._dropped
        return {"shown": self.shown, "fps": self.fps, "delay_ms": self.delay_ms, "latency_ms": self.latency_ms,
                "sent": sent, "dropped": dropped}

    def close(self) -> None:
        """Stop the feeder and the sender, close the tap and the widget."""
        if hasattr(self, "_pump"):  # fully built (ipywidgets' __del__ calls close too)
            self.detach()
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            if threading.current_thread() is not self._pump:
                self._pump.join(2.0)
        super().close()

    def _html(self) -> str:
        title = f"<div><b>{html.escape(self.title)}</b></div>" if self.title else ""
        last = self._last
        img = ""
        if last is not None and len(last[0]) <= 256 * 1024:
            img = (f'<img src="data:image/jpeg;base64,{base64.b64encode(last[0]).decode()}" '
                   'style="max-width:100%;display:block" alt="last frame"/>')
        return (f'<div class="chimera-frameview-static">{title}{img}<div style="font-size:11px;color:#777">'
                f"FrameView: {self.shown} frames shown (live view; needs a running kernel)</div></div>")


# --------------------------------------------------------------------------------------------------
# LiveChart
# --------------------------------------------------------------------------------------------------
class _Fed(_Widget):
    """A widget fed by taps and event subscriptions, with a thread that sends batches (`_flusher`)."""

    _stops: list[Callable[[], None]]  # how to stop each feed

    def detach(self) -> None:
        """Stop feeding from every attached Manager and node."""
        stops, self._stops = self._stops, []
        for stop in stops:
            try:
                stop()
            except Exception:
                log.exception("%s: detaching failed", type(self).__name__)

    def close(self) -> None:
        """Detach, stop the sending thread and close the widget."""
        if hasattr(self, "_flusher"):  # fully built (ipywidgets' __del__ calls close too)
            self._closed = True
            self.detach()
            self._flusher.stop()
        super().close()


class LiveChart(_Fed):
    """Append-only line series, drawn live: wheel zooms time, drag pans, double-click follows the data again.

    ``append(series, x, y)`` / ``extend(series, xs, ys)`` from any thread; points go to the browser in batches
    at `rate_hz` (5..20). ``attach_latency(manager)`` plots every node's p50/p99 latency; ``attach(manager,
    node)`` plots a node's numeric outputs.
    """

    _esm = _static("live_chart.js")
    title = traitlets.Unicode("").tag(sync=True)
    x_label = traitlets.Unicode("t (s)").tag(sync=True)
    y_label = traitlets.Unicode("").tag(sync=True)
    max_points = traitlets.Int(5000).tag(sync=True)

    def __init__(self, title: str = "", x_label: str = "t (s)", y_label: str = "", max_points: int = 5000,
                 rate_hz: float = 10, **kwargs: Any) -> None:
        if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 1:
            raise ValueError(f"LiveChart: max_points must be a positive int, got {max_points!r}")
        super().__init__(title=title, x_label=x_label, y_label=y_label, max_points=max_points, **kwargs)
        self.rate_hz = min(20.0, max(5.0, float(rate_hz)))
        self._lock = threading.Lock()
        self._history: dict[str, deque[tuple[float, float | None]]] = {}
        self._pending: dict[str, deque[tuple[float, float | None]]] = {}
        self._resync = False
        self._stops: list[Callable[[], None]] = []
        self._flusher = _Every("chimera-livechart-send", 1.0 / self.rate_hz, self._flush)

    @traitlets.observe("max_points")
    def _max_points_changed(self, change: dict[str, Any]) -> None:
        if not hasattr(self, "_lock"):
            return
        with self._lock:
            n = max(1, int(change["new"]))
            self._history = {k: deque(v, maxlen=n) for k, v in self._history.items()}
            self._pending = {k: deque(v, maxlen=n) for k, v in self._pending.items()}

    def _add(self, series: str, points: Iterable[tuple[Any, Any]]) -> None:
        clean: list[tuple[float, float | None]] = []
        for x, y in points:
            fx, fy = float(x), float(y)
            if math.isfinite(fx):
                clean.append((fx, fy if math.isfinite(fy) else None))  # NaN/inf: a gap in the line
        if not clean:
            return
        with self._lock:
            n = self.max_points
            self._history.setdefault(series, deque(maxlen=n)).extend(clean)
            self._pending.setdefault(series, deque(maxlen=n)).extend(clean)

    def append(self, series: str, x: float, y: float) -> None:
        """Add one point (x, y) to `series` (NaN/inf y: a gap; non-finite x: ignored)."""
        self._add(str(series), ((x, y),))

    def extend(self, series: str, xs: Iterable[float], ys: Iterable[float]) -> None:
        """Add the points zip(xs, ys) to `series` (the same number of each)."""
        xs, ys = list(xs), list(ys)
        if len(xs) != len(ys):
            raise ValueError(f"LiveChart.extend: {len(xs)} x values but {len(ys)} y values")
        self._add(str(series), zip(xs, ys, strict=True))

    def _flush(self) -> None:
        with self._lock:
            reset, self._resync = self._resync, False
            source = self._history if reset else self._pending
            series = {k: list(v) for k, v in source.items() if v or reset}
            self._pending = {}
        if not series and not reset:
            return
        msg: dict[str, Any] = {"type": "points", "series": series}
        if reset:
            msg["reset"] = True
        self.send(msg)

    def _on_message(self, content: dict[str, Any]) -> None:
        if content.get("type") == "sync":  # a new front end: send it everything held (by the sending thread)
            with self._lock:
                self._resync = True
            self._flusher.wake()

    @property
    def series(self) -> dict[str, list[tuple[float, float | None]]]:
        """The points held per series (at most max_points each)."""
        with self._lock:
            return {k: list(v) for k, v in self._history.items()}

    def clear(self) -> None:
        """Forget every point (in the browser too)."""
        with self._lock:
            self._history, self._pending, self._resync = {}, {}, True
        self._flusher.wake()

    def attach_latency(self, manager: Manager) -> LiveChart:
        """Plot every node's end-to-end latency p50 and p99 (ms) from the Manager's metrics; returns the chart."""
        t0 = time.time()

        def on_event(event: dict[str, Any]) -> None:
            if event.get("type") != "metrics":
                return
            t = event.get("time", time.time()) - t0
            for node, m in event.get("metrics", {}).items():
                for key, label in (("latency_p50_ms", "p50"), ("latency_p99_ms", "p99")):
                    if m.get(key) is not None:
                        self.append(f"{node} {label}", t, m[key])

        self._stops.append(manager.subscribe(on_event))
        return self

    def attach(self, manager: Manager, node: str, record: str | None = None) -> LiveChart:
        """Plot `node`'s numeric outputs (record "default", or `record`) against time; returns the chart."""
        t0 = time.time()
        name = record or "default"
        series = node if record is None else f"{node}.{record}"
        warned: set[str] = set()

        def handle(header: dict[str, Any]) -> None:
            recs = wire.raw_records(header)
            rec = recs.get(name)
            value = None if rec is None else _number(rec.get("value"))
            if value is None:
                text = (f"LiveChart: node {node!r} sent no record {name!r} ({_describe(recs)})" if rec is None else
                        f"LiveChart: record {name!r} of node {node!r} is not a number ({_describe({name: rec})})")
                if text not in warned:
                    warned.add(text)
                    log.warning(text)
                return
            self.append(series, header.get("t", time.time()) - t0, value)

        self._stops.append(_TapFeeder(manager, node, handle, f"chimera-livechart-{node}").stop)
        return self

    def _html(self) -> str:
        with self._lock:
            data = {k: list(v) for k, v in self._history.items()}
        return _svg_chart(self.title, self.x_label, self.y_label, data)


def _svg_chart(title: str, x_label: str, y_label: str, data: dict[str, list[tuple[float, float | None]]],
               width: int = 520, height: int = 180) -> str:
    """A static SVG of the series (the text/html fallback of a LiveChart)."""
    pts = [(x, y) for v in data.values() for x, y in v if y is not None]
    head = f"<div><b>{html.escape(title)}</b></div>" if title else ""
    if not pts:
        return f'<div class="chimera-livechart-static">{head}<em>LiveChart: no data yet</em></div>'
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    pad = 4

    def sx(x: float) -> float:
        return pad + (x - x0) / (x1 - x0) * (width - 2 * pad)

    def sy(y: float) -> float:
        return height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad)

    lines, legend = [], []
    for i, (name, points) in enumerate(data.items()):
        color = PALETTE[i % len(PALETTE)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points if y is not None)
        lines.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{coords}"/>')
        legend.append(f'<span style="color:{color}">&#9644; {html.escape(name)}</span>')
    return (f'<div class="chimera-livechart-static">{head}'
            f'<svg width="{width}" height="{height}" style="border:1px solid #ccc">{"".join(lines)}</svg>'
            f'<div style="font-size:11px">{" ".join(legend)} &nbsp; {html.escape(x_label)}: {x0:.3g}..{x1:.3g}, '
            f"{html.escape(y_label or 'y')}: {y0:.3g}..{y1:.3g}</div></div>")


# --------------------------------------------------------------------------------------------------
# LogView
# --------------------------------------------------------------------------------------------------
class LogView(_Fed):
    """A scrolling log: ``append(text, level)`` from any thread, sent ≤ 10 times a second; errors in red.

    ``attach(manager)`` logs the Manager's state changes and errors (with tracebacks); ``attach_tap(manager,
    node)`` logs a node's outputs.
    """

    _esm = _static("log_view.js")
    max_lines = traitlets.Int(500).tag(sync=True)

    def __init__(self, max_lines: int = 500, **kwargs: Any) -> None:
        if isinstance(max_lines, bool) or not isinstance(max_lines, int) or max_lines < 1:
            raise ValueError(f"LogView: max_lines must be a positive int, got {max_lines!r}")
        super().__init__(max_lines=max_lines, **kwargs)
        self._lock = threading.Lock()
        self._history: deque[list[str]] = deque(maxlen=max_lines)
        self._pending: deque[list[str]] = deque(maxlen=max_lines)
        self._resync = False
        self._stops: list[Callable[[], None]] = []
        self._flusher = _Every("chimera-logview-send", 0.1, self._flush)

    @traitlets.observe("max_lines")
    def _max_lines_changed(self, change: dict[str, Any]) -> None:
        if not hasattr(self, "_lock"):
            return
        with self._lock:
            n = max(1, int(change["new"]))
            self._history, self._pending = deque(self._history, maxlen=n), deque(self._pending, maxlen=n)

    def append(self, text: str, level: str = "info") -> None:
        """Add a line (`level`: "debug", "info", "warning" or "error")."""
        lvl = str(level).lower()
        lvl = {"warn": "warning", "err": "error", "critical": "error"}.get(lvl, lvl)
        if lvl not in LEVELS:
            raise ValueError(f"LogView.append: level must be one of {', '.join(LEVELS)}, got {level!r}")
        entry = [lvl, str(text)]
        with self._lock:
            self._history.append(entry)
            self._pending.append(entry)

    @property
    def lines(self) -> list[tuple[str, str]]:
        """The lines held, as (level, text), oldest first."""
        with self._lock:
            return [(lvl, text) for lvl, text in self._history]

    def _flush(self) -> None:
        with self._lock:
            reset, self._resync = self._resync, False
            lines = list(self._history if reset else self._pending)
            self._pending.clear()
        if not lines and not reset:
            return
        msg: dict[str, Any] = {"type": "lines", "lines": lines}
        if reset:
            msg["reset"] = True
        self.send(msg)

    def _on_message(self, content: dict[str, Any]) -> None:
        if content.get("type") == "sync":
            with self._lock:
                self._resync = True
            self._flusher.wake()

    def clear(self) -> None:
        """Forget every line (in the browser too)."""
        with self._lock:
            self._history.clear()
            self._pending.clear()
            self._resync = True
        self._flusher.wake()

    def attach(self, manager: Manager) -> LogView:
        """Log the Manager's node and worker state changes (lost/crashed as errors) and node errors."""

        def on_event(event: dict[str, Any]) -> None:
            kind = event.get("type")
            stamp = time.strftime("%H:%M:%S ", time.localtime(event.get("time", time.time())))
            if kind == "error":
                count = event.get("count") or 0
                more = f" ({count} errors so far)" if count > 1 else ""
                self.append(f"{stamp}node {event.get('node')}: {event.get('error')}{more}", "error")
                tb = str(event.get("traceback") or "").rstrip()
                if tb:
                    self.append(tb, "error")
            elif kind in ("node", "worker"):
                state = event.get("state")
                self.append(f"{stamp}{kind} {event.get(kind)}: {state}",
                            "error" if state in ("lost", "crashed") else "info")

        self._stops.append(manager.subscribe(on_event))
        return self

    def attach_tap(self, manager: Manager, node: str) -> LogView:
        """Log each output of `node`: every record's repr (at most 300 characters)."""

        def handle(header: dict[str, Any]) -> None:
            for name, rec in wire.raw_records(header).items():
                if "jpeg" in rec:
                    text = f"<{rec['content-type']}: JPEG, {len(rec['jpeg'])} bytes>"
                else:
                    text = repr(rec.get("value"))
                if len(text) > 300:
                    text = text[:299] + "…"
                self.append(f"{node}: {text}" if name == "default" else f"{node}.{name}: {text}")

        self._stops.append(_TapFeeder(manager, node, handle, f"chimera-logview-{node}").stop)
        return self

    def _html(self) -> str:
        rows = []
        for lvl, text in self.lines[-100:]:
            color = {"error": "#d32f2f", "warning": "#b26b00", "debug": "#777"}.get(lvl, "inherit")
            rows.append(f'<span style="color:{color}">{html.escape(text)}</span>')
        body = "\n".join(rows) or "<em>(no lines yet)</em>"
        return (f'<pre class="chimera-logview-static" style="max-height:300px;overflow:auto;font-size:12px">'
                f"{body}</pre>")


# --------------------------------------------------------------------------------------------------
# ClusterPanel
# --------------------------------------------------------------------------------------------------
def cluster_snapshot(manager: Manager) -> dict[str, Any]:
    """The Manager's state, workers and nodes as plain data: what ClusterPanel shows."""
    status, metrics = manager.status(), manager.metrics()
    nodes = {}
    for name, n in status["nodes"].items():
        m = metrics.get(name, {})
        p50, p99 = m.get("latency_p50_ms"), m.get("latency_p99_ms")
        last_error = n.get("last_error")
        nodes[name] = {
            "state": n["state"], "worker": n["worker"], "kind": n["kind"],
            "rate": round(float(m.get("rate") or 0.0), 1),
            "p50": None if p50 is None else round(p50, 2),
            "p99": None if p99 is None else round(p99, 2),
            "dropped": int(sum(e.get("dropped", 0) for e in m.get("inputs", {}).values())),
            "errors": int(n.get("errors") or 0),
            "last_error": None if last_error is None else str(last_error)[-4000:],
        }
    return {
        "state": status["state"], "host": status["host"], "port": status["port"],
        "workers": {name: {"state": w["state"], "hostname": w["hostname"], "nodes": list(w["nodes"])}
                    for name, w in status["workers"].items()},
        "nodes": nodes,
    }


class ClusterPanel(_Widget):
    """The cluster at a glance: Manager state, workers, nodes (rate, latency, drops, errors), and Start / Stop /
    Record buttons. Refreshed at most 5 times a second, and only when something changed."""

    COMMANDS = ("start", "stop", "record")

    _esm = _static("cluster_panel.js")
    snapshot = traitlets.Dict().tag(sync=True)
    last_command = traitlets.Dict().tag(sync=True)

    def __init__(self, manager: Manager, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.manager = manager
        self.snapshot = cluster_snapshot(manager)
        self._busy = threading.Lock()
        self._last_push = 0.0
        self._refresher = _Every("chimera-panel-refresh", 0.5, self._refresh)  # before events can wake it
        self._unsubscribe = manager.subscribe(self._on_event)

    def _on_event(self, event: dict[str, Any]) -> None:
        self._refresher.wake()

    def _refresh(self) -> None:
        wait = self._last_push + 0.2 - time.monotonic()  # at most 5 pushes per second
        if wait > 0:
            time.sleep(wait)
        snap = cluster_snapshot(self.manager)
        if snap != self.snapshot and not self._closed:
            self.snapshot = snap
            self._last_push = time.monotonic()

    def _on_message(self, content: dict[str, Any]) -> None:
        if content.get("type") != "command":
            return
        cmd = content.get("cmd")
        if cmd not in self.COMMANDS:
            self.last_command = {"cmd": str(cmd), "ok": False, "error": f"unknown command {cmd!r}"}
            return
        if not self._busy.acquire(blocking=False):
            self.last_command = {"cmd": cmd, "ok": False, "error": "another command is still running"}
            return
        self.last_command = {"cmd": cmd, "ok": None, "error": None}
        threading.Thread(target=self._run_command, args=(cmd,), name=f"chimera-panel-{cmd}", daemon=True).start()

    def _run_command(self, cmd: str) -> None:
        ok, error = True, None
        try:
            getattr(self.manager, cmd)()
        except Exception as exc:
            ok, error = False, str(exc) or type(exc).__name__
            log.info("ClusterPanel: %s failed: %s", cmd, error)
        finally:
            self._busy.release()
        self.last_command = {"cmd": cmd, "ok": ok, "error": error}
        self._refresher.wake()

    def close(self) -> None:
        """Unsubscribe from the Manager, stop refreshing and close the widget."""
        if hasattr(self, "_refresher"):  # fully built (ipywidgets' __del__ calls close too)
            self._closed = True
            self._unsubscribe()
            self._refresher.stop()
        super().close()

    def _html(self) -> str:
        return html_summary(self.manager)


def _state_style(state: str) -> str:
    color = "#2e7d32" if state in ("running", "recording", "connected") else \
        "#d32f2f" if state in _BAD_STATES or state == "shutdown" else "#777"
    return f"color:{color};font-weight:600"


def html_summary(manager: Manager) -> str:
    """An HTML table of the Manager's workers and nodes with state, rate and latency (no scripts, no CSS file)."""
    snap = cluster_snapshot(manager)
    e = html.escape
    cell = 'style="padding:2px 10px;text-align:left;border-bottom:1px solid #ddd"'
    num = 'style="padding:2px 10px;text-align:right;border-bottom:1px solid #ddd"'
    workers = "".join(
        f"<tr><td {cell}>{e(name)}</td><td {cell}><span style=\"{_state_style(w['state'])}\">{e(w['state'])}</span>"
        f"</td><td {cell}>{e(w['hostname'] or '')}</td><td {cell}>{e(', '.join(w['nodes']))}</td></tr>"
        for name, w in snap["workers"].items())
    rows = []
    for name, n in snap["nodes"].items():
        errors = f'<span style="color:#d32f2f;font-weight:600">{n["errors"]}</span>' if n["errors"] else "0"
        rows.append(
            f"<tr><td {cell}>{e(name)}</td><td {cell}>{e(n['worker'])}</td><td {cell}>{e(n['kind'])}</td>"
            f"<td {cell}><span style=\"{_state_style(n['state'])}\">{e(n['state'])}</span></td>"
            f"<td {num}>{fmt_number(n['rate'], 1)}</td><td {num}>{fmt_number(n['p50'], 2)}</td>"
            f"<td {num}>{fmt_number(n['p99'], 2)}</td>"
            f"<td {num}>{n['dropped']}</td><td {num}>{errors}</td></tr>")
    nodes = "".join(rows)
    head = "".join(f"<th {cell}>{h}</th>" for h in ("node", "worker", "kind", "state", "steps/s", "p50 ms",
                                                     "p99 ms", "dropped", "errors"))
    parts = [f'<div class="chimera-summary"><div><b>Manager</b> {e(str(snap["host"]))}:{snap["port"]} '
             f'<span style="{_state_style(snap["state"])}">{e(snap["state"])}</span></div>']
    if workers:
        parts.append(f"<table style=\"border-collapse:collapse;margin:4px 0\"><tr><th {cell}>worker</th>"
                     f"<th {cell}>state</th><th {cell}>host</th><th {cell}>nodes</th></tr>{workers}</table>")
    else:
        parts.append("<div><em>no workers connected</em></div>")
    if nodes:
        parts.append(f'<table style="border-collapse:collapse;margin:4px 0"><tr>{head}</tr>{nodes}</table>')
    else:
        parts.append("<div><em>no graph committed</em></div>")
    parts.append("</div>")
    return "".join(parts)


# --------------------------------------------------------------------------------------------------
# the view that fits a node's output
# --------------------------------------------------------------------------------------------------
class ViewError(ValueError):
    """A node's live view cannot be made; the message says why and what to do."""


def view_for(manager: Manager, node: str, record: str | None = None, wait: float = 5.0) -> _Widget:
    """A live view of `node`'s output, chosen by what it sends: images → FrameView, numbers → LiveChart,
    anything else → LogView. It looks at one output (waiting up to `wait` s) to decide."""
    if node not in manager.nodes:
        raise ViewError(f"no node {node!r} in the committed graph (nodes: {', '.join(manager.nodes) or 'none'}); "
                        "%chimera commit GRAPH first")
    kind = "log"
    with manager.tap(node) as tap:
        header = tap.get_raw(wait)
    if header is not None:
        recs = wire.raw_records(header)
        rec = recs.get(record) if record else next(iter(recs.values()), None)
        if record and rec is None:
            raise ViewError(f"node {node!r} outputs no record {record!r} (records: {', '.join(recs)})")
        if rec is not None and ("jpeg" in rec or _image_array(rec.get("value"))):
            kind = "frames"
        elif rec is not None and _number(rec.get("value")) is not None:
            kind = "chart"
    elif manager.state not in ("running", "recording"):
        raise ViewError(f"node {node!r} sent nothing: start the pipeline (%chimera start) before viewing it")
    if kind == "frames":
        return FrameView(title=node).attach(manager, node, record)
    if kind == "chart":
        return LiveChart(title=node).attach(manager, node, record)
    view = LogView()
    view.attach_tap(manager, node)
    return view
