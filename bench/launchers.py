"""Time to N workers ready (N = 1, 2, 4) for every launcher, side by side: LocalCluster, DockerCluster, SlurmCluster,
SwarmCluster, each measured as ``manager.add_workers(Launcher(N))`` on a Manager that already runs, from the call
to every worker joined; the median of a few runs. Docker and Swarm are measured warm (the worker image exists: the
first, untimed, run builds it if needed). An engine that is not there is said so and left out.

    python bench/launchers.py [--quick]

Engines: Docker from DOCKER_HOST or the local socket; the swarm from CHIMERA_SWARM_URL; Slurm from slurm.conf.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import chimera_lab as cp
from chimera_lab.cluster import DockerCluster, Launcher, LocalCluster
from chimera_lab.cluster.slurm import SlurmCluster
from chimera_lab.cluster.swarm import SwarmCluster

BASE_IMAGE = os.environ.get("CHIMERA_DOCKER_BASE_IMAGE") or "chimera-lab-base:bookworm"
SIZES = (1, 2, 4)


def _docker(url: str | None) -> str | None:
    """Why Docker (or a swarm, with `url`) cannot be measured, or None if it can."""
    try:
        import docker

        client = docker.DockerClient(base_url=url) if url else docker.from_env()
        try:
            if url and (client.info().get("Swarm") or {}).get("LocalNodeState") != "active":
                return f"the engine at {url} is not a swarm"
            client.images.get(BASE_IMAGE)
        finally:
            client.close()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _slurm() -> str | None:
    """Why Slurm cannot be measured, or None if it can."""
    if not shutil.which("scontrol"):
        return "Slurm's commands are not installed"
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20)
    return None if " is UP" in ping.stdout else f"no controller ({ping.stdout.strip() or ping.stderr.strip()})"


def engines() -> dict[str, tuple[Callable[[int], Launcher] | None, str]]:
    """Per launcher: a factory of an N-worker launcher (None if the engine is absent) and a note."""
    swarm_url = os.environ.get("CHIMERA_SWARM_URL")
    docker_why, swarm_why, slurm_why = _docker(None), _docker(swarm_url) if swarm_url else "CHIMERA_SWARM_URL unset", \
        _slurm()
    return {
        "LocalCluster": (lambda n: LocalCluster(n), "worker processes"),
        "DockerCluster": (None if docker_why else lambda n: DockerCluster(n, base_image=BASE_IMAGE, progress=False),
                          docker_why or "containers, host network, image exists"),
        "SlurmCluster": (None if slurm_why else lambda n: SlurmCluster(jobs=n, cores=1, memory="1G"),
                         slurm_why or "a batch job per worker, 1 core / 1G each"),
        "SwarmCluster": (None if swarm_why else lambda n: SwarmCluster(n, docker_url=swarm_url, base_image=BASE_IMAGE,
                                                                     progress=False),
                         swarm_why or "replicas of one service, host network, image exists"),
    }


def time_to_ready(make: Callable[[int], Launcher], n: int) -> float:
    """Seconds from manager.add_workers(make(n)) to all n workers joined (the Manager already runs)."""
    with cp.Manager(port=0) as m:
        launcher = make(n)
        t0 = time.perf_counter()
        m.add_workers(launcher)
        took = time.perf_counter() - t0
        assert len(launcher.alive) == n and all(m.workers[w].state == "connected" for w in launcher.alive)
    return took


def measure_launchers(quick: bool = False) -> list[dict[str, Any]]:
    """The rows: per launcher and N, the median time to ready, beside LocalCluster(N) from the same run."""
    repeats = 1 if quick else 3
    found = engines()
    results: dict[str, dict[int, float]] = {}
    print("Time to N workers ready, per launcher (median of "
          f"{repeats}; {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f})", flush=True)
    for name, (make, note) in found.items():
        if make is None:
            print(f"  {name}: not measured: {note}", flush=True)
            continue
        try:
            time_to_ready(make, 1)  # untimed: builds the worker image if needed, warms caches
            results[name] = {n: statistics.median(time_to_ready(make, n) for _ in range(repeats)) for n in SIZES}
        except Exception as exc:  # a broken engine must not end `make bench`
            print(f"  {name}: failed: {type(exc).__name__}: {exc}", flush=True)
            continue
        print(f"  {name} ({note}): " + ", ".join(f"N={n} {t:.2f} s" for n, t in results[name].items()), flush=True)
    rows = []
    local = results.get("LocalCluster", {})
    for name, by_n in results.items():
        for n, took in by_n.items():
            rows.append({"what": f"{name}({n}) to workers ready (baseline: LocalCluster({n}))",
                         "raw_pyzmq": local.get(n), "chimera_lab": took, "unit": "s", "target": "shown beside",
                         "ok": True, "note": found[name][1]})
    if results:
        print("\n| N | " + " | ".join(results) + " |\n|---|" + "---|" * len(results))
        for n in SIZES:
            print(f"| {n} | " + " | ".join(f"{results[k][n]:.2f} s" for k in results) + " |")
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one run per size")
    args = p.parse_args()
    measure_launchers(args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
