"""Every tutorial notebook runs top to bottom in a real kernel (headless) and shows what it should."""

from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
WIDGET = "application/vnd.jupyter.widget-view+json"
ACCURACY = r"0\.(8[5-9]|9\d)\d"  # a printed score of at least 0.85
EXPECTED_OUTPUTS: dict[str, list[str | re.Pattern[str]]] = {
    # what each notebook must show (besides running without errors): a MIME type (str), or a pattern (re) that what
    # it prints (streams and text/plain) must match
    "01-basics.ipynb": ["text/html"],  # the graph: a live view with a picture for saved notebooks
    "02-video-streaming.ipynb": [WIDGET],  # panel, frame views and the latency chart
    "03-recording-and-analysis.ipynb": ["image/png"],  # matplotlib plots
    "04-distributed-sgd.ipynb": [
        WIDGET, "image/png",  # progress bars and live charts; history plots
        re.compile(r"Manager at \S+ with 2 workers"),
        *(re.compile(rf"^{name}: test accuracy {ACCURACY} after \d+", re.M) for name in ("gradient", "fedavg")),
        *(re.compile(rf"^{name}: test accuracy {ACCURACY}, fit time \d+ ms", re.M)
          for name in ("LogisticRegression", "SGDClassifier", "Distributed gradient", "Distributed fedavg")),
        *(re.compile(rf"^{name}: per round [\d.]+ ms compute \+ [\d.]+ ms communication", re.M)
          for name in ("gradient", "fedavg")),
        *(re.compile(rf"^iris {name}: test accuracy ({ACCURACY}|1\.000)", re.M) for name in ("gradient", "fedavg")),
        re.compile(r"^regression: test R² 0\.9\d\d", re.M),
        re.compile(r"^contributors: \['local-0', 'local-1'\]", re.M),
        re.compile(rf"^skewed gradient \(local_epochs=1\): test accuracy {ACCURACY}", re.M),
        re.compile(rf"^mini-batch gradient: test accuracy {ACCURACY}", re.M),
        re.compile(r"^cluster stopped", re.M),
    ],
    "05-bagging.ipynb": [
        WIDGET,  # the progress bar of the first fit
        re.compile(r"Manager at \S+ with 2 workers"),
        re.compile(rf"^single tree: train accuracy 1\.000, test accuracy {ACCURACY}", re.M),
        re.compile(rf"^distributed bagging: test accuracy {ACCURACY} with 6 members", re.M),
        re.compile(r"^contributors: \['local-0', 'local-1'\]", re.M),
        re.compile(r"^members: 6 distinct trees of 6", re.M),  # each member its own bootstrap sample
        re.compile(r"^bootstrap: distinct rows per sample \['0\.6\d\d'", re.M),
        re.compile(rf"^deep trees: soft vote test accuracy {ACCURACY}, hard vote {ACCURACY}", re.M),
        *(re.compile(rf"^{name}: test accuracy {ACCURACY}, fit time \d+ ms", re.M)
          for name in ("scikit-learn BaggingClassifier", "DistributedBaggingClassifier")),
        re.compile(r"^speed-up against one process: [\d.]+x on 2 workers", re.M),
        re.compile(rf"^split shards: test accuracy {ACCURACY}", re.M),
        re.compile(r"^rows per member: \[3000(, 3000){5}\]", re.M),
        re.compile(rf"^non-IID shards: test accuracy {ACCURACY}", re.M),
        re.compile(r"^regression: .*BaggingRegressor 0\.[89]\d\d, DistributedBaggingRegressor 0\.[89]\d\d", re.M),
        re.compile(r"^REST fit: 200 ok, contributors \['w1', 'w2'\], vote soft", re.M),
        re.compile(r'^REST predict: 200 \{"y_pred_rows": \[[01](, [01]){4}\]\}', re.M),
        re.compile(rf"^REST ensemble: test accuracy {ACCURACY} on 2000 rows", re.M),
        re.compile(r"^REST error 422: X_pred_columns does not match the training columns \(missing 'x19'\)", re.M),
        re.compile(r"^REST error 404: .* this server runs AggregationMaster", re.M),
        re.compile(r"^docs: http://127\.0\.0\.1:\d+/docs", re.M),
        re.compile(r"^service stopped: True", re.M),
        re.compile(rf"^exercise 1: n_estimators=12: test accuracy {ACCURACY}", re.M),
        re.compile(rf"^exercise 2: soft vote: test accuracy {ACCURACY}", re.M),
        re.compile(r"^cluster stopped", re.M),
    ],
    "06-docker-and-remote-workers.ipynb": [
        WIDGET, "image/png",  # the cluster panel; a frame made in a container
        re.compile(r"^Manager at 127\.0\.0\.1:\d+ with 1 worker: \['local-0'\]", re.M),
        re.compile(r"^image: chimera-lab-worker:[0-9a-f]{16} \((built now|reused: built before)", re.M),
        re.compile(r"^workers: \['docker-0', 'docker-1'\]", re.M),
        re.compile(r"^remote-0 joined: pid \d+", re.M),
        *(re.compile(rf"^{name} +connected .* cwd /home/chimera$", re.M) for name in ("docker-0", "docker-1")),
        re.compile(r"^frames crossed: [1-9]\d* from edges on docker-1 to edge_stats on local-0", re.M),
        re.compile(r"^one frame's way: camera \(docker-0, [^)]*\) -> edges \(docker-1, ", re.M),
        re.compile(r"cp-worker 'docker-0' connected to the Manager at 127\.0\.0\.1:\d+"),  # manager.logs
        re.compile(r"^CpuShares: 512$", re.M),
        re.compile(r"^Memory: 536870912 bytes", re.M),
        re.compile(r"^health: healthy", re.M),
        re.compile(r"^user: 10001 \(chimera\)", re.M),
        re.compile(r"^docker-1 reported lost (\d{1,3}|[12]\d{3}) ms after the kill", re.M),  # before heartbeats would
        re.compile(r"^reason: \['its container chimera-[0-9a-f]{12}-docker-1 exited with code 137'\]", re.M),
        re.compile(r"^after the kill: blur_stats received [1-9]\d* more frames", re.M),
        re.compile(r"^node states: .*'edges': 'lost'", re.M),
        re.compile(r"^cp-worker remote-0 \(pid \d+\) exited with code 0", re.M),
        re.compile(r"^containers left with label chimera-lab\.cluster=[0-9a-f]{12}: 0$", re.M),
        re.compile(r"^cluster stopped", re.M),
    ],
    "07-graph-editor.ipynb": [WIDGET],  # the editor
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not os.environ.get("CHIMERA_DOCKER_BASE_IMAGE"):  # notebook 06 builds its worker image on the local base image
        monkeypatch.setenv("CHIMERA_DOCKER_BASE_IMAGE", "chimera-lab-base:bookworm")  # (no registry to pull from)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, "\n".join(f"{e['ename']}: {e['evalue']}" for e in errors)
    stderr = [o["text"] for o in outputs if o.get("output_type") == "stream" and o.get("name") == "stderr"]
    assert not stderr, f"{path.name} wrote to stderr (warnings?):\n" + "".join(stderr)
    shown = {mime for o in outputs for mime in o.get("data", {})}
    text = "\n".join(o["text"] if o.get("output_type") == "stream" else o.get("data", {}).get("text/plain", "")
                     for o in outputs)
    for want in EXPECTED_OUTPUTS[path.name]:
        if isinstance(want, re.Pattern):
            assert want.search(text), f"{path.name} should print a line matching {want.pattern!r}"
        else:
            assert want in shown, f"{path.name} should show {want}"


def test_every_notebook_has_expectations() -> None:
    assert NOTEBOOKS, "notebooks/ should hold the tutorials"
    assert {p.name for p in NOTEBOOKS} == set(EXPECTED_OUTPUTS)
