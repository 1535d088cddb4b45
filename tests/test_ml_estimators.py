"""The distributed estimators against scikit-learn on real datasets, fitted on real `cp-worker` processes.

Tolerances (accuracy and R² on a held-out 30 % split, features scaled on the training part): SGD classifiers
within 0.03 of LogisticRegression, SGD regressors within 0.02 of LinearRegression, bagging within 0.04 of
scikit-learn's BaggingClassifier with the same number of members.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import Cluster, pid_alive
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, make_classification
from sklearn.ensemble import BaggingClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression, Perceptron
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

import chimera_lab as cp
import chimera_lab.ml as chimera
from chimera_lab.manager import Manager, managers
from chimera_lab.ml import bagging as bagging_module
from chimera_lab.ml import sgd as sgd_module
from chimera_lab.ml.cluster import connected_workers
from chimera_lab.ml.monitor import FitMonitor

Split = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def held_out(X: np.ndarray, y: np.ndarray, stratify: bool = True) -> Split:
    """(X_train, X_test, y_train, y_test), features scaled on the training part."""
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y if stratify else None)
    scaler = StandardScaler().fit(Xtr)
    return scaler.transform(Xtr), scaler.transform(Xte), ytr, yte


def iris(names: bool = False) -> Split:
    data = load_iris()
    y = data.target_names[data.target] if names else data.target
    return held_out(data.data, y)


def breast_cancer() -> Split:
    return held_out(*load_breast_cancer(return_X_y=True))


def diabetes() -> Split:
    return held_out(*load_diabetes(return_X_y=True), stratify=False)


def worker_children() -> dict[int, str]:
    """The chimera worker processes this test process started (PID -> command line)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and "chimera_lab.worker" in cmd:
            found[int(entry)] = cmd
    return found


def killing_monitor(monkeypatch: pytest.MonkeyPatch, module: Any, proc: subprocess.Popen[str],
                    after: int) -> dict[str, float]:
    """Make fits of `module` SIGKILL `proc` (a cp-worker this test started, by its PID) as soon as `after` rounds
    (SGD) or members (bagging) are recorded, from inside the fit; returns {"at": the time of the kill}."""
    killed: dict[str, float] = {}

    class KillingMonitor(FitMonitor):
        def round(self, **row: Any) -> None:
            super().round(**row)
            if len(self.rows) >= after and not killed:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                killed["at"] = time.monotonic()

    monkeypatch.setattr(module, "FitMonitor", KillingMonitor)
    return killed


# ---------------------------------------------------------------------------------------------------------------
# no cluster given: a LocalCluster for the fit (first in this module, before the module's cluster exists)
# ---------------------------------------------------------------------------------------------------------------
def test_without_a_cluster_a_local_cluster_runs_the_fit_and_is_stopped(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # where the local workers keep their files
    assert not [m for m in managers() if connected_workers(m)], "a Manager with workers is left from another test"
    before, children_before = {id(m) for m in managers()}, worker_children()
    during: dict[str, Any] = {}

    class Watching(FitMonitor):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            during["managers"] = [m for m in managers() if id(m) not in before]
            during["children"] = {pid: cmd for pid, cmd in worker_children().items() if pid not in children_before}

    monkeypatch.setattr(sgd_module, "FitMonitor", Watching)
    Xtr, Xte, ytr, yte = iris()
    est = chimera.DistributedSGDClassifier(n_workers=3, progress=False, random_state=0).fit(Xtr, ytr)

    assert est.contributors_ == ["ml-0", "ml-1", "ml-2"]
    assert est.score(Xte, yte) >= 0.9
    assert len(during["managers"]) == 1
    assert sorted(cmd.split("--name ")[1].split()[0] for cmd in during["children"].values()) == est.contributors_
    assert {id(m) for m in managers()} == before  # its Manager is shut down
    assert not [pid for pid in during["children"] if pid_alive(pid)]  # and its worker processes are gone
    assert worker_children() == children_before


# ---------------------------------------------------------------------------------------------------------------
# a Manager with two cp-worker processes, shared by the tests that do not kill workers
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("ml-cluster"))
    try:
        c.cli_worker("a")
        c.cli_worker("b")
        yield c
    finally:
        c.close()


@pytest.fixture
def manager(workers: Cluster) -> Manager:
    return workers.manager


def sgd(kind: str = "classifier", **params: Any) -> Any:
    cls = chimera.DistributedSGDClassifier if kind == "classifier" else chimera.DistributedSGDRegressor
    return cls(**{"progress": False, "random_state": 0, **params})


# -- SGD against scikit-learn -----------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["gradient", "fedavg"])
def test_multiclass_log_loss_matches_logistic_regression_on_iris(manager: Manager, strategy: str) -> None:
    Xtr, Xte, ytr, yte = iris()
    baseline = LogisticRegression().fit(Xtr, ytr).score(Xte, yte)
    est = sgd(strategy=strategy, cluster=manager).fit(Xtr, ytr)
    assert est.score(Xte, yte) >= baseline - 0.03
    assert est.coef_.shape == (3, 4) and est.intercept_.shape == (3,)
    proba = est.predict_proba(Xte)
    assert proba.shape == (len(Xte), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(est.classes_[proba.argmax(axis=1)], est.predict(Xte))
    np.testing.assert_allclose(np.exp(est.predict_log_proba(Xte)), proba)


def test_string_labels_come_back_as_labels(manager: Manager) -> None:
    Xtr, Xte, ytr, yte = iris(names=True)
    est = sgd(cluster=manager).fit(Xtr, ytr)
    assert est.classes_.tolist() == ["setosa", "versicolor", "virginica"]
    pred = est.predict(Xte)
    assert set(pred.tolist()) <= set(est.classes_.tolist())
    assert np.mean(pred == yte) >= 0.9


def test_hinge_has_no_predict_proba_and_still_classifies_iris(manager: Manager) -> None:
    Xtr, Xte, ytr, yte = iris()
    est = sgd(loss="hinge", cluster=manager).fit(Xtr, ytr)
    assert not hasattr(est, "predict_proba")
    with pytest.raises(AttributeError, match="predict_proba"):
        est.predict_proba(Xte)
    assert est.score(Xte, yte) >= 0.9
    assert est.decision_function(Xte).shape == (len(Xte), 3)


@pytest.mark.parametrize("strategy", ["gradient", "fedavg"])
def test_binary_log_loss_matches_logistic_regression_on_breast_cancer(manager: Manager, strategy: str) -> None:
    Xtr, Xte, ytr, yte = breast_cancer()
    baseline = LogisticRegression().fit(Xtr, ytr).score(Xte, yte)
    est = sgd(strategy=strategy, cluster=manager).fit(Xtr, ytr)
    assert est.score(Xte, yte) >= baseline - 0.03
    assert est.coef_.shape == (1, Xtr.shape[1]) and est.decision_function(Xte).shape == (len(Xte),)
    np.testing.assert_array_equal(est.predict(Xte), est.classes_[(est.decision_function(Xte) > 0).astype(int)])


@pytest.mark.parametrize("strategy", ["gradient", "fedavg"])
def test_regression_matches_linear_regression_on_diabetes(manager: Manager, strategy: str) -> None:
    Xtr, Xte, ytr, yte = diabetes()
    baseline = LinearRegression().fit(Xtr, ytr).score(Xte, yte)
    est = sgd("regressor", strategy=strategy, cluster=manager).fit(Xtr, ytr)
    assert est.score(Xte, yte) >= baseline - 0.02
    assert est.predict(Xte).shape == (len(Xte),)
    assert not hasattr(est, "decision_function")  # a regressor predicts values, not scores
    assert "rmse" in est.history_


def test_fedavg_with_batch_size_none_takes_local_steps_over_the_whole_shard(manager: Manager) -> None:
    # batch_size=None means each worker's whole shard: one full-batch local step per local epoch
    Xtr, Xte, ytr, yte = breast_cancer()
    est = sgd(strategy="fedavg", batch_size=None, cluster=manager).fit(Xtr, ytr)
    assert est.score(Xte, yte) >= LogisticRegression().fit(Xtr, ytr).score(Xte, yte) - 0.05
    assert len(est.history_) == est.n_iter_  # one round per epoch


def test_the_rounds_reach_a_worker_that_joined_on_another_address_of_the_manager(tmp_path: Path) -> None:
    # like a container on a Docker bridge, which reaches the Manager at the bridge's gateway, not at 127.0.0.1
    c = Cluster(tmp_path)
    try:
        c.manager.listen("127.0.0.2")
        near = c.worker("near")
        far = cp.Worker("far", data_dir=tmp_path / "data-far")
        far.connect("127.0.0.2", c.manager.port, token=c.manager.token)
        c.workers.append(far)
        assert (near.host, far.host) == ("127.0.0.1", "127.0.0.2")
        Xtr, Xte, ytr, yte = breast_cancer()
        est = sgd(cluster=c.manager, worker_timeout=20).fit(Xtr, ytr)
        assert est.contributors_ == ["far", "near"] and est.failed_workers_ == {}
        assert est.score(Xte, yte) >= 0.9
    finally:
        c.close()


def test_a_worker_that_cannot_reach_the_rounds_is_named_with_the_address(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # as if a firewall stood between: the channel listens only where the Manager first did
    from chimera_lab.ml import rounds

    everywhere = rounds._bind_everywhere
    monkeypatch.setattr(rounds, "_bind_everywhere", lambda sock, hosts: everywhere(sock, hosts[:1]))
    c = Cluster(tmp_path)
    try:
        c.manager.listen("127.0.0.2")
        far = cp.Worker("far", data_dir=tmp_path / "data-far")
        far.connect("127.0.0.2", c.manager.port, token=c.manager.token)
        c.workers.append(far)
        X, y = breast_cancer()[::2]
        t0 = time.monotonic()
        with pytest.raises(chimera.WorkerFailure, match=r"far: its side of the parameter channel did not reach "
                                                        r"tcp://127\.0\.0\.1:\d+ \(is"):
            sgd(cluster=c.manager, worker_timeout=2).fit(X, y)
        assert time.monotonic() - t0 < 10
    finally:
        c.close()


def test_mini_batches_do_not_trip_the_divergence_guard(manager: Manager) -> None:
    # one mini-batch can cost twice another at the same parameters; that is noise, not a diverging fit
    Xtr, Xte, ytr, yte = iris()
    est = sgd(batch_size=8, cluster=manager).fit(Xtr, ytr)
    assert est.score(Xte, yte) >= LogisticRegression().fit(Xtr, ytr).score(Xte, yte) - 0.03
    assert len(est.history_) > est.n_iter_  # several rounds (batches) per epoch


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_a_too_large_learning_rate_is_undone_by_adaptive(manager: Manager) -> None:
    Xtr, Xte, ytr, yte = diabetes()
    est = sgd("regressor", eta0=50.0, cluster=manager).fit(Xtr, ytr)
    assert est.history_["learning_rate"].iloc[-1] < 50.0
    assert est.score(Xte, yte) >= LinearRegression().fit(Xtr, ytr).score(Xte, yte) - 0.02


def l1_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 20))  # the label depends on columns 0-2 only; 3-19 are noise
    return X, (X[:, 0] + X[:, 1] - X[:, 2] + 0.5 * rng.standard_normal(600) > 0).astype(int)


def test_l1_makes_exact_zeros_for_irrelevant_features_and_l2_does_not(manager: Manager) -> None:
    X, y = l1_data()
    l1 = sgd(penalty="l1", alpha=0.02, cluster=manager).fit(X, y)
    l2 = sgd(penalty="l2", alpha=0.02, cluster=manager).fit(X, y)
    assert np.all(l1.coef_[0, :3] != 0)
    assert np.count_nonzero(l1.coef_[0, 3:] == 0) >= 12
    assert np.count_nonzero(l2.coef_ == 0) == 0
    assert l1.score(X, y) >= l2.score(X, y) - 0.03


def test_l1_with_fedavg_shrinks_irrelevant_features_far_more_than_l2(manager: Manager) -> None:
    # averaged models keep tiny weights where one worker's last local step left one (no exact zeros here)
    X, y = l1_data()
    l1 = sgd(penalty="l1", alpha=0.02, strategy="fedavg", cluster=manager).fit(X, y)
    l2 = sgd(penalty="l2", alpha=0.02, strategy="fedavg", cluster=manager).fit(X, y)
    assert np.abs(l1.coef_[0, 3:]).sum() < 0.25 * np.abs(l2.coef_[0, 3:]).sum()
    assert np.all(np.abs(l1.coef_[0, :3]) > 1)
    assert l1.score(X, y) >= l2.score(X, y) - 0.03


@pytest.mark.parametrize("strategy", ["gradient", "fedavg"])
def test_the_same_random_state_gives_the_same_model(manager: Manager, strategy: str) -> None:
    Xtr, _, ytr, _ = iris()
    a = sgd(strategy=strategy, batch_size=16, random_state=7, cluster=manager).fit(Xtr, ytr)
    b = sgd(strategy=strategy, batch_size=16, random_state=7, cluster=manager).fit(Xtr, ytr)
    c = sgd(strategy=strategy, batch_size=16, random_state=8, cluster=manager).fit(Xtr, ytr)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    np.testing.assert_array_equal(a.intercept_, b.intercept_)
    assert not np.array_equal(a.coef_, c.coef_)  # other shuffles, another model


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # max_iter=3 on purpose
def test_history_has_one_row_per_round_with_timings(manager: Manager) -> None:
    Xtr, _, ytr, _ = iris()
    est = sgd(cluster=manager).fit(Xtr, ytr)
    h = est.history_
    assert len(h) == est.n_iter_  # full-batch gradient averaging: one round per epoch
    assert h.index.tolist() == list(range(1, len(h) + 1))
    assert {"loss", "accuracy", "learning_rate", "compute_s", "comm_s", "workers"} <= set(h.columns)
    assert h["loss"].iloc[-1] < 0.5 * h["loss"].iloc[0]
    assert h["loss"].iloc[-5:].mean() < h["loss"].iloc[:5].mean()
    assert (h["compute_s"] > 0).all() and (h["comm_s"] > 0).all()
    assert (h["workers"] == 2).all()
    assert est.contributors_ == ["a", "b"]
    assert est.failed_workers_ == {}

    batched = sgd(batch_size=16, cluster=manager, max_iter=3, tol=None).fit(Xtr, ytr)
    assert len(batched.history_) == 3 * int(np.ceil(np.ceil(len(Xtr) / 2) / 16))  # rounds = epochs x batches


def test_plot_history_draws_loss_and_timings(manager: Manager) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    Xtr, _, ytr, _ = iris()
    est = sgd(cluster=manager).fit(Xtr, ytr)
    axes = est.plot_history()
    try:
        assert len(axes) == 2
        left, right = axes
        assert left.get_ylabel() == "loss" and len(left.lines[0].get_xdata()) == len(est.history_)
        assert right.get_ylabel() == "ms per round" and len(right.patches) == 2 * len(est.history_)
    finally:
        plt.close("all")


def test_progress_bar_shows_the_fit_and_why_it_stopped(manager: Manager, capsys: pytest.CaptureFixture[str]) -> None:
    Xtr, _, ytr, _ = iris()
    est = sgd(cluster=manager, progress=True).fit(Xtr, ytr)
    err = capsys.readouterr().err
    assert "DistributedSGDClassifier" in err
    assert f"converged after {est.n_iter_} epochs" in err


# -- data= shards -----------------------------------------------------------------------------------------------
def write_csv(folder: Path, X: np.ndarray, y: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])]).to_csv(folder / "X_train.csv", index=False)
    pd.DataFrame({"label": y}).to_csv(folder / "y_train.csv", index=False)
    return folder.resolve()  # the workers run elsewhere: absolute paths


def test_csv_shards_read_on_the_workers_give_the_same_model(manager: Manager, tmp_path: Path) -> None:
    Xtr, Xte, ytr, yte = breast_cancer()
    half = len(Xtr) // 2
    shards = {"a": (Xtr[:half], ytr[:half]), "b": (Xtr[half:], ytr[half:])}
    files = {w: chimera.CSVFiles(str(write_csv(tmp_path / w, X, y))) for w, (X, y) in shards.items()}
    from_files = sgd(data=files, cluster=manager).fit()
    from_arrays = sgd(data=shards, cluster=manager).fit()
    assert from_files.n_features_in_ == Xtr.shape[1]
    assert from_files.classes_.tolist() == [0, 1]
    assert from_files.score(Xte, yte) == pytest.approx(from_arrays.score(Xte, yte), abs=0.02)
    np.testing.assert_allclose(from_files.coef_, from_arrays.coef_, rtol=1e-3, atol=1e-6)
    assert from_files.score(Xte, yte) >= LogisticRegression().fit(Xtr, ytr).score(Xte, yte) - 0.03
    assert from_files.contributors_ == ["a", "b"]


def test_a_missing_csv_file_is_a_data_error_naming_it(manager: Manager, tmp_path: Path) -> None:
    X, y = np.ones((4, 2)), np.array([0, 1, 0, 1])
    good = chimera.CSVFiles(str(write_csv(tmp_path / "good", X, y)))
    missing = tmp_path / "nowhere"
    with pytest.raises(chimera.DataError, match=f"worker 'b': no training file {missing}/X_train.csv"):
        sgd(data={"a": good, "b": chimera.CSVFiles(str(missing))}, cluster=manager).fit()


def test_csv_files_with_different_row_counts_are_a_data_error(manager: Manager, tmp_path: Path) -> None:
    folder = write_csv(tmp_path / "short", np.ones((10, 2)), np.arange(10) % 2)
    pd.DataFrame({"label": np.arange(9) % 2}).to_csv(folder / "y_train.csv", index=False)
    with pytest.raises(chimera.DataError, match="X_train.csv has 10 rows but y_train.csv has 9"):
        sgd(data={"a": chimera.CSVFiles(str(folder))}, cluster=manager).fit()
    with pytest.raises(chimera.DataError, match="worker 'a'.*shape"):
        sgd(data={"a": (np.ones((10, 2)), np.zeros(9))}, cluster=manager).fit()


def test_text_in_a_csv_is_a_data_error_not_a_worker_failure(manager: Manager, tmp_path: Path) -> None:
    folder = tmp_path / "text"
    folder.mkdir()
    (folder / "X_train.csv").write_text("x0,x1\n1,2\n3,oops\n")
    (folder / "y_train.csv").write_text("label\n0\n1\n")
    with pytest.raises(chimera.DataError, match="worker 'a': X must hold numbers only"):
        sgd(data={"a": chimera.CSVFiles(str(folder))}, cluster=manager).fit()


@pytest.mark.parametrize("kind", ["sgd", "bagging"])
def test_shards_with_different_numbers_of_features_are_a_data_error(manager: Manager, kind: str) -> None:
    y = np.array([0, 1] * 5)
    data = {"a": (np.ones((10, 4)), y), "b": (np.ones((10, 3)), y)}
    est = (sgd(data=data, cluster=manager) if kind == "sgd"
           else chimera.DistributedBaggingClassifier(n_estimators=2, data=data, cluster=manager, progress=False))
    with pytest.raises(chimera.DataError, match="different numbers of features: a: 4, b: 3"):
        est.fit()


# -- parameters and misuse --------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls, param, value", [
    ("DistributedSGDClassifier", "loss", "nope"),
    ("DistributedSGDClassifier", "loss", "huber"),  # a regression loss
    ("DistributedSGDRegressor", "loss", "hinge"),  # a classification loss
    ("DistributedSGDClassifier", "strategy", "x"),
    ("DistributedSGDClassifier", "penalty", "l3"),
    ("DistributedSGDClassifier", "learning_rate", "fast"),
    ("DistributedSGDClassifier", "eta0", 0),
    ("DistributedSGDClassifier", "max_iter", 0),
    ("DistributedSGDRegressor", "batch_size", 0),
    ("DistributedSGDRegressor", "on_worker_failure", "maybe"),
    ("DistributedBaggingClassifier", "n_estimators", 0),
    ("DistributedBaggingClassifier", "voting", "loud"),
    ("DistributedBaggingClassifier", "on_worker_failure", "maybe"),
    ("DistributedBaggingRegressor", "max_samples", 0.0),
    ("DistributedBaggingRegressor", "n_estimators", 2.5),
])
def test_bad_parameters_raise_value_error_naming_them(manager: Manager, cls: str, param: str, value: Any) -> None:
    est = getattr(chimera, cls)(cluster=manager, progress=False, **{param: value})
    X, y = np.ones((6, 2)), np.array([0, 1] * 3)
    with pytest.raises(ValueError, match=rf"{cls}: {param} must be"):
        est.fit(X, y)


@pytest.mark.parametrize("cls", ["DistributedSGDClassifier", "DistributedSGDRegressor",
                                 "DistributedBaggingClassifier", "DistributedBaggingRegressor"])
def test_fit_without_data_says_what_it_needs(manager: Manager, cls: str) -> None:
    est = getattr(chimera, cls)(cluster=manager, progress=False)
    with pytest.raises(ValueError, match=rf"{cls}.fit needs X and y, or data= shards"):
        est.fit()
    with pytest.raises(ValueError, match="requires y to be passed"):
        est.fit(np.ones((4, 2)))
    shards = chimera.DistributedSGDClassifier if "SGD" in cls else chimera.DistributedBaggingClassifier
    with pytest.raises(ValueError, match="call fit\\(\\) without X, y"):
        shards(data={"a": (np.ones((4, 2)), np.array([0, 1, 0, 1]))}, cluster=manager).fit(np.ones((4, 2)), [0] * 4)


def test_a_fitted_model_pickles_without_its_cluster(manager: Manager) -> None:
    import pickle

    Xtr, Xte, ytr, _ = iris()
    for est in (sgd(cluster=manager), chimera.DistributedBaggingClassifier(n_estimators=3, cluster=manager,
                                                                           progress=False, random_state=0)):
        est.fit(Xtr, ytr)
        back = pickle.loads(pickle.dumps(est))
        np.testing.assert_array_equal(back.predict(Xte), est.predict(Xte))
        assert back.cluster is None and est.cluster is manager


# -- bagging ----------------------------------------------------------------------------------------------------
def bag(kind: str = "classifier", **params: Any) -> Any:
    cls = chimera.DistributedBaggingClassifier if kind == "classifier" else chimera.DistributedBaggingRegressor
    return cls(**{"progress": False, "random_state": 0, **params})


def test_members_train_on_different_bootstrap_samples(manager: Manager) -> None:
    Xtr, _, ytr, _ = iris()
    est = bag(n_estimators=6, cluster=manager).fit(Xtr, ytr)
    assert len(est.estimators_) == 6 and all(isinstance(m, DecisionTreeClassifier) for m in est.estimators_)
    assert len({m.tree_.threshold.tobytes() for m in est.estimators_}) == 6  # six different trees
    assert est.history_["seed"].nunique() == 6
    assert sorted(est.estimators_workers_) == ["a"] * 3 + ["b"] * 3 and est.contributors_ == ["a", "b"]
    again = bag(n_estimators=6, cluster=manager).fit(Xtr, ytr)  # the same random_state: the same trees
    assert [m.tree_.threshold.tobytes() for m in again.estimators_] == [m.tree_.threshold.tobytes()
                                                                         for m in est.estimators_]


def majority(labels: list[np.ndarray], classes: np.ndarray) -> np.ndarray:
    votes = np.stack([(np.asarray(p)[:, None] == classes[None, :]) for p in labels]).sum(axis=0)
    return classes[votes.argmax(axis=1)]  # ties: the class listed first


def test_soft_vote_averages_probabilities_and_hard_vote_counts_labels(manager: Manager) -> None:
    X, y = make_classification(n_samples=400, n_features=8, n_informative=4, flip_y=0.1, random_state=1)
    stump = DecisionTreeClassifier(max_depth=2)
    soft = bag(estimator=stump, n_estimators=7, cluster=manager).fit(X, y)
    hard = bag(estimator=stump, n_estimators=7, voting="hard", cluster=manager).fit(X, y)
    mean_proba = np.mean([m.predict_proba(X) for m in soft.estimators_], axis=0)
    np.testing.assert_allclose(soft.predict_proba(X), mean_proba)
    np.testing.assert_array_equal(soft.predict(X), soft.classes_[mean_proba.argmax(axis=1)])
    np.testing.assert_array_equal(hard.predict(X), majority([m.predict(X) for m in hard.estimators_], hard.classes_))
    assert np.any(soft.predict(X) != hard.predict(X))  # the two votes are different rules

    no_proba = bag(estimator=Perceptron(), n_estimators=3, cluster=manager).fit(X, y)  # soft falls back to majority
    np.testing.assert_array_equal(no_proba.predict(X),
                                  majority([m.predict(X) for m in no_proba.estimators_], no_proba.classes_))
    with pytest.raises(AttributeError, match="predict_proba"):
        no_proba.predict_proba(X)


@pytest.mark.parametrize("voting", ["soft", "hard"])
def test_bagging_predicts_labels_not_probabilities(manager: Manager, voting: str) -> None:
    Xtr, Xte, ytr, yte = iris(names=True)
    est = bag(n_estimators=5, voting=voting, cluster=manager).fit(Xtr, ytr)
    pred = est.predict(Xte)
    assert est.classes_.tolist() == ["setosa", "versicolor", "virginica"]
    assert set(pred.tolist()) <= set(est.classes_.tolist()) and np.mean(pred == yte) >= 0.85
    X, y = make_classification(n_samples=200, n_features=5, random_state=0)
    words = np.array(["no", "yes"])[y]  # binary: "yes", not a probability of class 1
    binary = bag(n_estimators=5, voting=voting, cluster=manager).fit(X, words).predict(X)
    assert binary.dtype.kind in "OU" and set(binary.tolist()) == {"no", "yes"}
    assert np.mean(binary == words) >= 0.9


def test_bagging_regression_is_the_mean_of_the_members(manager: Manager) -> None:
    Xtr, Xte, ytr, _ = diabetes()
    est = bag("regressor", n_estimators=5, cluster=manager).fit(Xtr, ytr)
    assert all(isinstance(m, DecisionTreeRegressor) for m in est.estimators_)
    np.testing.assert_allclose(est.predict(Xte), np.mean([m.predict(Xte) for m in est.estimators_], axis=0))


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_hybrid_member_j_trains_on_shard_j_mod_n(manager: Manager, kind: str) -> None:
    X, y = make_classification(n_samples=300, n_features=6, random_state=0)
    target = y if kind == "classifier" else X[:, 0] * 2.0
    shards = [(X[:60], target[:60]), (X[60:150], target[60:150]), (X[150:], target[150:])]  # 60, 90, 150 rows
    est = bag(kind, n_estimators=7, data=shards, cluster=manager).fit()
    assert est.history_["n_samples"].tolist() == [60, 90, 150, 60, 90, 150, 60]  # a bootstrap of its shard
    assert est.estimators_workers_ == ["a", "b", "a", "a", "b", "a", "a"]  # shard i lives on worker i mod 2
    assert est.n_features_in_ == 6

    split = bag(kind, n_estimators=4, data="split", cluster=manager).fit(X, target)
    assert split.history_["n_samples"].tolist() == [150] * 4
    assert split.estimators_workers_ == ["a", "b", "a", "b"]


def test_model_parallel_bagging_matches_scikit_learn(manager: Manager) -> None:
    Xtr, Xte, ytr, yte = breast_cancer()
    baseline = BaggingClassifier(DecisionTreeClassifier(), n_estimators=10, random_state=0).fit(Xtr, ytr)
    est = bag(n_estimators=10, cluster=manager).fit(Xtr, ytr)
    assert est.score(Xte, yte) >= baseline.score(Xte, yte) - 0.04
    assert (est.history_["n_samples"] == len(Xtr)).all()  # every member bootstraps the whole data
    assert est.history_.index.tolist() == list(range(10))


# ---------------------------------------------------------------------------------------------------------------
# a worker killed mid-fit: each test starts its own two cp-workers and SIGKILLs one (by its Popen)
# ---------------------------------------------------------------------------------------------------------------
def kill_data(n: int) -> tuple[np.ndarray, np.ndarray]:
    X, y = make_classification(n_samples=n, n_features=10, n_informative=5, random_state=0)
    return StandardScaler().fit_transform(X), y


def test_sgd_raises_worker_failure_naming_a_killed_worker(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    cluster.cli_worker("survivor")
    victim = cluster.cli_worker("victim")
    killed = killing_monitor(monkeypatch, sgd_module, victim, after=5)
    X, y = kill_data(4000)
    with pytest.raises(chimera.WorkerFailure, match="victim") as info:
        sgd(cluster=cluster.manager, tol=None, max_iter=20_000).fit(X, y)
    assert time.monotonic() - killed["at"] <= 15
    assert list(info.value.failures) == ["victim"]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # tol=None: all of max_iter
def test_sgd_goes_on_without_a_killed_worker(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    cluster.cli_worker("survivor")
    victim = cluster.cli_worker("victim")
    killing_monitor(monkeypatch, sgd_module, victim, after=5)
    X, y = kill_data(4000)
    est = sgd(cluster=cluster.manager, tol=None, max_iter=1500, on_worker_failure="continue")
    with pytest.warns(RuntimeWarning, match="going on without worker\\(s\\) victim"):
        est.fit(X, y)
    assert list(est.failed_workers_) == ["victim"]
    assert est.contributors_ == ["survivor"]
    assert est.n_iter_ == 1500
    assert est.history_["workers"].iloc[0] == 2 and est.history_["workers"].iloc[-1] == 1
    assert est.score(X, y) >= LogisticRegression().fit(X, y).score(X, y) - 0.05


def slow_members(n: int = 6) -> Any:
    return bag(n_estimators=n)  # decision trees on thousands of rows: a tenth of a second or more each


def test_bagging_raises_worker_failure_naming_a_killed_worker(cluster: Cluster,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    cluster.cli_worker("survivor")
    victim = cluster.cli_worker("victim")
    killed = killing_monitor(monkeypatch, bagging_module, victim, after=1)
    X, y = kill_data(10_000)
    with pytest.raises(chimera.WorkerFailure, match="victim") as info:
        slow_members().set_params(cluster=cluster.manager).fit(X, y)
    assert time.monotonic() - killed["at"] <= 15
    assert list(info.value.failures) == ["victim"]


def test_model_parallel_bagging_retrains_a_killed_workers_members(cluster: Cluster,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cluster.cli_worker("survivor")
    victim = cluster.cli_worker("victim")
    killing_monitor(monkeypatch, bagging_module, victim, after=1)  # when the first member is back
    X, y = kill_data(10_000)
    est = slow_members().set_params(cluster=cluster.manager, on_worker_failure="continue")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.fit(X, y)
    assert any(issubclass(w.category, RuntimeWarning) and "victim" in str(w.message) for w in caught)
    assert list(est.failed_workers_) == ["victim"]
    assert len(est.estimators_) == 6  # the members it had not returned were trained on the survivor
    assert est.history_.index.tolist() == list(range(6))
    assert est.estimators_workers_.count("victim") <= 1  # at most the one it finished before it died
    assert est.contributors_ == sorted(set(est.estimators_workers_)) and "survivor" in est.contributors_
    assert est.score(X, y) >= 0.9


def test_hybrid_bagging_drops_a_killed_workers_members_with_a_warning(cluster: Cluster,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    cluster.cli_worker("survivor")
    victim = cluster.cli_worker("victim")
    killing_monitor(monkeypatch, bagging_module, victim, after=1)
    X, y = kill_data(20_000)
    est = slow_members().set_params(cluster=cluster.manager, on_worker_failure="continue", data="split")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.fit(X, y)
    said = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert any("going on without worker(s) victim" in m for m in said)
    assert any(f"{6 - len(est.estimators_)} of 6 members were lost with worker(s) victim" in m for m in said)
    assert list(est.failed_workers_) == ["victim"]
    assert 3 <= len(est.estimators_) < 6  # the survivor's three, and what the victim finished before it died
    assert est.estimators_workers_.count("survivor") == 3
    assert est.score(X, y) >= 0.85
