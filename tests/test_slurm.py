"""SlurmCluster on a real single-node Slurm (slurmctld + slurmd + munge from Debian's packages, on 127.0.0.1):
a graph across Slurm-job workers and a local worker with a job cancelled, failures with the job's state and output,
scale, the token kept out of scripts and command lines, cleanup, and bad input.

Needs ``../shared/recipes/slurm.sh start`` (with ``CHIMERA_SLURM_CPUS=8``, so four 1-CPU jobs fit on two cores).
Without a controller these tests skip with that advice, except in CI (``CI`` set), where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_until
from pipeline_nodes import Count, Scale

import chimera_lab as cp
from chimera_lab.cluster import LocalCluster
from chimera_lab.cluster.local import wait_or_kill
from chimera_lab.cluster.slurm import ACTIVE, SlurmCluster, SlurmError


def _squeue() -> dict[str, str]:
    out = subprocess.run(["squeue", "--me", "-h", "-t", "all", "-o", "%i|%T"], capture_output=True, text=True,
                         timeout=20)
    return dict(line.split("|") for line in out.stdout.split())


def active(jobs: list[str]) -> list[str]:
    """Which of these Slurm jobs are still pending or running."""
    states = _squeue()
    return [j for j in jobs if states.get(j, "GONE") in ACTIVE]


@pytest.fixture(scope="module", autouse=True)
def slurm() -> Iterator[None]:
    why = None
    if not shutil.which("sbatch"):
        why = "Slurm's commands are not installed"
    else:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20)
        if " is UP" not in ping.stdout:
            why = f"no Slurm controller ({ping.stdout.strip() or ping.stderr.strip()})"
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set and the Slurm tests cannot run: {why}", pytrace=False)
        pytest.skip(f"{why}: start one with CHIMERA_SLURM_CPUS=8 ../shared/recipes/slurm.sh start")
    yield


def test_graph_on_two_slurm_jobs_and_a_local_worker_goes_on_when_a_job_is_cancelled(tmp_path: Path) -> None:
    with cp.Manager(port=0, logdir=tmp_path / "logs") as m:
        m.add_workers(LocalCluster(1))
        cluster = m.add_workers(SlurmCluster(jobs=2, cores=1, memory="1G", walltime="00:20:00"))
        s0, s1 = cluster.alive
        assert (s0, s1) == ("slurm-0", "slurm-1")
        assert {n: w["state"] for n, w in m.status()["workers"].items()} == {
            "local-0": "connected", s0: "connected", s1: "connected"}
        jobs = dict(cluster.jobs)
        assert all(cluster.status()["workers"][n]["job state"] == "RUNNING" for n in (s0, s1))

        src, a, b = Count("source", rate_hz=50), Scale("a", coef=2), Scale("b", coef=3)
        g = cp.Graph()
        g.add_edge(src, a)
        g.add_edge(src, b)
        m.commit_graph(g, {s0: [src], s1: [a], "local-0": [b]})
        with m.tap("a") as tap_a, m.tap("b") as tap_b:
            m.start()
            from_a = [tap_a.get(15).get("default")["value"] for _ in range(3)]
            before = [tap_b.get(15).get("default")["value"] for _ in range(3)]
            assert all(v % 2 == 0 for v in from_a) and all(v % 3 == 0 for v in before)  # job → job and job → local

            subprocess.run(["scancel", jobs[s1]], check=True, timeout=20)
            t0 = time.monotonic()
            wait_until(lambda: m.status()["workers"][s1]["state"] == "lost", 3.0, f"{s1} to be reported lost")
            assert time.monotonic() - t0 < 3.0
            assert m.status()["nodes"]["a"]["state"] == "lost"
            reason = wait_until(lambda: cluster.lost.get(s1), 3.0, "the reason")
            assert f"its Slurm job {jobs[s1]} is CANCELLED" in reason
            assert f"cp-worker '{s1}' connected to the Manager" in reason  # the tail of the job's output
            after = [tap_b.get(15).get("default")["value"] for _ in range(5)]  # the rest runs on
            assert min(after) > max(before) and all(v % 3 == 0 for v in after)
            assert m.status()["workers"][s0]["state"] == "connected"
            assert m.status()["workers"]["local-0"]["state"] == "connected"
        m.stop()
        log_dir = cluster.log_directory
        assert oct(log_dir.stat().st_mode & 0o777) == "0o700"  # the jobs' output is for this user only
    assert active(list(jobs.values())) == []  # the Manager's shutdown cancelled / ended every job
    assert not log_dir.exists()


def test_the_token_is_in_no_script_and_on_no_command_line() -> None:
    with cp.Manager(port=0) as m:
        cluster = m.add_workers(SlurmCluster(jobs=1, cores=2, memory="512M", walltime="10",
                                             job_extra=["--nice=5"]))
        script = cluster.job_script("slurm-0")
        assert m.token not in script
        assert "#SBATCH --cpus-per-task=2" in script and "#SBATCH --mem=512M" in script
        assert "#SBATCH --time=10" in script and "#SBATCH --nice=5" in script
        saved = subprocess.run(["scontrol", "write", "batch_script", cluster.jobs["slurm-0"], "-"],
                               capture_output=True, text=True, timeout=20).stdout
        assert "chimera_lab.worker" in saved and m.token not in saved  # what Slurm stored
        pid = m.status()["workers"]["slurm-0"]["pid"]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        assert "chimera_lab.worker" in cmdline and m.token not in cmdline
        assert f"CHIMERA_TOKEN={m.token}".encode() in Path(f"/proc/{pid}/environ").read_bytes()


def test_scale_up_and_down_submits_and_cancels_jobs() -> None:
    with SlurmCluster(jobs=1, memory="500M") as cluster:
        m = cluster.manager
        assert cluster.scale(3) == ["slurm-0", "slurm-1", "slurm-2"]
        assert all(m.workers[n].state == "connected" for n in cluster.alive)
        retired = cluster.jobs["slurm-2"], cluster.jobs["slurm-1"]
        assert cluster.scale(1) == ["slurm-0"]
        assert active(list(retired)) == [] and cluster.lost == {}  # cancelled on purpose: not lost
        jobs = list(cluster.jobs.values())
    assert m.state == "shutdown" and active(jobs) == []


def test_a_job_whose_worker_fails_is_lost_with_its_state_and_output() -> None:
    with cp.Manager(port=0, heartbeat_timeout=30) as m:
        cluster = m.add_workers(SlurmCluster(jobs=1, memory="500M"))
        os.kill(m.status()["workers"]["slurm-0"]["pid"], signal.SIGKILL)  # the job's process dies
        t0 = time.monotonic()
        wait_until(lambda: m.status()["workers"]["slurm-0"]["state"] == "lost", 3.0, "slurm-0 to be lost")
        assert time.monotonic() - t0 < 3.0
        reason = cluster.lost["slurm-0"]
        assert f"its Slurm job {cluster.jobs['slurm-0']} is FAILED" in reason
        assert "connected to the Manager" in reason  # the end of its output


def test_a_preempted_or_requeued_job_is_lost_and_does_not_come_back() -> None:
    with cp.Manager(port=0, heartbeat_timeout=30) as m:
        cluster = m.add_workers(SlurmCluster(jobs=2, memory="500M"))
        job = cluster.jobs["slurm-1"]
        subprocess.run(["scontrol", "requeue", job], check=True, timeout=20)  # what pre-emption with requeue does
        t0 = time.monotonic()
        wait_until(lambda: m.status()["workers"]["slurm-1"]["state"] == "lost", 3.0, "slurm-1 to be lost")
        assert time.monotonic() - t0 < 3.0
        assert f"its Slurm job {job} was pre-empted or requeued (now PENDING" in cluster.lost["slurm-1"]
        wait_until(lambda: active([job]) == [], 10, "the requeued job to be cancelled")
        assert m.status()["workers"]["slurm-0"]["state"] == "connected"
        assert cluster.scale(2) == ["slurm-0", "slurm-2"]


def test_a_job_that_fails_at_start_fails_the_launch_with_its_output(tmp_path: Path) -> None:
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'no chimera_lab in this environment' >&2\nexit 7\n")
    broken.chmod(0o755)
    with cp.Manager(port=0) as m:
        t0 = time.monotonic()
        with pytest.raises(SlurmError, match=r"worker 'slurm-0' ended while starting: its Slurm job \d+ is FAILED"
                                             r"(.|\n)*no chimera_lab in this environment"):
            m.add_workers(SlurmCluster(jobs=1, memory="500M", python=str(broken)))
        assert time.monotonic() - t0 < 15 and m.launchers == []


def test_bad_input_gets_an_error_that_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with cp.Manager(port=0) as m:
        with pytest.raises(SlurmError, match=r"Slurm has no partition 'nope'; its partitions: debug .*partition="):
            m.add_workers(SlurmCluster(jobs=1, partition="nope"))
        with pytest.raises(SlurmError, match=r"Slurm refused memory='900G' per job .*the largest has \d+ MB\); ask "
                                             r"for less"):
            m.add_workers(SlurmCluster(jobs=1, memory="900G"))
        assert m.launchers == [] and not [n for n in m.workers if n.startswith("slurm")]
    with pytest.raises(ValueError, match=r"memory='lots' is not a Slurm size"):
        SlurmCluster(memory="lots")
    with pytest.raises(ValueError, match=r"walltime='an hour' is not a Slurm time"):
        SlurmCluster(walltime="an hour")
    with pytest.raises(ValueError, match=r"cores must be a whole number >= 1"):
        SlurmCluster(cores=0)
    # no controller: a slurm.conf that names a port where nothing listens
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp_path / "slurm.conf"
    conf.write_text(f"ClusterName=nowhere\nSlurmctldHost={os.uname().nodename}(127.0.0.1)\nSlurmctldPort={port}\n"
                    "AuthType=auth/munge\nNodeName=n1 NodeAddr=127.0.0.1 CPUs=1\n"
                    "PartitionName=p Nodes=n1 Default=YES\n")
    monkeypatch.setenv("SLURM_CONF", str(conf))
    t0 = time.monotonic()
    with pytest.raises(SlurmError, match=r"no Slurm controller reachable \(.*DOWN.*\): start slurmctld .*SLURM_CONF"):
        SlurmCluster(jobs=1).start()
    assert time.monotonic() - t0 < 25


def test_jobs_of_a_process_that_died_end_and_cleanup_cancels_what_is_left(tmp_path: Path) -> None:
    """A kernel killed without closing: cleanup() cancels its jobs (its running workers would also exit on their
    own when the Manager stops answering) and removes their output folders. A live cluster's are left alone."""
    script = textwrap.dedent("""
        import threading, time
        import chimera_lab as cp
        from chimera_lab.cluster.slurm import SlurmCluster
        m = cp.Manager(port=0)
        c = m.add_workers(SlurmCluster(jobs=1, memory="500M"))
        # and a job that cannot start before this process dies: it waits for the first job to end
        queued = SlurmCluster(jobs=1, memory="500M", prefix="queued", timeout=600,
                              job_extra=[f"--dependency=afterany:{c.jobs['slurm-0']}"])
        threading.Thread(target=m.add_workers, args=(queued,), daemon=True).start()
        while not queued.jobs:
            time.sleep(0.02)
        print(c.jobs["slurm-0"], queued.jobs["queued-0"], c.log_directory, queued.log_directory, flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        running, queued, *folders = proc.stdout.readline().split()  # type: ignore[union-attr]
        with SlurmCluster(jobs=1, memory="500M") as live:
            proc.kill()
            proc.wait(10)
            cancelled = SlurmCluster.cleanup()
            assert {queued, running} <= set(cancelled) and live.jobs["slurm-0"] not in cancelled
            assert not any(Path(f).exists() for f in folders)  # the dead process's job output, too
            assert live.log_directory.is_dir()
            wait_until(lambda: active([running, queued]) == [], 30, "the dead process's jobs to end")
            assert active([live.jobs["slurm-0"]]) == [live.jobs["slurm-0"]]
    finally:
        wait_or_kill(proc, 1)


def test_chimera_up_with_slurm_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell

    monkeypatch.chdir(tmp_path)
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "chimera_lab")
    try:
        ip.run_line_magic("chimera", "up --workers 1 --slurm 2")
        m = ip.user_ns["manager"]
        assert sorted(m.workers) == ["local-0", "slurm-0", "slurm-1"]
        assert "with 3 workers (local-0, slurm-0, slurm-1)" in capsys.readouterr().out
        (slurm,) = [launcher for launcher in m.launchers if isinstance(launcher, SlurmCluster)]
        jobs = list(slurm.jobs.values())
        assert active(jobs) == jobs
        ip.run_line_magic("chimera", "down")
        assert m.state == "shutdown" and active(jobs) == []
        with pytest.raises(UsageError, match="needs at least one worker"):
            ip.run_line_magic("chimera", "up --workers 0 --slurm 0")
    finally:
        ip.run_line_magic("chimera", "down")
        InteractiveShell.clear_instance()
