"""LocalCluster: a Manager plus worker processes on this machine, started and ended together."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..manager import Manager, ManagerError


def wait_or_kill(proc: subprocess.Popen[Any], timeout: float) -> int:
    """Wait for a process we started to exit; kill it (by its PID) if it has not after `timeout` s."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


class LocalCluster:
    """A Manager and `n_workers` worker processes (``local-0``, ``local-1``, ...) on 127.0.0.1.

    ``data_dir``: where the workers record (each in a subfolder named after it; default ./chimera-data);
    ``logdir``: where the Manager collects sessions.

    ``with LocalCluster(2) as cluster: cluster.manager.commit_graph(graph, mapping)``; leaving the block
    shuts the Manager down, which ends the workers (any still alive after 10 s are killed).
    """

    def __init__(self, n_workers: int = 2, port: int = 0, mode: str = "process", prefix: str = "local",
                 manager: Manager | None = None, timeout: float = 30.0,
                 data_dir: str | os.PathLike[str] | None = None, logdir: str | os.PathLike[str] | None = None) -> None:
        if n_workers < 1:
            raise ValueError(f"LocalCluster needs at least one worker, got n_workers={n_workers}")
        self.manager = manager or Manager(port=port, logdir=logdir)
        self.names = [f"{prefix}-{i}" for i in range(n_workers)]
        self._procs: list[subprocess.Popen[bytes]] = []
        self._logdir = Path(tempfile.mkdtemp(prefix="chimera-local-logs-"))  # what each worker prints (see logs)
        self._closed = False
        self.manager._adopt(self)
        env = {**os.environ, "CHIMERA_TOKEN": self.manager.token, "PYTHONUNBUFFERED": "1"}
        try:
            for name in self.names:
                out = open(self._logdir / f"{name}.log", "wb")
                self._procs.append(subprocess.Popen(
                    [sys.executable, "-c", "from chimera_lab.worker import main; raise SystemExit(main())",
                     "--ip", self.manager.host, "--port", str(self.manager.port), "--name", name,
                     "--mode", mode,
                     *(["--data-dir", str(Path(data_dir) / name)] if data_dir is not None else [])],
                    env=env, stdout=out, stderr=subprocess.STDOUT))
                out.close()  # the child has its own copy
            self._wait_connected(timeout)
        except BaseException:
            self.close()
            raise

    def _wait_connected(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            workers = self.manager.status()["workers"]
            if all(workers.get(n, {}).get("state") == "connected" for n in self.names):
                return
            dead = [n for n, p in zip(self.names, self._procs, strict=True) if p.poll() is not None]
            if dead:
                raise ManagerError(f"LocalCluster: worker process(es) {', '.join(dead)} exited while starting")
            if time.monotonic() > deadline:
                raise ManagerError(f"LocalCluster: workers did not connect within {timeout:.0f} s")
            time.sleep(0.02)

    @property
    def workers(self) -> list[str]:
        """The names of this cluster's workers."""
        return list(self.names)

    @property
    def worker_names(self) -> list[str]:
        """The names of this cluster's workers (as for every launcher)."""
        return list(self.names)

    def logs(self, worker: str, tail: int | None = 200) -> str:
        """What worker `worker`'s process printed (the last `tail` lines; all if None)."""
        if worker not in self.names:
            raise KeyError(f"no worker named {worker!r} in this LocalCluster; its workers: {', '.join(self.names)}")
        try:
            lines = (self._logdir / f"{worker}.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines if tail is None else lines[-tail:])

    def close(self, manager: bool = True) -> None:
        """Shut the Manager down and make sure every worker process has ended."""
        if self._closed:
            return
        self._closed = True
        if manager:
            self.manager.shutdown()
        for p in self._procs:
            wait_or_kill(p, 10)
        shutil.rmtree(self._logdir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __copy__(self) -> LocalCluster:
        return self  # a handle on running processes: a copy is the same cluster (scikit-learn's clone copies params)

    def __deepcopy__(self, memo: dict[int, Any]) -> LocalCluster:
        return self

    def __repr__(self) -> str:
        return f"<LocalCluster {self.manager.host}:{self.manager.port} workers={self.names}>"
