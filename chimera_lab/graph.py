"""Graph: Nodes wired into a DAG (a networkx DiGraph), validated before anything runs."""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import networkx as nx

from .node import Node, has_custom_main

POLICIES = ("all", "latest")


class GraphError(ValueError):
    """The graph or its mapping onto workers is not valid; the message lists every problem."""


def _check_node(obj: Any, where: str) -> Node:
    if not isinstance(obj, Node):
        raise GraphError(f"{where}: only chimera_lab.Node instances can be graph nodes, got {obj!r}")
    if not hasattr(obj, "name") or not hasattr(obj, "on_error"):
        raise GraphError(
            f"{where}: {type(obj).__name__} did not call Node.__init__; add "
            "super().__init__(name=name) to its __init__"
        )
    return obj


def _step_signature_problem(node: Node, kind: str) -> str | None:
    """Why `node.step` cannot be called the way its place in the graph needs, if it cannot."""
    if has_custom_main(node):
        return None
    try:
        sig = inspect.signature(node.step)
    except (TypeError, ValueError):
        return None
    try:
        if kind == "source":
            sig.bind()
        else:
            sig.bind({})
    except TypeError:
        if kind == "source":
            return (f"node {node.name!r} is a source (nothing feeds it) but its step() needs arguments; "
                    "define step(self), or add the edge that feeds it")
        return (f"node {node.name!r} has inputs but its step() takes no data; define step(self, data) "
                "(data maps each upstream node's name to its DataChunk)")
    return None


class Graph(nx.DiGraph):
    """A DAG of Nodes: sources (no inputs), steps (in and out) and sinks (no outputs).

    ``add_edge(a, b, policy="all"|"latest", follow=False)``: ``"all"`` delivers every item with
    back-pressure; ``"latest"`` keeps only the newest (drops are counted). A node with several inputs
    steps when its followed input delivers (the first edge added, or the one with ``follow=True``),
    with the latest value of the others.
    """

    def add_node(self, node_for_adding: Any, **attr: Any) -> None:
        """Add a Node (names must be unique)."""
        node = _check_node(node_for_adding, "Graph.add_node")
        self._check_unique(node)
        super().add_node(node, **attr)

    def _check_unique(self, node: Node) -> None:
        for other in self.nodes:
            if other is not node and other.name == node.name:
                raise GraphError(f"Graph: two different nodes are named {node.name!r}; names must be unique")

    def add_nodes_from(self, nodes_for_adding: Iterable[Any], **attr: Any) -> None:
        """Add several Nodes."""
        for n in nodes_for_adding:
            if isinstance(n, tuple) and len(n) == 2 and isinstance(n[1], dict):
                self.add_node(n[0], **{**attr, **n[1]})
            else:
                self.add_node(n, **attr)

    def add_edge(self, u_of_edge: Any, v_of_edge: Any, policy: str = "all", follow: bool = False,
                 **attr: Any) -> None:
        """Wire `u`'s output into `v` with a delivery policy."""
        u = _check_node(u_of_edge, "Graph.add_edge")
        v = _check_node(v_of_edge, "Graph.add_edge")
        if policy not in POLICIES:
            raise GraphError(
                f"Graph.add_edge({u.name!r}, {v.name!r}): policy must be 'all' or 'latest', got {policy!r}"
            )
        if u is v:
            raise GraphError(f"Graph.add_edge: node {u.name!r} cannot feed itself")
        if u.name == v.name:
            raise GraphError(f"Graph: two different nodes are named {u.name!r}; names must be unique")
        for n in (u, v):
            if n not in self:
                self._check_unique(n)
        for n in (u, v):
            if n not in self:
                super().add_node(n)
        attr.pop("order", None)
        order = self[u][v]["order"] if self.has_edge(u, v) else self.in_degree(v)
        super().add_edge(u, v, policy=policy, follow=bool(follow), order=order, **attr)

    def add_edges_from(self, ebunch_to_add: Iterable[Sequence[Any]], **attr: Any) -> None:
        """Add several edges: (u, v) or (u, v, {attributes})."""
        for e in ebunch_to_add:
            if len(e) == 3:
                self.add_edge(e[0], e[1], **{**attr, **e[2]})
            else:
                self.add_edge(e[0], e[1], **attr)

    # -- saving and loading (chimera_lab.graph_io: the format, to_code) ----------------------------
    def to_json(self, mapping: Mapping[str, Iterable[Any]] | None = None, positions: Mapping[Any, Any] | None = None,
                indent: int | None = 2) -> str:
        """The graph as JSON: nodes (class, constructor arguments), edges, and optionally the mapping onto
        workers and node positions (default: ``self.graph["mapping"]`` / ``["positions"]``, if set)."""
        from .graph_io import to_json

        return to_json(self, mapping, positions, indent)

    @classmethod
    def from_json(cls, text: str | bytes, trust: bool = False) -> Graph:
        """The graph `to_json` wrote; its mapping and positions, if saved, are in ``graph.graph["mapping"]`` and
        ``graph.graph["positions"]``. Classes saved by value (defined in a notebook) run code from the text:
        they load only with ``trust=True`` — pass it only for files you wrote or trust."""
        from .graph_io import from_json

        return from_json(text, trust=trust, graph_class=cls)

    def save(self, path: str | os.PathLike[str], mapping: Mapping[str, Iterable[Any]] | None = None,
             positions: Mapping[Any, Any] | None = None, indent: int | None = 2) -> None:
        """Write `to_json` to the file `path`."""
        from .graph_io import save

        save(self, path, mapping, positions, indent)

    @classmethod
    def load(cls, path: str | os.PathLike[str], trust: bool = False) -> Graph:
        """`from_json` of the file `path` (same `trust` rule)."""
        from .graph_io import load

        return load(path, trust=trust, graph_class=cls)

    # -- display -----------------------------------------------------------------------------------
    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        """In a notebook: a live drawing of the graph (its GraphView, one per graph) that follows edits and,
        once committed, the running pipeline; a static picture and table for saved notebooks."""
        try:
            from .jupyter.graph_view import view_of
        except ImportError:  # no widget libraries: the static picture
            return {"text/html": self._repr_html_(), "text/plain": repr(self)}
        return view_of(self)._repr_mimebundle_(include=include, exclude=exclude)

    def _repr_html_(self) -> str:
        """A picture of the graph (SVG) and a table of its nodes (kind, class, rate, inputs)."""
        from html import escape

        from .jupyter.graph_svg import graph_svg

        rows = []
        for n in self.nodes:
            ins = ", ".join(f"{escape(i['src'])}{' (follow)' if i['follow'] and len(self.inputs(n)) > 1 else ''}"
                            f"{' [latest]' if i['policy'] == 'latest' else ''}" for i in self.inputs(n))
            rate = f"{n.rate_hz:g} Hz" if n.rate_hz else ""
            rows.append(f"<tr><td><b>{escape(n.name)}</b></td><td>{self.kind(n)}</td>"
                        f"<td><code>{escape(type(n).__name__)}</code></td><td>{rate}</td><td>{ins or '—'}</td></tr>")
        return (f'<div class="chimera-graph"><b>Graph</b>: {len(self)} nodes, {self.number_of_edges()} edges'
                f"<div>{graph_svg(self)}</div>"
                '<table><thead><tr><th>node</th><th>kind</th><th>class</th><th>rate</th><th>inputs</th></tr></thead>'
                f"<tbody>{''.join(rows)}</tbody></table></div>")

    def __repr__(self) -> str:
        edges = ", ".join(f"{u.name}->{v.name}" for u, v in self.edges)
        return f"<Graph {len(self)} nodes: {', '.join(self.node_names)}; edges: {edges or 'none'}>"

    # -- queries -----------------------------------------------------------------------------------
    @property
    def node_names(self) -> list[str]:
        """Names of all nodes, in insertion order."""
        return [n.name for n in self.nodes]

    def get_node(self, name: str) -> Node:
        """The node called `name`."""
        for n in self.nodes:
            if n.name == name:
                return n  # type: ignore[no-any-return]
        raise KeyError(f"the graph has no node named {name!r} (nodes: {', '.join(self.node_names) or 'none'})")

    def kind(self, node: Node) -> str:
        """'source' (no inputs), 'sink' (inputs, no outputs) or 'step'."""
        if self.in_degree(node) == 0:
            return "source"
        return "sink" if self.out_degree(node) == 0 else "step"

    def inputs(self, node: Node) -> list[dict[str, Any]]:
        """The input edges of `node` in order, the followed one marked."""
        edges = sorted(self.in_edges(node, data=True), key=lambda e: e[2].get("order", 0))
        follow = next((i for i, e in enumerate(edges) if e[2].get("follow")), 0)
        return [{"src": u.name, "policy": d.get("policy", "all"), "follow": i == follow}
                for i, (u, _, d) in enumerate(edges)]

    def validate(self, mapping: Mapping[str, Iterable[Any]] | None = None,
                 workers: Iterable[str] | None = None) -> dict[str, list[str]]:
        """Check the graph (and `mapping` onto `workers`); return the mapping by name or raise GraphError."""
        problems: list[str] = []
        names: dict[str, Node] = {}
        for n in self.nodes:
            if not isinstance(n, Node):
                problems.append(f"{n!r} is not a chimera_lab.Node")
                continue
            if n.name in names:
                problems.append(f"two different nodes are named {n.name!r}; names must be unique")
            names[n.name] = n
        if len(self) == 0:
            problems.append("the graph is empty; add nodes with graph.add_nodes_from([...])")
        if not nx.is_directed_acyclic_graph(self):
            cycle = " -> ".join(u.name for u, _ in nx.find_cycle(self))
            problems.append(f"the graph has a cycle ({cycle}); a pipeline must be a DAG")
        for v in self.nodes:
            problem = _step_signature_problem(v, self.kind(v)) if isinstance(v, Node) else None
            if problem:
                problems.append(problem)
            follows = [u.name for u, _, d in self.in_edges(v, data=True) if d.get("follow")]
            if len(follows) > 1:
                problems.append(
                    f"node {v.name!r} follows several inputs ({', '.join(follows)}); mark one edge follow=True"
                )
        by_name: dict[str, list[str]] = {}
        if mapping is not None:
            known = set(workers) if workers is not None else None
            placed: dict[str, str] = {}
            for worker, nodes in mapping.items():
                if isinstance(nodes, (str, Node)) or not isinstance(nodes, Iterable):
                    problems.append(f"mapping[{worker!r}] must be a list of node names, got {nodes!r}")
                    continue
                if known is not None and worker not in known:
                    problems.append(
                        f"mapping names worker {worker!r}, which is not connected "
                        f"(connected: {', '.join(sorted(known)) or 'none'})"
                    )
                by_name[worker] = []
                for item in nodes:
                    nm = item.name if isinstance(item, Node) else item
                    if nm not in names:
                        problems.append(f"mapping puts {nm!r} on worker {worker!r}, but the graph has no such node")
                        continue
                    if nm in placed:
                        problems.append(f"node {nm!r} is mapped to two workers ({placed[nm]!r} and {worker!r})")
                        continue
                    placed[nm] = worker
                    by_name[worker].append(nm)
            unplaced = [nm for nm in names if nm not in placed]
            if unplaced:
                problems.append(f"nodes not mapped to any worker: {', '.join(unplaced)}")
        if problems:
            raise GraphError("invalid graph: " + "; ".join(problems))
        return by_name
