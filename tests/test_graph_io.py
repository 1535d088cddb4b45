"""Saving, loading and printing pipelines: Node.init_args, graph_io's JSON format, Graph.to_json/from_json/save/load,
and to_code."""

from __future__ import annotations

import copy
import enum
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest

import chimera_lab as cp
from chimera_lab.graph_io import (
    FORMAT,
    VERSION,
    UntrustedGraphError,
    call_arguments,
    graph_from_dict,
    graph_to_dict,
    import_path,
    to_code,
)
from chimera_lab.nodes import (
    EdgeDetect,
    GaussianBlur,
    Grayscale,
    NullSink,
    Resize,
    StatsSink,
    TestPatternSource,
    VideoFileSource,
)


# --------------------------------------------------------------------------------------------------
# nodes with unusual constructors (importable: this module is on sys.path)
# --------------------------------------------------------------------------------------------------
class Fixed(cp.Node):
    """No name parameter: the name is hard-coded."""

    def __init__(self, gain: float = 1.0) -> None:
        super().__init__("fixed")
        self.gain = gain


class Variadic(cp.Node):
    """*args and **kwargs, name keyword-only."""

    def __init__(self, *values: Any, name: str = "variadic", **options: Any) -> None:
        super().__init__(name)
        self.values = values
        self.options = options


class PositionalOnly(cp.Node):
    def __init__(self, name: str, size: int = 1, /, *, mode: str = "a") -> None:
        super().__init__(name)
        self.size, self.mode = size, mode


class ForwardsKwargs(cp.Node):
    """Passes everything on to Node.__init__."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)


class Nested:
    class Inner(cp.Node):
        pass


NOTEBOOK_CELL = """
import chimera_lab as cp

class Double(cp.Node):
    def __init__(self, name, factor=2):
        super().__init__(name)
        self.factor = factor

    def step(self, data):
        return self.factor * data["pattern"].get("index")["value"]

class Printer(cp.Node):
    def step(self, data):
        print(data)
"""


def notebook_classes() -> dict[str, Any]:
    """Classes defined as in a notebook cell: in a namespace whose __name__ is "__main__"."""
    ns: dict[str, Any] = {"__name__": "__main__"}
    exec(NOTEBOOK_CELL, ns)
    return {"Double": ns["Double"], "Printer": ns["Printer"]}


def describe(graph: cp.Graph) -> dict[str, Any]:
    """What a round trip must keep: nodes (name, class, init_args) in order, each node's inputs in order with
    policy and follow as set on the edge, and the graph attributes."""
    return {
        "nodes": [(n.name, type(n), n.init_args) for n in graph.nodes],
        "inputs": {n.name: [(u.name, d["policy"], d["follow"])
                            for u, _, d in sorted(graph.in_edges(n, data=True), key=lambda e: e[2]["order"])]
                   for n in graph.nodes},
        "attrs": dict(graph.graph),
    }


def builtin_graph() -> cp.Graph:
    """Every built-in node with non-default arguments; two inputs into `edges`, the second followed."""
    pattern = TestPatternSource("pattern", width=320, height=240, rate_hz=12.5, quality=70, frames=100)
    video = VideoFileSource("clip.1", path="media/clip.avi", loop=True, on_error="stop")
    gray = Grayscale("gray")
    small = Resize("small", width=160, height=120)
    blur = GaussianBlur("blur", ksize=7)
    edges = EdgeDetect("edges", low=10, high=80.5)
    g = cp.Graph()
    g.add_edge(pattern, small)
    g.add_edge(small, gray, policy="latest")
    g.add_edge(gray, edges)
    g.add_edge(video, blur)
    g.add_edge(blur, edges, policy="latest", follow=True)
    g.add_edge(edges, StatsSink("stats"))
    g.add_node(NullSink())
    return g


# --------------------------------------------------------------------------------------------------
# Node.init_args
# --------------------------------------------------------------------------------------------------
def test_init_args_are_the_given_arguments_by_name_with_the_name_always_included() -> None:
    assert TestPatternSource("p", width=32, height=24).init_args == {"name": "p", "width": 32, "height": 24}
    assert TestPatternSource("p", 32).init_args == {"name": "p", "width": 32}  # positional → by name
    assert StatsSink().init_args == {"name": "stats"}  # the default name is recorded
    assert cp.Node("x", rate_hz=2).init_args == {"name": "x", "rate_hz": 2}
    assert VideoFileSource(path="a.avi").init_args == {"name": "video", "path": "a.avi"}


def test_init_args_of_unusual_signatures() -> None:
    assert Fixed().init_args == {}
    assert Fixed(3).init_args == {"gain": 3}
    v = Variadic(1, 2, name="v", colour="red", name2="x")
    assert v.init_args == {"*values": (1, 2), "name": "v", "colour": "red", "name2": "x"}
    assert Variadic().init_args == {"name": "variadic"}
    assert PositionalOnly("p", 3, mode="b").init_args == {"name": "p", "size": 3, "mode": "b"}
    assert ForwardsKwargs("f", on_error="stop").init_args == {"*args": ("f",), "on_error": "stop"}
    assert ForwardsKwargs(name="f").init_args == {"name": "f"}


def test_init_args_is_a_fresh_dict_and_not_an_attribute_of_the_instance() -> None:
    n = Fixed(2)
    n.init_args["gain"] = 5
    assert n.init_args == {"gain": 2}
    assert "init_args" not in vars(n)


@pytest.mark.parametrize("dumps, loads", [(pickle.dumps, pickle.loads), (cloudpickle.dumps, cloudpickle.loads),
                                          (copy.deepcopy, lambda x: x)])
def test_init_args_survive_pickling_and_copying(dumps: Any, loads: Any) -> None:
    for node in (TestPatternSource("p", width=32), Variadic(1, name="v", extra=[1]), Fixed(4)):
        again = loads(dumps(node))
        assert type(again) is type(node) and again.name == node.name
        assert again.init_args == node.init_args


def test_notebook_nodes_pickle_by_value_with_their_init_args() -> None:
    double = notebook_classes()["Double"]("d", factor=3)
    again = pickle.loads(cloudpickle.dumps(double))
    assert again.init_args == {"name": "d", "factor": 3} and again.factor == 3


# --------------------------------------------------------------------------------------------------
# JSON round trips
# --------------------------------------------------------------------------------------------------
def test_builtin_graph_round_trips_through_json() -> None:
    g = builtin_graph()
    text = g.to_json()
    d = json.loads(text)
    assert d["format"] == FORMAT and d["version"] == VERSION
    assert d["nodes"][0] == {"name": "pattern", "class": "chimera_lab.nodes:TestPatternSource",
                             "args": {"name": "pattern", "width": 320, "height": 240, "rate_hz": 12.5,
                                      "quality": 70, "frames": 100}}
    assert "by_value" not in text and "mapping" not in d and "python" not in d
    assert [(e["src"], e["dst"]) for e in d["edges"] if e["dst"] == "edges"] == [("gray", "edges"), ("blur", "edges")]
    g2 = cp.Graph.from_json(text)
    assert type(g2) is cp.Graph
    assert describe(g2) == describe(g)
    assert g2.inputs(g2.get_node("edges")) == g.inputs(g.get_node("edges"))
    g2.validate()


def test_edge_order_follow_and_policy_round_trip() -> None:
    a, b, c, d = (cp.Node(n) for n in "abcd")
    g = cp.Graph()
    g.add_edge(c, d, policy="latest")
    g.add_edge(a, d, follow=True)
    g.add_edge(b, d, policy="latest")
    g.add_edge(a, c)
    g2 = cp.Graph.from_json(g.to_json())
    assert describe(g2) == describe(g)
    assert [i["src"] for i in g2.inputs(g2.get_node("d"))] == ["c", "a", "b"]
    assert g2.edges[g2.get_node("c"), g2.get_node("d")]["follow"] is False  # only the marked edge follows


def test_mapping_and_positions_round_trip_via_graph_attributes() -> None:
    g = builtin_graph()
    names = g.node_names
    mapping = {"w1": names[:3], "w2": [g.get_node(n) for n in names[3:]]}  # names or Nodes
    positions = {names[0]: (0, 1.5), g.get_node(names[1]): np.array([2.0, 3.0])}
    g2 = cp.Graph.from_json(g.to_json(mapping=mapping, positions=positions))
    assert g2.graph == {"mapping": {"w1": names[:3], "w2": names[3:]},
                        "positions": {names[0]: [0, 1.5], names[1]: [2.0, 3.0]}}
    g2.validate(g2.graph["mapping"])
    # saving again keeps them (they default to the graph attributes); graph_from_dict returns them
    again, mapping2, positions2 = graph_from_dict(graph_to_dict(g2))
    assert mapping2 == g2.graph["mapping"] and positions2 == g2.graph["positions"]
    assert "mapping" not in again.graph  # graph_from_dict returns them instead of attaching them
    assert graph_from_dict(graph_to_dict(g))[1:] == (None, None)


def test_mapping_and_positions_must_name_nodes_of_the_graph() -> None:
    g = builtin_graph()
    with pytest.raises(cp.GraphError, match=r"mapping puts 'ghost' on worker 'w1', but the graph has no such node"):
        g.to_json(mapping={"w1": ["pattern", "ghost"]})
    with pytest.raises(cp.GraphError, match=r"mapping\['w1'\] must be a list of node names"):
        g.to_json(mapping={"w1": "pattern"})
    with pytest.raises(cp.GraphError, match=r"positions\['pattern'\] must be \[x, y\]"):
        g.to_json(positions={"pattern": (1, float("nan"))})
    with pytest.raises(cp.GraphError, match="has a position for 'ghost'"):
        g.to_json(positions={"ghost": (1, 2)})


def test_unusual_constructors_round_trip() -> None:
    g = cp.Graph()
    nodes = [Fixed(0.5), Variadic(1, 2, name="v", colour="red"), PositionalOnly("p", 3, mode="b"),
             ForwardsKwargs("f", on_error="stop"), Nested.Inner("inner"), cp.Node("plain", rate_hz=5)]
    g.add_nodes_from(nodes)
    d = graph_to_dict(g)
    assert [n["class"] for n in d["nodes"]] == [
        "test_graph_io:Fixed", "test_graph_io:Variadic", "test_graph_io:PositionalOnly",
        "test_graph_io:ForwardsKwargs", "test_graph_io:Nested.Inner", "chimera_lab:Node"]
    assert d["nodes"][1]["args"] == {"*values": [1, 2], "name": "v", "colour": "red"}  # the tuple became a list
    g2, _, _ = graph_from_dict(d)
    rebuilt = describe(g2)
    rebuilt["nodes"][1][2]["*values"] = tuple(rebuilt["nodes"][1][2]["*values"])
    assert rebuilt == describe(g)
    assert g2.get_node("v").values == (1, 2) and g2.get_node("p").size == 3


def test_call_arguments_use_keywords_except_name_positional_only_and_star_args() -> None:
    assert call_arguments(Resize, {"name": "r", "width": 1, "height": 2}) == (["r"], {"width": 1, "height": 2})
    assert call_arguments(Fixed, {"gain": 2}) == ([], {"gain": 2})
    assert call_arguments(Variadic, {"*values": [1], "name": "v"}) == ([1], {"name": "v"})
    assert call_arguments(PositionalOnly, {"name": "p", "mode": "b"}) == (["p"], {"mode": "b"})
    assert call_arguments(PositionalOnly, {"name": "p", "size": 3}) == (["p", 3], {})


def test_a_node_renamed_after_construction_keeps_its_name() -> None:
    n = StatsSink()
    n.name = "renamed"
    g = cp.Graph()
    g.add_node(n)
    g2 = cp.Graph.from_json(g.to_json())
    assert g2.node_names == ["renamed"] and g2.get_node("renamed").init_args == {"name": "stats"}


def test_save_and_load_files(tmp_path: Path) -> None:
    g = builtin_graph()
    path = tmp_path / "pipeline.json"
    g.save(path, mapping={"w": g.node_names})
    g2 = cp.Graph.load(path)
    assert describe(g2)["inputs"] == describe(g)["inputs"]
    assert g2.graph["mapping"] == {"w": g.node_names}
    path.write_text("{", encoding="utf-8")
    with pytest.raises(cp.GraphError, match=r"pipeline\.json: not a chimera_lab graph: invalid JSON"):
        cp.Graph.load(path)


def test_from_json_on_a_graph_subclass_makes_that_subclass() -> None:
    class MyGraph(cp.Graph):
        pass

    assert type(MyGraph.from_json(builtin_graph().to_json())) is MyGraph


# --------------------------------------------------------------------------------------------------
# by-value classes and trust
# --------------------------------------------------------------------------------------------------
def notebook_graph() -> tuple[cp.Graph, dict[str, Any]]:
    classes = notebook_classes()
    pattern = TestPatternSource("pattern", frames=3)
    d1, d2 = classes["Double"]("double", factor=3), classes["Double"]("double2")
    printer = classes["Printer"]("printer")
    g = cp.Graph()
    g.add_edge(pattern, d1)
    g.add_edge(pattern, d2, policy="latest")
    g.add_edge(d1, printer)
    g.add_edge(d2, printer)
    return g, classes


def test_notebook_classes_go_by_value_and_need_trust() -> None:
    g, classes = notebook_graph()
    d = graph_to_dict(g)
    assert import_path(classes["Double"]) is None and import_path(TestPatternSource) is not None
    assert [n["class"] for n in d["nodes"]] == [
        "chimera_lab.nodes:TestPatternSource", "__main__:Double", "__main__:Double", "__main__:Printer"]
    assert "by_value" not in d["nodes"][0] and d["nodes"][1]["by_value"] == d["nodes"][2]["by_value"]
    assert d["python"].startswith(f"{sys.version_info[0]}.{sys.version_info[1]}.")
    text = json.dumps(d)
    with pytest.raises(UntrustedGraphError) as err:
        cp.Graph.from_json(text)
    msg = str(err.value)
    assert "__main__:Double (nodes 'double', 'double2')" in msg and "__main__:Printer (nodes 'printer')" in msg
    assert "trust=True only for files you wrote or trust" in msg
    assert isinstance(err.value, cp.GraphError)
    g2 = cp.Graph.from_json(text, trust=True)
    assert describe(g2) == describe(g)
    assert type(g2.get_node("double")) is type(g2.get_node("double2"))  # one class, unpickled once


def test_classes_defined_in_a_function_or_an_unimportable_module_go_by_value() -> None:
    class Local(cp.Node):
        pass

    module = types.ModuleType("not_on_sys_path")
    exec("import chimera_lab as cp\nclass Elsewhere(cp.Node):\n    pass\n", module.__dict__)
    g = cp.Graph()
    g.add_nodes_from([Local("local"), module.Elsewhere("elsewhere")])
    d = graph_to_dict(g)
    assert [n["class"] for n in d["nodes"]] == [
        "test_graph_io:test_classes_defined_in_a_function_or_an_unimportable_module_go_by_value.<locals>.Local",
        "not_on_sys_path:Elsewhere"]
    assert all("by_value" in n for n in d["nodes"])
    g2, _, _ = graph_from_dict(d, trust=True)
    assert describe(g2) == describe(g)


def test_by_value_classes_load_in_a_fresh_interpreter(tmp_path: Path) -> None:
    g, _ = notebook_graph()
    path = tmp_path / "nb.json"
    g.save(path)
    script = textwrap.dedent(f"""
        import chimera_lab as cp
        g = cp.Graph.load({str(path)!r}, trust=True)
        d = g.get_node("double")
        print(type(d).__name__, d.init_args, d.factor, [i["src"] for i in g.inputs(g.get_node("printer"))])
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Double {'name': 'double', 'factor': 3} 3 ['double', 'double2']"


def test_import_path_classes_must_be_node_subclasses() -> None:
    d = graph_to_dict(builtin_graph())
    d["nodes"][0]["class"] = "collections:OrderedDict"
    with pytest.raises(cp.GraphError, match=r"nodes\[0\] \('pattern'\): 'collections:OrderedDict' is .*not a "
                                            r"subclass of chimera_lab\.Node"):
        graph_from_dict(d)
    d["nodes"][0]["class"] = "no_such_module_xyz:Thing"
    with pytest.raises(cp.GraphError, match=r"cannot import module 'no_such_module_xyz'.*install it"):
        graph_from_dict(d)
    d["nodes"][0]["class"] = "chimera_lab.nodes:NoSuchNode"
    with pytest.raises(cp.GraphError, match=r"module 'chimera_lab.nodes' has no 'NoSuchNode'"):
        graph_from_dict(d)


# --------------------------------------------------------------------------------------------------
# constructor arguments that are not JSON
# --------------------------------------------------------------------------------------------------
class Holder(cp.Node):
    def __init__(self, name: str, value: Any = None) -> None:
        super().__init__(name)
        self.value = value


def saved_value(value: Any) -> Any:
    g = cp.Graph()
    g.add_node(Holder("h", value=value))
    return graph_to_dict(g)["nodes"][0]["args"]["value"]


def test_json_compatible_arguments_are_converted() -> None:
    assert saved_value((1, (2, 3))) == [1, [2, 3]]
    assert saved_value({"k": [np.float32(0.5), np.int64(3), np.bool_(True)]}) == {"k": [0.5, 3, True]}
    assert type(saved_value(np.int64(3))) is int
    assert saved_value(Path("a") / "b") == str(Path("a") / "b")
    assert saved_value(None) is None and saved_value("é") == "é"
    assert type(saved_value(Colour.RED)) is str and saved_value(Size.BIG) == 2


class Colour(str, enum.Enum):
    RED = "red"


class Size(enum.IntEnum):
    BIG = 2


@pytest.mark.parametrize("value, where, hint", [
    (np.zeros(3), r"argument 'value' is a ndarray", r"file path, and load an array from it in prep\(\)"),
    ({"a": [1, {2, 3}]}, r"argument 'value'\['a'\]\[1\] is a set", "constructor arguments must be JSON data"),
    ({1: "x"}, r"argument 'value' has the key 1", "use str keys"),
    (float("nan"), r"argument 'value' is nan", "finite number or None"),
    (object(), r"argument 'value' is a object", r"load an object from it in prep\(\)"),
])
def test_non_json_arguments_are_refused_naming_the_node_and_argument(value: Any, where: str, hint: str) -> None:
    with pytest.raises(cp.GraphError, match=rf"node 'h' \(Holder\): {where}") as err:
        saved_value(value)
    assert err.match(hint)
    g = cp.Graph()
    g.add_node(Holder("h", value=value))
    with pytest.raises(cp.GraphError, match=where):
        to_code(g)


# --------------------------------------------------------------------------------------------------
# malformed files
# --------------------------------------------------------------------------------------------------
def good() -> dict[str, Any]:
    return graph_to_dict(builtin_graph())


@pytest.mark.parametrize("edit, message", [
    (lambda d: [], "expected a JSON object, got list"),
    (lambda d: {**d, "format": "other"}, "'format' is 'other', expected 'chimera_lab.graph'"),
    (lambda d: {**d, "version": VERSION + 1}, "reads up to version 1; upgrade chimera_lab"),
    (lambda d: {**d, "version": "1"}, "'version' must be a positive int"),
    (lambda d: {k: v for k, v in d.items() if k != "nodes"}, "graph: the key 'nodes' is missing"),
    (lambda d: {**d, "nodes": [*d["nodes"], 3]}, r"nodes\[8\] must be an object, got int"),
    (lambda d: {**d, "nodes": [*d["nodes"], {"name": "x", "class": "a:B", "args": []}]},
     r"nodes\[8\] \('x'\): 'args' must be dict, got list"),
    (lambda d: {**d, "nodes": [*d["nodes"], {"name": "x y", "class": "a:B"}]}, r"nodes\[8\] \('x y'\): node names"),
    (lambda d: {**d, "nodes": [*d["nodes"], {"name": "x", "class": "B"}]}, "'class' must be 'module:QualName'"),
    (lambda d: {**d, "nodes": [*d["nodes"], d["nodes"][0]]}, "two nodes are named 'pattern'"),
    (lambda d: {**d, "nodes": [*d["nodes"], {"name": "x", "class": "a:B", "by_value": "%%"}]}, "is not base64"),
    (lambda d: {**d, "edges": [{"src": "pattern", "dst": "ghost"}]},
     r"edges\[0\] \('pattern' -> 'ghost'\): there is no node named 'ghost'"),
    (lambda d: {**d, "edges": [{"src": "pattern", "dst": "small", "policy": "newest"}]},
     "'policy' must be 'all' or 'latest', got 'newest'"),
    (lambda d: {**d, "edges": [{"src": "pattern", "dst": "small", "follow": 1}]}, "'follow' must be bool, got int"),
    (lambda d: {**d, "edges": [{"src": "pattern", "dst": "pattern"}]}, r"edges\[0\].*cannot feed itself"),
    (lambda d: {**d, "mapping": {"w": ["nobody"]}}, "mapping puts 'nobody' on worker 'w'"),
    (lambda d: {**d, "nodes": [{**d["nodes"][0], "args": {"width": -1}}, *d["nodes"][1:]]},
     r"nodes\[0\] \('pattern'\): building chimera_lab.nodes:TestPatternSource with args \{'width': -1\} failed: "
     "ValueError: .*width must be a positive int"),
])
def test_malformed_graphs_say_what_is_wrong_and_where(edit: Any, message: str) -> None:
    with pytest.raises(cp.GraphError, match=message):
        graph_from_dict(edit(good()))


def test_invalid_json_text() -> None:
    with pytest.raises(cp.GraphError, match=r"invalid JSON \(Expecting .* line 1 column"):
        cp.Graph.from_json('{"format": ')


# --------------------------------------------------------------------------------------------------
# to_code
# --------------------------------------------------------------------------------------------------
def run_code(code: str, namespace: dict[str, Any] | None = None) -> dict[str, Any]:
    ns = dict(namespace or {})
    exec(compile(code, "<to_code>", "exec"), ns)
    return ns


def test_to_code_prints_readable_python() -> None:
    g = builtin_graph()
    code = to_code(g, mapping={"w1": g.node_names[:4], "w2": g.node_names[4:]})
    assert code == textwrap.dedent('''\
        import chimera_lab as cp
        from chimera_lab.nodes import (
            EdgeDetect,
            GaussianBlur,
            Grayscale,
            NullSink,
            Resize,
            StatsSink,
            TestPatternSource,
            VideoFileSource,
        )

        pattern = TestPatternSource("pattern", width=320, height=240, rate_hz=12.5, quality=70, frames=100)
        small = Resize("small", width=160, height=120)
        gray = Grayscale("gray")
        edges = EdgeDetect("edges", low=10, high=80.5)
        clip_1 = VideoFileSource("clip.1", path="media/clip.avi", loop=True, on_error="stop")
        blur = GaussianBlur("blur", ksize=7)
        stats = StatsSink("stats")
        null = NullSink("null")

        graph = cp.Graph()
        graph.add_node(null)
        graph.add_edge(pattern, small)
        graph.add_edge(small, gray, policy="latest")
        graph.add_edge(gray, edges)
        graph.add_edge(blur, edges, policy="latest", follow=True)
        graph.add_edge(clip_1, blur)
        graph.add_edge(edges, stats)
        mapping = {"w1": ["pattern", "small", "gray", "edges"], "w2": ["clip.1", "blur", "stats", "null"]}
    ''')


def test_to_code_round_trip_with_builtin_and_unusual_nodes() -> None:
    g = builtin_graph()
    extra = [Fixed(0.5), Variadic(1, 2, name="v", colour="red"), PositionalOnly("p", 3, mode="b"),
             ForwardsKwargs("f", on_error="stop"), Nested.Inner("inner")]
    g.add_edge(extra[0], extra[1])
    g.add_nodes_from(extra[2:])
    mapping = {"w": g.node_names}
    code = to_code(g, mapping=mapping)
    assert "from test_graph_io import Fixed, ForwardsKwargs, Nested, PositionalOnly, Variadic\n" in code
    assert "inner = Nested.Inner(\"inner\")" in code and 'v = Variadic(1, 2, name="v", colour="red")' in code
    ns = run_code(code)
    rebuilt = ns["graph"]
    original = describe(g)
    original["nodes"] = sorted(original["nodes"], key=lambda n: n[0])
    result = describe(rebuilt)
    result["nodes"] = sorted(result["nodes"], key=lambda n: n[0])
    assert result == original
    assert ns["mapping"] == mapping


def test_to_code_round_trip_with_notebook_classes() -> None:
    g, classes = notebook_graph()
    code = to_code(g, graph_var="pipeline")
    assert "# Double, Printer: defined in the notebook, not importable; run the cell(s) that define them" in code
    assert "from __main__" not in code and "mapping" not in code
    ns = run_code(code, classes)
    assert describe(ns["pipeline"]) == describe(g)
    g.graph["mapping"] = {"w": g.node_names}
    assert "mapping" not in to_code(g)  # only a mapping passed to to_code is printed


def test_to_code_makes_valid_unique_variable_names() -> None:
    g = cp.Graph()
    names = ["a-b", "a_b", "1st", "class", "cp", "graph", "mapping", "StatsSink"]
    g.add_nodes_from(StatsSink(n) for n in names)
    code = to_code(g, mapping={"w": names})
    for line in ("a_b = ", "a_b_2 = ", "n_1st = ", "class_2 = ", "cp_2 = ", "graph_2 = ", "mapping_2 = ",
                 "StatsSink_2 = "):
        assert f"\n{line}StatsSink(" in code
    ns = run_code(code)
    assert ns["graph"].node_names == names and ns["mapping"] == {"w": names}


def test_to_code_aliases_classes_with_the_same_name() -> None:
    g = cp.Graph()
    module = types.ModuleType("other_nodes")
    exec("import chimera_lab as cp\nclass Fixed(cp.Node):\n    pass\n", module.__dict__)
    sys.modules["other_nodes"] = module
    try:
        g.add_nodes_from([Fixed(), module.Fixed("other")])
        code = to_code(g)
        assert "from other_nodes import Fixed as Fixed_2\nfrom test_graph_io import Fixed\n" in code
        ns = run_code(code)
        assert [type(n) for n in ns["graph"].nodes] == [Fixed, module.Fixed]
    finally:
        del sys.modules["other_nodes"]


def test_to_code_wraps_long_lines_and_is_ruff_clean(tmp_path: Path) -> None:
    g = cp.Graph()
    g.add_node(Holder("long", value={"key": "x" * 150, "items": list(range(10))}))
    g.add_node(Holder("short", value=[1, 2]))
    code = to_code(g, mapping={"w" * 30: ["long"], "v" * 30: ["short"], "u" * 30: []})
    assert 'long = Holder(\n    "long",\n    value={"key": ' in code
    assert "mapping = {\n" in code
    ns = run_code(code)
    assert ns["long"].init_args == g.get_node("long").init_args
    beside = Path(sys.executable).parent / "ruff"  # the test tools' ruff (make runs .venv/bin/pytest, not on PATH)
    ruff = str(beside) if beside.exists() else shutil.which("ruff")
    if ruff is None:
        if os.environ.get("CI"):
            pytest.fail("CI must check the generated code with ruff: pip install ruff (a test dependency)")
        pytest.skip("ruff is not installed")
    path = tmp_path / "pipeline.py"
    path.write_text(code, encoding="utf-8")
    out = subprocess.run([ruff, "check", "--isolated", "--line-length", "120", "--select", "E,F,W,B,UP", str(path)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
