"""The launcher interface, on LocalCluster (real worker processes): ownership, add_workers, scale, loss, logs,
status, the HTML view, entry points, and a third-party launcher written against the base class."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import wait_until
from pipeline_nodes import Count, Scale

import chimera_lab as cp
from chimera_lab.cluster import Launcher, LauncherError, LocalCluster, available_launchers, launcher
from chimera_lab.cluster.local import wait_or_kill
from chimera_lab.worker import HEARTBEAT


def states(m: cp.Manager) -> dict[str, str]:
    return {n: w["state"] for n, w in m.status()["workers"].items()}


def test_add_workers_takes_a_local_cluster_and_the_manager_owns_its_end() -> None:
    with cp.Manager(port=0) as m:
        cluster = m.add_workers(LocalCluster(2))
        assert cluster.manager is m and m.launchers == [cluster]
        assert states(m) == {"local-0": "connected", "local-1": "connected"}
        more = m.add_workers(LocalCluster(1, prefix="extra"))
        assert states(m)["extra-0"] == "connected"
        procs = list(cluster._procs.values()) + list(more._procs.values())
        more.close()  # a launcher handed a Manager ends its own workers, never the Manager
        assert m.state != "shutdown" and m.launchers == [cluster]
        wait_until(lambda: states(m)["extra-0"] != "connected", 10, "extra-0 to leave")
        assert states(m)["local-0"] == "connected"
    assert m.state == "shutdown" and cluster.closed  # the Manager's shutdown closed the launcher it held
    assert all(p.poll() is not None for p in procs)


def test_a_launcher_without_a_manager_makes_and_ends_its_own() -> None:
    with LocalCluster(1) as cluster:
        m = cluster.manager
        assert m.launchers == [cluster] and states(m) == {"local-0": "connected"}
    assert m.state == "shutdown"
    lazy = LocalCluster(1)  # not started until used
    assert not lazy.started and lazy.state == "not started" and "not started" in repr(lazy)
    try:
        assert lazy.manager.workers["local-0"].state == "connected"  # asking for its manager starts it
    finally:
        lazy.close()
    assert lazy.manager.state == "shutdown"
    with pytest.raises(LauncherError, match="was closed; create a new one"):
        lazy.scale(2)


def test_one_launcher_belongs_to_one_manager() -> None:
    with cp.Manager(port=0) as a, cp.Manager(port=0) as b:
        cluster = a.add_workers(LocalCluster(1))
        with pytest.raises(LauncherError, match="already runs workers for"):
            b.add_workers(cluster)
        with pytest.raises(TypeError, match="add_workers needs a launcher"):
            a.add_workers("local")  # type: ignore[arg-type]


def test_scale_up_and_down_and_status() -> None:
    with LocalCluster(1) as cluster:
        m = cluster.manager
        assert cluster.scale(3) == ["local-0", "local-1", "local-2"]
        assert all(s == "connected" for s in states(m).values()) and cluster.n_workers == 3
        status = cluster.status()
        assert status["kind"] == "local" and status["state"] == "running" and status["requested"] == 3
        assert set(status["workers"]) == {"local-0", "local-1", "local-2"}
        assert all(isinstance(w["pid"], int) and w["state"] == "connected" for w in status["workers"].values())
        gone = cluster._procs["local-2"]
        assert cluster.scale(1) == ["local-0"]
        assert gone.poll() is not None and states(m)["local-2"] == "disconnected"
        assert cluster.lost == {}  # retired on purpose: not lost
        assert cluster.scale(2) == ["local-0", "local-3"]  # a fresh name: retired names keep their history
        with pytest.raises(ValueError, match="whole number of workers >= 0"):
            cluster.scale(-1)


def test_a_worker_that_dies_is_reported_lost_at_once_with_the_reason_and_the_rest_runs_on(tmp_path: Path) -> None:
    with cp.Manager(port=0, logdir=tmp_path / "logs", heartbeat_timeout=30) as m:  # heartbeats would take 30 s
        cluster = m.add_workers(LocalCluster(3))
        src, a, b = Count("source", rate_hz=50), Scale("a", coef=2), Scale("b", coef=3)
        g = cp.Graph()
        g.add_edge(src, a)
        g.add_edge(src, b)
        m.commit_graph(g, {"local-0": [src], "local-1": [a], "local-2": [b]})
        with m.tap("b") as tap:
            m.start()
            before = [tap.get(15).get("default")["value"] for _ in range(3)]
            cluster._procs["local-1"].kill()
            t0 = time.monotonic()
            wait_until(lambda: states(m)["local-1"] == "lost", 3.0, "local-1 to be reported lost")
            assert time.monotonic() - t0 < 3.0
            assert m.status()["nodes"]["a"]["state"] == "lost"
            assert "exited with code -9" in cluster.lost["local-1"]
            assert cluster.status()["workers"]["local-1"]["state"] == "lost"
            after = [tap.get(15).get("default")["value"] for _ in range(5)]
            assert min(after) > max(before)
        m.stop()
        assert cluster.alive == ["local-0", "local-2"]
        assert "connected to the Manager" in m.logs("local-1")  # a lost worker's log stays readable
        assert cluster.scale(3) == ["local-0", "local-2", "local-3"]  # the count comes back


def test_a_worker_that_exits_while_starting_fails_the_start_with_its_log() -> None:
    with cp.Manager(port=0) as m:
        taken = m.add_workers(LocalCluster(1))
        t0 = time.monotonic()
        with pytest.raises(LauncherError, match=r"worker 'bad-0' ended while starting: its process \(pid \d+\) exited "
                                                r"with code 2; the end of its log:\n(.|\n)*invalid choice: 'bogus'"):
            m.add_workers(LocalCluster(1, prefix="bad", mode="bogus", timeout=20))
        assert time.monotonic() - t0 < 10  # seen at once, not at the timeout
        assert m.launchers == [taken]  # the failed one closed and was forgotten
        assert states(m) == {"local-0": "connected"}


def test_html_view_and_the_notebook_bundle() -> None:
    with LocalCluster(1) as cluster:
        html = cluster._repr_html_()
        assert "LocalCluster" in html and "local-0" in html and "connected" in html and "<script" not in html
        bundle = cluster._repr_mimebundle_()
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        assert "text/html" in data and "local-0" in data["text/html"]


def test_launchers_by_name_from_entry_points(tmp_path: Path) -> None:
    names = available_launchers()
    assert {"local", "docker", "slurm", "swarm"} <= set(names)
    assert launcher("local") is LocalCluster
    from chimera_lab.cluster.slurm import SlurmCluster
    from chimera_lab.cluster.swarm import SwarmCluster

    assert launcher("slurm") is SlurmCluster and launcher("swarm") is SwarmCluster
    with pytest.raises(LauncherError, match=r"no launcher named 'nope'; installed: .*docker.*entry point"):
        launcher("nope")


THIRD_PARTY = '''
"""A third-party launcher: cp-worker processes started by a package chimera_lab does not know."""
import os, subprocess, sys
from chimera_lab.cluster import Launcher


class ShellLauncher(Launcher):
    kind = "shell"

    def __init__(self, n_workers=1, manager=None):
        self.procs = {}
        super().__init__(n_workers, manager, prefix="shell", timeout=30)

    def _grow(self, count):
        names = self._next_names(count)
        env = {**os.environ, "CHIMERA_TOKEN": self.manager.token}
        for name in names:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "chimera_lab.worker", "--port", str(self.manager.port), "--name", name],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return names

    def _stop(self, names):
        for name in names:
            self.procs[name].terminate()
            self.procs[name].wait(10)

    def _dead(self, names):
        return {n: f"exited with {self.procs[n].poll()}" for n in names if self.procs[n].poll() is not None}
'''


def test_a_third_party_launcher_registered_by_entry_point(tmp_path: Path) -> None:
    """A package that declares ``[project.entry-points."chimera_lab.launchers"] shell = ...`` is found by name
    and works with the Manager like the built-in ones (here in a subprocess, with the package on its path)."""
    pkg = tmp_path / "site"
    (pkg / "shell_launcher").mkdir(parents=True)
    (pkg / "shell_launcher" / "__init__.py").write_text(THIRD_PARTY)
    dist = pkg / "shell_launcher-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: shell-launcher\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[chimera_lab.launchers]\nshell = shell_launcher:ShellLauncher\n")
    script = textwrap.dedent("""
        import chimera_lab as cp
        from chimera_lab.cluster import launcher
        cls = launcher("shell")
        with cp.Manager(port=0) as m:
            c = m.add_workers(cls(2))
            print(sorted(c.alive), sorted(n for n, w in m.workers.items() if w.state == "connected"))
            c.scale(1)
            print(c.alive)
            name = c.alive[0]
            c.procs[name].kill()
            import time
            t = time.monotonic()
            while m.workers[name].state != "lost" and time.monotonic() - t < 5:
                time.sleep(0.02)
            print(m.workers["shell-0"].state, c.lost)
        print(m.state, all(p.poll() is not None for p in c.procs.values()))
    """)
    env = {**os.environ, "PYTHONPATH": f"{pkg}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        out, err = proc.communicate(timeout=90)
    finally:
        wait_or_kill(proc, 1)
    assert proc.returncode == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == "['shell-0', 'shell-1'] ['shell-0', 'shell-1']"
    assert lines[1] == "['shell-0']"
    assert lines[2] == "lost {'shell-0': 'exited with -9'}"
    assert lines[3] == "shutdown True"


def test_manager_logs_come_from_the_launcher_that_started_the_worker() -> None:
    with cp.Manager(port=0) as m:
        m.add_workers(LocalCluster(1))
        assert "cp-worker 'local-0' connected" in wait_until(lambda: m.logs("local-0"), 10, "local-0's log")
        w = cp.Worker("by-hand")
        w.connect(m.host, m.port)
        try:
            with pytest.raises(cp.ManagerError, match="was not started by a launcher of this Manager"):
                m.logs("by-hand")
        finally:
            w.shutdown()


class _Nothing(Launcher):
    """A launcher whose workers never join (for the timeout's message)."""

    kind = "nothing"

    def _grow(self, count: int) -> list[str]:
        return self._next_names(count)

    def _stop(self, names: list[str]) -> None:
        pass

    def _waiting_hint(self, waiting: list[str]) -> str:
        return "; the engine says: queued"


def test_workers_that_never_join_time_out_with_the_engines_hint() -> None:
    with cp.Manager(port=0) as m:
        t0 = time.monotonic()
        with pytest.raises(LauncherError, match=r"worker\(s\) nothing-0 did not join the Manager at 127\.0\.0\.1:\d+ "
                                                r"within 1 s; the engine says: queued"):
            m.add_workers(_Nothing(1, timeout=1.0))
        assert time.monotonic() - t0 < 5 and m.launchers == []


def test_a_worker_its_launcher_saw_end_is_not_brought_back_by_late_messages() -> None:
    """Messages a worker sent before it died can be read after its launcher reported it lost; they must not
    mark it connected again (a fit starting then would pick a dead worker). Here the worker is alive and keeps
    sending heartbeats after the report: it stays lost, and a new process under its name is welcome."""
    with cp.Manager(port=0) as m:
        cluster = m.add_workers(LocalCluster(1))
        m.worker_lost("local-0", "its process was seen to end (the test says so)")
        wait_until(lambda: states(m)["local-0"] == "lost", 3, "local-0 to be lost")
        watch_until = time.monotonic() + 3 * HEARTBEAT  # the invariant over three of its heartbeats
        while time.monotonic() < watch_until:
            assert states(m)["local-0"] == "lost", "a message of the ended worker brought it back"
            time.sleep(0.02)
        assert cluster._procs["local-0"].poll() is None  # it was alive and sending all along
        cluster._procs["local-0"].kill()
        wait_until(lambda: "local-0" in cluster.lost, 3, "the launcher to see local-0 end")
        assert cluster.scale(1) == ["local-1"] and states(m)["local-1"] == "connected"
