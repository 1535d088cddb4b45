"""Manager.call: run a function on a worker (a real cp-worker process), keep state there, get results back."""

from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np
import pytest
from conftest import Cluster

import chimera_lab as cp

cp.send_by_value(sys.modules[__name__])  # the cp-workers cannot import this test module: functions go by value


def put_shard(w, key, X):
    w.store[key] = X
    return X.shape


def shard_sum(w, key, scale=1.0):
    return float(w.store[key].sum() * scale), w.name, os.getpid()


def boom(w):
    raise ValueError("bad shard: column 3 is empty")


def sleepy(w, seconds):
    time.sleep(seconds)
    return "woke"


def test_call_keeps_state_on_the_worker_and_returns_results(cluster: Cluster) -> None:
    cluster.cli_worker("w1")
    m = cluster.manager
    X = np.arange(12.0).reshape(3, 4)
    assert m.call("w1", put_shard, "train", X).result(30) == (3, 4)
    total, name, pid = m.call("w1", shard_sum, "train", scale=2.0).result(30)
    assert total == X.sum() * 2 and name == "w1" and pid != os.getpid()
    big = np.random.default_rng(0).random((1000, 500))  # 4 MB each way
    assert m.call("w1", put_shard, "big", big).result(30) == (1000, 500)
    assert m.call("w1", shard_sum, "big").result(30)[0] == pytest.approx(big.sum())


def test_a_failing_task_raises_with_the_workers_traceback(cluster: Cluster) -> None:
    cluster.cli_worker("w1")
    fut = cluster.manager.call("w1", boom)
    with pytest.raises(cp.TaskError, match="worker 'w1': ValueError: bad shard: column 3 is empty") as info:
        fut.result(30)
    assert "in boom" in (info.value.remote_traceback or "")
    assert cluster.manager.call("w1", sleepy, 0).result(30) == "woke"  # the worker goes on


def test_calls_to_unknown_or_lost_workers_fail_promptly(cluster: Cluster) -> None:
    with pytest.raises(cp.TaskError, match="not connected"):
        cluster.manager.call("nobody", sleepy, 0).result(5)
    proc = cluster.cli_worker("w1")
    fut = cluster.manager.call("w1", sleepy, 60)
    proc.send_signal(signal.SIGKILL)  # a process this test started
    t0 = time.monotonic()
    with pytest.raises(cp.TaskError, match="worker 'w1' was lost"):
        fut.result(10)
    assert time.monotonic() - t0 < 5


def test_two_workers_compute_in_parallel(cluster: Cluster) -> None:
    cluster.cli_worker("a")
    cluster.cli_worker("b")
    m = cluster.manager
    t0 = time.monotonic()
    futs = [m.call(w, sleepy, 1.0) for w in ("a", "b")]
    assert [f.result(30) for f in futs] == ["woke", "woke"]
    assert time.monotonic() - t0 < 1.9  # side by side, not one after the other
