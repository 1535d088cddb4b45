"""Waker: lets any thread wake a ZeroMQ poll loop that owns its sockets."""

from __future__ import annotations

import threading
import uuid

import zmq


class Waker:
    """`wake()` from any thread; the loop polls `socket` and calls `drain()` when it is readable."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
        addr = f"inproc://chimera-waker-{uuid.uuid4().hex}"
        self.socket = ctx.socket(zmq.PULL)
        self.socket.bind(addr)
        self._out = ctx.socket(zmq.PUSH)
        self._out.connect(addr)
        self._lock = threading.Lock()  # the PUSH end is shared by every waking thread

    def wake(self) -> None:
        """Make the loop's poll return."""
        with self._lock:
            self._out.send(b"")

    def drain(self) -> None:
        """Consume every pending wake-up (loop thread)."""
        while True:
            try:
                self.socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return

    def close(self) -> None:
        """Close both ends."""
        self.socket.close(0)
        self._out.close(0)
