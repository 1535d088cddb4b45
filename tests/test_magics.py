"""%chimera magics through a real IPython shell, with real worker processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import node_metric, pid_alive, wait_until
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import chimera_lab as cp


@pytest.fixture
def ip(tmp_path, monkeypatch) -> Iterator[InteractiveShell]:
    monkeypatch.chdir(tmp_path)  # workers record under ./chimera-data: keep it in the test's folder
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "chimera_lab")
    try:
        yield shell
    finally:
        shell.run_line_magic("chimera", "down")
        InteractiveShell.clear_instance()


def magic(ip: InteractiveShell, line: str, cell: str | None = None):
    """Run `%chimera line` (or `%%chimera line` with a cell) like a notebook cell would."""
    if cell is None:
        return ip.run_line_magic("chimera", line)
    return ip.run_cell_magic("chimera", line, cell)


def test_help_documents_every_subcommand(ip, capsys):
    magic(ip, "--help")
    out = capsys.readouterr().out
    for sub in ("up", "down", "commit", "start", "stop", "record", "collect", "run", "status", "view", "latency",
                "logs", "editor", "node"):
        assert f" {sub} " in out
    assert "::" not in out and "Start a Manager in this kernel" in out  # each one's first line, not a parser's mark
    magic(ip, "up --help")
    out = capsys.readouterr().out
    assert "--workers" in out and "--port" in out


def test_bad_input_is_one_line_with_what_to_do(ip):
    with pytest.raises(UsageError, match="no cluster: run %chimera up first"):
        magic(ip, "start")
    with pytest.raises(UsageError, match="no subcommand 'frobnicate'.*--help"):
        magic(ip, "frobnicate")
    with pytest.raises(UsageError, match="cell magic"):
        magic(ip, "node x")
    with pytest.raises(UsageError, match="duration"):
        from chimera_lab.jupyter.magics import parse_duration

        parse_duration("ten seconds")


def test_port_in_use_is_a_clear_error(ip):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(UsageError, match=f"port {s.getsockname()[1]} is in use.*--port"):
            magic(ip, f"up --port {s.getsockname()[1]}")


def test_up_commit_run_and_down_from_magics(ip, capsys):
    magic(ip, "up --workers 2")
    m = ip.user_ns["manager"]
    assert isinstance(m, cp.Manager) and len(m.status()["workers"]) == 2
    magic(ip, "up")
    assert "reusing" in capsys.readouterr().out and ip.user_ns["manager"] is m

    magic(ip, "node counter --kind source --rate 100", "self.n = getattr(self, 'n', 0) + 1\nreturn self.n")
    magic(ip, "node double --kind step", "return 2 * data['counter'].get('default')['value']")
    magic(ip, "node sink --kind sink",
          "self.total = getattr(self, 'total', 0) + data['double'].get('default')['value']")
    assert isinstance(ip.user_ns["counter"], cp.Node) and ip.user_ns["counter"].rate_hz == 100
    ip.run_cell("import chimera_lab as cp\ngraph = cp.Graph()\ngraph.add_edge(counter, double)\n"
                "graph.add_edge(double, sink)")
    magic(ip, "commit graph")
    out = capsys.readouterr().out
    assert "mapping: local-0: counter, sink; local-1: double" in out  # spread over the workers
    assert m.status()["nodes"]["double"]["worker"] == "local-1"
    magic(ip, "run 1s")
    assert "stopped" in capsys.readouterr().out and m.state == "stopped"
    met = m.metrics()
    assert met["sink"]["steps"] == met["counter"]["steps"] >= 50 and met["double"]["errors"] == 0

    pids = [w["pid"] for w in m.status()["workers"].values()]
    magic(ip, "down")
    assert m.state == "shutdown"
    wait_until(lambda: not any(pid_alive(p) for p in pids), 15, "the worker processes to exit")
    with pytest.raises(UsageError, match="no cluster"):
        magic(ip, "stop")


def test_up_encrypt_gives_an_encrypted_cluster(ip):
    magic(ip, "up --workers 1 --encrypt")
    m = ip.user_ns["manager"]
    try:
        assert m.status()["encrypted"] is True and list(m.status()["workers"].values())[0]["state"] == "connected"
    finally:
        magic(ip, "down")


def test_commit_errors_are_one_line(ip):
    magic(ip, "up --workers 1")
    with pytest.raises(UsageError, match="cannot find the graph 'nope'"):
        magic(ip, "commit nope")
    ip.run_cell("x = 3")
    with pytest.raises(UsageError, match="'x' is a int, not a chimera_lab.Graph"):
        magic(ip, "commit x")
    magic(ip, "node a --kind step", "return data")  # a step with no inputs
    ip.run_cell("import chimera_lab as cp\ng = cp.Graph()\ng.add_node(a)")
    with pytest.raises(UsageError, match="%chimera commit: invalid graph:.*'a' is a source"):
        magic(ip, "commit g")
    with pytest.raises(UsageError, match="not valid Python"):
        magic(ip, "node broken", "return (")


def test_record_and_collect_from_magics(ip, capsys):
    magic(ip, "up --workers 1")
    magic(ip, "node sensor --kind source --rate 200",
          "self.i = getattr(self, 'i', 0) + 1\nself.save_tabular('t', {'i': self.i})\nreturn self.i")
    ip.run_cell("import chimera_lab as cp\ng = cp.Graph()\ng.add_node(sensor)")
    magic(ip, "commit g")
    magic(ip, "record demo")
    m = ip.user_ns["manager"]
    wait_until(lambda: node_metric(m, "sensor", "recording")["streams"].get("t", {}).get("written", 0) > 50, 10,
               "rows to be written")
    magic(ip, "stop")
    path = magic(ip, "collect")
    assert path.name.endswith("-demo")
    assert len(cp.Session(path).table("sensor", "t")) > 50


def test_views_pick_the_widget_that_fits_the_output(ip):
    from chimera_lab.jupyter.widgets import ClusterPanel, FrameView, LiveChart, LogView

    magic(ip, "up --workers 1")
    ip.run_cell("import chimera_lab as cp\nfrom chimera_lab.nodes import TestPatternSource\n"
                "camera = TestPatternSource('camera', width=160, height=120, rate_hz=30)")
    magic(ip, "node numbers --kind source --rate 50", "import math\nreturn math.sin(__import__('time').time())")
    magic(ip, "node words --kind source --rate 20", "return {'word': 'hello'}")
    ip.run_cell("g = cp.Graph()\ng.add_nodes_from([camera, numbers, words])")
    magic(ip, "commit g")
    with pytest.raises(UsageError, match="no node 'ghost'.*camera"):
        magic(ip, "view ghost")
    with pytest.raises(UsageError, match="start the pipeline"):
        magic(ip, "view camera")
    magic(ip, "start")
    assert isinstance(magic(ip, "status"), ClusterPanel)
    view = magic(ip, "view camera")
    assert isinstance(view, FrameView)
    wait_until(lambda: view.stats["sent"] >= 1, 10, "a frame sent to the view")
    assert isinstance(magic(ip, "view numbers"), LiveChart)
    assert isinstance(magic(ip, "view words"), LogView)
    assert isinstance(magic(ip, "latency"), LiveChart)
    assert isinstance(magic(ip, "logs"), LogView)
    with pytest.raises(UsageError, match="no record 'nope'"):
        magic(ip, "view camera --record nope")


def test_displaying_a_manager_shows_the_panel_with_an_html_fallback(ip):
    magic(ip, "up --workers 1")
    bundle = ip.user_ns["manager"]._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert "application/vnd.jupyter.widget-view+json" in data
    assert "local-0" in data["text/html"]


def test_kernel_exit_stops_what_up_started(tmp_path):
    """The cluster goes away with the kernel (atexit), so a restarted kernel leaves nothing behind."""
    import subprocess
    import sys

    code = ("from IPython.core.interactiveshell import InteractiveShell\n"
            "ip = InteractiveShell.instance()\n"
            "ip.run_line_magic('load_ext', 'chimera_lab')\n"
            "ip.run_line_magic('chimera', 'up --workers 2')\n"
            "print('PIDS', *[w['pid'] for w in ip.user_ns['manager'].status()['workers'].values()])\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    pids = [int(p) for p in out.stdout.split("PIDS")[1].split()]
    assert len(pids) == 2
    wait_until(lambda: not any(pid_alive(p) for p in pids), 15, "the workers to end with the kernel")
