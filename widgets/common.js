// Shared helpers for the chimera_lab notebook widgets. widgets/build.py inlines this file into each widget's
// bundle (chimera_lab/jupyter/static/<name>.js) in place of the `import ... from "./common.js"` line: keep it
// plain modern JavaScript, with no imports of its own.

// Build a DOM element: h("div", { class: "x", "data-name": n, title: t }, child, "text", ...).
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "style") el.style.cssText = value;
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// A number for display: fixed digits, "–" for null/undefined/NaN.
export function fmt(value, digits = 1) {
  if (value === null || value === undefined || typeof value !== "number" || !Number.isFinite(value)) return "–";
  return value.toFixed(digits);
}

// State shared by `initialize` (one per model) and `render` (one per view) of the same widget: anywidget hands
// each a different model proxy, so it is keyed by the widget's `_uid` trait.
const STATES = new Map();

export function modelState(model) {
  const uid = model.get("_uid");
  let state = STATES.get(uid);
  if (!state) {
    state = { views: new Set() };
    STATES.set(uid, state);
  }
  return state;
}

export function dropModelState(model) {
  STATES.delete(model.get("_uid"));
}

// Tell every view of a model about something (views register a callback in state.views).
export function notifyViews(state, ...args) {
  for (const view of state.views) {
    try {
      view(...args);
    } catch (err) {
      console.error("chimera_lab widget:", err);
    }
  }
}

// One colour per series, readable on light and dark backgrounds.
export const PALETTE = [
  "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
];

// About `count` round tick values covering [lo, hi], and how many decimals they need.
export function niceTicks(lo, hi, count) {
  if (!(hi > lo)) return { ticks: [lo], digits: 0 };
  const raw = (hi - lo) / Math.max(1, count);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const norm = raw / mag;
  const step = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  return { ticks, digits: Math.max(0, -Math.floor(Math.log10(step) + 1e-9)) };
}
