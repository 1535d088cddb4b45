"""Classroom sessions: what a session may use (cgroups), a cluster sized to fit it, and the classroom check."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest
from conftest import Cluster, wait_until
from nbformat.v4 import new_code_cell, new_notebook
from pipeline_nodes import Blob, Slow

import chimera_lab as cp
from chimera_lab import resources
from chimera_lab.classroom import MemoryCage, check, parse_size, report
from chimera_lab.nodes import TestPatternSource
from chimera_lab.resources import GB, MB, Resources, size_cluster

ROOT = Path(__file__).resolve().parent.parent


# -- detection, on folders laid out like / -------------------------------------------------------------------
def layout(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


MEMINFO = "MemTotal:       16000000 kB\nMemFree:         1000000 kB\nMemAvailable:   12000000 kB\n"


def test_detect_reads_a_cgroup_v1_limit_and_leaves_out_reclaimable_cache(tmp_path):
    cg = "sys/fs/cgroup/memory/kubepods/pod1"
    root = layout(tmp_path, {
        "proc/meminfo": MEMINFO,
        "proc/self/cgroup": "5:cpu,cpuacct:/kubepods/pod1\n4:memory:/kubepods/pod1\n0::/\n",
        f"{cg}/memory.limit_in_bytes": str(2 * GB),
        f"{cg}/memory.usage_in_bytes": str(900 * MB),
        f"{cg}/memory.stat": f"cache 500\ntotal_inactive_file {300 * MB}\n",
        "sys/fs/cgroup/memory/kubepods/memory.limit_in_bytes": str(9223372036854771712),  # no limit
        "sys/fs/cgroup/memory/kubepods/memory.usage_in_bytes": str(5 * GB),
        "sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/cpu.cfs_quota_us": "150000",
        "sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/cpu.cfs_period_us": "100000",
    })
    r = resources.detect(root=root)
    assert r.memory_limit == 2 * GB and r.memory_available == 2 * GB - 600 * MB
    assert r.limited_by == "cgroup v1 /memory/kubepods/pod1"
    assert r.cpus == 1.5 and r.docker is None and r.constrained


def test_detect_reads_cgroup_v2_takes_the_tightest_ancestor_and_cpu_max(tmp_path):
    root = layout(tmp_path, {
        "proc/meminfo": MEMINFO,
        "proc/self/cgroup": "0::/user.slice/session\n",
        "sys/fs/cgroup/cgroup.controllers": "cpu memory",
        "sys/fs/cgroup/user.slice/session/memory.max": "max",
        "sys/fs/cgroup/user.slice/session/memory.current": str(100 * MB),
        "sys/fs/cgroup/user.slice/session/cpu.max": "max 100000",
        "sys/fs/cgroup/user.slice/memory.max": str(1 * GB),
        "sys/fs/cgroup/user.slice/memory.current": str(400 * MB),
        "sys/fs/cgroup/user.slice/memory.stat": f"anon 1\ninactive_file {100 * MB}\n",
        "sys/fs/cgroup/user.slice/cpu.max": "50000 100000",
    })
    r = resources.detect(root=root)
    assert (r.memory_limit, r.memory_available) == (1 * GB, 1 * GB - 300 * MB)
    assert r.limited_by == "cgroup v2 /user.slice" and r.cpus == 0.5


def test_detect_without_cgroup_limits_uses_physical_memory(tmp_path):
    root = layout(tmp_path, {"proc/meminfo": MEMINFO, "proc/self/cgroup": "0::/\n",
                             "sys/fs/cgroup/cgroup.controllers": "memory", "sys/fs/cgroup/memory.max": "max"})
    r = resources.detect(root=root)
    assert (r.memory_limit, r.memory_available, r.limited_by) == (16000000 * 1024, 12000000 * 1024,
                                                                  "physical memory")
    assert "physical memory" in str(r) and not r.constrained


def test_detect_on_this_machine_is_consistent():
    r = resources.detect(check_docker=False)
    assert 0 < r.memory_available <= r.memory_limit and r.cpus >= 0.1


# -- sizing ------------------------------------------------------------------------------------------------------
def res(cpus: float, free_mb: int) -> Resources:
    return Resources(cpus=cpus, memory_limit=4 * GB, memory_available=free_mb * MB, limited_by="test")


def test_a_roomy_machine_gets_one_worker_per_cpu_full_frames_and_processes():
    s = size_cluster(res(2, 8000))
    assert (s.workers, s.queue_bound, s.frame_size, s.mode) == (2, 64, (640, 480), "process")
    assert size_cluster(res(16, 64000)).workers == 4  # at most max_workers
    assert size_cluster(res(1, 8000)).workers == 2  # two at least: distribution is the lesson
    assert s.why == ["2 workers for 2 CPUs"]


def test_less_memory_shrinks_queues_then_frames_then_workers_then_processes():
    seen = [size_cluster(res(4, mb)) for mb in (8000, 1600, 1300, 1000, 700, 520, 300)]
    assert [s.estimate() for s in seen] == sorted((s.estimate() for s in seen), reverse=True)
    roomy, *_, tight = seen
    assert (tight.workers, tight.queue_bound, tight.frame_size, tight.mode) == (1, 16, (320, 240), "thread")
    for s in seen[:-1]:  # each fits what it was given (the last cannot, and says so)
        assert s.estimate() <= int(s.resources.memory_available * 0.9) - resources.KERNEL_GROWTH_MB * MB
    assert "expect the kernel to be killed" in tight.why[-1]
    mid = size_cluster(res(4, 1100))
    assert mid.mode == "process" and mid.frame_size == (320, 240) and 2 <= mid.workers < 4
    assert any(w.startswith("queues of 16") for w in mid.why) and any("worker" in w for w in mid.why[1:])
    one_cpu = size_cluster(res(1, 600))  # a busy Binder: two workers still, as threads
    assert (one_cpu.workers, one_cpu.mode) == (2, "thread")


def test_what_the_user_asked_for_is_kept():
    s = size_cluster(res(2, 500), workers=3, mode="process")
    assert (s.workers, s.mode) == (3, "process") and s.queue_bound == 16 and s.frame_size == (320, 240)
    assert "use --workers 1" in s.why[-1]


def test_pattern_source_takes_the_session_frame_size_and_keeps_its_aspect():
    try:
        resources.set_default_frame_size(320, 240)
        assert (TestPatternSource().width, TestPatternSource().height) == (320, 240)
        assert (TestPatternSource(width=160).width, TestPatternSource(width=160).height) == (160, 120)
        assert TestPatternSource(height=60).width == 80
        assert (TestPatternSource(width=100, height=100).height) == 100
        assert TestPatternSource("p").init_args == {"name": "p"}  # the default is not frozen into the graph file
        with pytest.raises(ValueError, match="positive width and height"):
            resources.set_default_frame_size(0, 10)
    finally:
        resources.set_default_frame_size(640, 480)
    assert TestPatternSource().width == 640


# -- queue bounds --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "8"])
def test_queue_bound_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match="queue_bound must be a whole number of messages"):
        cp.Manager(port=0, queue_bound=bad)


def backlog(cluster: Cluster, bound: int) -> int:
    """Messages a fast source gets ahead of a slow step on an "all" edge, with this queue bound."""
    m = cluster.manager
    m.queue_bound = bound
    g = cp.Graph()
    g.add_edge(Blob("blob", size=1 << 20), Slow("slow", delay=0.02))
    m.commit_graph(g, {"a": ["blob"], "b": ["slow"]})
    m.start()

    def ahead() -> int:
        met = m.metrics()
        return int(met["blob"]["outputs"]["slow"]["sent"] - met["slow"]["inputs"]["blob"]["received"])

    wait_until(lambda: m.metrics()["slow"]["steps"] >= 40, 30, "the slow step to take 40 messages")
    worst = max(ahead() for _ in range(5))
    m.stop()
    m.reset()
    return worst


def test_queue_bound_limits_what_an_all_edge_holds(cluster: Cluster):
    cluster.worker("a")
    cluster.worker("b")
    small, large = backlog(cluster, 2), backlog(cluster, 64)
    assert small <= 2 * 2 + 16, small  # both ends' bounds, plus what the kernel's socket buffers hold
    assert large > 2 * small, (small, large)


# -- a real memory limit ---------------------------------------------------------------------------------------
def test_memory_cage_kills_what_outgrows_it_and_reports_the_peak():
    cage = MemoryCage(200 * MB)
    assert cage.method.startswith("cgroup"), "this machine should allow a cgroup of our own (run as root)"
    proc = subprocess.Popen([sys.executable, "-c", "import time; x = bytearray(400 << 20); time.sleep(30)"],
                            preexec_fn=cage.enter)
    cage.root_pid = proc.pid

    def ended() -> bool:
        cage.sample()  # follows the peak while the process grows
        return proc.poll() is not None

    try:
        wait_until(ended, 20, "the process to be killed")
    finally:
        cage.close()
    assert proc.returncode == -9 and cage.oom
    assert 150 * MB < cage.peak <= 200 * MB


CONSTRAINED = textwrap.dedent("""
    import json, time
    from IPython.core.interactiveshell import InteractiveShell
    from chimera_lab import resources
    from chimera_lab.nodes import StatsSink, TestPatternSource
    import chimera_lab as cp

    here = resources.detect()
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "chimera_lab")
    ip.run_line_magic("chimera", "up")
    m = ip.user_ns["manager"]
    g = cp.Graph()
    g.add_edge(TestPatternSource("camera", rate_hz=30), StatsSink("stats"))
    m.commit_graph(g, {"local-0": ["camera"], "local-1": ["stats"]})
    with m.tap("camera") as tap:
        m.start()
        frame = tap.get(timeout=20).get("frame")["value"]
    status = m.status()
    out = {"limit": here.memory_limit, "by": here.limited_by, "frame": list(frame.shape),
           "queue_bound": m.queue_bound, "workers": sorted(status["workers"]),
           "same_pid": status["nodes"]["camera"]["pid"] == status["workers"]["local-0"]["pid"]}
    ip.run_line_magic("chimera", "down")
    print("RESULT", json.dumps(out))
""")


def test_up_in_a_small_session_sizes_itself_and_runs(tmp_path):
    """In a cgroup of 900 MB, `%chimera up` picks local workers, short queues, small frames and threads, and runs."""
    cage = MemoryCage(900 * MB)
    assert cage.method.startswith("cgroup")
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path),
           "DOCKER_HOST": f"unix://{tmp_path}/none.sock"}
    try:
        proc = subprocess.run([sys.executable, "-c", CONSTRAINED], cwd=tmp_path, env=env, preexec_fn=cage.enter,
                              capture_output=True, text=True, timeout=120)
    finally:
        cage.close()
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert out["limit"] == 900 * MB and out["by"].startswith("cgroup"), out
    assert "no Docker engine" in proc.stdout
    assert "queues of 16 messages, frames 320×240, nodes as threads" in proc.stdout, proc.stdout
    assert out["frame"] == [240, 320, 3] and out["queue_bound"] == 16 and out["same_pid"]
    assert out["workers"] == ["local-0", "local-1"]
    assert not cage.oom and cage.peak < 900 * MB


# -- the classroom check -----------------------------------------------------------------------------------------
def notebook(path: Path, *sources: str) -> Path:
    nb = new_notebook(cells=[new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_classroom_check_reports_time_memory_and_every_kind_of_failure(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    (nbs / "data.txt").write_text("42")  # the notebooks' folder is copied: files beside them are there
    good = notebook(nbs / "a-good.ipynb", "import os\nprint(open('data.txt').read(), os.environ['DOCKER_HOST'])",
                    "x = bytearray(100 << 20)")
    raising = notebook(nbs / "b-raises.ipynb", "1 / 0")
    warning = notebook(nbs / "c-warns.ipynb", "import warnings\nwarnings.warn('old API')")
    hungry = notebook(nbs / "d-hungry.ipynb", "x = bytearray(300 << 20)")
    results, setup = check([good, raising, warning, hungry], memory_limit=500 * MB, memory_budget=250 * MB,
                           time_budget=60, workdir=tmp_path / "run", quiet=True)
    by = {r.notebook: r for r in results}
    assert by["a-good.ipynb"].ok, by["a-good.ipynb"].problems
    assert 100 * MB < by["a-good.ipynb"].peak < 250 * MB and 0 < by["a-good.ipynb"].seconds < 60
    executed = nbformat.read(tmp_path / "run" / "executed" / "a-good.ipynb", as_version=4)
    assert executed.cells[0].outputs[0]["text"].startswith("42 unix://")  # no Docker engine, as in a classroom
    assert by["b-raises.ipynb"].problems == ["ZeroDivisionError: division by zero"]
    assert "wrote to stderr" in by["c-warns.ipynb"].problems[0] and "old API" in by["c-warns.ipynb"].problems[0]
    assert any("over the 250 MB budget" in p for p in by["d-hungry.ipynb"].problems)
    text = report(results, setup)
    assert "1 of 4 notebooks within budget; failed: b-raises.ipynb, c-warns.ipynb, d-hungry.ipynb" in text
    assert "limit 500 MB (cgroup" in text


def test_classroom_check_cli_fails_a_notebook_over_the_memory_limit_and_names_it(tmp_path):
    (tmp_path / "nbs").mkdir()
    nb = notebook(tmp_path / "nbs" / "greedy.ipynb", "x = bytearray(600 << 20)\nprint('survived')")
    proc = subprocess.run([sys.executable, "-m", "chimera_lab.cli", "classroom-check", str(nb),
                           "--memory-limit", "300M", "--report", str(tmp_path / "r.json"),
                           "--workdir", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "went over the 300 MB memory limit (killed)" in proc.stdout, proc.stdout
    assert "0 of 1 notebooks within budget; failed: greedy.ipynb" in proc.stdout
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["results"][0]["notebook"] == "greedy.ipynb" and saved["setup"]["memory_limit"] == 300 * MB


def test_classroom_check_refuses_bad_arguments_clearly(tmp_path):
    assert parse_size("1.5G") == 3 * GB // 2 and parse_size("512M") == 512 * MB and parse_size("2GiB") == 2 * GB
    with pytest.raises(ValueError, match="cannot read the size 'lots'"):
        parse_size("lots")
    for args, msg in ((["--memory-limit", "lots"], "cannot read the size"),
                      ([str(tmp_path / "missing.ipynb")], "neither a notebook nor a folder"),
                      ([str(tmp_path)], "no notebooks found")):
        proc = subprocess.run([sys.executable, "-m", "chimera_lab.classroom", *args], capture_output=True, text=True)
        assert proc.returncode == 2 and msg in proc.stderr, proc.stderr


def test_binder_files_pin_everything_and_need_no_root():
    pins = [ln for ln in (ROOT / "binder/requirements.txt").read_text().splitlines()
            if ln.strip() and not ln.startswith("#")]
    assert pins and all("==" in ln for ln in pins), [ln for ln in pins if "==" not in ln]
    names = {ln.split("==")[0].lower().replace("_", "-") for ln in pins}
    assert {"pyzmq", "numpy", "jupyterlab", "anywidget", "scikit-learn", "opencv-python-headless"} <= names
    assert (ROOT / "binder/runtime.txt").read_text().strip() == f"python-{sys.version_info[0]}.{sys.version_info[1]}"
    post = (ROOT / "binder/postBuild").read_text()
    assert "sudo" not in post and "apt" not in post and "--no-deps" in post
    assert "00-start-here.ipynb" in post and (ROOT / "notebooks/00-start-here.ipynb").exists()
