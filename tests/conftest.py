"""Fixtures: a Manager on a free port, in-process workers, `cp-worker` CLI processes, and polling."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pipeline_nodes
import pytest

import chimera_lab as cp
from chimera_lab.cluster.local import wait_or_kill

# the test nodes travel by value, as classes defined in a notebook do
cp.send_by_value(pipeline_nodes)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def cli_worker_path() -> str:
    """The installed `cp-worker` script of this interpreter."""
    path = Path(sys.executable).parent / "cp-worker"
    assert path.exists(), f"cp-worker is not installed next to {sys.executable}; run `pip install -e .`"
    return str(path)


class Cluster:
    """A Manager plus the workers a test adds; everything is shut down afterwards."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.manager = cp.Manager(port=0, logdir=tmp_path / "logs")
        self.workers: list[cp.Worker] = []
        self.procs: list[subprocess.Popen[str]] = []

    def worker(self, name: str, mode: str = "process") -> cp.Worker:
        w = cp.Worker(name, mode=mode, data_dir=self.tmp_path / f"data-{name}")
        w.connect(self.manager.host, self.manager.port)
        self.workers.append(w)
        return w

    def cli_worker(self, name: str, cwd: Path | None = None, token: str | None = None,
                   wait: bool = True) -> subprocess.Popen[str]:
        """Start `cp-worker` in its own working directory, without the tests on its path."""
        cwd = cwd or (self.tmp_path / f"cwd-{name}")
        cwd.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CHIMERA_TOKEN")}
        env["CHIMERA_TOKEN"] = token or self.manager.token
        proc = subprocess.Popen([cli_worker_path(), "--ip", self.manager.host, "--port", str(self.manager.port),
                                 "--name", name], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        if wait:
            wait_until(lambda: self.manager.status()["workers"].get(name, {}).get("state") == "connected",
                       15, f"cp-worker {name!r} to connect")
        return proc

    def close(self) -> None:
        self.manager.shutdown()
        for w in self.workers:
            w.shutdown()
        for p in self.procs:
            wait_or_kill(p, 10)  # processes this test started


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


def node_metric(manager: cp.Manager, node: str, key: str) -> Any:
    """One metric of one node, as last reported."""
    return manager.metrics()[node][key]


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists (and is not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
