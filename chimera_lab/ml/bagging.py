"""Model and hybrid parallelism: bagging ensembles whose members are trained on the workers of a cluster.

Model parallelism (the default): every worker gets the whole dataset once, members are dealt out over the
workers, and each member trains on its own bootstrap sample (its own seed, so no two are alike). Hybrid
parallelism (``data=``): each worker trains members on its own shard. Fitted members come back here, so the
ensemble predicts without the cluster (soft or majority vote for classes, the mean for numbers).
"""

from __future__ import annotations

import time
import uuid
import warnings
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import ClassifierMixin, RegressorMixin, clone
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, has_fit_parameter, validate_data

from . import aggregate
from .base import ClusterEstimator
from .cluster import lease
from .failures import WorkerFailure, check_policy
from .monitor import FitMonitor
from .shards import Arrays, DataError, Shard, as_pairs, forget, place_all


def _fit_member(w: Any, key: str, estimator: Any, seed: int, bootstrap: bool, max_samples: float | int
                ) -> tuple[Any, float, int]:
    """Train one member on the worker's data under `key` (runs on the worker): (fitted, seconds, rows used)."""
    X, y = w.store[key]
    n = len(X)
    m = max(1, int(round(max_samples * n))) if isinstance(max_samples, float) else min(int(max_samples), n)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, n, m) if bootstrap else (np.arange(n) if m == n else np.sort(rng.permutation(n)[:m]))
    member = clone(estimator)
    if "random_state" in member.get_params():
        member.set_params(random_state=seed % (2**31 - 1))
    t0 = time.perf_counter()
    if bootstrap and has_fit_parameter(member, "sample_weight"):
        # the same sample as rows repeated, as counts: no copy, and a tree sorts only the distinct rows
        # (scikit-learn's BaggingClassifier does the same)
        counts = np.bincount(rows, minlength=n)
        seen = np.flatnonzero(counts)
        member.fit(X[seen], y[seen], sample_weight=counts[seen].astype(np.float64))
    else:
        member.fit(X[rows], y[rows])
    return member, time.perf_counter() - t0, m


def split(X: Any, y: Any, n_shards: int, random_state: Any = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """The default partitioner: (X, y) shuffled and cut into `n_shards` nearly equal shards."""
    order = np.random.default_rng(random_state).permutation(len(X))
    return [(X[p], y[p]) for p in np.array_split(order, n_shards) if len(p)]


def _worker_lost(exc: BaseException) -> bool:
    """A failure of the worker itself (lost, gone, too slow), as opposed to the member's own error."""
    return getattr(exc, "remote_traceback", None) is None


class _DistributedBagging(ClusterEstimator):
    _classifier = False
    _default: Callable[[], Any]

    def _check_params(self) -> None:
        who = type(self).__name__
        n = self.n_estimators
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"{who}: n_estimators must be an int >= 1, got {n!r}")
        m = self.max_samples
        fraction = isinstance(m, float) and 0 < m <= 1
        if isinstance(m, bool) or not (fraction or isinstance(m, (int, np.integer)) and m >= 1):
            raise ValueError(f"{who}: max_samples must be a fraction in (0, 1] or a number of rows >= 1, got {m!r}")
        if self._classifier and self.voting not in ("soft", "hard"):
            raise ValueError(f"{who}: voting must be 'soft' (mean of probabilities) or 'hard' (majority), "
                             f"got {self.voting!r}")
        check_policy(self.on_worker_failure, who)
        if self.estimator is not None and not hasattr(self.estimator, "fit"):
            raise ValueError(f"{who}: estimator must be a scikit-learn estimator (with fit), got {self.estimator!r}")

    def fit(self, X: Any = None, y: Any = None) -> Any:
        """Train `n_estimators` members on the workers (same data, or each worker's shard with ``data=``)."""
        who = type(self).__name__
        self._check_params()
        hybrid = self.data is not None
        shards: Any = None
        if isinstance(self.data, (list, tuple, dict)):
            if X is not None or y is not None:
                raise ValueError(f"{who}.fit: the data comes from data= (given to {who}(...)); call fit() "
                                 "without X, y")
            shards = self.data
        else:
            if X is None:
                raise ValueError(f"{who}.fit needs X and y, or data= shards given to {who}(...)")
            if y is None:  # scikit-learn's wording, which its tools look for
                raise ValueError(f"{who} requires y to be passed, but the target y is None")
            X, y = validate_data(self, X, y, dtype=np.float64, ensure_all_finite=True, y_numeric=not self._classifier)
            if self._classifier:
                check_classification_targets(y)
                self._check_classes(np.unique(y))
            if self.data is not None:
                partition = split if self.data == "split" else self.data
                if not callable(partition):
                    raise ValueError(f"{who}: data must be None, 'split', a partitioner (X, y, n) -> shards, or a "
                                     f"list/dict of shards; got {self.data!r}")
        rs = check_random_state(self.random_state)
        seeds = [int(s.generate_state(1)[0]) for s in
                 np.random.SeedSequence(int(rs.randint(np.iinfo(np.int32).max))).spawn(int(self.n_estimators))]
        base = self.estimator if self.estimator is not None else self._default()
        self.failed_workers_: dict[str, str] = {}
        t0 = time.perf_counter()
        with lease(self.cluster, self.n_workers, who) as cluster:
            if hybrid and shards is None:
                if self.data == "split":  # shuffled with a seed drawn after the members', so theirs stay put
                    shards = split(X, y, len(cluster.workers), random_state=int(rs.randint(np.iinfo(np.int32).max)))
                else:
                    shards = partition(X, y, len(cluster.workers))
            tag = f"chimera.ml/{uuid.uuid4().hex[:12]}"
            layout: list[tuple[str, str, Shard]]
            if shards is None:  # model parallelism: the same data on every worker
                layout = [(w, f"{tag}/all", Arrays(X, y)) for w in cluster.workers]
            else:
                # in the order given, so member j trains on shard j mod (number of shards)
                layout = [(w, f"{tag}/{i}", s) for i, (w, s) in enumerate(as_pairs(shards, cluster.workers))]
            try:
                placed, failed = place_all(cluster.manager, layout, self._classifier, self.worker_timeout)
                self._apply_policy({w: why for (w, _), why in failed.items()}, "while its data was placed")
                if not placed:
                    raise WorkerFailure(who, self.failed_workers_, hint=" (no worker holds any data)")
                self._learn_shape(placed, hybrid and isinstance(self.data, (list, tuple, dict)))
                self._train(cluster.manager, list(placed), base, seeds)
            finally:
                for w in cluster.workers:
                    forget(cluster.manager, w, tag)
        self.fit_time_ = time.perf_counter() - t0
        return self

    def _learn_shape(self, placed: dict[tuple[str, str], Any], from_shards: bool) -> None:
        infos = list(placed.values())
        if from_shards:
            widths = {p.n_features for p in infos}
            if len(widths) > 1:
                raise DataError(f"{type(self).__name__}: the shards have different numbers of features: "
                                 + ", ".join(f"{p.worker}: {p.n_features}" for p in infos))
            self.n_features_in_ = widths.pop()
        if self._classifier:
            self.classes_ = self._check_classes(np.unique(np.concatenate([p.labels for p in infos])))

    def _train(self, manager: Any, holders: list[tuple[str, str]], base: Any, seeds: list[int]) -> None:
        """Deal members over the (worker, data key) holders; with "continue", members of a lost worker move to
        the others when those hold the same data (model parallelism), else they are dropped and reported."""
        who = type(self).__name__
        replicated = all(k.endswith("/all") for _, k in holders)
        todo = {i: holders[i % len(holders)] for i in range(len(seeds))}
        monitor = FitMonitor(who, len(seeds), "", bool(self.progress), unit="member", chart=False)
        members: dict[int, tuple[Any, str, float, int]] = {}
        dropped: list[int] = []
        running: dict[Future[Any], int] = {}

        def submit(i: int) -> None:
            w, key = todo[i]
            running[manager.call(w, _fit_member, key, base, seeds[i], self.bootstrap, self.max_samples)] = i

        for i in todo:
            submit(i)
        try:
            while running:
                done, _ = wait(list(running), timeout=self.worker_timeout, return_when=FIRST_COMPLETED)
                if not done:
                    late = {todo[i][0] for i in running.values()}
                    self._apply_policy({w: f"no answer within {self.worker_timeout:g} s" for w in late}, "training")
                    done = {f for f, i in running.items() if todo[i][0] in late}
                for fut in done:
                    i = running.pop(fut)
                    w = todo[i][0]
                    exc = fut.exception()
                    if exc is None:
                        member, took, rows = fut.result()
                        members[i] = (member, w, took, rows)
                        monitor.round(round=i, worker=w, seed=seeds[i], n_samples=rows, fit_s=took, compute_s=took,
                                      comm_s=0.0)
                        continue
                    if not _worker_lost(exc):
                        raise RuntimeError(f"{who}: member {i} failed on worker {w!r}: {exc}\n"
                                           f"{getattr(exc, 'remote_traceback', '')}") from None
                    if w not in self.failed_workers_:
                        self._apply_policy({w: str(exc)}, f"while training member {i}")
                    live = [h for h in holders if h[0] not in self.failed_workers_]
                    if replicated and live:
                        todo[i] = live[i % len(live)]
                        submit(i)
                    else:
                        dropped.append(i)
        finally:
            monitor.close()
            for fut in running:
                fut.cancel()
        if not members:
            raise WorkerFailure(who, self.failed_workers_, hint=" (no member could be trained)")
        if dropped:
            warnings.warn(f"{who}: {len(dropped)} of {len(seeds)} members were lost with worker(s) "
                          f"{', '.join(self.failed_workers_)}; the ensemble has {len(members)}", RuntimeWarning,
                          stacklevel=4)
        order = sorted(members)
        self.estimators_ = [members[i][0] for i in order]
        self.estimators_workers_ = [members[i][1] for i in order]
        self.contributors_ = sorted(set(self.estimators_workers_))
        self.history_ = pd.DataFrame({"member": order, "worker": self.estimators_workers_,
                                      "seed": [seeds[i] for i in order], "n_samples": [members[i][3] for i in order],
                                      "fit_s": [members[i][2] for i in order]}).set_index("member")

    def _check_X(self, X: Any) -> Any:
        check_is_fitted(self, "estimators_")
        return validate_data(self, X, reset=False, dtype=np.float64)


_DOC = """
    ``estimator`` (first; default a decision tree) is cloned for each of the ``n_estimators`` members; each member
    trains on ``max_samples`` rows drawn with replacement (``bootstrap=True``) or without, with its own seed.

    Model parallelism: ``fit(X, y)`` sends (X, y) once to every worker and deals the members out over them.
    Hybrid parallelism: ``data="split"`` (or a partitioner ``f(X, y, n_workers) -> [(X_i, y_i), ...]``) cuts
    (X, y) into one shard per worker; ``data=[shard, ...]`` or ``{worker: shard}`` (with (X, y), CSVFiles or
    InStore shards) gives the shards directly and ``fit()`` takes no arguments. Member j trains on shard
    j mod (number of shards).

    Workers: ``cluster=`` a cp.Manager (or LocalCluster); by default the ``%chimera up`` cluster, else a local
    cluster of ``n_workers`` processes for the fit. ``on_worker_failure="continue"`` retrains a lost worker's
    members elsewhere (model parallelism) or drops them with a warning (hybrid); ``"raise"`` stops the fit.

    After fit: ``estimators_`` (the fitted members, here: prediction needs no cluster), ``estimators_workers_``,
    ``contributors_``, ``failed_workers_``, ``history_`` (per member: worker, seed, rows, fit seconds),
    ``fit_time_``.
"""


class DistributedBaggingClassifier(ClassifierMixin, _DistributedBagging):
    """A bagging ensemble of classifiers trained on the cluster; predicts labels by soft vote (the mean of the
    members' probabilities, where every member has predict_proba) or majority vote (``voting="hard"``).
    """

    __doc__ = (__doc__ or "") + _DOC
    _classifier = True
    _default = DecisionTreeClassifier

    def __init__(self, estimator: Any = None, n_estimators: int = 10, *, max_samples: float | int = 1.0,
                 bootstrap: bool = True, voting: str = "soft", data: Any = None, cluster: Any = None,
                 n_workers: int | None = None, on_worker_failure: str = "raise", worker_timeout: float | None = None,
                 random_state: Any = None, progress: bool = True) -> None:
        self.estimator = estimator
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.bootstrap = bootstrap
        self.voting = voting
        self.data = data
        self.cluster = cluster
        self.n_workers = n_workers
        self.on_worker_failure = on_worker_failure
        self.worker_timeout = worker_timeout
        self.random_state = random_state
        self.progress = progress

    def _soft(self) -> bool:
        return self.voting == "soft" and all(hasattr(m, "predict_proba") for m in self.estimators_)

    def predict_proba(self, X: Any) -> np.ndarray:
        """The mean of the members' class probabilities, columns in the order of `classes_`."""
        X = self._check_X(X)
        if not all(hasattr(m, "predict_proba") for m in self.estimators_):
            raise AttributeError(f"{type(self).__name__}: predict_proba needs members with predict_proba; "
                                 f"{type(self.estimators_[0]).__name__} has none")
        return aggregate.soft_vote([aggregate.align_proba(m.predict_proba(X), m.classes_, self.classes_)
                                    for m in self.estimators_])

    def predict(self, X: Any) -> np.ndarray:
        """The ensemble's label for each row (soft vote, or majority vote)."""
        check_is_fitted(self, "estimators_")
        if self._soft():
            return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
        X = self._check_X(X)
        return aggregate.hard_vote([m.predict(X) for m in self.estimators_], self.classes_)


class DistributedBaggingRegressor(RegressorMixin, _DistributedBagging):
    """A bagging ensemble of regressors trained on the cluster; predicts the mean of the members' predictions.
    """

    __doc__ = (__doc__ or "") + _DOC
    _default = DecisionTreeRegressor

    def __init__(self, estimator: Any = None, n_estimators: int = 10, *, max_samples: float | int = 1.0,
                 bootstrap: bool = True, data: Any = None, cluster: Any = None, n_workers: int | None = None,
                 on_worker_failure: str = "raise", worker_timeout: float | None = None, random_state: Any = None,
                 progress: bool = True) -> None:
        self.estimator = estimator
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.bootstrap = bootstrap
        self.data = data
        self.cluster = cluster
        self.n_workers = n_workers
        self.on_worker_failure = on_worker_failure
        self.worker_timeout = worker_timeout
        self.random_state = random_state
        self.progress = progress

    def predict(self, X: Any) -> np.ndarray:
        """The mean of the members' predictions for each row."""
        X = self._check_X(X)
        return aggregate.mean([m.predict(X) for m in self.estimators_])
