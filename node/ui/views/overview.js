// Overview: the pool at a glance, from this node's replica.

import * as api from "../api.js";
import { h, fill, bar, fmtMb, fmtNum, badge, table, ago } from "../dom.js";

/** The capacity bars of one group of the summary. */
function capacity(g) {
  const c = g.capacity || {};
  // Allocation is an estimate from each node's gossiped free class (what
  // a node holds is not gossiped); usage is measured on the nodes and
  // summed by each zone's aggregator.
  const a = g.allocated || g.allocated_estimate || {};
  const u = g.used_nodes ? g.used || {} : {};
  const gpus = c.gpus ? bar("GPUs", c.gpus, a.gpus, u.gpus) : null;
  return [
    bar("CPUs", c.cpus || 0, a.cpus, u.cpus),
    bar("Memory", c.memory_mb || 0, a.memory_mb, u.memory_mb, fmtMb),
    bar("Disk", c.disk_mb || 0, a.disk_mb, u.disk_mb, fmtMb),
    gpus,
  ];
}

function plural(n, word) {
  return `${fmtNum(n)} ${word}${n === 1 ? "" : "s"}`;
}

function counts(obj, order) {
  const keys = order.filter((k) => k in obj).concat(Object.keys(obj).filter((k) => !order.includes(k)));
  return h("div", { class: "counts" }, keys.map((k) => h("div", {}, h("b", {}, fmtNum(obj[k])), badge(k))));
}

function eventLine(e) {
  const d = e.data || {};
  const what = d.task || d.name || d.job || d.id || "";
  const detail = d.health || d.state || (d.count !== undefined ? `count ${d.count}` : "") || (d.version ? `v${d.version}` : "");
  return h("div", {}, `${new Date(e.at).toLocaleTimeString()}  ${e.name}  ${what}  ${detail}`);
}

function isFailure(e) {
  const d = e.data || {};
  return d.health === "unhealthy" || d.state === "failed" || d.state === "suspect" || e.name === "task.failed" || d.status === "failed";
}

export async function mount(root, route, ctx) {
  const pool = h("section", { class: "card", id: "pool", "aria-labelledby": "pool-h" });
  const states = h("section", { class: "card", id: "states", "aria-labelledby": "nodes-h" });
  const jobs = h("section", { class: "card", "aria-labelledby": "jobs-h" });
  const deps = h("section", { class: "card", "aria-labelledby": "deps-h" });
  const groups = h("section", { "aria-labelledby": "groups-h" });
  const failures = h("section", { class: "card", "aria-labelledby": "fail-h" });
  const feed = h("section", { class: "card", "aria-labelledby": "feed-h" });
  fill(
    root,
    h("h1", {}, "The pool"),
    h("p", { class: "legend muted" }, h("span", { class: "k-alloc" }, "allocated (estimated)"), " ", h("span", { class: "k-used" }, "used (measured)")),
    h("div", { class: "grid" }, pool, states, jobs, deps),
    groups,
    h("div", { class: "two" }, failures, feed),
  );

  async function refresh() {
    const [s, ds] = await Promise.all([api.get("/v1/summary?group_by=dc,zone"), api.get("/v1/deployments")]);
    const local = s.local || {};
    fill(
      pool,
      h("h2", { id: "pool-h" }, `Cluster · ${fmtNum(s.total.nodes)} live nodes`),
      capacity(s.total),
      h(
        "p",
        { class: "muted" },
        "allocated: estimated from each node's free capacity class (within 1/16 of its scarcest resource); ",
        h("span", { id: "used-nodes" }, `used: measured on ${fmtNum(s.total.used_nodes || 0)} of ${plural(s.total.nodes, "node")} (sampled every 10 s, reported when it moves and every 30 s); `),
        local.capacity ? `this node: ${fmtNum(local.allocated.cpus)} of ${fmtNum(local.capacity.cpus)} CPUs, ${fmtMb(local.allocated.memory_mb)} of ${fmtMb(local.capacity.memory_mb)} held by its tasks` : "",
      ),
    );
    fill(
      states,
      h("h2", { id: "nodes-h" }, "Nodes by state"),
      counts(s.total.members || {}, ["alive", "suspect", "failed", "left"]),
      h("p", { class: "muted" }, `${fmtNum(s.total.draining || 0)} draining · member list last changed ${s.members_changed_at ? ago(s.members_changed_at) : "never since start"}`),
    );
    const j = s.jobs || {};
    fill(
      jobs,
      h("h2", { id: "jobs-h" }, `Jobs · ${fmtNum(j.total || 0)}`),
      j.total ? [counts({ ...(j.by_type || {}) }, ["service", "batch", "system"]), counts({ ...(j.by_status || {}) }, ["active", "complete", "failed"])] : h("p", { class: "muted" }, "none yet: run one from the panel below, or install a package from the library"),
    );
    const running = (ds || []).filter((d) => d.status === "running" || d.status === "paused");
    fill(
      deps,
      h("h2", { id: "deps-h" }, "Deployments in progress"),
      running.length
        ? table(["JOB", "VERSION#", "HEALTHY#", "STATUS"], running.map((d) => [h("a", { href: `#/jobs/${api.seg(d.job)}` }, d.job), d.version, `${d.healthy}/${d.desired}`, badge(d.status, d.description)]))
        : h("p", { class: "muted" }, "none"),
    );
    const byDc = s.groups || [];
    fill(
      groups,
      h("h2", { id: "groups-h" }, "By datacenter and zone"),
      h(
        "div",
        { class: "grid" },
        byDc.map((dc) =>
          h(
            "div",
            { class: "card" },
            h("h3", {}, `${dc.dc || "(no datacenter)"} · ${plural(dc.nodes, "node")}`),
            capacity(dc),
            (dc.zones || []).length > 1 || ((dc.zones || [])[0] || {}).zone
              ? h("details", {}, h("summary", {}, plural(dc.zones.length, "zone")), dc.zones.map((z) => h("div", {}, h("h4", {}, `${z.zone || "(no zone)"} · ${plural(z.nodes, "node")}`), capacity(z))))
              : null,
          ),
        ),
      ),
    );
    const bad = ctx.feed().filter(isFailure).slice(0, 20);
    const failedDeps = (ds || []).filter((d) => d.status === "failed").slice(0, 5);
    fill(
      failures,
      h("h2", { id: "fail-h" }, "Recent failures"),
      !bad.length && !failedDeps.length ? h("p", { class: "muted" }, "none seen since this page opened") : null,
      failedDeps.map((d) => h("div", {}, badge("failed"), " deployment of ", h("a", { href: `#/jobs/${api.seg(d.job)}` }, d.job), ` v${d.version}: ${d.description} (${ago(d.updated_at)})`)),
      h("div", { class: "feed" }, bad.map(eventLine)),
    );
    fill(feed, h("h2", { id: "feed-h" }, "Live events"), h("div", { class: "feed", "aria-live": "off" }, ctx.feed().slice(0, 100).map(eventLine)));
  }
  await refresh();
  return { refresh };
}
