"""The soak, 60 s of it (`make soak` runs the same code for 10 minutes): no loss under "all", no memory growth."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import soak  # noqa: E402  (bench/soak.py: one implementation for the test and `make soak`)

SECONDS = 60
MAX_GROWTH_MB = 20.0


@pytest.mark.timeout(SECONDS + 180)
def test_soak_60_s_loses_nothing_and_no_process_grows(tmp_path: Path) -> None:
    """Frames at 30 fps and small messages at 1 kHz over "all" edges for 60 s on 2 workers, recording: every
    message produced is received, every sample made is written, and no process (the Manager, a worker, a
    node) grows more than 20 MB (least-squares fit over the samples after a 6 s warm-up)."""
    r = soak.run(seconds=SECONDS, max_growth_mb=MAX_GROWTH_MB, workdir=tmp_path, progress=False)
    print(soak.report(r))  # shown by pytest when the test fails (and with -s)

    # it measured what it should: one sample a second of every process, and the pipeline kept flowing
    assert r.seconds >= SECONDS
    assert {p["group"] for p in r.processes} == {"manager", "workers", "nodes"}
    assert [len([p for p in r.processes if p["group"] == g]) for g in soak.GROUPS] == [1, 2, 5]
    for p in r.processes:
        assert not p["gone"], f"{p['name']} (pid {p['pid']}) exited during the soak"
        assert p["samples"] >= 0.9 * SECONDS, p
    assert r.delivered["frames"] >= 0.5 * 30 * SECONDS, r.delivered  # 30 fps nominal; loaded CI machines lag
    assert r.delivered["ticks"] >= 0.5 * 1000 * SECONDS, r.delivered

    # nothing lost under "all": produced == sent == received on every edge, nothing dropped, no gaps seen
    for e in r.edges:
        assert e["policy"] == "all", e
        assert e["produced"] == e["sent"] == e["received"] and e["lost"] == 0, e
        assert e["send_dropped"] == 0 and e["receive_dropped"] == 0, e
    assert r.lost == 0
    assert not any(r.node_errors.values()), r.node_errors  # the sinks raise on a gap or a bad frame
    # everything the sources saved was written
    assert {rec["stream"] for rec in r.recorded} == {"camera/cam", "ticker/ticks"}
    for rec in r.recorded:
        assert rec["samples"] == rec["produced"] and rec["lost"] == 0 and not rec["truncated"], rec
    assert r.tap_frames > 0  # the Manager's live view decoded frames all along

    # no process grows
    for p in r.processes:
        assert p["growth_mb"] <= MAX_GROWTH_MB, p
    assert r.ok, r.failures
