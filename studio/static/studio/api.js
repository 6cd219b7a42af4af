// The public API, as the page uses it: the key from sessionStorage in X-API-Key, errors as ApiError
// with the server's code and message, and the wait from Retry-After. No cookies are sent
// (credentials: "omit"), so an admin login in the same browser never acts for the page.

const KEY_STORAGE = "sam3studio.apiKey";

export class ApiError extends Error {
  constructor({ status, code, message, detail = null, requestId = null, retryAfter = null }) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.requestId = requestId;
    this.retryAfter = retryAfter; // seconds, or null
  }
}

/** Retry-After as seconds: delta-seconds or an HTTP date (RFC 9110); null when absent or unreadable. */
export function parseRetryAfter(value, now = Date.now()) {
  if (value === null || value === undefined || value === "") return null;
  if (/^\d+$/.test(value.trim())) return Number(value.trim());
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, Math.ceil((date - now) / 1000));
}

async function errorFrom(response) {
  let error = null;
  try {
    error = (await response.json()).error ?? null;
  } catch {
    // not our JSON error body (a proxy's page, say): fall back to the status line
  }
  return new ApiError({
    status: response.status,
    code: error?.code ?? `http_${response.status}`,
    message: error?.message ?? `The server answered ${response.status} ${response.statusText}.`.replace(" .", "."),
    detail: error?.detail ?? null,
    requestId: error?.request_id ?? response.headers.get("X-Request-ID"),
    retryAfter: parseRetryAfter(response.headers.get("Retry-After")),
  });
}

export class Api {
  constructor({ apiRoot, readyUrl }) {
    this.apiRoot = apiRoot; // e.g. "/api/v1/"
    this.readyUrl = readyUrl; // e.g. "/readyz"
    this.key = sessionStorage.getItem(KEY_STORAGE);
  }

  setKey(key) {
    this.key = key;
    sessionStorage.setItem(KEY_STORAGE, key);
  }

  forgetKey() {
    this.key = null;
    sessionStorage.removeItem(KEY_STORAGE);
  }

  url(path, query) {
    const url = new URL(this.apiRoot + path, window.location.origin);
    for (const [name, value] of Object.entries(query ?? {})) {
      if (value !== undefined && value !== null) url.searchParams.set(name, String(value));
    }
    return url.pathname + url.search;
  }

  async send(method, path, { json, form, query, signal } = {}) {
    const headers = { Accept: "application/json" };
    if (this.key) headers["X-API-Key"] = this.key;
    let body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    } else if (form !== undefined) {
      body = form; // the browser sets the multipart boundary
    }
    let response;
    try {
      response = await fetch(this.url(path, query), { method, headers, body, signal, credentials: "omit", cache: "no-store" });
    } catch (failure) {
      if (failure.name === "AbortError") throw failure;
      throw new ApiError({ status: 0, code: "network_error", message: `Cannot reach the server (${failure.message}).` });
    }
    if (!response.ok) throw await errorFrom(response);
    return response;
  }

  async json(method, path, options) {
    const response = await this.send(method, path, options);
    return response.status === 204 ? null : response.json();
  }

  get(path, query) {
    return this.json("GET", path, { query });
  }

  post(path, json) {
    return this.json("POST", path, { json: json ?? {} });
  }

  delete(path) {
    return this.json("DELETE", path);
  }

  async blob(path) {
    return (await this.send("GET", path)).blob();
  }

  upload(file) {
    const form = new FormData();
    form.append("file", file, file.name);
    return this.json("POST", "uploads/", { form });
  }

  /** /readyz needs no key; its body says why when the server is not ready (503). */
  async ready() {
    try {
      const response = await fetch(this.readyUrl, { credentials: "omit", cache: "no-store" });
      return await response.json();
    } catch {
      return null;
    }
  }
}

const TINY_WORKERS_WARNING =
  "The model workers run the tiny random-weight SAM3: its masks are meaningless. Put real weights at SAM3_CHECKPOINT.";

/** The tiny-model warning from /readyz: the embedded server's model, or any model worker's. */
export function tinyModelWarning(ready) {
  const model = ready?.checks?.model;
  if (!model) return null;
  if (model.model?.warning) return model.model.warning;
  if ((model.workers ?? []).some((worker) => worker.tiny_random)) return TINY_WORKERS_WARNING;
  return null;
}

/** Every page of a paginated list (limit/offset), up to `most` items. */
export async function listAll(api, path, { pageSize = 200, most = 2000, query = {} } = {}) {
  const items = [];
  for (let offset = 0; items.length < most; offset += pageSize) {
    const page = await api.get(path, { ...query, limit: pageSize, offset });
    items.push(...page.results);
    if (!page.next) break;
  }
  return items;
}
