"""Widgets answer while a cell is busy: a real ipykernel, messages sent the way JupyterLab 4 sends them.

JupyterLab 4.4+ / Notebook 7.4+ send widget messages to a kernel subshell of their own (``commsOverSubshells``),
created over the control channel. This test does the same with jupyter_client: it creates a subshell, keeps the
main shell busy with ``%chimera run 60s``, and clicks the panel's Stop by sending the panel's comm message to that
subshell. The browser test does it with a real click; this one pins the kernel side down without a browser.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import KernelManager

SETUP = """
%load_ext chimera_lab
%chimera up --workers 1
import chimera_lab as cp
from chimera_lab.nodes import NullSink, TestPatternSource
from chimera_lab.jupyter.widgets import ClusterPanel, FrameView
g = cp.Graph()
src, sink = TestPatternSource(name="src", width=64, height=48, rate_hz=30), NullSink(name="sink")
g.add_edge(src, sink)
%chimera commit g
panel = ClusterPanel(manager)
print(panel.model_id)
"""


class Kernel:
    """A real ipykernel (its own process) and a client that keeps every reply and output by request."""

    def __init__(self, cwd: Path) -> None:
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(cwd=str(cwd))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.replies: dict[str, dict[str, Any]] = {}
        self.stdout: dict[str, str] = {}
        self.comm_msgs: dict[str, list[dict[str, Any]]] = {}  # comm id -> the `data` of each message, in order

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=False)

    def create_subshell(self) -> str:
        msg = self.kc.session.msg("create_subshell_request", {})
        self.kc.control_channel.send(msg)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            reply = self.kc.control_channel.get_msg(timeout=deadline - time.monotonic())
            if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
                assert reply["content"]["status"] == "ok", reply["content"]
                return str(reply["content"]["subshell_id"])
        raise TimeoutError("no create_subshell_reply")

    def send(self, msg_type: str, content: dict[str, Any], subshell: str | None = None) -> str:
        msg = self.kc.session.msg(msg_type, content)
        if subshell is not None:
            msg["header"]["subshell_id"] = subshell
        self.kc.shell_channel.send(msg)
        return str(msg["header"]["msg_id"])

    def execute(self, code: str, subshell: str | None = None) -> str:
        return self.send("execute_request", {"code": code, "silent": False, "store_history": False,
                                             "allow_stdin": False, "stop_on_error": True}, subshell)

    def _pump(self, timeout: float) -> None:
        """Take in whatever arrives within `timeout` seconds on the shell and iopub channels."""
        for channel in (self.kc.shell_channel, self.kc.iopub_channel):
            while channel.msg_ready():
                self._keep(channel.get_msg(timeout=0))
        if self.kc.shell_channel.msg_ready() or self.kc.iopub_channel.msg_ready():
            return
        try:
            self._keep(self.kc.iopub_channel.get_msg(timeout=timeout))
        except Exception:  # queue.Empty: nothing yet
            pass

    def _keep(self, msg: dict[str, Any]) -> None:
        parent = msg["parent_header"].get("msg_id")
        if msg["msg_type"] == "execute_reply":
            self.replies[parent] = msg["content"]
        elif msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
            self.stdout[parent] = self.stdout.get(parent, "") + msg["content"]["text"]
        elif msg["msg_type"] == "comm_msg":
            self.comm_msgs.setdefault(msg["content"]["comm_id"], []).append(msg["content"]["data"])
        elif msg["msg_type"] == "error":
            self.stdout[parent] = self.stdout.get(parent, "") + "\n".join(msg["content"]["traceback"])

    def wait_for(self, what: str, ready: Any, timeout: float) -> None:
        """Take in messages until `ready()` is true; TimeoutError naming `what` if it is not within `timeout` s."""
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {timeout} s")
            self._pump(0.05)

    def wait(self, msg_id: str, timeout: float) -> tuple[dict[str, Any], str]:
        """The execute_reply to `msg_id` and what its cell printed; TimeoutError if none came in time."""
        deadline = time.monotonic() + timeout
        while msg_id not in self.replies:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no reply within {timeout} s; printed so far: {self.stdout.get(msg_id, '')!r}")
            self._pump(0.05)
        self._pump(0.2)  # the outputs of a cell come before its reply on another socket: take the stragglers
        return self.replies[msg_id], self.stdout.get(msg_id, "")

    def run(self, code: str, subshell: str | None = None, timeout: float = 60) -> str:
        reply, out = self.wait(self.execute(code, subshell), timeout)
        assert reply["status"] == "ok", out
        return out.strip()


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Kernel]:
    k = Kernel(tmp_path)
    try:
        yield k
    finally:
        try:
            k.run("%chimera down", timeout=60)
        finally:
            k.close()


def _panel_says(kernel: Kernel, panel_id: str, state: str) -> bool:
    """Whether the panel's latest snapshot pushed to the front end says `state`."""
    snaps = [d["state"]["snapshot"] for d in kernel.comm_msgs.get(panel_id, [])
             if d.get("method") == "update" and "snapshot" in d.get("state", {})]
    return bool(snaps) and snaps[-1]["state"] == state


# The tests watch only what a front end sees (IOPub) and never run code on the subshell themselves: doing so
# would change which subshell ipykernel answers widgets on, and hide the very problem they are about.
def test_the_panels_stop_ends_a_busy_run_when_sent_to_a_subshell(kernel: Kernel) -> None:
    info = kernel.kc.kernel_info(reply=True, timeout=30)["content"]
    assert "kernel subshells" in info.get("supported_features", []), "this ipykernel has no subshells (need >= 7)"
    panel_id = kernel.run(SETUP, timeout=120).splitlines()[-1]
    subshell = kernel.create_subshell()

    started = time.monotonic()
    busy = kernel.execute("%chimera run 60s")
    kernel.wait_for("the panel to show the Manager running", lambda: _panel_says(kernel, panel_id, "running"), 30)
    assert busy not in kernel.replies, f"the run ended before Stop was pressed: {kernel.stdout.get(busy)!r}"

    # what the panel's Stop button sends (cluster_panel.js), to the subshell JupyterLab made for widget comms
    kernel.send("comm_msg", {"comm_id": panel_id,
                             "data": {"method": "custom", "content": {"type": "command", "cmd": "stop"}}},
                subshell=subshell)
    reply, out = kernel.wait(busy, timeout=30)
    assert reply["status"] == "ok", out
    assert time.monotonic() - started < 40, f"the busy cell was not ended early by Stop: {out!r}"
    assert "from elsewhere" in out and "stopped" in out, out
    assert kernel.run("print(manager.state)") == "stopped"
    assert kernel.run("print(panel.last_command)") == "{'cmd': 'stop', 'ok': True, 'error': None}"

    # and Start works while another cell is busy
    busy = kernel.execute("import time; time.sleep(60)")
    kernel.send("comm_msg", {"comm_id": panel_id,
                             "data": {"method": "custom", "content": {"type": "command", "cmd": "start"}}},
                subshell=subshell)
    kernel.wait_for("the panel to show the Manager running again", lambda: _panel_says(kernel, panel_id, "running"),
                    30)
    assert busy not in kernel.replies, "the busy cell ended before Start took effect: the test proves nothing"
    kernel.km.interrupt_kernel()
    kernel.wait(busy, timeout=30)
    assert kernel.run("print(manager.state)") == "running"


def test_a_frame_view_answers_while_a_cell_is_busy(kernel: Kernel) -> None:
    """A FrameView's messages reach it during a busy cell: a new front end's "sync" gets the newest frame at once."""
    kernel.run(SETUP, timeout=120)
    view_id = kernel.run("view = FrameView('t'); view.show(__import__('numpy').zeros((8, 8, 3), 'uint8'))\n"
                         "print(view.model_id)")
    subshell = kernel.create_subshell()

    def frames() -> int:
        return sum(1 for d in kernel.comm_msgs.get(view_id, [])
                   if d.get("method") == "custom" and d["content"].get("type") == "frame")

    kernel.wait_for("the first frame", lambda: frames() == 1, 10)
    busy = kernel.execute("import time; time.sleep(30)")
    kernel.send("comm_msg", {"comm_id": view_id, "data": {"method": "custom", "content": {"type": "sync"}}},
                subshell=subshell)
    kernel.wait_for("the frame re-sent for the front end's sync", lambda: frames() == 2, 10)
    assert busy not in kernel.replies, "the busy cell ended before the frame came: the test proves nothing"
    kernel.km.interrupt_kernel()
    kernel.wait(busy, timeout=30)
