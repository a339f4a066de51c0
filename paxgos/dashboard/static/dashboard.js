// The Paxgos dashboard: draws the snapshots the supervisor pushes (Server-Sent Events) and
// sends the page's actions (POST /dashboard/api/...).  No library: SVG for the nodes and the
// messages, a canvas for the chart.
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
const ANIM_MS = 1100;        // how long one message takes to cross the ring
const MAX_FLYING = 80;       // messages animated at once, beyond which new ones are skipped
const MAX_LABELS = 14;       // labelled ones among them: the others fly as dots
const CHART_SECONDS = 120;
const CENTER = { x: 320, y: 240 };
const RADIUS = 178;
const NODE_R = 54;

let snapshot = null;
let chart = [];
let flying = [];
const requestStart = new Map();  // exchange id -> when its request started flying
const ring = document.getElementById("ring");
const rows = new Map();          // node id -> {tr, cells}
let layoutFor = -1;              // the node count the ring was drawn for
let nodeGroups = [];

// --- the stream -----------------------------------------------------------------------------

function connect() {
  const link = document.getElementById("link");
  const source = new EventSource("/dashboard/stream");
  source.addEventListener("hello", (e) => {
    chart = JSON.parse(e.data).chart || [];
  });
  source.onmessage = (e) => {
    link.textContent = "● live";
    link.className = "link up";
    render(JSON.parse(e.data));
  };
  source.onerror = () => {
    link.textContent = "○ reconnecting";
    link.className = "link down";
  };
}

function render(snap) {
  snapshot = snap;
  if (snap.nodes.length !== layoutFor) layout(snap.nodes.length);
  renderSummary(snap);
  renderRing(snap);
  renderTable(snap);
  renderSampling(snap);
  renderAuto(snap.autopropose);
  if (snap.chart && (!chart.length || chart[chart.length - 1].t !== snap.chart.t)) {
    chart.push(snap.chart);
    const oldest = snap.chart.t - CHART_SECONDS;
    while (chart.length && chart[0].t < oldest) chart.shift();
  }
  drawChart();
  renderEntries(snap.entries);
  schedule(snap.events);
}

// --- header ---------------------------------------------------------------------------------

function ballotText(b) { return b ? `(${b[0]},${b[1]})` : "–"; }

function renderSummary(snap) {
  const up = snap.nodes.filter((n) => n.up).length;
  const total = snap.nodes.length;
  const holds = up >= snap.majority;
  const el = document.getElementById("summary");
  const leader = snap.leader === null ? null : snap.nodes[snap.leader];
  const parts = [];
  if (leader) {
    parts.push(`leader: <b>node ${leader.id}</b> · ballot ${ballotText(leader.ballot)} · commit index ${leader.commit}`);
  } else {
    parts.push(`<b style="color:#ff9b9b">no leader</b>`);
  }
  const stalled = snap.nodes.filter((n) => n.up && n.faults && n.faults.stalled).length;
  const answering = up - stalled;
  let quorum = `${up} of ${total} nodes up`;
  if (stalled) quorum += `, ${stalled} stalled`;
  quorum += answering >= snap.majority
    ? ` · a majority (${snap.majority}) answers: commits go on`
    : ` · <b style="color:#ff9b9b">no majority (${snap.majority}) answers: proposals wait</b>`;
  parts.push(holds ? quorum : quorum);
  el.innerHTML = parts.join(" · ");
}

// --- the ring -------------------------------------------------------------------------------

function position(i, n) {
  const angle = -Math.PI / 2 + (2 * Math.PI * i) / n;
  return { x: CENTER.x + RADIUS * Math.cos(angle), y: CENTER.y + RADIUS * Math.sin(angle) };
}

function el(name, attrs, parent) {
  const node = document.createElementNS(SVGNS, name);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

function layout(n) {
  layoutFor = n;
  ring.innerHTML = "";
  const edges = el("g", {}, ring);
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const a = position(i, n), b = position(j, n);
      el("line", { class: "edge", x1: a.x, y1: a.y, x2: b.x, y2: b.y }, edges);
    }
  }
  const center = el("g", { class: "center" }, ring);
  el("text", { x: CENTER.x, y: CENTER.y - 6, class: "big", id: "center-commit" }, center);
  el("text", { x: CENTER.x, y: CENTER.y + 16, id: "center-label" }, center);
  el("g", { id: "messages" }, ring);
  nodeGroups = [];
  for (let i = 0; i < n; i++) {
    const p = position(i, n);
    const g = el("g", { class: "node", "data-node": i, transform: `translate(${p.x},${p.y})` }, ring);
    el("circle", { class: "ring-fault", r: NODE_R + 6 }, g);
    el("circle", { class: "body", r: NODE_R }, g);
    const lines = [
      el("text", { class: "name", y: -24 }, g),
      el("text", { y: -8 }, g),
      el("text", { y: 7 }, g),
      el("text", { y: 22 }, g),
      el("text", { y: 37 }, g),
    ];
    const tag = el("text", { class: "tag", y: NODE_R + 22 }, g);
    nodeGroups.push({ g, lines, tag });
  }
  ring.appendChild(document.getElementById("messages"));  // messages above the nodes
}

function processState(node) {
  if (node.process) return node.process.state;
  return node.up ? "running" : "down";
}

function renderRing(snap) {
  const leader = snap.leader === null ? null : snap.nodes[snap.leader];
  document.getElementById("center-commit").textContent = leader ? leader.commit : "–";
  document.getElementById("center-label").textContent = leader ? "commit index (leader)" : "no leader";
  snap.nodes.forEach((node, i) => {
    const { g, lines, tag } = nodeGroups[i];
    const classes = ["node"];
    const faults = node.faults || {};
    if (!node.up) classes.push("down");
    else classes.push(node.role);
    if (node.up && faults.stalled) classes.push("stalled");
    else if (node.up && faults.slow_ms > 0) classes.push("slow");
    g.setAttribute("class", classes.join(" "));
    lines[0].textContent = `node ${node.id}`;
    if (node.up) {
      lines[1].textContent = node.role;
      lines[2].textContent = `ballot ${ballotText(node.ballot || node.leader_ballot)}`;
      lines[3].textContent = `commit ${node.commit}`;
      lines[4].textContent = node.lag ? `lag ${node.lag}` : "";
    } else {
      lines[1].textContent = processState(node) === "killed" ? "killed" : "down";
      for (const line of lines.slice(2)) line.textContent = "";
    }
    let text = "", cls = "tag";
    if (!node.up) { text = processState(node) === "killed" ? "KILLED (kill -9)" : "DOWN"; cls += " dead"; }
    else if (faults.stalled) text = "STALLED";
    else if (faults.slow_ms > 0) { text = `SLOW ${faults.slow_ms} ms`; cls += " slow"; }
    else if (node.failed) text = "DISK FAILED";
    tag.textContent = text;
    tag.setAttribute("class", cls);
  });
}

// --- messages -------------------------------------------------------------------------------

const REPLIES = new Set(["promise", "accepted", "learn_ack", "catchup_reply"]);

function slotsText(s) {
  if (!s) return "";
  if (s[1] === null || s[1] === undefined) return ` slots ${s[0]}…`;
  return s[0] === s[1] ? ` slot ${s[0]}` : ` ${s[0]}–${s[1]}`;
}

function label(e) {
  const yes = e.ok === false ? " ✗" : " ✓";
  switch (e.kind) {
    case "prepare": return `prepare ${ballotText(e.ballot)}${e.probe ? " probe" : ""}${slotsText(e.slots)}`;
    case "promise": return `promise${yes} ${ballotText(e.ballot)}${e.probe ? " probe" : ""}`;
    case "accept": return `accept ${ballotText(e.ballot)}${slotsText(e.slots)}`;
    case "accepted": return `accepted${yes}${slotsText(e.slots)}`;
    case "learn": return `learn commit ${e.commit}`;
    case "learn_ack": return `learned ${e.commit}`;
    case "catchup": return `catch-up${slotsText(e.slots)}`;
    case "catchup_reply": return `catch-up reply${slotsText(e.slots)}`;
    default: return e.kind;
  }
}

let labelTurn = 0;

function schedule(events) {
  if (!events || !events.length || !snapshot) return;
  const now = performance.now();
  const t0 = events[0].t;
  // The request of each exchange that carries its label: a different peer's each time.
  const fanout = new Map();
  for (const e of events) {
    if (!REPLIES.has(e.kind) && !requestStart.has(e.x)) {
      if (!fanout.has(e.x)) fanout.set(e.x, []);
      fanout.get(e.x).push(e);
    }
  }
  const chosen = new Set();
  for (const group of fanout.values()) chosen.add(group[labelTurn++ % group.length]);
  for (const e of events) {
    let start = now + Math.min(250, Math.max(0, (e.t - t0) * 1000));
    // One label per exchange (the first of a broadcast), and on every vote and refusal: the
    // rest are dots, or a busy cluster's labels would cover each other.
    let labelled = e.kind === "promise" || e.ok === false;
    if (REPLIES.has(e.kind) && requestStart.has(e.x)) {
      start = Math.max(start, requestStart.get(e.x) + ANIM_MS * 0.95);
    } else if (!REPLIES.has(e.kind) && fanout.has(e.x)) {
      if (!requestStart.has(e.x)) requestStart.set(e.x, start);
      labelled = chosen.has(e);
    } else if (e.kind === "catchup_reply") {
      labelled = true;
    }
    if (labelled && flying.filter((m) => m.labelled).length >= MAX_LABELS) labelled = false;
    if (flying.length < MAX_FLYING) flying.push({ e, start, labelled, node: null });
  }
  if (requestStart.size > 400) {  // forget old exchanges
    const keys = [...requestStart.keys()].slice(0, requestStart.size - 200);
    for (const k of keys) requestStart.delete(k);
  }
}

function animate(now) {
  const layer = document.getElementById("messages");
  const n = layoutFor;
  const still = [];
  for (const m of flying) {
    const progress = (now - m.start) / ANIM_MS;
    if (progress < 0) { still.push(m); continue; }
    if (progress >= 1 || !layer || m.e.from >= n || m.e.to >= n) {
      if (m.node) m.node.remove();
      continue;
    }
    if (!m.node) {
      const cls = "msg" + (m.e.ok === false ? " refused" : "");
      m.node = el("g", { class: cls }, layer);
      el("circle", { r: 6, fill: `var(--${m.e.kind})` }, m.node);
      if (m.labelled) el("text", { y: -10 }, m.node).textContent = label(m.e);
    }
    const a = position(m.e.from, n), b = position(m.e.to, n);
    const dx = b.x - a.x, dy = b.y - a.y, len = Math.hypot(dx, dy) || 1;
    const ux = dx / len, uy = dy / len;
    const sx = a.x + ux * NODE_R, sy = a.y + uy * NODE_R;
    const span = len - 2 * NODE_R;
    const eased = progress < 0.5 ? 2 * progress * progress : 1 - Math.pow(-2 * progress + 2, 2) / 2;
    // Replies travel on a line beside their request's, so both directions stay readable.
    const side = REPLIES.has(m.e.kind) ? 9 : -9;
    const x = sx + ux * span * eased - uy * side, y = sy + uy * span * eased + ux * side;
    m.node.setAttribute("transform", `translate(${x.toFixed(1)},${y.toFixed(1)})`);
    still.push(m);
  }
  flying = still;
  requestAnimationFrame(animate);
}

function renderSampling(snap) {
  const s = snap.sampling || {};
  const out = document.getElementById("sampling");
  if (!s.seen_per_s) { out.textContent = "· no messages in the last second"; return; }
  const ratio = s.recorded_per_s ? s.seen_per_s / s.recorded_per_s : Infinity;
  const skipped = snap.skipped_events ? `, ${snap.skipped_events} more skipped` : "";
  if (ratio <= 1.02) out.textContent = `· every message shown (${s.seen_per_s}/s)${skipped}`;
  else if (ratio < 2) out.textContent = `· sampled: ${Math.round(100 / ratio)}% of ${s.seen_per_s} messages/s shown${skipped}`;
  else out.textContent = `· sampled: 1 in ${Number.isFinite(ratio) ? Math.round(ratio) : "∞"} of ${s.seen_per_s} messages/s${skipped}`;
}

// --- the table ------------------------------------------------------------------------------

function button(text, node, action, danger) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  b.dataset.node = node;
  b.dataset.action = action;
  if (danger) b.className = "danger";
  b.addEventListener("click", () => nodeAction(node, action));
  return b;
}

function makeRow(id) {
  const tr = document.createElement("tr");
  tr.dataset.nodeRow = id;
  const cells = {};
  for (const name of ["name", "process", "role", "ballot", "commit", "lag", "faults", "actions"]) {
    const td = document.createElement("td");
    if (name === "commit" || name === "lag") td.className = "num";
    tr.appendChild(td);
    cells[name] = td;
  }
  const box = document.createElement("div");
  box.className = "actions";
  const ms = document.createElement("input");
  ms.type = "number"; ms.min = "0"; ms.value = "200"; ms.title = "ms"; ms.dataset.node = id; ms.className = "ms";
  box.append(ms, button("slow", id, "slow"), button("stall", id, "stall"), button("heal", id, "heal"),
    button("kill -9", id, "kill", true), button("restart", id, "restart"));
  cells.actions.appendChild(box);
  document.querySelector("#nodes tbody").appendChild(tr);
  return { tr, cells };
}

function badge(text, cls) { return `<span class="badge ${cls}">${text}</span>`; }

function renderTable(snap) {
  for (const node of snap.nodes) {
    const row = rows.get(node.id) || makeRow(node.id);
    rows.set(node.id, row);
    const { tr, cells } = row;
    const state = processState(node);
    tr.className = (node.id === snap.leader ? "leader" : "") + (node.up ? "" : " down");
    tr.dataset.role = node.up ? node.role : "down";
    cells.name.textContent = `node ${node.id}`;
    const pid = node.process && node.process.pid ? ` pid ${node.process.pid}` : "";
    cells.process.innerHTML = node.up ? badge("up", "up") + `<span class="muted small">${pid}</span>`
      : badge(state === "running" ? "not answering" : state, state) ;
    cells.process.title = node.error || "";
    cells.role.innerHTML = node.up ? badge(node.role, node.role) : "";
    cells.ballot.textContent = node.up ? ballotText(node.ballot || node.leader_ballot) : "";
    cells.commit.textContent = node.up ? node.commit : "";
    cells.lag.textContent = node.up && node.lag !== null ? node.lag : "";
    const f = node.faults || {};
    let faults = "";
    if (node.up && f.stalled) faults += badge("stalled", "stalled");
    if (node.up && f.slow_ms > 0) faults += badge(`slow ${f.slow_ms} ms`, "slow");
    if (node.failed) faults += badge("disk failed", "failed");
    cells.faults.innerHTML = faults;
    tr.dataset.stalled = node.up && f.stalled ? "true" : "false";
    for (const b of cells.actions.querySelectorAll("button")) {
      const a = b.dataset.action;
      if (a === "kill") b.disabled = !snap.controls || state !== "running";
      else if (a === "restart") b.disabled = !snap.controls;
      else b.disabled = !node.up;
      if (!snap.controls && (a === "kill" || a === "restart")) b.title = "only under the supervisor (python -m paxgos)";
    }
  }
}

function renderEntries(entries) {
  const body = document.querySelector("#entries tbody");
  body.innerHTML = (entries || []).map(([slot, value]) =>
    `<tr><td>${slot}</td><td>${value === null ? "no-op" : value}</td></tr>`).join("");
}

function renderAuto(auto) {
  const out = document.getElementById("auto-status");
  if (!auto) return;
  document.getElementById("autopropose").disabled = auto.running;
  document.getElementById("stop").disabled = !auto.running;
  if (!auto.running && !auto.batches) { out.textContent = "not running"; return; }
  let text = `${auto.running ? "running" : "stopped"}: ${auto.batches} batches of ${auto.count}, ` +
    `${auto.committed} committed, ${auto.unknown} outcome unknown, ${auto.refused} refused`;
  if (auto.waiting_s !== null && auto.waiting_s >= 0.5) text += ` · waiting ${auto.waiting_s.toFixed(1)} s for a majority…`;
  if (auto.last) text += ` · ${auto.last}`;
  out.textContent = text;
}

// --- actions --------------------------------------------------------------------------------

function outcome(text) {
  const list = document.getElementById("outcomes");
  const li = document.createElement("li");
  const time = new Date().toLocaleTimeString();
  li.innerHTML = `<time>${time}</time><span class="wait">…</span> <span class="what"></span>`;
  li.querySelector(".what").textContent = text;
  list.prepend(li);
  while (list.children.length > 60) list.lastChild.remove();
  return {
    waiting(seconds) { li.querySelector(".wait").textContent = `waiting ${seconds.toFixed(1)} s…`; },
    done(ok, result) {
      const mark = li.querySelector(".wait");
      mark.className = ok ? "ok" : "bad";
      mark.textContent = ok ? "✓" : "✗";
      li.querySelector(".what").textContent = `${text} → ${result}`;
      li.dataset.ok = ok ? "true" : "false";
    },
  };
}

async function post(path, what) {
  const line = outcome(what);
  const started = performance.now();
  const timer = setInterval(() => line.waiting((performance.now() - started) / 1000), 100);
  try {
    const response = await fetch(`/dashboard/api/${path}`, { method: "POST" });
    const type = response.headers.get("Content-Type") || "";
    const body = type.includes("json") ? await response.json() : { ok: false, text: (await response.text()).trim() };
    let text = body.text;
    if (body.status !== undefined) text = `${body.status} ${statusName(body.status)}: ${text}`;
    if (body.seconds !== undefined) text += ` (${body.seconds.toFixed(3)} s)`;
    line.done(Boolean(body.ok), text);
    return body;
  } catch (err) {
    line.done(false, `the dashboard did not answer: ${err}`);
    return null;
  } finally {
    clearInterval(timer);
  }
}

function statusName(code) {
  return { 200: "OK", 307: "Redirect", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    503: "Service Unavailable", 504: "Gateway Timeout", 599: "no answer" }[code] || "";
}

function nodeAction(node, action) {
  if (action === "slow") {
    const ms = document.querySelector(`input.ms[data-node="${node}"]`).value || "0";
    return post(`nodes/${node}/slow?ms=${encodeURIComponent(ms)}`, `slow node ${node} by ${ms} ms`);
  }
  const names = { stall: "stall", heal: "heal", kill: "kill -9", restart: "restart" };
  return post(`nodes/${node}/${action}`, `${names[action]} node ${node}`);
}

document.getElementById("propose-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const value = document.getElementById("value").value.trim();
  post(`propose?value=${encodeURIComponent(value)}`, `propose ${value || "a random value"}`);
});
document.getElementById("auto-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const count = document.getElementById("count").value;
  post(`autopropose?count=${encodeURIComponent(count)}`, `autopropose batches of ${count}`);
});
document.getElementById("stop").addEventListener("click", () => post("autopropose/stop", "stop autopropose"));

// --- the chart ------------------------------------------------------------------------------

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function drawChart() {
  const canvas = document.getElementById("chart");
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 520, h = Math.round(w * 200 / 520);
  if (canvas.width !== Math.round(w * dpr)) { canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr); }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const left = 46, right = 46, top = 10, bottom = 22;
  const pw = w - left - right, ph = h - top - bottom;
  const now = chart.length ? chart[chart.length - 1].t : Date.now() / 1000;
  const x = (t) => left + pw * (1 - (now - t) / CHART_SECONDS);
  const cMax = niceMax(Math.max(10, ...chart.map((p) => p.commits_per_s || 0)));
  const lMax = niceMax(Math.max(5, ...chart.map((p) => p.p99_ms || 0)));
  ctx.font = "11px system-ui, sans-serif";
  ctx.strokeStyle = "#e5e8ee"; ctx.fillStyle = "#667085"; ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = top + ph * (1 - i / 4);
    ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(left + pw, y); ctx.stroke();
    ctx.textAlign = "right"; ctx.fillText(`${+(cMax * i / 4).toFixed(cMax < 40 ? 1 : 0)}`, left - 5, y + 4);
    ctx.textAlign = "left"; ctx.fillText(`${+(lMax * i / 4).toFixed(1)}`, left + pw + 5, y + 4);
  }
  ctx.textAlign = "center";
  for (let s = 0; s <= CHART_SECONDS; s += 30) ctx.fillText(s ? `−${s}s` : "now", x(now - s), h - 6);
  const line = (key, max, color, fill) => {
    ctx.beginPath();
    let started = false, firstX = 0, lastX = 0;
    for (const p of chart) {
      const v = p[key];
      if (v === null || v === undefined) { started = started && !fill ? (ctx.stroke(), ctx.beginPath(), false) : started; continue; }
      const px = x(p.t), py = top + ph * (1 - Math.min(v, max) / max);
      if (!started) { ctx.moveTo(px, py); firstX = px; started = true; } else ctx.lineTo(px, py);
      lastX = px;
    }
    if (fill && started) {
      ctx.lineTo(lastX, top + ph); ctx.lineTo(firstX, top + ph); ctx.closePath();
      ctx.fillStyle = fill; ctx.fill();
    } else { ctx.strokeStyle = color; ctx.lineWidth = 2; ctx.stroke(); }
  };
  line("commits_per_s", cMax, null, "rgba(31,111,209,0.28)");
  line("p50_ms", lMax, "#1f9d55");
  line("p99_ms", lMax, "#d64545");
  const last = chart[chart.length - 1];
  const nowText = document.getElementById("chart-now");
  if (last) {
    const fmt = (v, unit) => (v === null || v === undefined ? "–" : `${v}${unit}`);
    nowText.textContent = `· ${fmt(last.commits_per_s, "/s")} · p50 ${fmt(last.p50_ms, " ms")} · p99 ${fmt(last.p99_ms, " ms")}`;
  }
}

connect();
requestAnimationFrame(animate);
