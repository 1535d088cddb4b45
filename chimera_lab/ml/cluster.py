"""Which workers an estimator runs on: the Manager it was given, the notebook's `%chimera up` cluster, or a local
cluster it starts for one fit and stops afterwards."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..cluster import LocalCluster
from ..manager import Manager, managers

_PRIVATE: weakref.WeakSet[Manager] = weakref.WeakSet()


def keep_private(manager: Manager) -> Manager:
    """Leave `manager` out of the default choice of estimators (e.g. the one a REST service runs its workers on)."""
    _PRIVATE.add(manager)
    return manager


class ClusterError(RuntimeError):
    """No usable workers; the message says how to get some."""


@dataclass
class Lease:
    """The Manager and the connected workers one fit uses."""

    manager: Manager
    workers: list[str]
    own: bool  # a local cluster started for this fit, stopped when it ends


def connected_workers(manager: Manager) -> list[str]:
    """The names of the workers connected to `manager` now, sorted."""
    return sorted(n for n, w in manager.status()["workers"].items() if w.get("state") == "connected")


def _as_manager(cluster: Any) -> Manager:
    if isinstance(cluster, Manager):
        return cluster
    if isinstance(getattr(cluster, "manager", None), Manager):  # LocalCluster, or the %chimera magics' state
        return cluster.manager
    raise ClusterError(f"cluster= must be a cp.Manager or a LocalCluster, got {type(cluster).__name__}")


@contextmanager
def lease(cluster: Any, n_workers: int | None, who: str) -> Iterator[Lease]:
    """The workers for one fit of `who`: `cluster`'s, else the only running Manager's (``%chimera up``), else a
    LocalCluster of `n_workers` processes that lives as long as the block."""
    if cluster is None:
        running = [m for m in managers() if m not in _PRIVATE and connected_workers(m)]
        if len(running) > 1:
            raise ClusterError(f"{who}: {len(running)} Managers with workers run in this process; "
                               "pass cluster=<the Manager to use>")
        if running:
            cluster = running[0]
    if cluster is not None:
        manager = _as_manager(cluster)
        workers = connected_workers(manager)
        if not workers:
            raise ClusterError(f"{who}: the Manager at {manager.host}:{manager.port} has no connected workers; "
                               "start some (cp-worker, LocalCluster) or leave cluster= unset for a local cluster")
        yield Lease(manager, workers, own=False)
        return
    n = 2 if n_workers is None else n_workers
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ClusterError(f"{who}: n_workers must be a positive int, got {n_workers!r}")
    with LocalCluster(n, prefix="ml") as local:
        yield Lease(local.manager, list(local.names), own=True)
