"""LocalCluster: worker processes on this machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..manager import Manager
from .base import Launcher, log_tail


def wait_or_kill(proc: subprocess.Popen[Any], timeout: float) -> int:
    """Wait for a process we started to exit; kill it (by its PID) if it has not after `timeout` s."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


class LocalCluster(Launcher):
    """`n_workers` worker processes (``local-0``, ``local-1``, ...) on 127.0.0.1.

    ``with LocalCluster(2) as cluster: cluster.manager.commit_graph(graph, mapping)``: a Manager of its own,
    shut down on leaving the block. ``LocalCluster(2, manager=m)`` or ``m.add_workers(LocalCluster(2))``:
    workers for an existing Manager, ended when it shuts down. ``port`` and ``logdir`` are for the Manager it
    makes; ``data_dir``: where the workers record (each in a subfolder named after it; default ./chimera-data).
    """

    kind = "local"

    def __init__(self, n_workers: int = 2, port: int = 0, mode: str = "process", prefix: str = "local",
                 manager: Manager | None = None, timeout: float = 30.0,
                 data_dir: str | os.PathLike[str] | None = None, logdir: str | os.PathLike[str] | None = None) -> None:
        if n_workers < 1:
            raise ValueError(f"LocalCluster needs at least one worker, got n_workers={n_workers}")
        self.port, self.mode, self.logdir = port, mode, logdir
        self.data_dir = None if data_dir is None else Path(data_dir)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logdir = Path(tempfile.mkdtemp(prefix="chimera-local-logs-"))  # what each worker prints (see logs)
        super().__init__(n_workers, manager, prefix=prefix, timeout=timeout)

    @property
    def names(self) -> list[str]:
        """The names of this cluster's workers."""
        return self.workers

    def _make_manager(self) -> Manager:
        return Manager(port=self.port, logdir=self.logdir)

    def _grow(self, count: int) -> list[str]:
        m = self.manager
        inherited = {k: v for k, v in os.environ.items() if k != "CHIMERA_ENCRYPT"}  # the Manager decides
        env = {**inherited, **m.worker_environment(), "PYTHONUNBUFFERED": "1"}
        names = self._next_names(count)
        for name in names:
            with open(self._logdir / f"{name}.log", "wb") as out:  # the child keeps its own copy
                self._procs[name] = subprocess.Popen(
                    [sys.executable, "-c", "from chimera_lab.worker import main; raise SystemExit(main())",
                     "--ip", m.host if m.host != "0.0.0.0" else "127.0.0.1", "--port", str(m.port), "--name", name,
                     "--mode", self.mode,
                     *(["--data-dir", str(self.data_dir / name)] if self.data_dir is not None else [])],
                    env=env, stdout=out, stderr=subprocess.STDOUT)
        return names

    def _stop(self, names: list[str]) -> None:
        procs = [self._procs[n] for n in names if n in self._procs]
        for p in procs:
            if p.poll() is None:
                p.terminate()  # SIGTERM: the worker ends its nodes and says goodbye
        for p in procs:
            wait_or_kill(p, 10)

    def _dead(self, names: list[str]) -> dict[str, str]:
        out = {}
        for name in names:
            p = self._procs.get(name)
            if p is not None and (code := p.poll()) is not None:
                out[name] = f"its process (pid {p.pid}) exited with code {code}"
        return out

    def _logs(self, worker: str, tail: int | None) -> str:
        return log_tail(self._logdir / f"{worker}.log", tail)

    def _describe(self, worker: str) -> dict[str, Any]:
        p = self._procs.get(worker)
        return {"pid": None if p is None else p.pid}

    def _teardown(self) -> None:
        self._stop(list(self._procs))  # after a Manager's shutdown they have exited already
        shutil.rmtree(self._logdir, ignore_errors=True)
