"""`make bench`: every figure of the performance budget (DESIGN.md §4), beside raw pyzmq from the same run.

Each chimera_lab figure runs on a LocalCluster of 2 worker processes (source on one, sink on the other),
so every message crosses processes over 127.0.0.1 exactly as in a real pipeline. The sink measures on
the receiving side and writes its samples to a file at teardown, which this script reads. Images are the
baseline's own frames (a 640x480 gradient with a moving box, ~14 KB as JPEG q80), made by the same code;
latency runs from before JPEG encoding to after decoding on both sides.

    python bench/run.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import raw_pyzmq  # noqa: E402

import chimera_lab as cp  # noqa: E402
from chimera_lab.cluster import LocalCluster  # noqa: E402

cp.send_by_value(raw_pyzmq)  # the nodes below make their frames with the baseline's own code


class Source(cp.Node):
    """Makes `n` items of one kind ("small", "image" or "array"), paced at `rate_hz` or as fast as it can."""

    def __init__(self, name: str, kind: str, n: int, rate_hz: float | None = None) -> None:
        super().__init__(name=name, rate_hz=rate_hz)
        self.kind, self.n = kind, n

    def prep(self) -> None:
        self.i = 0
        self.base = raw_pyzmq._make_base_image()  # the very frames the raw baseline sends
        self.array = np.random.default_rng(0).random(1 << 17)  # 1 MiB of float64

    def step(self) -> Any:
        self.i += 1
        if self.i > self.n:
            raise StopIteration
        if self.kind == "small":
            return self.i
        chunk = cp.DataChunk()
        if self.kind == "image":
            chunk.add("frame", raw_pyzmq._make_frame(self.base, self.i), "image")
        else:
            chunk.add("array", self.array, "ndarray")
        return chunk


class Probe(cp.Node):
    """Records the arrival time and end-to-end latency of every item; writes them to `out` at teardown."""

    def __init__(self, name: str, out: str) -> None:
        super().__init__(name=name)
        self.out = out

    def prep(self) -> None:
        self.arrivals: list[float] = []
        self.latency: list[float] = []

    def step(self, data: dict[str, cp.DataChunk]) -> None:
        now = time.time()
        (chunk,) = data.values()
        self.arrivals.append(now)
        self.latency.append(now - chunk.created)

    def teardown(self) -> None:
        np.savez(self.out, arrivals=np.asarray(self.arrivals), latency=np.asarray(self.latency))


class Pass(cp.Node):
    """A step that passes its input on (for the commit benchmark)."""

    def step(self, data: dict[str, cp.DataChunk]) -> Any:
        return next(iter(data.values()))


class RecCamera(cp.Node):
    """Records `n` 640x480 frames (the baseline's frames) as video."""

    def __init__(self, name: str, n: int, rate_hz: float = 30) -> None:
        super().__init__(name=name, rate_hz=rate_hz)
        self.n = n

    def prep(self) -> None:
        self.i = 0
        self.base = raw_pyzmq._make_base_image()

    def step(self) -> None:
        self.i += 1
        if self.i > self.n:
            raise StopIteration
        self.save_video("cam", raw_pyzmq._make_frame(self.base, self.i))


class RecTable(cp.Node):
    """Records `n` table rows at `rate_hz`."""

    def __init__(self, name: str, n: int, rate_hz: float = 1000) -> None:
        super().__init__(name=name, rate_hz=rate_hz)
        self.n = n

    def prep(self) -> None:
        self.i = 0

    def step(self) -> None:
        self.i += 1
        if self.i > self.n:
            raise StopIteration
        self.save_tabular("imu", {"i": self.i, "ax": self.i * 0.001, "ay": -self.i * 0.002, "ok": True})


class RecBlob(cp.Node):
    """Records `n` chunks of 4 MiB of float32 audio as fast as it can (a big session, fast)."""

    def __init__(self, name: str, n: int) -> None:
        super().__init__(name=name)
        self.n = n

    def prep(self) -> None:
        self.i = 0
        self.block = np.random.default_rng(0).random((1 << 20, 1), dtype=np.float32)

    def step(self) -> None:
        self.i += 1
        if self.i > self.n:
            raise StopIteration
        self.save_audio("raw", self.block, rate=48000, channels=1)


def wait_stopped(m: cp.Manager, names: list[str], timeout: float = 300.0) -> dict[str, int]:
    """Poll until the named sources finished; return the largest write backlog (items) seen per node."""
    backlog = dict.fromkeys(names, 0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        met = m.metrics()
        for n in names:
            backlog[n] = max(backlog[n], met[n]["recording"].get("queued", 0))
        if all(m.status()["nodes"][n]["state"] == "stopped" for n in names):
            return backlog
        time.sleep(0.1)
    raise TimeoutError(f"{names} did not finish in {timeout} s")


def measure_recording(quick: bool, raw_gbps: float) -> list[dict[str, Any]]:
    """Recording keeps up in real time; collecting a big session from a local CLI worker is fast."""
    import cv2

    rows: list[dict[str, Any]] = []
    seconds = 4 if quick else 10
    # raw: how many frames one thread can JPEG-encode (q90) and append to a file here
    base = raw_pyzmq._make_base_image()
    with tempfile.TemporaryFile() as f:
        t0 = time.perf_counter()
        for i in range(150):
            f.write(cv2.imencode(".jpg", raw_pyzmq._make_frame(base, i), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
        raw_fps = 150 / (time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as tmp, \
            LocalCluster(2, data_dir=Path(tmp) / "data", logdir=Path(tmp) / "logs") as cluster:
        m, w = cluster.manager, cluster.workers
        g = cp.Graph()
        g.add_nodes_from([RecCamera("camera", 30 * seconds), RecTable("table", 1000 * seconds)])
        m.commit_graph(g, {w[0]: ["camera"], w[1]: ["table"]})
        m.record("bench")
        t0 = time.monotonic()
        backlog = wait_stopped(m, ["camera", "table"])
        elapsed = time.monotonic() - t0
        m.stop()
        s = cp.Session(m.collect(progress=False))
        counts = {(e["node"], e["name"]): e["samples"] for e in s.streams()}
        complete = counts[("camera", "cam")] == 30 * seconds and counts[("table", "imu")] == 1000 * seconds
        ok = complete and backlog["camera"] <= 30 and backlog["table"] <= 1000 and elapsed < seconds * 1.2
        rows.append({"what": "record 640x480 at 30 fps + a 1 kHz table: largest write backlog",
                     "raw_pyzmq": None, "chimera_lab": float(backlog["camera"]), "unit": "frames",
                     "target": "keeps up (≤ 1 s of backlog, all written)", "ok": bool(ok),
                     "note": f"table backlog ≤ {backlog['table']} rows; {counts[('camera', 'cam')]} frames and "
                             f"{counts[('table', 'imu')]} rows written in {elapsed:.1f} s; one thread here can "
                             f"encode+write {raw_fps:.0f} fps"})
        print(f"  recording: backlog ≤ {backlog['camera']} frames / {backlog['table']} rows, all written: "
              f"{complete} ({elapsed:.1f} s for {seconds} s of data)", flush=True)

        # a big session from a worker process on this machine: moved, then (another session) transferred
        mib = 100 if quick else 500
        for move in (True, False):
            g = cp.Graph()
            g.add_node(RecBlob("blob", mib // 4))
            m.commit_graph(g, {w[0]: ["blob"]})
            m.record("big")
            wait_stopped(m, ["blob"])
            m.stop()
            path = m.collect(move=move, progress=False)
            st = m.session.last_collect if m.session else {}
            size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            mbps = size / st["seconds"] / 1e6
            how = "moved (same machine)" if move else "transferred over ZeroMQ"
            rows.append({"what": f"collect a {size / 1e6:.0f} MB session from a local cp-worker, {how}",
                         "raw_pyzmq": raw_gbps * 1e3 if not move else None, "chimera_lab": mbps, "unit": "MB/s",
                         "target": "≥ 200 MB/s", "ok": bool(mbps >= 200),
                         "note": "checksummed on both sides"})
            print(f"  collect {size / 1e6:.0f} MB {how}: {mbps:.0f} MB/s", flush=True)
            shutil.rmtree(path)
    return rows


def measure_browser(quick: bool) -> list[dict[str, Any]]:
    """Frames of a 640x480 30 fps stream shown in JupyterLab in Chromium, and their delay."""
    import browser

    r = browser.measure(3.0 if quick else 8.0)
    if r is None:
        return []
    print(f"  browser: {r['fps']:.1f} fps shown, kernel-to-screen {r['delay_ms']:.0f} ms", flush=True)
    return [
        {"what": "640x480 at 30 fps shown in JupyterLab (Chromium)", "raw_pyzmq": None, "chimera_lab": r["fps"],
         "unit": "fps", "target": "≥ 25 fps", "ok": bool(r["fps"] >= 25), "note": "distinct frames, in the page"},
        {"what": "…its kernel-to-screen delay", "raw_pyzmq": None, "chimera_lab": float(r["delay_ms"]), "unit": "ms",
         "target": "≤ 100 ms", "ok": bool(r["delay_ms"] <= 100),
         "note": f"camera-to-screen {r['latency_ms']:.0f} ms"},
    ]


def run_pipeline(cluster: LocalCluster, kind: str, n: int, rate_hz: float | None,
                 timeout: float = 120.0) -> dict[str, Any]:
    """Source on one worker → probe on the other; returns the probe's samples and the metrics."""
    m = cluster.manager
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "probe.npz")
        g = cp.Graph()
        g.add_edge(Source("source", kind, n, rate_hz), Probe("probe", out))
        w = cluster.workers
        m.commit_graph(g, {w[0]: ["source"], w[1]: ["probe"]})
        m.start()
        deadline = time.monotonic() + timeout
        while m.status()["nodes"]["source"]["state"] != "stopped" and time.monotonic() < deadline:
            time.sleep(0.05)
        m.stop()
        metrics = m.metrics()
        m.reset()
        data = np.load(out)
        return {"arrivals": data["arrivals"], "latency": data["latency"], "metrics": metrics}


def measure(quick: bool) -> list[dict[str, Any]]:
    """Run every figure; return rows of (what, raw, ours, unit, target, ok)."""
    scale = 5 if quick else 1
    rows: list[dict[str, Any]] = []

    def row(what: str, raw: float, ours: float, unit: str, target: str, ok: bool, note: str = "") -> None:
        rows.append({"what": what, "raw_pyzmq": float(raw), "chimera_lab": float(ours), "unit": unit,
                     "target": target, "ok": bool(ok), "note": note})
        print(f"  {what}: raw {raw:.4g} {unit}, chimera_lab {ours:.4g} {unit} (target {target}) "
              f"{'OK' if ok else 'MISSED'} {note}", flush=True)

    with LocalCluster(2) as cluster:
        # 1. small-message latency: one message in flight at a time (paced), like a ping-pong
        raw = raw_pyzmq.small_latency(quick=quick)
        r = run_pipeline(cluster, "small", 4000 // scale, rate_hz=1000)
        p50 = float(np.percentile(r["latency"], 50)) * 1e3
        row("small message latency p50, source→sink", raw["oneway_p50_us"] / 1e3, p50, "ms", "≤ 0.25 ms",
            p50 <= 0.25, f"(raw round trip {raw['rtt_p50_us']:.0f} µs)")

        # 2. lossless small-message throughput on one edge
        raw = raw_pyzmq.small_throughput(quick=quick)
        n = 200_000 // scale
        r = run_pipeline(cluster, "small", n, rate_hz=None)
        arr = r["arrivals"]
        rate = (len(arr) - 1) / (arr[-1] - arr[0])
        lost = n - len(arr)
        row("small messages, lossless throughput", raw["msgs_per_s"], rate, "msg/s", "≥ 50k msg/s, 0 lost",
            rate >= 50_000 and lost == 0, f"(lost {lost} of {n})")

        # 3. 640x480 image at 30 fps: latency from creation (before JPEG) to decoded at the sink
        raw = raw_pyzmq.image_paced(quick=quick)
        r = run_pipeline(cluster, "image", int(30 * (4 if quick else 10)), rate_hz=30)
        p50, p99 = (float(v) * 1e3 for v in np.percentile(r["latency"], [50, 99]))
        row("640x480 image at 30 fps, latency p50", raw["p50_ms"], p50, "ms", "≤ 4 ms", p50 <= 4)
        row("640x480 image at 30 fps, latency p99", raw["p99_ms"], p99, "ms", "≤ 15 ms", p99 <= 15)

        # 4. 640x480 image, unpaced: frames delivered per second (lossless edge)
        raw = raw_pyzmq.image_unpaced(quick=quick)
        r = run_pipeline(cluster, "image", 3000 // scale, rate_hz=None)
        arr = r["arrivals"]
        fps = (len(arr) - 1) / (arr[-1] - arr[0])
        row("640x480 image unpaced, delivered", raw["delivered_fps"], fps, "fps", "≥ 500 fps", fps >= 500)

        # 5. 1 MiB ndarray per message
        raw = raw_pyzmq.ndarray_throughput(quick=quick)
        n = 2000 // scale
        r = run_pipeline(cluster, "array", n, rate_hz=None)
        arr = r["arrivals"]
        gbps = (len(arr) - 1) * (1 << 20) / (arr[-1] - arr[0]) / 1e9
        row("1 MiB ndarray per message", raw["gb_per_s"], gbps, "GB/s", "≥ 1.5 GB/s", gbps >= 1.5)

        # 6. commit a 10-node graph on 2 workers (a chain alternating between the workers)
        m, w = cluster.manager, cluster.workers
        times = []
        for _ in range(2 if quick else 3):
            g = cp.Graph()
            chain: list[cp.Node] = [Source("n0", "small", 10, rate_hz=10)]
            chain += [Pass(f"n{i}") for i in range(1, 10)]
            for a, b in zip(chain, chain[1:], strict=False):
                g.add_edge(a, b)
            mapping = {w[0]: [n.name for n in chain[0::2]], w[1]: [n.name for n in chain[1::2]]}
            t0 = time.perf_counter()
            m.commit_graph(g, mapping)
            times.append(time.perf_counter() - t0)
            m.reset()
        best = float(np.median(times))
        rows.append({"what": "commit a 10-node graph on 2 workers", "raw_pyzmq": None, "chimera_lab": best,
                     "unit": "s", "target": "≤ 3 s", "ok": bool(best <= 3), "note": ""})
        print(f"  commit 10 nodes on 2 workers: {best:.2f} s (target ≤ 3 s)", flush=True)
    return rows


def fmt(value: float, unit: str) -> str:
    """A figure in a readable unit."""
    if unit == "ms" and value < 1:
        return f"{value * 1e3:.0f} µs"
    if unit == "msg/s":
        return f"{value / 1e3:.1f}k msg/s"
    if unit == "fps":
        return f"{value:.0f} fps"
    if unit in ("MB/s", "frames"):
        return f"{value:.0f} {unit}"
    return f"{value:.2f} {unit}"


def markdown(rows: list[dict[str, Any]]) -> str:
    """The results as a Markdown table (for the README)."""
    out = ["| what | raw pyzmq or scikit-learn (same run) | chimera_lab | chimera_lab / raw | target | met |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        raw = "—" if r["raw_pyzmq"] is None else fmt(r["raw_pyzmq"], r["unit"])
        ratio = "—" if not r["raw_pyzmq"] else f"{r['chimera_lab'] / r['raw_pyzmq']:.2f}×"
        out.append(f"| {r['what']} | {raw} | {fmt(r['chimera_lab'], r['unit'])} | {ratio} | {r['target']} | "
                   f"{'yes' if r['ok'] else 'NO'} |")
    return "\n".join(out)


def measure_encrypted(quick: bool, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The figures that move bytes, again with Manager(encrypt=True) (CurveZMQ on every socket): the cost of
    encryption, beside raw pyzmq (unencrypted, from this run) and our unencrypted figure (the note)."""
    scale = 5 if quick else 1
    out: list[dict[str, Any]] = []
    plain = {r["what"]: r for r in rows}
    with cp.Manager(port=0, encrypt=True) as m, LocalCluster(2, manager=m) as cluster:
        for what, kind, n, unit in (("small messages, lossless throughput", "small", 200_000 // scale, "msg/s"),
                                    ("640x480 image unpaced, delivered", "image", 3000 // scale, "fps"),
                                    ("1 MiB ndarray per message", "array", 2000 // scale, "GB/s")):
            r = run_pipeline(cluster, kind, n, rate_hz=None)
            arr = r["arrivals"]
            rate = (len(arr) - 1) / (arr[-1] - arr[0])
            value = rate * (1 << 20) / 1e9 if kind == "array" else rate
            base = plain[what]
            row = {"what": f"{what}, encrypt=True", "raw_pyzmq": base["raw_pyzmq"], "chimera_lab": value,
                   "unit": unit, "target": "informational (CurveZMQ)", "ok": len(arr) == n,
                   "note": f"unencrypted {base['chimera_lab']:.4g} {unit}: {value / base['chimera_lab']:.2f}x; "
                           f"lost {n - len(arr)} of {n}"}
            print(f"  {row['what']}: raw {row['raw_pyzmq']:.4g} {unit}, chimera_lab {value:.4g} {unit} "
                  f"({row['note']})", flush=True)
            out.append(row)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer iterations (for a smoke run)")
    p.add_argument("--json", default="bench/results/latest.json", help="where to write the results")
    args = p.parse_args()
    # imported here, not at the top: docker_workers imports this module (its nodes), which must not import it back
    from docker_workers import measure_docker
    from launchers import measure_launchers
    from ml import measure_ml

    print("chimera_lab benchmarks (each beside raw pyzmq measured in this run)", flush=True)
    rows = measure(args.quick)
    rows += measure_encrypted(args.quick, rows)
    raw_gbps = next(r["raw_pyzmq"] for r in rows if r["what"].startswith("1 MiB"))
    rows += measure_recording(args.quick, raw_gbps)
    rows += measure_browser(args.quick)
    rows += measure_ml(args.quick)
    rows += measure_docker(args.quick)
    rows += measure_launchers(args.quick)
    print()
    print(markdown(rows))
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"time": time.time(), "quick": args.quick, "rows": rows}, indent=2))
    missed = [r["what"] for r in rows if not r["ok"]]
    if missed:
        print(f"\nMISSED: {', '.join(missed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
