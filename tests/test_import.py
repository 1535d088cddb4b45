"""Importing chimera_lab changes nothing: no logging config, no event-loop policy, no files, no sockets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CHECK = """
import asyncio, logging, os, sys
policy = type(asyncio.get_event_loop_policy())
before = (list(logging.root.handlers), logging.root.level, logging.getLogger("chimera_lab").handlers[:])
import chimera_lab, chimera_lab.nodes, chimera_lab.cluster, chimera_lab.cli
import zmq
assert (list(logging.root.handlers), logging.root.level, logging.getLogger("chimera_lab").handlers[:]) == before
assert type(asyncio.get_event_loop_policy()) is policy
assert "matplotlib" not in sys.modules
assert zmq.Context._instance is None, "importing must not create a ZeroMQ context"
assert os.listdir(".") == [], os.listdir(".")
print("clean")
"""


def test_import_has_no_side_effects(tmp_path: Path):
    out = subprocess.run([sys.executable, "-c", CHECK], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "clean"
