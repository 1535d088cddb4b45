"""Distributed machine learning on a chimera_lab cluster: data, model and hybrid parallelism.

``import chimera_lab.ml as chimera`` gives the scikit-learn-style estimators (`DistributedSGDClassifier`,
`DistributedSGDRegressor`, `DistributedBaggingClassifier`, `DistributedBaggingRegressor`) and the chimera seed's
workflow (`run`, `serve`, the masters and the worker classes). Names are imported on first use, so importing this
package starts nothing and creates no files.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DistributedSGDClassifier": "sgd",
    "DistributedSGDRegressor": "sgd",
    "DistributedBaggingClassifier": "bagging",
    "DistributedBaggingRegressor": "bagging",
    "WorkerFailure": "failures",
    "Arrays": "shards",
    "CSVFiles": "shards",
    "InStore": "shards",
    "DataError": "shards",
    "ClusterError": "cluster",
    "ChimeraConfig": "config",
    "ConfigError": "config",
    "ClassificationWorker": "roles",
    "RegressionWorker": "roles",
    "SGDWorker": "roles",
    "AggregationMaster": "masters",
    "ParameterServerMaster": "masters",
    "run": "service",
    "serve": "service",
    "StartError": "service",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'chimera_lab.ml' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
