"""The distributed-ML figures of the performance budget, each beside its baseline from the same run: a raw pyzmq
round of the same size for communication, scikit-learn for accuracy and fit time.

    python bench/ml.py [--quick]      (also part of `make bench`)
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import raw_pyzmq  # noqa: E402

import chimera_lab.ml as chimera  # noqa: E402
from chimera_lab.cluster import LocalCluster  # noqa: E402
from chimera_lab.ml.linear import Penalty, Problem  # noqa: E402
from chimera_lab.ml.rounds import Channel  # noqa: E402
from chimera_lab.ml.shards import Arrays, place_all  # noqa: E402


def _row(what: str, baseline: float | None, ours: float, unit: str, target: str, ok: bool, note: str = ""
         ) -> dict[str, Any]:
    print(f"  {what}: {ours:.4g} {unit} (baseline {baseline if baseline is None else f'{baseline:.4g}'}; "
          f"target {target}) {'ok' if ok else 'MISSED'}", flush=True)
    return {"what": what, "raw_pyzmq": baseline, "chimera_lab": ours, "unit": unit, "target": target, "ok": ok,
            "note": note}


def round_communication(cluster: LocalCluster, n: int, blocks: int = 8) -> tuple[float, float]:
    """p50 seconds of one synchronous round's communication (50 parameters to and from each of 2 workers), ours
    and raw pyzmq's, measured in alternating blocks so that both see the same machine."""
    m, workers = cluster.manager, cluster.workers
    rng = np.random.default_rng(0)
    X, y = rng.random((8, 49)), np.array([0, 1] * 4)
    place_all(m, [(w, "bench", Arrays(X, y)) for w in workers], classifier=True)
    problem = Problem("log_loss", 1, 49, np.array([0, 1]))
    channel = Channel(m, workers, "bench", problem, Penalty("l2", 1e-4), dict.fromkeys(workers, 0))
    theta = np.zeros(problem.size)
    per_block = max(50, n // blocks)
    ours, raw = [], []
    try:
        with raw_pyzmq.EchoWorkers(len(workers), problem.size) as echo:
            for _ in range(blocks):
                raw.append(echo.rounds(per_block))
                comm = np.empty(per_block)
                for i in range(-50, per_block):
                    t0 = time.perf_counter()
                    answers = channel.ask("grad", theta)
                    wall = time.perf_counter() - t0
                    if i >= 0:  # the workers' compute is theirs, not the channel's
                        comm[i] = wall - max(a.compute for a in answers.values())
                ours.append(comm)
    finally:
        channel.close()
    return float(np.median(np.concatenate(ours))), float(np.median(np.concatenate(raw)))


def measure_ml(quick: bool) -> list[dict[str, Any]]:
    """Every ML row of the budget."""
    from sklearn.datasets import make_classification
    from sklearn.ensemble import BaggingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    rows = []
    print("distributed ML (2 worker processes)", flush=True)
    with LocalCluster(2, prefix="bench") as cluster:
        ours, raw = round_communication(cluster, 800 if quick else 4000)
        rows.append(_row("one synchronous SGD round, 50 floats, 2 workers, communication only", raw * 1e3,
                         ours * 1e3, "ms", "≤ 2× raw", ours <= 2 * raw))

        n = 40_000 if quick else 200_000
        X, y = make_classification(n, 50, n_informative=20, random_state=0)
        X = StandardScaler().fit_transform(X)
        t0 = time.perf_counter()
        reference = LogisticRegression(max_iter=1000).fit(X, y)
        sk_time = time.perf_counter() - t0
        sk_acc = reference.score(X, y)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            est = chimera.DistributedSGDClassifier(cluster=cluster.manager, max_iter=100, random_state=0,
                                                   progress=False).fit(X, y)
            fit_time = time.perf_counter() - t0
        acc = est.score(X, y)
        rounds = est.history_
        note = (f"{len(rounds)} rounds; per round {1e3 * rounds['compute_s'].median():.1f} ms compute, "
                f"{1e3 * rounds['comm_s'].median():.2f} ms communication (p50)")
        rows.append(_row(f"distributed SGD, {n // 1000}k×50 binary, 2 workers: accuracy (baseline: scikit-learn "
                         "LogisticRegression)", 100 * sk_acc, 100 * acc, "%", "within 1 point",
                         abs(acc - sk_acc) <= 0.01, note))
        rows.append(_row(f"distributed SGD, {n // 1000}k×50: whole fit (baseline: LogisticRegression)", sk_time,
                         fit_time, "s", "shown beside", True, note))

        nb = 20_000 if quick else 60_000
        Xb, yb = make_classification(nb, 20, n_informative=10, random_state=1)
        trees = 4
        t0 = time.perf_counter()
        BaggingClassifier(DecisionTreeClassifier(), n_estimators=trees, random_state=0).fit(Xb, yb)
        serial = time.perf_counter() - t0
        chimera.DistributedBaggingClassifier(DecisionTreeClassifier(), 2, cluster=cluster.manager,
                                             progress=False).fit(Xb[:100], yb[:100])  # workers import sklearn
        t0 = time.perf_counter()
        chimera.DistributedBaggingClassifier(DecisionTreeClassifier(), trees, cluster=cluster.manager,
                                             random_state=0, progress=False).fit(Xb, yb)
        distributed = time.perf_counter() - t0
        speedup = serial / distributed
        rows.append(_row(f"bagging {trees} trees on 2 workers ({nb // 1000}k×20): speed-up over serial "
                         f"scikit-learn ({serial:.2f} s → {distributed:.2f} s)", 1.0, speedup, "×", "≥ 1.6×",
                         speedup >= 1.6))
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller data, fewer rounds")
    args = p.parse_args()
    rows = measure_ml(args.quick)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
