// anywidget entry point of chimera_lab's GraphEditor canvas (see ../PROTOCOL.md). Bundled by ../build.mjs
// into chimera_lab/jupyter/static/graph_editor.js (and graph_editor.css, passed to anywidget as _css).
import React from "react";
import { createRoot } from "react-dom/client";
import { ReactFlowProvider } from "@xyflow/react";
import App from "./App.jsx";
import "./editor.css";

function render({ model, el }) {
  const host = document.createElement("div");
  host.className = "chimera-ge-host";
  el.appendChild(host);
  const root = createRoot(host);
  root.render(
    <ReactFlowProvider>
      <App model={model} />
    </ReactFlowProvider>,
  );
  return () => {
    root.unmount();
    host.remove();
  };
}

export default { render };
