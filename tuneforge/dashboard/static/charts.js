// Charts drawn as SVG in the size their box has (redrawn when it changes), and bar lists
// in plain HTML. Each chart names what it shows for screen readers.
import { fill, fmtNum, h, s } from "./dom.js";

const MARGIN = { top: 12, right: 16, bottom: 38, left: 64 };

/** Tick labels: short, so that they leave room for the axis title, with as many decimals as
 *  the spacing of the ticks needs (1.4071, 1.4072: a zoomed axis never repeats a label). */
function tickText(value, spacing) {
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e6)) return value.toExponential(1);
  if (spacing > 0 && spacing < 1) {
    if (abs === 0 && spacing < 1e-3) return "0";
    let decimals = 0;  // as many as the spacing has: 0.25 needs two, 0.2 one
    while (decimals < 10 && Math.abs(Math.round(spacing * 10 ** decimals)
      - spacing * 10 ** decimals) > 1e-6) decimals += 1;
    return value.toFixed(decimals);
  }
  return fmtNum(value);
}

/** About `count` round tick values covering lo..hi; whole numbers only when `integer`
 *  (steps are counted: an axis of steps never shows 12.5). */
export function niceTicks(lo, hi, count = 5, { integer = false } = {}) {
  if (!(hi > lo)) return [lo];
  const raw = Math.max((hi - lo) / count, integer ? 1 : 0);
  const power = 10 ** Math.floor(Math.log10(raw));
  const steps = integer && power < 10 ? [1, 2, 5, 10] : [1, 2, 2.5, 5, 10];
  const step = steps.map((m) => m * power).find((m) => m >= raw);
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    ticks.push(Number(v.toPrecision(12)));
  }
  return ticks;
}

function extent(values) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return [lo, hi];
}

class ResponsiveChart {
  constructor(title, { height = 220, description = "" } = {}) {
    this.height = height;
    this.plot = h("div", { class: "plot" });
    this.legend = h("ul", { class: "legend" });
    this.el = h("figure", { class: "chart" },
      h("figcaption", {}, title, description ? h("small", {}, ` ${description}`) : null),
      this.plot, this.legend);
    this.title = title;
    this.pending = false;
    this.observer = new ResizeObserver(() => this.schedule());
    this.observer.observe(this.plot);
  }

  /** Redraw at the next frame (many updates in one frame draw once). */
  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      if (this.el.isConnected) this.draw();
    });
  }

  frame(label) {
    const width = Math.max(this.plot.clientWidth || 0, 240);
    const height = width < 420 ? Math.round(this.height * 0.8) : this.height;
    const svg = s("svg", {
      width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label,
    });
    return { svg, width, height,
      inner: { w: width - MARGIN.left - MARGIN.right, h: height - MARGIN.top - MARGIN.bottom } };
  }

  put(svg) {
    fill(this.plot, svg);
  }

  axes(svg, inner, xTicks, xPos, yTicks, yPos, xLabel, yLabel) {
    const g = s("g", { class: "axes", transform: `translate(${MARGIN.left},${MARGIN.top})` });
    const ySpacing = yTicks.length > 1 ? Math.abs(yTicks[1] - yTicks[0]) : 0;
    for (const t of yTicks) {
      const y = yPos(t);
      g.append(s("line", { class: "grid", x1: 0, x2: inner.w, y1: y, y2: y }));
      g.append(s("text", { class: "tick", x: -6, y, dy: "0.32em", "text-anchor": "end" },
        tickText(t, ySpacing)));
    }
    g.append(s("line", { class: "axis", x1: 0, x2: inner.w, y1: inner.h, y2: inner.h }));
    for (const t of xTicks) {
      const x = xPos(t);
      g.append(s("line", { class: "axis", x1: x, x2: x, y1: inner.h, y2: inner.h + 4 }));
      g.append(s("text", { class: "tick", x, y: inner.h + 16, "text-anchor": "middle" },
        tickText(t)));
    }
    if (xLabel) {
      g.append(s("text", { class: "label", x: inner.w / 2, y: inner.h + 32,
        "text-anchor": "middle" }, xLabel));
    }
    if (yLabel) {
      g.append(s("text", { class: "label", x: -inner.h / 2, y: -52, "text-anchor": "middle",
        transform: "rotate(-90)" }, yLabel));
    }
    svg.append(g);
    return g;
  }
}

/**
 * Lines of (x, y) points, e.g. loss by step. `set` replaces the series; the chart redraws
 * itself. Each series is one <polyline class="series"> with data-points = its point count.
 */
export class LineChart extends ResponsiveChart {
  constructor(title, { xLabel = "step", yLabel = "", height, description,
    integerX = xLabel === "step" } = {}) {
    super(title, { height, description });
    this.xLabel = xLabel;
    this.yLabel = yLabel;
    this.integerX = integerX;
    this.series = [];
    this.reference = null;
  }

  /** Replace the series; `reference` ({label, value}) is drawn as a dashed level line (the
   *  base model's value), within the y range. */
  set(series, { reference = null } = {}) {
    this.reference = typeof reference?.value === "number" ? reference : null;
    this.series = series.filter((one) => one.points.length > 0);
    fill(this.legend, ...this.series.map((one, i) => h("li", {},
      h("span", { class: `swatch c${i % 8}`, "aria-hidden": "true" }), one.name,
      h("span", { class: "muted" },
        ` ${fmtNum(one.points[one.points.length - 1][1])}`))));
    this.schedule();
  }

  /** One value per series (a single point so far): the value in words, not a chart of a
   *  dot. */
  drawValues() {
    fill(this.plot, h("div", { class: "single-value" }, this.series.map((one) => {
      const [x, y] = one.points[0];
      return h("p", { "data-series": one.name },
        h("span", { class: "value" }, fmtNum(y)),
        h("span", { class: "muted" }, ` ${one.name} at ${this.xLabel} ${fmtNum(x)}`),
        this.reference ? h("span", { class: "muted" },
          ` (${this.reference.label} ${fmtNum(this.reference.value)})`) : null);
    }), h("p", { class: "muted" }, "A curve is drawn from the second value on.")));
  }

  draw() {
    const points = this.series.flatMap((one) => one.points);
    const label = this.series.length
      ? `${this.title}: ${this.series.map((one) => `${one.name}, ${one.points.length} points, `
        + `latest ${fmtNum(one.points[one.points.length - 1][1])}`).join("; ")}`
      : `${this.title}: no data yet`;
    if (this.series.length && this.series.every((one) => one.points.length === 1)) {
      this.drawValues();
      return;
    }
    const { svg, inner } = this.frame(label);
    if (!points.length) {
      svg.append(s("text", { class: "empty", x: "50%", y: "50%", "text-anchor": "middle" },
        "No data yet"));
      this.put(svg);
      return;
    }
    const ref = this.reference;
    let [x0, x1] = extent(points.map((p) => p[0]));
    let [y0, y1] = extent(points.map((p) => p[1]).concat(ref ? [ref.value] : []));
    if (x1 === x0) x1 = x0 + 1;
    if (y1 === y0) {
      y0 -= Math.abs(y0) * 0.1 || 1;
      y1 += Math.abs(y1) * 0.1 || 1;
    }
    const pad = (y1 - y0) * 0.05;
    y0 -= pad;
    y1 += pad;
    const xPos = (x) => ((x - x0) / (x1 - x0)) * inner.w;
    const yPos = (y) => inner.h - ((y - y0) / (y1 - y0)) * inner.h;
    const xTicks = niceTicks(x0, x1, Math.max(2, Math.floor(inner.w / 80)),
      { integer: this.integerX }).filter((t) => t >= x0 && t <= x1);
    const yTicks = niceTicks(y0, y1, 4).filter((t) => t >= y0 && t <= y1);
    const g = this.axes(svg, inner, xTicks, xPos, yTicks, yPos, this.xLabel, this.yLabel);
    if (ref) {
      const y = yPos(ref.value);
      g.append(s("line", { class: "reference", x1: 0, x2: inner.w, y1: y, y2: y }));
      g.append(s("text", { class: "reference-label", x: inner.w - 4, y: y - 4,
        "text-anchor": "end" }, `${ref.label} ${fmtNum(ref.value)}`));
    }
    this.series.forEach((one, i) => {
      const coords = one.points.map(([x, y]) => `${xPos(x).toFixed(1)},${yPos(y).toFixed(1)}`);
      g.append(s("polyline", { class: `series c${i % 8}`, points: coords.join(" "),
        "data-series": one.name, "data-points": one.points.length }));
      const [lx, ly] = one.points[one.points.length - 1];
      g.append(s("circle", { class: `dot c${i % 8}`, cx: xPos(lx), cy: yPos(ly), r: 3 },
        s("title", {}, `${one.name} at ${this.xLabel} ${fmtNum(lx)}: ${fmtNum(ly)}`)));
    });
    this.put(svg);
  }
}

/** Bars of a length histogram: {unit, edges, counts} as the dataset statistics give it. */
export class Histogram extends ResponsiveChart {
  constructor(title, data, { height = 180 } = {}) {
    super(title, { height, description: data ? `(${data.unit})` : "" });
    this.data = data;
    this.schedule();
  }

  draw() {
    const { edges, counts, unit } = this.data;
    const total = counts.reduce((a, b) => a + b, 0);
    const { svg, inner } = this.frame(`${this.title}: ${total} rows in ${counts.length} bins `
      + `from ${edges[0]} to ${edges[edges.length - 1] - 1} ${unit}`);
    const x0 = edges[0];
    const x1 = edges[edges.length - 1];
    const yMax = Math.max(...counts, 1);
    const xPos = (x) => ((x - x0) / (x1 - x0)) * inner.w;
    const yPos = (y) => inner.h - (y / yMax) * inner.h;
    const yTicks = niceTicks(0, yMax, 3).filter((t) => Number.isInteger(t));
    const xTicks = niceTicks(x0, x1, Math.max(2, Math.floor(inner.w / 70)))
      .filter((t) => t >= x0 && t <= x1);
    const g = this.axes(svg, inner, xTicks, xPos, yTicks, yPos, unit, "rows");
    counts.forEach((count, i) => {
      const x = xPos(edges[i]);
      const w = Math.max(1, xPos(edges[i + 1]) - x - 1);
      g.append(s("rect", { class: "bar", x, y: yPos(count), width: w,
        height: inner.h - yPos(count), "data-count": count },
      s("title", {}, `${edges[i]}–${edges[i + 1] - 1} ${unit}: ${count} rows`)));
    });
    this.put(svg);
  }
}

/**
 * Horizontal bars in HTML: [{label, value, note}], scaled to the largest value (or `max`).
 * Groups (e.g. base model vs fine-tuned per metric) come as {label, bars: [...]}.
 */
export function barList(items, { max, format = fmtNum, zoom = false } = {}) {
  const values = items.flatMap((item) => (item.bars ? item.bars : [item]))
    .map((bar) => Math.abs(bar.value ?? 0));
  const top = max ?? Math.max(...values, 1e-12);
  // Zoomed, each group's bars start below its smallest value instead of at 0: values close
  // together (0.9036 and 0.9018) differ visibly. The start is written beside the group.
  const floorOf = (bars) => {
    if (!zoom) return 0;
    const vals = bars.map((bar) => Math.abs(bar.value ?? 0));
    const lo = Math.min(...vals);
    const hi = Math.max(...vals);
    return Math.max(0, lo - ((hi - lo) || Math.abs(hi) * 0.05 || 1));
  };
  const row = (bar, i, from, upTo) => h("div", { class: "hbar" },
    h("span", { class: "hbar-label" }, bar.label),
    h("span", { class: "hbar-track", "aria-hidden": "true" },
      h("span", { class: `hbar-fill c${(bar.color ?? i) % 8}`, style: { width: `${Math.min(100,
        ((Math.abs(bar.value ?? 0) - from) / Math.max(upTo - from, 1e-12)) * 100)}%` } })),
    h("span", { class: "hbar-value" }, format(bar.value), bar.note ? ` ${bar.note}` : ""));
  return h("div", { class: "bars" }, items.map((item, i) => {
    if (!item.bars) return row(item, i, 0, top);
    const from = floorOf(item.bars);
    const upTo = zoom ? Math.max(...item.bars.map((bar) => Math.abs(bar.value ?? 0))) : top;
    return h("div", { class: "bar-group", role: "group", "aria-label": item.label },
      h("div", { class: "bar-group-label" }, item.label,
        from ? h("small", { class: "muted axis-from" }, ` (bars from ${fmtNum(from)})`) : null),
      item.bars.map((bar, j) => row(bar, j, from, upTo)));
  }));
}
