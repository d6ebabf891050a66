// Hard-negative mining on a dataset's page: the form (POST /v1/datasets/{id}/mine_negatives)
// on valid pair data, and the mining report on a dataset that mining wrote.
import { api } from "./api.js";
import { barList } from "./charts.js";
import { announce, facts, fmtNum, h, message, section } from "./dom.js";

const DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2";

function field(label, input) {
  input.id = `mine-${input.name}`;
  return h("div", { class: "field" }, h("label", { for: input.id }, label), input);
}

function number(name, value, attrs = {}) {
  return h("input", { type: "number", name, value: String(value), required: true, ...attrs });
}

/** What a mining report says: counts, how hard the negatives are, their ranks. */
export function miningReport(report) {
  const hard = report.hardness || {};
  return [
    facts([
      ["pairs in", fmtNum(report.rows_in)],
      ["negatives found", fmtNum(report.negatives)],
      ["rows out", `${fmtNum(report.rows_out)} (${report.output_format})`],
      ["rows without a negative", fmtNum(report.rows_without_negatives)],
      ["rows with too few (n-tuples)", report.rows_with_too_few_negatives
        ? fmtNum(report.rows_with_too_few_negatives) : null],
      ["model", h("code", {}, report.model)],
      ["similarity to the anchor", `positives ${fmtNum(hard.mean_positive_similarity)}, `
        + `negatives ${fmtNum(hard.mean_negative_similarity)} (gap ${fmtNum(hard.mean_gap)})`],
      ["negatives' rank", `mean ${fmtNum(hard.mean_rank)}, median ${fmtNum(hard.median_rank)}`],
    ]),
    h("h3", {}, "Negatives by rank"),
    barList(Object.entries(hard.rank_distribution || {})
      .map(([label, count]) => ({ label, value: count, color: 3 }))),
  ];
}

/** The form on a valid pair dataset; null for any other. */
export function miningSection(dataset) {
  if (dataset.mining) {
    return section("Mining report", h("p", {}, "Mined from ",
      h("a", { href: `#/datasets/${dataset.mining.source}` }, dataset.mining.source), "."),
    ...miningReport(dataset.mining));
  }
  if (!dataset.valid || dataset.kind !== "embedding" || dataset.layout !== "pair") return null;
  const format = h("select", { name: "output_format" },
    h("option", { value: "triplet" }, "triplets: a row per negative"),
    h("option", { value: "n-tuple" }, "n-tuples: a row per pair"));
  const submit = h("button", { type: "submit", class: "btn" }, "Mine hard negatives");
  const result = h("div", { id: "mining-result", role: "status" });
  const form = h("form", { class: "fields", id: "mining-form" },
    field("Embedding model that judges similarity",
      h("input", { type: "text", name: "model", value: DEFAULT_MODEL, required: true })),
    field("Negatives per pair", number("num_negatives", 1, { min: 1, max: 50 })),
    field("Skip the most similar (range_min)", number("range_min", 0, { min: 0 })),
    field("Take up to rank (range_max)", number("range_max", 100, { min: 1 })),
    field("Margin below the positive", number("margin", 0, { min: 0, max: 2, step: "any" })),
    field("Output", format),
    h("div", { class: "field" }, submit));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const values = Object.fromEntries(new FormData(form));
    const body = { model: values.model, output_format: values.output_format };
    for (const key of ["num_negatives", "range_min", "range_max"]) body[key] = Number(values[key]);
    body.margin = Number(values.margin);
    submit.disabled = true;
    result.replaceChildren(h("p", { class: "muted" }, "Embedding and ranking the texts…"));
    try {
      const done = await api(`/v1/datasets/${dataset.id}/mine_negatives`, { method: "POST",
        json: body });
      result.replaceChildren(
        message(`New dataset ${done.dataset.id} with ${done.report.rows_out} rows.`, "info"),
        h("p", {}, h("a", { class: "btn", href: `#/datasets/${done.dataset.id}` },
          "Open the mined dataset")),
        ...miningReport(done.report));
      announce(`Mined ${done.report.negatives} negatives.`);
    } catch (error) {
      result.replaceChildren(message(error.message, "error"));
    } finally {
      submit.disabled = false;
    }
  });
  return section("Hard negatives", h("p", { class: "muted" },
    "Turns these pairs into triplets or n-tuples for embedding and reranker jobs: for each "
    + "anchor, the other rows' positives most similar to it that are not its own."),
  form, result);
}
