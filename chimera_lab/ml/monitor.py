"""What a fit shows while it runs and keeps afterwards: a progress bar, in Jupyter a live chart of loss and metric
per round with the time split into compute and communication, and the rows of `history_`."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return False
    ip = get_ipython()
    return ip is not None and hasattr(ip, "kernel")


class FitMonitor:
    """Rounds of one fit: ``round(**row)`` records one; ``close()`` ends the bar; ``frame()`` is the history."""

    def __init__(self, title: str, total: int, metric: str, show: bool, unit: str = "round",
                 chart: bool = True) -> None:
        self.metric = metric
        self.rows: list[dict[str, Any]] = []
        self.t0 = time.perf_counter()
        self._bar: Any = None
        self.charts: tuple[Any, Any] | None = None
        if not show:
            return
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, desc=title, unit=unit, leave=True)
        if chart and _in_kernel():
            from IPython.display import display
            from ipywidgets import HBox

            from ..jupyter.widgets import LiveChart

            quality = LiveChart(title=f"{title}: loss and {metric}", x_label=unit, y_label="")
            timing = LiveChart(title="time per round (ms)", x_label=unit, y_label="ms")
            self.charts = (quality, timing)
            display(HBox([quality, timing]))

    def round(self, **row: Any) -> None:
        """Record one round (its loss, metric, compute_s and comm_s, among others) and show it."""
        row["elapsed_s"] = time.perf_counter() - self.t0
        self.rows.append(row)
        if self._bar is not None:
            self._bar.update(1)
            shown = {k: f"{row[k]:.4g}" for k in ("loss", self.metric) if row.get(k) is not None}
            self._bar.set_postfix(shown, refresh=False)
        if self.charts is not None:
            quality, timing = self.charts
            x = row["round"]
            for k in ("loss", self.metric):
                if row.get(k) is not None:
                    quality.append(k, x, row[k])
            timing.append("compute", x, 1e3 * row["compute_s"])
            timing.append("communication", x, 1e3 * row["comm_s"])

    def close(self, note: str | None = None) -> None:
        """End the progress bar (with a closing note such as why the fit stopped)."""
        if self._bar is not None:
            if note:
                self._bar.set_postfix_str(note, refresh=False)
            self._bar.close()
            self._bar = None

    def frame(self) -> pd.DataFrame:
        """The recorded rounds as a DataFrame indexed by round."""
        df = pd.DataFrame(self.rows)
        return df.set_index("round") if "round" in df else df


def plot_history(history: pd.DataFrame, metric: str, title: str, ax: Any = None) -> Any:
    """Draw loss and metric per round (left) and each round's compute and communication time (right)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(1, 2, figsize=(10, 3.5), layout="constrained")
    left, right = (ax[0], ax[1]) if hasattr(ax, "__len__") else (ax, None)
    rounds = history.index
    left.plot(rounds, history["loss"], label="loss")
    if metric in history:
        twin = left.twinx()
        twin.plot(rounds, history[metric], color="tab:orange", label=metric)
        twin.set_ylabel(metric)
    left.set_xlabel(history.index.name or "round")
    left.set_ylabel("loss")
    left.set_title(title)
    if right is not None:
        right.bar(rounds, 1e3 * history["compute_s"], label="compute")
        right.bar(rounds, 1e3 * history["comm_s"], bottom=1e3 * history["compute_s"], label="communication")
        right.set_xlabel(history.index.name or "round")
        right.set_ylabel("ms per round")
        right.legend()
    return ax
