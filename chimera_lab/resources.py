"""What this machine lets us use, and a cluster sized to fit it.

A classroom notebook server (Binder, JupyterHub) runs in a container: ``os.cpu_count()`` and ``/proc/meminfo``
describe the whole host, while the container's cgroup allows perhaps one CPU and 2 GB. ``detect()`` reads both and
keeps the tighter figure; ``size_cluster()`` turns it into worker count, queue bound, frame size and node mode, with
a sentence for each choice. ``%chimera up`` without ``--workers`` uses them.

The memory model is deliberately simple and errs on the safe side (resident sizes measured on Linux, Python 3.11,
shared libraries counted in each process): an idle worker is ~55 MB, a node process (mode="process") with numpy
and OpenCV ~70-80 MB, and every "all" edge may queue ``queue_bound`` messages at each end.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

MB = 1 << 20
GB = 1 << 30
UNLIMITED = 1 << 60  # cgroup v1 reports "no limit" as a huge number (PAGE_COUNTER_MAX pages)

# the model behind size_cluster (resident memory, measured on Linux with Python 3.11; see the module doc)
KERNEL_GROWTH_MB = 300  # what a tutorial kernel grows by after `up` (scikit-learn, matplotlib, data, views)
WORKER_MB = 60  # an idle worker process
NODE_MB = 80  # one node process with numpy and OpenCV imported, beside its worker
NODES_PER_WORKER = 3  # what a tutorial graph puts on each worker
FRAMES = {"large": (640, 480), "small": (320, 240)}


@dataclass(frozen=True)
class Resources:
    """CPUs and memory this process may use, and where the figures came from."""

    cpus: float  # CPU affinity, capped by a cgroup CPU quota
    memory_limit: int  # bytes: the tightest cgroup memory limit, else the machine's RAM
    memory_available: int  # bytes that can still be allocated under that limit
    limited_by: str  # "cgroup v2 /path", "cgroup v1 /path" or "physical memory"
    docker: bool | None = None  # a Docker engine answered (None: not asked)

    @property
    def constrained(self) -> bool:
        """Little memory or CPU, as in a classroom server."""
        return self.memory_available < 3 * GB or self.cpus < 2

    def __str__(self) -> str:
        cpus = f"{self.cpus:g} CPU" + ("" if self.cpus == 1 else "s")
        mem = f"{_gb(self.memory_available)} free of {_gb(self.memory_limit)} ({self.limited_by})"
        docker = {None: "", True: ", Docker engine available", False: ", no Docker engine"}[self.docker]
        return f"{cpus}, {mem}{docker}"


@dataclass(frozen=True)
class Sizing:
    """A cluster that fits: what ``%chimera up`` starts, and why."""

    workers: int
    queue_bound: int  # messages an "all" edge may hold at each end before the producer waits
    frame_size: tuple[int, int]  # (width, height) of frames from sources not told otherwise
    mode: str  # "process" (a process per node) or "thread" (nodes share their worker's process)
    resources: Resources
    why: list[str] = field(default_factory=list)

    def estimate(self) -> int:
        """Bytes this cluster is expected to hold (the model in the module doc; frames JPEG-compressed ~10:1)."""
        frame = self.frame_size[0] * self.frame_size[1] * 3
        nodes = self.workers * NODES_PER_WORKER
        per_node = (NODE_MB * MB if self.mode == "process" else 15 * MB) + 2 * self.queue_bound * frame // 10
        return self.workers * WORKER_MB * MB + nodes * per_node

    @property
    def settings(self) -> str:
        """What the cluster is told: "queues of 16 messages, frames 320×240, nodes as threads"."""
        w, h = self.frame_size
        return (f"queues of {self.queue_bound} messages, frames {w}×{h}, "
                f"nodes as {'threads' if self.mode == 'thread' else 'processes'}")

    def __str__(self) -> str:
        return (f"{self.workers} local worker{'s' if self.workers != 1 else ''}, {self.settings} "
                f"(about {_gb(self.estimate())}); for {self.resources}")


def _gb(n: int) -> str:
    return f"{n / GB:.1f} GB" if n >= GB else f"{n / MB:.0f} MB"


# -- detection -----------------------------------------------------------------------------------------------
def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None  # "max" (cgroup v2: no limit)


def _stat(path: Path, key: str) -> int:
    for line in (_read(path) or "").splitlines():
        k, _, v = line.partition(" ")
        if k == key:
            return _int(v) or 0
    return 0


def _cgroup_dirs(root: Path, controller: str) -> tuple[str, list[Path]]:
    """("v1"|"v2", this process's cgroup folder and its ancestors up to the mount) for one controller."""
    lines = [ln.split(":", 2) for ln in (_read(root / "proc/self/cgroup") or "").splitlines() if ln.count(":") >= 2]
    base = root / "sys/fs/cgroup"
    v1 = [(ctl.split(","), path) for _, ctl, path in lines if controller in ctl.split(",")]
    if v1:  # cgroup v1: the controller has its own hierarchy, mounted at cgroup/cpu or cgroup/cpu,cpuacct
        version, path = "v1", v1[0][1]
        mount = next((base / name for name in (controller, ",".join(v1[0][0])) if (base / name).is_dir()), None)
    else:  # cgroup v2: one hierarchy, this process's line is "0::/path"
        version, path = "v2", next((p for h, ctl, p in lines if h == "0" and not ctl), "")
        mount = base if (base / "cgroup.controllers").exists() else None
    if mount is None:
        return "", []
    parts = [p for p in path.strip("/").split("/") if p]
    dirs = [d for d in (mount.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)) if d.is_dir()]
    return version, dirs or [mount]  # inside a cgroup namespace the mount is our own cgroup


def _memory(root: Path) -> tuple[int, int, str]:
    """(limit, available, what limits it), the tightest of the cgroup chain and physical memory."""
    meminfo = {k: _int(v.split()[0]) or 0 for k, _, v in
               (ln.partition(":") for ln in (_read(root / "proc/meminfo") or "").splitlines()) if v.strip()}
    limit, available = meminfo.get("MemTotal", 0) * 1024, meminfo.get("MemAvailable", 0) * 1024
    by = "physical memory"
    version, dirs = _cgroup_dirs(root, "memory")
    for d in dirs:
        if version == "v2":
            lim, used = _int(_read(d / "memory.max")), _int(_read(d / "memory.current"))
            cache = _stat(d / "memory.stat", "inactive_file")
        else:
            lim, used = _int(_read(d / "memory.limit_in_bytes")), _int(_read(d / "memory.usage_in_bytes"))
            cache = _stat(d / "memory.stat", "total_inactive_file")
        if lim is None or lim >= UNLIMITED or used is None or (limit and lim >= limit):
            continue
        free = max(0, lim - max(0, used - cache))
        if lim < limit or not limit:
            limit, by = lim, f"cgroup {version} /{d.relative_to(root / 'sys/fs/cgroup')}"
        available = min(available, free) if available else free
    return limit, available, by


def _cpus(root: Path) -> float:
    try:
        cpus = float(len(os.sched_getaffinity(0))) if root == Path("/") else float(os.cpu_count() or 1)
    except AttributeError:  # not Linux
        cpus = float(os.cpu_count() or 1)
    version, dirs = _cgroup_dirs(root, "cpu")
    for d in dirs:
        if version == "v2":
            quota_text, _, period_text = (_read(d / "cpu.max") or "max").partition(" ")
            quota, period = _int(quota_text), _int(period_text)
        else:
            quota, period = _int(_read(d / "cpu.cfs_quota_us")), _int(_read(d / "cpu.cfs_period_us"))
        if quota is not None and quota > 0 and period:
            cpus = min(cpus, max(0.1, quota / period))
    return round(cpus, 2)


def docker_available(timeout: float = 2.0) -> bool:
    """Whether a Docker engine answers at DOCKER_HOST (or the default socket); never raises."""
    try:
        import docker

        client = docker.from_env(timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def detect(check_docker: bool = False, root: str | os.PathLike[str] = "/") -> Resources:
    """The CPUs and memory this process may use (``root`` is for tests: a folder laid out like ``/``)."""
    r = Path(root)
    limit, available, by = _memory(r)
    return Resources(cpus=_cpus(r), memory_limit=limit, memory_available=available, limited_by=by,
                     docker=docker_available() if check_docker else None)


# -- sizing --------------------------------------------------------------------------------------------------
def size_cluster(resources: Resources | None = None, workers: int | None = None, mode: str | None = None,
                 max_workers: int = 4) -> Sizing:
    """The cluster to start here: workers, queue bound, frame size and node mode that fit the memory.

    ``workers``/``mode`` given by the user are kept (the sizing then only adapts queues and frames, and says
    when the request does not fit). Otherwise: one worker per CPU, between 2 (distribution is what the tutorials
    teach) and ``max_workers``, fewer if memory cannot hold them.
    """
    res = resources or detect()
    budget = max(0, int(res.memory_available * 0.9) - KERNEL_GROWTH_MB * MB)  # room beside the notebook's own work
    why: list[str] = []
    n = workers if workers is not None else min(max_workers, max(2, int(res.cpus)))
    if workers is None:
        why.append(f"{_workers(n)} for {res.cpus:g} CPU{'s' if res.cpus != 1 else ''}"
                   + (" (2 at least, to show distribution)" if res.cpus < 2 else ""))
    choice = Sizing(n, 64, FRAMES["large"], mode or "process", res)

    def fewer_workers(floor: int) -> Sizing:
        return replace(choice, workers=choice.workers - 1) if workers is None and choice.workers > floor else choice

    # cheapest first: shorter queues, smaller frames, fewer workers (down to 2), nodes as threads, one worker
    steps = [(lambda: replace(choice, queue_bound=16), "queues of 16 messages instead of 64"),
             (lambda: replace(choice, frame_size=FRAMES["small"]), "frames 320×240 instead of 640×480"),
             *[(lambda: fewer_workers(2), "") for _ in range(max_workers)],
             (lambda: replace(choice, mode="thread") if mode is None else choice,
              "nodes as threads of their worker (one process per worker, not per node)"),
             (lambda: fewer_workers(1), "")]
    for make, text in steps:
        if choice.estimate() <= budget:
            break
        smaller = make()
        if smaller != choice:
            choice = smaller
            why.append(f"{text or _workers(choice.workers)}, to fit {_gb(budget)}")
    if choice.estimate() > budget:
        why.append(f"this still needs about {_gb(choice.estimate())}, more than the {_gb(budget)} there is to spare: "
                   "expect the kernel to be killed; "
                   + ("use --workers 1, " if choice.workers > 1 else "") + "shut down other notebooks' kernels, or "
                   "ask for more memory")
    return replace(choice, why=why)


def _workers(n: int) -> str:
    return f"{n} worker{'s' if n != 1 else ''}"


# -- the frame size of sources not told otherwise --------------------------------------------------------------
_frame_size: tuple[int, int] = FRAMES["large"]


def default_frame_size() -> tuple[int, int]:
    """(width, height) a TestPatternSource makes when not given a size: 640×480 unless ``%chimera up`` chose less."""
    return _frame_size


def set_default_frame_size(width: int, height: int) -> None:
    """Set what :func:`default_frame_size` returns (``%chimera up`` sets it from its sizing)."""
    global _frame_size
    if width < 1 or height < 1:
        raise ValueError(f"a frame size needs positive width and height, got {width}×{height}")
    _frame_size = (int(width), int(height))
