// FrameView: JPEG frames sent by the kernel, shown in an <img> (Blob URLs), acknowledged once decoded.
//
// Kernel -> here: {type: "frame", sent, created, seq} with the JPEG as buffers[0].
// Here -> kernel: {type: "ack", seq} once the frame is decoded and on screen (or was superseded by a newer one
// before its turn), {type: "sync"} on (re)load.
// Traits set here (≤ 4 Hz, one batch): shown, fps, delay_ms, latency_ms. Trait `message` (kernel) is a notice.
import { h, fmt, modelState, dropModelState, notifyViews } from "./common.js";

const SYNC_MS = 250; // stats go back to the kernel at most 4 times per second
const FPS_WINDOW_MS = 1000;

function initialize({ model }) {
  const state = modelState(model);
  const onMessage = (msg, buffers) => {
    if (!msg || msg.type !== "frame" || !buffers || !buffers.length) return;
    const frame = {
      blob: new Blob([buffers[0]], { type: "image/jpeg" }),
      seq: msg.seq,
      sent: msg.sent,
      created: msg.created,
    };
    state.last = frame; // a view rendered later starts with the newest frame
    notifyViews(state, frame);
  };
  model.on("msg:custom", onMessage);
  model.send({ type: "sync" }); // a fresh front end: the kernel forgets what it had in flight
  return () => {
    model.off("msg:custom", onMessage);
    dropModelState(model);
  };
}

function render({ model, el }) {
  const state = modelState(model);
  const title = h("div", { class: "chimera-frame-title" });
  const img = h("img", { class: "chimera-frame", alt: "" });
  const stats = h("div", { class: "chimera-frame-stats" }, "waiting for frames…");
  const root = h("div", { class: "chimera-frameview" }, title, img, stats);
  el.appendChild(root);

  const setTitle = () => {
    title.textContent = model.get("title") || "";
    title.style.display = title.textContent ? "" : "none";
  };
  setTitle();
  model.on("change:title", setTitle);

  let shownUrl = null; // the Blob URL on screen
  let shown = 0;
  let firstShown = null;
  const times = []; // when recent frames were shown (ms)
  let delay = null;
  let latency = null;
  let synced = {};

  const onShown = (frame) => {
    const now = Date.now();
    shown += 1;
    if (firstShown === null) firstShown = now;
    times.push(now);
    if (typeof frame.sent === "number") delay = now - frame.sent * 1000;
    if (typeof frame.created === "number") latency = now - frame.created * 1000;
  };

  // One frame decodes at a time; a frame that arrives meanwhile waits, and a newer one replaces it (acknowledged
  // at once: the kernel may send the next). So every frame put on screen is decoded, never cut short.
  let decoding = false;
  let next = null;
  const ack = (frame) => model.send({ type: "ack", seq: frame.seq });
  const start = (frame) => {
    decoding = true;
    const url = URL.createObjectURL(frame.blob);
    img.src = url; // the previous frame stays on screen until this one is ready
    const settle = (ok) => {
      if (shownUrl && shownUrl !== url) URL.revokeObjectURL(shownUrl);
      shownUrl = url;
      if (ok) onShown(frame);
      ack(frame);
      decoding = false;
      if (next) {
        const waiting = next;
        next = null;
        start(waiting);
      }
    };
    img.decode().then(() => settle(true), () => settle(false));
  };
  const show = (frame) => {
    if (!decoding) {
      start(frame);
      return;
    }
    if (next) ack(next); // superseded before it was shown
    next = frame;
  };

  const fps = () => {
    const now = Date.now();
    while (times.length && now - times[0] > FPS_WINDOW_MS) times.shift();
    if (firstShown === null) return 0;
    const span = Math.max(SYNC_MS, Math.min(FPS_WINDOW_MS, now - firstShown));
    return (times.length * 1000) / span;
  };

  const tick = () => {
    const f = fps();
    const note = model.get("message") || "";
    stats.textContent = shown
      ? `${fmt(f, 1)} fps · delay ${fmt(delay, 0)} ms` + (latency === null ? "" : ` · latency ${fmt(latency, 0)} ms`)
        + ` · ${shown} shown` + (note ? ` · ${note}` : "")
      : note || "waiting for frames…";
    // one view reports (the first one still open); the others only display
    if (state.views.values().next().value !== show) return;
    const values = {
      shown,
      fps: Math.round(f * 10) / 10,
      delay_ms: delay === null ? 0 : Math.round(delay * 10) / 10,
      latency_ms: latency === null ? null : Math.round(latency * 10) / 10,
    };
    const changed = Object.keys(values).filter((k) => values[k] !== synced[k]);
    if (!changed.length) return;
    for (const k of changed) model.set(k, values[k]);
    model.save_changes();
    synced = values;
  };
  const timer = setInterval(tick, SYNC_MS);

  state.views.add(show);
  if (state.last) show(state.last);

  return () => {
    clearInterval(timer);
    state.views.delete(show);
    model.off("change:title", setTitle);
    if (shownUrl) URL.revokeObjectURL(shownUrl);
    root.remove();
  };
}

export default { initialize, render };
