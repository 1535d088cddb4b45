"""LauncherPanel: a launcher's workers in the notebook (state, engine details) with manual scaling.

What ``display(LocalCluster(2))`` shows (``Launcher._repr_mimebundle_`` makes one per launcher): the launcher's
type and state, how many workers are connected, the Manager's address, a row per worker, "−" / "+" buttons, a
number to scale to, and a Close button that asks first. The `snapshot` trait is ``launcher.status()`` plus what
the front end needs; it is refreshed on the Manager's events and every second (an engine's own states, such as
a Slurm job's, change without one), at most 5 times a second and only when something changed. Commands run on a
daemon thread, one at a time; their outcome is in the `last_command` trait.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import traitlets

from ..cluster.base import launcher_html
from .widgets import _Every, _static, _Widget

if TYPE_CHECKING:
    from ..cluster.base import Launcher

log = logging.getLogger("chimera_lab.jupyter")

MAX_WORKERS = 1000  #: the most workers the panel scales to (a typo's guard, not the engines' limit)


def _plain(value: Any) -> Any:
    """`value` as JSON-safe data (what a trait can send): unknown objects become their str."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def launcher_snapshot(launcher: Launcher) -> dict[str, Any]:
    """``launcher.status()`` as plain data, plus what the panel shows: counts, the engine's columns, limits."""
    status = _plain(launcher.status())
    workers = status["workers"]
    columns: list[str] = []
    for w in workers.values():
        columns += [k for k in w if k not in ("state", "reason") and k not in columns]
    return {**status,
            "connected": sum(1 for w in workers.values() if w["state"] == "connected"),
            "live": len(launcher.alive),
            "columns": columns,
            "owns_manager": launcher.owns_manager,
            "max_workers": MAX_WORKERS}


def _check_n(n: Any) -> str | None:
    """Why `n` is not a worker count the panel scales to, or None if it is."""
    if isinstance(n, bool) or not isinstance(n, int):
        return f"scale needs a whole number of workers, got {n!r}"
    if n < 0:
        return f"scale needs a number of workers >= 0, got {n}"
    if n > MAX_WORKERS:
        return f"scale to at most {MAX_WORKERS} workers from the panel, got {n}; call launcher.scale({n}) to insist"
    return None


class LauncherPanel(_Widget):
    """A launcher's workers and their states, with "−" / "+" / Scale and Close (after a confirmation)."""

    COMMANDS = ("scale", "close")

    _esm = _static("launcher_panel.js")
    snapshot = traitlets.Dict().tag(sync=True)
    last_command = traitlets.Dict().tag(sync=True)

    def __init__(self, launcher: Launcher, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.launcher = launcher
        self.snapshot = launcher_snapshot(launcher)
        self._busy = threading.Lock()
        self._seq = 0
        self._report_lock = threading.Lock()
        self._last_push = 0.0
        self._sub_lock = threading.Lock()
        self._push_lock = threading.Lock()
        self._unsubscribe: Callable[[], None] | None = None
        self._refresher = _Every("chimera-launcher-panel-refresh", 1.0, self._refresh)  # before events can wake it
        self._subscribe()

    # -- keeping up with the launcher -------------------------------------------------------------------
    def _subscribe(self) -> None:
        """Follow the Manager's events once the launcher has one (a launcher not started yet has none)."""
        with self._sub_lock:
            if self._unsubscribe is None and not self._closed and self.launcher.started:
                self._unsubscribe = self.launcher.manager.subscribe(self._on_event)

    def _on_event(self, event: dict[str, Any]) -> None:
        """A Manager event: refresh soon."""
        self._refresher.wake()

    def _refresh(self) -> None:
        """Push a new snapshot if it changed (at most 5 times a second); close with the launcher."""
        wait = self._last_push + 0.2 - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._subscribe()
        self._push()
        if self.launcher.closed and not self._closed:  # a panel made by hand: Launcher.close closes only its own
            self.close()

    def _push(self) -> None:
        """Set `snapshot` to the launcher's state now, if that differs (one thread at a time: newest wins)."""
        with self._push_lock:
            snap = launcher_snapshot(self.launcher)
            if snap != self.snapshot and not self._closed:
                self.snapshot = snap
                self._last_push = time.monotonic()

    # -- commands from the front end --------------------------------------------------------------------
    def _report(self, **result: Any) -> None:
        """Set `last_command` (numbered, so that two equal outcomes still reach the front end)."""
        with self._report_lock:
            if self._closed:
                return
            self._seq += 1
            self.last_command = {**result, "seq": self._seq}

    def _on_message(self, content: dict[str, Any]) -> None:
        """Front end -> kernel: {type: "command", cmd: "scale", n} or {..., cmd: "close", confirm: true}."""
        if content.get("type") != "command":
            return
        cmd = content.get("cmd")
        if cmd not in self.COMMANDS:
            self._report(cmd=str(cmd), ok=False, error=f"unknown command {cmd!r}")
            return
        arg: Any = content.get("n") if cmd == "scale" else None
        shown = {"n": _plain(arg)} if cmd == "scale" else {}
        if cmd == "scale" and (problem := _check_n(arg)) is not None:
            self._report(cmd=cmd, **shown, ok=False, error=problem)
            return
        if cmd == "close" and content.get("confirm") is not True:
            self._report(cmd=cmd, ok=False, error="close ends the launcher's workers: send it with confirm: true")
            return
        if not self._busy.acquire(blocking=False):
            self._report(cmd=cmd, **shown, ok=False, error="another command is still running")
            return
        self._report(cmd=cmd, **shown, ok=None, error=None)
        threading.Thread(target=self._run_command, args=(cmd, arg), name=f"chimera-launcher-panel-{cmd}",
                         daemon=True).start()

    def _run_command(self, cmd: str, arg: Any) -> None:
        """Run one command, push the snapshot, then report (so the table agrees once the front end hears)."""
        ok, error = True, None
        try:
            try:
                if cmd == "scale":
                    self.launcher.scale(arg)
                else:
                    self.launcher.close()
            except Exception as exc:
                ok, error = False, str(exc) or type(exc).__name__
                log.info("LauncherPanel: %s failed: %s", cmd, error)
            try:
                if not self._closed:
                    self._push()
            except Exception:
                log.exception("LauncherPanel: showing the launcher after %s failed", cmd)
            self._report(cmd=cmd, **({"n": arg} if cmd == "scale" else {}), ok=ok, error=error)
        finally:
            self._busy.release()

    # -- the rest -------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Unsubscribe from the Manager, stop refreshing and close the widget."""
        if hasattr(self, "_refresher"):  # fully built (ipywidgets' __del__ calls close too)
            with self._sub_lock:
                self._closed = True
                unsubscribe, self._unsubscribe = self._unsubscribe, None
            if unsubscribe is not None:
                unsubscribe()
            self._refresher.stop()
        super().close()

    def _html(self) -> str:
        """The launcher's HTML table (what a saved notebook shows)."""
        return launcher_html(self.launcher.status())
