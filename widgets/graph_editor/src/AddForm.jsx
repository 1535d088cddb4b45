// The add form in the side panel: node name plus one input per constructor parameter. Client-side checks run
// first; the kernel's answer (the `status` with the op's id) closes the form or shows its message, keeping
// what the user typed.
import React, { useEffect, useState } from "react";
import { checkForm, fieldKind, initialValue, suggestName } from "./params.js";

export default function AddForm({ entry, existingNames, status, onSubmit, onClose }) {
  const params = entry.params || [];
  const [values, setValues] = useState(() => {
    const v = { __name: suggestName(entry.label, existingNames) };
    for (const p of params) v[p.name] = initialValue(p);
    return v;
  });
  const [bad, setBad] = useState({});
  const [errors, setErrors] = useState({});
  const [pending, setPending] = useState(null); // id of the add_node op waiting for its answer
  const [serverError, setServerError] = useState(null);

  useEffect(() => {
    if (!pending || !status || status.id !== pending) return;
    setPending(null);
    if (status.ok) onClose(true);
    else setServerError(status.message || "refused");
  }, [status, pending, onClose]);

  useEffect(() => {
    if (!pending) return undefined;
    const timer = setTimeout(() => {
      setPending(null);
      setServerError("no answer from the kernel yet (is it busy?): try again when it is idle");
    }, 20000);
    return () => clearTimeout(timer);
  }, [pending]);

  const change = (name, value, badInput) => {
    setValues((v) => ({ ...v, [name]: value }));
    setBad((b) => ({ ...b, [name]: !!badInput }));
    setErrors((e) => (e[name] ? { ...e, [name]: undefined } : e));
  };

  const submit = (ev) => {
    ev.preventDefault();
    const checked = checkForm(params, values, bad, existingNames);
    setErrors(checked.errors);
    if (Object.values(checked.errors).some(Boolean)) return;
    setServerError(null);
    setPending(onSubmit(checked.name, checked.args));
  };

  const fieldError = (name) =>
    errors[name] ? (
      <span className="chimera-ge-field-error" data-for={name}>
        {errors[name]}
      </span>
    ) : null;

  return (
    <form className="chimera-ge-form" data-cls={entry.key} onSubmit={submit} noValidate>
      <div className="chimera-ge-form-title" title={entry.doc || entry.key}>
        Add <b>{entry.label}</b>
        <span className="chimera-ge-form-module">{entry.module}</span>
      </div>
      <label className="chimera-ge-field">
        <span className="chimera-ge-field-label">
          name<span className="chimera-ge-required" title="required">*</span>
        </span>
        <input
          name="__name"
          type="text"
          value={values.__name}
          aria-invalid={errors.__name ? "true" : undefined}
          autoComplete="off"
          spellCheck={false}
          onChange={(ev) => change("__name", ev.target.value)}
        />
        {fieldError("__name")}
      </label>
      {params.map((p) => {
        const kind = fieldKind(p);
        const common = {
          name: p.name,
          "aria-invalid": errors[p.name] ? "true" : undefined,
          "data-kind": kind,
        };
        let input;
        if (kind === "bool") {
          input = (
            <input {...common} type="checkbox" checked={values[p.name] === true}
              onChange={(ev) => change(p.name, ev.target.checked)} />
          );
        } else if (kind === "int" || kind === "float") {
          input = (
            <input {...common} type="number" step={kind === "int" ? "1" : "any"} value={values[p.name]}
              required={p.required || undefined}
              onChange={(ev) => change(p.name, ev.target.value, ev.target.validity && ev.target.validity.badInput)} />
          );
        } else {
          input = (
            <input {...common} type="text" value={values[p.name]} required={p.required || undefined}
              autoComplete="off" spellCheck={false}
              placeholder={kind === "json" ? "JSON" : undefined}
              className={kind === "json" ? "chimera-ge-json" : undefined}
              onChange={(ev) => change(p.name, ev.target.value)} />
          );
        }
        return (
          <label key={p.name} className={"chimera-ge-field" + (kind === "bool" ? " chimera-ge-field-bool" : "")}>
            <span className="chimera-ge-field-label" title={`${kind}${p.required ? ", required" : ""}`}>
              {p.name}
              {p.required && <span className="chimera-ge-required" title="required">*</span>}
              <span className="chimera-ge-field-kind">{kind}</span>
            </span>
            {input}
            {fieldError(p.name)}
          </label>
        );
      })}
      {serverError && <div className="chimera-ge-form-error">{serverError}</div>}
      <div className="chimera-ge-form-buttons">
        <button type="submit" className="chimera-ge-add" disabled={!!pending}>
          {pending ? "Adding…" : "Add"}
        </button>
        <button type="button" className="chimera-ge-cancel" onClick={() => onClose(false)}>
          Cancel
        </button>
      </div>
    </form>
  );
}
