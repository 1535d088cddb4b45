"""How an ensemble's members' predictions become one: votes for classes, means for numbers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def soft_vote(probas: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """The (weighted) mean of members' class probabilities, each of shape (n_samples, n_classes)."""
    return np.average(np.stack([np.asarray(p, dtype=float) for p in probas]), axis=0, weights=weights)


def hard_vote(labels: Sequence[np.ndarray], classes: np.ndarray) -> np.ndarray:
    """The label most members predicted for each sample (ties go to the class listed first in `classes`)."""
    index = {c: i for i, c in enumerate(classes.tolist())}
    votes = np.zeros((len(labels[0]), len(classes)), dtype=np.int64)
    rows = np.arange(len(labels[0]))
    for member in labels:
        votes[rows, [index[c] for c in np.asarray(member).tolist()]] += 1
    return classes[np.argmax(votes, axis=1)]


def align_proba(proba: np.ndarray, member_classes: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """A member's probabilities laid out over all `classes` (a member trained on a shard may have seen fewer)."""
    out = np.zeros((proba.shape[0], len(classes)))
    out[:, np.searchsorted(classes, member_classes)] = proba
    return out


def mean(predictions: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """The (weighted) mean of members' numeric predictions."""
    return np.average(np.stack([np.asarray(p, dtype=float) for p in predictions]), axis=0, weights=weights)
