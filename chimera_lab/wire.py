"""Every byte on the wire: signing, framing and (de)serialization of control and data messages.

Frames of every message: ``[mac + flags, header, *buffers]``.

- ``mac`` is HMAC-SHA256 (the cluster key) over ``flags``, ``header`` and every buffer it covers; ``flags`` is one
  byte per buffer (0: covered by the MAC, 1: covered by its length and digest in the header, see below), so a
  receiver checks the MAC without parsing anything.
- ``header`` is msgpack. Control messages: a dict with ``"op"``. Data messages: see `encode_chunk`.
- Every buffer is covered by the MAC in full, except raw ``ndarray`` buffers from 64 KiB up and file
  chunks sent while collecting a session: those are covered by their length and XXH3-64 digest, which sit
  in the MAC-covered header (a collected file's SHA-256, from the signed listing, is checked at the end).
  Their bytes are only ever reinterpreted as numbers or written to a file (never parsed, never unpickled),
  and a full MAC over them would halve large-array throughput. JPEG buffers, which libjpeg parses, always
  get the full MAC.
- Nothing is decoded before the MAC checks: not the header, not a buffer.
- Replays: every control message carries a stamp ``"_s": [stream, count, time]`` (the sender's random stream id,
  a counter, its clock); a receiver refuses a count it has seen on that stream, or one older than a window of
  the last `REPLAY_WINDOW` counts, and a new stream whose first message is older than `MAX_AGE` (ReplayError).
  Data messages carry a sequence number per sender (refused unless it increases) under a key of their commit
  (`data_key`), so a data message captured during one commit is worthless in any other.

Sealed frames (`Signer.seal`) are the one exception to that layout: one frame, a MAC then a body whose layout
the caller fixes (the parameter channel of distributed SGD: a struct header, then the parameters). They are
signed under a key derived from the cluster key, so neither kind can pass for the other.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import pickle
import secrets
import struct
import threading
import time
from typing import Any

import msgpack
import numpy as np
import xxhash

from .datachunk import DataChunk

MAC_SIZE = 32
BIG = 64 * 1024  # buffers from this size up travel zero-copy and are covered by length + XXH3-64
_PLAIN = (type(None), bool, int, float, str, bytes)
REPLAY_WINDOW = 1024  # control counts a receiver remembers per stream (threads of one sender may reorder sends)
MAX_AGE = 900.0  # seconds: a new stream whose first message is older than this is a replay (or a clock far off)
MAX_STREAMS = 65_536  # senders remembered per receiver (the oldest is forgotten first)


class AuthError(Exception):
    """A message failed its signature check (unsigned, forged or under another key)."""


class ReplayError(AuthError):
    """A validly signed message that this receiver has already had, or that is too old to be fresh: a replay."""


def new_key() -> bytes:
    """A fresh random cluster key."""
    return secrets.token_bytes(32)


def derive_key(key: bytes, purpose: str) -> bytes:
    """A key for one purpose (e.g. one commit's data plane), derived from the cluster key."""
    return hmac.digest(key, b"chimera-lab " + purpose.encode(), "sha256")


def key_from_token(token: str) -> bytes:
    """The cluster key a token stands for (tokens are the key in hex)."""
    try:
        key = bytes.fromhex(token.strip())
    except (ValueError, AttributeError):
        raise ValueError("the token is not valid: copy it exactly from manager.token (64 hex digits)") from None
    if len(key) < 16:
        raise ValueError("the token is too short: copy it exactly from manager.token (64 hex digits)")
    return key


class Signer:
    """Signs and verifies frames with HMAC-SHA256 under one cluster key; as a sender of control messages it
    stamps them (`stamp`), as a receiver it refuses stamps it has seen (`check_stamp`)."""

    __slots__ = ("_hmac", "_seal_key", "stream", "_count", "_streams", "_lock")

    def __init__(self, key: bytes) -> None:
        self._hmac = hmac.new(key, digestmod=hashlib.sha256)
        self._seal_key = hmac.digest(key, b"chimera-lab sealed frames", "sha256")
        self.stream = secrets.token_bytes(8)  # this sender's stream of control messages
        self._count = itertools.count(1)
        self._streams: dict[bytes, _Window] = {}
        self._lock = threading.Lock()

    def stamp(self) -> list[Any]:
        """The replay stamp of the next control message: [stream, count, time]."""
        return [self.stream, next(self._count), time.time()]

    def check_stamp(self, stamp: Any) -> None:
        """Refuse (ReplayError) a stamp this receiver has seen, or a new stream that is not fresh."""
        try:
            stream, count, sent = stamp
            if type(stream) is not bytes or type(count) is not int or not isinstance(sent, (int, float)):
                raise TypeError
        except (TypeError, ValueError):
            raise AuthError("malformed message: no valid replay stamp") from None
        with self._lock:
            window = self._streams.get(stream)
            if window is None:
                age = time.time() - sent
                if abs(age) > MAX_AGE:
                    raise ReplayError(f"the first message of a sender is {age:+.0f} s old: a replay, or its clock is "
                                      f"more than {MAX_AGE:.0f} s off (set the clocks right, e.g. with NTP)")
                if len(self._streams) >= MAX_STREAMS:
                    del self._streams[next(iter(self._streams))]
                window = self._streams[stream] = _Window()
            window.accept(count)

    def sign(self, frames: list[Any]) -> bytes:
        """The MAC of `frames` (each frame's length is signed too, so frames cannot be re-split)."""
        h = self._hmac.copy()
        for f in frames:
            h.update(_nbytes(f).to_bytes(8, "little"))
            h.update(f)
        return h.digest()

    def verify(self, mac: bytes, frames: list[Any]) -> None:
        """Raise AuthError unless `mac` is the MAC of `frames`."""
        if len(mac) != MAC_SIZE or not hmac.compare_digest(self.sign(frames), mac):
            raise AuthError("bad signature")

    def seal(self, body: bytes) -> bytes:
        """`body` behind its MAC, as one frame: for small messages on a hot path (one C call to sign).

        Sealed frames are signed under a key derived from the cluster key, so a sealed frame can never pass for
        a control or data message, nor the other way round."""
        return hmac.digest(self._seal_key, body, "sha256") + body

    def unseal(self, frame: bytes) -> memoryview:
        """The body of a sealed frame; AuthError unless its MAC checks out (nothing is read before that)."""
        body = memoryview(frame)[MAC_SIZE:]
        if len(frame) < MAC_SIZE or not hmac.compare_digest(hmac.digest(self._seal_key, body, "sha256"),
                                                            frame[:MAC_SIZE]):
            raise AuthError("bad signature")
        return body


class _Window:
    """The counts seen on one stream: refuses a count seen before, or older than the last REPLAY_WINDOW."""

    __slots__ = ("high", "seen")

    def __init__(self) -> None:
        self.high = 0
        self.seen: set[int] = set()

    def accept(self, count: int) -> None:
        if count <= self.high - REPLAY_WINDOW or count in self.seen:
            raise ReplayError("a message this receiver has already had (a replay)")
        self.seen.add(count)
        if count > self.high:
            self.high = count
            if len(self.seen) > 2 * REPLAY_WINDOW:
                self.seen = {c for c in self.seen if c > count - REPLAY_WINDOW}


# --------------------------------------------------------------------------------------------------
# control messages: [mac + flags, msgpack(dict), *blobs]; blobs (e.g. pickled nodes) are fully MAC-covered
# --------------------------------------------------------------------------------------------------
def encode_control(signer: Signer, msg: dict[str, Any], blobs: tuple[bytes, ...] = (),
                   digest_blobs: bool = False) -> list[bytes]:
    """Frames of a signed control message.

    Blobs are covered by the MAC, or with `digest_blobs` by their length and XXH3-64 in the signed header:
    only for bytes that are never parsed or unpickled and are checked again anyway (file chunks, whose
    file's SHA-256 is verified at the end).
    """
    msg = {**msg, "_s": signer.stamp()}
    if digest_blobs and blobs:
        msg["x"] = [[i, len(b), xxhash.xxh3_64_intdigest(b)] for i, b in enumerate(blobs)]
    header = msgpack.packb(msg, use_bin_type=True)
    flags = (b"\x01" if digest_blobs else b"\x00") * len(blobs)
    covered = [] if digest_blobs else list(blobs)
    return [signer.sign([flags, header, *covered]) + flags, header, *blobs]


def decode_control(signer: Signer, frames: list[bytes]) -> tuple[dict[str, Any], list[bytes]]:
    """The (message, blobs) of signed control frames; AuthError if the signature fails, ReplayError (an
    AuthError) if this receiver has had the message before."""
    msg, blobs = _verified(signer, frames)
    if "op" not in msg or "_s" not in msg:
        raise AuthError("malformed control message")
    signer.check_stamp(msg.pop("_s"))
    msg.pop("x", None)
    return msg, blobs


# --------------------------------------------------------------------------------------------------
# data messages
# header: {"q": seq, "t": created, "h": [[node, t], ...], "r": [record, ...]} or {"eos": last_seq}
# record: [name, content_type, encoding, meta, nbufs]
#   encodings: "m" msgpack value inline in meta; "a" ndarray (meta: dtype, shape); "j" JPEG (meta: ndim)
#              "p" pickle protocol 5 (buffers: main pickle + out-of-band buffers)
# big raw buffers: header["x"] = [[index, length, xxh3_64], ...]
# --------------------------------------------------------------------------------------------------
def _nbytes(buf: Any) -> int:
    return len(buf) if isinstance(buf, bytes) else memoryview(buf).nbytes


def _is_plain(value: Any, depth: int = 0) -> bool:
    if isinstance(value, _PLAIN):
        return not isinstance(value, int) or -(2**63) <= value < 2**64
    if depth > 8:
        return False
    if type(value) in (list, tuple):
        return type(value) is list and all(_is_plain(v, depth + 1) for v in value)
    if type(value) is dict:
        return all(type(k) is str and _is_plain(v, depth + 1) for k, v in value.items())
    return False


def _encode_jpeg(img: np.ndarray, quality: int) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV only fails on invalid input, which DataChunk.add rejects
        raise ValueError("OpenCV could not JPEG-encode the image")
    return buf.tobytes()


def _decode_jpeg(buf: Any, ndim: int) -> np.ndarray:
    import cv2

    flag = cv2.IMREAD_GRAYSCALE if ndim == 2 else cv2.IMREAD_COLOR
    img = cv2.imdecode(np.frombuffer(buf, dtype=np.uint8), flag)
    if img is None:
        raise ValueError("corrupt JPEG buffer")
    return img


def _encode_value(name: str, value: Any, ctype: str, quality: int, bufs: list[Any]) -> list[Any]:
    if ctype == "image":
        img = value if value.ndim == 2 or value.shape[2] == 3 else value[:, :, 0]
        bufs.append(_encode_jpeg(img, quality))
        return [name, ctype, "j", [img.ndim, quality], 1]
    if isinstance(value, np.ndarray) and not value.dtype.hasobject and value.dtype.fields is None:
        arr = value if value.flags.c_contiguous else np.ascontiguousarray(value)
        # the raw bytes as a flat uint8 view: no copy, and any dtype (datetime64 too) can be exported
        bufs.append(arr.reshape(-1).view(np.uint8) if arr.size else b"")
        return [name, ctype, "a", [arr.dtype.str, list(value.shape)], 1]
    if _is_plain(value):
        return [name, ctype, "m", value, 0]
    oob: list[pickle.PickleBuffer] = []
    main = pickle.dumps(value, protocol=5, buffer_callback=oob.append)
    bufs.append(main)
    bufs.extend(b.raw() for b in oob)
    return [name, ctype, "p", None, 1 + len(oob)]


def encode_chunk(signer: Signer, chunk: DataChunk, seq: int, created: float, hops: list[list[Any]]) -> list[Any]:
    """Signed frames for `chunk` (sequence number `seq`, origin time `created`, hop times `hops`)."""
    bufs: list[Any] = []
    recs = []
    for name, rec in chunk.records.items():
        recs.append(_encode_value(name, rec["value"], rec["content-type"], rec.get("quality", 80), bufs))
    header: dict[str, Any] = {"q": seq, "t": created, "h": hops, "r": recs}
    covered: list[Any] = []
    big = []
    flags = bytearray(len(bufs))
    for i, b in enumerate(bufs):
        n = _nbytes(b)
        if n >= BIG and recs_encoding_raw(recs, i):  # ndarray buffers only
            big.append([i, n, xxhash.xxh3_64_intdigest(b)])
            flags[i] = 1
        else:
            covered.append(b)
    if big:
        header["x"] = big
    hb = msgpack.packb(header, use_bin_type=True)
    return [signer.sign([flags, hb, *covered]) + flags, hb, *bufs]


def recs_encoding_raw(recs: list[list[Any]], index: int) -> bool:
    """Whether buffer `index` belongs to a raw ndarray record."""
    pos = 0
    for rec in recs:
        n = rec[4]
        if pos <= index < pos + n:
            return bool(rec[2] == "a")
        pos += n
    return False


def encode_eos(signer: Signer, last_seq: int, seq: int) -> list[bytes]:
    """Signed end-of-stream marker: `last_seq` is the sequence number of the sender's last data message, `seq` the
    marker's own (greater: a receiver refuses sequence numbers that do not increase, so a replayed marker)."""
    hb = msgpack.packb({"eos": last_seq, "q": seq})
    return [signer.sign([b"", hb]), hb]


def _verified(signer: Signer, frames: list[Any]) -> tuple[dict[str, Any], list[Any]]:
    """The header and buffers of `[mac + flags, header, *buffers]` once they check out; AuthError otherwise.

    The MAC is checked first, over the flags, the header and the buffers the flags say it covers: nothing is
    parsed before that. Then the header is parsed, and the buffers it covers by length and digest are checked.
    """
    if len(frames) < 2:
        raise AuthError("malformed message")
    first = frames[0].bytes if hasattr(frames[0], "bytes") else bytes(frames[0])
    hb = frames[1].bytes if hasattr(frames[1], "bytes") else frames[1]
    bufs = [f.buffer if hasattr(f, "buffer") else f for f in frames[2:]]
    flags = first[MAC_SIZE:]
    if len(first) < MAC_SIZE or len(flags) != len(bufs) or flags.strip(b"\x00\x01"):
        raise AuthError("malformed message")
    signer.verify(first[:MAC_SIZE], [flags, hb, *(b for b, f in zip(bufs, flags, strict=True) if not f)])
    try:
        header = msgpack.unpackb(hb, raw=False)
        if not isinstance(header, dict):
            raise TypeError
        big = {int(i): (int(n), int(c)) for i, n, c in header.get("x", ())}
    except Exception:
        raise AuthError("malformed message") from None
    if (big or 1 in flags) and set(big) != {i for i, f in enumerate(flags) if f}:  # most messages have neither
        raise AuthError("malformed message: the digests listed do not match the flags")
    for i, (n, c) in big.items():
        if _nbytes(bufs[i]) != n or xxhash.xxh3_64_intdigest(bufs[i]) != c:
            raise AuthError("buffer does not match its signed length and digest")
    return header, bufs


def decode_data(signer: Signer, frames: list[Any]) -> dict[str, Any]:
    """Verify and parse a data message's header (AuthError if it fails); buffers stay undecoded."""
    header, bufs = _verified(signer, frames)
    header["_bufs"] = bufs
    return header


def raw_records(header: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The records of a verified data header without decoding images: for each record its content type,
    and either ``"jpeg"`` (the JPEG bytes, for images), or ``"value"`` (decoded, for everything else)."""
    out: dict[str, dict[str, Any]] = {}
    bufs = header["_bufs"]
    pos = 0
    chunk: DataChunk | None = None
    for name, ctype, enc, meta, n in header["r"]:
        if enc == "j":
            out[name] = {"content-type": ctype, "jpeg": bytes(bufs[pos]), "ndim": meta[0]}
        else:
            chunk = chunk or chunk_from_header({**header, "r": [r for r in header["r"] if r[2] != "j"],
                                                "_bufs": [b for i, b in enumerate(bufs) if not _jpeg_buf(header, i)]})
            out[name] = {"content-type": ctype, "value": chunk.get(name)["value"]}
        pos += n
    return out


def _jpeg_buf(header: dict[str, Any], index: int) -> bool:
    pos = 0
    for rec in header["r"]:
        if pos <= index < pos + rec[4]:
            return bool(rec[2] == "j")
        pos += rec[4]
    return False


def chunk_from_header(header: dict[str, Any]) -> DataChunk:
    """The DataChunk of a verified data header (from `decode_data`)."""
    bufs = header["_bufs"]
    chunk = DataChunk()
    chunk.created = header["t"]
    chunk.hops = [tuple(h) for h in header["h"]]  # type: ignore[misc]
    records = chunk.records
    pos = 0
    for name, ctype, enc, meta, n in header["r"]:
        if enc == "m":
            value = meta
        elif enc == "a":
            dtype, shape = meta
            dt = np.dtype(dtype)
            value = np.frombuffer(bufs[pos], dtype=np.uint8).view(dt).reshape(shape) if _nbytes(bufs[pos]) else \
                np.empty(shape, dtype=dt)
        elif enc == "j":
            value = _decode_jpeg(bufs[pos], meta[0])
            records[name] = {"value": value, "content-type": ctype, "quality": meta[1]}
            pos += n
            continue
        elif enc == "p":
            value = pickle.loads(bufs[pos], buffers=bufs[pos + 1 : pos + n])
        else:
            raise AuthError(f"unknown record encoding {enc!r}")
        pos += n
        records[name] = {"value": value, "content-type": ctype}
    return chunk


# --------------------------------------------------------------------------------------------------
# single-frame packing for conflating sockets ("latest" edges and taps): ZMQ_CONFLATE keeps whole
# messages of one frame only
# --------------------------------------------------------------------------------------------------
def pack_frames(frames: list[Any]) -> bytes:
    """One frame holding all `frames` (length-prefixed)."""
    parts: list[Any] = [struct.pack("<I", len(frames))]
    for f in frames:
        n = _nbytes(f)
        parts.append(struct.pack("<Q", n))
        parts.append(f)
    return b"".join(parts)


def unpack_frames(blob: Any) -> list[memoryview]:
    """The frames of a `pack_frames` blob (views, no copies)."""
    mv = memoryview(blob)
    try:
        (count,) = struct.unpack_from("<I", mv, 0)
        pos = 4
        out = []
        for _ in range(count):
            (n,) = struct.unpack_from("<Q", mv, pos)
            pos += 8
            if pos + n > len(mv):
                raise ValueError
            out.append(mv[pos : pos + n])
            pos += n
    except (struct.error, ValueError):
        raise AuthError("malformed packed message") from None
    return out
