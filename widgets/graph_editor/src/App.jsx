// The graph editor: toolbar, palette, React Flow canvas, side panel and problems list. The kernel owns the
// truth (see ../PROTOCOL.md): everything shown comes from the model's traits, every edit is an op sent to the
// kernel. React Flow is used as a controlled component: nodes and edges are never added or removed locally;
// only positions (while dragging or before the kernel has stored them) and measured sizes are local.
import React, { useCallback, useEffect, useMemo, useRef, useState } from "react";
import {
  Background,
  Controls,
  MarkerType,
  MiniMap,
  ReactFlow,
  applyNodeChanges,
  useReactFlow,
  useStoreApi,
  useUpdateNodeInternals,
} from "@xyflow/react";
import AddForm from "./AddForm.jsx";
import NodeView, { stateTone } from "./NodeView.jsx";
import { EditorContext } from "./context.js";
import { dagreLayout, freeSpot, placeMissing } from "./layout.js";

const EMPTY = Object.freeze([]);
const EMPTY_LIVE = Object.freeze({ state: null, nodes: {} });
const NODE_TYPES = { chimera: NodeView };
const EDGE_COLOR = "#7d8797";
const EDGE_SELECTED = "#1976d2";
const EDGE_PROBLEM = "#d32f2f";

function useTrait(model, name, fallback) {
  const [value, setValue] = useState(() => model.get(name) ?? fallback);
  useEffect(() => {
    const update = () => setValue(model.get(name) ?? fallback);
    model.on(`change:${name}`, update);
    update();
    return () => model.off(`change:${name}`, update);
  }, [model, name, fallback]);
  return value;
}

function posKey(x, y) {
  return x === null || x === undefined || y === null || y === undefined ? "null" : `${x},${y}`;
}

function isEditable(target) {
  if (!target || !target.tagName) return false;
  const tag = target.tagName.toLowerCase();
  if (tag === "input") return !["checkbox", "radio", "button", "submit", "reset"].includes(target.type);
  return tag === "textarea" || tag === "select" || target.isContentEditable;
}

function useColorMode() {
  const get = () =>
    typeof document !== "undefined" && document.body && document.body.dataset.jpThemeLight === "false"
      ? "dark"
      : "light";
  const [mode, setMode] = useState(get);
  useEffect(() => {
    if (typeof MutationObserver === "undefined" || !document.body) return undefined;
    const obs = new MutationObserver(() => setMode(get()));
    obs.observe(document.body, { attributes: true, attributeFilter: ["data-jp-theme-light"] });
    return () => obs.disconnect();
  }, []);
  return mode;
}

async function insertCode(code) {
  const app = typeof window !== "undefined" ? window.jupyterapp : undefined;
  if (app && app.commands && app.shell) {
    try {
      await app.commands.execute("notebook:insert-cell-below");
      const widget = app.shell.currentWidget;
      const cell = widget && widget.content && widget.content.activeCell;
      if (cell && cell.model && cell.model.sharedModel) {
        cell.model.sharedModel.setSource(code);
        return "inserted";
      }
    } catch (exc) {
      // fall back to the clipboard
    }
  }
  try {
    await navigator.clipboard.writeText(code);
    return "copied";
  } catch (exc) {
    return "shown";
  }
}

export default function App({ model }) {
  const palette = useTrait(model, "palette", EMPTY);
  const nodes = useTrait(model, "nodes", EMPTY);
  const edges = useTrait(model, "edges", EMPTY);
  const workers = useTrait(model, "workers", EMPTY);
  const live = useTrait(model, "live", EMPTY_LIVE);
  const problems = useTrait(model, "problems", EMPTY);
  const status = useTrait(model, "status", null);
  const canUndo = useTrait(model, "can_undo", false);
  const canRedo = useTrait(model, "can_redo", false);
  const code = useTrait(model, "code", null);
  const colorMode = useColorMode();
  const flow = useReactFlow();

  // ---- sending ops ----
  const viewId = useRef(Math.random().toString(36).slice(2, 8));
  const counter = useRef(0);
  const send = useCallback(
    (op, fields) => {
      const id = `${viewId.current}-${++counter.current}`;
      model.send({ type: "op", id, op, ...(fields || {}) });
      return id;
    },
    [model],
  );

  // ---- status line: the kernel's last answer, or a message of this view ----
  const [shownStatus, setShownStatus] = useState(status);
  const codeOps = useRef(new Set());
  useEffect(() => {
    if (!status) return;
    if (status.ok && codeOps.current.has(status.id)) return; // the code handler says what happened
    setShownStatus(status);
  }, [status]);

  // ---- derived data ----
  const colorOf = useMemo(() => new Map((workers || []).map((w) => [w.name, w.color])), [workers]);
  const liveNodes = (live && live.nodes) || {};
  const problemNodes = useMemo(() => new Set((problems || []).map((p) => p.node).filter(Boolean)), [problems]);
  const problemEdges = useMemo(
    () => new Set((problems || []).filter((p) => Array.isArray(p.edge)).map((p) => `${p.edge[0]}->${p.edge[1]}`)),
    [problems],
  );
  const inputs = useMemo(() => {
    const m = new Map();
    for (const e of edges || []) m.set(e.dst, (m.get(e.dst) || 0) + 1);
    return m;
  }, [edges]);
  const names = useMemo(() => (nodes || []).map((n) => n.name), [nodes]);

  // ---- selection (this view's; React Flow's own selection changes are ignored) ----
  const [selection, setSelection] = useState(null); // {kind: "node"|"edge", id, traceback?}
  const selNode = selection && selection.kind === "node" ? (nodes || []).find((n) => n.name === selection.id) : null;
  const selEdge =
    selection && selection.kind === "edge" ? (edges || []).find((e) => `${e.src}->${e.dst}` === selection.id) : null;

  // ---- positions ----
  // overrides: positions this view has decided (layout, drag) and sent with `move`, kept until the kernel's
  // x/y for the node changes from what it was then.
  const overrides = useRef(new Map()); // name -> {x, y, base}
  const [rfNodes, setRfNodes] = useState([]);
  const rfNodesRef = useRef(rfNodes);
  rfNodesRef.current = rfNodes;
  const hadNodes = useRef(false);

  const sizes = () => {
    const m = new Map();
    for (const n of rfNodesRef.current) if (n.measured && n.measured.width) m.set(n.id, n.measured);
    return m;
  };

  const fitSoon = useCallback(() => {
    setTimeout(() => {
      try {
        flow.fitView({ padding: 0.15, maxZoom: 1.25 });
      } catch (exc) {
        // unmounted
      }
    }, 60);
  }, [flow]);

  const positions = useMemo(() => {
    const ov = overrides.current;
    const present = new Set(names);
    for (const name of [...ov.keys()]) if (!present.has(name)) ov.delete(name);
    const placed = {};
    const missing = [];
    for (const n of nodes || []) {
      const o = ov.get(n.name);
      if (o && o.base !== posKey(n.x, n.y)) ov.delete(n.name);
      const o2 = ov.get(n.name);
      if (o2) placed[n.name] = { x: o2.x, y: o2.y };
      else if (n.x !== null && n.x !== undefined && n.y !== null && n.y !== undefined) placed[n.name] = { x: n.x, y: n.y };
      else missing.push(n.name);
    }
    let laidOut = null;
    if (missing.length) {
      laidOut = placeMissing(names, edges || [], placed, missing, sizes());
      for (const name of missing) {
        placed[name] = laidOut[name];
        ov.set(name, { ...laidOut[name], base: "null" });
      }
    }
    return { placed, laidOut };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [nodes, edges, names]);

  // report positions the layout chose
  const reported = useRef(null);
  useEffect(() => {
    const { laidOut } = positions;
    if (!laidOut || reported.current === positions) return;
    reported.current = positions;
    const pos = {};
    for (const [name, p] of Object.entries(laidOut)) pos[name] = [p.x, p.y];
    send("move", { positions: pos });
    fitSoon();
  }, [positions, send, fitSoon]);

  const fitWhenShown = useRef(null);
  useEffect(() => {
    if (fitWhenShown.current && names.includes(fitWhenShown.current)) {
      fitWhenShown.current = null;
      fitSoon();
    }
  }, [names, fitSoon]);

  useEffect(() => {
    if (!hadNodes.current && names.length) fitSoon();
    hadNodes.current = names.length > 0;
  }, [names, fitSoon]);

  // the React Flow nodes: kernel data + local positions/measurements
  useEffect(() => {
    const { placed } = positions;
    setRfNodes((prev) => {
      const old = new Map(prev.map((n) => [n.id, n]));
      return (nodes || []).map((n) => {
        const o = old.get(n.name);
        const data = {
          name: n.name,
          label: n.label,
          kind: n.kind,
          worker: n.worker,
          color: n.worker ? colorOf.get(n.worker) || null : null,
          live: liveNodes[n.name] || null,
          problem: problemNodes.has(n.name),
        };
        const position = o && o.dragging ? o.position : placed[n.name] || { x: 0, y: 0 };
        const selected = !!(selection && selection.kind === "node" && selection.id === n.name);
        return {
          ...(o || {}),
          id: n.name,
          type: "chimera",
          position,
          data,
          selected,
          className: problemNodes.has(n.name) ? "chimera-ge-rfnode-problem" : undefined,
        };
      });
    });
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [positions, nodes, colorOf, live, problemNodes, selection]);

  // React Flow measures a node's handles once; if new node objects without `measured` reach it between that
  // measurement and our applying the `dimensions` change (the kernel answering fast), the handle bounds are
  // dropped and the node's edges are not drawn. Re-measure such nodes.
  const store = useStoreApi();
  const updateNodeInternals = useUpdateNodeInternals();
  useEffect(() => {
    const raf = requestAnimationFrame(() => {
      const lost = [];
      for (const n of store.getState().nodeLookup.values()) {
        if (!n.hidden && !n.internals.handleBounds && n.measured && n.measured.width) lost.push(n.id);
      }
      if (lost.length) updateNodeInternals(lost);
    });
    return () => cancelAnimationFrame(raf);
  }, [rfNodes, store, updateNodeInternals]);

  const onNodesChange = useCallback((changes) => {
    const kept = changes.filter((c) => c.type === "dimensions" || c.type === "position");
    if (kept.length) setRfNodes((ns) => applyNodeChanges(kept, ns));
  }, []);

  const traitPos = useMemo(() => new Map((nodes || []).map((n) => [n.name, posKey(n.x, n.y)])), [nodes]);
  const onNodeDragStop = useCallback(
    (ev, node, dragged) => {
      const list = dragged && dragged.length ? dragged : [node];
      const pos = {};
      for (const n of list) {
        const x = Math.round(n.position.x);
        const y = Math.round(n.position.y);
        overrides.current.set(n.id, { x, y, base: traitPos.get(n.id) || "null" });
        pos[n.id] = [x, y];
      }
      setRfNodes((ns) => ns.map((n) => (pos[n.id] ? { ...n, position: { x: pos[n.id][0], y: pos[n.id][1] } } : n)));
      send("move", { positions: pos });
    },
    [send, traitPos],
  );

  const relayout = useCallback(() => {
    if (!names.length) return;
    const laid = dagreLayout(names, edges || [], sizes());
    const pos = {};
    for (const name of names) {
      overrides.current.set(name, { ...laid[name], base: traitPos.get(name) || "null" });
      pos[name] = [laid[name].x, laid[name].y];
    }
    setRfNodes((ns) => ns.map((n) => (laid[n.id] ? { ...n, position: laid[n.id] } : n)));
    send("move", { positions: pos });
    fitSoon();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [names, edges, traitPos, send, fitSoon]);

  // ---- edges (exactly the kernel's) ----
  const rfEdges = useMemo(
    () =>
      (edges || []).map((e) => {
        const id = `${e.src}->${e.dst}`;
        const latest = e.policy === "latest";
        const follow = !!e.follow && (inputs.get(e.dst) || 0) >= 2;
        const problem = problemEdges.has(id);
        const selected = !!(selection && selection.kind === "edge" && selection.id === id);
        const color = problem ? EDGE_PROBLEM : selected ? EDGE_SELECTED : EDGE_COLOR;
        const width = follow ? 3.5 : selected ? 2.2 : 1.6;
        const marker = Math.round((18 * 1.6) / width);
        return {
          id,
          source: e.src,
          target: e.dst,
          selected,
          className: [
            "chimera-ge-edge",
            latest && "chimera-ge-edge-latest",
            follow && "chimera-ge-edge-follow",
            problem && "chimera-ge-edge-problem",
          ]
            .filter(Boolean)
            .join(" "),
          style: {
            stroke: color,
            strokeWidth: width,
            strokeDasharray: latest ? "6 4" : undefined,
          },
          // markers scale with the stroke width: keep the arrow head the same size on thick edges
          markerEnd: { type: MarkerType.ArrowClosed, width: marker, height: marker, color },
          data: { policy: e.policy, follow: !!e.follow },
        };
      }),
    [edges, inputs, problemEdges, selection],
  );

  // ---- interactions ----
  const rootRef = useRef(null);
  const focusRoot = () => {
    const root = rootRef.current;
    if (root && !root.contains(document.activeElement)) root.focus({ preventScroll: true });
  };

  const selectNode = useCallback(
    (name, traceback) => {
      setSelection({ kind: "node", id: name, traceback: !!traceback });
      send("open_view", { name });
    },
    [send],
  );

  const ctxRef = useRef({});
  ctxRef.current.showError = (name) => selectNode(name, true);

  const onConnect = useCallback(
    (c) => {
      if (c.source && c.target) send("add_edge", { src: c.source, dst: c.target });
    },
    [send],
  );
  const isValidConnection = useCallback(
    (c) => c.source !== c.target && !(edges || []).some((e) => e.src === c.source && e.dst === c.target),
    [edges],
  );

  const deleteSelection = useCallback(() => {
    if (selNode) send("remove_node", { name: selNode.name });
    else if (selEdge) send("remove_edge", { src: selEdge.src, dst: selEdge.dst });
  }, [selNode, selEdge, send]);

  const onKeyDown = (ev) => {
    if ((ev.key === "Delete" || ev.key === "Backspace") && !isEditable(ev.target) && (selNode || selEdge)) {
      ev.preventDefault();
      ev.stopPropagation();
      deleteSelection();
    }
  };

  // ---- add form ----
  const [form, setForm] = useState(null); // {entry, seq}
  const formSeq = useRef(0);
  const openForm = (entry) => {
    setForm({ entry, seq: ++formSeq.current });
  };
  const closeForm = useCallback(() => setForm(null), []);
  const submitForm = useCallback(
    (name, args) => {
      const spot = freeSpot(
        Object.fromEntries(rfNodesRef.current.map((n) => [n.id, n.position])),
        sizes(),
      );
      fitWhenShown.current = name; // the new node may be outside the view: fit once it is there
      return send("add_node", { cls: form.entry.key, name, args, x: spot.x, y: spot.y });
    },
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [form, send],
  );

  // ---- code ----
  const [codeShown, setCodeShown] = useState(null);
  const codeWanted = useRef(null);
  const askCode = () => {
    const id = send("to_code");
    codeOps.current.add(id);
    codeWanted.current = id;
  };
  useEffect(() => {
    if (!code || !codeWanted.current || code.id !== codeWanted.current) return;
    codeWanted.current = null;
    let alive = true;
    insertCode(code.code || "").then((how) => {
      if (!alive) return;
      if (how === "inserted") {
        setCodeShown(null);
        setShownStatus({ ok: true, message: "Inserted the graph's code in a new cell below the active cell." });
      } else {
        setCodeShown(code.code || "");
        setShownStatus({
          ok: true,
          message:
            how === "copied"
              ? "Copied the graph's code to the clipboard (also shown on the right): paste it into a cell."
              : "The graph's code is shown on the right: copy it into a cell.",
        });
      }
    });
    return () => {
      alive = false;
    };
  }, [code]);

  // ---- optimistic values of the side panel's selects until the kernel answers ----
  const [pendingField, setPendingField] = useState(null); // {id, key, value}
  useEffect(() => {
    if (pendingField && status && status.id === pendingField.id) setPendingField(null);
  }, [status, pendingField]);
  const shownValue = (key, value) => (pendingField && pendingField.key === key ? pendingField.value : value);

  // ---- toolbar state ----
  const mstate = live && live.state ? live.state : null;
  const canCommit = !["running", "recording", "committing", "shutdown"].includes(mstate);
  const canStart = mstate === "committed" || mstate === "stopped";
  const canRecord = mstate === "committed" || mstate === "stopped" || mstate === "running";
  const canStop = mstate === "running" || mstate === "recording";

  // ---- palette ----
  const builtin = (palette || []).filter((p) => p.builtin);
  const notebook = (palette || []).filter((p) => !p.builtin);
  const paletteItem = (p) => (
    <div
      key={p.key}
      className={"chimera-ge-palette-item" + (form && form.entry.key === p.key ? " chimera-ge-active" : "")}
      data-cls={p.key}
      title={(p.doc || "").trim() || p.key}
      role="button"
      tabIndex={0}
      onClick={() => openForm(p)}
      onKeyDown={(ev) => {
        if (ev.key === "Enter" || ev.key === " ") {
          ev.preventDefault();
          openForm(p);
        }
      }}
    >
      <span className="chimera-ge-palette-label">{p.label}</span>
      <span className="chimera-ge-palette-module">{p.module}</span>
    </div>
  );

  // ---- side panel ----
  const selLive = selNode ? liveNodes[selNode.name] : null;
  const workerNames = (workers || []).map((w) => w.name);
  const nodePanel = selNode && (
    <div className="chimera-ge-selection" data-kind="node" data-name={selNode.name}>
      <div className="chimera-ge-panel-title">{selNode.name}</div>
      <dl className="chimera-ge-props">
        <dt>class</dt>
        <dd title={selNode.cls}>{selNode.label}</dd>
        <dt>kind</dt>
        <dd>{selNode.kind}</dd>
      </dl>
      <div className="chimera-ge-sub">arguments</div>
      <pre className="chimera-ge-args">{JSON.stringify(selNode.args || {}, null, 1)}</pre>
      <label className="chimera-ge-field">
        <span className="chimera-ge-field-label">worker</span>
        <select
          className="chimera-ge-worker"
          value={shownValue(`worker:${selNode.name}`, selNode.worker || "")}
          onChange={(ev) => {
            const worker = ev.target.value || null;
            const id = send("set_worker", { name: selNode.name, worker });
            setPendingField({ id, key: `worker:${selNode.name}`, value: ev.target.value });
          }}
        >
          <option value="">(unassigned)</option>
          {workerNames.map((w) => (
            <option key={w} value={w}>
              {w}
            </option>
          ))}
          {selNode.worker && !workerNames.includes(selNode.worker) && (
            <option value={selNode.worker}>{selNode.worker} (not connected)</option>
          )}
        </select>
      </label>
      {selLive && (
        <div className="chimera-ge-live-detail">
          <span className={"chimera-ge-state chimera-ge-tone-" + stateTone(selLive.state)}>{selLive.state}</span>
          {typeof selLive.rate === "number" && <span> {selLive.rate.toFixed(2)} steps/s</span>}
          {typeof selLive.p50 === "number" && <span> · p50 {selLive.p50.toFixed(2)} ms</span>}
          {selLive.errors > 0 && <span className="chimera-ge-bad"> · {selLive.errors} errors</span>}
        </div>
      )}
      {selLive && selLive.last_error && (selection.traceback ? (
        <pre className="chimera-ge-traceback">{selLive.last_error}</pre>
      ) : (
        <button type="button" className="chimera-ge-show-traceback"
          onClick={() => setSelection({ ...selection, traceback: true })}>
          Show the last error
        </button>
      ))}
      <div className="chimera-ge-form-buttons">
        <button type="button" className="chimera-ge-delete" onClick={deleteSelection} title="Delete (Del)">
          Delete node
        </button>
      </div>
    </div>
  );

  const edgePanel = selEdge && (() => {
    const key = `${selEdge.src}->${selEdge.dst}`;
    const multi = (inputs.get(selEdge.dst) || 0) >= 2;
    return (
      <div className="chimera-ge-selection" data-kind="edge" data-edge={key}>
        <div className="chimera-ge-panel-title">
          {selEdge.src} → {selEdge.dst}
        </div>
        <label className="chimera-ge-field">
          <span className="chimera-ge-field-label">policy</span>
          <select
            className="chimera-ge-policy"
            value={shownValue(`policy:${key}`, selEdge.policy || "all")}
            onChange={(ev) => {
              const policy = ev.target.value;
              const id = send("set_edge", { src: selEdge.src, dst: selEdge.dst, policy });
              setPendingField({ id, key: `policy:${key}`, value: policy });
            }}
          >
            <option value="all">all (every item, in order)</option>
            <option value="latest">latest (drop stale items)</option>
          </select>
        </label>
        <label
          className="chimera-ge-field chimera-ge-field-bool"
          title={multi ? "the node steps when this input has a new item" : `${selEdge.dst} has a single input`}
        >
          <span className="chimera-ge-field-label">follow</span>
          <input
            type="checkbox"
            className="chimera-ge-follow"
            checked={shownValue(`follow:${key}`, !!selEdge.follow)}
            disabled={!multi || !!selEdge.follow}
            onChange={(ev) => {
              if (!ev.target.checked) return; // a node follows one input: choose another input to change it
              const id = send("set_edge", { src: selEdge.src, dst: selEdge.dst, follow: true });
              setPendingField({ id, key: `follow:${key}`, value: true });
            }}
          />
        </label>
        <div className="chimera-ge-form-buttons">
          <button type="button" className="chimera-ge-delete" onClick={deleteSelection} title="Delete (Del)">
            Delete edge
          </button>
        </div>
      </div>
    );
  })();

  const existingNames = names;

  return (
    <EditorContext.Provider value={ctxRef}>
      <div
        className="chimera-ge"
        ref={rootRef}
        tabIndex={-1}
        onKeyDown={onKeyDown}
        data-lm-suppress-shortcuts="true"
        data-p-suppress-shortcuts="true"
      >
        <div className="chimera-ge-toolbar">
          <button type="button" className="chimera-ge-undo" disabled={!canUndo} onClick={() => send("undo")}>
            Undo
          </button>
          <button type="button" className="chimera-ge-redo" disabled={!canRedo} onClick={() => send("redo")}>
            Redo
          </button>
          <button type="button" className="chimera-ge-layout" disabled={!names.length} onClick={relayout}
            title="Lay the graph out left to right">
            Layout
          </button>
          <span className="chimera-ge-sep" />
          <button type="button" className="chimera-ge-commit" disabled={!canCommit}
            onClick={() => send("command", { cmd: "commit" })} title="Send the graph to the workers">
            Commit
          </button>
          <button type="button" className="chimera-ge-start" disabled={!canStart}
            onClick={() => send("command", { cmd: "start" })}>
            Start
          </button>
          <button type="button" className="chimera-ge-record" disabled={!canRecord}
            onClick={() => send("command", { cmd: "record" })}>
            Record
          </button>
          <button type="button" className="chimera-ge-stop" disabled={!canStop}
            onClick={() => send("command", { cmd: "stop" })}>
            Stop
          </button>
          <span className="chimera-ge-sep" />
          <button type="button" className="chimera-ge-code" onClick={askCode} title="The graph as Python code">
            Insert code
          </button>
          <span className="chimera-ge-manager" data-state={mstate || ""}>
            Manager: <b>{mstate || "none"}</b>
          </span>
          <span
            className="chimera-ge-status"
            data-ok={shownStatus && shownStatus.ok === false ? "false" : "true"}
            title={(shownStatus && shownStatus.message) || ""}
          >
            {(shownStatus && shownStatus.message) || ""}
          </span>
        </div>
        <div className="chimera-ge-main">
          <div className="chimera-ge-palette">
            {builtin.length > 0 && <div className="chimera-ge-palette-group">Built-in</div>}
            {builtin.map(paletteItem)}
            {notebook.length > 0 && <div className="chimera-ge-palette-group">Notebook</div>}
            {notebook.map(paletteItem)}
            {!palette || palette.length === 0 ? <div className="chimera-ge-hint">No node classes.</div> : null}
          </div>
          <div className="chimera-ge-canvas">
            <ReactFlow
              nodes={rfNodes}
              edges={rfEdges}
              nodeTypes={NODE_TYPES}
              onNodesChange={onNodesChange}
              onNodeDragStop={onNodeDragStop}
              onNodeClick={(ev, node) => {
                selectNode(node.id, false);
                focusRoot();
              }}
              onEdgeClick={(ev, edge) => {
                setSelection({ kind: "edge", id: edge.id });
                focusRoot();
              }}
              onPaneClick={() => setSelection(null)}
              onConnect={onConnect}
              isValidConnection={isValidConnection}
              deleteKeyCode={null}
              disableKeyboardA11y
              fitView
              fitViewOptions={{ padding: 0.15, maxZoom: 1.25 }}
              minZoom={0.2}
              maxZoom={2}
              zoomOnScroll={false}
              preventScrolling={false}
              colorMode={colorMode}
              attributionPosition="top-right"
            >
              <Background gap={16} size={1} />
              <Controls showInteractive={false} />
              <MiniMap
                pannable
                zoomable
                style={{ width: 120, height: 80 }}
                nodeColor={(n) => (n.data && n.data.color) || "#b0b8c4"}
              />
            </ReactFlow>
          </div>
          <div className="chimera-ge-side">
            {form && (
              <AddForm
                key={form.seq}
                entry={form.entry}
                existingNames={existingNames}
                status={status}
                onSubmit={submitForm}
                onClose={closeForm}
              />
            )}
            {nodePanel}
            {edgePanel}
            {codeShown !== null && (
              <div className="chimera-ge-codebox">
                <div className="chimera-ge-panel-title">The graph as code</div>
                <textarea className="chimera-ge-code-text" readOnly value={codeShown}
                  onFocus={(ev) => ev.target.select()} />
                <button type="button" onClick={() => setCodeShown(null)}>Close</button>
              </div>
            )}
            {!form && !nodePanel && !edgePanel && codeShown === null && (
              <div className="chimera-ge-hint">
                Click a class on the left to add a node; drag from a node's right handle to another node's left
                handle to connect them; click a node or an edge to edit it.
              </div>
            )}
          </div>
        </div>
        <ul className="chimera-ge-problems">
          {(problems || []).map((p, i) => (
            <li
              key={i}
              data-node={p.node || undefined}
              data-edge={Array.isArray(p.edge) ? `${p.edge[0]}->${p.edge[1]}` : undefined}
              onClick={() => {
                if (p.node && names.includes(p.node)) selectNode(p.node, false);
                else if (Array.isArray(p.edge)) setSelection({ kind: "edge", id: `${p.edge[0]}->${p.edge[1]}` });
              }}
            >
              {p.node && <b>{p.node}: </b>}
              {!p.node && Array.isArray(p.edge) && <b>{`${p.edge[0]} → ${p.edge[1]}: `}</b>}
              {p.message}
            </li>
          ))}
        </ul>
      </div>
    </EditorContext.Provider>
  );
}
