// LauncherPanel: a launcher's workers (from the `snapshot` trait: launcher.status() plus counts and columns),
// "−" / "+" / Scale, and Close after a confirmation.
//
// Here -> kernel: {type: "command", cmd: "scale", n} or {type: "command", cmd: "close", confirm: true}; the kernel
// runs it off the comm thread and reports in the `last_command` trait: {cmd, n?, ok, error, seq} (ok null while
// it runs; seq grows with every report, so two equal outcomes are still two changes).
import { h } from "./common.js";

const GOOD = new Set(["connected", "running"]);
const BAD = new Set(["lost", "closed", "disconnected"]);

function tone(state) {
  return GOOD.has(state) ? "good" : BAD.has(state) ? "bad" : "idle";
}

function cellText(value) {
  if (value === null || value === undefined) return "";
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function render({ model, el }) {
  const type = h("strong", { class: "chimera-launcher-type" });
  const state = h("span", { class: "chimera-launcher-state" });
  const count = h("span", { class: "chimera-launcher-count" });
  const manager = h("span", { class: "chimera-launcher-manager" });
  const details = h("div", { class: "chimera-launcher-details" });

  const minus = h("button", { class: "chimera-launcher-minus", type: "button", title: "one worker fewer",
                              onclick: () => scale(live() - 1) }, "−");
  const plus = h("button", { class: "chimera-launcher-plus", type: "button", title: "one worker more",
                             onclick: () => scale(live() + 1) }, "+");
  const input = h("input", { class: "chimera-launcher-n", type: "number", min: 0, step: 1,
                             "aria-label": "number of workers",
                             oninput: () => { edited = true; },
                             onkeydown: (ev) => { if (ev.key === "Enter") scaleToInput(); } });
  const scaleButton = h("button", { class: "chimera-launcher-scale", type: "button", onclick: () => scaleToInput() },
                        "Scale");
  const closeButton = h("button", { class: "chimera-launcher-close", type: "button", title: "end the workers",
                                    onclick: () => askClose(true) }, "Close…");
  const confirmText = h("span", { class: "chimera-launcher-confirm-text" });
  const confirmYes = h("button", { class: "chimera-launcher-confirm-yes", type: "button", onclick: () => close() },
                       "Close");
  const confirmNo = h("button", { class: "chimera-launcher-confirm-no", type: "button",
                                  onclick: () => askClose(false) }, "Cancel");
  const confirm = h("span", { class: "chimera-launcher-confirm", hidden: true }, confirmText, confirmYes, confirmNo);
  const message = h("div", { class: "chimera-launcher-message" });
  const head = h("tr");
  const body = h("tbody");
  const table = h("table", { class: "chimera-table chimera-launcher-workers" }, h("thead", {}, head), body);
  const empty = h("div", { class: "chimera-launcher-empty" }, "no workers");

  const root = h("div", { class: "chimera-launcher chimera-launcher-panel" },
    h("div", { class: "chimera-launcher-header" }, type, state, count, manager),
    details,
    h("div", { class: "chimera-launcher-controls" },
      minus, plus, input, scaleButton, h("span", { class: "chimera-launcher-spacer" }), closeButton, confirm),
    message, table, empty);
  el.appendChild(root);

  let pending = false; // sent, and the kernel has not said it is done
  let pendingTimer = null;
  let edited = false; // the number was typed in: snapshots no longer overwrite it

  const snap = () => model.get("snapshot") || {};
  const live = () => Number(snap().live) || 0;
  const running = () => {
    const last = model.get("last_command") || {};
    return last.cmd !== undefined && (last.ok === null || last.ok === undefined);
  };
  const busy = () => pending || running();

  function send(content, text) {
    if (busy()) return;
    pending = true;
    clearTimeout(pendingTimer);
    pendingTimer = setTimeout(() => { pending = false; update(); }, 30000); // an answer lost: unlock again
    showMessage(text, false);
    model.send({ type: "command", ...content });
    update();
  }

  function scale(n) {
    if (n < 0) return;
    edited = false;
    input.value = String(n);
    send({ cmd: "scale", n }, `scaling to ${plural(n, "worker")}…`);
  }

  function scaleToInput() {
    const text = input.value.trim();
    const n = Number(text);
    if (text === "" || !Number.isInteger(n) || n < 0) {
      showMessage(`scale needs a whole number of workers >= 0, got ${JSON.stringify(input.value)}`, true);
      return;
    }
    scale(n);
  }

  function askClose(ask) {
    const s = snap();
    confirmText.textContent = `End ${plural(live(), "worker")}` +
      (s.owns_manager && s.manager ? ` and shut down the Manager at ${s.manager}?` : "?");
    confirm.hidden = !ask;
    closeButton.hidden = ask;
  }

  function close() {
    askClose(false);
    send({ cmd: "close", confirm: true }, "closing…");
  }

  function showMessage(text, error) {
    message.textContent = text || "";
    message.className = error ? "chimera-launcher-message chimera-launcher-error" : "chimera-launcher-message";
  }

  function update() {
    const s = snap();
    const closed = s.state === "closed";
    const off = busy() || closed;
    minus.disabled = off || live() <= 0;
    plus.disabled = off || live() >= (s.max_workers || 1000);
    input.disabled = off;
    scaleButton.disabled = off;
    closeButton.disabled = off;
    confirmYes.disabled = off;
    if (off) askClose(false);
    root.dataset.busy = busy() ? "true" : "false";
  }

  const onCommand = () => {
    const last = model.get("last_command") || {};
    if (last.cmd === undefined) return;
    if (last.ok === null || last.ok === undefined) {
      pending = false; // the kernel has it: its own state says busy from here on
      clearTimeout(pendingTimer);
      showMessage(last.cmd === "scale" ? `scaling to ${plural(last.n, "worker")}…` : `${last.cmd}…`, false);
    } else {
      pending = false;
      clearTimeout(pendingTimer);
      if (last.ok) showMessage(last.cmd === "scale" ? `scaled to ${plural(last.n, "worker")}` : `${last.cmd}: done`,
                               false);
      else showMessage(`${last.cmd}${last.cmd === "scale" && last.n !== undefined ? ` to ${cellText(last.n)}` : ""}`
                       + ` failed: ${last.error}`, true);
    }
    message.dataset.ok = last.ok === null || last.ok === undefined ? "" : String(last.ok);
    update();
  };

  const onSnapshot = () => {
    const s = snap();
    const workers = s.workers || {};
    const columns = s.columns || [];
    type.textContent = s.type || "Launcher";
    state.textContent = s.state || "–";
    state.className = `chimera-launcher-state chimera-tone-${tone(s.state)}`;
    root.dataset.state = s.state || "";
    count.textContent = `${s.connected || 0} of ${plural(s.requested || 0, "worker")} connected`;
    manager.textContent = s.manager ? `Manager ${s.manager}` : "";
    details.textContent = Object.entries(s.details || {})
      .filter(([, v]) => v !== null && v !== undefined)
      .map(([k, v]) => `${k}: ${cellText(v)}`).join(" · ");
    head.replaceChildren(...["worker", "state", "reason", ...columns].map((c) => h("th", {}, c)));
    body.replaceChildren(...Object.entries(workers).map(([name, w]) =>
      h("tr", { class: "chimera-launcher-worker", "data-name": name, "data-state": w.state },
        h("td", { class: "chimera-launcher-name" }, name),
        h("td", { class: `chimera-launcher-worker-state chimera-tone-${tone(w.state)}` }, w.state),
        h("td", { class: "chimera-launcher-reason" }, cellText(w.reason)),
        columns.map((c) => h("td", { "data-column": c }, cellText(w[c]))))));
    const any = Object.keys(workers).length > 0;
    table.hidden = !any;
    empty.hidden = any;
    input.max = String(s.max_workers || 1000);
    if (!edited && document.activeElement !== input) input.value = String(s.requested ?? 0);
    update();
  };

  model.on("change:snapshot", onSnapshot);
  model.on("change:last_command", onCommand);
  onSnapshot();
  onCommand();

  return () => {
    clearTimeout(pendingTimer);
    model.off("change:snapshot", onSnapshot);
    model.off("change:last_command", onCommand);
    root.remove();
  };
}

export default { render };
