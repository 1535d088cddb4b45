"""Who may connect: every socket chimera_lab binds admits only peers holding the cluster key.

Messages are signed (`wire`), but signing alone lets anyone who reaches a port hold connections open: 1,110
idle TCP connections once exhausted a Manager's 1,024 file descriptors and froze its pipeline. So admission
happens at the ZeroMQ handshake, before a connection can carry a message:

- every bound socket is a ZMTP PLAIN server whose ZAP handler (one thread per process) admits only the
  password derived from the cluster key (`Credentials`), or, with ``encrypt=True``, a CurveZMQ server that
  admits only the client key derived from it (the traffic is then encrypted too, with keys per connection);
- a connection that has not completed that handshake within `HANDSHAKE_TIMEOUT` seconds is closed by libzmq,
  so idle or slow connections cost a file descriptor for seconds, not forever;
- the soft open-file limit is raised to the hard one (`raise_open_file_limit`);
- every refused connection is counted on its socket's `Guard` (``Manager.status()["rejected"]``), and the
  first one is logged (then every 1,000th); a peer that hangs up before presenting anything (a worker's
  reachability probe) held nothing and is not counted.

PLAIN sends the derived password in clear, as one connection's admission ticket: on 127.0.0.1 only root can
read it, and it cannot sign a message. Across networks use ``Manager(encrypt=True)``.
"""

from __future__ import annotations

import errno
import hmac
import itertools
import logging
import os
import resource
import threading
from dataclasses import dataclass
from typing import Any

import zmq
from zmq.utils import z85

log = logging.getLogger("chimera_lab.transport")

HANDSHAKE_TIMEOUT = 3.0  # seconds a connection gets to present the cluster's credentials
USERNAME = b"chimera-lab"
_HUNG_UP = (errno.EPIPE, errno.ECONNRESET)
_REFUSED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


def raise_open_file_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit; returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # pragma: no cover - a platform that refuses: keep what we have
            pass
    return int(soft)


@dataclass(frozen=True)
class Credentials:
    """What a peer presents at the handshake, derived from the cluster key (every peer can derive them)."""

    password: bytes
    server_secret: bytes
    server_public: bytes
    client_secret: bytes
    client_public: bytes

    @classmethod
    def of(cls, key: bytes) -> Credentials:
        def derive(purpose: bytes) -> bytes:
            return hmac.digest(key, b"chimera-lab transport " + purpose, "sha256")

        server_secret, client_secret = z85.encode(derive(b"curve server")), z85.encode(derive(b"curve client"))
        return cls(password=derive(b"plain").hex().encode(), server_secret=server_secret,
                   server_public=zmq.curve_public(server_secret), client_secret=client_secret,
                   client_public=zmq.curve_public(client_secret))


_CREDENTIALS: dict[bytes, Credentials] = {}


def credentials(key: bytes) -> Credentials:
    """The (cached) credentials of `key`."""
    creds = _CREDENTIALS.get(key)
    if creds is None:
        creds = _CREDENTIALS[key] = Credentials.of(key)
    return creds


class Guard:
    """One bound socket's gatekeeper: counts the connections refused at the handshake."""

    def __init__(self, what: str, creds: Credentials, encrypt: bool) -> None:
        self.what = what
        self.creds = creds
        self.encrypt = encrypt
        self.rejected = 0
        self.last_peer = ""

    def refused(self, auth: bool = False) -> None:
        """Count one refused connection (`auth`: its credentials were wrong, rather than missing or late)."""
        self.rejected += 1
        if self.rejected == 1 or self.rejected % 1000 == 0:
            where = f" from {self.last_peer}" if auth and self.last_peer else ""
            log.warning("%s refused a connection%s that did not present this cluster's credentials in time "
                        "(%d so far; counted in status()['rejected'])", self.what, where, self.rejected)


class _Gate:
    """The process's ZAP handler and handshake monitor: one thread for every guarded socket of a context."""

    def __init__(self, ctx: zmq.Context[Any]) -> None:
        self.ctx = ctx
        self.guards: dict[bytes, Guard] = {}  # by ZAP domain
        self._lock = threading.Lock()
        self._pending: list[tuple[zmq.Socket[Any], Guard]] = []
        self._ids = itertools.count(1)
        self._zap = ctx.socket(zmq.REP)
        self._zap.linger = 0
        self._zap.bind("inproc://zeromq.zap.01")
        self._wake_addr = f"inproc://chimera-gate-wake-{id(self)}"
        self._wake_in = ctx.socket(zmq.PULL)
        self._wake_in.linger = 0
        self._wake_in.bind(self._wake_addr)
        self._wake_lock = threading.Lock()
        self._wake_out = ctx.socket(zmq.PUSH)
        self._wake_out.linger = 0
        self._wake_out.connect(self._wake_addr)
        self._thread = threading.Thread(target=self._run, name="chimera-gate", daemon=True)
        self._thread.start()

    def guard(self, sock: zmq.Socket[Any], what: str, creds: Credentials, encrypt: bool) -> Guard:
        n = next(self._ids)
        domain = f"chimera-lab-{n}".encode()
        guard = Guard(what, creds, encrypt)
        addr = f"inproc://chimera-gate-monitor-{id(self)}-{n}"
        sock.monitor(addr, _REFUSED | zmq.EVENT_MONITOR_STOPPED)  # on the socket's own thread
        # connected here, before `sock` can close (else its last event, MONITOR_STOPPED, would never come and the
        # monitor would stay open); handed to the gate thread, which reads the events (the lock is the barrier)
        mon = self.ctx.socket(zmq.PAIR)
        mon.linger = 0
        mon.connect(addr)
        with self._lock:
            self.guards[domain] = guard
            self._pending.append((mon, guard))
        sock.setsockopt(zmq.ZAP_DOMAIN, domain)
        with self._wake_lock:
            self._wake_out.send(b"")
        return guard

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._zap, zmq.POLLIN)
        poller.register(self._wake_in, zmq.POLLIN)
        monitors: dict[zmq.Socket[Any], Guard] = {}
        try:
            while True:
                events = dict(poller.poll())
                if self._wake_in in events:
                    while self._wake_in.poll(0):
                        self._wake_in.recv()
                    with self._lock:
                        pending, self._pending = self._pending, []
                    for mon, guard in pending:
                        monitors[mon] = guard
                        poller.register(mon, zmq.POLLIN)
                if self._zap in events:
                    self._answer(self._zap.recv_multipart())
                for mon in [m for m in monitors if m in events]:
                    frames = mon.recv_multipart()
                    event = int.from_bytes(frames[0][:2], "little")
                    value = int.from_bytes(frames[0][2:6], "little")
                    if event == zmq.EVENT_MONITOR_STOPPED:
                        poller.unregister(mon)
                        mon.close(0)
                        guard = monitors.pop(mon)
                        with self._lock:  # its socket is closed: forget its domain too
                            for domain in [d for d, g in self.guards.items() if g is guard]:
                                del self.guards[domain]
                    elif event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL and value in _HUNG_UP:
                        pass  # the peer hung up before presenting anything (a reachability probe): it held nothing
                    elif event & _REFUSED:
                        monitors[mon].refused(auth=event == zmq.EVENT_HANDSHAKE_FAILED_AUTH)
        except zmq.ContextTerminated:
            pass
        finally:
            for mon in monitors:
                mon.close(0)
            self._zap.close(0)
            self._wake_in.close(0)
            self._wake_out.close(0)

    def _answer(self, request: list[bytes]) -> None:
        """One ZAP request (RFC 27): admit the cluster's PLAIN password or CURVE client key, nothing else."""
        version, rid, domain, address, _identity, mechanism, *creds = request + [b""] * (6 - len(request))
        guard = self.guards.get(domain)
        ok = False
        if guard is not None:
            if mechanism == b"PLAIN" and len(creds) == 2 and not guard.encrypt:
                ok = creds[0] == USERNAME and hmac.compare_digest(creds[1], guard.creds.password)
            elif mechanism == b"CURVE" and len(creds) == 1 and guard.encrypt:
                ok = hmac.compare_digest(z85.encode(creds[0]) if len(creds[0]) == 32 else creds[0],
                                         guard.creds.client_public)
        if not ok and guard is not None:
            guard.last_peer = address.decode(errors="replace")
        self._zap.send_multipart([version or b"1.0", rid, b"200" if ok else b"400",
                                  b"OK" if ok else b"not this cluster's credentials", b"", b""])


_GATES: dict[tuple[int, int], _Gate] = {}
_GATES_LOCK = threading.Lock()


def _gate(ctx: zmq.Context[Any]) -> _Gate:
    with _GATES_LOCK:
        key = (os.getpid(), id(ctx))
        gate = _GATES.get(key)
        if gate is None:
            raise_open_file_limit()
            gate = _GATES[key] = _Gate(ctx)
        return gate


def serve(sock: zmq.Socket[Any], key: bytes, what: str, encrypt: bool = False) -> Guard:
    """Make `sock` (before it binds) admit only peers holding `key`; `what` names it in the log."""
    creds = credentials(key)
    sock.setsockopt(zmq.HANDSHAKE_IVL, int(HANDSHAKE_TIMEOUT * 1000))
    if encrypt:
        sock.curve_server = True
        sock.curve_secretkey = creds.server_secret
    else:
        sock.plain_server = True
    return _gate(sock.context).guard(sock, what, creds, encrypt)


def client(sock: zmq.Socket[Any], key: bytes, encrypt: bool = False) -> None:
    """Make `sock` (before it connects) present the credentials of `key` to the sockets it connects to."""
    creds = credentials(key)
    sock.setsockopt(zmq.HANDSHAKE_IVL, int(HANDSHAKE_TIMEOUT * 1000))
    if encrypt:
        sock.curve_serverkey = creds.server_public
        sock.curve_publickey = creds.client_public
        sock.curve_secretkey = creds.client_secret
    else:
        sock.plain_username = USERNAME
        sock.plain_password = creds.password
