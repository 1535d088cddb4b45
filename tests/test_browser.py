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
    JupyterLab,
    browser,
    browser_unavailable,
    count_frames,
    kernel_eval,
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
def chromium(lab: JupyterLab) -> Iterator[Any]:
    with browser(lab.scratch) as b:
        yield b


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
def test_video_notebook_in_notebook_7(chromium: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The same widgets in Notebook 7: frames shown live, the chart draws, the panel lists the workers."""
    notebooks = tmp_path_factory.mktemp("nb7-notebooks")
    shutil.copytree(NOTEBOOKS, notebooks, dirs_exist_ok=True)
    with JupyterLab(notebooks, scratch=tmp_path_factory.mktemp("nb7-rig"), app="notebook") as server:
        context = chromium.new_context(viewport={"width": 1280, "height": 1400})
        page = context.new_page()
        try:
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
