// The REST API and its event stream, as the dashboard uses them. An API key (needed once
// the server has keys) is kept in this browser's local storage and sent as a bearer token.

const KEY_STORAGE = "tuneforge.apiKey";

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || null;
    this.param = error.param || null;
    // Field errors of a 422: [{param, message, type}].
    this.details = Array.isArray(error.details) ? error.details : [];
  }
}

export function apiKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(key) {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
}

export function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/** Call the API; resolves to the JSON body (null for 204), rejects with an ApiError. */
export async function api(path, { method = "GET", json, body, signal } = {}) {
  const headers = { Accept: "application/json", ...authHeaders() };
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  const response = await fetch(path, { method, headers, body, signal });
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = new ApiError(response.status, data);
    if (response.status === 401) document.dispatchEvent(new CustomEvent("tf-needs-key"));
    throw error;
  }
  return data;
}

/** Upload a file to /v1/files, reporting progress (0..1); resolves to the file object. */
export function uploadFile(file, onProgress) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    form.append("purpose", "fine-tune");
    form.append("file", file, file.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/files");
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener("load", () => {
      let data = null;
      try {
        data = JSON.parse(xhr.responseText);
      } catch {
        data = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(data);
      else reject(new ApiError(xhr.status, data));
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, { error: {
      message: "The upload did not reach the server." } })));
    xhr.send(form);
  });
}

/** Download an API resource (with the key, which a plain link cannot send). */
export async function download(path, filename) {
  const response = await fetch(path, { headers: authHeaders() });
  if (!response.ok) {
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    throw new ApiError(response.status, data);
  }
  const url = URL.createObjectURL(await response.blob());
  const link = Object.assign(document.createElement("a"), { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function parseEvent(block) {
  const event = { id: null, type: "message", data: "" };
  let hasData = false;
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "id") event.id = value;
    else if (field === "event") event.type = value;
    else if (field === "data") {
      event.data += (hasData ? "\n" : "") + value;
      hasData = true;
    }
  }
  if (!hasData) return null;
  try {
    event.data = JSON.parse(event.data);
  } catch {
    // not JSON: keep the text
  }
  return event;
}

/**
 * Follow a job's Server-Sent Events (`/v1/fine_tuning/jobs/{id}/events/stream`) from the
 * first, calling onEvent({id, type, data}) for each, until the `end` event or `signal`
 * aborts. Read with fetch rather than EventSource so that the API key goes along; after a
 * dropped connection it reconnects with Last-Event-ID, so no event is missed or repeated.
 */
export async function followEvents(jobId, onEvent, signal) {
  let lastId = null;
  const url = `/v1/fine_tuning/jobs/${encodeURIComponent(jobId)}/events/stream`;
  while (!signal.aborted) {
    try {
      const headers = { Accept: "text/event-stream", ...authHeaders() };
      if (lastId) headers["Last-Event-ID"] = lastId;
      const response = await fetch(url, { headers, signal });
      if (!response.ok) {
        let data = null;
        try {
          data = await response.json();
        } catch {
          data = null;
        }
        throw new ApiError(response.status, data);
      }
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replaceAll("\r\n", "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const event = parseEvent(buffer.slice(0, cut));
          buffer = buffer.slice(cut + 2);
          if (!event) continue;
          if (event.id) lastId = event.id;
          onEvent(event);
          if (event.type === "end") return;
        }
      }
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError && error.status >= 400 && error.status < 500) throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}
