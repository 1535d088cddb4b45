"""`make soak`: a long run of frames and small messages over lossless edges; memory growth and losses.

A LocalCluster of 2 worker processes runs five nodes, every edge between processes of different workers and
every edge "all" (lossless):

    camera (640x480 "image" at 30 fps, records it as video) ──────────────────────────► frames (sink)
    ticker (small dicts at 1 kHz, records each as a table row) ──► relay (dict → int) ──► ticks (sink)

The sinks check that what they get is exactly the previous item + 1 (a gap raises in their step, so it is
counted as an error). The Manager, in this process, also taps the camera and decodes every frame it is sent
(as a live view in a notebook does) and counts the events it emits. Each second the script samples the
resident set (RSS), the CPU time and the open files of the Manager process (this one), of each worker process
and of each node process (PIDs from ``manager.status()``), and the nodes' counters (``manager.metrics()``).

At the end: per process the RSS at start and end and its growth, a least-squares slope over the samples after
a warm-up (10 % of the run), in MB/h and over the measured window; per edge what was produced, sent, received
and dropped (all counted by the framework); the recorded sample counts against what the sources made. It
fails (exit code 1) on any loss, drop or node error, on a recording that does not match, or when a process
grew by more than ``--max-growth-mb`` over the run (the slope times the measured window). MB = 10^6 bytes.

    python bench/soak.py [--seconds 600] [--json bench/results/soak.json] [--max-growth-mb 20] [--no-record]

tests/test_soak.py runs the same code for 60 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import raw_pyzmq  # noqa: E402

import chimera_lab as cp  # noqa: E402
from chimera_lab.cluster import LocalCluster  # noqa: E402

cp.send_by_value(raw_pyzmq)  # the camera makes the benchmark's own frames
if __name__ != "__main__":  # imported (by tests/test_soak.py): workers cannot import this module
    cp.send_by_value(sys.modules[__name__])

MB = 1e6
FRAME_SHAPE = (raw_pyzmq.FRAME_H, raw_pyzmq.FRAME_W, 3)
EDGES = (("camera", "frames"), ("ticker", "relay"), ("relay", "ticks"))
GROUPS = ("manager", "workers", "nodes")


# -------------------------------------------------------------------------------------------------
# the pipeline
# -------------------------------------------------------------------------------------------------
class Camera(cp.Node):
    """Source: the benchmark's 640x480 frames (a gradient with a moving box) as "image", with their number."""

    def __init__(self, name: str, rate_hz: float = 30, record: bool = True) -> None:
        super().__init__(name=name, rate_hz=rate_hz)
        self.record = record

    def prep(self) -> None:
        self.i = 0
        self.base = raw_pyzmq._make_base_image()

    def step(self) -> cp.DataChunk:
        self.i += 1
        frame = raw_pyzmq._make_frame(self.base, self.i)
        if self.record:
            self.save_video("cam", frame)
        chunk = cp.DataChunk()
        chunk.add("frame", frame, "image")
        chunk.add("i", self.i)
        return chunk


class Ticker(cp.Node):
    """Source: small dicts {"i", "x", "ok"}, i = 1, 2, 3, ...; each also recorded as a table row."""

    def __init__(self, name: str, rate_hz: float = 1000, record: bool = True) -> None:
        super().__init__(name=name, rate_hz=rate_hz)
        self.record = record

    def prep(self) -> None:
        self.i = 0

    def step(self) -> dict[str, Any]:
        self.i += 1
        row = {"i": self.i, "x": self.i * 0.5, "ok": True}
        if self.record:
            self.save_tabular("ticks", row)
        return row


class Relay(cp.Node):
    """Step: the dict's "i", as a plain int."""

    def step(self, data: dict[str, cp.DataChunk]) -> int:
        (chunk,) = data.values()
        return int(chunk.get("default")["value"]["i"])


class TickSink(cp.Node):
    """Sink: raises when a value is not the previous one + 1 (a loss shows as an error)."""

    def prep(self) -> None:
        self.last = 0

    def step(self, data: dict[str, cp.DataChunk]) -> None:
        (chunk,) = data.values()
        v = chunk.get("default")["value"]
        expected, self.last = self.last + 1, v
        if v != expected:
            raise ValueError(f"expected tick {expected}, got {v}")


class FrameSink(cp.Node):
    """Sink: raises when a frame is not the previous one + 1 or not a decoded 640x480 BGR image."""

    def prep(self) -> None:
        self.last = 0

    def step(self, data: dict[str, cp.DataChunk]) -> None:
        (chunk,) = data.values()
        i, frame = chunk.get("i")["value"], chunk.get("frame")["value"]
        expected, self.last = self.last + 1, i
        if i != expected:
            raise ValueError(f"expected frame {expected}, got {i}")
        if getattr(frame, "shape", None) != FRAME_SHAPE:
            got = getattr(frame, "shape", type(frame).__name__)
            raise ValueError(f"frame {i}: expected an image of shape {FRAME_SHAPE}, got {got}")


def soak_graph(frame_hz: float, tick_hz: float, record: bool) -> tuple[cp.Graph, list[list[str]]]:
    """The soak's graph, and its nodes per worker (every edge crosses from one worker to the other)."""
    g = cp.Graph()
    g.add_edge(Camera("camera", frame_hz, record), FrameSink("frames"), policy="all")
    relay = Relay("relay")
    g.add_edge(Ticker("ticker", tick_hz, record), relay, policy="all")
    g.add_edge(relay, TickSink("ticks"), policy="all")
    return g, [["camera", "relay"], ["ticker", "frames", "ticks"]]


# -------------------------------------------------------------------------------------------------
# measuring processes
# -------------------------------------------------------------------------------------------------
_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICK = os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, in bytes (Linux /proc)."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def open_fds(pid: int) -> int:
    """How many file descriptors a process has open (sockets included)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


class Proc:
    """One measured process and its samples, kept in arrays allocated (and touched) up front, so that
    measuring does not itself grow the Manager's process (this one)."""

    def __init__(self, group: str, name: str, pid: int, capacity: int) -> None:
        self.group, self.name, self.pid = group, name, pid  # group: manager, workers or nodes
        self.n = 0
        self._t = np.full(capacity, np.nan)  # seconds since the start of the run
        self._rss = np.full(capacity, np.nan)  # bytes
        self._cpu = np.full(capacity, np.nan)  # seconds of CPU used
        self._fds = np.full(capacity, -1, dtype=np.int64)
        self.gone = False

    @property
    def t(self) -> np.ndarray:
        """Sample times, seconds since the start of the run."""
        return self._t[: self.n]

    @property
    def rss(self) -> np.ndarray:
        """RSS samples, bytes."""
        return self._rss[: self.n]

    @property
    def cpu(self) -> np.ndarray:
        """CPU time used at each sample, seconds."""
        return self._cpu[: self.n]

    @property
    def fds(self) -> np.ndarray:
        """Open file descriptors at each sample."""
        return self._fds[: self.n]

    def sample(self, t: float) -> None:
        """Add one sample (marks the process gone if it has exited; ignored once the arrays are full)."""
        try:
            rss, cpu, fds = rss_bytes(self.pid), cpu_seconds(self.pid), open_fds(self.pid)
        except (FileNotFoundError, ProcessLookupError):
            self.gone = True
            return
        if self.n < len(self._t):
            i = self.n
            self._t[i], self._rss[i], self._cpu[i], self._fds[i] = t, rss, cpu, fds
            self.n += 1

    def summary(self, warmup: float) -> dict[str, Any]:
        """RSS at start/end, growth fitted after `warmup` seconds (MB/h and MB over the window), CPU, fds."""
        t, rss, cpu, fds = self.t, self.rss, self.cpu, self.fds
        after = t >= warmup
        slope = 0.0  # bytes per second
        window = 0.0
        if after.sum() >= 3:
            slope = float(np.polyfit(t[after], rss[after], 1)[0])
            window = float(t[after][-1] - t[after][0])
        span = float(t[-1] - t[0]) if len(t) > 1 else 0.0
        return {
            "group": self.group, "name": self.name, "pid": self.pid, "samples": len(t), "gone": self.gone,
            "rss_start_mb": float(rss[0]) / MB if len(t) else None,
            "rss_end_mb": float(rss[-1]) / MB if len(t) else None,
            "rss_max_mb": float(rss.max()) / MB if len(t) else None,
            "rss_after_warmup_mb": float(rss[after][0]) / MB if after.any() else None,
            "growth_mb_per_h": slope * 3600 / MB,
            "growth_mb": slope * window / MB,  # fitted growth over the window after the warm-up
            "window_s": window,
            "cpu_percent": 100 * float(cpu[-1] - cpu[0]) / span if span else None,
            "fds_start": int(fds[0]) if len(t) else None, "fds_end": int(fds[-1]) if len(t) else None,
        }


# -------------------------------------------------------------------------------------------------
# the run
# -------------------------------------------------------------------------------------------------
@dataclass
class SoakResult:
    """What one soak measured, and whether it passed."""

    seconds: float
    config: dict[str, Any]
    processes: list[dict[str, Any]]
    groups: dict[str, dict[str, Any]]
    edges: list[dict[str, Any]]
    recorded: list[dict[str, Any]]
    node_errors: dict[str, int]
    delivered: dict[str, int]
    tap_frames: int
    events: int
    max_queued: dict[str, int]
    failures: list[str]
    series: dict[str, Any]

    @property
    def ok(self) -> bool:
        """Whether nothing was lost and nothing grew beyond the limit."""
        return not self.failures

    @property
    def lost(self) -> int:
        """Messages lost over all "all" edges (produced upstream, never received downstream)."""
        return sum(e["lost"] for e in self.edges)


def _groups(procs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per group (manager, workers, nodes): RSS summed, growth summed, and its fastest-growing process."""
    out: dict[str, dict[str, Any]] = {}
    for g in GROUPS:
        ps = [p for p in procs if p["group"] == g and p["samples"]]
        worst = max(ps, key=lambda p: p["growth_mb_per_h"]) if ps else None
        out[g] = {"processes": len(ps),
                  "rss_start_mb": sum(p["rss_start_mb"] for p in ps), "rss_end_mb": sum(p["rss_end_mb"] for p in ps),
                  "growth_mb_per_h": sum(p["growth_mb_per_h"] for p in ps),
                  "worst": None if worst is None else worst["name"],
                  "worst_growth_mb_per_h": None if worst is None else worst["growth_mb_per_h"],
                  "worst_growth_mb": None if worst is None else worst["growth_mb"]}
    return out


def run(seconds: float = 600.0, frame_hz: float = 30.0, tick_hz: float = 1000.0, record: bool = True,
        warmup_fraction: float = 0.1, max_growth_mb: float = 20.0, workdir: str | os.PathLike[str] | None = None,
        progress: bool = True) -> SoakResult:
    """Run the soak for `seconds`; returns what it measured (`result.failures` is empty when it passed)."""
    warmup = seconds * warmup_fraction
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="chimera-soak-", dir=workdir) as tmp, \
            LocalCluster(2, data_dir=Path(tmp) / "data", logdir=Path(tmp) / "logs") as cluster:
        m = cluster.manager
        graph, placement = soak_graph(frame_hz, tick_hz, record)
        m.commit_graph(graph, dict(zip(cluster.workers, placement, strict=True)))
        st = m.status()
        cap = int(seconds) + 10
        procs = [Proc("manager", "manager", os.getpid(), cap)]
        procs += [Proc("workers", w, st["workers"][w]["pid"], cap) for w in cluster.workers]
        procs += [Proc("nodes", n, i["pid"], cap) for n, i in st["nodes"].items()]

        events = [0]
        unsubscribe = m.subscribe(lambda _event: events.__setitem__(0, events[0] + 1))
        tap_frames = [0]
        tap_bad: list[str] = []
        tapping = threading.Event()
        tapping.set()
        tap = m.tap("camera")

        def view() -> None:  # a live view in the Manager's process: every frame it is sent, decoded
            while tapping.is_set():
                chunk = tap.get(0.5)
                if chunk is None:
                    continue
                frame = chunk.get("frame")["value"]
                if getattr(frame, "shape", None) != FRAME_SHAPE:
                    tap_bad.append(f"tap frame {chunk.get('i')['value']}: {getattr(frame, 'shape', frame)!r}")
                tap_frames[0] += 1

        viewer = threading.Thread(target=view, name="soak-tap", daemon=True)
        viewer.start()
        max_queued = {f"{a}->{b}": 0 for a, b in EDGES}
        if record:
            m.record("soak")
        else:
            m.start()
        t0 = time.monotonic()
        next_sample, next_print, n = t0, t0 + 10, 0
        try:
            while True:
                now = time.monotonic() - t0
                for p in procs:
                    p.sample(now)
                met = m.metrics()
                for a, b in EDGES:
                    q = met[b]["inputs"].get(a, {}).get("queued")
                    if q is not None:
                        max_queued[f"{a}->{b}"] = max(max_queued[f"{a}->{b}"], q)
                down = [f"{n_}: {i['state']}" for n_, i in m.status()["nodes"].items()
                        if i["state"] not in ("running", "ready")]
                gone = [p.name for p in procs if p.gone]
                if down or gone:
                    failures.append(f"after {now:.0f} s: nodes not running ({', '.join(down) or 'none'}), "
                                    f"processes gone ({', '.join(gone) or 'none'})")
                    break
                if now >= seconds:
                    break
                if progress and time.monotonic() >= next_print:
                    next_print += 30 if seconds > 120 else 10
                    rss = ", ".join(f"{p.name} {p.rss[-1] / MB:.1f}" for p in procs if p.n)
                    print(f"  {now:4.0f} s: frames {met['frames']['steps']}, ticks {met['ticks']['steps']}; "
                          f"RSS MB: {rss}", flush=True)
                n += 1
                next_sample = t0 + n  # one sample a second, on absolute deadlines (no drift)
                time.sleep(max(0.0, next_sample - time.monotonic()))
        finally:
            tapping.clear()
            viewer.join(5)
            tap.close()
            elapsed = time.monotonic() - t0
            m.stop()
            unsubscribe()
        met = m.metrics()

        edges = []
        for a, b in EDGES:
            out, inp = met[a]["outputs"].get(b, {}), met[b]["inputs"].get(a, {})
            produced = met[a]["steps"] - met[a]["errors"]  # every step of these nodes returns one item
            e = {"edge": f"{a}->{b}", "policy": inp.get("policy"), "produced": produced, "sent": out.get("sent", 0),
                 "send_dropped": out.get("dropped", 0), "received": inp.get("received", 0),
                 "receive_dropped": inp.get("dropped", 0)}
            e["lost"] = produced - e["received"]
            edges.append(e)
            if e["policy"] != "all":
                failures.append(f"edge {a}->{b} has policy {e['policy']!r}, not 'all'")
            if e["lost"] or e["send_dropped"] or e["receive_dropped"]:
                failures.append(f"edge {a}->{b}: {e['lost']} lost, {e['send_dropped']} dropped sending, "
                                f"{e['receive_dropped']} dropped receiving (of {produced})")
        errors = {n_: met[n_]["errors"] for n_ in met}
        for n_, c in errors.items():
            if c:
                failures.append(f"node {n_}: {c} errors, last: {m.status()['nodes'][n_]['last_error']}")
        failures += tap_bad[:3]

        recorded = []
        if record:
            path = m.collect(progress=False)
            streams = cp.Session(path).streams()
            for node, name, source in (("camera", "cam", "camera"), ("ticker", "ticks", "ticker")):
                parts = [s for s in streams if s["node"] == node and s["name"] == name]
                samples = sum(s["samples"] for s in parts)
                truncated = any(s.get("truncated") for s in parts)
                made = met[source]["steps"]
                lost = sum(s.get("lost") or 0 for s in met[node]["recording"].get("streams", {}).values()
                           if isinstance(s, dict))
                recorded.append({"stream": f"{node}/{name}", "samples": samples, "produced": made,
                                 "lost": lost, "truncated": truncated})
                if samples != made or lost or truncated:
                    failures.append(f"recording {node}/{name}: {samples} samples written of {made} made "
                                    f"({lost} lost{', truncated' if truncated else ''})")
            shutil.rmtree(path, ignore_errors=True)

        summaries = [p.summary(warmup) for p in procs]
        for s in summaries:
            if s["growth_mb"] > max_growth_mb:
                failures.append(f"{s['group']} {s['name']} grew {s['growth_mb']:.1f} MB over "
                                f"{s['window_s']:.0f} s ({s['growth_mb_per_h']:.0f} MB/h), "
                                f"more than {max_growth_mb:g} MB")
        samples = min((s["samples"] for s in summaries), default=0)
        if samples < 0.8 * seconds:
            failures.append(f"only {samples} samples in {seconds:g} s")
        return SoakResult(
            seconds=elapsed,
            config={"frame_hz": frame_hz, "tick_hz": tick_hz, "record": record, "warmup_s": warmup,
                    "max_growth_mb": max_growth_mb, "workers": len(cluster.workers), "nodes": len(graph.nodes),
                    "frame_shape": list(FRAME_SHAPE)},
            processes=summaries, groups=_groups(summaries), edges=edges, recorded=recorded, node_errors=errors,
            delivered={"frames": next(e["received"] for e in edges if e["edge"] == "camera->frames"),
                       "ticks": next(e["received"] for e in edges if e["edge"] == "relay->ticks")},
            tap_frames=tap_frames[0], events=events[0], max_queued=max_queued, failures=failures,
            series={"t": [round(float(x), 3) for x in procs[0].t],
                    "rss_mb": {p.name: [round(float(r) / MB, 3) for r in p.rss] for p in procs}},
        )


# -------------------------------------------------------------------------------------------------
# output
# -------------------------------------------------------------------------------------------------
def report(r: SoakResult) -> str:
    """The result as plain-text tables."""
    c = r.config
    lines = [f"soak: {r.seconds:.0f} s on {c['workers']} workers, {c['nodes']} nodes: 640x480 image at "
             f"{c['frame_hz']:g} fps and small dicts at {c['tick_hz']:g} Hz over 'all' edges, recording "
             f"{'on' if c['record'] else 'off'}; growth fitted after {c['warmup_s']:.0f} s (MB = 10^6 B)", "",
             f"{'process':<10} {'group':<8} {'pid':>7} {'RSS start':>10} {'RSS end':>9} {'RSS max':>9} "
             f"{'growth/h':>10} {'over run':>9} {'CPU':>5} {'fds':>9}"]
    for p in r.processes:
        if not p["samples"]:
            lines.append(f"{p['name']:<10} {p['group']:<8} {p['pid']:>7} (gone before the first sample)")
            continue
        lines.append(f"{p['name']:<10} {p['group']:<8} {p['pid']:>7} {p['rss_start_mb']:>7.1f} MB "
                     f"{p['rss_end_mb']:>6.1f} MB {p['rss_max_mb']:>6.1f} MB {p['growth_mb_per_h']:>+7.1f} MB "
                     f"{p['growth_mb']:>+6.1f} MB {p['cpu_percent'] or 0:>4.0f}% "
                     f"{p['fds_start']:>4}→{p['fds_end']:<4}")
    lines += ["", f"{'group':<8} {'procs':>5} {'RSS start':>10} {'RSS end':>9} {'growth/h (sum)':>15} "
                  f"{'worst process':>22}"]
    for g, s in r.groups.items():
        worst = f"{s['worst']} {s['worst_growth_mb_per_h']:+.1f} MB/h" if s["worst"] else "—"
        lines.append(f"{g:<8} {s['processes']:>5} {s['rss_start_mb']:>7.1f} MB {s['rss_end_mb']:>6.1f} MB "
                     f"{s['growth_mb_per_h']:>+12.1f} MB {worst:>22}")
    lines += ["", f"{'edge (all)':<16} {'produced':>9} {'sent':>9} {'received':>9} {'dropped':>8} {'lost':>5} "
                  f"{'backlog':>8}"]
    for e in r.edges:
        lines.append(f"{e['edge']:<16} {e['produced']:>9} {e['sent']:>9} {e['received']:>9} "
                     f"{e['send_dropped'] + e['receive_dropped']:>8} {e['lost']:>5} {r.max_queued[e['edge']]:>8}")
    lines.append("(backlog: the most seen sent but not yet received, from reports up to 0.5 s apart)")
    for rec in r.recorded:
        lines.append(f"recorded {rec['stream']}: {rec['samples']} samples of {rec['produced']} made, "
                     f"{rec['lost']} lost")
    lines.append(f"delivered: {r.delivered['frames']} frames and {r.delivered['ticks']} small messages "
                 f"({r.lost} lost); the Manager's tap decoded {r.tap_frames} frames, {r.events} events emitted")
    lines.append("OK" if r.ok else "FAILED:\n  " + "\n  ".join(r.failures))
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=600.0, help="how long to run (default 600)")
    p.add_argument("--max-growth-mb", type=float, default=20.0,
                   help="fail if a process grows more than this over the run (fitted after the warm-up)")
    p.add_argument("--warmup", type=float, default=0.1, help="fraction of the run left out of the fit (0.1)")
    p.add_argument("--frame-hz", type=float, default=30.0, help="camera frames per second (30)")
    p.add_argument("--tick-hz", type=float, default=1000.0, help="small messages per second (1000)")
    p.add_argument("--no-record", action="store_true", help="do not record (the sources still run)")
    p.add_argument("--json", default="bench/results/soak.json", help="where to write the result")
    args = p.parse_args()
    print(f"chimera_lab soak: {args.seconds:g} s", flush=True)
    r = run(args.seconds, args.frame_hz, args.tick_hz, not args.no_record, args.warmup, args.max_growth_mb)
    print()
    print(report(r))
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = {"time": time.time(), "ok": r.ok, "lost": r.lost, **asdict(r)}
    path.write_text(json.dumps(out, indent=2))
    print(f"\nwritten to {path}")
    return 0 if r.ok else 1


if __name__ == "__main__":
    sys.exit(main())
