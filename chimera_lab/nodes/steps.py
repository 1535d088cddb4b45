"""Ready-made image steps: each transforms the "frame" record and passes the other records on."""

from __future__ import annotations

import cv2
import numpy as np

from ..datachunk import DataChunk
from ..node import Node


def input_frame(node: Node, data: dict[str, DataChunk] | None) -> tuple[DataChunk, np.ndarray]:
    """The first upstream chunk that has a "frame" record, and that frame; KeyError if none has one."""
    for chunk in (data or {}).values():
        if isinstance(chunk, DataChunk) and chunk.contains("frame"):
            return chunk, chunk.get("frame")["value"]
    seen = ", ".join(
        f"{up!r} (records: {', '.join(map(repr, chunk)) or 'none'})"
        if isinstance(chunk, DataChunk)
        else repr(up)
        for up, chunk in (data or {}).items()
    )
    raise KeyError(
        f"{type(node).__name__} {node.name!r} needs an upstream DataChunk with an image record 'frame', "
        f"got {seen or 'no inputs'}; connect it after a frame source (e.g. TestPatternSource) "
        "or add the image with chunk.add('frame', img, content_type='image')"
    )


def with_frame(source: DataChunk, frame: np.ndarray) -> DataChunk:
    """A new chunk with `source`'s records and timestamps, its "frame" replaced by `frame`."""
    out = DataChunk()
    out.created = source.created
    out.hops = list(source.hops)
    for name, rec in source.records.items():
        if name == "frame":
            out.add(name, frame, content_type="image", quality=rec.get("quality"))
        else:
            out.add(name, rec["value"], content_type=rec["content-type"], quality=rec.get("quality"))
    return out


def _to_gray(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 3 and frame.shape[2] == 3:
        return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    if frame.ndim == 3:  # HxWx1
        return frame[:, :, 0]
    return frame


class Grayscale(Node):
    """Convert the BGR "frame" to a single-channel HxW grey image."""

    def __init__(self, name: str = "gray", on_error: str = "continue") -> None:
        super().__init__(name=name, on_error=on_error)

    def step(self, data: dict[str, DataChunk] | None = None) -> DataChunk:
        """The input chunk with a grey "frame"."""
        chunk, frame = input_frame(self, data)
        return with_frame(chunk, _to_gray(frame))


class EdgeDetect(Node):
    """Canny edges of the "frame" as a binary (0/255) HxW image."""

    def __init__(
        self, name: str = "edges", low: float = 100, high: float = 200, on_error: str = "continue"
    ) -> None:
        super().__init__(name=name, on_error=on_error)
        for what, value in (("low", low), ("high", high)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(
                    f"EdgeDetect {name!r}: {what} must be a number >= 0 (Canny threshold), got {value!r}"
                )
        if low > high:
            raise ValueError(f"EdgeDetect {name!r}: low ({low}) must not exceed high ({high}); swap them")
        self.low = low
        self.high = high

    def step(self, data: dict[str, DataChunk] | None = None) -> DataChunk:
        """The input chunk with the edge image as "frame"."""
        chunk, frame = input_frame(self, data)
        return with_frame(chunk, cv2.Canny(_to_gray(frame), self.low, self.high))


class Resize(Node):
    """Resize the "frame" to `width` x `height` pixels."""

    def __init__(self, name: str = "resize", *, width: int, height: int, on_error: str = "continue") -> None:
        super().__init__(name=name, on_error=on_error)
        for what, value in (("width", width), ("height", height)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Resize {name!r}: {what} must be a positive int (pixels), got {value!r}")
        self.width = width
        self.height = height

    def step(self, data: dict[str, DataChunk] | None = None) -> DataChunk:
        """The input chunk with the resized "frame"."""
        chunk, frame = input_frame(self, data)
        h, w = frame.shape[:2]
        shrink = self.width * self.height < w * h
        out = cv2.resize(
            frame, (self.width, self.height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        )
        return with_frame(chunk, out)


class GaussianBlur(Node):
    """Gaussian-blur the "frame" with a `ksize` x `ksize` kernel (odd, >= 1)."""

    def __init__(self, name: str = "blur", ksize: int = 5, on_error: str = "continue") -> None:
        super().__init__(name=name, on_error=on_error)
        if isinstance(ksize, bool) or not isinstance(ksize, int) or ksize < 1 or ksize % 2 == 0:
            raise ValueError(
                f"GaussianBlur {name!r}: ksize must be an odd int >= 1 (e.g. 3, 5, 7), got {ksize!r}"
            )
        self.ksize = ksize

    def step(self, data: dict[str, DataChunk] | None = None) -> DataChunk:
        """The input chunk with the blurred "frame"."""
        chunk, frame = input_frame(self, data)
        return with_frame(chunk, cv2.GaussianBlur(frame, (self.ksize, self.ksize), 0))
