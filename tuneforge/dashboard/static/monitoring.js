// Watching the service: a served model's usage (model page), the resources a job uses
// (job page, beside its loss curves), and the training statistics (system page).
import { api } from "./api.js";
import { LineChart } from "./charts.js";
import { badge, fill, fmtDuration, fmtNum, h, message, section, table } from "./dom.js";

const MIB = 2 ** 20;
const pct = (rate) => (typeof rate === "number" ? `${fmtNum(rate * 100)}%` : "–");
const ms = (value) => (typeof value === "number" ? `${fmtNum(value)} ms` : "–");

/** The resource samples of a job's metrics events (tuneforge.monitoring.resources), as
 * series by seconds since the job's process started. */
export class ResourceCurves {
  constructor() {
    this.cpu = [];
    this.rss = [];
    this.peak = [];
    this.gpuAllocated = [];
    this.gpuReserved = [];
    this.seen = new Set();
    this.cpuChart = new LineChart("CPU", { xLabel: "seconds", yLabel: "% of one core" });
    this.memoryChart = new LineChart("Memory", { xLabel: "seconds", yLabel: "MiB" });
    this.gpuChart = new LineChart("GPU memory", { xLabel: "seconds", yLabel: "MiB" });
    this.el = h("div", { class: "chart-grid", id: "resource-charts" },
      this.cpuChart.el, this.memoryChart.el);
  }

  /** Take a metrics event; true when it was a resource sample. */
  add(event) {
    const d = event.data || {};
    if (typeof d.rss_bytes !== "number") return false;
    if (this.seen.has(event.id)) return true;
    this.seen.add(event.id);
    const t = d.elapsed_seconds;
    this.cpu.push([t, d.cpu_percent]);
    this.rss.push([t, d.rss_bytes / MIB]);
    this.peak.push([t, d.peak_rss_bytes / MIB]);
    if (typeof d.gpu_memory_allocated_bytes === "number") {
      this.gpuAllocated.push([t, d.gpu_memory_allocated_bytes / MIB]);
      this.gpuReserved.push([t, d.gpu_memory_reserved_bytes / MIB]);
      if (!this.gpuChart.el.isConnected) this.el.append(this.gpuChart.el);
    }
    return true;
  }

  draw() {
    this.cpuChart.set([{ name: "cpu", points: this.cpu }]);
    this.memoryChart.set([{ name: "rss", points: this.rss }, { name: "peak", points: this.peak }]);
    if (this.gpuAllocated.length) {
      this.gpuChart.set([{ name: "allocated", points: this.gpuAllocated },
        { name: "reserved", points: this.gpuReserved }]);
    }
  }
}

function usageRow(label, figures) {
  const latency = figures.latency_ms;
  return [label, fmtNum(figures.requests), pct(figures.error_rate),
    fmtNum(figures.prompt_tokens), fmtNum(figures.completion_tokens),
    ms(latency.p50), ms(latency.p95), ms(latency.p99)];
}

/** A registered model's usage over the last day: per version and endpoint, and requests
 * and p95 latency over time. */
export function usageSection(name, ctx) {
  const box = h("div", { id: "model-usage" }, message("Loading…"));
  const requests = new LineChart("Requests", { xLabel: "minutes ago", yLabel: "requests" });
  const latency = new LineChart("Latency p95", { xLabel: "minutes ago", yLabel: "ms" });
  const charts = h("div", { class: "chart-grid" }, requests.el, latency.el);
  ctx.every(15000, async () => {
    const usage = await api(`/v1/models/${encodeURIComponent(name)}/usage?window=24h`,
      { signal: ctx.signal });
    if (!usage.totals.requests) {
      fill(box, message("No requests in the last 24 hours."));
      return;
    }
    fill(box, table(["Version", "Requests", "Errors", "Prompt tokens", "Completion tokens",
      "p50", "p95", "p99"], [
      ...usage.data.map((row) => usageRow(
        `${row.version ? `v${row.version}` : row.model} ${row.endpoint}`, row)),
      usageRow("all", usage.totals),
    ], { className: "usage", caption: "Served requests, last 24 hours" }));
    const ago = (start) => -(usage.until - start) / 60;
    const points = (pick) => usage.series.filter((p) => pick(p) !== null)
      .map((p) => [ago(p.start), pick(p)]);
    requests.set([{ name: "requests", points: points((p) => p.requests) }]);
    latency.set([{ name: "p95", points: points((p) => p.p95_ms) }]);
  });
  return section("Usage", box, charts);
}

function spread(figures) {
  return figures.count ? `${fmtDuration(figures.mean)} mean · ${fmtDuration(figures.p95)} p95`
    : "–";
}

/** The training statistics panel: jobs per kind and status, success rate, durations. */
export function statisticsPanel(ctx) {
  const box = h("div", { id: "statistics" }, message("Loading…"));
  ctx.every(5000, async () => {
    const stats = await api("/v1/statistics", { signal: ctx.signal });
    const kinds = Object.entries(stats.by_kind);
    if (!kinds.length) {
      fill(box, message("No jobs yet."));
      return;
    }
    fill(box, table(["Kind", "Jobs", "By status", "Success rate", "Duration", "Queue wait"],
      [...kinds, ["all", stats.totals]].map(([kind, f]) => [
        kind, fmtNum(f.total),
        h("span", {}, Object.entries(f.by_status).map(([status, n]) =>
          h("span", { class: "stat-pair" }, badge(status), ` ${n} `))),
        pct(f.success_rate), spread(f.duration_seconds), spread(f.queue_wait_seconds),
      ]), { className: "statistics" }));
  });
  return section("Training statistics", box);
}
