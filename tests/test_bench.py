"""`make bench` and `make soak` at least start: every bench script imports and parses its arguments (a circular import
once broke `make bench` with no test noticing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.parametrize("script", ["run.py", "soak.py", "ml.py", "launchers.py", "docker_workers.py"])
def test_bench_script_starts(script: str) -> None:
    out = subprocess.run([sys.executable, str(BENCH / script), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage:")
