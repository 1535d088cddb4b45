"""Save, load and print a pipeline: a Graph as versioned JSON, or as the Python code that rebuilds it.

The JSON format (``FORMAT``, ``VERSION``)::

    {
      "format": "chimera_lab.graph",
      "version": 1,
      "nodes": [                                  # in the graph's node order
        {"name": "pattern", "class": "chimera_lab.nodes:TestPatternSource", "args": {"name": "pattern", "width": 320}},
        {"name": "double", "class": "__main__:Double", "args": {"name": "double"},
         "by_value": "<base64 of the cloudpickled class>"}
      ],
      "edges": [{"src": "pattern", "dst": "double", "policy": "all", "follow": false}],
      "mapping": {"w1": ["pattern", "double"]},  # optional
      "positions": {"pattern": [0, 0]},          # optional
      "python": "3.11.9"                          # only with by-value classes: who pickled them
    }

- ``args`` is `Node.init_args`: the node is rebuilt by calling its class with them (so a class must take
  its configuration as constructor arguments; state set later is not saved). They must be JSON data: tuples
  are saved as lists, ``pathlib`` paths as strings and numpy scalars as numbers; anything else is refused.
- ``class`` is ``module:qualname``. A class that can be imported by that path is saved by path (loading
  imports it, and checks it is a `Node` subclass). Any other class (defined in a notebook, in ``__main__``
  or in a function) is saved *by value* as well: cloudpickled into ``by_value``. Loading a by-value class
  runs code from the file, so it needs ``trust=True``.
- ``edges`` are listed in each node's input order: the order in which a node's inputs appear is the order
  they are added back (which input comes first). ``policy`` defaults to ``"all"``, ``follow`` to false.
- Node and edge attributes other than these (``graph.add_node(n, color=...)``) are not saved. Unknown keys
  are ignored.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import json
import keyword
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np

from .graph import POLICIES, Graph, GraphError
from .node import _NAME_RE, Node, init_signature

FORMAT = "chimera_lab.graph"
VERSION = 1
LINE_LENGTH = 120  # of the code `to_code` writes (ruff's setting in this project)

_JSON_TYPES = "str, int, float, bool, None, and lists and dicts (with str keys) of them"


class UntrustedGraphError(GraphError):
    """The graph file holds pickled classes and the caller did not pass ``trust=True``."""


# --------------------------------------------------------------------------------------------------
# classes: by import path, or by value
# --------------------------------------------------------------------------------------------------
def _resolve(module_name: str, qualname: str) -> Any:
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def import_path(cls: type) -> str | None:
    """``"module:qualname"`` if importing it gives back `cls`, else None (the class must go by value).

    The shortest package that re-exports the class wins (``chimera_lab.nodes:Resize``, not
    ``chimera_lab.nodes.steps:Resize``).
    """
    module, qualname = cls.__module__, cls.__qualname__
    if module == "__main__" or "<locals>" in qualname:
        return None
    try:
        if _resolve(module, qualname) is not cls:
            return None
    except Exception:  # not importable (any error importing counts)
        return None
    parts = module.split(".")
    for i in range(1, len(parts)):
        parent = sys.modules.get(".".join(parts[:i]))
        if parent is not None and "." not in qualname and getattr(parent, qualname, None) is cls:
            return f"{parent.__name__}:{qualname}"
    return f"{module}:{qualname}"


def _class_label(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


# --------------------------------------------------------------------------------------------------
# constructor arguments
# --------------------------------------------------------------------------------------------------
def _json_value(value: Any, where: str) -> Any:
    """`value` as JSON data (tuples → lists, paths → str, numpy scalars → numbers), or GraphError."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)  # a plain str (a StrEnum's repr would not be valid code)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise GraphError(f"{where} is {value!r}, which JSON cannot hold; pass a finite number or None")
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_json_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise GraphError(f"{where} has the key {k!r}; JSON objects only have str keys, so use str keys")
            out[k] = _json_value(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, os.PathLike) and isinstance(os.fspath(value), str):
        return os.fspath(value)
    what = "an array" if isinstance(value, np.ndarray) else "an object"
    text = repr(value)
    raise GraphError(
        f"{where} is a {type(value).__name__} ({text[:60] + '...' if len(text) > 60 else text}), which cannot be "
        f"saved: constructor arguments must be JSON data ({_JSON_TYPES}). Pass what describes it instead, "
        f"e.g. a file path, and load {what} from it in prep()"
    )


def node_args(node: Node) -> dict[str, Any]:
    """`node.init_args` as JSON data, or a GraphError naming the node and the argument."""
    where = f"node {node.name!r} ({type(node).__name__})"
    return {k: _json_value(v, f"{where}: argument {k!r}") for k, v in node.init_args.items()}


def call_arguments(cls: type, args: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """How to call ``cls(*positional, **keywords)`` to get a node whose `init_args` are `args`.

    Keywords wherever possible; by position the positional-only parameters, every parameter before a
    non-empty ``"*args"``, and a first parameter called ``name`` (``Resize("small", width=64, ...)``).
    """
    keywords = dict(args)
    sig = init_signature(cls)
    if sig is None:
        return list(keywords.pop("*args", ())), keywords
    params = list(sig.parameters.values())
    leading = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    var_pos = next((p for p in params if p.kind is p.VAR_POSITIONAL), None)
    star = list(keywords.pop(f"*{var_pos.name}", ())) if var_pos is not None else []
    if star:
        n = len(leading)
    else:
        n = max((i + 1 for i, p in enumerate(leading) if p.kind is p.POSITIONAL_ONLY and p.name in keywords),
                default=0)
        if n == 0 and leading and leading[0].name == "name" and "name" in keywords:
            n = 1
    positional = []
    for p in leading[:n]:
        if p.name in keywords:
            positional.append(keywords.pop(p.name))
        elif p.default is not p.empty:
            positional.append(p.default)
        else:
            raise GraphError(f"{cls.__name__}: argument {p.name!r} is missing (it has no default)")
    return positional + star, keywords


# --------------------------------------------------------------------------------------------------
# mapping and positions (shared by saving and loading)
# --------------------------------------------------------------------------------------------------
def _mapping(mapping: Any, names: Iterable[str], where: str) -> dict[str, list[str]]:
    """``{worker: [node name, ...]}`` from a mapping of workers to node names or Nodes."""
    known = set(names)
    if not isinstance(mapping, Mapping):
        raise GraphError(f"{where} must be a dict {{worker: [node names]}}, got {type(mapping).__name__}")
    out: dict[str, list[str]] = {}
    for worker, items in mapping.items():
        if not isinstance(worker, str):
            raise GraphError(f"{where}: worker names must be str, got {worker!r}")
        if isinstance(items, (str, Node)) or not isinstance(items, Iterable):
            raise GraphError(f"{where}[{worker!r}] must be a list of node names, got {items!r}")
        out[worker] = []
        for item in items:
            name = item.name if isinstance(item, Node) else item
            if not isinstance(name, str) or name not in known:
                raise GraphError(f"{where} puts {name!r} on worker {worker!r}, but the graph has no such node")
            out[worker].append(name)
    return out


def _finite(value: int | float) -> bool:
    """Whether `value` is a finite float, or an int a float holds (a bigger one overflows)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _positions(positions: Any, names: Iterable[str], where: str) -> dict[str, list[float]]:
    """``{node name: [x, y]}`` from a mapping of node names or Nodes to two numbers."""
    known = set(names)
    if not isinstance(positions, Mapping):
        raise GraphError(f"{where} must be a dict {{node name: [x, y]}}, got {type(positions).__name__}")
    out: dict[str, list[float]] = {}
    for key, xy in positions.items():
        name = key.name if isinstance(key, Node) else key
        if not isinstance(name, str) or name not in known:
            raise GraphError(f"{where} has a position for {name!r}, but the graph has no such node")
        coords = [v.item() if isinstance(v, np.generic) else v for v in xy] if isinstance(xy, Iterable) else []
        if len(coords) != 2 or not all(isinstance(c, (int, float)) and not isinstance(c, bool) and _finite(c)
                                       for c in coords):
            raise GraphError(f"{where}[{name!r}] must be [x, y] (two finite numbers), got {xy!r}")
        out[name] = coords
    return out


# --------------------------------------------------------------------------------------------------
# Graph -> dict -> Graph
# --------------------------------------------------------------------------------------------------
def graph_to_dict(graph: Graph, mapping: Mapping[str, Iterable[Any]] | None = None,
                  positions: Mapping[Any, Any] | None = None) -> dict[str, Any]:
    """The graph as JSON-ready data (see the module docstring for the format).

    `mapping` (``{worker: [nodes or names]}``) and `positions` (``{node or name: (x, y)}``) default to
    ``graph.graph["mapping"]`` / ``graph.graph["positions"]`` (where `from_json` puts them), if set.
    Raises GraphError if a constructor argument is not JSON data, or the mapping/positions name unknown nodes.
    """
    names = graph.node_names
    refs: dict[type, str | None] = {}
    blobs: dict[type, str] = {}
    nodes = []
    for node in graph.nodes:
        cls = type(node)
        if cls not in refs:
            refs[cls] = import_path(cls)
        record: dict[str, Any] = {"name": node.name, "class": refs[cls] or _class_label(cls), "args": node_args(node)}
        if refs[cls] is None:
            if cls not in blobs:
                blobs[cls] = base64.b64encode(cloudpickle.dumps(cls)).decode("ascii")
            record["by_value"] = blobs[cls]
        nodes.append(record)
    edges = [{"src": src, "dst": node.name, "policy": policy, "follow": follow}
             for node in graph.nodes for src, policy, follow in _inputs(graph, node)]
    out: dict[str, Any] = {"format": FORMAT, "version": VERSION, "nodes": nodes, "edges": edges}
    mapping = graph.graph.get("mapping") if mapping is None else mapping
    if mapping is not None:
        out["mapping"] = _mapping(mapping, names, "mapping")
    positions = graph.graph.get("positions") if positions is None else positions
    if positions is not None:
        out["positions"] = _positions(positions, names, "positions")
    if blobs:
        out["python"] = ".".join(map(str, sys.version_info[:3]))
    return out


def _inputs(graph: Graph, node: Node) -> list[tuple[str, str, bool]]:
    """``(source name, policy, follow)`` of each input edge of `node`, in input order; `follow` as set on the
    edge (unlike `Graph.inputs`, which also marks the first input when no edge is marked)."""
    edges = sorted(graph.in_edges(node, data=True), key=lambda e: e[2].get("order", 0))
    return [(u.name, d.get("policy", "all"), bool(d.get("follow"))) for u, _, d in edges]


def _get(obj: Mapping[str, Any], key: str, types: type | tuple[type, ...], where: str, default: Any = ...) -> Any:
    """``obj[key]`` checked against `types`, or a GraphError saying what is wrong where."""
    if key not in obj:
        if default is not ...:
            return default
        raise GraphError(f"{where}: the key {key!r} is missing")
    value = obj[key]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
        names = " or ".join(t.__name__ for t in _as_tuple(types))
        raise GraphError(f"{where}: {key!r} must be {names}, got {type(value).__name__} {value!r:.60}")
    return value


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _load_class(record: dict[str, Any], where: str, cache: dict[str, type]) -> type:
    """The class of a node record: unpickled from ``by_value``, else imported by path; a Node subclass."""
    ref, blob = record["class"], record.get("by_value")
    key = blob or ref
    if key in cache:
        return cache[key]
    if blob is not None:
        try:
            cls = cloudpickle.loads(base64.b64decode(blob))
        except Exception as exc:
            raise GraphError(
                f"{where}: cannot unpickle class {ref!r} ({type(exc).__name__}: {exc}); by-value classes load "
                "only with the modules they use installed, in a compatible Python "
                f"(this is {sys.version.split()[0]}); define the class in a module and save again"
            ) from exc
    else:
        module, _, qualname = ref.partition(":")
        try:
            cls = _resolve(module, qualname)
        except ImportError as exc:
            raise GraphError(f"{where}: cannot import module {module!r} for class {ref!r} ({exc}); install it or "
                             "put it on sys.path") from exc
        except AttributeError as exc:
            raise GraphError(f"{where}: module {module!r} has no {qualname!r} (class {ref!r}); check the name, "
                             "or the version of the module") from exc
    if not (isinstance(cls, type) and issubclass(cls, Node)):
        raise GraphError(f"{where}: {ref!r} is {cls!r}, not a subclass of chimera_lab.Node")
    cache[key] = cls
    return cls


def _parse_header(d: Any) -> None:
    if not isinstance(d, dict):
        raise GraphError(f"not a chimera_lab graph: expected a JSON object, got {type(d).__name__}")
    if d.get("format") != FORMAT:
        raise GraphError(f"not a chimera_lab graph: 'format' is {d.get('format')!r}, expected {FORMAT!r}")
    version = d.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise GraphError(f"'version' must be a positive int, got {version!r}")
    if version > VERSION:
        raise GraphError(f"the graph is format version {version}, but this chimera_lab reads up to version "
                         f"{VERSION}; upgrade chimera_lab")


def graph_from_dict(d: Any, trust: bool = False, *, graph_class: type[Graph] = Graph
                    ) -> tuple[Graph, dict[str, list[str]] | None, dict[str, list[float]] | None]:
    """Rebuild ``(graph, mapping, positions)`` from `graph_to_dict`'s data (mapping/positions: None if absent).

    Everything is checked before any node is built; a problem raises GraphError saying what and where.
    By-value classes run code from the file: without ``trust=True`` they raise `UntrustedGraphError`.
    """
    _parse_header(d)
    records: list[dict[str, Any]] = []
    for i, rec in enumerate(_get(d, "nodes", list, "graph")):
        where = f"nodes[{i}]"
        if not isinstance(rec, dict):
            raise GraphError(f"{where} must be an object, got {type(rec).__name__}")
        name = _get(rec, "name", str, where)
        where = f"nodes[{i}] ({name!r})"
        if not _NAME_RE.fullmatch(name):
            raise GraphError(f"{where}: node names are letters, digits, '_', '-' or '.'")
        ref = _get(rec, "class", str, where)
        if not re.fullmatch(r"\w[\w.]*:[\w.<>]+", ref):  # an absolute module: import_module("..") is a TypeError
            raise GraphError(f"{where}: 'class' must be 'module:QualName', got {ref!r}")
        args = _get(rec, "args", dict, where, {})
        blob = _get(rec, "by_value", str, where, None)
        if blob is not None:
            try:
                base64.b64decode(blob, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise GraphError(f"{where}: 'by_value' is not base64 ({exc})") from exc
        if any(r["name"] == name for r in records):
            raise GraphError(f"{where}: two nodes are named {name!r}; names must be unique")
        records.append({"name": name, "class": ref, "args": args, "by_value": blob, "where": where})
    names = [r["name"] for r in records]
    edges = []
    for i, e in enumerate(_get(d, "edges", list, "graph", [])):
        where = f"edges[{i}]"
        if not isinstance(e, dict):
            raise GraphError(f"{where} must be an object, got {type(e).__name__}")
        src, dst = _get(e, "src", str, where), _get(e, "dst", str, where)
        for end in (src, dst):
            if end not in names:
                raise GraphError(f"{where} ({src!r} -> {dst!r}): there is no node named {end!r}")
        policy = _get(e, "policy", str, where, "all")
        if policy not in POLICIES:
            raise GraphError(f"{where} ({src!r} -> {dst!r}): 'policy' must be 'all' or 'latest', got {policy!r}")
        edges.append((src, dst, policy, _get(e, "follow", bool, where, False)))
    mapping = _mapping(d["mapping"], names, "mapping") if d.get("mapping") is not None else None
    positions = _positions(d["positions"], names, "positions") if d.get("positions") is not None else None

    untrusted = sorted({r["class"] for r in records if r["by_value"] is not None})
    if untrusted and not trust:
        listed = "; ".join(f"{ref} (nodes {', '.join(repr(r['name']) for r in records if r['class'] == ref)})"
                           for ref in untrusted)
        raise UntrustedGraphError(
            f"the graph holds classes saved by value (pickled code): {listed}. Loading them runs code from the file. "
            "Pass trust=True only for files you wrote or trust; or define these classes in a module that can be "
            "imported and save the graph again"
        )
    graph = graph_class()
    classes: dict[str, type] = {}
    by_name: dict[str, Node] = {}
    for r in records:
        cls = _load_class(r, r["where"], classes)
        try:
            positional, keywords = call_arguments(cls, r["args"])
            node = cls(*positional, **keywords)
        except Exception as exc:
            raise GraphError(f"{r['where']}: building {r['class']} with args {r['args']!r} failed: "
                             f"{type(exc).__name__}: {exc}") from exc
        if node.name != r["name"]:  # renamed after it was made
            node.name = r["name"]
        graph.add_node(node)
        by_name[r["name"]] = node
    for i, (src, dst, policy, follow) in enumerate(edges):
        try:
            graph.add_edge(by_name[src], by_name[dst], policy=policy, follow=follow)
        except GraphError as exc:
            raise GraphError(f"edges[{i}] ({src!r} -> {dst!r}): {exc}") from exc
    return graph, mapping, positions


# --------------------------------------------------------------------------------------------------
# JSON text and files (what Graph.to_json / from_json / save / load call)
# --------------------------------------------------------------------------------------------------
def to_json(graph: Graph, mapping: Mapping[str, Iterable[Any]] | None = None,
            positions: Mapping[Any, Any] | None = None, indent: int | None = 2) -> str:
    """`graph_to_dict` as JSON text (strict JSON: no NaN; non-ASCII kept as is)."""
    return json.dumps(graph_to_dict(graph, mapping, positions), indent=indent, ensure_ascii=False, allow_nan=False)


def from_json(text: str | bytes, trust: bool = False, *, graph_class: type[Graph] = Graph) -> Graph:
    """The graph in JSON `text`; its mapping and positions, if saved, in ``graph.graph["mapping"]`` /
    ``graph.graph["positions"]`` (networkx graph attributes; absent if not saved)."""
    try:
        d = json.loads(text)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise GraphError(f"not a chimera_lab graph: invalid JSON ({exc})") from exc
    except RecursionError:
        raise GraphError("not a chimera_lab graph: the JSON is nested too deeply to read") from None
    graph, mapping, positions = graph_from_dict(d, trust=trust, graph_class=graph_class)
    if mapping is not None:
        graph.graph["mapping"] = mapping
    if positions is not None:
        graph.graph["positions"] = positions
    return graph


def save(graph: Graph, path: str | os.PathLike[str], mapping: Mapping[str, Iterable[Any]] | None = None,
         positions: Mapping[Any, Any] | None = None, indent: int | None = 2) -> None:
    """Write `to_json` to `path` (UTF-8). Nothing is written if the graph cannot be saved."""
    text = to_json(graph, mapping, positions, indent)
    Path(path).write_text(text + "\n", encoding="utf-8")


def load(path: str | os.PathLike[str], trust: bool = False, *, graph_class: type[Graph] = Graph) -> Graph:
    """`from_json` of the file at `path`; errors name the file."""
    text = Path(path).read_bytes()
    try:
        return from_json(text, trust=trust, graph_class=graph_class)
    except GraphError as exc:
        raise type(exc)(f"{os.fspath(path)}: {exc}") from exc


# --------------------------------------------------------------------------------------------------
# Python code
# --------------------------------------------------------------------------------------------------
def _py(value: Any) -> str:
    """Python source for JSON data (like repr, with double-quoted strings where possible)."""
    if isinstance(value, str):
        text = repr(value)
        return f'"{text[1:-1]}"' if text[0] == "'" and '"' not in value else text
    if isinstance(value, list):
        return f"[{', '.join(map(_py, value))}]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_py(k)}: {_py(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _unique(base: str, taken: set[str]) -> str:
    name, n = base, 2
    while name in taken or keyword.iskeyword(name):
        name, n = f"{base}_{n}", n + 1
    taken.add(name)
    return name


def _identifier(text: str) -> str:
    name = re.sub(r"\W", "_", text)
    return f"n_{name}" if not name or name[0].isdigit() else name


def _call(head: str, args: list[str], tail: str = ")") -> list[str]:
    """``head + args + tail`` on one line, or one argument per line if that is too long."""
    line = f"{head}{', '.join(args)}{tail}"
    if len(line) <= LINE_LENGTH:
        return [line]
    lines = [head] + [f"    {a}," for a in args] + [tail]
    return [f"{s}  # noqa: E501" if len(s) > LINE_LENGTH else s for s in lines]


def to_code(graph: Graph, mapping: Mapping[str, Iterable[Any]] | None = None, graph_var: str = "graph") -> str:
    """Python source that rebuilds `graph` (and ``mapping = {...}`` if there is a mapping).

    Classes that can be imported are imported; classes that cannot (defined in a notebook) are used by
    their plain name, and a comment says to define them first. Only a `mapping` given here is printed.
    Raises GraphError if a constructor argument is not JSON data (so the code could not be valid Python).
    """
    if not graph_var.isidentifier() or keyword.iskeyword(graph_var):
        raise ValueError(f"to_code: graph_var must be a Python identifier, got {graph_var!r}")
    by_worker = _mapping(mapping, graph.node_names, "mapping") if mapping is not None else None
    taken = {"cp", graph_var, "mapping"}
    class_names: dict[type, str] = {}
    imports: dict[str, list[str]] = {}
    notebook: list[str] = []
    classes = list(dict.fromkeys(type(n) for n in graph.nodes))
    refs = {cls: import_path(cls) for cls in classes}
    for cls in classes:  # notebook classes first: they must be called by their own name
        if refs[cls] is None:
            class_names[cls] = cls.__name__
            if cls.__name__ not in taken:
                notebook.append(cls.__name__)
            taken.add(cls.__name__)
    for cls in classes:
        ref = refs[cls]
        if ref is not None:
            module, _, qualname = ref.partition(":")
            top, _, rest = qualname.partition(".")
            alias = _unique(top, taken)
            imports.setdefault(module, []).append(top if alias == top else f"{top} as {alias}")
            class_names[cls] = f"{alias}.{rest}" if rest else alias

    lines = ["import chimera_lab as cp"]
    for module, names in sorted(imports.items()):
        line = f"from {module} import {', '.join(sorted(names))}"
        lines += [line] if len(line) <= LINE_LENGTH else _call(f"from {module} import (", sorted(names))
    lines.append("")
    if notebook:
        lines += [f"# {', '.join(notebook)}: defined in the notebook, not importable; run the cell(s) that define "
                  f"{'it' if len(notebook) == 1 else 'them'} before this code", ""]
    var: dict[str, str] = {}
    for node in graph.nodes:
        var[node.name] = _unique(_identifier(node.name), taken)
        cls = type(node)
        positional, keywords = call_arguments(cls, node_args(node))
        args = [_py(v) for v in positional] + [f"{k}={_py(v)}" for k, v in keywords.items()]
        lines += _call(f"{var[node.name]} = {class_names[cls]}(", args)
    lines += ["", f"{graph_var} = cp.Graph()"]
    for node in graph.nodes:
        if graph.degree(node) == 0:
            lines.append(f"{graph_var}.add_node({var[node.name]})")
    for node in graph.nodes:
        for src, policy, follow in _inputs(graph, node):
            options = (', policy="latest"' if policy == "latest" else "") + (", follow=True" if follow else "")
            lines.append(f"{graph_var}.add_edge({var[src]}, {var[node.name]}{options})")
    if by_worker is not None:
        lines += _call("mapping = {", [f"{_py(w)}: {_py(ns)}" for w, ns in by_worker.items()], "}")
    return "\n".join(lines) + "\n"
