"""Property-based fuzzing (Hypothesis) of every decoder that reads bytes from the network or from a file.

- `wire`: control and data messages, packed frames and sealed frames, random or made valid and then mutated
  (a bit flipped, a frame truncated, extended, dropped, duplicated, appended, reordered or spliced from another
  message, or signed under another key): decoding gives back the original or raises `wire.AuthError`, never
  anything else, and nothing is unpickled or JPEG-decoded on the way to refusing a message;
- the parameter channel of distributed SGD (`ml.rounds._serve`, the real worker-side loop over a ROUTER/DEALER
  pair on 127.0.0.1): forged and mutated frames are dropped, and the channel goes on answering;
- collecting a recorded session (`records.collect`): file chunks fetched from a worker, whatever the worker
  answers, end up as the exact file or as a CollectError, and a listing never puts a file outside the session;
- `graph_io`: graph JSON, random or valid and then mutated: a Graph or a GraphError with a message;
- `ml.rest`: request bodies and headers, through `Api.handle` and through a real server: a 200 for a valid
  request, else a 4xx whose detail names the problem, never a 500, and the server keeps answering.

Bounded for CI: derandomized, no example database, a fixed number of examples per test (the whole file runs
in well under a minute). ``CHIMERA_FUZZ_SCALE=10`` runs ten times the examples with fresh random inputs.
"""

from __future__ import annotations

import base64
import copy
import email.message
import hashlib
import io
import json
import math
import os
import pickle
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import cv2
import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as npst

from chimera_lab import graph_io, wire
from chimera_lab.datachunk import DataChunk
from chimera_lab.graph import Graph, GraphError
from chimera_lab.ml import rest, rounds
from chimera_lab.ml.linear import Penalty, Problem
from chimera_lab.ml.masters import ParameterServerMaster
from chimera_lab.nodes import GaussianBlur, Grayscale, NullSink, Resize, StatsSink, TestPatternSource
from chimera_lab.records import collect
from chimera_lab.records.collect import CollectError, SessionState

SCALE = float(os.environ.get("CHIMERA_FUZZ_SCALE", "1"))


def fuzz(examples: int, *, checks: tuple[HealthCheck, ...] = ()) -> Callable[[Any], Any]:
    """Hypothesis settings for CI: `examples` examples (times CHIMERA_FUZZ_SCALE), reproducible, no deadline."""
    return settings(max_examples=max(1, int(examples * SCALE)), deadline=None, derandomize=SCALE == 1,
                    database=None, suppress_health_check=checks)


KEY = bytes(range(32))
OTHER_KEY = bytes(range(100, 132))

# msgpack data as the wire carries it (no NaN: it would not equal itself after the round trip)
PLAIN = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8)
# JSON data, with the values that break naive parsers: huge ints, floats near the limit, non-ASCII text
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(10**300, 10**400) | st.floats(allow_nan=False,
                                                                                          allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
DEEP = "[" * 100_000 + "]" * 100_000  # nested deeper than the recursion limit


def on_wire(frames: list[Any]) -> list[bytes]:
    """The frames as a socket delivers them: independent byte strings."""
    return [bytes(memoryview(f)) for f in frames]


def same(a: Any, b: Any) -> bool:
    """Deep equality with types (and arrays by dtype, shape and bytes)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and a.tobytes() == b.tobytes())
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


# --------------------------------------------------------------------------------------------------
# mutations of a valid message
# --------------------------------------------------------------------------------------------------
MUTATIONS = ("flip", "truncate", "extend", "drop", "duplicate", "append", "swap", "splice", "insert")


def mutate_frames(data: st.DataObject, frames: list[bytes], other: list[bytes]) -> list[bytes]:
    """`frames` after one to three random mutations (frames from `other`, another valid message, may be spliced in)."""
    out = list(frames)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        kind = data.draw(st.sampled_from(MUTATIONS), label="mutation")
        if not out:
            kind = "append"
        i = data.draw(st.integers(0, max(0, len(out) - 1)), label="frame")
        if kind == "flip" and out[i]:
            b = bytearray(out[i])
            b[data.draw(st.integers(0, len(b) - 1), label="byte")] ^= 1 << data.draw(st.integers(0, 7), label="bit")
            out[i] = bytes(b)
        elif kind == "truncate" and out[i]:
            out[i] = out[i][:data.draw(st.integers(0, len(out[i]) - 1), label="keep")]
        elif kind in ("flip", "truncate", "extend"):
            out[i] = out[i] + data.draw(st.binary(min_size=1, max_size=8), label="extra")
        elif kind == "drop":
            del out[i]
        elif kind == "duplicate":
            out.insert(i, out[i])
        elif kind == "append":
            out.append(data.draw(st.binary(max_size=40), label="appended"))
        elif kind == "swap":
            j = data.draw(st.integers(0, len(out) - 1), label="other frame")
            out[i], out[j] = out[j], out[i]
        elif kind == "splice":
            out[i] = data.draw(st.sampled_from(other), label="spliced")
        else:  # insert
            out.insert(i, data.draw(st.sampled_from(other), label="inserted"))
    return out


def mutate_bytes(data: st.DataObject, blob: bytes) -> bytes:
    """`blob` with a bit flipped, cut short, extended, or a slice of it repeated."""
    kind = data.draw(st.sampled_from(("flip", "truncate", "extend", "repeat")), label="byte mutation")
    if kind == "flip" and blob:
        b = bytearray(blob)
        b[data.draw(st.integers(0, len(b) - 1))] ^= 1 << data.draw(st.integers(0, 7))
        return bytes(b)
    if kind == "truncate" and blob:
        return blob[:data.draw(st.integers(0, len(blob) - 1))]
    if kind == "repeat" and blob:
        start = data.draw(st.integers(0, len(blob) - 1))
        return blob[:start] + blob[start:] * 2
    return blob + data.draw(st.binary(min_size=1, max_size=16))


class Watch:
    """Records every pickle.loads and cv2.imdecode that wire makes (see `watch_decoders`)."""

    def __init__(self) -> None:
        self.calls: list[str] = []


@contextmanager
def watch_decoders() -> Iterator[Watch]:
    """Patch pickle.loads (as wire sees it) and cv2.imdecode to record their calls."""
    watch = Watch()
    real_loads, real_imdecode = pickle.loads, cv2.imdecode

    class RecordingPickle:
        def __getattr__(self, name: str) -> Any:
            return getattr(pickle, name)

        @staticmethod
        def loads(*args: Any, **kwargs: Any) -> Any:
            watch.calls.append("pickle.loads")
            return real_loads(*args, **kwargs)

    def imdecode(*args: Any, **kwargs: Any) -> Any:
        watch.calls.append("cv2.imdecode")
        return real_imdecode(*args, **kwargs)

    with mock.patch.object(wire, "pickle", RecordingPickle()), mock.patch.object(cv2, "imdecode", imdecode):
        yield watch


# --------------------------------------------------------------------------------------------------
# wire: control messages
# --------------------------------------------------------------------------------------------------
# keys wire reserves in a control header ("x": digests of blobs; "_..." : its own, e.g. the replay stamp)
CONTROL_KEYS = st.text(max_size=5).filter(lambda k: k not in ("op", "x") and not k.startswith("_"))
CONTROL_MSGS = st.builds(lambda op, extra: {**extra, "op": op}, st.text(max_size=8),
                         st.dictionaries(CONTROL_KEYS, PLAIN, max_size=3))
BLOBS = st.lists(st.binary(max_size=64), max_size=3).map(tuple)


@fuzz(300)
@given(data=st.data(), msg=CONTROL_MSGS, blobs=BLOBS, digest=st.booleans())
def test_control_messages_decode_to_the_original_or_raise_auth_error(data: st.DataObject, msg: dict[str, Any],
                                                                      blobs: tuple[bytes, ...],
                                                                      digest: bool) -> None:
    sender, receiver = wire.Signer(KEY), wire.Signer(KEY)
    frames = on_wire(wire.encode_control(sender, msg, blobs, digest_blobs=digest))
    other = on_wire(wire.encode_control(sender, {"op": "other", "n": 1}, (b"another blob",), digest_blobs=digest))
    got_msg, got_blobs = wire.decode_control(receiver, list(frames))
    assert same(got_msg, msg) and on_wire(got_blobs) == list(blobs)

    mutated = mutate_frames(data, frames, other)
    forged = on_wire(wire.encode_control(wire.Signer(OTHER_KEY), msg, blobs, digest_blobs=digest))
    with watch_decoders() as watch:
        for bad in (mutated, forged):
            if bad != frames:
                with pytest.raises(wire.AuthError):
                    wire.decode_control(receiver, bad)
    assert watch.calls == []


@fuzz(300)
@given(frames=st.lists(st.binary(max_size=48), max_size=5))
def test_random_frames_are_auth_errors(frames: list[bytes]) -> None:
    signer = wire.Signer(KEY)
    with watch_decoders() as watch:
        with pytest.raises(wire.AuthError):
            wire.decode_control(signer, frames)
        with pytest.raises(wire.AuthError):
            wire.chunk_from_header(wire.decode_data(signer, frames))
    assert watch.calls == []


# headers that parse (msgpack dicts with the keys decoders look at) behind a MAC that does not check out
HEADERS = st.dictionaries(st.sampled_from(["op", "x", "_s", "q", "t", "h", "r", "eos"]) | st.text(max_size=3),
                          PLAIN | st.lists(st.lists(st.integers(-1, 2**64 - 1), max_size=4), max_size=3),
                          max_size=5)


@fuzz(200)
@given(mac=st.binary(max_size=40), header=HEADERS | PLAIN, bufs=st.lists(st.binary(max_size=16), max_size=3))
def test_parseable_headers_behind_a_wrong_mac_are_auth_errors(mac: bytes, header: Any, bufs: list[bytes]) -> None:
    signer = wire.Signer(KEY)
    frames = [mac, msgpack.packb(header, use_bin_type=True), *bufs]
    with watch_decoders() as watch:
        with pytest.raises(wire.AuthError):
            wire.decode_control(signer, frames)
        with pytest.raises(wire.AuthError):
            wire.chunk_from_header(wire.decode_data(signer, frames))
    assert watch.calls == []


# --------------------------------------------------------------------------------------------------
# wire: data messages
# --------------------------------------------------------------------------------------------------
ARRAY_DTYPES = st.sampled_from(["<f8", "<f4", "<i8", "<i2", "|u1", "|b1", "<c16", "<M8[s]", ">i4"])


@st.composite
def chunks(draw: st.DrawFn) -> DataChunk:
    """DataChunks with records of every encoding: msgpack, raw arrays (small and digest-covered), JPEG, pickle."""
    chunk = DataChunk()
    chunk.created = draw(st.floats(0, 2e9))
    for i in range(draw(st.integers(0, 4))):
        name = f"{i}{draw(st.text(max_size=3))}"
        kind = draw(st.sampled_from(["plain", "array", "big", "image", "pickle"]))
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        if kind == "plain":
            chunk.add(name, draw(PLAIN))
        elif kind == "array":
            arr = draw(npst.arrays(ARRAY_DTYPES, npst.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)))
            chunk.add(name, arr, "ndarray")
        elif kind == "big":  # from wire.BIG bytes up: covered by length and digest, not by the MAC
            chunk.add(name, rng.integers(0, 256, wire.BIG + draw(st.integers(0, 9)), dtype=np.uint8), "ndarray")
        elif kind == "image":
            h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
            shape = draw(st.sampled_from([(h, w), (h, w, 3)]))
            chunk.add(name, rng.integers(0, 256, shape, dtype=np.uint8), "image",
                      quality=draw(st.none() | st.integers(1, 100)))
        else:  # not msgpack data: pickled (an array inside a dict travels as an out-of-band buffer)
            value = draw(st.sets(st.integers(), max_size=3) | st.tuples(st.integers(), st.text(max_size=3))
                         | st.complex_numbers(allow_nan=False, allow_infinity=False)
                         | st.builds(lambda n: {"arr": np.arange(n, dtype=np.float64)}, st.integers(0, 9)))
            chunk.add(name, value)
    return chunk


def assert_same_chunk(got: DataChunk, chunk: DataChunk) -> None:
    assert list(got.records) == list(chunk.records)
    for name, rec in chunk.records.items():
        value, back = rec["value"], got.get(name)
        assert back["content-type"] == rec["content-type"]
        if rec["content-type"] == "image":  # JPEG is lossy: the shape and type come back
            assert back["value"].shape == value.shape and back["value"].dtype == np.uint8
        else:
            assert same(back["value"], value), name


def decode_chunk(signer: wire.Signer, frames: list[Any]) -> DataChunk:
    """What a receiver does with a data message: verify, then decode the records."""
    return wire.chunk_from_header(wire.decode_data(signer, frames))


OTHER_DATA: list[bytes] = []  # another valid data message, to splice frames from (made once)


def other_data() -> list[bytes]:
    if not OTHER_DATA:
        chunk = DataChunk()
        chunk.add("p", {1, 2})
        chunk.add("a", np.arange(6, dtype=np.int32), "ndarray")
        chunk.add("img", np.full((4, 4), 7, np.uint8), "image")
        chunk.add("m", [1, "two"])
        OTHER_DATA.extend(on_wire(wire.encode_chunk(wire.Signer(KEY), chunk, 1, 0.0, [])))
    return OTHER_DATA


@fuzz(200, checks=(HealthCheck.too_slow, HealthCheck.data_too_large))
@given(data=st.data(), chunk=chunks(), seq=st.integers(0, 2**63 - 1),
       hops=st.lists(st.tuples(st.text(max_size=5), st.floats(0, 2e9)).map(list), max_size=3))
def test_data_messages_decode_to_the_original_or_raise_auth_error_before_anything_is_decoded(
        data: st.DataObject, chunk: DataChunk, seq: int, hops: list[list[Any]]) -> None:
    sender, receiver = wire.Signer(KEY), wire.Signer(KEY)
    frames = on_wire(wire.encode_chunk(sender, chunk, seq, chunk.created, hops))
    with watch_decoders() as watch:
        header = wire.decode_data(receiver, list(frames))
        assert header["q"] == seq
        got = wire.chunk_from_header(header)
    assert_same_chunk(got, chunk)
    assert got.created == chunk.created and got.hops == [tuple(h) for h in hops]
    encodings = [rec[2] for rec in header["r"]]  # [name, content type, encoding, meta, buffers]
    assert watch.calls.count("pickle.loads") == encodings.count("p")  # the watch sees what wire decodes
    assert watch.calls.count("cv2.imdecode") == encodings.count("j")

    mutated = mutate_frames(data, frames, other_data())
    forged = on_wire(wire.encode_chunk(wire.Signer(OTHER_KEY), chunk, seq, chunk.created, hops))
    with watch_decoders() as watch:
        for bad in (mutated, forged):
            if bad != frames:
                with pytest.raises(wire.AuthError):
                    decode_chunk(receiver, bad)
    assert watch.calls == []


@fuzz(100)
@given(data=st.data(), last=st.integers(0, 2**62), step=st.integers(1, 2**62))
def test_end_of_stream_markers_decode_or_raise_auth_error(data: st.DataObject, last: int, step: int) -> None:
    signer = wire.Signer(KEY)
    frames = on_wire(wire.encode_eos(signer, last, last + step))
    header = wire.decode_data(signer, list(frames))
    assert header["eos"] == last and header["_bufs"] == []
    mutated = mutate_frames(data, frames, other_data())
    if mutated != frames:
        with pytest.raises(wire.AuthError):
            decode_chunk(signer, mutated)


# --------------------------------------------------------------------------------------------------
# wire: packed frames (conflating sockets) and sealed frames (the parameter channel)
# --------------------------------------------------------------------------------------------------
@fuzz(300)
@given(blob=st.binary(max_size=80)
       | st.builds(lambda n, rest: struct.pack("<I", n) + rest, st.integers(0, 2**32 - 1), st.binary(max_size=40)))
def test_unpack_frames_of_random_bytes_is_a_prefix_or_an_auth_error(blob: bytes) -> None:
    try:
        frames = wire.unpack_frames(blob)
    except wire.AuthError:
        return
    assert blob.startswith(wire.pack_frames(frames))  # exactly what the blob holds, nothing invented


@fuzz(200, checks=(HealthCheck.too_slow, HealthCheck.data_too_large))
@given(data=st.data(), chunk=chunks())
def test_packed_data_messages_unpack_and_decode_or_raise_auth_error(data: st.DataObject, chunk: DataChunk) -> None:
    signer = wire.Signer(KEY)
    frames = on_wire(wire.encode_chunk(signer, chunk, 7, chunk.created, []))
    blob = wire.pack_frames(frames)
    assert on_wire(wire.unpack_frames(blob)) == frames
    assert_same_chunk(decode_chunk(signer, wire.unpack_frames(blob)), chunk)

    bad = mutate_bytes(data, blob)
    with watch_decoders() as watch:
        try:
            unpacked = on_wire(wire.unpack_frames(bad))
        except wire.AuthError:
            unpacked = None
        if unpacked is not None and unpacked != frames:
            with pytest.raises(wire.AuthError):
                decode_chunk(signer, unpacked)
    if unpacked != frames:
        assert watch.calls == []


@fuzz(300)
@given(data=st.data(), body=st.binary(max_size=120), noise=st.binary(max_size=80))
def test_sealed_frames_unseal_to_the_body_or_raise_auth_error(data: st.DataObject, body: bytes,
                                                              noise: bytes) -> None:
    signer = wire.Signer(KEY)
    frame = signer.seal(body)
    assert bytes(signer.unseal(frame)) == body
    bad = mutate_bytes(data, frame)
    for forged in (noise, bad, wire.Signer(OTHER_KEY).seal(body)):
        if forged != frame:
            with pytest.raises(wire.AuthError):
                signer.unseal(forged)
    # neither kind passes for the other: a sealed frame as a control or data message, and back
    split = [frame[:wire.MAC_SIZE], frame[wire.MAC_SIZE:]]
    with pytest.raises(wire.AuthError):
        wire.decode_control(signer, split)
    with pytest.raises(wire.AuthError):
        wire.decode_data(signer, split)
    control = on_wire(wire.encode_control(signer, {"op": "x"}, (body,)))
    for joined in (b"".join(control), control[0], control[0] + control[1]):
        with pytest.raises(wire.AuthError):
            signer.unseal(joined)


# --------------------------------------------------------------------------------------------------
# the parameter channel: the worker's side (rounds._serve) for real, over 127.0.0.1
# --------------------------------------------------------------------------------------------------
class ParameterChannel:
    """The estimator's end of a parameter channel (a ROUTER on 127.0.0.1) with the real worker side, `_serve`, on a
    thread of this process; `ask` runs one valid round and checks the answer."""

    X = np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]])
    y = np.array([1.0, 0.0, 2.0])

    def __init__(self) -> None:
        self.signer = wire.Signer(KEY)
        self.session = b"fuzz01"
        self.problem = Problem("squared_error", 1, 2)
        self.error: BaseException | None = None
        self.result: dict[str, Any] | None = None
        self.sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        transport = getattr(rounds, "transport", None)  # admission at the handshake, as Channel sets it up
        if transport is not None:
            transport.serve(self.sock, KEY, "the fuzzed parameter channel")
        port: int = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.worker = SimpleNamespace(store={"d": (self.X, self.y)}, name="fuzz-worker", host="127.0.0.1",
                                      signer=wire.Signer(KEY), connected=True, _key=KEY, encrypt=False)
        self.thread = threading.Thread(target=self._run, args=(port,), name="fuzz-serve", daemon=True)
        self.thread.start()
        self.ident, hello = self.recv()
        assert rounds._REP.unpack_from(self.signer.unseal(hello))[:4] == (self.session, rounds.HELLO, 0, len(self.X))
        self.asked = 0

    def _run(self, port: int) -> None:
        try:
            self.result = rounds._serve(self.worker, port, self.session, "d", self.problem, Penalty(None, 0.0), 0)
        except BaseException as exc:  # the test reports it
            self.error = exc

    def recv(self, timeout: float = 10.0) -> list[bytes]:
        """The next message from the worker side; fails at once if that side has ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sock.poll(20):
                return self.sock.recv_multipart()
            if not self.thread.is_alive():
                raise AssertionError(f"the worker side of the channel ended: {self.error!r} (result {self.result})")
        raise AssertionError(f"no answer from the worker side within {timeout} s")

    def send(self, *frames: bytes) -> None:
        self.sock.send_multipart([self.ident, *frames])

    def request(self, op: int, rnd: int, theta: np.ndarray, session: bytes | None = None) -> bytes:
        header = rounds._REQ.pack(session or self.session, op, rnd, -1, 0, 0.0)
        return self.signer.seal(header + theta.tobytes())

    def ask(self, rnd: int) -> None:
        """One valid gradient round `rnd`: the answer is that round's, with the exact gradient."""
        theta = np.array([0.5, -0.25, 0.125])
        self.send(self.request(rounds.GRAD, rnd, theta))
        self.asked += 1
        while True:
            ident, frame = self.recv()
            body = self.signer.unseal(frame)
            sess, op, got_rnd, n, loss, metric, _ = rounds._REP.unpack_from(body)
            if got_rnd == rnd:
                break  # earlier answers: to sealed requests a test sent on purpose
        assert (ident, sess, op, n) == (b"fuzz-worker", self.session, rounds.GRAD, len(self.X))
        want_loss, want_grad, want_metric = self.problem.loss_grad(theta, self.X, self.problem.targets(self.y))
        assert (loss, metric) == (want_loss, want_metric)
        assert np.array_equal(np.frombuffer(body, np.float64, offset=rounds._REP.size), want_grad)

    def close(self) -> dict[str, Any] | None:
        """Stop the worker side (a sealed STOP); its result."""
        if self.thread.is_alive():
            self.send(self.signer.seal(rounds._REQ.pack(self.session, rounds.STOP, 0, 0, 0, 0.0)))
            self.thread.join(5)
        if self.thread.is_alive():  # it missed the STOP: it ends within its receive timeout
            self.worker.connected = False
            self.thread.join(5)
        self.sock.close(0)
        return self.result


@contextmanager
def parameter_channel() -> Iterator[ParameterChannel]:
    channel = ParameterChannel()
    try:
        yield channel
    finally:
        channel.close()


@fuzz(40)
@given(data=st.data(), noise=st.lists(st.binary(max_size=80), max_size=3))
def test_the_parameter_channel_drops_forged_and_mutated_frames(data: st.DataObject, noise: list[bytes]) -> None:
    with parameter_channel() as channel:
        theta = np.arange(3, dtype=np.float64)
        valid = channel.request(rounds.GRAD, 9, theta)
        frames = [*noise, mutate_bytes(data, valid), wire.Signer(OTHER_KEY).seal(valid[wire.MAC_SIZE:]),
                  b"".join(on_wire(wire.encode_control(channel.signer, {"op": "x"}))),  # another kind, same key
                  channel.request(rounds.GRAD, 9, theta, session=b"other!"),  # another fit's
                  channel.request(rounds.STOP, 9, theta, session=b"other!"),  # another fit's STOP: not ours
                  channel.signer.seal(valid[wire.MAC_SIZE:wire.MAC_SIZE + data.draw(st.integers(0, 31))])]  # short
        frames = [f for f in frames if f != valid]
        for f in data.draw(st.permutations(frames)):
            if data.draw(st.booleans(), label="as a frame of a multipart message"):
                channel.send(f, data.draw(st.binary(max_size=8)))
            else:
                channel.send(f)
        channel.ask(10)
        result = channel.close()
    assert result == {"rounds": 1, "ended": "stop"}  # the one valid round only


@fuzz(30)
@given(op=st.integers(0, 255).filter(lambda op: op != rounds.STOP), rnd=st.integers(1, 1000),
       batch=st.integers(-(2**31), 2**31 - 1), tail=st.binary(max_size=40))
@example(op=rounds.GRAD, rnd=1, batch=-1, tail=b"\x00" * 3).via("a misaligned tail")
@example(op=rounds.GRAD, rnd=1, batch=-1, tail=b"\x00" * 8).via("one float64 instead of three")
@example(op=rounds.LOCAL, rnd=1, batch=0, tail=b"\x00" * 24).via("a LOCAL batch of 0 rows")
def test_the_parameter_channel_survives_malformed_requests_sealed_by_the_estimator(op: int, rnd: int, batch: int,
                                                                                    tail: bytes) -> None:
    with parameter_channel() as channel:
        channel.send(channel.signer.seal(rounds._REQ.pack(channel.session, op, rnd, batch, 1, 0.01) + tail))
        channel.ask(2**32 - 1)  # the next valid round is still answered


@contextmanager
def estimator_end() -> Iterator[tuple[rounds.Channel, zmq.Socket[bytes]]]:
    """The estimator's side of a parameter channel (a `Channel` without its Manager: only what `_gather` reads), and
    a DEALER on 127.0.0.1 standing for the worker side "w"."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    channel = object.__new__(rounds.Channel)
    channel.signer, channel.session, channel.timeout = wire.Signer(KEY), b"fuzz02", 10.0
    channel._size = 3  # floats per answer: the problem's size
    channel.tasks, channel.failed, channel.sizes = {"w": Future()}, {}, {}
    channel._round, channel._idents, channel.address = 0, {"w": b"w"}, "127.0.0.1"
    channel._sock = ctx.socket(zmq.ROUTER)
    channel._sock.setsockopt(zmq.LINGER, 0)
    channel._sock.setsockopt(zmq.RCVTIMEO, 50)
    dealer: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.IDENTITY, b"w")
    transport = getattr(rounds, "transport", None)  # admission at the handshake, as Channel and _serve set it up
    if transport is not None:
        transport.serve(channel._sock, KEY, "the fuzzed parameter channel")
        transport.client(dealer, KEY)
    port: int = channel._sock.bind_to_random_port("tcp://127.0.0.1")
    dealer.connect(f"tcp://127.0.0.1:{port}")
    try:
        yield channel, dealer
    finally:
        dealer.close(0)
        channel._sock.close(0)


def reply(channel: rounds.Channel, op: int, rnd: int, vec: bytes, session: bytes | None = None) -> bytes:
    """A worker side's sealed answer: 3 rows, loss 1.5, metric 2, 0.25 s of compute, then `vec`."""
    return channel.signer.seal(rounds._REP.pack(session or channel.session, op, rnd, 3, 1.5, 2.0, 0.25) + vec)


@fuzz(40)
@given(data=st.data(), noise=st.lists(st.binary(max_size=80), max_size=3))
def test_the_estimator_drops_forged_and_mutated_answers(data: st.DataObject, noise: list[bytes]) -> None:
    vec = np.array([1.0, -2.0, 0.5])
    with estimator_end() as (channel, dealer):
        valid = reply(channel, rounds.GRAD, 1, vec.tobytes())
        frames = [*noise, mutate_bytes(data, valid), wire.Signer(OTHER_KEY).seal(valid[wire.MAC_SIZE:]),
                  b"".join(on_wire(wire.encode_control(channel.signer, {"op": "x"}))),  # another kind, same key
                  reply(channel, rounds.GRAD, 1, vec.tobytes(), session=b"other!"),  # another fit's
                  reply(channel, rounds.LOCAL, 1, vec.tobytes()), reply(channel, rounds.GRAD, 7, b""),  # not asked
                  channel.signer.seal(valid[wire.MAC_SIZE:wire.MAC_SIZE + data.draw(st.integers(0, 47))])]  # short
        for f in data.draw(st.permutations([f for f in frames if f != valid])):
            dealer.send_multipart([f, *data.draw(st.lists(st.binary(max_size=8), max_size=2), label="more frames")])
        dealer.send(valid)
        answers = channel._gather(rounds.GRAD, {"w"}, 1, 10.0)
    assert channel.failed == {} and list(answers) == ["w"]
    got = answers["w"]
    assert (got.n, got.loss, got.metric, got.compute) == (3, 1.5, 2.0, 0.25) and np.array_equal(got.vector, vec)


@fuzz(20)
@given(tail=st.binary(max_size=40).filter(lambda t: len(t) % 8 != 0))
@example(tail=b"\x00" * 3).via("a misaligned vector")
def test_the_estimator_survives_malformed_answers_sealed_by_a_worker(tail: bytes) -> None:
    with estimator_end() as (channel, dealer):
        dealer.send(reply(channel, rounds.GRAD, 1, tail))
        dealer.send(reply(channel, rounds.GRAD, 1, np.zeros(3).tobytes()))
        answers = channel._gather(rounds.GRAD, {"w"}, 1, 10.0)
    assert list(answers) == ["w"]


# --------------------------------------------------------------------------------------------------
# collecting a recorded session: file chunks fetched from a worker
# --------------------------------------------------------------------------------------------------
REPLY_FAULTS = ("honest", "honest", "honest", "error", "no blobs", "empty blobs", "short", "long", "flipped",
                "other chunk", "not bytes", "not ok", "two blobs")


class FetchingManager:
    """Enough of a Manager for `collect`: a worker "w1" whose replies to "fetch" are honest or faulty (drawn by
    Hypothesis), and whose "files" listing is given."""

    def __init__(self, data: st.DataObject | None, files: dict[str, bytes], session: SessionState | None = None,
                 listing: dict[str, Any] | None = None) -> None:
        self.data, self.files, self.session, self.listing = data, files, session, listing
        self.faults: list[str] = []
        self.workers = {"w1": SimpleNamespace(state="connected", hostname="h", pid=1, cwd="/", offset=0.0, rtt=0.0)}
        self.nodes: dict[str, Any] = {}
        self.graph = None
        self.mapping: dict[str, Any] = {}
        self.host, self.port = "127.0.0.1", 0
        self.events: list[dict[str, Any]] = []

    def _emit(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def _request(self, worker: str, msg: dict[str, Any], blobs: tuple[bytes, ...] = ()) -> Future[dict[str, Any]]:
        fut: Future[dict[str, Any]] = Future()
        fut.set_result(self._reply(msg))
        return fut

    def _reply(self, msg: dict[str, Any]) -> dict[str, Any]:
        if msg["op"] == "files":
            assert self.listing is not None
            return {"ok": True, **self.listing}
        if msg["op"] == "forget":
            return {"ok": True, "deleted": 0}
        assert msg["op"] == "fetch"
        content = self.files.get(msg["path"], b"")
        off, n = msg["offset"], msg["size"]
        blob = content[off:off + n]
        fault = "honest" if self.data is None else self.data.draw(st.sampled_from(REPLY_FAULTS), label="reply")
        self.faults.append(fault)
        reply: dict[str, Any] = {"op": "reply", "ok": True, "size": len(blob), "_blobs": [blob]}
        if fault == "error":
            return {"op": "reply", "ok": False, "error": "No such file"}
        if fault == "no blobs":
            del reply["_blobs"]
        elif fault == "empty blobs":
            reply["_blobs"] = []
        elif fault == "short":
            reply["_blobs"] = [blob[:-1]]
        elif fault == "long":
            reply["_blobs"] = [blob + b"!"]
        elif fault == "flipped":
            reply["_blobs"] = [bytes([blob[0] ^ 1]) + blob[1:]]
        elif fault == "other chunk":  # the right length, other bytes (another part of the file, another file)
            reply["_blobs"] = [bytes(len(blob)) if any(blob) else b"\x01" * len(blob)]
        elif fault == "not bytes":  # a header with its own "_blobs" key (a message with no blob frames)
            assert self.data is not None
            reply["_blobs"] = [self.data.draw(st.none() | st.integers() | st.text(max_size=n + 1)
                                              | st.lists(st.integers(0, 255), min_size=n, max_size=n))]
        elif fault == "not ok":
            del reply["ok"]
        elif fault == "two blobs":
            reply["_blobs"] = [blob, b"extra"]
        return reply


@fuzz(150)
@given(data=st.data(), content=st.binary(min_size=1, max_size=120), part=st.sampled_from(["none", "prefix", "corrupt",
                                                                                          "longer"]),
       chunk=st.integers(1, 40))
def test_fetched_file_chunks_give_the_exact_file_or_a_collect_error(data: st.DataObject, content: bytes, part: str,
                                                                     chunk: int) -> None:
    manager = FetchingManager(data, {"node/seg/a.bin": content})
    meta = {"path": "node/seg/a.bin", "size": len(content), "sha256": hashlib.sha256(content).hexdigest()}
    with tempfile.TemporaryDirectory() as tmp, mock.patch.object(collect, "CHUNK", chunk):
        dst = Path(tmp) / "w1" / "node" / "seg" / "a.bin"
        dst.parent.mkdir(parents=True)
        stale = dst.with_name("a.bin.part")
        cut = data.draw(st.integers(0, len(content)), label="bytes already there")
        if part == "prefix":
            stale.write_bytes(content[:cut])
        elif part == "corrupt":  # differs from the file's start in every byte
            stale.write_bytes(bytes(b ^ 0xFF for b in content[:max(cut, 1)]))
        elif part == "longer":
            stale.write_bytes(content + b"more")
        stats = {"transferred_bytes": 0, "resumed_bytes": 0}
        try:
            collect._transfer(manager, "w1", "sid", meta, dst, None, stats, 5.0)  # type: ignore[arg-type]
        except CollectError as exc:
            assert "'node/seg/a.bin'" in str(exc) and "worker 'w1'" in str(exc)
            assert not dst.exists()
            assert part == "corrupt" or any(f not in ("honest", "two blobs") for f in manager.faults), manager.faults
        else:
            assert dst.read_bytes() == content and not stale.exists()
            # a wrong or missing byte would have failed: every reply was right, and so was what was there
            assert part != "corrupt" and all(f in ("honest", "two blobs") for f in manager.faults), manager.faults


PATHS = st.sampled_from(["a.bin", "n/seg-1/frames.avi", "../escape", "../../etc/passwd", "/tmp/abs", "n/../../up",
                         ".", "", "n/./b", "w1", "..", "n//c"]) | st.text(max_size=12)


@fuzz(100)
@given(paths=st.lists(PATHS, min_size=1, max_size=4, unique=True), data=st.data())
@example(paths=[".."], data=None).via("the session folder itself: its .part went beside it")  # type: ignore[arg-type]
@example(paths=["../w2/x"], data=None).via("another worker's folder")  # type: ignore[arg-type]
def test_a_listing_never_puts_a_file_outside_the_workers_folder(paths: list[str], data: st.DataObject | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "logs"
        session_dir = root / "sid"
        session_dir.mkdir(parents=True)
        folder = session_dir / "w1"
        files: dict[str, bytes] = {}
        targets: set[str] = set()
        for p in paths:  # one path per file (an honest listing does not name a file twice)
            target = os.path.normpath(os.path.join("/w1", p)) if "\0" not in p else "/invalid"
            if target not in targets:
                targets.add(target)
                files[p] = b"x" if data is None else data.draw(st.binary(min_size=1, max_size=20),
                                                               label=f"content of {p!r}")
        escapes = any(t == "/w1" or not t.startswith("/w1/") for t in targets)
        listing = {"root": "/nowhere", "identity": None, "segments": [],
                   "files": [{"path": p, "size": len(c), "sha256": hashlib.sha256(c).hexdigest()}
                             for p, c in files.items()]}
        session = SessionState(id="sid", name="fuzz", path=session_dir, workers={"w1"})
        manager = FetchingManager(None, files, session, listing)
        try:
            collect.collect(manager, progress=False, timeout=5.0)  # type: ignore[arg-type]
        except CollectError as exc:
            assert "worker 'w1'" in str(exc)
            assert escapes or ("outside" not in str(exc) and "invalid path" not in str(exc)), exc
        except OSError:  # the local file system refused a name (e.g. a file where a folder must be)
            pass
        else:
            assert not escapes, "a path outside the worker's folder was accepted"
            for p, c in files.items():
                assert (folder / p).resolve().read_bytes() == c
        outside = [q for q in Path(tmp).rglob("*") if q not in (root, session_dir, session_dir / "session.json",
                                                                 session_dir / "session.json.tmp")
                   and not q.is_relative_to(folder)]
        assert outside == [], outside


# --------------------------------------------------------------------------------------------------
# graph JSON
# --------------------------------------------------------------------------------------------------
def valid_docs() -> list[dict[str, Any]]:
    """Graph documents that load: a chain, a fan-in with a "latest" edge, mapping and positions."""
    docs = []
    g = Graph()
    src, gray, sink = TestPatternSource("src", width=64, height=48), Grayscale("gray"), StatsSink("stats")
    g.add_edge(src, gray)
    g.add_edge(gray, sink)
    docs.append(graph_io.graph_to_dict(g, {"w1": ["src"], "w2": ["gray", "stats"]}, {"src": (0, 0), "gray": (1, 2.5)}))
    g = Graph()
    a, b = TestPatternSource("a", width=32), Resize("small", width=16, height=8)
    blur, null = GaussianBlur("blur", ksize=3), NullSink("null")
    g.add_edge(a, b)
    g.add_edge(a, blur)
    g.add_edge(b, null)
    g.add_edge(blur, null, policy="latest", follow=True)
    docs.append(graph_io.graph_to_dict(g))
    return docs


DOCS = valid_docs()
CLASS_REFS = st.sampled_from(["chimera_lab.nodes:TestPatternSource", "chimera_lab.nodes:NullSink",
                              "chimera_lab.node:Node", "chimera_lab:Graph", "chimera_lab.graph_io:cloudpickle",
                              "chimera_lab:Graph.__init__", "json:JSONDecodeError", "zz_fuzz_missing:X",
                              "chimera_lab.nodes:NoSuchNode", "..:X", ".chimera_lab:Graph", "chimera_lab..nodes:X",
                              "chimera_lab.nodes.:X", "chimera_lab.nodes:<locals>", "a:b:c", ":X", "X:"])
# class references that match the loader's pattern; modules are chimera_lab's or cannot exist (nothing else is imported)
RANDOM_CLASS_REFS = st.builds(lambda module, rest, qualname: f"{module}{rest}:{qualname}",
                              st.sampled_from(["", "chimera_lab", "chimera_lab.nodes", "zz_fuzz"]),
                              st.from_regex(r"[.\w]{0,3}", fullmatch=True).filter(lambda r: not r[:1].isalnum()),
                              st.from_regex(r"[\w.<>]{1,8}", fullmatch=True))
NAMES = st.sampled_from(["all", "latest", "src", "gray", "stats", "a", "small", "blur", "null", "", "bad name!",
                         graph_io.FORMAT, "w1"])
NUMBERS = st.sampled_from([0, 1, 2, -1, 10**400, -(10**309), 1e308, True, False, None]) | st.integers() | st.floats(
    allow_nan=False, allow_infinity=False)
SPECIAL = (CLASS_REFS | RANDOM_CLASS_REFS | NAMES | NUMBERS | st.lists(NUMBERS, min_size=2, max_size=2)
           | st.sampled_from([[], {}, ["x", "y"], base64.b64encode(b"not a pickle").decode(), "!!notbase64"]))


def json_paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from json_paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from json_paths(v, (*prefix, i))


def mutate_doc(data: st.DataObject, doc: Any) -> Any:
    """`doc` with one to four values replaced, keys deleted or added, or list items dropped or repeated."""
    doc = copy.deepcopy(doc)
    for _ in range(data.draw(st.integers(1, 4), label="doc mutations")):
        paths = list(json_paths(doc))
        # the values the loader acts on, five times as often as the others
        paths += [p for p in paths if len(p) > 1 and p[-2] in ("positions", "mapping") or p and p[-1] in (
            "class", "args", "by_value", "name", "src", "dst", "policy", "follow", "version")] * 4
        path = data.draw(st.sampled_from(paths), label="path")
        new = copy.deepcopy(data.draw(SPECIAL | JSON, label="value"))  # sampled_from gives the same list each time
        if not path:
            doc = new
            continue
        parent = doc
        for p in path[:-1]:
            parent = parent[p]
        last = path[-1]
        action = data.draw(st.sampled_from(["replace", "delete", "add", "repeat"]), label="action")
        if action == "replace":
            parent[last] = new
        elif action == "delete":
            del parent[last]
        elif action == "add" and isinstance(parent, dict):
            parent[data.draw(st.sampled_from(["format", "version", "nodes", "edges", "mapping", "positions", "name",
                                              "class", "args", "by_value", "src", "dst", "policy", "follow"])
                             | st.text(max_size=4), label="key")] = new
        elif isinstance(parent, list):
            parent.insert(last, copy.deepcopy(parent[last]) if action == "repeat" else new)
        else:
            parent[last] = new
    return doc


def load_or_graph_error(text: str | bytes) -> Graph | None:
    """`from_json(text)`: a Graph, or None after checking the GraphError says something."""
    try:
        graph = graph_io.from_json(text)
    except GraphError as exc:
        assert str(exc).strip(), "a GraphError with no message"
        return None
    assert isinstance(graph, Graph)
    return graph


@fuzz(300)
@given(data=st.data(), which=st.sampled_from(range(len(DOCS))))
def test_mutated_graph_json_loads_or_raises_graph_error(data: st.DataObject, which: int) -> None:
    doc = DOCS[which]
    graph = load_or_graph_error(json.dumps(doc))
    assert graph is not None and graph_io.graph_to_dict(graph) == doc
    mutated = mutate_doc(data, doc)
    graph = load_or_graph_error(json.dumps(mutated))
    if graph is not None:  # what loaded is what the document says
        assert graph.node_names == [n["name"] for n in mutated["nodes"]]


NODE_NAMES = st.sampled_from(["a", "b", "c"]) | st.text(max_size=4)
NODE_RECORDS = st.fixed_dictionaries(
    {"name": NODE_NAMES, "class": CLASS_REFS | RANDOM_CLASS_REFS},
    optional={"args": st.dictionaries(st.sampled_from(["name", "width", "height", "rate_hz", "ksize", "on_error",
                                                       "*args"]) | st.text(max_size=4), SPECIAL | JSON, max_size=3),
              "by_value": st.sampled_from([base64.b64encode(b"not a pickle").decode(), "!!", ""])})
EDGES = st.fixed_dictionaries({"src": NODE_NAMES, "dst": NODE_NAMES},
                              optional={"policy": NAMES, "follow": st.booleans() | NUMBERS})
GRAPH_DOCS = st.fixed_dictionaries(
    {"format": st.just(graph_io.FORMAT), "version": st.just(1), "nodes": st.lists(NODE_RECORDS, max_size=3)},
    optional={"edges": st.lists(EDGES, max_size=3),
              "mapping": st.dictionaries(st.text(max_size=3), st.lists(NODE_NAMES, max_size=2) | SPECIAL, max_size=2),
              "positions": st.dictionaries(NODE_NAMES, st.lists(NUMBERS, min_size=2, max_size=2) | SPECIAL,
                                           max_size=2)})


@fuzz(300)
@given(doc=GRAPH_DOCS)
def test_generated_graph_documents_load_or_raise_graph_error(doc: dict[str, Any]) -> None:
    graph = load_or_graph_error(json.dumps(doc))
    if graph is not None:
        assert graph.node_names == [n["name"] for n in doc["nodes"]]


@fuzz(200)
@given(value=JSON | st.dictionaries(st.sampled_from(["format", "version", "nodes", "edges", "mapping", "positions"]),
                                    SPECIAL | JSON).map(lambda d: {"format": graph_io.FORMAT, "version": 1, **d}))
@example(value={"format": graph_io.FORMAT, "version": 1, "nodes": [{"name": "a", "class": "..:X"}]})
@example(value={"format": graph_io.FORMAT, "version": 1, "positions": {"a": [10**400, 0]},
                "nodes": [{"name": "a", "class": "chimera_lab.nodes:NullSink"}]})
def test_random_json_values_load_or_raise_graph_error(value: Any) -> None:
    load_or_graph_error(json.dumps(value))


@fuzz(200)
@given(text=st.binary(max_size=60) | st.text(max_size=60))
@example(text=DEEP)
@example(text=b"\xff\xfe{}")
@example(text='{"format": "chimera_lab.graph", "version": 1, "nodes": [{"name": "a", "class": '
              '"chimera_lab.nodes:NullSink", "args": {"deep": ' + "[" * 900 + "]" * 900 + "}}]}")
@example(text='{"format": "chimera_lab.graph", "version": 1, "nodes": ' + "[" * 5000 + "]" * 5000 + "}")
def test_random_bytes_and_text_load_or_raise_graph_error(text: str | bytes) -> None:
    load_or_graph_error(text)


# --------------------------------------------------------------------------------------------------
# REST bodies
# --------------------------------------------------------------------------------------------------
class _Model:
    """A fitted model stand-in: label 1 where column "a" is bigger than column "b"."""

    def predict(self, X: np.ndarray) -> np.ndarray:
        return (X[:, 0] > X[:, 1]).astype(np.int64)


class _Master(ParameterServerMaster):
    """A fitted ParameterServerMaster on columns a, b whose fit is instant (no workers needed)."""

    def __init__(self) -> None:
        super().__init__("classifier")
        self.model, self._columns = _Model(), ["a", "b"]

    def fit(self, manager: Any, workers: Any, config: Any, endpoint: str = "fit") -> dict[str, Any]:
        return {"message": "ok"}


API = rest.Api(_Master(), None, ["w1"], None, max_body=1 << 20)
PREDICT = "/v1/chimera/parameter-server/predict"
FIT = "/v1/chimera/parameter-server/fit"
GOOD: dict[str, Any] = {"X_pred_columns": ["a", "b"], "X_pred_rows": [[1.0, 2.0], [3, -4]]}


def post(path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """`API.handle` of a POST; (status, decoded JSON answer), after checking the answer's shape."""
    message = email.message.Message()
    for k, v in ({"Content-Type": "application/json", "Content-Length": str(len(body))}
                 if headers is None else headers).items():
        message[k] = v
    response = API.handle("POST", path, message, io.BytesIO(body).read)
    answer = json.loads(response.body)
    assert response.status == 200 or 400 <= response.status < 500, (response.status, answer)
    if response.status >= 400:
        assert set(answer) == {"detail"} and isinstance(answer["detail"], str) and answer["detail"].strip()
    return response.status, answer


def valid_predict(body: Any) -> bool:
    """Whether `body` is a predict request the API must answer (columns a and b, finite numbers)."""
    if not (isinstance(body, dict) and set(body) == {"X_pred_columns", "X_pred_rows"}):
        return False
    columns, rows = body["X_pred_columns"], body["X_pred_rows"]
    if columns not in (["a", "b"], ["b", "a"]):
        return False

    def number(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        try:
            return math.isfinite(v)
        except OverflowError:  # an int too big for a float64
            return False

    return isinstance(rows, list) and all(isinstance(r, list) and len(r) == 2 and all(map(number, r)) for r in rows)


def expected_labels(body: dict[str, Any]) -> list[int]:
    ia, ib = body["X_pred_columns"].index("a"), body["X_pred_columns"].index("b")
    return [int(float(r[ia]) > float(r[ib])) for r in body["X_pred_rows"]]


def mutate_predict(data: st.DataObject) -> Any:
    body: dict[str, Any] = copy.deepcopy(GOOD)
    for _ in range(data.draw(st.integers(1, 3), label="body mutations")):
        where = data.draw(st.sampled_from(["columns", "rows", "row", "cell", "key", "drop", "swap", "duplicate"]))
        value = copy.deepcopy(data.draw(JSON | st.sampled_from([10**400, -(10**309), 1e308, True, "1.0", None, [],
                                                                ["a"]])))  # not the strategy's own list
        if where == "columns":
            body["X_pred_columns"] = value
        elif where == "rows":
            body["X_pred_rows"] = value
        elif where in ("row", "cell") and isinstance(body.get("X_pred_rows"), list) and body["X_pred_rows"]:
            rows = body["X_pred_rows"]
            i = data.draw(st.integers(0, len(rows) - 1))
            if where == "cell" and isinstance(rows[i], list) and rows[i]:
                rows[i][data.draw(st.integers(0, len(rows[i]) - 1))] = value
            else:
                rows[i] = value
        elif where == "key":
            body[data.draw(st.text(max_size=6) | st.sampled_from(["X_pred_rows", "X_pred_columns"]))] = value
        elif where == "drop" and body:
            del body[data.draw(st.sampled_from(sorted(body)))]
        elif where == "swap" and isinstance(body.get("X_pred_columns"), list):
            body["X_pred_columns"] = list(reversed(body["X_pred_columns"]))
        elif where == "duplicate" and isinstance(body.get("X_pred_columns"), list):
            body["X_pred_columns"] = body["X_pred_columns"] + body["X_pred_columns"][:1]
    return body


@fuzz(300)
@given(data=st.data(), route=st.sampled_from([PREDICT, FIT]))
def test_json_bodies_get_200_or_a_4xx_that_names_the_problem(data: st.DataObject, route: str) -> None:
    if data.draw(st.booleans(), label="a mutated predict body"):
        body = mutate_predict(data)
    else:
        body = data.draw(JSON, label="any JSON")
    status, answer = post(route, json.dumps(body).encode())
    if route == FIT:
        if body in ({}, None):
            assert (status, answer) == (200, {"message": "ok"})
        else:
            assert status == 422 and "fit" in answer["detail"]
    elif valid_predict(body):
        assert (status, answer) == (200, {"y_pred_rows": expected_labels(body)})
    elif body is None:
        assert status == 400 and "needs a JSON body" in answer["detail"]
    elif not isinstance(body, dict):
        assert status == 422 and "JSON object" in answer["detail"]
    else:
        assert status == 422, answer
        if isinstance(body.get("X_pred_rows"), list) and any(
                isinstance(v, int) and not isinstance(v, bool) and abs(v) > 1e308
                for r in body["X_pred_rows"] if isinstance(r, list) for v in r):
            assert "X_pred_" in answer["detail"]


CELLS = (st.integers() | st.integers(min_value=2**1024) | st.integers(max_value=-(2**1024))  # past float64's range
         | st.floats(allow_nan=False, allow_infinity=False) | st.booleans() | st.none() | st.text(max_size=3))


@fuzz(200)
@given(columns=st.permutations(["a", "b"]), rows=st.lists(st.lists(CELLS, min_size=2, max_size=2), max_size=3))
def test_well_formed_bodies_with_any_cells_get_200_or_a_422_naming_the_cell(columns: list[str],
                                                                           rows: list[list[Any]]) -> None:
    body = {"X_pred_columns": columns, "X_pred_rows": rows}
    status, answer = post(PREDICT, json.dumps(body).encode())
    if valid_predict(body):
        assert (status, answer) == (200, {"y_pred_rows": expected_labels(body)})
    else:
        assert status == 422 and "X_pred_rows[" in answer["detail"] and "finite number" in answer["detail"], answer


@fuzz(200)
@given(raw=st.binary(max_size=80) | st.text(max_size=40).map(str.encode))
@example(raw=DEEP.encode())
@example(raw=b'{"X_pred_columns": ["a", "b"], "X_pred_rows": [[NaN, 1]]}')
@example(raw=b'{"X_pred_columns": ["a", "b"], "X_pred_rows": [[Infinity, 1]]}')
@example(raw=b'{"X_pred_columns": ["a", "b"], "X_pred_rows": [[1' + b"0" * 400 + b', 1]]}')
@example(raw=b"\xff\xfe{}")
def test_raw_bodies_get_200_or_a_4xx_that_names_the_problem(raw: bytes) -> None:
    status, answer = post(PREDICT, raw, {"Content-Type": "application/json", "Content-Length": str(len(raw))})
    if not raw.strip():
        assert status == 400 and "needs a JSON body" in answer["detail"]
        return
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        assert status == 400 and "UTF-8" in answer["detail"]
        return
    try:
        body = json.loads(text, parse_constant=rest._no_constant)
    except (ValueError, RecursionError):
        assert status == 400 and "JSON" in answer["detail"]
        return
    assert status == (200 if valid_predict(body) else 400 if body is None else 422), answer


LENGTHS = (st.integers(-3, 300).map(str) | st.sampled_from(["", " 12 ", "1_0", "0x10", "1e3", "١٢", "many",
                                                              str(10**10), "-0", "+5"]) | st.text(max_size=6))
CTYPES = st.sampled_from(["application/json", "application/json; charset=utf-8", "Application/JSON",
                          "application/problem+json", "text/plain", "", "multipart/form-data; boundary=x"]) \
    | st.text(max_size=10)


@fuzz(300)
@given(body=st.sampled_from([json.dumps(GOOD).encode(), b"{}", b"", b"  ", b"[1, 2]", b"\xff"])
       | st.binary(max_size=30),
       length=st.none() | LENGTHS, ctype=st.none() | CTYPES, chunked=st.booleans())
def test_headers_and_wrong_lengths_get_200_or_a_4xx_that_names_the_problem(body: bytes, length: str | None,
                                                                           ctype: str | None, chunked: bool) -> None:
    headers = {k: v for k, v in (("Content-Length", length), ("Content-Type", ctype),
                                 ("Transfer-Encoding", "chunked" if chunked else None)) if v is not None}
    status, answer = post(PREDICT, body, headers)
    detail = answer.get("detail", "")
    if length is None:
        assert status == (411 if chunked else 400), answer
        return
    try:
        n = int(length)
        assert n >= 0
    except (ValueError, AssertionError):
        assert status == 400 and "Content-Length" in detail, answer
        return
    if n > API.max_body:
        assert status == 413 and f"{n} bytes" in detail
    elif not body[:n].strip():
        assert status == 400 and "needs a JSON body" in detail
    elif (ctype or "").split(";")[0].strip().lower() not in ("", "application/json") and not (
            ctype or "").split(";")[0].strip().lower().endswith("+json"):
        assert status == 415 and "JSON" in detail
    else:
        assert status in (200, 400, 422)


class RestServer:
    """rest.make_server on a free port of 127.0.0.1, serving on a thread."""

    def __init__(self) -> None:
        self.server = rest.make_server(API, "127.0.0.1", 0)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def exchange(self, request: bytes) -> bytes:
        """Send `request`, close our side, read everything the server answers."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def rest_server() -> Iterator[RestServer]:
    server = RestServer()
    yield server
    server.close()


def statuses(answer: bytes) -> list[int]:
    """The status codes of the responses in `answer`."""
    return [int(line.split()[1]) for line in answer.split(b"\r\n") if line.startswith(b"HTTP/1.") and
            len(line.split()) > 1 and line.split()[1].isdigit()]


@fuzz(60)
@given(data=st.data(), route=st.sampled_from([PREDICT, FIT, "/", "/nope"]), delta=st.integers(-8, 8))
def test_a_real_server_answers_every_request_without_a_500_and_keeps_answering(rest_server: RestServer,
                                                                              data: st.DataObject, route: str,
                                                                              delta: int) -> None:
    mode = data.draw(st.sampled_from(["json", "mutated", "bytes", "garbage request"]))
    if mode == "garbage request":
        request = data.draw(st.binary(max_size=120) | st.just(b"POST / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n"))
    else:
        body = (json.dumps(mutate_predict(data)).encode() if mode == "mutated" else json.dumps(GOOD).encode()
                if mode == "json" else data.draw(st.binary(max_size=60)))
        length = max(0, len(body) + delta)  # the Content-Length may be wrong either way
        request = (f"POST {route} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {length}\r\n\r\n").encode() + body
    answer = rest_server.exchange(request)
    got = statuses(answer)
    assert all(s < 500 or s == 505 for s in got), answer[:300]  # 505: an HTTP version it does not speak
    if mode != "garbage request":
        assert got and (got[0] == 200 or 400 <= got[0] < 500), answer[:300]
    # and it goes on answering
    good = json.dumps(GOOD).encode()
    answer = rest_server.exchange(f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                  f"Content-Length: {len(good)}\r\n\r\n".encode() + good)
    assert statuses(answer) == [200] and answer.endswith(b'{"y_pred_rows": [0, 1]}')


def test_fuzz_helpers_detect_what_they_must() -> None:
    """The properties above can fail: a forged message is refused, and the watch sees pickle and JPEG decoding."""
    chunk = DataChunk()
    chunk.add("p", {1})
    chunk.add("img", np.zeros((2, 2), np.uint8), "image")
    signer = wire.Signer(KEY)
    frames = on_wire(wire.encode_chunk(signer, chunk, 1, 0.0, []))
    with watch_decoders() as watch:
        decode_chunk(signer, frames)
    assert sorted(watch.calls) == ["cv2.imdecode", "pickle.loads"]
    assert post(PREDICT, json.dumps(GOOD).encode()) == (200, {"y_pred_rows": [0, 1]})
    assert valid_predict(GOOD) and not valid_predict({**GOOD, "X_pred_rows": [[10**400, 1]]})
    assert statuses(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n{}\r\nHTTP/1.0 400 Bad\r\n") == [200, 400]
