"""What a seed worker file declares: ``ClassificationWorker``, ``RegressionWorker`` or ``SGDWorker``, and the
tasks the masters run on it through ``Manager.call``.

A worker file (``chimera_workers/<name>.py``) builds one of these and calls ``.serve()``; ``chimera.run`` in the
master file starts that file as a process and tells it, through environment variables, which Manager to join::

    worker = chimera.ClassificationWorker(DecisionTreeClassifier(), bootstrap=True)
    if __name__ == "__main__":
        worker.serve()
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import os
import signal
import threading
from typing import Any

import numpy as np

from .shards import CSVFiles, DataError

ROLE_KEY = "chimera.role"  # where a worker keeps its role, in Worker.store
INDEX_KEY = "chimera.index"  # the worker's position in CHIMERA_WORKERS_NODES_NAMES
KINDS = ("classifier", "regressor")
# set by chimera.run for each worker process it starts
ENV_MANAGER = "CHIMERA_LAB_MANAGER"  # host:port of the Manager
ENV_NAME = "CHIMERA_LAB_WORKER_NAME"
ENV_INDEX = "CHIMERA_LAB_WORKER_INDEX"
ENV_TOKEN = "CHIMERA_TOKEN"
# what chimera.run sets for a ParameterServerMaster; a worker file cannot choose these
SGD_RESERVED = ("cluster", "data", "n_workers")


class RoleError(RuntimeError):
    """A worker file declares something a master cannot use, or a role was used the wrong way."""


def sgd_class(kind: str) -> type:
    """``DistributedSGDClassifier`` for "classifier", ``DistributedSGDRegressor`` for "regressor"."""
    check_kind(kind, "kind")
    from . import sgd  # the estimators; imported when a role or master needs them, not with this module

    return sgd.DistributedSGDClassifier if kind == "classifier" else sgd.DistributedSGDRegressor  # type: ignore[no-any-return]


def sgd_parameters(kind: str) -> list[str]:
    """The hyper-parameter names ``DistributedSGD<kind>`` accepts, minus those chimera.run sets itself."""
    params = inspect.signature(sgd_class(kind)).parameters
    return [p for p in params if p not in SGD_RESERVED
            and params[p].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]


def check_kind(kind: Any, what: str) -> None:
    """Raise ValueError unless `kind` is "classifier" or "regressor"."""
    if kind not in KINDS:
        raise ValueError(f"{what} must be 'classifier' or 'regressor', got {kind!r}")


def check_sgd_params(kind: str, params: dict[str, Any], who: str) -> None:
    """Raise TypeError naming any of `params` that ``DistributedSGD<kind>`` does not take."""
    reserved = sorted(set(params) & set(SGD_RESERVED))
    if reserved:
        raise TypeError(f"{who}: {', '.join(reserved)} cannot be given here: chimera.run uses the workers named in "
                        "CHIMERA_WORKERS_NODES_NAMES and their chimera_train_data/<name>/ folders")
    known = sgd_parameters(kind)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise TypeError(f"{who}: unknown SGD parameter{'s' * (len(unknown) > 1)} {', '.join(unknown)}; "
                        f"{sgd_class(kind).__name__} takes {', '.join(known)}")


def check_sgd_values(kind: str, params: dict[str, Any]) -> None:
    """Let ``DistributedSGD<kind>`` refuse bad values (ValueError) now rather than at the first fit."""
    estimator = sgd_class(kind)(**params)
    check = getattr(estimator, "_check_params", None)
    if callable(check):
        check()


class _Role:
    """What every worker role has: a kind, a description, and ``serve()``."""

    kind: str

    def describe(self) -> dict[str, Any]:
        """The role's class, kind and settings, as plain data."""
        raise NotImplementedError

    def serve(self) -> None:
        """Join the Manager ``chimera.run`` started and work until it shuts down (or SIGTERM / Ctrl-C)."""
        from ..worker import Worker, WorkerError

        where, name, token = os.environ.get(ENV_MANAGER), os.environ.get(ENV_NAME), os.environ.get(ENV_TOKEN)
        role = type(self).__name__
        if not where or not name:
            raise SystemExit(f"chimera: this {role} is started by chimera.run(...) in your master file; run the "
                             f"master file (python master.py), not the worker file ({ENV_MANAGER} and {ENV_NAME} "
                             "are not set)")
        host, _, port = where.rpartition(":")
        if not host or not port.isdigit():
            raise SystemExit(f"chimera: {ENV_MANAGER}={where!r} must be host:port; start workers with chimera.run")
        worker = Worker(name, token=token or None)
        worker.store[ROLE_KEY] = self
        worker.store[INDEX_KEY] = int(os.environ.get(ENV_INDEX, "0"))
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: worker.shutdown())
        try:
            worker.connect(host, int(port), timeout=30)
        except (WorkerError, ValueError) as exc:
            raise SystemExit(f"chimera: worker {name!r} could not join the master: {exc}")
        try:
            while worker.connected:
                worker.join(0.2)
        except KeyboardInterrupt:
            worker.shutdown()


class _ModelWorker(_Role):
    """A scikit-learn estimator fitted on this worker's data (bootstrapped if asked); one member of an ensemble."""

    def __init__(self, estimator: Any, bootstrap: bool = True) -> None:
        from sklearn.base import is_classifier, is_regressor

        who = type(self).__name__
        if isinstance(estimator, type):
            raise TypeError(f"{who} takes an estimator object, e.g. {estimator.__name__}(), not the class itself")
        if not callable(getattr(estimator, "fit", None)) or not callable(getattr(estimator, "predict", None)):
            raise TypeError(f"{who} needs an estimator with fit and predict (a scikit-learn estimator), "
                            f"got {type(estimator).__name__}")
        if self.kind == "classifier" and is_regressor(estimator):
            raise TypeError(f"{who} got a regressor ({type(estimator).__name__}); use RegressionWorker for it")
        if self.kind == "regressor" and is_classifier(estimator):
            raise TypeError(f"{who} got a classifier ({type(estimator).__name__}); use ClassificationWorker for it")
        if not isinstance(bootstrap, bool):
            raise TypeError(f"{who}: bootstrap must be True or False, got {bootstrap!r}")
        self.estimator = estimator
        self.bootstrap = bootstrap
        self.model: Any = None  # the fitted copy of `estimator`, after a fit on the worker
        self.columns: list[str] | None = None  # the header of X_train.csv it was fitted on

    def describe(self) -> dict[str, Any]:
        """The role's class, kind, estimator and whether it bootstraps."""
        return {"role": type(self).__name__, "kind": self.kind, "estimator": repr(self.estimator),
                "bootstrap": self.bootstrap, "fitted": self.model is not None}

    def fit(self, w: Any, folder: str, fit_seed: int, index: int) -> dict[str, Any]:
        """Fit a fresh copy of the estimator on the worker's CSV files (a bootstrap sample of them if asked)."""
        X, y = CSVFiles(folder).load(w)
        columns = header(folder)
        X = numeric(X, columns, f"worker {w.name!r}: {folder}/X_train.csv")
        info: dict[str, Any] = {"n_samples": len(X), "bootstrap": self.bootstrap}
        if self.bootstrap:
            # a stream of its own for every worker: the fit's seed and the worker's position, never the same pair
            rng = np.random.default_rng(np.random.SeedSequence([fit_seed, index]))
            rows = rng.integers(0, len(X), size=len(X))
            X, y = X[rows], y[rows]
            info["distinct_samples"] = int(len(np.unique(rows)))
            info["sample"] = hashlib.sha1(rows.tobytes()).hexdigest()[:12]
        model = _fresh(self.estimator)
        if "random_state" in model.get_params() and model.get_params()["random_state"] is None:
            # the model's own randomness (e.g. a tree's tie-breaks) from the same per-worker stream: repeatable
            seq = np.random.SeedSequence([fit_seed, index, 1])
            model.set_params(random_state=int(seq.generate_state(1)[0] % (2**31 - 1)))
        model.fit(X, y)
        self.model, self.columns = model, columns
        info["columns"] = columns
        if self.kind == "classifier":
            info["classes"] = np.asarray(getattr(model, "classes_", np.unique(y)))
            info["has_proba"] = hasattr(model, "predict_proba")
        return info

    def predict(self, X: np.ndarray, proba: bool) -> dict[str, Any]:
        """Labels or values for the rows of X (columns in this worker's training order), or class probabilities."""
        if self.model is None:
            raise RoleError("this worker has not been fitted yet; POST fit to the master first")
        if proba:
            return {"proba": np.asarray(self.model.predict_proba(X)), "classes": np.asarray(self.model.classes_)}
        return {"predictions": np.asarray(self.model.predict(X))}


class ClassificationWorker(_ModelWorker):
    """A classifier fitted on this worker's data (a bootstrap sample by default), voted with the others'."""

    kind = "classifier"


class RegressionWorker(_ModelWorker):
    """A regressor fitted on this worker's data (a bootstrap sample by default), averaged with the others'."""

    kind = "regressor"


class SGDWorker(_Role):
    """A worker that takes part in distributed SGD; its keyword arguments (loss, penalty, alpha, eta0, ...) are the
    default hyper-parameters of ``DistributedSGD<kind>``, which a ParameterServerMaster's own override."""

    def __init__(self, kind: str, **kwargs: Any) -> None:
        check_kind(kind, "SGDWorker's kind")
        check_sgd_params(kind, kwargs, "SGDWorker")
        check_sgd_values(kind, kwargs)
        self.kind = kind
        self.params = dict(kwargs)

    def describe(self) -> dict[str, Any]:
        """The role's class, kind and SGD hyper-parameters."""
        return {"role": "SGDWorker", "kind": self.kind, "params": dict(self.params),
                "estimator": f"{sgd_class(self.kind).__name__}({_kwargs(self.params)})"}


# -------------------------------------------------------------------------------------------------
# helpers, and the tasks masters send (they run on the worker: fn(w, ...) through Manager.call)
# -------------------------------------------------------------------------------------------------
def header(folder: str, features: str = "X_train.csv") -> list[str]:
    """The column names in the header row of ``<folder>/X_train.csv``."""
    import pandas as pd

    return [str(c) for c in pd.read_csv(os.path.join(folder, features), nrows=0).columns]


def numeric(X: Any, columns: list[str], where: str) -> np.ndarray:
    """X as floats; DataError naming the columns that are not numbers."""
    try:
        return np.asarray(X, dtype=np.float64)
    except (ValueError, TypeError):
        arr = np.asarray(X, dtype=object)
        bad = []
        for j, name in enumerate(columns):
            try:
                arr[:, j].astype(np.float64)
            except (ValueError, TypeError):
                bad.append(name)
        raise DataError(f"{where}: column{'s' * (len(bad) > 1)} {', '.join(map(repr, bad))} "
                        "must hold numbers; encode them as numbers first") from None


def _fresh(estimator: Any) -> Any:
    try:
        from sklearn.base import clone

        return clone(estimator)
    except TypeError:  # not a scikit-learn estimator (no get_params): a deep copy starts it afresh too
        return copy.deepcopy(estimator)


def _kwargs(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items())


def role_of(w: Any) -> _Role:
    """The role a worker file declared (runs on the worker)."""
    role = w.store.get(ROLE_KEY)
    if role is None:
        raise RoleError(f"worker {w.name!r} declares no chimera role: start it from a chimera_workers/<name>.py file "
                        "that calls worker.serve()")
    return role  # type: ignore[no-any-return]


def describe_task(w: Any) -> dict[str, Any]:
    """Task: what the worker file declared."""
    return {**role_of(w).describe(), "index": w.store.get(INDEX_KEY, 0), "pid": os.getpid()}


def fit_task(w: Any, folder: str, fit_seed: int, index: int) -> dict[str, Any]:
    """Task: fit this worker's estimator on ``<folder>/X_train.csv`` and ``y_train.csv``."""
    role = role_of(w)
    if not isinstance(role, _ModelWorker):
        raise RoleError(f"worker {w.name!r} is an {type(role).__name__}, which an AggregationMaster cannot fit")
    return role.fit(w, folder, fit_seed, index)


def predict_task(w: Any, X: np.ndarray, proba: bool) -> dict[str, Any]:
    """Task: this worker's predictions (or class probabilities) for the rows of X."""
    role = role_of(w)
    if not isinstance(role, _ModelWorker):
        raise RoleError(f"worker {w.name!r} is an {type(role).__name__}; it holds no model of its own")
    return role.predict(X, proba)


def columns_task(w: Any, folder: str) -> list[str]:
    """Task: the header of the worker's ``<folder>/X_train.csv``."""
    path = os.path.join(folder, "X_train.csv")
    if not os.path.isfile(path):
        raise DataError(f"worker {w.name!r}: no training file {os.path.abspath(path)} (put the worker's data there)")
    return header(folder)
