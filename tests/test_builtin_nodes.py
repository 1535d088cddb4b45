"""Unit tests for the ready-made nodes, run in-process (prep / step / teardown called directly)."""

from __future__ import annotations

import pickle
from pathlib import Path

import cloudpickle
import cv2
import numpy as np
import pytest

from chimera_lab.datachunk import DataChunk
from chimera_lab.nodes import (
    EdgeDetect,
    GaussianBlur,
    Grayscale,
    NullSink,
    Resize,
    StatsSink,
    TestPatternSource,
    VideoFileSource,
    WebcamSource,
    video_fps,
)


def frame_of(chunk: DataChunk | None) -> np.ndarray:
    assert isinstance(chunk, DataChunk)
    rec = chunk.get("frame")
    assert rec["content-type"] == "image"
    return rec["value"]


def produce(src: TestPatternSource | VideoFileSource, n: int) -> list[DataChunk]:
    out = [src.step() for _ in range(n)]
    assert all(isinstance(c, DataChunk) for c in out)
    return [c for c in out if c is not None]


def pattern_chunk(width: int = 64, height: int = 48, index: int = 0) -> DataChunk:
    src = TestPatternSource(width=width, height=height, frames=None)
    src.prep()
    for _ in range(index):
        src.step()
    chunk = src.step()
    assert chunk is not None
    return chunk


# -- TestPatternSource --------------------------------------------------------------------------------


def test_pattern_frames_have_shape_dtype_quality_and_index() -> None:
    src = TestPatternSource(width=320, height=240, quality=55)
    src.prep()
    chunks = produce(src, 3)
    src.teardown()
    for i, chunk in enumerate(chunks):
        img = frame_of(chunk)
        assert img.shape == (240, 320, 3)
        assert img.dtype == np.uint8
        assert chunk.get("frame")["quality"] == 55
        assert chunk.get("index") == {"value": i, "content-type": "other"}


def test_pattern_moves_and_is_deterministic() -> None:
    a, b = TestPatternSource(), TestPatternSource()
    a.prep()
    b.prep()
    first, second = frame_of(a.step()), frame_of(a.step())
    assert not np.array_equal(first, second)
    # the box moved, not just the counter text: pixels change well above the text band
    assert np.count_nonzero(np.any(first[:300] != second[:300], axis=2)) > 100
    assert np.array_equal(frame_of(b.step()), first)
    assert np.array_equal(frame_of(b.step()), second)


def test_pattern_returns_fresh_arrays() -> None:
    src = TestPatternSource(width=32, height=32)
    src.prep()
    first = frame_of(src.step())
    kept = first.copy()
    src.step()
    assert np.array_equal(first, kept)


def test_pattern_frames_limit_stops() -> None:
    src = TestPatternSource(width=32, height=24, frames=3)
    src.prep()
    chunks = produce(src, 3)
    assert [c.get("index")["value"] for c in chunks] == [0, 1, 2]
    for _ in range(2):  # a finished source says so, every time it is asked
        with pytest.raises(StopIteration):
            src.step()


def test_pattern_zero_frames_produces_nothing() -> None:
    src = TestPatternSource(frames=0)
    src.prep()
    with pytest.raises(StopIteration):
        src.step()


def test_pattern_tiny_size_works() -> None:
    src = TestPatternSource(width=3, height=2)
    src.prep()
    for _ in range(5):
        assert frame_of(src.step()).shape == (2, 3, 3)


def test_pattern_is_picklable_before_prep_and_keeps_config() -> None:
    src = TestPatternSource(name="p1", width=40, height=30, rate_hz=10, frames=2)
    clone = pickle.loads(cloudpickle.dumps(src))
    assert (clone.name, clone.width, clone.height, clone.rate_hz, clone.frames) == ("p1", 40, 30, 10.0, 2)
    clone.prep()
    assert frame_of(clone.step()).shape == (30, 40, 3)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"width": 0}, "width"),
        ({"height": -5}, "height"),
        ({"quality": 0}, "quality"),
        ({"quality": 101}, "quality"),
        ({"frames": -1}, "frames"),
    ],
)
def test_pattern_rejects_bad_config(kwargs: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        TestPatternSource(**kwargs)


def test_pattern_step_before_prep_says_so() -> None:
    with pytest.raises(RuntimeError, match="prep"):
        TestPatternSource().step()


# -- WebcamSource -------------------------------------------------------------------------------------


def test_webcam_impossible_device_points_to_test_pattern() -> None:
    cam = WebcamSource(device=99)
    with pytest.raises(RuntimeError) as info:
        cam.prep()
    message = str(info.value)
    assert "99" in message
    assert "TestPatternSource" in message
    cam.teardown()  # safe after a failed prep


def test_webcam_config_is_plain_and_validated() -> None:
    cam = pickle.loads(cloudpickle.dumps(WebcamSource(device=2, width=320, height=240, rate_hz=15)))
    assert (cam.device, cam.width, cam.height, cam.rate_hz) == (2, 320, 240, 15.0)
    with pytest.raises(ValueError, match="width"):
        WebcamSource(width=0)
    with pytest.raises(TypeError, match="device"):
        WebcamSource(device=1.5)  # type: ignore[arg-type]


# -- VideoFileSource ----------------------------------------------------------------------------------


def write_video(path: Path, n: int, width: int = 64, height: int = 48) -> list[np.ndarray]:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 25.0, (width, height))
    assert writer.isOpened()
    frames = []
    for i in range(n):
        img = np.full((height, width, 3), 20 * i, dtype=np.uint8)
        img[:, : 4 * (i + 1)] = (0, 0, 255)
        writer.write(img)
        frames.append(img)
    writer.release()
    return frames


def test_video_reads_back_all_frames_then_none(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    written = write_video(path, 5)
    src = VideoFileSource(path=path)
    assert src.rate_hz is None
    src.prep()
    chunks = produce(src, 5)
    assert [c.get("index")["value"] for c in chunks] == [0, 1, 2, 3, 4]
    for chunk, expected in zip(chunks, written, strict=True):
        img = frame_of(chunk)
        assert img.shape == (48, 64, 3) and img.dtype == np.uint8
        # MJPG is lossy: compare loosely
        assert np.abs(img.astype(int) - expected.astype(int)).mean() < 8
    for _ in range(2):
        with pytest.raises(StopIteration):
            src.step()
    src.teardown()


def test_video_loops(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    write_video(path, 3)
    src = VideoFileSource(path=str(path), loop=True)
    src.prep()
    chunks = produce(src, 7)
    src.teardown()
    assert [c.get("index")["value"] for c in chunks] == list(range(7))
    assert np.array_equal(frame_of(chunks[0]), frame_of(chunks[3]))
    assert np.array_equal(frame_of(chunks[1]), frame_of(chunks[4]))


def test_video_missing_path_is_clear(tmp_path: Path) -> None:
    missing = tmp_path / "nope.avi"
    src = VideoFileSource(path=missing)
    with pytest.raises(FileNotFoundError) as info:
        src.prep()
    assert str(missing) in str(info.value)


def test_video_undecodable_file_is_value_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"this is not a video" * 100)
    with pytest.raises(ValueError, match="cannot decode"):
        VideoFileSource(path=junk).prep()


def test_video_path_is_required_and_checked() -> None:
    with pytest.raises(TypeError):
        VideoFileSource()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="path"):
        VideoFileSource(path=42)  # type: ignore[arg-type]


def test_video_fps_reads_the_declared_rate(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    write_video(path, 2)
    assert video_fps(path) == pytest.approx(25.0)
    with pytest.raises(FileNotFoundError):
        video_fps(tmp_path / "missing.avi")


# -- steps --------------------------------------------------------------------------------------------


def test_edge_detect_is_binary_hxw_and_keeps_other_records() -> None:
    chunk = pattern_chunk(160, 120, index=4)
    chunk.add("meta", {"camera": "a"})
    out = EdgeDetect().step({"pattern": chunk})
    img = frame_of(out)
    assert img.shape == (120, 160)
    assert img.dtype == np.uint8
    assert set(np.unique(img)) == {0, 255}
    assert out.get("index")["value"] == 4
    assert out.get("meta")["value"] == {"camera": "a"}
    assert out.get("frame")["quality"] == 80
    assert out.created == chunk.created


def test_edge_detect_thresholds_matter() -> None:
    chunk = pattern_chunk(160, 120)
    loose = np.count_nonzero(frame_of(EdgeDetect(low=1, high=2).step({"p": chunk})))
    strict = np.count_nonzero(frame_of(EdgeDetect(low=500, high=1000).step({"p": chunk})))
    assert loose > strict
    with pytest.raises(ValueError, match="low"):
        EdgeDetect(low=300, high=100)


def test_grayscale() -> None:
    chunk = pattern_chunk()
    img = frame_of(Grayscale().step({"p": chunk}))
    assert img.shape == (48, 64) and img.dtype == np.uint8
    expected = cv2.cvtColor(frame_of(chunk), cv2.COLOR_BGR2GRAY)
    assert np.array_equal(img, expected)
    # already grey passes through unchanged
    assert np.array_equal(frame_of(Grayscale().step({"g": Grayscale().step({"p": chunk})})), expected)


def test_resize() -> None:
    chunk = pattern_chunk(64, 48)
    assert frame_of(Resize(width=32, height=20).step({"p": chunk})).shape == (20, 32, 3)
    assert frame_of(Resize(width=100, height=90).step({"p": chunk})).shape == (90, 100, 3)
    with pytest.raises(ValueError, match="width"):
        Resize(width=0, height=10)


def test_gaussian_blur_smooths() -> None:
    chunk = pattern_chunk(160, 120)
    src = frame_of(chunk)
    out = frame_of(GaussianBlur(ksize=9).step({"p": chunk}))
    assert out.shape == src.shape and out.dtype == np.uint8
    assert not np.array_equal(out, src)
    # blur lowers the total variation along rows
    assert np.abs(np.diff(out.astype(int), axis=1)).sum() < np.abs(np.diff(src.astype(int), axis=1)).sum()
    with pytest.raises(ValueError, match="odd"):
        GaussianBlur(ksize=4)


def test_steps_use_first_upstream_with_a_frame() -> None:
    other = DataChunk()
    other.add("temperature", 21.5)
    chunk = pattern_chunk()
    out = Grayscale().step({"sensor": other, "camera": chunk})
    assert frame_of(out).shape == (48, 64)
    assert "temperature" not in out


@pytest.mark.parametrize("node", [EdgeDetect(), Grayscale(), Resize(width=8, height=8), GaussianBlur()])
def test_steps_without_frame_raise_clear_key_error(node) -> None:
    other = DataChunk()
    other.add("temperature", 21.5)
    with pytest.raises(KeyError) as info:
        node.step({"sensor": other})
    message = str(info.value)
    assert "'frame'" in message and "'sensor'" in message and "'temperature'" in message


def test_steps_do_not_modify_input() -> None:
    chunk = pattern_chunk()
    before = frame_of(chunk).copy()
    for node in (EdgeDetect(), Grayscale(), Resize(width=10, height=10), GaussianBlur()):
        node.step({"p": chunk})
    assert np.array_equal(frame_of(chunk), before)


# -- sinks --------------------------------------------------------------------------------------------


def test_stats_sink_counts() -> None:
    src = TestPatternSource(width=32, height=24, frames=4)
    sink = StatsSink()
    src.prep()
    sink.prep()
    for _ in range(4):
        chunk = src.step()
        sink.step({"pattern": chunk})
    sink.step({"pattern": None})  # type: ignore[dict-item]  # None input: ignored
    summary = sink.summary()
    sink.teardown()
    assert summary["items"] == 4
    assert summary["last_index"] == 3
    assert summary["records"]["frame"] == {"count": 4, "bytes": 4 * 32 * 24 * 3, "content_type": "image"}
    assert summary["records"]["index"]["count"] == 4


def test_stats_sink_does_not_recount_a_repeated_chunk() -> None:
    a, b = pattern_chunk(), DataChunk()
    b.add("blob", b"12345")
    sink = StatsSink()
    sink.prep()
    sink.step({"a": a})
    sink.step({"a": a, "b": b})  # 'a' is the same object as before
    summary = sink.summary()
    assert summary["items"] == 2
    assert summary["records"]["blob"] == {"count": 1, "bytes": 5, "content_type": "other"}
    sink.prep()
    assert sink.summary() == {"items": 0, "last_index": None, "records": {}}


def test_null_sink() -> None:
    sink = NullSink()
    sink.prep()
    sink.step({"p": pattern_chunk()})
    sink.teardown()
