// Jobs, and one job: its tasks (with why pending ones wait), versions
// with diffs, deployments, scale, stop, and logs that follow.

import * as api from "../api.js";
import { h, fill, badge, table, diffLines, ago } from "../dom.js";

const PAGE = 50;

export async function mount(root, route, ctx) {
  if (route.id) return detail(root, route.id, ctx);
  const q = h("input", { type: "search", name: "q", placeholder: "name contains", value: route.params.get("q") || "" });
  const type = h("select", { name: "type" }, ["", "service", "batch", "system"].map((t) => h("option", { value: t }, t || "any")));
  let offset = 0;
  const list = h("div");
  const pager = h("div", { class: "pager" });
  const form = h("form", { class: "toolbar", role: "search" }, h("label", {}, "search", q), h("label", {}, "type", type), h("button", { type: "submit" }, "Filter"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    offset = 0;
    refresh();
  });
  type.addEventListener("change", () => {
    offset = 0;
    refresh();
  });
  fill(root, h("h1", {}, "Jobs"), form, list, pager);
  async function refresh() {
    const { body, response } = await api.get(`/v1/jobs${api.query({ q: q.value.trim(), type: type.value, limit: PAGE, offset })}`, { withResponse: true });
    const total = Number(response.headers.get("X-Total-Count") || body.length);
    fill(
      list,
      table(
        ["NAME", "TYPE", "COUNT#", "VERSION#", "PACKAGE", "UPDATED"],
        body.map((j) => [
          h("a", { href: `#/jobs/${api.seg(j.name)}` }, j.name),
          j.type,
          j.type === "system" ? "per node" : j.count,
          j.version,
          (j.spec.labels || {})["shoal.package.instance"] || "-",
          h("span", { title: j.updated_at }, ago(j.updated_at)),
        ]),
        "no job matches; run one from the panel below (run --name web --cmd \"…\")",
      ),
    );
    fill(
      pager,
      h("button", { type: "button", class: "ghost", disabled: offset === 0, onclick: () => ((offset = Math.max(0, offset - PAGE)), refresh()) }, "‹ previous"),
      h("span", {}, total ? `${offset + 1}–${offset + body.length} of ${total}` : "0 jobs"),
      h("button", { type: "button", class: "ghost", disabled: offset + PAGE >= total, onclick: () => ((offset += PAGE), refresh()) }, "next ›"),
    );
  }
  await refresh();
  return { refresh };
}

/** A spec as stable text: keys sorted, so that a diff shows changes only. */
function specText(spec) {
  const sort = (v) => (Array.isArray(v) ? v.map(sort) : v && typeof v === "object" ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, sort(v[k])])) : v);
  return JSON.stringify(sort(spec), null, 2);
}

function diffView(a, b) {
  const lines = diffLines(specText(a || {}), specText(b || {}));
  const changed = lines.map((l, i) => (l[0] !== " " ? i : -1)).filter((i) => i >= 0);
  const keep = new Set();
  for (const i of changed) for (let k = i - 2; k <= i + 2; k++) keep.add(k);
  return h(
    "pre",
    { class: "diff log" },
    lines.map((l, i) => (keep.has(i) ? h("div", { class: l[0] === "+" ? "add" : l[0] === "-" ? "del" : null }, `${l[0]} ${l[1]}`) : null)),
  );
}

function message(el, e) {
  el.textContent = e ? `error: ${e.message}` : "";
}

async function detail(root, name, ctx) {
  const head = h("div");
  const controls = h("div", { class: "toolbar" });
  const err = h("p", { class: "error", role: "alert" });
  const tasksEl = h("section", { "aria-labelledby": "tasks-h" });
  const depsEl = h("section", { "aria-labelledby": "deps-h" });
  const versionsEl = h("section", { "aria-labelledby": "versions-h" });
  const logsEl = h("section", { "aria-labelledby": "logs-h" });
  fill(root, head, controls, err, tasksEl, depsEl, logsEl, versionsEl);

  const count = h("input", { type: "number", min: 0, name: "count", size: 5, "aria-label": "tasks" });
  const scaleBtn = h("button", { type: "button" }, "Scale");
  const stopBtn = h("button", { type: "button", class: "danger" }, "Stop job");
  scaleBtn.addEventListener("click", async () => {
    try {
      await api.post(`/v1/jobs/${api.seg(name)}/scale`, { count: Number(count.value) });
      message(err, null);
      await refresh();
    } catch (e) {
      message(err, e);
    }
  });
  stopBtn.addEventListener("click", async () => {
    if (!confirm(`Stop job ${name} and all its tasks?`)) return;
    try {
      await api.del(`/v1/jobs/${api.seg(name)}`);
      ctx.navigate("#/jobs");
    } catch (e) {
      message(err, e);
    }
  });

  // Logs: one task at a time, followed by reading from the last offset.
  const logTask = h("select", { name: "task", "aria-label": "task" });
  const logStream = h("select", { name: "stream", "aria-label": "stream" }, h("option", { value: "" }, "stdout"), h("option", { value: "true" }, "stderr"));
  const followBox = h("input", { type: "checkbox", checked: true });
  const logOut = h("pre", { class: "log", "aria-live": "off" });
  let logOffset = 0;
  let logKey = "";
  let logTimer = null;
  async function readLog() {
    const key = `${logTask.value}|${logStream.value}`;
    if (key !== logKey) {
      logKey = key;
      logOffset = 0;
      logOut.textContent = "";
    }
    if (!logTask.value) return;
    try {
      for (let i = 0; i < 20; i++) {
        const piece = await api.get(`/v1/tasks/${api.seg(logTask.value)}/logs${api.query({ stderr: logStream.value, offset: logOffset })}`);
        if (`${logTask.value}|${logStream.value}` !== logKey) return;
        if (piece.next < logOffset) logOut.textContent = ""; // rotated
        logOut.append(piece.data);
        logOffset = piece.next;
        if (piece.next >= piece.size) break;
      }
      logOut.scrollTop = logOut.scrollHeight;
    } catch (e) {
      logOut.textContent = `error: ${e.message}`;
    }
  }
  logTask.addEventListener("change", readLog);
  logStream.addEventListener("change", readLog);
  logTimer = setInterval(() => {
    if (followBox.checked) readLog();
  }, 1000);
  fill(logsEl, h("h2", { id: "logs-h" }, "Logs"), h("div", { class: "toolbar" }, logTask, logStream, h("label", {}, followBox, " follow")), logOut);

  let firstTasks = true;
  async function refresh() {
    const [job, tasks, deps, versions] = await Promise.all([
      api.get(`/v1/jobs/${api.seg(name)}`),
      api.get(`/v1/jobs/${api.seg(name)}/tasks`),
      api.get(`/v1/jobs/${api.seg(name)}/deployments`),
      api.get(`/v1/jobs/${api.seg(name)}/versions`),
    ]);
    const spec = job.spec;
    const t = spec.task || {};
    fill(
      head,
      h("p", {}, h("a", { href: "#/jobs" }, "‹ jobs")),
      h("h1", {}, name, " ", job.deleted ? badge("stopped") : null),
      h(
        "p",
        { class: "muted" },
        `${job.type}, ${job.type === "system" ? "one task per node" : `${job.count} tasks`}, version ${job.version}, updated ${ago(job.updated_at)} · ${t.runtime || ""} ${t.image || t.command || ""} ${(t.args || []).join(" ")}`,
      ),
    );
    if (document.activeElement !== count) count.value = job.count;
    fill(controls, job.type === "system" ? null : h("label", {}, "tasks ", count), job.type === "system" ? null : scaleBtn, job.deleted ? null : stopBtn);
    const pending = tasks.filter((x) => x.pending && x.pending.length);
    fill(
      tasksEl,
      h("h2", { id: "tasks-h" }, `Tasks (${tasks.length})`),
      table(
        ["TASK", "NODE", "STATE", "HEALTH", "VERSION#", "RESTARTS#", "PORTS", "REASON"],
        tasks.map((x) => [
          x.task,
          x.node ? h("a", { href: `#/nodes/${api.seg(x.node)}` }, x.node_name || x.node.slice(0, 8)) : "-",
          badge(x.state, x.since ? `since ${x.since}` : null),
          badge(x.health, x.check || null),
          x.version ?? "-",
          x.restarts,
          Object.entries(x.ports || {}).map(([k, v]) => `${k}=${v.host}:${v.port}`).join(" "),
          x.reason || (x.check && x.health === "unhealthy" ? x.check : ""),
        ]),
        "no task",
      ),
      pending.length
        ? h(
            "div",
            { class: "card", role: "note" },
            h("h3", {}, "Why pending tasks wait"),
            pending.map((x) => h("div", {}, h("b", {}, x.task), h("ul", {}, x.pending.map((r) => h("li", {}, r))))),
          )
        : null,
    );
    const running = deps.find((d) => d.status === "running" || d.status === "paused");
    const act = (action) =>
      h(
        "button",
        {
          type: "button",
          class: action === "fail" ? "danger" : null,
          onclick: async () => {
            try {
              await api.post(`/v1/jobs/${api.seg(name)}/deployment/${action}`);
              message(err, null);
              await refresh();
            } catch (e) {
              message(err, e);
            }
          },
        },
        action,
      );
    fill(
      depsEl,
      h("h2", { id: "deps-h" }, "Deployments"),
      running ? h("div", { class: "toolbar" }, `v${running.version}: ${running.description} `, running.canaries && !running.promoted ? act("promote") : null, running.status === "paused" ? act("resume") : act("pause"), act("fail")) : null,
      table(
        ["VERSION#", "FROM#", "STATUS", "HEALTHY#", "STARTED", "DESCRIPTION"],
        deps.map((d) => [d.version, d.from_version, badge(d.status), `${d.healthy}/${d.desired}`, ago(d.started_at), d.description]),
        "no deployment yet (a change to a running service's task starts one)",
      ),
    );
    const newest = [...versions].reverse();
    fill(
      versionsEl,
      h("h2", { id: "versions-h" }, "Versions"),
      newest.map((v, i) => {
        // Specs are kept for some versions only; every version has its
        // changes, field by field (what `shoal job history` prints).
        const before = newest.slice(i + 1).find((x) => x.spec);
        const changes = (v.changes || []).filter((c) => c.field);
        return h(
          "details",
          { open: i === 0 },
          h("summary", {}, `version ${v.version}: ${v.op} ${ago(v.at)} by node ${(v.node || "").slice(0, 8)}`),
          v.op === "create" || !changes.length
            ? v.spec
              ? h("pre", { class: "log" }, specText(v.spec))
              : h("p", { class: "muted" }, "no change recorded")
            : v.spec && before
              ? diffView(before.spec, v.spec)
              : h("pre", { class: "diff log" }, changes.map((c) => h("div", { class: "add" }, `~ ${c.field}: ${c.old === undefined ? "(none)" : JSON.stringify(c.old)} -> ${c.new === undefined ? "(none)" : JSON.stringify(c.new)}`))),
        );
      }),
    );
    const names = tasks.filter((x) => x.node).map((x) => x.task);
    const chosen = logTask.value;
    fill(logTask, names.map((n) => h("option", { value: n, selected: n === chosen }, n)));
    if (firstTasks && names.length) {
      firstTasks = false;
      readLog();
    }
  }
  await refresh();
  return {
    refresh,
    unmount() {
      clearInterval(logTimer);
    },
  };
}
