"""Worker: connects out to a Manager, runs one process (or thread) per node, relays their reports.

In Python: ``Worker(name).connect(host, port)``. On another machine: ``cp-worker --ip HOST --port PORT
--name NAME --token TOKEN`` (the token is ``manager.token``; or set ``CHIMERA_TOKEN``).
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cloudpickle
import zmq

from . import transport, wire
from .records import files
from .runner import NodeRunner, write_config
from .waker import Waker

log = logging.getLogger("chimera_lab.worker")

HEARTBEAT = 0.5  # seconds between heartbeats (each is also a clock-offset probe)
# a Manager silent this long is considered gone: the worker ends its nodes and exits. 5 s (> the Manager's 3 s
# heartbeat timeout, so a Manager busy for a moment is not given up on) keeps the promise that every worker and
# node process of a killed Manager is gone within 10 s: silence + ending the nodes (≤ 3 s) + exit.
MANAGER_SILENCE = 5.0
NODE_OPS = ("wire", "start", "stop", "record", "tap", "untap", "unwire", "teardown")
PROCESS_MODES = ("process", "thread")


class WorkerError(RuntimeError):
    """A worker could not reach or authenticate with its Manager, or was rejected."""


def _normalize(host: str) -> str:
    return "127.0.0.1" if host in ("localhost", "") else host


def local_address_towards(host: str) -> str:
    """The IP address of the interface that routes to `host` (no packet is sent)."""
    host = _normalize(host)
    if host.startswith("127."):
        return "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((host, 9))
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def probe(host: str, port: int, timeout: float) -> None:
    """Wait until something accepts TCP connections at host:port, or raise WorkerError."""
    deadline = time.monotonic() + timeout
    err: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=min(1.0, timeout)):
                return
        except OSError as exc:
            err = exc
            time.sleep(0.1)
    raise WorkerError(
        f"cannot reach a Manager at {host}:{port} ({err}); check that it runs, and the --ip/--port "
        "you gave (manager.worker_command() prints the right line)"
    )


class _Child:
    """A node process (or thread) this worker started."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes] | None, thread: threading.Thread | None) -> None:
        self.name, self.proc, self.thread = name, proc, thread
        self.expected_exit = False

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self.thread is not None and self.thread.is_alive()

    def exit_code(self) -> int | None:
        return self.proc.returncode if self.proc is not None else 0

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # by PID: a process this worker started


class Worker:
    """Hosts nodes for a Manager: ``Worker(name).connect(host, port)``; ``shutdown()`` ends it."""

    def __init__(self, name: str, mode: str = "process", token: str | None = None,
                 data_host: str | None = None, data_dir: str | os.PathLike[str] | None = None,
                 health_file: str | os.PathLike[str] | None = None, encrypt: bool | None = None) -> None:
        if not isinstance(name, str) or not name or any(c in name for c in " /\\"):
            raise ValueError(f"Worker name must be a non-empty string without spaces or slashes, got {name!r}")
        if mode not in PROCESS_MODES:
            raise ValueError(f"Worker {name!r}: mode must be 'process' or 'thread' (for debugging), got {mode!r}")
        self.name = name
        self.mode = mode
        self.token = token
        #: CurveZMQ for all traffic (the Manager's choice; None: as a Manager of this process, else CHIMERA_ENCRYPT)
        self.encrypt = encrypt
        #: where this worker's nodes record, until the Manager collects it
        self.data_dir = Path(data_dir if data_dir is not None else Path.cwd() / "chimera-data").resolve()
        # replies (and their blobs) from background threads, sent by the loop
        self._outbox: queue.SimpleQueue[tuple[dict[str, Any], tuple[bytes, ...]]] = queue.SimpleQueue()
        #: what tasks keep between calls (`Manager.call`): data shards, models, optimiser state
        self.store: dict[str, Any] = {}
        self._tasks: ThreadPoolExecutor | None = None  # one task at a time: a worker is one compute slot
        self.data_host = data_host
        #: touched at every heartbeat while the Manager answers (a container's health check reads it)
        health_file = health_file if health_file is not None else os.environ.get("CHIMERA_LAB_HEALTH_FILE")
        self.health_file = Path(health_file) if health_file else None
        self.host: str | None = None
        self.port: int | None = None
        self.offset = 0.0
        self.rtt: float | None = None
        self.children: dict[str, _Child] = {}
        self._clock: deque[tuple[float, float]] = deque(maxlen=20)  # (round trip, offset) samples
        self.forged = 0
        self.replayed = 0  # validly signed messages refused as replays
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._welcome = threading.Event()
        self._reject: str | None = None
        self.exit_reason: str | None = None
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()

    # ---------------------------------------------------------------------------------------------
    def connect(self, host: str = "127.0.0.1", port: int = 9000, token: str | None = None,
                timeout: float = 10.0) -> Worker:
        """Connect to the Manager at host:port and register; raise WorkerError if that fails."""
        if self._thread is not None:
            raise WorkerError(f"Worker {self.name!r} is already connected to {self.host}:{self.port}")
        host = _normalize(host)
        key, self.encrypt = self._find_key(host, port, token)
        probe(host, port, timeout)
        self.host, self.port = host, port
        self.signer = wire.Signer(key)
        self._key = key
        self.data_host = self.data_host or local_address_towards(host)
        self._thread = threading.Thread(target=self._run, name=f"chimera-worker-{self.name}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._welcome.wait(0.05):
            if self._reject is not None or not self._thread.is_alive():
                break
            if time.monotonic() > deadline:
                self._reject = (f"the Manager at {host}:{port} did not answer within {timeout:.0f} s: the token "
                                "is probably wrong (use the manager.token of this Manager), or the Manager is "
                                + ("not encrypted (drop --encrypt)" if self.encrypt else
                                   "encrypted (pass --encrypt or CHIMERA_ENCRYPT=1)"))
                break
        if not self._welcome.is_set():
            self._stop.set()
            self._thread.join(5)
            self._thread = None
            raise WorkerError(f"Worker {self.name!r} was not accepted: {self._reject}")
        log.info("Worker %r connected to the Manager at %s:%s", self.name, host, port)
        return self

    def _find_key(self, host: str, port: int, token: str | None) -> tuple[bytes, bool]:
        """The cluster key, and whether to encrypt."""
        from .manager import local_manager_key

        if self.encrypt is None:
            encrypt = os.environ.get("CHIMERA_ENCRYPT", "").strip().lower() not in ("", "0", "no", "false", "off")
        else:
            encrypt = self.encrypt
        token = token or self.token
        if token:
            return wire.key_from_token(token), encrypt
        local = local_manager_key(host, port)
        if local is not None:
            return local[0], local[1] if self.encrypt is None else encrypt
        env_token = os.environ.get("CHIMERA_TOKEN")
        if env_token:
            return wire.key_from_token(env_token), encrypt
        raise WorkerError(
            f"no token to authenticate with the Manager at {host}:{port}: pass token=manager.token "
            "(or --token on the command line), or set CHIMERA_TOKEN"
        )

    @property
    def connected(self) -> bool:
        """Whether the worker is registered with a Manager and running."""
        return self._welcome.is_set() and self._thread is not None and self._thread.is_alive()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop every node this worker runs and disconnect."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout + 2)

    def join(self, timeout: float | None = None) -> None:
        """Wait until the worker ends (the Manager shut it down, or `shutdown` was called)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        where = f"{self.host}:{self.port}" if self.connected else "not connected"
        return f"<Worker {self.name!r} {where}, {len(self.children)} nodes>"

    # ---------------------------------------------------------------------------------------------
    # the worker thread
    # ---------------------------------------------------------------------------------------------
    def _run(self) -> None:
        ctx = self._ctx
        self.dealer = ctx.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.IDENTITY, f"{self.name}:{uuid.uuid4().hex[:8]}".encode())
        self.dealer.setsockopt(zmq.LINGER, 1000)
        transport.client(self.dealer, self._key, bool(self.encrypt))
        # until welcomed: a handshake the Manager refuses says why at once (wrong token, encryption or not)
        handshake = self.dealer.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH
                                                   | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)
        self.dealer.connect(f"tcp://{self.host}:{self.port}")
        self.nodes_sock = ctx.socket(zmq.ROUTER)
        self.nodes_sock.setsockopt(zmq.LINGER, 0)
        self.nodes_guard = transport.serve(self.nodes_sock, self._key, f"worker {self.name!r} (its nodes' socket)",
                                           bool(self.encrypt))
        nport = self.nodes_sock.bind_to_random_port("tcp://127.0.0.1")
        self.nodes_addr = f"tcp://127.0.0.1:{nport}"
        self._waker = Waker(ctx)
        poller = zmq.Poller()
        poller.register(self.dealer, zmq.POLLIN)
        poller.register(self.nodes_sock, zmq.POLLIN)
        poller.register(self._waker.socket, zmq.POLLIN)
        poller.register(handshake, zmq.POLLIN)
        self._send({"op": "hello", "name": self.name, "pid": os.getpid(), "hostname": socket.gethostname(),
                    "cwd": os.getcwd(), "mode": self.mode, "data_host": self.data_host,
                    "data_dir": str(self.data_dir),
                    "python": sys.version.split()[0]})
        last_seen = time.monotonic()
        last_turn = last_seen  # when the loop last ran: a process stopped (SIGSTOP, a debugger) missed the Manager
        next_hb = 0.0
        try:
            while not self._stop.is_set():
                events = dict(poller.poll(100))
                if handshake in events:
                    self._reject = self._handshake_failed(handshake)
                    if self._reject:
                        return
                if self._welcome.is_set() and not handshake.closed:
                    poller.unregister(handshake)
                    self.dealer.disable_monitor()
                    handshake.close(0)
                if self.dealer in events:
                    while True:
                        try:
                            frames = self.dealer.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        if len(frames) >= 2 and frames[0] == b"CHIMERA-REJECT":
                            self._reject = frames[1].decode(errors="replace")
                            return
                        try:
                            msg, blobs = wire.decode_control(self.signer, frames)
                        except wire.ReplayError:
                            self.replayed += 1
                            continue
                        except wire.AuthError:
                            self.forged += 1
                            continue
                        last_seen = time.monotonic()
                        self._handle(msg, blobs, frames)
                if self._waker.socket in events:
                    self._waker.drain()
                    while not self._outbox.empty():
                        reply, reply_blobs = self._outbox.get()
                        self.dealer.send_multipart(wire.encode_control(self.signer, reply, reply_blobs))
                if self.nodes_sock in events:
                    while True:
                        try:
                            frames = self.nodes_sock.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        # node reports go to the Manager as they are: it checks their signatures
                        self.dealer.send_multipart(frames[1:])
                now = time.monotonic()
                if now >= next_hb:
                    next_hb = now + HEARTBEAT
                    self._send({"op": "ping", "t1": time.time()})
                    self._watch_children()
                    if self.health_file is not None and self._welcome.is_set() and now - last_seen < 2 * HEARTBEAT + 1:
                        self.health_file.touch()
                if now - last_turn > 1.0:  # this process was not running: that was not the Manager's silence
                    last_seen += now - last_turn
                last_turn = now
                if self._welcome.is_set() and now - last_seen > MANAGER_SILENCE:
                    self.exit_reason = f"lost contact with the Manager at {self.host}:{self.port}"
                    log.error("Worker %r: %s; stopping its nodes", self.name, self.exit_reason)
                    return
        finally:
            self._teardown_children()
            if self._tasks is not None:  # a running task is abandoned (its thread is a daemon's, see _call)
                self._tasks.shutdown(wait=False, cancel_futures=True)
            self._send({"op": "bye"})
            if not handshake.closed:
                handshake.close(0)
            self.dealer.close(500)
            self.nodes_sock.close(0)
            self._waker.close()

    def _handshake_failed(self, monitor: zmq.Socket[bytes]) -> str | None:
        """Why the Manager refused this worker's handshake (None: no refusal among the events)."""
        while monitor.poll(0):
            event = int.from_bytes(monitor.recv_multipart()[0][:2], "little")
            where = f"the Manager at {self.host}:{self.port}"
            if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                return f"{where} refused this worker's credentials: the token does not match (use manager.token)"
            if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                if self.encrypt:
                    return (f"{where} did not complete an encrypted handshake: the token does not match, or that "
                            "Manager is not encrypted (drop --encrypt / CHIMERA_ENCRYPT)")
                return (f"{where} refused a plain handshake: it is encrypted (Manager(encrypt=True)); pass "
                        "--encrypt or set CHIMERA_ENCRYPT=1")
        return None

    def _send(self, msg: dict[str, Any]) -> None:
        frames = wire.encode_control(self.signer, msg)
        if self._welcome.is_set():
            self.dealer.send_multipart(frames)
            return
        try:  # not welcomed yet: a handshake the Manager refused leaves no connection, and a send would block
            self.dealer.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            pass  # the handshake monitor says why (see _handshake_failed)

    def _handle(self, msg: dict[str, Any], blobs: list[bytes], frames: list[bytes]) -> None:
        op = msg["op"]
        if op == "pong":
            t3 = time.time()
            # NTP-style: the sample with the smallest round trip of the recent ones bounds the error best
            self._clock.append((t3 - msg["t1"], msg["t2"] - (msg["t1"] + t3) / 2))
            self.rtt, offset = min(self._clock)
            if abs(offset - self.offset) > 20e-6:
                self.offset = offset
                for name in self.children:
                    self._to_node(name, {"op": "clock", "offset": offset})
            self._send({"op": "clock", "offset": self.offset, "rtt": self.rtt})
        elif op == "welcome":
            self._welcome.set()
            for _ in range(4):  # quick clock probes right away
                self._send({"op": "ping", "t1": time.time()})
        elif op == "reject":
            self._reject = msg.get("reason", "rejected")
            self._stop.set()
        elif op == "spawn":
            self._spawn(msg, blobs[0])
        elif op in NODE_OPS:
            child = self.children.get(msg["node"])
            if child is not None:
                if op == "teardown":
                    child.expected_exit = True
                self.nodes_sock.send_multipart([msg["node"].encode(), *frames])
            elif "id" in msg:
                self._send({"op": "reply", "re": msg["id"], "ok": op == "teardown",
                            "error": f"worker {self.name!r} runs no node {msg['node']!r}"})
        elif op == "kill":
            child = self.children.get(msg["node"])
            if child is not None:
                child.expected_exit = True
                child.kill()
        elif op == "reset":  # re-admitted after being lost: the graph went on without its nodes, so they end
            for name, child in self.children.items():
                child.expected_exit = True
                self._to_node(name, {"op": "teardown"})
        elif op == "shutdown":
            self.exit_reason = "the Manager shut down"
            self._stop.set()
        elif op == "files":  # hashing may take seconds: off the loop, so heartbeats go on
            threading.Thread(target=self._in_background, args=(msg, files.list_session), daemon=True).start()
        elif op == "fetch":
            try:
                blob = files.read_chunk(self.data_dir, msg["session"], msg["path"], msg["offset"], msg["size"])
                self._send_blob({"op": "reply", "re": msg["id"], "ok": True, "size": len(blob)}, blob)
            except (OSError, ValueError) as exc:
                self._send({"op": "reply", "re": msg["id"], "ok": False, "error": str(exc)})
        elif op == "forget":
            threading.Thread(target=self._in_background, args=(msg, files.forget), daemon=True).start()
        elif op == "call":
            if self._tasks is None:
                self._tasks = ThreadPoolExecutor(1, thread_name_prefix=f"chimera-task-{self.name}")
            self._tasks.submit(self._call, msg, blobs[0])

    def _send_blob(self, msg: dict[str, Any], blob: bytes) -> None:
        # a file chunk: never parsed, and its file's SHA-256 (in the signed listing) is checked at the end
        self.dealer.send_multipart(wire.encode_control(self.signer, msg, (blob,), digest_blobs=True))

    def _in_background(self, msg: dict[str, Any], fn: Callable[[Path, dict[str, Any]], dict[str, Any]]) -> None:
        """Run fn(data_dir, msg) on this thread and send its answer from the worker loop."""
        try:
            reply = {"op": "reply", "re": msg["id"], "ok": True, **fn(self.data_dir, msg)}
        except Exception as exc:
            reply = {"op": "reply", "re": msg["id"], "ok": False, "error": f"worker {self.name!r}: {exc}"}
        self._outbox.put((reply, ()))
        self._waker.wake()

    def _call(self, msg: dict[str, Any], blob: bytes) -> None:
        """Run a task the Manager sent (`Manager.call`): fn(worker, *args, **kwargs), its result pickled back.
        The message was verified (signed by the cluster key) before this unpickles it."""
        try:
            fn, args, kwargs = cloudpickle.loads(blob)
            result = cloudpickle.dumps(fn(self, *args, **kwargs), protocol=5)
            reply: dict[str, Any] = {"op": "reply", "re": msg["id"], "ok": True}
            blobs: tuple[bytes, ...] = (result,)
        except BaseException as exc:  # the task's failure is the caller's to see, with its traceback
            reply = {"op": "reply", "re": msg["id"], "ok": False, "error": f"{type(exc).__name__}: {exc}",
                     "traceback": traceback.format_exc()}
            blobs = ()
        self._outbox.put((reply, blobs))
        self._waker.wake()

    def _to_node(self, name: str, msg: dict[str, Any]) -> None:
        self.nodes_sock.send_multipart([name.encode(), *wire.encode_control(self.signer, msg)])

    def _spawn(self, msg: dict[str, Any], blob: bytes) -> None:
        name = msg["name"]
        old = self.children.pop(name, None)
        if old is not None:
            old.expected_exit = True
            old.kill()
        cfg = {**msg["config"], "name": name, "node": blob, "key": self._key, "encrypt": self.encrypt,
               "req": msg["id"],
               "worker_addr": self.nodes_addr, "bind_host": self.data_host, "clock_offset": self.offset,
               "data_dir": str(self.data_dir),
               "sys_path": [p for p in sys.path if p]}
        if self.mode == "thread":
            runner = NodeRunner(cfg, self._ctx)
            t = threading.Thread(target=runner.run, name=f"chimera-node-{name}", daemon=True)
            t.start()
            self.children[name] = _Child(name, None, t)
            return
        try:
            proc = subprocess.Popen([sys.executable, "-c", "from chimera_lab.runner import main; main()"],
                                    stdin=subprocess.PIPE, cwd=os.getcwd())
            assert proc.stdin is not None
            write_config(proc.stdin, cfg)
            proc.stdin.close()
        except Exception as exc:
            self._send({"op": "reply", "re": msg["id"], "ok": False, "node": name,
                        "error": f"worker {self.name!r} could not start a process for node {name!r}: {exc}"})
            return
        self.children[name] = _Child(name, proc, None)

    def _watch_children(self) -> None:
        for name, child in list(self.children.items()):
            if child.alive():
                continue
            del self.children[name]
            if not child.expected_exit:
                code = child.exit_code()
                self._send({"op": "node_exit", "node": name, "code": code})

    def _teardown_children(self) -> None:
        for name, child in self.children.items():
            child.expected_exit = True
            try:
                self._to_node(name, {"op": "teardown"})
            except zmq.ZMQError:
                pass
        deadline = time.monotonic() + 3.0
        while any(c.alive() for c in self.children.values()) and time.monotonic() < deadline:
            # keep relaying final reports while nodes tear down
            try:
                frames = self.nodes_sock.recv_multipart(zmq.NOBLOCK)
                self.dealer.send_multipart(frames[1:])
            except zmq.Again:
                time.sleep(0.01)
        for c in self.children.values():
            c.kill()
            if c.proc is not None:
                c.proc.wait(2)
        self.children.clear()


# -------------------------------------------------------------------------------------------------
# cp-worker / chimera-worker
# -------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """Run a worker from the command line until the Manager shuts it down or Ctrl-C."""
    p = argparse.ArgumentParser(prog="cp-worker", description="Run a chimera_lab worker for a Manager.")
    p.add_argument("--ip", "--host", dest="host", default="127.0.0.1", help="the Manager's address")
    p.add_argument("--port", type=int, default=9000, help="the Manager's port (default 9000)")
    p.add_argument("--name", help="this worker's unique name (default: CHIMERA_LAB_WORKER_NAME, else host-pid)")
    p.add_argument("--token", default=None,
                   help="the Manager's token (manager.token); better: set CHIMERA_TOKEN, or CHIMERA_TOKEN_FILE to "
                        "a file holding it, so it is not on the command line")
    p.add_argument("--encrypt", action="store_true", default=None,
                   help="encrypt all traffic (CurveZMQ), for a Manager made with encrypt=True (or CHIMERA_ENCRYPT=1)")
    p.add_argument("--mode", choices=PROCESS_MODES, default="process", help="a process per node, or threads")
    p.add_argument("--data-host", default=None,
                   help="address to bind node inputs on (default: the one facing the Manager)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the Manager (default 10)")
    p.add_argument("--data-dir", default=None,
                   help="where recordings wait to be collected (default: ./chimera-data)")
    p.add_argument("--health-file", default=None,
                   help="a file touched every heartbeat while the Manager answers (for container health checks)")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    p.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors")
    args = p.parse_args(argv)
    args.name = args.name or os.environ.get("CHIMERA_LAB_WORKER_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(message)s")
    token = args.token or os.environ.get("CHIMERA_TOKEN")
    token_file = os.environ.get("CHIMERA_TOKEN_FILE")
    if not token and token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            print(f"cp-worker: cannot read the token from CHIMERA_TOKEN_FILE={token_file}: {exc}", file=sys.stderr)
            return 2
    if not token:
        print("cp-worker: no token; set CHIMERA_TOKEN (or CHIMERA_TOKEN_FILE), or pass --token (printed by "
              "manager.worker_command())", file=sys.stderr)
        return 2
    worker = Worker(args.name, mode=args.mode, token=token, data_host=args.data_host, data_dir=args.data_dir,
                    health_file=args.health_file, encrypt=args.encrypt)
    signal.signal(signal.SIGTERM, lambda *_: worker.shutdown())
    try:
        worker.connect(args.host, args.port, timeout=args.timeout)
    except (WorkerError, ValueError) as exc:
        print(f"cp-worker: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"cp-worker {args.name!r} connected to the Manager at {args.host}:{args.port}", flush=True)
    try:
        while worker.connected:
            worker.join(0.2)
    except KeyboardInterrupt:
        print("cp-worker: interrupted, stopping nodes", file=sys.stderr)
        worker.shutdown()
        return 0
    if worker.exit_reason and worker.exit_reason.startswith("lost"):
        print(f"cp-worker: {worker.exit_reason}", file=sys.stderr)
        return 3
    print(f"cp-worker {args.name!r}: {worker.exit_reason or 'stopped'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
