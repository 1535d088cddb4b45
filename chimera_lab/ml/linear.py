"""The mathematics of linear models trained by SGD, shared by the workers and the estimators: losses, gradients,
local SGD epochs, penalties and learning-rate schedules. Pure numpy; nothing here knows about the cluster.

Parameters are one flat float64 vector ``theta`` of K·(d+1) numbers: K rows of d weights, then K intercepts.
K is 1 for regression and binary classification, else the number of classes (softmax for log-loss, one
column per class, one-vs-rest, for hinge and squared loss).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASSIFIER_LOSSES = ("log_loss", "hinge", "squared_error")
REGRESSOR_LOSSES = ("squared_error", "huber")
PENALTIES = ("l2", "l1", "elasticnet", None)
SCHEDULES = ("constant", "invscaling", "adaptive")


@dataclass(frozen=True)
class Problem:
    """What a worker needs to compute a loss: the loss, the model's shape and how labels become targets."""

    loss: str
    n_outputs: int  # K
    n_features: int  # d
    classes: np.ndarray | None = None  # classifiers: the sorted labels
    epsilon: float = 0.1  # huber

    def split(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The (K, d) weights and (K,) intercepts inside `theta` (views, not copies)."""
        K, d = self.n_outputs, self.n_features
        return theta[: K * d].reshape(K, d), theta[K * d:]

    @property
    def size(self) -> int:
        return self.n_outputs * (self.n_features + 1)

    def targets(self, y: np.ndarray) -> np.ndarray:
        """Labels as the loss wants them: class indices (log-loss) or ±1 per output column, or the values."""
        if self.classes is None:
            return np.asarray(y, dtype=np.float64).reshape(-1, 1)
        idx = np.searchsorted(self.classes, y)
        if self.loss == "log_loss":
            return idx
        if self.n_outputs == 1:
            return np.where(idx == 1, 1.0, -1.0).reshape(-1, 1)
        t = -np.ones((len(y), self.n_outputs))
        t[np.arange(len(y)), idx] = 1.0
        return t

    def decision(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Raw scores, shape (n, K)."""
        W, b = self.split(theta)
        return X @ W.T + b

    def loss_grad(self, theta: np.ndarray, X: np.ndarray, t: np.ndarray) -> tuple[float, np.ndarray, float]:
        """(summed loss, summed gradient as a flat vector, summed metric) over the rows of X.

        The metric is the number of correct labels for classifiers and the summed squared error for regressors,
        so sums from several workers add up to exact totals."""
        z = self.decision(theta, X)
        if self.loss == "log_loss" and self.n_outputs == 1:
            yb = t.astype(np.float64)
            zz = z[:, 0]
            loss = float(np.logaddexp(0.0, zz).sum() - (yb * zz).sum())
            dz = (_sigmoid(zz) - yb).reshape(-1, 1)
            metric = float(((zz > 0) == (yb > 0.5)).sum())
        elif self.loss == "log_loss":
            zmax = z.max(axis=1, keepdims=True)
            logp = z - zmax - np.log(np.exp(z - zmax).sum(axis=1, keepdims=True))
            rows = np.arange(len(t))
            loss = float(-logp[rows, t].sum())
            dz = np.exp(logp)
            dz[rows, t] -= 1.0
            metric = float((np.argmax(z, axis=1) == t).sum())
        elif self.loss == "hinge":
            margin = t * z
            loss = float(np.maximum(0.0, 1.0 - margin).sum())
            dz = np.where(margin < 1.0, -t, 0.0)
            metric = self._correct(z, t)
        elif self.loss == "squared_error":
            r = z - t
            loss = float(0.5 * (r * r).sum())
            dz = r
            metric = self._correct(z, t) if self.classes is not None else float((r * r).sum())
        elif self.loss == "huber":
            r = z - t
            a = np.abs(r)
            eps = self.epsilon
            loss = float(np.where(a <= eps, 0.5 * r * r, eps * (a - 0.5 * eps)).sum())
            dz = np.clip(r, -eps, eps)
            metric = float((r * r).sum())
        else:  # pragma: no cover - the estimators validate `loss`
            raise ValueError(f"unknown loss {self.loss!r}")
        grad = np.concatenate([(dz.T @ X).ravel(), dz.sum(axis=0)])
        return loss, grad, metric

    def _correct(self, z: np.ndarray, t: np.ndarray) -> float:
        if self.n_outputs == 1:
            return float(((z[:, 0] > 0) == (t[:, 0] > 0)).sum())
        return float((np.argmax(z, axis=1) == np.argmax(t, axis=1)).sum())


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))


@dataclass(frozen=True)
class Penalty:
    """The regulariser: an L2 part added to the gradient and an L1 part applied as a proximal step (which makes
    exact zeros); intercepts are never penalised."""

    kind: str | None
    alpha: float
    l1_ratio: float = 0.15

    @property
    def l2(self) -> float:
        return {"l2": self.alpha, "elasticnet": self.alpha * (1 - self.l1_ratio)}.get(self.kind or "", 0.0)

    @property
    def l1(self) -> float:
        return {"l1": self.alpha, "elasticnet": self.alpha * self.l1_ratio}.get(self.kind or "", 0.0)

    def value(self, problem: Problem, theta: np.ndarray) -> float:
        W, _ = problem.split(theta)
        return 0.5 * self.l2 * float((W * W).sum()) + self.l1 * float(np.abs(W).sum())

    def step(self, problem: Problem, theta: np.ndarray, grad: np.ndarray, eta: float) -> None:
        """One (proximal) gradient step on `theta`, in place; `grad` is the mean data gradient."""
        W, _ = problem.split(theta)
        g = grad.copy()
        if self.l2:
            gW, _ = problem.split(g)
            gW += self.l2 * W
        theta -= eta * g
        if self.l1:
            W, _ = problem.split(theta)
            np.copyto(W, np.sign(W) * np.maximum(np.abs(W) - eta * self.l1, 0.0))


class Schedule:
    """The learning rate, round by round, with scikit-learn's meanings: 'constant' (eta0), 'invscaling'
    (eta0 / t^power_t) and 'adaptive' (eta0, divided by 5 when the loss stops improving)."""

    def __init__(self, kind: str, eta0: float, power_t: float = 0.25) -> None:
        self.kind, self.eta0, self.power_t = kind, eta0, power_t
        self.eta = eta0

    def at(self, t: int) -> float:
        """The rate for update number `t` (from 1)."""
        if self.kind == "invscaling":
            return self.eta0 / (t ** self.power_t)
        return self.eta


def local_epochs(problem: Problem, penalty: Penalty, theta: np.ndarray, X: np.ndarray, t: np.ndarray,
                 epochs: int, batch_size: int, eta: float, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """Plain mini-batch SGD over (X, t) for `epochs` passes from `theta` (FedAvg's local step).

    Returns (new theta, summed loss of the last pass, summed metric of the last pass), each batch's loss
    measured before its step."""
    theta = theta.copy()
    n = len(X)
    loss = metric = 0.0
    for _ in range(epochs):
        order = rng.permutation(n)
        loss = metric = 0.0
        for start in range(0, n, batch_size):
            rows = order[start:start + batch_size]
            bl, grad, bm = problem.loss_grad(theta, X[rows], t[rows])
            loss += bl
            metric += bm
            penalty.step(problem, theta, grad / len(rows), eta)
    return theta, loss, metric
