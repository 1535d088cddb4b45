"""A Graph as a picture: a layered layout (every edge points right) and an SVG of boxes and arrows.

Pure Python (networkx and the standard library): used by the live GraphView and by the static picture a Graph
shows where there are no widgets (a saved notebook, nbconvert, GitHub).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import networkx as nx

if TYPE_CHECKING:
    from ..graph import Graph

NODE_W, NODE_H = 176, 58  # a node's box (px)
GAP_X, GAP_Y, PAD = 56, 18, 10
LANE_H = 8  # the room an edge takes in a layer it crosses
KIND_FILL = {"source": "#e3f2fd", "step": "#f5f5f5", "sink": "#e8f5e9"}
GOOD, BAD = {"running", "recording", "finished"}, {"error", "crashed", "lost"}


@dataclass
class Layout:
    """Where everything goes: each node's top-left corner by name; for each edge that spans several layers, the
    points it passes through (one per layer in between, where the layout kept it a lane); the picture's size."""

    nodes: dict[str, tuple[float, float]]
    bends: dict[tuple[str, str], list[tuple[float, float]]]
    width: float
    height: float


def graph_layout(graph: Graph) -> Layout:
    """A layered layout: a layer per longest path from a source, so every edge of a DAG points right; an edge
    that skips layers gets a lane (a dummy node) in each layer it crosses, so it never runs through a box; within
    a layer, an order that keeps edges short (median of the neighbours, sweeping both ways). A graph with a cycle
    is laid out as if its back edges were not there (they are drawn as loops)."""
    g: nx.DiGraph[Any] = nx.DiGraph()
    g.add_nodes_from(n.name for n in graph.nodes)
    g.add_edges_from((u.name, v.name) for u, v in graph.edges)
    while not nx.is_directed_acyclic_graph(g):  # Graph.validate() refuses cycles; draw them anyway
        g.remove_edge(*nx.find_cycle(g)[-1][:2])
    layer: dict[Any, int] = {}
    for n in nx.topological_sort(g):
        layer[n] = max((layer[p] + 1 for p in g.predecessors(n)), default=0)
    lanes: dict[tuple[str, str], list[tuple[str, str, int]]] = {}
    for u, v in list(g.edges):  # split long edges into a chain through dummy nodes, one per layer crossed
        if layer[v] - layer[u] > 1:
            chain = [(u, v, k) for k in range(layer[u] + 1, layer[v])]
            g.remove_edge(u, v)
            nx.add_path(g, [u, *chain, v])
            layer.update({d: d[2] for d in chain})
            lanes[(u, v)] = chain
    layers: list[list[Any]] = [[] for _ in range(max(layer.values(), default=-1) + 1)]
    for n in g.nodes:  # insertion order first: a graph built left to right, top to bottom, stays that way
        layers[layer[n]].append(n)
    for sweep in range(6):  # alternate: order by the predecessors' places, then by the successors'
        forward = sweep % 2 == 0
        for i in range(1, len(layers)) if forward else range(len(layers) - 2, -1, -1):
            ref = {n: k for k, n in enumerate(layers[i - 1 if forward else i + 1])}
            here = {n: k for k, n in enumerate(layers[i])}
            nbrs = g.predecessors if forward else g.successors

            def key(n: Any, ref: dict[Any, int] = ref, here: dict[Any, int] = here, nbrs: Any = nbrs) -> float:
                near = sorted(ref[m] for m in nbrs(n) if m in ref)
                return near[len(near) // 2] if near else here[n]  # no neighbour there: keep its place

            layers[i].sort(key=key)

    def size(n: Any) -> float:
        return LANE_H if isinstance(n, tuple) else NODE_H

    column = [sum(size(n) for n in ns) + GAP_Y * max(len(ns) - 1, 0) for ns in layers]
    tallest = max(column, default=0.0)
    centre: dict[Any, tuple[float, float]] = {}
    for i, ns in enumerate(layers):
        y = PAD + (tallest - column[i]) / 2  # centre each layer vertically
        for n in ns:
            centre[n] = (PAD + i * (NODE_W + GAP_X) + NODE_W / 2, y + size(n) / 2)
            y += size(n) + GAP_Y
    return Layout(
        nodes={n: (x - NODE_W / 2, y - NODE_H / 2) for n, (x, y) in centre.items() if not isinstance(n, tuple)},
        bends={edge: [centre[d] for d in chain] for edge, chain in lanes.items()},
        width=2 * PAD + len(layers) * NODE_W + max(len(layers) - 1, 0) * GAP_X,
        height=2 * PAD + tallest)


def _route(points: list[tuple[float, float]]) -> str:
    """SVG path data from an edge's start, through the centres of its lanes, to its end: straight across each
    layer it crosses, an S-curve between layers."""
    (x, y), rest = points[0], points[1:]
    d = [f"M{x:.0f},{y:.0f}"]
    for k, (cx, cy) in enumerate(rest):
        last = k == len(rest) - 1
        tx = cx if last else cx - NODE_W / 2  # into the next lane at its left end, or into the target
        mid = (x + tx) / 2
        d.append(f"C{mid:.0f},{y:.0f} {mid:.0f},{cy:.0f} {tx:.0f},{cy:.0f}")
        if not last:
            x, y = cx + NODE_W / 2, cy
            d.append(f"L{x:.0f},{y:.0f}")
    return " ".join(d)


def fmt_number(value: Any, digits: int) -> str:
    """`value` with `digits` decimals, or "–" for None."""
    return "–" if value is None else f"{value:.{digits}f}"


def graph_svg(graph: Graph, live: dict[str, Any] | None = None) -> str:
    """An SVG picture of `graph`: boxes (name, class, kind colour), arrows (dashed for `latest`, bold for the
    followed input of a multi-input node). With `live` (a ``cluster_snapshot`` of the Manager running it), each
    box also shows its worker, state (outline colour), steps/s, p50 latency and an error count with the last
    traceback as its tooltip. Node and edge elements carry data-* attributes for tools and tests."""
    e = html.escape
    lay = graph_layout(graph)
    pos = lay.nodes
    nodes = (live or {}).get("nodes", {})
    width, height = lay.width, lay.height
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chimera-graph-svg" width="{width:.0f}" '
             f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif" font-size="12">',
             '<defs><marker id="chimera-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerUnits="userSpaceOnUse" '
             'markerWidth="9" markerHeight="9" orient="auto"><path d="M0,0L10,5L0,10z" fill="#555"/></marker></defs>']
    for v in graph.nodes:
        ins = graph.inputs(v)
        for i in ins:
            (x0, y0), (x1, y1) = pos[i["src"]], pos[v.name]
            ax, ay, bx, by = x0 + NODE_W, y0 + NODE_H / 2, x1, y1 + NODE_H / 2
            if bx <= ax:  # a back edge (only in a graph with a cycle): loop around below
                low = max(y0, y1) + NODE_H + GAP_Y / 2
                d = f"M{ax:.0f},{ay:.0f} C{ax + 40:.0f},{low:.0f} {bx - 40:.0f},{low:.0f} {bx:.0f},{by:.0f}"
            else:
                d = _route([(ax, ay), *lay.bends.get((i["src"], v.name), []), (bx, by)])
            followed = i["follow"] and len(ins) > 1
            style = ('stroke-dasharray="5,4" ' if i["policy"] == "latest" else "") + \
                f'stroke-width="{2.4 if followed else 1.4}"'
            label = f"{i['src']} → {v.name}: {i['policy']}{' (followed)' if followed else ''}"
            parts.append(f'<path class="chimera-gedge" data-src="{e(i["src"])}" data-dst="{e(v.name)}" '
                         f'data-policy="{i["policy"]}" d="{d}" fill="none" stroke="#555" {style} '
                         f'marker-end="url(#chimera-arrow)"><title>{e(label)}</title></path>')
    for n in graph.nodes:
        x, y = pos[n.name]
        kind = graph.kind(n)
        info = nodes.get(n.name)
        state = info["state"] if info else ""
        stroke = "#2e7d32" if state in GOOD else "#d32f2f" if state in BAD else "#9e9e9e"
        cls = type(n).__name__
        title = f"{n.name}: {cls} ({kind})" + (f", {n.rate_hz:g} Hz" if n.rate_hz else "")
        data = f'data-name="{e(n.name)}" data-kind="{kind}"'
        if info:
            data += f' data-state="{e(state)}" data-worker="{e(str(info["worker"]))}" data-rate="{info["rate"]}"'
            title += f"\non {info['worker']}: {state}"
        parts.append(f'<g class="chimera-gnode" {data} transform="translate({x:.0f},{y:.0f})"><title>{e(title)}</title>'
                     f'<rect width="{NODE_W}" height="{NODE_H}" rx="7" fill="{KIND_FILL[kind]}" stroke="{stroke}" '
                     f'stroke-width="{2.2 if info else 1.2}"/>'
                     f'<text x="9" y="18" font-weight="600">{e(_clip(n.name, 22))}</text>'
                     f'<text x="9" y="33" fill="#555">{e(_clip(cls, 26))}</text>')
        if info:
            line = f"{info['worker']} · {fmt_number(info['rate'], 1)}/s · p50 {fmt_number(info['p50'], 1)} ms"
            parts.append(f'<text x="9" y="49" fill="{stroke}" font-size="11">{e(_clip(line, 30))}</text>')
            if info["errors"]:
                tb = info.get("last_error") or ""
                parts.append(f'<g class="chimera-gerror" data-errors="{info["errors"]}"><title>{e(tb[-2000:])}</title>'
                             f'<circle cx="{NODE_W - 12}" cy="12" r="10" fill="#d32f2f"/>'
                             f'<text x="{NODE_W - 12}" y="16" fill="#fff" font-size="11" text-anchor="middle">'
                             f'{min(info["errors"], 99)}</text></g>')
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
