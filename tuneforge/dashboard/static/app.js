// The dashboard's shell: a hash router (#/datasets, #/jobs/{id}, …) that renders one page
// into <main>, and stops what that page was doing (polls, event streams) when it is left.
import { apiKey, setApiKey } from "./api.js";
import * as datasets from "./datasets.js";
import { announce, clear, h, message } from "./dom.js";
import * as jobForm from "./job_form.js";
import * as jobs from "./jobs.js";
import * as models from "./models.js";
import * as system from "./system.js";

const ROUTES = [
  [/^\/datasets$/, "datasets", datasets.list],
  [/^\/datasets\/([^/]+)$/, "datasets", datasets.detail],
  [/^\/jobs$/, "jobs", jobs.list],
  [/^\/jobs\/new$/, "jobs", jobForm.render],
  [/^\/jobs\/([^/]+)$/, "jobs", jobs.detail],
  [/^\/models$/, "models", models.list],
  [/^\/models\/([^/]+)$/, "models", models.detail],
  [/^\/system$/, "system", system.render],
];

/** What a page may do while it is shown; all of it ends when the reader goes elsewhere. */
class PageContext {
  constructor(query) {
    this.controller = new AbortController();
    this.signal = this.controller.signal;
    this.query = query;
    this.timers = [];
  }

  /** Run `fn` now and every `ms` while the page is shown (never two at once). */
  every(ms, fn) {
    let busy = false;
    const tick = async () => {
      if (busy || this.signal.aborted) return;
      busy = true;
      try {
        await fn();
      } catch (error) {
        if (!this.signal.aborted) console.error(error);
      } finally {
        busy = false;
      }
    };
    this.timers.push(setInterval(tick, ms));
    return tick();
  }

  close() {
    this.controller.abort();
    this.timers.forEach(clearInterval);
  }
}

let current = null;

async function route({ focus }) {
  const raw = location.hash.replace(/^#/, "") || "/jobs";
  const [path, queryString] = raw.split("?");
  const found = ROUTES.map(([pattern, section, render]) => [path.match(pattern), section, render])
    .find(([match]) => match);
  if (current) current.close();
  const ctx = new PageContext(new URLSearchParams(queryString || ""));
  current = ctx;
  const main = clear(document.getElementById("main"));
  for (const link of document.querySelectorAll("nav a[data-section]")) {
    if (found && link.dataset.section === found[1]) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (!found) {
    main.append(h("h1", { tabindex: "-1" }, "Not found"),
      message(`There is no page at #${path}.`, "error"));
    return;
  }
  const [match, , render] = found;
  try {
    await render(main, ctx, ...match.slice(1).map(decodeURIComponent));
  } catch (error) {
    if (ctx.signal.aborted) return;
    main.append(message(`Could not load this page: ${error.message}`, "error"));
  }
  if (ctx.signal.aborted) return;
  const heading = main.querySelector("h1");
  if (heading) {
    heading.setAttribute("tabindex", "-1");
    document.title = `${heading.textContent} · tuneforge`;
    if (focus) heading.focus({ preventScroll: true });
  }
}

function setUpKeyForm() {
  const details = document.getElementById("key-settings");
  const input = document.getElementById("api-key");
  input.value = apiKey();
  document.getElementById("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setApiKey(input.value.trim());
    details.open = false;
    announce("API key saved.");
    route({ focus: true });
  });
  document.getElementById("key-clear").addEventListener("click", () => {
    input.value = "";
    setApiKey("");
    announce("API key forgotten.");
  });
  document.addEventListener("tf-needs-key", () => {
    if (!details.open) {
      details.open = true;
      input.focus();
    }
  });
}

setUpKeyForm();
window.addEventListener("hashchange", () => route({ focus: true }));
route({ focus: false });
