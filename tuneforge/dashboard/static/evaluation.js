// Metrics against a baseline, wherever the dashboard shows them: which way is better, the
// change with its verdict (worse than the base is marked), change bars scaled to the largest
// change (so that 0.9036 against 0.9018 is visible), and a classifier's per-class report and
// confusion matrix.
import { fmtNum, fmtSigned, h, message, table } from "./dom.js";

// Lower is better for these (as tuneforge.training's kinds say); higher for every other.
const LOWER_IS_BETTER = /(^|_)(loss|perplexity|grader_error_share)$/;

export function lowerIsBetter(metric) {
  return LOWER_IS_BETTER.test(metric);
}

/** "better", "worse" or "same" for `value` against `base`; null when either is missing. */
export function verdict(metric, value, base) {
  if (typeof value !== "number" || typeof base !== "number") return null;
  if (value === base) return "same";
  return (value > base) !== lowerIsBetter(metric) ? "better" : "worse";
}

/** The change against a base value: arrow, signed number, and its verdict as a class and as
 *  words for screen readers and the tooltip. */
export function changeView(metric, value, base) {
  const judged = verdict(metric, value, base);
  if (judged === null) return h("span", { class: "muted" }, "–");
  const delta = value - base;
  const arrow = delta > 0 ? "▲" : delta < 0 ? "▼" : "=";
  const words = judged === "same" ? "same as the base" : `${judged} than the base`;
  return h("span", { class: `change ${judged}`, title: words },
    h("span", { "aria-hidden": "true" }, `${arrow} `), fmtSigned(delta),
    judged === "worse" ? h("span", { class: "worse-note" }, " worse") : null,
    h("span", { class: "visually-hidden" }, ` (${words})`));
}

/** Bars of each metric's change against the base, from a middle line: right is up, left is
 *  down, scaled to the largest change; red where the change is for the worse. */
export function changeBars(rows) {
  const top = Math.max(...rows.map((r) => Math.abs(r.value - r.base)), 1e-12);
  return h("div", { class: "bars change-bars", role: "list",
    "aria-label": "Change against the base model, scaled to the largest change" },
  rows.map((r) => {
    const delta = r.value - r.base;
    const judged = verdict(r.metric, r.value, r.base);
    const width = `${(Math.abs(delta) / top) * 50}%`;
    return h("div", { class: `hbar delta-bar ${judged}`, role: "listitem",
      "data-metric": r.metric },
    h("span", { class: "hbar-label" }, r.metric),
    h("span", { class: "hbar-track diverging", "aria-hidden": "true" },
      h("span", { class: "hbar-fill", style: delta >= 0
        ? { left: "50%", width } : { right: "50%", width } })),
    h("span", { class: "hbar-value" }, changeView(r.metric, r.value, r.base)));
  }));
}

const NOT_EVALUATED = {
  cancelled: "Not evaluated: the job was cancelled before it finished.",
  failed: "Not evaluated: the job failed before its evaluation.",
  succeeded: "Not evaluated: the job had no validation rows.",
};

/** A job's (or a version's) evaluation: the base and the fine-tuned model on the validation
 *  rows, each metric's change marked better or worse, and the changes as bars. `status` is
 *  the job's, to say why there is none. */
export function evaluationView(evaluation, status) {
  const tuned = evaluation?.fine_tuned_model || {};
  const keys = Object.keys(tuned).filter((k) => typeof tuned[k] === "number");
  if (!keys.length) {
    return message(NOT_EVALUATED[status]
      || "Not evaluated yet: the base and the fine-tuned model are compared when the job "
        + "finishes.");
  }
  const base = evaluation.base_model || {};
  const primary = evaluation.primary_metric;
  keys.sort((a, b) => (b === primary) - (a === primary) || a.localeCompare(b));
  const compared = keys.filter((k) => typeof base[k] === "number");
  const primaryVerdict = verdict(primary, tuned[primary], base[primary]);
  // Rerankers also report the candidates' order without reranking (`no_reranking_…`).
  const unranked = tuned[`no_reranking_${primary}`];
  return h("div", { class: "evaluation" },
    typeof unranked === "number" ? h("p", {}, "Without reranking: ", h("code", {}, primary),
      ` ${fmtNum(unranked)} (the retriever's or the data's order)`) : null,
    primary ? h("p", { class: `primary-line ${primaryVerdict || ""}` }, "Primary metric: ",
      h("code", {}, primary), ` ${fmtNum(tuned[primary])}`,
      typeof base[primary] === "number"
        ? h("span", {}, ` against ${fmtNum(base[primary])} for the base: `,
          changeView(primary, tuned[primary], base[primary]))
        : null,
      primaryVerdict === "worse"
        ? h("strong", { class: "worse-note" }, " The fine-tuned model is worse than the base.")
        : null) : null,
    table(["Metric", "Base model", "Fine-tuned", "Change"], keys.map((k) => [
      k === primary ? h("strong", {}, k) : k,
      fmtNum(base[k]),
      fmtNum(tuned[k]),
      changeView(k, tuned[k], base[k]),
    ]), { className: "eval-table",
      rowAttrs: (i) => ({ class: verdict(keys[i], tuned[keys[i]], base[keys[i]]) || null }) }),
    compared.length ? h("h3", {}, "Change against the base model") : null,
    compared.length ? changeBars(compared.slice(0, 12).map((k) => ({
      metric: k, value: tuned[k], base: base[k] }))) : null);
}

/** A classifier's latest per-class report: precision, recall, F1 and support per class, and
 *  the confusion matrix (single-label: true class by predicted class; multi-label: each
 *  class's true/false positives and negatives). */
export function classReportView(report) {
  const perClass = table(["Class", "Precision", "Recall", "F1", "Support"],
    report.per_class.map((c) => [c.label, fmtNum(c.precision), fmtNum(c.recall), fmtNum(c.f1),
      String(c.support)]), { className: "per-class", caption: "Per class, on the validation rows" });
  const matrix = report.confusion_matrix;
  const multiLabel = Array.isArray(matrix[0]?.[0]);
  return h("div", { class: "class-report" }, perClass,
    multiLabel ? multiLabelMatrix(report.labels, matrix) : confusionMatrix(report.labels, matrix));
}

function confusionMatrix(labels, matrix) {
  const head = h("tr", {}, h("th", { scope: "col", class: "corner" }, "true ╲ predicted"),
    labels.map((label) => h("th", { scope: "col", title: label }, label)));
  const rows = matrix.map((counts, i) => {
    const total = counts.reduce((a, b) => a + b, 0) || 1;
    return h("tr", {}, h("th", { scope: "row" }, labels[i]), counts.map((count, j) => h("td", {
      class: `cm-cell${i === j ? " diag" : ""}${i !== j && count ? " miss" : ""}`,
      "data-count": count,
      title: `true ${labels[i]}, predicted ${labels[j]}: ${count} of ${total}`,
      style: { "--share": `${Math.round((count / total) * 85)}%` },
    }, String(count))));
  });
  return h("div", { class: "table-wrap" }, h("table", { class: "confusion-matrix" },
    h("caption", {}, "Confusion matrix: rows are the true class, columns the predicted one; "
      + "the diagonal is right."),
    h("thead", {}, head), h("tbody", {}, rows)));
}

function multiLabelMatrix(labels, matrices) {
  return table(["Class", "True negatives", "False positives", "False negatives",
    "True positives"], matrices.map(([[tn, fp], [fn, tp]], i) => [labels[i], String(tn),
    String(fp), String(fn), String(tp)]),
  { className: "confusion-matrix multi-label",
    caption: "Confusion per class (multi-label): each class is a yes/no decision." });
}

/** Metrics that have a single value so far (one evaluation): a table, not a chart of a dot. */
export function singleValues(entries, step, base) {
  const hasBase = entries.some(([key]) => typeof base[key.replace(/^eval_/, "")] === "number");
  return h("div", { class: "single-values" },
    table(["Metric", "Value", ...(hasBase ? ["Base model", "Change"] : [])],
      entries.map(([key, value]) => {
        const name = key.replace(/^eval_/, "");
        return [name, fmtNum(value), ...(hasBase
          ? [fmtNum(base[name]), changeView(name, value, base[name])] : [])];
      }), { className: "eval-values", caption: `Evaluation at step ${fmtNum(step)}` }));
}
