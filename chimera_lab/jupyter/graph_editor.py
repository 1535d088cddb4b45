"""GraphEditor: build, wire, place and run a pipeline by hand, in the notebook, without losing the code.

The Python side owns the truth: ``editor.graph`` (a ``cp.Graph``, edited in place), ``editor.mapping`` (node name
→ worker), node positions and the undo history. The browser (React Flow, ``widgets/graph_editor/``) shows that
state and sends operations; see ``widgets/graph_editor/PROTOCOL.md`` for the contract. Edits made in Python
(``editor.graph.add_edge(...)``) reach the canvas within a quarter of a second; edits made on the canvas are
applied to the same Graph object at once.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import typing
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import ipywidgets
import networkx as nx
import traitlets

from ..graph import Graph, GraphError
from ..node import Node, init_signature
from .graph_view import _structure
from .widgets import PALETTE, ViewError, _Every, _static, _Widget, cluster_snapshot, view_for

if TYPE_CHECKING:
    from ..manager import Manager

log = logging.getLogger("chimera_lab.jupyter")

PERIOD = 0.25  # seconds between looks at the graph and the Manager: at most 4 updates a second
COMMANDS = ("commit", "start", "record", "stop")
_KINDS = {int: "int", float: "float", str: "str", bool: "bool"}


# --------------------------------------------------------------------------------------------------
# the palette: node classes and the form each one needs
# --------------------------------------------------------------------------------------------------
def class_key(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _kind(param: inspect.Parameter, hints: dict[str, Any]) -> str:
    """The form field for a constructor parameter: from its annotation, else from its default."""
    hint = hints.get(param.name)
    options = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_args(hint) else [hint]
    for option in options:
        if option in _KINDS:
            return _KINDS[option]
    if param.default is not inspect.Parameter.empty and param.default is not None:
        return _KINDS.get(type(param.default), "json")
    return "json"


def _json_default(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None), list, dict)) else None


def class_params(cls: type) -> list[dict[str, Any]]:
    """The form fields of `cls.__init__` (every parameter but self and name; *args/**kwargs are skipped)."""
    sig = init_signature(cls)
    if sig is None:
        return []
    try:
        hints = typing.get_type_hints(getattr(cls, "__init__"))  # noqa: B009 - mypy objects to cls.__init__
    except Exception:  # an annotation that does not resolve: fall back to the defaults
        hints = {}
    params = []
    for p in sig.parameters.values():
        if p.name == "name" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        required = p.default is inspect.Parameter.empty
        params.append({"name": p.name, "kind": _kind(p, hints), "required": required,
                       "default": None if required else _json_default(p.default)})
    return params


def takes_name(cls: type) -> bool:
    sig = init_signature(cls)
    return sig is not None and ("name" in sig.parameters or any(p.kind == p.VAR_KEYWORD
                                                                for p in sig.parameters.values()))


def builtin_classes() -> list[type]:
    from .. import nodes

    return [c for c in vars(nodes).values() if isinstance(c, type) and issubclass(c, Node) and c is not Node]


def notebook_classes() -> list[type]:
    """The Node subclasses defined in the running notebook (its namespace), if there is one."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with ipywidgets
        return []
    ip = get_ipython()
    if ip is None:
        return []
    return [c for c in list(ip.user_ns.values()) if isinstance(c, type) and issubclass(c, Node)
            and c is not Node and c.__module__ == "__main__"]


@functools.lru_cache(maxsize=512)  # the palette is rebuilt 4 times a second: inspect each class once
def palette_entry(cls: type, builtin: bool) -> dict[str, Any]:
    return {"key": class_key(cls), "label": cls.__name__, "module": cls.__module__, "builtin": builtin,
            "doc": inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0], "params": class_params(cls)}


def coerce_args(cls: type, args: dict[str, Any]) -> dict[str, Any]:
    """The form's values as the constructor wants them; a ValueError names the field that is wrong."""
    fields = {p["name"]: p for p in class_params(cls)}
    out = {}
    for name, value in args.items():
        field = fields.get(name)
        if field is None:
            raise ValueError(f"{cls.__name__} takes no argument {name!r} (it takes: {', '.join(fields) or 'none'})")
        kind = field["kind"]
        if value is None or kind in ("str", "json"):
            out[name] = value
        elif kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"{name}: expected true or false, got {value!r}")
            out[name] = value
        elif kind == "int":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
                raise ValueError(f"{name}: expected a whole number, got {value!r}")
            out[name] = int(value)
        else:  # float
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name}: expected a number, got {value!r}")
            out[name] = float(value)
    missing = [f for f, p in fields.items() if p["required"] and f not in out]
    if missing:
        raise ValueError(f"{cls.__name__} needs {', '.join(missing)}")
    return out


# --------------------------------------------------------------------------------------------------
# the widget
# --------------------------------------------------------------------------------------------------
class EditorCanvas(_Widget):
    """The browser half of a GraphEditor (React Flow). Its traits are the editor's state as plain data."""

    _esm = _static("graph_editor.js")
    _css = _static("graph_editor.css")
    palette = traitlets.List(traitlets.Dict()).tag(sync=True)
    nodes = traitlets.List(traitlets.Dict()).tag(sync=True)
    edges = traitlets.List(traitlets.Dict()).tag(sync=True)
    workers = traitlets.List(traitlets.Dict()).tag(sync=True)
    live = traitlets.Dict().tag(sync=True)
    problems = traitlets.List(traitlets.Dict()).tag(sync=True)
    status = traitlets.Dict().tag(sync=True)
    can_undo = traitlets.Bool(False).tag(sync=True)
    can_redo = traitlets.Bool(False).tag(sync=True)
    code = traitlets.Dict().tag(sync=True)

    def __init__(self, on_op: Callable[[dict[str, Any]], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._on_op = on_op

    def _on_message(self, content: dict[str, Any]) -> None:
        if content.get("type") == "op":
            self._on_op(content)


class _Snapshot(typing.NamedTuple):
    """What undo restores: the nodes (the same objects), the edges with their attributes, the mapping."""

    nodes: list[Node]
    edges: list[tuple[Node, Node, dict[str, Any]]]
    mapping: dict[str, str]


class GraphEditor(ipywidgets.VBox):
    """A visual editor of a pipeline: ``GraphEditor(graph=None, manager=None)`` (no manager: the only Manager of
    this process, such as the one ``%chimera up`` started, if there is exactly one).

    Add nodes from the palette (built-in nodes and the Node classes defined in the notebook), drag edges,
    choose policies and followed inputs, assign workers, commit/start/record/stop, and click a node to see it
    live. ``editor.graph`` is the Graph being edited (the same object you passed), ``editor.mapping`` maps node
    names to workers, ``editor.to_code()`` gives the Python that rebuilds both.
    """

    def __init__(self, graph: Graph | None = None, manager: Manager | None = None,
                 classes: Iterable[type] = (), **kwargs: Any) -> None:
        if graph is not None and not isinstance(graph, Graph):
            raise TypeError(f"GraphEditor: graph must be a chimera_lab.Graph, got {type(graph).__name__}")
        self.graph = graph if graph is not None else Graph()
        if manager is None:  # the one Manager of this process (e.g. %chimera up's), if there is exactly one
            from ..manager import managers

            live = managers()
            manager = live[0] if len(live) == 1 else None
        self.manager = manager
        self.mapping: dict[str, str] = {}
        self.positions: dict[str, tuple[float, float]] = {}
        self.extra_classes = list(classes)
        self._classes: dict[str, type] = {}
        self._undo: list[_Snapshot] = []
        self._redo: list[_Snapshot] = []
        self._lock = threading.RLock()
        self._seen: Any = None
        self._committed: Any = None  # the Manager's mapping last taken in (its identity changes on each commit)
        self._command_busy = threading.Lock()
        self.canvas = EditorCanvas(on_op=self._op)
        self.detail = ipywidgets.VBox()  # the live view of the clicked node
        super().__init__([self.canvas, self.detail], **kwargs)
        self.refresh()
        self._refresher = _Every("chimera-editor-refresh", PERIOD, self.refresh)

    # -- Python -> browser -----------------------------------------------------------------------
    def refresh(self) -> None:
        """Push what changed since the last look (the graph, the palette, workers, live state, problems)."""
        with self._lock:
            if getattr(self, "_closed", False):
                return
            c = self.canvas
            palette = self._palette()
            if palette != c.palette:
                c.palette = palette
            m = self.manager
            snap = cluster_snapshot(m) if m is not None else None  # one look at the Manager per refresh
            workers = self._workers(snap["workers"] if snap is not None else None)
            if workers != c.workers:
                c.workers = workers
            if m is not None and m.graph is self.graph and m.mapping is not self._committed:
                # a new commit (here or by %chimera commit): show where the nodes run; later edits are the user's
                self._committed = m.mapping
                self.mapping.update({n: w for w, ns in m.mapping.items() for n in ns})
            structure = (_structure(self.graph), tuple(sorted(self.mapping.items())),
                         tuple(sorted(self.positions.items())), tuple(w["name"] for w in workers))
            if structure != self._seen:
                self._seen = structure
                self._forget_missing()
                with c.hold_sync():
                    c.nodes = self._nodes()
                    c.edges = [{"src": u.name, "dst": v.name, "policy": d.get("policy", "all"),
                                "follow": any(i["follow"] and i["src"] == u.name for i in self.graph.inputs(v))}
                               for u, v, d in self.graph.edges(data=True)]
                    c.problems = self._problems(workers)
            live = self._live(snap)
            if live != c.live:
                c.live = live
            if (c.can_undo, c.can_redo) != (bool(self._undo), bool(self._redo)):
                c.can_undo, c.can_redo = bool(self._undo), bool(self._redo)

    def _palette(self) -> list[dict[str, Any]]:
        entries, classes = [], {}
        for builtin, group in ((True, builtin_classes()), (False, [*notebook_classes(), *self.extra_classes])):
            for cls in group:
                key = class_key(cls)
                if key in classes or not takes_name(cls):
                    continue
                classes[key] = cls
                entries.append(palette_entry(cls, builtin))
        for n in self.graph.nodes:  # a node of a class not in the palette still needs its key resolvable
            classes.setdefault(class_key(type(n)), type(n))
        self._classes = classes
        return entries

    def _workers(self, states: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The connected workers with their colours (from `states`, the Manager's workers, if given)."""
        if self.manager is None:
            return []
        if states is None:
            states = self.manager.status()["workers"]
        names = sorted(w for w, i in states.items() if i["state"] == "connected")
        return [{"name": w, "color": PALETTE[i % len(PALETTE)]} for i, w in enumerate(names)]

    def _nodes(self) -> list[dict[str, Any]]:
        out = []
        for n in self.graph.nodes:
            xy = self.positions.get(n.name)
            out.append({"name": n.name, "cls": class_key(type(n)), "label": type(n).__name__,
                        "kind": self.graph.kind(n), "args": _shown_args(n),
                        "worker": self.mapping.get(n.name), "x": xy[0] if xy else None, "y": xy[1] if xy else None})
        return out

    def _problems(self, workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        problems: list[dict[str, Any]] = []
        try:
            self.graph.validate()
        except GraphError as exc:
            for line in str(exc).splitlines():
                line = line.strip().lstrip("-").strip()
                if line and not line.endswith(":"):
                    node = next((n for n in self.graph.node_names if f"'{n}'" in line), None)
                    problems.append({"node": node, "edge": None, "message": line})
        if workers:
            known = {w["name"] for w in workers}
            for n in self.graph.node_names:
                if self.mapping.get(n) not in known:
                    what = "not assigned to a worker" if n not in self.mapping else \
                        f"assigned to {self.mapping[n]!r}, which is not connected"
                    problems.append({"node": n, "edge": None,
                                     "message": f"node {n!r} is {what} (commit deals unassigned nodes out)"})
        return problems

    def _live(self, snap: dict[str, Any] | None) -> dict[str, Any]:
        if snap is None:
            return {"state": None, "nodes": {}}
        if self.manager is None or self.manager.graph is not self.graph:
            return {"state": snap["state"], "nodes": {}}
        return {"state": snap["state"], "nodes": {
            name: {k: n[k] for k in ("state", "rate", "p50", "errors", "last_error")}
            for name, n in snap["nodes"].items()}}

    def _forget_missing(self) -> None:
        names = set(self.graph.node_names)
        for d in (self.mapping, self.positions):
            for name in [k for k in d if k not in names]:
                del d[name]

    # -- browser -> Python -----------------------------------------------------------------------
    def _op(self, msg: dict[str, Any]) -> None:
        op, rid = msg.get("op"), msg.get("id")
        handler = getattr(self, f"_op_{op}", None) if isinstance(op, str) else None
        if handler is None:
            self._answer(rid, False, f"unknown operation {op!r}")
            return
        if op == "command":  # runs for seconds: off the comm thread, answered when done
            handler(msg, rid)
            return
        try:
            with self._lock:
                message = handler(msg) or ""
            ok = True
        except (GraphError, ValueError, TypeError, KeyError) as exc:
            ok, message = False, _message(exc)
        except Exception as exc:  # a bug, or a node constructor that raised something else: say so, keep going
            log.exception("GraphEditor: %s failed", op)
            ok, message = False, f"{type(exc).__name__}: {exc}"
        self._answer(rid, ok, message)
        self.refresh()

    def _answer(self, rid: Any, ok: bool, message: str) -> None:
        self.canvas.status = {"id": rid, "ok": ok, "message": message}

    def _node(self, name: Any) -> Node:
        return self.graph.get_node(str(name))

    def _checkpoint(self) -> None:
        edges = [(u, v, dict(d)) for u, v, d in self.graph.edges(data=True)]
        self._undo.append(_Snapshot(list(self.graph.nodes), edges, dict(self.mapping)))
        del self._undo[:-200]
        self._redo.clear()

    def _restore(self, snap: _Snapshot) -> _Snapshot:
        current = _Snapshot(list(self.graph.nodes), [(u, v, dict(d)) for u, v, d in self.graph.edges(data=True)],
                            dict(self.mapping))
        self.graph.clear()
        for n in snap.nodes:
            self.graph.add_node(n)
        for u, v, d in sorted(snap.edges, key=lambda e: e[2].get("order", 0)):
            self.graph.add_edge(u, v, policy=d.get("policy", "all"), follow=d.get("follow", False))
        self.mapping = dict(snap.mapping)
        return current

    def _op_add_node(self, msg: dict[str, Any]) -> str:
        self._palette()
        cls = self._classes.get(str(msg.get("cls")))
        if cls is None:
            raise ValueError(f"no node class {msg.get('cls')!r} in the palette")
        name = str(msg.get("name") or "")
        if name in self.graph.node_names:
            raise ValueError(f"a node named {name!r} exists already; choose another name")
        args = coerce_args(cls, dict(msg.get("args") or {}))
        try:
            node = cls(name=name, **args)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{cls.__name__}: {exc}") from None
        self._checkpoint()
        self.graph.add_node(node)
        if isinstance(msg.get("x"), (int, float)) and isinstance(msg.get("y"), (int, float)):
            self.positions[name] = (float(msg["x"]), float(msg["y"]))
        return f"added {name}"

    def _op_remove_node(self, msg: dict[str, Any]) -> str:
        node = self._node(msg.get("name"))
        self._checkpoint()
        self.graph.remove_node(node)
        self._forget_missing()
        return f"removed {node.name}"

    def _op_add_edge(self, msg: dict[str, Any]) -> str:
        u, v = self._node(msg.get("src")), self._node(msg.get("dst"))
        if self.graph.has_edge(u, v):
            raise ValueError(f"{u.name} → {v.name} is wired already")
        if u is v:
            raise ValueError(f"refused: {u.name} cannot feed itself")
        if nx.has_path(self.graph, v, u):
            path = " → ".join(n.name for n in nx.shortest_path(self.graph, v, u))
            raise ValueError(f"refused: {u.name} → {v.name} would close a cycle ({path} exists already); "
                             "a pipeline must not loop back")
        self._checkpoint()
        self.graph.add_edge(u, v, policy=str(msg.get("policy") or "all"))
        return f"wired {u.name} → {v.name}"

    def _op_remove_edge(self, msg: dict[str, Any]) -> str:
        u, v = self._node(msg.get("src")), self._node(msg.get("dst"))
        if not self.graph.has_edge(u, v):
            raise ValueError(f"there is no edge {u.name} → {v.name}")
        self._checkpoint()
        self.graph.remove_edge(u, v)
        return f"removed {u.name} → {v.name}"

    def _op_set_edge(self, msg: dict[str, Any]) -> str:
        u, v = self._node(msg.get("src")), self._node(msg.get("dst"))
        if not self.graph.has_edge(u, v):
            raise ValueError(f"there is no edge {u.name} → {v.name}")
        policy = msg.get("policy")
        if policy is not None and policy not in ("all", "latest"):
            raise ValueError(f"policy must be 'all' or 'latest', got {policy!r}")
        self._checkpoint()
        if policy is not None:
            self.graph[u][v]["policy"] = policy
        if msg.get("follow"):
            for w in self.graph.predecessors(v):
                self.graph[w][v]["follow"] = w is u
        return f"{u.name} → {v.name}: {self.graph[u][v]['policy']}"

    def _op_set_worker(self, msg: dict[str, Any]) -> str:
        node, worker = self._node(msg.get("name")), msg.get("worker")
        known = {w["name"] for w in self._workers()}
        if worker is not None and worker not in known:
            raise ValueError(f"no worker {worker!r} is connected (workers: {', '.join(sorted(known)) or 'none'})")
        self._checkpoint()
        if worker is None:
            self.mapping.pop(node.name, None)
        else:
            self.mapping[node.name] = str(worker)
        return f"{node.name} on {worker or 'no worker'}"

    def _op_move(self, msg: dict[str, Any]) -> str:
        names = set(self.graph.node_names)
        for name, xy in dict(msg.get("positions") or {}).items():
            if name in names and isinstance(xy, (list, tuple)) and len(xy) == 2:
                self.positions[name] = (float(xy[0]), float(xy[1]))
        return ""

    def _op_undo(self, msg: dict[str, Any]) -> str:
        if not self._undo:
            raise ValueError("nothing to undo")
        self._redo.append(self._restore(self._undo.pop()))
        return "undone"

    def _op_redo(self, msg: dict[str, Any]) -> str:
        if not self._redo:
            raise ValueError("nothing to redo")
        self._undo.append(self._restore(self._redo.pop()))
        return "redone"

    def _op_to_code(self, msg: dict[str, Any]) -> str:
        self.canvas.code = {"id": msg.get("id"), "code": self.to_code()}
        return "code ready"

    def _op_open_view(self, msg: dict[str, Any]) -> str:
        name = str(msg.get("name"))
        m = self.manager
        if m is None or m.graph is not self.graph or name not in m.nodes:
            return f"{name}: commit and start the pipeline to see it live"
        threading.Thread(target=self._show_view, args=(m, name), name="chimera-editor-view", daemon=True).start()
        return f"opening the live view of {name}"

    def _show_view(self, m: Manager, name: str) -> None:
        try:
            view = view_for(m, name, wait=3.0)
        except ViewError as exc:
            self._answer(None, False, str(exc))
            return
        old = list(self.detail.children)
        self.detail.children = [ipywidgets.HTML(f"<b>{name}</b>"), view]
        for w in old:
            w.close()

    def _op_command(self, msg: dict[str, Any], rid: Any) -> None:
        cmd = msg.get("cmd")
        if cmd not in COMMANDS:
            self._answer(rid, False, f"unknown command {cmd!r}")
            return
        if self.manager is None:
            self._answer(rid, False, "no Manager: pass manager= to GraphEditor, or run %chimera up first")
            return
        if not self._command_busy.acquire(blocking=False):
            self._answer(rid, False, "another command is still running")
            return
        threading.Thread(target=self._run_command, args=(str(cmd), rid), name=f"chimera-editor-{cmd}",
                         daemon=True).start()

    def _run_command(self, cmd: str, rid: Any) -> None:
        m = self.manager
        assert m is not None
        try:
            if cmd == "commit":
                mapping = self.commit_mapping()
                m.commit_graph(self.graph, mapping)
                with self._lock:
                    self.mapping = {n: w for w, ns in mapping.items() for n in ns}
                message = "committed: " + "; ".join(f"{w}: {', '.join(ns)}" for w, ns in mapping.items() if ns)
            else:
                getattr(m, cmd)()
                message = {"start": "running", "record": "recording", "stop": "stopped"}[cmd]
            ok = True
        except Exception as exc:
            ok, message = False, _message(exc)
        finally:
            self._command_busy.release()
        self._answer(rid, ok, message)
        self.refresh()

    # -- public ----------------------------------------------------------------------------------
    def commit_mapping(self) -> dict[str, list[str]]:
        """The mapping a commit uses: each node on its assigned worker; unassigned nodes dealt out over the
        connected workers in pipeline order."""
        workers = [w["name"] for w in self._workers()]
        if not workers:
            raise ValueError("no worker is connected to the Manager")
        mapping: dict[str, list[str]] = {w: [] for w in workers}
        unassigned = []
        for n in nx.topological_sort(self.graph) if nx.is_directed_acyclic_graph(self.graph) else self.graph.nodes:
            w = self.mapping.get(n.name)
            if w in mapping:
                mapping[w].append(n.name)
            else:
                unassigned.append(n.name)
        for i, name in enumerate(unassigned):
            mapping[workers[i % len(workers)]].append(name)
        return mapping

    def to_code(self, graph_var: str = "graph") -> str:
        """Python source that rebuilds the graph and its mapping."""
        from ..graph_io import to_code

        by_worker: dict[str, list[str]] = {}
        for n in self.graph.node_names:
            if n in self.mapping:
                by_worker.setdefault(self.mapping[n], []).append(n)
        return to_code(self.graph, by_worker or None, graph_var=graph_var)

    def close(self) -> None:
        """Stop following the graph and the Manager, and close the widgets."""
        self._closed = True
        if hasattr(self, "_refresher"):
            self._refresher.stop()
        for w in list(self.detail.children):
            w.close()
        self.canvas.close()
        self.detail.close()
        super().close()


def _message(exc: BaseException) -> str:
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc) or type(exc).__name__


def _shown_args(node: Node) -> dict[str, Any]:
    """The node's constructor arguments as JSON for the side panel (an argument JSON cannot hold: its repr)."""
    from ..graph_io import node_args

    try:
        return node_args(node)
    except GraphError:
        return {k: v if isinstance(v, (str, int, float, bool, type(None))) else repr(v)
                for k, v in node.init_args.items()}
