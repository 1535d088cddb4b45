"""The parameter channel of a data-parallel fit: each round the estimator sends the parameters to every worker and
gathers one answer per worker (a gradient, or locally trained parameters).

The channel is set up through the control plane (`Manager.call` starts the worker's side, which runs in the
worker's task slot for the whole fit) and then carries only signed ``[mac, header, parameters]`` messages over
one ZeroMQ socket pair per worker: a round costs what a raw pyzmq round trip of the same size costs, plus an HMAC.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq

from .. import wire
from ..manager import Manager
from .linear import Penalty, Problem, local_epochs

IDLE_LIMIT = 600.0  # a worker side waits this long for the next round before it gives up


@dataclass
class Answer:
    """One worker's answer to one round."""

    n: int  # samples it used
    loss: float  # summed
    metric: float  # summed (correct labels, or squared error)
    compute: float  # seconds of compute on the worker
    vector: np.ndarray  # a summed gradient, or trained parameters


def _serve(w: Any, port: int, session: str, key: str, problem: Problem, penalty: Penalty, seed: int) -> dict[str, Any]:
    """The worker's side of the channel (runs on the worker through `Manager.call`) until told to stop."""
    X, y = w.store[key]
    t = problem.targets(y)
    rng = np.random.default_rng(seed)
    order, pos, rounds = rng.permutation(len(X)), 0, 0
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IDENTITY, w.name.encode())
    sock.connect(f"tcp://{w.host}:{port}")
    try:
        sock.send_multipart(wire.encode_control(w.signer, {"op": "hello", "s": session, "n": len(X)}))
        idle = time.monotonic()
        while True:
            if not sock.poll(500):
                if not w.connected or time.monotonic() - idle > IDLE_LIMIT:
                    return {"rounds": rounds, "ended": "idle"}
                continue
            idle = time.monotonic()
            try:
                msg, blobs = wire.decode_control(w.signer, sock.recv_multipart())
            except wire.AuthError:
                continue  # not from our estimator: dropped unread
            if msg.get("s") != session:
                continue
            if msg["op"] == "stop":
                return {"rounds": rounds, "ended": "stop"}
            theta = np.frombuffer(blobs[0], dtype=np.float64)
            t0 = time.perf_counter()
            if msg["op"] == "grad":
                batch = msg.get("batch")
                if batch is None or batch >= len(X):
                    loss, vec, metric = problem.loss_grad(theta, X, t)
                    n = len(X)
                else:
                    if pos + batch > len(X):
                        order, pos = rng.permutation(len(X)), 0
                    rows = np.sort(order[pos:pos + batch])
                    pos += batch
                    loss, vec, metric = problem.loss_grad(theta, X[rows], t[rows])
                    n = len(rows)
            else:  # "local": FedAvg's local epochs; the loss reported is that of the model received
                loss, _, metric = problem.loss_grad(theta, X, t)
                vec, _, _ = local_epochs(problem, penalty, theta, X, t, msg["epochs"], msg["batch"], msg["eta"], rng)
                n = len(X)
            rounds += 1
            reply = {"op": msg["op"], "s": session, "r": msg["r"], "n": n, "loss": loss, "metric": metric,
                     "c": time.perf_counter() - t0}
            sock.send_multipart(wire.encode_control(w.signer, reply, (vec.tobytes(),)))
    finally:
        sock.close(0)


class Channel:
    """The estimator's side: ``ask(op, theta)`` runs one round on every live worker; failures are reported, not
    raised, so the caller applies its failure policy."""

    def __init__(self, manager: Manager, workers: list[str], key: str, problem: Problem, penalty: Penalty,
                 seeds: dict[str, int], timeout: float | None = None) -> None:
        self.signer = manager.signer
        self.session = uuid.uuid4().hex[:12]
        self.timeout = timeout
        self._sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        port: int = self._sock.bind_to_random_port(f"tcp://{manager.host}")
        self._round = 0
        self.tasks: dict[str, Future[Any]] = {
            w: manager.call(w, _serve, port, self.session, key, problem, penalty, seeds[w]) for w in workers}
        self.sizes: dict[str, int] = {}
        self.failed: dict[str, str] = {}
        self._gather("hello", set(workers), None)

    @property
    def live(self) -> list[str]:
        """The workers still taking part."""
        return [w for w in self.tasks if w not in self.failed]

    def ask(self, op: str, theta: np.ndarray, **fields: Any) -> dict[str, Answer]:
        """One round: send `theta` with `op` (and `fields`) to every live worker; their answers by name."""
        self._round += 1
        frames = wire.encode_control(self.signer, {"op": op, "s": self.session, "r": self._round, **fields},
                                     (theta.tobytes(),))
        asked = set()
        for w in self.live:
            try:
                self._sock.send_multipart([w.encode(), *frames])
                asked.add(w)
            except zmq.ZMQError as exc:  # its socket is gone
                self.failed[w] = f"its channel closed ({exc})"
        return self._gather(op, asked, self._round)

    def _gather(self, op: str, waiting: set[str], rnd: int | None) -> dict[str, Answer]:
        answers: dict[str, Answer] = {}
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while waiting:
            if self._sock.poll(50):
                ident, *frames = self._sock.recv_multipart()
                try:
                    msg, blobs = wire.decode_control(self.signer, frames)
                except wire.AuthError:
                    continue
                who = ident.decode(errors="replace")
                if who not in waiting or msg.get("s") != self.session or msg.get("r") != rnd:
                    continue
                waiting.discard(who)
                if op == "hello":
                    self.sizes[who] = int(msg["n"])
                else:
                    answers[who] = Answer(int(msg["n"]), float(msg["loss"]), float(msg["metric"]), float(msg["c"]),
                                          np.frombuffer(blobs[0], dtype=np.float64))
                continue
            for w in list(waiting):
                fut = self.tasks[w]
                if fut.done():
                    exc = fut.exception()
                    tb = getattr(exc, "remote_traceback", None)
                    self.failed[w] = f"{exc}" + (f"\n{tb}" if tb else "") if exc else "its side ended early"
                    waiting.discard(w)
            if deadline is not None and time.monotonic() > deadline and waiting:
                for w in waiting:
                    self.failed[w] = f"no answer within {self.timeout:g} s"
                waiting = set()
        return answers

    def close(self) -> None:
        """Tell every worker side to end (their task slots free up) and close the socket."""
        frames = wire.encode_control(self.signer, {"op": "stop", "s": self.session})
        for w in self.live:
            try:
                self._sock.send_multipart([w.encode(), *frames])
            except zmq.ZMQError:
                pass
        for w in self.live:
            try:
                self.tasks[w].result(5)
            except Exception:
                pass
        self._sock.close(0)
