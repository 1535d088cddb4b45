"""The loop inside one node process: receive inputs, call the node's step, send its output.

A runner talks to its worker over one DEALER (control, signed) and to other nodes directly:
it binds one PULL socket per input edge and connects one PUSH socket per output edge. Binding the
receiving side means a stranger who connects can only inject (dropped and counted by the signature
check), never siphon messages off an edge.

Started as ``python -m chimera_lab.runner`` (config on stdin) or, in thread mode, in a thread.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import struct
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import cloudpickle
import msgpack
import numpy as np
import zmq

from . import transport, wire
from .datachunk import as_chunk
from .node import Node, has_custom_main
from .records.recorder import Recorder

REPORT_EVERY = 0.5  # seconds between metrics reports
CONTROL_EVERY = 0.01  # seconds between control checks while data flows
DRAIN_IDLE = 2.0  # a stopping node gives up waiting for end-of-stream after this long without data
LAT_RING = 4096  # latency samples kept per report window
ALL_HWM = 64  # messages queued per side of an "all" edge before the producer waits (Manager(queue_bound=...))


class _Input:
    __slots__ = ("src", "policy", "follow", "sock", "addr", "last_seq", "received", "dropped",
                 "superseded", "eos", "latest")

    def __init__(self, src: str, policy: str, follow: bool) -> None:
        self.src, self.policy, self.follow = src, policy, follow
        self.sock: zmq.Socket | None = None
        self.addr = ""
        self.last_seq = 0
        self.received = self.dropped = self.superseded = 0
        self.eos = False
        self.latest: Any = None  # the newest decoded header on a non-followed input


class _Output:
    __slots__ = ("dst", "policy", "sock", "sent", "dropped")

    def __init__(self, dst: str, policy: str, sock: zmq.Socket) -> None:
        self.dst, self.policy, self.sock = dst, policy, sock
        self.sent = self.dropped = 0


class NodeRunner:
    """Runs one node: binds its inputs, preps, then steps on command until torn down."""

    def __init__(self, config: dict[str, Any], ctx: zmq.Context | None = None) -> None:
        self.cfg = config
        self.name: str = config["name"]
        self.signer = wire.Signer(config["key"])
        # data messages are signed under this commit's own key: one captured in another commit is refused
        self.data_signer = wire.Signer(wire.derive_key(config["key"], f"data {config.get('commit', '')}"))
        self.ctx = ctx or zmq.Context.instance()
        self.offset: float = config.get("clock_offset", 0.0)
        self.state = "spawning"
        self.running = False  # True while the Manager wants the node to step
        self.exit = False
        self.node: Node | None = None
        self.kind = config.get("kind", "source")
        self.inputs = [_Input(i["src"], i["policy"], i["follow"]) for i in config.get("inputs", [])]
        self.follow = next((i for i in self.inputs if i.follow), self.inputs[0] if self.inputs else None)
        self.others = [i for i in self.inputs if i is not self.follow]
        self.outputs: list[_Output] = []
        self.taps: dict[str, _Output] = {}
        self.seq = 0
        self.steps = 0
        self.rate = 0.0
        self.errors = 0
        self.forged = 0
        self.replayed = 0  # validly signed messages refused as replays (control and data)
        self.origin = 0.0  # creation time of the data being processed (Manager clock)
        self.hops: list[list[Any]] = []
        self.lat = [0.0] * LAT_RING
        self.lat_n = 0
        self.next_report = 0.0
        self._next_ctrl = 0.0
        self.parent_pid: int | None = config.get("parent_pid")
        self.last_report = (time.monotonic(), 0)
        self.ctrl = self.ctx.socket(zmq.DEALER)
        self.ctrl.setsockopt(zmq.IDENTITY, self.name.encode())
        self.ctrl.setsockopt(zmq.LINGER, 2000)
        self.encrypt = bool(config.get("encrypt", False))
        transport.client(self.ctrl, config["key"], self.encrypt)
        self.ctrl.connect(config["worker_addr"])
        self.guards: list[transport.Guard] = []  # of the input sockets: connections refused at the handshake
        self.poller = zmq.Poller()
        self.poller.register(self.ctrl, zmq.POLLIN)
        self.others_poller = zmq.Poller()
        self.others_poller.register(self.ctrl, zmq.POLLIN)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._async_step = False
        self._stop_req: dict[str, Any] | None = None
        self._teardown_req: dict[str, Any] | None = None
        self.recorder = Recorder(self.name, lambda: time.time() + self.offset)
        self.data_dir = config.get("data_dir", "chimera-data")

    # ---------------------------------------------------------------------------------------------
    # control plane
    # ---------------------------------------------------------------------------------------------
    def report(self, msg: dict[str, Any]) -> None:
        """Send a signed control message to the Manager (through the worker)."""
        msg["node"] = self.name
        self.ctrl.send_multipart(wire.encode_control(self.signer, msg))

    def reply(self, req: dict[str, Any], ok: bool = True, **data: Any) -> None:
        """Answer request `req` (if it expects an answer)."""
        if "id" in req:
            self.report({"op": "reply", "re": req["id"], "ok": ok, **data})

    def set_state(self, state: str, **extra: Any) -> None:
        """Change state and tell the Manager."""
        self.state = state
        self.report({"op": "state", "state": state, **extra})

    def poll_control(self, timeout_ms: int = 0) -> None:
        """Handle every pending control message, waiting up to `timeout_ms` for the first."""
        if not self.ctrl.poll(timeout_ms):
            return
        while True:
            try:
                frames = self.ctrl.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msg, _ = wire.decode_control(self.signer, frames)
            except wire.ReplayError:
                self.replayed += 1
                continue
            except wire.AuthError:
                self.forged += 1
                continue
            self.handle(msg)

    def handle(self, msg: dict[str, Any]) -> None:
        """Act on one control message."""
        op = msg["op"]
        if op == "wire":
            try:
                for o in msg["outputs"]:
                    self.add_output(o["dst"], o["addr"], o["policy"])
            except Exception as exc:
                self.reply(msg, False, error=f"could not connect outputs: {exc}", tb=traceback.format_exc())
                return
            self.reply(msg)
        elif op == "start":
            for i in self.inputs:
                i.eos = False
            self.running = True
            self.reply(msg)
        elif op == "stop":
            if self.running:
                self._stop_req = msg
                self.running = False
            else:  # already stopped (by itself): the stop still ends a recording segment
                self.reply(msg, steps=self.steps, streams=self.end_recording())
        elif op == "tap":
            self.taps[msg["tap"]] = self._connect(msg["tap"], msg["addr"], "latest")
        elif op == "untap":
            tap = self.taps.pop(msg["tap"], None)
            if tap is not None:
                tap.sock.close(0)
        elif op == "unwire":  # a peer was lost: stop sending to it and stop waiting for it
            peer = msg["peer"]
            for o in [o for o in self.outputs if o.dst == peer]:
                o.sock.close(0)
                self.outputs.remove(o)
            for i in self.inputs:
                if i.src == peer:
                    i.eos = True
        elif op == "record":
            folder = Path(self.data_dir) / msg["session"] / self.name / f"segment-{msg['segment']}"
            try:
                self.recorder.start_segment(folder)
            except OSError as exc:
                self.reply(msg, False, error=f"cannot write to {folder}: {exc.strerror or exc}")
                return
            self.reply(msg)
        elif op == "clock":
            self.offset = msg["offset"]
        elif op == "teardown":
            self.running = False
            self.exit = True
            self._teardown_req = msg

    # ---------------------------------------------------------------------------------------------
    # wiring
    # ---------------------------------------------------------------------------------------------
    def bind_inputs(self) -> dict[str, str]:
        """Bind one PULL socket per input edge; return {upstream name: address}."""
        host = self.cfg.get("bind_host", "127.0.0.1")
        for i in self.inputs:
            s = self.ctx.socket(zmq.PULL)
            s.setsockopt(zmq.LINGER, 0)
            if i.policy == "latest":
                s.setsockopt(zmq.CONFLATE, 1)
            else:
                s.setsockopt(zmq.RCVHWM, self.cfg.get("queue_bound", ALL_HWM))
            self.guards.append(transport.serve(s, self.cfg["key"], f"node {self.name!r} (input from {i.src!r})",
                                               self.encrypt))
            port = s.bind_to_random_port(f"tcp://{host}")
            i.sock, i.addr = s, f"tcp://{host}:{port}"
            self.poller.register(s, zmq.POLLIN)
            if i is not self.follow:
                self.others_poller.register(s, zmq.POLLIN)
        return {i.src: i.addr for i in self.inputs}

    def _connect(self, dst: str, addr: str, policy: str) -> _Output:
        s = self.ctx.socket(zmq.PUSH)
        s.setsockopt(zmq.LINGER, 1000)
        s.setsockopt(zmq.SNDHWM, self.cfg.get("queue_bound", ALL_HWM) if policy == "all" else 2)
        transport.client(s, self.cfg["key"], self.encrypt)
        s.connect(addr)
        return _Output(dst, policy, s)

    def add_output(self, dst: str, addr: str, policy: str) -> None:
        """Connect an output edge to `dst` at `addr`."""
        self.outputs.append(self._connect(dst, addr, policy))

    # ---------------------------------------------------------------------------------------------
    # data plane
    # ---------------------------------------------------------------------------------------------
    def emit(self, value: Any) -> None:
        """Send `value` (what step returned) on every output."""
        chunk = as_chunk(value)
        if chunk is None:
            return
        self.seq += 1
        now = time.time() + self.offset
        if self.kind == "source":
            created = chunk.created + self.offset
            hops = [[self.name, now]]
        else:
            created = self.origin
            hops = self.hops + [[self.name, now]]
        frames = wire.encode_chunk(self.data_signer, chunk, self.seq, created, hops)
        big = len(frames) > 2 and any(not isinstance(f, bytes) or len(f) >= wire.BIG for f in frames[2:])
        packed = None
        for o in self.outputs:
            if o.policy == "all":
                self._send_all(o, frames, big)
            else:
                if packed is None:
                    packed = wire.pack_frames(frames)
                self._send_latest(o, packed)
        if self.taps:
            packed = packed or wire.pack_frames(frames)
            for t in list(self.taps.values()):
                self._send_latest(t, packed)

    def _send_latest(self, o: _Output, packed: bytes) -> None:
        try:
            o.sock.send(packed, zmq.NOBLOCK, copy=len(packed) < wire.BIG)
            o.sent += 1
        except zmq.Again:
            o.dropped += 1

    def _send_all(self, o: _Output, frames: list[Any], big: bool) -> None:
        poller: zmq.Poller | None = None
        give_up: float | None = None
        while True:
            try:
                o.sock.send_multipart(frames, zmq.NOBLOCK, copy=not big)
                o.sent += 1
                return
            except zmq.Again:
                pass
            # back-pressure: wait until the edge has room, staying responsive to control messages
            if poller is None:
                poller = zmq.Poller()
                poller.register(o.sock, zmq.POLLOUT)
                poller.register(self.ctrl, zmq.POLLIN)
            while True:
                ev = dict(poller.poll(200))
                if self.ctrl in ev:
                    self.poll_control()
                if o not in self.outputs or self.exit:
                    o.dropped += 1
                    return
                if not self.running:  # stopping: downstream gets a little time to make room, then we give up
                    give_up = give_up or time.monotonic() + DRAIN_IDLE
                    if time.monotonic() > give_up:
                        o.dropped += 1
                        return
                if o.sock in ev:
                    break
                self.maybe_report()

    def _recv(self, i: _Input) -> dict[str, Any] | None:
        """Receive one message from input `i` without waiting; None if nothing is there."""
        try:
            if i.policy == "latest":
                raw: Any = i.sock.recv(zmq.NOBLOCK, copy=False)  # type: ignore[union-attr]
            else:
                raw = i.sock.recv_multipart(zmq.NOBLOCK, copy=False)  # type: ignore[union-attr]
        except zmq.Again:
            return None
        try:
            frames = wire.unpack_frames(raw.buffer) if i.policy == "latest" else raw
            header = wire.decode_data(self.data_signer, frames)
        except wire.AuthError:
            self.forged += 1
            return {}
        seq = header.get("q")
        if type(seq) is not int or seq <= i.last_seq:  # a replay (sequence numbers only increase), or malformed
            self.replayed += 1
            return {}
        if "eos" in header:  # whatever the sender sent after what we got is lost: count it
            i.eos = True
            if header["eos"] > i.last_seq:
                i.dropped += header["eos"] - i.last_seq
            i.last_seq = seq
            return {}
        if seq > i.last_seq + 1:
            i.dropped += seq - i.last_seq - 1
        i.last_seq = seq
        i.received += 1
        return header

    def _drain_others(self) -> bool:
        """Take the newest message of every non-followed input; True once all have delivered."""
        ready = True
        for i in self.others:
            while True:
                h = self._recv(i)
                if h is None:
                    break
                if h:
                    if i.latest is not None:
                        i.superseded += 1
                    i.latest = h
            if i.latest is None:
                ready = False
        return ready

    def _next_inputs(self, timeout_ms: int) -> dict[str, Any] | None:
        """The inputs to step on if the followed input has data (waiting up to `timeout_ms`), else None."""
        f = self.follow
        assert f is not None
        ready = self._drain_others() if self.others else True
        if not ready:
            self.others_poller.poll(timeout_ms)
            return None
        header = self._recv(f)
        if not header:
            if header is None:
                self.poller.poll(timeout_ms)
            return None
        self.origin = header["t"]
        self.hops = header["h"]
        try:
            data = {f.src: wire.chunk_from_header(header)}
            for i in self.others:
                data[i.src] = wire.chunk_from_header(i.latest)
        except Exception as exc:  # a corrupt but correctly signed buffer (e.g. JPEG) is the sender's bug
            self.record_error(exc)
            return None
        # end-to-end latency: from creation at the source until the data is ready for this step
        self.lat[self.lat_n % LAT_RING] = time.time() + self.offset - self.origin
        self.lat_n += 1
        return data

    def call_step(self, data: dict[str, Any] | None) -> None:
        """Run the node's step (sync or async) and send what it returns; errors are reported."""
        node = self.node
        assert node is not None
        try:
            if self._async_step:
                assert self._loop is not None
                out = self._loop.run_until_complete(node.step(data) if data is not None else node.step())
            else:
                out = node.step(data) if data is not None else node.step()
            self.steps += 1
            if out is not None:
                self.emit(out)
        except StopIteration:  # a source (or a main loop) says it has nothing more to give
            self.running = False
        except Exception as exc:
            self.steps += 1
            self.record_error(exc)

    def save(self, kind: str, name: str, value: Any, timestamp: float | None, opts: dict[str, Any]) -> None:
        """Queue a sample for recording, stamped with the creation time of the data it comes from."""
        if timestamp is None:
            timestamp = self.origin if self.kind != "source" and self.origin else time.time() + self.offset
        self.recorder.save(kind, name, value, timestamp, opts)

    def end_recording(self) -> list[dict[str, Any]]:
        """Close the recording segment, if one is open, and report any writing errors."""
        manifest = self.recorder.end_segment()
        self.report_recording_errors()
        return manifest

    def report_recording_errors(self) -> None:
        """Report what the recorder's thread could not write."""
        while not self.recorder.errors.empty():
            msg = self.recorder.errors.get()
            self.errors += 1
            self.report({"op": "error", "error": msg, "tb": "", "count": self.errors, "recording": True})

    def record_error(self, exc: BaseException) -> None:
        """Report an exception raised by the node's code; stop the node if it asked for that."""
        self.errors += 1
        tb = traceback.format_exc()
        self.report({"op": "error", "error": f"{type(exc).__name__}: {exc}", "tb": tb, "count": self.errors})
        if self.node is not None and self.node.on_error == "stop":
            self.running = False

    # ---------------------------------------------------------------------------------------------
    # metrics
    # ---------------------------------------------------------------------------------------------
    def maybe_report(self) -> None:
        """Send metrics if a report is due (and end the node if its worker process died)."""
        t = time.monotonic()
        if t >= self.next_report:
            self.next_report = t + REPORT_EVERY
            if self.parent_pid is not None and os.getppid() != self.parent_pid:
                self.running, self.exit = False, True  # orphaned: the worker that started us is gone
                return
            self.report_recording_errors()
            self.send_metrics(t)

    def send_metrics(self, t: float | None = None) -> None:
        """Send this node's counters and latency percentiles for the last window."""
        t = time.monotonic() if t is None else t
        t0, steps0 = self.last_report
        dt = t - t0
        if dt < REPORT_EVERY / 2:  # an early (final) report: keep the last full window's rate
            rate = self.rate
        else:
            rate = self.rate = (self.steps - steps0) / dt
        n = min(self.lat_n, LAT_RING)
        p50 = p99 = None
        if n:
            arr = np.asarray(self.lat[:n])
            p50, p99 = (float(v) for v in np.percentile(arr, [50, 99]))
        self.lat_n = 0
        if dt >= REPORT_EVERY / 2:
            self.last_report = (t, self.steps)
        self.report({
            "op": "metrics",
            "state": self.state,
            "steps": self.steps,
            "rate": rate,
            "latency_p50": p50,
            "latency_p99": p99,
            "errors": self.errors,
            "forged": self.forged,
            "replayed": self.replayed,
            "rejected": sum(g.rejected for g in self.guards),
            "inputs": {i.src: {"received": i.received, "dropped": i.dropped, "superseded": i.superseded,
                               "policy": i.policy} for i in self.inputs},
            "outputs": {o.dst: {"sent": o.sent, "dropped": o.dropped, "policy": o.policy} for o in self.outputs},
            "recording": self.recorder.stats(),
        })

    # ---------------------------------------------------------------------------------------------
    # lifecycle
    # ---------------------------------------------------------------------------------------------
    def receive(self, timeout: float | None) -> dict[str, Any] | None:
        """Inputs for a node that owns its loop: the next followed message with the others' latest."""
        if self.follow is None:
            raise RuntimeError(f"node {self.name!r} has no inputs: receive() is for nodes with upstream nodes")
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.running and not self.exit:
            data = self._next_inputs(50)
            if data is not None:
                return data
            self.poll_control()
            self.maybe_report()
            if deadline is not None and time.monotonic() >= deadline:
                return None
        return None

    def run_source(self) -> None:
        """Step a source until told to stop, paced by rate_hz if set."""
        assert self.node is not None
        period = 1.0 / self.node.rate_hz if self.node.rate_hz else 0.0
        next_t = time.monotonic()
        next_ctrl = 0.0
        while self.running and not self.exit:
            t = time.monotonic()
            if period:
                wait = next_t - t
                if wait > 0:
                    self.poll_control(int(wait * 1000))
                    # spin the sub-millisecond remainder: measured against sleeping it, this halves the
                    # latency of small messages (a vCPU woken from idle at the tick is slow to start);
                    # it costs at most 1 ms of CPU per tick (3 % of a core at 30 Hz). While recording, the
                    # spin would starve the writer thread of the GIL, so the remainder is slept instead.
                    if self.recorder.recording:
                        rest = next_t - time.monotonic()
                        if rest > 0:
                            time.sleep(rest)
                    while time.monotonic() < next_t:
                        pass
                    if not self.running or self.exit:
                        break
                next_t = max(next_t + period, time.monotonic() - period)
            elif t >= next_ctrl:
                self.poll_control()
                next_ctrl = t + CONTROL_EVERY
                if not self.running:
                    break
            self.call_step(None)
            self.maybe_report()

    def run_consumer(self) -> None:
        """Step on inputs until told to stop."""
        next_ctrl = 0.0
        while self.running and not self.exit:
            data = self._next_inputs(100)
            if data is not None:
                self.call_step(data)
            t = time.monotonic()
            if data is None or t >= next_ctrl:
                self.poll_control()
                next_ctrl = t + CONTROL_EVERY
                self.maybe_report()

    def drain(self) -> None:
        """After stop: process what upstream already sent, until every input has ended."""
        last_data = time.monotonic()
        while not self.exit and self.follow is not None and not all(i.eos for i in self.inputs):
            data = self._next_inputs(50)
            if data is not None:
                self.call_step(data)
                last_data = time.monotonic()
            elif time.monotonic() - last_data > DRAIN_IDLE:
                break
            self.poll_control()
            self.maybe_report()
        if self.follow is not None and not self.follow.eos:
            # anything still queued on non-followed inputs ends here
            self._drain_others()

    def send_eos(self) -> None:
        """Tell every downstream node how much this node sent (so it knows when it has it all)."""
        self.seq += 1  # the marker's own sequence number: data after a restart comes after it
        frames = wire.encode_eos(self.data_signer, self.seq - 1, self.seq)
        for o in self.outputs:
            if o.policy == "all":
                try:
                    o.sock.send_multipart(frames, zmq.NOBLOCK)
                except zmq.Again:
                    self._send_all(o, frames, False)
                    o.sent -= 1
            else:
                try:
                    o.sock.send(wire.pack_frames(frames), zmq.NOBLOCK)
                except zmq.Again:
                    pass

    def run(self) -> None:
        """The whole life of the node: load, bind, prep, then serve commands until teardown."""
        try:
            self.node = cloudpickle.loads(self.cfg["node"])
            assert isinstance(self.node, Node)
            self.node._runner = self
            addrs = self.bind_inputs()
            self.node.prep()
            if "cv2" in sys.modules:  # one OpenCV thread per node process: nodes already run in parallel
                sys.modules["cv2"].setNumThreads(1)
            step = type(self.node).step
            self._async_step = inspect.iscoroutinefunction(step)
            if self._async_step:
                self._loop = asyncio.new_event_loop()
        except BaseException as exc:
            self.report({"op": "reply", "re": self.cfg["req"], "ok": False, "error": _describe(exc),
                         "tb": traceback.format_exc()})
            self.close()
            return
        self.state = "ready"
        self.report({"op": "reply", "re": self.cfg["req"], "ok": True, "inputs": addrs, "pid": os.getpid()})
        self.serve()

    def serve(self) -> None:
        """Wait for commands; step while running; drain and report on stop; teardown at the end."""
        assert self.node is not None
        own_main = has_custom_main(self.node)
        while not self.exit:
            self.poll_control(100)
            self.maybe_report()
            if not self.running:
                continue
            self.set_state("running")
            if own_main:
                try:
                    self.node.main()  # type: ignore[attr-defined]
                except Exception as exc:
                    self.record_error(exc)
                self.running = False
            elif self.kind == "source":
                self.run_source()
            else:
                self.run_consumer()
            if self._stop_req is not None:  # stopped by the Manager: finish what upstream already sent
                self.drain()
            self.send_eos()
            streams = self.end_recording() if self._stop_req is not None or self.exit else []
            self.send_metrics()
            if not self.exit:
                self.set_state("stopped")
            if self._stop_req is not None:
                self.reply(self._stop_req, steps=self.steps, streams=streams)
                self._stop_req = None
        self.end_recording()
        err = None
        try:
            self.node.teardown()
        except Exception as exc:
            err = _describe(exc)
            self.record_error(exc)
        self.send_metrics()
        self.state = "finished"
        if self._teardown_req is not None:
            self.reply(self._teardown_req, ok=err is None, error=err)
        self.close()

    def still_running(self) -> bool:
        """For nodes that own their loop: handle due control messages, then say whether to go on."""
        t = time.monotonic()
        if t >= self._next_ctrl:
            self._next_ctrl = t + CONTROL_EVERY
            self.poll_control()
            self.maybe_report()
        return self.running and not self.exit

    def stop_now(self) -> None:
        """Leave the loops at the next check (SIGTERM): teardown still runs."""
        self.running, self.exit = False, True

    def close(self) -> None:
        """Close every socket (the control socket last, so final reports leave)."""
        for i in self.inputs:
            if i.sock is not None:
                i.sock.close(0)
        for o in self.outputs + list(self.taps.values()):
            o.sock.close()
        if self._loop is not None:
            self._loop.close()
        self.ctrl.close(2000)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ModuleNotFoundError):
        return (f"{exc}: the worker cannot import the module that defines this node's class. Install it on "
                "the worker, define the class in the notebook or __main__, or call "
                "chimera_lab.send_by_value(module) before commit_graph")
    return f"{type(exc).__name__}: {exc}"


def read_config(stream: Any) -> dict[str, Any]:
    """Read the length-prefixed msgpack config a worker writes to a node process's stdin."""
    (n,) = struct.unpack("<I", stream.read(4))
    cfg: dict[str, Any] = msgpack.unpackb(stream.read(n), raw=False)
    return cfg


def write_config(stream: Any, cfg: dict[str, Any]) -> None:
    """Write a config for `read_config`."""
    blob = msgpack.packb(cfg, use_bin_type=True)
    stream.write(struct.pack("<I", len(blob)) + blob)
    stream.flush()


def _die_with_parent() -> None:
    """On Linux, have the kernel end this process if the worker that started it dies."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def main() -> None:
    """Entry point of a node process."""
    cfg = read_config(sys.stdin.buffer)
    cfg["parent_pid"] = os.getppid()
    _die_with_parent()
    for p in reversed(cfg.get("sys_path", [])):
        if p not in sys.path:
            sys.path.insert(0, p)
    runner = NodeRunner(cfg)
    signal.signal(signal.SIGTERM, lambda *_: runner.stop_now())
    try:
        runner.run()
    except KeyboardInterrupt:
        pass
    finally:
        zmq.Context.instance().term()


if __name__ == "__main__":
    main()
