"""The seed's masters: ``AggregationMaster`` (an ensemble of the workers' own models: bagging) and
``ParameterServerMaster`` (one linear model trained by distributed SGD on every worker's data).

``chimera.run(master, port)`` serves one of them over REST; each has ``fit(manager, workers, config)`` and
``predict(manager, workers, columns, rows, config)``, which the REST routes call (and which work from Python too).
"""

from __future__ import annotations

import logging
import math
import secrets
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..manager import Manager, ManagerError, TaskError
from . import aggregate
from .cluster import connected_workers
from .config import ChimeraConfig
from .roles import (
    check_kind,
    check_sgd_params,
    check_sgd_values,
    columns_task,
    describe_task,
    fit_task,
    predict_task,
    sgd_class,
    sgd_parameters,
)
from .shards import CSVFiles, DataError

status_log = logging.getLogger("chimera_status")
time_log = logging.getLogger("chimera_time")


class MasterError(RuntimeError):
    """A master could not do what was asked; ``status`` is the HTTP status the REST API answers with."""

    status = 500


class NotFittedError(MasterError):
    """predict before any successful fit."""

    status = 409


class SetupError(MasterError):
    """The worker files or their data do not fit together (roles of different kinds, different columns...)."""

    status = 409


class RequestError(MasterError):
    """The rows to predict are malformed or their columns are not the training columns."""

    status = 422


class WorkersFailedError(MasterError):
    """Every worker failed (each one's error is in the message)."""

    status = 502


# -------------------------------------------------------------------------------------------------
# shared by both masters
# -------------------------------------------------------------------------------------------------
def call_workers(manager: Manager, names: Sequence[str], fn: Callable[..., Any],
                 args_of: Callable[[str], tuple[Any, ...]], config: ChimeraConfig, task: str,
                 endpoint: str = "") -> tuple[dict[str, Any], dict[str, str]]:
    """Run ``fn(w, *args_of(name))`` on every worker at once, with config's timeout and retries: (results, errors)."""
    # each call is bounded by config.timeout (CHIMERA_WORKERS_ENDPOINTS_TIMEOUT) and tried 1 + config.max_retries
    # times (CHIMERA_WORKERS_ENDPOINTS_MAX_RETRIES); both dicts are keyed by worker name

    def one(name: str) -> tuple[Any, str | None]:
        error = ""
        attempts = 1 + config.max_retries
        for attempt in range(1, attempts + 1):
            t0 = time.perf_counter()
            try:
                result = manager.call(name, fn, *args_of(name)).result(config.timeout)
                time_log.info("%s worker %s %s latency = %.4f s", endpoint, name, task, time.perf_counter() - t0)
                return result, None
            except FutureTimeout:
                error = (f"no answer within {config.timeout:g} s (CHIMERA_WORKERS_ENDPOINTS_TIMEOUT); a call that "
                         "timed out keeps the worker busy until it ends")
            except (TaskError, ManagerError) as exc:
                error = str(exc).removeprefix(f"worker {name!r}: ")
            time_log.info("%s worker %s %s failed after %.4f s", endpoint, name, task, time.perf_counter() - t0)
            status_log.warning("%s worker %s %s: attempt %d of %d failed: %s", endpoint, name, task, attempt,
                               attempts, error)
        return None, error

    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=max(1, len(names)), thread_name_prefix="chimera-call") as pool:
        for name, (result, error) in zip(names, pool.map(one, names), strict=True):
            if error is None:
                results[name] = result
            else:
                errors[name] = error
    return results, errors


def _finite(value: int | float) -> bool:
    """Whether `value` is a finite float, or an int a float holds (a bigger one overflows)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def to_matrix(columns: Any, rows: Any, training: Sequence[str]) -> np.ndarray:
    """The rows to predict as floats, columns in the training order; RequestError saying what is wrong."""
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise RequestError("X_pred_columns must be a list of column names (strings), as in the header of "
                           f"X_train.csv: {list(training)}")
    dupes = sorted({c for c in columns if columns.count(c) > 1})
    if dupes:
        raise RequestError(f"X_pred_columns names {', '.join(map(repr, dupes))} more than once")
    missing = [c for c in training if c not in columns]
    unexpected = [c for c in columns if c not in training]
    if missing or unexpected:
        what = "; ".join(part for part in (
            f"missing {', '.join(map(repr, missing))}" if missing else "",
            f"unknown {', '.join(map(repr, unexpected))}" if unexpected else "") if part)
        raise RequestError(f"X_pred_columns does not match the training columns ({what}); the model was trained "
                           f"on {list(training)} (any order is fine)")
    if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        raise RequestError("X_pred_rows must be a list of rows, each a list of numbers, e.g. [[5.1, 3.5], [6.2, 2.9]]")
    width = len(columns)
    for i, row in enumerate(rows):
        if len(row) != width:
            raise RequestError(f"X_pred_rows[{i}] has {len(row)} values but X_pred_columns names {width} columns; "
                               "give one value per column")
        for j, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not _finite(v):
                raise RequestError(f"X_pred_rows[{i}][{j}] (column {columns[j]!r}) is {v!r}; every value must be a "
                                   "finite number")
    X = np.asarray(rows, dtype=np.float64).reshape(len(rows), width)
    return X[:, [columns.index(c) for c in training]]


def _roles(manager: Manager, workers: Sequence[str], config: ChimeraConfig,
           endpoint: str) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    roles, failed = call_workers(manager, workers, describe_task, lambda n: (), config, "describe", endpoint)
    if not roles:
        raise WorkersFailedError(f"no worker answered: {_listing(failed)}")
    return roles, failed


def _listing(errors: dict[str, str]) -> str:
    return "; ".join(f"{n}: {e}" for n, e in errors.items())


def _by_role(roles: dict[str, dict[str, Any]]) -> str:
    return "the workers are " + ", ".join(
        f"{n}: {r['role']}" + (f"({r['kind']!r})" if r["role"] == "SGDWorker" else "") for n, r in roles.items())


def _kwargs(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items())


def _plain(value: Any) -> Any:
    """JSON-ready: numpy arrays and scalars become lists and Python numbers."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# -------------------------------------------------------------------------------------------------
# AggregationMaster
# -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Member:
    columns: list[str]  # the worker's X_train.csv header, in its order
    classes: np.ndarray | None


@dataclass(frozen=True)
class _Ensemble:
    kind: str
    columns: list[str]
    members: dict[str, _Member]
    classes: np.ndarray | None  # every class any member saw, sorted
    vote: str  # "soft", "hard" or "mean"


def combine(kind: str, vote: str, outputs: dict[str, dict[str, Any]], classes: np.ndarray | None) -> np.ndarray:
    """One prediction per row from the members' outputs: soft or majority vote for labels, mean for values."""
    if kind == "regressor":
        return aggregate.mean([o["predictions"] for o in outputs.values()])
    assert classes is not None
    if vote == "soft":
        probas = [aggregate.align_proba(np.asarray(o["proba"]), np.asarray(o["classes"]), classes)
                  for o in outputs.values()]
        return classes[np.argmax(aggregate.soft_vote(probas), axis=1)]
    return aggregate.hard_vote([np.asarray(o["predictions"]) for o in outputs.values()], classes)


class AggregationMaster:
    """Bagging across workers: each ClassificationWorker / RegressionWorker fits its own model on its own data
    (a bootstrap sample of it, drawn with a seed of its own); predictions are a soft vote when every classifier
    has predict_proba, else a majority vote, and the mean for regressors. Workers that fail are left out.

    ``random_state`` fixes the fits' bootstrap seeds (default: new ones at every fit).
    """

    route = "aggregation"

    def __init__(self, random_state: int | None = None) -> None:
        if random_state is not None and (isinstance(random_state, bool) or not isinstance(random_state, int)
                                         or random_state < 0):
            raise ValueError(f"AggregationMaster: random_state must be an int >= 0 or None, got {random_state!r}")
        self.random_state = random_state
        self._fitted: _Ensemble | None = None

    def __repr__(self) -> str:
        state = f"fitted on {', '.join(self._fitted.members)}" if self._fitted else "not fitted"
        return f"<AggregationMaster {state}>"

    @property
    def fitted(self) -> bool:
        """Whether a fit succeeded (predict works)."""
        return self._fitted is not None

    @property
    def columns(self) -> list[str] | None:
        """The training columns (the header of X_train.csv), once fitted."""
        return list(self._fitted.columns) if self._fitted else None

    def check(self, manager: Manager, workers: Sequence[str], config: ChimeraConfig,
              endpoint: str = "startup") -> dict[str, dict[str, Any]]:
        """The roles of the workers that answer; SetupError if they cannot form one ensemble."""
        roles, failed = _roles(manager, workers, config, endpoint)
        for name, error in failed.items():
            status_log.error("%s AggregationMaster: worker %s did not say what it is: %s", endpoint, name, error)
        sgd = sorted(n for n, r in roles.items() if r["role"] == "SGDWorker")
        if sgd:
            raise SetupError(f"AggregationMaster needs ClassificationWorker or RegressionWorker files but "
                             f"{_by_role(roles)}; use ParameterServerMaster for SGDWorkers, or change "
                             + ", ".join(f"chimera_workers/{n}.py" for n in sgd))
        if len({r["kind"] for r in roles.values()}) > 1:
            raise SetupError(f"AggregationMaster needs workers of one kind, all ClassificationWorker or all "
                             f"RegressionWorker, but {_by_role(roles)}; change the worker files so they agree")
        return roles

    def fit(self, manager: Manager, workers: Sequence[str], config: ChimeraConfig,
            endpoint: str = "fit") -> dict[str, Any]:
        """Fit every worker's model at once; the result names the workers that contributed and those that failed."""
        roles = self.check(manager, workers, config, endpoint)
        failed = {n: "did not answer" for n in workers if n not in roles}
        kind = next(iter(roles.values()))["kind"]
        seed = self.random_state if self.random_state is not None else secrets.randbits(32)
        index = {n: i for i, n in enumerate(config.workers)}
        fits, errors = call_workers(manager, list(roles), fit_task,
                                    lambda n: (config.data_folder(n), seed, index.get(n, 0)), config, "fit", endpoint)
        failed.update(errors)
        for name, error in errors.items():
            status_log.error("%s AggregationMaster: worker %s left out: %s", endpoint, name, error)
        if not fits:
            raise WorkersFailedError(f"every worker failed to fit: {_listing(failed)}")
        gone = " (the workers were refitted, so the previous model is gone: fix the data and POST fit again)"
        columns = next(iter(fits.values()))["columns"]
        if any(set(f["columns"]) != set(columns) for f in fits.values()):
            self._fitted = None
            raise SetupError("the workers' X_train.csv files have different columns: "
                             + "; ".join(f"{n}: {f['columns']}" for n, f in fits.items())
                             + "; give every worker the same columns" + gone)
        classes = None
        vote = "mean"
        if kind == "classifier":
            try:
                classes = np.unique(np.concatenate([np.asarray(f["classes"]) for f in fits.values()]))
            except TypeError:
                self._fitted = None
                raise SetupError("the workers' y_train.csv labels are of different types (numbers on some, text on "
                                 "others): " + "; ".join(f"{n}: {f['classes'].tolist()}" for n, f in fits.items())
                                 + gone)
            vote = "soft" if all(f["has_proba"] for f in fits.values()) else "hard"
        members = {n: _Member(f["columns"], f.get("classes")) for n, f in sorted(fits.items())}
        self._fitted = _Ensemble(kind, columns, members, classes, vote)
        for name in members:
            status_log.info("%s AggregationMaster: worker %s fitted (%s)", endpoint, name, roles[name]["estimator"])
        return {"message": "ok", "master": "AggregationMaster", "kind": kind, "vote": vote,
                "contributors": sorted(fits), "failed": failed, "seed": seed, "columns": columns,
                "classes": _plain(classes) if classes is not None else None,
                "workers": {n: _plain({k: v for k, v in f.items() if k not in ("columns", "classes")}
                                      | {"estimator": roles[n]["estimator"]}) for n, f in sorted(fits.items())}}

    def predict(self, manager: Manager, workers: Sequence[str], columns: Any, rows: Any, config: ChimeraConfig,
                endpoint: str = "predict") -> list[Any]:
        """The ensemble's prediction for each row (labels for classifiers, numbers for regressors)."""
        state = self._fitted
        if state is None:
            raise NotFittedError(f"the AggregationMaster has no model yet: POST /v1/chimera/{self.route}/fit first")
        X = to_matrix(columns, rows, state.columns)
        if len(X) == 0:
            return []
        order = {n: [state.columns.index(c) for c in m.columns] for n, m in state.members.items()}
        proba = state.vote == "soft"
        outputs, errors = call_workers(manager, list(state.members), predict_task,
                                       lambda n: (X[:, order[n]], proba), config, "predict", endpoint)
        for name, error in errors.items():
            status_log.error("%s AggregationMaster: worker %s left out of this prediction: %s", endpoint, name, error)
        if not outputs:
            raise WorkersFailedError(f"every worker failed to predict: {_listing(errors)}")
        return combine(state.kind, state.vote, outputs, state.classes).tolist()  # type: ignore[no-any-return]


# -------------------------------------------------------------------------------------------------
# ParameterServerMaster
# -------------------------------------------------------------------------------------------------
def merge_sgd_params(roles: dict[str, dict[str, Any]], master_params: dict[str, Any]) -> dict[str, Any]:
    """The SGDWorkers' hyper-parameters (which must agree) overridden by the master's; SetupError on a conflict."""
    merged: dict[str, Any] = {}
    keys = sorted({k for r in roles.values() for k in r["params"]} - set(master_params))
    for key in keys:
        values = {n: r["params"].get(key, "(default)") for n, r in roles.items()}
        distinct = list({repr(v): v for v in values.values()}.values())
        if len(distinct) > 1:
            raise SetupError(f"the SGDWorkers disagree on {key}: "
                             + ", ".join(f"{v!r} on {n}" for n, v in values.items())
                             + f"; set the same {key} in every chimera_workers/<name>.py, or pass {key}=... to "
                             "ParameterServerMaster to override them")
        merged[key] = distinct[0]
    return {**merged, **master_params}


class ParameterServerMaster:
    """One model trained by distributed SGD (``DistributedSGDClassifier`` / ``DistributedSGDRegressor``) on the
    data of every SGDWorker; it lives here, so predict needs no worker.

    ``kind``: "classifier" or "regressor"; keyword arguments are the estimator's (max_iter, tol, strategy, alpha,
    ...) and override the SGDWorkers' own. Unless given, workers that fail are left out
    (``on_worker_failure="continue"``, as the seed did) and no progress bar is shown.
    """

    route = "parameter-server"

    def __init__(self, kind: str, **sgd_params: Any) -> None:
        check_kind(kind, "ParameterServerMaster's kind")
        check_sgd_params(kind, sgd_params, "ParameterServerMaster")
        check_sgd_values(kind, sgd_params)
        self.kind = kind
        self.params = dict(sgd_params)
        self.model: Any = None  # the fitted DistributedSGD estimator
        self._columns: list[str] | None = None

    def __repr__(self) -> str:
        return f"<ParameterServerMaster {self.kind!r} {'fitted' if self.model is not None else 'not fitted'}>"

    @property
    def fitted(self) -> bool:
        """Whether a fit succeeded (predict works)."""
        return self.model is not None

    @property
    def columns(self) -> list[str] | None:
        """The training columns (the header of X_train.csv), once fitted."""
        return list(self._columns) if self._columns is not None else None

    def check(self, manager: Manager, workers: Sequence[str], config: ChimeraConfig,
              endpoint: str = "startup") -> dict[str, dict[str, Any]]:
        """The roles of the workers that answer; SetupError unless they are all SGDWorkers of this master's kind."""
        roles, failed = _roles(manager, workers, config, endpoint)
        for name, error in failed.items():
            status_log.error("%s ParameterServerMaster: worker %s did not say what it is: %s", endpoint, name, error)
        wrong = sorted(n for n, r in roles.items() if r["role"] != "SGDWorker" or r["kind"] != self.kind)
        if wrong:
            raise SetupError(f"ParameterServerMaster({self.kind!r}) needs SGDWorker({self.kind!r}) files but "
                             f"{_by_role(roles)}; change " + ", ".join(f"chimera_workers/{n}.py" for n in wrong)
                             + (", or use AggregationMaster for ClassificationWorker / RegressionWorker files"
                                if any(roles[n]["role"] != "SGDWorker" for n in wrong) else ""))
        return roles

    def fit(self, manager: Manager, workers: Sequence[str], config: ChimeraConfig,
            endpoint: str = "fit") -> dict[str, Any]:
        """Train the model by distributed SGD on every worker's CSV files; the result names who contributed."""
        roles = self.check(manager, workers, config, endpoint)
        failed = {n: "did not answer" for n in workers if n not in roles}
        defaults: dict[str, Any] = {}
        accepted = sgd_parameters(self.kind)
        if "on_worker_failure" in accepted:
            defaults["on_worker_failure"] = "continue"
        if "progress" in accepted:
            defaults["progress"] = False
        if "worker_timeout" in accepted:
            defaults["worker_timeout"] = config.timeout
        params = {**defaults, **merge_sgd_params(roles, self.params)}
        headers, errors = call_workers(manager, list(roles), columns_task, lambda n: (config.data_folder(n),), config,
                                       "columns", endpoint)
        failed.update(errors)
        live = set(connected_workers(manager))
        for name in [n for n in headers if n not in live]:
            failed[name] = "not connected"
            del headers[name]
        if not headers:
            raise WorkersFailedError(f"no worker can train: {_listing(failed)}")
        columns = next(iter(headers.values()))
        if any(h != columns for h in headers.values()):
            raise SetupError("the workers' X_train.csv files must have the same columns in the same order (SGD reads "
                             "them as arrays): " + "; ".join(f"{n}: {h}" for n, h in headers.items()))
        data = {n: CSVFiles(config.data_folder(n)) for n in sorted(headers)}
        try:
            model = sgd_class(self.kind)(**params, cluster=manager, data=data)
        except (TypeError, ValueError) as exc:
            raise SetupError(f"{sgd_class(self.kind).__name__} refused the parameters {params}: {exc}")
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:  # fits are one at a time (the REST API sees to it)
            warnings.simplefilter("always")
            try:
                model.fit()
            except DataError as exc:  # a worker's data: a worker's failure
                raise WorkersFailedError(f"distributed SGD failed: {exc}")
            except (TypeError, ValueError, ArithmeticError) as exc:  # the parameters (or a diverging loss)
                raise SetupError(f"{type(model).__name__} could not fit with {_kwargs(params)}: {exc}")
            except (TaskError, ManagerError, RuntimeError) as exc:  # WorkerFailure, ClusterError, lost workers
                raise WorkersFailedError(f"distributed SGD failed: {exc}")
        seconds = time.perf_counter() - t0
        notes = [f"{w.category.__name__}: {w.message}" for w in caught]
        for note in notes:
            status_log.warning("%s ParameterServerMaster: %s", endpoint, note)
        contributors = sorted(getattr(model, "contributors_", None) or data)
        for name, why in (getattr(model, "failed_workers_", None) or {}).items():
            failed[name] = why.strip().splitlines()[-1] if why.strip() else "failed"
        for name in data:
            if name not in contributors and name not in failed:
                failed[name] = "left out of distributed SGD (see chimera_status.log)"
        history = getattr(model, "history_", None)
        self.model, self._columns = model, list(columns)
        status_log.info("%s ParameterServerMaster: %s trained on %s in %.3f s", endpoint, type(model).__name__,
                        ", ".join(contributors), seconds)
        return {"message": "ok", "master": "ParameterServerMaster", "kind": self.kind,
                "estimator": f"{type(model).__name__}({_kwargs(params)})",
                "contributors": contributors, "failed": failed, "columns": list(columns),
                "n_iter": _plain(getattr(model, "n_iter_", None)),
                "rounds": len(history) if history is not None else None, "seconds": round(seconds, 4),
                "warnings": notes}

    def predict(self, manager: Manager, workers: Sequence[str], columns: Any, rows: Any, config: ChimeraConfig,
                endpoint: str = "predict") -> list[Any]:
        """The trained model's prediction for each row (labels for a classifier, numbers for a regressor)."""
        model, training = self.model, self._columns
        if model is None or training is None:
            raise NotFittedError(f"the ParameterServerMaster has no model yet: POST /v1/chimera/{self.route}/fit "
                                 "first")
        X = to_matrix(columns, rows, training)
        if len(X) == 0:
            return []
        return np.asarray(model.predict(X)).tolist()  # type: ignore[no-any-return]
