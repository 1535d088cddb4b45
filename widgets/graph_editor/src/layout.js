// Automatic layered layout (left to right) with dagre, and placement helpers for the canvas.
import dagre from "@dagrejs/dagre";

export const NODE_W = 180;
export const NODE_H = 64;
const GAP = 24;

function sizeOf(sizes, name) {
  const s = sizes && sizes.get(name);
  return { w: (s && s.width) || NODE_W, h: (s && s.height) || NODE_H };
}

// Top-left positions {name: {x, y}} for every node, from dagre (rankdir LR).
export function dagreLayout(names, edges, sizes) {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: "LR", nodesep: 28, ranksep: 72, marginx: 16, marginy: 16 });
  g.setDefaultEdgeLabel(() => ({}));
  const known = new Set(names);
  for (const name of names) {
    const { w, h } = sizeOf(sizes, name);
    g.setNode(name, { width: w, height: h });
  }
  for (const e of edges) {
    if (known.has(e.src) && known.has(e.dst) && e.src !== e.dst) g.setEdge(e.src, e.dst);
  }
  dagre.layout(g);
  const out = {};
  for (const name of names) {
    const n = g.node(name);
    const { w, h } = sizeOf(sizes, name);
    out[name] = { x: Math.round(n.x - w / 2), y: Math.round(n.y - h / 2) };
  }
  return out;
}

function overlaps(a, b) {
  return a.x < b.x + b.w + GAP && b.x < a.x + a.w + GAP && a.y < b.y + b.h + GAP && b.y < a.y + a.h + GAP;
}

// Positions for the nodes in `missing` (names without a position) given the others' positions `placed`
// ({name: {x, y}}): a dagre layout of the whole graph, shifted so that the already placed nodes line up with
// where they are on average, then each new node moved down until it overlaps nothing.
export function placeMissing(names, edges, placed, missing, sizes) {
  const layout = dagreLayout(names, edges, sizes);
  const placedNames = names.filter((n) => placed[n]);
  if (placedNames.length === 0) {
    const out = {};
    for (const n of missing) out[n] = layout[n];
    return out;
  }
  // prefer the neighbours of the new nodes for the alignment
  const missingSet = new Set(missing);
  const neighbours = new Set();
  for (const e of edges) {
    if (missingSet.has(e.src) && placed[e.dst]) neighbours.add(e.dst);
    if (missingSet.has(e.dst) && placed[e.src]) neighbours.add(e.src);
  }
  const ref = neighbours.size ? [...neighbours] : placedNames;
  let dx = 0;
  let dy = 0;
  for (const n of ref) {
    dx += placed[n].x - layout[n].x;
    dy += placed[n].y - layout[n].y;
  }
  dx /= ref.length;
  dy /= ref.length;
  const rects = placedNames.map((n) => ({ x: placed[n].x, y: placed[n].y, ...whOf(sizes, n) }));
  const out = {};
  for (const n of missing) {
    const r = { x: Math.round(layout[n].x + dx), y: Math.round(layout[n].y + dy), ...whOf(sizes, n) };
    for (let i = 0; i < 1000 && rects.some((o) => overlaps(r, o)); i++) r.y += Math.round(r.h / 2);
    rects.push(r);
    out[n] = { x: r.x, y: r.y };
  }
  return out;
}

function whOf(sizes, name) {
  const { w, h } = sizeOf(sizes, name);
  return { w, h };
}

// A free spot for a new node: right of the rightmost node, level with it.
export function freeSpot(positions, sizes) {
  let best = null;
  for (const [name, p] of Object.entries(positions)) {
    const right = p.x + sizeOf(sizes, name).w;
    if (!best || right > best.right) best = { right, y: p.y };
  }
  if (!best) return { x: 0, y: 0 };
  return { x: Math.round(best.right + 60), y: Math.round(best.y) };
}
