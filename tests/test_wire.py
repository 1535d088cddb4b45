"""Unit tests for chimera_lab.wire: data/control (de)serialization, signing, tamper detection, packing."""

from __future__ import annotations

import math
import os
import pickle
import time
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np
import pytest
import xxhash

from chimera_lab.datachunk import DataChunk
from chimera_lab.wire import (
    BIG,
    MAC_SIZE,
    REPLAY_WINDOW,
    AuthError,
    ReplayError,
    Signer,
    chunk_from_header,
    decode_control,
    decode_data,
    derive_key,
    encode_chunk,
    encode_control,
    encode_eos,
    key_from_token,
    new_key,
    pack_frames,
    unpack_frames,
)

# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
_KEYS: dict[int, bytes] = {}


@pytest.fixture
def signer() -> Signer:
    key = new_key()
    s = Signer(key)
    _KEYS[id(s)] = key
    return s


def signer_key(s: Signer) -> bytes:
    """The key of a `signer` fixture (another Signer under it is another sender or receiver)."""
    return _KEYS[id(s)]


@dataclass
class Point:
    x: int
    tags: list[str] = field(default_factory=list)


@dataclass
class Holder:
    """Pickled with protocol 5: its array travels as an out-of-band buffer."""

    label: str
    data: np.ndarray

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Holder)
            and self.label == other.label
            and self.data.dtype == other.data.dtype
            and np.array_equal(self.data, other.data)
        )


EXPLOITED = {"ran": False}


def _exploit() -> str:
    EXPLOITED["ran"] = True
    return "pwned"


class Evil:
    """Unpickling this runs `_exploit` (like any malicious pickle would run arbitrary code)."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_exploit, ())


@pytest.fixture(autouse=True)
def _reset_exploit_flag() -> None:
    EXPLOITED["ran"] = False


def on_wire(frames: list[Any]) -> list[bytes]:
    """The frames as a socket delivers them: independent byte copies."""
    return [bytes(f) for f in frames]


def send(signer: Signer, chunk: DataChunk, seq: int = 1, created: float | None = None,
         hops: list[list[Any]] | None = None) -> list[bytes]:
    created = chunk.created if created is None else created
    return on_wire(encode_chunk(signer, chunk, seq, created, hops or []))


def roundtrip(signer: Signer, chunk: DataChunk, **kw: Any) -> tuple[dict[str, Any], DataChunk]:
    header = decode_data(signer, send(signer, chunk, **kw))
    return header, chunk_from_header(header)


def one(name: str, value: Any, content_type: str = "other", quality: int | None = None) -> DataChunk:
    chunk = DataChunk()
    chunk.add(name, value, content_type=content_type, quality=quality)
    return chunk


def flip(frames: list[bytes], index: int, pos: int, bit: int = 0) -> list[bytes]:
    """A copy of `frames` with one bit flipped in frame `index` at byte `pos`."""
    out = list(frames)
    b = bytearray(out[index])
    b[pos] ^= 1 << bit
    out[index] = bytes(b)
    return out


def encodings(header: dict[str, Any]) -> list[str]:
    return [rec[2] for rec in header["r"]]


def assert_same(a: Any, b: Any) -> None:
    """Equal values of the very same types, recursively."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    else:
        assert a == b


def gradient_image(h: int = 120, w: int = 160) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack(
        [x * 255 // (w - 1), y * 255 // (h - 1), (x + y) * 255 // (h + w - 2)], axis=-1
    ).astype(np.uint8)


def mean_abs_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# --------------------------------------------------------------------------------------------------
# round trips: plain values (msgpack), everything else (pickle)
# --------------------------------------------------------------------------------------------------
PLAIN_VALUES = [
    0, -1, 7, 2**63 - 1, -(2**63), 2**64 - 1,
    1.5, -0.0, 1e300, float("inf"), float("-inf"), float("nan"),
    "", "héllo ✓", "x" * 100_000,
    b"", b"\x00\xff\x80", b"y" * 100_000,
    None, True, False,
    [], {}, [1, 2.5, "a", b"b", None, True],
    {"a": [1, {"b": [None, {"c": b"\x00"}]}], "d": {"e": False}},
    [[[[[1]]]]],
]


@pytest.mark.parametrize("value", PLAIN_VALUES, ids=lambda v: repr(v)[:40])
def test_plain_values_round_trip_inline_without_pickle(signer: Signer, value: Any) -> None:
    header, chunk = roundtrip(signer, one("v", value))
    assert_same(chunk.get("v")["value"], value)
    assert chunk.get("v")["content-type"] == "other"
    assert encodings(header) == ["m"]  # carried in the signed header by msgpack: no pickle involved
    assert header["_bufs"] == []


PICKLED_VALUES = [
    2**64,
    -(2**63) - 1,
    10**40,
    {1, 2, 3},
    frozenset({"a"}),
    (1, "a", None),
    [1, (2, 3)],
    {1: "int key"},
    {"k": {2.5: "float key"}},
    Point(3, ["a", "b"]),
    [[[[[[[[[[[1]]]]]]]]]]],  # deeper than msgpack is used for
]


@pytest.mark.parametrize("value", PICKLED_VALUES, ids=lambda v: repr(v)[:40])
def test_other_values_round_trip_through_pickle(signer: Signer, value: Any) -> None:
    header, chunk = roundtrip(signer, one("v", value))
    got = chunk.get("v")["value"]
    assert got == value
    assert type(got) is type(value)
    assert encodings(header) == ["p"]


def test_a_pickled_object_keeps_its_arrays_via_out_of_band_buffers(signer: Signer) -> None:
    value = Holder("h", np.arange(1000, dtype=np.int32))
    header, chunk = roundtrip(signer, one("v", value))
    assert chunk.get("v")["value"] == value
    assert header["r"][0][2] == "p" and header["r"][0][4] == 2  # main pickle + one out-of-band buffer


# --------------------------------------------------------------------------------------------------
# round trips: numpy arrays
# --------------------------------------------------------------------------------------------------
DTYPES = ["uint8", "int8", "uint16", "int32", "int64", "float16", "float32", "float64",
          "complex128", "bool", ">i4", "<U3"]
SHAPES = [(7,), (3, 5), (2, 3, 4), (1, 1, 1, 1), (0,), (4, 0), (0, 3, 2)]


def make_array(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(sum(shape) + len(dtype))
    base = rng.standard_normal(shape) * 1000
    if dtype == "bool":
        return base > 0
    if dtype == "<U3":
        return base.astype(np.int64).astype("<U3")
    return base.astype(dtype)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
def test_arrays_round_trip_with_dtype_and_shape(signer: Signer, dtype: str, shape: tuple[int, ...]) -> None:
    arr = make_array(dtype, shape)
    header, chunk = roundtrip(signer, one("a", arr, "ndarray"))
    got = chunk.get("a")["value"]
    assert isinstance(got, np.ndarray)
    assert got.dtype == arr.dtype
    assert got.shape == arr.shape
    assert np.array_equal(got, arr)
    assert chunk.get("a")["content-type"] == "ndarray"
    assert encodings(header) == ["a"]  # raw buffer, never pickled


def test_zero_dimensional_array_keeps_its_shape(signer: Signer) -> None:
    arr = np.array(3.25, dtype=np.float32)
    _, chunk = roundtrip(signer, one("a", arr, "ndarray"))
    got = chunk.get("a")["value"]
    assert got.dtype == np.float32 and got.shape == () and got == arr


def test_zero_dimensional_array_keeps_its_value_and_dtype(signer: Signer) -> None:
    arr = np.array(-7, dtype=np.int16)
    _, chunk = roundtrip(signer, one("a", arr, "ndarray"))
    got = chunk.get("a")["value"]
    assert got.dtype == np.int16 and got.size == 1 and int(got.reshape(())) == -7


@pytest.mark.parametrize("dtype", ["datetime64[ms]", "timedelta64[s]"])
def test_datetime_arrays_round_trip(signer: Signer, dtype: str) -> None:
    arr = np.arange(5).astype(dtype)
    _, chunk = roundtrip(signer, one("a", arr, "ndarray"))
    got = chunk.get("a")["value"]
    assert got.dtype == arr.dtype and np.array_equal(got, arr)


@pytest.mark.parametrize(
    "view",
    [
        lambda a: a.T,
        lambda a: a[::2, ::-1],
        lambda a: a[:, 1:4],
        np.asfortranarray,
    ],
    ids=["transposed", "strided-reversed", "column-slice", "fortran-order"],
)
def test_non_contiguous_arrays_round_trip(signer: Signer, view: Any) -> None:
    arr = view(np.arange(48, dtype=np.float64).reshape(6, 8))
    _, chunk = roundtrip(signer, one("a", arr, "ndarray"))
    got = chunk.get("a")["value"]
    assert got.shape == arr.shape and got.dtype == arr.dtype
    assert np.array_equal(got, arr)


def test_big_non_contiguous_array_round_trips(signer: Signer) -> None:
    arr = np.arange(300 * 200, dtype=np.int32).reshape(300, 200).T
    header, chunk = roundtrip(signer, one("a", arr, "ndarray"))
    assert np.array_equal(chunk.get("a")["value"], arr)
    assert header["x"][0][:2] == [0, arr.nbytes]


def test_big_array_travels_zero_copy_listed_in_header_x(signer: Signer) -> None:
    arr = np.arange(100_000, dtype=np.float64)  # 800 000 bytes
    frames = encode_chunk(signer, one("a", arr, "ndarray"), 1, 0.0, [])
    assert not isinstance(frames[2], bytes)  # a view of the array's memory, not a copy
    assert np.shares_memory(np.frombuffer(frames[2], dtype=np.float64), arr)
    header = decode_data(signer, on_wire(frames))
    assert header["x"] == [[0, arr.nbytes, xxhash.xxh3_64_intdigest(arr.tobytes())]]
    got = chunk_from_header(header).get("a")["value"]
    assert np.array_equal(got, arr) and got.dtype == arr.dtype


def test_zero_copy_threshold_is_64_kib(signer: Signer) -> None:
    assert BIG == 64 * 1024
    at = decode_data(signer, send(signer, one("a", np.zeros(BIG, np.uint8), "ndarray")))
    below = decode_data(signer, send(signer, one("a", np.zeros(BIG - 1, np.uint8), "ndarray")))
    assert at["x"] == [[0, BIG, xxhash.xxh3_64_intdigest(bytes(BIG))]]
    assert "x" not in below  # small buffers are MAC-covered in full


def test_big_pickle_buffers_are_mac_covered_not_zero_copy(signer: Signer) -> None:
    value = Holder("big", np.arange(50_000, dtype=np.int64))  # 400 KB out-of-band buffer
    header, chunk = roundtrip(signer, one("v", value))
    assert "x" not in header
    assert chunk.get("v")["value"] == value


def test_ndarray_under_content_type_other_round_trips(signer: Signer) -> None:
    arr = np.arange(12, dtype=np.uint16).reshape(3, 4)
    header, chunk = roundtrip(signer, one("v", arr, "other"))
    rec = chunk.get("v")
    assert rec["content-type"] == "other"
    assert rec["value"].dtype == arr.dtype and np.array_equal(rec["value"], arr)


def test_object_arrays_round_trip_through_pickle(signer: Signer) -> None:
    arr = np.array([{"a": 1}, None, "x"], dtype=object)
    header, chunk = roundtrip(signer, one("v", arr, "ndarray"))
    got = chunk.get("v")["value"]
    assert encodings(header) == ["p"]
    assert got.dtype == object and list(got) == list(arr)


def test_many_records_keep_their_own_buffers(signer: Signer) -> None:
    chunk = DataChunk()
    chunk.add("small", np.arange(10, dtype=np.int8), "ndarray")                 # buffer 0
    chunk.add("big", np.arange(BIG, dtype=np.int32), "ndarray")                # buffer 1 (zero-copy)
    chunk.add("plain", {"k": [1, 2]})                                          # no buffer
    chunk.add("obj", Holder("h", np.arange(100, dtype=np.float32)))           # buffers 2, 3
    chunk.add("empty", np.zeros((0, 2)), "ndarray")                            # buffer 4
    chunk.add("big2", np.full(BIG // 2, 7, dtype=np.uint16), "ndarray")       # buffer 5 (zero-copy)
    chunk.add("img", gradient_image(32, 48), "image")                          # buffer 6
    header, got = roundtrip(signer, chunk)
    assert [x[0] for x in header["x"]] == [1, 5]
    assert encodings(header) == ["a", "a", "m", "p", "a", "a", "j"]
    assert list(got) == list(chunk)
    for name in ("small", "big", "plain", "obj", "empty", "big2"):
        a, b = got.get(name), chunk.get(name)
        assert a["content-type"] == b["content-type"]
        if isinstance(b["value"], np.ndarray):
            assert a["value"].dtype == b["value"].dtype and np.array_equal(a["value"], b["value"])
        else:
            assert a["value"] == b["value"]
    assert mean_abs_error(got.get("img")["value"], chunk.get("img")["value"]) < 8


def test_decoded_chunk_equals_the_sent_chunk(signer: Signer) -> None:
    chunk = DataChunk()
    chunk.add("n", 5)
    chunk.add("arr", np.arange(20_000, dtype=np.float64).reshape(100, 200), "ndarray")
    chunk.add("obj", Point(1, ["q"]))
    _, got = roundtrip(signer, chunk)
    assert got == chunk


# --------------------------------------------------------------------------------------------------
# round trips: images (JPEG)
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gray", [False, True], ids=["HxWx3", "HxW"])
def test_image_round_trips_as_jpeg_within_tolerance(signer: Signer, gray: bool) -> None:
    img = gradient_image()
    if gray:
        img = np.ascontiguousarray(img[:, :, 0])
    header, chunk = roundtrip(signer, one("img", img, "image", quality=80))
    rec = chunk.get("img")
    assert rec["content-type"] == "image"
    assert rec["value"].dtype == np.uint8 and rec["value"].shape == img.shape
    assert mean_abs_error(rec["value"], img) < 8
    assert encodings(header) == ["j"]
    assert len(header["_bufs"][0]) < img.nbytes / 5  # it really is compressed


@pytest.mark.parametrize("gray", [False, True], ids=["HxWx3", "HxW"])
def test_higher_jpeg_quality_gives_smaller_error(signer: Signer, gray: bool) -> None:
    img = gradient_image()
    if gray:
        img = np.ascontiguousarray(img[:, :, 0])
    errors = []
    for q in (10, 50, 95):
        _, chunk = roundtrip(signer, one("img", img, "image", quality=q))
        errors.append(mean_abs_error(chunk.get("img")["value"], img))
    assert errors[0] > errors[1] > errors[2]


def test_image_quality_defaults_to_80(signer: Signer) -> None:
    img = gradient_image()
    default = send(signer, one("img", img, "image"))
    q80 = send(signer, one("img", img, "image", quality=80))
    q50 = send(signer, one("img", img, "image", quality=50))
    assert default[2] == q80[2]
    assert default[2] != q50[2]


def test_non_contiguous_image_round_trips(signer: Signer) -> None:
    img = gradient_image(96, 64).transpose(1, 0, 2)
    _, chunk = roundtrip(signer, one("img", img, "image", quality=95))
    got = chunk.get("img")["value"]
    assert got.shape == img.shape and mean_abs_error(got, img) < 4


def test_big_jpeg_is_covered_by_the_full_mac(signer: Signer) -> None:
    """libjpeg parses JPEG bytes, so even a big JPEG is never covered by a mere digest."""
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    header, chunk = roundtrip(signer, one("img", noise, "image", quality=95))
    assert len(header["_bufs"][0]) >= BIG and "x" not in header
    assert chunk.get("img")["value"].shape == noise.shape
    assert chunk.get("img")["quality"] == 95


def test_an_empty_image_is_rejected_when_added() -> None:
    with pytest.raises(ValueError, match="image"):
        DataChunk().add("img", np.zeros((0, 4), np.uint8), content_type="image")


# --------------------------------------------------------------------------------------------------
# sequence number, origin time and hops
# --------------------------------------------------------------------------------------------------
def test_seq_created_and_hops_are_preserved(signer: Signer) -> None:
    chunk = one("v", 1)
    hops = [["cam", 1_700_000_000.25], ["blur", 1_700_000_000.5]]
    header, got = roundtrip(signer, chunk, seq=41, created=1_700_000_000.125, hops=hops)
    assert header["q"] == 41
    assert got.created == 1_700_000_000.125
    assert got.hops == [("cam", 1_700_000_000.25), ("blur", 1_700_000_000.5)]


def test_an_empty_chunk_round_trips(signer: Signer) -> None:
    _, got = roundtrip(signer, DataChunk(), seq=0, created=5.0)
    assert len(got) == 0 and got.created == 5.0 and got.hops == []


def test_end_of_stream_marker_round_trips_and_is_signed(signer: Signer) -> None:
    frames = on_wire(encode_eos(signer, 17, 18))
    header = decode_data(signer, frames)
    assert header["eos"] == 17 and header["q"] == 18
    with pytest.raises(AuthError):
        decode_data(Signer(new_key()), frames)
    forged = on_wire([frames[0], msgpack.packb({"eos": 1_000_000})])
    with pytest.raises(AuthError):
        decode_data(signer, forged)


# --------------------------------------------------------------------------------------------------
# security: every tampering is an AuthError
# --------------------------------------------------------------------------------------------------
def mixed_message(signer: Signer) -> list[bytes]:
    """frames: 0 mac, 1 header, 2 small array, 3 pickle main, 4 pickle out-of-band, 5 big array."""
    chunk = DataChunk()
    chunk.add("small", np.arange(100, dtype=np.int16), "ndarray")
    chunk.add("obj", Holder("h", np.arange(300, dtype=np.float64)))
    chunk.add("big", np.arange(BIG, dtype=np.float32), "ndarray")
    frames = send(signer, chunk)
    header = decode_data(signer, frames)  # the untampered message is fine
    assert encodings(header) == ["a", "p", "a"] and len(frames) == 6
    assert [x[0] for x in header["x"]] == [3]  # buffer 3 = frame 5
    return frames


def test_every_flipped_header_bit_is_rejected(signer: Signer) -> None:
    frames = mixed_message(signer)
    for pos in range(len(frames[1])):
        for bit in (0, 7):
            with pytest.raises(AuthError):
                decode_data(signer, flip(frames, 1, pos, bit))


@pytest.mark.parametrize("index", [2, 3, 4, 5], ids=["small-buffer", "pickle-main", "pickle-oob", "big-raw"])
def test_flipped_bit_in_any_buffer_is_rejected(signer: Signer, index: int) -> None:
    frames = mixed_message(signer)
    n = len(frames[index])
    for pos in sorted({0, n // 2, n - 1}):
        with pytest.raises(AuthError):
            decode_data(signer, flip(frames, index, pos))


def test_flipped_bit_in_big_jpeg_is_rejected(signer: Signer) -> None:
    noise = np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    frames = send(signer, one("img", noise, "image", quality=95))
    assert "x" not in decode_data(signer, frames)
    with pytest.raises(AuthError):
        decode_data(signer, flip(frames, 2, len(frames[2]) // 2))


def test_flipped_mac_bit_is_rejected(signer: Signer) -> None:
    frames = mixed_message(signer)
    for pos in (0, MAC_SIZE - 1):
        with pytest.raises(AuthError):
            decode_data(signer, flip(frames, 0, pos))


def test_message_signed_with_another_key_is_rejected(signer: Signer) -> None:
    other = Signer(new_key())
    with pytest.raises(AuthError):
        decode_data(signer, mixed_message(other))
    with pytest.raises(AuthError):
        decode_data(signer, send(other, one("v", 1)))


@pytest.mark.parametrize("mac", [os.urandom(MAC_SIZE), b"", b"\x00" * MAC_SIZE, os.urandom(MAC_SIZE - 1),
                                 os.urandom(MAC_SIZE + 1)], ids=["random", "empty", "zeros", "short", "long"])
def test_unsigned_message_is_rejected(signer: Signer, mac: bytes) -> None:
    frames = mixed_message(signer)
    with pytest.raises(AuthError):
        decode_data(signer, [mac, *frames[1:]])


def test_big_buffer_swapped_for_another_of_the_same_length_is_rejected(signer: Signer) -> None:
    frames = mixed_message(signer)
    replacement = np.arange(BIG, dtype=np.float32)
    replacement[12345] = -1.0
    assert len(replacement.tobytes()) == len(frames[5])
    with pytest.raises(AuthError):
        decode_data(signer, [*frames[:5], replacement.tobytes()])


def test_big_buffer_from_another_signed_message_is_rejected(signer: Signer) -> None:
    a = send(signer, one("big", np.zeros(BIG, np.uint8), "ndarray"))
    b = send(signer, one("big", np.ones(BIG, np.uint8), "ndarray"))
    with pytest.raises(AuthError):
        decode_data(signer, [a[0], a[1], b[2]])


def test_re_splitting_bytes_between_covered_frames_is_rejected(signer: Signer) -> None:
    frames = mixed_message(signer)
    main, oob = frames[3], frames[4]
    # move the last byte of the pickle into its out-of-band buffer, and the other way round
    moved_right = [*frames[:3], main[:-1], main[-1:] + oob, frames[5]]
    moved_left = [*frames[:3], main + oob[:1], oob[1:], frames[5]]
    # merge the two into one frame (and add an empty one to keep the count)
    merged = [*frames[:3], main + oob, b"", frames[5]]
    # move bytes from the small array into the pickle
    across = [frames[0], frames[1], frames[2][:-2], frames[2][-2:] + main, oob, frames[5]]
    for forged in (moved_right, moved_left, merged, across):
        assert b"".join(forged[2:]) == b"".join(frames[2:])  # same bytes, split differently
        with pytest.raises(AuthError):
            decode_data(signer, forged)


def test_reordering_equal_length_frames_is_rejected(signer: Signer) -> None:
    chunk = DataChunk()
    chunk.add("a", np.zeros(10, np.int32), "ndarray")
    chunk.add("b", np.ones(10, np.int32), "ndarray")
    chunk.add("c", np.zeros(BIG, np.uint8), "ndarray")
    chunk.add("d", np.ones(BIG, np.uint8), "ndarray")
    f = send(signer, chunk)
    with pytest.raises(AuthError):
        decode_data(signer, [f[0], f[1], f[3], f[2], f[4], f[5]])  # small, MAC-covered
    with pytest.raises(AuthError):
        decode_data(signer, [f[0], f[1], f[2], f[3], f[5], f[4]])  # big, digest-covered


def test_dropped_or_extra_frames_are_rejected(signer: Signer) -> None:
    frames = mixed_message(signer)
    for forged in (frames[:-1], frames[:3], [*frames, b""], [*frames, b"extra"], [frames[0], frames[1]]):
        with pytest.raises(AuthError):
            decode_data(signer, forged)


@pytest.mark.parametrize("frames", [[], [b"x" * MAC_SIZE], [b"x" * MAC_SIZE, b"\xc1"],
                                    [b"x" * MAC_SIZE, msgpack.packb([1, 2])],
                                    [b"x" * MAC_SIZE, msgpack.packb({"x": "abc"})],
                                    [b"x" * MAC_SIZE, msgpack.packb({"x": [[None, 1, 2]]})],
                                    [b"x" * MAC_SIZE, msgpack.packb({"x": 5})]],
                         ids=["no-frames", "mac-only", "not-msgpack", "not-a-dict", "x-str", "x-none",
                              "x-int"])
def test_malformed_data_messages_are_auth_errors(signer: Signer, frames: list[bytes]) -> None:
    with pytest.raises(AuthError):
        decode_data(signer, frames)


def test_unsigned_header_with_infinite_buffer_index_is_an_auth_error(signer: Signer) -> None:
    with pytest.raises(AuthError):
        decode_data(signer, [b"x" * MAC_SIZE, msgpack.packb({"x": [[float("inf"), 1, 1]]})])


def test_nothing_is_unpickled_before_the_mac_check(signer: Signer) -> None:
    attacker = Signer(new_key())
    forged = send(attacker, one("payload", Evil()))
    assert decode_data(attacker, forged)["r"][0][2] == "p"
    assert not EXPLOITED["ran"]

    # under the wrong key, with a random MAC and with a tampered pickle: rejected, and nothing ran
    attempts = [forged, [os.urandom(MAC_SIZE), *forged[1:]]]
    legit = send(signer, one("payload", "harmless"))
    attempts.append([legit[0], *forged[1:]])
    for frames in attempts:
        with pytest.raises(AuthError):
            decode_data(signer, frames)
        assert not EXPLOITED["ran"]

    # the payload is live: decoding it under the key that signed it does run it
    chunk = chunk_from_header(decode_data(attacker, forged))
    assert EXPLOITED["ran"] and chunk.get("payload")["value"] == "pwned"


def test_a_pickle_cannot_be_smuggled_in_as_a_big_raw_buffer(signer: Signer) -> None:
    # a legitimately signed header whose big buffer is raw: replacing that buffer with a pickle
    # of the same length fails the digest check before anything could look at it
    legit = send(signer, one("big", np.zeros(BIG, np.uint8), "ndarray"))
    evil = pickle.dumps(Evil())
    payload = evil + b"\x00" * (BIG - len(evil))
    with pytest.raises(AuthError):
        decode_data(signer, [legit[0], legit[1], payload])
    assert not EXPLOITED["ran"]


# --------------------------------------------------------------------------------------------------
# control messages
# --------------------------------------------------------------------------------------------------
CONTROL = {"op": "deploy", "node": "cam", "n": 3, "rate": 2.5, "args": [1, "x", None], "raw": b"\x00\xff",
           "nested": {"a": {"b": [True, False]}}}


def test_control_round_trip_with_blobs(signer: Signer) -> None:
    blobs = (pickle.dumps(Point(1)), b"", os.urandom(200_000))
    frames = encode_control(signer, CONTROL, blobs)
    assert len(frames) == 2 + len(blobs)
    msg, got = decode_control(signer, on_wire(frames))
    assert msg == CONTROL
    assert got == list(blobs)


def test_control_round_trip_without_blobs(signer: Signer) -> None:
    msg, blobs = decode_control(signer, on_wire(encode_control(signer, {"op": "ping"})))
    assert msg == {"op": "ping"} and blobs == []


def test_control_frames_with_any_flipped_bit_are_rejected(signer: Signer) -> None:
    frames = on_wire(encode_control(signer, CONTROL, (b"blob-one", os.urandom(100_000))))
    for index, frame in enumerate(frames):
        for pos in sorted({0, len(frame) // 2, len(frame) - 1}):
            with pytest.raises(AuthError):
                decode_control(signer, flip(frames, index, pos))


def test_control_signed_with_another_key_or_unsigned_is_rejected(signer: Signer) -> None:
    frames = on_wire(encode_control(Signer(new_key()), CONTROL, (b"blob",)))
    with pytest.raises(AuthError):
        decode_control(signer, frames)
    with pytest.raises(AuthError):
        decode_control(signer, [os.urandom(MAC_SIZE), *frames[1:]])


def test_truncated_control_messages_are_rejected(signer: Signer) -> None:
    frames = on_wire(encode_control(signer, CONTROL, (b"first", b"second")))
    truncated = [
        [],
        frames[:1],
        frames[:2],  # blobs dropped
        frames[:3],  # last blob dropped
        [*frames[:3], frames[3][:-1]],  # last blob cut short
        [frames[0], frames[1][:-1], *frames[2:]],  # header cut short
        [frames[0][:-1], *frames[1:]],  # mac cut short
        [*frames, b""],  # extra frame
        [frames[0], frames[1], frames[2] + frames[3][:1], frames[3][1:]],  # re-split blobs
    ]
    for forged in truncated:
        with pytest.raises(AuthError):
            decode_control(signer, forged)


@pytest.mark.parametrize("payload", [{"no-op": 1}, [1, 2], "op", None])
def test_signed_control_without_op_is_rejected(signer: Signer, payload: Any) -> None:
    header = msgpack.packb(payload, use_bin_type=True)
    with pytest.raises(AuthError, match="malformed"):
        decode_control(signer, [signer.sign([b"", header]), header])


def test_a_data_message_is_not_accepted_as_a_control_message(signer: Signer) -> None:
    with pytest.raises(AuthError):
        decode_control(signer, send(signer, one("op", "deploy")))


# --------------------------------------------------------------------------------------------------
# single-frame packing (conflating sockets)
# --------------------------------------------------------------------------------------------------
def test_pack_unpack_round_trip() -> None:
    arr = np.arange(10, dtype=np.int64)
    frames: list[Any] = [b"abc", b"", memoryview(arr).cast("B"), os.urandom(BIG + 3)]
    blob = pack_frames(frames)
    got = unpack_frames(blob)
    assert [bytes(g) for g in got] == [bytes(f) for f in frames]
    assert all(isinstance(g, memoryview) and g.obj is blob for g in got)  # views, not copies


def test_pack_unpack_of_no_frames() -> None:
    assert unpack_frames(pack_frames([])) == []


def test_packed_data_message_decodes(signer: Signer) -> None:
    chunk = DataChunk()
    chunk.add("big", np.arange(BIG, dtype=np.float64), "ndarray")
    chunk.add("obj", Point(2, ["z"]))
    chunk.add("img", gradient_image(), "image")
    blob = pack_frames(encode_chunk(signer, chunk, 9, 3.5, [["src", 3.5]]))
    header = decode_data(signer, unpack_frames(blob))
    got = chunk_from_header(header)
    assert header["q"] == 9 and got.created == 3.5 and got.hops == [("src", 3.5)]
    assert np.array_equal(got.get("big")["value"], chunk.get("big")["value"])
    assert got.get("obj")["value"] == Point(2, ["z"])
    assert mean_abs_error(got.get("img")["value"], chunk.get("img")["value"]) < 8


def test_every_truncation_of_a_packed_blob_is_rejected(signer: Signer) -> None:
    blob = pack_frames(encode_chunk(signer, one("v", np.arange(5, dtype=np.int8), "ndarray"), 1, 0.0, []))
    for cut in range(len(blob)):
        with pytest.raises(AuthError):
            decode_data(signer, unpack_frames(blob[:cut]))


def test_tampered_packed_blob_is_rejected(signer: Signer) -> None:
    blob = pack_frames(encode_chunk(signer, one("v", np.arange(500, dtype=np.int8), "ndarray"), 1, 0.0, []))
    for pos in range(0, len(blob), 7):
        b = bytearray(blob)
        b[pos] ^= 0x10
        with pytest.raises(AuthError):
            decode_data(signer, unpack_frames(bytes(b)))


@pytest.mark.parametrize(
    "blob",
    [b"", b"\x01", b"\x01\x00\x00", b"\xff\xff\xff\xff", b"\x01\x00\x00\x00" + b"\xff" * 8,
     b"\x02\x00\x00\x00" + b"\x01" + b"\x00" * 7 + b"a", b"garbage garbage garbage"],
    ids=["empty", "1-byte", "3-bytes", "huge-count", "huge-length", "missing-frame", "text"],
)
def test_garbage_packed_blobs_are_auth_errors(blob: bytes) -> None:
    with pytest.raises(AuthError, match="malformed packed message"):
        unpack_frames(blob)


# --------------------------------------------------------------------------------------------------
# keys and tokens
# --------------------------------------------------------------------------------------------------
def test_new_keys_are_32_random_bytes() -> None:
    a, b = new_key(), new_key()
    assert isinstance(a, bytes) and len(a) == 32 and a != b


@pytest.mark.parametrize("decorate", [str, str.upper, lambda t: f"  {t}\n"], ids=["plain", "upper", "padded"])
def test_key_from_token_accepts_the_hex_of_a_key(decorate: Any) -> None:
    key = new_key()
    assert key_from_token(decorate(key.hex())) == key


def test_token_key_verifies_messages_signed_with_the_original_key() -> None:
    key = new_key()
    frames = on_wire(encode_control(Signer(key), {"op": "hello"}))
    msg, _ = decode_control(Signer(key_from_token(key.hex())), frames)
    assert msg == {"op": "hello"}


@pytest.mark.parametrize("token", ["zz" * 32, "not a token", "abc", "0x" + "00" * 32, None, 12345],
                         ids=repr)
def test_key_from_token_rejects_garbage_pointing_at_manager_token(token: Any) -> None:
    with pytest.raises(ValueError, match="manager.token") as exc:
        key_from_token(token)
    assert "not valid" in str(exc.value)


@pytest.mark.parametrize("token", ["", "ab", "00" * 15], ids=["empty", "1-byte", "15-bytes"])
def test_key_from_token_rejects_short_tokens_pointing_at_manager_token(token: str) -> None:
    with pytest.raises(ValueError, match="manager.token") as exc:
        key_from_token(token)
    assert "too short" in str(exc.value)


def test_signer_is_reusable_and_deterministic() -> None:
    s = Signer(b"k" * 32)
    frames = [b"header", b"buf"]
    assert s.sign(frames) == s.sign(frames) == Signer(b"k" * 32).sign(frames)
    assert len(s.sign(frames)) == MAC_SIZE
    s.verify(s.sign(frames), frames)
    with pytest.raises(AuthError):
        s.verify(s.sign(frames), [b"header", b"buf", b""])
    with pytest.raises(AuthError):
        s.verify(s.sign(frames), [b"headerbuf"])


def test_control_blobs_covered_by_digest_round_trip_and_reject_tampering(signer: Signer) -> None:
    """File chunks travel with a digest in the signed header instead of under the MAC."""
    blob = bytes(range(256)) * 4096
    frames = encode_control(signer, {"op": "reply", "re": "r1"}, (blob,), digest_blobs=True)
    msg, blobs = decode_control(signer, frames)
    assert msg == {"op": "reply", "re": "r1"} and bytes(blobs[0]) == blob
    flipped = bytearray(blob)
    flipped[1000] ^= 1
    with pytest.raises(AuthError):
        decode_control(signer, [frames[0], frames[1], bytes(flipped)])
    with pytest.raises(AuthError):  # same length, other bytes
        decode_control(signer, [frames[0], frames[1], bytes(len(blob))])
    with pytest.raises(AuthError):  # a blob the header does not list
        decode_control(signer, [*frames, b"extra"])
    other = Signer(new_key())
    with pytest.raises(AuthError):
        decode_control(other, frames)


# ---------------------------------------------------------------------------------------------------------------
# sealed frames (the parameter channel's one-frame messages)
# ---------------------------------------------------------------------------------------------------------------
def test_a_sealed_frame_opens_to_its_body(signer: Signer) -> None:
    body = b"header--" + np.arange(5, dtype=np.float64).tobytes()
    assert bytes(signer.unseal(signer.seal(body))) == body
    assert bytes(signer.unseal(signer.seal(b""))) == b""


@pytest.mark.parametrize("where", [0, 31, 32, -1])
def test_a_sealed_frame_with_any_byte_changed_is_refused(signer: Signer, where: int) -> None:
    frame = bytearray(signer.seal(b"header--" + bytes(80)))
    frame[where] ^= 1
    with pytest.raises(AuthError):
        signer.unseal(bytes(frame))


def test_sealed_frames_need_the_same_key_and_short_ones_are_refused(signer: Signer) -> None:
    with pytest.raises(AuthError):
        Signer(os.urandom(32)).unseal(signer.seal(b"body"))
    for short in (b"", b"x" * 31):
        with pytest.raises(AuthError):
            signer.unseal(short)


def test_a_sealed_frame_and_a_control_message_cannot_pass_for_each_other(signer: Signer) -> None:
    # seal signs under a key derived from the cluster key: the same bytes signed both ways give different MACs
    mac, header = encode_control(signer, {"op": "x"})
    with pytest.raises(AuthError):
        signer.unseal(mac + header)
    sealed = signer.seal(header)
    with pytest.raises(AuthError):
        decode_control(signer, [sealed[:32], sealed[32:]])


# --------------------------------------------------------------------------------------------------
# flags: which buffers the MAC covers is itself signed, and read without parsing anything
# --------------------------------------------------------------------------------------------------
def test_the_flags_say_which_buffers_the_mac_covers(signer: Signer) -> None:
    frames = mixed_message(signer)
    assert frames[0][MAC_SIZE:] == b"\x00\x00\x00\x01"  # small array, pickle, pickle buffer: MAC; big array: digest


@pytest.mark.parametrize("flags", [b"\x00\x00\x00\x00", b"\x01\x00\x00\x01", b"\x00\x00\x00",
                                   b"\x00\x00\x00\x01\x00", b"\x00\x00\x00\x02"],
                         ids=["big-as-covered", "small-as-digest", "short", "long", "bad-flag"])
def test_changed_flags_are_rejected(signer: Signer, flags: bytes) -> None:
    frames = mixed_message(signer)
    with pytest.raises(AuthError):
        decode_data(signer, [frames[0][:MAC_SIZE] + flags, *frames[1:]])


def test_nothing_is_parsed_before_the_mac_check(signer: Signer, monkeypatch: pytest.MonkeyPatch) -> None:
    import chimera_lab.wire as wire

    parsed: list[bytes] = []
    real = wire.msgpack.unpackb
    monkeypatch.setattr(wire.msgpack, "unpackb", lambda b, **kw: parsed.append(b) or real(b, **kw))
    frames = mixed_message(signer)
    parsed.clear()
    for forged in (flip(frames, 1, 3), flip(frames, 2, 1), [os.urandom(MAC_SIZE + 4), *frames[1:]]):
        with pytest.raises(AuthError):
            decode_data(signer, forged)
    assert parsed == []
    decode_data(signer, frames)
    assert len(parsed) == 1


# --------------------------------------------------------------------------------------------------
# replays: a control message is accepted once
# --------------------------------------------------------------------------------------------------
def test_a_control_message_is_accepted_once(signer: Signer) -> None:
    sender = Signer(signer_key(signer))
    frames = on_wire(encode_control(sender, CONTROL, (b"blob",)))
    assert decode_control(signer, frames)[0] == CONTROL
    with pytest.raises(ReplayError, match="already had"):
        decode_control(signer, frames)


def test_replays_are_refused_out_of_order_too(signer: Signer) -> None:
    sender = Signer(signer_key(signer))
    msgs = [on_wire(encode_control(sender, {"op": "x", "i": i})) for i in range(10)]
    for i in (3, 1, 0, 9, 2, 8, 4, 7, 5, 6):  # threads of one sender may reorder: all accepted, once each
        assert decode_control(signer, msgs[i])[0]["i"] == i
    for frames in msgs:
        with pytest.raises(ReplayError):
            decode_control(signer, frames)


def test_a_message_older_than_the_window_is_refused(signer: Signer) -> None:
    sender = Signer(signer_key(signer))
    old = on_wire(encode_control(sender, {"op": "old"}))
    for _ in range(REPLAY_WINDOW):
        decode_control(signer, on_wire(encode_control(sender, {"op": "new"})))
    with pytest.raises(ReplayError):
        decode_control(signer, old)


def test_each_receiver_accepts_a_message_once(signer: Signer) -> None:
    frames = on_wire(encode_control(signer, CONTROL))
    for _ in range(3):  # one message sent to three receivers (a broadcast): each takes it
        assert decode_control(Signer(signer_key(signer)), frames)[0] == CONTROL


def test_a_stale_first_message_is_refused_as_a_replay(signer: Signer, monkeypatch: pytest.MonkeyPatch) -> None:
    import chimera_lab.wire as wire

    sender = Signer(signer_key(signer))
    frames = on_wire(encode_control(sender, CONTROL))
    later = time.time() + wire.MAX_AGE + 60
    monkeypatch.setattr(wire.time, "time", lambda: later)
    with pytest.raises(ReplayError, match="clock"):
        decode_control(signer, frames)


def test_a_control_message_without_a_stamp_is_rejected(signer: Signer) -> None:
    header = msgpack.packb({"op": "start"}, use_bin_type=True)
    with pytest.raises(AuthError, match="malformed"):
        decode_control(signer, [signer.sign([b"", header]), header])
    for stamp in ([b"s", "1", 1.0], [b"s", 1], "n", [1, 1, 1.0]):
        header = msgpack.packb({"op": "start", "_s": stamp}, use_bin_type=True)
        with pytest.raises(AuthError, match="stamp"):
            decode_control(signer, [signer.sign([b"", header]), header])


def test_a_data_key_is_derived_per_purpose() -> None:
    key = new_key()
    a, b = derive_key(key, "data 1"), derive_key(key, "data 2")
    assert a != b and a != key and len(a) == 32 and derive_key(key, "data 1") == a
    frames = on_wire(encode_eos(Signer(a), 1, 2))
    with pytest.raises(AuthError):
        decode_data(Signer(b), frames)
