"""The `cp-worker` command: another working directory, unseen classes, bad addresses and tokens, Ctrl-C."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
from pathlib import Path

from conftest import Cluster, cli_worker_path, node_metric, pid_alive, wait_until
from pipeline_nodes import Count, InOrder, WhereAmI

import chimera_lab as cp


def test_three_workers_one_a_cli_worker_running_a_class_it_never_saw(cluster: Cluster, tmp_path: Path):
    remote_dir = tmp_path / "elsewhere"
    cluster.worker("a")
    cluster.worker("b")
    cluster.cli_worker("remote", cwd=remote_dir)
    m = cluster.manager
    g = cp.Graph()
    src, where, sink = Count("source", rate_hz=100), WhereAmI("where"), InOrder("sink")
    g.add_edge(src, where)
    g.add_edge(src, sink)
    m.commit_graph(g, {"a": ["source"], "remote": ["where"], "b": ["sink"]})
    assert set(m.status()["workers"]) == {"a", "b", "remote"}
    with m.tap("where") as tap:
        m.start()
        report = tap.get(10).get("default")["value"]
    wait_until(lambda: node_metric(m, "sink", "steps") > 20, 10, "the sink on worker b to step")
    m.stop()
    assert report["cwd"] == str(remote_dir)
    assert report["can_import_test_module"] is False  # the class came by value
    assert report["value"] >= 1
    assert node_metric(m, "sink", "errors") == 0
    assert m.status()["workers"]["remote"]["cwd"] == str(remote_dir)


def test_worker_command_is_the_line_to_run(cluster: Cluster, tmp_path: Path):
    m = cluster.manager
    line = m.worker_command(name="laptop")
    argv = shlex.split(line)
    assert argv[0] == "cp-worker" and "--token" in argv and str(m.port) in argv
    argv[0] = cli_worker_path()
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cluster.procs.append(proc)
    wait_until(lambda: m.status()["workers"].get("laptop", {}).get("state") == "connected", 15,
               "the worker started from worker_command() to connect")


def test_unreachable_manager_exits_non_zero_with_a_clear_error(tmp_path: Path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = subprocess.run([cli_worker_path(), "--ip", "127.0.0.1", "--port", str(port), "--name", "x",
                          "--token", "ab" * 32, "--timeout", "1"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert f"cannot reach a Manager at 127.0.0.1:{port}" in out.stderr


def test_wrong_token_is_rejected_with_a_clear_error(cluster: Cluster):
    m = cluster.manager
    out = subprocess.run([cli_worker_path(), "--ip", m.host, "--port", str(m.port), "--name", "x",
                          "--token", "ab" * 32, "--timeout", "5"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert "refused this worker's credentials: the token does not match (use manager.token)" in out.stderr
    assert "x" not in m.status()["workers"]
    assert m.status()["rejected"] >= 1  # refused at the handshake: not one message of it was read


def test_encryption_mismatch_is_named(tmp_path: Path):
    with cp.Manager(port=0, encrypt=True) as m:
        out = subprocess.run([cli_worker_path(), "--ip", m.host, "--port", str(m.port), "--name", "x",
                              "--token", m.token, "--timeout", "5"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 1
        assert "it is encrypted (Manager(encrypt=True)); pass --encrypt or set CHIMERA_ENCRYPT=1" in out.stderr
        proc = subprocess.Popen([cli_worker_path(), *m.worker_command("enc").split()[1:]])
        try:
            wait_until(lambda: m.status()["workers"].get("enc", {}).get("state") == "connected", 15,
                       "the encrypted worker to join")
        finally:
            proc.terminate()
            proc.wait(10)


def test_missing_and_malformed_token(tmp_path: Path):
    env = {"PATH": "/usr/bin:/bin"}
    out = subprocess.run([cli_worker_path(), "--port", "9"], capture_output=True, text=True, timeout=30, env=env)
    assert out.returncode == 2 and "no token" in out.stderr
    out = subprocess.run([cli_worker_path(), "--port", "9", "--token", "nonsense"], capture_output=True,
                         text=True, timeout=30, env=env)
    assert out.returncode == 1 and "token is not valid" in out.stderr


def test_ctrl_c_exits_cleanly_and_ends_its_nodes(cluster: Cluster):
    m = cluster.manager
    proc = cluster.cli_worker("remote")
    g = cp.Graph()
    g.add_edge(Count("source", rate_hz=50), InOrder("sink"))
    m.commit_graph(g, {"remote": ["source", "sink"]})
    pids = [n["pid"] for n in m.status()["nodes"].values()]
    m.start()
    wait_until(lambda: node_metric(m, "sink", "steps") > 5, 10, "steps")
    proc.send_signal(signal.SIGINT)  # the cp-worker this test started
    assert proc.wait(15) == 0, proc.stderr.read() if proc.stderr else ""
    wait_until(lambda: not any(pid_alive(p) for p in pids), 10, "its node processes to end")
    wait_until(lambda: m.status()["workers"]["remote"]["state"] != "connected", 5, "the Manager to notice")


def test_manager_shutdown_ends_cli_workers(cluster: Cluster):
    proc = cluster.cli_worker("remote")
    cluster.manager.shutdown()
    assert proc.wait(15) == 0
    assert "the Manager shut down" in (proc.stdout.read() if proc.stdout else "")


def test_chimera_worker_alias_is_installed():
    alias = Path(sys.executable).parent / "chimera-worker"
    out = subprocess.run([str(alias), "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "--token" in out.stdout
