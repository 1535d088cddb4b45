"""The notebook widgets in a real browser: JupyterLab in Debian's Chromium, driven by Playwright.

Without /usr/bin/chromium these tests skip (they say how to enable them), except in CI (`CI` set), where a
missing browser is a failure. Each test gets a fresh page; a failing test leaves a screenshot, the browser
console and the server log in test-artifacts/ at the repository root.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from browser_rig import (
    _PANEL_JS,
    Browsers,
    JupyterLab,
    browser_unavailable,
    count_frames,
    kernel_eval,
    lesson_only,
    open_notebook,
    run_all_and_wait,
)
from conftest import wait_until

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
ARTIFACTS = REPO / "test-artifacts"
VIDEO_NOTEBOOK = "02-video-streaming.ipynb"
VIDEO_NOTEBOOK_MISSING = not (NOTEBOOKS / VIDEO_NOTEBOOK).exists()  # decided at import time


def _require_browser() -> None:
    reason = browser_unavailable()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and the browser tests cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


class _Outcomes:
    """Remembers each test's call-phase report, so the page fixture knows whether its test failed."""

    def __init__(self) -> None:
        self.failed: dict[str, bool] = {}

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
        outcome = yield
        report = outcome.get_result()
        if report.when in ("setup", "call") and report.failed:
            self.failed[item.nodeid] = True
        elif report.when == "call" and getattr(report, "wasxfail", None) is not None and report.skipped:
            self.failed[item.nodeid] = True  # an expected failure is still a failure worth a screenshot


@pytest.fixture(scope="session")
def _outcomes(pytestconfig: pytest.Config) -> Iterator[_Outcomes]:
    plugin = _Outcomes()
    pytestconfig.pluginmanager.register(plugin, "chimera-browser-outcomes")
    yield plugin
    pytestconfig.pluginmanager.unregister(plugin)


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterLab]:
    """JupyterLab serving a copy of notebooks/ (tests never modify the repository's notebooks)."""
    _require_browser()
    notebooks = tmp_path_factory.mktemp("notebooks")
    shutil.copytree(NOTEBOOKS, notebooks, dirs_exist_ok=True)
    with JupyterLab(notebooks, scratch=tmp_path_factory.mktemp("lab-rig")) as server:
        yield server


@pytest.fixture(scope="session")
def _browsers(lab: JupyterLab) -> Iterator[Browsers]:
    browsers = Browsers(lab.scratch)
    yield browsers
    browsers.close()


@pytest.fixture
def chromium(_browsers: Browsers) -> Any:
    """The session's Chromium (a new one if the last crashed)."""
    return _browsers.get()


@pytest.fixture
def page(chromium: Any, lab: JupyterLab, request: pytest.FixtureRequest, _outcomes: _Outcomes) -> Iterator[Any]:
    context = chromium.new_context(viewport={"width": 1280, "height": 1400})
    page = context.new_page()
    page.set_default_timeout(30_000)
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    try:
        yield page
    finally:
        if _outcomes.failed.get(request.node.nodeid):
            ARTIFACTS.mkdir(exist_ok=True)
            stem = ARTIFACTS / re.sub(r"[^\w.-]+", "_", request.node.nodeid)
            try:
                page.screenshot(path=f"{stem}.png", full_page=True)
            except Exception as e:  # a crashed page: keep the rest of the evidence
                console.append(f"screenshot failed: {e}")
            Path(f"{stem}.console.txt").write_text("\n".join(console))
            shutil.copyfile(lab.log_path, f"{stem}.jupyterlab.log")
        context.close()



SMOKE_WIDGET = '''\
import anywidget
import traitlets


class SmokeCounter(anywidget.AnyWidget):
    _esm = """
    function render({ model, el }) {
      const button = document.createElement("button");
      button.className = "chimera-smoke-counter";
      const show = () => {
        button.textContent = `count: ${model.get("value")}`;
        button.dataset.value = String(model.get("value"));
      };
      model.on("change:value", show);
      button.addEventListener("click", () => { model.set("value", model.get("value") + 1); model.save_changes(); });
      show();
      el.appendChild(button);
    }
    export default { render };
    """
    value = traitlets.Int(0).tag(sync=True)


counter = SmokeCounter(value=7)
counter
'''


def test_smoke_anywidget_renders_and_syncs(lab: JupyterLab, page: Any) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# smoke"), nbformat.v4.new_code_cell(SMOKE_WIDGET)]
    nbformat.write(nb, lab.notebook_dir / "smoke-widget.ipynb")

    open_notebook(page, lab, "smoke-widget.ipynb")
    run_all_and_wait(page, timeout=60_000)
    button = page.locator("button.chimera-smoke-counter")
    button.wait_for(state="visible")
    assert button.get_attribute("data-value") == "7"

    kernel_eval(page, "counter.value = 41")  # Python -> DOM
    page.wait_for_function(
        "() => document.querySelector('button.chimera-smoke-counter').dataset.value === '41'")
    assert button.inner_text() == "count: 41"

    button.click()  # DOM -> Python
    wait_until(lambda: kernel_eval(page, "print(counter.value)") == "42", 10, "the click to reach the kernel")
    assert page.locator("button.chimera-smoke-counter").count() == 1


LAUNCHER = "div.chimera-launcher-panel"
LAUNCHER_CELL = "import chimera_lab as cp\n\ncluster = cp.LocalCluster(1).start()\ncluster  # shown as its panel"


def _launcher_row(name: str, state: str) -> str:
    return f"{LAUNCHER} tr.chimera-launcher-worker[data-name='{name}'][data-state='{state}']"


@pytest.mark.timeout(300)
def test_launcher_panel_shows_workers_and_scales_with_plus(lab: JupyterLab, page: Any) -> None:
    """A displayed LocalCluster is its panel: the worker's row, "+" brings a second connected worker, and Close
    (once confirmed) ends the launcher."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(LAUNCHER_CELL)]
    nbformat.write(nb, lab.notebook_dir / "launcher-panel.ipynb")
    open_notebook(page, lab, "launcher-panel.ipynb")
    try:
        run_all_and_wait(page, timeout=120_000)
        page.locator(_launcher_row("local-0", "connected")).wait_for(state="visible", timeout=30_000)
        header = page.locator(f"{LAUNCHER} .chimera-launcher-header").inner_text()
        assert "LocalCluster" in header and "running" in header and "1 of 1 worker connected" in header, header
        assert page.locator(f"{LAUNCHER} tr.chimera-launcher-worker").count() == 1
        pid = page.locator(f"{_launcher_row('local-0', 'connected')} td[data-column='pid']").inner_text()
        assert pid == kernel_eval(page, "print(cluster.status()['workers']['local-0']['pid'])")

        page.locator(f"{LAUNCHER} button.chimera-launcher-plus").click()
        page.locator(_launcher_row("local-1", "connected")).wait_for(state="visible", timeout=60_000)
        page.wait_for_function(
            "(sel) => { const m = document.querySelector(sel + ' .chimera-launcher-message');"
            "           return m?.dataset.ok === 'true' && m.textContent.includes('scaled to 2 workers')"
            "                  && !document.querySelector(sel + ' button.chimera-launcher-plus').disabled; }",
            arg=LAUNCHER, timeout=30_000)
        assert "2 of 2 workers connected" in page.locator(f"{LAUNCHER} .chimera-launcher-count").inner_text()
        assert kernel_eval(page, "print(cluster.alive)") == "['local-0', 'local-1']"

        page.locator(f"{LAUNCHER} button.chimera-launcher-close").click()  # asks first
        confirm = page.locator(f"{LAUNCHER} .chimera-launcher-confirm")
        confirm.wait_for(state="visible")
        assert "End 2 workers and shut down the Manager" in confirm.inner_text()
        assert kernel_eval(page, "print(cluster.closed)") == "False"
        confirm.locator("button.chimera-launcher-confirm-yes").click()
        wait_until(lambda: kernel_eval(page, "print(cluster.closed, cluster.manager.state)") == "True shutdown", 60,
                   "the panel's Close to end the launcher and its Manager")
        assert kernel_eval(page, "print(cluster._panel.closed)") == "True"
    finally:
        with contextlib.suppress(Exception):
            kernel_eval(page, "cluster.close()", timeout=60_000)


FRAME = "div.chimera-frameview img.chimera-frame"


def _busy_cell_streams_and_stops(page: Any) -> None:
    """While a cell is busy (`%chimera run 60s`), frames keep coming and the panel's Stop ends the cell early:
    widget messages go to a kernel subshell (JupyterLab's commsOverSubshells, ipykernel 7)."""
    page.evaluate("() => {" + _PANEL_JS + """
        window.__busy = {done: false, out: ''};
        const fut = kernel.requestExecute({code: '%chimera run 60s', store_history: false});
        fut.onIOPub = (msg) => {
          const c = msg.content;
          if (msg.header.msg_type === 'stream' && c.name === 'stdout') window.__busy.out += c.text;
        };
        fut.done.then(() => { window.__busy.done = true; });
    }""")
    busy_since = time.monotonic()
    page.wait_for_function(
        "() => document.querySelector('div.chimera-panel span.chimera-state')"
        "            ?.textContent.trim().toLowerCase() === 'running'", timeout=20_000)
    busy_rate = count_frames(page, FRAME, 3)
    assert busy_rate.per_s_distinct >= 20, f"too few distinct frames shown while a cell is busy: {busy_rate!r}"
    assert not page.evaluate("() => window.__busy.done"), "the busy cell ended by itself: the test proves nothing"
    page.wait_for_function("() => !document.querySelector('div.chimera-panel button.chimera-stop')?.disabled",
                           timeout=20_000)
    page.locator("div.chimera-panel button.chimera-stop").first.click()
    page.wait_for_function("() => window.__busy.done", timeout=30_000)
    busy = page.evaluate("() => window.__busy")
    assert time.monotonic() - busy_since < 40, f"Stop did not end the busy cell early: {busy!r}"
    assert "from elsewhere" in busy["out"], f"the busy cell did not end by the panel's Stop: {busy!r}"


@pytest.mark.xfail(VIDEO_NOTEBOOK_MISSING, reason="widgets/notebook not landed yet", strict=False)
@pytest.mark.timeout(300)
def test_video_notebook_streams_and_stops(lab: JupyterLab, page: Any) -> None:
    assert (lab.notebook_dir / VIDEO_NOTEBOOK).exists(), f"notebooks/{VIDEO_NOTEBOOK} is missing"
    lesson_only(lab.notebook_dir / VIDEO_NOTEBOOK)  # the lesson's pipeline stays up to be watched
    open_notebook(page, lab, VIDEO_NOTEBOOK)
    try:
        run_all_and_wait(page, timeout=180_000)

        # the frame view shows decoded frames, at the camera's rate
        page.wait_for_function(
            "(sel) => { const img = document.querySelector(sel);"
            "           return !!img && !!img.getAttribute('src') && img.complete && img.naturalWidth > 0; }",
            arg=FRAME, timeout=30_000)
        # one 640x480 30 fps stream, as specified (two at once are CPU-bound at ~16 fps each on 2 vCPUs)
        kernel_eval(page, "edge_view.close()")
        count_frames(page, FRAME, 1)  # settle
        rate = count_frames(page, FRAME, 3)
        assert not rate.replaced, f"the frame view replaced its <img> instead of updating it: {rate!r}"
        assert rate.per_s_distinct >= 20, f"too few distinct frames shown: {rate!r}"

        # the latency chart draws points
        page.wait_for_function(
            "() => { const c = document.querySelector('div.chimera-livechart');"
            "        return !!c && Number(c.getAttribute('data-points')) > 0; }", timeout=15_000)

        # the panel lists the two workers and the graph's nodes
        page.wait_for_function(
            "() => document.querySelectorAll('div.chimera-panel tr.chimera-worker[data-name]').length >= 2",
            timeout=15_000)
        assert page.locator("div.chimera-panel tr.chimera-node[data-name][data-state]").count() >= 2

        # the graph, displayed before start, now shows every node running on its worker
        page.wait_for_function(
            "() => ['camera', 'edges', 'stats'].every((n) => document.querySelector("
            "  `div.chimera-graphview g.chimera-gnode[data-name='${n}'][data-state='running'][data-worker]`))",
            timeout=15_000)
        assert page.locator("div.chimera-graphview path.chimera-gedge[data-policy='latest']").count() == 1

        # Stop from the panel: the panel and the Manager both say stopped
        page.locator("div.chimera-panel button.chimera-stop").first.click()
        page.wait_for_function(
            "() => { const s = document.querySelector('div.chimera-panel span.chimera-state');"
            "        return !!s && s.textContent.trim().toLowerCase() === 'stopped'; }", timeout=20_000)
        wait_until(lambda: "stopped" in kernel_eval(page, "print(manager.state)").lower(), 20,
                   "manager.state to say stopped")

        _busy_cell_streams_and_stops(page)

    except BaseException:
        with contextlib.suppress(Exception):  # tidy up, but report the first failure
            kernel_eval(page, "%chimera down", timeout=60_000)
        raise
    kernel_eval(page, "%chimera down", timeout=60_000)


@pytest.mark.timeout(300)
def test_start_here_notebook_renders_its_widgets_picture_and_hidden_solutions(lab: JupyterLab, page: Any) -> None:
    """The notebook Binder opens on: runs in JupyterLab with no error output, the architecture picture loads,
    the panel, graph and frame view render live, and the exercise solutions stay collapsed."""
    nb = nbformat.read(lab.notebook_dir / "00-start-here.ipynb", as_version=4)
    assert nb.cells[-1].source.strip() == "%chimera down"
    nb.cells.pop()  # keep the cluster up, so its widgets are still there to look at when the run is over
    nbformat.write(nb, lab.notebook_dir / "00-start-here-kept-up.ipynb")
    open_notebook(page, lab, "00-start-here-kept-up.ipynb")
    try:
        run_all_and_wait(page, timeout=180_000)
        page.evaluate("() => {" + _PANEL_JS + " nb.content.activeCellIndex = 0; nb.content.scrollToItem(0); }")
        page.wait_for_function(  # the picture in the first markdown cell (a file beside the notebook)
            "() => { const img = document.querySelector(\"img[src*='architecture.svg']\");"
            "        return !!img && img.complete && img.naturalWidth > 0; }", timeout=15_000)
        # what the widgets show once the notebook is done
        shown = page.evaluate("""(sel) => ({
            panels: document.querySelectorAll('div.chimera-panel').length,
            panelWorkers: [...document.querySelectorAll('div.chimera-panel tr.chimera-worker[data-name]')]
                            .map((r) => r.getAttribute('data-name')),
            graphNodes: [...document.querySelectorAll('div.chimera-graphview g.chimera-gnode[data-name]')]
                            .map((g) => g.getAttribute('data-name')),
            frames: [...document.querySelectorAll(sel)].map((i) => i.naturalWidth),
            state: (document.querySelector('div.chimera-panel span.chimera-state') || {}).textContent })""", FRAME)
        assert shown["panels"] == 1 and sorted(shown["panelWorkers"]) == ["local-0", "local-1"], shown
        assert {"camera", "edges", "stats"} <= set(shown["graphNodes"]), shown
        assert shown["frames"] and all(w > 0 for w in shown["frames"]), shown
        assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").count() == 0
        assert page.locator(".jp-OutputArea-output img[src^='data:image/png']").count() >= 1  # the tapped frame
        hidden = page.evaluate("() => {" + _PANEL_JS + """
            return nb.content.widgets.filter((c) => (c.model.getMetadata('tags') || []).includes('solution'))
                     .map((c) => c.inputHidden); }""")
        assert hidden == [True, True], f"the solutions should start collapsed: {hidden}"
    finally:
        with contextlib.suppress(Exception):
            kernel_eval(page, "%chimera down", timeout=60_000)


@pytest.mark.timeout(300)
def test_video_notebook_in_notebook_7(chromium: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The same widgets in Notebook 7: frames shown live, the chart draws, the panel lists the workers."""
    notebooks = tmp_path_factory.mktemp("nb7-notebooks")
    shutil.copytree(NOTEBOOKS, notebooks, dirs_exist_ok=True)
    with JupyterLab(notebooks, scratch=tmp_path_factory.mktemp("nb7-rig"), app="notebook") as server:
        context = chromium.new_context(viewport={"width": 1280, "height": 1400})
        page = context.new_page()
        try:
            lesson_only(notebooks / VIDEO_NOTEBOOK)
            open_notebook(page, server, VIDEO_NOTEBOOK)
            run_all_and_wait(page, timeout=180_000)
            page.wait_for_function(
                "(sel) => { const img = document.querySelector(sel); return !!img && img.naturalWidth > 0; }",
                arg=FRAME, timeout=30_000)
            kernel_eval(page, "edge_view.close()")  # one 640x480 stream, as in the budget
            rate = count_frames(page, FRAME, 3)
            assert rate.per_s_distinct >= 20, f"too few distinct frames shown in Notebook 7: {rate!r}"
            page.wait_for_function(
                "() => Number(document.querySelector('div.chimera-livechart')?.getAttribute('data-points')) > 0",
                timeout=15_000)
            assert page.locator("div.chimera-panel tr.chimera-worker[data-name]").count() >= 2
            kernel_eval(page, "%chimera stop", timeout=60_000)
            _busy_cell_streams_and_stops(page)
        except BaseException:
            ARTIFACTS.mkdir(exist_ok=True)
            with contextlib.suppress(Exception):
                page.screenshot(path=str(ARTIFACTS / "notebook7-video.png"), full_page=True)
            raise
        finally:
            with contextlib.suppress(Exception):
                kernel_eval(page, "%chimera down", timeout=60_000)
            context.close()


EDITOR_NOTEBOOK = [
    "%load_ext chimera_lab\n%chimera up --workers 2",
    "editor = %chimera editor\neditor",
]
GE = "div.chimera-ge"


def _graph_in_python(page: Any) -> str:
    """editor.graph as the kernel has it: nodes, edges and the mapping, one line."""
    return kernel_eval(page, "print(sorted(editor.graph.node_names), "
                             "sorted((u.name, v.name) for u, v in editor.graph.edges), sorted(editor.mapping.items()))")


def _add_from_palette(page: Any, label: str, name: str, **args: Any) -> None:
    page.locator(f"{GE} .chimera-ge-palette-item", has_text=label).first.click()
    form = page.locator(f"{GE} form.chimera-ge-form")
    form.locator('input[name="__name"]').fill(name)
    for field, value in args.items():
        form.locator(f'input[name="{field}"]').fill(str(value))
    form.locator("button.chimera-ge-add").click()
    page.locator(f"{GE} .react-flow__node[data-id='{name}']").wait_for(state="visible")


def _drag_edge(page: Any, src: str, dst: str) -> None:
    """Press on src's output handle, move in steps to dst's input handle, release: a real mouse drag."""
    a = page.locator(f"{GE} .react-flow__node[data-id='{src}'] .react-flow__handle.source").bounding_box()
    b = page.locator(f"{GE} .react-flow__node[data-id='{dst}'] .react-flow__handle.target").bounding_box()
    assert a is not None and b is not None
    page.mouse.move(a["x"] + a["width"] / 2, a["y"] + a["height"] / 2)
    page.mouse.down()
    page.mouse.move(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2, steps=12)
    page.mouse.up()


def _select_node(page: Any, name: str) -> None:
    page.locator(f"{GE} .react-flow__node[data-id='{name}'] .chimera-ge-node-name").click()
    page.wait_for_function(
        "(n) => document.querySelector('div.chimera-ge .chimera-ge-selection')?.textContent.includes(n)", arg=name)


@pytest.mark.timeout(300)
def test_graph_editor_builds_wires_runs_and_stays_in_sync(lab: JupyterLab, page: Any) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in EDITOR_NOTEBOOK]
    nbformat.write(nb, lab.notebook_dir / "editor.ipynb")
    open_notebook(page, lab, "editor.ipynb")
    try:
        run_all_and_wait(page, timeout=120_000)
        page.locator(f"{GE} .chimera-ge-palette-item").first.wait_for(state="visible")

        # two nodes from the palette, through their forms
        _add_from_palette(page, "TestPatternSource", "cam", width=160, height=120)
        _add_from_palette(page, "StatsSink", "stats")
        assert _graph_in_python(page) == "['cam', 'stats'] [] []"
        assert kernel_eval(page, "print(editor.graph.get_node('cam').width)") == "160"

        # an edge, by dragging from cam's output to stats' input
        _drag_edge(page, "cam", "stats")
        page.locator(f"{GE} .react-flow__edge[data-testid='rf__edge-cam->stats']").wait_for(state="attached")
        assert _graph_in_python(page) == "['cam', 'stats'] [('cam', 'stats')] []"

        # workers: cam on local-0, stats on local-1
        for name, worker in (("cam", "local-0"), ("stats", "local-1")):
            _select_node(page, name)
            page.locator(f"{GE} select.chimera-ge-worker").select_option(worker)
            page.wait_for_function(
                "([n, w]) => document.querySelector(`div.chimera-ge .react-flow__node[data-id='${n}'] "
                "  .chimera-ge-node`)?.dataset.worker === w", arg=[name, worker])
        assert _graph_in_python(page) == \
            "['cam', 'stats'] [('cam', 'stats')] [('cam', 'local-0'), ('stats', 'local-1')]"

        # a cycle is refused, and nothing changes
        _drag_edge(page, "stats", "cam")
        page.wait_for_function(
            "() => { const s = document.querySelector('div.chimera-ge .chimera-ge-status');"
            "        return s?.dataset.ok === 'false' && s.textContent.includes('cycle'); }", timeout=10_000)
        assert _graph_in_python(page) == \
            "['cam', 'stats'] [('cam', 'stats')] [('cam', 'local-0'), ('stats', 'local-1')]"

        # commit and start from the toolbar: every node shows its state and rate
        page.locator(f"{GE} button.chimera-ge-commit").click()
        page.wait_for_function("() => !document.querySelector('div.chimera-ge button.chimera-ge-start')?.disabled",
                               timeout=60_000)
        page.locator(f"{GE} button.chimera-ge-start").click()
        page.wait_for_function(
            "() => ['cam', 'stats'].every((n) => { const el = document.querySelector("
            "  `div.chimera-ge .react-flow__node[data-id='${n}'] .chimera-ge-node`);"
            "  return el?.dataset.state === 'running' && Number(el.dataset.rate) > 0; })", timeout=30_000)
        assert kernel_eval(page, "print(manager.mapping)") == "{'local-0': ['cam'], 'local-1': ['stats']}"

        # stop, then delete a node with the side panel's button
        page.locator(f"{GE} button.chimera-ge-stop").click()
        wait_until(lambda: kernel_eval(page, "print(manager.state)") == "stopped", 30, "the Manager to stop")
        _select_node(page, "stats")
        page.locator(f"{GE} button.chimera-ge-delete").click()
        page.locator(f"{GE} .react-flow__node[data-id='stats']").wait_for(state="detached")
        assert _graph_in_python(page) == "['cam'] [] [('cam', 'local-0')]"

        # and an edit made in Python shows up in the editor
        kernel_eval(page, "from chimera_lab.nodes import NullSink\n"
                          "editor.graph.add_edge(editor.graph.get_node('cam'), NullSink('sink'))")
        page.locator(f"{GE} .react-flow__edge[data-testid='rf__edge-cam->sink']").wait_for(state="attached",
                                                                                          timeout=10_000)
    except BaseException:
        with contextlib.suppress(Exception):
            kernel_eval(page, "%chimera down", timeout=60_000)
        raise
    kernel_eval(page, "%chimera down", timeout=60_000)
