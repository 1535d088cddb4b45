"""Bringing a recorded session home: every worker's files into ``<logdir>/<session>/<worker>/...``.

Files of a worker whose data folder this process can see (the same machine) are moved. Others travel in
chunks over the worker's existing control connection, several chunks in flight, into ``.part`` files that a
later ``collect()`` resumes. Every file is checked against the SHA-256 the worker computed. ``session.json``
describes the whole session.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import threading
import time
import warnings
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .files import move_file, same_machine, sha256_file

if TYPE_CHECKING:  # pragma: no cover
    from ..manager import Manager

log = logging.getLogger("chimera_lab.collect")

CHUNK = 1 << 20  # bytes per fetch
WINDOW = 8  # fetches in flight per file


class CollectError(RuntimeError):
    """A file could not be brought home intact; what arrived stays as `.part` and `collect()` resumes it."""


@dataclass
class SessionState:
    """What the Manager knows of the session it is recording."""

    id: str
    name: str
    path: Path
    created: float = field(default_factory=time.time)
    segments: list[dict[str, Any]] = field(default_factory=list)
    workers: set[str] = field(default_factory=set)
    streams: dict[str, dict[str, Any]] = field(default_factory=dict)  # "worker/node/segment/name" -> entry
    errors: list[dict[str, Any]] = field(default_factory=list)
    manifests: dict[int, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)  # segment -> node -> streams
    missing: dict[str, str] = field(default_factory=dict)
    last_collect: dict[str, Any] = field(default_factory=dict)
    collected_segments: int = 0  # how many segments the last collect() brought home


def new_session(logdir: Path, name: str) -> SessionState:
    """Create the session folder `<logdir>/<timestamp>-<name>` (raise OSError if it cannot be written)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    sid = f"{stamp}-{name}"
    n = 1
    while (logdir / sid).exists():
        n += 1
        sid = f"{stamp}-{name}-{n}"
    path = logdir / sid
    path.mkdir(parents=True)
    (path / ".write-test").write_bytes(b"ok")
    (path / ".write-test").unlink()
    return SessionState(id=sid, name=name, path=path)


def _progress(total: int, enabled: bool) -> Any:
    if not enabled or total == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="collect", leave=False)


def collect(manager: Manager, move: bool = True, keep_on_worker: bool = False, progress: bool = True,
            timeout: float = 600.0) -> Path:
    """Bring every worker's files of the current session home; return the session folder."""
    s = manager.session
    assert s is not None, "Manager.collect checks that a session exists"
    t0 = time.monotonic()
    stats: dict[str, float] = {"moved_bytes": 0, "transferred_bytes": 0, "resumed_bytes": 0, "files": 0}
    listings: dict[str, dict[str, Any]] = {}
    s.missing = {}
    for w in sorted(s.workers):
        info = manager.workers.get(w)
        if info is None or info.state != "connected":
            nodes = sorted(n for n, i in manager.nodes.items() if i.worker == w)
            s.missing[w] = (f"worker {w!r} is {'unknown' if info is None else info.state}, so what its nodes "
                            f"({', '.join(nodes) or 'none'}) recorded was not collected")
            continue
        r = manager._request(w, {"op": "files", "session": s.id}).result(timeout)
        if not r.get("ok"):
            s.missing[w] = str(r.get("error"))
            continue
        listings[w] = r
    total = sum(f["size"] for r in listings.values() for f in r["files"])
    bar = _progress(total, progress)
    try:
        for w, r in listings.items():
            _merge_segments(s, w, r)
            local = move and same_machine(r)
            transferred = []
            for f in r["files"]:
                base = (s.path / w).resolve()  # a worker's files go in its own folder, and only there
                try:
                    dst = (base / f["path"]).resolve()
                except (TypeError, ValueError):  # not a str, or a NUL byte in it
                    raise CollectError(f"worker {w!r} listed a file with an invalid path: {f['path']!r}") from None
                if dst == base or not dst.is_relative_to(base):
                    raise CollectError(f"worker {w!r} listed a file outside its session: {f['path']!r}")
                stats["files"] += 1
                if not local and not (dst.exists() and dst.stat().st_size == f["size"]
                                      and sha256_file(dst) == f["sha256"]):  # else: collected before, kept
                    _transfer(manager, w, s.id, f, dst, bar, stats, timeout)  # updates the bar itself
                    transferred.append(f["path"])
                    continue
                if local:
                    move_file(Path(r["root"]) / f["path"], dst)
                    if sha256_file(dst) != f["sha256"]:
                        raise CollectError(f"{dst} does not match the checksum worker {w!r} computed")
                    stats["moved_bytes"] += f["size"]
                if bar is not None:
                    bar.update(f["size"])
            if transferred and not keep_on_worker:
                manager._request(w, {"op": "forget", "session": s.id, "paths": transferred}).result(timeout)
            if local and not keep_on_worker:
                manager._request(w, {"op": "forget", "session": s.id, "paths": []}).result(timeout)
    finally:
        if bar is not None:
            bar.close()
    stats["seconds"] = time.monotonic() - t0
    s.last_collect = stats
    if not s.missing:
        s.collected_segments = len(s.segments)
    write_manifest(manager, s)
    if s.missing:
        msg = "; ".join(f"{w}: {why}" for w, why in s.missing.items())
        log.error("collect: data missing from %s; collected the rest into %s", msg, s.path)
        warnings.warn(f"collect(): no data from worker(s) {msg}. The rest is in {s.path}; run collect() again "
                      "once they are back", stacklevel=3)
        manager._emit({"type": "collect", "missing": dict(s.missing), "path": str(s.path)})
    return s.path


def _transfer(manager: Manager, worker: str, session: str, f: dict[str, Any], dst: Path, bar: Any,
              stats: dict[str, Any], timeout: float) -> None:
    """Fetch one file in chunks into `<dst>.part` (resuming what is there), verify it, rename it."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    part = dst.with_name(dst.name + ".part")
    size = f["size"]
    offset = part.stat().st_size if part.exists() else 0
    if offset > size:
        part.unlink()
        offset = 0
    h = hashlib.sha256()
    if offset:
        with open(part, "rb") as old:
            while chunk := old.read(CHUNK):
                h.update(chunk)
        stats["resumed_bytes"] += offset
        if bar is not None:
            bar.update(offset)
    pending: deque[tuple[int, int, Future[dict[str, Any]]]] = deque()
    nxt = offset
    with open(part, "ab") as out, _Writer(out) as writer:  # disk writes overlap hashing and fetching
        while nxt < size or pending:
            while len(pending) < WINDOW and nxt < size:
                n = min(CHUNK, size - nxt)
                pending.append((nxt, n, manager._request(worker, {"op": "fetch", "session": session,
                                                                  "path": f["path"], "offset": nxt, "size": n})))
                nxt += n
            off, n, fut = pending.popleft()
            r = fut.result(timeout)
            blob = (r.get("_blobs") or [b""])[0]
            chunk_ok = isinstance(blob, (bytes, bytearray, memoryview))  # not, if the header had its own "_blobs"
            if not r.get("ok") or not chunk_ok or len(blob) != n:
                why = r.get("error") or ("short read" if chunk_ok else "the reply holds no file chunk")
                raise CollectError(f"transfer of {f['path']!r} from worker {worker!r} failed at byte {off}: "
                                   f"{why}; run collect() again to resume")
            writer.put(blob)
            h.update(blob)
            stats["transferred_bytes"] += n
            if bar is not None:
                bar.update(n)
    if h.hexdigest() != f["sha256"]:
        part.unlink()
        raise CollectError(f"{f['path']!r} from worker {worker!r} does not match its checksum; it was removed, "
                           "run collect() again")
    os.replace(part, dst)


class _Writer:
    """Writes blobs to a file on a thread of its own, in order; re-raises its error on exit."""

    def __init__(self, out: Any) -> None:
        self.out = out
        self.q: queue.Queue[bytes | None] = queue.Queue(maxsize=WINDOW * 2)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="chimera-collect-writer", daemon=True)

    def _run(self) -> None:
        while (blob := self.q.get()) is not None:
            if self.error is None:
                try:
                    self.out.write(blob)
                except BaseException as exc:  # e.g. the disk is full: reported by put() or on exit
                    self.error = exc

    def put(self, blob: bytes) -> None:
        if self.error is not None:
            raise self.error
        self.q.put(blob)

    def __enter__(self) -> _Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.q.put(None)
        self.thread.join()
        if self.error is not None and exc[0] is None:
            raise self.error


def _merge_segments(s: SessionState, worker: str, listing: dict[str, Any]) -> None:
    sizes = {f["path"]: f for f in listing["files"]}
    for seg in listing["segments"]:
        closed = s.manifests.get(seg["segment"], {}).get(seg["node"])
        if seg["truncated"] and closed:  # closed cleanly (the stop reply says so) but streams.json was not written
            seg = {**seg, "truncated": False, "streams": [{**st, "truncated": False} for st in closed]}
        for st in seg["streams"]:
            files = []
            for rel in st["files"]:
                meta = sizes.get(f"{seg['path']}/{rel}")
                if meta is not None:
                    files.append({"path": f"{worker}/{seg['path']}/{rel}", "size": meta["size"],
                                  "sha256": meta["sha256"]})
            key = f"{worker}/{seg['node']}/{seg['segment']}/{st['name']}"
            s.streams[key] = {**st, "worker": worker, "node": seg["node"], "segment": seg["segment"],
                              "files": files}


def write_manifest(manager: Manager, s: SessionState) -> None:
    """Write `session.json`: graph, mapping, workers, clocks, segments, streams with counts and checksums."""
    graph = manager.graph
    nodes, edges = [], []
    if graph is not None:
        for n in graph.nodes:
            info = manager.nodes.get(n.name)
            nodes.append({"name": n.name, "kind": graph.kind(n), "worker": info.worker if info else None,
                          "class": f"{type(n).__module__}.{type(n).__qualname__}"})
        edges = [{"src": u.name, "dst": v.name, "policy": d.get("policy"), "follow": d.get("follow")}
                 for u, v, d in graph.edges(data=True)]
    workers = {}
    for w in sorted(s.workers):
        winfo = manager.workers.get(w)
        workers[w] = {"hostname": winfo.hostname if winfo else None, "pid": winfo.pid if winfo else None,
                      "cwd": winfo.cwd if winfo else None, "clock_offset": winfo.offset if winfo else None,
                      "rtt": winfo.rtt if winfo else None, "missing": s.missing.get(w)}
    doc = {
        "format": "chimera_lab.session/1",
        "id": s.id, "name": s.name, "created": s.created,
        "manager": {"host": manager.host, "port": manager.port},
        "graph": {"nodes": nodes, "edges": edges},
        "mapping": manager.mapping,
        "workers": workers,
        "segments": s.segments,
        "streams": sorted(s.streams.values(), key=lambda e: (e["node"], e["name"], e["segment"])),
        "missing_workers": s.missing,
        "errors": s.errors,
        "collect": s.last_collect,
    }
    tmp = s.path / "session.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    os.replace(tmp, s.path / "session.json")
