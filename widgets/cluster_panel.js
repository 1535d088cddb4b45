// ClusterPanel: the Manager's state, its workers and nodes (from the `snapshot` trait), and Start / Stop / Record.
//
// Here -> kernel: {type: "command", cmd: "start" | "stop" | "record"}; the kernel runs it off the comm thread
// and reports in the `last_command` trait: {cmd, ok, error} (ok null while it runs).
import { h, fmt } from "./common.js";

const GOOD = new Set(["running", "recording", "connected"]);
const IDLE = new Set(["stopped", "ready", "idle", "committed", "finished", "spawning", "committing", "disconnected"]);
const BAD = new Set(["error", "crashed", "lost", "shutdown"]);

function stateClass(s) {
  const tone = GOOD.has(s) ? "good" : BAD.has(s) ? "bad" : IDLE.has(s) ? "idle" : "other";
  return `chimera-state-cell chimera-tone-${tone}`;
}

function render({ model, el }) {
  const stateSpan = h("span", { class: "chimera-state" });
  const address = h("span", { class: "chimera-address" });
  const buttons = {};
  for (const [cmd, label] of [["start", "Start"], ["stop", "Stop"], ["record", "Record"]]) {
    buttons[cmd] = h("button", { class: `chimera-${cmd}`, type: "button", onclick: () => send(cmd) }, label);
  }
  const message = h("div", { class: "chimera-panel-message" });
  const workers = h("tbody");
  const nodes = h("tbody");
  const root = h("div", { class: "chimera-panel" },
    h("div", { class: "chimera-panel-header" },
      h("strong", {}, "Cluster"), stateSpan, address,
      h("span", { class: "chimera-buttons" }, buttons.start, buttons.stop, buttons.record)),
    message,
    h("table", { class: "chimera-table chimera-workers" },
      h("thead", {}, h("tr", {}, ["worker", "state", "host", "nodes"].map((c) => h("th", {}, c)))), workers),
    h("table", { class: "chimera-table chimera-nodes" },
      h("thead", {}, h("tr", {},
        ["node", "worker", "kind", "state", "steps/s", "p50 ms", "p99 ms", "dropped", "errors"]
          .map((c) => h("th", {}, c)))),
      nodes));
  el.appendChild(root);

  let busy = null; // the command sent and not answered yet
  let busyTimer = null;

  function send(cmd) {
    if (busy) return;
    busy = cmd;
    message.textContent = `${cmd}…`;
    message.className = "chimera-panel-message";
    model.send({ type: "command", cmd });
    clearTimeout(busyTimer);
    busyTimer = setTimeout(() => {  // never lock the buttons for good if the answer is lost
      busy = null;
      updateButtons();
    }, 120000);
    updateButtons();
  }

  function updateButtons() {
    const s = (model.get("snapshot") || {}).state || "idle";
    const active = s === "running" || s === "recording";
    const graph = !["idle", "committing", "shutdown"].includes(s);
    buttons.start.disabled = !!busy || !graph || active;
    buttons.stop.disabled = !!busy || !active;
    buttons.record.disabled = !!busy || !graph || s === "recording";
  }

  const onCommand = () => {
    const last = model.get("last_command") || {};
    if (last.ok === null || last.ok === undefined) return; // still running
    busy = null;
    clearTimeout(busyTimer);
    message.textContent = last.ok ? "" : `${last.cmd} failed: ${last.error}`;
    message.className = last.ok ? "chimera-panel-message" : "chimera-panel-message chimera-panel-error";
    updateButtons();
  };

  const onSnapshot = () => {
    const snap = model.get("snapshot") || {};
    stateSpan.textContent = snap.state || "–";
    stateSpan.className = `chimera-state chimera-tone-${GOOD.has(snap.state) ? "good" : BAD.has(snap.state) ? "bad" : "idle"}`;
    address.textContent = snap.host ? `${snap.host}:${snap.port}` : "";
    workers.replaceChildren(...Object.entries(snap.workers || {}).map(([name, w]) =>
      h("tr", { class: "chimera-worker", "data-name": name, "data-state": w.state },
        h("td", {}, name),
        h("td", { class: stateClass(w.state) }, w.state),
        h("td", {}, w.hostname || ""),
        h("td", {}, (w.nodes || []).join(", ")))));
    nodes.replaceChildren(...Object.entries(snap.nodes || {}).map(([name, n]) =>
      h("tr", { class: "chimera-node", "data-name": name, "data-state": n.state },
        h("td", {}, name),
        h("td", {}, n.worker),
        h("td", {}, n.kind),
        h("td", { class: stateClass(n.state) }, n.state),
        h("td", { class: "chimera-num" }, fmt(n.rate, 1)),
        h("td", { class: "chimera-num" }, fmt(n.p50, 2)),
        h("td", { class: "chimera-num" }, fmt(n.p99, 2)),
        h("td", { class: "chimera-num" }, n.dropped || 0),
        h("td", { class: "chimera-num" }, n.errors > 0
          ? h("span", { class: "chimera-errors", title: n.last_error || "" }, n.errors)
          : "0"))));
    updateButtons();
  };

  model.on("change:snapshot", onSnapshot);
  model.on("change:last_command", onCommand);
  onSnapshot();

  return () => {
    clearTimeout(busyTimer);
    model.off("change:snapshot", onSnapshot);
    model.off("change:last_command", onCommand);
    root.remove();
  };
}

export default { render };
