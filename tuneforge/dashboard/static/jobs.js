// Jobs: the list with status, progress and ETA; a job's page with live loss, learning-rate
// and evaluation curves and the resources it uses, fed by its event stream, the event log,
// checkpoints and controls.
import { api, followEvents } from "./api.js";
import { LineChart } from "./charts.js";
import { ResourceCurves } from "./monitoring.js";
import {
  announce, badge, facts, fmtDuration, fmtNum, fmtTime, h, message, section, short,
  table, TERMINAL, fill,
} from "./dom.js";
import { classReportView, evaluationView, singleValues } from "./evaluation.js";

function progressCell(job) {
  const p = job.progress;
  if (!p) return h("span", { class: "muted" }, job.status === "queued" ? "waiting" : "–");
  return h("div", { class: "progress-cell" },
    h("progress", { max: 100, value: p.percent, "aria-label": `${job.id} progress` }),
    h("span", {}, `${fmtNum(p.percent)}% · step ${p.step}/${p.total_steps}`));
}

function eta(job) {
  const p = job.progress;
  if (job.status !== "running" || !p || p.eta_seconds === null) return "–";
  return fmtDuration(p.eta_seconds);
}

export async function list(main, ctx) {
  main.append(h("div", { class: "title-row" }, h("h1", {}, "Jobs"),
    h("a", { class: "btn", href: "#/jobs/new" }, "New job")));
  const holder = h("div", {}, message("Loading…"));
  main.append(section("Fine-tuning jobs", holder));
  await ctx.every(2000, async () => {
    const { data } = await api("/v1/fine_tuning/jobs?limit=100", { signal: ctx.signal });
    fill(holder, data.length
      ? table(["Job", "Kind", "Base model", "Status", "Progress", "ETA", "Created", "Model"],
        data.map((job) => [
          h("a", { href: `#/jobs/${job.id}` }, job.id),
          job.method.type,
          short(job.model, 48),
          badge(job.status),
          progressCell(job),
          eta(job),
          fmtTime(job.created_at),
          job.fine_tuned_model ? short(job.fine_tuned_model, 48) : "–",
        ]), { className: "jobs" })
      : message("No jobs yet. Create one with “New job”."));
  });
}

// Metrics that are about the run, not the model: left out of the evaluation charts.
const RUN_KEYS = /(runtime|per_second|epoch|step|total_flos)$/;

/** Everything the job's metrics events said, as series by step. */
class Curves {
  constructor() {
    this.loss = [];
    this.lr = [];
    this.evals = new Map();
    this.seen = new Set();
    // A classifier's latest per-class report and confusion matrix (an event of its own).
    this.classReport = null;
  }

  add(event) {
    if (this.seen.has(event.id)) return;
    this.seen.add(event.id);
    const d = event.data || {};
    if (Array.isArray(d.per_class) && Array.isArray(d.confusion_matrix)) this.classReport = d;
    const step = d.step;
    if (typeof step !== "number") return;
    if (typeof d.loss === "number") this.loss.push([step, d.loss]);
    if (typeof d.learning_rate === "number") this.lr.push([step, d.learning_rate]);
    for (const [key, value] of Object.entries(d)) {
      if (key.startsWith("eval_") && typeof value === "number" && !RUN_KEYS.test(key)) {
        if (!this.evals.has(key)) this.evals.set(key, []);
        this.evals.get(key).push([step, value]);
      }
    }
  }
}

function controls(job, refresh) {
  const out = h("div", { class: "row controls", role: "group", "aria-label": "Job controls" });
  const act = async (verb, done) => {
    try {
      await api(`/v1/fine_tuning/jobs/${job.id}/${verb}`, { method: "POST" });
      announce(done);
    } catch (error) {
      out.append(message(error.message, "error"));
    }
    await refresh();
  };
  const running = job.status === "running" || job.status === "queued";
  out.append(
    h("button", { type: "button", class: "btn", disabled: !running || job.pause_requested,
      onclick: () => act("pause", "Pause requested: the job writes a checkpoint and stops.") },
    job.pause_requested && running ? "Pausing…" : "Pause"),
    h("button", { type: "button", class: "btn", disabled: job.status !== "paused",
      onclick: () => act("resume", "Job resumed: it continues from its checkpoint.") },
    "Resume"),
    h("button", { type: "button", class: "btn danger", disabled: TERMINAL.has(job.status),
      onclick: () => {
        if (confirm(`Cancel ${job.id}? Its progress is lost.`)) act("cancel", "Cancel requested.");
      } }, "Cancel"),
    h("button", { type: "button", class: "btn danger", disabled: !TERMINAL.has(job.status),
      title: "A finished job's events, checkpoints and logs; its model and version stay.",
      onclick: async () => {
        if (!confirm(`Delete ${job.id} with its events, checkpoints and logs? `
          + "The model it made and its registry version stay.")) return;
        try {
          await api(`/v1/fine_tuning/jobs/${job.id}`, { method: "DELETE" });
          announce(`Job ${job.id} deleted.`);
          window.location.hash = "#/jobs";
        } catch (error) {
          out.append(message(error.message, "error"));
        }
      } }, "Delete"));
  return out;
}

// A checkpoint's metrics as columns: OpenAI's always (acc: mean token accuracy), DPO's
// reward accuracy and margin where a checkpoint has them.
const CHECKPOINT_METRICS = [
  ["train_loss", "Train loss"], ["train_mean_token_accuracy", "Train acc"],
  ["valid_loss", "Valid loss"], ["valid_mean_token_accuracy", "Valid acc"],
  ["full_valid_loss", "Full valid loss"], ["full_valid_mean_token_accuracy", "Full valid acc"],
];
const DPO_METRICS = [
  ["train_reward_accuracy", "Train reward acc"], ["train_reward_margin", "Train margin"],
  ["full_valid_reward_accuracy", "Valid reward acc"], ["full_valid_reward_margin", "Valid margin"],
];

/** Checkpoints, oldest first, with their metrics (see tuneforge.training.checkpoint_metrics). */
function checkpointTable(checkpoints) {
  const columns = CHECKPOINT_METRICS.concat(DPO_METRICS.filter(([key]) =>
    checkpoints.some((c) => typeof c.metrics[key] === "number")));
  return table(["Step", "Epoch", ...columns.map(([, title]) => title), "Saved", "Name"],
    checkpoints.map((c) => [String(c.step_number), fmtNum(c.epoch),
      ...columns.map(([key]) => fmtNum(c.metrics[key])), fmtTime(c.created_at),
      h("code", {}, c.fine_tuned_model_checkpoint)]),
    { caption: "Train: means since the previous checkpoint. Valid: a fixed batch of "
      + "validation rows. Full valid: the whole validation split.",
    className: "checkpoints" });
}

/** The estimate made when the job was created, in one line: memory, disk, time. */
function estimateText(e) {
  if (!e) return null;
  const gib = (bytes) => `${(bytes / 2 ** 30).toFixed(1)} GiB`;
  return `${gib(e.memory.total)} peak memory per device (${e.assumptions.device}) · `
    + `${gib(e.disk.total)} disk · about ${fmtDuration(e.seconds)} of training`;
}

export async function detail(main, ctx, id) {
  let job = await api(`/v1/fine_tuning/jobs/${encodeURIComponent(id)}`, { signal: ctx.signal });
  const header = h("div", {});
  const controlBox = h("div", {});
  const progressBox = h("div", { class: "job-progress" });
  const lossChart = new LineChart("Training loss", { yLabel: "loss" });
  const lrChart = new LineChart("Learning rate", { yLabel: "learning rate" });
  const evalCharts = h("div", { class: "chart-grid" });
  const evalValues = h("div", {});
  const evalBox = h("div", {});
  const classBox = h("div", {}, message("No evaluation yet: the per-class report and the "
    + "confusion matrix come with the first one."));
  const checkpointBox = h("div", {}, message("Loading…"));
  const log = h("ol", { class: "event-log", "aria-label": "Events, oldest first" });
  const showMetrics = h("input", { type: "checkbox", id: "show-metrics" });
  const curves = new Curves();
  const resources = new ResourceCurves();
  const evalChartByKey = new Map();
  let drawnReport = null;
  const events = [];

  // Evaluation metrics with one value so far are a table; from the second value on, a chart
  // each, with the base model's value as a level line once the job has it.
  function drawCurves() {
    lossChart.set([{ name: "loss", points: curves.loss }]);
    lrChart.set([{ name: "learning rate", points: curves.lr }]);
    const base = job.evaluation?.base_model || {};
    const single = [];
    let singleStep = null;
    for (const [key, points] of curves.evals) {
      if (points.length < 2) {
        single.push([key, points[0][1]]);
        singleStep = points[0][0];
        continue;
      }
      if (!evalChartByKey.has(key)) {
        const chart = new LineChart(key, { yLabel: key.replace(/^eval_/, ""), height: 170 });
        evalChartByKey.set(key, chart);
        evalCharts.append(chart.el);
      }
      const name = key.replace(/^eval_/, "");
      evalChartByKey.get(key).set([{ name: key, points }],
        { reference: { label: "base", value: base[name] } });
    }
    fill(evalValues, single.length ? singleValues(single, singleStep, base) : null);
    const report = job.result?.per_class ? job.result : curves.classReport;
    if (report && report !== drawnReport) {
      drawnReport = report;
      fill(classBox, classReportView(report));
    }
  }

  function drawLog() {
    const shown = events.filter((e) => showMetrics.checked || e.type !== "metrics");
    fill(log, ...shown.slice(-300).map((e) => h("li", {
      class: `event level-${e.level} type-${e.type}` },
    fmtTime(e.created_at), " ", h("span", { class: "event-text" }, e.message))));
    log.scrollTop = log.scrollHeight;
  }
  showMetrics.addEventListener("change", drawLog);

  function drawJob() {
    const p = job.progress;
    fill(header,
      h("p", { class: "crumbs" }, h("a", { href: "#/jobs" }, "Jobs"), " / "),
      h("div", { class: "title-row" }, h("h1", {}, job.id),
        h("span", { id: "job-status" }, badge(job.status))),
      // At the top: a model worse than its base (or the base's weights kept).
      job.warning ? h("p", { class: `notice notice-${job.worse_than_base ? "warning" : "info"}`,
        id: "job-warning", role: job.worse_than_base ? "alert" : null },
      job.worse_than_base ? h("strong", {}, "Worse than its base model. ") : null,
      job.warning) : null,
      // What trains, but not as asked (cut texts, overlap, warm-up, device): at the top.
      ...(job.warnings || []).map((w) => message(`${w.code}: ${w.message}`, "warning")),
      facts([
        ["kind", job.method.type],
        ["base model", job.model],
        ["fine-tuned model", job.fine_tuned_model],
        ["registered as", job.registered_model ? h("a", {
          href: `#/models/${encodeURIComponent(job.registered_model.name)}`
            + `?v=${job.registered_model.version}` },
        `${job.registered_model.name} v${job.registered_model.version}`) : null],
        ["training file", h("a", { href: `#/datasets/${job.training_file}` },
          job.training_file)],
        ["validation file", job.validation_file],
        ["kept weights", job.kept_model ? `${job.kept_model.model} (step ${job.kept_model.step})`
          : null],
        ["seed", job.seed],
        ["created", fmtTime(job.created_at)],
        ["finished", job.finished_at ? fmtTime(job.finished_at) : null],
        ["attempt", job.attempts ? `${job.attempts} of ${job.max_attempts}` : null],
        ["estimate", estimateText(job.estimate)],
      ]),
      job.error ? message(`${job.error.code}: ${job.error.message}`, "error") : null);
    fill(controlBox, controls(job, refresh));
    fill(progressBox, p
      ? h("div", {},
        h("progress", { max: 100, value: p.percent, "aria-label": "Progress" }),
        h("p", {}, `${fmtNum(p.percent)}% · step ${p.step} of ${p.total_steps} · epoch `
          + `${fmtNum(p.epoch)} · ${fmtDuration(p.elapsed_seconds)} elapsed`
          + (job.status === "running" && p.eta_seconds !== null
            ? ` · about ${fmtDuration(p.eta_seconds)} left` : "")))
      : message(job.status === "queued" ? "Waiting for a worker." : "No progress yet."));
    fill(evalBox, evaluationView(job.evaluation, job.status),
      job.promotion ? message(`Promotion: ${short(job.promotion, 300)}`) : null);
  }

  async function loadCheckpoints() {
    const { data } = await api(`/v1/fine_tuning/jobs/${job.id}/checkpoints?limit=100`,
      { signal: ctx.signal });
    fill(checkpointBox, data.length ? checkpointTable(data.slice().reverse())
      : message("No checkpoints yet."));
  }

  async function refresh() {
    job = await api(`/v1/fine_tuning/jobs/${job.id}`, { signal: ctx.signal });
    drawJob();
    drawCurves();
    await loadCheckpoints();
  }

  // Events can come in bursts: refresh the job at most once a second because of them.
  let refreshTimer = null;
  function refreshSoon() {
    if (refreshTimer) return;
    refreshTimer = setTimeout(() => {
      refreshTimer = null;
      if (!ctx.signal.aborted) refresh().catch(() => {});
    }, 1000);
  }

  drawJob();
  main.append(header, controlBox, section("Progress", progressBox),
    section("Curves", h("div", { class: "chart-grid" }, lossChart.el, lrChart.el), evalCharts,
      evalValues),
    section("Resources", resources.el),
    section("Evaluation", evalBox),
    ...(job.method.type === "classification" ? [section("Classes", classBox)] : []),
    section("Checkpoints", checkpointBox),
    section("Events", h("div", { class: "row" }, showMetrics,
      h("label", { for: "show-metrics" }, "Show metrics events")), log),
    section("Spec", h("details", {}, h("summary", {}, "Method and hyperparameters"),
      h("pre", {}, JSON.stringify(job.method, null, 2)))));
  drawCurves();
  loadCheckpoints().catch(() => {});

  followEvents(job.id, (event) => {
    if (event.type === "end") {
      refresh().catch(() => {});
      return;
    }
    const e = event.data;
    events.push(e);
    if (e.type === "metrics" && resources.add(e)) {
      resources.draw();
    } else if (e.type === "metrics") {
      curves.add(e);
      drawCurves();
    }
    if (!showMetrics.checked && e.type === "metrics") {
      if (events.length % 20 === 0) drawLog();
    } else {
      drawLog();
    }
    refreshSoon();
  }, ctx.signal).catch((error) => log.after(message(error.message, "error")));
  // Status and progress also change without events (a pause waiting for its step).
  ctx.every(3000, refresh);
}
