// Baton's operator page. Plain JavaScript, no build step, nothing from the
// internet. Every value from etcd (task payloads, errors, names) is shown
// with text nodes only: this file never assigns innerHTML or outerHTML.
"use strict";

const STATES = ["PENDING", "DELAYED", "CLAIMED", "DONE", "DEAD", "CANCELLED"];
let session = { csrf: "", actions: false, actions_off: "" };
let current = { view: "", args: {}, topics: () => false };
let refreshTimer = null;

// el builds an element: attrs are set as properties or attributes; children
// are nodes or strings (added as text nodes, never parsed as HTML).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k === "style") e.style.cssText = v; // CSSOM: allowed by the page's CSP, unlike a style attribute
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    e.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
  return e;
}

function link(href, text) { return el("a", { href }, text); }
function stateTag(s) { return el("span", { class: "state " + s }, s); }

function fmtTime(ms) { return ms ? new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "–"; }
function fmtAge(ms) {
  if (!ms) return "–";
  let s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 90) return s + "s";
  if (s < 5400) return Math.round(s / 60) + "m";
  if (s < 172800) return Math.round(s / 3600) + "h";
  return Math.round(s / 86400) + "d";
}
function fmtDur(sec) {
  if (!sec) return "–";
  sec = Math.round(sec);
  if (sec < 90) return sec + "s";
  if (sec < 5400) return Math.round(sec / 60) + "m";
  return (sec / 3600).toFixed(1) + "h";
}
function pretty(raw) {
  if (raw === undefined || raw === null) return "";
  try { return JSON.stringify(typeof raw === "string" ? JSON.parse(raw) : raw, null, 2); } catch (e) { return String(raw); }
}

function notice(text, isError) {
  const n = document.getElementById("notice");
  n.textContent = text;
  n.className = isError ? "error" : "";
  n.hidden = !text;
}

class HTTPError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, opts) {
  const r = await fetch("api/" + path, Object.assign({ credentials: "same-origin", cache: "no-store" }, opts || {}));
  let body = {};
  try { body = await r.json(); } catch (e) { /* not JSON */ }
  if (!r.ok) throw new HTTPError(r.status, body.error || r.statusText);
  return body;
}

async function act(path, label) {
  try {
    const res = await api(path, { method: "POST", headers: { "Content-Type": "application/json", "X-Baton-CSRF": session.csrf }, body: "{}" });
    notice(res.message || label + ": done", false);
    scheduleRefresh(0);
  } catch (e) {
    notice(label + ": " + e.message, true);
  }
}

function actionButton(label, path, cls, testid) {
  const b = el("button", { class: cls || "", "data-testid": testid, title: session.actions ? "" : "actions are off: " + session.actions_off }, label);
  b.disabled = !session.actions;
  b.addEventListener("click", () => { b.disabled = true; act(path, label); });
  return b;
}

// progress draws a bar of a Counts object, one segment per state.
function progress(c) {
  const bar = el("div", { class: "bar", role: "img" });
  const total = c.total || 0;
  for (const s of ["DONE", "DEAD", "CANCELLED", "CLAIMED", "DELAYED", "PENDING"]) {
    const n = c[s.toLowerCase()] || 0;
    if (n > 0 && total > 0) bar.appendChild(el("span", { class: s, style: "width:" + (100 * n / total) + "%", title: s + " " + n }));
  }
  const finished = (c.done || 0) + (c.dead || 0) + (c.cancelled || 0);
  const pct = total ? Math.floor(100 * finished / total) : 0;
  bar.setAttribute("aria-label", pct + "% finished");
  return { bar, pct, finished, total };
}

function legend() {
  return el("div", { class: "legend" }, STATES.map(s => el("span", {}, el("i", { class: "bar-" + s, style: "background:var(--" + s.toLowerCase() + ")" }), s.toLowerCase())));
}

function table(headers, rows, empty) {
  if (!rows.length) return el("p", { class: "muted" }, empty || "Nothing here.");
  return el("table", {},
    el("thead", {}, el("tr", {}, headers.map(h => el("th", { class: h.startsWith("#") ? "num" : "" }, h.replace(/^#/, ""))))),
    el("tbody", {}, rows.map(r => el("tr", {}, r.map((c, i) => el("td", { class: headers[i].startsWith("#") ? "num" : "" }, c))))));
}

function render(...nodes) {
  const main = document.getElementById("main");
  main.replaceChildren(...nodes.flat(Infinity).filter(n => n !== null && n !== undefined && n !== false).map(n => typeof n === "string" ? document.createTextNode(n) : n));
}

// ---- views ----

async function viewBatches(args) {
  const d = await api("batches?limit=50" + (args.after ? "&after=" + encodeURIComponent(args.after) : ""));
  const rows = d.batches.map(b => {
    const p = progress(b.counts);
    return [link("#/batch/" + encodeURIComponent(b.name), b.name), p.bar, p.pct + "%", b.counts.total, b.counts.done, b.counts.dead,
      b.per_second ? b.per_second.toFixed(1) + "/s" : "–", fmtDur(b.eta_seconds)];
  });
  render(el("h1", {}, "Batches"),
    d.ready ? null : el("p", { class: "muted" }, "Counting tasks (first read after start)…"),
    legend(),
    table(["Batch", "Progress", "#Finished", "#Tasks", "#Done", "#Dead", "#Throughput", "#ETA"], rows, "No batches (submit with baton submit --batch)."),
    el("div", { class: "pager" }, el("span", { class: "muted" }, d.total + " batches"),
      args.after ? link("#/batches", "first page") : null,
      d.next ? link("#/batches?after=" + encodeURIComponent(d.next), "next page") : null));
  return t => t === "batches";
}

async function viewBatch(args) {
  const name = args.name;
  const q = "batch?name=" + encodeURIComponent(name) + "&limit=50" + (args.state ? "&state=" + args.state : "") + (args.after ? "&after=" + encodeURIComponent(args.after) : "");
  const d = await api(q);
  const b = d.batch, c = b.counts, p = progress(c);
  const base = "#/batch/" + encodeURIComponent(name);
  const filters = el("div", { class: "filters" }, link(base, "all"),
    ["PENDING", "CLAIMED", "FAILED", "DONE", "DEAD", "CANCELLED"].map(s => link(base + "?state=" + s, s.toLowerCase())));
  for (const a of filters.querySelectorAll("a")) {
    if ((a.textContent === "all" && !args.state) || a.textContent === (args.state || "").toLowerCase()) a.className = "active";
  }
  const rows = d.page.tasks.map(t => [link("#/task/" + encodeURIComponent(t.id), t.id), stateTag(t.status.state),
    (t.status.attempt || 0) + "/" + (t.status.max_attempts || 0), t.status.holder || "–", fmtAge(t.status.updated_ms)]);
  const counts = el("dl", { class: "kv" },
    STATES.map(s => [el("dt", {}, s.toLowerCase()), el("dd", { "data-testid": "count-" + s }, String(c[s.toLowerCase()] || 0))]),
    el("dt", {}, "total"), el("dd", {}, String(c.total)),
    el("dt", {}, "throughput"), el("dd", {}, b.per_second ? b.per_second.toFixed(2) + " tasks/s (last minute)" : "–"),
    el("dt", {}, "ETA"), el("dd", {}, fmtDur(b.eta_seconds)));
  const pin = d.pin ? [el("h2", {}, "Pinned config: " + d.pin.name + " at revision " + d.pin.revision + " (pinned " + fmtTime(d.pin.pinned_ms) + ")"),
    el("pre", { "data-testid": "pin" }, pretty(d.pin.document))] : el("p", { class: "muted" }, "No config pinned with this batch.");
  render(el("h1", {}, "Batch ", el("span", { "data-testid": "batch-name" }, name)),
    el("div", { class: "big" }, p.bar),
    el("p", {}, el("strong", { id: "batch-progress", "data-testid": "batch-progress" }, p.pct + "%"), " finished — " + p.finished + " of " + p.total + " tasks"),
    legend(), counts, pin,
    el("h2", {}, "Tasks"), filters,
    table(["Task", "State", "Attempts", "Holder", "Since"], rows, args.state ? "No " + args.state + " tasks on this page." : "No tasks."),
    el("div", { class: "pager" },
      el("span", { class: "muted" }, d.page.scanned + " members read"),
      args.after ? link(base + (args.state ? "?state=" + args.state : ""), "first page") : null,
      d.page.next ? link(base + "?" + (args.state ? "state=" + args.state + "&" : "") + "after=" + encodeURIComponent(d.page.next), "next page") : null));
  return t => t === "batch:" + name;
}

async function viewTask(args) {
  const id = args.id;
  const d = await api("task?id=" + encodeURIComponent(id));
  const t = d.task, st = t.status;
  const kv = [["id", t.id], ["queue", st.queue], ["state", stateTag(st.state)], ["attempts", (st.attempt || 0) + " of " + st.max_attempts],
    ["priority", String(st.priority || 0)], ["batch", st.batch ? link("#/batch/" + encodeURIComponent(st.batch), st.batch) : "–"],
    ["created", fmtTime(t.created_ms)], ["updated", fmtTime(st.updated_ms)]];
  if (st.affinity) kv.push(["affinity", st.affinity]);
  if (st.require) kv.push(["require", Object.entries(st.require).map(([k, v]) => k + "=" + v).join(", ")]);
  if (st.state === "CLAIMED") {
    kv.push(["holder", (st.holder || "–") + (st.session ? " (session " + st.session + ")" : "")], ["fencing token", String(t.token || "–")],
      ["deadline", fmtTime(st.deadline_ms)]);
    if (t.cancelling) kv.push(["cancel", "requested; waiting for the worker"]);
  }
  const actions = el("p", {});
  if (st.state === "DEAD" || st.state === "CANCELLED") actions.appendChild(actionButton("Retry", "tasks/" + encodeURIComponent(id) + "/retry", "primary", "retry"));
  if (["PENDING", "FAILED", "CLAIMED"].includes(st.state) && !t.cancelling) actions.appendChild(actionButton("Cancel", "tasks/" + encodeURIComponent(id) + "/cancel", "danger", "cancel"));
  if (!session.actions && actions.childNodes.length) actions.appendChild(el("span", { class: "muted" }, " actions are off: " + session.actions_off));
  const err = t.last_error ? [el("h2", {}, "Last error (attempt " + t.last_error.attempt + (t.last_error.permanent ? ", permanent" : "") + ", " + fmtTime(t.last_error.at_ms) + ")"),
    el("pre", { class: "error", id: "task-error", "data-testid": "task-error" }, t.last_error.error)] : null;
  const hist = (d.history || []).map(h => [String(h.revision), stateTag(h.status.state), String(h.status.attempt || 0),
    h.status.state === "CLAIMED" ? (h.status.holder || "–") + " (token " + h.revision + ")" : "–",
    fmtTime(h.status.updated_ms), h.error ? el("pre", { class: "error" }, h.error.error) : ""]);
  render(el("h1", {}, "Task ", el("span", { "data-testid": "task-id" }, id), " ", el("span", { "data-testid": "task-state" }, stateTag(st.state))),
    el("dl", { class: "kv" }, kv.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
    actions, err,
    el("h2", {}, "Payload"), el("pre", { "data-testid": "payload" }, pretty(t.payload)),
    t.result ? [el("h2", {}, "Result"), el("pre", { "data-testid": "result" }, pretty(t.result))] : null,
    el("h2", {}, "History"),
    table(["Revision", "State", "#Attempt", "Holder (fencing token)", "At", "Error"], hist),
    d.history_partial ? el("p", { class: "muted" }, "Older versions were compacted away by etcd (or past the 50 shown).") : null);
  return topic => topic === "task:" + id;
}

async function viewQueues() {
  const d = await api("queues");
  const rows = d.queues.map(q => [q.queue, String(q.counts.pending), String(q.counts.delayed), String(q.counts.claimed),
    String(q.counts.done), String(q.counts.dead), fmtAge(q.oldest_pending_ms),
    q.paused ? el("span", { class: "state DEAD", "data-testid": "paused-" + q.queue }, "paused " + fmtAge(q.paused_ms)) : "no",
    q.paused ? actionButton("Resume", "queues/" + encodeURIComponent(q.queue) + "/resume", "primary", "resume-" + q.queue)
      : actionButton("Pause", "queues/" + encodeURIComponent(q.queue) + "/pause", "", "pause-" + q.queue)]);
  render(el("h1", {}, "Queues"), d.ready ? null : el("p", { class: "muted" }, "Counting tasks (first read after start)…"),
    table(["Queue", "#Pending", "#Delayed", "#Claimed", "#Done", "#Dead", "Oldest pending", "Paused", ""], rows, "No queues with tasks."));
  return t => t === "queues";
}

async function viewWorkers() {
  const d = await api("workers");
  const rows = d.workers.map(w => [w.worker_id, w.host + ":" + w.pid, (w.queues || []).join(", "),
    Object.entries(w.labels || {}).map(([k, v]) => k + "=" + v).join(", ") || "–", String(w.in_hand),
    (w.sessions || []).map(s => s.process || (s.pid ? "pid " + s.pid : "?")).join(", ") || "–", w.version, fmtAge(w.started_ms)]);
  render(el("h1", {}, "Workers"), table(["Worker", "Host:pid", "Queues", "Labels", "#In hand", "Processes", "Version", "Up"], rows, "No live sidecars."));
  return t => t === "workers";
}

function owner(o) {
  if (!o || !o.worker_id) return "–";
  return o.worker_id + (o.process ? "/" + o.process : "") + " (session " + o.session + (o.host ? ", " + o.host : "") + ")";
}

async function viewLocks() {
  const d = await api("locks");
  const rows = d.locks.map(l => [l.name, owner(l.holder.owner), String(l.holder.token), fmtAge(l.holder.owner && l.holder.owner.since_ms),
    l.waiters.length ? el("ol", {}, l.waiters.map(w => el("li", {}, owner(w.owner) + " (place " + w.token + ")"))) : "none"]);
  render(el("h1", {}, "Locks"), table(["Lock", "Holder", "#Fencing token", "Held since", "Waiters in line"], rows, "No lock is held."));
  return t => t === "locks";
}

// diffLines is a line diff (longest common subsequence) of two texts.
function diffLines(a, b) {
  const x = a.split("\n"), y = b.split("\n");
  const n = x.length, m = y.length;
  const L = Array.from({ length: n + 1 }, () => new Array(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) L[i][j] = x[i] === y[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
  const out = [];
  let i = 0, j = 0;
  while (i < n && j < m) {
    if (x[i] === y[j]) { out.push([" ", x[i]]); i++; j++; }
    else if (L[i + 1][j] >= L[i][j + 1]) out.push(["-", x[i++]]);
    else out.push(["+", y[j++]]);
  }
  while (i < n) out.push(["-", x[i++]]);
  while (j < m) out.push(["+", y[j++]]);
  return out;
}

async function viewConfig(args) {
  if (!args.name) {
    const d = await api("config");
    render(el("h1", {}, "Config documents"),
      d.names.length ? el("ul", {}, d.names.map(n => el("li", {}, link("#/config/" + encodeURIComponent(n), n)))) : el("p", { class: "muted" }, "No documents (baton config set)."));
    return t => t === "config";
  }
  const name = args.name;
  const d = await api("config?name=" + encodeURIComponent(name));
  const v = d.versions;
  const parts = [el("h1", {}, "Config ", name), el("h2", {}, "Current (revision ", el("span", { "data-testid": "config-revision" }, String(v[0].revision)), ")"),
    el("pre", { "data-testid": "config-current" }, pretty(v[0].document))];
  parts.push(el("h2", {}, "History"));
  for (let k = 0; k < v.length - 1; k++) {
    const lines = diffLines(pretty(v[k + 1].document), pretty(v[k].document));
    parts.push(el("p", { class: "muted" }, "revision " + v[k + 1].revision + " → " + v[k].revision),
      el("div", { class: "diff" }, lines.map(([op, l]) => el("div", { class: op === "+" ? "add" : op === "-" ? "del" : "" }, op + " " + l))));
  }
  if (v.length === 1) parts.push(el("p", { class: "muted" }, "No earlier versions."));
  parts.push(el("h2", {}, "Schema"), d.schema ? el("pre", {}, pretty(d.schema)) : el("p", { class: "muted" }, "No schema (baton config set --schema)."));
  render(parts);
  return t => t === "config:" + name;
}

async function viewAudit() {
  const d = await api("audit");
  const rows = d.records.map(r => [fmtTime(r.time_ms), r.action, r.object, (r.user || "–") + "(" + r.uid + ")", (r.host || "–") + ":" + r.pid,
    r.etcd_user || "–", r.detail || "", r.via || "CLI"]);
  render(el("h1", {}, "Audit"), el("p", { class: "muted" }, "Operator actions, newest first (the last 50)."),
    table(["Time", "Action", "Object", "User(uid)", "Host:pid", "etcd user", "Detail", "Via"], rows, "No operator actions recorded."));
  return t => t === "audit";
}

function viewLogin() {
  const input = el("input", { type: "password", autocomplete: "current-password", "data-testid": "token" });
  const form = el("form", { class: "login" }, el("h1", {}, "Admin token"),
    el("p", { class: "muted" }, "This sidecar's admin server requires its token (--admin-token-file)."),
    input, el("button", { class: "primary", type: "submit" }, "Log in"));
  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    try {
      await api("login", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token: input.value }) });
      notice("", false);
      start();
    } catch (e) { notice(e.message, true); }
  });
  render(form);
}

// ---- routing and live updates ----

function parseRoute() {
  const h = location.hash.replace(/^#\/?/, "");
  const [path, query] = h.split("?");
  const parts = path.split("/").map(decodeURIComponent);
  const args = Object.fromEntries(new URLSearchParams(query || ""));
  switch (parts[0]) {
    case "batch": return ["batch", viewBatch, Object.assign(args, { name: parts.slice(1).join("/") })];
    case "task": return ["task", viewTask, Object.assign(args, { id: parts.slice(1).join("/") })];
    case "queues": return ["queues", viewQueues, args];
    case "workers": return ["workers", viewWorkers, args];
    case "locks": return ["locks", viewLocks, args];
    case "config": return ["config", viewConfig, Object.assign(args, { name: parts.slice(1).join("/") })];
    case "audit": return ["audit", viewAudit, args];
    default: return ["batches", viewBatches, args];
  }
}

let generation = 0;
async function show() {
  const [name, view, args] = parseRoute();
  const gen = ++generation;
  for (const a of document.querySelectorAll("nav a")) a.className = a.dataset.view === name || (a.dataset.view === "batches" && (name === "batch" || name === "task")) ? "active" : "";
  try {
    const topics = await view(args);
    if (gen !== generation) return;
    current = { view: name, args, topics };
  } catch (e) {
    if (e.status === 401) { viewLogin(); return; }
    render(el("h1", {}, "Cannot show this page"), el("p", { class: "error" }, e.message));
  }
}

function scheduleRefresh(delay) {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => { refreshTimer = null; show(); }, delay);
}

let source = null;
function follow() {
  if (source) source.close();
  source = new EventSource("api/events");
  const live = document.getElementById("live");
  source.addEventListener("hello", () => { live.textContent = "live"; live.className = "live on"; });
  source.onmessage = ev => {
    let topics = [];
    try { topics = JSON.parse(ev.data); } catch (e) { return; }
    if (topics.includes("*") || topics.some(t => current.topics(t))) scheduleRefresh(150);
  };
  source.onerror = () => { live.textContent = "offline"; live.className = "live off"; };
}

async function start() {
  try {
    session = await api("session");
  } catch (e) {
    if (e.status === 401) { viewLogin(); return; }
    notice(e.message, true);
    return;
  }
  follow();
  show();
}

window.addEventListener("hashchange", () => { notice("", false); show(); });
document.addEventListener("DOMContentLoaded", start);
