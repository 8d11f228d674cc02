// Small DOM helpers. Text always goes through textContent: nothing the
// API returns is ever parsed as HTML.

/** `h("td", {class: "num"}, "3")`: an element with attributes and children. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    // Styles through the CSSOM: the page's CSP refuses style attributes.
    else if (k === "style") Object.assign(el.style, v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** The class of a state word: ok, warn, bad, info or none. */
export function tone(state) {
  switch (state) {
    case "alive": case "running": case "healthy": case "complete": case "ready": case "succeeded": case "deployed": case "successful": case "verified": case "fired": case "enabled": case "true":
      return "s-ok";
    case "suspect": case "unknown": case "degraded": case "draining": case "paused": case "skipped": case "stale": case "blocked":
      return "s-warn";
    case "failed": case "unhealthy": case "dead": case "lost": case "cancelled": case "missed":
      return "s-bad";
    case "pending": case "starting": case "running-deployment": case "installing": case "waiting": case "progressing":
      return "s-info";
    default:
      return "s-none";
  }
}

/** A state badge: word and symbol, never colour alone. */
export function badge(state, title) {
  return h("span", { class: `badge ${tone(state)}`, title }, state || "-");
}

/** A table of `rows` (arrays of cells); `head` names the columns, a name
 * ending in `#` is right-aligned (numbers). */
export function table(head, rows, empty = "none") {
  const cols = head.map((c) => ({ name: c.replace(/#$/, ""), num: c.endsWith("#") }));
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, cols.map((c) => h("th", { class: c.num ? "num" : null, scope: "col" }, c.name)))),
    h(
      "tbody",
      {},
      rows.length
        ? rows.map((r) => h("tr", {}, r.map((cell, i) => h("td", { class: cols[i] && cols[i].num ? "num" : null }, cell))))
        : h("tr", {}, h("td", { colspan: cols.length, class: "muted" }, empty)),
    ),
  );
}

export function fmtNum(x, digits = 1) {
  if (x === undefined || x === null || Number.isNaN(x)) return "-";
  return Number.isInteger(x) ? String(x) : x.toFixed(digits);
}

/** MiB as a readable size. */
export function fmtMb(mb) {
  if (mb === undefined || mb === null) return "-";
  if (mb >= 1024 * 1024) return `${(mb / 1024 / 1024).toFixed(1)} TiB`;
  if (mb >= 1024) return `${(mb / 1024).toFixed(1)} GiB`;
  return `${mb} MiB`;
}

/** "3 s ago" for an RFC 3339 time. */
export function ago(t, now = Date.now()) {
  if (!t) return "-";
  const ms = now - Date.parse(t);
  if (Number.isNaN(ms)) return t;
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

/**
 * A capacity bar: `alloc` (may be null: unknown) and `used` (may be null)
 * out of `total`, labelled with `fmt`.
 */
export function bar(label, total, alloc, used, fmt = fmtNum) {
  const pct = (x) => (total > 0 && x !== null && x !== undefined ? Math.min(100, (100 * x) / total) : 0);
  const free = alloc === null || alloc === undefined ? null : Math.max(0, total - alloc);
  const text = [
    alloc === null || alloc === undefined ? null : `${fmt(alloc)} allocated`,
    used === null || used === undefined ? null : `${fmt(used)} used`,
    free === null ? null : `${fmt(free)} free`,
    `of ${fmt(total)}`,
  ].filter(Boolean).join(" · ");
  return h(
    "div",
    { class: "barbox", role: "img", "aria-label": `${label}: ${text}`, dataset: { resource: label, total: total ?? "", alloc: alloc ?? "", used: used ?? "" } },
    h("div", { class: "bar-label" }, h("span", {}, label), h("span", {}, text)),
    h("div", { class: "bar" }, h("div", { class: "alloc", style: { width: `${pct(alloc)}%` } }), h("div", { class: "used", style: { width: `${pct(used)}%` } })),
  );
}

/** A line diff of two texts (longest common subsequence, for job versions). */
export function diffLines(a, b) {
  const x = a.split("\n");
  const y = b.split("\n");
  const n = x.length;
  const m = y.length;
  const lcs = Array.from({ length: n + 1 }, () => new Uint16Array(m + 1));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) lcs[i][j] = x[i] === y[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  const out = [];
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && x[i] === y[j]) {
      out.push([" ", x[i]]);
      i++;
      j++;
    } else if (j < m && (i === n || lcs[i][j + 1] >= lcs[i + 1][j])) {
      out.push(["+", y[j++]]);
    } else {
      out.push(["-", x[i++]]);
    }
  }
  return out;
}
