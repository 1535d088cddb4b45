// GraphView: the graph as boxes and arrows. The kernel lays it out and draws it (the `svg` trait, redrawn when
// the graph or its running state changes, at most twice a second); this view only shows it, with a summary
// line and the validation problems. Node boxes carry data-name / data-state / data-rate for tools and tests.
import { h } from "./common.js";

function render({ model, el }) {
  const summary = h("div", { class: "chimera-graphview-summary" });
  const picture = h("div", { class: "chimera-graphview-picture" });
  const problems = h("ul", { class: "chimera-graphview-problems" });
  const root = h("div", { class: "chimera-graphview" }, summary, picture, problems);
  el.appendChild(root);

  const draw = () => {
    summary.textContent = model.get("summary") || "";
    // the SVG is built by chimera_lab.jupyter.graph_svg, which escapes every name it draws
    picture.innerHTML = model.get("svg") || "";
    problems.replaceChildren(...(model.get("problems") || []).map((p) => h("li", {}, p)));
  };
  model.on("change:svg", draw);
  model.on("change:problems", draw);
  model.on("change:summary", draw);
  draw();

  return () => {
    model.off("change:svg", draw);
    model.off("change:problems", draw);
    model.off("change:summary", draw);
    root.remove();
  };
}

export default { render };
