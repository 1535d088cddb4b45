"""A Graph drawn as boxes and arrows: the layout, the SVG, and the live GraphView a notebook shows."""

from __future__ import annotations

import random
import re
import xml.etree.ElementTree as ET

import pytest
from conftest import Cluster, wait_until

import chimera_lab as cp
from chimera_lab.jupyter.graph_svg import GAP_X, NODE_H, NODE_W, graph_layout, graph_svg
from chimera_lab.jupyter.graph_view import GraphView, view_of
from chimera_lab.nodes import EdgeDetect, Grayscale, NullSink, StatsSink, TestPatternSource

SVG = "{http://www.w3.org/2000/svg}"


class Pass(cp.Node):
    def step(self, data):
        return None


class Source(cp.Node):
    def step(self):
        return None


def random_dag(seed: int, n: int = 12, p: float = 0.25) -> cp.Graph:
    rng = random.Random(seed)
    nodes = [Source(name=f"n{i}") if i == 0 else Pass(name=f"n{i}") for i in range(n)]
    g = cp.Graph()
    g.add_node(nodes[0])
    for j in range(1, n):
        preds = [i for i in range(j) if rng.random() < p] or [rng.randrange(j)]
        for i in preds:
            g.add_edge(nodes[i], nodes[j], policy=rng.choice(["all", "latest"]))
    return g


def boxes(g: cp.Graph) -> dict[str, tuple[float, float]]:
    return graph_layout(g).nodes


@pytest.mark.parametrize("seed", range(8))
def test_layout_points_every_edge_right_and_never_through_a_box(seed: int) -> None:
    g = random_dag(seed)
    lay = graph_layout(g)
    assert set(lay.nodes) == set(g.node_names)
    for u, v in g.edges:
        assert lay.nodes[u.name][0] + NODE_W < lay.nodes[v.name][0], f"{u.name}->{v.name} does not point right"
    placed = list(lay.nodes.values())
    for i, a in enumerate(placed):  # no two boxes overlap
        for b in placed[i + 1:]:
            assert abs(a[0] - b[0]) >= NODE_W or abs(a[1] - b[1]) >= NODE_H
    for (u, v), points in lay.bends.items():  # the lanes of long edges keep out of every box
        assert len(points) == int(round((lay.nodes[v][0] - lay.nodes[u][0]) / (NODE_W + GAP_X))) - 1
        for x, y in points:
            for bx, by in placed:
                assert not (bx <= x <= bx + NODE_W and by <= y <= by + NODE_H), f"the lane of {u}->{v} hits a box"
    for x, y in placed:  # everything fits in the picture
        assert 0 <= x and x + NODE_W <= lay.width and 0 <= y and y + NODE_H <= lay.height


def test_layout_keeps_a_chain_straight_and_orders_to_avoid_crossings() -> None:
    a, b, c = Source(name="a"), Pass(name="b"), Pass(name="c")
    g = cp.Graph()
    g.add_edge(a, b)
    g.add_edge(b, c)
    pos = boxes(g)
    assert pos["a"][1] == pos["b"][1] == pos["c"][1]
    # two parallel chains whose second layer was added in crossed order come out uncrossed
    s1, s2, t1, t2 = Source(name="s1"), Source(name="s2"), Pass(name="t2"), Pass(name="t1")
    g2 = cp.Graph()
    g2.add_nodes_from([s1, s2, t1, t2])  # t2 before t1
    g2.add_edge(s1, g2.get_node("t1"))
    g2.add_edge(s2, g2.get_node("t2"))
    pos = boxes(g2)
    assert (pos["s1"][1] < pos["s2"][1]) == (pos["t1"][1] < pos["t2"][1])


def test_svg_draws_every_node_and_edge_with_policies() -> None:
    cam, gray, edges = TestPatternSource(name="cam"), Grayscale(name="gray"), EdgeDetect(name="edges")
    sink = NullSink(name="sink")
    g = cp.Graph()
    g.add_edge(cam, gray)
    g.add_edge(gray, edges)
    g.add_edge(edges, sink)
    g.add_edge(cam, sink, policy="latest")  # a long edge, not followed
    svg = graph_svg(g)
    root = ET.fromstring(svg)  # well-formed XML
    names = {e.get("data-name") for e in root.iter(f"{SVG}g") if e.get("class") == "chimera-gnode"}
    assert names == {"cam", "gray", "edges", "sink"}
    paths = {(e.get("data-src"), e.get("data-dst")): e for e in root.iter(f"{SVG}path")
             if e.get("class") == "chimera-gedge"}
    assert set(paths) == {("cam", "gray"), ("gray", "edges"), ("edges", "sink"), ("cam", "sink")}
    assert paths[("cam", "sink")].get("data-policy") == "latest" and paths[("cam", "sink")].get("stroke-dasharray")
    assert paths[("edges", "sink")].get("stroke-width") == "2.4"  # the followed input of a 2-input node
    assert " L" in paths[("cam", "sink")].get("d", "")  # runs along its lanes
    assert "TestPatternSource" in svg and "data-state" not in svg  # not running: no live values


def test_svg_shows_live_state_rate_latency_and_errors_escaped() -> None:
    a, b = Source(name="a"), Pass(name="b")
    g = cp.Graph()
    g.add_edge(a, b)
    live = {"state": "running", "nodes": {
        "a": {"state": "running", "worker": "w0", "rate": 29.9, "p50": 1.25, "errors": 0, "last_error": None},
        "b": {"state": "error", "worker": "w1", "rate": 0.0, "p50": None, "errors": 3,
              "last_error": "Traceback ...\nValueError: <bad>"}}}
    root = ET.fromstring(graph_svg(g, live))
    nodes = {e.get("data-name"): e for e in root.iter(f"{SVG}g") if e.get("class") == "chimera-gnode"}
    assert nodes["a"].get("data-state") == "running" and nodes["a"].get("data-worker") == "w0"
    assert nodes["a"].get("data-rate") == "29.9"
    text = " ".join(t.text or "" for t in nodes["a"].iter(f"{SVG}text"))
    assert "w0" in text and "29.9/s" in text and "p50 1.2" in text
    assert nodes["b"].find(f"{SVG}rect").get("stroke") == "#d32f2f"  # type: ignore[union-attr]
    badge = next(e for e in nodes["b"].iter(f"{SVG}g") if e.get("class") == "chimera-gerror")
    assert badge.get("data-errors") == "3" and "ValueError: <bad>" in badge.find(f"{SVG}title").text  # type: ignore


def test_a_cycle_is_drawn_not_refused() -> None:
    a, b = Pass(name="a"), Pass(name="b")
    g = cp.Graph()
    g.add_edge(a, b)
    g.add_edge(b, a)
    root = ET.fromstring(graph_svg(g))
    assert len([e for e in root.iter(f"{SVG}path") if e.get("class") == "chimera-gedge"]) == 2
    view = GraphView(g)
    try:
        assert any("cycle" in p for p in view.problems), view.problems
        assert "cycle" in view._repr_mimebundle_()[0]["text/html"]
    finally:
        view.close()


def test_displaying_a_graph_shows_one_live_view_with_a_picture_fallback() -> None:
    a, b = Source(name="a"), Pass(name="b")
    g = cp.Graph()
    g.add_edge(a, b)
    data, _ = g._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in data
    assert "<svg" in data["text/html"] and "2 nodes, 1 edges" in data["text/html"]
    view = view_of(g)
    assert data["application/vnd.jupyter.widget-view+json"]["model_id"] == view.model_id
    assert view_of(g) is view  # displayed again: the same view
    view.close()
    assert view_of(g) is not view  # closed: a new one
    view_of(g).close()
    assert "<svg" in g._repr_html_() and "<table>" in g._repr_html_()


def test_the_view_follows_edits_made_in_python() -> None:
    a, b = Source(name="a"), Pass(name="b")
    g = cp.Graph()
    g.add_edge(a, b)
    view = GraphView(g)
    try:
        assert view.summary == "Graph: 2 nodes, 1 edges" and not view.problems
        g.add_edge(b, Pass(name="c"))
        wait_until(lambda: 'data-name="c"' in view.svg, 3 * GraphView.PERIOD + 2, "the new node in the picture")
        assert view.summary == "Graph: 3 nodes, 2 edges"
        g.add_node(Pass(name="orphan"))  # has step(self, data) but no input: a problem, shown
        wait_until(lambda: any("orphan" in p for p in view.problems), 3 * GraphView.PERIOD + 2, "the problem")
    finally:
        view.close()
    assert not view._refresher.thread.is_alive()


def test_the_view_of_a_committed_graph_shows_the_pipeline_running(cluster: Cluster) -> None:
    cluster.worker("a")
    cluster.worker("b")
    src, sink = TestPatternSource(name="pattern", width=64, height=48, rate_hz=30), StatsSink(name="stats")
    g = cp.Graph()
    g.add_edge(src, sink)
    view = GraphView(g)
    try:
        assert "data-state" not in view.svg
        m = cluster.manager
        m.commit_graph(g, {"a": ["pattern"], "b": ["stats"]})
        m.start()

        def stats_rate() -> float:
            match = re.search(r'data-name="stats"[^>]*data-state="running"[^>]*data-rate="([\d.]+)"', view.svg)
            return float(match.group(1)) if match else 0.0

        wait_until(lambda: stats_rate() > 10, 15, "the view to show stats running at the camera's rate")
        assert 'data-worker="b"' in view.svg and f"{m.port}: running" in view.summary
        m.stop()
        wait_until(lambda: 'data-name="stats" data-kind="sink" data-state="stopped"' in view.svg, 10, "stopped")
    finally:
        view.close()


def test_the_view_of_a_forgotten_graph_stops_its_thread() -> None:
    import gc

    g = cp.Graph()
    g.add_node(Source(name="a"))
    view = GraphView(g)
    del g
    gc.collect()
    wait_until(lambda: not view._refresher.thread.is_alive(), 3 * GraphView.PERIOD + 2, "the refresher to end")
    assert view.graph is None and view.closed
