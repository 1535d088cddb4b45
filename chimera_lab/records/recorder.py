"""Recorder: the background thread of a node process that writes what the node saves.

``Node.save_*`` checks its input at once (a bad value raises in ``step``, so it is reported like any step
error and the pipeline goes on), copies it and queues it; this thread writes it. Every stream gets a
sidecar table ``<name>.timestamps.csv`` with, per sample, its creation time at the source and the time it
was written (both on the Manager's clock). Files are flushed at least every second, and their headers are
kept valid at every flush, so a killed process leaves everything up to its last flush readable.

Layout of one node's segment: ``<data_dir>/<session>/<node>/segment-<k>/`` with the streams' files and,
once the segment was closed cleanly, ``streams.json`` (a stream without it was cut short).
"""

from __future__ import annotations

import csv
import json
import os
import queue
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..datachunk import _check_image

FLUSH_EVERY = 0.5  # seconds: data is readable after a crash up to at most this old (well under 1 s)
QUEUE_BYTES = 256 * 1024 * 1024  # saves wait (back-pressure) beyond this much unwritten data
VIDEO_FILE_BYTES = 3 << 30  # a video goes on in <name>.002.avi, ... past this (AVI files stop at 4 GiB)
KINDS = ("video", "image", "audio", "tabular", "json", "text")
_NAME_RE = re.compile(r"[A-Za-z0-9_.\-]+")
MANIFEST = "streams.json"


class RecordingError(RuntimeError):
    """A stream could not be written (disk full, unwritable folder, inconsistent data)."""


# -------------------------------------------------------------------------------------------------
# streams: one file (or folder) of samples plus a timestamps sidecar
# -------------------------------------------------------------------------------------------------
class Stream:
    """One named stream of one kind inside a segment folder."""

    kind = ""
    extra_columns: tuple[str, ...] = ()

    def __init__(self, folder: Path, name: str) -> None:
        self.folder, self.name = folder, name
        self.samples = 0
        self.lost = 0
        self.error: str | None = None
        self.first: float | None = None
        self.last: float | None = None
        self.files: list[str] = [f"{name}.timestamps.csv"]
        self._data: Any = None  # the stream's own data file, if it has one plain file
        self._side = open(folder / f"{name}.timestamps.csv", "w", newline="")
        self._sidecsv = csv.writer(self._side)
        self._sidecsv.writerow(["sample", "created", "written", *self.extra_columns])

    def stamp(self, created: float, written: float, *extra: Any) -> None:
        """Add the sidecar row of the next sample."""
        self._sidecsv.writerow([self.samples, repr(created), repr(written), *extra])
        self.samples += 1
        if self.first is None:
            self.first = created
        self.last = created

    def write(self, value: Any, created: float, written: float, opts: dict[str, Any]) -> None:
        """Write one saved value."""
        raise NotImplementedError

    def _open_data(self, filename: str, **kwargs: Any) -> Any:
        """Open the stream's data file (flushed and closed with the sidecar)."""
        self.files.append(filename)
        self._data = open(self.folder / filename, "w", **kwargs)
        return self._data

    def flush(self) -> None:
        """Make everything written so far readable on disk."""
        self._side.flush()
        if self._data is not None:
            self._data.flush()

    def close(self) -> None:
        """Finish the files."""
        self._side.close()
        if self._data is not None:
            self._data.close()

    def entry(self) -> dict[str, Any]:
        """This stream's line of the segment manifest."""
        return {"name": self.name, "kind": self.kind, "files": list(self.files), "samples": self.samples,
                "lost": self.lost, "error": self.error, "first": self.first, "last": self.last}


class VideoStream(Stream):
    """Frames into MJPG AVI files (<name>.avi, then <name>.002.avi, ... every 3 GiB); every frame given is kept
    (no padding, no dropping)."""

    kind = "video"

    def __init__(self, folder: Path, name: str) -> None:
        super().__init__(folder, name)
        self.files.append(f"{name}.avi")
        self._avi: Any = None
        self._fps: float | None = None
        self._shape: tuple[int, ...] | None = None

    def write(self, value: Any, created: float, written: float, opts: dict[str, Any]) -> None:
        from .media import AviMjpegWriter, encode_jpeg

        if self._avi is None:
            self._shape = value.shape
            self._fps = opts.get("fps")
            self._avi = AviMjpegWriter(self.folder / self.files[-1], value.shape[1], value.shape[0], self._fps)
        elif value.shape != self._shape:
            raise RecordingError(
                f"video stream {self.name!r} has frames of shape {self._shape}, got {value.shape}; resize the "
                "frame or save it under another name")
        jpeg = encode_jpeg(value, opts.get("quality", 90))
        if self._avi.nbytes + len(jpeg) > VIDEO_FILE_BYTES:  # roll over to the next file
            self._avi.close(fps=self._measured_fps())
            self.files.append(f"{self.name}.{len(self.files):03d}.avi")
            self._avi = AviMjpegWriter(self.folder / self.files[-1], value.shape[1], value.shape[0], self._fps)
        self._avi.write_jpeg(jpeg)
        self.stamp(created, written)

    def _measured_fps(self) -> float | None:
        if self._fps:
            return self._fps
        if self.samples > 1 and self.first is not None and self.last is not None and self.last > self.first:
            return (self.samples - 1) / (self.last - self.first)
        return None

    def flush(self) -> None:
        super().flush()
        if self._avi is not None:
            self._avi.flush(fps=self._measured_fps())

    def close(self) -> None:
        super().close()
        if self._avi is not None:
            self._avi.close(fps=self._measured_fps())

    def entry(self) -> dict[str, Any]:
        e = super().entry()
        e["fps"] = self._measured_fps()
        return e


class ImageStream(Stream):
    """One lossless PNG per saved image, in a folder named after the stream."""

    kind = "image"
    extra_columns = ("file",)

    def __init__(self, folder: Path, name: str) -> None:
        super().__init__(folder, name)
        (folder / name).mkdir(exist_ok=True)

    def write(self, value: Any, created: float, written: float, opts: dict[str, Any]) -> None:
        import cv2

        rel = f"{self.name}/{self.samples:06d}.png"
        tmp = self.folder / f"{rel}.tmp"
        ok, buf = cv2.imencode(".png", value)
        if not ok:
            raise RecordingError(f"image stream {self.name!r}: OpenCV could not encode the image")
        try:
            tmp.write_bytes(buf.tobytes())
        except OSError:  # a full disk: what part of it was written would only take room from the other streams
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, self.folder / rel)  # whole images only, even after a crash
        self.files.append(rel)
        self.stamp(created, written, rel)


class AudioStream(Stream):
    """Samples into one WAV file (int16, int32 or float32), header valid at every flush."""

    kind = "audio"
    extra_columns = ("first_frame", "frames")

    def __init__(self, folder: Path, name: str) -> None:
        super().__init__(folder, name)
        self.files.append(f"{name}.wav")
        self._wav: Any = None
        self._format: tuple[int, int, str] | None = None

    def write(self, value: Any, created: float, written: float, opts: dict[str, Any]) -> None:
        from .media import WavWriter

        fmt = (opts["rate"], opts["channels"], value.dtype.str)
        if self._wav is None:
            self._format = fmt
            self._wav = WavWriter(self.folder / f"{self.name}.wav", opts["rate"], opts["channels"], value.dtype)
        elif fmt != self._format:
            raise RecordingError(
                f"audio stream {self.name!r} is (rate, channels, dtype) {self._format}, got {fmt}; keep them "
                "the same or save under another name")
        first = self._wav.frames
        self._wav.write(value)
        self.stamp(created, written, first, self._wav.frames - first)

    def flush(self) -> None:
        super().flush()
        if self._wav is not None:
            self._wav.flush()

    def close(self) -> None:
        super().close()
        if self._wav is not None:
            self._wav.close()

    def entry(self) -> dict[str, Any]:
        e = super().entry()
        e["frames"] = 0 if self._wav is None else self._wav.frames
        if self._format is not None:
            e["rate"], e["channels"], e["dtype"] = self._format
        return e


class TabularStream(Stream):
    """Rows into one CSV; the first row fixes the columns."""

    kind = "tabular"

    def __init__(self, folder: Path, name: str) -> None:
        super().__init__(folder, name)
        self._csv = csv.writer(self._open_data(f"{name}.csv", newline=""))
        self.columns: list[str] | None = None

    def write(self, value: Any, created: float, written: float, opts: dict[str, Any]) -> None:
        rows = value if isinstance(value, list) else [value]
        if self.columns is None:
            self.columns = list(rows[0])
            self._csv.writerow(self.columns)
        for row in rows:
            extra = [k for k in row if k not in self.columns]
            if extra:
                raise RecordingError(
                    f"tabular stream {self.name!r} has columns {self.columns}; got new column(s) {extra}. Save "
                    "every column from the first row on (use None where there is no value), or use another name")
            self._csv.writerow([_cell(row.get(c)) for c in self.columns])
            self.stamp(created, written)

    def entry(self) -> dict[str, Any]:
        e = super().entry()
        e["columns"] = self.columns
        return e


class LinesStream(Stream):
    """JSON objects (one per line) or text entries, appended to one file."""

    def __init__(self, folder: Path, name: str, kind: str) -> None:
        super().__init__(folder, name)
        self.kind = kind
        self._open_data(f"{name}.{'jsonl' if kind == 'json' else 'txt'}", encoding="utf-8")

    def write(self, value: Any, created: float, written: float, opts: dict[str, Any]) -> None:
        if self.kind == "json":
            line = json.dumps(value, default=_json_default)
        else:
            line = value if value.endswith("\n") else value + "\n"
        self._data.write(line if self.kind == "text" else line + "\n")
        self.stamp(created, written)


class _Unwritable(Stream):
    """A stream whose files could not be created (a full disk): it writes nothing and counts what it is given
    as lost."""

    def __init__(self, folder: Path, name: str, kind: str, error: str) -> None:  # opens no file
        self.folder, self.name, self.kind, self.error = folder, name, kind, error
        self.samples = self.lost = 0
        self.first = self.last = None
        self.files = []
        self._data = None

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, np.generic):
        return v.item()
    return v


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable; convert it to lists, dicts, str and numbers")


def _new_stream(kind: str, folder: Path, name: str) -> Stream:
    if kind == "video":
        return VideoStream(folder, name)
    if kind == "image":
        return ImageStream(folder, name)
    if kind == "audio":
        return AudioStream(folder, name)
    if kind == "tabular":
        return TabularStream(folder, name)
    return LinesStream(folder, name, kind)


# -------------------------------------------------------------------------------------------------
# checking and copying what a node saves (in the node's own thread)
# -------------------------------------------------------------------------------------------------
def prepare(kind: str, name: str, value: Any, opts: dict[str, Any], copy: bool = True) -> tuple[Any, int]:
    """Check `value` for a `kind` stream and return (a private copy, its size in bytes); raise if wrong.

    With copy=False (a preview, where nothing is written) arrays are only checked, not copied.
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(f"save_{kind}: stream name must be letters, digits, '_', '-' or '.', got {name!r}")
    if kind in ("video", "image"):
        try:
            _check_image(name, value)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"save_{kind}({name!r}): {str(exc).split(': ', 1)[-1]}") from None
        if value.ndim == 3 and value.shape[2] == 1:
            value = value[:, :, 0]
        if copy:
            value = np.array(value, copy=True, order="C")
        return value, value.nbytes
    if kind == "audio":
        rate, channels = opts["rate"], opts["channels"]
        if not isinstance(rate, int) or isinstance(rate, bool) or rate <= 0:
            raise ValueError(f"save_audio({name!r}): rate must be a positive int (samples per second), got {rate!r}")
        if not isinstance(channels, int) or isinstance(channels, bool) or channels <= 0:
            raise ValueError(f"save_audio({name!r}): channels must be a positive int, got {channels!r}")
        if not isinstance(value, np.ndarray) or value.dtype not in (np.int16, np.int32, np.float32, np.float64):
            raise TypeError(f"save_audio({name!r}): samples must be a numpy array of int16, int32 or float32, got "
                            f"{getattr(value, 'dtype', type(value).__name__)}")
        arr = value.astype(np.float32) if value.dtype == np.float64 else value
        if arr.ndim == 1 and channels == 1:
            arr = arr[:, None]
        if arr.ndim != 2 or arr.shape[1] != channels:
            raise ValueError(f"save_audio({name!r}): samples must be shaped (n, {channels}) for {channels} "
                             f"channel(s), got {value.shape}")
        if copy:
            arr = np.array(arr, copy=True, order="C")
        return arr, arr.nbytes
    if kind == "tabular":
        rows = _rows(name, value)
        return rows, 64 * len(rows) * max(1, len(rows[0]) if rows else 1)
    if kind == "json":
        text = json.dumps(value, default=_json_default)  # checked now: a bad object raises in step
        return json.loads(text), len(text)
    if kind == "text":
        if not isinstance(value, str):
            raise TypeError(f"save_text({name!r}) needs a str, got {type(value).__name__}")
        return value, len(value)
    raise ValueError(f"unknown stream kind {kind!r}; use one of {', '.join(KINDS)}")


def _rows(name: str, value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        rows = [dict(value)]
    elif hasattr(value, "to_dict") and hasattr(value, "columns"):  # a pandas DataFrame
        rows = value.to_dict("records")
    else:
        raise TypeError(f"save_tabular({name!r}) needs a dict (one row) or a pandas DataFrame, "
                        f"got {type(value).__name__}")
    for row in rows:
        for k, v in row.items():
            if not isinstance(k, str):
                raise TypeError(f"save_tabular({name!r}): column names must be str, got {k!r}")
            if not (v is None or isinstance(v, (str, int, float, bool, np.generic))):
                raise TypeError(f"save_tabular({name!r}): column {k!r} holds a {type(v).__name__}; a table cell "
                                "must be a number, str, bool or None (use save_json for nested data)")
    if not rows:
        raise ValueError(f"save_tabular({name!r}): the table has no rows")
    return rows


# -------------------------------------------------------------------------------------------------
# the recorder
# -------------------------------------------------------------------------------------------------
class Recorder:
    """Queues checked samples from the node and writes them on a background thread, segment by segment."""

    def __init__(self, node: str, clock: Callable[[], float]) -> None:
        self.node = node
        self.clock = clock  # time on the Manager's clock
        self.recording = False
        self.folder: Path | None = None
        self.streams: dict[str, Stream] = {}  # open in the current segment (the writer thread's)
        self.closed_streams: dict[str, Stream] = {}  # of the last closed segment, for stats()
        self.kinds: dict[str, str] = {}
        self.saved: dict[str, int] = {}
        self.errors: queue.SimpleQueue[str] = queue.SimpleQueue()  # the node's main thread reports these
        self._q: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._bytes = 0
        self._room = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        self._manifest: list[dict[str, Any]] = []

    # -- in the node's thread ----------------------------------------------------------------------
    def save(self, kind: str, name: str, value: Any, created: float, opts: dict[str, Any]) -> None:
        """Check and queue one sample (nothing is written while not recording: that is a preview)."""
        known = self.kinds.get(name)
        if known is not None and known != kind:
            raise ValueError(f"stream {name!r} of node {self.node!r} is a {known} stream; save_{kind} needs "
                             "another name")
        copy, size = prepare(kind, name, value, opts, copy=self.recording)  # checked even in a preview
        if not self.recording:
            return
        self.kinds[name] = kind
        self.saved[name] = self.saved.get(name, 0) + (len(copy) if kind == "tabular" else 1)
        with self._room:
            while self._bytes > QUEUE_BYTES and self.recording:
                self._room.wait(0.1)  # back-pressure: the disk is slower than the node
            self._bytes += size
        self._q.put(("sample", kind, name, copy, created, opts, size))

    def start_segment(self, folder: Path) -> None:
        """Open a new segment folder (raises if it cannot be written) and start recording into it."""
        if self.recording:
            self.end_segment()
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
        self.folder = folder
        self.saved = {}
        self._closed.clear()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name=f"chimera-recorder-{self.node}", daemon=True)
            self._thread.start()
        self._q.put(("open", folder))
        self.recording = True

    def end_segment(self, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Stop recording, write what is queued, close the files; return the segment's stream manifest."""
        if not self.recording:
            return []
        self.recording = False
        self._q.put(("close",))
        if not self._closed.wait(timeout):
            self.errors.put(f"recording of node {self.node!r} did not finish writing within {timeout:.0f} s")
        return self._manifest

    def stats(self) -> dict[str, Any]:
        """Per-stream saved/written/lost counts and how much waits to be written."""
        streams = {}
        for n, c in self.saved.items():
            s = self.streams.get(n) or self.closed_streams.get(n)
            streams[n] = {"kind": self.kinds.get(n), "saved": c, "written": s.samples if s else 0,
                          "lost": s.lost if s else 0}
        return {"recording": self.recording, "queued": self._q.qsize(), "queued_bytes": self._bytes,
                "streams": streams}

    # -- the writer thread -------------------------------------------------------------------------
    def _run(self) -> None:
        next_flush = time.monotonic() + FLUSH_EVERY
        while True:
            try:
                item = self._q.get(timeout=max(0.0, next_flush - time.monotonic()))
            except queue.Empty:
                item = None
            if item is not None:
                op = item[0]
                if op == "sample":
                    self._write(*item[1:])
                elif op == "open":
                    self.streams, self.closed_streams, self._manifest = {}, {}, []
                elif op == "close":
                    self._close_all()
            if time.monotonic() >= next_flush:
                next_flush = time.monotonic() + FLUSH_EVERY
                for s in self.streams.values():
                    self._guard(s, s.flush)

    def _write(self, kind: str, name: str, value: Any, created: float, opts: dict[str, Any], size: int) -> None:
        with self._room:
            self._bytes -= size
            self._room.notify_all()
        s = self.streams.get(name)
        if s is None:
            assert self.folder is not None
            try:
                s = self.streams[name] = _new_stream(kind, self.folder, name)
            except OSError as exc:  # reported once; this and every later sample of the stream is counted lost
                msg = f"disk: recording stream {name!r} of node {self.node!r} cannot be created: {exc}"
                s = self.streams[name] = _Unwritable(self.folder, name, kind, msg)
                self.errors.put(msg + " (its samples are counted as lost)")
        if s.error is not None and s.error.startswith("disk"):
            s.lost += len(value) if kind == "tabular" else 1
            return
        self._guard(s, lambda: s.write(value, created, self.clock(), opts),
                    lost=len(value) if kind == "tabular" else 1)

    def _guard(self, s: Stream, fn: Callable[[], None], lost: int = 0) -> None:
        try:
            fn()
        except Exception as exc:
            s.lost += lost
            if isinstance(exc, OSError):
                msg = f"disk: cannot write stream {s.name!r} of node {self.node!r}: {exc}"
            else:
                msg = f"stream {s.name!r} of node {self.node!r}: {exc}"
            if s.error is None:  # the first error of a stream is reported; the rest are counted as lost
                self.errors.put(msg + " (further samples of this stream are counted as lost)"
                                if msg.startswith("disk") else msg)
            s.error = s.error or msg

    def _close_all(self) -> None:
        manifest = []
        for s in self.streams.values():
            self._guard(s, s.close)
            manifest.append(s.entry())
        self._manifest = manifest
        if self.folder is not None:
            try:
                tmp = self.folder / (MANIFEST + ".tmp")
                tmp.write_text(json.dumps({"node": self.node, "streams": manifest}, indent=1))
                os.replace(tmp, self.folder / MANIFEST)
            except OSError as exc:  # the Manager still gets the manifest with the stop reply
                self.errors.put(f"recording of node {self.node!r}: cannot write {MANIFEST}: {exc}")
        self.closed_streams, self.streams = self.streams, {}  # stats() still shows the last segment
        self._closed.set()
