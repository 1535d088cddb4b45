"""GraphView: a Graph drawn as boxes and arrows, live while a Manager runs it.

Python does all the work: ``graph_layout`` places the nodes in layers (every edge points right), ``graph_svg``
draws the picture, and the widget sends the SVG to the browser whenever it changes (the graph was edited, or the
running pipeline's state, rates or errors moved), at most twice a second. The same SVG is the text/html
fallback, so a saved notebook shows the picture too. Displaying a ``Graph`` in a notebook shows its GraphView.
"""

from __future__ import annotations

import html
import threading
import weakref
from typing import TYPE_CHECKING, Any

import traitlets

from .graph_svg import graph_svg
from .widgets import _Every, _static, _Widget, cluster_snapshot

if TYPE_CHECKING:
    from ..graph import Graph
    from ..manager import Manager


def _problems(graph: Graph) -> list[str]:
    from ..graph import GraphError

    try:
        graph.validate()
    except GraphError as exc:
        return [line.strip("- ").strip() for line in str(exc).splitlines() if line.strip()]
    return []


def running(graph: Graph) -> Manager | None:
    """The Manager this graph is committed to, if any (in this process)."""
    from ..manager import managers

    return next((m for m in managers() if m.graph is graph), None)


def _structure(graph: Graph) -> tuple[Any, ...]:
    """What the picture depends on besides live state (cheap to compute, compared each refresh)."""
    return (tuple((n.name, type(n).__name__, n.rate_hz) for n in graph.nodes),
            tuple((u.name, v.name, d.get("policy"), d.get("follow"), d.get("order")) for u, v, d in
                  graph.edges(data=True)))


class GraphView(_Widget):
    """The graph as boxes and arrows; while a Manager runs it, each box shows its worker, state, rate, latency
    and errors. Follows the graph as it is edited in Python. ``refresh()`` redraws now."""

    PERIOD = 0.5  # seconds between checks: at most 2 redraws a second

    _esm = _static("graph_view.js")
    svg = traitlets.Unicode("").tag(sync=True)
    summary = traitlets.Unicode("").tag(sync=True)
    problems = traitlets.List(traitlets.Unicode()).tag(sync=True)

    def __init__(self, graph: Graph, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._graph = weakref.ref(graph)
        self._lock = threading.Lock()
        self._seen: Any = None
        self.refresh()
        self._refresher = _Every("chimera-graphview-refresh", self.PERIOD, self.refresh)

    @property
    def graph(self) -> Graph | None:
        """The graph shown (None once it has been garbage-collected)."""
        return self._graph()

    def refresh(self) -> None:
        """Redraw if the graph or its running state changed."""
        graph = self._graph()
        if graph is None:  # the graph is gone: so is the reason to keep a thread
            self.close()
            return
        if self._closed:
            return
        with self._lock:
            manager = running(graph)
            live = cluster_snapshot(manager) if manager is not None else None
            seen = (_structure(graph), live and {k: live[k] for k in ("state", "nodes")})
            if seen == self._seen:
                return
            self._seen = seen
            summary = f"Graph: {len(graph)} nodes, {graph.number_of_edges()} edges"
            if manager is not None and live is not None:
                summary += f" · Manager {manager.host}:{manager.port}: {live['state']}"
            with self.hold_sync():
                self.svg = graph_svg(graph, live)
                self.summary = summary
                self.problems = [] if manager is not None else _problems(graph)

    def _html(self) -> str:
        probs = "".join(f"<li>{html.escape(p)}</li>" for p in self.problems)
        return (f'<div class="chimera-graphview-static"><div><b>{html.escape(self.summary)}</b></div>{self.svg}'
                + (f'<ul style="color:#d32f2f">{probs}</ul>' if probs else "") + "</div>")

    def close(self) -> None:
        """Stop following the graph and close the widget."""
        if hasattr(self, "_refresher"):  # fully built (ipywidgets' __del__ calls close too)
            self._closed = True
            self._refresher.stop()
        super().close()


_VIEWS: weakref.WeakKeyDictionary[Any, GraphView] = weakref.WeakKeyDictionary()


def view_of(graph: Graph) -> GraphView:
    """The GraphView of `graph` (one per graph, made on first use, remade if it was closed)."""
    view = _VIEWS.get(graph)
    if view is None or view.comm is None:
        view = _VIEWS[graph] = GraphView(graph)
    return view

