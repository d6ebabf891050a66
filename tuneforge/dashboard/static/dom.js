// Building elements and formatting values. Text always goes in as text, never as HTML.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.setAttribute("class", value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key === "style" && typeof value === "object") {
      Object.assign(el.style, value);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** An HTML element: h("a", {href: "#/jobs"}, "Jobs"). */
export function h(tag, attrs = {}, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element, the same way. */
export function s(tag, attrs = {}, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Replace what `el` holds with `children` (empty ones skipped, as in h()). */
export function fill(el, ...children) {
  clear(el);
  return build(el, {}, children);
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

/** Numbers as people read them: integers whole, others to four significant digits. */
export function fmtNum(value) {
  if (value === null || value === undefined || value === "") return "–";
  if (typeof value !== "number") return String(value);
  if (!Number.isFinite(value)) return String(value);
  if (Number.isInteger(value)) return value.toLocaleString("en-US");
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e6)) return value.toExponential(2);
  return String(Number(value.toPrecision(4)));
}

export function fmtSigned(value) {
  if (typeof value !== "number") return "–";
  return (value > 0 ? "+" : "") + fmtNum(value);
}

export function fmtBytes(n) {
  if (typeof n !== "number") return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

export function fmtDuration(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

/** A unix time as a <time> element in the reader's locale. */
export function fmtTime(unix) {
  if (!unix) return "–";
  const date = new Date(unix * 1000);
  return h("time", { datetime: date.toISOString(), title: date.toISOString() },
    date.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" }));
}

export function badge(status) {
  return h("span", { class: `badge status-${String(status).replaceAll(" ", "_")}` }, status);
}

export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

/** A table from column titles and rows of cells (strings or nodes); wrapped to scroll. */
export function table(headers, rows, { caption, className, rowAttrs } = {}) {
  return h("div", { class: "table-wrap" },
    h("table", { class: className },
      caption ? h("caption", {}, caption) : null,
      h("thead", {}, h("tr", {}, headers.map((title) => h("th", { scope: "col" }, title)))),
      h("tbody", {}, rows.map((cells, i) =>
        h("tr", rowAttrs ? rowAttrs(i) : {}, cells.map((cell) => h("td", {}, cell)))))));
}

/** A definition list of [term, value] pairs, skipping empty values. */
export function facts(pairs) {
  return h("dl", { class: "facts" }, pairs
    .filter(([, value]) => value !== undefined && value !== null && value !== "")
    .map(([term, value]) => h("div", {}, h("dt", {}, term), h("dd", {}, value))));
}

export function section(title, ...children) {
  const id = `sec-${title.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`;
  return h("section", { class: "card", "aria-labelledby": id },
    h("h2", { id }, title), ...children);
}

export function message(text, kind = "info") {
  return h("p", { class: `notice notice-${kind}`, role: kind === "error" ? "alert" : null }, text);
}

/** A shortened text with the whole of it as a tooltip. */
export function short(text, max = 120) {
  const str = typeof text === "string" ? text : JSON.stringify(text);
  if (str === undefined) return "";
  return str.length <= max ? str : h("span", { title: str }, `${str.slice(0, max)}…`);
}

/** Say something to screen-reader users (the page shows it its own way). */
export function announce(text) {
  const region = document.getElementById("announce");
  region.textContent = "";
  setTimeout(() => {
    region.textContent = text;
  }, 50);
}
