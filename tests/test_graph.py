"""Unit tests for Graph (building, queries, validation and mapping onto workers) and Node construction."""

from __future__ import annotations

import math
import re
from typing import Any

import networkx as nx
import pytest

from chimera_lab.graph import Graph, GraphError
from chimera_lab.node import Node


def nodes(*names: str) -> list[Node]:
    return [Node(n) for n in names]


def pipeline() -> tuple[Graph, Node, Node, Node]:
    """src -> mid -> out"""
    src, mid, out = nodes("src", "mid", "out")
    g = Graph()
    g.add_edges_from([(src, mid), (mid, out)])
    return g, src, mid, out


class ForgotSuper(Node):
    def __init__(self, name: str) -> None:  # no super().__init__(...)
        self.label = name


# --------------------------------------------------------------------------------------------------
# building a graph
# --------------------------------------------------------------------------------------------------
def test_graph_is_a_networkx_digraph() -> None:
    g, src, mid, out = pipeline()
    assert isinstance(g, nx.DiGraph)
    assert list(nx.topological_sort(g)) == [src, mid, out]
    assert list(g.successors(src)) == [mid]
    assert list(g.predecessors(out)) == [mid]
    assert nx.is_directed_acyclic_graph(g)


def test_add_node_and_node_names_keep_insertion_order() -> None:
    g = Graph()
    for n in nodes("c", "a", "b"):
        g.add_node(n)
    assert g.node_names == ["c", "a", "b"]
    assert len(g) == 3


def test_adding_the_same_node_twice_is_harmless_and_updates_attributes() -> None:
    g = Graph()
    (a,) = nodes("a")
    g.add_node(a, color="red")
    g.add_node(a, size=2)
    assert len(g) == 1
    assert g.nodes[a] == {"color": "red", "size": 2}


def test_add_nodes_from_accepts_nodes_and_node_attribute_pairs() -> None:
    g = Graph()
    a, b, c = nodes("a", "b", "c")
    g.add_nodes_from([a, (b, {"x": 2}), c], x=1)
    assert g.node_names == ["a", "b", "c"]
    assert g.nodes[a] == {"x": 1}
    assert g.nodes[b] == {"x": 2}  # per-node attributes win


def test_add_edge_adds_missing_nodes_with_default_policy() -> None:
    g = Graph()
    a, b = nodes("a", "b")
    g.add_edge(a, b)
    assert g.node_names == ["a", "b"]
    assert g.edges[a, b]["policy"] == "all"
    assert g.edges[a, b]["follow"] is False


def test_add_edge_keeps_policy_follow_and_extra_attributes() -> None:
    g = Graph()
    a, b = nodes("a", "b")
    g.add_edge(a, b, policy="latest", follow=1, label="frames")  # type: ignore[arg-type]
    data = g.edges[a, b]
    assert data["policy"] == "latest"
    assert data["follow"] is True
    assert data["label"] == "frames"


def test_add_edges_from_accepts_pairs_and_triples_with_attributes() -> None:
    g = Graph()
    a, b, c, d = nodes("a", "b", "c", "d")
    g.add_edges_from([(a, b), (b, c, {"policy": "latest"}), (c, d, {"follow": True})])
    assert g.edges[a, b]["policy"] == "all"
    assert g.edges[b, c]["policy"] == "latest"
    assert g.edges[c, d]["follow"] is True and g.edges[c, d]["policy"] == "all"


def test_add_edges_from_applies_common_attributes_overridden_per_edge() -> None:
    g = Graph()
    a, b, c = nodes("a", "b", "c")
    g.add_edges_from([(a, c), (b, c, {"policy": "all"})], policy="latest")
    assert g.edges[a, c]["policy"] == "latest"
    assert g.edges[b, c]["policy"] == "all"


def test_a_valid_graph_validates_to_an_empty_mapping() -> None:
    g, *_ = pipeline()
    assert g.validate() == {}


# --------------------------------------------------------------------------------------------------
# errors while building
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("obj", [5, "cam", None, object()], ids=repr)
def test_add_node_rejects_non_nodes(obj: Any) -> None:
    g = Graph()
    with pytest.raises(GraphError) as exc:
        g.add_node(obj)
    msg = str(exc.value)
    assert msg.startswith("Graph.add_node: only chimera_lab.Node instances can be graph nodes")
    assert repr(obj) in msg
    assert len(g) == 0


def test_add_nodes_from_rejects_non_nodes() -> None:
    with pytest.raises(GraphError, match="only chimera_lab.Node instances"):
        Graph().add_nodes_from([Node("a"), "b"])


@pytest.mark.parametrize("where", ["source", "target"])
def test_add_edge_rejects_non_nodes_without_changing_the_graph(where: str) -> None:
    g = Graph()
    (a,) = nodes("a")
    args = (a, "b") if where == "target" else ("b", a)
    with pytest.raises(GraphError) as exc:
        g.add_edge(*args)
    msg = str(exc.value)
    assert msg.startswith("Graph.add_edge: only chimera_lab.Node instances can be graph nodes")
    assert "'b'" in msg
    assert len(g) == 0


def test_add_edges_from_rejects_non_nodes() -> None:
    with pytest.raises(GraphError, match=r"Graph.add_edge: only chimera_lab.Node .* got 3"):
        Graph().add_edges_from([(Node("a"), 3)])


def test_node_subclass_that_forgot_super_init_is_told_to_add_it() -> None:
    g = Graph()
    bad = ForgotSuper("x")
    with pytest.raises(GraphError) as exc:
        g.add_node(bad)
    msg = str(exc.value)
    assert "Graph.add_node" in msg
    assert "ForgotSuper did not call Node.__init__" in msg
    assert "add super().__init__(name=name) to its __init__" in msg
    with pytest.raises(GraphError, match=r"Graph.add_edge: ForgotSuper did not call Node.__init__"):
        g.add_edge(Node("ok"), bad)
    assert len(g) == 0


def test_duplicate_names_are_rejected() -> None:
    g = Graph()
    g.add_node(Node("cam"))
    with pytest.raises(GraphError) as exc:
        g.add_node(Node("cam"))
    assert "two different nodes are named 'cam'; names must be unique" in str(exc.value)
    assert len(g) == 1


def test_duplicate_names_are_rejected_through_add_edge() -> None:
    g = Graph()
    src = Node("cam")
    g.add_node(src)
    with pytest.raises(GraphError, match="two different nodes are named 'cam'"):
        g.add_edge(Node("cam"), Node("sink"))
    with pytest.raises(GraphError, match="two different nodes are named 'x'"):
        Graph().add_edge(Node("x"), Node("x"))


def test_self_loop_is_rejected() -> None:
    g = Graph()
    (a,) = nodes("loop")
    with pytest.raises(GraphError) as exc:
        g.add_edge(a, a)
    assert str(exc.value) == "Graph.add_edge: node 'loop' cannot feed itself"
    assert len(g) == 0 and g.number_of_edges() == 0


@pytest.mark.parametrize("policy", ["newest", "ALL", "", None])
def test_bad_policy_is_rejected_naming_both_nodes(policy: Any) -> None:
    g = Graph()
    a, b = nodes("cam", "blur")
    with pytest.raises(GraphError) as exc:
        g.add_edge(a, b, policy=policy)
    expected = f"Graph.add_edge('cam', 'blur'): policy must be 'all' or 'latest', got {policy!r}"
    assert str(exc.value) == expected
    assert len(g) == 0


def test_bad_policy_in_add_edges_from_is_rejected() -> None:
    a, b = nodes("a", "b")
    with pytest.raises(GraphError, match=r"Graph.add_edge\('a', 'b'\): policy must be"):
        Graph().add_edges_from([(a, b, {"policy": "fastest"})])


def test_graph_errors_are_value_errors() -> None:
    assert issubclass(GraphError, ValueError)


# --------------------------------------------------------------------------------------------------
# validate: graph problems
# --------------------------------------------------------------------------------------------------
def test_cycle_is_reported_showing_the_cycle() -> None:
    g = Graph()
    a, b, c = nodes("a", "b", "c")
    g.add_edges_from([(a, b), (b, c), (c, a)])
    with pytest.raises(GraphError) as exc:
        g.validate()
    msg = str(exc.value)
    assert msg.startswith("invalid graph: ")
    m = re.search(r"the graph has a cycle \((\w) -> (\w) -> (\w)\); a pipeline must be a DAG", msg)
    assert m is not None, msg
    assert sorted(m.groups()) == ["a", "b", "c"]


def test_two_node_cycle_behind_a_source_is_reported() -> None:
    g = Graph()
    s, x, y = nodes("s", "x", "y")
    g.add_edges_from([(s, x), (x, y), (y, x)])
    with pytest.raises(GraphError, match=r"cycle \((x -> y|y -> x)\)"):
        g.validate()


def test_two_followed_inputs_are_reported_naming_node_and_inputs() -> None:
    g = Graph()
    a, b, c = nodes("a", "b", "fuse")
    g.add_edge(a, c, follow=True)
    g.add_edge(b, c, follow=True)
    with pytest.raises(GraphError) as exc:
        g.validate()
    assert "node 'fuse' follows several inputs (a, b); mark one edge follow=True" in str(exc.value)


def test_empty_graph_is_reported_with_how_to_add_nodes() -> None:
    with pytest.raises(GraphError) as exc:
        Graph().validate()
    assert str(exc.value) == "invalid graph: the graph is empty; add nodes with graph.add_nodes_from([...])"


def test_validate_lists_every_problem_at_once() -> None:
    g = Graph()
    a, b, c, d = nodes("a", "b", "c", "d")
    g.add_edges_from([(a, b), (b, a), (c, d, {"follow": True})])
    g.add_node(Node("e"))
    g.add_edge(Node("f"), d, follow=True)
    with pytest.raises(GraphError) as exc:
        g.validate({"w1": ["a", "ghost"], "w2": ["a"], "w3": []}, workers=["w1", "w2"])
    msg = str(exc.value)
    for part in ("has a cycle", "node 'd' follows several inputs (c, f)", "'w3', which is not connected",
                 "mapping puts 'ghost' on worker 'w1'", "node 'a' is mapped to two workers",
                 "nodes not mapped to any worker: b, c, d, e, f"):
        assert part in msg, part


# --------------------------------------------------------------------------------------------------
# validate: mapping onto workers
# --------------------------------------------------------------------------------------------------
def test_mapping_values_may_be_nodes_or_names() -> None:
    g, src, mid, out = pipeline()
    by_name = g.validate({"w1": [src, "mid"], "w2": ("out",)}, workers=["w1", "w2", "w3"])
    assert by_name == {"w1": ["src", "mid"], "w2": ["out"]}


def test_mapping_keeps_workers_given_no_nodes() -> None:
    g, src, mid, out = pipeline()
    assert g.validate({"w1": [src, mid, out], "w2": []}) == {"w1": ["src", "mid", "out"], "w2": []}


def test_mapping_without_workers_list_accepts_any_worker_name() -> None:
    g, src, mid, out = pipeline()
    assert g.validate({"anything": [src, mid, out]}) == {"anything": ["src", "mid", "out"]}


def test_mapping_to_an_unknown_worker_lists_the_connected_ones() -> None:
    g, src, mid, out = pipeline()
    with pytest.raises(GraphError) as exc:
        g.validate({"gpu9": [src, mid, out]}, workers=["w2", "w1"])
    assert "mapping names worker 'gpu9', which is not connected (connected: w1, w2)" in str(exc.value)


def test_mapping_with_no_connected_workers_says_none() -> None:
    g, src, mid, out = pipeline()
    with pytest.raises(GraphError, match=r"which is not connected \(connected: none\)"):
        g.validate({"w1": [src, mid, out]}, workers=[])


@pytest.mark.parametrize("missing", ["nope", Node("stranger")], ids=["name", "node-not-in-graph"])
def test_mapping_an_unknown_node_is_reported(missing: Any) -> None:
    g, src, mid, out = pipeline()
    name = missing if isinstance(missing, str) else missing.name
    with pytest.raises(GraphError) as exc:
        g.validate({"w1": [src, mid, out, missing]})
    assert f"mapping puts {name!r} on worker 'w1', but the graph has no such node" in str(exc.value)


def test_node_mapped_to_two_workers_is_reported() -> None:
    g, src, mid, out = pipeline()
    with pytest.raises(GraphError) as exc:
        g.validate({"w1": [src, mid], "w2": ["mid", out]})
    assert "node 'mid' is mapped to two workers ('w1' and 'w2')" in str(exc.value)


def test_unmapped_nodes_are_listed() -> None:
    g, src, mid, out = pipeline()
    with pytest.raises(GraphError) as exc:
        g.validate({"w1": [mid]})
    assert "nodes not mapped to any worker: src, out" in str(exc.value)


# --------------------------------------------------------------------------------------------------
# queries
# --------------------------------------------------------------------------------------------------
def test_kind_tells_sources_steps_and_sinks() -> None:
    g, src, mid, out = pipeline()
    lone = Node("lone")
    g.add_node(lone)
    assert [g.kind(n) for n in (src, mid, out, lone)] == ["source", "step", "sink", "source"]


def test_inputs_follow_edge_insertion_order_and_mark_the_first_as_followed() -> None:
    g = Graph()
    z, a, m, sink = nodes("z", "a", "m", "sink")
    g.add_nodes_from([sink, a, m, z])  # node order differs from edge order
    g.add_edge(m, sink)
    g.add_edge(z, sink, policy="latest")
    g.add_edge(a, sink)
    assert g.inputs(sink) == [
        {"src": "m", "policy": "all", "follow": True},
        {"src": "z", "policy": "latest", "follow": False},
        {"src": "a", "policy": "all", "follow": False},
    ]


def test_inputs_mark_the_follow_true_edge() -> None:
    g = Graph()
    cam, lidar, imu, fuse = nodes("cam", "lidar", "imu", "fuse")
    g.add_edges_from([(cam, fuse, {"policy": "latest"}), (lidar, fuse, {"follow": True}), (imu, fuse)])
    assert g.inputs(fuse) == [
        {"src": "cam", "policy": "latest", "follow": False},
        {"src": "lidar", "policy": "all", "follow": True},
        {"src": "imu", "policy": "all", "follow": False},
    ]
    assert g.validate() == {}


def test_inputs_of_a_source_are_empty() -> None:
    g, src, _, _ = pipeline()
    assert g.inputs(src) == []


def test_get_node_finds_a_node_by_name() -> None:
    g, src, mid, out = pipeline()
    assert g.get_node("mid") is mid


def test_get_node_of_a_missing_name_lists_the_names() -> None:
    g, *_ = pipeline()
    with pytest.raises(KeyError) as exc:
        g.get_node("midd")
    assert "the graph has no node named 'midd' (nodes: src, mid, out)" in str(exc.value)
    with pytest.raises(KeyError, match=r"\(nodes: none\)"):
        Graph().get_node("x")


@pytest.mark.parametrize("op", ["copy", "reverse", "constructor"])
def test_graph_can_be_copied_with_networkx(op: str) -> None:
    g, src, mid, out = pipeline()
    h = Graph(g) if op == "constructor" else getattr(g, op)()
    assert isinstance(h, Graph) and len(h) == 3 and h.number_of_edges() == 2


def test_re_adding_an_edge_to_change_its_policy_keeps_the_followed_input() -> None:
    g = Graph()
    cam, lidar, fuse = nodes("cam", "lidar", "fuse")
    g.add_edge(cam, fuse)
    g.add_edge(lidar, fuse)
    g.add_edge(cam, fuse, policy="latest")
    assert g.inputs(fuse)[0] == {"src": "cam", "policy": "latest", "follow": True}


# --------------------------------------------------------------------------------------------------
# Node construction
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cam", "cam-1", "a.b", "A_9", "0"])
def test_node_accepts_names_of_letters_digits_underscore_dash_dot(name: str) -> None:
    n = Node(name)
    assert n.name == name and n.rate_hz is None and n.on_error == "continue"
    assert repr(n) == f"<Node {name!r}>"


@pytest.mark.parametrize("name", ["", "a b", 5, None, "a/b", "tab\t", "ü", b"cam"], ids=repr)
def test_node_rejects_bad_names(name: Any) -> None:
    with pytest.raises(ValueError) as exc:
        Node(name)
    assert str(exc.value) == (
        f"Node name must be a non-empty string of letters, digits, '_', '-' or '.', got {name!r}"
    )


def test_node_rejects_a_name_with_a_trailing_newline() -> None:
    with pytest.raises(ValueError, match="Node name must be"):
        Node("cam\n")


@pytest.mark.parametrize("rate", [0, -1, -0.5, "10", [30]], ids=repr)
def test_node_rejects_non_positive_or_non_numeric_rate(rate: Any) -> None:
    with pytest.raises(ValueError) as exc:
        Node("src", rate_hz=rate)
    expected = f"Node 'src': rate_hz must be a positive number of steps per second, got {rate!r}"
    assert str(exc.value) == expected


def test_node_rejects_nan_rate() -> None:
    with pytest.raises(ValueError, match="rate_hz must be a positive number"):
        Node("src", rate_hz=math.nan)


@pytest.mark.parametrize("rate", [30, 0.5, 1e-3])
def test_node_rate_is_stored_as_float(rate: float) -> None:
    n = Node("src", rate_hz=rate)
    assert n.rate_hz == float(rate) and isinstance(n.rate_hz, float)


@pytest.mark.parametrize("on_error", ["ignore", "STOP", "", None], ids=repr)
def test_node_rejects_bad_on_error(on_error: Any) -> None:
    with pytest.raises(ValueError) as exc:
        Node("n", on_error=on_error)
    assert str(exc.value) == f"Node 'n': on_error must be one of ('continue', 'stop'), got {on_error!r}"


def test_node_accepts_on_error_stop() -> None:
    assert Node("n", on_error="stop").on_error == "stop"


def test_step_signature_must_match_the_nodes_place() -> None:
    class NoData(Node):
        def step(self):  # type: ignore[override]
            return 1

    class NeedsData(Node):
        def step(self, data):  # type: ignore[override]
            return data

    g = Graph()
    g.add_edge(NeedsData("src"), NoData("sink"))
    with pytest.raises(GraphError) as info:
        g.validate()
    msg = str(info.value)
    assert "'src' is a source" in msg and "define step(self)" in msg
    assert "'sink' has inputs but its step() takes no data" in msg and "step(self, data)" in msg
    ok = Graph()
    ok.add_edge(NoData("src"), NeedsData("sink"))
    ok.validate()
