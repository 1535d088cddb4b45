"""Data parallelism: linear models trained by SGD on the workers of a cluster.

Each worker gets its share of the data once. Then, round by round, the estimator sends the parameters and gets
back either the gradient of the worker's batch (``strategy="gradient"``: synchronous gradient averaging, the
update is made here) or the parameters after local epochs of SGD (``strategy="fedavg"``: Federated Averaging,
the workers' models averaged, weighted by their sample counts; this is what the chimera seed called
"distributed SGD").
"""

from __future__ import annotations

import math
import time
import uuid
import warnings
from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .base import ClusterEstimator
from .cluster import lease
from .failures import WorkerFailure, check_policy
from .linear import CLASSIFIER_LOSSES, PENALTIES, REGRESSOR_LOSSES, SCHEDULES, Penalty, Problem, Schedule
from .monitor import FitMonitor, plot_history
from .rounds import Answer, Channel
from .shards import Arrays, DataError, Shard, as_placements, forget, place_all

STRATEGIES = ("gradient", "fedavg")
FEDAVG_BATCH = 32  # the local mini-batch of FedAvg when batch_size="auto"


class _DistributedSGD(ClusterEstimator):
    """What the classifier and the regressor share: parameters, the fit loop, failure handling, history."""

    _classifier = False
    _losses: tuple[str, ...] = ()
    _metric = ""

    # -- parameters ---------------------------------------------------------------------------------
    def _check_params(self) -> None:
        who = type(self).__name__

        def bad(name: str, rule: str) -> ValueError:
            return ValueError(f"{who}: {name} must be {rule}, got {getattr(self, name)!r}")

        if self.loss not in self._losses:
            raise bad("loss", " or ".join(repr(v) for v in self._losses))
        if self.penalty not in PENALTIES:
            raise bad("penalty", "'l2', 'l1', 'elasticnet' or None")
        if self.strategy not in STRATEGIES:
            raise bad("strategy", "'gradient' (synchronous gradient averaging) or 'fedavg' (model averaging)")
        if self.learning_rate not in SCHEDULES:
            raise bad("learning_rate", "'constant', 'invscaling' or 'adaptive'")
        for name in ("alpha", "eta0"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise bad(name, "a number >= 0")
        if not (isinstance(self.eta0, (int, float)) and self.eta0 > 0):
            raise bad("eta0", "a number > 0")
        if not 0 <= self.l1_ratio <= 1:
            raise bad("l1_ratio", "between 0 and 1")
        for name in ("max_iter", "n_iter_no_change", "local_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise bad(name, "an int >= 1")
        if self.tol is not None and not (isinstance(self.tol, (int, float)) and self.tol >= 0):
            raise bad("tol", "a number >= 0 or None")
        b = self.batch_size
        if b != "auto" and b is not None and (isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1):
            raise bad("batch_size", "'auto', None (each worker's whole shard) or an int >= 1")
        if self.worker_timeout is not None and not self.worker_timeout > 0:
            raise bad("worker_timeout", "a number of seconds > 0 or None")
        check_policy(self.on_worker_failure, who)

    def _batch(self) -> int | None:
        if self.batch_size == "auto":
            return FEDAVG_BATCH if self.strategy == "fedavg" else None
        return self.batch_size

    # -- fit ----------------------------------------------------------------------------------------
    def fit(self, X: Any = None, y: Any = None) -> Any:
        """Train on the cluster's workers: on (X, y) split across them, or on the ``data=`` shards."""
        who = type(self).__name__
        self._check_params()
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        classes = None
        if self.data is None:
            if X is None:
                raise ValueError(f"{who}.fit needs X and y, or data= shards given to {who}(...)")
            if y is None:  # scikit-learn's wording, which its tools look for
                raise ValueError(f"{who} requires y to be passed, but the target y is None")
            X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=not self._classifier)
            if self._classifier:
                check_classification_targets(y)
                classes = self._check_classes(np.unique(y))
        elif X is not None or y is not None:
            raise ValueError(f"{who}.fit: the data comes from data= (given to {who}(...)); call fit() without X, y")

        t0 = time.perf_counter()
        with lease(self.cluster, self.n_workers, who) as cluster:
            if self.data is None:
                order = np.random.default_rng(seed).permutation(len(X))
                parts = np.array_split(order, len(cluster.workers))
                shards: dict[str, Shard] = {w: Arrays(X[p], y[p]) for w, p in zip(cluster.workers, parts, strict=True)
                                           if len(p)}
            else:
                shards = {}
                for w, given in as_placements(self.data, cluster.workers).items():
                    if len(given) > 1:
                        raise DataError(f"{who}: data= gives worker {w!r} {len(given)} shards; give each worker at "
                                        "most one (or start more workers)")
                    shards[w] = given[0]
            key = f"chimera.ml/{uuid.uuid4().hex[:12]}"
            self.failed_workers_: dict[str, str] = {}
            try:
                placed, failed = place_all(cluster.manager, [(w, key, s) for w, s in shards.items()],
                                           self._classifier, self.worker_timeout)
                self._apply_policy({w: why for (w, _), why in failed.items()}, "while its data was placed")
                infos = {w: p for (w, _), p in placed.items()}
                if self.data is not None:
                    widths = {p.n_features for p in infos.values()}
                    if len(widths) > 1:
                        raise DataError(f"{who}: the workers' shards have different numbers of features: "
                                        + ", ".join(f"{w}: {p.n_features}" for w, p in infos.items()))
                    self.n_features_in_ = widths.pop()
                    if self._classifier:
                        labels = [p.labels for p in infos.values() if p.labels is not None]
                        classes = self._check_classes(np.unique(np.concatenate(labels)))
                self._rounds(cluster.manager, key, list(infos), classes, seed)
            finally:
                for w in shards:
                    forget(cluster.manager, w, key)
        self.fit_time_ = time.perf_counter() - t0
        return self

    def _rounds(self, manager: Any, key: str, workers: list[str], classes: np.ndarray | None, seed: int) -> None:
        """The training loop: one round per batch (gradient) or per averaging step (fedavg)."""
        who = type(self).__name__
        d = self.n_features_in_
        K = 1 if classes is None or len(classes) == 2 else len(classes)
        problem = Problem(self.loss, K, d, classes, float(getattr(self, "epsilon", 0.1)))
        penalty = Penalty(self.penalty, float(self.alpha), float(self.l1_ratio))
        schedule = Schedule(self.learning_rate, float(self.eta0), float(self.power_t))
        seeds = {w: int(s.generate_state(1)[0])
                 for w, s in zip(workers, np.random.SeedSequence(seed).spawn(len(workers)), strict=True)}
        if not workers:
            raise WorkerFailure(who, self.failed_workers_, hint=" (no worker holds any data)")
        channel = Channel(manager, workers, key, problem, penalty, seeds, self.worker_timeout)
        theta = np.zeros(problem.size)
        batch = self._batch()
        fedavg = self.strategy == "fedavg"
        total = int(self.max_iter)
        monitor = FitMonitor(who, total, self._metric, bool(self.progress), unit="round" if fedavg else "epoch")
        best, stale, updates, rnd, note = math.inf, 0, 0, 0, "max_iter reached"
        adaptive = self.learning_rate == "adaptive"
        best_seen, kept = math.inf, theta.copy()  # adaptive: the best round's (or epoch's) parameters, to return to
        self.converged_ = False
        try:
            self._apply_policy(dict(channel.failed), "while its side of the channel started")
            for epoch in range(1, total + 1):
                steps = 1 if fedavg or batch is None else max(1, math.ceil(max(channel.sizes.values()) / batch))
                # a mini-batch's loss is noisy (one batch can cost twice another at the same parameters), so with
                # mini-batches the overshoot guard below judges whole epochs, not single rounds
                per_round = steps == 1
                start = theta.copy()
                epoch_loss = epoch_n = 0.0
                for _ in range(steps):
                    rnd += 1
                    updates += 1
                    eta = schedule.at(updates)
                    t0 = time.perf_counter()
                    if fedavg:
                        answers = channel.ask("local", theta, epochs=int(self.local_epochs), batch=batch,
                                              eta=eta)
                    else:
                        answers = channel.ask("grad", theta, batch=batch)
                    wall = time.perf_counter() - t0
                    self._apply_policy(dict(channel.failed), f"in round {rnd}")
                    if not answers:
                        raise WorkerFailure(who, self.failed_workers_, hint=" (no worker is left)")
                    answers = dict(sorted(answers.items()))  # sums in a fixed order, whichever worker answered first
                    n = sum(a.n for a in answers.values())
                    loss = sum(a.loss for a in answers.values()) / n + penalty.value(problem, theta)
                    if adaptive and per_round and not loss <= 2 * best_seen:  # the last step overshot: undo it
                        theta = kept.copy()
                        self._slow_down(schedule)
                        continue
                    if per_round and loss < best_seen:
                        best_seen, kept = loss, theta.copy()
                    if fedavg:
                        theta = np.sum([a.n * a.vector for a in answers.values()], axis=0) / n
                    else:
                        penalty.step(problem, theta, np.sum([a.vector for a in answers.values()], axis=0) / n, eta)
                    if not (math.isfinite(loss) and np.isfinite(theta).all()):
                        raise FloatingPointError(
                            f"{who}: the loss diverged in round {rnd} (learning rate {eta:g}); lower eta0, "
                            "use learning_rate='adaptive', or scale the features (StandardScaler)")
                    compute = max(a.compute for a in answers.values())
                    monitor.round(round=rnd, epoch=epoch, workers=len(answers), loss=loss,
                                  **{self._metric: self._metric_value(answers, n)}, learning_rate=eta,
                                  compute_s=compute, comm_s=max(wall - compute, 0.0), wall_s=wall)
                    epoch_loss += loss * n
                    epoch_n += n
                    self.contributors_ = sorted(answers)
                epoch_loss = epoch_loss / epoch_n if epoch_n else math.inf
                self.n_iter_ = epoch
                if adaptive and not per_round:
                    if not epoch_loss <= 2 * best_seen:  # this epoch overshot: back to the best epoch's start
                        theta = kept.copy()
                        self._slow_down(schedule)
                        continue
                    if epoch_loss < best_seen:
                        best_seen, kept = epoch_loss, start
                if self.tol is not None:
                    stale = stale + 1 if epoch_loss > best - self.tol else 0
                    best = min(best, epoch_loss)
                    if stale >= self.n_iter_no_change:
                        if self.learning_rate == "adaptive" and schedule.eta > 1e-6:
                            schedule.eta /= 5
                            stale = 0
                        else:
                            self.converged_, note = True, f"converged after {epoch} {monitor_unit(fedavg)}"
                            break
            else:
                if self.tol is not None:
                    warnings.warn(f"{who}: max_iter={total} reached before the loss converged; increase max_iter "
                                  "to improve the fit", ConvergenceWarning, stacklevel=3)
        finally:
            monitor.close(note)
            channel.close()
        self.t_ = updates
        self.history_ = monitor.frame()
        W, b = problem.split(theta)
        self.coef_, self.intercept_ = W.copy(), b.copy()
        if classes is not None:
            self.classes_ = classes

    def _slow_down(self, schedule: Schedule) -> None:
        """learning_rate="adaptive" after a step that overshot: divide the rate by 5, or give up."""
        schedule.eta /= 5
        if schedule.eta < 1e-9:
            raise FloatingPointError(f"{type(self).__name__}: the loss keeps diverging even at learning rate "
                                     f"{schedule.eta:.2g}; scale the features (StandardScaler) or lower eta0")

    def _metric_value(self, answers: dict[str, Answer], n: int) -> float:
        total = sum(a.metric for a in answers.values())
        return total / n if self._classifier else math.sqrt(total / n)

    # -- use ----------------------------------------------------------------------------------------
    def _decision(self, X: Any) -> np.ndarray:
        """Raw scores: shape (n,) for regression and binary classification, else (n, n_classes)."""
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        z = X @ self.coef_.T + self.intercept_
        return z[:, 0] if z.shape[1] == 1 else z

    def plot_history(self, ax: Any = None) -> Any:
        """Loss and metric per round, and the time each round spent computing and communicating (matplotlib)."""
        check_is_fitted(self, "history_")
        return plot_history(self.history_, self._metric, f"{type(self).__name__} ({self.strategy})", ax)


def monitor_unit(fedavg: bool) -> str:
    return "rounds" if fedavg else "epochs"


_COMMON_DOC = """
    Data: ``fit(X, y)`` splits (X, y) across the workers once; or ``data=`` gives each worker its own shard
    ({worker: (X, y) | CSVFiles(folder) | InStore(key)}, or a list dealt out in turn) and ``fit()`` takes no
    arguments. Each round then moves only parameters and gradients.

    Workers: ``cluster=`` a cp.Manager (or LocalCluster); by default the notebook's ``%chimera up`` cluster, else
    a local cluster of ``n_workers`` processes started for the fit and stopped after it.
    ``on_worker_failure="raise"`` stops on a lost or failing worker; ``"continue"`` goes on without it
    (``failed_workers_`` says who and why, ``contributors_`` who took part in the last round).

    Training: ``strategy="gradient"`` averages the workers' gradients each round (full shard, or ``batch_size``
    rows per worker per round) and updates here; ``strategy="fedavg"`` has each worker run ``local_epochs`` of
    mini-batch SGD (``batch_size``, default 32) from the current model, then averages the models weighted by
    sample count. ``max_iter`` counts epochs (gradient) or averaging rounds (fedavg); the fit stops when the
    loss has not improved by ``tol`` for ``n_iter_no_change`` of them (with ``learning_rate="adaptive"`` the
    rate is first divided by 5, as in scikit-learn, and a step (with mini-batches, an epoch) that more than
    doubles the loss is undone and the rate divided by 5 at once, so a too-large ``eta0`` costs a few rounds
    instead of the fit).
    Penalties: 'l2', 'l1' (a proximal step: exact zeros with full-batch gradient averaging; mini-batches and
    FedAvg's averaged models leave tiny weights instead), 'elasticnet'. ``eta0=1.0`` suits the mean gradient
    of a batch over standardized features (each update averages many rows, unlike scikit-learn's per-sample SGD,
    whose default is 0.01). Scale your features, as with any SGD.

    After fit: ``coef_``, ``intercept_``, ``n_iter_``, ``history_`` (a DataFrame: loss, metric, learning rate,
    compute and communication seconds per round), ``plot_history()``, ``contributors_``, ``failed_workers_``,
    ``fit_time_``. A progress bar shows while fitting (``progress=False`` hides it) and, in Jupyter, a live chart.
"""


class DistributedSGDClassifier(ClassifierMixin, _DistributedSGD):
    """A linear classifier trained by distributed SGD: loss 'log_loss' (logistic regression; softmax for more than
    two classes, with predict_proba), 'hinge' (a linear SVM, one-vs-rest) or 'squared_error' (one-vs-rest).
    """

    __doc__ = (__doc__ or "") + _COMMON_DOC
    _classifier = True
    _losses = CLASSIFIER_LOSSES
    _metric = "accuracy"

    def __init__(self, loss: str = "log_loss", *, penalty: str | None = "l2", alpha: float = 1e-4,
                 l1_ratio: float = 0.15, max_iter: int = 1000, tol: float | None = 1e-3, n_iter_no_change: int = 5,
                 strategy: str = "gradient", batch_size: int | str | None = "auto", local_epochs: int = 1,
                 learning_rate: str = "adaptive", eta0: float = 1.0, power_t: float = 0.25, cluster: Any = None,
                 n_workers: int | None = None, data: Any = None, on_worker_failure: str = "raise",
                 worker_timeout: float | None = None, random_state: Any = None, progress: bool = True) -> None:
        self.loss = loss
        self.penalty = penalty
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.max_iter = max_iter
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.strategy = strategy
        self.batch_size = batch_size
        self.local_epochs = local_epochs
        self.learning_rate = learning_rate
        self.eta0 = eta0
        self.power_t = power_t
        self.cluster = cluster
        self.n_workers = n_workers
        self.data = data
        self.on_worker_failure = on_worker_failure
        self.worker_timeout = worker_timeout
        self.random_state = random_state
        self.progress = progress

    def predict(self, X: Any) -> np.ndarray:
        """The predicted class of each row."""
        z = self._decision(X)
        return self.classes_[(z > 0).astype(int)] if z.ndim == 1 else self.classes_[np.argmax(z, axis=1)]

    def decision_function(self, X: Any) -> np.ndarray:
        """Raw scores: shape (n,) for two classes (> 0 means `classes_[1]`), else (n, n_classes)."""
        return self._decision(X)

    def _has_proba(self) -> bool:
        if self.loss != "log_loss":
            raise AttributeError(f"predict_proba is only available with loss='log_loss', not {self.loss!r}")
        return True

    @available_if(_has_proba)
    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (n, n_classes), columns in the order of `classes_`."""
        z = self._decision(X)
        if z.ndim == 1:
            p = np.exp(-np.logaddexp(0.0, -z))
            return np.column_stack([1 - p, p])
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    @available_if(_has_proba)
    def predict_log_proba(self, X: Any) -> np.ndarray:
        """The log of `predict_proba`."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))


class DistributedSGDRegressor(RegressorMixin, _DistributedSGD):
    """A linear regressor trained by distributed SGD: loss 'squared_error' (least squares) or 'huber'
    (``epsilon`` sets where it turns linear). The metric per round is the training RMSE.
    """

    __doc__ = (__doc__ or "") + _COMMON_DOC
    _losses = REGRESSOR_LOSSES
    _metric = "rmse"

    def __init__(self, loss: str = "squared_error", *, penalty: str | None = "l2", alpha: float = 1e-4,
                 l1_ratio: float = 0.15, epsilon: float = 0.1, max_iter: int = 1000, tol: float | None = 1e-3,
                 n_iter_no_change: int = 5, strategy: str = "gradient", batch_size: int | str | None = "auto",
                 local_epochs: int = 1, learning_rate: str = "adaptive", eta0: float = 1.0, power_t: float = 0.25,
                 cluster: Any = None, n_workers: int | None = None, data: Any = None, on_worker_failure: str = "raise",
                 worker_timeout: float | None = None, random_state: Any = None, progress: bool = True) -> None:
        self.loss = loss
        self.penalty = penalty
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.epsilon = epsilon
        self.max_iter = max_iter
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.strategy = strategy
        self.batch_size = batch_size
        self.local_epochs = local_epochs
        self.learning_rate = learning_rate
        self.eta0 = eta0
        self.power_t = power_t
        self.cluster = cluster
        self.n_workers = n_workers
        self.data = data
        self.on_worker_failure = on_worker_failure
        self.worker_timeout = worker_timeout
        self.random_state = random_state
        self.progress = progress

    def predict(self, X: Any) -> np.ndarray:
        """The predicted value of each row."""
        return self._decision(X)
