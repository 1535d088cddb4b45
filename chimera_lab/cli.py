"""The `chimera-lab` command: `chimera-lab demo` runs the built-in video pipeline on a local cluster."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from .cluster import LocalCluster
from .graph import Graph


def format_table(metrics: dict[str, dict[str, Any]]) -> str:
    """A plain-text table of per-node rate, latency, drops and errors."""
    head = ("node", "worker", "kind", "steps", "steps/s", "p50 ms", "p99 ms", "dropped", "errors")
    rows = [head]
    for name, m in metrics.items():
        dropped = sum(e["dropped"] for e in m["inputs"].values()) + sum(
            e.get("dropped", 0) for e in m["outputs"].values())
        rows.append((name, m["worker"], m["kind"], str(m["steps"]), f"{m['rate']:.1f}",
                     "-" if m["latency_p50_ms"] is None else f"{m['latency_p50_ms']:.2f}",
                     "-" if m["latency_p99_ms"] is None else f"{m['latency_p99_ms']:.2f}",
                     str(dropped), str(m["errors"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def demo(seconds: float = 10.0, fps: float = 30.0, workers: int = 2, width: int = 640, height: int = 480) -> int:
    """Test pattern -> edge detection -> stats sink across local worker processes; print a table."""
    from .nodes import EdgeDetect, StatsSink, TestPatternSource

    t0 = time.monotonic()
    print(f"chimera-lab demo: starting a local cluster of {workers} worker processes ...", flush=True)
    with LocalCluster(workers) as cluster:
        m = cluster.manager
        w = cluster.workers
        source = TestPatternSource("camera", width=width, height=height, rate_hz=fps)
        edges = EdgeDetect("edges")
        sink = StatsSink("stats")
        graph = Graph()
        graph.add_edge(source, edges)
        graph.add_edge(edges, sink)
        mapping = {w[0]: ["camera", "stats"], w[-1]: ["edges"]} if len(w) > 1 else {w[0]: ["camera", "edges", "stats"]}
        m.commit_graph(graph, mapping)
        print(f"committed {len(graph)} nodes on {len(w)} workers in {time.monotonic() - t0:.2f} s; "
              f"streaming {width}x{height} frames at {fps:g} fps for {seconds:g} s", flush=True)
        m.start()
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(1.0, left))
            met = m.metrics()
            s = met["stats"]
            p50 = s["latency_p50_ms"]
            print(f"  {seconds - max(end - time.monotonic(), 0):4.0f} s  frames at sink: {s['steps']:5d}  "
                  f"{s['rate']:5.1f} fps  latency p50 {'-' if p50 is None else f'{p50:.1f} ms'}", flush=True)
        m.stop()
        met = m.metrics()
        print()
        print(format_table(met))
        errors = sum(x["errors"] for x in met.values())
        ok = met["stats"]["steps"] > 0 and errors == 0
        print(f"\n{'OK' if ok else 'PROBLEM'}: {met['stats']['steps']} frames delivered, {errors} errors")
        return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of `chimera-lab`."""
    p = argparse.ArgumentParser(prog="chimera-lab", description="chimera_lab command line")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="run the built-in video pipeline on a local cluster and print a table")
    d.add_argument("--seconds", type=float, default=10.0)
    d.add_argument("--fps", type=float, default=30.0)
    d.add_argument("--workers", type=int, default=2)
    d.add_argument("--width", type=int, default=640)
    d.add_argument("--height", type=int, default=480)
    sub.add_parser("worker", help="run a worker (same as cp-worker)", add_help=False)
    sub.add_parser("classroom-check", help="run notebooks as a classroom server would: time and peak memory each",
                   add_help=False)
    args, rest = p.parse_known_args(argv)
    if args.command == "worker":
        from .worker import main as worker_main

        return worker_main(rest)
    if args.command == "classroom-check":
        from .classroom import main as classroom_main

        return classroom_main(rest)
    if rest:
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    return demo(args.seconds, args.fps, args.workers, args.width, args.height)


if __name__ == "__main__":
    sys.exit(main())
