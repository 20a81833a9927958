/**
 * The status page served at `/`: one self-contained HTML document (inline CSS, inline
 * script, inline SVG; nothing loaded from elsewhere). Its script polls `status.json`
 * every second and redraws. Strings from the network are only ever set as text, never
 * as markup.
 *
 * A token given as `/#token=...` is kept in the tab's sessionStorage and sent as a
 * bearer token (the fragment never reaches the server or its logs).
 *
 * @module
 */

const STYLE = `
:root { color-scheme: light dark; --bg:#f6f7f9; --card:#fff; --fg:#1d2330; --dim:#6b7385;
  --line:#dde1e8; --ok:#1f9d55; --warn:#c77d00; --bad:#d64545; --accent:#3565d4; }
@media (prefers-color-scheme: dark) { :root { --bg:#14171c; --card:#1d2128; --fg:#e5e8ee;
  --dim:#98a0b0; --line:#2e3440; } }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui, sans-serif; background:var(--bg); color:var(--fg); }
header { display:flex; flex-wrap:wrap; gap:12px; align-items:center; padding:14px 22px;
  background:var(--card); border-bottom:1px solid var(--line); }
header h1 { font-size:18px; margin:0 8px 0 0; }
.badge { display:inline-block; padding:2px 9px; border-radius:10px; font-size:12px;
  font-weight:600; color:#fff; background:var(--dim); }
.badge.ok { background:var(--ok); } .badge.bad { background:var(--bad); }
.badge.warn { background:var(--warn); }
.dim { color:var(--dim); }
main { padding:16px 22px; display:grid; gap:16px; grid-template-columns:repeat(auto-fit,minmax(420px,1fr)); }
section { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:12px 14px; }
section.wide { grid-column:1/-1; }
h2 { font-size:14px; margin:0 0 8px; text-transform:uppercase; letter-spacing:.04em; color:var(--dim); }
.cards { display:flex; flex-wrap:wrap; gap:10px; }
.card { flex:1 1 120px; border:1px solid var(--line); border-radius:6px; padding:8px 10px; }
.card b { display:block; font-size:22px; font-variant-numeric:tabular-nums; }
table { width:100%; border-collapse:collapse; }
th, td { text-align:left; padding:4px 6px; border-bottom:1px solid var(--line); vertical-align:top; }
th { font-size:12px; color:var(--dim); font-weight:600; }
td.num { text-align:right; font-variant-numeric:tabular-nums; }
tr.group td { font-weight:600; background:var(--bg); }
.chip { display:inline-block; margin:0 4px 2px 0; padding:0 6px; border-radius:4px;
  border:1px solid var(--line); font-size:12px; }
.dot { display:inline-block; width:9px; height:9px; border-radius:50%; margin-right:6px; }
.dot.in-session { background:var(--accent); } .dot.idle { background:var(--ok); }
.dot.busy { background:var(--warn); }
svg text { font:12px system-ui, sans-serif; fill:var(--fg); }
#error { color:var(--bad); font-weight:600; }
`;

const SCRIPT = `
"use strict";
const TOKEN_KEY = "tsunagi-admin-token";
const tokenMatch = /(?:^#|&)token=([^&]+)/.exec(location.hash);
if (tokenMatch) {
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(tokenMatch[1]));
  history.replaceState(null, "", location.pathname);
}
const SVG_NS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}
function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}
function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? String(n) : n.toFixed(1)) + " " + units[i];
}
function duration(ms) {
  const s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  return d > 0 ? d + "d " + h + "h" : h > 0 ? h + "h " + m + "m" : m + "m " + (s % 60) + "s";
}
function ago(time, now) { return duration(Math.max(0, now - time)) + " ago"; }
function chips(list) { const span = el("span"); for (const x of list) span.append(el("span", { class: "chip" }, x)); return span; }
function sum(record) { return Object.values(record).reduce((a, b) => a + b, 0); }

function card(label, value, attrs) {
  return el("div", { class: "card" }, el("b", attrs || {}, value), el("span", { class: "dim" }, label));
}

function renderHeader(s) {
  $("relay-name").textContent = s.name;
  $("relay-address").textContent = s.address;
  const state = $("relay-state");
  state.textContent = s.state;
  state.className = "badge " + (s.state === "running" ? "ok" : "warn");
  const dir = $("directory");
  dir.textContent = "directory " + s.directory.backend + (s.directory.up ? " up" : " DOWN");
  dir.className = "badge " + (s.directory.up ? "ok" : "bad");
  $("uptime").textContent = "up " + duration(s.time - s.startedAt);
  $("updated").textContent = "updated " + new Date(s.time).toLocaleTimeString();
  document.title = s.name + " · tsunagi relay";
}

function renderCards(s) {
  const t = s.totals;
  $("cards").replaceChildren(
    card("devices online", s.devices.length, { id: "devices-online" }),
    card("sessions", s.sessions.length, { id: "session-count" }),
    card("bytes relayed", bytes(t.relayedBytes), { id: "bytes-relayed", "data-bytes": t.relayedBytes, title: t.relayedBytes + " bytes" }),
    card("idle connections", s.connections.idle),
    card("not logged in", s.connections.unauthenticated),
    card("logins ok / refused", (t.logins.ok || 0) + " / " + (sum(t.logins) - (t.logins.ok || 0))),
    card("setups ok / refused", (t.setups.ok || 0) + " / " + (sum(t.setups) - (t.setups.ok || 0))),
    card("memory (RSS)", bytes(s.memory.rss)),
  );
}

function renderDevices(s) {
  const body = $("devices");
  const rows = [];
  for (const activity of ["in session", "idle", "busy"]) {
    const group = s.devices.filter((d) => d.activity === activity);
    if (group.length === 0) continue;
    rows.push(el("tr", { class: "group" }, el("td", { colspan: 7 },
      el("span", { class: "dot " + activity.replace(" ", "-") }), activity + " (" + group.length + ")")));
    for (const d of group) {
      rows.push(el("tr", { "data-device": d.id, "data-activity": d.activity },
        el("td", {}, el("span", { class: "dot " + activity.replace(" ", "-") }), d.id),
        el("td", {}, d.type),
        el("td", {}, chips(d.attributes)),
        el("td", {}, chips(d.services)),
        el("td", { class: "num", title: "idle / in session / all" }, d.idle + " / " + d.sessions + " / " + d.connections),
        el("td", {}, d.peers.join(", ")),
        el("td", { class: "dim" }, ago(d.lastUpdate, s.time))));
    }
  }
  if (rows.length === 0) rows.push(el("tr", {}, el("td", { colspan: 7, class: "dim" }, "No device is logged in here.")));
  body.replaceChildren(...rows);
}

function renderSessions(s) {
  const rows = s.sessions.map((x) => el("tr", { "data-session": x.id, "data-bytes": x.bytesSent + x.bytesReceived },
    el("td", {}, x.from + " \\u2192 " + x.to),
    el("td", {}, x.via || "\\u2014"),
    el("td", { class: "num", title: x.bytesSent + " bytes" }, bytes(x.bytesSent)),
    el("td", { class: "num", title: x.bytesReceived + " bytes" }, bytes(x.bytesReceived)),
    el("td", { class: "dim" }, x.id.slice(0, 8))));
  if (rows.length === 0) rows.push(el("tr", {}, el("td", { colspan: 5, class: "dim" }, "No session is running.")));
  $("sessions").replaceChildren(...rows);
}

function renderCounters(s) {
  const rows = [];
  for (const [title, record] of [["login", s.totals.logins], ["setup", s.totals.setups], ["refusal", s.totals.refusals]]) {
    for (const [key, value] of Object.entries(record)) {
      if (value > 0) rows.push(el("tr", {}, el("td", {}, title), el("td", {}, key), el("td", { class: "num" }, value)));
    }
  }
  if (rows.length === 0) rows.push(el("tr", {}, el("td", { colspan: 3, class: "dim" }, "Nothing counted yet.")));
  $("counters").replaceChildren(...rows);
}

function renderMesh(s) {
  const box = $("mesh");
  if (s.mesh === null) {
    box.replaceChildren(el("p", { class: "dim" }, "This relay runs no mesh (directory: " + s.directory.backend + ")."));
    return;
  }
  const names = s.mesh.relays.map((r) => r.name);
  if (!names.includes(s.name)) names.unshift(s.name);
  const down = s.mesh.links.filter((l) => !l.up);
  for (const l of down) { const n = l.relay || l.address; if (!names.includes(n)) names.push(n); }
  const W = 560, H = 320, cx = W / 2, cy = H / 2, R = names.length > 1 ? Math.min(W, H) / 2 - 50 : 0;
  const pos = new Map(names.map((n, i) => {
    const a = -Math.PI / 2 + (2 * Math.PI * i) / names.length;
    return [n, [cx + R * Math.cos(a), cy + R * Math.sin(a)]];
  }));
  const root = svg("svg", { viewBox: "0 0 " + W + " " + H, width: "100%", role: "img", "aria-label": "mesh links" });
  const edges = new Map();
  const alive = new Map(s.mesh.relays.map((r) => [r.name, r.alive]));
  for (const r of s.mesh.relays) {
    if (!r.alive) continue;
    for (const n of r.neighbors) { const key = [r.name, n].sort().join("\\u0000"); if (pos.has(n)) edges.set(key, { a: r.name, b: n, state: "up" }); }
  }
  for (const l of down) {
    const n = l.relay || l.address;
    edges.set([s.name, n].sort().join("\\u0000"), { a: s.name, b: n, state: "down" });
  }
  for (const e of edges.values()) {
    const [x1, y1] = pos.get(e.a), [x2, y2] = pos.get(e.b);
    root.append(svg("line", { x1, y1, x2, y2, "data-link": e.a + "-" + e.b, "data-state": e.state,
      stroke: e.state === "up" ? "#1f9d55" : "#d64545", "stroke-width": e.a === s.name || e.b === s.name ? 3 : 2,
      "stroke-dasharray": e.state === "up" ? "" : "6 4" }));
  }
  for (const n of names) {
    const [x, y] = pos.get(n);
    const isSelf = n === s.name;
    const ok = isSelf || alive.get(n) === true;
    root.append(svg("circle", { cx: x, cy: y, r: isSelf ? 20 : 15, "data-relay": n,
      fill: isSelf ? "#3565d4" : ok ? "#1f9d55" : "#9aa1ad", stroke: "#fff", "stroke-width": 2 }));
    root.append(svg("text", { x, y: y + (isSelf ? 36 : 30), "text-anchor": "middle" }, n + (ok ? "" : " (unreachable)")));
  }
  box.replaceChildren(root);
}

let failures = 0;
async function poll() {
  try {
    const headers = {};
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.authorization = "Bearer " + token;
    const response = await fetch("status.json", { headers, cache: "no-store" });
    if (response.status === 401) {
      $("error").textContent = "This relay's admin listener needs a token: open /#token=YOUR_TOKEN";
    } else if (!response.ok) {
      throw new Error("status.json answered " + response.status);
    } else {
      const s = await response.json();
      failures = 0;
      $("error").textContent = "";
      renderHeader(s); renderCards(s); renderDevices(s); renderSessions(s); renderCounters(s); renderMesh(s);
      document.body.dataset.loaded = "true";
    }
  } catch (e) {
    failures++;
    $("error").textContent = "Relay not answering (" + failures + "): " + (e && e.message || e);
  } finally {
    setTimeout(poll, 1000);
  }
}
poll();
`;

/** The status page, a complete HTML document. */
export const STATUS_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tsunagi relay</title>
<link rel="icon" href="data:,">
<style>${STYLE}</style>
</head>
<body>
<header>
  <h1 id="relay-name">tsunagi relay</h1>
  <span id="relay-address" class="dim"></span>
  <span id="relay-state" class="badge">loading</span>
  <span id="directory" class="badge">directory</span>
  <span id="uptime" class="dim"></span>
  <span id="updated" class="dim"></span>
  <span id="error"></span>
</header>
<main>
  <section class="wide"><div id="cards" class="cards"></div></section>
  <section class="wide">
    <h2>Devices on this relay</h2>
    <table>
      <thead><tr><th>device</th><th>type</th><th>attributes</th><th>services</th>
        <th class="num">idle / session / all</th><th>peers</th><th>last change</th></tr></thead>
      <tbody id="devices"></tbody>
    </table>
  </section>
  <section>
    <h2>Sessions</h2>
    <table>
      <thead><tr><th>from → to</th><th>via</th><th class="num">sent</th>
        <th class="num">received</th><th>id</th></tr></thead>
      <tbody id="sessions"></tbody>
    </table>
  </section>
  <section>
    <h2>Mesh</h2>
    <div id="mesh"></div>
  </section>
  <section>
    <h2>Counters</h2>
    <table><thead><tr><th>what</th><th>result</th><th class="num">count</th></tr></thead>
      <tbody id="counters"></tbody></table>
  </section>
</main>
<script>${SCRIPT}</script>
</body>
</html>
`;
