"""Crash-safe media writers: MJPEG AVI and WAV round trips, files of SIGKILLed writers, truncated files, errors."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import wave
from pathlib import Path

import cv2
import numpy as np
import pytest

from chimera_lab.records.media import (
    DEFAULT_AVI_FPS,
    AviMjpegWriter,
    WavWriter,
    count_avi_frames,
    encode_jpeg,
    iter_avi_jpegs,
    read_avi_frames,
    read_wav,
)

REPO = Path(__file__).resolve().parents[1]
W, H = 64, 48


def frame(i: int, w: int = W, h: int = H) -> np.ndarray:
    """A distinct BGR test frame: blue = 5 * i, green a horizontal and red a vertical gradient."""
    img = np.empty((h, w, 3), np.uint8)
    img[..., 0] = 5 * i
    img[..., 1] = (np.arange(w) * 3)[None, :]
    img[..., 2] = (np.arange(h) * 4)[:, None]
    return img


# the same frames, for the killed subprocesses
FRAME_SRC = textwrap.dedent("""
    import numpy as np
    def frame(i, w={W}, h={H}):
        img = np.empty((h, w, 3), np.uint8)
        img[..., 0] = 5 * i
        img[..., 1] = (np.arange(w) * 3)[None, :]
        img[..., 2] = (np.arange(h) * 4)[:, None]
        return img
""").format(W=W, H=H)


def assert_close_to_frame(img: np.ndarray, i: int) -> None:
    """`img` is frame `i` after JPEG, and not one of its neighbours (which differ by 5 in blue)."""
    assert img.shape == (H, W, 3)
    diff = np.abs(img.astype(np.int16) - frame(i).astype(np.int16))
    assert diff.mean() < 2.0, f"frame {i}: mean abs difference {diff.mean():.2f}"
    assert abs(float(img[..., 0].mean()) - 5 * i) < 1.5, f"frame {i}: blue mean {img[..., 0].mean():.2f}"


def run_and_get_killed(code: str) -> None:
    """Run `code` in a fresh interpreter and check that it ended by SIGKILL (as it is meant to)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == -signal.SIGKILL, f"child exited with {out.returncode}: {out.stderr}"


def capture_frames(path: Path, backend: int = cv2.CAP_ANY) -> tuple[int, float]:
    """(frames cv2.VideoCapture reads, the FPS it reports)."""
    cap = cv2.VideoCapture(str(path), backend)
    try:
        if not cap.isOpened():
            return 0, 0.0
        n = 0
        while cap.read()[0]:
            n += 1
        return n, cap.get(cv2.CAP_PROP_FPS)
    finally:
        cap.release()


def riff_chunks(data: bytes, start: int, end: int) -> dict[bytes, tuple[int, int]]:
    """{fourcc (or list type): (offset of its body, declared size)} of the chunks in data[start:end]."""
    found = {}
    pos = start
    while pos + 8 <= end:
        fourcc, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if fourcc == b"LIST":
            found[data[pos + 8:pos + 12]] = (pos + 8, size)
        else:
            found[fourcc] = (pos + 8, size)
        pos += 8 + size + (size & 1)
    return found


def avi_header(path: Path) -> dict[str, int]:
    """The fields of our AVI header that flush/close patch."""
    data = path.read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"AVI "
    top = riff_chunks(data, 12, len(data))
    hdrl, _ = top[b"hdrl"]
    inner = riff_chunks(data, hdrl + 4, hdrl + 4 + 200)
    avih, _ = inner[b"avih"]
    strl, _ = inner[b"strl"]
    streams = riff_chunks(data, strl + 4, strl + 4 + 120)
    strh, strh_size = streams[b"strh"]
    strf, _ = streams[b"strf"]
    usec, _, _, flags, total = struct.unpack_from("<5I", data, avih)
    width, height = struct.unpack_from("<2I", data, avih + 32)
    fcc_type, handler = data[strh:strh + 4], data[strh + 4:strh + 8]
    scale, rate, _, length = struct.unpack_from("<4I", data, strh + 20)
    assert (fcc_type, handler, strh_size) == (b"vids", b"MJPG", 56)
    bi_size, bi_w, bi_h, _, bits, compression = struct.unpack_from("<IiiHH4s", data, strf)
    assert (bi_size, bi_w, bi_h, bits, compression) == (40, width, height, 24, b"MJPG")
    movi, movi_size = top[b"movi"]
    return {"riff_size": struct.unpack_from("<I", data, 4)[0], "file_size": len(data), "usec": usec,
            "flags": flags, "total": total, "width": width, "height": height, "scale": scale, "rate": rate,
            "length": length, "movi_at": movi, "movi_size": movi_size, "has_idx1": b"idx1" in top}


def write_avi(path: Path, n: int, fps: float | None = 25.0) -> list[bytes]:
    """Write frames 0..n-1 and close; return the JPEGs written."""
    jpegs = [encode_jpeg(frame(i)) for i in range(n)]
    with AviMjpegWriter(path, W, H, fps=fps) as w:
        for i, jpeg in enumerate(jpegs):
            assert w.write_jpeg(jpeg) == i
    return jpegs


# ----------------------------------------------------------------------------------------------------- AVI


def test_avi_round_trip_through_opencv_and_reader(tmp_path: Path) -> None:
    path = tmp_path / "v.avi"
    jpegs = write_avi(path, 40, fps=25)

    n, fps = capture_frames(path)
    assert n == 40
    assert fps == pytest.approx(25.0)
    n, fps = capture_frames(path, cv2.CAP_OPENCV_MJPEG)  # OpenCV's own AVI parser needs the idx1 index
    assert (n, fps) == (40, pytest.approx(25.0))

    assert list(iter_avi_jpegs(path)) == jpegs
    assert count_avi_frames(path) == 40
    images = list(read_avi_frames(path))
    assert len(images) == 40
    for i, img in enumerate(images):
        assert_close_to_frame(img, i)


def test_avi_header_fields_after_flush_and_close(tmp_path: Path) -> None:
    path = tmp_path / "v.avi"
    w = AviMjpegWriter(path, W, H, fps=25)
    assert (w.frames, w.path, w.closed) == (0, path, False)
    h = avi_header(path)  # valid right after construction: no frames yet
    assert (h["total"], h["length"], h["riff_size"]) == (0, 0, h["file_size"] - 8)

    for i in range(10):
        w.write_jpeg(encode_jpeg(frame(i)))
    w.flush()
    h = avi_header(path)
    assert (h["total"], h["length"], h["width"], h["height"]) == (10, 10, W, H)
    assert h["riff_size"] == h["file_size"] - 8
    assert h["movi_at"] + h["movi_size"] == h["file_size"]  # the movi list runs to the end of the file
    assert (h["scale"], h["rate"], h["usec"]) == (1000, 25000, 40000)
    assert not h["has_idx1"] and not h["flags"] & 0x10
    assert capture_frames(path) == (10, pytest.approx(25.0))  # an index-less AVI is a valid AVI

    w.close()
    w.close()  # idempotent
    assert w.closed and w.frames == 10
    h = avi_header(path)
    assert h["has_idx1"] and h["flags"] & 0x10  # AVIF_HASINDEX
    assert h["riff_size"] == h["file_size"] - 8 and h["total"] == 10

    data = path.read_bytes()
    idx1, idx1_size = riff_chunks(data, 12, len(data))[b"idx1"]
    assert idx1_size == 16 * 10
    movi_fourcc = h["movi_at"]
    for k in range(10):
        ckid, flags, offset, size = struct.unpack_from("<4sIII", data, idx1 + 16 * k)
        assert (ckid, flags) == (b"00dc", 0x10)  # AVIIF_KEYFRAME
        at = movi_fourcc + offset  # offsets count from the 'movi' fourcc
        assert data[at:at + 4] == b"00dc" and struct.unpack_from("<I", data, at + 4)[0] == size
        assert cv2.imdecode(np.frombuffer(data[at + 8:at + 8 + size], np.uint8), cv2.IMREAD_COLOR) is not None


def test_avi_fps_given_at_close(tmp_path: Path) -> None:
    path = tmp_path / "v.avi"
    w = AviMjpegWriter(path, W, H)  # rate not known yet
    for i in range(5):
        w.write_jpeg(encode_jpeg(frame(i)))
    w.flush()
    h = avi_header(path)
    assert h["rate"] / h["scale"] == pytest.approx(DEFAULT_AVI_FPS) and w.fps is None
    w.close(fps=12.5)
    h = avi_header(path)
    assert (h["scale"], h["rate"], h["usec"]) == (1000, 12500, 80000)
    assert capture_frames(path) == (5, pytest.approx(12.5))


def test_avi_fps_given_at_flush_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "v.avi"
    w = AviMjpegWriter(path, W, H)
    w.write_jpeg(encode_jpeg(frame(0)))
    w.flush(fps=29.97)
    assert avi_header(path)["rate"] == 29970
    w.write_jpeg(encode_jpeg(frame(1)))
    w.close()  # no fps: the one given at the flush stays
    h = avi_header(path)
    assert (h["rate"], h["total"], w.fps) == (29970, 2, 29.97)


def test_avi_odd_sized_jpegs_are_padded_and_read_back_exactly(tmp_path: Path) -> None:
    path = tmp_path / "v.avi"
    base = encode_jpeg(frame(3))
    jpegs = [base + b"\0" * k for k in range(6)]  # bytes after the end marker are ignored by decoders
    assert {len(j) % 2 for j in jpegs} == {0, 1}
    with AviMjpegWriter(path, W, H, fps=10) as w:
        for j in jpegs[:3]:
            w.write_jpeg(j)
        w.write_jpeg(bytearray(jpegs[3]))
        w.write_jpeg(memoryview(jpegs[4]))
        w.write_jpeg(np.frombuffer(jpegs[5], np.uint8).reshape(-1, 1).data)  # like cv2.imencode's buffer
    assert path.stat().st_size % 2 == 0
    assert list(iter_avi_jpegs(path)) == jpegs
    assert capture_frames(path)[0] == 6


def test_avi_sigkill_after_flush_keeps_the_flushed_frames(tmp_path: Path) -> None:
    path = tmp_path / "crashed.avi"
    code = FRAME_SRC + textwrap.dedent(f"""
        import os, signal
        from chimera_lab.records.media import AviMjpegWriter, encode_jpeg
        w = AviMjpegWriter({str(path)!r}, {W}, {H}, fps=25)
        for i in range(30):
            w.write_jpeg(encode_jpeg(frame(i)))
        w.flush()
        for i in range(30, 37):
            w.write_jpeg(encode_jpeg(frame(i)))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    run_and_get_killed(code)

    n = count_avi_frames(path)
    assert 30 <= n <= 37
    images = list(read_avi_frames(path))  # every yielded JPEG decodes
    assert len(images) == n
    for i, img in enumerate(images):
        assert_close_to_frame(img, i)
    h = avi_header(path)
    assert (h["total"], h["length"], h["rate"]) == (30, 30, 25000)  # as patched by the flush
    assert not h["has_idx1"]

    # OpenCV's default (FFmpeg) backend reads a never-closed file: the header is valid, the index optional.
    read, fps = capture_frames(path)
    assert read >= 30 and fps == pytest.approx(25.0)
    assert capture_frames(path, cv2.CAP_FFMPEG)[0] == read
    # (OpenCV's own CV_MJPEG parser refuses any AVI without idx1; nothing to assert about it.)


def test_avi_stale_header_with_more_chunks_after_it(tmp_path: Path) -> None:
    """After a crash the header counts fewer frames (and a shorter 'movi') than the file holds."""
    path = tmp_path / "v.avi"
    w = AviMjpegWriter(path, W, H, fps=25)
    for i in range(10):
        w.write_jpeg(encode_jpeg(frame(i)))
    w.flush()
    stale_header = path.read_bytes()[:224]
    for i in range(10, 15):
        w.write_jpeg(encode_jpeg(frame(i)))
    w.flush()
    body = path.read_bytes()[224:]
    w.close()
    crashed = tmp_path / "crashed.avi"
    crashed.write_bytes(stale_header + body)
    assert avi_header(crashed)["total"] == 10
    assert count_avi_frames(crashed) == 15
    assert [int(img[..., 0].mean() / 5 + 0.5) for img in read_avi_frames(crashed)] == list(range(15))


def test_avi_cut_at_any_byte_yields_only_complete_frames(tmp_path: Path) -> None:
    path = tmp_path / "v.avi"
    jpegs = write_avi(path, 12)
    data = path.read_bytes()
    # where each chunk starts and where its payload ends, by the sizes written
    starts, pos = [], 224
    for j in jpegs:
        starts.append(pos)
        pos += 8 + len(j) + len(j) % 2
    ends = [s + 8 + len(j) for s, j in zip(starts, jpegs, strict=True)]
    cuts = {0, 5, 12, 100, 223, 224, len(data) - 1, len(data) - 9}
    for s, e in zip(starts, ends, strict=True):
        cuts |= {s + 1, s + 4, s + 7, s + 8, (s + e) // 2, e - 1, e, e + 1}
    cut_file = tmp_path / "cut.avi"
    for cut in sorted(c for c in cuts if 0 <= c <= len(data)):
        cut_file.write_bytes(data[:cut])
        expected = sum(e <= cut for e in ends)
        got = list(iter_avi_jpegs(cut_file))
        assert got == jpegs[:expected], f"cut at byte {cut}"
        assert count_avi_frames(cut_file) == expected
        assert len(list(read_avi_frames(cut_file))) == expected


def test_avi_garbage_after_the_frames_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "v.avi"
    jpegs = write_avi(path, 3)
    data = path.read_bytes()
    idx1_at = data.rindex(b"idx1")
    path.write_bytes(data[:idx1_at] + b"\0" * 4096)  # e.g. a zero-filled tail after a power cut
    assert list(iter_avi_jpegs(path)) == jpegs


def test_reader_reads_opencv_written_mjpeg_avi(tmp_path: Path) -> None:
    path = tmp_path / "cv.avi"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, (W, H))
    assert vw.isOpened(), "opencv-python-headless writes MJPG AVI; this build cannot"
    for i in range(8):
        vw.write(frame(i))
    vw.release()
    images = list(read_avi_frames(path))
    assert len(images) == 8
    for i, img in enumerate(images):
        assert_close_to_frame(img, i)


def test_avi_concurrent_write_and_flush(tmp_path: Path) -> None:
    path = tmp_path / "v.avi"
    jpeg = encode_jpeg(frame(1))
    w = AviMjpegWriter(path, W, H, fps=30)
    done = threading.Event()

    def flusher() -> None:
        while not done.is_set():
            w.flush()

    t = threading.Thread(target=flusher)
    t.start()
    try:
        for _ in range(300):
            w.write_jpeg(jpeg)
    finally:
        done.set()
        t.join()
    w.close()
    assert count_avi_frames(path) == 300 and avi_header(path)["total"] == 300
    assert capture_frames(path, cv2.CAP_OPENCV_MJPEG)[0] == 300


def test_avi_writer_errors(tmp_path: Path) -> None:
    path = tmp_path / "v.avi"
    with pytest.raises(ValueError, match="width"):
        AviMjpegWriter(path, 0, H)
    with pytest.raises(ValueError, match="fps"):
        AviMjpegWriter(path, W, H, fps=0)
    w = AviMjpegWriter(path, W, H)
    with pytest.raises(ValueError, match="not a JPEG"):
        w.write_jpeg(b"\x89PNG....")
    with pytest.raises(ValueError, match="not a JPEG"):
        w.write_jpeg(b"")
    with pytest.raises(ValueError, match="encode_jpeg"):
        w.write_jpeg(frame(0).data)  # an image, not JPEG bytes
    with pytest.raises(TypeError, match="encode_jpeg"):
        w.write_jpeg("a.jpg")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fps"):
        w.flush(fps=float("nan"))
    w.close()
    with pytest.raises(ValueError, match="closed"):
        w.write_jpeg(encode_jpeg(frame(0)))
    with pytest.raises(ValueError, match="closed"):
        w.flush()
    assert count_avi_frames(path) == 0


def test_encode_jpeg_accepts_grey_and_bgr_only() -> None:
    grey = frame(2)[..., 1].copy()
    decoded = cv2.imdecode(np.frombuffer(encode_jpeg(grey), np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded is not None and decoded.shape == (H, W)
    small = encode_jpeg(frame(2), quality=10)
    assert len(small) < len(encode_jpeg(frame(2), quality=95))
    for bad in (frame(0).astype(np.float32), np.zeros((H, W, 4), np.uint8), np.zeros((H, W, 1), np.uint8),
                np.zeros((0, W, 3), np.uint8), np.zeros(5, np.uint8)):
        with pytest.raises(ValueError, match="uint8 image of shape"):
            encode_jpeg(bad)
    with pytest.raises(ValueError, match="quality"):
        encode_jpeg(frame(0), quality=101)


def test_avi_readers_on_other_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    assert count_avi_frames(empty) == 0  # killed before the header reached the disk
    wav = tmp_path / "a.wav"
    with WavWriter(wav, 8000, 1) as w:
        w.write(np.zeros(10, np.int16))
    with pytest.raises(ValueError, match="not an AVI"):
        count_avi_frames(wav)


# ----------------------------------------------------------------------------------------------------- WAV


def tone(n: int, channels: int, dtype: str) -> np.ndarray:
    """n frames of distinct, deterministic samples per channel."""
    t = np.arange(n)[:, None] + 1000 * np.arange(channels)[None, :]
    if dtype == "float32":
        return (0.5 * np.sin(t / 7.0)).astype(np.float32)
    return ((t * 37) % 30001 - 15000).astype(dtype)


def test_wav_int16_stereo_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    samples = tone(10000, 2, "int16")
    w = WavWriter(path, 48000, 2)
    assert (w.rate, w.channels, w.frames) == (48000, 2, 0)
    assert w.write(samples[:4000]) == 4000
    assert w.write(samples[4000:]) == 10000
    w.close()
    with wave.open(str(path)) as r:
        assert (r.getnchannels(), r.getsampwidth(), r.getframerate(), r.getnframes()) == (2, 2, 48000, 10000)
        from_wave = np.frombuffer(r.readframes(10000), "<i2").reshape(-1, 2)
    np.testing.assert_array_equal(from_wave, samples)
    got, rate = read_wav(path)
    assert rate == 48000 and got.dtype == np.int16 and got.shape == (10000, 2)
    np.testing.assert_array_equal(got, samples)


def test_wav_int32_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    samples = tone(500, 3, "int32") * 100000
    with WavWriter(path, 16000, 3, np.int32) as w:
        w.write(samples)
    with wave.open(str(path)) as r:
        assert (r.getnchannels(), r.getsampwidth(), r.getnframes()) == (3, 4, 500)
    got, rate = read_wav(path)
    assert rate == 16000 and got.dtype == np.int32
    np.testing.assert_array_equal(got, samples)


def test_wav_float32_mono_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    samples = tone(3000, 1, "float32")[:, 0]
    with WavWriter(path, 22050, 1, "float32") as w:
        w.write(samples[:1000])
        w.write(samples[1000:2000, None])  # (n, 1) works too
        assert w.write(samples[2000:].astype(np.float64)) == 3000  # float64 is cast to float32
    got, rate = read_wav(path)
    assert rate == 22050 and got.dtype == np.float32 and got.shape == (3000, 1)
    np.testing.assert_array_equal(got[:, 0], samples)
    data = path.read_bytes()
    assert struct.unpack_from("<H", data, 20)[0] == 3  # WAVE_FORMAT_IEEE_FLOAT
    assert b"fact" in data[:60]
    from scipy.io import wavfile  # a test dependency: an independent reader of our float WAV files
    rate2, other = wavfile.read(path)
    assert rate2 == 22050
    np.testing.assert_array_equal(other, samples)


def test_wav_sigkill_after_flush_keeps_the_flushed_frames(tmp_path: Path) -> None:
    path = tmp_path / "crashed.wav"
    code = textwrap.dedent(f"""
        import os, signal
        import numpy as np
        from chimera_lab.records.media import WavWriter
        def tone(n, channels):
            t = np.arange(n)[:, None] + 1000 * np.arange(channels)[None, :]
            return ((t * 37) % 30001 - 15000).astype("int16")
        s = tone(38400, 2)
        w = WavWriter({str(path)!r}, 48000, 2)
        for k in range(5):
            w.write(s[4800 * k:4800 * (k + 1)])
        w.flush()
        for k in range(5, 8):
            w.write(s[4800 * k:4800 * (k + 1)])
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    run_and_get_killed(code)
    flushed = 5 * 4800
    expected = tone(38400, 2, "int16")

    got, rate = read_wav(path)
    assert rate == 48000 and flushed <= len(got) <= 38400
    np.testing.assert_array_equal(got, expected[:len(got)])  # all of it, past the patched size too
    with wave.open(str(path)) as r:
        assert r.getnframes() >= flushed  # sizes were patched at the flush
        np.testing.assert_array_equal(np.frombuffer(r.readframes(flushed), "<i2").reshape(-1, 2),
                                      expected[:flushed])


def test_read_wav_tolerates_wrong_sizes(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    samples = tone(1000, 2, "int16")
    with WavWriter(path, 8000, 2) as w:
        w.write(samples)
    data = path.read_bytes()
    assert data[36:40] == b"data"
    bad = tmp_path / "bad.wav"

    bad.write_bytes(data[:4] + b"\xff" * 4 + data[8:40] + b"\xff" * 4 + data[44:])  # sizes too big
    np.testing.assert_array_equal(read_wav(bad)[0], samples)
    bad.write_bytes(data[:40] + struct.pack("<I", 400) + data[44:])  # stale size, nothing after the samples
    np.testing.assert_array_equal(read_wav(bad)[0], samples)
    bad.write_bytes(data[:-3])  # cut inside the last frame
    np.testing.assert_array_equal(read_wav(bad)[0], samples[:-1])
    bad.write_bytes(data[:46])  # cut inside the first frame
    assert read_wav(bad)[0].shape == (0, 2)

    trailer = b"LIST" + struct.pack("<I", 10) + b"INFOabcdef"  # a real chunk after 'data' is respected
    bad.write_bytes(data + trailer)
    np.testing.assert_array_equal(read_wav(bad)[0], samples)

    bad.write_bytes(b"RIFF\0\0\0\0AVI ")
    with pytest.raises(ValueError, match="not a WAV"):
        read_wav(bad)
    bad.write_bytes(data[:30])
    with pytest.raises(ValueError, match="'fmt ' chunk is cut short"):
        read_wav(bad)
    bad.write_bytes(data[:12])
    with pytest.raises(ValueError, match="no 'fmt ' and 'data' chunks"):
        read_wav(bad)
    bad.write_bytes(data[:36])
    with pytest.raises(ValueError, match="no 'data' chunk"):
        read_wav(bad)


def test_wav_writer_errors(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    with pytest.raises(ValueError, match="int16, int32 or float32"):
        WavWriter(path, 8000, 1, "float64")
    with pytest.raises(ValueError, match="channels"):
        WavWriter(path, 8000, 0)
    w = WavWriter(path, 8000, 2)
    with pytest.raises(TypeError, match="writes int16 samples, got int64"):
        w.write(np.zeros((4, 2), np.int64))
    with pytest.raises(TypeError, match="writes int16 samples, got float32"):
        w.write(np.zeros((4, 2), np.float32))
    with pytest.raises(TypeError, match="numpy array"):
        w.write([[0, 0]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="has 2 channels but the samples have 3"):
        w.write(np.zeros((4, 3), np.int16))
    with pytest.raises(ValueError, match="has 2 channels but got a 1-D array"):
        w.write(np.zeros(4, np.int16))
    with pytest.raises(ValueError, match="shape"):
        w.write(np.zeros((4, 2, 1), np.int16))
    assert w.frames == 0
    assert w.write(np.zeros((4, 2), ">i2")) == 4  # byte order is not a conversion
    w.close()
    with pytest.raises(ValueError, match="closed"):
        w.write(np.zeros((4, 2), np.int16))
    assert read_wav(path)[0].shape == (4, 2)

    f32 = WavWriter(tmp_path / "f.wav", 8000, 1, "float32")
    with pytest.raises(TypeError, match="writes float32 samples, got int16"):
        f32.write(np.zeros(4, np.int16))
    f32.close()
