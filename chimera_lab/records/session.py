"""Session: a collected recording, read back for analysis."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def _imread(cv2: Any, path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise OSError(f"cannot read image {path}")
    return np.asarray(img)


class Session:
    """A collected session folder: ``Session(path).streams()``, ``.table(node, name)``, ``.frames(node, name)``.

    Streams recorded in several segments read as one, with a ``segment`` column in tables.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        manifest = self.path / "session.json"
        if not manifest.exists():
            raise FileNotFoundError(f"{self.path} is not a collected session (no session.json); pass the folder "
                                    "manager.collect() returned")
        self.info: dict[str, Any] = json.loads(manifest.read_text())

    def __repr__(self) -> str:
        return f"<Session {self.info['id']!r}: {len(self.streams())} streams, {len(self.info['segments'])} segments>"

    # -- what is in it -----------------------------------------------------------------------------
    def streams(self) -> list[dict[str, Any]]:
        """One entry per (node, stream, segment): kind, files, sample count, whether it was cut short."""
        return list(self.info["streams"])

    def _parts(self, node: str, name: str, kind: str | None = None) -> list[dict[str, Any]]:
        parts = [s for s in self.info["streams"] if s["node"] == node and s["name"] == name]
        if not parts:
            known = sorted({f"{s['node']}/{s['name']}" for s in self.info["streams"]})
            raise KeyError(f"no stream {name!r} of node {node!r} in this session (streams: {', '.join(known)})")
        if kind is not None and parts[0]["kind"] != kind:
            raise TypeError(f"stream {node}/{name} is a {parts[0]['kind']} stream, not {kind}")
        return sorted(parts, key=lambda s: s["segment"])

    def _file(self, part: dict[str, Any], suffix: str) -> Path:
        for f in part["files"]:
            if f["path"].endswith(suffix):
                return self.path / f["path"]
        raise FileNotFoundError(f"stream {part['node']}/{part['name']} segment {part['segment']} has no "
                                f"*{suffix} file (was it collected?)")

    # -- reading -----------------------------------------------------------------------------------
    def timestamps(self, node: str, name: str) -> Any:
        """The per-sample timestamps (sample, created, written, ...) of a stream, as a pandas DataFrame."""
        import pandas as pd

        frames = []
        for part in self._parts(node, name):
            df = pd.read_csv(self._file(part, ".timestamps.csv"))
            df.insert(0, "segment", part["segment"])
            frames.append(df)
        return pd.concat(frames, ignore_index=True)

    def table(self, node: str, name: str) -> Any:
        """A tabular stream's rows with their timestamps; for other kinds, the timestamps table."""
        import pandas as pd

        parts = self._parts(node, name)
        if parts[0]["kind"] != "tabular":
            return self.timestamps(node, name)
        frames = []
        for part in parts:
            rows = pd.read_csv(self._file(part, f"{name}.csv"))
            stamps = pd.read_csv(self._file(part, ".timestamps.csv"))
            n = min(len(rows), len(stamps))  # a crash may leave one more row on either side
            df = rows.iloc[:n].reset_index(drop=True)
            df.insert(0, "written", stamps["written"].iloc[:n].to_numpy())
            df.insert(0, "created", stamps["created"].iloc[:n].to_numpy())
            df.insert(0, "segment", part["segment"])
            frames.append(df)
        return pd.concat(frames, ignore_index=True)

    def frames(self, node: str, name: str) -> Iterator[tuple[float, np.ndarray]]:
        """(creation time, frame) of every frame of a video or image stream, in order."""
        import cv2
        import pandas as pd

        from .media import read_avi_frames

        for part in self._parts(node, name):
            stamps = pd.read_csv(self._file(part, ".timestamps.csv"))
            if part["kind"] == "video":  # one file, or several after a roll-over, in order
                avis = [self.path / f["path"] for f in part["files"] if f["path"].endswith(".avi")]
                images: Iterator[np.ndarray] = (img for avi in avis for img in read_avi_frames(avi))
            elif part["kind"] == "image":
                seg = self._file(part, ".timestamps.csv").parent
                images = (_imread(cv2, seg / f) for f in stamps["file"])
            else:
                raise TypeError(f"stream {node}/{name} is a {part['kind']} stream; frames() reads video and image")
            for t, img in zip(stamps["created"], images, strict=False):
                yield float(t), img

    def audio(self, node: str, name: str) -> tuple[np.ndarray, int]:
        """All samples of an audio stream (n, channels) and its rate."""
        from .media import read_wav

        chunks, rate = [], 0
        for part in self._parts(node, name, "audio"):
            samples, rate = read_wav(self._file(part, ".wav"))
            chunks.append(samples)
        return np.concatenate(chunks), rate

    def json(self, node: str, name: str) -> list[Any]:
        """Every object of a JSON stream."""
        out = []
        for part in self._parts(node, name, "json"):
            with open(self._file(part, ".jsonl"), encoding="utf-8") as f:
                out += [json.loads(line) for line in f if line.endswith("\n")]
        return out

    def text(self, node: str, name: str) -> str:
        """The whole text of a text stream."""
        return "".join(self._file(p, ".txt").read_text(encoding="utf-8") for p in self._parts(node, name, "text"))

    def summary(self) -> Any:
        """One row per stream: node, kind, segments, samples, lost, truncated, recorded duration and rate.

        Duration adds up each segment's first-to-last sample time (pauses between segments do not count);
        the rate is samples per second within segments.
        """
        import pandas as pd

        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for s in self.info["streams"]:
            r = rows.setdefault((s["node"], s["name"]), {
                "worker": s["worker"], "node": s["node"], "stream": s["name"], "kind": s["kind"], "segments": 0,
                "samples": 0, "lost": 0, "truncated": False, "duration_s": 0.0, "_intervals": 0})
            r["segments"] += 1
            r["samples"] += s["samples"]
            r["lost"] += s.get("lost") or 0
            r["truncated"] |= bool(s.get("truncated"))
            if s.get("first") is not None and s.get("last") is not None and s["samples"] > 1:
                r["duration_s"] += s["last"] - s["first"]
                r["_intervals"] += s["samples"] - 1
        df = pd.DataFrame(list(rows.values()))
        if not df.empty:
            df["rate_hz"] = df["_intervals"] / df["duration_s"].where(df["duration_s"] > 0)
            df = df.drop(columns=["_intervals"])
        return df
