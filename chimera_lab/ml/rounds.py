"""The parameter channel of a data-parallel fit: each round the estimator sends the parameters to every worker and
gathers one answer per worker (a gradient, or locally trained parameters).

The channel is set up through the control plane (`Manager.call` starts the worker's side, which runs in the
worker's task slot for the whole fit). Then each message is one sealed frame (`wire.Signer.seal`: a MAC, a fixed
binary header, the parameters) over one ZeroMQ socket pair per worker. A round costs a raw pyzmq round trip of the
same size plus two HMACs and a few struct fields: nothing on this path is parsed before its MAC checks out.
"""

from __future__ import annotations

import struct
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq

from .. import transport, wire
from ..manager import Manager
from .linear import Penalty, Problem, local_epochs

IDLE_LIMIT = 600.0  # a worker side waits this long for the next round before it gives up
HELLO_LIMIT = 30.0  # every worker's side must have reached the channel within this many seconds

# the headers (padded to 8 bytes, so the parameters behind them are aligned float64)
_REQ = struct.Struct("<6sBIiId5x")  # session, op, round, batch (-1: the whole shard), local epochs, learning rate
_REP = struct.Struct("<6sBIqddd5x")  # session, op, round, rows used, summed loss, summed metric, compute seconds
HELLO, GRAD, LOCAL, STOP = range(4)
_OPS = {"grad": GRAD, "local": LOCAL}


@dataclass
class Answer:
    """One worker's answer to one round."""

    n: int  # samples it used
    loss: float  # summed
    metric: float  # summed (correct labels, or squared error)
    compute: float  # seconds of compute on the worker
    vector: np.ndarray  # a summed gradient, or trained parameters


def _serve(w: Any, port: int, session: bytes, key: str, problem: Problem, penalty: Penalty, seed: int
           ) -> dict[str, Any]:
    """The worker's side of the channel (runs on the worker through `Manager.call`) until told to stop."""
    X, y = w.store[key]
    t = problem.targets(y)
    rng = np.random.default_rng(seed)
    order, pos, rounds = rng.permutation(len(X)), 0, 0
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IDENTITY, w.name.encode())
    sock.setsockopt(zmq.RCVTIMEO, 500)  # a blocking receive with a timeout: one call per round
    transport.client(sock, w._key, bool(w.encrypt))
    sock.connect(f"tcp://{w.host}:{port}")
    seal = w.signer.seal
    try:
        sock.send(seal(_REP.pack(session, HELLO, 0, len(X), 0.0, 0.0, 0.0)))
        idle = time.monotonic()
        last_round = 0  # rounds only go up
        while True:
            try:
                frame = sock.recv()
            except zmq.Again:
                if not w.connected or time.monotonic() - idle > IDLE_LIMIT:
                    return {"rounds": rounds, "ended": "idle"}
                continue
            idle = time.monotonic()
            try:
                body = w.signer.unseal(frame)
                sess, op, rnd, batch, epochs, eta = _REQ.unpack_from(body)
            except (wire.AuthError, struct.error):
                continue  # not from our estimator: dropped unread
            if sess != session or (rnd <= last_round and op != STOP):
                continue  # another fit's, or a round already answered (a replay): dropped
            if op == STOP:
                return {"rounds": rounds, "ended": "stop"}
            if len(body) != _REQ.size + 8 * problem.size:
                continue  # not this problem's parameters: dropped (only a peer with the key could send it)
            last_round = rnd
            theta = np.frombuffer(body, dtype=np.float64, offset=_REQ.size)
            t0 = time.perf_counter()
            if batch <= 0 or batch >= len(X):
                batch = len(X)
            if op == GRAD:
                if batch == len(X):
                    loss, vec, metric = problem.loss_grad(theta, X, t)
                else:
                    if pos + batch > len(X):
                        order, pos = rng.permutation(len(X)), 0
                    rows = np.sort(order[pos:pos + batch])
                    pos += batch
                    loss, vec, metric = problem.loss_grad(theta, X[rows], t[rows])
                n = batch
            elif op == LOCAL:  # FedAvg's local epochs; the loss reported is that of the model received
                loss, _, metric = problem.loss_grad(theta, X, t)
                vec, _, _ = local_epochs(problem, penalty, theta, X, t, epochs, batch, eta, rng)
                n = len(X)
            else:
                continue
            rounds += 1
            header = _REP.pack(session, op, rnd, n, loss, metric, time.perf_counter() - t0)
            sock.send(seal(header + vec.tobytes()))
    finally:
        sock.close(0)


def _bind_everywhere(sock: zmq.Socket[bytes], hosts: list[str]) -> tuple[int, list[str]]:
    """Bind `sock` on one port free on each of `hosts` (the addresses the Manager listens on, so every worker can
    reach the channel where it reaches the Manager, e.g. through a Docker bridge's gateway): (port, endpoints)."""
    for _ in range(100):
        port: int = sock.bind_to_random_port(f"tcp://{hosts[0]}")
        bound = [f"tcp://{hosts[0]}:{port}"]
        try:
            for host in hosts[1:]:
                sock.bind(f"tcp://{host}:{port}")
                bound.append(f"tcp://{host}:{port}")
            return port, bound
        except zmq.ZMQError:  # taken on another address: try another port
            for addr in bound:
                sock.unbind(addr)
    raise zmq.ZMQError(msg=f"no port is free on all of {', '.join(hosts)}")


class Channel:
    """The estimator's side: ``ask(op, theta)`` runs one round on every live worker; failures are reported, not
    raised, so the caller applies its failure policy."""

    def __init__(self, manager: Manager, workers: list[str], key: str, problem: Problem, penalty: Penalty,
                 seeds: dict[str, int], timeout: float | None = None) -> None:
        self.signer = manager.signer
        self._size = problem.size  # floats in every answer's vector
        self.session = uuid.uuid4().bytes[:6]
        self.timeout = timeout
        self._sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self._sock.setsockopt(zmq.RCVTIMEO, 50)  # between answers, look at the workers' tasks every 50 ms
        self.guard = transport.serve(self._sock, manager._key, "the parameter channel", manager.encrypt)
        port, endpoints = _bind_everywhere(self._sock, manager.addresses)
        self.address = " or ".join(endpoints)
        self._round = 0
        self._idents = {w: w.encode() for w in workers}
        self.tasks: dict[str, Future[Any]] = {
            w: manager.call(w, _serve, port, self.session, key, problem, penalty, seeds[w]) for w in workers}
        self.sizes: dict[str, int] = {}
        self.failed: dict[str, str] = {}
        self._gather(HELLO, set(workers), 0, HELLO_LIMIT if timeout is None else min(timeout, HELLO_LIMIT))

    @property
    def live(self) -> list[str]:
        """The workers still taking part."""
        return [w for w in self.tasks if w not in self.failed]

    def ask(self, op: str, theta: np.ndarray, batch: int | None = None, epochs: int = 0, eta: float = 0.0
            ) -> dict[str, Answer]:
        """One round: send `theta` with `op` ("grad" or "local") to every live worker; their answers by name.

        `batch` is the rows per gradient (None: the whole shard); FedAvg's "local" also takes `epochs` and `eta`."""
        self._round += 1
        header = _REQ.pack(self.session, _OPS[op], self._round, -1 if batch is None else batch, epochs, eta)
        frame = self.signer.seal(header + theta.tobytes())
        asked = set()
        for w in self.live:
            try:
                self._sock.send_multipart([self._idents[w], frame])
                asked.add(w)
            except zmq.ZMQError as exc:  # its socket is gone
                self.failed[w] = f"its channel closed ({exc})"
        return self._gather(_OPS[op], asked, self._round, self.timeout)

    def _gather(self, op: int, waiting: set[str], rnd: int, timeout: float | None) -> dict[str, Answer]:
        answers: dict[str, Answer] = {}
        deadline = None if timeout is None else time.monotonic() + timeout
        while waiting:
            try:
                ident, frame = self._sock.recv_multipart()
            except zmq.Again:  # 50 ms without an answer: has a worker's side ended, or the time run out?
                self._check(waiting, deadline, op)
                continue
            except ValueError:  # not two frames: not from a worker's side
                continue
            try:
                body = self.signer.unseal(frame)
                sess, got_op, got_rnd, n, loss, metric, compute = _REP.unpack_from(body)
            except (wire.AuthError, struct.error):
                continue
            who = ident.decode(errors="replace")
            if who not in waiting or sess != self.session or got_op != op or got_rnd != rnd:
                continue
            if op != HELLO and len(body) != _REP.size + 8 * self._size:
                continue  # not this problem's vector: dropped
            waiting.discard(who)
            if op == HELLO:
                self.sizes[who] = n
            else:
                answers[who] = Answer(n, loss, metric, compute, np.frombuffer(body, np.float64, offset=_REP.size))
        return answers

    def _check(self, waiting: set[str], deadline: float | None, op: int) -> None:
        """Move the workers whose side has ended, or that are past the deadline, from `waiting` to `failed`."""
        for w in list(waiting):
            fut = self.tasks[w]
            if fut.done():
                exc = fut.exception()
                tb = getattr(exc, "remote_traceback", None)
                self.failed[w] = f"{exc}" + (f"\n{tb}" if tb else "") if exc else "its side ended early"
                waiting.discard(w)
        if deadline is not None and time.monotonic() > deadline:
            for w in waiting:
                self.failed[w] = (f"its side of the parameter channel did not reach {self.address} (is that "
                                  "address reachable from the worker?)" if op == HELLO else
                                  f"no answer within {self.timeout:g} s")
            waiting.clear()

    def close(self) -> None:
        """Tell every worker side to end (their task slots free up) and close the socket."""
        frame = self.signer.seal(_REQ.pack(self.session, STOP, 0, 0, 0, 0.0))
        for w in self.live:
            try:
                self._sock.send_multipart([self._idents[w], frame])
            except zmq.ZMQError:
                pass
        for w in self.live:
            try:
                self.tasks[w].result(5)
            except Exception:
                pass
        self._sock.close(0)
