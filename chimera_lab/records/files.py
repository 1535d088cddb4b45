"""A worker's recorded files: listing them with checksums, reading chunks, forgetting collected ones.

Functions here take the worker's data folder and a request, and return plain data for the reply.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path
from typing import Any

from .recorder import MANIFEST

KIND_BY_EXT = {".avi": "video", ".wav": "audio", ".csv": "tabular", ".jsonl": "json", ".txt": "text"}


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    """SHA-256 of a file, in hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def session_root(data_dir: Path, session: str) -> Path:
    """The folder of one session in a worker's data folder (refusing names that would leave it)."""
    if not session or "/" in session or "\\" in session or session in (".", ".."):
        raise ValueError(f"invalid session name {session!r}")
    return data_dir / session


def safe_path(root: Path, rel: str) -> Path:
    """`rel` inside `root`, or ValueError if it would leave it."""
    path = (root / rel).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ValueError(f"{rel!r} is outside the session folder")
    return path


def folder_identity(path: Path) -> list[Any]:
    """(host name, device, inode) of a folder: equal only for the very same folder seen from the same host."""
    st = path.stat()
    return [socket.gethostname(), st.st_dev, st.st_ino]


def _count_rows(sidecar: Path) -> int:
    with open(sidecar, "rb") as f:
        data = f.read()
    complete = data.count(b"\n")
    return max(0, complete - 1)  # minus the header; a last line cut short does not count


def _belongs(stem: str, name: str, names: set[str]) -> bool:
    """Whether a data file with this stem belongs to stream `name` (its own file, or a video roll-over)."""
    if stem == name:
        return True
    base, _, num = stem.rpartition(".")
    return base == name and num.isdigit() and stem not in names


def segments(root: Path) -> list[dict[str, Any]]:
    """Every node segment under a session folder, with its streams; segments without a manifest are truncated."""
    out = []
    for seg in sorted(root.glob("*/segment-*")):
        if not seg.is_dir():
            continue
        node, index = seg.parent.name, int(seg.name.split("-", 1)[1])
        manifest = seg / MANIFEST
        if manifest.exists():
            streams = json.loads(manifest.read_text())["streams"]
            truncated = False
        else:  # the process ended without closing the segment: rebuild what the files say
            streams = []
            sidecars = sorted(seg.glob("*.timestamps.csv"))
            names = {side.name[: -len(".timestamps.csv")] for side in sidecars}
            for side in sidecars:
                name = side.name[: -len(".timestamps.csv")]
                data = sorted((p for p in seg.iterdir() if p.suffix in KIND_BY_EXT and _belongs(p.stem, name, names)),
                              key=lambda p: (len(p.name), p.name))
                kind = KIND_BY_EXT[data[0].suffix] if data else "image" if (seg / name).is_dir() else "unknown"
                files = [side.name] + [p.name for p in data]
                if kind == "image":
                    files += [f"{name}/{p.name}" for p in sorted((seg / name).glob("*.png"))]
                streams.append({"name": name, "kind": kind, "files": files, "samples": _count_rows(side),
                                "lost": None, "error": None})
            truncated = True
        for s in streams:
            s["truncated"] = truncated
        out.append({"node": node, "segment": index, "path": f"{node}/{seg.name}", "truncated": truncated,
                    "streams": streams})
    return out


def list_session(data_dir: Path, msg: dict[str, Any]) -> dict[str, Any]:
    """Reply to "files": every file of the session (size, SHA-256) and its segments."""
    root = session_root(data_dir, msg["session"])
    files = []
    if root.exists():
        for p in sorted(root.rglob("*")):
            if p.is_file() and not p.name.endswith((".tmp", ".write-test")):
                files.append({"path": p.relative_to(root).as_posix(), "size": p.stat().st_size,
                              "sha256": sha256_file(p)})
    return {"root": str(root), "identity": folder_identity(root) if root.exists() else None,
            "files": files, "segments": segments(root) if root.exists() else []}


def read_chunk(data_dir: Path, session: str, rel: str, offset: int, size: int) -> bytes:
    """`size` bytes of a session file from `offset`."""
    path = safe_path(session_root(data_dir, session), rel)
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(max(0, min(size, 8 << 20)))


def forget(data_dir: Path, msg: dict[str, Any]) -> dict[str, Any]:
    """Reply to "forget": delete collected files (and folders left empty)."""
    root = session_root(data_dir, msg["session"])
    deleted = 0
    for rel in msg["paths"]:
        path = safe_path(root, rel)
        if path.exists():
            path.unlink()
            deleted += 1
    for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        try:
            d.rmdir()
        except OSError:
            pass
    try:
        root.rmdir()
    except OSError:
        pass
    return {"deleted": deleted}


def same_machine(listing: dict[str, Any]) -> bool:
    """Whether this process sees the worker's session folder itself (then files are moved, not copied)."""
    try:
        return listing["identity"] is not None and folder_identity(Path(listing["root"])) == listing["identity"]
    except OSError:
        return False


def move_file(src: Path, dst: Path) -> None:
    """Move a file (a rename on the same file system, a copy and delete across them)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dst)
    except OSError:
        import shutil

        shutil.move(str(src), str(dst))
