"""Every tutorial notebook runs top to bottom in a real kernel (headless) and shows what it should."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
WIDGET = "application/vnd.jupyter.widget-view+json"
EXPECTED_OUTPUTS = {  # what each notebook must show (besides running without errors)
    "01-basics.ipynb": ["text/html"],  # the graph: a live view with a picture for saved notebooks
    "02-video-streaming.ipynb": [WIDGET],  # panel, frame views and the latency chart
    "03-recording-and-analysis.ipynb": ["image/png"],  # matplotlib plots
    "07-graph-editor.ipynb": [WIDGET],  # the editor
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, "\n".join(f"{e['ename']}: {e['evalue']}" for e in errors)
    shown = {mime for o in outputs for mime in o.get("data", {})}
    for mime in EXPECTED_OUTPUTS[path.name]:
        assert mime in shown, f"{path.name} should show {mime}"


def test_every_notebook_has_expectations() -> None:
    assert NOTEBOOKS, "notebooks/ should hold the tutorials"
    assert {p.name for p in NOTEBOOKS} == set(EXPECTED_OUTPUTS)
