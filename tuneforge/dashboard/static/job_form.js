// The form that creates a job, built for each training kind from the job spec's own schema
// (the API's OpenAPI document): its defaults, bounds, choices and help text. The API checks
// the request; its field errors are shown at the fields they name.
import { api } from "./api.js";
import { announce, h, message, section, fill } from "./dom.js";

let openapi = null;

async function schemas(signal) {
  if (!openapi) openapi = await api("/openapi.json", { signal });
  return openapi.components.schemas;
}

function resolver(all) {
  return (schema) => {
    while (schema && schema.$ref) schema = all[schema.$ref.split("/").pop()];
    return schema;
  };
}

/** The kinds the API takes, in its order: [{type, params schema}]. */
function kinds(all) {
  const resolve = resolver(all);
  return all.JobCreate.properties.method.oneOf.map((ref) => {
    const method = resolve(ref);
    const type = method.properties.type.const ?? method.properties.type.default;
    return { type, params: resolve(method.properties[type]) };
  });
}

// Job fields shown besides the method (training files are chosen from the uploads).
const JOB_FIELDS = ["suffix", "seed", "registered_model", "device", "timeout_seconds",
  "max_attempts"];

const fieldId = (path) => `f-${path.replace(/[^A-Za-z0-9_]+/g, "-")}`;

/** What kind of input a schema needs; `options` for choices. */
function describe(schema, resolve) {
  let nullable = false;
  let options = schema.anyOf ? schema.anyOf.map(resolve) : [schema];
  if (options.some((o) => o.type === "null")) {
    nullable = true;
    options = options.filter((o) => o.type !== "null");
  }
  if (options.length === 2 && options.some((o) => o.const) && options.some((o) => o.type === "array")) {
    return { kind: "modules", nullable, constant: options.find((o) => o.const).const };
  }
  const one = options[0] || {};
  if (one.properties) return { kind: "object", nullable, schema: one };
  if (one.enum) return { kind: "enum", nullable, choices: one.enum };
  if (one.const !== undefined) return { kind: "enum", nullable, choices: [one.const] };
  if (one.type === "boolean") return { kind: "bool", nullable };
  if (one.type === "integer" || one.type === "number") return { kind: "number", nullable, one };
  if (one.type === "array") return { kind: "list", nullable };
  if (one.type === "object") return { kind: "skip" };
  return { kind: "text", nullable, one };
}

function label(name, schema) {
  return [schema.title || name.replaceAll("_", " "), " ", h("code", {}, name)];
}

class FormModel {
  constructor(resolve) {
    this.resolve = resolve;
    this.fields = [];
  }

  /** An input (or a group of them) for property `name` at `path` with `schema`. */
  build(path, name, rawSchema, { open = false } = {}) {
    const schema = this.resolve(rawSchema);
    const info = describe(schema, this.resolve);
    if (info.kind === "skip") return null;
    if (info.kind === "object") {
      const props = Object.entries(info.schema.properties);
      const inner = props.map(([key, sub]) => this.build(`${path}.${key}`, key, sub)).filter(Boolean);
      const group = h("details", { class: "group", open, "data-param": path },
        h("summary", {}, label(name, { title: name[0].toUpperCase()
          + name.slice(1).replaceAll("_", " ") })),
        info.schema.description ? h("p", { class: "help" }, info.schema.description) : null,
        h("div", { class: "fields" }, inner));
      return group;
    }
    const id = fieldId(path);
    const helpId = `${id}-help`;
    const def = schema.default;
    const common = { id, name: path, "data-param": path,
      "aria-describedby": schema.description ? helpId : null };
    let input;
    if (info.kind === "bool") {
      input = h("input", { ...common, type: "checkbox", checked: def === true });
    } else if (info.kind === "enum") {
      input = h("select", common,
        info.nullable ? h("option", { value: "" }, "(default)") : null,
        info.choices.map((c) => h("option", { value: c, selected: c === def }, c)));
    } else if (info.kind === "number") {
      input = h("input", { ...common, type: "number", step: "any", inputmode: "decimal",
        value: def ?? "", placeholder: info.nullable ? "default" : null });
    } else if (info.kind === "modules") {
      input = h("input", { ...common, type: "text", value: Array.isArray(def) ? def.join(", ") : def,
        placeholder: `${info.constant}, or names separated by commas` });
    } else if (info.kind === "list") {
      input = h("input", { ...common, type: "text", value: Array.isArray(def) ? def.join(", ") : "",
        placeholder: "comma-separated" });
    } else {
      input = h("input", { ...common, type: "text", value: def ?? "",
        placeholder: info.nullable ? "default" : null });
    }
    this.fields.push({ path, input, info, def, required: false });
    const wrap = h("div", { class: `field field-${info.kind}` },
      info.kind === "bool"
        ? h("div", { class: "check" }, input, h("label", { for: id }, label(name, schema)))
        : [h("label", { for: id }, label(name, schema)), input],
      schema.description ? h("small", { class: "help", id: helpId }, schema.description) : null);
    return wrap;
  }

  /** Register an input built by hand (model, files). */
  add(path, input, { required = false } = {}) {
    this.fields.push({ path, input, info: { kind: "text", nullable: true }, def: null, required });
  }

  value(field) {
    const { input, info } = field;
    const raw = typeof input.value === "string" ? input.value.trim() : input.value;
    switch (info.kind) {
      case "bool": return input.checked;
      case "number":
        if (raw === "") return info.nullable ? null : undefined;
        return Number.isFinite(Number(raw)) ? Number(raw) : raw;
      case "enum": return raw === "" ? null : raw;
      case "modules":
        return raw === info.constant ? raw : raw.split(",").map((m) => m.trim()).filter(Boolean);
      case "list": return raw === "" ? null : raw.split(",").map((m) => m.trim()).filter(Boolean);
      default: return raw === "" ? null : raw;
    }
  }

  /** The request body: every field the user set to something other than its default. */
  body() {
    const out = {};
    for (const field of this.fields) {
      const value = this.value(field);
      if (value === undefined) continue;
      if (!field.required && JSON.stringify(value) === JSON.stringify(field.def ?? null)) continue;
      const parts = field.path.split(".");
      let node = out;
      for (const part of parts.slice(0, -1)) node = node[part] ??= {};
      node[parts[parts.length - 1]] = value;
    }
    return out;
  }
}

function clearErrors(form) {
  for (const el of form.querySelectorAll(".field-error")) el.remove();
  for (const el of form.querySelectorAll("[aria-invalid]")) {
    el.removeAttribute("aria-invalid");
    const ids = (el.getAttribute("aria-describedby") || "").split(" ")
      .filter((x) => x && !x.endsWith("-error"));
    if (ids.length) el.setAttribute("aria-describedby", ids.join(" "));
    else el.removeAttribute("aria-describedby");
  }
}

/** Put each error beside the field it names (or the nearest group); the rest on top. */
function showErrors(form, summary, errors) {
  clearErrors(form);
  const unplaced = [];
  let first = null;
  for (const error of errors) {
    let path = error.param || "";
    let target = null;
    while (path && !target) {
      target = form.querySelector(`[data-param="${CSS.escape(path)}"]`);
      if (!target) path = path.includes(".") ? path.slice(0, path.lastIndexOf(".")) : "";
    }
    if (!target) {
      unplaced.push(error);
      continue;
    }
    const errorId = `${target.id || fieldId(path)}-error`;
    const note = h("p", { class: "field-error", id: errorId }, error.message);
    if (target.tagName === "DETAILS") {
      target.open = true;
      target.querySelector("summary").after(note);
      first ??= target.querySelector("summary");
    } else {
      target.setAttribute("aria-invalid", "true");
      const described = target.getAttribute("aria-describedby");
      target.setAttribute("aria-describedby", described ? `${described} ${errorId}` : errorId);
      target.closest(".field").append(note);
      for (let d = target.closest("details"); d; d = d.parentElement.closest("details")) {
        d.open = true;
      }
      first ??= target;
    }
  }
  fill(summary, errors.length ? message(
    `The job was not created: ${errors.length} problem${errors.length === 1 ? "" : "s"}`
    + `${unplaced.length ? `: ${unplaced.map((e) => e.message).join("; ")}` : " (shown at the fields)."}`,
    "error") : "");
  if (first) first.focus();
  else summary.focus();
}

export async function render(main, ctx) {
  const [all, datasets, models, registered] = await Promise.all([
    schemas(ctx.signal),
    api("/v1/datasets", { signal: ctx.signal }),
    api("/v1/models", { signal: ctx.signal }),
    api("/v1/registered_models", { signal: ctx.signal }),
  ]);
  const resolve = resolver(all);
  const kindList = kinds(all);
  const jobSchema = all.JobCreate;
  const wanted = ctx.query.get("kind");
  let kind = kindList.some((k) => k.type === wanted) ? wanted : kindList[0].type;

  const valid = datasets.data.filter((d) => d.valid)
    .sort((a, b) => b.created_at - a.created_at);
  const modelNames = [...models.data.map((m) => m.id),
    ...registered.data.flatMap((r) => Object.keys(r.aliases).map((a) => `${r.name}@${a}`))];

  const summary = h("div", { tabindex: "-1", class: "form-summary" });
  const kindSelect = h("select", { id: "f-kind", name: "kind" },
    kindList.map((k) => h("option", { value: k.type, selected: k.type === kind }, k.type)));
  const modelInput = h("input", { id: "f-model", name: "model", "data-param": "model",
    type: "text", list: "model-names", required: true, autocomplete: "off",
    value: ctx.query.get("model") || models.data.find((m) => m.kind === "base")?.id || "",
    placeholder: "sentence-transformers/all-MiniLM-L6-v2", "aria-describedby": "f-model-help" });
  const fileChoices = (selected, optional) => [
    h("option", { value: "" }, optional ? "(hold out 10% of the training data)" : "(choose a file)"),
    valid.map((d) => h("option", { value: d.id, selected: d.id === selected },
      `${d.file.filename} · ${d.kind} · ${d.statistics?.rows ?? "?"} rows · ${d.id}`)),
  ];
  const trainingSelect = h("select", { id: "f-training_file", name: "training_file",
    "data-param": "training_file", required: true },
  fileChoices(ctx.query.get("file") || "", false));
  const validationSelect = h("select", { id: "f-validation_file", name: "validation_file",
    "data-param": "validation_file" }, fileChoices("", true));
  const methodBox = h("div", {});
  const jobBox = h("div", { class: "fields" });

  let model = null;
  function buildMethod() {
    model = new FormModel(resolve);
    model.add("model", modelInput, { required: true });
    model.add("training_file", trainingSelect, { required: true });
    model.add("validation_file", validationSelect);
    fill(jobBox, ...JOB_FIELDS.filter((name) => jobSchema.properties[name])
      .map((name) => model.build(name, name, jobSchema.properties[name])));
    const params = kindList.find((k) => k.type === kind).params;
    fill(methodBox,
      params.description ? h("p", { class: "help" }, params.description) : null,
      h("div", { class: "fields" }, Object.entries(params.properties)
        .map(([name, sub]) => model.build(`method.${kind}.${name}`, name, sub,
          { open: name === "hyperparameters" }))));
    const matching = valid.filter((d) => d.kind === kind).length;
    // Offer the newest file of this kind unless one was chosen.
    if (!trainingSelect.value || !valid.some((d) => d.id === trainingSelect.value
      && d.kind === kind)) {
      trainingSelect.value = valid.find((d) => d.kind === kind)?.id || "";
    }
    fileHint.textContent = matching
      ? `${matching} valid file${matching === 1 ? "" : "s"} for ${kind} jobs.`
      : `No valid ${kind} files yet: upload one on the Datasets page.`;
  }
  const fileHint = h("small", { class: "help", id: "f-training_file-help" });
  trainingSelect.setAttribute("aria-describedby", "f-training_file-help");
  kindSelect.addEventListener("change", () => {
    kind = kindSelect.value;
    buildMethod();
  });

  const submit = h("button", { type: "submit", class: "btn" }, "Create job");
  const form = h("form", { id: "job-form", novalidate: true, "aria-describedby": "form-intro" },
    summary,
    section("What to train",
      h("div", { class: "fields" },
        h("div", { class: "field" }, h("label", { for: "f-kind" }, "Training kind"), kindSelect,
          h("small", { class: "help" },
            "embedding: sentence-transformers; reranker: cross-encoders; classification: "
            + "labels for texts; supervised and dpo: chat LLMs.")),
        h("div", { class: "field" }, h("label", { for: "f-model" }, "Base model ",
          h("code", {}, "model")), modelInput,
        h("datalist", { id: "model-names" }, modelNames.map((m) => h("option", { value: m }))),
        h("small", { class: "help", id: "f-model-help" }, jobSchema.properties.model.description
          + " A Hugging Face id, models--org--name, ft:… or name@alias.")),
        h("div", { class: "field" }, h("label", { for: "f-training_file" }, "Training file ",
          h("code", {}, "training_file")), trainingSelect, fileHint),
        h("div", { class: "field" }, h("label", { for: "f-validation_file" },
          "Validation file ", h("code", {}, "validation_file")), validationSelect))),
    section("Method", methodBox),
    section("Job", jobBox),
    h("div", { class: "row" }, submit));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = model.body();
    body.method = { type: kind, ...(body.method || {}) };
    const missing = [];
    if (!body.model) missing.push({ param: "model", message: "Name a base model." });
    if (!body.training_file) {
      missing.push({ param: "training_file", message: "Choose a training file." });
    }
    if (missing.length) {
      showErrors(form, summary, missing);
      return;
    }
    submit.disabled = true;
    submit.textContent = "Checking the files and the model…";
    try {
      const job = await api("/v1/fine_tuning/jobs", { method: "POST", json: body });
      announce(`Job ${job.id} created.`);
      location.hash = `#/jobs/${job.id}`;
    } catch (error) {
      const errors = error.details.length ? error.details
        : [{ param: error.param, message: error.message }];
      showErrors(form, summary, errors);
    } finally {
      submit.disabled = false;
      submit.textContent = "Create job";
    }
  });

  main.append(h("p", { class: "crumbs" }, h("a", { href: "#/jobs" }, "Jobs"), " / "),
    h("h1", {}, "New job"),
    h("p", { id: "form-intro", class: "muted" },
      "Every field starts at the spec's default; only the ones you change are sent. "
      + "The server checks the request and the files before anything is queued."),
    form);
  buildMethod();
}
