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
    "00-start-here.ipynb": [
        WIDGET, "image/png",  # the panel, the graph and the live view; the tapped frame
        re.compile(r"^this session: [\d.]+ CPUs?, [\d.]+ [MG]B free of [\d.]+ [MG]B "
                   r"\((cgroup v[12] /\S*|physical memory)\)", re.M),
        re.compile(r"^plan: 2 local workers, queues of 16 messages, frames 320×240, nodes as threads .*\(example\)$",
                   re.M),
        re.compile(r"^sized for .*: queues of \d+ messages, frames \d+×\d+, nodes as (processes|threads)$", re.M),
        re.compile(r"^the camera makes \d+×\d+ frames", re.M),
        re.compile(r"^frames through the pipeline: ([5-9]\d|\d{3,}), errors: 0$", re.M),
        re.compile(r"^a \d+×\d+ frame: made on local-\d, edges found on local-\d$", re.M),
        re.compile(r"^exercise 1: 1536 MB free -> workers=3, queue_bound=16, frames 320×240, mode=process$", re.M),
        re.compile(r"^exercise 1: 300 MB free -> workers=1, queue_bound=16, frames 320×240, mode=thread$", re.M),
        re.compile(r"^exercise 2: [1-9]\d* frames of 160×120 reached stats$", re.M),
        re.compile(r"^cluster stopped", re.M),
    ],
    # what each notebook must show (besides running without errors): a MIME type (str), or a pattern (re) that what
    # it prints (streams and text/plain) must match
    "01-basics.ipynb": [
        "text/html", WIDGET,  # the graph: a live view with a picture for saved notebooks; exercise 1's live chart
        re.compile(r"^exercise 1: step sent \[3, 6, 9, 12, 15\]; afterwards source was stopped, step was running",
                   re.M),
        re.compile(r"^exercise 2: step sent \[16, 16, 16, 16\]", re.M),
        re.compile(r"^cluster stopped", re.M),
    ],
    "02-video-streaming.ipynb": [
        WIDGET, "image/png",  # panel, frame views and the latency chart; exercise 1's latency bars
        re.compile(r"^exercise 1: camera → blur → edges → stats, latency p50 when a frame reaches blur [\d.]+ ms, "
                   r"edges [\d.]+ ms, stats [\d.]+ ms", re.M),
        # a step slower than the camera: "latest" drops frames and stays current, "all" drops none and falls behind
        re.compile(r"^exercise 2: latest: slow received [1-9]\d*, dropped [1-9]\d*, latency p50 \d{1,2}\.\d ms", re.M),
        re.compile(r"^exercise 2: all: slow received [1-9]\d*, dropped 0, latency p50 \d{3,}\.\d ms", re.M),
        re.compile(r"^cluster stopped", re.M),
    ],
    "03-recording-and-analysis.ipynb": [
        "image/png",  # matplotlib plots
        re.compile(r"^exercise 1: IMU rate per segment: \['(4[6-9]|5[0-4])\.\d Hz', '(4[6-9]|5[0-4])\.\d Hz'\]", re.M),
        # the disc found in every recorded frame, on the Camera's ellipse: centre (80, 60), radii 50 and 35 px
        re.compile(r"^exercise 2: disc found in (\d+) of \1 frames; its path spans ±(49|50)\.\d px by ±(34|35)\.\d px "
                   r"around \((79|80)\.\d, (59|60)\.\d\)", re.M),
    ],
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
        re.compile(rf"^exercise 1: skewed gradient \(local_epochs=1\): test accuracy {ACCURACY} after \d+ rounds; "
                   r"same model as with random halves: True", re.M),
        *(re.compile(rf"^exercise 1: skewed fedavg \(local_epochs={n}\): test accuracy {ACCURACY}", re.M)
          for n in (1, 3, 10)),
        re.compile(rf"^exercise 2: mini-batch gradient: test accuracy {ACCURACY}, \d+ rounds", re.M),
        re.compile(r"^exercise 3: on_worker_failure='raise': WorkerFailure: .*local-1", re.M),
        re.compile(r"^exercise 3: on_worker_failure='continue': failed_workers_ \['spare-0'\], contributors_ "
                   r"\['local-0'(, 'local-[2-9]')*\], workers per round", re.M),
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
        re.compile(r"^exercise 1: 24 members, max_samples=1\.0: \d+ ms on \d workers, \d+ ms one after the other: "
                   r"speed-up [\d.]+x", re.M),
        re.compile(rf"^exercise 2: soft vote: test accuracy {ACCURACY}", re.M),
        re.compile(r"^exercise 2: hard vote: test accuracy 0\.\d{3}, per class 0\.\d{3} / 0\.\d{3}", re.M),
        re.compile(r"^exercise 3: predict before fit: 409: the AggregationMaster has no model yet", re.M),
        re.compile(rf"^exercise 3: tree \+ LogisticRegression\(max_iter=1000\): vote soft, test accuracy {ACCURACY}",
                   re.M),
        re.compile(r"^exercise 3: tree \+ SVC\(\): vote hard, test accuracy 0\.\d{3}", re.M),  # no predict_proba
        re.compile(r"^exercise 4: on_worker_failure='raise': WorkerFailure: .*local-1", re.M),
        re.compile(rf"^exercise 4: data=None, spare-0 killed: 24 members, .* test accuracy {ACCURACY}", re.M),
        re.compile(r"^exercise 4: data='split', extra-0 killed: (\d|1\d|2[0-3]) members", re.M),  # its shard is lost
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
        re.compile(r"^encrypted: True \| workers: \['secure-0'\]", re.M),
        re.compile(r"^cp-worker --ip 127\.0\.0\.1 --port \d+ --name lab-pc-1 --token [0-9a-f]{8}\.\.\. --encrypt$",
                   re.M),
        re.compile(r"^strangers refused: [3-9], messages read from them: 0$", re.M),
        re.compile(r"^without --encrypt: .*it is encrypted \(Manager\(encrypt=True\)\); pass --encrypt", re.M),
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
        re.compile(r"^exercise 1: remote-1 joined \(pid \d+\); the token on its command line: False", re.M),
        re.compile(r"^exercise 2: remote-1 reported lost ([3-9]\d{3}) ms after the kill", re.M),  # heartbeats: 3 s
        re.compile(r"^exercise 3: CommitError: node 'hog' .* exited unexpectedly \(code -9\)", re.M),  # memory limit
        re.compile(r"^exercise 3: worker small afterwards: connected", re.M),
        re.compile(r"^exercise 4: containers labelled chimera-lab\.cluster=[0-9a-f]{12}: 1 inside the with block, "
                   r"0 after it", re.M),
        re.compile(r"^the exercises' workers are stopped", re.M),
    ],
    "07-graph-editor.ipynb": [
        WIDGET,  # the editor
        re.compile(r"^exercise 1: camera → blur → invert → stats; latency at stats [\d.]+ ms, "
                   r"added by blur -?[\d.]+ ms, by invert -?[\d.]+ ms", re.M),
        re.compile(r"^exercise 2: refused: invalid graph: the graph has a cycle \(camera -> blur -> invert -> stats\)",
                   re.M),
        re.compile(r"^exercise 3: stats latency p50 [\d.]+ ms with invert on local-0 \(camera's worker\), [\d.]+ ms "
                   r"with invert on local-1", re.M),
        re.compile(r"^cluster stopped", re.M),
    ],
    # runs with Slurm and a swarm (CI: `scontrol ping` UP, CHIMERA_SWARM_URL) and without (a classroom): a line that
    # needs an engine has an alternative saying there is none
    "08-cluster-engines.ipynb": [
        "text/html",  # the launchers' panels (a widget with an HTML copy, or the HTML table alone)
        re.compile(r"^launchers installed: .*\bdocker\b.*\blocal\b.*\bslurm\b.*\bswarm\b", re.M),
        re.compile(r"^Manager at 127\.0\.0\.1:\d+ with 1 local worker: \['local-0'\]$", re.M),
        re.compile(r"^after the with block: the launcher is closed, its own Manager shutdown; ours is idle with "
                   r"\['local-0'\]$", re.M),  # the ownership rule
        # Slurm
        re.compile(r"^Slurm here: (yes \(.* is UP\)|no \(.+\)\.)$", re.M),
        *(re.compile(rf"^#SBATCH --{option}$", re.M) for option in ("cpus-per-task=1", "mem=1G", "time=00:20:00")),
        re.compile(r"^the Manager's token in the job script: False$", re.M),
        re.compile(r"^slurm workers: (\['slurm-0', 'slurm-1'\] in jobs \d+, \d+, joined in [\d.]+ s|none\.)", re.M),
        re.compile(r"^(the token in slurm-0's job script: False; in the script Slurm stored for job \d+: False$|"
                   r"slurm workers: none)", re.M),
        re.compile(r"^pipeline: ([1-9]\d* frames from edges on slurm-1 to edge_stats on local-0; the camera on "
                   r"slurm-0|not run \(no Slurm here\))", re.M),
        re.compile(r"^scancel: (slurm-1 \(job \d+\) reported lost (\d{1,3}|[1-4]\d{3}) ms after the scancel|"
                   r"no Slurm here)", re.M),  # the squeue watcher: within a few polls (0.5 s each)
        re.compile(r"^reason: (\(would be\) )?its Slurm job (\d+|<id>) is CANCELLED$", re.M),
        re.compile(r"^after the scancel: (blur_stats received [1-9]\d* more frames|nothing was cancelled)", re.M),
        re.compile(r"^(the jobs: .*'slurm-1': \('\d+', 'CANCELLED', 'lost'\)|after the scancel: nothing was "
                   r"cancelled)", re.M),
        re.compile(r"^memory='2 GB': ValueError: SlurmCluster: memory='2 GB' is not a Slurm size", re.M),
        re.compile(r"^partition='nope': (SlurmError: Slurm has no partition 'nope'; its partitions: \w|no Slurm here)",
                   re.M),
        re.compile(r"^(memory='64T': SlurmError: Slurm refused memory='64T' per job|partition='nope': no Slurm)",
                   re.M),
        re.compile(r"^after close: squeue --me lists (0 of its 2 jobs|none of its jobs: none were submitted)", re.M),
        # Docker Swarm
        re.compile(r"^Swarm here: (yes|no) \(", re.M),
        re.compile(r"^swarm workers: (\['swarm-1', 'swarm-2'\], the replicas of the service chimera-[0-9a-f]{12}|"
                   r"none\.)", re.M),
        re.compile(r"^(image: chimera-lab-worker:[0-9a-f]{16} \((built now|found: built before)|swarm workers: none)",
                   re.M),
        re.compile(r"^pipeline: ([1-9]\d* frames from edges on swarm-2 to edge_stats on local-0; the camera on "
                   r"swarm-1|not run \(no swarm here\))", re.M),
        re.compile(r"^kill: (swarm-2 \(container chimera-[0-9a-f]{12}\.2\.\w+\) reported lost (\d{1,3}|[1-4]\d{3}) ms "
                   r"after the kill|no swarm here)", re.M),
        re.compile(r"^reason: (\(would be\) )?its swarm task \S+ is failed \(task: non-zero exit \(137\)\), exit code "
                   r"137$", re.M),
        re.compile(r"^(after the kill: blur_stats received [1-9]\d* more frames; node states: .*'edges': 'lost'|"
                   r"kill: no swarm here)", re.M),
        re.compile(r"^after scale\(2\): (\['swarm-1', 'swarm-\d+'\] live|nothing to scale \(no swarm here\))", re.M),
        re.compile(r"^after close: services left with (label chimera-lab\.cluster=[0-9a-f]{12}: 0, containers: 0, "
                   r"secrets: 0$|the cluster's label: none were created)", re.M),
        # Kubernetes: generated manifests, summarised
        re.compile(r"^Kubernetes \(designed, untested against a live cluster\): kube\.manifests\(\) makes 8 objects "
                   r"for 2 workers", re.M),
        re.compile(r"^  Pod +cp-3f2a9c-worker-1$", re.M),
        re.compile(r"^the token is in: Secret cp-3f2a9c-token \(", re.M),
        # exercises
        re.compile(r"^exercise 1: scale\(3\) -> \['local-0', 'local-1', 'local-2'\]; status: \{'local-0': "
                   r"'connected', 'local-1': 'connected', 'local-2': 'connected'\}$", re.M),
        re.compile(r"^exercise 1: scale\(1\) -> \['local-0'\]; status: \{'local-0': 'connected'\}; lost: \{\}$", re.M),
        re.compile(r"^exercise 2: spare-0 \((its job \d+ cancelled\) is lost: its Slurm job \d+ is CANCELLED|its "
                   r"process killed\) is lost: its process \(pid \d+\) exited with code -9)$", re.M),
        re.compile(r"^    cp-worker 'spare-0' connected to the Manager at 127\.0\.0\.1:\d+$", re.M),  # manager.logs
        re.compile(r"^exercise 3: cpus-per-task=4, mem=8G, time=02:00:00, partition=long, qos=normal$", re.M),
        re.compile(r"^cluster stopped$", re.M),
    ],
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
