"""GraphEditor's Python side: the operations the canvas sends, undo/redo, sync both ways, the palette and its
forms, validation, and commit/start/view on real workers. Front-end messages are simulated by calling the
handler the canvas registered (the browser tests drive the real canvas)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from conftest import Cluster, wait_until

import chimera_lab as cp
from chimera_lab.jupyter.graph_editor import PERIOD, GraphEditor, class_key, class_params, coerce_args
from chimera_lab.nodes import EdgeDetect, Grayscale, NullSink, StatsSink, TestPatternSource

_ids = itertools.count(1)


def op(editor: GraphEditor, kind: str, /, **fields: Any) -> dict[str, Any]:
    """Send an operation as the canvas does; return the editor's answer (the `status` trait)."""
    rid = next(_ids)
    editor.canvas._handle_custom_msg({"type": "op", "id": rid, "op": kind, **fields}, [])
    if kind == "command":
        wait_until(lambda: editor.canvas.status.get("id") == rid, 60, f"the answer to {fields}")
    status = dict(editor.canvas.status)
    assert status["id"] == rid
    return status


def shape(graph: cp.Graph) -> tuple[Any, ...]:
    """A graph's nodes (name, class) and edges (src, dst, policy, followed), comparable."""
    nodes = sorted((n.name, type(n).__name__) for n in graph.nodes)
    edges = sorted((i["src"], v.name, i["policy"], i["follow"]) for v in graph.nodes for i in graph.inputs(v))
    return nodes, edges


PATTERN = class_key(TestPatternSource)
GRAY = class_key(Grayscale)
SINK = class_key(NullSink)


@pytest.fixture
def editor():
    e = GraphEditor()
    yield e
    e.close()


def test_the_palette_lists_builtin_nodes_with_their_forms(editor: GraphEditor) -> None:
    entries = {p["key"]: p for p in editor.canvas.palette}
    assert {PATTERN, GRAY, SINK, class_key(EdgeDetect)} <= set(entries)
    params = {p["name"]: p for p in entries[PATTERN]["params"]}
    assert "name" not in params
    # no default in the form: left empty, the frame size is the session's (640×480 unless %chimera up chose less)
    assert params["width"] == {"name": "width", "kind": "int", "required": False, "default": None}
    assert params["rate_hz"]["kind"] == "float" and params["rate_hz"]["default"] == 30.0
    assert entries[PATTERN]["builtin"] and entries[PATTERN]["label"] == "TestPatternSource"
    assert entries[PATTERN]["doc"]


def test_forms_check_values_and_name_what_is_wrong() -> None:
    assert coerce_args(TestPatternSource, {"width": 320.0, "rate_hz": 10}) == {"width": 320, "rate_hz": 10.0}
    with pytest.raises(ValueError, match="width: expected a whole number"):
        coerce_args(TestPatternSource, {"width": 3.5})
    with pytest.raises(ValueError, match="takes no argument 'colour'"):
        coerce_args(TestPatternSource, {"colour": 1})

    class Needs(cp.Node):
        def __init__(self, name: str, factor: float, label: str = "x") -> None:
            super().__init__(name=name)

    assert [p["name"] for p in class_params(Needs) if p["required"]] == ["factor"]
    with pytest.raises(ValueError, match="Needs needs factor"):
        coerce_args(Needs, {})


def test_operations_edit_the_same_graph_and_refuse_what_is_wrong(editor: GraphEditor) -> None:
    graph = editor.graph
    assert op(editor, "add_node", cls=PATTERN, name="cam", args={"width": 320, "height": 240}, x=10, y=20)["ok"]
    assert op(editor, "add_node", cls=GRAY, name="gray", args={})["ok"]
    assert op(editor, "add_node", cls=SINK, name="sink", args={})["ok"]
    cam = graph.get_node("cam")
    assert (cam.width, cam.height) == (320, 240) and editor.positions["cam"] == (10.0, 20.0)

    bad = op(editor, "add_node", cls=PATTERN, name="cam", args={})
    assert not bad["ok"] and "exists already" in bad["message"]
    bad = op(editor, "add_node", cls=PATTERN, name="cam2", args={"width": -5})
    assert not bad["ok"] and "TestPatternSource" in bad["message"] and "width" in bad["message"]
    bad = op(editor, "add_node", cls=PATTERN, name="bad name!", args={})
    assert not bad["ok"] and "name" in bad["message"]
    assert graph.node_names == ["cam", "gray", "sink"]  # nothing half-added

    assert op(editor, "add_edge", src="cam", dst="gray")["ok"]
    assert op(editor, "add_edge", src="gray", dst="sink")["ok"]
    cycle = op(editor, "add_edge", src="sink", dst="cam")
    assert not cycle["ok"] and "cycle" in cycle["message"] and "cam → gray → sink" in cycle["message"]
    assert op(editor, "add_edge", src="cam", dst="sink")["ok"]
    assert op(editor, "set_edge", src="cam", dst="sink", policy="latest", follow=True)["ok"]
    assert graph.inputs(graph.get_node("sink")) == [
        {"src": "gray", "policy": "all", "follow": False}, {"src": "cam", "policy": "latest", "follow": True}]
    assert not op(editor, "set_edge", src="cam", dst="sink", policy="newest")["ok"]

    # what the canvas is told
    editor.refresh()
    edges = {(e["src"], e["dst"]): e for e in editor.canvas.edges}
    assert edges[("cam", "sink")] == {"src": "cam", "dst": "sink", "policy": "latest", "follow": True}
    nodes = {n["name"]: n for n in editor.canvas.nodes}
    assert nodes["cam"]["kind"] == "source" and nodes["sink"]["kind"] == "sink" and nodes["cam"]["x"] == 10.0

    assert op(editor, "remove_edge", src="cam", dst="sink")["ok"]
    assert op(editor, "remove_node", name="gray")["ok"]
    assert shape(graph) == ([("cam", "TestPatternSource"), ("sink", "NullSink")], [])
    assert not op(editor, "remove_node", name="gray")["ok"]
    assert not op(editor, "explode")["ok"]


def test_undo_and_redo_restore_every_step(editor: GraphEditor) -> None:
    graph = editor.graph
    shapes = [shape(graph)]
    steps = [("add_node", {"cls": PATTERN, "name": "cam", "args": {}}),
             ("add_node", {"cls": SINK, "name": "sink", "args": {}}),
             ("add_node", {"cls": GRAY, "name": "gray", "args": {}}),
             ("add_edge", {"src": "cam", "dst": "sink"}),
             ("add_edge", {"src": "gray", "dst": "sink"}),
             ("set_edge", {"src": "gray", "dst": "sink", "policy": "latest", "follow": True}),
             ("remove_node", {"name": "cam"})]
    for kind, fields in steps:
        assert op(editor, kind, **fields)["ok"]
        shapes.append(shape(graph))
    for expected in reversed(shapes[:-1]):
        assert op(editor, "undo")["ok"]
        assert shape(graph) == expected
    assert not op(editor, "undo")["ok"]
    for expected in shapes[1:]:
        assert op(editor, "redo")["ok"]
        assert shape(graph) == expected
    editor.refresh()
    assert editor.canvas.can_undo and not editor.canvas.can_redo
    assert editor.graph is graph


def test_edits_made_in_python_reach_the_canvas(editor: GraphEditor) -> None:
    cam, sink = TestPatternSource(name="cam"), NullSink(name="sink")
    editor.graph.add_edge(cam, sink)
    wait_until(lambda: {n["name"] for n in editor.canvas.nodes} == {"cam", "sink"}, 4 * PERIOD + 2, "the nodes")
    wait_until(lambda: editor.canvas.edges == [{"src": "cam", "dst": "sink", "policy": "all", "follow": True}],
               4 * PERIOD + 2, "the edge")
    editor.graph.remove_node(sink)
    wait_until(lambda: [n["name"] for n in editor.canvas.nodes] == ["cam"], 4 * PERIOD + 2, "the removal")


def test_problems_are_shown_on_the_nodes(editor: GraphEditor) -> None:
    class Needy(cp.Node):
        def step(self, data):
            return None

    editor.graph.add_node(Needy(name="needy"))  # inputs expected, none wired
    editor.refresh()
    assert any(p["node"] == "needy" for p in editor.canvas.problems), editor.canvas.problems


def test_a_notebook_class_is_in_the_palette() -> None:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        shell.run_cell("import chimera_lab as cp\n"
                       "class Doubler(cp.Node):\n"
                       "    '''Doubles its input.'''\n"
                       "    def __init__(self, name='double', factor: int = 2):\n"
                       "        super().__init__(name=name)\n"
                       "        self.factor = factor\n"
                       "    def step(self, data):\n"
                       "        return None\n")
        editor = GraphEditor()
        try:
            entry = next(p for p in editor.canvas.palette if p["label"] == "Doubler")
            assert not entry["builtin"] and entry["doc"] == "Doubles its input."
            assert entry["params"] == [{"name": "factor", "kind": "int", "required": False, "default": 2}]
            assert op(editor, "add_node", cls=entry["key"], name="d", args={"factor": 3})["ok"]
            assert editor.graph.get_node("d").factor == 3
        finally:
            editor.close()
    finally:
        InteractiveShell.clear_instance()


def test_assign_commit_start_and_view_on_real_workers(cluster: Cluster) -> None:
    cluster.worker("a")
    cluster.worker("b")
    m = cluster.manager
    editor = GraphEditor(manager=m)
    try:
        assert [w["name"] for w in editor.canvas.workers] == ["a", "b"]
        assert editor.canvas.live == {"state": "idle", "nodes": {}}
        assert op(editor, "add_node", cls=PATTERN, name="cam", args={"width": 64, "height": 48})["ok"]
        assert op(editor, "add_node", cls=class_key(StatsSink), name="stats", args={})["ok"]
        assert op(editor, "add_edge", src="cam", dst="stats")["ok"]
        editor.refresh()
        assert {p["node"] for p in editor.canvas.problems} == {"cam", "stats"}  # unassigned: flagged
        assert op(editor, "set_worker", name="stats", worker="b")["ok"]
        bad = op(editor, "set_worker", name="cam", worker="zz")
        assert not bad["ok"] and "no worker 'zz'" in bad["message"]

        assert op(editor, "command", cmd="commit")["ok"]  # cam is dealt out, stats stays on b
        assert m.mapping == {"a": ["cam"], "b": ["stats"]}
        assert editor.mapping == {"cam": "a", "stats": "b"}
        assert op(editor, "command", cmd="start")["ok"]
        wait_until(lambda: (editor.canvas.live.get("nodes", {}).get("stats", {}).get("rate") or 0) > 5, 15,
                   "the live rate of stats")
        assert editor.canvas.live["state"] == "running" and not editor.canvas.problems

        assert op(editor, "open_view", name="cam")["ok"]
        wait_until(lambda: len(editor.detail.children) == 2, 15, "the live view of cam")
        assert type(editor.detail.children[1]).__name__ == "FrameView"
        assert op(editor, "command", cmd="stop")["ok"]
        assert m.state == "stopped"
    finally:
        editor.close()


def test_commands_without_a_manager_say_what_to_do(editor: GraphEditor) -> None:
    status = op(editor, "command", cmd="start")
    assert not status["ok"] and "%chimera up" in status["message"]


def test_cp_graph_editor_takes_the_only_manager_of_the_process(cluster: Cluster) -> None:
    cluster.worker("a")
    editor = cp.GraphEditor()
    try:
        assert editor.manager is cluster.manager
        assert [w["name"] for w in editor.canvas.workers] == ["a"]
    finally:
        editor.close()
