// The custom React Flow node: name, class, kind, worker colour, live state and an error badge.
import React, { memo, useContext } from "react";
import { Handle, Position } from "@xyflow/react";
import { EditorContext } from "./context.js";

const GOOD = new Set(["running", "recording"]);
const BAD = new Set(["error", "crashed", "lost", "failed"]);

export function stateTone(state) {
  if (GOOD.has(state)) return "good";
  if (BAD.has(state)) return "bad";
  return "idle";
}

function fmtRate(rate) {
  if (typeof rate !== "number" || !Number.isFinite(rate)) return "";
  return rate >= 100 ? rate.toFixed(0) : rate >= 10 ? rate.toFixed(1) : rate.toFixed(2);
}

function fmtMs(ms) {
  if (typeof ms !== "number" || !Number.isFinite(ms)) return "";
  return ms >= 100 ? ms.toFixed(0) : ms >= 10 ? ms.toFixed(1) : ms.toFixed(2);
}

function NodeView({ data }) {
  const ctx = useContext(EditorContext);
  const { name, label, kind, worker, color, live, problem } = data;
  const errors = live && live.errors > 0 ? live.errors : 0;
  const style = color ? { "--chimera-ge-worker": color } : undefined;
  return (
    <div
      className={"chimera-ge-node" + (color ? " chimera-ge-has-worker" : "") + (problem ? " chimera-ge-node-problem" : "")}
      data-name={name}
      data-kind={kind || ""}
      data-worker={worker || ""}
      data-state={live ? live.state || "" : ""}
      data-rate={live && typeof live.rate === "number" ? String(live.rate) : ""}
      data-problem={problem ? "true" : "false"}
      style={style}
      title={worker ? `${name} on ${worker}` : `${name} (no worker)`}
    >
      <Handle
        type="target"
        position={Position.Left}
        className={kind === "source" ? "chimera-ge-handle-quiet" : undefined}
      />
      <div className="chimera-ge-node-head">
        <span className="chimera-ge-node-name">{name}</span>
        {errors > 0 && (
          <button
            type="button"
            className="chimera-ge-errors nodrag"
            title={`${errors} error${errors === 1 ? "" : "s"}: click for the traceback`}
            onClick={(ev) => {
              ev.stopPropagation();
              ctx.current.showError(name);
            }}
          >
            {errors}
          </button>
        )}
      </div>
      <div className="chimera-ge-node-sub">
        <span className="chimera-ge-node-label">{label}</span>
        <span className="chimera-ge-node-kind">{kind}</span>
      </div>
      {live && (
        <div className="chimera-ge-node-live">
          <span className={"chimera-ge-state chimera-ge-tone-" + stateTone(live.state)}>{live.state || "?"}</span>
          {typeof live.rate === "number" && <span className="chimera-ge-rate">{fmtRate(live.rate)}/s</span>}
          {typeof live.p50 === "number" && <span className="chimera-ge-p50">p50 {fmtMs(live.p50)} ms</span>}
        </div>
      )}
      <Handle
        type="source"
        position={Position.Right}
        className={kind === "sink" ? "chimera-ge-handle-quiet" : undefined}
      />
    </div>
  );
}

export default memo(NodeView);
