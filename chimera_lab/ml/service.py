"""``chimera.run(master, port)``: the seed's entry point. Checks the ``CHIMERA_*`` variables, starts a Manager and one
process per worker file (``python chimera_workers/<name>.py``), serves the master's REST API, and on Ctrl-C or
SIGTERM stops it all and reaps every process it started.

With ``CHIMERA_BACKEND=docker`` each worker file runs in a container of a DockerCluster instead: on a bridge
network ``CHIMERA_NETWORK_NAME`` with subnet ``<CHIMERA_NETWORK_PREFIX>.0/<CHIMERA_NETWORK_SUBNET_MASK>`` (worker i at
``<prefix>.<i + 2>``), with ``--cpu-shares`` from CHIMERA_WORKERS_CPU_SHARES and port CHIMERA_WORKERS_PORT published
on CHIMERA_WORKERS_HOST:<its CHIMERA_WORKERS_MAPPED_PORTS entry>. Only ``chimera_workers/`` and the worker's own
``chimera_train_data/<name>/`` are mounted into it (read-only): no data goes into the image.

``serve(master, port, block=False)`` does the same and returns a handle (``.url``, ``.workers``, ``.stop()``), for
notebooks and tests.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from ..cluster.local import wait_or_kill
from ..manager import Manager
from .cluster import keep_private
from .config import TRAIN_DATA_FOLDER, WORKERS_FOLDER, ChimeraConfig, ConfigError
from .masters import MasterError
from .rest import Api, make_server
from .roles import ENV_INDEX, ENV_MANAGER, ENV_NAME, ENV_TOKEN

status_log = logging.getLogger("chimera_status")
time_log = logging.getLogger("chimera_time")
LOG_FILES = {"chimera_status": "chimera_status.log", "chimera_time": "chimera_time.log"}
TAIL = 40  # lines of a worker's output kept for error messages


class StartError(RuntimeError):
    """chimera.run could not start: the backend, the port, or a worker file that crashed or never connected."""


@dataclass
class _WorkerProcess:
    name: str
    file: str
    proc: subprocess.Popen[str]
    tail: deque[str]
    reader: threading.Thread
    reported: bool = False  # its unexpected exit was logged


class Service:
    """A running master: its REST API at ``url``, its Manager and the worker processes; ``stop()`` ends them all."""

    def __init__(self, master: Any, config: ChimeraConfig, host: str, echo: bool) -> None:
        self.master = master
        self.config = config
        self.echo = echo
        self.host = host
        self.port = 0
        self.manager: Manager | None = None
        self._procs: list[_WorkerProcess] = []
        self.docker: Any = None  # the DockerCluster of CHIMERA_BACKEND=docker
        self._server: Any = None
        self._serving: threading.Thread | None = None
        self._watcher: threading.Thread | None = None
        self._logs: list[tuple[logging.Logger, logging.Handler]] = []
        self._stopped = threading.Event()
        self._lock = threading.Lock()

    # --- what it is ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Where the REST API answers, e.g. ``http://127.0.0.1:8080``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def workers(self) -> list[str]:
        """The workers' names, in the order of CHIMERA_WORKERS_NODES_NAMES."""
        return list(self.config.workers)

    @property
    def pids(self) -> dict[str, int]:
        """The process id of each worker process this service started."""
        return {w.name: w.proc.pid for w in self._procs}

    @property
    def stopped(self) -> bool:
        """Whether stop() has run."""
        return self._stopped.is_set()

    def output(self, name: str) -> str:
        """The last lines worker `name` printed (stdout and stderr)."""
        if self.docker is not None and name in self.docker.worker_names:
            return str(self.docker.logs(name, tail=TAIL))
        for w in self._procs:
            if w.name == name:
                return "\n".join(w.tail)
        raise KeyError(f"no worker {name!r}; the workers are {', '.join(self.workers)}")

    def __repr__(self) -> str:
        state = "stopped" if self.stopped else f"on {self.url} (docs at /docs)"
        workers = ", ".join(f"{n} (pid {p})" for n, p in self.pids.items())
        return f"<chimera {type(self.master).__name__} {state}, workers {workers}>"

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # --- start and stop -----------------------------------------------------------------------------
    def _start(self, port: int, start_timeout: float) -> None:
        self._open_logs()
        status_log.info("starting %s with workers %s", type(self.master).__name__, ", ".join(self.config.workers))
        self.manager = keep_private(Manager(host="127.0.0.1", port=0))  # estimators' fits don't pick it
        api = Api(self.master, self.manager, self.config.workers, self.config)
        try:
            self._server = make_server(api, self.host, port)
        except OSError as exc:
            raise StartError(f"cannot serve on {self.host}:{port} ({exc}); pass another port to chimera.run(master, "
                             "port) or end what uses this one")
        self.port = self._server.server_address[1]
        if self.config.backend == "docker":
            self._start_containers(start_timeout)
            pids = ", ".join(f"{n} (container {c.name})" for n, c in self.docker.containers.items())
        else:
            for index, name in enumerate(self.config.workers):
                self._spawn(name, index)
            self._wait_connected(start_timeout)
            pids = ", ".join(f"{n} (pid {p})" for n, p in self.pids.items())
        status_log.info("workers connected: %s", pids)
        try:
            self.master.check(self.manager, self.config.workers, self.config)
        except MasterError as exc:
            raise StartError(str(exc))
        self._serving = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                         name="chimera-rest", daemon=True)
        self._serving.start()
        self._watcher = threading.Thread(target=self._watch, name="chimera-watch-workers", daemon=True)
        self._watcher.start()
        status_log.info("serving %s on %s", type(self.master).__name__, self.url)
        print(f"chimera: workers {pids}", flush=True)
        print(f"chimera: serving {type(self.master).__name__} on {self.url} (docs at /docs)", flush=True)

    def _start_containers(self, timeout: float) -> None:
        from ..cluster.docker import DockerCluster, DockerError

        c, app = self.config, "/home/chimera/app"
        names = list(c.workers)
        volumes = [{str(c.root / WORKERS_FOLDER): {"bind": f"{app}/{WORKERS_FOLDER}", "mode": "ro"},
                    str(c.root / TRAIN_DATA_FOLDER / name): {"bind": f"{app}/{TRAIN_DATA_FOLDER}/{name}", "mode": "ro"}}
                   for name in names]
        cluster = DockerCluster(
            names=names, network=c.network_name, subnet=f"{c.network_prefix}.0/{c.subnet_mask}",
            ip_addresses=[f"{c.network_prefix}.{i + 2}" for i in range(len(names))], cpu_shares=list(c.cpu_shares),
            ports=[{f"{c.workers_port}/tcp": (c.workers_host, p)} for p in c.mapped_ports], volumes=volumes,
            commands=[["python", f"{WORKERS_FOLDER}/{name}.py"] for name in names], working_dir=app,
            timeout=timeout, progress=self.echo)
        self.docker = cluster
        self.manager.subscribe(self._on_event)  # type: ignore[union-attr]
        try:
            cluster.start(self.manager)
        except DockerError as exc:
            raise StartError(str(exc))

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "worker" and event.get("state") == "lost" and not self._stopped.is_set():
            status_log.error("worker %s lost: %s; it is left out from now on", event["worker"],
                             event.get("reason", "silent"))
            if self.echo:
                print(f"chimera: worker {event['worker']} lost ({event.get('reason', 'silent')}); it is left out from "
                      "now on", file=sys.stderr, flush=True)

    def _spawn(self, name: str, index: int) -> None:
        assert self.manager is not None
        file = f"{WORKERS_FOLDER}/{name}.py"
        env = {**os.environ, ENV_MANAGER: f"{self.manager.host}:{self.manager.port}", ENV_TOKEN: self.manager.token,
               ENV_NAME: name, ENV_INDEX: str(index), "PYTHONUNBUFFERED": "1"}
        # its own session: Ctrl-C in the terminal reaches only the master, which then ends the workers in order
        proc = subprocess.Popen([sys.executable, file], cwd=self.config.root, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8",
                                errors="replace", bufsize=1, start_new_session=True)
        tail: deque[str] = deque(maxlen=TAIL)
        reader = threading.Thread(target=self._read, args=(name, proc, tail), name=f"chimera-out-{name}", daemon=True)
        reader.start()
        self._procs.append(_WorkerProcess(name, file, proc, tail, reader))
        status_log.info("worker %s started: %s (pid %d)", name, file, proc.pid)

    def _read(self, name: str, proc: subprocess.Popen[str], tail: deque[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line.rstrip("\n"))
            if self.echo:
                sys.stderr.write(f"[{name}] {line}")
                sys.stderr.flush()

    def _wait_connected(self, timeout: float) -> None:
        assert self.manager is not None
        deadline = time.monotonic() + timeout
        while True:
            states = self.manager.status()["workers"]
            waiting = [w for w in self._procs if states.get(w.name, {}).get("state") != "connected"]
            if not waiting:
                return
            for w in waiting:
                code = w.proc.poll()
                if code is not None:
                    w.reader.join(2)  # the rest of its output
                    hint = (" without serving: a worker file must call worker.serve() under "
                            "if __name__ == \"__main__\":" if code == 0 else "")
                    raise StartError(f"worker {w.name!r} ({w.file}) exited with code {code} while starting{hint}; "
                                     f"its last output:\n{self._tail(w)}")
            if time.monotonic() > deadline:
                raise StartError(f"worker{'s' * (len(waiting) > 1)} {', '.join(w.name for w in waiting)} did not "
                                 f"connect within {timeout:g} s; last output:\n"
                                 + "\n".join(f"[{w.name}]\n{self._tail(w)}" for w in waiting))
            time.sleep(0.05)

    @staticmethod
    def _tail(w: _WorkerProcess) -> str:
        return "\n".join(f"    {line}" for line in w.tail) or "    (nothing)"

    def _watch(self) -> None:
        while not self._stopped.wait(0.5):
            for w in self._procs:
                code = w.proc.poll()
                if code is not None and not w.reported and not self._stopped.is_set():
                    w.reported = True
                    w.reader.join(1)
                    status_log.error("worker %s (pid %d) exited with code %s; it is left out from now on; its last "
                                     "output:\n%s", w.name, w.proc.pid, code, self._tail(w))
                    if self.echo:
                        print(f"chimera: worker {w.name} (pid {w.proc.pid}) exited with code {code}; it is left out "
                              "from now on (see chimera_status.log)", file=sys.stderr, flush=True)

    def stop(self) -> None:
        """Stop serving, shut the Manager down and reap every worker process (killed if still alive after 10 s)."""
        with self._lock:
            if self._stopped.is_set():
                return
            self._stopped.set()
        status_log.info("stopping %s", type(self.master).__name__)
        try:
            if self._server is not None:
                if self._serving is not None:
                    self._server.shutdown()
                self._server.server_close()
            if self.manager is not None:
                self.manager.shutdown()  # also removes the containers of CHIMERA_BACKEND=docker
            if self.docker is not None:
                self.docker.close()
            for w in self._procs:
                code = wait_or_kill(w.proc, 10)  # by PID: processes this service started
                status_log.info("worker %s (pid %d) ended with code %s", w.name, w.proc.pid, code)
                w.reader.join(2)
        finally:
            status_log.info("stopped")
            self._close_logs()

    def wait(self) -> None:
        """Block until stop() is called (from another thread or a signal handler)."""
        while not self._stopped.wait(0.2):
            pass

    # --- log files ----------------------------------------------------------------------------------
    def _open_logs(self) -> None:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
        for name, file in LOG_FILES.items():
            handler = logging.FileHandler(self.config.root / file, encoding="utf-8")
            handler.setFormatter(formatter)
            logger = logging.getLogger(name)
            logger.setLevel(logging.INFO)
            logger.addHandler(handler)
            self._logs.append((logger, handler))

    def _close_logs(self) -> None:
        for logger, handler in self._logs:
            logger.removeHandler(handler)
            handler.close()
        self._logs.clear()


def _check_master(master: Any) -> None:
    if isinstance(master, type):
        raise TypeError(f"chimera.run takes a master object: {master.__name__}(...), not the class itself")
    if not all(callable(getattr(master, a, None)) for a in ("fit", "predict", "check")) or not hasattr(master,
                                                                                                       "route"):
        raise TypeError(f"chimera.run needs AggregationMaster() or ParameterServerMaster(kind, ...), "
                        f"got {type(master).__name__}")


def serve(master: Any, port: int = 8080, host: str = "127.0.0.1", block: bool = False, *, echo: bool = False,
          start_timeout: float = 60.0) -> Service:
    """Start `master`, its workers and its REST API (port 0: a free one); block=True serves until Ctrl-C/SIGTERM."""
    # echo: copy the workers' output to this process's stderr, each line prefixed [name] (what run() does)
    _check_master(master)
    config = ChimeraConfig.from_env(os.environ, Path.cwd())
    service = Service(master, config, host, echo)
    restore = None
    if block and threading.current_thread() is threading.main_thread():
        restore = signal.signal(signal.SIGTERM, _interrupt)
    try:
        try:
            service._start(port, start_timeout)
        except BaseException as exc:
            status_log.error("could not start: %s", exc if str(exc) else type(exc).__name__)
            service.stop()
            raise
        if block:
            try:
                service.wait()
            except KeyboardInterrupt:
                print("chimera: stopping", flush=True)
            finally:
                service.stop()
                print("chimera: stopped", flush=True)
    finally:
        if restore is not None:
            signal.signal(signal.SIGTERM, restore)
    return service


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM ends chimera.run as Ctrl-C does


def run(master: Any, port: int = 8080, host: str = "127.0.0.1") -> None:
    """Serve `master` on http://host:port with the workers of CHIMERA_WORKERS_NODES_NAMES until Ctrl-C or SIGTERM."""
    # a bad configuration or a worker that cannot start ends the program with a message saying what to fix
    try:
        serve(master, port, host, block=True, echo=True)
    except ConfigError as exc:
        raise SystemExit(str(exc))
    except StartError as exc:
        raise SystemExit(f"chimera: cannot start: {exc}")
    except KeyboardInterrupt:  # while starting
        print("chimera: interrupted while starting; everything started was stopped", file=sys.stderr, flush=True)
