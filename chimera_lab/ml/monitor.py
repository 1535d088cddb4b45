"""What a fit shows while it runs and keeps afterwards: a progress bar, in Jupyter a live chart of loss and metric
per round with the time split into compute and communication, and the rows of `history_`."""

from __future__ import annotations

import functools
import sys
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


@functools.cache
def _chart_class() -> type:
    """LiveChart for a fit: once the fit is over it stops its sending thread, and answers a reloaded view itself."""
    from ..jupyter.widgets import LiveChart

    class FitChart(LiveChart):
        _done = False

        def finish(self) -> None:
            """Send what is left and stop the sending thread (a fit's chart gets no more points)."""
            self._done = True
            self._flusher.stop()
            self._flush()

        def _on_message(self, content: dict[str, Any]) -> None:
            super()._on_message(content)
            if self._done:  # no sending thread any more: answer a (re)loaded view from here
                self._flush()

    FitChart.__qualname__ = "FitChart"
    return FitChart


class FitMonitor:
    """Rounds of one fit: ``round(**row)`` records one; ``close()`` ends the bar; ``frame()`` is the history."""

    def __init__(self, title: str, total: int, metric: str, show: bool, unit: str = "round",
                 chart: bool = True) -> None:
        self.metric = metric
        self.rows: list[dict[str, Any]] = []
        self.t0 = time.perf_counter()
        self._bar: Any = None
        self.charts: tuple[Any, Any] | None = None
        self._outer = sys.exc_info()[1]  # an exception already being handled where the fit started is not its own
        if not show:
            return
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, desc=title, unit=unit, leave=True)
        if chart and _in_kernel():
            from IPython.display import display
            from ipywidgets import HBox

            chart_class = _chart_class()
            quality = chart_class(title=f"{title}: loss and {metric}", x_label=unit, y_label="")
            timing = chart_class(title="time per round (ms)", x_label=unit, y_label="ms")
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
        """End the progress bar (with a closing note such as why the fit stopped) and the live chart's feed.

        Called while an exception propagates, the bar says so and stays unfinished (red in Jupyter); otherwise a fit
        that stopped early (converged) ends full, not as a failure."""
        error = sys.exc_info()[1]
        failed = error is not None and error is not self._outer
        if self._bar is not None:
            bar, self._bar = self._bar, None
            if failed:
                note = f"stopped by {type(error).__name__}"
            elif bar.total and bar.n < bar.total:  # stopped early: done, not failed
                bar.total = bar.n
                box = getattr(bar, "container", None)  # tqdm.notebook: (text, bar, text) widgets
                if box is not None:
                    box.children[1].max = max(bar.n, 1)
            if note:
                bar.set_postfix_str(note, refresh=False)
            bar.close()
        if self.charts is not None:
            for chart in self.charts:
                chart.finish()

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
