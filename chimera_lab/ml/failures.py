"""What happens when a worker fails during a fit: ``on_worker_failure="raise"`` stops the fit with WorkerFailure;
``"continue"`` goes on with the workers left and records who dropped out."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

POLICIES = ("raise", "continue")


class WorkerFailure(RuntimeError):
    """Workers failed during a fit; ``.failures`` maps each one's name to what happened (with its traceback)."""

    def __init__(self, who: str, failures: Mapping[str, str], hint: str = "") -> None:
        self.failures = dict(failures)
        lines = "; ".join(f"{w}: {why.strip().splitlines()[-1] if why.strip() else why}" for w, why in failures.items())
        super().__init__(f"{who}: worker(s) failed: {lines}{hint}")


def check_policy(value: object, who: str) -> str:
    """`value` if it is a failure policy, else ValueError naming the choices."""
    if value not in POLICIES:
        raise ValueError(f"{who}: on_worker_failure must be 'raise' or 'continue', got {value!r}")
    return str(value)


def apply_policy(estimator: Any, failures: Mapping[str, str], when: str) -> None:
    """Raise WorkerFailure for workers not already noted, or (``on_worker_failure="continue"``) add them to
    ``estimator.failed_workers_`` with a RuntimeWarning and go on."""
    new = {w: why for w, why in failures.items() if w not in estimator.failed_workers_}
    if not new:
        return
    who = type(estimator).__name__
    if estimator.on_worker_failure == "raise":
        raise WorkerFailure(who, new, hint=f" ({when}; on_worker_failure='continue' goes on without them)")
    estimator.failed_workers_.update(new)
    warnings.warn(f"{who}: going on without worker(s) {', '.join(new)} ({when}): "
                  + "; ".join((why.strip().splitlines() or [""])[0] for why in new.values()), RuntimeWarning,
                  stacklevel=4)
