"""Raw-pyzmq baselines printed beside chimera_lab's own benchmark figures.

Every figure is measured between TWO OS processes (``multiprocessing`` "spawn"
context) over ``tcp://127.0.0.1`` on a random free port.  The parent process
binds the socket and is always the measuring side (receiver / pinger); the
spawned child connects and is the sender / ponger.

Synchronisation never relies on fixed sleeps:

* the child reports ``"ready"`` over a ``multiprocessing.Pipe`` once its socket is
  connected;
* warm-up traffic then goes over the ZeroMQ socket itself and the parent waits
  for it (with a timeout) before it sends ``"go"`` over the pipe;
* every blocking wait has a timeout (``RCVTIMEO``/``SNDTIMEO`` or ``poll``), and
  the child is always joined (terminated if needed) in a ``finally``.

The only sleep is the 30 fps pacing of :func:`image_paced`, which uses an
absolute deadline per frame, so it does not drift.

Usage::

    python bench/raw_pyzmq.py [--quick]

or import it and call the functions, each of which returns a dict of numbers.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import cv2
import msgpack
import numpy as np
import zmq

HOST = "tcp://127.0.0.1"
STARTUP_TIMEOUT_S = 60.0  # spawn + importing numpy/cv2 in the child
IO_TIMEOUT_MS = 10_000  # any single socket operation after start-up
JOIN_TIMEOUT_S = 5.0

FRAME_H, FRAME_W = 480, 640
JPEG_QUALITY = 80
IMAGE_WARMUP_FRAMES = 5
RECT = 100  # side of the moving rectangle, pixels


# --------------------------------------------------------------------------- helpers


def _quick(n: int | float, quick: bool, minimum: int | float = 1) -> Any:
    """Scale an iteration count (or duration) down ~5x in quick mode."""
    if not quick:
        return n
    scaled = n / 5
    if isinstance(n, int):
        scaled = int(scaled)
    return max(minimum, scaled)


def _percentile(values: list[float] | np.ndarray, q: float) -> float:
    if len(values) == 0:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def _small_header(seq: int) -> bytes:
    """~30-byte msgpack dict: a sequence number, a time.time() float and a source tag."""
    return msgpack.packb({"seq": seq, "t": time.time(), "src": "cam0"})


def _wait_pipe(conn: Any, proc: Any, timeout_s: float, what: str) -> Any:
    """Parent side: wait for a pipe message while checking that the child is alive."""
    deadline = time.monotonic() + timeout_s
    while True:
        if conn.poll(0.05):
            try:
                return conn.recv()
            except EOFError:
                proc.join(JOIN_TIMEOUT_S)
                raise RuntimeError(f"child exited (code {proc.exitcode}) while parent waited for {what!r}") from None
        if not proc.is_alive():
            raise RuntimeError(f"child exited (code {proc.exitcode}) while parent waited for {what!r}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what!r} from child")


def _child_wait(conn: Any, expected: str, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    """Child side: wait for a control message from the parent."""
    if not conn.poll(timeout_s):
        raise TimeoutError(f"child timed out waiting for {expected!r}")
    msg = conn.recv()
    if msg != expected:
        raise RuntimeError(f"child expected {expected!r}, got {msg!r}")


@contextmanager
def _child_socket(port: int, conn: Any, sock_type: int) -> Iterator[zmq.Socket]:
    """Child side: connect a socket, report ready, and tear everything down at the end."""
    ctx = zmq.Context()
    sock = ctx.socket(sock_type)
    sock.setsockopt(zmq.SNDTIMEO, IO_TIMEOUT_MS)
    sock.setsockopt(zmq.RCVTIMEO, IO_TIMEOUT_MS)
    try:
        sock.connect(f"{HOST}:{port}")
        conn.send("ready")
        yield sock
    finally:
        sock.close(linger=0)
        ctx.term()
        conn.close()


def _finish_sender(conn: Any) -> None:
    """Child side: keep the socket open until the parent has everything it wants."""
    if conn.poll(IO_TIMEOUT_MS / 1000 * 3):
        conn.recv()


@contextmanager
def _pair(sock_type: int, target: Callable[..., None], *args: Any) -> Iterator[tuple[zmq.Socket, Any, Any]]:
    """Parent side: bind a socket on a random port, spawn ``target(port, conn, *args)``.

    Yields ``(socket, pipe_conn, process)`` once the child has reported ready.  On exit
    the child is told ``"done"``, joined, and terminated if it does not exit in time.
    """
    ctx = zmq.Context()
    sock = ctx.socket(sock_type)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDTIMEO, IO_TIMEOUT_MS)
    sock.setsockopt(zmq.RCVTIMEO, IO_TIMEOUT_MS)
    mpctx = mp.get_context("spawn")
    conn, child_conn = mpctx.Pipe()
    proc = None
    try:
        port = sock.bind_to_random_port(HOST)
        proc = mpctx.Process(target=target, args=(port, child_conn, *args), daemon=True)
        proc.start()
        child_conn.close()
        _wait_pipe(conn, proc, STARTUP_TIMEOUT_S, "ready")
        yield sock, conn, proc
    finally:
        if proc is not None:
            try:
                conn.send("done")
            except (OSError, ValueError):
                pass
            proc.join(JOIN_TIMEOUT_S)
            if proc.is_alive():
                proc.terminate()
                proc.join(JOIN_TIMEOUT_S)
            if proc.exitcode:
                print(f"[raw_pyzmq] warning: child {target.__name__} exited with code {proc.exitcode}")
        conn.close()
        sock.close(linger=0)
        ctx.term()


def _make_base_image() -> np.ndarray:
    """Noise-free 640x480 BGR gradient background (frames are ~13 KB JPEGs at q80)."""
    yy, xx = np.mgrid[0:FRAME_H, 0:FRAME_W]
    planes = [xx * 255 // FRAME_W, yy * 255 // FRAME_H, (xx + yy) * 255 // (FRAME_W + FRAME_H)]
    return np.dstack(planes).astype(np.uint8)


def _make_frame(base: np.ndarray, seq: int) -> np.ndarray:
    """A new frame every call: the gradient with a 100x100 rectangle moving across it."""
    frame = base.copy()
    x = (seq * 7) % (FRAME_W - RECT)
    y = (seq * 3) % (FRAME_H - RECT)
    frame[y : y + RECT, x : x + RECT] = (255, 255, 255)
    frame[y + 20 : y + RECT - 20, x + 20 : x + RECT - 20] = (0, 0, 200)
    return frame


def _encode(frame: np.ndarray) -> memoryview:
    ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("cv2.imencode failed")
    return jpeg.data  # buffer view of the encoded bytes, no copy


def _decode(buf: Any) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(buf, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.shape != (FRAME_H, FRAME_W, 3):
        raise RuntimeError("cv2.imdecode failed")
    return img


# --------------------------------------------------------------------------- child entry points
# (module top level so the spawn start method can pickle them by reference)


def _child_pong(port: int, conn: Any) -> None:
    """REP side of the ping-pong: echo every request until an empty one arrives."""
    with _child_socket(port, conn, zmq.REP) as sock:
        while True:
            msg = sock.recv()
            sock.send(msg)
            if not msg:
                break
        _finish_sender(conn)  # closing with linger=0 right away could drop the last reply


def _child_push_small(port: int, conn: Any, n: int) -> None:
    with _child_socket(port, conn, zmq.PUSH) as sock:
        mac = os.urandom(32)  # stands in for a 32-byte HMAC-SHA256 tag
        sock.send_multipart([mac, msgpack.packb({"warmup": True})])
        _child_wait(conn, "go")
        # Plain send(SNDMORE) + send() instead of send_multipart(): same wire format (one
        # 2-frame message), without the per-message Python overhead of the list helper.
        send, packb, now, more = sock.send, msgpack.packb, time.time, zmq.SNDMORE
        for i in range(n):
            send(mac, more)
            send(packb({"seq": i, "t": now(), "src": "cam0"}))
        _finish_sender(conn)


def _child_push_images(port: int, conn: Any, fps: float | None, seconds: float) -> None:
    """Encode and push frames; paced at ``fps`` or, if ``fps`` is None, until told to stop."""
    with _child_socket(port, conn, zmq.PUSH) as sock:
        base = _make_base_image()
        for i in range(IMAGE_WARMUP_FRAMES):
            jpeg = _encode(_make_frame(base, -1 - i))
            sock.send_multipart([msgpack.packb({"warmup": True}), jpeg], copy=False)
        _child_wait(conn, "go")

        seq = 0
        if fps is not None:
            total = int(round(fps * seconds))
            period = 1.0 / fps
            t_start = time.perf_counter()
            for seq in range(total):
                delay = t_start + seq * period - time.perf_counter()  # absolute deadline: no drift
                if delay > 0:
                    time.sleep(delay)
                frame = _make_frame(base, seq)
                t_created = time.time()  # creation stamp, taken BEFORE encoding
                jpeg = _encode(frame)
                sock.send_multipart([msgpack.packb({"seq": seq, "t": t_created}), jpeg], copy=False)
        else:
            hard_stop = time.monotonic() + 3 * seconds + 10  # safety net if the parent vanishes
            while not conn.poll() and time.monotonic() < hard_stop:
                frame = _make_frame(base, seq)
                t_created = time.time()
                jpeg = _encode(frame)
                sock.send_multipart([msgpack.packb({"seq": seq, "t": t_created}), jpeg], copy=False)
                seq += 1
            if conn.poll():
                _child_wait(conn, "stop", 0)
        sock.send_multipart([msgpack.packb({"end": True}), b""])
        _finish_sender(conn)


def _child_push_ndarray(port: int, conn: Any, nbytes: int, n: int) -> None:
    with _child_socket(port, conn, zmq.PUSH) as sock:
        arr = np.full(nbytes, 7, dtype=np.uint8)  # prebuilt, reused, never modified
        buf = arr.data  # buffer view of the array: sent zero-copy (copy=False)
        meta = {"dtype": str(arr.dtype), "shape": list(arr.shape)}
        sock.send_multipart([msgpack.packb({"warmup": True, **meta}), buf], copy=False)
        _child_wait(conn, "go")
        send = sock.send_multipart
        packb = msgpack.packb
        for i in range(n):
            send([packb({"seq": i, **meta}), buf], copy=False)
        _finish_sender(conn)


# --------------------------------------------------------------------------- benchmarks


def small_latency(n: int = 5000, quick: bool = False) -> dict[str, float]:
    """REQ/REP ping-pong of a ~30-byte msgpack dict; one-way = RTT / 2."""
    n = _quick(n, quick, 100)
    warmup = max(50, n // 20)
    with _pair(zmq.REQ, _child_pong) as (sock, _conn, _proc):
        for i in range(warmup):
            sock.send(_small_header(-1 - i))
            sock.recv()
        rtts = np.empty(n, dtype=np.float64)
        clock = time.perf_counter
        for i in range(n):
            msg = _small_header(i)
            t0 = clock()
            sock.send(msg)
            reply = sock.recv()
            rtts[i] = clock() - t0
            if reply != msg:
                raise RuntimeError("ping-pong reply mismatch")
        sock.send(b"")  # tell the ponger to exit
        sock.recv()
    rtt_us = rtts * 1e6
    p50 = _percentile(rtt_us, 50)
    return {"rtt_p50_us": p50, "rtt_p99_us": _percentile(rtt_us, 99), "oneway_p50_us": p50 / 2}


def small_throughput(n: int = 200_000, quick: bool = False) -> dict[str, float]:
    """PUSH/PULL of 2-frame [32-byte MAC, ~30-byte msgpack header] messages, default HWM."""
    n = _quick(n, quick, 1000)
    received = 0
    t_first = t_last = 0.0
    with _pair(zmq.PULL, _child_push_small, n) as (sock, conn, _proc):
        sock.recv_multipart()  # warm-up message: the connection is up
        conn.send("go")
        # Every message is exactly [mac, header]: two plain recv() calls per message (the
        # counterpart of the sender's send(SNDMORE) + send()); alignment is checked at the end.
        recv = sock.recv
        clock = time.perf_counter
        header = b""
        try:
            recv()
            header = recv()
            t_first = t_last = clock()
            received = 1
            while received < n:
                recv()
                header = recv()
                received += 1
            t_last = clock()
        except zmq.Again:  # nothing for IO_TIMEOUT_MS: count the rest as lost
            pass
        if received == n and (sock.rcvmore or msgpack.unpackb(header).get("seq") != n - 1):
            raise RuntimeError("small_throughput: multipart frames out of step")
    elapsed = t_last - t_first
    rate = (received - 1) / elapsed if received > 1 and elapsed > 0 else float("nan")
    return {"msgs_per_s": rate, "lost": float(n - received)}


def _recv_frame(sock: zmq.Socket) -> tuple[dict[str, Any], Any]:
    header, payload = sock.recv_multipart(copy=False)
    return msgpack.unpackb(header.bytes), payload.buffer


def _drain_warmup(sock: zmq.Socket) -> None:
    for _ in range(IMAGE_WARMUP_FRAMES):
        _header, payload = _recv_frame(sock)
        _decode(payload)


def image_paced(fps: float = 30, seconds: float = 4, quick: bool = False) -> dict[str, float]:
    """640x480 JPEG (q80) frames at ``fps``; latency = receive-side decode done - creation stamp."""
    seconds = _quick(seconds, quick, 1.0)
    latencies: list[float] = []
    with _pair(zmq.PULL, _child_push_images, fps, seconds) as (sock, conn, _proc):
        _drain_warmup(sock)
        conn.send("go")
        while True:
            header, payload = _recv_frame(sock)
            if header.get("end"):
                break
            _decode(payload)
            latencies.append(time.time() - header["t"])
    lat_ms = np.asarray(latencies) * 1e3
    return {"p50_ms": _percentile(lat_ms, 50), "p99_ms": _percentile(lat_ms, 99)}


def image_unpaced(seconds: float = 4, quick: bool = False) -> dict[str, float]:
    """Same frames as :func:`image_paced`, sent as fast as possible; fps decoded at the receiver."""
    seconds = _quick(seconds, quick, 1.0)
    with _pair(zmq.PULL, _child_push_images, None, seconds) as (sock, conn, _proc):
        _drain_warmup(sock)
        conn.send("go")
        clock = time.perf_counter
        header, payload = _recv_frame(sock)
        _decode(payload)
        t_first = t_last = clock()
        decoded = 1
        while t_last - t_first < seconds:
            header, payload = _recv_frame(sock)
            if header.get("end"):
                break
            _decode(payload)
            t_last = clock()
            decoded += 1
        conn.send("stop")
        while not header.get("end"):  # drain the backlog (no decoding) up to the end marker
            header, payload = _recv_frame(sock)
    elapsed = t_last - t_first
    fps = (decoded - 1) / elapsed if decoded > 1 and elapsed > 0 else float("nan")
    return {"delivered_fps": fps}


def ndarray_throughput(mib: float = 1, n: int = 2000, quick: bool = False) -> dict[str, float]:
    """Zero-copy [header, 1 MiB ndarray] PUSH/PULL; GB/s (1e9 bytes) at the receiver."""
    n = _quick(n, quick, 20)
    nbytes = int(mib * 1024 * 1024)
    received = 0
    t_first = t_last = 0.0
    with _pair(zmq.PULL, _child_push_ndarray, nbytes, n) as (sock, conn, _proc):
        sock.recv_multipart(copy=False)  # warm-up
        conn.send("go")
        recv = sock.recv_multipart
        clock = time.perf_counter
        for i in range(n):
            _header, payload = recv(copy=False)
            arr = np.frombuffer(payload.buffer, dtype=np.uint8)  # wraps, no copy
            if i == 0:
                t_first = clock()
            received += 1
        t_last = clock()
        if arr.nbytes != nbytes:
            raise RuntimeError(f"expected {nbytes} bytes, got {arr.nbytes}")
    elapsed = t_last - t_first
    gbps = (received - 1) * nbytes / elapsed / 1e9 if received > 1 and elapsed > 0 else float("nan")
    return {"gb_per_s": gbps}


# --------------------------------------------------------------------------- CLI

def _child_echo_dealer(port: int, conn: Any) -> None:
    """A data-parallel worker stand-in: echo every [header, parameters] message until an empty one arrives."""
    with _child_socket(port, conn, zmq.DEALER) as sock:
        sock.send(b"hello")
        while True:
            frames = sock.recv_multipart()
            if frames == [b""]:
                break
            sock.send_multipart(frames)


class EchoWorkers:
    """A raw parameter-server round: a ROUTER sends `floats` float64 (with a small msgpack header) to each of
    `n_workers` DEALER processes and waits for every echo, the communication of a round and nothing else.
    The processes stay up between calls to `rounds`, so measurements can be interleaved with another's."""

    def __init__(self, n_workers: int = 2, floats: int = 50) -> None:
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVTIMEO, IO_TIMEOUT_MS)
        self._procs: list[Any] = []
        self._conns: list[Any] = []
        self._theta = np.zeros(floats).tobytes()
        self._idents: list[bytes] = []
        mpctx = mp.get_context("spawn")
        try:
            port = self._sock.bind_to_random_port(HOST)
            for _ in range(n_workers):
                conn, child_conn = mpctx.Pipe()
                proc = mpctx.Process(target=_child_echo_dealer, args=(port, child_conn), daemon=True)
                proc.start()
                child_conn.close()
                self._procs.append(proc)
                self._conns.append(conn)
                _wait_pipe(conn, proc, STARTUP_TIMEOUT_S, "ready")
            self._idents = [self._sock.recv_multipart()[0] for _ in range(n_workers)]
        except BaseException:
            self.close()
            raise

    def rounds(self, n: int, warmup: int = 50) -> np.ndarray:
        """Seconds of each of `n` rounds (after `warmup` unmeasured ones)."""
        sock, theta, idents = self._sock, self._theta, self._idents
        times = np.empty(n)
        for i in range(-warmup, n):
            header = msgpack.packb({"op": "grad", "r": i})
            t0 = time.perf_counter()
            for ident in idents:
                sock.send_multipart([ident, header, theta])
            for _ in idents:
                sock.recv_multipart()
            if i >= 0:
                times[i] = time.perf_counter() - t0
        return times

    def close(self) -> None:
        """End the echo processes and the socket."""
        for ident in self._idents:
            self._sock.send_multipart([ident, b""])
        for proc, conn in zip(self._procs, self._conns, strict=True):
            proc.join(JOIN_TIMEOUT_S)
            if proc.is_alive():
                proc.terminate()
                proc.join(JOIN_TIMEOUT_S)
            conn.close()
        self._idents = []
        self._sock.close(linger=0)
        self._ctx.term()

    def __enter__(self) -> EchoWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sgd_round(n_workers: int = 2, floats: int = 50, n: int = 3000, quick: bool = False) -> dict[str, float]:
    """One synchronous parameter-server round on `n_workers` echo processes (see EchoWorkers)."""
    with EchoWorkers(n_workers, floats) as echo:
        us = echo.rounds(_quick(n, quick, 100), warmup=max(50, n // 20)) * 1e6
    return {"round_p50_us": _percentile(us, 50), "round_p99_us": _percentile(us, 99)}


BENCHMARKS: list[tuple[str, Callable[..., dict[str, float]]]] = [
    ("small_latency", small_latency),
    ("small_throughput", small_throughput),
    ("image_paced", image_paced),
    ("image_unpaced", image_unpaced),
    ("ndarray_throughput", ndarray_throughput),
    ("sgd_round", sgd_round),
]

UNITS = {
    "rtt_p50_us": "us",
    "rtt_p99_us": "us",
    "oneway_p50_us": "us",
    "msgs_per_s": "msg/s",
    "lost": "msgs",
    "p50_ms": "ms",
    "p99_ms": "ms",
    "delivered_fps": "fps",
    "gb_per_s": "GB/s",
    "round_p50_us": "us",
    "round_p99_us": "us",
}


def run_all(quick: bool = False) -> dict[str, dict[str, float]]:
    """Run every baseline; returns ``{benchmark_name: {metric: value}}``."""
    return {name: fn(quick=quick) for name, fn in BENCHMARKS}


def _fmt(value: float) -> str:
    if value != value:  # NaN
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Raw pyzmq baselines (2 processes, tcp://127.0.0.1).")
    parser.add_argument("--quick", action="store_true", help="~5x fewer iterations")
    args = parser.parse_args(argv)

    print(
        f"raw pyzmq baselines  (pyzmq {zmq.__version__}, libzmq {zmq.zmq_version()}, "
        f"{os.cpu_count()} CPUs{', quick' if args.quick else ''})"
    )
    print(f"{'benchmark':<20} {'metric':<15} {'value':>12}  unit   time")
    print("-" * 60)
    for name, fn in BENCHMARKS:
        t0 = time.perf_counter()
        result = fn(quick=args.quick)
        took = time.perf_counter() - t0
        for j, (metric, value) in enumerate(result.items()):
            suffix = f"{took:5.1f}s" if j == 0 else ""
            line = f"{name if j == 0 else '':<20} {metric:<15} {_fmt(value):>12}  {UNITS.get(metric, ''):<6} {suffix}"
            print(line.rstrip(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
