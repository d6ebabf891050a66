// Datasets: upload by drag and drop, the validation report with every problem and its line,
// statistics as charts, and a preview of the rows as they were read.
import { api, uploadFile } from "./api.js";
import { barList, Histogram } from "./charts.js";
import { miningSection } from "./mining.js";
import {
  announce, badge, facts, fmtBytes, fmtNum, fmtTime, h, message, section, short, table, fill,
} from "./dom.js";

const ACCEPT = ".jsonl,.json,.ndjson,.csv,.parquet,.pq";

function fileStatus(dataset) {
  return dataset.valid ? badge("valid")
    : h("span", { class: "badge status-failed" },
      `${dataset.problem_count} problem${dataset.problem_count === 1 ? "" : "s"}`);
}

function uploader() {
  const progress = h("progress", { max: 1, value: 0, hidden: true, "aria-label": "Upload" });
  const status = h("p", { class: "upload-status", role: "status" });
  // The real file input stays in the tab order; its label is what is seen.
  const input = h("input", { type: "file", id: "file-input", accept: ACCEPT,
    class: "visually-hidden", "aria-describedby": "drop-help" });
  const zone = h("div", { class: "dropzone", id: "dropzone" },
    h("p", { class: "dropzone-title" }, "Drop a data file here"),
    h("p", { id: "drop-help", class: "muted" },
      "JSONL, CSV or Parquet. It is checked at once: every problem is listed with its line."),
    input, h("label", { for: "file-input", class: "btn" }, "…or choose a file"),
    progress, status);

  async function send(file) {
    if (!file) return;
    progress.hidden = false;
    progress.value = 0;
    status.textContent = `Uploading ${file.name}…`;
    try {
      const uploaded = await uploadFile(file, (share) => {
        progress.value = share;
        if (share >= 1) status.textContent = `Checking ${file.name}…`;
      });
      announce(uploaded.status === "processed" ? `${file.name} is valid.`
        : `${file.name} has problems: ${uploaded.status_details}`);
      location.hash = `#/datasets/${uploaded.id}`;
    } catch (error) {
      progress.hidden = true;
      status.textContent = `Upload failed: ${error.message}`;
      status.className = "upload-status notice notice-error";
    }
  }

  input.addEventListener("change", () => send(input.files[0]));
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragover");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragover"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragover");
    send(event.dataTransfer.files[0]);
  });
  return zone;
}

export async function list(main, ctx) {
  main.append(h("h1", {}, "Datasets"), section("Upload", uploader()));
  const holder = h("div", {}, message("Loading…"));
  main.append(section("Files", holder));
  const { data } = await api("/v1/datasets", { signal: ctx.signal });
  const rows = data.slice().sort((a, b) => b.created_at - a.created_at).map((d) => [
    h("a", { href: `#/datasets/${d.id}` }, d.file.filename),
    fileStatus(d),
    d.kind || "–",
    d.layout || "–",
    fmtNum(d.statistics?.rows),
    fmtBytes(d.file.bytes),
    fmtTime(d.created_at),
  ]);
  fill(holder, rows.length
    ? table(["File", "Status", "Kind", "Layout", "Rows", "Size", "Uploaded"], rows)
    : message("No files yet. Upload one above."));
}

function problemsSection(dataset) {
  if (!dataset.problem_count) {
    return section("Validation", message("No problems: the file can be trained on.", "ok"));
  }
  const listed = dataset.problems.length;
  return section("Validation",
    message(`${dataset.problem_count} problem${dataset.problem_count === 1 ? "" : "s"}; `
      + "a job refuses this file until they are fixed.", "error"),
    h("ul", { class: "chips", "aria-label": "Problems by code" },
      Object.entries(dataset.problems_by_code).map(([code, n]) =>
        h("li", {}, h("code", {}, code), ` × ${n}`))),
    listed < dataset.problem_count
      ? message(`The first ${listed} are listed; all are counted above.`) : null,
    table(["Line", "Column", "Code", "Problem"], dataset.problems.map((p) => [
      p.line ?? "–", p.column ?? "–", h("code", {}, p.code), p.message,
    ]), { className: "problems", caption: "Every problem, with its line" }));
}

function scalarFacts(statistics) {
  return Object.entries(statistics)
    .filter(([, v]) => typeof v === "number" || typeof v === "string" || typeof v === "boolean")
    .map(([key, value]) => [key.replaceAll("_", " "), fmtNum(value)]);
}

function summaryText(summary) {
  return summary ? `min ${fmtNum(summary.min)} · median ${fmtNum(summary.median)} · `
    + `p95 ${fmtNum(summary.p95)} · max ${fmtNum(summary.max)}` : null;
}

function statisticsSection(dataset) {
  const stats = dataset.statistics || {};
  const parts = [facts(scalarFacts(stats))];
  const charts = h("div", { class: "chart-grid" });
  for (const [column, columnStats] of Object.entries(stats.columns || {})) {
    const figure = h("div", { class: "column-stats" },
      h("h3", {}, column),
      facts([["characters", summaryText(columnStats.chars)],
        ["tokens", summaryText(columnStats.tokens)]]));
    if (columnStats.histogram) {
      figure.append(new Histogram(`Length of ${column}`, columnStats.histogram).el);
    }
    charts.append(figure);
  }
  if (stats.histogram) {
    charts.append(h("div", { class: "column-stats" },
      h("h3", {}, "Examples"),
      facts([["characters per example", summaryText(stats.chars?.per_example)],
        ["tokens per example", summaryText(stats.tokens?.per_example)]]),
      new Histogram("Length of the examples", stats.histogram).el));
  }
  if (charts.children.length) parts.push(charts);
  if (stats.class_distribution) {
    parts.push(h("h3", {}, "Classes"), barList(stats.class_distribution.map((c) => ({
      label: c.label, value: c.count, note: `(${(c.share * 100).toFixed(1)}%)`, color: 0,
    }))));
  }
  for (const [key, value] of Object.entries(stats)) {
    // Other distributions a kind reports (e.g. roles, turns): {name: count} objects.
    if (value && typeof value === "object" && !Array.isArray(value) && key !== "columns"
      && Object.values(value).length && Object.values(value).every((v) => typeof v === "number")
      && !["chars", "tokens"].includes(key)) {
      parts.push(h("h3", {}, key.replaceAll("_", " ")), barList(Object.entries(value)
        .map(([label, count]) => ({ label, value: count, color: 2 }))));
    }
  }
  return section("Statistics", ...parts);
}

function cell(value) {
  if (value === null || value === undefined) return h("span", { class: "muted" }, "null");
  if (Array.isArray(value) && value.every((m) => m && typeof m === "object" && "role" in m)) {
    return h("ul", { class: "messages" }, value.map((m) =>
      h("li", {}, h("strong", {}, `${m.role}: `), short(m.content, 160))));
  }
  return short(typeof value === "string" ? value : JSON.stringify(value), 160);
}

function previewSection(dataset, ctx) {
  const badLines = new Set(dataset.problems.map((p) => p.line).filter((l) => l !== null));
  const holder = h("div", {}, message("Loading rows…"));
  const more = h("button", { type: "button", class: "btn secondary", hidden: true },
    "Show more rows");
  let offset = 0;
  let columns = [];
  let rows = [];
  async function load() {
    const page = await api(`/v1/datasets/${dataset.id}/rows?offset=${offset}&limit=20`,
      { signal: ctx.signal });
    columns = page.columns;
    rows = rows.concat(page.data);
    offset += page.data.length;
    fill(holder, rows.length
      ? table(["Line", ...columns], rows.map((r) => [
        String(r.line), ...columns.map((c) => cell(r.values[c]))]),
      { className: "preview", caption: `Rows 1–${rows.length} of ${page.total} read`,
        rowAttrs: (i) => (badLines.has(rows[i].line) ? { class: "has-problem" } : {}) })
      : message("No rows could be read from this file."));
    more.hidden = !page.has_more;
  }
  more.addEventListener("click", () => load().catch((e) => holder.append(
    message(e.message, "error"))));
  load().catch((e) => fill(holder, message(e.message, "error")));
  return section("Preview", holder, more);
}

export async function detail(main, ctx, id) {
  const dataset = await api(`/v1/datasets/${encodeURIComponent(id)}`, { signal: ctx.signal });
  const remove = h("button", { type: "button", class: "btn danger" }, "Delete file");
  remove.addEventListener("click", async () => {
    if (!confirm(`Delete ${dataset.file.filename}?`)) return;
    try {
      await api(`/v1/files/${dataset.id}`, { method: "DELETE" });
      announce("File deleted.");
      location.hash = "#/datasets";
    } catch (error) {
      remove.after(message(error.message, "error"));
    }
  });
  main.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/datasets" }, "Datasets"), " / "),
    h("div", { class: "title-row" },
      h("h1", {}, dataset.file.filename), fileStatus(dataset)),
    facts([
      ["id", h("code", {}, dataset.id)],
      ["kind", dataset.kind],
      ["layout", dataset.layout],
      ["format", dataset.format],
      ["columns", (dataset.columns || []).join(", ")],
      ["header line", dataset.has_header === undefined ? null : dataset.has_header ? "yes" : "no"],
      ["size", fmtBytes(dataset.file.bytes)],
      ["SHA-256", h("code", { class: "hash" }, dataset.file.sha256)],
      ["uploaded", fmtTime(dataset.created_at)],
    ]),
    h("div", { class: "row" },
      dataset.valid && dataset.kind
        ? h("a", { class: "btn", href: `#/jobs/new?kind=${dataset.kind}&file=${dataset.id}` },
          "Train on this file")
        : null,
      remove),
    problemsSection(dataset),
    statisticsSection(dataset),
    miningSection(dataset),
    previewSection(dataset, ctx));
}
