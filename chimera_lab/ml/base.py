"""What every distributed estimator shares: a cluster parameter that is a live connection (never pickled, never
copied), the failure policy, and the check that a classifier has classes to tell apart."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from .failures import apply_policy


class ClusterEstimator(BaseEstimator):
    """A scikit-learn estimator whose ``cluster=`` parameter is a Manager or LocalCluster."""

    def _check_classes(self, classes: np.ndarray) -> np.ndarray:
        if len(classes) < 2:
            raise ValueError(f"{type(self).__name__}: the number of classes has to be greater than one; "
                             f"got {len(classes)} class ({classes.tolist()})")
        return classes

    def _apply_policy(self, failures: dict[str, str], when: str) -> None:
        apply_policy(self, failures, when)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without its cluster (a live connection): an unpickled model predicts; a refit finds workers
        as with cluster=None."""
        return {**super().__getstate__(), "cluster": None}

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        """A deep copy that shares the cluster, as `clone` does."""
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        new.__dict__.update({k: v if k == "cluster" else copy.deepcopy(v, memo) for k, v in self.__dict__.items()})
        return new
