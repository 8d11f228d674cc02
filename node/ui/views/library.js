// The library: package tiles to drag onto the command panel (or install
// with their button), a package's page with an install form generated
// from its options schema next to a raw JSON editor, and installations.

import * as api from "../api.js";
import { h, fill, badge, table, ago } from "../dom.js";
import { element as panelElement } from "../panel.js";

/** An instance name for a new installation of `pkg` not taken yet. */
function freeInstance(pkg, installs) {
  const taken = new Set(installs.filter((i) => !i.deleted).map((i) => i.instance));
  if (!taken.has(pkg)) return pkg;
  for (let n = 2; ; n++) if (!taken.has(`${pkg}-${n}`)) return `${pkg}-${n}`;
}

/**
 * Drags `tile` with pointer events (mouse, touch and pen alike; WebDriver
 * actions too); dropped on the command panel, `onDrop()` runs.
 */
function draggable(tile, label, onDrop) {
  let ghost = null;
  let start = null;
  const panel = panelElement();
  const over = (x, y) => {
    const r = panel.getBoundingClientRect();
    return x >= r.left && x <= r.right && y >= r.top && y <= r.bottom;
  };
  tile.addEventListener("pointerdown", (ev) => {
    if (ev.button !== 0 || ev.target.closest("button, a")) return;
    start = { x: ev.clientX, y: ev.clientY, id: ev.pointerId };
    tile.setPointerCapture(ev.pointerId);
  });
  tile.addEventListener("pointermove", (ev) => {
    if (!start || ev.pointerId !== start.id) return;
    if (!ghost && Math.hypot(ev.clientX - start.x, ev.clientY - start.y) < 5) return;
    if (!ghost) {
      ghost = h("div", { class: "drag-ghost", "aria-hidden": "true" }, label);
      document.body.appendChild(ghost);
    }
    ghost.style.left = `${ev.clientX + 8}px`;
    ghost.style.top = `${ev.clientY + 8}px`;
    panel.classList.toggle("drop-ready", over(ev.clientX, ev.clientY));
  });
  const end = (ev, dropped) => {
    if (!start || ev.pointerId !== start.id) return;
    if (ghost && dropped && over(ev.clientX, ev.clientY)) onDrop();
    if (ghost) ghost.remove();
    ghost = null;
    start = null;
    panel.classList.remove("drop-ready");
  };
  tile.addEventListener("pointerup", (ev) => end(ev, true));
  tile.addEventListener("pointercancel", (ev) => end(ev, false));
}

export async function mount(root, route, ctx) {
  if (route.id) return pkgPage(root, route.id, ctx);
  const q = h("input", { type: "search", name: "q", placeholder: "redis, database, spark…", value: route.params.get("q") || "", "aria-label": "search the library" });
  const tiles = h("div", { class: "tiles", role: "list" });
  const installsEl = h("section", { "aria-labelledby": "inst-h" });
  fill(
    root,
    h("h1", {}, "Library"),
    h("p", { class: "muted" }, "Drag a package onto the command panel below to write its install command, or press its Install button; the panel shows what it will create, and Enter installs it."),
    h("div", { class: "toolbar" }, q),
    tiles,
    installsEl,
  );
  let timer = null;
  q.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(refresh, 200);
  });
  async function refresh() {
    const [pkgs, installs] = await Promise.all([api.get(`/v1/packages${api.query({ q: q.value.trim() })}`), api.get("/v1/installations")]);
    const command = (p) => `package install ${p.name} --instance ${freeInstance(p.name, installs)}`;
    fill(
      tiles,
      pkgs.length
        ? pkgs.map((p) => {
            const tile = h(
              "article",
              { class: "tile", role: "listitem", "data-package": p.name, "aria-label": `${p.name} ${p.version}` },
              h("h3", {}, h("a", { href: `#/library/${api.seg(p.name)}` }, p.name), " ", h("span", { class: "muted" }, p.app_version || "")),
              h("div", {}, p.description),
              h("div", { class: "tags" }, (p.tags || []).join(" · "), " · ", p.verified ? badge("verified") : h("span", { title: "linted and rendered, not run by a test" }, "unverified"), ` · ${p.repository}`),
              h(
                "div",
                { class: "actions" },
                h("button", { type: "button", "data-install": p.name, "aria-label": `Install ${p.name}: write its command in the panel`, onclick: () => ctx.writeCommand(command(p)) }, "Install…"),
                h("a", { href: `#/library/${api.seg(p.name)}` }, "details"),
              ),
            );
            draggable(tile, `📦 ${p.name}`, () => ctx.writeCommand(command(p)));
            return tile;
          })
        : h("p", { class: "muted" }, "no package matches"),
    );
    fill(installsEl, h("h2", { id: "inst-h" }, "Installations"), installTable(installs, ctx, refresh));
  }
  await refresh();
  return { refresh };
}

function installTable(installs, ctx, after) {
  return table(
    ["INSTANCE", "PACKAGE", "REVISION#", "STATUS", "JOBS", "UPDATED", ""],
    installs.map((i) => [
      i.instance,
      h("a", { href: `#/library/${api.seg(i.package)}` }, `${i.package}@${i.version}`),
      i.revision,
      badge(i.status),
      h("span", {}, (i.job_status || []).map((j) => [h("a", { href: `#/jobs/${api.seg(j.name)}` }, j.name), ` ${j.healthy}/${j.desired} `])),
      ago(i.updated_at),
      h(
        "span",
        { class: "actions" },
        h("button", { type: "button", class: "ghost", onclick: () => ctx.writeCommand(`package upgrade ${i.instance}`) }, "Upgrade…"),
        " ",
        h(
          "button",
          {
            type: "button",
            class: "danger",
            onclick: async () => {
              if (!confirm(`Uninstall ${i.instance}? Its jobs stop.`)) return;
              await ctx.runCommand(`package uninstall ${i.instance}`);
              await after();
            },
          },
          "Uninstall",
        ),
      ),
    ]),
    "nothing installed yet",
  );
}

/** One form field per option of the schema (nested objects flattened). */
function fields(schema, defaults, prefix = "") {
  const out = [];
  for (const [name, s] of Object.entries((schema && schema.properties) || {})) {
    const path = prefix ? `${prefix}.${name}` : name;
    if (s.type === "object" && s.properties) {
      out.push(...fields(s, (defaults || {})[name] || {}, path));
      continue;
    }
    const dflt = (defaults || {})[name];
    const id = `opt-${path.replace(/\W/g, "_")}`;
    let input;
    if (Array.isArray(s.enum)) input = h("select", { id, name: path }, s.enum.map((v) => h("option", { value: JSON.stringify(v), selected: v === dflt }, String(v))));
    else if (s.type === "boolean") input = h("input", { id, name: path, type: "checkbox", checked: !!dflt });
    else if (s.type === "integer" || s.type === "number") input = h("input", { id, name: path, type: "number", step: s.type === "integer" ? 1 : "any", value: dflt ?? "" });
    else if (s.type === "string") input = h("input", { id, name: path, value: dflt ?? "" });
    else input = h("input", { id, name: path, value: dflt === undefined ? "" : JSON.stringify(dflt), "data-json": "true" });
    input.dataset.kind = s.type || "json";
    input.dataset.default = JSON.stringify(dflt ?? null);
    out.push({ path, input, schema: s, error: h("span", { class: "field-error", id: `${id}-err`, role: "alert" }) });
    input.setAttribute("aria-describedby", `${id}-err`);
  }
  return out;
}

/** The options the form says, only those that differ from the defaults. */
function formOptions(list) {
  const opts = {};
  for (const f of list) {
    const el = f.input;
    let v;
    if (el.dataset.kind === "boolean") v = el.checked;
    else if (el.tagName === "SELECT") v = JSON.parse(el.value);
    else if (el.dataset.kind === "integer" || el.dataset.kind === "number") v = el.value === "" ? null : Number(el.value);
    else if (el.dataset.json) {
      try {
        v = el.value === "" ? null : JSON.parse(el.value);
      } catch {
        v = el.value;
      }
    } else v = el.value;
    if (JSON.stringify(v) === el.dataset.default) continue;
    let at = opts;
    const parts = f.path.split(".");
    for (const p of parts.slice(0, -1)) at = at[p] = at[p] || {};
    at[parts[parts.length - 1]] = v;
  }
  return opts;
}

/** Sets every field from `opts` (what differs from the defaults): the
 * raw JSON editor's way back into the form. */
function setForm(list, opts) {
  for (const f of list) {
    let v = opts;
    for (const p of f.path.split(".")) v = v && typeof v === "object" ? v[p] : undefined;
    if (v === undefined) v = JSON.parse(f.input.dataset.default);
    const el = f.input;
    if (el.dataset.kind === "boolean") el.checked = !!v;
    else if (el.tagName === "SELECT") el.value = JSON.stringify(v);
    else if (el.dataset.json) el.value = v === null ? "" : JSON.stringify(v);
    else el.value = v ?? "";
  }
}

async function pkgPage(root, name, ctx) {
  const [pkg, versions, installs] = await Promise.all([api.get(`/v1/packages/${api.seg(name)}`), api.get(`/v1/packages/${api.seg(name)}/versions`), api.get("/v1/installations")]);
  const list = fields(pkg.options_schema, pkg.defaults);
  const instance = h("input", { id: "instance", name: "instance", value: freeInstance(pkg.name, installs), required: true, "aria-describedby": "instance-err" });
  const instanceErr = h("span", { class: "field-error", id: "instance-err", role: "alert" });
  const raw = h("textarea", { id: "raw-options", name: "options", "aria-label": "options as JSON", spellcheck: "false" }, "{}");
  const rawErr = h("span", { class: "field-error", id: "raw-err", role: "alert" });
  const plan = h("pre", { class: "log", "aria-live": "polite" });
  const result = h("p", { role: "status" });
  const syncRaw = () => (raw.value = JSON.stringify(formOptions(list), null, 2));
  for (const f of list) f.input.addEventListener("change", syncRaw);
  syncRaw();
  // And back: valid JSON typed in the editor shows in the form at once.
  raw.addEventListener("input", () => {
    try {
      const v = JSON.parse(raw.value || "{}");
      if (v && typeof v === "object" && !Array.isArray(v)) {
        setForm(list, v);
        rawErr.textContent = "";
      }
    } catch {
      // Half-typed JSON: the form keeps what it had until it parses.
    }
  });

  const clearErrors = () => {
    for (const f of list) f.error.textContent = "";
    instanceErr.textContent = "";
    rawErr.textContent = "";
  };
  /** Puts an API error next to the field at fault (`options/replicas`). */
  const showError = (e) => {
    const field = (e.field || "").replace(/^options\/?/, "").replace(/\//g, ".");
    const problems = (e.extra && e.extra.problems) || [];
    let placed = false;
    if (e.field === "instance") {
      instanceErr.textContent = `error: ${e.message}`;
      placed = true;
    }
    for (const p of problems.length ? problems : [{ path: field ? `/${field.replace(/\./g, "/")}` : "", message: e.message }]) {
      const f = list.find((x) => `/${x.path.replace(/\./g, "/")}` === p.path);
      if (f) {
        f.error.textContent = `error: ${e.message}`;
        placed = true;
      }
    }
    if (!placed) rawErr.textContent = `error: ${e.message}`;
  };
  const options = () => {
    try {
      const v = JSON.parse(raw.value || "{}");
      if (typeof v !== "object" || Array.isArray(v) || v === null) throw new Error("options must be a JSON object of option names and values");
      return v;
    } catch (e) {
      rawErr.textContent = `error: options: ${e.message}`;
      return null;
    }
  };
  const doPlan = async () => {
    clearErrors();
    const opts = options();
    if (!opts) return;
    try {
      const r = await api.post(`/v1/packages/${api.seg(name)}/render`, { instance: instance.value, options: opts });
      plan.textContent = `creates installation ${r.instance} (${r.package}):\n` + r.jobs.map((j) => `  + job ${j.name} (${j.type || "service"}, ${j.type === "system" ? "one per node" : `${j.count ?? 1} tasks`})`).join("\n") + (r.notes ? `\n\n${r.notes}` : "");
    } catch (e) {
      plan.textContent = "";
      showError(e);
    }
  };
  const doInstall = async (ev) => {
    ev.preventDefault();
    clearErrors();
    const opts = options();
    if (!opts) return;
    try {
      const i = await api.post("/v1/installations", { instance: instance.value, package: name, version: versionSel.value, options: opts });
      result.textContent = `installed ${i.instance}: ${i.package}@${i.version}, revision ${i.revision}`;
      ctx.touched();
    } catch (e) {
      showError(e);
    }
  };
  const versionSel = h("select", { id: "version", name: "version" }, versions.map((v) => h("option", { value: v.version || v, selected: (v.version || v) === pkg.version }, `${v.version || v}${v.repository ? ` (${v.repository})` : ""}`)));
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "install-h" },
    h("h2", { id: "install-h" }, "Install"),
    h(
      "div",
      { class: "two" },
      h(
        "div",
        { class: "form-grid" },
        h("label", { for: "instance" }, "instance"),
        h("span", {}, instance, instanceErr),
        h("label", { for: "version" }, "version"),
        versionSel,
        list.map((f) => [h("label", { for: f.input.id }, f.path), h("span", {}, f.input, f.schema.description ? h("span", { class: "desc" }, f.schema.description) : null, f.error)]),
      ),
      h("div", {}, h("label", { for: "raw-options" }, "options (JSON, only what differs from the defaults)"), raw, rawErr),
    ),
    h("div", { class: "toolbar" }, h("button", { type: "button", class: "ghost", onclick: doPlan }, "Plan"), h("button", { type: "submit" }, "Install"), h("button", { type: "button", class: "ghost", onclick: () => ctx.writeCommand(`package install ${name} --instance ${instance.value}`) }, "To the panel")),
    plan,
    result,
  );
  form.addEventListener("submit", doInstall);
  const mine = h("section", { "aria-labelledby": "mine-h" });
  fill(
    root,
    h("p", {}, h("a", { href: "#/library" }, "‹ library")),
    h("h1", {}, pkg.name, " ", h("span", { class: "muted" }, `${pkg.version} (app ${pkg.app_version || "-"})`), " ", pkg.verified ? badge("verified") : null),
    h("p", {}, pkg.description),
    h("p", { class: "muted" }, `from ${pkg.repository} · maintainer ${pkg.maintainer || "-"} · license ${pkg.license || "-"} · tags ${(pkg.tags || []).join(", ")}${pkg.requires && pkg.requires.length ? ` · nodes need ${pkg.requires.join(", ")}` : ""}`),
    form,
    mine,
  );
  async function refresh() {
    const all = await api.get("/v1/installations");
    fill(mine, h("h2", { id: "mine-h" }, `Installations of ${name}`), installTable(all.filter((i) => i.package === name), ctx, refresh));
  }
  await refresh();
  return { refresh };
}
