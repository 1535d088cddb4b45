"""The chimera seed's workflow, unchanged except the import: a master file with CHIMERA_* variables and
chimera.run, worker files in chimera_workers/, CSV files in chimera_train_data/, the REST API, the log files."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import pid_alive, wait_until
from sklearn.datasets import load_iris, make_classification, make_regression

from chimera_lab.cluster.local import wait_or_kill
from chimera_lab.manager import TaskError
from chimera_lab.ml import masters, rest, roles
from chimera_lab.ml.config import ChimeraConfig, ConfigError
from chimera_lab.ml.masters import AggregationMaster, ParameterServerMaster, SetupError
from chimera_lab.ml.service import StartError, serve

TIMESTAMP = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} "


# -------------------------------------------------------------------------------------------------
# helpers: a seed project in a folder, and HTTP
# -------------------------------------------------------------------------------------------------
def worker_file(role: str, imports: str = "") -> str:
    """A worker file as the seed's README shows it, with chimera_lab's import."""
    return (f"import chimera_lab.ml as chimera\n{imports}\n"
            f"worker = chimera.{role}\n"
            "if __name__ == \"__main__\":\n"
            "    worker.serve()\n")


def write_project(root: Path, workers: dict[str, str], data: dict[str, tuple[pd.DataFrame, pd.Series]]) -> None:
    """chimera_workers/<name>.py for each worker, chimera_train_data/<name>/{X,y}_train.csv for each shard."""
    (root / "chimera_workers").mkdir(parents=True, exist_ok=True)
    for name, text in workers.items():
        (root / "chimera_workers" / f"{name}.py").write_text(text)
    for name, (X, y) in data.items():
        folder = root / "chimera_train_data" / name
        folder.mkdir(parents=True, exist_ok=True)
        X.to_csv(folder / "X_train.csv", index=False)
        y.to_frame().to_csv(folder / "y_train.csv", index=False)


def call(url: str, body: Any = None, *, raw: bytes | None = None, content_type: str | None = "application/json",
         method: str = "POST") -> tuple[int, Any, Any]:
    """(status, JSON answer, headers) of one request."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    headers = {"Content-Type": content_type} if content_type and data is not None else {}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            text = r.read()
            return r.status, (json.loads(text) if r.headers.get_content_type() == "application/json" else text), \
                r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers


def predict_body(X: pd.DataFrame) -> dict[str, Any]:
    return {"X_pred_columns": list(X.columns), "X_pred_rows": X.to_numpy().tolist()}


def iris() -> tuple[pd.DataFrame, pd.Series]:
    d = load_iris(as_frame=True)
    return d.data, d.target.rename("species")


# -------------------------------------------------------------------------------------------------
# ChimeraConfig.from_env: every rule, with explicit environments
# -------------------------------------------------------------------------------------------------
@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "chimera_workers").mkdir()
    for name in ("w1", "w2", "w3"):
        (tmp_path / "chimera_workers" / f"{name}.py").write_text("")
    return tmp_path


def test_config_defaults_and_list_forms(root: Path) -> None:
    c = ChimeraConfig.from_env({"CHIMERA_WORKERS_NODES_NAMES": '["w1", "w2"]'}, root)
    assert c.workers == ("w1", "w2") and c.cpu_shares == (2, 2) and c.mapped_ports == (101, 102)
    assert (c.network_name, c.network_prefix, c.subnet_mask) == ("chimera-network", "192.168.10", 24)
    assert (c.workers_host, c.workers_port, c.max_retries, c.timeout, c.backend) == ("127.0.0.1", 80, 0, 100.0, "local")
    assert c.worker_file("w2") == root / "chimera_workers" / "w2.py" and c.data_folder("w1") == "chimera_train_data/w1"
    assert c.worker_address("w2") == "192.168.10.3"  # the seed's scheme: gateway .1, worker i at .(i + 2)
    c = ChimeraConfig.from_env({"CHIMERA_WORKERS_NODES_NAMES": "['w1', 'w3']",  # a Python literal, as the seed took
                                "CHIMERA_WORKERS_CPU_SHARES": "[2, 4]", "CHIMERA_WORKERS_MAPPED_PORTS": "[5001, 5002]",
                                "CHIMERA_NETWORK_PREFIX": "10.0.0", "CHIMERA_NETWORK_SUBNET_MASK": "16",
                                "CHIMERA_WORKERS_HOST": "127.0.0.1", "CHIMERA_WORKERS_PORT": "8000",
                                "CHIMERA_WORKERS_ENDPOINTS_MAX_RETRIES": "2",
                                "CHIMERA_WORKERS_ENDPOINTS_TIMEOUT": "2.5",
                                "CHIMERA_BACKEND": "Docker", "CHIMERA_NETWORK_NAME": " "}, root)  # blank = unset
    assert c.cpu_shares == (2, 4) and c.mapped_ports == (5001, 5002) and c.subnet_mask == 16
    assert (c.max_retries, c.timeout, c.backend, c.network_name) == (2, 2.5, "docker", "chimera-network")
    with pytest.raises(AttributeError):
        c.timeout = 1.0  # type: ignore[misc]  # frozen


NAMES = {"CHIMERA_WORKERS_NODES_NAMES": '["w1", "w2"]'}


@pytest.mark.parametrize("env, expected", [
    ({}, ["CHIMERA_WORKERS_NODES_NAMES is not set", "chimera_workers/<name>.py"]),
    ({"CHIMERA_WORKER_NODES_NAMES": '["w1"]'}, ["did you mean CHIMERA_WORKER_NODES_NAMES"]),
    ({"CHIMERA_WORKERS_NODES_NAMES": "w1"}, ["CHIMERA_WORKERS_NODES_NAMES='w1'", "is not a list", '["w1", "w2"]']),
    ({"CHIMERA_WORKERS_NODES_NAMES": '"w1"'}, ["must be a list"]),
    ({"CHIMERA_WORKERS_NODES_NAMES": "[]"}, ["names no worker"]),
    ({"CHIMERA_WORKERS_NODES_NAMES": '["w1", "my worker"]'}, ["'my worker' is not a valid worker name"]),
    ({"CHIMERA_WORKERS_NODES_NAMES": '["w1", 2]'}, ["2 is not a valid worker name"]),
    ({"CHIMERA_WORKERS_NODES_NAMES": '["w1", "w2", "w1"]'}, ["'w1' more than once"]),
    ({"CHIMERA_WORKERS_NODES_NAMES": '["w1.py"]'}, ["name the workers without .py: 'w1', not 'w1.py'"]),
    ({"CHIMERA_WORKERS_NODES_NAMES": '["w1", "w9"]'}, ["names 'w9' but chimera_workers/w9.py does not exist",
                                                       "create it", "or remove 'w9'"]),
    ({**NAMES, "CHIMERA_WORKERS_CPU_SHARES": "[2, 1]"}, ["CHIMERA_WORKERS_CPU_SHARES='[2, 1]'", "an int >= 2",
                                                         "value 1 is 1"]),
    ({**NAMES, "CHIMERA_WORKERS_CPU_SHARES": "[2, 2.5]"}, ["an int >= 2", "value 1 is 2.5"]),
    ({**NAMES, "CHIMERA_WORKERS_CPU_SHARES": "[2]"}, ["CHIMERA_WORKERS_CPU_SHARES='[2]': has 1 value but "
                                                      "CHIMERA_WORKERS_NODES_NAMES names 2 workers"]),
    ({**NAMES, "CHIMERA_WORKERS_CPU_SHARES": "two"}, ["CHIMERA_WORKERS_CPU_SHARES='two': is not a list"]),
    ({**NAMES, "CHIMERA_WORKERS_MAPPED_PORTS": "[101, 70000]"}, ["an int from 1 to 65535", "value 1 is 70000"]),
    ({**NAMES, "CHIMERA_WORKERS_MAPPED_PORTS": "[0, 1]"}, ["value 0 is 0"]),
    ({**NAMES, "CHIMERA_WORKERS_MAPPED_PORTS": "[101, 101]"}, ["port 101 is listed more than once"]),
    ({**NAMES, "CHIMERA_WORKERS_MAPPED_PORTS": "[101, 102, 103]"}, ["has 3 values but CHIMERA_WORKERS_NODES_NAMES "
                                                                    "names 2 workers"]),
    ({**NAMES, "CHIMERA_NETWORK_NAME": "my net"}, ["CHIMERA_NETWORK_NAME='my net'", "Docker network name"]),
    ({**NAMES, "CHIMERA_NETWORK_PREFIX": "192.168"}, ["CHIMERA_NETWORK_PREFIX='192.168'", "first three numbers"]),
    ({**NAMES, "CHIMERA_NETWORK_PREFIX": "192.300.1"}, ["from 0 to 255"]),
    ({**NAMES, "CHIMERA_NETWORK_SUBNET_MASK": "33"}, ["CHIMERA_NETWORK_SUBNET_MASK='33'", "from 0 to 32"]),
    ({**NAMES, "CHIMERA_NETWORK_SUBNET_MASK": "x"}, ["CHIMERA_NETWORK_SUBNET_MASK='x'", "from 0 to 32"]),
    ({**NAMES, "CHIMERA_NETWORK_SUBNET_MASK": "16"}, ["CHIMERA_NETWORK_PREFIX='192.168.10' with "
                                                      "CHIMERA_NETWORK_SUBNET_MASK=16", "host bits set",
                                                      "192.168.0.0/16"]),
    ({"CHIMERA_WORKERS_NODES_NAMES": '["w1", "w2", "w3"]', "CHIMERA_NETWORK_SUBNET_MASK": "30"},
     ["room for 1 worker address", "names 3", "smaller mask"]),
    ({**NAMES, "CHIMERA_WORKERS_HOST": "localhost"}, ["CHIMERA_WORKERS_HOST='localhost'", "must be an IP address"]),
    ({**NAMES, "CHIMERA_WORKERS_PORT": "0"}, ["CHIMERA_WORKERS_PORT='0'", "from 1 to 65535"]),
    ({**NAMES, "CHIMERA_WORKERS_ENDPOINTS_MAX_RETRIES": "-1"}, ["MAX_RETRIES='-1'", "an int >= 0"]),
    ({**NAMES, "CHIMERA_WORKERS_ENDPOINTS_MAX_RETRIES": "1.5"}, ["MAX_RETRIES='1.5'", "an int >= 0"]),
    ({**NAMES, "CHIMERA_WORKERS_ENDPOINTS_TIMEOUT": "0"}, ["TIMEOUT='0'", "seconds > 0"]),
    ({**NAMES, "CHIMERA_WORKERS_ENDPOINTS_TIMEOUT": "nan"}, ["TIMEOUT='nan'", "seconds > 0"]),
    ({**NAMES, "CHIMERA_WORKERS_ENDPOINTS_TIMEOUT": "soon"}, ["TIMEOUT='soon'", "seconds > 0"]),
    ({**NAMES, "CHIMERA_BACKEND": "kubernetes"}, ["CHIMERA_BACKEND='kubernetes'", "'local' or 'docker'"]),
])
def test_config_errors_name_the_variable_the_value_and_the_fix(root: Path, env: dict[str, str],
                                                               expected: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        ChimeraConfig.from_env(env, root)
    for text in expected:
        assert text in str(info.value)


def test_config_reports_every_problem_at_once(root: Path) -> None:
    with pytest.raises(ConfigError) as info:
        ChimeraConfig.from_env({"CHIMERA_WORKERS_NODES_NAMES": '["w1", "w5"]', "CHIMERA_WORKERS_CPU_SHARES": "[1]",
                                "CHIMERA_WORKERS_ENDPOINTS_TIMEOUT": "-3", "CHIMERA_BACKEND": "k8s"}, root)
    assert len(info.value.problems) == 4 and str(info.value).startswith("chimera configuration: 4 problems:")


def test_importing_the_seed_modules_creates_no_files_and_reads_no_environment(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHIMERA_")}
    subprocess.run([sys.executable, "-c", "import logging, chimera_lab.ml as c; c.run, c.serve, c.AggregationMaster, "
                    "c.ClassificationWorker, c.ChimeraConfig; import chimera_lab.ml.rest; "
                    "assert not logging.getLogger('chimera_status').handlers, 'a log handler at import'; "
                    "assert not logging.getLogger('chimera_time').handlers, 'a log handler at import'"],
                   cwd=tmp_path, env=env, check=True, timeout=60)
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------------------------------------
# worker roles, in this process
# -------------------------------------------------------------------------------------------------
def test_worker_roles_refuse_what_they_cannot_use() -> None:
    from sklearn.linear_model import LinearRegression
    from sklearn.tree import DecisionTreeClassifier

    with pytest.raises(TypeError, match="got a regressor .LinearRegression.; use RegressionWorker"):
        roles.ClassificationWorker(LinearRegression())
    with pytest.raises(TypeError, match="got a classifier .DecisionTreeClassifier.; use ClassificationWorker"):
        roles.RegressionWorker(DecisionTreeClassifier())
    with pytest.raises(TypeError, match=r"DecisionTreeClassifier\(\), not the class"):
        roles.ClassificationWorker(DecisionTreeClassifier)
    with pytest.raises(TypeError, match="bootstrap must be True or False"):
        roles.ClassificationWorker(DecisionTreeClassifier(), bootstrap="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind must be 'classifier' or 'regressor', got 'classify'"):
        roles.SGDWorker("classify")
    with pytest.raises(TypeError, match="unknown SGD parameter learning_rat;.*takes .*learning_rate"):
        roles.SGDWorker("classifier", learning_rat="constant")
    with pytest.raises(TypeError, match="data cannot be given here"):
        roles.SGDWorker("regressor", data={})
    with pytest.raises(ValueError, match="loss must be"):
        roles.SGDWorker("regressor", loss="log_loss")
    with pytest.raises(TypeError, match="unknown SGD parameter epsilom"):
        ParameterServerMaster("regressor", epsilom=0.1)
    assert roles.SGDWorker("classifier", alpha=1e-3).describe()["params"] == {"alpha": 1e-3}


def test_a_worker_file_run_by_itself_says_to_use_chimera_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from sklearn.tree import DecisionTreeClassifier

    monkeypatch.delenv(roles.ENV_MANAGER, raising=False)
    with pytest.raises(SystemExit, match=r"started by chimera.run\(...\) in your master file; run the master file"):
        roles.ClassificationWorker(DecisionTreeClassifier()).serve()


def test_bootstrap_samples_differ_between_workers_and_repeat_with_the_seed(tmp_path: Path) -> None:
    from sklearn.tree import DecisionTreeClassifier

    X, y = iris()
    write_project(tmp_path, {}, {"w": (X, y)})
    folder = str(tmp_path / "chimera_train_data" / "w")
    role = roles.ClassificationWorker(DecisionTreeClassifier(random_state=0))
    w = SimpleNamespace(name="w", store={})
    samples = [role.fit(w, folder, fit_seed=7, index=i)["sample"] for i in range(4)]
    assert len(set(samples)) == 4  # the seed's bug: every worker drew the same sample
    assert role.fit(w, folder, fit_seed=7, index=2)["sample"] == samples[2]
    assert role.fit(w, folder, fit_seed=8, index=2)["sample"] != samples[2]
    info = roles.ClassificationWorker(DecisionTreeClassifier(), bootstrap=False).fit(w, folder, 7, 0)
    assert "sample" not in info and info["n_samples"] == 150 and info["columns"] == list(X.columns)


def test_non_numeric_training_columns_are_named(tmp_path: Path) -> None:
    from sklearn.tree import DecisionTreeClassifier

    X = pd.DataFrame({"height": [1.0, 2.0, 3.0], "colour": ["red", "blue", "red"]})
    write_project(tmp_path, {}, {"w": (X, pd.Series([0, 1, 0], name="y"))})
    role = roles.ClassificationWorker(DecisionTreeClassifier())
    with pytest.raises(roles.DataError, match="column 'colour' must hold numbers"):
        role.fit(SimpleNamespace(name="w", store={}), str(tmp_path / "chimera_train_data" / "w"), 1, 0)


# -------------------------------------------------------------------------------------------------
# masters' logic, with a stand-in for the Manager
# -------------------------------------------------------------------------------------------------
class FakeManager:
    """Answers Manager.call from a table: {(worker, task name): result, exception, or a list of them in turn}."""

    def __init__(self, answers: dict[tuple[str, str], Any]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str]] = []

    def call(self, worker: str, fn: Any, *args: Any) -> Future[Any]:
        self.calls.append((worker, fn.__name__))
        answer = self.answers[(worker, fn.__name__)]
        if isinstance(answer, list):
            answer = answer.pop(0)
        fut: Future[Any] = Future()
        if isinstance(answer, BaseException):
            fut.set_exception(answer)
        elif answer != "never":
            fut.set_result(answer)
        return fut


def config_for(root: Path, names: list[str], **env: str) -> ChimeraConfig:
    (root / "chimera_workers").mkdir(exist_ok=True)
    for n in names:
        (root / "chimera_workers" / f"{n}.py").write_text("")
    return ChimeraConfig.from_env({"CHIMERA_WORKERS_NODES_NAMES": json.dumps(names), **env}, root)


def describe(role: str, kind: str, **params: Any) -> dict[str, Any]:
    return {"role": role, "kind": kind, "estimator": f"{role}()", "params": params}


def test_call_workers_retries_and_bounds_each_call(tmp_path: Path) -> None:
    fail = TaskError("worker 'a': OSError: flaky")
    m = FakeManager({("a", "describe_task"): [fail, {"ok": 1}], ("b", "describe_task"): "never"})
    config = config_for(tmp_path, ["a", "b"], CHIMERA_WORKERS_ENDPOINTS_MAX_RETRIES="1",
                        CHIMERA_WORKERS_ENDPOINTS_TIMEOUT="0.05")
    results, errors = masters.call_workers(m, ["a", "b"], roles.describe_task, lambda n: (), config, "describe")
    assert results == {"a": {"ok": 1}}
    assert errors == {"b": "no answer within 0.05 s (CHIMERA_WORKERS_ENDPOINTS_TIMEOUT); a call that timed out "
                           "keeps the worker busy until it ends"}
    assert m.calls.count(("a", "describe_task")) == 2 and m.calls.count(("b", "describe_task")) == 2
    m = FakeManager({("a", "describe_task"): [fail]})
    _, errors = masters.call_workers(m, ["a"], roles.describe_task, lambda n: (), config_for(tmp_path, ["a"]), "x")
    assert errors == {"a": "OSError: flaky"}  # no retries by default


def test_masters_refuse_workers_of_the_wrong_role_or_mixed_kinds(tmp_path: Path) -> None:
    config = config_for(tmp_path, ["c", "r", "s"])
    m = FakeManager({("c", "describe_task"): describe("ClassificationWorker", "classifier"),
                     ("r", "describe_task"): describe("RegressionWorker", "regressor"),
                     ("s", "describe_task"): describe("SGDWorker", "classifier")})
    with pytest.raises(SetupError, match="workers of one kind.*c: ClassificationWorker, r: RegressionWorker"):
        AggregationMaster().fit(m, ["c", "r"], config)  # type: ignore[arg-type]
    with pytest.raises(SetupError, match=r"s: SGDWorker\('classifier'\); use ParameterServerMaster for SGDWorkers, "
                                         "or change chimera_workers/s.py"):
        AggregationMaster().check(m, ["c", "s"], config)  # type: ignore[arg-type]
    with pytest.raises(SetupError, match=r"ParameterServerMaster\('regressor'\) needs SGDWorker\('regressor'\).*"
                                         "change chimera_workers/c.py, chimera_workers/s.py, or use "
                                         "AggregationMaster"):
        ParameterServerMaster("regressor").check(m, ["c", "s"], config)  # type: ignore[arg-type]
    m.answers[("c", "describe_task")] = TaskError("worker 'c': lost")
    m.answers[("s", "describe_task")] = TaskError("worker 's': lost")
    with pytest.raises(masters.WorkersFailedError, match="no worker answered: c: lost; s: lost"):
        AggregationMaster().check(m, ["c", "s"], config)  # type: ignore[arg-type]


def test_sgd_workers_parameters_are_defaults_the_master_overrides() -> None:
    same = {"a": describe("SGDWorker", "classifier", alpha=0.01, loss="hinge"),
            "b": describe("SGDWorker", "classifier", alpha=0.01, loss="hinge")}
    assert masters.merge_sgd_params(same, {"max_iter": 9, "loss": "log_loss"}) == \
        {"alpha": 0.01, "loss": "log_loss", "max_iter": 9}
    differ = {"a": describe("SGDWorker", "classifier", alpha=0.01), "b": describe("SGDWorker", "classifier")}
    with pytest.raises(SetupError, match=r"disagree on alpha: 0.01 on a, '\(default\)' on b; set the same alpha.*"
                                         "or pass alpha=... to ParameterServerMaster"):
        masters.merge_sgd_params(differ, {})
    assert masters.merge_sgd_params(differ, {"alpha": 0.5}) == {"alpha": 0.5}


def test_to_matrix_reorders_columns_and_names_what_is_wrong() -> None:
    X = masters.to_matrix(["b", "a"], [[1, 2.5], [3, 4]], ["a", "b"])
    assert X.tolist() == [[2.5, 1.0], [4.0, 3.0]]
    for columns, rows, message in [
        (["a"], [[1]], "missing 'b'"),
        (["a", "b", "c"], [[1, 2, 3]], "unknown 'c'"),
        (["a", "a"], [[1, 2]], "'a' more than once"),
        ("a,b", [[1, 2]], "must be a list of column names"),
        (["a", "b"], [[1, 2], [3]], r"X_pred_rows\[1\] has 1 values but X_pred_columns names 2"),
        (["a", "b"], [[1, "x"]], r"X_pred_rows\[0\]\[1\] \(column 'b'\) is 'x'; every value must be a finite number"),
        (["a", "b"], [[True, 1]], "is True"),
        (["a", "b"], [1, 2], "must be a list of rows"),
    ]:
        with pytest.raises(masters.RequestError, match=message):
            masters.to_matrix(columns, rows, ["a", "b"])


def test_combine_soft_votes_over_all_classes_majority_votes_or_averages() -> None:
    classes = np.array(["a", "b", "c"])
    outputs = {"w1": {"proba": np.array([[0.9, 0.1], [0.2, 0.8]]), "classes": np.array(["a", "b"])},
               "w2": {"proba": np.array([[0.1, 0.9], [0.3, 0.7]]), "classes": np.array(["a", "c"])},
               "w3": {"proba": np.array([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]]), "classes": classes}}
    assert masters.combine("classifier", "soft", outputs, classes).tolist() == ["a", "c"]  # labels, not P(class 1)
    votes = {"w1": {"predictions": np.array([1, 2])}, "w2": {"predictions": np.array([2, 2])},
             "w3": {"predictions": np.array([1, 0])}}
    assert masters.combine("classifier", "hard", votes, np.array([0, 1, 2])).tolist() == [1, 2]
    assert masters.combine("regressor", "mean", votes, None).tolist() == [4 / 3, 4 / 3]


# -------------------------------------------------------------------------------------------------
# REST: a master with no model yet (no workers needed)
# -------------------------------------------------------------------------------------------------
@pytest.fixture
def api_server() -> Iterator[Any]:
    """Serve rest.Api(master) on a free port of 127.0.0.1; yields a function master -> base URL."""
    servers = []

    def start(master: Any) -> str:
        server = rest.make_server(rest.Api(master, None, ["w1"], None), "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


class StubMaster:
    """A master whose fit waits for `release` (or raises `error`), to test the REST layer alone."""

    route = "aggregation"
    fitted = False
    columns = None

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.entered = threading.Event()
        self.release = threading.Event()

    def fit(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.entered.set()
        if self.error is not None:
            raise self.error
        assert self.release.wait(30)
        return {"message": "ok"}

    def predict(self, *args: Any, **kwargs: Any) -> list[Any]:
        return [1]


def test_predict_before_fit_is_409(api_server: Any) -> None:
    url = api_server(AggregationMaster())
    status, answer, _ = call(f"{url}/v1/chimera/aggregation/predict", {"X_pred_columns": ["a"], "X_pred_rows": [[1]]})
    assert status == 409 and answer == {"detail": "the AggregationMaster has no model yet: POST "
                                                  "/v1/chimera/aggregation/fit first"}


def test_one_fit_at_a_time_and_unexpected_errors_are_500_with_their_message(api_server: Any) -> None:
    stub = StubMaster()
    url = api_server(stub)
    first: list[Any] = []
    t = threading.Thread(target=lambda: first.append(call(f"{url}/v1/chimera/aggregation/fit")))
    t.start()
    wait_until(stub.entered.is_set, 10, "the first fit to start")
    status, answer, _ = call(f"{url}/v1/chimera/aggregation/fit")
    assert status == 409 and answer["detail"] == "a fit is already running; wait for it to finish, then try again"
    stub.release.set()
    t.join(30)
    assert first[0][:2] == (200, {"message": "ok"})
    url = api_server(StubMaster(ZeroDivisionError("division by zero in the stub")))
    status, answer, _ = call(f"{url}/v1/chimera/aggregation/fit")
    assert status == 500 and answer == {"detail": "unexpected error (ZeroDivisionError: division by zero in the "
                                                  "stub); the traceback is in chimera_status.log"}


# -------------------------------------------------------------------------------------------------
# the seed workflow in a subprocess: master.py run by python, SIGTERM, log files
# -------------------------------------------------------------------------------------------------
class MasterProcess:
    """``python master.py`` in a project folder, its output collected as it comes."""

    def __init__(self, root: Path) -> None:
        self.lines: list[str] = []
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHIMERA_")}  # master.py sets its own
        self.proc = subprocess.Popen([sys.executable, "master.py"], cwd=root, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def find(self, pattern: str) -> re.Match[str] | None:
        for line in list(self.lines):
            m = re.search(pattern, line)
            if m:
                return m
        if self.proc.poll() is not None:
            raise AssertionError(f"master.py exited with {self.proc.returncode}:\n{''.join(self.lines)}")
        return None


def test_seed_workflow_aggregation_of_three_trees_on_iris(tmp_path: Path) -> None:
    X, y = iris()
    tree = worker_file("ClassificationWorker(DecisionTreeClassifier(), bootstrap=True)",
                       "from sklearn.tree import DecisionTreeClassifier")
    write_project(tmp_path, {n: tree for n in ("w1", "w2", "w3")}, {n: (X, y) for n in ("w1", "w2", "w3")})
    (tmp_path / "master.py").write_text(
        "import os\n"
        "import chimera_lab.ml as chimera\n"
        "os.environ[\"CHIMERA_WORKERS_NODES_NAMES\"] = '[\"w1\", \"w2\", \"w3\"]'\n"
        "os.environ[\"CHIMERA_WORKERS_CPU_SHARES\"] = \"[2, 2, 2]\"\n"
        "os.environ[\"CHIMERA_WORKERS_MAPPED_PORTS\"] = \"[101, 102, 103]\"\n"
        "chimera.run(chimera.AggregationMaster(), 0)\n")
    master = MasterProcess(tmp_path)
    try:
        found = wait_until(lambda: master.find(r"serving AggregationMaster on (http://127\.0\.0\.1:\d+) \(docs at "
                                               r"/docs\)"), 60, "the master to serve")
        url = found.group(1)
        pids = {n: int(p) for n, p in re.findall(r"(w\d) \(pid (\d+)\)", master.find(r"chimera: workers .*")[0])}
        assert sorted(pids) == ["w1", "w2", "w3"]

        status, fit, _ = call(f"{url}/v1/chimera/aggregation/fit")
        assert status == 200, fit
        assert fit["message"] == "ok" and fit["contributors"] == ["w1", "w2", "w3"] and fit["failed"] == {}
        assert fit["vote"] == "soft" and fit["classes"] == [0, 1, 2] and fit["columns"] == list(X.columns)
        samples = {w["sample"] for w in fit["workers"].values()}
        assert len(samples) == 3  # each worker drew its own bootstrap sample
        assert all(80 < w["distinct_samples"] < 120 for w in fit["workers"].values())  # ~63 % of 150

        status, answer, _ = call(f"{url}/v1/chimera/aggregation/predict", predict_body(X))
        assert status == 200 and set(answer) == {"y_pred_rows"}
        predicted = np.array(answer["y_pred_rows"])
        assert set(predicted.tolist()) <= {0, 1, 2} and (predicted == y.to_numpy()).mean() >= 0.9
        shuffled = X[list(reversed(X.columns))]  # columns by name, in any order
        assert call(f"{url}/v1/chimera/aggregation/predict", predict_body(shuffled))[1]["y_pred_rows"] == \
            answer["y_pred_rows"]

        master.proc.send_signal(signal.SIGTERM)  # the master process this test started
        assert master.proc.wait(30) == 0
        for name, pid in pids.items():
            wait_until(lambda pid=pid: not pid_alive(pid), 10, f"worker {name} (pid {pid}) to be reaped")
        assert "chimera: stopped" in "".join(master.lines)
    finally:
        if master.proc.poll() is None:  # the test failed before SIGTERM: end what it started
            master.proc.send_signal(signal.SIGTERM)
            wait_or_kill(master.proc, 30)

    status_lines = (tmp_path / "chimera_status.log").read_text().splitlines()
    time_lines = (tmp_path / "chimera_time.log").read_text().splitlines()
    assert all(re.match(TIMESTAMP, line) for line in status_lines + time_lines if not line.startswith(" "))
    status_log = "\n".join(status_lines)
    for text in ("worker w1 started: chimera_workers/w1.py", "worker w2 fitted (DecisionTreeClassifier())",
                 "POST /v1/chimera/aggregation/fit -> 200", "POST /v1/chimera/aggregation/predict -> 200",
                 f"worker w3 (pid {pids['w3']}) ended with code 0", "stopped"):
        assert text in status_log
    time_log = "\n".join(time_lines)
    for name in pids:
        assert re.search(rf"POST /v1/chimera/aggregation/fit worker {name} fit latency = \d+\.\d{{4}} s", time_log)
        assert re.search(rf"POST /v1/chimera/aggregation/predict worker {name} predict latency = ", time_log)
    assert re.search(r"POST /v1/chimera/aggregation/predict master endpoint latency = \d+\.\d{4} s", time_log)


# -------------------------------------------------------------------------------------------------
# serve() in this process: regression workers, one without data; REST contract
# -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def regression(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    root = tmp_path_factory.mktemp("regression")
    Xa, ya = make_regression(n_samples=160, n_features=3, noise=2.0, random_state=0)
    X, y = pd.DataFrame(Xa, columns=["x0", "x1", "x2"]), pd.Series(ya, name="target")
    linear = worker_file("RegressionWorker(LinearRegression(), bootstrap=True)",
                         "from sklearn.linear_model import LinearRegression")
    # hybrid parallelism: each worker its own half; r3 has no data at all
    write_project(root, {"r1": linear, "r2": linear, "r3": linear},
                  {"r1": (X[:80], y[:80]), "r2": (X[80:], y[80:])})
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("CHIMERA_WORKERS_NODES_NAMES", '["r1", "r2", "r3"]')
        mp.setenv("CHIMERA_WORKERS_ENDPOINTS_TIMEOUT", "30")
        with serve(AggregationMaster(random_state=3), port=0) as service:
            yield SimpleNamespace(service=service, root=root, X=X, y=y, url=service.url,
                                  predict=f"{service.url}/v1/chimera/aggregation/predict")
        assert service.stopped and all(not pid_alive(p) for p in service.pids.values())


@pytest.fixture
def fitted(regression: SimpleNamespace) -> SimpleNamespace:
    if not regression.service.master.fitted:
        assert call(f"{regression.url}/v1/chimera/aggregation/fit")[0] == 200
    return regression


def test_regression_workers_fit_without_the_one_that_has_no_data(regression: SimpleNamespace) -> None:
    s = regression.service
    assert s.url.startswith("http://127.0.0.1:") and s.workers == ["r1", "r2", "r3"]
    assert all(pid_alive(p) for p in s.pids.values()) and "AggregationMaster on http://127.0.0.1:" in repr(s)
    status, fit, _ = call(f"{regression.url}/v1/chimera/aggregation/fit", {})
    assert status == 200 and fit["contributors"] == ["r1", "r2"] and fit["vote"] == "mean"
    assert list(fit["failed"]) == ["r3"] and "no training file" in fit["failed"]["r3"]
    assert "chimera_train_data/r3/X_train.csv" in fit["failed"]["r3"] and fit["seed"] == 3
    status, answer, _ = call(regression.predict, predict_body(regression.X))
    pred, y = np.array(answer["y_pred_rows"]), regression.y.to_numpy()
    assert status == 200 and 1 - ((pred - y) ** 2).sum() / ((y - y.mean()) ** 2).sum() > 0.99  # R²
    assert call(regression.predict, {"X_pred_columns": ["x2", "x0", "x1"], "X_pred_rows": []})[1] == \
        {"y_pred_rows": []}
    status, index, _ = call(f"{regression.url}/", method="GET")
    assert status == 200 and index["master"] == "AggregationMaster" and index["fitted"] is True
    assert "worker r3 left out: " in (regression.root / "chimera_status.log").read_text()


def test_when_every_worker_fails_fit_is_502_and_the_last_model_stays(fitted: SimpleNamespace) -> None:
    data = fitted.root / "chimera_train_data"
    before = call(fitted.predict, predict_body(fitted.X[:5]))[1]
    for name in ("r1", "r2"):
        (data / name).rename(data / f"{name}.away")
    try:
        status, answer, _ = call(f"{fitted.url}/v1/chimera/aggregation/fit")
    finally:
        for name in ("r1", "r2"):
            (data / f"{name}.away").rename(data / name)
    assert status == 502 and answer["detail"].startswith("every worker failed to fit: r1: DataError: ")
    assert all(f"{n}: DataError: worker '{n}': no training file" in answer["detail"] for n in ("r1", "r2", "r3"))
    assert call(fitted.predict, predict_body(fitted.X[:5]))[1] == before


P, F = "/v1/chimera/aggregation/predict", "/v1/chimera/aggregation/fit"
GOOD = {"X_pred_columns": ["x0", "x1", "x2"], "X_pred_rows": [[0.1, 0.2, 0.3]]}


@pytest.mark.parametrize("path, kwargs, status, detail", [
    (P, {"raw": b"{not json"}, 400, "the body is not valid JSON: Expecting property name"),
    (P, {"raw": b'{"X_pred_columns": ["x0"], "X_pred_rows": [[NaN]]}'}, 400, "NaN is not a JSON number"),
    (P, {"raw": b"\xff\xfe"}, 400, "not UTF-8"),
    (P, {}, 400, "predict needs a JSON body like"),
    (P, {"body": [1, 2]}, 422, "must be a JSON object like"),
    (P, {"body": {"X_pred_columns": ["x0"]}}, 422, "(missing X_pred_rows)"),
    (P, {"body": {**GOOD, "X": 1}}, 422, "(unknown field 'X')"),
    (P, {"body": {**GOOD, "X_pred_columns": ["x0", "x1", "y"]}}, 422,
     "X_pred_columns does not match the training columns (missing 'x2'; unknown 'y'); the model was trained on "
     "['x0', 'x1', 'x2'] (any order is fine)"),
    (P, {"body": {**GOOD, "X_pred_columns": "x0,x1,x2"}}, 422, "must be a list of column names"),
    (P, {"body": {**GOOD, "X_pred_rows": [[1, 2, 3], [1, 2]]}}, 422,
     "X_pred_rows[1] has 2 values but X_pred_columns names 3 columns"),
    (P, {"body": {**GOOD, "X_pred_rows": [[1, "2", 3]]}}, 422,
     "X_pred_rows[0][1] (column 'x1') is '2'; every value must be a finite number"),
    (P, {"body": {**GOOD, "X_pred_rows": [[1, None, 3]]}}, 422, "is None"),
    (P, {"body": {**GOOD, "X_pred_rows": [[1, 2, False]]}}, 422, "is False"),
    (P, {"body": {**GOOD, "X_pred_rows": {"0": [1, 2, 3]}}}, 422, "must be a list of rows"),
    (P, {"body": GOOD, "content_type": "text/plain"}, 415, "the body is text/plain, but this API takes JSON"),
    (F, {"body": {"max_iter": 5}}, 422, "fit takes no fields (got 'max_iter')"),
    (F, {"body": "go"}, 422, "must be empty or a JSON object ({}), got a string"),
    (P, {"method": "GET"}, 405, "/v1/chimera/aggregation/predict takes POST, not GET"),
    (P + "/", {"method": "DELETE"}, 405, "takes POST, not DELETE"),
    ("/v1/chimera/aggregation/train", {}, 404,
     "no route /v1/chimera/aggregation/train; this server runs AggregationMaster"),
    ("/v1/chimera/parameter-server/fit", {}, 404,
     "/v1/chimera/parameter-server/fit belongs to ParameterServerMaster, but this server runs AggregationMaster: "
     "use POST /v1/chimera/aggregation/fit and POST /v1/chimera/aggregation/predict"),
])
def test_bad_requests_get_the_right_status_and_say_what_to_fix(fitted: SimpleNamespace, path: str,
                                                              kwargs: dict[str, Any], status: int,
                                                              detail: str) -> None:
    got, answer, headers = call(fitted.url + path, **kwargs)
    assert (got, set(answer)) == (status, {"detail"}), answer
    assert detail in answer["detail"]
    if status == 405:
        assert headers["Allow"] == "POST"


def test_oversized_chunked_and_unparseable_lengths(fitted: SimpleNamespace) -> None:
    port = fitted.service.port

    def raw(headers: dict[str, str], body: bytes = b"") -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.putrequest("POST", "/v1/chimera/aggregation/predict")
            for k, v in headers.items():
                conn.putheader(k, v)
            conn.endheaders(body or None)
            r = conn.getresponse()
            return r.status, json.loads(r.read())["detail"]
        finally:
            conn.close()

    assert raw({"Content-Type": "application/json", "Content-Length": str(10**10)}) == \
        (413, f"the body has {10**10} bytes, more than the {rest.MAX_BODY} this server takes; predict fewer rows "
              "per request")
    assert raw({"Content-Type": "application/json", "Transfer-Encoding": "chunked"}, b"0\r\n\r\n")[0] == 411
    assert raw({"Content-Length": "many"})[0] == 400
    assert call(fitted.predict, GOOD)[0] == 200  # the server goes on


def test_openapi_document_and_docs_page(fitted: SimpleNamespace) -> None:
    status, spec, _ = call(f"{fitted.url}/openapi.json", method="GET")
    assert status == 200 and spec["openapi"].startswith("3.") and spec["info"]["title"] == "chimera AggregationMaster"
    assert set(spec["paths"]) == {"/v1/chimera/aggregation/fit", "/v1/chimera/aggregation/predict", "/openapi.json",
                                  "/docs"}
    op = spec["paths"]["/v1/chimera/aggregation/predict"]["post"]
    assert {"200", "400", "409", "413", "415", "422", "500", "502"} <= set(op["responses"])
    assert op["requestBody"]["content"]["application/json"]["example"]["X_pred_columns"] == ["x0", "x1", "x2"]
    assert spec["components"]["schemas"]["PredictRequest"]["required"] == ["X_pred_columns", "X_pred_rows"]
    status, page, headers = call(f"{fitted.url}/docs", method="GET")
    text = page.decode()
    assert status == 200 and headers.get_content_type() == "text/html"
    assert "/v1/chimera/aggregation/predict" in text and "/v1/chimera/parameter-server" not in text
    assert "X_pred_columns" in text and "<script>" in text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)  # self-contained: nothing from a CDN


# -------------------------------------------------------------------------------------------------
# ParameterServerMaster: SGDWorkers, distributed SGD
# -------------------------------------------------------------------------------------------------
def test_seed_workflow_parameter_server_classifier(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Xa, ya = make_classification(n_samples=400, n_features=4, n_informative=2, n_redundant=0, class_sep=2.0,
                                 random_state=1)
    X, y = pd.DataFrame(Xa, columns=["a", "b", "c", "d"]), pd.Series(ya, name="label")
    sgd = worker_file('SGDWorker("classifier", loss="log_loss", alpha=1e-4, max_iter=5)')
    write_project(tmp_path, {"s1": sgd, "s2": sgd}, {"s1": (X[::2], y[::2]), "s2": (X[1::2], y[1::2])})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHIMERA_WORKERS_NODES_NAMES", '["s1", "s2"]')
    with serve(ParameterServerMaster("classifier", max_iter=100), port=0) as service:
        status, answer, _ = call(f"{service.url}/v1/chimera/parameter-server/predict", predict_body(X))
        assert status == 409
        status, fit, _ = call(f"{service.url}/v1/chimera/parameter-server/fit")
        assert status == 200, fit
        assert fit["contributors"] == ["s1", "s2"] and fit["failed"] == {} and fit["columns"] == ["a", "b", "c", "d"]
        assert "max_iter=100" in fit["estimator"] and "alpha=0.0001" in fit["estimator"]  # master over workers
        status, answer, _ = call(f"{service.url}/v1/chimera/parameter-server/predict",
                                 predict_body(X[["d", "c", "b", "a"]]))
        assert status == 200 and (np.array(answer["y_pred_rows"]) == y.to_numpy()).mean() >= 0.9
        status, answer, _ = call(f"{service.url}/v1/chimera/aggregation/fit")
        assert status == 404 and "belongs to AggregationMaster, but this server runs ParameterServerMaster" in \
            answer["detail"]
    assert "ParameterServerMaster: DistributedSGDClassifier trained on s1, s2" in \
        (tmp_path / "chimera_status.log").read_text()


# -------------------------------------------------------------------------------------------------
# starting: what stops chimera.run before it serves
# -------------------------------------------------------------------------------------------------
def test_a_worker_file_that_crashes_is_named_with_its_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_project(tmp_path, {"good": "", "bad": "import sys\nprint('loading...')\nraise RuntimeError('no GPU here')\n"},
                  {})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHIMERA_WORKERS_NODES_NAMES", '["bad"]')
    with pytest.raises(StartError, match=r"worker 'bad' \(chimera_workers/bad.py\) exited with code 1 while "
                                         r"starting; its last output:\n(.|\n)*loading\.\.\.(.|\n)*"
                                         "RuntimeError: no GPU here"):
        serve(AggregationMaster(), port=0)
    monkeypatch.setenv("CHIMERA_WORKERS_NODES_NAMES", '["good"]')
    with pytest.raises(StartError, match="exited with code 0 while starting without serving: a worker file must call "
                                         "worker.serve()"):
        serve(AggregationMaster(), port=0)
    assert "RuntimeError: no GPU here" in (tmp_path / "chimera_status.log").read_text()


def test_run_ends_with_a_message_on_a_bad_configuration(tmp_path: Path) -> None:
    (tmp_path / "chimera_workers").mkdir()
    (tmp_path / "master.py").write_text("import os\nimport chimera_lab.ml as chimera\n"
                                        "os.environ['CHIMERA_WORKERS_NODES_NAMES'] = '[\"w1\"]'\n"
                                        "chimera.run(chimera.AggregationMaster(), 0)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHIMERA_")}
    done = subprocess.run([sys.executable, "master.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip() == ("chimera configuration: CHIMERA_WORKERS_NODES_NAMES names 'w1' but "
                                   f"chimera_workers/w1.py does not exist in {tmp_path}; create it (a worker file "
                                   "that calls worker.serve()) or remove 'w1' from the list")
