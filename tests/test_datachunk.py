"""Unit tests for DataChunk (records, equality, content-type validation) and as_chunk."""

from __future__ import annotations

import numpy as np
import pytest

from chimera_lab.datachunk import CONTENT_TYPES, DataChunk, as_chunk


def chunk_of(**records: object) -> DataChunk:
    chunk = DataChunk()
    for name, value in records.items():
        chunk.add(name, value)
    return chunk


# --------------------------------------------------------------------------------------------------
# records: add / get / contains / iteration / len / repr
# --------------------------------------------------------------------------------------------------
def test_add_then_get_returns_value_and_content_type() -> None:
    chunk = DataChunk()
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    chunk.add("label", "cat")
    chunk.add("features", arr, content_type="ndarray")

    assert chunk.get("label") == {"value": "cat", "content-type": "other"}
    rec = chunk.get("features")
    assert rec["content-type"] == "ndarray"
    assert rec["value"] is arr  # stored as given, no copy


def test_add_replaces_a_record_of_the_same_name() -> None:
    chunk = DataChunk()
    chunk.add("x", 1)
    chunk.add("x", np.zeros(3), content_type="ndarray")
    assert len(chunk) == 1
    assert chunk.get("x")["content-type"] == "ndarray"


def test_image_record_keeps_its_quality_only_when_given() -> None:
    chunk = DataChunk()
    img = np.zeros((4, 5, 3), np.uint8)
    chunk.add("hq", img, content_type="image", quality=95)
    chunk.add("default", img, content_type="image")
    assert chunk.get("hq")["quality"] == 95
    assert "quality" not in chunk.get("default")


@pytest.mark.parametrize("quality", [1, 100])
def test_image_quality_bounds_are_inclusive(quality: int) -> None:
    chunk = DataChunk()
    chunk.add("img", np.zeros((2, 2), np.uint8), content_type="image", quality=quality)
    assert chunk.get("img")["quality"] == quality


def test_contains_and_in_operator() -> None:
    chunk = chunk_of(a=1)
    assert chunk.contains("a") and "a" in chunk
    assert not chunk.contains("b") and "b" not in chunk
    assert 5 not in chunk  # any object can be asked for


def test_iteration_and_len_follow_insertion_order() -> None:
    chunk = DataChunk()
    assert len(chunk) == 0 and list(chunk) == []
    for name in ("z", "a", "m"):
        chunk.add(name, name.upper())
    assert list(chunk) == ["z", "a", "m"]
    assert len(chunk) == 3
    assert list(chunk.records) == ["z", "a", "m"]


def test_repr_lists_each_record_with_its_type_and_content_type() -> None:
    chunk = DataChunk()
    chunk.add("n", 3)
    chunk.add("img", np.zeros((4, 5), np.uint8), content_type="image")
    chunk.add("arr", np.zeros((2, 3, 4), np.float64), content_type="ndarray")
    assert repr(chunk) == (
        "DataChunk(n=int[other], img=ndarray(4, 5):uint8[image], arr=ndarray(2, 3, 4):float64[ndarray])"
    )
    assert repr(DataChunk()) == "DataChunk()"


def test_get_of_a_missing_record_raises_keyerror_naming_known_records() -> None:
    chunk = chunk_of(frame=1, stamp=2)
    with pytest.raises(KeyError) as exc:
        chunk.get("fram")
    msg = str(exc.value)
    assert "'fram'" in msg
    assert "'frame'" in msg and "'stamp'" in msg


def test_get_on_an_empty_chunk_says_there_are_no_records() -> None:
    with pytest.raises(KeyError, match="records: none"):
        DataChunk().get("x")


@pytest.mark.parametrize("name", ["", 5, None, b"x"])
def test_record_name_must_be_a_non_empty_str(name: object) -> None:
    with pytest.raises(ValueError, match="record name must be a non-empty str"):
        DataChunk().add(name, 1)  # type: ignore[arg-type]


def test_new_chunk_has_a_creation_time_and_no_hops() -> None:
    import time

    before = time.time()
    chunk = DataChunk()
    assert before <= chunk.created <= time.time()
    assert chunk.hops == []


# --------------------------------------------------------------------------------------------------
# equality
# --------------------------------------------------------------------------------------------------
def test_chunks_with_the_same_records_are_equal() -> None:
    a = DataChunk()
    b = DataChunk()
    for c in (a, b):
        c.add("s", {"k": [1, 2.5, "x"]})
        c.add("arr", np.arange(12, dtype=np.int32).reshape(3, 4), content_type="ndarray")
        c.add("img", np.full((4, 4, 3), 7, np.uint8), content_type="image")
    assert a == b
    assert not (a != b)


def test_equality_is_independent_of_record_order() -> None:
    a = DataChunk()
    a.add("x", 1)
    a.add("y", 2)
    b = DataChunk()
    b.add("y", 2)
    b.add("x", 1)
    assert a == b


def test_chunks_with_different_record_names_differ() -> None:
    assert chunk_of(a=1) != chunk_of(b=1)
    assert chunk_of(a=1) != chunk_of(a=1, b=2)
    assert DataChunk() == DataChunk()


def test_chunks_with_different_values_differ() -> None:
    assert chunk_of(a=1) != chunk_of(a=2)
    assert chunk_of(a=[1, 2]) != chunk_of(a=[2, 1])


def test_different_content_types_differ_even_with_the_same_value() -> None:
    arr = np.zeros((4, 4), np.uint8)
    a, b, c = DataChunk(), DataChunk(), DataChunk()
    a.add("x", arr, content_type="image")
    b.add("x", arr, content_type="ndarray")
    c.add("x", arr, content_type="other")
    assert a != b and b != c and a != c


def test_arrays_compare_by_value() -> None:
    a, b = DataChunk(), DataChunk()
    a.add("x", np.array([1.0, 2.0, 3.0]), content_type="ndarray")
    b.add("x", np.array([1.0, 2.0, 3.0]), content_type="ndarray")  # a different object, same content
    assert a == b
    b.add("x", np.array([1.0, 2.0, 4.0]), content_type="ndarray")
    assert a != b


def test_arrays_with_equal_values_but_different_dtype_differ() -> None:
    a, b = DataChunk(), DataChunk()
    a.add("x", np.array([1, 2, 3], dtype=np.int32), content_type="ndarray")
    b.add("x", np.array([1, 2, 3], dtype=np.int64), content_type="ndarray")
    assert a != b


def test_arrays_with_the_same_elements_but_different_shape_differ() -> None:
    a, b = DataChunk(), DataChunk()
    a.add("x", np.arange(6).reshape(2, 3), content_type="ndarray")
    b.add("x", np.arange(6).reshape(3, 2), content_type="ndarray")
    assert a != b
    # broadcastable shapes must not compare equal either
    a.add("x", np.zeros((1, 3)), content_type="ndarray")
    b.add("x", np.zeros((3,)), content_type="ndarray")
    assert a != b


def test_an_array_never_equals_a_non_array() -> None:
    a, b = DataChunk(), DataChunk()
    a.add("x", np.array([1, 2, 3]))
    b.add("x", [1, 2, 3])
    assert a != b
    assert b != a


def test_equality_with_other_types_is_false_and_chunks_are_unhashable() -> None:
    chunk = chunk_of(a=1)
    assert chunk != {"a": 1}
    assert chunk != 1
    with pytest.raises(TypeError):
        hash(chunk)


def test_uncomparable_values_make_chunks_unequal_instead_of_raising() -> None:
    class Grumpy:
        def __eq__(self, other: object) -> bool:
            raise RuntimeError("no")

        __hash__ = None  # type: ignore[assignment]

    a, b = chunk_of(x=Grumpy()), chunk_of(x=Grumpy())
    assert a != b


def test_equal_lists_of_arrays_are_equal() -> None:
    a, b = DataChunk(), DataChunk()
    a.add("x", [np.zeros(3), np.ones(2)])
    b.add("x", [np.zeros(3), np.ones(2)])
    assert a == b


# --------------------------------------------------------------------------------------------------
# content-type validation (and what the messages tell the user to do)
# --------------------------------------------------------------------------------------------------
def test_unknown_content_type_is_rejected_listing_the_valid_ones() -> None:
    chunk = DataChunk()
    with pytest.raises(ValueError) as exc:
        chunk.add("x", 1, content_type="json")
    msg = str(exc.value)
    assert "'x'" in msg and "'json'" in msg
    assert "use one of image, ndarray, other" in msg
    assert CONTENT_TYPES == ("image", "ndarray", "other")
    assert "x" not in chunk  # a rejected add stores nothing


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16, np.int8, np.bool_])
def test_image_must_be_uint8_and_message_says_how_to_convert(dtype: type) -> None:
    chunk = DataChunk()
    with pytest.raises(TypeError) as exc:
        chunk.add("img", np.zeros((4, 4, 3), dtype=dtype), content_type="image")
    msg = str(exc.value)
    assert "'img'" in msg and "must be uint8" in msg and str(np.dtype(dtype)) in msg
    assert "astype(numpy.uint8)" in msg and "content_type='ndarray'" in msg
    assert "img" not in chunk


@pytest.mark.parametrize("shape", [(4, 4, 4), (4, 4, 2), (16,), (2, 4, 4, 3), ()])
def test_image_must_be_hxw_or_hxwx3_and_message_suggests_ndarray(shape: tuple[int, ...]) -> None:
    chunk = DataChunk()
    with pytest.raises(ValueError) as exc:
        chunk.add("img", np.zeros(shape, np.uint8), content_type="image")
    msg = str(exc.value)
    assert "'img'" in msg and "HxWx3" in msg and str(shape) in msg
    assert "content_type='ndarray'" in msg
    assert "img" not in chunk


def test_image_must_be_an_ndarray() -> None:
    with pytest.raises(TypeError, match=r"content_type='image'\) needs a numpy.ndarray, got list"):
        DataChunk().add("img", [[0, 0], [0, 0]], content_type="image")


@pytest.mark.parametrize("value", [[1, 2, 3], (1, 2), 3.0, "abc"])
def test_ndarray_content_type_needs_an_ndarray_and_message_says_how_to_fix(value: object) -> None:
    chunk = DataChunk()
    with pytest.raises(TypeError) as exc:
        chunk.add("arr", value, content_type="ndarray")
    msg = str(exc.value)
    assert "'arr'" in msg and "needs a numpy.ndarray" in msg and type(value).__name__ in msg
    assert "numpy.asarray(...)" in msg and "content_type='other'" in msg
    assert "arr" not in chunk


@pytest.mark.parametrize("quality", [0, 101, -5, "x", 80.0, "80"])
def test_bad_jpeg_quality_is_rejected(quality: object) -> None:
    chunk = DataChunk()
    with pytest.raises(ValueError) as exc:
        chunk.add("img", np.zeros((4, 4), np.uint8), content_type="image", quality=quality)  # type: ignore[arg-type]
    msg = str(exc.value)
    assert "quality must be an int in 1..100" in msg and repr(quality) in msg
    assert "img" not in chunk


def test_ndarray_and_other_accept_any_array() -> None:
    chunk = DataChunk()
    chunk.add("a", np.zeros((2, 3, 4, 5), np.float16), content_type="ndarray")
    chunk.add("b", np.array(["x", "yy"]), content_type="ndarray")
    chunk.add("c", np.zeros(3), content_type="other")
    assert len(chunk) == 3


# --------------------------------------------------------------------------------------------------
# as_chunk: what a node's step returned, as the chunk that is sent
# --------------------------------------------------------------------------------------------------
def test_as_chunk_keeps_none_so_nothing_is_sent() -> None:
    assert as_chunk(None) is None


def test_as_chunk_passes_a_datachunk_through_unchanged() -> None:
    chunk = chunk_of(a=1)
    assert as_chunk(chunk) is chunk


@pytest.mark.parametrize(
    "value",
    [0, False, 0.0, "", b"", [], {}, np.array([]), np.zeros((0, 3)), 42, "text", {"k": [1, 2]}],
    ids=repr,
)
def test_as_chunk_wraps_every_other_value_as_record_default(value: object) -> None:
    chunk = as_chunk(value)
    assert isinstance(chunk, DataChunk)
    assert list(chunk) == ["default"]
    rec = chunk.get("default")
    assert rec["value"] is value
    assert rec["content-type"] == "other"


def test_as_chunk_of_an_image_array_sends_it_as_other() -> None:
    img = np.zeros((4, 4, 3), np.uint8)
    chunk = as_chunk(img)
    assert chunk is not None
    expected = DataChunk()
    expected.add("default", img, content_type="other")
    assert chunk == expected
