// The UI's frame: login, the router, the header, the one event stream,
// and live updates handed to the view on show, coalesced.

import * as api from "./api.js";
import { h, fill, ago } from "./dom.js";
import * as panel from "./panel.js";
import * as overview from "./views/overview.js";
import * as nodes from "./views/nodes.js";
import * as jobs from "./views/jobs.js";
import * as library from "./views/library.js";
import * as triggers from "./views/triggers.js";

const VIEWS = { overview, nodes, jobs, library, triggers };

/** Events gathered since the view was last told, and when it was. */
let pending = [];
let current = null; // { name, route, handle }
let lastFresh = 0;
let self = null;
const feed = []; // the latest events, for the overview's feed

/** `#/jobs/web%2Ffrontend?x=1` -> {view: "jobs", id: "web/frontend", params}. */
export function parseRoute(hash) {
  const raw = (hash || "").replace(/^#/, "");
  const [path, q] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const view = VIEWS[parts[0]] ? parts[0] : "overview";
  return { view, id: parts[1] || null, params: new URLSearchParams(q || "") };
}

export function navigate(hash) {
  if (location.hash === hash) show();
  else location.hash = hash;
}

/** Tells the view it may have changed (called by views after an action). */
export function touched() {
  flush(true);
}

const ctx = {
  navigate,
  touched,
  self: () => self,
  feed: () => feed,
  runCommand: (cmd) => panel.run(cmd),
  writeCommand: (cmd) => panel.write(cmd),
  fresh: () => {
    lastFresh = Date.now();
    header();
  },
};

async function show() {
  const route = parseRoute(location.hash);
  if (current && current.handle && current.handle.unmount) current.handle.unmount();
  for (const a of document.querySelectorAll(".top nav a")) {
    if (a.dataset.view === route.view) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const root = document.getElementById("view");
  fill(root, h("p", { class: "muted" }, "loading…"));
  const mine = { name: route.view, route, handle: null };
  current = mine;
  try {
    const handle = await VIEWS[route.view].mount(root, route, ctx);
    if (current === mine) mine.handle = handle;
    else if (handle && handle.unmount) handle.unmount();
    ctx.fresh();
  } catch (e) {
    if (current === mine) fill(root, h("p", { class: "error", role: "alert" }, `error: ${e.message}`));
  }
}

let flushing = false;
async function flush(force) {
  if (flushing || !current || !current.handle) return;
  if (!force && !pending.length) return;
  const batch = pending;
  pending = [];
  flushing = true;
  try {
    await current.handle.refresh(batch);
    ctx.fresh();
  } catch (e) {
    console.warn("refresh failed:", e.message);
  } finally {
    flushing = false;
  }
}

function header() {
  const served = document.getElementById("served");
  if (!self) return;
  const age = lastFresh ? Math.round((Date.now() - lastFresh) / 1000) : null;
  served.textContent = `served by ${self.name || self.id} (${self.dc || "?"}${self.zone ? "/" + self.zone : ""}) · view ${age === null ? "…" : age < 2 ? "live" : age + " s old"}`;
  served.title = `node ${self.id}, up since ${self.first_seen} (${ago(self.first_seen)}); data on this page comes from this node's replica`;
}

function live(up) {
  const el = document.getElementById("live");
  el.textContent = up ? "live" : "reconnecting";
  el.className = `live ${up ? "on" : "off"}`;
}

function onEvent(name, data) {
  const e = { name, data, at: Date.now() };
  pending.push(e);
  feed.unshift(e);
  feed.length = Math.min(feed.length, 200);
}

function theme() {
  const saved = localStorage.getItem("shoal.theme");
  if (saved) document.documentElement.dataset.theme = saved;
  document.getElementById("theme").addEventListener("click", () => {
    const dark = document.documentElement.dataset.theme
      ? document.documentElement.dataset.theme === "dark"
      : matchMedia("(prefers-color-scheme: dark)").matches;
    const next = dark ? "light" : "dark";
    document.documentElement.dataset.theme = next;
    localStorage.setItem("shoal.theme", next);
  });
}

/** `#token=T` logs in with T and drops it from the address bar. */
function tokenFromFragment() {
  const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (!m) return;
  api.setToken(decodeURIComponent(m[1]));
  history.replaceState(null, "", location.pathname + location.search + "#/");
}

function askLogin(message) {
  const form = document.getElementById("login");
  document.getElementById("view").hidden = true;
  form.hidden = false;
  document.getElementById("login-error").textContent = message || "";
  document.getElementById("login-token").focus();
}

let stopEvents = null;
async function start() {
  try {
    self = await api.get("/v1/self");
  } catch (e) {
    if (e.status === 401) {
      askLogin(api.token() ? e.message : "");
      return;
    }
    fill(document.getElementById("view"), h("p", { class: "error", role: "alert" }, `error: ${e.message}`));
    return;
  }
  document.getElementById("login").hidden = true;
  document.getElementById("view").hidden = false;
  document.getElementById("logout").hidden = !api.token();
  header();
  if (!stopEvents) stopEvents = api.follow(onEvent, live);
  await show();
}

function boot() {
  tokenFromFragment();
  theme();
  panel.init(ctx);
  // A page left for another keeps no stream open: the browser would hold
  // the connection (the back/forward cache keeps such pages), and after a
  // few reloads every connection it allows to this host would be taken,
  // stalling the next page's requests. Back to the page, it follows again.
  window.addEventListener("pagehide", () => {
    if (stopEvents) stopEvents();
    stopEvents = null;
  });
  window.addEventListener("pageshow", (ev) => {
    if (ev.persisted && !stopEvents && self) {
      stopEvents = api.follow(onEvent, live);
      flush(true);
    }
  });
  api.onUnauthorized(() => {
    if (stopEvents) stopEvents();
    stopEvents = null;
    askLogin("the token was refused: log in again");
  });
  document.getElementById("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    api.setToken(document.getElementById("login-token").value.trim());
    start();
  });
  document.getElementById("logout").addEventListener("click", () => {
    api.setToken("");
    location.reload();
  });
  addEventListener("hashchange", () => {
    tokenFromFragment();
    show();
  });
  // Live updates: events are coalesced and handed over at most every
  // 500 ms; what events do not carry (task states on other nodes) is read
  // again every 5 s.
  setInterval(() => flush(false), 500);
  setInterval(() => flush(true), 5000);
  setInterval(header, 1000);
  start();
}

boot();
