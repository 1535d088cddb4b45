// LiveChart: append-only line series on a <canvas>, autoscaled; wheel zooms x, drag pans, double-click resets.
//
// Kernel -> here: {type: "points", series: {name: [[x, y], ...]}, reset?: true} (y null = a gap).
// Here -> kernel: {type: "sync"} on (re)load; the kernel answers with everything it holds (reset: true).
import { h, fmt, modelState, dropModelState, notifyViews, PALETTE, niceTicks } from "./common.js";

const PAD = { left: 58, right: 12, top: 10, bottom: 38 };

function initialize({ model }) {
  const state = modelState(model);
  state.series = new Map(); // name -> {xs, ys, color}
  const onMessage = (msg) => {
    if (!msg || msg.type !== "points") return;
    if (msg.reset) state.series.clear();
    const max = Math.max(1, model.get("max_points") || 5000);
    for (const [name, points] of Object.entries(msg.series || {})) {
      let s = state.series.get(name);
      if (!s) {
        s = { xs: [], ys: [], color: PALETTE[state.series.size % PALETTE.length] };
        state.series.set(name, s);
      }
      for (const [x, y] of points) {
        s.xs.push(x);
        s.ys.push(y);
      }
      if (s.xs.length > max) {
        s.xs.splice(0, s.xs.length - max);
        s.ys.splice(0, s.ys.length - max);
      }
    }
    notifyViews(state);
  };
  model.on("msg:custom", onMessage);
  model.send({ type: "sync" });
  return () => {
    model.off("msg:custom", onMessage);
    dropModelState(model);
  };
}

function render({ model, el }) {
  const state = modelState(model);
  if (!state.series) state.series = new Map();
  const title = h("div", { class: "chimera-chart-title" });
  const canvas = h("canvas", { class: "chimera-chart-canvas" });
  const legend = h("div", { class: "chimera-legend" });
  const root = h("div", { class: "chimera-livechart", "data-points": 0 }, title, canvas, legend);
  el.appendChild(root);

  let view = null; // null: follow the data; {x0, x1}: the user zoomed or panned
  let queued = false;
  let legendKey = "";

  const setTitle = () => {
    title.textContent = model.get("title") || "";
    title.style.display = title.textContent ? "" : "none";
  };
  setTitle();

  const dataRange = () => {
    let lo = Infinity;
    let hi = -Infinity;
    for (const s of state.series.values()) {
      if (!s.xs.length) continue;
      lo = Math.min(lo, s.xs[0]);
      hi = Math.max(hi, s.xs[s.xs.length - 1]);
    }
    if (lo === Infinity) return null;
    if (hi - lo < 1e-9) return { x0: lo - 0.5, x1: hi + 0.5 };
    return { x0: lo, x1: hi };
  };

  const updateLegend = () => {
    const key = [...state.series.keys()].join("\u0000");
    if (key === legendKey) return;
    legendKey = key;
    legend.replaceChildren(
      ...[...state.series.entries()].map(([name, s]) =>
        h("span", { class: "chimera-legend-item", "data-series": name },
          h("span", { class: "chimera-swatch", style: `background:${s.color}` }), name)),
    );
  };

  const draw = () => {
    queued = false;
    const dpr = window.devicePixelRatio || 1;
    const width = Math.max(100, canvas.clientWidth || 600);
    const height = Math.max(80, canvas.clientHeight || 260);
    if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
      canvas.width = Math.round(width * dpr);
      canvas.height = Math.round(height * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const style = getComputedStyle(root);
    const fg = style.color || "#333";
    ctx.font = `11px ${style.fontFamily || "sans-serif"}`;

    let total = 0;
    for (const s of state.series.values()) total += s.xs.length;
    root.setAttribute("data-points", String(total));
    updateLegend();

    const pw = width - PAD.left - PAD.right;
    const ph = height - PAD.top - PAD.bottom;
    const range = view || dataRange();
    ctx.strokeStyle = fg;
    ctx.globalAlpha = 0.5;
    ctx.strokeRect(PAD.left, PAD.top, pw, ph);
    ctx.globalAlpha = 1;
    ctx.fillStyle = fg;
    ctx.textAlign = "center";
    ctx.fillText(model.get("x_label") || "", PAD.left + pw / 2, height - 4);
    ctx.save();
    ctx.translate(12, PAD.top + ph / 2);
    ctx.rotate(-Math.PI / 2);
    ctx.fillText(model.get("y_label") || "", 0, 0);
    ctx.restore();
    if (!range) {
      ctx.fillText("waiting for data…", PAD.left + pw / 2, PAD.top + ph / 2);
      return;
    }
    const { x0, x1 } = range;
    let y0 = Infinity;
    let y1 = -Infinity;
    for (const s of state.series.values()) {
      for (let i = 0; i < s.xs.length; i++) {
        const y = s.ys[i];
        if (y === null || s.xs[i] < x0 || s.xs[i] > x1) continue;
        if (y < y0) y0 = y;
        if (y > y1) y1 = y;
      }
    }
    if (y0 === Infinity) {
      y0 = 0;
      y1 = 1;
    } else if (y1 - y0 < 1e-12) {
      const pad = Math.abs(y0) * 0.1 || 0.5;
      y0 -= pad;
      y1 += pad;
    } else {
      const pad = (y1 - y0) * 0.05;
      y0 -= pad;
      y1 += pad;
    }
    const sx = (x) => PAD.left + ((x - x0) / (x1 - x0)) * pw;
    const sy = (y) => PAD.top + ph - ((y - y0) / (y1 - y0)) * ph;

    // ticks and grid
    ctx.globalAlpha = 0.15;
    const xt = niceTicks(x0, x1, Math.max(2, Math.floor(pw / 80)));
    const yt = niceTicks(y0, y1, Math.max(2, Math.floor(ph / 40)));
    for (const x of xt.ticks) {
      ctx.beginPath();
      ctx.moveTo(sx(x), PAD.top);
      ctx.lineTo(sx(x), PAD.top + ph);
      ctx.stroke();
    }
    for (const y of yt.ticks) {
      ctx.beginPath();
      ctx.moveTo(PAD.left, sy(y));
      ctx.lineTo(PAD.left + pw, sy(y));
      ctx.stroke();
    }
    ctx.globalAlpha = 1;
    ctx.textAlign = "center";
    for (const x of xt.ticks) ctx.fillText(fmt(x, xt.digits), sx(x), PAD.top + ph + 14);
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (const y of yt.ticks) ctx.fillText(fmt(y, yt.digits), PAD.left - 5, sy(y));
    ctx.textBaseline = "alphabetic";

    // the series
    ctx.save();
    ctx.beginPath();
    ctx.rect(PAD.left, PAD.top, pw, ph);
    ctx.clip();
    ctx.lineWidth = 1.5;
    for (const s of state.series.values()) {
      ctx.strokeStyle = s.color;
      ctx.beginPath();
      let pen = false;
      let single = null;
      for (let i = 0; i < s.xs.length; i++) {
        const y = s.ys[i];
        if (y === null) {
          pen = false;
          continue;
        }
        const px = sx(s.xs[i]);
        const py = sy(y);
        if (pen) ctx.lineTo(px, py);
        else ctx.moveTo(px, py);
        pen = true;
        single = s.xs.length === 1 ? [px, py] : null;
      }
      ctx.stroke();
      if (single) {
        ctx.fillStyle = s.color;
        ctx.fillRect(single[0] - 2, single[1] - 2, 4, 4);
      }
    }
    ctx.restore();
  };

  const schedule = () => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(draw);
  };

  // interaction: wheel zooms x around the pointer, drag pans, double-click goes back to following the data
  const toX = (clientX) => {
    const r = canvas.getBoundingClientRect();
    const range = view || dataRange();
    if (!range) return null;
    const pw = r.width - PAD.left - PAD.right;
    return range.x0 + ((clientX - r.left - PAD.left) / pw) * (range.x1 - range.x0);
  };
  const onWheel = (event) => {
    const range = view || dataRange();
    if (!range) return;
    event.preventDefault();
    const at = toX(event.clientX);
    const k = Math.exp(Math.max(-1, Math.min(1, event.deltaY * 0.002)));
    view = { x0: at + (range.x0 - at) * k, x1: at + (range.x1 - at) * k };
    schedule();
  };
  let drag = null;
  const onDown = (event) => {
    const range = view || dataRange();
    if (!range || event.button !== 0) return;
    drag = { clientX: event.clientX, range };
    canvas.setPointerCapture(event.pointerId);
  };
  const onMove = (event) => {
    if (!drag) return;
    const pw = canvas.getBoundingClientRect().width - PAD.left - PAD.right;
    const dx = ((event.clientX - drag.clientX) / pw) * (drag.range.x1 - drag.range.x0);
    view = { x0: drag.range.x0 - dx, x1: drag.range.x1 - dx };
    schedule();
  };
  const onUp = () => {
    drag = null;
  };
  const onDouble = () => {
    view = null;
    schedule();
  };
  canvas.addEventListener("wheel", onWheel, { passive: false });
  canvas.addEventListener("pointerdown", onDown);
  canvas.addEventListener("pointermove", onMove);
  canvas.addEventListener("pointerup", onUp);
  canvas.addEventListener("pointercancel", onUp);
  canvas.addEventListener("dblclick", onDouble);

  const onTitle = () => {
    setTitle();
    schedule();
  };
  model.on("change:title", onTitle);
  model.on("change:x_label", schedule);
  model.on("change:y_label", schedule);
  const resize = typeof ResizeObserver === "function" ? new ResizeObserver(schedule) : null;
  if (resize) resize.observe(canvas);
  state.views.add(schedule);
  draw();

  return () => {
    state.views.delete(schedule);
    if (resize) resize.disconnect();
    model.off("change:title", onTitle);
    model.off("change:x_label", schedule);
    model.off("change:y_label", schedule);
    root.remove();
  };
}

export default { initialize, render };
