"""Manager: the control plane. Workers connect to its ROUTER; it commits graphs, starts, stops, watches.

Its loop runs on a daemon thread, so the public API (synchronous, like the seed's) never blocks a
notebook longer than the operation asked for. Data never passes through it, except what a `tap` asks for.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cloudpickle
import networkx as nx
import zmq

from . import transport, wire
from .datachunk import DataChunk
from .graph import Graph, GraphError
from .records.collect import SessionState, new_session
from .runner import ALL_HWM
from .waker import Waker

if TYPE_CHECKING:
    from .cluster.base import Launcher

log = logging.getLogger("chimera_lab.manager")

HEARTBEAT_TIMEOUT = 3.0  # a worker silent this long is lost
EVENT_PERIOD = 0.25  # metrics events at most this often (4 Hz)
_LOCAL: dict[tuple[str, int], tuple[bytes, bool]] = {}  # this process's Managers: (key, encrypt) for in-process workers
_MANAGERS: weakref.WeakSet[Manager] = weakref.WeakSet()


def managers() -> list[Manager]:
    """The Managers of this process that are not shut down (a displayed Graph finds the one running it)."""
    return [m for m in list(_MANAGERS) if not m._closing.is_set()]


def local_manager_key(host: str, port: int) -> tuple[bytes, bool] | None:
    """The (key, encrypt) of a Manager running in this process at host:port (or on all interfaces), if any."""
    host = "127.0.0.1" if host in ("localhost", "") else host
    return _LOCAL.get((host, port)) or _LOCAL.get(("0.0.0.0", port))


def send_by_value(module: Any) -> None:
    """Ship the classes of `module` by value, so workers that cannot import it still run its nodes."""
    cloudpickle.register_pickle_by_value(module)


class ManagerError(RuntimeError):
    """A Manager operation failed; the message says what and what to do."""


class TaskError(RuntimeError):
    """A task run with `Manager.call` raised on its worker (``remote_traceback`` has the worker's traceback), or
    its worker was lost."""

    remote_traceback: str | None = None


class CommitError(ManagerError):
    """A node could not be started; `.node` names it and `.remote_traceback` holds the worker's traceback."""

    def __init__(self, message: str, node: str | None = None, remote_traceback: str | None = None) -> None:
        super().__init__(message)
        self.node = node
        self.remote_traceback = remote_traceback


@dataclass
class WorkerInfo:
    """What the Manager knows of one worker."""

    name: str
    ident: bytes
    hostname: str = ""
    pid: int = 0
    cwd: str = ""
    mode: str = "process"
    data_host: str = "127.0.0.1"  # where the worker's nodes listen (and which way it lies from here)
    state: str = "connected"
    last_seen: float = 0.0
    offset: float = 0.0
    rtt: float | None = None
    nodes: list[str] = field(default_factory=list)
    ended: bool = False  # its launcher saw it end: late messages from it do not bring it back


@dataclass
class NodeInfo:
    """What the Manager knows of one node."""

    name: str
    worker: str
    kind: str
    state: str = "spawning"
    pid: int | None = None
    inputs: dict[str, str] = field(default_factory=dict)  # upstream name -> address this node listens on
    metrics: dict[str, Any] = field(default_factory=dict)
    errors: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=20))
    error_count: int = 0


class Manager:
    """Commits a Graph onto connected Workers and starts, stops and watches it.

    ``Manager(host="127.0.0.1", port=9000)``: if the port is taken another free one is used (and
    logged); ``port=0`` takes any free port. ``token`` fixes the cluster key (default: a new random one).
    ``logdir`` is where recorded sessions are written (default ``./chimera-logs``, created only when
    something is recorded). ``queue_bound`` is how many messages an "all" edge holds at each end before its
    producer waits (memory per edge ≈ 2 × queue_bound × message size); it applies to graphs committed later.

    Every connection must present credentials derived from the token at the handshake (see `transport`);
    ``encrypt=True`` also encrypts all traffic with CurveZMQ (workers then need ``--encrypt`` or
    ``CHIMERA_ENCRYPT=1``; the launchers pass it on): recommended whenever traffic leaves this machine.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 9000, logdir: str | os.PathLike[str] | None = None,
                 token: str | None = None, heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
                 queue_bound: int = ALL_HWM, encrypt: bool = False) -> None:
        if isinstance(queue_bound, bool) or not isinstance(queue_bound, int) or queue_bound < 1:
            raise ValueError(f"queue_bound must be a whole number of messages ≥ 1, got {queue_bound!r}")
        self.queue_bound = queue_bound
        self.host = "127.0.0.1" if host == "localhost" else host
        self._key = wire.key_from_token(token) if token else wire.new_key()
        self.signer = wire.Signer(self._key)
        self.logdir = Path(logdir) if logdir is not None else Path.cwd() / "chimera-logs"
        self.heartbeat_timeout = heartbeat_timeout
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self.encrypt = bool(encrypt)
        transport.raise_open_file_limit()  # a flood of connections must not starve the pipeline of descriptors
        self._router = self.ctx.socket(zmq.ROUTER)
        self._router.setsockopt(zmq.LINGER, 0)
        self._router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self._guard = transport.serve(self._router, self._key, f"Manager at {self.host}", self.encrypt)
        self.port = self._bind(port)
        self._guard.what = f"Manager at {self.host}:{self.port}"
        self._lock = threading.RLock()
        self.workers: dict[str, WorkerInfo] = {}
        self._by_ident: dict[bytes, str] = {}
        self.nodes: dict[str, NodeInfo] = {}
        self.graph: Graph | None = None
        self.mapping: dict[str, list[str]] = {}
        self.session: SessionState | None = None  # the session being recorded since the last commit
        self._panel: Any = None  # the ClusterPanel shown when this Manager is displayed in a notebook
        self.state = "idle"
        self.forged = 0
        self.replayed = 0  # validly signed messages refused because they were seen before (replays)
        self._data_signer = self.signer  # the committed graph's data-plane signer (see commit_graph)
        self._rejected: set[bytes] = set()
        self._pending: dict[str, tuple[Future[dict[str, Any]], str | None, str]] = {}
        self._ids = itertools.count(1)
        self._subscribers: list[Callable[[dict[str, Any]], None]] = []
        self._launchers: list[Launcher] = []  # whose workers joined via add_workers: closed with the Manager
        self.addresses = [self.host]  # where the ROUTER listens (see listen)
        self._metrics_dirty = False
        self._calls: deque[Callable[[], object]] = deque()
        self._waker = Waker(self.ctx)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"chimera-manager-{self.port}", daemon=True)
        self._thread.start()
        _LOCAL[(self.host, self.port)] = (self._key, self.encrypt)
        _MANAGERS.add(self)
        log.info("Server started at Port %d", self.port)

    def listen(self, host: str) -> None:
        """Also accept workers on `host` (the same port), e.g. the gateway of a Docker bridge network, so the
        Manager is reachable there without listening on every interface."""
        if host in self.addresses:
            return
        done: Future[None] = Future()

        def bind() -> None:
            try:
                self._router.bind(f"tcp://{host}:{self.port}")
                done.set_result(None)
            except zmq.ZMQError as exc:
                done.set_exception(ManagerError(f"the Manager cannot also listen on {host}:{self.port}: {exc}"))

        self._call(bind)
        done.result(10)
        self.addresses.append(host)
        log.info("Manager: also listening on %s:%d", host, self.port)

    def _bind(self, port: int) -> int:
        if port:
            try:
                self._router.bind(f"tcp://{self.host}:{port}")
                return port
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EADDRINUSE:
                    raise ManagerError(f"cannot listen on {self.host}:{port}: {exc}") from None
                chosen = self._router.bind_to_random_port(f"tcp://{self.host}")
                log.warning("Port %d is taken; the Manager uses port %d instead", port, chosen)
                return chosen
        return self._router.bind_to_random_port(f"tcp://{self.host}")

    # ---------------------------------------------------------------------------------------------
    # identity and how to join
    # ---------------------------------------------------------------------------------------------
    @property
    def token(self) -> str:
        """The secret a remote worker presents (``cp-worker --token`` or ``CHIMERA_TOKEN``)."""
        return self._key.hex()

    def worker_command(self, name: str = "remote") -> str:
        """The exact ``cp-worker`` line to run on another machine to join this Manager."""
        encrypt = " --encrypt" if self.encrypt else ""
        return f"cp-worker --ip {self.host} --port {self.port} --name {name} --token {self.token}{encrypt}"

    def worker_environment(self) -> dict[str, str]:
        """The environment a worker process needs to join this Manager (its token, and whether to encrypt)."""
        return {"CHIMERA_TOKEN": self.token, **({"CHIMERA_ENCRYPT": "1"} if self.encrypt else {})}

    def __enter__(self) -> Manager:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def __copy__(self) -> Manager:
        return self  # a handle on a running service: a copy is the same Manager (scikit-learn's clone copies params)

    def __deepcopy__(self, memo: dict[int, Any]) -> Manager:
        return self

    def __repr__(self) -> str:
        return f"<Manager {self.host}:{self.port} {self.state}, workers: {', '.join(self.workers) or 'none'}>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        """In a notebook: the live cluster panel (one per Manager), with an HTML summary for saved notebooks."""
        try:
            from .jupyter.widgets import ClusterPanel
        except ImportError:  # no widget libraries: text only
            return {"text/plain": repr(self)}
        if self._panel is None or self._panel.comm is None:  # a closed panel has no comm
            self._panel = ClusterPanel(self)
        return self._panel._repr_mimebundle_(include=include, exclude=exclude)

    # ---------------------------------------------------------------------------------------------
    # calls into the loop thread
    # ---------------------------------------------------------------------------------------------
    def _call(self, fn: Callable[[], object]) -> None:
        if self._closing.is_set():
            raise ManagerError("this Manager has been shut down; create a new one")
        self._calls.append(fn)
        self._waker.wake()

    def _request(self, worker: str, msg: dict[str, Any], blobs: tuple[bytes, ...] = ()) -> Future[dict[str, Any]]:
        fut: Future[dict[str, Any]] = Future()
        rid = f"r{next(self._ids)}"
        msg = {**msg, "id": rid}

        def send() -> None:
            self._pending[rid] = (fut, msg.get("node") or msg.get("name"), worker)
            if not self._send(worker, msg, blobs):
                self._pending.pop(rid, None)
                fut.set_result({"ok": False, "error": f"worker {worker!r} is not connected"})

        self._call(send)
        return fut

    def call(self, worker: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        """Run ``fn(w, *args, **kwargs)`` on `worker`, where `w` is that Worker (``w.store`` is a dict kept
        between calls, for data shards and models). Returns a Future of its result. `fn` and the arguments travel
        by value (cloudpickle, signed); a worker runs one task at a time, in a thread beside its nodes. The
        Future fails with TaskError (with the worker's traceback) if `fn` raised or the worker was lost."""
        blob = cloudpickle.dumps((fn, args, kwargs), protocol=5)
        out: Future[Any] = Future()

        def done(reply_fut: Future[dict[str, Any]]) -> None:
            if not out.set_running_or_notify_cancel():
                return  # the caller cancelled it (a fit that gave up on this worker): nobody wants the result
            reply = reply_fut.result()
            if reply.get("ok"):
                try:
                    # the reply was signed by a worker holding the cluster key (checked before we got here)
                    out.set_result(cloudpickle.loads(reply["_blobs"][0]))
                except Exception as exc:
                    out.set_exception(TaskError(f"worker {worker!r}: the result could not be read: {exc}"))
            else:
                err = TaskError(f"worker {worker!r}: {reply.get('error')}")
                err.remote_traceback = reply.get("traceback")
                out.set_exception(err)

        self._request(worker, {"op": "call"}, (blob,)).add_done_callback(done)
        return out

    def _send(self, worker: str, msg: dict[str, Any], blobs: tuple[bytes, ...] = ()) -> bool:
        """Send to a worker (loop thread only); False if it is not reachable."""
        info = self.workers.get(worker)
        if info is None or info.state != "connected":
            return False
        try:
            self._router.send_multipart([info.ident, *wire.encode_control(self.signer, msg, blobs)])
            return True
        except zmq.ZMQError:
            return False

    def _to_node(self, node: str, msg: dict[str, Any]) -> None:
        """Send a command to a node through its worker (any thread)."""
        info = self.nodes.get(node)
        if info is not None:
            self._call(lambda: self._send(info.worker, {**msg, "node": node}))

    def _wait(self, futures: Mapping[str, Future[dict[str, Any]]], timeout: float,
              what: str) -> dict[str, dict[str, Any]]:
        """Replies by node; a node that does not answer in time gets an error reply."""
        deadline = time.monotonic() + timeout
        out = {}
        for node, fut in futures.items():
            try:
                out[node] = fut.result(max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                out[node] = {"ok": False, "error": f"no answer to {what} within {timeout:.0f} s"}
        return out

    # ---------------------------------------------------------------------------------------------
    # the loop (background thread)
    # ---------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._waker.socket, zmq.POLLIN)
        next_tick = 0.0
        try:
            while not self._closing.is_set():
                events = dict(poller.poll(50))
                if self._waker.socket in events:
                    self._waker.drain()
                while self._calls:
                    try:
                        self._calls.popleft()()
                    except Exception:
                        log.exception("Manager: internal call failed")
                if self._router in events:
                    for _ in range(1000):
                        try:
                            frames = self._router.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        try:
                            self._on_message(frames)
                        except Exception:
                            log.exception("Manager: failed to handle a message")
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + EVENT_PERIOD
                    self._tick(now)
        finally:
            for fut, _, _ in self._pending.values():
                if not fut.done():
                    fut.set_result({"ok": False, "error": "the Manager shut down"})
            self._router.close(0)

    def _on_message(self, frames: list[bytes]) -> None:
        ident = frames[0]
        try:
            msg, blobs = wire.decode_control(self.signer, frames[1:])
        except wire.ReplayError as exc:
            with self._lock:
                self.replayed += 1
            if self.replayed <= 3 or self.replayed % 1000 == 0:
                log.warning("Manager: refused a replayed message (%d so far): %s", self.replayed, exc)
            return
        except wire.AuthError:
            with self._lock:
                self.forged += 1
            if ident not in self._by_ident and ident not in self._rejected:
                if len(self._rejected) > 10_000:  # a flood from many identities must not grow memory
                    self._rejected.clear()
                self._rejected.add(ident)
                reason = b"the token does not match this Manager's (use manager.token)"
                try:
                    self._router.send_multipart([ident, b"CHIMERA-REJECT", reason])
                except zmq.ZMQError:
                    pass
            if self.forged <= 3 or self.forged % 1000 == 0:
                log.warning("Manager: dropped an unsigned or forged message (%d so far)", self.forged)
            return
        msg["_blobs"] = blobs  # always: a "_blobs" key of the header itself never stands for frames
        op = msg["op"]
        if op == "hello":
            self._on_hello(ident, msg)
            return
        wname = self._by_ident.get(ident)
        if wname is None:
            return
        worker = self.workers[wname]
        if worker.ended:
            return  # sent before its process, container or job ended, and read after its launcher said so
        worker.last_seen = time.monotonic()
        if worker.state == "lost" and op != "bye":  # (a goodbye is not a comeback: it disconnects below)
            self._readmit(worker)
        handler = getattr(self, f"_on_{op}", None)
        if handler is not None:
            handler(worker, msg)

    def _on_hello(self, ident: bytes, msg: dict[str, Any]) -> None:
        name = msg["name"]
        with self._lock:
            old = self.workers.get(name)
            if old is not None and old.state == "connected" and old.ident != ident:
                self._router.send_multipart([ident, *wire.encode_control(
                    self.signer, {"op": "reject", "reason": f"a worker named {name!r} is already connected; "
                                  "choose another --name"})])
                return
            if old is not None:
                self._by_ident.pop(old.ident, None)
            self.workers[name] = WorkerInfo(name=name, ident=ident, hostname=msg.get("hostname", ""),
                                            pid=msg.get("pid", 0), cwd=msg.get("cwd", ""),
                                            mode=msg.get("mode", "process"),
                                            data_host=msg.get("data_host", "127.0.0.1"), last_seen=time.monotonic())
            self._by_ident[ident] = name
        self._send(name, {"op": "welcome"})
        log.info("Manager: worker %r connected (pid %s on %s)", name, msg.get("pid"), msg.get("hostname"))
        self._emit({"type": "worker", "worker": name, "state": "connected"})

    def _on_ping(self, worker: WorkerInfo, msg: dict[str, Any]) -> None:
        self._send(worker.name, {"op": "pong", "t1": msg["t1"], "t2": time.time()})

    def _on_clock(self, worker: WorkerInfo, msg: dict[str, Any]) -> None:
        worker.offset, worker.rtt = msg["offset"], msg["rtt"]

    def _on_reply(self, worker: WorkerInfo, msg: dict[str, Any]) -> None:
        entry = self._pending.pop(msg["re"], None)
        if entry is not None and not entry[0].done():
            entry[0].set_result(msg)

    def _on_state(self, worker: WorkerInfo, msg: dict[str, Any]) -> None:
        info = self.nodes.get(msg["node"])
        if info is not None and info.state == "lost":
            return  # sent before its worker was lost and came back (see _readmit): the node stays lost
        self._set_node_state(msg["node"], msg["state"])

    def _on_metrics(self, worker: WorkerInfo, msg: dict[str, Any]) -> None:
        info = self.nodes.get(msg["node"])
        if info is not None:
            with self._lock:
                info.metrics = msg
            self._metrics_dirty = True

    def _on_error(self, worker: WorkerInfo, msg: dict[str, Any]) -> None:
        info = self.nodes.get(msg["node"])
        if info is None:
            return
        entry = {"time": time.time(), "error": msg["error"], "traceback": msg.get("tb", "")}
        if msg.get("recording") and self.session is not None:
            self.session.errors.append({"node": info.name, "worker": worker.name, **entry})
        with self._lock:
            info.errors.append(entry)
            info.error_count = msg.get("count", info.error_count + 1)
        if info.error_count <= 3 or info.error_count % 100 == 0:
            log.error("node %r on worker %r: %s (%d errors so far)\n%s", info.name, worker.name, msg["error"],
                      info.error_count, msg.get("tb", ""))
        self._emit({"type": "error", "node": info.name, "error": msg["error"], "traceback": msg.get("tb", ""),
                    "count": info.error_count})

    def _on_node_exit(self, worker: WorkerInfo, msg: dict[str, Any]) -> None:
        node = msg["node"]
        error = f"the process of node {node!r} on worker {worker.name!r} exited unexpectedly (code {msg['code']})"
        for rid, (fut, target, _) in list(self._pending.items()):
            if target == node and not fut.done():
                del self._pending[rid]
                fut.set_result({"ok": False, "error": error})
        info = self.nodes.get(node)
        if info is not None:
            self._on_error(worker, {"node": node, "error": error})
            self._set_node_state(node, "crashed")
            self._peers_lost([node])

    def _on_bye(self, worker: WorkerInfo, msg: dict[str, Any]) -> None:
        worker.state = "disconnected"
        self._worker_gone(worker, "disconnected")

    def _tick(self, now: float) -> None:
        for w in list(self.workers.values()):
            if w.state == "connected" and now - w.last_seen > self.heartbeat_timeout:
                log.error("Manager: worker %r silent for %.1f s: lost", w.name, now - w.last_seen)
                w.state = "lost"
                self._emit({"type": "worker", "worker": w.name, "state": "lost"})
                self._worker_gone(w, "lost")
        if self._metrics_dirty:
            self._metrics_dirty = False
            self._emit({"type": "metrics", "metrics": self.metrics()})

    def _worker_gone(self, worker: WorkerInfo, state: str) -> None:
        lost = [n for n, i in self.nodes.items() if i.worker == worker.name and i.state not in ("finished",)]
        for n in lost:
            self._set_node_state(n, "lost")
        for rid, (fut, _, wname) in list(self._pending.items()):
            if wname == worker.name and not fut.done():
                del self._pending[rid]
                fut.set_result({"ok": False, "error": f"worker {worker.name!r} was {state}"})
        self._peers_lost(lost)

    def _readmit(self, worker: WorkerInfo) -> None:
        """A worker reported lost speaks again (it was stopped or cut off, not dead): it is connected again, and
        empty. The graph went on without its nodes (their neighbours were unwired), so they stay lost, the worker
        ends their processes, and it takes work again at the next commit_graph."""
        ended = [n for n, i in self.nodes.items() if i.worker == worker.name and i.state == "lost"]
        worker.state, worker.nodes = "connected", []
        reason = (f"worker {worker.name!r} was lost and came back: re-admitted without its nodes (the graph went on "
                  "without them); commit_graph again to give it work")
        log.warning("Manager: %s; ended: %s", reason, ", ".join(ended) or "none")
        self._send(worker.name, {"op": "reset"})
        for n in ended:
            self._on_error(worker, {"node": n, "error": f"node {n!r} was ended: {reason}"})
        self._emit({"type": "worker", "worker": worker.name, "state": "connected", "readmitted": True,
                    "reason": reason})

    def _peers_lost(self, lost: list[str]) -> None:
        """Tell the live neighbours of lost nodes to stop sending to / waiting for them."""
        if self.graph is None:
            return
        for name in lost:
            try:
                node = self.graph.get_node(name)
            except KeyError:
                continue
            for peer in itertools.chain(self.graph.predecessors(node), self.graph.successors(node)):
                info = self.nodes.get(peer.name)
                if info is not None and info.state not in ("lost", "crashed"):
                    self._send(info.worker, {"op": "unwire", "node": peer.name, "peer": name})

    def _set_node_state(self, node: str, state: str) -> None:
        info = self.nodes.get(node)
        if info is None or info.state == state:
            return
        with self._lock:
            info.state = state
        self._emit({"type": "node", "node": node, "state": state})

    # ---------------------------------------------------------------------------------------------
    # events
    # ---------------------------------------------------------------------------------------------
    def subscribe(self, callback: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Call `callback(event)` on every state, error and (≤ 4 Hz) metrics event; returns an unsubscribe."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def _emit(self, event: dict[str, Any]) -> None:
        event["time"] = time.time()
        for cb in list(self._subscribers):
            try:
                cb(event)
            except Exception:
                log.exception("Manager: an event subscriber failed")

    # ---------------------------------------------------------------------------------------------
    # the public lifecycle
    # ---------------------------------------------------------------------------------------------
    def add_workers(self, launcher: Launcher) -> Launcher:
        """Start a launcher's workers for this Manager (``manager.add_workers(cp.DockerCluster(2))``) and return
        it; they end when the Manager shuts down. The launcher never shuts this Manager down."""
        from .cluster.base import Launcher

        if not isinstance(launcher, Launcher):
            raise TypeError(f"add_workers needs a launcher (LocalCluster, DockerCluster, SlurmCluster, SwarmCluster "
                            f"or another chimera_lab.cluster.Launcher), got {type(launcher).__name__}")
        if self._closing.is_set():
            raise ManagerError("this Manager has been shut down; create a new one")
        if launcher not in self._launchers:
            self._launchers.append(launcher)
        launcher.start(self)
        return launcher

    @property
    def launchers(self) -> list[Launcher]:
        """The launchers whose workers joined this Manager (their workers end when it shuts down)."""
        return list(self._launchers)

    def remove_launcher(self, launcher: Launcher) -> None:
        """Forget a launcher (its ``close()`` calls this); its workers are no longer ended by `shutdown`."""
        if launcher in self._launchers:
            self._launchers.remove(launcher)

    def worker_lost(self, name: str, reason: str) -> None:
        """A launcher saw worker `name` end (its container died, its process exited, its job was cancelled):
        report it lost now, rather than when its heartbeats are missed, with the launcher's reason. A worker
        that said goodbye as it was ended (a job's SIGTERM) is marked lost too: nobody asked it to leave."""

        def lost() -> None:
            w = self.workers.get(name)
            if w is not None and w.state in ("connected", "disconnected", "lost"):
                w.ended = True
            if w is not None and w.state in ("connected", "disconnected"):
                log.error("Manager: worker %r lost: %s", name, reason)
                was, w.state = w.state, "lost"
                self._emit({"type": "worker", "worker": name, "state": "lost", "reason": reason})
                if was == "connected":
                    self._worker_gone(w, "lost")

        try:
            self._call(lost)
        except ManagerError:
            pass

    def logs(self, worker: str, tail: int | None = 200) -> str:
        """The last `tail` lines (all if None) of a worker's log, from the launcher that started it."""
        if worker not in self.workers:
            raise ManagerError(f"no worker named {worker!r}; workers: {', '.join(self.workers) or 'none'}")
        for launcher in self._launchers:
            if worker in launcher.worker_names:
                return str(launcher.logs(worker, tail=tail))
        raise ManagerError(f"worker {worker!r} was not started by a launcher of this Manager (cp-worker started by "
                           "hand, or a Worker in a script): its log is where it runs")

    def wait_for_workers(self, names: Iterable[str], timeout: float = 10.0) -> None:
        """Block until every named worker is connected."""
        names = list(names)
        deadline = time.monotonic() + timeout
        while True:
            missing = [n for n in names if n not in self.workers or self.workers[n].state != "connected"]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise ManagerError(f"workers not connected after {timeout:.0f} s: {', '.join(missing)}")
            time.sleep(0.02)

    def commit_graph(self, graph: Graph, mapping: Mapping[str, Iterable[Any]], timeout: float = 60.0) -> None:
        """Start every node on its worker and wire them; returns once all are ready (prep done)."""
        if not isinstance(graph, Graph):
            raise GraphError(f"commit_graph needs a chimera_lab.Graph, got {type(graph).__name__}")
        if self.graph is not None:
            self.reset()
        s = self.session
        if s is not None and s.collected_segments < len(s.segments):
            log.warning("Manager: session %s was not collected; its files stay on the workers (in each worker's "
                        "data folder, under %s) and in %s", s.id, s.id, s.path)
        connected = [w for w, i in self.workers.items() if i.state == "connected"]
        by_worker = graph.validate(mapping, workers=connected)
        t0 = time.monotonic()
        blobs = {}
        for node in graph.nodes:
            try:
                blobs[node.name] = cloudpickle.dumps(node)
            except Exception as exc:
                raise GraphError(f"node {node.name!r} cannot be sent to a worker: {exc}; keep only picklable "
                                 "configuration in __init__ and open resources in prep()") from exc
        with self._lock:
            self.nodes = {}
            for worker, names in by_worker.items():
                for name in names:
                    self.nodes[name] = NodeInfo(name, worker, graph.kind(graph.get_node(name)))
            self.graph, self.mapping = graph, by_worker
            self.session = None
            for w in self.workers.values():
                w.nodes = list(by_worker.get(w.name, []))
        self.state = "committing"
        commit = uuid.uuid4().hex  # its data plane's key: data captured in another commit is refused in this one
        self._data_signer = wire.Signer(wire.derive_key(self._key, f"data {commit}"))
        futs = {}
        for worker, names in by_worker.items():
            for name in names:
                node = graph.get_node(name)
                cfg = {"kind": graph.kind(node), "inputs": graph.inputs(node), "queue_bound": self.queue_bound,
                       "commit": commit}
                futs[name] = self._request(worker, {"op": "spawn", "name": name, "config": cfg}, (blobs[name],))
        replies = self._wait(futs, timeout, "commit (prep)")
        failed = {n: r for n, r in replies.items() if not r.get("ok")}
        if failed:
            self._abort_commit()
            name, r = next(iter(failed.items()))
            others = f" (also failed: {', '.join(n for n in failed if n != name)})" if len(failed) > 1 else ""
            tb = r.get("tb")
            raise CommitError(
                f"node {name!r} on worker {self.nodes.get(name, NodeInfo(name, '?', '?')).worker!r} failed to "
                f"start: {r.get('error')}{others}" + (f"\n\nRemote traceback:\n{tb}" if tb else ""),
                node=name, remote_traceback=tb)
        for name, r in replies.items():
            self.nodes[name].pid = r.get("pid")
            self.nodes[name].inputs = r.get("inputs", {})
            self._set_node_state(name, "ready")
        addrs = {name: r["inputs"] for name, r in replies.items()}
        wires = {}
        for u in graph.nodes:
            outs = [{"dst": v.name, "addr": addrs[v.name][u.name], "policy": d["policy"]}
                    for _, v, d in graph.out_edges(u, data=True)]
            if outs:
                wires[u.name] = self._request(self.nodes[u.name].worker,
                                              {"op": "wire", "node": u.name, "outputs": outs})
        failed = {n: r for n, r in self._wait(wires, timeout, "wiring").items() if not r.get("ok")}
        if failed:
            self._abort_commit()
            name, r = next(iter(failed.items()))
            raise CommitError(f"node {name!r} could not connect to its downstream nodes: {r.get('error')}", node=name)
        self.state = "committed"
        log.info("Manager: committed %d nodes on %d workers in %.2f s", len(self.nodes), len(by_worker),
                 time.monotonic() - t0)

    def _abort_commit(self) -> None:
        self._teardown_nodes(timeout=5.0)
        with self._lock:
            self.graph, self.mapping, self.nodes = None, {}, {}
        self.state = "idle"

    def _require_graph(self, what: str) -> Graph:
        if self.graph is None:
            raise ManagerError(f"cannot {what}: no graph is committed; call manager.commit_graph(graph, mapping) first")
        return self.graph

    def _live_nodes(self) -> list[str]:
        return [n for n, i in self.nodes.items() if i.state not in ("lost", "crashed", "finished")]

    def start(self, timeout: float = 30.0) -> None:
        """Start stepping every node (sinks first, so nothing a source sends is missed)."""
        graph = self._require_graph("start")
        order = [n.name for n in reversed(list(nx.topological_sort(graph)))]
        live = set(self._live_nodes())
        futs = {n: self._request(self.nodes[n].worker, {"op": "start", "node": n}) for n in order if n in live}
        failed = {n: r for n, r in self._wait(futs, timeout, "start").items() if not r.get("ok")}
        if failed:
            raise ManagerError("could not start: " + "; ".join(f"{n}: {r.get('error')}" for n, r in failed.items()))
        if self.state != "recording":
            self.state = "running"
        log.info("Manager: started %d nodes", len(futs))

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every node; returns once each has processed what its inputs already sent."""
        self._require_graph("stop")
        futs = {n: self._request(self.nodes[n].worker, {"op": "stop", "node": n}) for n in self._live_nodes()}
        replies = self._wait(futs, timeout, "stop")
        failed = {n: r for n, r in replies.items() if not r.get("ok")}
        if self.state == "recording" and self.session is not None:
            seg = self.session.segments[-1]
            seg["stop"] = time.time()
            seg["samples"] = {n: {s["name"]: s["samples"] for s in r.get("streams") or []} for n, r in replies.items()}
            self.session.manifests[seg["index"]] = {n: r["streams"] for n, r in replies.items() if r.get("streams")}
            log.info("Manager: recording segment %d ended", seg["index"])
        self.state = "stopped"
        if failed:
            log.warning("Manager: nodes that did not stop cleanly: %s",
                        "; ".join(f"{n}: {r.get('error')}" for n, r in failed.items()))
        log.info("Manager: stopped")

    def record(self, name: str = "session", timeout: float = 30.0) -> Path:
        """Start writing what nodes save (a new segment; starts the graph if it is not running)."""
        self._require_graph("record")
        if self.state == "recording":
            raise ManagerError("already recording; stop() ends the segment, record() then starts the next")
        if self.session is None:
            try:
                self.session = new_session(self.logdir, name)
            except OSError as exc:
                raise ManagerError(f"cannot write the session folder under {self.logdir}: {exc.strerror or exc}; "
                                   "choose a writable folder with Manager(logdir=...)") from None
            log.info("Manager: recording session %s", self.session.path)
        session = self.session
        index = len(session.segments) + 1
        live = self._live_nodes()
        # nodes open their segment before they start, so from idle even the first step is recorded
        futs = {n: self._request(self.nodes[n].worker, {"op": "record", "node": n, "session": session.id,
                                                        "segment": index}) for n in live}
        failed = {n: r for n, r in self._wait(futs, timeout, "record").items() if not r.get("ok")}
        was_running = self.state == "running"
        self.state = "recording"
        session.segments.append({"index": index, "start": time.time(), "stop": None})
        session.workers |= {self.nodes[n].worker for n in live}
        if not failed and not was_running:
            self.start(timeout)
        if failed:
            self.stop(timeout)
            raise ManagerError("cannot record: " + "; ".join(
                f"node {n!r} on worker {self.nodes[n].worker!r}: {r.get('error')}" for n, r in failed.items()))
        log.info("Manager: recording segment %d", index)
        return session.path

    def collect(self, move: bool = True, keep_on_worker: bool = False, progress: bool = True,
                timeout: float = 600.0) -> Path:
        """Bring every worker's recorded files into the session folder (verified); return the folder."""
        if self.session is None:
            raise ManagerError("nothing to collect: record() first (collect() gathers the session recorded "
                               "since the last commit_graph)")
        if self.state == "recording":
            self.stop()
        from .records.collect import collect

        return collect(self, move=move, keep_on_worker=keep_on_worker, progress=progress, timeout=timeout)

    def _teardown_nodes(self, timeout: float) -> dict[str, dict[str, Any]]:
        futs = {n: self._request(i.worker, {"op": "teardown", "node": n})
                for n, i in self.nodes.items() if i.state not in ("lost", "crashed", "finished")}
        replies = self._wait(futs, timeout, "teardown")
        for n, r in replies.items():
            if not r.get("ok") and "no answer" in str(r.get("error")):
                self._call(functools.partial(self._send, self.nodes[n].worker, {"op": "kill", "node": n}))
            self._set_node_state(n, "finished")
        return replies

    def reset(self, timeout: float = 15.0) -> None:
        """Stop (if running) and tear down every node (their `teardown` runs); workers stay connected."""
        if self.graph is None:
            return
        if self.state in ("running", "recording"):
            self.stop()
        self._teardown_nodes(timeout)
        with self._lock:
            self.graph, self.mapping = None, {}
        self.state = "idle"

    def shutdown(self, timeout: float = 15.0) -> None:
        """Reset, tell every worker to exit, and close the Manager."""
        if self._closing.is_set():
            return
        try:
            self.reset(timeout)
        finally:
            self.state = "shutting down"  # workers that exit from here on were told to: launchers do not report them
            done = threading.Event()

            def bye() -> None:
                for w in self.workers.values():
                    self._send(w.name, {"op": "shutdown"})
                done.set()

            try:
                self._call(bye)
                done.wait(2.0)
            except ManagerError:
                pass
            deadline = time.monotonic() + 3.0
            while any(w.state == "connected" for w in self.workers.values()) and time.monotonic() < deadline:
                time.sleep(0.02)
            if self._panel is not None:
                self._panel.close()
            for launcher in reversed(list(self._launchers)):
                try:
                    launcher.close(manager=False)
                except Exception:
                    log.exception("Manager: closing %r failed", launcher)
            self._closing.set()
            self._thread.join(5)
            self._waker.close()
            _LOCAL.pop((self.host, self.port), None)
            self.state = "shutdown"
            log.info("Manager: shut down")

    # ---------------------------------------------------------------------------------------------
    # what is going on
    # ---------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Manager, worker and node states (plain data, safe to keep)."""
        with self._lock:
            return {
                "state": self.state,
                "host": self.host,
                "port": self.port,
                "forged_messages": self.forged,
                "replayed_messages": self.replayed,
                "rejected": self._guard.rejected,  # connections refused at the handshake (no valid credentials)
                "encrypted": self.encrypt,
                "workers": {w.name: {"state": w.state, "hostname": w.hostname, "pid": w.pid, "cwd": w.cwd,
                                     "mode": w.mode, "clock_offset": w.offset, "rtt": w.rtt, "nodes": list(w.nodes)}
                            for w in self.workers.values()},
                "nodes": {n.name: {"state": n.state, "worker": n.worker, "kind": n.kind, "pid": n.pid,
                                   "inputs": dict(n.inputs), "errors": n.error_count,
                                   "last_error": _last_error(n)}
                          for n in self.nodes.values()},
            }

    def metrics(self) -> dict[str, dict[str, Any]]:
        """Per node: state, steps, steps/s, latency p50/p99 (ms, from the source's creation), edges, errors,
        and recording (per stream saved/written/lost, and what waits to be written)."""
        with self._lock:
            out: dict[str, dict[str, Any]] = {}
            for n in self.nodes.values():
                m = n.metrics
                p50, p99 = m.get("latency_p50"), m.get("latency_p99")
                out[n.name] = {
                    "state": n.state, "worker": n.worker, "kind": n.kind,
                    "steps": m.get("steps", 0), "rate": m.get("rate", 0.0),
                    "latency_p50_ms": None if p50 is None else p50 * 1e3,
                    "latency_p99_ms": None if p99 is None else p99 * 1e3,
                    "errors": n.error_count, "forged": m.get("forged", 0), "replayed": m.get("replayed", 0),
                    "rejected": m.get("rejected", 0),
                    "inputs": {}, "outputs": dict(m.get("outputs", {})),
                    "recording": m.get("recording", {"recording": False, "queued": 0, "streams": {}}),
                }
            for n in self.nodes.values():
                for src, e in n.metrics.get("inputs", {}).items():
                    up = self.nodes.get(src)
                    sent = up.metrics.get("outputs", {}).get(n.name, {}).get("sent") if up else None
                    queued = max(0, sent - e["received"] - e["dropped"]) if sent is not None else None
                    out[n.name]["inputs"][src] = {**e, "queued": queued}
            return out

    def tap(self, node: str) -> Tap:
        """Receive copies of `node`'s outputs in this process (newest first; never slows the pipeline)."""
        if node not in self.nodes:
            raise ManagerError(f"cannot tap {node!r}: no such node in the committed graph "
                               f"(nodes: {', '.join(self.nodes) or 'none'})")
        return Tap(self, node)


def _last_error(info: NodeInfo) -> str | None:
    if not info.errors:
        return None
    last = info.errors[-1]
    return str(last["traceback"] or last["error"])


class Tap:
    """Copies of one node's outputs, delivered to the kernel: iterate, or `get(timeout)`."""

    def __init__(self, manager: Manager, node: str) -> None:
        self.manager, self.node = manager, node
        self.id = uuid.uuid4().hex[:12]
        self._sock = manager.ctx.socket(zmq.PULL)
        self._sock.setsockopt(zmq.CONFLATE, 1)
        self._sock.setsockopt(zmq.LINGER, 0)
        self.guard = transport.serve(self._sock, manager._key, f"tap of {node!r}", manager.encrypt)
        from .worker import local_address_towards

        # the address that faces the node's worker: the Manager's own, or one it also listens on (a Docker
        # bridge's gateway), or, listening everywhere, whichever routes there
        host, bind = manager.host, manager.host
        facing = local_address_towards(manager.workers[manager.nodes[node].worker].data_host)
        if host in ("0.0.0.0", "*"):
            host = facing
        elif facing in manager.addresses:
            host = bind = facing
        port = self._sock.bind_to_random_port(f"tcp://{bind}")
        self._signer = manager._data_signer
        self._last_seq = 0
        self.forged = 0
        self.replayed = 0
        self.closed = False
        manager._to_node(node, {"op": "tap", "tap": self.id, "addr": f"tcp://{host}:{port}"})

    def get(self, timeout: float | None = None) -> DataChunk | None:
        """The next output of the node, or None after `timeout` seconds."""
        header = self.get_raw(timeout)
        return None if header is None else wire.chunk_from_header(header)

    def get_raw(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next output, verified but not decoded (see `wire.raw_records`), or None after `timeout` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.closed:
            wait = 100 if deadline is None else max(0, min(100, int((deadline - time.monotonic()) * 1000)))
            if self._sock.poll(wait):
                blob = self._sock.recv(copy=False)
                try:
                    header = wire.decode_data(self._signer, wire.unpack_frames(blob.buffer))
                except wire.AuthError:
                    self.forged += 1
                    continue
                seq = header.get("q")
                if type(seq) is not int or seq <= self._last_seq:  # sequence numbers only increase: a replay
                    self.replayed += 1
                    continue
                self._last_seq = seq
                if "eos" in header:
                    continue
                return header
            if deadline is not None and time.monotonic() >= deadline:
                return None
        return None

    def __iter__(self) -> Iterator[DataChunk]:
        while not self.closed:
            chunk = self.get(0.5)
            if chunk is not None:
                yield chunk

    def close(self) -> None:
        """Stop receiving."""
        if not self.closed:
            self.closed = True
            try:
                self.manager._to_node(self.node, {"op": "untap", "tap": self.id})
            except ManagerError:
                pass
            self._sock.close(0)

    def __enter__(self) -> Tap:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
