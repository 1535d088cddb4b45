"""Hostile peers on 127.0.0.1: connection floods, replayed traffic, eavesdropping (issue 16).

Every attack here is real: raw TCP connections from another process, bytes captured off a real TCP connection
between a worker and the Manager (a proxy in the middle) and sent again later, copies of real data messages
pushed again into a node's input.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import zmq
from conftest import Cluster, node_metric, wait_until
from pipeline_nodes import Count, Sink

import chimera_lab as cp

FLOODER = r"""
import socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
import resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
conns = []
for _ in range(n):
    c = socket.create_connection((host, port))
    c.setblocking(False)
    conns.append(c)
print("open", len(conns), flush=True)
deadline = time.monotonic() + 30
closed = set()
while len(closed) < len(conns) and time.monotonic() < deadline:
    for i, c in enumerate(conns):
        if i in closed:
            continue
        try:
            if c.recv(4096) == b"":
                closed.add(i)
        except BlockingIOError:
            pass
        except OSError:
            closed.add(i)
    time.sleep(0.05)
print("closed", len(closed), flush=True)
"""


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def steps(m: cp.Manager, node: str) -> int:
    return int(node_metric(m, node, "steps"))


def test_a_connection_flood_does_not_stall_the_pipeline(cluster: Cluster) -> None:
    """2,000 unauthenticated TCP connections to the Manager and 500 to a node's input (together past the
    1,024 open files a process gets by default): the pipeline goes on, every one is refused and counted, and
    the descriptors come back."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft == hard or hard == resource.RLIM_INFINITY, "the Manager raises the soft open-file limit to the hard"
    cluster.cli_worker("a")
    m = cluster.manager
    g = cp.Graph()
    g.add_edge(Count("source", rate_hz=200), Sink("sink"))
    m.commit_graph(g, {"a": ["source", "sink"]})
    m.start()
    wait_until(lambda: steps(m, "sink") > 50, 10, "data to flow")
    baseline = open_fds()
    sink_input = m.status()["nodes"]["sink"]["inputs"]["source"].removeprefix("tcp://").rsplit(":", 1)
    floods = [subprocess.Popen([sys.executable, "-c", FLOODER, m.host, str(m.port), "2000"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True),
              subprocess.Popen([sys.executable, "-c", FLOODER, sink_input[0], sink_input[1], "500"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    try:
        assert all(f.stdout is not None and f.stdout.readline().startswith("open") for f in floods)
        # while the connections are held open: the sink goes on (at least 100 more steps at 200 Hz)
        before = steps(m, "sink")
        wait_until(lambda: steps(m, "sink") > before + 100, 10, "the sink to go on during the flood")
        assert m.status()["workers"]["a"]["state"] == "connected"
        # the Manager drops each after the handshake timeout and counts it
        wait_until(lambda: m.status()["rejected"] >= 2000, 20, "2,000 connections refused at the Manager")
        wait_until(lambda: node_metric(m, "sink", "rejected") >= 500, 20, "500 refused at the sink's input")
        outs = [f.stdout.read().split() if f.stdout else [] for f in floods]  # what follows the "open" line
        assert outs == [["closed", "2000"], ["closed", "500"]], outs  # every connection closed by the far end
    finally:
        for f in floods:
            if f.poll() is None:
                f.kill()  # processes this test started
                f.wait()
    wait_until(lambda: open_fds() <= baseline + 20, 10, "the descriptors to come back")
    before = steps(m, "sink")
    wait_until(lambda: steps(m, "sink") > before + 50, 10, "the sink to go on after the flood")
    m.stop()
    met = m.metrics()
    assert met["sink"]["inputs"]["source"]["dropped"] == 0 and met["sink"]["errors"] == 0


def test_a_zmq_peer_without_credentials_is_refused_and_warned_once(cluster: Cluster,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    m = cluster.manager
    ctx = zmq.Context.instance()
    socks = []
    try:
        for i in range(20):  # ZMTP peers: no credentials, or credentials of another cluster
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            if i % 2:
                cp.transport.client(s, cp.wire.new_key())
            s.connect(f"tcp://{m.host}:{m.port}")
            s.send(b"hello?", zmq.NOBLOCK)
            socks.append(s)
        wait_until(lambda: m.status()["rejected"] >= 20, 10, "20 peers to be refused")
    finally:
        for s in socks:
            s.close(0)
    warnings = [r for r in caplog.records if "refused a connection" in r.getMessage()]
    assert len(warnings) == 1 and f"{m.host}:{m.port}" in warnings[0].getMessage()
    assert m.status()["forged_messages"] == 0 and m.status()["workers"] == {}


class Proxy:
    """A TCP proxy on 127.0.0.1 that records what each client sends (a man in the middle, for capture)."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.logs: list[tuple[bytearray, bytearray]] = []  # per connection: (client to server, server to client)
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def sent(self) -> bytes:
        """What the client of the busiest connection sent (a worker's probe connects first and sends nothing)."""
        return bytes(max(self.logs, key=lambda pair: len(pair[0]))[0]) if self.logs else b""

    @property
    def received(self) -> bytes:
        return bytes(max(self.logs, key=lambda pair: len(pair[0]))[1]) if self.logs else b""

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            self._conns += [client, server]
            up, down = bytearray(), bytearray()
            self.logs.append((up, down))
            for a, b, log in ((client, server, up), (server, client, down)):
                threading.Thread(target=self._pump, args=(a, b, log), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket, log: bytearray) -> None:
        try:
            while data := a.recv(65536):
                log += data
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()
        for c in self._conns:
            c.close()


@pytest.fixture
def proxy_of(cluster: Cluster) -> Iterator[Proxy]:
    p = Proxy(cluster.manager.port)
    yield p
    p.close()


def capture_a_worker_session(m: cp.Manager, proxy: Proxy, name: str) -> bytes:
    """A real worker's whole TCP stream to the Manager, through the proxy: hello, pings, clock reports, bye."""
    w = cp.Worker(name, token=m.token, encrypt=m.encrypt)
    w.connect("127.0.0.1", proxy.port)
    wait_until(lambda: m.status()["workers"].get(name, {}).get("rtt") is not None, 10, "clock reports")
    w.shutdown()
    wait_until(lambda: m.status()["workers"][name]["state"] == "disconnected", 10, "the worker to leave")
    return proxy.sent


def zmtp_commands(stream: bytes) -> tuple[bytes, list[bytes], bytes]:
    """A captured ZMTP 3 client stream: (greeting, handshake commands, the messages after them)."""
    greeting, pos, commands = stream[:64], 64, []
    while pos < len(stream) and stream[pos] & 0x04:  # a command frame (flags bit 2)
        long = stream[pos] & 0x02
        size = int.from_bytes(stream[pos + 1:pos + 9], "big") if long else stream[pos + 1]
        end = pos + (9 if long else 2) + size
        commands.append(stream[pos:end])
        pos = end
    return greeting, commands, stream[pos:]


def replay(host: str, port: int, stream: bytes) -> socket.socket:
    """Send a captured stream again on a new connection, paced as a ZMTP client paces its handshake (it waits
    for each answer of the server; libzmq refuses a handshake sent in one go)."""
    greeting, commands, rest = zmtp_commands(stream)
    s = socket.create_connection((host, port))
    s.settimeout(5)

    def expect(n: int) -> None:  # wait for n more bytes from the server (or its close)
        got = 0
        while got < n:
            data = s.recv(n - got)
            if not data:
                return
            got += len(data)

    s.sendall(greeting[:11])  # signature and major version
    expect(64)  # the server's whole greeting
    s.sendall(greeting[11:])
    for command in commands:
        s.sendall(command)
        head = s.recv(2)  # the server's answer to it (WELCOME, READY), or its close
        if len(head) == 2 and head[0] & 0x04:
            expect(int.from_bytes(s.recv(8), "big") if head[0] & 0x02 else head[1])
    s.sendall(rest)
    return s


def test_captured_control_traffic_replayed_later_is_refused(cluster: Cluster, proxy_of: Proxy) -> None:
    m = cluster.manager
    stream = capture_a_worker_session(m, proxy_of, "captured")
    assert b"captured" in stream  # plain ZMTP: the hello (name, host, pid) can be read, and replayed
    s = replay(m.host, m.port, stream)
    try:
        # the handshake replays fine (the same password), but each message was had before: refused, counted
        wait_until(lambda: m.status()["replayed_messages"] >= 3, 10, "the replayed messages to be refused")
        assert m.status()["workers"]["captured"]["state"] == "disconnected"  # the replayed hello did nothing
        assert m.status()["forged_messages"] == 0
    finally:
        s.close()


def test_encrypted_traffic_can_be_neither_read_nor_replayed(tmp_path: str) -> None:
    with cp.Manager(port=0, encrypt=True) as m:
        proxy = Proxy(m.port)
        try:
            stream = capture_a_worker_session(m, proxy, "secret-worker-name")
            assert len(stream) > 500 and b"secret-worker-name" not in stream and b"hello" not in stream
            assert b"secret-worker-name" not in proxy.received
            s = replay(m.host, m.port, stream)
            try:  # CurveZMQ's keys are new each connection: the replay fails at the handshake
                wait_until(lambda: m.status()["rejected"] >= 1, 10, "the replay to be refused at the handshake")
                assert m.status()["replayed_messages"] == 0 and m.status()["forged_messages"] == 0
            finally:
                s.close()
        finally:
            proxy.close()
        assert m.status()["encrypted"] is True


def test_an_encrypted_cluster_runs_a_pipeline(tmp_path: str) -> None:
    with cp.Manager(port=0, encrypt=True) as m, cp.LocalCluster(2, manager=m):
        g = cp.Graph()
        g.add_edge(Count("source", n=200, rate_hz=500), Sink("sink"))
        m.commit_graph(g, {w: [n] for w, n in zip(sorted(m.workers), ["source", "sink"], strict=True)})
        m.start()
        wait_until(lambda: steps(m, "sink") >= 200, 20, "200 messages through encrypted sockets")
        m.stop()
        assert m.metrics()["sink"]["inputs"]["source"]["dropped"] == 0


def test_captured_data_messages_replayed_into_an_input_are_refused(cluster: Cluster) -> None:
    cluster.worker("a")
    m = cluster.manager
    g = cp.Graph()
    g.add_edge(Count("source", rate_hz=100), Sink("sink"))
    m.commit_graph(g, {"a": ["source", "sink"]})
    m.start()
    # a copy of exactly what the source sends the sink, as a tap gets it (its raw frames, not decoded)
    sock = m.ctx.socket(zmq.PULL)
    cp.transport.serve(sock, m._key, "test capture")
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    m._to_node("source", {"op": "tap", "tap": "capture", "addr": f"tcp://127.0.0.1:{port}"})
    raw = []
    while len(raw) < 5:
        assert sock.poll(5000)
        raw.append(bytes(sock.recv()))
    m._to_node("source", {"op": "untap", "tap": "capture"})
    sock.close(0)
    addr = m.status()["nodes"]["sink"]["inputs"]["source"]
    push = m.ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 1000)
    cp.transport.client(push, m._key)  # an insider past the handshake: only the replay check stands
    push.connect(addr)
    for blob in raw:
        push.send_multipart(cp.wire.unpack_frames(blob))
    push.close()
    wait_until(lambda: node_metric(m, "sink", "replayed") >= 5, 10, "the 5 replayed data messages to be refused")
    m.stop()
    met = m.metrics()
    assert met["sink"]["forged"] == 0
    assert met["sink"]["inputs"]["source"]["received"] == met["sink"]["steps"] == met["source"]["steps"]

    # the same bytes in the next commit: another commit's key, so not even a valid signature
    m.commit_graph(g, {"a": ["source", "sink"]})
    m.start()
    push = m.ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 1000)
    cp.transport.client(push, m._key)
    push.connect(m.status()["nodes"]["sink"]["inputs"]["source"])
    for blob in raw:
        push.send_multipart(cp.wire.unpack_frames(blob))
    push.close()
    wait_until(lambda: node_metric(m, "sink", "forged") >= 5, 10, "the old commit's messages to be refused")
    m.stop()
    assert m.metrics()["sink"]["inputs"]["source"]["received"] == m.metrics()["source"]["steps"]


def test_the_handshake_timeout_closes_idle_connections_quickly(cluster: Cluster) -> None:
    m = cluster.manager
    s = socket.create_connection((m.host, m.port))
    t0 = time.monotonic()
    s.settimeout(10)
    try:
        data = s.recv(4096)  # the Manager's ZMTP greeting, then nothing more: we send nothing
        while data:
            data = s.recv(4096)
    except ConnectionResetError:
        pass
    finally:
        s.close()
    waited = time.monotonic() - t0
    assert waited < cp.transport.HANDSHAKE_TIMEOUT + 2
    wait_until(lambda: m.status()["rejected"] >= 1, 5, "the idle connection to be counted")
