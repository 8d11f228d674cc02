// The public HTTP API, as the CLI uses it, and the one event stream.
//
// The token lives in sessionStorage (gone with the tab). The browser's
// EventSource cannot send an Authorization header, so the stream of
// /v1/events is read with fetch: the same text/event-stream, one
// connection per page, reconnecting with backoff.

const TOKEN_KEY = "shoal.token";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(t) {
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** An error the API answered: `{"error": {code, message, field}}`. */
export class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code || "http";
    this.field = e.field || null;
    this.extra = e;
  }
}

function headers(extra) {
  const h = { Accept: "application/json", ...extra };
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

/** Listeners told when a call is refused for want of a token. */
const unauthorized = new Set();
export function onUnauthorized(f) {
  unauthorized.add(f);
}

/**
 * Calls the API. Resolves to the parsed JSON body (null for an empty one);
 * `opts.withResponse` resolves to `{body, response}` (for headers such as
 * X-Total-Count). Rejects with an ApiError for an error status.
 */
export async function call(method, path, body, opts = {}) {
  const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
  if (body !== undefined) init.body = typeof body === "string" ? body : JSON.stringify(body);
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, { error: { code: "unreachable", message: `the node serving this page did not answer (${e.message}); is its agent running?` } });
  }
  const text = await response.text();
  let parsed = null;
  if (text) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = text;
    }
  }
  if (!response.ok) {
    if (response.status === 401) unauthorized.forEach((f) => f());
    throw new ApiError(response.status, typeof parsed === "object" ? parsed : { error: { message: String(parsed || response.statusText) } });
  }
  return opts.withResponse ? { body: parsed, response } : parsed;
}

export const get = (path, opts) => call("GET", path, undefined, opts);
export const post = (path, body) => call("POST", path, body === undefined ? {} : body);
export const del = (path) => call("DELETE", path);

/** A path segment (job names hold '/': `web/frontend` is one segment). */
export const seg = (s) => encodeURIComponent(s);

/** A query string of the defined, non-empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

/**
 * Follows /v1/events. `onEvent(name, data)` for each event; `onState(up)`
 * when the stream connects or drops. Returns a function that stops it.
 */
export function follow(onEvent, onState) {
  let stopped = false;
  let controller = null;
  let delay = 500;
  async function run() {
    while (!stopped) {
      controller = new AbortController();
      try {
        const response = await fetch("/v1/events", { headers: headers({ Accept: "text/event-stream" }), signal: controller.signal });
        if (response.status === 401) {
          unauthorized.forEach((f) => f());
          return;
        }
        if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
        onState(true);
        delay = 500;
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let end;
          while ((end = buf.indexOf("\n\n")) >= 0) {
            const block = buf.slice(0, end);
            buf = buf.slice(end + 2);
            let name = "message";
            const data = [];
            for (const line of block.split("\n")) {
              if (line.startsWith("event:")) name = line.slice(6).trim();
              else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
            }
            if (!data.length) continue; // keep-alive comments
            let parsed = null;
            try {
              parsed = JSON.parse(data.join("\n"));
            } catch {
              parsed = data.join("\n");
            }
            onEvent(name, parsed);
          }
        }
      } catch (e) {
        if (stopped) return;
      }
      onState(false);
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 10000);
    }
  }
  run();
  return () => {
    stopped = true;
    if (controller) controller.abort();
  };
}
