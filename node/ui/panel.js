// The command panel: shoal commands typed (or dropped) at the bottom of
// every page, run through the API, their output printed as the CLI would.

import * as api from "./api.js";
import { h } from "./dom.js";

let ctx = null;
let input = null;
let out = null;
let planEl = null;
const historyList = [];
let historyAt = 0;

/** Splits a command line into words as a POSIX shell would (quotes, `\`). */
export function words(line) {
  const out = [];
  let cur = "";
  let has = false;
  let quote = null;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quote === "'") {
      if (c === "'") quote = null;
      else cur += c;
    } else if (quote === '"') {
      if (c === '"') quote = null;
      else if (c === "\\" && i + 1 < line.length && '"\\$`'.includes(line[i + 1])) cur += line[++i];
      else cur += c;
    } else if (c === "'" || c === '"') {
      quote = c;
      has = true;
    } else if (c === "\\" && i + 1 < line.length) {
      cur += line[++i];
      has = true;
    } else if (/\s/.test(c)) {
      if (cur || has) out.push(cur);
      cur = "";
      has = false;
    } else {
      cur += c;
      has = true;
    }
  }
  if (quote) throw new UsageError(`unterminated ${quote === "'" ? "single" : "double"} quote`);
  if (cur || has) out.push(cur);
  return out;
}

class UsageError extends Error {}

/**
 * The commands: `args` are positionals (`?` optional), `flags` name →
 * "value" | "many" | "switch".
 */
const COMMANDS = {
  help: { args: ["command?"], about: "what the panel runs", run: help },
  status: { about: "the pooled resources, in total and per datacenter", run: status },
  nodes: { flags: { state: "value", dc: "value" }, about: "the nodes this node knows", run: nodesCmd },
  jobs: { about: "the jobs", run: jobsCmd },
  "job show": { args: ["job"], about: "one job's spec", run: jobShow },
  ps: { args: ["job?"], about: "tasks: where they run, their state, why they wait", run: ps },
  run: {
    flags: { name: "value", cmd: "value", type: "value", count: "value", image: "value", cpus: "value", "memory-mb": "value", env: "many", port: "many" },
    about: "submit a job from flags: run --name web --cmd \"python3 -m http.server\" --count 2",
    run: runCmd,
  },
  scale: { args: ["job", "count"], about: "change how many tasks a job runs", run: scale },
  stop: { args: ["job"], about: "stop a job: delete it and stop its tasks", run: stop },
  logs: { args: ["task"], flags: { stderr: "switch" }, about: "a task's output", run: logs },
  endpoints: { args: ["job"], flags: { all: "switch" }, about: "where a service's tasks are reached", run: endpoints },
  "deployment promote": { args: ["job"], about: "the canaries are good: replace the rest", run: (a) => deploymentAct(a, "promote") },
  "deployment fail": { args: ["job"], about: "end the deployment as failed", run: (a) => deploymentAct(a, "fail") },
  "deployment pause": { args: ["job"], about: "hold the deployment", run: (a) => deploymentAct(a, "pause") },
  "deployment resume": { args: ["job"], about: "go on with a paused deployment", run: (a) => deploymentAct(a, "resume") },
  "package search": { args: ["term?"], about: "the library's packages", run: pkgSearch },
  "package list": { flags: { all: "switch" }, about: "installations and their status", run: pkgList },
  "package install": {
    args: ["package"],
    flags: { instance: "value", version: "value", set: "many" },
    about: "install a package: package install redis --instance redis-2 --set replicas=2",
    run: pkgInstall,
  },
  "package upgrade": { args: ["instance"], flags: { version: "value", set: "many" }, about: "upgrade an installation", run: pkgUpgrade },
  "package rollback": { args: ["instance", "revision"], about: "back to an earlier revision", run: pkgRollback },
  "package uninstall": { args: ["instance"], about: "stop exactly an installation's jobs and remove it", run: pkgUninstall },
};

const GROUPS = ["job", "deployment", "package"];

/** The closest of `names` to `word`, if close (a typo): Jaro similarity
 * above 0.7, as the CLI (clap) suggests. */
function similar(word, names) {
  let best = null;
  let bestScore = 0.7;
  for (const n of names) {
    const score = jaro(word, n);
    if (score > bestScore) {
      best = n;
      bestScore = score;
    }
  }
  return best;
}

function jaro(a, b) {
  if (a === b) return 1;
  if (!a.length || !b.length) return 0;
  const range = Math.max(0, Math.floor(Math.max(a.length, b.length) / 2) - 1);
  const aHit = new Array(a.length).fill(false);
  const bHit = new Array(b.length).fill(false);
  let matches = 0;
  for (let i = 0; i < a.length; i++) {
    for (let j = Math.max(0, i - range); j < Math.min(b.length, i + range + 1); j++) {
      if (!bHit[j] && a[i] === b[j]) {
        aHit[i] = bHit[j] = true;
        matches++;
        break;
      }
    }
  }
  if (!matches) return 0;
  let t = 0;
  let k = 0;
  for (let i = 0; i < a.length; i++) {
    if (!aHit[i]) continue;
    while (!bHit[k]) k++;
    if (a[i] !== b[k]) t++;
    k++;
  }
  return (matches / a.length + matches / b.length + (matches - t / 2) / matches) / 3;
}

/** Parses a command line: {name, spec, args, flags}; throws UsageError. */
export function parse(line) {
  let w = words(line.trim());
  if (w[0] === "shoal") w = w.slice(1);
  if (!w.length) throw new UsageError("no command: type help for the list");
  let name = w[0];
  let rest = w.slice(1);
  if (GROUPS.includes(name)) {
    const subs = Object.keys(COMMANDS).filter((k) => k.startsWith(name + " ")).map((k) => k.split(" ")[1]);
    if (!rest.length) throw new UsageError(`'${name}' requires a subcommand: ${subs.join(", ")}`);
    if (!subs.includes(rest[0])) {
      const tip = similar(rest[0], subs);
      throw new UsageError(`unrecognized subcommand '${rest[0]}'${tip ? `\n\n  tip: a similar subcommand exists: '${tip}'` : ""}`);
    }
    name = `${name} ${rest[0]}`;
    rest = rest.slice(1);
  } else if (!COMMANDS[name]) {
    const tip = similar(name, Object.keys(COMMANDS).map((k) => k.split(" ")[0]));
    throw new UsageError(`unrecognized subcommand '${name}'${tip ? `\n\n  tip: a similar subcommand exists: '${tip}'` : ""}`);
  }
  const spec = COMMANDS[name];
  const flags = {};
  const args = [];
  for (let i = 0; i < rest.length; i++) {
    const word = rest[i];
    if (word.startsWith("--") && word.length > 2) {
      let [flag, value] = word.slice(2).split(/=(.*)/s);
      const kind = (spec.flags || {})[flag];
      if (!kind) {
        const tip = similar(flag, Object.keys(spec.flags || {}));
        throw new UsageError(`unexpected argument '--${flag}' found${tip ? `\n\n  tip: a similar argument exists: '--${tip}'` : ""}`);
      }
      if (kind === "switch") {
        flags[flag] = true;
        continue;
      }
      if (value === undefined) {
        if (i + 1 >= rest.length) throw new UsageError(`a value is required for '--${flag}' but none was supplied`);
        value = rest[++i];
      }
      if (kind === "many") (flags[flag] = flags[flag] || []).push(value);
      else flags[flag] = value;
    } else {
      args.push(word);
    }
  }
  const names = spec.args || [];
  const required = names.filter((a) => !a.endsWith("?"));
  if (args.length < required.length) {
    throw new UsageError(`the following required arguments were not provided:\n  <${required.slice(args.length).map((a) => a.toUpperCase()).join("> <")}>`);
  }
  if (args.length > names.length) throw new UsageError(`unexpected argument '${args[names.length]}' found`);
  const named = {};
  names.forEach((a, i) => (named[a.replace(/\?$/, "")] = args[i]));
  return { name, spec, args: named, flags };
}

/** Options from `--set NAME=VALUE`s: JSON when it parses, else a string;
 * always a string for an option the schema types as one. */
export function options(sets, schema) {
  const opts = {};
  for (const s of sets || []) {
    const eq = s.indexOf("=");
    if (eq <= 0) throw new UsageError(`--set ${JSON.stringify(s)}: write NAME=VALUE (replicas=3)`);
    const path = s.slice(0, eq).split(".");
    const raw = s.slice(eq + 1);
    let node = schema;
    for (const p of path) node = node && node.properties ? node.properties[p] : null;
    let value = raw;
    if (!(node && node.type === "string")) {
      try {
        value = JSON.parse(raw);
      } catch {
        value = raw;
      }
    }
    let at = opts;
    for (const p of path.slice(0, -1)) at = at[p] = typeof at[p] === "object" && at[p] ? at[p] : {};
    at[path[path.length - 1]] = value;
  }
  return opts;
}

/** Aligned columns, as the CLI prints tables. */
function columns(head, rows) {
  const all = [head, ...rows].map((r) => r.map((c) => (c === null || c === undefined ? "-" : String(c))));
  const widths = head.map((_, i) => Math.max(...all.map((r) => r[i].length)));
  return all.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join("  ")).join("\n");
}

async function help(a) {
  if (a.args.command) {
    const matches = Object.entries(COMMANDS).filter(([k]) => k === a.args.command || k.startsWith(a.args.command + " "));
    if (!matches.length) throw new UsageError(`unrecognized subcommand '${a.args.command}'`);
    return matches.map(([k, c]) => usage(k, c)).join("\n");
  }
  return "Commands (as the shoal CLI, run through this node's API):\n" + Object.entries(COMMANDS).map(([k, c]) => `  ${k.padEnd(20)} ${c.about}`).join("\n");
}

function usage(name, c) {
  const args = (c.args || []).map((x) => (x.endsWith("?") ? `[${x.slice(0, -1).toUpperCase()}]` : `<${x.toUpperCase()}>`));
  const flags = Object.entries(c.flags || {}).map(([f, k]) => (k === "switch" ? `[--${f}]` : `[--${f} ${f.toUpperCase()}${k === "many" ? "…" : ""}]`));
  return `Usage: ${name} ${[...args, ...flags].join(" ")}\n  ${c.about}`;
}

// Whether the answering node reaches a datacenter, as `shoal status` says it.
function reachCell(r) {
  if (!r) return "-";
  if (r.unreachable_secs !== null && r.unreachable_secs !== undefined) {
    return `unreachable for ${Math.round(r.unreachable_secs)}s (${r.failures} failures, nothing heard for ${Math.round(r.heard_secs_ago)}s)`;
  }
  return `reached ${Math.round(r.heard_secs_ago)}s ago`;
}

async function status() {
  const s = await api.get("/v1/status");
  const reach = s.reach || [];
  const row = (p, name) => [name, p.nodes, p.capacity ? p.capacity.cpus : p.cpus, p.capacity ? p.capacity.memory_mb : p.memory_mb, p.capacity ? p.capacity.gpus : p.gpus];
  // A datacenter with no alive node is still listed when this node has
  // heard from it: "0 nodes, unreachable" answers "where did east go".
  const dcs = [...new Set([...s.by_dc.map((p) => p.dc), ...reach.map((r) => r.dc)])].sort();
  const rows = dcs.map((dc) => [...row(s.by_dc.find((p) => p.dc === dc) || { nodes: 0, cpus: 0, memory_mb: 0, gpus: 0 }, dc), reachCell(reach.find((r) => r.dc === dc))]);
  return `members: ${s.members.alive} alive, ${s.members.suspect} suspect, ${s.members.failed} failed, ${s.members.left} left\n` + columns(["DC", "NODES", "CPUS", "MEMORY_MB", "GPUS", "FROM HERE"], [[...row(s.total, "total"), ""], ...rows]);
}

async function nodesCmd(a) {
  const list = await api.get(`/v1/nodes${api.query({ state: a.flags.state, dc: a.flags.dc })}`);
  return columns(["ID", "NAME", "STATE", "DC", "ZONE", "CPUS", "API"], list.map((n) => [n.id, n.name, n.state + (n.draining ? " (draining)" : ""), n.dc, n.zone || "-", n.capacity && n.capacity.cpus, n.api]));
}

async function jobsCmd() {
  const list = await api.get("/v1/jobs");
  return columns(["NAME", "TYPE", "COUNT", "VERSION", "UPDATED"], list.map((j) => [j.name, j.type, j.count, j.version, j.updated_at]));
}

async function jobShow(a) {
  const j = await api.get(`/v1/jobs/${api.seg(a.args.job)}`);
  return JSON.stringify(j.spec, null, 2);
}

async function ps(a) {
  const names = a.args.job ? [a.args.job] : (await api.get("/v1/jobs")).map((j) => j.name);
  const rows = [];
  const waits = [];
  for (const name of names) {
    for (const t of await api.get(`/v1/jobs/${api.seg(name)}/tasks`)) {
      rows.push([t.task, t.node_name || "-", t.state, t.health, t.restarts, t.reason || ""]);
      if (t.pending && t.pending.length) waits.push(`${t.task} is pending:\n  ${t.pending.join("\n  ")}`);
    }
  }
  return [columns(["TASK", "NODE", "STATE", "HEALTH", "RESTARTS", "REASON"], rows), ...waits].join("\n\n");
}

async function runCmd(a) {
  const f = a.flags;
  if (!f.name) throw new UsageError("the following required arguments were not provided:\n  --name <NAME>");
  if (!f.cmd && !f.image) throw new UsageError("the following required arguments were not provided:\n  --cmd <CMD> (or --image <IMAGE>)");
  const task = {};
  if (f.image) {
    task.runtime = "docker";
    task.image = f.image;
  }
  if (f.cmd) {
    const w = words(f.cmd);
    if (!w.length) throw new UsageError("--cmd is empty: give a program and its arguments");
    task.command = w[0];
    task.args = w.slice(1);
  }
  if (f.env) task.env = Object.fromEntries(f.env.map((e) => pair(e, "--env")));
  if (f.port) task.ports = f.port.map((p) => ({ name: p }));
  if (f.cpus || f["memory-mb"]) {
    task.resources = {};
    if (f.cpus) task.resources.cpus = number(f.cpus, "--cpus");
    if (f["memory-mb"]) task.resources.memory_mb = number(f["memory-mb"], "--memory-mb");
  }
  const job = { name: f.name, task };
  if (f.type) job.type = f.type;
  if (f.count !== undefined) job.count = number(f.count, "--count");
  const r = await api.post("/v1/jobs", job);
  return r.unchanged ? `job ${r.job.name} unchanged (version ${r.job.version})` : r.created ? `created job ${r.job.name} (version ${r.job.version})` : `updated job ${r.job.name}: version ${r.previous_version} -> ${r.job.version}\n  ${(r.changes || []).join("\n  ")}`;
}

function pair(s, flag) {
  const eq = s.indexOf("=");
  if (eq <= 0) throw new UsageError(`${flag} ${JSON.stringify(s)}: write KEY=VALUE`);
  return [s.slice(0, eq), s.slice(eq + 1)];
}

function number(s, flag) {
  const n = Number(s);
  if (s === "" || Number.isNaN(n)) throw new UsageError(`invalid value '${s}' for '${flag}': not a number`);
  return n;
}

async function scale(a) {
  const count = Number(a.args.count);
  if (!Number.isInteger(count) || count < 0) throw new UsageError(`invalid value '${a.args.count}' for '<COUNT>': invalid digit found in string`);
  const r = await api.post(`/v1/jobs/${api.seg(a.args.job)}/scale`, { count });
  return `scaled job ${r.job.name}: version ${r.previous_version} -> ${r.job.version}`;
}

async function stop(a) {
  const r = await api.del(`/v1/jobs/${api.seg(a.args.job)}`);
  return `stopped job ${r.job.name} (version ${r.job.version})`;
}

async function logs(a) {
  const piece = await api.get(`/v1/tasks/${api.seg(a.args.task)}/logs${api.query({ stderr: a.flags.stderr ? "true" : "" })}`);
  return piece.data || "(empty)";
}

async function endpoints(a) {
  const list = await api.get(`/v1/services/${api.seg(a.args.job)}${api.query({ all: a.flags.all ? "true" : "" })}`);
  const items = Array.isArray(list) ? list : list.endpoints || [];
  return columns(["TASK", "NODE", "HOST", "PORTS", "HEALTH"], items.map((e) => [e.task, e.node_name || e.node, e.host, Object.entries(e.ports || {}).map(([k, v]) => `${k}=${typeof v === "object" ? v.port : v}`).join(" "), e.health]));
}

async function deploymentAct(a, action) {
  await api.post(`/v1/jobs/${api.seg(a.args.job)}/deployment/${action}`);
  return `deployment of ${a.args.job}: ${action} asked`;
}

async function pkgSearch(a) {
  const list = await api.get(`/v1/packages${api.query({ q: a.args.term })}`);
  return columns(["NAME", "VERSION", "APP", "VERIFIED", "DESCRIPTION"], list.map((p) => [p.name, p.version, p.app_version, p.verified ? "yes" : "no", p.description]));
}

async function pkgList(a) {
  const list = await api.get(`/v1/installations${api.query({ all: a.flags.all ? "true" : "" })}`);
  return columns(["INSTANCE", "PACKAGE", "REVISION", "STATUS", "UPDATED"], list.map((i) => [i.instance, `${i.package}@${i.version}`, i.revision, i.status, i.updated_at]));
}

/** The body of an install or its plan from a parsed command. */
async function installBody(a) {
  const pkg = await api.get(`/v1/packages/${api.seg(a.args.package)}${api.query({ version: a.flags.version })}`);
  return {
    instance: a.flags.instance || a.args.package,
    package: a.args.package,
    version: a.flags.version || "",
    options: options(a.flags.set, pkg.options_schema),
  };
}

async function pkgInstall(a) {
  const body = await installBody(a);
  const i = await api.post("/v1/installations", body);
  return `installed ${i.instance}: ${i.package}@${i.version} from ${i.repository}, revision ${i.revision}\n  jobs: ${(i.job_status || []).map((j) => j.name).join(", ")}\n\nfollow it with \`package list\` or \`ps\``;
}

async function pkgUpgrade(a) {
  const cur = await api.get(`/v1/installations/${api.seg(a.args.instance)}`);
  const pkg = await api.get(`/v1/packages/${api.seg(cur.package)}${api.query({ version: a.flags.version })}`);
  const body = { version: a.flags.version || "" };
  if (a.flags.set) body.options = { ...cur.options, ...options(a.flags.set, pkg.options_schema) };
  const i = await api.post(`/v1/installations/${api.seg(a.args.instance)}/upgrade`, body);
  return `upgraded ${i.instance}: ${i.package}@${i.version}, revision ${i.revision}`;
}

async function pkgRollback(a) {
  const revision = Number(a.args.revision);
  if (!Number.isInteger(revision)) throw new UsageError(`invalid value '${a.args.revision}' for '<REVISION>'`);
  const i = await api.post(`/v1/installations/${api.seg(a.args.instance)}/rollback`, { revision });
  return `rolled ${i.instance} back: revision ${i.revision}`;
}

async function pkgUninstall(a) {
  await api.del(`/v1/installations/${api.seg(a.args.instance)}`);
  return `uninstalled ${a.args.instance}`;
}

function print(cls, text) {
  out.appendChild(h("div", { class: cls }, text));
  while (out.childNodes.length > 200) out.removeChild(out.firstChild);
  out.scrollTop = out.scrollHeight;
}

/** Runs a command line; prints it and its output (or its error). */
export async function run(line) {
  line = line.trim();
  if (!line) return;
  historyList.push(line);
  historyAt = historyList.length;
  print("cmd", `› ${line}`);
  planEl.textContent = "";
  try {
    const cmd = parse(line);
    const text = await cmd.spec.run(cmd);
    print("res", text);
    ctx.touched();
    return { ok: true, text };
  } catch (e) {
    // As the CLI prints it: `error: …`.
    const text = `error: ${e.message}`;
    print("err", text);
    return { ok: false, text, field: e.field || null };
  }
}

/** Writes a command into the input (a dropped tile, an Install button). */
export function write(line) {
  input.value = line;
  input.focus();
  input.setSelectionRange(line.length, line.length);
  plan();
}

let planTimer = null;
let planSeq = 0;
/** For `package install …`: what will be created, before Enter. */
function plan() {
  clearTimeout(planTimer);
  planTimer = setTimeout(async () => {
    const seq = ++planSeq;
    const line = input.value.trim();
    let cmd;
    try {
      cmd = parse(line);
    } catch {
      planEl.textContent = "";
      return;
    }
    if (cmd.name !== "package install") {
      planEl.textContent = "";
      return;
    }
    try {
      const body = await installBody(cmd);
      const r = await api.post(`/v1/packages/${api.seg(body.package)}/render`, { instance: body.instance, options: body.options, version: body.version || undefined });
      if (seq !== planSeq) return;
      const jobs = r.jobs.map((j) => {
        const res = (j.task && j.task.resources) || {};
        const n = j.type === "system" ? "one per node" : `${j.count ?? 1} × `;
        return `  + job ${j.name} (${j.type || "service"}, ${n}${j.type === "system" ? "" : `${res.cpus ?? "?"} CPU, ${res.memory_mb ?? "?"} MiB`})`;
      });
      planEl.className = "panel-plan";
      planEl.textContent = `Enter creates installation ${r.instance} (${r.package} from ${r.repository}):\n${jobs.join("\n")}`;
    } catch (e) {
      if (seq !== planSeq) return;
      planEl.className = "panel-plan error";
      planEl.textContent = `error: ${e.message}`;
    }
  }, 250);
}

export function init(c) {
  ctx = c;
  input = document.getElementById("cmd");
  out = document.getElementById("panel-out");
  planEl = document.getElementById("panel-plan");
  document.getElementById("panel-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const line = input.value;
    input.value = "";
    await run(line);
  });
  input.addEventListener("input", plan);
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "ArrowUp" && historyAt > 0) {
      input.value = historyList[--historyAt];
      ev.preventDefault();
    } else if (ev.key === "ArrowDown" && historyAt < historyList.length) {
      historyAt++;
      input.value = historyList[historyAt] || "";
      ev.preventDefault();
    }
  });
}

/** The panel, for drop targets. */
export function element() {
  return document.getElementById("panel");
}
