"""Ready-made sinks: StatsSink counts what arrives, NullSink discards it (for benchmarks)."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from ..datachunk import DataChunk
from ..node import Node


def approx_nbytes(value: Any) -> int:
    """Roughly how many bytes `value` holds (exact for arrays and bytes, shallow size otherwise)."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return len(value) if not isinstance(value, memoryview) else value.nbytes
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    return sys.getsizeof(value)


class StatsSink(Node):
    """Count the chunks that arrive, and per record how many and how many bytes; see `summary()`."""

    def __init__(self, name: str = "stats", on_error: str = "continue") -> None:
        super().__init__(name=name, on_error=on_error)
        self._items = 0
        self._last_index: Any = None
        self._records: dict[str, dict[str, Any]] = {}
        self._last_seen: dict[str, DataChunk] = {}

    def prep(self) -> None:
        """Start counting from zero."""
        self._items = 0
        self._last_index = None
        self._records = {}
        self._last_seen = {}

    def step(self, data: dict[str, DataChunk] | None = None) -> None:
        """Count each new upstream chunk (a chunk seen again in the next step is not counted twice)."""
        for upstream, chunk in (data or {}).items():
            if not isinstance(chunk, DataChunk) or self._last_seen.get(upstream) is chunk:
                continue
            self._last_seen[upstream] = chunk
            self._items += 1
            for rec_name, rec in chunk.records.items():
                stats = self._records.setdefault(
                    rec_name, {"count": 0, "bytes": 0, "content_type": rec["content-type"]}
                )
                stats["count"] += 1
                stats["bytes"] += approx_nbytes(rec["value"])
                stats["content_type"] = rec["content-type"]
            if chunk.contains("index"):
                self._last_index = chunk.get("index")["value"]
        return None

    def summary(self) -> dict[str, Any]:
        """``{"items": n, "last_index": ..., "records": {name: {"count", "bytes", "content_type"}}}``."""
        return {
            "items": self._items,
            "last_index": self._last_index,
            "records": {name: dict(stats) for name, stats in self._records.items()},
        }

    def teardown(self) -> None:
        """Log the summary."""
        self.logger.info("summary: %s", self.summary())


class NullSink(Node):
    """Accept everything and do nothing."""

    def __init__(self, name: str = "null", on_error: str = "continue") -> None:
        super().__init__(name=name, on_error=on_error)

    def step(self, data: dict[str, DataChunk] | None = None) -> None:
        """Discard the inputs."""
        return None
