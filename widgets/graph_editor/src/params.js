// The add form's values: initial values from a palette entry's params, and the client-side checks that turn
// the user's input into the `args` of an add_node op.

export const NAME_RE = /^[A-Za-z0-9_.-]+$/;
const INT_RE = /^[-+]?\d+$/;

export function fieldKind(param) {
  return ["int", "float", "str", "bool"].includes(param.kind) ? param.kind : "json";
}

// The input's initial value: a string (the text of the input) or, for bools, a boolean.
export function initialValue(param) {
  const kind = fieldKind(param);
  const d = param.default;
  if (kind === "bool") return d === true;
  if (d === null || d === undefined) return "";
  if (kind === "json") return JSON.stringify(d);
  return String(d);
}

// A unique node name: the class label lowercased plus the smallest number no node uses yet.
export function suggestName(label, existing) {
  const base = String(label || "node").toLowerCase().replace(/[^a-z0-9_.-]+/g, "_") || "node";
  const used = new Set(existing);
  for (let i = 1; ; i++) if (!used.has(base + i)) return base + i;
}

function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

// Check the form: returns {errors: {field: message}, args}. `values` maps field names to input values;
// `bad` marks number inputs the browser could not parse (validity.badInput).
export function checkForm(params, values, bad, existingNames) {
  const errors = {};
  const args = {};
  const name = String(values.__name || "").trim();
  if (!name) errors.__name = "give the node a name";
  else if (!NAME_RE.test(name)) errors.__name = "use only letters, digits, '_', '.' and '-'";
  else if (existingNames.includes(name)) errors.__name = `a node named '${name}' exists already`;
  for (const p of params) {
    const kind = fieldKind(p);
    const raw = values[p.name];
    let value;
    if (kind === "bool") {
      value = raw === true;
    } else {
      const text = String(raw ?? "").trim();
      if (bad && bad[p.name]) {
        errors[p.name] = kind === "int" ? "enter a whole number" : "enter a number";
        continue;
      }
      if (text === "" && kind !== "str") {
        if (p.required) errors[p.name] = "required";
        continue; // not required: the default applies
      }
      if (kind === "int") {
        if (!INT_RE.test(text)) {
          errors[p.name] = "enter a whole number (no decimals)";
          continue;
        }
        value = parseInt(text, 10);
      } else if (kind === "float") {
        value = Number(text);
        if (!Number.isFinite(value)) {
          errors[p.name] = "enter a number";
          continue;
        }
      } else if (kind === "str") {
        if (text === "" && p.required) {
          errors[p.name] = "required";
          continue;
        }
        if (raw === "" && (p.default === null || p.default === undefined)) continue;
        value = String(raw);
      } else {
        try {
          value = JSON.parse(text);
        } catch (exc) {
          errors[p.name] = "not valid JSON: " + String(exc.message || exc).replace(/^JSON\.parse: /, "");
          continue;
        }
      }
    }
    if (p.required || !same(value, p.default)) args[p.name] = value;
  }
  return { errors, args, name };
}
