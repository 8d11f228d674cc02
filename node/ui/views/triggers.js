// Triggers: each one's schedule, next slot and last outcome; one
// trigger's "why (not) fired" (the explain report: every condition's
// value, age, source and result, recent slots) and its runs.

import * as api from "../api.js";
import { h, fill, badge, table, ago } from "../dom.js";

function schedule(spec) {
  if (spec.every) return `every ${spec.every}`;
  if (spec.cron) return `cron ${spec.cron}${spec.timezone ? ` (${spec.timezone})` : ""}`;
  if (spec.after && spec.after.length) return `after ${spec.after.map((a) => `${a.job} (${a.on || "success"})`).join(", ")}`;
  return `when conditions hold (cooldown ${spec.cooldown || "-"})`;
}

function outcomeWord(o) {
  return o.outcome || "-";
}

/** Why a slot ended as it did: the reason recorded, or the run's result. */
function why(o) {
  const r = o.reason ?? o.result ?? o.error ?? "";
  return typeof r === "string" ? r : JSON.stringify(r);
}

async function act(name, action, ctx) {
  await api.post(`/v1/triggers/${api.seg(name)}/${action}`);
  ctx.touched();
}

function actions(t, ctx) {
  return h(
    "span",
    { class: "actions" },
    h("button", { type: "button", class: "ghost", onclick: () => act(t.name, "run", ctx) }, "Run now"),
    t.paused
      ? h("button", { type: "button", class: "ghost", onclick: () => act(t.name, "resume", ctx) }, "Resume")
      : h("button", { type: "button", class: "ghost", onclick: () => act(t.name, "pause", ctx) }, "Pause"),
  );
}

export async function mount(root, route, ctx) {
  if (route.id) return detail(root, route.id, ctx);
  const list = h("div");
  fill(
    root,
    h("h1", {}, "Triggers"),
    h("p", { class: "muted" }, "Work run on a schedule or when conditions hold, evaluated by the node that owns each trigger's key. Create one with shoal trigger create FILE."),
    list,
  );
  async function refresh() {
    const triggers = await api.get("/v1/triggers");
    fill(
      list,
      table(
        ["NAME", "SCHEDULE", "STATE", "NEXT SLOT (UTC)", "LAST OUTCOME", ""],
        triggers.map((t) => {
          const last = (t.recent || [])[t.recent.length - 1];
          return [
            h("a", { href: `#/triggers/${api.seg(t.name)}` }, t.name),
            schedule(t.spec || {}),
            badge(t.paused ? "paused" : "enabled"),
            t.next_slot ? h("span", { title: t.next_slot.id }, t.next_slot.at) : "-",
            last ? h("span", {}, badge(outcomeWord(last)), " ", why(last)) : "-",
            actions(t, ctx),
          ];
        }),
        "no trigger yet",
      ),
    );
  }
  await refresh();
  return { refresh };
}

async function detail(root, name, ctx) {
  const body = h("div");
  fill(root, h("p", {}, h("a", { href: "#/triggers" }, "‹ triggers")), h("h1", {}, name), body);
  async function refresh() {
    const [t, e, runs] = await Promise.all([
      api.get(`/v1/triggers/${api.seg(name)}`),
      api.get(`/v1/triggers/${api.seg(name)}/explain`),
      api.get(`/v1/runs${api.query({ trigger: name })}`),
    ]);
    const next = e.next_slot;
    fill(
      body,
      h("p", {}, badge(t.paused ? "paused" : "enabled"), " ", schedule(t.spec || {}), " ", actions(t, ctx)),
      h(
        "section",
        { class: "card", "aria-labelledby": "why-h" },
        h("h2", { id: "why-h" }, "Why it fires, or not"),
        h(
          "p",
          {},
          e.evaluated_at ? `last evaluated ${ago(e.evaluated_at)} by node ${e.evaluated_by || "?"}` : "not evaluated yet",
          " · ",
          next ? `next slot ${next.local} (${next.utc})` : "no next slot",
          e.pending ? ` · waiting on ${e.pending.slot ? e.pending.slot.id : "a slot"}${e.pending.waiting ? `: ${typeof e.pending.waiting === "string" ? e.pending.waiting : JSON.stringify(e.pending.waiting)}` : ""}` : "",
        ),
        table(
          ["SIGNAL", "TEST", "VALUE", "AGE", "SOURCE", "RESULT", "HELD"],
          (e.conditions || []).map((c) => [
            c.signal,
            c.test,
            c.error ? h("span", { class: "field-error" }, c.error) : c.value ?? "missing",
            c.read_at ? h("span", { title: c.read_at }, ago(c.read_at)) : "-",
            c.source || "-",
            badge(c.stale ? "stale" : c.result ? "true" : "false"),
            c.held_ms ? `${(c.held_ms / 1000).toFixed(1)} s` : "-",
          ]),
          `no conditions: it fires at every slot (${e.match_mode || "all"})`,
        ),
      ),
      h("h2", {}, "Recent slots"),
      table(
        ["SLOT", "OUTCOME", "WHY", "RUN", "DECIDED"],
        (e.recent || [])
          .slice()
          .reverse()
          .map((o) => [o.slot, badge(outcomeWord(o)), why(o), o.run_id || "-", o.decided_at ? h("span", { title: o.decided_at }, ago(o.decided_at)) : "-"]),
        "no slot handled yet",
      ),
      h("h2", {}, "Runs"),
      table(
        ["RUN", "STATUS", "STARTED", "JOB", "DONE#", "FAILED#"],
        runs
          .slice()
          .reverse()
          .map((r) => [r.id, badge(r.status), h("span", { title: r.started }, ago(r.started)), h("a", { href: `#/jobs/${api.seg(r.job)}` }, r.job), r.tasks_complete, r.tasks_failed]),
        "no run yet",
      ),
    );
  }
  await refresh();
  return { refresh };
}
