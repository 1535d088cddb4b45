"""The README's screenshot of the live widgets: notebooks/02-video-streaming.ipynb run in JupyterLab in Chromium.

    .venv/bin/python tests/screenshot.py [--out notebooks/img/live-widgets.png] [--width 1200]

Starts an isolated JupyterLab on a copy of notebooks/ (tests/browser_rig.py), runs every cell of the video notebook,
waits until both frame views show decoded frames, the latency chart has drawn a few seconds of points and the cluster
panel shows every node running, then takes one screenshot of the window. From it, four whole cells (code and live
output) are cut and laid out in two columns: the cluster panel and the camera's frame view on the left, the edge
detector's frame view and the latency chart on the right. The picture is scaled to `--width` pixels and stored
as a palette PNG (the README's budget is 400 KB). Ends with `%chimera down` and the server's shutdown; nothing outside
a temporary folder is written except the PNG (a failed run keeps its folder, with a screenshot and the server log).
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from browser_rig import (  # noqa: E402
    JupyterLab,
    browser,
    browser_unavailable,
    count_frames,
    kernel_eval,
    lesson_only,
    open_notebook,
    run_all_and_wait,
)

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = "02-video-streaming.ipynb"
OUT = REPO / "notebooks" / "img" / "live-widgets.png"
FRAME = "div.chimera-frameview img.chimera-frame"
MAX_BYTES = 400_000
GUTTER = 24  # px of white between the two columns

# The cells to show, whole (code and output), by the widget in their output; [n] is the n-th match. They are cut
# from one screenshot, taken at one moment, and laid out in two columns, so the picture is wide rather than tall.
LEFT = ["div.chimera-panel", "div.chimera-frameview[0]"]
RIGHT = ["div.chimera-frameview[1]", "div.chimera-livechart"]


def _wait_live(page: Any, settle: float) -> None:
    """Until both frame views show frames, the chart has points, and the panel and graph say running."""
    page.wait_for_function(
        "(sel) => { const imgs = [...document.querySelectorAll(sel)];"
        "           return imgs.length >= 2 && imgs.every((i) => i.complete && i.naturalWidth > 0); }",
        arg=FRAME, timeout=60_000, polling=200)
    page.wait_for_function(
        "() => document.querySelectorAll('div.chimera-panel tr.chimera-node[data-state=\"running\"]').length >= 3",
        timeout=30_000, polling=200)
    page.wait_for_function(
        "() => ['camera', 'edges', 'stats'].every((n) => document.querySelector("
        "  `div.chimera-graphview g.chimera-gnode[data-name='${n}'][data-state='running']`))",
        timeout=30_000, polling=200)
    page.wait_for_function(
        "() => Number(document.querySelector('div.chimera-livechart')?.getAttribute('data-points')) > 0",
        timeout=30_000, polling=200)
    time.sleep(settle)  # a few seconds of latency history on the chart
    rate = count_frames(page, FRAME, 2)
    if rate.distinct < 2:
        raise RuntimeError(f"the frame view is not live: {rate!r}")
    print(f"screenshot: camera view shows {rate.per_s_distinct:.0f} distinct frames/s", file=sys.stderr)


def _cells(page: Any, selectors: list[str]) -> list[dict[str, float]]:
    """The page rectangle of the cell whose output holds each selector's widget; every one must be in view."""
    boxes = page.evaluate("""(selectors) => selectors.map((spec) => {
        const m = spec.match(/^(.*?)(?:\\[(\\d+)\\])?$/);
        const el = document.querySelectorAll(m[1])[Number(m[2] || 0)];
        const cell = el && el.closest('.jp-Cell');
        if (!cell) return {missing: spec};
        const r = cell.getBoundingClientRect();
        return {x: r.left, y: r.top, width: r.width, height: r.height,
                visible: r.top >= 0 && r.bottom <= window.innerHeight};
    })""", selectors)
    for box in boxes:
        if "missing" in box:
            raise RuntimeError(f"the notebook shows no widget matching {box['missing']!r}")
        if not box["visible"]:
            raise RuntimeError("a cell to photograph is out of view: make the window taller (--height)")
    return boxes


def _compose(png: bytes, left: list[dict[str, float]], right: list[dict[str, float]]) -> Any:
    """The cells cut from one screenshot, stacked in two columns on white."""
    from PIL import Image

    shot = Image.open(io.BytesIO(png)).convert("RGB")

    def column(boxes: list[dict[str, float]]) -> Any:
        parts = [shot.crop((round(b["x"]), round(b["y"]), round(b["x"] + b["width"]), round(b["y"] + b["height"])))
                 for b in boxes]
        col = Image.new("RGB", (max(p.width for p in parts), sum(p.height for p in parts)), "white")
        y = 0
        for p in parts:
            col.paste(p, (0, y))
            y += p.height
        return col

    a, b = column(left), column(right)
    out = Image.new("RGB", (a.width + GUTTER + b.width, max(a.height, b.height)), "white")
    out.paste(a, (0, 0))
    out.paste(b, (a.width + GUTTER, 0))
    return out


def _shrink(img: Any, width: int) -> tuple[bytes, tuple[int, int]]:
    """Scale to `width` px (never up) and store with a 256-colour palette: widgets are flat colours, and the
    frames' gradients survive the dithering."""
    from PIL import Image

    if img.width > width:
        img = img.resize((width, round(img.height * width / img.width)), Image.Resampling.LANCZOS)
    pal = img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG)
    out = io.BytesIO()
    pal.save(out, format="PNG", optimize=True)
    return out.getvalue(), img.size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT, help=f"where to write the PNG (default {OUT.relative_to(REPO)})")
    ap.add_argument("--width", type=int, default=1200, help="width of the PNG in pixels (default 1200)")
    ap.add_argument("--settle", type=float, default=8.0, help="seconds of chart history before the shot (default 8)")
    ap.add_argument("--viewport", type=int, default=740, help="browser window width (default 740: a 640 px frame fits)")
    ap.add_argument("--height", type=int, default=4000, help="browser window height: every cell in view (default 4000)")
    args = ap.parse_args(argv)

    reason = browser_unavailable()
    if reason:
        print(f"screenshot: cannot run: {reason}", file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="chimera-lab-screenshot-"))
    keep = [False]  # a failed run leaves its folder for a look
    try:
        notebooks = tmp / "notebooks"
        shutil.copytree(REPO / "notebooks", notebooks, ignore=shutil.ignore_patterns("img", ".ipynb_checkpoints"))
        lesson_only(notebooks / NOTEBOOK)  # without the exercises and the final %chimera down: stays live
        scratch = tmp / "rig"
        scratch.mkdir()
        with JupyterLab(notebooks, scratch=scratch) as lab, browser(scratch) as b:
            context = b.new_context(viewport={"width": args.viewport, "height": args.height}, device_scale_factor=1)
            page = context.new_page()
            page.set_default_timeout(30_000)
            try:
                open_notebook(page, lab, NOTEBOOK)
                # the whole width for the notebook: no file browser on the left, no panel on the right
                page.evaluate("() => { const s = window.jupyterapp.shell; s.collapseLeft(); s.collapseRight(); }")
                run_all_and_wait(page, timeout=180_000)
                _wait_live(page, args.settle)
                page.evaluate("() => window.getSelection()?.removeAllRanges()")
                page.mouse.move(0, 0)  # no hover highlight
                left, right = _cells(page, LEFT), _cells(page, RIGHT)
                shot = page.screenshot(animations="disabled", caret="hide")  # one moment for every cell
            except BaseException:
                keep[0] = True
                try:
                    page.screenshot(path=str(tmp / "failed.png"), full_page=True)
                    shutil.copyfile(lab.log_path, tmp / "jupyterlab.log")
                except Exception:
                    pass
                print(f"screenshot: failed; the page (failed.png) and the server log are in {tmp}", file=sys.stderr)
                raise
            finally:
                try:
                    kernel_eval(page, "%chimera down", timeout=60_000)
                except Exception as e:  # the server's shutdown ends the kernel and its workers anyway
                    print(f"screenshot: %chimera down failed: {e}", file=sys.stderr)
                context.close()
    finally:
        if not keep[0]:
            shutil.rmtree(tmp, ignore_errors=True)

    data, size = _shrink(_compose(shot, left, right), args.width)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    print(f"screenshot: wrote {args.out} ({size[0]}x{size[1]} px, {len(data) / 1000:.0f} KB)")
    if len(data) > MAX_BYTES:
        print(f"screenshot: warning: larger than {MAX_BYTES // 1000} KB; try a smaller --width", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
