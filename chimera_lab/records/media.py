"""Crash-safe media files: an MJPEG AVI writer and a WAV writer that stay readable up to their last flush.

cv2.VideoWriter keeps sizes and index in memory and leaves an empty file when its process is SIGKILLed, so
node processes record with these writers instead. Both write a RIFF header with placeholder sizes, append
their data, and on every ``flush()`` first hand the data to the OS, then rewrite the fixed-size header in
place (sizes, counts, frame rate). After a flush the file is a complete, valid AVI / WAV for any reader.
Data written after the last flush of a killed process is still in the file; the tolerant readers here
(`iter_avi_jpegs`, `read_wav`) recover every whole frame of it and stop cleanly at a cut-off one.

RIFF sizes are 32-bit, so one file holds at most 4 GiB; a write that would go past that raises
OverflowError, and the caller starts a new file (`nbytes` tells how big the current one is).
"""

from __future__ import annotations

import math
import os
import struct
import threading
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, TypeVar

import cv2
import numpy as np
from numpy.typing import DTypeLike

__all__ = [
    "DEFAULT_AVI_FPS",
    "AviMjpegWriter",
    "WavWriter",
    "count_avi_frames",
    "encode_jpeg",
    "iter_avi_jpegs",
    "read_avi_frames",
    "read_wav",
]

_W = TypeVar("_W", bound="_RiffWriter")

# Frame rate an AVI header states while its writer has not been told one (neither at construction nor at a
# flush or close); a reader needs some rate, and the frames themselves are unaffected.
DEFAULT_AVI_FPS = 30.0

_U32_MAX = 0xFFFFFFFF
_MAX_FILE_BYTES = _U32_MAX  # RIFF sizes are 32-bit: no RIFF file can be larger
_U32 = struct.Struct("<I")

# AVI constants (Microsoft AVI RIFF File Reference)
_AVIF_HASINDEX = 0x10
_AVIIF_KEYFRAME = 0x10
_AVI_HEADER_BYTES = 224  # RIFF + hdrl list (avih, strl(strh, strf)) + 'LIST' <size> 'movi'
_MOVI_FOURCC_AT = 220  # file offset of the 'movi' fourcc; idx1 offsets count from here
_IDX1_ENTRY = struct.Struct("<4sIII")  # ckid, dwFlags, dwChunkOffset, dwChunkLength
_STREAM_CHUNK_TWOCCS = (b"dc", b"db", b"wb", b"pc", b"tx")

# WAV format tags and the sample types this module writes and reads
_WAVE_FORMAT_PCM = 1
_WAVE_FORMAT_IEEE_FLOAT = 3
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
_WAV_WRITE_TYPES = {("i", 2): _WAVE_FORMAT_PCM, ("i", 4): _WAVE_FORMAT_PCM, ("f", 4): _WAVE_FORMAT_IEEE_FLOAT}
_WAV_READ_TYPES: dict[tuple[int, int], np.dtype] = {
    (_WAVE_FORMAT_PCM, 16): np.dtype("<i2"),
    (_WAVE_FORMAT_PCM, 32): np.dtype("<i4"),
    (_WAVE_FORMAT_IEEE_FLOAT, 32): np.dtype("<f4"),
    (_WAVE_FORMAT_IEEE_FLOAT, 64): np.dtype("<f8"),
}


def _chunk(fourcc: bytes, body: bytes) -> bytes:
    pad = b"\0" if len(body) & 1 else b""
    return fourcc + _U32.pack(len(body)) + body + pad


def _is_fourcc(code: bytes) -> bool:
    return len(code) == 4 and all(0x20 <= c <= 0x7E for c in code)


def _check_int(owner: str, what: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise ValueError(f"{owner}: {what} must be an int from {low} to {high}, got {value!r}")
    return int(value)


def _check_fps(owner: str, fps: object) -> float:
    try:
        value = float(fps)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(fps, bool) or not math.isfinite(value) or not 0.001 <= value <= 1_000_000:
        raise ValueError(f"{owner}: fps must be a number from 0.001 to 1e6 frames per second, got {fps!r}")
    return value


class _RiffWriter:
    """A file with a fixed-size header that `_flush` rewrites in place after handing the data to the OS."""

    _header_bytes = 0

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()
        self._failed: BaseException | None = None
        self._file: BinaryIO = open(self._path, "wb")  # closed by close()
        self._end = 0  # bytes in the file so far
        try:
            header = self._header()
            assert len(header) == self._header_bytes
            self._append([header], 0)
            self._flush(False)
        except BaseException:
            self._file.close()
            raise

    def _header(self) -> bytes:
        raise NotImplementedError

    @property
    def path(self) -> Path:
        """Where the file is."""
        return self._path

    @property
    def closed(self) -> bool:
        """Whether `close()` was called (or the file was closed after a failure)."""
        return self._file.closed

    @property
    def nbytes(self) -> int:
        """How many bytes the file has, counting what is not flushed yet."""
        return self._end

    def _check_open(self) -> None:
        if self._file.closed:
            raise ValueError(f"{type(self).__name__} for {self._path} is closed; open a new writer to record more")
        if self._failed is not None:
            raise RuntimeError(
                f"{type(self).__name__} for {self._path} failed earlier ({self._failed!r}); the file is readable "
                "up to its last successful flush. Close this writer and open a new file") from self._failed

    def _append(self, parts: Sequence[bytes | bytearray | memoryview], reserve: int) -> None:
        """Append `parts`, keeping `reserve` bytes of room below the RIFF limit for what close() adds."""
        n = sum(len(p) for p in parts)
        if self._end + n + reserve > _MAX_FILE_BYTES:
            raise OverflowError(
                f"{self._path} would grow past {_MAX_FILE_BYTES} bytes, the limit of a RIFF file (32-bit sizes); "
                f"close this writer and continue in a new file (check `nbytes`, now {self._end})")
        try:
            for p in parts:
                self._file.write(p)
        except BaseException as exc:  # a partial append: the file is valid up to the last flush only
            self._failed = exc
            raise
        self._end += n

    def _flush(self, fsync: bool) -> None:
        f = self._file
        try:
            f.flush()  # data first: the header never counts bytes the OS does not have
            if fsync:
                os.fsync(f.fileno())
            f.seek(0)
            f.write(self._header())
            f.seek(self._end)  # also writes the header through to the OS
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        except BaseException as exc:
            self._failed = exc
            raise

    def _close(self, fsync: bool) -> None:
        """Flush and close; after a failure just close (the file stays as it was at its last flush)."""
        try:
            if self._failed is None:
                self._flush(fsync)
        finally:
            self._file.close()

    def __enter__(self: _W) -> _W:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Finish and close the file (idempotent)."""
        with self._lock:
            if not self._file.closed:
                self._close(False)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<{type(self).__name__} {str(self._path)!r} {state}>"


# ----------------------------------------------------------------------------------------------------- AVI


def encode_jpeg(img: np.ndarray, quality: int = 90) -> bytes:
    """Encode a uint8 HxW (grey) or HxWx3 (BGR) image as JPEG bytes."""
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or not (
            img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)) or 0 in img.shape:
        what = f"{img.dtype} array of shape {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
        raise ValueError(f"encode_jpeg: expected a non-empty uint8 image of shape (H, W) or (H, W, 3), got {what}; "
                         "convert it first (e.g. cv2.convertScaleAbs, cv2.cvtColor, or img[..., 0] for (H, W, 1))")
    quality = _check_int("encode_jpeg", "quality", quality, 0, 100)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"encode_jpeg: OpenCV could not encode the {img.shape} image as JPEG")
    return buf.tobytes()


class AviMjpegWriter(_RiffWriter):
    """An AVI file with one MJPEG video stream that is a valid (index-less) AVI after every `flush()`.

    `write_jpeg` appends a '00dc' chunk; `flush` hands it to the OS and patches sizes, frame count and
    (if known) frame rate in the header; `close` adds the 'idx1' index. Not decoded: the JPEGs are trusted
    to be `width` x `height`. Thread-safe: one thread may write while another flushes.
    """

    _header_bytes = _AVI_HEADER_BYTES

    def __init__(self, path: str | Path, width: int, height: int, fps: float | None = None) -> None:
        owner = f"AviMjpegWriter({str(path)!r})"
        self._width = _check_int(owner, "width", width, 1, 65535)
        self._height = _check_int(owner, "height", height, 1, 65535)
        self._fps = None if fps is None else _check_fps(owner, fps)
        self._offsets = array("I")  # chunk offsets relative to the 'movi' fourcc, as idx1 wants them
        self._sizes = array("I")  # payload sizes
        self._max_size = 0
        self._movi_end = _AVI_HEADER_BYTES
        self._indexed = False
        super().__init__(path)

    @property
    def frames(self) -> int:
        """How many frames were written (flushed or not)."""
        return len(self._sizes)

    @property
    def width(self) -> int:
        """Frame width in pixels, as the header states it."""
        return self._width

    @property
    def height(self) -> int:
        """Frame height in pixels, as the header states it."""
        return self._height

    @property
    def fps(self) -> float | None:
        """The frame rate last given (None: the header states DEFAULT_AVI_FPS)."""
        return self._fps

    def _header(self) -> bytes:
        frames = len(self._sizes)
        fps = self._fps if self._fps is not None else DEFAULT_AVI_FPS
        scale, rate = 1000, round(fps * 1000)
        buffer_size = self._max_size + (self._max_size & 1)
        max_bytes_per_s = min(_U32_MAX, math.ceil((buffer_size + 8) * fps)) if frames else 0
        w, h = self._width, self._height
        avih = struct.pack(
            "<14I", round(1e6 / fps), max_bytes_per_s, 0, _AVIF_HASINDEX if self._indexed else 0, frames, 0, 1,
            buffer_size, w, h, 0, 0, 0, 0)
        strh = struct.pack(
            "<4s4sIHHIIIIIIiI4H", b"vids", b"MJPG", 0, 0, 0, 0, scale, rate, 0, frames, buffer_size, -1, 0,
            0, 0, w, h)
        image_bytes = w * h * 3
        strf = struct.pack(
            "<IiiHH4sIiiII", 40, w, h, 1, 24, b"MJPG", image_bytes if image_bytes <= _U32_MAX else 0, 0, 0, 0, 0)
        strl = b"strl" + _chunk(b"strh", strh) + _chunk(b"strf", strf)
        hdrl = b"hdrl" + _chunk(b"avih", avih) + b"LIST" + _U32.pack(len(strl)) + strl
        riff_size = max(self._end, _AVI_HEADER_BYTES) - 8
        movi_size = self._movi_end - _MOVI_FOURCC_AT
        return (b"RIFF" + _U32.pack(riff_size) + b"AVI " + b"LIST" + _U32.pack(len(hdrl)) + hdrl
                + b"LIST" + _U32.pack(movi_size) + b"movi")

    def write_jpeg(self, jpeg: bytes | bytearray | memoryview) -> int:
        """Append one JPEG as a '00dc' chunk (not flushed); return its frame index."""
        try:
            data = memoryview(jpeg).cast("B")
        except (TypeError, ValueError):
            raise TypeError(f"write_jpeg expects JPEG bytes (bytes, bytearray or a contiguous memoryview), got "
                            f"{type(jpeg).__name__}; encode images with encode_jpeg() first") from None
        if bytes(data[:2]) != b"\xff\xd8":
            raise ValueError(f"write_jpeg: the {len(data)} bytes given are not a JPEG (no FF D8 start marker); "
                             "encode images with encode_jpeg() first")
        size = len(data)
        with self._lock:
            self._check_open()
            offset = self._end - _MOVI_FOURCC_AT
            reserve = 8 + _IDX1_ENTRY.size * (len(self._sizes) + 1)  # room for close()'s idx1
            self._append([b"00dc" + _U32.pack(size), data, b"\0" if size & 1 else b""], reserve)
            self._movi_end = self._end
            self._offsets.append(offset)
            self._sizes.append(size)
            self._max_size = max(self._max_size, size)
            return len(self._sizes) - 1

    def flush(self, fps: float | None = None, *, fsync: bool = False) -> None:
        """Hand the frames to the OS and patch the header (sizes, count, and the frame rate if `fps` is given)."""
        with self._lock:
            self._check_open()
            if fps is not None:
                self._fps = _check_fps(f"AviMjpegWriter({str(self._path)!r}).flush", fps)
            self._flush(fsync)

    def close(self, fps: float | None = None, *, fsync: bool = False) -> None:
        """Write the 'idx1' index, patch the header (frame rate too if `fps` is given) and close (idempotent)."""
        with self._lock:
            if self._file.closed:
                return
            try:
                if fps is not None:
                    self._fps = _check_fps(f"AviMjpegWriter({str(self._path)!r}).close", fps)
                if self._failed is None:
                    index = bytearray(_IDX1_ENTRY.size * len(self._sizes))
                    for i, (offset, size) in enumerate(zip(self._offsets, self._sizes, strict=True)):
                        _IDX1_ENTRY.pack_into(index, i * _IDX1_ENTRY.size, b"00dc", _AVIIF_KEYFRAME, offset, size)
                    self._append([b"idx1" + _U32.pack(len(index)), index], 0)
                    self._indexed = True
            finally:
                self._close(fsync)


def _avi_chunks(f: BinaryIO, name: str) -> Iterator[tuple[int, int]]:
    """(payload offset, size) of every complete '00dc' chunk, found by walking the chunks in file order.

    List sizes are not trusted (after a crash the 'movi' size is stale): 'movi', 'rec ' and OpenDML 'AVIX'
    lists are entered, every other chunk is skipped by its own size. Stops at the end of the file, at a chunk
    that does not fit in it, or at bytes that are not a chunk header.
    """
    file_size = os.fstat(f.fileno()).st_size
    head = f.read(12)
    if len(head) < 12 and b"RIFF".startswith(head[:4]):
        return  # cut short before the header was complete: no frames
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"AVI ":
        raise ValueError(f"{name} is not an AVI file (it does not start with a RIFF 'AVI ' header)")
    pos = 12
    while pos + 8 <= file_size:
        f.seek(pos)
        h = f.read(12)
        fourcc, size = h[:4], _U32.unpack_from(h, 4)[0]
        if not _is_fourcc(fourcc):
            return  # not a chunk: garbage after a crash
        if fourcc in (b"LIST", b"RIFF") and len(h) == 12 and h[8:12] in (b"movi", b"rec ", b"AVIX"):
            pos += 12  # enter the list
            continue
        end = pos + 8 + size
        if end > file_size:
            return  # cut off
        if fourcc == b"00dc":
            yield pos + 8, size
        pos = end + (size & 1)


def iter_avi_jpegs(path: str | Path) -> Iterator[bytes]:
    """Yield the JPEG payload of every complete '00dc' chunk of an AVI, even one whose writer was killed."""
    with open(path, "rb") as f:
        for offset, size in _avi_chunks(f, str(path)):
            f.seek(offset)
            data = f.read(size)
            if len(data) < size:
                return
            yield data


def count_avi_frames(path: str | Path) -> int:
    """How many complete '00dc' frames an AVI holds (without reading them)."""
    with open(path, "rb") as f:
        return sum(1 for _ in _avi_chunks(f, str(path)))


def read_avi_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Yield every complete frame of an MJPEG AVI, decoded: HxWx3 BGR, or HxW for greyscale JPEGs."""
    for i, jpeg in enumerate(iter_avi_jpegs(path)):
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise ValueError(f"{path}: frame {i} ({len(jpeg)} bytes) is not a decodable JPEG; "
                             "iter_avi_jpegs() gives the raw payloads")
        yield img


# ----------------------------------------------------------------------------------------------------- WAV


class WavWriter(_RiffWriter):
    """A WAV file (PCM int16/int32 or IEEE float32) that is valid after every `flush()`.

    `write` takes arrays of the writer's dtype only, shaped (n,) for one channel or (n, channels); the one
    conversion done is float64 -> float32 for a float32 writer (values outside float32's range become inf).
    Thread-safe: one thread may write while another flushes.
    """

    def __init__(self, path: str | Path, rate: int, channels: int, dtype: DTypeLike = "int16") -> None:
        owner = f"WavWriter({str(path)!r})"
        self._rate = _check_int(owner, "rate", rate, 1, _U32_MAX)
        self._channels = _check_int(owner, "channels", channels, 1, 65535)
        try:
            dt = np.dtype(dtype)
        except TypeError:
            dt = None
        if dt is None or (dt.kind, dt.itemsize) not in _WAV_WRITE_TYPES:
            raise ValueError(f"{owner}: dtype must be int16, int32 or float32, got {dtype!r}")
        self._dtype = dt.newbyteorder("=")  # what callers pass
        self._file_dtype = dt.newbyteorder("<")  # WAV is little-endian
        self._tag = _WAV_WRITE_TYPES[(dt.kind, dt.itemsize)]
        self._block = self._channels * dt.itemsize
        if self._block > 65535 or self._rate * self._block > _U32_MAX:
            raise ValueError(f"{owner}: {channels} channels of {self._dtype} at {rate} Hz do not fit a WAV header")
        self._header_bytes = 44 if self._tag == _WAVE_FORMAT_PCM else 58
        self._frames = 0
        super().__init__(path)

    @property
    def frames(self) -> int:
        """How many frames (samples per channel) were written, flushed or not."""
        return self._frames

    @property
    def rate(self) -> int:
        """Sample rate in Hz."""
        return self._rate

    @property
    def channels(self) -> int:
        """Number of channels."""
        return self._channels

    @property
    def dtype(self) -> np.dtype:
        """The sample type this writer takes and stores."""
        return self._dtype

    def _header(self) -> bytes:
        bits = self._dtype.itemsize * 8
        fmt = struct.pack("<HHIIHH", self._tag, self._channels, self._rate, self._rate * self._block, self._block,
                          bits)
        data_size = max(self._end, self._header_bytes) - self._header_bytes
        if self._tag == _WAVE_FORMAT_PCM:
            chunks = _chunk(b"fmt ", fmt)
        else:  # non-PCM: fmt has cbSize, and a 'fact' chunk gives the frame count
            chunks = _chunk(b"fmt ", fmt + b"\0\0") + _chunk(b"fact", _U32.pack(self._frames))
        body = b"WAVE" + chunks + b"data" + _U32.pack(data_size)
        return b"RIFF" + _U32.pack(len(body) + data_size) + body

    def write(self, samples: np.ndarray) -> int:
        """Append samples shaped (n,) (mono) or (n, channels) of the writer's dtype; return the frames so far."""
        if not isinstance(samples, np.ndarray):
            raise TypeError(f"WavWriter.write expects a numpy array of {self._dtype}, got {type(samples).__name__}")
        dt = samples.dtype
        if (dt.kind, dt.itemsize) == (self._dtype.kind, self._dtype.itemsize):
            pass  # same type, any byte order
        elif self._dtype.kind == "f" and (dt.kind, dt.itemsize) == ("f", 8):
            pass  # float64 into a float32 file: cast below (documented)
        else:
            raise TypeError(f"WavWriter({str(self._path)!r}) writes {self._dtype} samples, got {dt}; convert them "
                            f"yourself (scale/clip, then .astype(np.{self._dtype.name})) or open the writer with "
                            f"dtype={dt.name!r} if that is supported")
        if samples.ndim == 1:
            if self._channels != 1:
                raise ValueError(f"WavWriter({str(self._path)!r}) has {self._channels} channels but got a 1-D array "
                                 f"(1 channel); pass shape (n, {self._channels})")
        elif samples.ndim == 2:
            if samples.shape[1] != self._channels:
                raise ValueError(f"WavWriter({str(self._path)!r}) has {self._channels} channels but the samples have "
                                 f"{samples.shape[1]} (shape {samples.shape}); pass shape (n, {self._channels})")
        else:
            raise ValueError(f"WavWriter.write expects shape (n,) or (n, channels), got shape {samples.shape}")
        data = np.ascontiguousarray(samples, dtype=self._file_dtype)
        n = int(samples.shape[0])
        with self._lock:
            self._check_open()
            self._append([data.data.cast("B")], 0)
            self._frames += n
            return self._frames

    def flush(self, fsync: bool = False) -> None:
        """Hand the samples to the OS and patch the header's sizes."""
        with self._lock:
            self._check_open()
            self._flush(fsync)

    def close(self, *, fsync: bool = False) -> None:
        """Patch the header and close the file (idempotent)."""
        with self._lock:
            if not self._file.closed:
                self._close(fsync)


def _read_at(f: BinaryIO, pos: int, n: int) -> bytes:
    f.seek(pos)
    return f.read(n)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a WAV file as (samples shaped (n, channels), rate); whole frames present count, whatever sizes say.

    Reads PCM int16/int32 and IEEE float32/float64 (also in WAVE_FORMAT_EXTENSIBLE). A 'data' size that runs
    past the end of the file, or that stops short of it with no chunk following (the header of a killed writer
    was patched before its last samples), is replaced by "up to the end of the file".
    """
    with open(path, "rb") as f:
        file_size = os.fstat(f.fileno()).st_size
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise ValueError(f"{path} is not a WAV file (it does not start with a RIFF 'WAVE' header)")
        pos = 12
        dtype: np.dtype | None = None
        channels = rate = 0
        while pos + 8 <= file_size:
            fourcc, size = _read_at(f, pos, 4), _U32.unpack(f.read(4))[0]
            body = pos + 8
            if fourcc == b"fmt ":
                fmt = f.read(min(size, 40))
                if len(fmt) < 16:
                    raise ValueError(f"{path}: its 'fmt ' chunk is cut short ({len(fmt)} bytes)")
                tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", fmt)
                if tag == _WAVE_FORMAT_EXTENSIBLE and len(fmt) >= 26:
                    tag = struct.unpack_from("<H", fmt, 24)[0]  # first two bytes of the SubFormat GUID
                dtype = _WAV_READ_TYPES.get((tag, bits))
                if dtype is None or channels < 1:
                    raise ValueError(f"{path}: format tag {tag} with {bits}-bit samples and {channels} channels is "
                                     "not supported; read_wav reads PCM int16/int32 and float32/float64")
            elif fourcc == b"data":
                if dtype is None:
                    raise ValueError(f"{path}: its 'data' chunk comes before any 'fmt ' chunk")
                end = body + size
                if end > file_size or (end < file_size and not _chunk_follows(f, end + (size & 1), file_size)):
                    end = file_size
                block = channels * dtype.itemsize
                n = (end - body) // block
                buf = bytearray(n * block)
                f.seek(body)
                got = f.readinto(buf)
                n = got // block
                samples = np.frombuffer(buf, dtype=dtype, count=n * channels).reshape(n, channels)
                return samples.astype(dtype.newbyteorder("="), copy=False), int(rate)
            elif not _is_fourcc(fourcc):
                break
            pos = body + size + (size & 1)
        what = "'fmt ' and 'data' chunks" if dtype is None else "'data' chunk"
        raise ValueError(f"{path}: no {what} found; the file was cut short or is not a sound file")


def _chunk_follows(f: BinaryIO, pos: int, file_size: int) -> bool:
    """Whether a plausible chunk header (printable fourcc, size within the file) starts at `pos`."""
    h = _read_at(f, pos, 8)
    return len(h) == 8 and _is_fourcc(h[:4]) and pos + 8 + _U32.unpack_from(h, 4)[0] <= file_size
