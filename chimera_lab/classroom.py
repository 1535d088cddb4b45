"""``chimera-lab classroom-check``: run notebooks the way a classroom server would, and report time and memory.

Each notebook runs top to bottom (nbclient, a fresh kernel) in a copy of its folder, under a memory limit on the
kernel and everything it starts (default 2 GB: a cgroup, as Binder's container has; a watchdog where this process
may not make cgroups), without a Docker engine (unless ``--docker``), with a fresh HOME. The check fails when a
notebook raises, writes to stderr, takes longer than the time budget or holds more than the memory budget.

    chimera-lab classroom-check notebooks/ --memory-limit 2G --memory-budget 1.5G --time-budget 120
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .resources import GB, MB, UNLIMITED

CGROUP = Path("/sys/fs/cgroup")


def parse_size(text: str) -> int:
    """Bytes in '2G', '1.5G', '512M', '2GB' or a plain number of bytes."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    units = {"K": 1 << 10, "M": MB, "G": GB}
    try:
        return int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(t)
    except ValueError:
        raise ValueError(f"cannot read the size {text!r}: write it like 2G, 1.5G or 512M") from None


def _fmt(n: int | None) -> str:
    return "-" if n is None else f"{n / GB:.2f} GB" if n >= GB else f"{n / MB:.0f} MB"


def _write(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _pss(pid: int) -> int:
    """Proportional set size of a process in bytes (shared pages split between their users); 0 once it is gone."""
    for name, key in (("smaps_rollup", "Pss:"), ("status", "VmRSS:")):
        try:
            with open(f"/proc/{pid}/{name}") as f:
                for line in f:
                    if line.startswith(key):
                        return int(line.split()[1]) * 1024
        except OSError:
            continue
    return 0


def _descendants(root: int) -> list[int]:
    """`root` and every process below it (read from /proc)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


class MemoryCage:
    """A memory limit on a process and all it starts: a cgroup of its own (v2 or v1), else a watchdog.

    ``Popen(..., preexec_fn=cage.enter)`` puts the child in it; ``sample()`` while it runs follows the peak;
    ``close()`` ends what is left in it and removes the cgroup. ``method`` says how the limit is enforced.
    """

    def __init__(self, limit: int, name: str = "chimera-classroom") -> None:
        self.limit = limit
        self.peak = 0  # the cgroup's own peak (memory the limit counts: processes and their page cache)
        self.peak_pss = 0  # the largest sampled sum of the processes' PSS
        self.oom = False
        self.dir: Path | None = None
        self.version = ""
        self.root_pid: int | None = None
        self.method = "watchdog"
        self._make(f"{name}-{os.getpid()}-{time.monotonic_ns()}")

    # -- set up ---------------------------------------------------------------------------------------------
    def _make(self, name: str) -> None:
        lines = (Path("/proc/self/cgroup").read_text() if Path("/proc/self/cgroup").exists() else "").splitlines()
        v1 = next((ln.split(":", 2)[2] for ln in lines if "memory" in ln.split(":", 2)[1].split(",")), None)
        try:
            if v1 is not None and (CGROUP / "memory").is_dir():
                d = CGROUP / "memory" / v1.strip("/") / name
                d.mkdir()
                self.dir, self.version = d, "v1"
                _write(d / "memory.limit_in_bytes", str(self.limit))
                if (d / "memory.memsw.limit_in_bytes").exists():
                    try:  # no swapping around the limit either
                        _write(d / "memory.memsw.limit_in_bytes", str(self.limit))
                    except OSError:
                        pass
            elif (CGROUP / "cgroup.controllers").exists():
                if "memory" not in (CGROUP / "cgroup.subtree_control").read_text().split():
                    _write(CGROUP / "cgroup.subtree_control", "+memory")
                d = CGROUP / name
                d.mkdir()
                self.dir, self.version = d, "v2"
                _write(d / "memory.max", str(self.limit))
                _write(d / "memory.swap.max", "0")
            else:
                return
            self.method = f"cgroup {self.version}"
        except OSError:
            if self.dir is not None:
                self._remove()
            self.dir, self.version, self.method = None, "", "watchdog"

    def enter(self) -> None:
        """Put the calling process in the cage (``preexec_fn`` of the child to limit)."""
        if self.dir is not None:
            _write(self.dir / "cgroup.procs", str(os.getpid()))

    # -- while it runs -------------------------------------------------------------------------------------------
    def pids(self) -> list[int]:
        """The processes in the cage now."""
        if self.dir is not None:
            try:
                return [int(p) for p in (self.dir / "cgroup.procs").read_text().split()]
            except OSError:
                return []
        return _descendants(self.root_pid) if self.root_pid is not None else []

    def sample(self) -> int:
        """Memory used now (bytes); updates the peaks; the watchdog ends everything over the limit."""
        pss = sum(_pss(p) for p in self.pids())
        self.peak_pss = max(self.peak_pss, pss)
        if self.dir is None:
            self.peak = self.peak_pss
            if pss > self.limit:
                self.oom = True
                self.kill()
            return pss
        names = ("memory.max_usage_in_bytes", "memory.usage_in_bytes") if self.version == "v1" else \
            ("memory.peak", "memory.current")
        for n in names:
            try:
                value = int((self.dir / n).read_text())
            except (OSError, ValueError):
                continue
            if value < UNLIMITED:
                self.peak = max(self.peak, value)
                break
        try:
            events = (self.dir / ("memory.oom_control" if self.version == "v1" else "memory.events")).read_text()
            self.oom = self.oom or any(ln.split()[0] == "oom_kill" and int(ln.split()[1]) > 0
                                       for ln in events.splitlines() if len(ln.split()) == 2)
        except (OSError, ValueError):
            pass
        return pss

    # -- tear down -----------------------------------------------------------------------------------------------
    def kill(self) -> None:
        """End every process in the cage (all were started by the process this cage was made for)."""
        for pid in self.pids():
            if pid != os.getpid():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def close(self, timeout: float = 10.0) -> None:
        """End what is left and remove the cgroup."""
        self.sample()
        deadline = time.monotonic() + timeout
        while self.pids() and time.monotonic() < deadline:
            self.kill()
            time.sleep(0.05)
        self._remove()

    def _remove(self) -> None:
        if self.dir is not None:
            try:
                self.dir.rmdir()
            except OSError:
                pass


# -- running one notebook --------------------------------------------------------------------------------------
def run_one(path: Path, out: Path, timeout: float) -> dict[str, Any]:
    """Execute a notebook in its folder with nbclient; what went wrong, what it wrote to stderr, its slowest cells."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=True,
                            resources={"metadata": {"path": str(path.parent)}})
    error = None
    try:
        client.execute()
    except DeadKernelError:
        error = "the kernel died (out of memory?)"
    except CellTimeoutError:
        error = f"a cell ran longer than {timeout:.0f} s"
    except CellExecutionError as exc:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()  # the traceback's colours
        error = text.splitlines()[-1] if text else type(exc).__name__
    finally:
        nbformat.write(nb, out)
    stderr, cells = [], []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        stderr += [o["text"] for o in cell.get("outputs", []) if o.get("output_type") == "stream"
                   and o.get("name") == "stderr"]
        t = cell.get("metadata", {}).get("execution", {})
        if "iopub.execute_input" in t and "shell.execute_reply" in t:
            from datetime import datetime

            start = datetime.fromisoformat(t["iopub.execute_input"].replace("Z", "+00:00"))
            end = datetime.fromisoformat(t["shell.execute_reply"].replace("Z", "+00:00"))
            first = next((ln for ln in cell.source.splitlines() if ln.strip()), "")
            cells.append({"cell": i, "seconds": round((end - start).total_seconds(), 2), "source": first[:60]})
    cells.sort(key=lambda c: -float(c["seconds"]))
    return {"error": error, "stderr": stderr, "slowest": cells[:3]}


def _skipper(base: Path) -> Any:
    """What not to copy with a notebook's folder: checkpoints, logs, caches, and the check's own work folder."""
    skip = shutil.ignore_patterns(".ipynb_checkpoints", "chimera-logs", "__pycache__")
    return lambda d, names: {*skip(d, names), *(n for n in names if Path(d, n) == base)}


@dataclass
class Result:
    """One notebook's run."""

    notebook: str
    seconds: float = 0.0
    peak: int = 0  # bytes the memory limit counted at its highest
    peak_pss: int = 0  # bytes: the highest sampled sum of the processes' PSS
    problems: list[str] = field(default_factory=list)
    slowest: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _no_slurm(base: Path) -> Path:
    """A slurm.conf whose controller is nowhere (port 1 on 127.0.0.1): Slurm's commands answer 'DOWN' at once."""
    conf = base / "no-slurm.conf"
    conf.write_text("ClusterName=classroom\nSlurmctldHost=nowhere(127.0.0.1)\nSlurmctldPort=1\n"
                    "NodeName=nowhere NodeAddr=127.0.0.1 CPUs=1\nPartitionName=none Nodes=nowhere Default=YES\n")
    return conf


def check(notebooks: list[Path], memory_limit: int = 2 * GB, memory_budget: int = 3 * GB // 2,
          time_budget: float = 120.0, docker: bool = False, workdir: Path | None = None,
          python: str = sys.executable, quiet: bool = False) -> tuple[list[Result], dict[str, Any]]:
    """Run each notebook in a fresh kernel under the limits; the results, and how the run was set up."""
    base = Path(workdir).resolve() if workdir is not None else Path(tempfile.mkdtemp(prefix="chimera-classroom-"))
    home, work, outdir = base / "home", base / "work", base / "executed"
    for d in (home, work, outdir):
        d.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JUPYTER", "CHIMERA_DOCKER", "CHIMERA_SWARM", "PYTHONPATH", "VIRTUAL_ENV",
                                "MPLBACKEND"))}
    env.update(HOME=str(home), PATH=f"{Path(python).parent}{os.pathsep}{env.get('PATH', '')}",
               PYTHONUNBUFFERED="1")
    if not docker:
        env["DOCKER_HOST"] = f"unix://{base}/no-docker-engine.sock"  # as in a classroom: no engine to reach
        env["SLURM_CONF"] = str(_no_slurm(base))  # nor a Slurm controller
    setup = {"memory_limit": memory_limit, "memory_budget": memory_budget, "time_budget": time_budget,
             "docker": docker, "python": python, "workdir": str(base), "method": ""}
    results = []
    copied: set[Path] = set()
    for nb in notebooks:
        src = nb.resolve().parent
        if src not in copied:  # the notebook's folder (pictures, data) as the students get it
            shutil.copytree(src, work / src.name, dirs_exist_ok=True, ignore=_skipper(base))
            copied.add(src)
        path = work / src.name / nb.name
        r = Result(nb.name)
        tty = not quiet and sys.stdout.isatty()
        if tty:
            print(f"{nb.name:<40} running ...", end="", flush=True)
        cage = MemoryCage(memory_limit)
        setup["method"] = cage.method
        result_file = outdir / f"{nb.stem}.json"
        cmd = [python, "-m", "chimera_lab.classroom", "--run-one", str(path), "--out", str(outdir / nb.name),
               "--result", str(result_file), "--cell-timeout", str(max(time_budget, 30.0))]
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=path.parent, env=env, preexec_fn=cage.enter, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        cage.root_pid = proc.pid
        hard = 2 * time_budget + 30
        while proc.poll() is None:
            cage.sample()
            if time.monotonic() - t0 > hard:
                r.problems.append(f"stopped after {hard:.0f} s")
                cage.kill()
                proc.kill()
            time.sleep(0.1)
        r.seconds = round(time.monotonic() - t0, 1)
        output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
        cage.close()
        r.peak, r.peak_pss = cage.peak, cage.peak_pss
        if result_file.exists():
            res = json.loads(result_file.read_text())
            r.slowest = res["slowest"]
            if res["error"]:
                r.problems.append(res["error"])
            if res["stderr"]:
                r.problems.append("wrote to stderr: " + " | ".join(t.strip()[:200] for t in res["stderr"][:3]))
        elif not r.problems:
            r.problems.append(f"the runner failed (exit code {proc.returncode}): {output.strip()[-500:]}")
        if cage.oom:
            r.problems.append(f"went over the {_fmt(memory_limit)} memory limit (killed)")
        if r.seconds > time_budget:
            r.problems.append(f"took {r.seconds:.0f} s, over the {time_budget:.0f} s budget")
        if r.peak > memory_budget:
            r.problems.append(f"held {_fmt(r.peak)}, over the {_fmt(memory_budget)} budget")
        results.append(r)
        if not quiet:
            print(f"\r{row(r)}" if tty else row(r), flush=True)
    return results, setup


HEADER = f"{'notebook':<40} {'time':>7} {'peak memory':>12} {'peak PSS':>10}  result"


def row(r: Result) -> str:
    return (f"{r.notebook:<40} {r.seconds:>5.1f} s {_fmt(r.peak):>12} {_fmt(r.peak_pss):>10}  "
            + ("ok" if r.ok else "FAILED: " + "; ".join(r.problems)))


def report(results: list[Result], setup: dict[str, Any]) -> str:
    """The table, the setup, and what failed."""
    lines = [HEADER, *(row(r) for r in results), ""]
    lines.append(f"limit {_fmt(setup['memory_limit'])} ({setup['method']}); budget {setup['time_budget']:.0f} s and "
                 f"{_fmt(setup['memory_budget'])} per notebook; Docker engine: "
                 f"{'as on this machine' if setup['docker'] else 'none (as in a classroom server)'}")
    lines.append("peak memory: what the limit counts (all processes and their page cache); "
                 "peak PSS: the processes' own memory, sampled every 0.1 s")
    for r in results:
        if r.slowest:
            lines.append(f"slowest cells of {r.notebook}: "
                         + ", ".join(f"#{c['cell']} {c['seconds']:.1f} s ({c['source']})" for c in r.slowest))
    failed = [r for r in results if not r.ok]
    lines.append(f"{len(results) - len(failed)} of {len(results)} notebooks within budget"
                 + (f"; failed: {', '.join(r.notebook for r in failed)}" if failed else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``chimera-lab classroom-check`` (and ``python -m chimera_lab.classroom``)."""
    p = argparse.ArgumentParser(prog="chimera-lab classroom-check", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", default=["notebooks"], help="notebooks, or folders of them (default: notebooks)")
    p.add_argument("--memory-limit", default="2G", help="hard limit on a notebook's kernel and all it starts (2G)")
    p.add_argument("--memory-budget", default="1.5G", help="fail a notebook that holds more than this (1.5G)")
    p.add_argument("--time-budget", type=float, default=120.0, help="fail a notebook that takes longer (120 s)")
    p.add_argument("--docker", action="store_true", help="let notebooks use this machine's Docker engine")
    p.add_argument("--workdir", default=None, help="where copies, executed notebooks and HOME go (a temp folder)")
    p.add_argument("--report", default=None, help="also write the results as JSON here")
    p.add_argument("--run-one", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    p.add_argument("--cell-timeout", type=float, default=120.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.run_one:  # inside the cage: run one notebook, write what happened
        res = run_one(Path(args.run_one), Path(args.out), args.cell_timeout)
        Path(args.result).write_text(json.dumps(res))
        return 0
    try:
        limit, budget = parse_size(args.memory_limit), parse_size(args.memory_budget)
    except ValueError as exc:
        p.error(str(exc))
    notebooks: list[Path] = []
    for given in map(Path, args.paths):
        if given.is_dir():
            notebooks += sorted(given.glob("*.ipynb"))
        elif given.suffix == ".ipynb" and given.exists():
            notebooks.append(given)
        else:
            p.error(f"{given} is neither a notebook nor a folder of notebooks")
    if not notebooks:
        p.error(f"no notebooks found in {', '.join(args.paths)}")
    print(HEADER)
    results, setup = check(notebooks, limit, budget, args.time_budget, args.docker,
                           Path(args.workdir) if args.workdir else None)
    text = report(results, setup)
    print(text.split("\n", len(results) + 1)[-1])  # the rows were printed as they came
    if args.report:
        Path(args.report).write_text(json.dumps({"setup": setup, "results": [asdict(r) for r in results]}, indent=1))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
