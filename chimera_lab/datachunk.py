"""DataChunk: the unit that travels between nodes, a set of named, typed records plus timestamps."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np

CONTENT_TYPES = ("image", "ndarray", "other")
DEFAULT_JPEG_QUALITY = 80


class DataChunk:
    """Named records (`add`/`get`) with content types, plus creation and per-hop timestamps.

    Content types decide how a record travels:
    ``"image"`` (uint8 HxW or HxWx3, sent as JPEG 4:2:0, ``quality`` 1-100, default 80),
    ``"ndarray"`` (raw buffers, zero-copy from 64 KiB), ``"other"`` (msgpack for plain data,
    pickle protocol 5 with out-of-band buffers for anything else).
    """

    __slots__ = ("_records", "created", "hops")

    def __init__(self) -> None:
        self._records: dict[str, dict[str, Any]] = {}
        #: when the data was first made at a source (Manager clock, seconds since the epoch)
        self.created: float = time.time()
        #: (node name, time sent) for every node the data went through
        self.hops: list[tuple[str, float]] = []

    def add(self, name: str, value: Any, content_type: str = "other", quality: int | None = None) -> None:
        """Add (or replace) the record `name`."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"DataChunk record name must be a non-empty str, got {name!r}")
        if content_type not in CONTENT_TYPES:
            raise ValueError(
                f"DataChunk.add({name!r}): unknown content_type {content_type!r}; "
                f"use one of {', '.join(CONTENT_TYPES)}"
            )
        record: dict[str, Any] = {"value": value, "content-type": content_type}
        if content_type == "image":
            _check_image(name, value)
            if quality is not None:
                if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
                    raise ValueError(f"DataChunk.add({name!r}): quality must be an int in 1..100, got {quality!r}")
                record["quality"] = quality
        elif content_type == "ndarray" and not isinstance(value, np.ndarray):
            raise TypeError(
                f"DataChunk.add({name!r}, content_type='ndarray') needs a numpy.ndarray, got "
                f"{type(value).__name__}; convert with numpy.asarray(...) or use content_type='other'"
            )
        self._records[name] = record

    def get(self, name: str) -> dict[str, Any]:
        """The record `name` as ``{"value": ..., "content-type": ...}``."""
        try:
            return self._records[name]
        except KeyError:
            known = ", ".join(map(repr, self._records)) or "none"
            raise KeyError(f"DataChunk has no record {name!r} (records: {known})") from None

    def contains(self, name: str) -> bool:
        """Whether the record `name` exists."""
        return name in self._records

    def __contains__(self, name: object) -> bool:
        return name in self._records

    def __iter__(self) -> Iterator[str]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DataChunk):
            return NotImplemented
        if self._records.keys() != other._records.keys():
            return False
        for name, rec in self._records.items():
            orec = other._records[name]
            if rec["content-type"] != orec["content-type"]:
                return False
            if not _values_equal(rec["value"], orec["value"]):
                return False
        return True

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        parts = []
        for name, rec in self._records.items():
            v = rec["value"]
            desc = f"ndarray{v.shape}:{v.dtype}" if isinstance(v, np.ndarray) else type(v).__name__
            parts.append(f"{name}={desc}[{rec['content-type']}]")
        return f"DataChunk({', '.join(parts)})"

    @property
    def records(self) -> dict[str, dict[str, Any]]:
        """All records, by name (read-only by convention)."""
        return self._records


def _check_image(name: str, value: Any) -> None:
    if not isinstance(value, np.ndarray):
        raise TypeError(
            f"DataChunk.add({name!r}, content_type='image') needs a numpy.ndarray, got {type(value).__name__}"
        )
    if value.dtype != np.uint8:
        raise TypeError(
            f"DataChunk.add({name!r}): an image must be uint8, got {value.dtype}; "
            "scale and convert with img.astype(numpy.uint8), or send it as content_type='ndarray'"
        )
    if not (value.ndim == 2 or (value.ndim == 3 and value.shape[2] in (1, 3))):
        raise ValueError(
            f"DataChunk.add({name!r}): an image must be HxW, HxWx1 (arrives as HxW) or HxWx3, got shape "
            f"{value.shape}; send other arrays as content_type='ndarray'"
        )
    if value.size == 0:
        raise ValueError(f"DataChunk.add({name!r}): the image is empty (shape {value.shape}); JPEG needs pixels")


def _values_equal(a: Any, b: Any) -> bool:
    if type(a) in (list, tuple) and type(b) is type(a):
        return len(a) == len(b) and all(_values_equal(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict and type(b) is dict:
        return a.keys() == b.keys() and all(_values_equal(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.shape == b.shape
            and a.dtype == b.dtype
            and bool(np.array_equal(a, b))
        )
    try:
        return bool(a == b)
    except Exception:
        return False


def as_chunk(value: Any) -> DataChunk | None:
    """What a node returned, as a DataChunk: None stays None, anything else becomes record "default"."""
    if value is None or isinstance(value, DataChunk):
        return value
    chunk = DataChunk()
    chunk._records["default"] = {"value": value, "content-type": "other"}
    return chunk
