// System: the workers sharing the database, their devices and current jobs; the queue.
import { api } from "./api.js";
import { badge, fmtDuration, fmtTime, h, message, section, table, fill } from "./dom.js";
import { statisticsPanel } from "./monitoring.js";

function jobLink(id) {
  if (!id) return h("span", { class: "muted" }, "idle");
  return id.startsWith("ftjob-") ? h("a", { href: `#/jobs/${id}` }, id) : h("code", {}, id);
}

export async function render(main, ctx) {
  const summary = h("div", { class: "stat-grid" });
  const workersBox = h("div", {}, message("Loading…"));
  const countsBox = h("div", {});
  main.append(h("h1", {}, "System"), summary, section("Workers", workersBox),
    section("Jobs by status", countsBox), statisticsPanel(ctx));
  await ctx.every(3000, async () => {
    const [workers, health] = await Promise.all([
      api("/v1/workers", { signal: ctx.signal }),
      api("/health", { signal: ctx.signal }),
    ]);
    const now = Date.now() / 1000;
    const alive = workers.data.filter((w) => w.alive);
    const busy = alive.filter((w) => w.job_id);
    fill(summary,
      h("div", { class: "stat" }, h("span", { class: "stat-value", id: "queue-depth" },
        String(workers.queued)), h("span", { class: "stat-label" }, "jobs queued")),
      h("div", { class: "stat" }, h("span", { class: "stat-value" }, String(alive.length)),
        h("span", { class: "stat-label" }, "workers alive")),
      h("div", { class: "stat" }, h("span", { class: "stat-value" }, String(busy.length)),
        h("span", { class: "stat-label" }, "workers busy")),
      h("div", { class: "stat" }, h("span", { class: "stat-value" }, health.version),
        h("span", { class: "stat-label" }, "tuneforge version")));
    fill(workersBox, workers.data.length
      ? table(["Worker", "State", "Host", "PID", "Kinds", "Devices", "Heartbeat", "Started",
        "Job"], workers.data.map((w) => [
        h("code", {}, w.id),
        badge(w.alive ? (w.job_id ? "busy" : "idle") : "gone"),
        w.hostname, String(w.pid),
        (w.kinds || []).join(", ") || "all",
        (w.devices || []).join(", ") || "–",
        `${fmtDuration(now - w.heartbeat_at)} ago`,
        fmtTime(w.started_at),
        jobLink(w.job_id),
      ]), { className: "workers" })
      : message("No worker has registered yet. `tuneforge serve` runs one; "
        + "`tuneforge worker` adds more."));
    const counts = Object.entries(health.jobs || {});
    fill(countsBox, counts.length
      ? table(["Status", "Jobs"], counts.map(([status, n]) => [badge(status), String(n)]),
        { caption: "All jobs, exports and evaluations" })
      : message("No jobs yet."));
  });
}
