"""Nodes used by the integration tests; shipped to workers by value (see conftest.py)."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import time
from typing import Any

import chimera_lab as cp


class Count(cp.Node):
    """Source: 1, 2, 3, ... (n items, then finishes)."""

    def __init__(self, name: str, n: int | None = None, rate_hz: float | None = None, sleep: float = 0.0) -> None:
        super().__init__(name=name, rate_hz=rate_hz)
        self.n, self.sleep = n, sleep

    def prep(self) -> None:
        self.i = 0

    def step(self) -> int:
        if self.n is not None and self.i >= self.n:
            raise StopIteration
        if self.sleep:
            time.sleep(self.sleep)
        self.i += 1
        return self.i


class Scale(cp.Node):
    """Step: coef * the upstream's default value."""

    def __init__(self, name: str, coef: float = 3) -> None:
        super().__init__(name=name)
        self.coef = coef

    def step(self, data: dict[str, cp.DataChunk]) -> Any:
        (chunk,) = data.values()
        return self.coef * chunk.get("default")["value"]


class AsyncScale(Scale):
    """Step with an async step."""

    async def step(self, data: dict[str, cp.DataChunk]) -> Any:  # type: ignore[override]
        await asyncio.sleep(0)
        (chunk,) = data.values()
        return self.coef * chunk.get("default")["value"]


class InOrder(cp.Node):
    """Sink that raises if a value is not exactly the previous one + 1 (so a loss shows as an error)."""

    def prep(self) -> None:
        self.last = 0

    def step(self, data: dict[str, cp.DataChunk]) -> None:
        (chunk,) = data.values()
        v = chunk.get("default")["value"]
        if v != self.last + 1:
            self.last = v
            raise ValueError(f"expected {self.last + 1}, got {v}")
        self.last = v


class Slow(cp.Node):
    """Step that takes `delay` seconds and passes its input on."""

    def __init__(self, name: str, delay: float) -> None:
        super().__init__(name=name)
        self.delay = delay

    def step(self, data: dict[str, cp.DataChunk]) -> Any:
        time.sleep(self.delay)
        (chunk,) = data.values()
        return chunk.get("default")["value"]


class Zip(cp.Node):
    """Step with several inputs: returns {upstream: value} of what it was given."""

    def step(self, data: dict[str, cp.DataChunk]) -> dict[str, Any]:
        return {k: c.get("default")["value"] for k, c in data.items()}


class FailPrep(cp.Node):
    """A node whose prep fails."""

    def prep(self) -> None:
        raise RuntimeError("camera 7 is unplugged")


class FailStep(cp.Node):
    """A step that fails on every odd value."""

    def __init__(self, name: str, on_error: str = "continue") -> None:
        super().__init__(name=name, on_error=on_error)

    def step(self, data: dict[str, cp.DataChunk]) -> Any:
        (chunk,) = data.values()
        v = chunk.get("default")["value"]
        if v % 2:
            return v / 0
        return v


class OwnLoop(cp.Node):
    """Source that owns its loop: sends 10, 20, 30, ... until stopped."""

    def main(self) -> None:
        v = 0
        while self.running:
            v += 10
            self.send(v)
            time.sleep(0.01)


class WhereAmI(cp.Node):
    """Step that reports where it runs and whether it could import this very module."""

    def step(self, data: dict[str, cp.DataChunk]) -> dict[str, Any]:
        return {"cwd": os.getcwd(), "pid": os.getpid(),
                "can_import_test_module": importlib.util.find_spec("pipeline_nodes") is not None,
                "value": next(iter(data.values())).get("default")["value"]}


class Sink(cp.Node):
    """Sink that does nothing with what it gets."""

    def step(self, data: dict[str, cp.DataChunk]) -> None:
        return None


class Camera(cp.Node):
    """Source that records every frame it makes (video) and a row of metadata per frame."""

    def __init__(self, name: str, n: int | None = None, rate_hz: float | None = 30, width: int = 160,
                 height: int = 120, noise: bool = False) -> None:
        super().__init__(name=name, rate_hz=rate_hz)
        self.n, self.width, self.height, self.noise = n, width, height, noise

    def prep(self) -> None:
        import numpy as np

        self.i = 0
        self.rng = np.random.default_rng(0)

    def step(self) -> int:
        import numpy as np

        if self.n is not None and self.i >= self.n:
            raise StopIteration
        self.i += 1
        if self.noise:  # incompressible: big files
            frame = self.rng.integers(0, 256, (self.height, self.width, 3), dtype=np.uint8)
        else:
            frame = np.zeros((self.height, self.width, 3), np.uint8)
            frame[:, : (self.i * 3) % self.width] = (40, 120, 200)  # a bar that grows frame by frame
        self.save_video("cam", frame)
        self.save_tabular("meta", {"i": self.i, "mean": float(frame.mean())})
        return self.i


class Sensor(cp.Node):
    """Source that records a table row and 160 audio samples per step."""

    def __init__(self, name: str, n: int | None = None, rate_hz: float | None = 100) -> None:
        super().__init__(name=name, rate_hz=rate_hz)
        self.n = n

    def prep(self) -> None:
        self.i = 0

    def step(self) -> int:
        import math

        import numpy as np

        if self.n is not None and self.i >= self.n:
            raise StopIteration
        self.i += 1
        self.save_tabular("imu", {"i": self.i, "x": math.sin(self.i / 10), "ok": True})
        self.save_audio("mic", np.full(160, self.i, np.int16), rate=16000, channels=1)
        return self.i


class Logger(cp.Node):
    """Sink that records a JSON event and a text line per step."""

    def prep(self) -> None:
        self.n = 0

    def step(self, data: dict[str, cp.DataChunk]) -> None:
        self.n += 1
        self.save_json("events", {"n": self.n, "inputs": {k: c.get("default")["value"] for k, c in data.items()}})
        self.save_text("log", f"step {self.n}")


class BadSaver(cp.Node):
    """Saves something that is not an image as video, every step."""

    def step(self, data: dict[str, cp.DataChunk]) -> Any:
        self.save_video("oops", "not an image")
        return None


class BigFrames(cp.Node):
    """Source that records large, incompressible frames (fills a small disk fast)."""

    def __init__(self, name: str, rate_hz: float = 100) -> None:
        super().__init__(name=name, rate_hz=rate_hz)

    def prep(self) -> None:
        import numpy as np

        self.rng = np.random.default_rng(0)

    def step(self) -> int:
        self.save_image("noise", self.rng.integers(0, 256, (240, 320, 3), dtype="uint8"))
        return 1


class Blob(cp.Node):
    """Source: unpaced `size`-byte payloads (big enough that ZeroMQ's queues, not the kernel's buffers, fill)."""

    def __init__(self, name: str, size: int = 1 << 20) -> None:
        super().__init__(name=name)
        self.size = size

    def step(self) -> bytes:
        return bytes(self.size)
