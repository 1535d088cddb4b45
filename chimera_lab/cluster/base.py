"""Launcher: the one interface every way of getting workers shares (local processes, Docker, Slurm, Swarm, ...).

A launcher starts workers for a Manager, waits until they have joined, reads their logs, scales, notices when
one dies and ends them all on close. What differs per engine is four small hooks (``_grow``, ``_stop``,
``_dead``, ``_logs``); everything else is written here once:

- ``start(manager=None)``: with a Manager, start workers for it; without, create a Manager of its own.
  ``manager.add_workers(launcher)`` and ``with launcher:`` do the same. A launcher also starts the first time its
  ``manager`` is asked for, so ``LocalCluster(2).manager`` is a running cluster.
- one ownership rule: a launcher handed a Manager never shuts that Manager down (the Manager ends the launcher's
  workers when it shuts down); a launcher that made its own Manager shuts it down on ``close()``.
- ``scale(n)``, ``wait_for_workers()``, ``logs(worker)``, ``status()``, ``close()``; a watcher thread reports
  a worker lost as soon as its process, container or job is seen gone, with the engine's reason.
- in a notebook: a panel with the workers, their state and scale buttons (HTML where there is no kernel).

Third-party launchers register under the ``chimera_lab.launchers`` entry point group; ``launcher(name)`` finds
any of them by name.
"""

from __future__ import annotations

import atexit
import html
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from importlib import metadata
from typing import TYPE_CHECKING, Any, ClassVar

from ..manager import Manager, ManagerError

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger("chimera_lab.cluster")

ENTRY_POINTS = "chimera_lab.launchers"


class LauncherError(ManagerError):
    """A launcher cannot start, scale or reach its workers; the message names the cause and the fix."""


class Launcher:
    """Workers for a Manager, started, watched, scaled and ended together (subclasses say how).

    ``n_workers``: how many to start; ``manager``: whose workers they are (start now); ``prefix``: worker names
    are ``<prefix>-0``, ``<prefix>-1``, ...; ``timeout``: seconds to wait for workers to join.
    """

    kind: ClassVar[str] = "launcher"  #: the name the launcher is registered under (``chimera_lab.launchers``)
    poll_interval: ClassVar[float] = 0.5  #: seconds between looks for dead workers (see ``_dead``)
    error: ClassVar[type[Exception]] = LauncherError  #: what start/scale raise when workers do not come

    def __init__(self, n_workers: int = 1, manager: Manager | None = None, *, prefix: str | None = None,
                 timeout: float = 60.0) -> None:
        if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 0:
            raise ValueError(f"{type(self).__name__}: n_workers must be a whole number >= 0, got {n_workers!r}")
        self.n_workers = n_workers
        self.prefix = prefix or self.kind
        self.timeout = timeout
        self.worker_names: list[str] = []  #: workers this launcher started and has not retired (lost ones too)
        self.lost: dict[str, str] = {}  #: worker -> why the launcher saw it end
        self.timings: dict[str, float] = {}  #: seconds: setup, ready (joining, at the last scale-up), total
        self._manager: Manager | None = None
        self._own_manager = False
        self._closed = False
        self._closing = threading.Event()
        self._lock = threading.RLock()
        self._watcher: threading.Thread | None = None
        self._panel: Any = None
        self._retiring: set[str] = set()  # being ended by scale: not lost
        if manager is not None:
            self.start(manager)

    # -- lifecycle ------------------------------------------------------------------------------------------
    @property
    def manager(self) -> Manager:
        """The Manager these workers belong to (a launcher not started yet starts now, with its own)."""
        if self._manager is None:
            self.start()
        assert self._manager is not None
        return self._manager

    @property
    def started(self) -> bool:
        """Whether `start` ran (the workers may since have been closed)."""
        return self._manager is not None

    @property
    def owns_manager(self) -> bool:
        """Whether this launcher made its Manager (and so shuts it down on close)."""
        return self._own_manager

    @property
    def closed(self) -> bool:
        """Whether `close` ran."""
        return self._closed

    def start(self, manager: Manager | None = None) -> Self:
        """Start the workers for `manager` (one of its own when None); returns once all have joined."""
        if self._closed:
            raise LauncherError(f"this {type(self).__name__} was closed; create a new one")
        if self._manager is not None:
            if manager is not None and manager is not self._manager:
                raise LauncherError(f"this {type(self).__name__} already runs workers for {self._manager!r}; "
                                    "create another launcher for a second Manager")
            return self
        if manager is None:
            self._check()  # fail before making a Manager if the engine is not there
            manager = self._make_manager()
            self._own_manager = True
        if self not in manager.launchers:
            manager.add_workers(self)  # registers, then calls start(manager) again
            return self
        t0 = time.perf_counter()
        self._manager = manager
        atexit.register(self.close)
        try:
            if not self._own_manager:
                self._check()
            self._setup()
            self.timings["setup"] = time.perf_counter() - t0
            self._watcher = threading.Thread(target=self._watch, name=f"chimera-{self.kind}-watch", daemon=True)
            self._watcher.start()
            self.scale(self.n_workers)
        except BaseException:
            self.close()
            raise
        self.timings["total"] = time.perf_counter() - t0
        log.info("%s: workers %s ready in %.1f s", type(self).__name__, ", ".join(self.worker_names),
                 self.timings["total"])
        return self

    def scale(self, n: int) -> list[str]:
        """Have `n` live workers: start more, or retire the newest; returns the live workers' names."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"scale needs a whole number of workers >= 0, got {n!r}")
        if self._manager is None:
            self.n_workers = n
            self.start()
            return self.alive
        if self._closed:
            raise LauncherError(f"this {type(self).__name__} was closed; create a new one")
        with self._lock:
            alive = self.alive
            if n > len(alive):
                names = self._grow(n - len(alive))
                for name in names:  # (an engine may give a new worker a lost one's name: a swarm slot)
                    self.lost.pop(name, None)
                self.worker_names += [name for name in names if name not in self.worker_names]
                t = time.perf_counter()
                self.wait_for_workers(names, self.timeout)
                self.timings["ready"] = time.perf_counter() - t
            elif n < len(alive):
                retire = alive[n:]
                self._retire(retire)
            self.n_workers = n
            return self.alive

    def _retire(self, names: list[str]) -> None:
        """End workers on purpose (scale down): not reported lost, and forgotten once gone."""
        self._retiring.update(names)
        try:
            self._stop(names)
            deadline = time.monotonic() + 30
            m = self.manager
            while any(m.workers.get(n) is not None and m.workers[n].state == "connected" for n in names):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            self.worker_names = [n for n in self.worker_names if n not in names]
        finally:
            self._retiring.difference_update(names)

    @property
    def alive(self) -> list[str]:
        """This launcher's workers that have not been seen to end."""
        return [n for n in self.worker_names if n not in self.lost]

    def wait_for_workers(self, names: Iterable[str] | None = None, timeout: float | None = None) -> None:
        """Block until the named workers (default: all live ones) have joined the Manager; a worker whose
        process, container or job ended meanwhile raises a LauncherError with the end of its log."""
        names = list(self.alive if names is None else names)
        timeout = self.timeout if timeout is None else timeout
        m = self.manager
        deadline = time.monotonic() + timeout
        while True:
            waiting = [n for n in names if m.workers.get(n) is None or m.workers[n].state != "connected"]
            if not waiting:
                return
            dead = {**self._dead(waiting), **{n: self.lost[n] for n in waiting if n in self.lost}}
            if dead:
                name, why = next(iter(dead.items()))
                raise self.error(f"{type(self).__name__}: worker {name!r} ended while starting: {why}"
                                 f"{'' if 'the end of its log' in why else self._log_tail(name)}")
            if time.monotonic() > deadline:
                raise self.error(f"{type(self).__name__}: worker(s) {', '.join(waiting)} did not join the Manager "
                                 f"at {m.host}:{m.port} within {timeout:.0f} s{self._waiting_hint(waiting)}"
                                 f"{self._log_tail(waiting[0])}")
            time.sleep(0.1)

    def logs(self, worker: str, tail: int | None = 200) -> str:
        """What worker `worker` printed (the last `tail` lines; all if None)."""
        if worker not in self.worker_names:
            raise KeyError(f"no worker named {worker!r} in this {type(self).__name__}; its workers: "
                           f"{', '.join(self.worker_names) or 'none'}")
        return self._logs(worker, tail)

    def _log_tail(self, worker: str, lines: int = 20) -> str:
        try:
            text = self._logs(worker, lines).strip()
        except Exception as exc:
            text = f"(its log cannot be read: {exc})"
        return f"; the end of its log:\n{text}" if text else " (it printed nothing)"

    def close(self, manager: bool = True) -> None:
        """End every worker this launcher started (and its own Manager, if it made one). ``manager=False``
        leaves the Manager alone (the Manager's own shutdown calls it so)."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        try:
            atexit.unregister(self.close)
        except Exception:
            pass
        m = self._manager
        if manager and self._own_manager and m is not None and m.state != "shutdown":
            m.shutdown()  # tells the workers to exit first; calls close(manager=False), which returns at once
        try:
            self._teardown()
        finally:
            if self._panel is not None:
                self._panel.close()
            if m is not None:
                m.remove_launcher(self)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __copy__(self) -> Self:
        return self  # a handle on running workers: a copy is the same launcher (scikit-learn's clone copies params)

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        return self

    # -- what is going on -------------------------------------------------------------------------------------
    @property
    def workers(self) -> list[str]:
        """The names of this launcher's workers."""
        return list(self.worker_names)

    @property
    def state(self) -> str:
        """not started, running, closed."""
        return "closed" if self._closed else "running" if self._manager is not None else "not started"

    def status(self) -> dict[str, Any]:
        """This launcher at a glance (plain data): kind, state, workers asked for, and per worker its state in
        the Manager and what the engine knows of it (job id, container, pid, ...)."""
        m = self._manager
        known = m.status()["workers"] if m is not None and m.state != "shutdown" else {}
        workers = {}
        for name in self.worker_names:
            state = known.get(name, {}).get("state", "starting")
            if name in self.lost and state != "connected":
                state = "lost"
            workers[name] = {"state": state, "reason": self.lost.get(name), **self._describe(name)}
        return {"kind": self.kind, "type": type(self).__name__, "state": self.state, "requested": self.n_workers,
                "manager": None if m is None else f"{m.host}:{m.port}", "workers": workers,
                "details": self._details()}

    def __repr__(self) -> str:
        alive = len(self.alive)
        return (f"<{type(self).__name__} {self.state}: {alive} of {self.n_workers} workers"
                f"{' (' + ', '.join(self.worker_names) + ')' if self.worker_names else ''}>")

    def _repr_html_(self) -> str:
        """An HTML table of the workers and their states (what a saved notebook shows)."""
        return launcher_html(self.status())

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        """In a notebook: the live panel (workers, state, scale buttons), with the HTML table as fallback."""
        try:
            from ..jupyter.launcher_panel import LauncherPanel
        except ImportError:  # no widget libraries
            return {"text/plain": repr(self), "text/html": self._repr_html_()}
        if self._panel is None or self._panel.closed:
            self._panel = LauncherPanel(self)
        return self._panel._repr_mimebundle_(include=include, exclude=exclude)

    # -- the watcher -----------------------------------------------------------------------------------------
    def _watch(self) -> None:
        failures = 0
        while not self._closing.wait(self.poll_interval):
            try:
                names = self.alive
                if not names:
                    continue
                for name, why in self._dead(names).items():
                    self._report_lost(name, why)
            except Exception:
                failures += 1
                if failures <= 3 or failures % 100 == 0:
                    log.exception("%s: looking for ended workers failed (%d times)", type(self).__name__, failures)

    def _report_lost(self, name: str, why: str) -> None:
        """Worker `name` was seen to end (not retired): tell the Manager now, with the engine's reason."""
        if self._closing.is_set() or name in self.lost or name in self._retiring or name not in self.worker_names:
            return
        if self._manager is not None and self._manager.state in ("shutting down", "shutdown"):
            return  # the Manager told its workers to exit
        self.lost[name] = why
        log.error("%s: worker %r ended: %s", type(self).__name__, name, why)
        if self._manager is not None:
            self._manager.worker_lost(name, why)

    def _next_names(self, count: int) -> list[str]:
        """`count` worker names ``<prefix>-<i>`` that neither this launcher nor the Manager has used."""
        taken = set(self.worker_names) | set(self._manager.workers if self._manager is not None else ())
        names: list[str] = []
        i = 0
        while len(names) < count:
            name = f"{self.prefix}-{i}"
            if name not in taken:
                names.append(name)
            i += 1
        return names

    # -- the hooks a launcher implements ---------------------------------------------------------------------
    def _check(self) -> None:
        """Raise a LauncherError naming the fix if the engine cannot be used (called before anything starts)."""

    def _make_manager(self) -> Manager:
        """The Manager a launcher started without one makes for itself."""
        return Manager(port=0)

    def _setup(self) -> None:
        """What comes before the first worker (an image, a network, a log folder)."""

    def _grow(self, count: int) -> list[str]:
        """Start `count` more workers; return their names (the base class waits for them to join)."""
        raise NotImplementedError

    def _stop(self, names: list[str]) -> None:
        """End these workers (their processes, containers or jobs)."""
        raise NotImplementedError

    def _dead(self, names: list[str]) -> dict[str, str]:
        """Of these workers, those whose process, container or job has ended: name -> the engine's reason."""
        return {}

    def _logs(self, worker: str, tail: int | None) -> str:
        """What a worker printed (its last `tail` lines)."""
        return ""

    def _describe(self, worker: str) -> dict[str, Any]:
        """What the engine knows of one worker, for `status` (job id, container, pid, ...)."""
        return {}

    def _details(self) -> dict[str, Any]:
        """What the engine knows of the launcher as a whole, for `status` (image, partition, ...)."""
        return {}

    def _waiting_hint(self, waiting: list[str]) -> str:
        """Why workers may not have joined yet (a queued job's reason, ...), or ''."""
        return ""

    def _teardown(self) -> None:
        """End every worker still running and remove what `_setup` made; must be safe to call once after a
        partial start."""
        if self.worker_names:
            self._stop(list(self.worker_names))


def log_tail(path: os.PathLike[str] | str, tail: int | None) -> str:
    """The last `tail` lines (all if None) of a worker's log file; '' if it is not there (yet)."""
    try:
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    return "\n".join(lines if tail is None else lines[-tail:])


# ---------------------------------------------------------------------------------------------------------------
# who made a worker: what crash cleanup goes by
# ---------------------------------------------------------------------------------------------------------------
def owner_id() -> str:
    """``host:pid:start-time`` of this process: written on what a launcher creates, so `owner_alive` can tell
    later whether the process that made it is still running."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def _start_time(pid: int) -> str:
    """A process's start time in clock ticks since boot (with the pid, unique for the machine's uptime)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def owner_alive(owner: str) -> bool:
    """Whether the process an `owner_id` names still runs (True for another machine's: not ours to judge)."""
    host, _, rest = owner.partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    return bool(started) and _start_time(int(pid)) == started


# ---------------------------------------------------------------------------------------------------------------
# launchers by name
# ---------------------------------------------------------------------------------------------------------------
def available_launchers() -> dict[str, metadata.EntryPoint]:
    """The launchers installed packages register (``chimera_lab.launchers`` entry points), by name."""
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINTS)}


def launcher(name: str) -> type[Launcher]:
    """The launcher class registered as `name` (``local``, ``docker``, ``slurm``, ``swarm`` or a plug-in's)."""
    eps = available_launchers()
    if name not in eps:
        raise LauncherError(f"no launcher named {name!r}; installed: {', '.join(sorted(eps)) or 'none'}. A package "
                            f"adds one with an entry point in the group {ENTRY_POINTS!r}")
    cls = eps[name].load()
    if not (isinstance(cls, type) and issubclass(cls, Launcher)):
        raise LauncherError(f"the launcher entry point {name!r} ({eps[name].value}) is not a "
                            "chimera_lab.cluster.Launcher subclass")
    return cls


# ---------------------------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------------------------
def _state_color(state: str) -> str:
    return "#2e7d32" if state in ("connected", "running") else \
        "#d32f2f" if state in ("lost", "closed", "disconnected") else "#777"


def launcher_html(status: dict[str, Any]) -> str:
    """An HTML summary of a launcher's `status()`: kind, state, and a row per worker (no scripts, no CSS file)."""
    e = html.escape
    cell = 'style="padding:2px 10px;text-align:left;border-bottom:1px solid #ddd"'
    keys: list[str] = []
    for w in status["workers"].values():
        keys += [k for k in w if k not in ("state", "reason") and k not in keys]
    rows = []
    for name, w in status["workers"].items():
        extra = "".join(f"<td {cell}>{e(str(w.get(k) if w.get(k) is not None else ''))}</td>" for k in keys)
        reason = f' <span style="color:#777">({e(w["reason"])})</span>' if w.get("reason") else ""
        rows.append(f"<tr><td {cell}>{e(name)}</td><td {cell}><span style=\"color:{_state_color(w['state'])};"
                    f"font-weight:600\">{e(w['state'])}</span>{reason}</td>{extra}</tr>")
    head = "".join(f"<th {cell}>{e(h)}</th>" for h in ("worker", "state", *keys))
    details = ", ".join(f"{e(str(k))}: {e(str(v))}" for k, v in status.get("details", {}).items() if v is not None)
    alive = sum(1 for w in status["workers"].values() if w["state"] == "connected")
    parts = [f'<div class="chimera-launcher"><div><b>{e(status["type"])}</b> '
             f'<span style="color:{_state_color(status["state"])};font-weight:600">{e(status["state"])}</span> '
             f'&middot; {alive} of {status["requested"]} workers connected'
             f'{" &middot; Manager " + e(status["manager"]) if status.get("manager") else ""}</div>']
    if details:
        parts.append(f'<div style="color:#555">{details}</div>')
    if rows:
        parts.append(f'<table style="border-collapse:collapse;margin:4px 0"><tr>{head}</tr>{"".join(rows)}</table>')
    else:
        parts.append("<div><em>no workers</em></div>")
    parts.append("</div>")
    return "".join(parts)
