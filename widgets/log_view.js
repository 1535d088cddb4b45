// LogView: a scrolling list of lines, one <pre> each, coloured by level; follows the end while scrolled there.
//
// Kernel -> here: {type: "lines", lines: [[level, text], ...], reset?: true}.
// Here -> kernel: {type: "sync"} on (re)load; the kernel answers with the lines it holds (reset: true).
import { h, modelState, dropModelState, notifyViews } from "./common.js";

const maxLines = (model) => Math.max(1, model.get("max_lines") || 500);

function initialize({ model }) {
  const state = modelState(model);
  state.lines = [];
  const onMessage = (msg) => {
    if (!msg || msg.type !== "lines") return;
    if (msg.reset) state.lines = [];
    const added = msg.lines || [];
    state.lines = state.lines.concat(added);
    const max = maxLines(model);
    if (state.lines.length > max) state.lines.splice(0, state.lines.length - max);
    notifyViews(state, msg.reset ? null : added);
  };
  model.on("msg:custom", onMessage);
  model.send({ type: "sync" });
  return () => {
    model.off("msg:custom", onMessage);
    dropModelState(model);
  };
}

function line([level, text]) {
  const safe = /^[a-z]+$/.test(level) ? level : "info";
  return h("pre", { class: `chimera-log-line chimera-log-${safe}` }, text);
}

function render({ model, el }) {
  const state = modelState(model);
  if (!state.lines) state.lines = [];
  const root = h("div", { class: "chimera-logview" });
  el.appendChild(root);

  // added: the new lines, or null to redraw everything the model holds
  const update = (added) => {
    const atBottom = root.scrollHeight - root.scrollTop - root.clientHeight < 8;
    const max = maxLines(model);
    const fragment = document.createDocumentFragment();
    for (const entry of added === null ? state.lines : added.slice(-max)) fragment.appendChild(line(entry));
    if (added === null) root.replaceChildren(fragment);
    else root.appendChild(fragment);
    while (root.childElementCount > max) root.firstElementChild.remove();
    if (atBottom) root.scrollTop = root.scrollHeight;
  };
  state.views.add(update);
  update(null);
  root.scrollTop = root.scrollHeight;

  return () => {
    state.views.delete(update);
    root.remove();
  };
}

export default { initialize, render };
