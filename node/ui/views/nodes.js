// Nodes: filtered and paged by the server, a heat map by datacenter and
// zone, and one node with its tasks.

import * as api from "../api.js";
import { h, fill, badge, table, fmtMb, fmtNum, ago } from "../dom.js";

const PAGE = 50;
/** Below this many nodes the heat map draws one cell per node. */
const PER_NODE_CELLS = 3000;

export async function mount(root, route, ctx) {
  if (route.id) return detail(root, route.id, ctx);
  const p = route.params;
  const state = h("select", { name: "state" }, ["", "alive", "suspect", "failed", "left"].map((s) => h("option", { value: s, selected: p.get("state") === s }, s || "any")));
  const dc = h("input", { name: "dc", value: p.get("dc") || "", size: 8 });
  const q = h("input", { name: "q", value: p.get("q") || "", placeholder: "name or id", type: "search" });
  let offset = Number(p.get("offset") || 0);
  const heat = h("canvas", { class: "heat", height: 160, role: "img", "aria-label": "heat map of nodes" });
  const heatNote = h("p", { class: "muted" });
  const list = h("div");
  const pager = h("div", { class: "pager" });
  const form = h(
    "form",
    { class: "toolbar", role: "search" },
    h("label", {}, "state", state),
    h("label", {}, "datacenter", dc),
    h("label", {}, "search", q),
    h("button", { type: "submit" }, "Filter"),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    offset = 0;
    refresh();
  });
  state.addEventListener("change", () => {
    offset = 0;
    refresh();
  });
  fill(root, h("h1", {}, "Nodes"), h("section", { "aria-label": "heat map" }, heat, heatNote), form, list, pager);

  async function refresh() {
    const params = { state: state.value, dc: dc.value.trim(), q: q.value.trim(), limit: PAGE, offset };
    const [{ body, response }, summary] = await Promise.all([api.get(`/v1/nodes${api.query(params)}`, { withResponse: true }), api.get("/v1/summary?group_by=dc,zone")]);
    const total = Number(response.headers.get("X-Total-Count") || body.length);
    fill(
      list,
      table(
        ["NAME", "ID", "STATE", "DC", "ZONE", "CPUS#", "MEMORY#", "FREE#", "VERSION"],
        body.map((n) => [
          h("a", { href: `#/nodes/${api.seg(n.id)}` }, n.name || n.id),
          h("span", { class: "mono" }, n.id.slice(0, 8)),
          h("span", {}, badge(n.state, `since ${n.state_since}`), n.draining ? [" ", badge("draining")] : null),
          n.dc,
          n.zone || "-",
          n.capacity ? fmtNum(n.capacity.cpus) : "-",
          n.capacity ? fmtMb(n.capacity.memory_mb) : "-",
          n.free_class === null || n.free_class === undefined ? "-" : `${n.free_class}/8`,
          n.version || "-",
        ]),
        "no node matches",
      ),
    );
    fill(
      pager,
      h("button", { type: "button", class: "ghost", disabled: offset === 0, onclick: () => ((offset = Math.max(0, offset - PAGE)), refresh()) }, "‹ previous"),
      h("span", {}, total ? `${offset + 1}–${offset + body.length} of ${total}` : "0 nodes"),
      h("button", { type: "button", class: "ghost", disabled: offset + PAGE >= total, onclick: () => ((offset += PAGE), refresh()) }, "next ›"),
    );
    await drawHeat(heat, heatNote, summary);
  }
  await refresh();
  return { refresh };
}

/** Free capacity class (0 full … 8 idle) as a colour, with the state. */
function cellColour(n, dark) {
  if (n.state === "failed" || n.state === "left") return dark ? "#555" : "#bbb";
  if (n.state === "suspect") return "#d4a72c";
  const used = 1 - (n.free_class ?? 8) / 8;
  // Blue (idle) to orange (full): distinguishable without red/green.
  const r = Math.round(60 + used * 180);
  const g = Math.round(120 + used * 20);
  const b = Math.round(220 - used * 180);
  return `rgb(${r},${g},${b})`;
}

async function drawHeat(canvas, note, summary) {
  const total = summary.known ?? summary.total.nodes ?? 0;
  const dark = getComputedStyle(document.documentElement).colorScheme === "dark";
  const width = canvas.clientWidth || 800;
  canvas.width = width;
  const cx = canvas.getContext("2d");
  const fg = getComputedStyle(document.body).color;
  if (total <= PER_NODE_CELLS) {
    const all = await api.get("/v1/nodes");
    const groups = new Map();
    for (const n of all) {
      const k = `${n.dc || "?"} / ${n.zone || "-"}`;
      if (!groups.has(k)) groups.set(k, []);
      groups.get(k).push(n);
    }
    const cell = total > 1000 ? 6 : total > 200 ? 10 : 16;
    const perRow = Math.max(1, Math.floor((width - 160) / (cell + 2)));
    let height = 8;
    for (const nodes of groups.values()) height += Math.max(1, Math.ceil(nodes.length / perRow)) * (cell + 2) + 8;
    canvas.height = Math.max(40, height);
    cx.clearRect(0, 0, canvas.width, canvas.height);
    cx.font = "12px system-ui";
    let y = 8;
    for (const [k, nodes] of [...groups.entries()].sort()) {
      cx.fillStyle = fg;
      cx.fillText(k, 4, y + cell - 2);
      nodes.forEach((n, i) => {
        cx.fillStyle = cellColour(n, dark);
        const x = 160 + (i % perRow) * (cell + 2);
        const yy = y + Math.floor(i / perRow) * (cell + 2);
        cx.fillRect(x, yy, cell, cell);
        if (n.state !== "alive") {
          // A cross on nodes that are not alive: not colour alone.
          cx.strokeStyle = fg;
          cx.beginPath();
          cx.moveTo(x, yy);
          cx.lineTo(x + cell, yy + cell);
          cx.stroke();
        }
      });
      y += Math.max(1, Math.ceil(nodes.length / perRow)) * (cell + 2) + 8;
    }
    note.textContent = `one cell per node, grouped by datacenter / zone; blue idle → orange full (free capacity in eighths); crossed: not alive. ${total} nodes.`;
  } else {
    const zones = [];
    for (const dc of summary.groups || []) for (const z of dc.zones || []) zones.push({ name: `${dc.dc}/${z.zone || "-"}`, z });
    const cols = Math.max(1, Math.floor(width / 130));
    canvas.height = Math.ceil(zones.length / cols) * 44 + 8;
    cx.clearRect(0, 0, canvas.width, canvas.height);
    cx.font = "11px system-ui";
    zones.forEach(({ name, z }, i) => {
      const x = (i % cols) * 130 + 4;
      const y = Math.floor(i / cols) * 44 + 4;
      const c = z.capacity || {};
      const a = z.allocated_estimate || {};
      const frac = c.cpus ? (a.cpus || 0) / c.cpus : 0;
      cx.fillStyle = cellColour({ state: "alive", free_class: Math.round(8 * (1 - frac)) }, dark);
      cx.fillRect(x, y, 124, 38);
      cx.fillStyle = "#fff";
      cx.fillText(name, x + 4, y + 14);
      cx.fillText(`${z.nodes} nodes · ${Math.round(frac * 100)}% CPU`, x + 4, y + 30);
    });
    note.textContent = `${total} nodes: one cell per zone (per-node cells below ${PER_NODE_CELLS} nodes); colour is the share of CPUs allocated.`;
  }
}

async function detail(root, key, ctx) {
  const head = h("div");
  const tasks = h("section", { "aria-labelledby": "tasks-h" });
  fill(root, head, tasks);
  async function refresh() {
    const n = await api.get(`/v1/nodes/${api.seg(key)}`);
    const drain = h(
      "button",
      {
        type: "button",
        class: n.draining ? "ghost" : "danger",
        onclick: async () => {
          await api.post(`/v1/nodes/${api.seg(n.id)}/drain`, { drain: !n.draining });
          await refresh();
        },
      },
      n.draining ? "Stop draining" : "Drain",
    );
    fill(
      head,
      h("p", {}, h("a", { href: "#/nodes" }, "‹ nodes")),
      h("h1", {}, n.name || n.id, " ", badge(n.state), n.draining ? [" ", badge("draining")] : null),
      table(
        ["", ""],
        [
          ["id", h("span", { class: "mono" }, n.id)],
          ["datacenter / zone / region", `${n.dc} / ${n.zone || "-"} / ${n.region}`],
          ["capacity", n.capacity ? `${fmtNum(n.capacity.cpus)} CPUs, ${fmtMb(n.capacity.memory_mb)}, ${fmtMb(n.capacity.disk_mb)} disk, ${n.capacity.gpus} GPUs` : "-"],
          ["free", n.free_class === null || n.free_class === undefined ? "-" : `${n.free_class}/8 of its scarcest resource`],
          ["addresses", `gossip ${n.gossip}, rpc ${n.rpc}, api ${n.api}`],
          ["runtimes", (n.runtimes || []).map((r) => `${r.name} ${r.version}`).join(", ")],
          ["labels", Object.entries(n.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ") || "-"],
          ["agent", `${n.version || "-"}, isolation ${n.isolation || "-"}`],
          ["state since", `${n.state_since} (${ago(n.state_since)})`],
        ],
      ),
      h("p", {}, drain),
    );
    let list = [];
    let error = null;
    try {
      list = await api.get(`/v1/nodes/${api.seg(n.id)}/tasks`);
    } catch (e) {
      error = e.message;
    }
    fill(
      tasks,
      h("h2", { id: "tasks-h" }, "Tasks on this node"),
      error ? h("p", { class: "error" }, `error: ${error}`) : null,
      table(
        ["TASK", "JOB", "STATE", "HEALTH", "PORTS"],
        list.map((t) => [t.task, h("a", { href: `#/jobs/${api.seg(t.job)}` }, t.job), badge(t.state), badge(t.health), Object.entries(t.ports || {}).map(([k, v]) => `${k}=${v.port ?? v}`).join(" ")]),
        "no task runs here",
      ),
    );
  }
  await refresh();
  return { refresh };
}
