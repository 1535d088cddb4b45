"""Ready-made source nodes that produce image frames: a synthetic test pattern, a webcam, a video file."""

from __future__ import annotations

import os
import time
from typing import Any

import cv2
import numpy as np

from ..datachunk import DataChunk
from ..node import Node
from ..resources import default_frame_size

# How long a camera source that got no frame waits in step before returning None: the runner re-steps
# an unpaced source at once, so this keeps it from spinning a core. A finished source raises StopIteration.
IDLE_SLEEP_S = 0.01

# 75% colour bars, left to right, in BGR: white, yellow, cyan, green, magenta, red, blue
_BARS_BGR = np.array(
    [
        [191, 191, 191],
        [0, 191, 191],
        [191, 191, 0],
        [0, 191, 0],
        [191, 0, 191],
        [0, 0, 191],
        [191, 0, 0],
    ],
    dtype=np.uint8,
)


def _frame_chunk(frame: np.ndarray, index: int, quality: int | None = None) -> DataChunk:
    chunk = DataChunk()
    chunk.add("frame", frame, content_type="image", quality=quality)
    chunk.add("index", index, content_type="other")
    return chunk


def _as_bgr(frame: np.ndarray) -> np.ndarray:
    if frame.dtype != np.uint8:
        frame = cv2.convertScaleAbs(frame)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    return frame


def _frame_size(owner: str, width: int | None, height: int | None) -> tuple[int, int]:
    """(width, height), the missing ones from the session's default frame size (keeping its aspect ratio)."""
    dw, dh = default_frame_size()
    if width is None and height is None:
        return dw, dh
    if width is None:
        h = _check_size(owner, "height", height)
        return max(1, round(h * dw / dh)), h
    w = _check_size(owner, "width", width)
    return w, _check_size(owner, "height", height) if height is not None else max(1, round(w * dh / dw))


def _check_size(owner: str, what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {what} must be a positive int (pixels), got {value!r}")
    return value


class TestPatternSource(Node):
    """Moving, deterministic BGR test pattern (colour bars, a bouncing box, the frame number).

    Without ``width``/``height`` the frame size is the session's default: 640×480, or what ``%chimera up`` chose
    to fit a small machine (``chimera_lab.resources.default_frame_size()``). Given one, the other follows the
    default's aspect ratio.
    """

    __test__ = False  # the name starts with "Test"; keep pytest from collecting it

    def __init__(
        self,
        name: str = "pattern",
        width: int | None = None,
        height: int | None = None,
        rate_hz: float | None = 30.0,
        quality: int = 80,
        frames: int | None = None,
        on_error: str = "continue",
    ) -> None:
        super().__init__(name=name, rate_hz=rate_hz, on_error=on_error)
        owner = f"TestPatternSource {name!r}"
        width, height = _frame_size(owner, width, height)
        self.width, self.height = width, height
        if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
            raise ValueError(f"{owner}: quality must be an int in 1..100 (JPEG quality), got {quality!r}")
        self.quality = quality
        if frames is not None and (isinstance(frames, bool) or not isinstance(frames, int) or frames < 0):
            raise ValueError(f"{owner}: frames must be None (run forever) or an int >= 0, got {frames!r}")
        self.frames = frames
        self._index = 0
        self._background: np.ndarray | None = None

    def prep(self) -> None:
        """Precompute the static background (colour bars over a grey ramp)."""
        self._background = make_pattern_background(self.width, self.height)
        self._index = 0

    def step(self, data: dict[str, DataChunk] | None = None) -> DataChunk | None:
        """The next frame (records "frame" and "index"); StopIteration once `frames` frames were made."""
        if self.frames is not None and self._index >= self.frames:
            raise StopIteration
        if self._background is None:
            raise RuntimeError(f"TestPatternSource {self.name!r}: step() called before prep()")
        index = self._index
        self._index += 1
        frame = self._background.copy()
        draw_pattern_overlay(frame, index)
        return _frame_chunk(frame, index, self.quality)

    def teardown(self) -> None:
        """Drop the background."""
        self._background = None


def make_pattern_background(width: int, height: int) -> np.ndarray:
    """The static part of the test pattern: 75% colour bars on top, a grey ramp in the bottom quarter."""
    frame = np.empty((height, width, 3), dtype=np.uint8)
    bars_h = height - height // 4
    columns = np.arange(width) * len(_BARS_BGR) // width
    frame[:bars_h] = _BARS_BGR[columns][np.newaxis, :, :]
    ramp = np.linspace(0, 255, width).astype(np.uint8)
    frame[bars_h:] = ramp[np.newaxis, :, np.newaxis]
    return frame


def _bounce(position: int, travel: int) -> int:
    if travel <= 0:
        return 0
    p = position % (2 * travel)
    return p if p <= travel else 2 * travel - p


def draw_pattern_overlay(frame: np.ndarray, index: int) -> None:
    """Draw the moving parts of the test pattern for frame `index` onto `frame`, in place."""
    height, width = frame.shape[:2]
    side = max(1, min(width, height) // 6)
    x = _bounce(index * max(1, width // 80), width - side)
    y = _bounce(index * max(1, height // 90), height - side)
    cv2.rectangle(frame, (x, y), (x + side - 1, y + side - 1), (0, 0, 0), thickness=-1)
    cv2.rectangle(frame, (x, y), (x + side - 1, y + side - 1), (255, 255, 255), thickness=max(1, side // 16))
    scale = max(0.3, height / 480)
    thickness = max(1, round(2 * scale))
    text = f"#{index}"
    (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    margin = max(2, round(6 * scale))
    origin = (margin, height - margin - baseline)
    cv2.rectangle(
        frame,
        (0, origin[1] - th - margin),
        (tw + 2 * margin, height - 1),
        (0, 0, 0),
        thickness=-1,
    )
    cv2.putText(frame, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)


class WebcamSource(Node):
    """Frames from a camera (an OpenCV device index, or a device path / stream URL) on the worker."""

    def __init__(
        self,
        name: str = "webcam",
        device: int | str = 0,
        width: int | None = None,
        height: int | None = None,
        rate_hz: float | None = None,
        on_error: str = "continue",
    ) -> None:
        super().__init__(name=name, rate_hz=rate_hz, on_error=on_error)
        owner = f"WebcamSource {name!r}"
        if isinstance(device, bool) or not isinstance(device, (int, str)):
            raise TypeError(
                f"{owner}: device must be a camera index (int) or a path/URL (str), got {device!r}"
            )
        self.device = device
        self.width = None if width is None else _check_size(owner, "width", width)
        self.height = None if height is None else _check_size(owner, "height", height)
        self._cap: Any = None
        self._index = 0
        self._failing = False

    def prep(self) -> None:
        """Open the camera; raise RuntimeError if it cannot be opened."""
        cap = cv2.VideoCapture(self.device)
        if not cap.isOpened():
            cap.release()
            raise RuntimeError(
                f"WebcamSource {self.name!r}: cannot open camera device {self.device!r} on this worker "
                "(no such camera, busy, or no permission). Check the device index/path on the machine "
                "that runs the node, or use TestPatternSource for a synthetic video stream instead."
            )
        if self.width is not None:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        if self.height is not None:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        self._cap = cap
        self._index = 0
        self._failing = False

    def step(self, data: dict[str, DataChunk] | None = None) -> DataChunk | None:
        """The next camera frame (records "frame" and "index"), or None if the camera gave none."""
        if self._cap is None:
            raise RuntimeError(f"WebcamSource {self.name!r}: step() called before prep() opened the camera")
        ok, frame = self._cap.read()
        if not ok or frame is None:
            if not self._failing:
                self.logger.warning("camera %r returned no frame; retrying on the next step", self.device)
            self._failing = True
            time.sleep(IDLE_SLEEP_S)
            return None
        self._failing = False
        frame = _as_bgr(frame)
        height, width = frame.shape[:2]
        wanted = (self.width or width, self.height or height)
        if wanted != (width, height):  # the camera ignored the requested size: scale to it
            frame = cv2.resize(frame, wanted, interpolation=cv2.INTER_AREA)
        index = self._index
        self._index += 1
        return _frame_chunk(frame, index)

    def teardown(self) -> None:
        """Release the camera."""
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class VideoFileSource(Node):
    """Frames of a video file, opened on the worker; pass `rate_hz` to pace playback (default: flat out)."""

    def __init__(
        self,
        name: str = "video",
        *,
        path: str | os.PathLike[str],
        loop: bool = False,
        rate_hz: float | None = None,
        on_error: str = "continue",
    ) -> None:
        super().__init__(name=name, rate_hz=rate_hz, on_error=on_error)
        if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
            raise TypeError(
                f"VideoFileSource {name!r}: path must be a video file path (str or Path), got {path!r}"
            )
        self.path = os.fspath(path)
        self.loop = bool(loop)
        self._cap: Any = None
        self._pending: np.ndarray | None = None
        self._index = 0
        self._done = False

    def prep(self) -> None:
        """Open the file and read its first frame; FileNotFoundError if missing, ValueError if undecodable."""
        if not os.path.isfile(self.path):
            raise FileNotFoundError(
                f"VideoFileSource {self.name!r}: no video file at {self.path!r} "
                f"(resolved on this worker as {os.path.abspath(self.path)!r}); "
                "give a path that exists on the machine that runs the node"
            )
        cap = cv2.VideoCapture(self.path)
        ok, frame = cap.read() if cap.isOpened() else (False, None)
        if not ok or frame is None:
            cap.release()
            raise ValueError(
                f"VideoFileSource {self.name!r}: OpenCV cannot decode a frame from {self.path!r}; "
                "check that it is a video file in a format this OpenCV build can read "
                "(e.g. MJPG .avi, H.264 .mp4)"
            )
        if self.rate_hz is None:
            fps = cap.get(cv2.CAP_PROP_FPS)
            self.logger.info(
                "playing %r as fast as possible; pass rate_hz=%.3g to play it at its own speed",
                self.path,
                fps,
            )
        self._cap = cap
        self._pending = frame
        self._index = 0
        self._done = False

    def step(self, data: dict[str, DataChunk] | None = None) -> DataChunk | None:
        """The next frame (records "frame" and "index"); at the end, restart if `loop` else StopIteration."""
        if self._done:
            raise StopIteration
        if self._cap is None:
            raise RuntimeError(f"VideoFileSource {self.name!r}: step() called before prep() opened the file")
        frame = self._pending
        self._pending = None
        if frame is None:
            frame = self._read()
        if frame is None:
            self._done = True
            self.logger.info("end of %r after %d frames", self.path, self._index)
            raise StopIteration
        index = self._index
        self._index += 1
        return _frame_chunk(_as_bgr(frame), index)

    def _read(self) -> np.ndarray | None:
        ok, frame = self._cap.read()
        if ok and frame is not None:
            return frame
        if not self.loop:
            return None
        self._cap.release()  # reopening is more reliable than seeking back to frame 0 across codecs
        self._cap = cv2.VideoCapture(self.path)
        ok, frame = self._cap.read()
        return frame if ok else None

    def teardown(self) -> None:
        """Release the file."""
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._pending = None


def video_fps(path: str | os.PathLike[str]) -> float:
    """The frame rate a video file declares (for `VideoFileSource(..., rate_hz=video_fps(path))`)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"video_fps: no video file at {os.fspath(path)!r}")
    cap = cv2.VideoCapture(os.fspath(path))
    try:
        if not cap.isOpened():
            raise ValueError(f"video_fps: OpenCV cannot open {os.fspath(path)!r}; check the path and format")
        fps = float(cap.get(cv2.CAP_PROP_FPS))
    finally:
        cap.release()
    if not fps > 0:
        raise ValueError(f"video_fps: {os.fspath(path)!r} declares no frame rate; pass rate_hz yourself")
    return fps
