// Models: registered models with their versions and aliases (moved here), each version's
// evaluation against its base model, side-by-side comparison, and exports.
import { api, download } from "./api.js";
import { barList } from "./charts.js";
import {
  announce, badge, facts, fmtBytes, fmtNum, fmtTime, h, message, section, short,
  table, TERMINAL, fill,
} from "./dom.js";
import { changeView, evaluationView, verdict } from "./evaluation.js";
import { usageSection } from "./monitoring.js";

const enc = encodeURIComponent;

function primaryOf(version) {
  const evaluation = version?.evaluation;
  if (!evaluation || !evaluation.primary_metric) return null;
  const key = evaluation.primary_metric;
  return { key, tuned: evaluation.fine_tuned_model?.[key], base: evaluation.base_model?.[key],
    delta: evaluation.delta };
}

function primaryCell(version) {
  const p = primaryOf(version);
  if (!p || typeof p.tuned !== "number") return "–";
  return h("span", { class: `primary-cell ${verdict(p.key, p.tuned, p.base) || ""}` },
    h("code", {}, p.key), ` ${fmtNum(p.tuned)}`,
    typeof p.base === "number" ? h("span", {},
      h("span", { class: "muted" }, ` (base ${fmtNum(p.base)}) `),
      changeView(p.key, p.tuned, p.base)) : null);
}

function aliasChips(aliases) {
  const entries = Array.isArray(aliases) ? aliases.map((a) => [a, null]) : Object.entries(aliases);
  if (!entries.length) return h("span", { class: "muted" }, "none");
  return h("ul", { class: "chips" }, entries.map(([alias, version]) =>
    h("li", {}, h("code", {}, alias), version === null ? "" : ` → v${version}`)));
}

// An imported base model's source: the file, what it was stored as and what was written, and
// its SHA-256 (shortened; whole in the title).
function sourceCell(provenance) {
  if (!provenance) return "–";
  const stored = provenance.quantization || provenance.format;
  return h("span", { class: "source" }, short(provenance.file_name, 60),
    h("span", { class: "muted" }, ` (${stored} → ${provenance.dtype || "as stored"}, `
      + `${fmtNum(provenance.parameters)} parameters)`),
    provenance.sha256
      ? h("div", {}, h("code", { title: provenance.sha256 }, `sha256 ${provenance.sha256.slice(0, 16)}…`))
      : null);
}

export async function list(main, ctx) {
  main.append(h("h1", {}, "Models"));
  const registeredBox = h("div", {}, message("Loading…"));
  const allBox = h("div", {}, message("Loading…"));
  main.append(section("Registered models", registeredBox), section("All models", allBox));
  const [registered, models] = await Promise.all([
    api("/v1/registered_models", { signal: ctx.signal }),
    api("/v1/models", { signal: ctx.signal }),
  ]);
  fill(registeredBox, registered.data.length
    ? table(["Name", "Kind", "Versions", "Aliases", "Latest", "Primary metric"],
      registered.data.map((r) => [
        h("a", { href: `#/models/${enc(r.name)}` }, r.name),
        r.kind,
        String(r.versions),
        aliasChips(r.aliases),
        r.latest_version ? `v${r.latest_version.version} · ${fmtTime(r.latest_version.created_at)
          .textContent}` : "–",
        primaryCell(r.latest_version),
      ]))
    : message("No registered models yet: every job that succeeds adds a version."));
  fill(allBox, table(["Model", "Kind", "Owner", "Base model or source", "Job"],
    models.data.map((m) => [
      h("code", {}, m.id), m.kind, m.owned_by,
      m.base_model ? short(m.base_model, 60) : sourceCell(m.provenance),
      m.job_id ? h("a", { href: `#/jobs/${m.job_id}` }, m.job_id) : "–",
    ])));
}

function aliasForm(name, versions, refresh) {
  const aliasInput = h("input", { id: "alias-name", name: "alias", type: "text",
    list: "alias-names", required: true, autocomplete: "off", value: "production",
    "aria-describedby": "alias-help" });
  const versionSelect = h("select", { id: "alias-version", name: "version" },
    versions.map((v) => h("option", { value: v.version }, `v${v.version} · ${v.model}`)));
  const status = h("div", { role: "status" });
  // A version worse than its base model takes an alias only when this is ticked (409 else).
  const force = h("input", { type: "checkbox", id: "alias-force", name: "force" });
  const form = h("form", { class: "inline-form", id: "alias-form" },
    h("div", { class: "field" }, h("label", { for: "alias-name" }, "Alias"), aliasInput,
      h("small", { class: "help", id: "alias-help" },
        "Letters, digits, _ and -. An alias that exists moves to the version chosen.")),
    h("datalist", { id: "alias-names" }, ["production", "staging", "candidate"]
      .map((a) => h("option", { value: a }))),
    h("div", { class: "field" }, h("label", { for: "alias-version" }, "Version"), versionSelect),
    h("div", { class: "field" }, h("label", { for: "alias-force" }, force,
      " even if worse than its base")),
    h("button", { type: "submit", class: "btn" }, "Move alias"),
    status);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const alias = aliasInput.value.trim();
    try {
      await api(`/v1/registered_models/${enc(name)}/aliases/${enc(alias)}`,
        { method: "PUT", json: { version: Number(versionSelect.value), force: force.checked } });
      announce(`${alias} now points at v${versionSelect.value}.`);
      await refresh();
    } catch (error) {
      fill(status, message(error.message, "error"));
    }
  });
  return form;
}

function comparison(name, result) {
  const versions = result.versions;
  // Each version's value, marked where it is worse than the base model's.
  const metricRows = Object.entries(result.metrics).map(([metric, values]) => {
    const bases = result.base_model_metrics[metric] ?? [];
    return [metric, ...values.map((value, i) => {
      const judged = verdict(metric, value, bases[i]);
      return judged ? h("span", { class: `vs-base ${judged}`,
        title: judged === "same" ? "same as the base" : `${judged} than the base` },
      fmtNum(value), judged === "worse" ? h("span", { class: "worse-note" }, " ▼") : null)
        : fmtNum(value);
    }), fmtNum(bases[0])];
  });
  const diffRows = Object.entries(result.spec_differences).map(([key, values]) =>
    [h("code", {}, key), ...values.map((v) => short(v ?? "–", 60))]);
  const metrics = Object.keys(result.metrics).slice(0, 6);
  return h("div", { class: "comparison", id: "comparison" },
    table(["Metric", ...versions.map((v) => `v${v}`), "Base model"], metricRows,
      { caption: `Validation metrics of ${name}, side by side` }),
    barList(metrics.map((metric) => ({ label: metric, bars: versions.map((v, i) => ({
      label: `v${v}`, value: result.metrics[metric][i], color: i })) })), { zoom: true }),
    diffRows.length
      ? table(["Spec field", ...versions.map((v) => `v${v}`)], diffRows,
        { caption: "Where the versions' specs differ" })
      : message("The versions were trained with the same spec."));
}

const EXPORT_FORMATS = {
  embedding: [["sentence-transformers", "Export as sentence-transformers folder"]],
  reranker: [["sentence-transformers", "Export as CrossEncoder folder"]],
  supervised: [["merged", "Export merged safetensors"], ["gguf", "Export GGUF + Modelfile"]],
  dpo: [["merged", "Export merged safetensors"], ["gguf", "Export GGUF + Modelfile"]],
};
const GGUF_TYPES = ["q4_k_m", "q5_k_m", "q6_k", "q8_0", "f16", "bf16", "f32"];

function exportFiles(item) {
  if (!item.files.length) return "–";
  return h("ul", { class: "files" }, item.files.map((f) => h("li", {},
    h("button", { type: "button", class: "link", onclick: () => download(
      `/v1/exports/${item.id}/content?file=${enc(f.name)}`, f.name.split("/").pop())
      .catch((e) => announce(`Download failed: ${e.message}`)) }, f.name),
    ` ${fmtBytes(f.bytes)} `, h("code", { class: "hash", title: f.sha256 },
      `${f.sha256.slice(0, 12)}…`))));
}

function exportsSection(version, ctx) {
  const formats = EXPORT_FORMATS[version.kind] || [];
  const box = h("div", {}, message("Loading…"));
  const quant = h("select", { id: "gguf-quantization" },
    GGUF_TYPES.map((q) => h("option", { value: q }, q)));
  const status = h("div", { role: "status" });
  const refs = new Set([version.model, `${version.name}@v${version.version}`,
    ...version.aliases.map((a) => `${version.name}@${a}`)]);
  async function load() {
    const { data } = await api("/v1/exports?limit=100", { signal: ctx.signal });
    const mine = data.filter((e) => refs.has(e.model));
    fill(box, mine.length
      ? table(["Export", "Format", "Status", "Files", "Check", "Created"], mine.map((e) => [
        h("code", {}, e.id), e.format + (e.quantization ? ` (${e.quantization})` : ""),
        e.error ? h("span", {}, badge(e.status), ` ${e.error.message}`) : badge(e.status),
        exportFiles(e),
        e.verification ? short(e.verification, 90) : "–",
        fmtTime(e.created_at),
      ]), { className: "exports" })
      : message("No exports of this version yet."));
    return mine.some((e) => !TERMINAL.has(e.status));
  }
  const buttons = formats.map(([format, text]) => h("button", { type: "button", class: "btn",
    onclick: async () => {
      const json = { model: version.model, format };
      if (format === "gguf") json.quantization = quant.value;
      try {
        const created = await api("/v1/exports", { method: "POST", json });
        announce(`Export ${created.id} queued.`);
        fill(status, message(`Export ${created.id} queued; a worker makes it.`));
        await load();
      } catch (error) {
        fill(status, message(error.message, "error"));
      }
    } }, text));
  // Poll while an export of this version is still being made.
  ctx.every(3000, async () => {
    if (box.isConnected || box.firstChild) await load();
  });
  return section("Exports",
    formats.length ? h("div", { class: "row" }, buttons,
      formats.some(([f]) => f === "gguf") ? h("label", { for: "gguf-quantization" },
        "GGUF quantization ", quant) : null)
      : message(`There is no export format for ${version.kind} models; the model folder is `
        + "a plain transformers model."),
    status, box);
}

function deploymentCheck(d) {
  const c = d.health_check;
  if (!c) return "–";
  const how = "agreement" in c ? `agreement ${Math.round(c.agreement * 100)}%` : c.summary;
  return h("span", {}, badge(c.passed ? "passed" : "failed"), ` ${how}`);
}

// Deployments of this registered model: where each version went, whether its health check
// passed, a rollback per target, and a form to deploy this version (here, to Ollama or to a
// Hub repository: private, the server's HF_TOKEN and HF_ENDPOINT).
function deploymentsSection(version, ctx) {
  const box = h("div", {}, message("Loading…"));
  const status = h("div", { role: "status" });
  const alias = h("input", { id: "deploy-alias", value: "production", size: 12 });
  const ollama = h("input", { id: "deploy-ollama", placeholder: "http://localhost:11434",
    size: 26 });
  const hub = h("input", { id: "deploy-hub", placeholder: "org/name", size: 20 });
  async function load() {
    const { data } = await api("/v1/deployments?limit=100", { signal: ctx.signal });
    const mine = data.filter((d) => d.name === version.name);
    const latest = new Set();
    const rows = mine.map((d) => {
      const first = d.status === "succeeded" && !latest.has(d.target_key);
      if (first) latest.add(d.target_key);
      return [
        h("code", {}, d.id), `v${d.version}`, d.target_key,
        d.error ? h("span", {}, badge(d.status), ` ${d.error.message}`)
          : h("span", {}, badge(d.status), d.rollback_of ? " (rollback)" : ""),
        deploymentCheck(d), fmtTime(d.created_at),
        first ? h("button", { type: "button", class: "btn", onclick: () => rollback(d) },
          "Roll back") : "",
      ];
    });
    fill(box, rows.length
      ? table(["Deployment", "Version", "Target", "Status", "Health check", "Created", ""],
        rows, { className: "deployments" })
      : message(`${version.name} has not been deployed yet.`));
    return mine.some((d) => !TERMINAL.has(d.status));
  }
  async function submit(target) {
    try {
      const created = await api("/v1/deployments", { method: "POST",
        json: { model: version.model, target } });
      announce(`Deployment ${created.id} queued.`);
      fill(status, message(`Deployment ${created.id} queued; a worker runs it.`));
      await load();
    } catch (error) {
      fill(status, message(error.message, "error"));
    }
  }
  async function rollback(d) {
    try {
      const created = await api(`/v1/deployments/${enc(d.id)}/rollback`, { method: "POST" });
      fill(status, message(`Rollback ${created.id} to v${created.version} queued.`));
      await load();
    } catch (error) {
      fill(status, message(error.message, "error"));
    }
  }
  ctx.every(3000, async () => {
    if (box.isConnected || box.firstChild) await load();
  });
  const llm = version.kind === "supervised" || version.kind === "dpo"
    || version.kind === "reinforcement";
  return section("Deployments",
    h("div", { class: "row" },
      h("label", { for: "deploy-alias" }, "Alias here "), alias,
      h("button", { type: "button", class: "btn",
        onclick: () => submit({ type: "local", alias: alias.value }) }, "Deploy here"),
      llm ? h("label", { for: "deploy-ollama" }, " Ollama server ") : null,
      llm ? ollama : null,
      llm ? h("button", { type: "button", class: "btn",
        onclick: () => submit({ type: "ollama", url: ollama.value }) }, "Deploy to Ollama")
        : null,
      h("label", { for: "deploy-hub" }, " Hub repository "), hub,
      h("button", { type: "button", class: "btn",
        onclick: () => submit({ type: "huggingface", repo_id: hub.value }) },
      "Deploy to the Hub")),
    status, box);
}

function versionSection(version, ctx) {
  return h("div", { id: "version-detail" },
    section(`Version ${version.version}`,
      facts([
        ["model id", h("code", {}, version.model)],
        ["aliases", aliasChips(version.aliases)],
        ["job", h("a", { href: `#/jobs/${version.job_id}` }, version.job_id)],
        ["base model", version.base_model],
        ["created", fmtTime(version.created_at)],
        ["data", version.data_files.map((f) => `${f.role}: ${f.filename} (${f.id})`).join("; ")],
        ["libraries", Object.entries(version.library_versions).map(([k, v]) => `${k} ${v}`)
          .join(", ")],
      ]),
      h("h3", {}, "Evaluation against the base model"),
      evaluationView(version.evaluation, "succeeded"),
      h("details", {}, h("summary", {}, `Files (${version.artefacts.length})`),
        table(["File", "Size", "SHA-256"], version.artefacts.map((a) => [
          a.path, fmtBytes(a.bytes), h("code", { class: "hash" }, a.sha256)])))),
    exportsSection(version, ctx),
    deploymentsSection(version, ctx));
}

export async function detail(main, ctx, name) {
  const header = h("div", {});
  const versionsBox = h("div", {});
  const aliasBox = h("div", {});
  const compareBox = h("div", {});
  const versionBox = h("div", {});
  main.append(header, section("Versions", versionsBox, compareBox),
    section("Aliases", aliasBox), usageSection(name, ctx), versionBox);
  let shown = null;

  async function refresh() {
    const [model, versions] = await Promise.all([
      api(`/v1/registered_models/${enc(name)}`, { signal: ctx.signal }),
      api(`/v1/registered_models/${enc(name)}/versions`, { signal: ctx.signal }),
    ]);
    const wanted = Number(ctx.query.get("v")) || model.latest_version?.version;
    fill(header,
      h("p", { class: "crumbs" }, h("a", { href: "#/models" }, "Models"), " / "),
      h("h1", {}, name),
      facts([["kind", model.kind], ["description", model.description],
        ["tags", model.tags.join(", ")], ["versions", String(model.versions)]]));
    const checks = [];
    fill(versionsBox, table(
      ["Compare", "Version", "Model id", "Aliases", "Primary metric", "Created", ""],
      versions.data.map((v) => {
        const check = h("input", { type: "checkbox", value: v.version,
          id: `cmp-${v.version}`, "aria-label": `Compare version ${v.version}` });
        checks.push(check);
        return [check, `v${v.version}`, h("code", {}, short(v.model, 56)),
          aliasChips(v.aliases), primaryCell(v), fmtTime(v.created_at),
          h("a", { href: `#/models/${enc(name)}?v=${v.version}`,
            "aria-current": v.version === wanted ? "true" : null }, "Details")];
      }), { className: "versions" }));
    const compare = h("button", { type: "button", class: "btn", id: "compare" },
      "Compare selected versions");
    compare.addEventListener("click", async () => {
      const picked = checks.filter((c) => c.checked).map((c) => c.value);
      if (picked.length < 2) {
        fill(compareBox, compare, message("Select at least two versions.", "error"));
        return;
      }
      try {
        const result = await api(`/v1/registered_models/${enc(name)}/compare?`
          + picked.map((v) => `versions=${v}`).join("&"));
        fill(compareBox, compare, comparison(name, result));
      } catch (error) {
        fill(compareBox, compare, message(error.message, "error"));
      }
    });
    if (versions.data.length >= 2) fill(compareBox, compare);
    else fill(compareBox, message("A second version can be compared with this one."));

    fill(aliasBox,
      h("div", { id: "alias-list" }, aliasChips(model.aliases)),
      aliasForm(name, versions.data, refresh),
      Object.keys(model.aliases).length ? h("div", { class: "row" },
        Object.keys(model.aliases).map((alias) => h("button", { type: "button",
          class: "btn secondary", onclick: async () => {
            try {
              await api(`/v1/registered_models/${enc(name)}/aliases/${enc(alias)}`,
                { method: "DELETE" });
              announce(`Alias ${alias} removed.`);
              await refresh();
            } catch (error) {
              aliasBox.append(message(error.message, "error"));
            }
          } }, `Remove ${alias}`))) : null);

    const version = versions.data.find((v) => v.version === wanted) || versions.data[0];
    const key = version ? `${version.version}:${version.aliases.join(",")}` : "";
    if (version && key !== shown) {
      shown = key;
      fill(versionBox, versionSection(version, ctx));
    }
  }
  await refresh();
}
