"""Real-browser testing of the notebook widgets: an isolated JupyterLab, Debian's Chromium driven by
Playwright (sync API, no downloaded browser), and helpers to open and run a notebook, talk to its kernel
and measure the frames a widget shows.

    with JupyterLab(notebook_dir, scratch) as lab, browser(scratch) as b:
        page = b.new_page(viewport={"width": 1280, "height": 1400})
        open_notebook(page, lab, "02-video-streaming.ipynb")
        run_all_and_wait(page)
        print(kernel_eval(page, "print(1 + 1)"), count_frames(page, "img.chimera-frame", 3))

Used by tests/test_browser.py and bench/browser.py. Everything the server, its kernels and the browser write
(config, data, runtime files, settings, HOME, caches, TMPDIR) goes under one scratch folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

CHROMIUM = os.environ.get("CHIMERA_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",                      # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",   # no calls home: only the package registries are reachable
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",           # docker's default /dev/shm is 64 MB
]
INSTALL_HINT = ("apt-get install --no-install-recommends chromium chromium-driver fonts-dejavu-core "
                "(and `pip install -e .[test]` for playwright and jupyterlab; never `playwright install`)")

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def browser_unavailable() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"{CHROMIUM} is missing; to run the browser tests: {INSTALL_HINT}"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return f"the playwright package is missing; to run the browser tests: {INSTALL_HINT}"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def scratch_env(root: Path, python: str = sys.executable) -> dict[str, str]:
    """os.environ with every place Jupyter, IPython and Chromium write to moved under `root`, and the
    interpreter's own bin folder first on PATH (its kernels, scripts and workers are that Python's)."""
    dirs = {
        "HOME": "home", "XDG_CONFIG_HOME": "home/.config", "XDG_CACHE_HOME": "home/.cache",
        "XDG_DATA_HOME": "home/.local/share", "TMPDIR": "tmp",
        "JUPYTER_CONFIG_DIR": "jupyter/config", "JUPYTER_DATA_DIR": "jupyter/data",
        "JUPYTER_RUNTIME_DIR": "jupyter/runtime", "IPYTHONDIR": "ipython",
        "JUPYTERLAB_SETTINGS_DIR": "lab/settings", "JUPYTERLAB_WORKSPACES_DIR": "lab/workspaces",
    }
    env = dict(os.environ)
    for var, sub in dirs.items():
        path = root / sub
        path.mkdir(parents=True, exist_ok=True)
        env[var] = str(path)
    env.update(JUPYTER_PLATFORM_DIRS="1", MPLBACKEND="Agg", PYDEVD_DISABLE_FILE_VALIDATION="1",
               PYTHONUNBUFFERED="1")
    env["PATH"] = os.pathsep.join([str(Path(python).parent), env.get("PATH", "")])
    return env


# ---------------------------------------------------------------------------------------------------------
# processes: what the server started, found through /proc, so that teardown never has to look for names


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, start time in clock ticks), for every process we can see."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        table[int(entry)] = (int(fields[1]), int(fields[19]))
    return table


def descendants(pid: int) -> dict[int, int]:
    """Every live descendant of `pid` (kernels, and what the kernels started): pid -> start time."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for p, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(p)
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found[child] = table[child][1]
                todo.append(child)
    return found


def _same_process(pid: int, start: int) -> bool:
    """`pid` still names the process that had this start time (not a reused pid, not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z" and int(fields[19]) == start


def _signal_all(procs: dict[int, int], sig: int) -> None:
    for pid, start in procs.items():
        if _same_process(pid, start):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)


def _wait_gone(procs: dict[int, int], timeout: float) -> dict[int, int]:
    deadline = time.monotonic() + timeout
    while True:
        alive = {p: s for p, s in procs.items() if _same_process(p, s)}
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------------------


class JupyterLab:
    """`<python> -m jupyterlab` on 127.0.0.1, a free port and a random token, with its own config, data,
    runtime, settings and workspaces under `scratch`. A context manager; `stop()` shuts the kernels down
    through the API, then ends the server's process group and any descendant left over, by PID."""

    def __init__(self, notebook_dir: str | os.PathLike[str], scratch: str | os.PathLike[str] | None = None,
                 python: str = sys.executable, port: int | None = None, app: str = "lab") -> None:
        if app not in ("lab", "notebook"):
            raise ValueError(f"app must be 'lab' (JupyterLab) or 'notebook' (Notebook 7), got {app!r}")
        self.app = app
        self.notebook_dir = Path(notebook_dir).resolve()
        self._own_scratch = scratch is None
        self.scratch = Path(scratch or tempfile.mkdtemp(prefix="chimera-lab-rig-")).resolve()
        self.python = python
        self.port = port or free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.scratch / "jupyterlab.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def _settings(self) -> None:
        settings = self.scratch / "lab" / "settings"
        # every cell stays in the DOM (no virtual scrolling), so off-screen widgets can be found
        _write_json(settings / "@jupyterlab/notebook-extension/tracker.jupyterlab-settings",
                    {"windowingMode": "none"})
        # no "receive Jupyter news?" toast, no update check
        _write_json(settings / "@jupyterlab/apputils-extension/notification.jupyterlab-settings",
                    {"fetchNews": "false", "checkForUpdates": False, "doNotDisturbMode": True})

    def start(self, timeout: float = 90) -> JupyterLab:
        env = scratch_env(self.scratch, self.python)
        self._settings()
        server = ["--no-browser",
                  "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
                  f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.notebook_dir}",
                  "--ServerApp.allow_root=True", "--FileContentsManager.delete_to_trash=False"]
        if self.app == "lab":
            cmd = [self.python, "-m", "jupyterlab", *server,
                   "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: commands, shell, kernels
                   "--LabApp.news_url=None",
                   "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                   "--LabApp.extension_manager=readonly",  # the extension manager never queries PyPI
                   f"--LabApp.user_settings_dir={env['JUPYTERLAB_SETTINGS_DIR']}",
                   f"--LabApp.workspaces_dir={env['JUPYTERLAB_WORKSPACES_DIR']}"]
        else:  # Notebook 7: the same front-end pieces, one document per page
            cmd = [self.python, "-m", "notebook", *server,
                   "--JupyterNotebookApp.expose_app_in_browser=True",
                   f"--JupyterNotebookApp.user_settings_dir={env['JUPYTERLAB_SETTINGS_DIR']}",
                   f"--JupyterNotebookApp.workspaces_dir={env['JUPYTERLAB_WORKSPACES_DIR']}"]
        self._log = open(self.log_path, "wb")
        # a session of its own: its process group is ours to end, and nothing else is in it
        self.proc = subprocess.Popen(cmd, env=env, cwd=self.notebook_dir, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"jupyterlab exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with self._request("/api/status", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"jupyterlab did not answer within {timeout} s:\n{self.log_tail()}")
            time.sleep(0.2)

    def _request(self, path: str, method: str = "GET", timeout: float = 5) -> Any:
        req = urllib.request.Request(self.url + path, method=method,
                                     headers={"Authorization": f"token {self.token}"})
        return urllib.request.urlopen(req, timeout=timeout)

    def lab_url(self, path: str) -> str:
        """The URL that opens `path` (relative to the notebook folder) in a fresh workspace, logged in."""
        if self.app == "notebook":
            return f"{self.url}/notebooks/{quote(path)}?token={self.token}"
        return f"{self.url}/lab/tree/{quote(path)}?token={self.token}&reset"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            # who to end: the server's descendants, seen while it is alive (kernels run in sessions of
            # their own, and so do the cluster processes a kernel starts)
            leftovers = descendants(proc.pid)
            try:  # the clean way: the server shuts its kernels down and exits
                with self._request("/api/shutdown", method="POST", timeout=10):
                    pass
                proc.wait(timeout=20)
            except Exception:
                pass
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGTERM)  # the group we created, pgid == the server's pid
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
            leftovers = _wait_gone(leftovers, 5)
            if leftovers:
                _signal_all(leftovers, signal.SIGTERM)
                leftovers = _wait_gone(leftovers, 5)
                _signal_all(leftovers, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._own_scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def __enter__(self) -> JupyterLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def browser(scratch: str | os.PathLike[str] | None = None, headless: bool = True) -> Iterator[Any]:
    """Debian's Chromium through Playwright's sync API; yields a playwright Browser. With `scratch`, the
    browser's HOME, caches and temporary files go there."""
    from playwright.sync_api import sync_playwright

    env = scratch_env(Path(scratch).resolve()) if scratch else None
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=headless, args=CHROMIUM_ARGS, env=env)
        try:
            yield b
        finally:
            b.close()


class Browsers:
    """One Chromium for many tests, launched again if it crashed (a crash fails the test it happened in, not
    every test after it). ``get()`` returns a connected playwright Browser; ``close()`` ends it all."""

    def __init__(self, scratch: str | os.PathLike[str] | None = None, headless: bool = True) -> None:
        from playwright.sync_api import sync_playwright

        self.env = scratch_env(Path(scratch).resolve()) if scratch else None
        self.headless = headless
        self._pw = sync_playwright().start()
        self._browser: Any = None
        self.crashes = 0

    def get(self) -> Any:
        if self._browser is not None and not self._browser.is_connected():
            self.crashes += 1
            print(f"browser_rig: Chromium had crashed (crash {self.crashes}); launching a new one", file=sys.stderr)
            self._browser = None
        if self._browser is None:
            self._browser = self._pw.chromium.launch(executable_path=CHROMIUM, headless=self.headless,
                                                     args=CHROMIUM_ARGS, env=self.env)
        return self._browser

    def close(self) -> None:
        try:
            if self._browser is not None and self._browser.is_connected():
                self._browser.close()
        finally:
            self._pw.stop()


# ---------------------------------------------------------------------------------------------------------
# in the page. `window.jupyterapp` exists thanks to --LabApp.expose_app_in_browser. The notebook is the
# current main-area widget (open_notebook makes it so).

_PANEL_JS = """
  const app = window.jupyterapp;
  const panel = app && app.shell && app.shell.currentWidget;
  const nb = panel && panel.content && panel.sessionContext ? panel : null;
  const kernel = nb && nb.sessionContext.session ? nb.sessionContext.session.kernel : null;
"""


def lesson_only(notebook: str | os.PathLike[str]) -> None:
    """Rewrite a tutorial notebook without its exercises and its final `%chimera down`: run all, it leaves the
    lesson's pipeline running, for a test (or the screenshot) to look at its live widgets."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    cut = next((i for i, c in enumerate(nb.cells) if c.cell_type == "markdown"
                and c.source.lstrip().startswith("## Exercises")), len(nb.cells))
    nb.cells = [c for c in nb.cells[:cut] if c.source.strip() != "%chimera down"]
    nbformat.write(nb, notebook)


def open_notebook(page: Any, lab: JupyterLab, path: str, timeout: float = 90_000) -> None:
    """Open `path` (relative to the lab's notebook folder) and wait until its kernel is up and idle."""
    page.goto(lab.lab_url(path), timeout=timeout)
    page.wait_for_function(
        "(path) => {" + _PANEL_JS + """
            return !!(nb && nb.context.path === path && nb.context.isReady && nb.sessionContext.isReady
                      && kernel && kernel.connectionStatus === 'connected' && kernel.status === 'idle');
        }""", arg=path, timeout=timeout, polling=200)


class NotebookError(AssertionError):
    """A cell raised, or run-all ended without executing every code cell."""


def notebook_errors(page: Any) -> list[str]:
    """The error outputs of the open notebook, one string per error (cell index, name, value, traceback)."""
    errors = page.evaluate("() => {" + _PANEL_JS + """
        const found = [];
        nb.content.widgets.forEach((cell, i) => {
          if (cell.model.type !== 'code') return;
          const outs = cell.model.outputs;
          for (let j = 0; j < outs.length; j++) {
            const o = outs.get(j).toJSON();
            if (o.output_type === 'error')
              found.push(`cell ${i}: ${o.ename}: ${o.evalue}\\n` + (o.traceback || []).join('\\n'));
          }
        });
        return found;
    }""")
    return [_ANSI.sub("", e) for e in errors]


def run_all_and_wait(page: Any, timeout: float = 120_000) -> None:
    """Clear the outputs, run every cell, and wait (polling) until every code cell has an execution count
    and the kernel is idle. Raises NotebookError with the traceback if a cell failed."""
    page.evaluate("async () => {" + _PANEL_JS + """
        await app.commands.execute('notebook:clear-all-cell-outputs');   // also clears execution counts
        const run = window.__chimeraRunAll = {settled: false, ok: null, error: null};
        app.commands.execute('notebook:run-all-cells').then(
          (ok) => { run.settled = true; run.ok = ok; },
          (e) => { run.settled = true; run.error = String(e); });
    }""")
    state = page.wait_for_function(
        "() => {" + _PANEL_JS + """
            const run = window.__chimeraRunAll;
            if (!run.settled || !kernel || kernel.status !== 'idle') return false;
            const cells = nb.content.widgets.filter((c) => c.model.type === 'code');
            const missing = cells.filter((c) => c.model.executionCount === null).length;
            const errored = cells.some((c) => {
              for (let j = 0; j < c.model.outputs.length; j++)
                if (c.model.outputs.get(j).type === 'error') return true;
              return false;
            });
            if (missing && !errored && !run.error) return false;   // the count can trail the reply
            return {missing, errored, error: run.error};
        }""", timeout=timeout, polling=250).json_value()
    errors = notebook_errors(page)
    if errors or state["error"]:
        raise NotebookError("\n\n".join(errors) or f"run-all failed: {state['error']}")
    if state["missing"]:
        raise NotebookError(f"{state['missing']} code cell(s) were not executed")


class KernelError(RuntimeError):
    """The code given to kernel_eval raised in the kernel."""


def kernel_eval(page: Any, code: str, timeout: float = 30_000) -> str:
    """Run `code` in the open notebook's kernel without adding a cell (kernel.requestExecute, no history)
    and return what it printed to stdout followed by its result's text/plain, without the final newline.
    Raises KernelError with the traceback if it raised, TimeoutError if no reply came within `timeout` ms."""
    out = page.evaluate("async ([code, timeout]) => {" + _PANEL_JS + """
        if (!kernel) return {timeout: false, error: 'no kernel', text: ''};
        const fut = kernel.requestExecute({code, silent: false, store_history: false, allow_stdin: false});
        const res = {timeout: false, error: null, text: ''};
        fut.onIOPub = (msg) => {
          const t = msg.header.msg_type, c = msg.content;
          if (t === 'stream' && c.name === 'stdout') res.text += c.text;
          else if (t === 'execute_result' && c.data['text/plain'] !== undefined) res.text += c.data['text/plain'];
          else if (t === 'error') res.error = `${c.ename}: ${c.evalue}\\n` + c.traceback.join('\\n');
        };
        let timer;
        const expired = new Promise((resolve) => { timer = setTimeout(() => resolve('timeout'), timeout); });
        const how = await Promise.race([fut.done.then(() => 'done'), expired]);
        clearTimeout(timer);
        if (how === 'timeout') { res.timeout = true; fut.dispose(); }
        return res;
    }""", [code, timeout])
    if out["timeout"]:
        raise TimeoutError(f"no reply from the kernel within {timeout / 1000:.0f} s for: {code!r}")
    if out["error"]:
        raise KernelError(_ANSI.sub("", out["error"]))
    text: str = out["text"]
    return text[:-1] if text.endswith("\n") else text


class FrameRate(float):
    """src changes per second of an <img>; also `distinct` values, `changes`, `seconds`, `per_s_distinct`."""

    changes: int
    distinct: int
    seconds: float
    replaced: bool

    @property
    def per_s_distinct(self) -> float:
        return self.distinct / self.seconds

    def __repr__(self) -> str:
        return (f"FrameRate({float(self):.1f}/s: {self.changes} changes, {self.distinct} distinct "
                f"in {self.seconds:.2f} s)")


def count_frames(page: Any, selector: str, seconds: float) -> FrameRate:
    """Watch the `src` attribute of the <img> matched by `selector` for `seconds` with a MutationObserver in
    the page. Returns changes per second (a float), carrying the number of distinct src values set during the
    window (`.distinct`, `.per_s_distinct`): a frame view that re-sends the same frame changes without showing
    anything new. `.replaced` says whether the element was swapped for another one meanwhile (changes on the
    new element are not counted)."""
    res = page.evaluate("""async ([selector, ms]) => {
        const el = document.querySelector(selector);
        if (!el) throw new Error('nothing matches ' + selector);
        let changes = 0;
        const seen = new Set();
        const observer = new MutationObserver((records) => {
          // records of one batch: the new value of each is the old value of the next, the last is current
          const src = records.filter((r) => r.attributeName === 'src');
          src.forEach((r, i) => {
            changes += 1;
            seen.add(i + 1 < src.length ? src[i + 1].oldValue : el.getAttribute('src'));
          });
        });
        const t0 = performance.now();
        observer.observe(el, {attributes: true, attributeFilter: ['src'], attributeOldValue: true});
        await new Promise((resolve) => setTimeout(resolve, ms));   // the measuring window
        const pending = observer.takeRecords();
        observer.disconnect();
        const src = pending.filter((r) => r.attributeName === 'src');
        src.forEach((r, i) => {
          changes += 1;
          seen.add(i + 1 < src.length ? src[i + 1].oldValue : el.getAttribute('src'));
        });
        return {changes, distinct: seen.size, seconds: (performance.now() - t0) / 1000,
                replaced: document.querySelector(selector) !== el};
    }""", [selector, seconds * 1000])
    rate = FrameRate(res["changes"] / res["seconds"])
    rate.changes, rate.distinct, rate.seconds, rate.replaced = (
        res["changes"], res["distinct"], res["seconds"], res["replaced"])
    return rate
