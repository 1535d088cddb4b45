"""Docker workers in `make bench`, each figure beside its reference from the same run:

- time from ``DockerCluster(n_workers=2)`` to both workers joined, cold (the worker image must be built) and warm
  (it exists; the median of a few), beside a ``LocalCluster(2)``;
- small-message latency, source on one container → sink on the other (``network="host"``), beside the same
  graph on two local worker processes and beside raw pyzmq (half a ping-pong round trip): bench/run.py's source
  and probe at 1 kHz, the item carrying its counter and the source's ``time.time()``, which the sink subtracts
  from its own (every process here, containers too, reads this machine's clock). ``chunk.created`` would add
  the source worker's clock-offset estimate, which on one machine is noise of tens to hundreds of µs.

Cold removes exactly one image: the ``chimera-lab-worker:<hash>`` tag this run's cluster will use
(``plan_image``), never another; its wheels then come from the on-disk wheel cache, not the network.
Without a reachable Docker engine it says so in one line and measures nothing.

    python bench/docker.py [--quick] [--base-image IMAGE]      (also part of `make bench`)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _import_docker_sdk() -> Any:
    """The Docker SDK, or None."""
    try:
        import docker

        return docker
    except ImportError:
        return None


_docker_sdk = _import_docker_sdk()
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import raw_pyzmq  # noqa: E402
import run as bench_run  # noqa: E402  (Source and Probe: the very nodes of bench/run.py's latency figure)

import chimera_lab as cp  # noqa: E402
from chimera_lab.cluster import DockerCluster, LocalCluster  # noqa: E402

cp.send_by_value(bench_run)  # the workers (containers included) never see bench/


class StampedSource(bench_run.Source):
    """bench/run.py's small-message source whose item carries its counter and its own time.time()."""

    def step(self) -> Any:
        self.i += 1
        if self.i > self.n:
            raise StopIteration
        return {"i": self.i, "t": time.time()}


class StampedProbe(bench_run.Probe):
    """bench/run.py's probe that also takes the one-way latency from the item's own stamp: `chunk.created`
    carries the source worker's clock-offset estimate (tens to hundreds of µs even on one machine), the stamp
    does not, and every process here reads the same clock."""

    def prep(self) -> None:
        super().prep()
        self.oneway: list[float] = []

    def step(self, data: dict[str, cp.DataChunk]) -> None:
        now = time.time()
        (chunk,) = data.values()
        self.arrivals.append(now)
        self.latency.append(now - chunk.created)
        self.oneway.append(now - chunk.get("default")["value"]["t"])

    def teardown(self) -> None:
        np.savez(self.out, arrivals=np.asarray(self.arrivals), latency=np.asarray(self.latency),
                 oneway=np.asarray(self.oneway))


if __name__ != "__main__":  # loaded by bench/run.py: ship these classes by value too
    cp.send_by_value(sys.modules[__name__])


def _message_bytes() -> int:
    """Bytes on the wire of one stamped item (signature, header, payload), as the source sends it."""
    from chimera_lab import wire
    from chimera_lab.datachunk import as_chunk

    chunk = as_chunk({"i": 1234, "t": time.time()})
    assert chunk is not None
    frames = wire.encode_chunk(wire.Signer(wire.new_key()), chunk, 1234, time.time(), [["source", time.time()]])
    return sum(len(f) for f in frames)


BASE_IMAGE = os.environ.get("CHIMERA_DOCKER_BASE_IMAGE") or "chimera-lab-base:bookworm"
PROBE_DIR = "/home/chimera/bench"  # the host folder the sink writes its samples to, inside a container


def _load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def _engine() -> Any:
    """A client of the Docker engine, or None (after one line saying why)."""
    from chimera_lab.cluster.docker import DockerError, docker_client

    if _docker_sdk is None:
        print("docker: the Docker SDK is not installed (pip install docker): Docker rows skipped", flush=True)
        return None
    try:
        return docker_client(timeout=30)
    except DockerError as exc:
        print(f"docker: {str(exc).split(' (')[0]}: Docker rows skipped", flush=True)
        return None


def _plan_tag(client: Any, base_image: str) -> str:
    """The worker image tag a DockerCluster on `base_image` would use now."""
    from chimera_lab.cluster.image import plan_image

    with tempfile.TemporaryDirectory(prefix="chimera-bench-plan-") as tmp:
        return plan_image(client, base_image, scratch=Path(tmp)).tag


def _remove_worker_image(client: Any, tag: str) -> str:
    """Remove the one worker image tag `tag` (never anything else); returns what happened."""
    assert tag.startswith("chimera-lab-worker:"), tag
    try:
        client.images.remove(tag)  # not forced: an image a container still uses stays
        return "removed"
    except _docker_sdk.errors.ImageNotFound:
        return "absent"
    except _docker_sdk.errors.APIError as exc:
        return f"kept ({exc.explanation or exc})"


def _built_since(client: Any, tag: str, base_image: str, since: float) -> bool:
    """Whether every layer image `tag` adds to its base was made at or after `since` (a cold build), not taken
    from the build cache (e.g. from another build of the same inputs running beside this one)."""
    try:
        history = client.images.get(tag).history()  # newest first
        added = len(history) - len(client.images.get(base_image).history())
        layers = history[:added]
        return added > 0 and min(int(h["Created"]) for h in layers) >= int(since) - 1
    except Exception:
        return True  # cannot tell: take the cluster's word for it


def _docker_ready(base_image: str, **kwargs: Any) -> tuple[float, DockerCluster, cp.Manager]:
    """(seconds from DockerCluster(2) to both workers joined, the cluster, its Manager); the caller closes them."""
    m = cp.Manager(port=0)
    try:
        t0 = time.perf_counter()
        c = m.add_workers(DockerCluster(2, base_image=base_image, progress=False, **kwargs))
        return time.perf_counter() - t0, c, m
    except BaseException:
        m.shutdown()
        raise


def _local_ready() -> float:
    """Seconds from LocalCluster(2) (given its Manager, as the DockerCluster is) to both workers joined."""
    with cp.Manager(port=0) as m:
        t0 = time.perf_counter()
        m.add_workers(LocalCluster(2))
        return time.perf_counter() - t0


def _latency(m: cp.Manager, workers: list[str], node_dir: str, host_dir: Path, n: int) -> dict[str, np.ndarray]:
    """bench/run.py's small-message latency: `n` small items at 1 kHz, source on workers[0] → probe on
    workers[1]; the probe's samples (s). The probe writes them to node_dir, seen here as host_dir."""
    g = cp.Graph()
    g.add_edge(StampedSource("source", "small", n, rate_hz=1000), StampedProbe("probe", f"{node_dir}/probe.npz"))
    m.commit_graph(g, {workers[0]: ["source"], workers[1]: ["probe"]})
    m.start()
    deadline = time.monotonic() + 60
    while m.status()["nodes"]["source"]["state"] != "stopped" and time.monotonic() < deadline:
        time.sleep(0.05)
    m.stop()
    m.reset()  # the probe's teardown writes its samples
    out = host_dir / "probe.npz"
    with np.load(out) as data:
        samples = {k: np.asarray(data[k]) for k in data.files}
    out.unlink()
    return samples


def measure_docker(quick: bool = False, base_image: str = BASE_IMAGE) -> list[dict[str, Any]]:
    """The Docker rows: time to ready cold and warm beside a LocalCluster, latency beside local and raw pyzmq."""
    client = _engine()
    if client is None:
        return []
    rows: list[dict[str, Any]] = []

    def row(what: str, ref: float | None, ours: float, unit: str, target: str, ok: bool, note: str = "") -> None:
        rows.append({"what": what, "raw_pyzmq": ref, "chimera_lab": float(ours), "unit": unit, "target": target,
                     "ok": bool(ok), "note": f"{note} [{_load()}]"})
        beside = "" if ref is None else f" (beside {ref:.4g} {unit})"
        print(f"  {what}: {ours:.4g} {unit}{beside} {note}", flush=True)

    t_start = time.perf_counter()
    print(f"Docker workers (base image {base_image}, network=host; {_load()})", flush=True)
    try:
        local = [_local_ready() for _ in range(2 if quick else 3)]
        local_s = float(np.median(local))

        # cold: the image this run's cluster will use is removed first, so it is built (from cached wheels)
        tag = _plan_tag(client, base_image)
        what = _remove_worker_image(client, tag)
        t_cold = time.time()
        cold_s, c, m = _docker_ready(base_image)
        try:
            cold_t, cold_built, cold_image = dict(c.timings), c.image_built, c.image
        finally:
            m.shutdown()
        if cold_image != tag:
            what += f"; but the cluster used {cold_image} (chimera_lab's files changed in between?)"
        if cold_built and not _built_since(client, cold_image, base_image, t_cold):
            print(f"  cold not measured: the build of {cold_image} reused cached layers (another build of the "
                  f"same inputs ran beside this one?): {cold_s:.1f} s; tag {tag}: {what}", flush=True)
        elif cold_built:
            row("DockerCluster(2) to workers ready, cold = image build from cached wheels "
                "(baseline: LocalCluster(2))", local_s, cold_s, "s", "shown beside", True,
                f"(image {cold_t['image']:.1f} s, containers {cold_t['containers']:.1f} s, joined "
                f"{cold_t['ready']:.1f} s; tag {tag}: {what})")
        else:
            print(f"  cold not measured: the image was there when the cluster looked (tag {tag}: {what}; another "
                  "process built it in between?)", flush=True)

        # warm: the image exists; the last warm cluster also carries the latency graph
        warm: list[float] = []
        parts: list[dict[str, float]] = []
        n = 800 if quick else 4000
        with tempfile.TemporaryDirectory(prefix="chimera-bench-docker-") as tmp:
            host_dir = Path(tmp)
            host_dir.chmod(0o777)  # the containers run as the user chimera (uid 10001)
            volume = {str(host_dir): {"bind": PROBE_DIR, "mode": "rw"}}
            repeats, attempts, last = (2 if quick else 3), 0, False
            while len(warm) < repeats and not last:
                attempts += 1
                last = attempts == repeats + 2 or time.perf_counter() - t_start > 120  # keep the part ≤ ~3 min
                took, c, m = _docker_ready(base_image, volumes=volume)
                try:
                    if c.image_built:  # chimera_lab's files changed since the last build: not a warm start
                        print(f"  a warm start built {c.image} ({took:.1f} s; chimera_lab's files changed?): "
                              "not counted", flush=True)
                    else:
                        warm.append(took)
                        parts.append(dict(c.timings))
                    if len(warm) == repeats or last:
                        docker_lat = _latency(m, c.worker_names, PROBE_DIR, host_dir, n)
                finally:
                    m.shutdown()
        if warm:
            k = int(np.argsort(warm)[len(warm) // 2])
            row("DockerCluster(2) to workers ready, warm = image exists, median (baseline: LocalCluster(2))",
                local_s, float(np.median(warm)), "s", "shown beside", True,
                f"(of {', '.join(f'{w:.2f}' for w in warm)} s; median run: image check {parts[k]['image']:.2f} s, "
                f"containers {parts[k]['containers']:.2f} s, joined {parts[k]['ready']:.2f} s; LocalCluster "
                f"{', '.join(f'{x:.2f}' for x in local)} s)")

        # the same graph on two local worker processes, then raw pyzmq, right after the containers
        with tempfile.TemporaryDirectory(prefix="chimera-bench-local-") as tmp, LocalCluster(2) as lc:
            local_lat = _latency(lc.manager, lc.workers, tmp, Path(tmp), n)
        raw = raw_pyzmq.small_latency(quick=quick)
        d50, d99 = (float(v) * 1e3 for v in np.percentile(docker_lat["oneway"], [50, 99]))
        l50, l99 = (float(v) * 1e3 for v in np.percentile(local_lat["oneway"], [50, 99]))
        c50 = float(np.percentile(docker_lat["latency"], 50)) * 1e6
        lc50 = float(np.percentile(local_lat["latency"], 50)) * 1e6
        r50, r99 = raw["oneway_p50_us"] / 1e3, raw["rtt_p99_us"] / 2e3
        lost = f"{n - len(docker_lat['oneway'])} of {n} lost in containers, {n - len(local_lat['oneway'])} locally"
        row("small message latency p50, source→sink on 2 Docker workers (host network)", r50, d50, "ms",
            "≤ 0.25 ms", d50 <= 0.25,
            f"(2 local workers: {l50 * 1e3:.0f} µs; {_message_bytes()} B per message at 1 kHz; {lost}; "
            f"from chunk.created as bench/run.py does: {c50:.0f} µs in containers, {lc50:.0f} µs locally)")
        row("small message latency p99, source→sink on 2 Docker workers (host network)", r99, d99, "ms",
            "shown beside", True, f"(2 local workers: {l99 * 1e3:.0f} µs; raw: half the round trip's p99)")
    except Exception as exc:  # a broken engine must not end `make bench`
        print(f"docker: failed after {time.perf_counter() - t_start:.0f} s: {type(exc).__name__}: {exc}", flush=True)
    finally:
        client.close()
    print(f"  Docker part: {time.perf_counter() - t_start:.0f} s; {_load()}", flush=True)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer repeats and messages")
    p.add_argument("--base-image", default=BASE_IMAGE, help="what the worker image is built from")
    args = p.parse_args()
    rows = measure_docker(args.quick, args.base_image)
    if rows:
        print()
        print(bench_run.markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
