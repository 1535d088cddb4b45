"""Where a worker's training data comes from: arrays sent once, files read on the worker, or data it already holds.

A shard is placed on a worker once per fit (`place`); every later round refers to it by key, so only parameters,
gradients or models travel after that.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..manager import Manager


class DataError(ValueError):
    """Training data is missing or malformed; the message names the worker and the file or array."""


class Shard(Protocol):
    """Anything that can produce ``(X, y)`` on a worker."""

    def load(self, w: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(X, y)`` on worker `w` (runs there)."""
        ...


@dataclass(frozen=True)
class Arrays:
    """Arrays that travel from here to the worker, once."""

    X: Any
    y: Any

    def load(self, w: Any) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.X), np.asarray(self.y)

    def __repr__(self) -> str:
        return f"Arrays(X{np.shape(self.X)}, y{np.shape(self.y)})"


@dataclass(frozen=True)
class CSVFiles:
    """``X_train.csv`` and ``y_train.csv`` (with a header row) in `folder`, read on the worker; a relative folder
    is taken from the worker's working directory."""

    folder: str
    features: str = "X_train.csv"
    labels: str = "y_train.csv"

    def load(self, w: Any) -> tuple[np.ndarray, np.ndarray]:
        import pandas as pd

        where = f"worker {getattr(w, 'name', '?')!r}"
        frames = []
        for name in (self.features, self.labels):
            path = os.path.join(self.folder, name)
            if not os.path.isfile(path):
                raise DataError(f"{where}: no training file {os.path.abspath(path)} (put the worker's data there)")
            try:
                frames.append(pd.read_csv(path))
            except Exception as exc:
                raise DataError(f"{where}: {path} is not a readable CSV file: {exc}") from None
        X, y = frames
        if len(X) != len(y):
            raise DataError(f"{where}: {self.features} has {len(X)} rows but {self.labels} has {len(y)}; "
                            "they must describe the same samples")
        if y.shape[1] != 1:
            raise DataError(f"{where}: {self.labels} must have exactly one column, it has {y.shape[1]}")
        return X.to_numpy(), y.iloc[:, 0].to_numpy()


@dataclass(frozen=True)
class InStore:
    """``(X, y)`` a task already put in ``worker.store[key]``."""

    key: str

    def load(self, w: Any) -> tuple[np.ndarray, np.ndarray]:
        if self.key not in w.store:
            raise DataError(f"worker {w.name!r} holds no data under {self.key!r}")
        X, y = w.store[self.key]
        return X, y


@dataclass(frozen=True)
class Placed:
    """What a worker reports about the shard it now holds."""

    worker: str
    n_samples: int
    n_features: int
    labels: np.ndarray | None  # the distinct labels, for classifiers


def _put(w: Any, key: str, shard: Shard, classifier: bool) -> Placed:
    X, y = shard.load(w)
    try:
        X = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"worker {w.name!r}: X must hold numbers only ({exc}); encode text and categories first"
                        ) from None
    y = np.asarray(y)
    if X.ndim != 2 or y.ndim != 1 or len(X) != len(y) or len(X) == 0:
        raise DataError(f"worker {w.name!r}: the shard must be X of shape (n, d) and y of shape (n,) with n > 0, "
                        f"got X{X.shape} and y{y.shape}")
    if not np.isfinite(X).all():
        raise DataError(f"worker {w.name!r}: X contains NaN or infinity; clean or impute it first")
    w.store[key] = (np.ascontiguousarray(X), y)
    return Placed(w.name, X.shape[0], X.shape[1], np.unique(y) if classifier else None)


def _forget(w: Any, prefix: str) -> None:
    for k in [k for k in w.store if k.startswith(prefix)]:
        del w.store[k]


def as_pairs(data: Sequence[Any] | Mapping[str, Any], workers: Sequence[str]) -> list[tuple[str, Shard]]:
    """Each shard with the worker it goes to, in the order given: a mapping names the worker of each shard; a list
    is dealt out in turn."""
    known = set(workers)
    items = data.items() if isinstance(data, Mapping) else [(workers[i % len(workers)], s) for i, s in enumerate(data)]
    out: list[tuple[str, Shard]] = []
    for worker, shard in items:
        if worker not in known:
            raise DataError(f"data names worker {worker!r}, which is not connected (connected: {', '.join(workers)})")
        if isinstance(shard, tuple) and len(shard) == 2:
            shard = Arrays(*shard)
        if not callable(getattr(shard, "load", None)):
            raise DataError(f"a shard must be (X, y), Arrays, CSVFiles or InStore, got {type(shard).__name__}")
        out.append((worker, shard))
    return out


def as_placements(data: Sequence[Any] | Mapping[str, Any], workers: Sequence[str]) -> dict[str, list[Shard]]:
    """Which shards go to which worker (see `as_pairs`), grouped by worker, in the order of `workers`."""
    out: dict[str, list[Shard]] = {w: [] for w in workers}
    for worker, shard in as_pairs(data, workers):
        out[worker].append(shard)
    return {w: s for w, s in out.items() if s}


def place(manager: Manager, worker: str, key: str, shard: Shard, classifier: bool) -> Future[Placed]:
    """Put `shard` on `worker` under ``worker.store[key]``; the Future says what it holds."""
    return manager.call(worker, _put, key, shard, classifier)


def forget(manager: Manager, worker: str, prefix: str) -> Future[None]:
    """Drop what a fit left in a worker's store (every key starting with `prefix`)."""
    return manager.call(worker, _forget, prefix)



def place_all(manager: Manager, placements: Sequence[tuple[str, str, Shard]], classifier: bool,
              timeout: float | None = None) -> tuple[dict[tuple[str, str], Placed], dict[tuple[str, str], str]]:
    """Place every ``(worker, key, shard)`` in parallel: what each (worker, key) now holds, and why the others
    failed. A DataError on a worker is the user's to fix, so it is raised, not reported."""
    futures = {(worker, key): place(manager, worker, key, shard, classifier) for worker, key, shard in placements}
    placed: dict[tuple[str, str], Placed] = {}
    failed: dict[tuple[str, str], str] = {}
    for where, fut in futures.items():
        try:
            placed[where] = fut.result(timeout)
        except Exception as exc:
            text = str(exc) or f"no answer within worker_timeout={timeout:g} s" if timeout else str(exc)
            if "DataError: " in text:
                raise DataError(text.split("DataError: ", 1)[1]) from None
            tb = getattr(exc, "remote_traceback", None)
            failed[where] = text + (f"\n{tb}" if tb else "")
    return placed, failed
