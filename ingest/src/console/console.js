// tierlog's web console: a page over the node's JSON API (/api/v1/...). No dependencies and
// nothing fetched from elsewhere; every figure comes from the node.
"use strict";

const main = document.getElementById("main");
let overview = null;
let timer = null;

// ---- helpers ----------------------------------------------------------------------------

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

async function api(path, options) {
  const r = await fetch(path, options);
  let body = null;
  try {
    body = await r.json();
  } catch (_) {
    throw new Error(`${path}: HTTP ${r.status}`);
  }
  if (!r.ok) {
    const e = new Error(body && body.error ? body.error : `HTTP ${r.status}`);
    e.status = r.status;
    throw e;
  }
  return body;
}

function num(n) {
  return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US");
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

function secs(s) {
  if (s === null || s === undefined) return "–";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function time(ms) {
  return new Date(ms).toISOString().replace("T", " ").replace("Z", "");
}

function table(id, headers, rows) {
  const head = headers.map((h) => `<th class="${h.num ? "num" : ""}">${esc(h.label)}</th>`).join("");
  const body = rows.length
    ? rows.map((r) => `<tr>${r.map((c, i) => `<td class="${headers[i].num ? "num" : ""}">${c}</td>`).join("")}</tr>`).join("")
    : `<tr><td colspan="${headers.length}" class="muted">none</td></tr>`;
  return `<table id="${id}"><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
}

function error(e) {
  return `<div class="error" role="alert">${esc(e.message || e)}</div>`;
}

function setActive(name) {
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.nav === name);
}

// ---- charts (SVG, no library) -----------------------------------------------------------

const COLORS = ["#2f6fdf", "#d9480f", "#2b8a3e", "#ae3ec9", "#e67700", "#0c8599", "#c2255c"];
const HISTORY = 90;
const series = {}; // chart id -> {name -> [values]}

function push(chart, name, v) {
  const c = (series[chart] = series[chart] || {});
  const s = (c[name] = c[name] || []);
  s.push(v);
  while (s.length > HISTORY) s.shift();
}

function chart(id, title, format) {
  const c = series[id] || {};
  const names = Object.keys(c);
  let max = 0;
  for (const n of names) for (const v of c[n]) if (v !== null && v > max) max = v;
  const w = 300, h = 100;
  const lines = names.map((n, i) => {
    const pts = c[n].map((v, j) => (v === null ? null : `${(j / (HISTORY - 1)) * w},${h - (max ? (v / max) * (h - 6) : 0) - 3}`))
      .filter((p) => p !== null).join(" ");
    return `<polyline points="${pts}" stroke="${COLORS[i % COLORS.length]}"/>`;
  }).join("");
  const legend = names.map((n, i) => {
    const last = c[n][c[n].length - 1];
    return `<span style="color:${COLORS[i % COLORS.length]}">${esc(n)} ${esc(format(last))}</span>`;
  }).join("");
  return `<div class="card" id="chart-${id}"><h3>${esc(title)}</h3>
    <svg class="chart" viewBox="0 0 ${w} ${h}" preserveAspectRatio="none">${lines}</svg>
    <div class="legend">${legend || '<span class="muted">waiting for samples</span>'}</div></div>`;
}

let last = null;

function quantile(prev, cur, q) {
  // Buckets: [upper bound seconds | null for +Inf, count]; counts per bucket, not cumulative.
  const d = cur.map((b, i) => [b[0], b[1] - (prev ? prev[i][1] : 0)]);
  const total = d.reduce((a, b) => a + b[1], 0);
  if (total === 0) return null;
  let seen = 0;
  for (const [bound, n] of d) {
    seen += n;
    if (seen >= q * total) return bound === null ? null : bound;
  }
  return null;
}

async function sample() {
  const s = await api("/api/v1/stats");
  if (last) {
    const dt = Math.max((s.now_ms - last.now_ms) / 1000, 0.001);
    const t = s.totals, p = last.totals;
    push("throughput", "in", (t.produced_records - p.produced_records) / dt);
    push("throughput", "out", (t.fetched_records - p.fetched_records) / dt);
    push("latency", "p50", quantile(p.produce_latency, t.produce_latency, 0.5));
    push("latency", "p99", quantile(p.produce_latency, t.produce_latency, 0.99));
  }
  push("upload", "records", s.upload_lag_records);
  push("uploadsecs", "oldest", s.upload_lag_seconds);
  for (const g of s.groups) push("groups", g.group, g.lag);
  last = s;
  return s;
}

// ---- pages ------------------------------------------------------------------------------

async function pageOverview() {
  setActive("overview");
  const o = await api("/api/v1/overview");
  const draw = (s) => {
    main.innerHTML = `<h1>Cluster</h1>
      <p class="muted">cluster <code>${esc(o.cluster_id)}</code> · this node ${esc(o.node_id)} · version ${esc(o.version)} ·
      ${num(o.topics)} topics, ${num(o.partitions)} partitions · console ${o.admin ? "may change things" : "read-only"}</p>
      <h2>Nodes</h2>
      ${table("nodes-table", [{ label: "node" }, { label: "gRPC" }, { label: "Kafka" }, { label: "partitions led", num: true }],
        o.nodes.map((n) => [esc(n.node_id), `<code>${esc(n.addr)}</code>`, `<code>${esc(n.kafka_addr || "–")}</code>`, num(n.partitions_led)]))}
      <h2>Live (this node, every 2 s)</h2>
      <div class="cards">
        ${chart("throughput", "Records / s", (v) => (v === undefined || v === null ? "" : num(Math.round(v))))}
        ${chart("latency", "Produce latency (bucket bound)", (v) => (v === undefined || v === null ? "–" : secs(v)))}
        ${chart("upload", "Upload lag (records not yet in the object store)", (v) => num(v))}
        ${chart("uploadsecs", "Upload lag (oldest record waiting)", (v) => secs(v))}
        ${chart("groups", "Consumer group lag (records)", (v) => num(v))}
      </div>
      <p class="muted">hot tier on this node: ${s ? bytes(s.hot_bytes) : "–"} · partitions led here: ${s ? num(s.partitions_led) : "–"}</p>`;
  };
  draw(await sample());
  timer = setInterval(async () => {
    try {
      draw(await sample());
    } catch (e) {
      main.insertAdjacentHTML("afterbegin", error(e));
    }
  }, 2000);
}

async function pageTopics() {
  setActive("topics");
  const t = await api("/api/v1/topics");
  const create = overview && overview.admin
    ? `<form class="inline" id="create-topic"><label>name<input name="name" required></label>
       <label>partitions<input name="partitions" type="number" min="1" value="1"></label><button>Create topic</button></form>`
    : "";
  main.innerHTML = `<h1>Topics</h1>${create}<div id="form-error"></div>
    ${table("topics-table", [{ label: "topic" }, { label: "partitions", num: true }, { label: "records", num: true },
      { label: "hot", num: true }, { label: "cold", num: true }, { label: "cold objects", num: true },
      { label: "retention" }, { label: "cleanup" }],
      t.topics.map((x) => [`<a href="#/topics/${encodeURIComponent(x.name)}">${esc(x.name)}</a>`, num(x.partitions), num(x.records),
        bytes(x.hot_bytes), bytes(x.cold_bytes), num(x.cold_objects),
        esc(x.retention_ms ? secs(x.retention_ms / 1000) : "forever") + (x.retention_bytes ? ` · ${bytes(x.retention_bytes)}` : ""),
        esc(x.cleanup_policy)]))}`;
  const f = document.getElementById("create-topic");
  if (f) {
    f.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        await api("/api/v1/topics", { method: "POST", headers: { "content-type": "application/json" },
          body: JSON.stringify({ name: f.elements.name.value, partitions: Number(f.elements.partitions.value) }) });
        route();
      } catch (e) {
        document.getElementById("form-error").innerHTML = error(e);
      }
    });
  }
}

async function pageTopic(name) {
  setActive("topics");
  const t = await api(`/api/v1/topics/${encodeURIComponent(name)}`);
  const cfg = Object.entries(t.config || {}).map(([k, v]) => `<code>${esc(k)}=${esc(v)}</code>`).join(" ");
  main.innerHTML = `<h1>Topic ${esc(t.name)}</h1>
    <p class="muted">${num(t.partitions)} partitions · ${num(t.records)} records · hot ${bytes(t.hot_bytes)} · cold ${bytes(t.cold_bytes)}
    in ${num(t.cold_objects)} objects · retention ${t.retention_ms ? secs(t.retention_ms / 1000) : "forever"}${t.retention_bytes ? " / " + bytes(t.retention_bytes) : ""}
    · cleanup ${esc(t.cleanup_policy)} ${cfg}</p>
    ${table("partitions-table", [{ label: "partition", num: true }, { label: "leader" }, { label: "epoch", num: true },
      { label: "log start", num: true }, { label: "high watermark", num: true }, { label: "in object store up to", num: true },
      { label: "hot", num: true }, { label: "hot segments", num: true }, { label: "cold", num: true }, { label: "cold objects", num: true },
      { label: "upload lag" }, { label: "" }],
      t.partition_details.map((p) => [num(p.partition), `<code>${esc(p.leader || "–")}</code>`, num(p.leader_epoch),
        num(p.log_start), num(p.high_watermark), num(p.committed), bytes(p.hot_bytes), num(p.hot_segments),
        bytes(p.cold_bytes), num(p.cold_objects), esc(secs(p.upload_lag_seconds)) + (p.upload_error ? ` <span class="error">${esc(p.upload_error)}</span>` : ""),
        `<a href="#/records?topic=${encodeURIComponent(t.name)}&partition=${p.partition}&offset=${p.log_start}">browse</a>`]))}`;
}

async function pageGroups() {
  setActive("groups");
  const g = await api("/api/v1/groups");
  main.innerHTML = `<h1>Consumer groups</h1>
    ${table("groups-table", [{ label: "group" }, { label: "state" }, { label: "members", num: true }, { label: "type" }, { label: "lag", num: true }],
      g.groups.map((x) => [`<a href="#/groups/${encodeURIComponent(x.group)}">${esc(x.group)}</a>`, esc(x.state), num(x.members),
        esc(x.protocol_type || "–"), num(x.lag)]))}`;
}

async function pageGroup(name) {
  setActive("groups");
  const g = await api(`/api/v1/groups/${encodeURIComponent(name)}`);
  const del = overview && overview.admin ? `<button class="danger" id="delete-group">Delete group</button><div id="form-error"></div>` : "";
  main.innerHTML = `<h1>Group ${esc(g.group)}</h1>
    <p class="muted">${esc(g.state)} · generation ${esc(g.generation)} · ${g.classic ? "classic protocol" : "server-side assignment"}
    ${g.assignor ? "· assignor " + esc(g.assignor) : ""} · coordinator node ${esc(g.coordinator ?? "–")}</p>${del}
    <h2>Members</h2>
    ${table("members-table", [{ label: "member" }, { label: "instance" }, { label: "client" }, { label: "host" }, { label: "assigned" }],
      g.members.map((m) => [`<code>${esc(m.member_id)}</code>`, esc(m.instance_id || "–"), esc(m.client_id), esc(m.host),
        esc(m.assigned.map((a) => `${a.topic}/${a.partition}`).join(", ") || "–")]))}
    <h2>Lag</h2>
    ${table("group-lag-table", [{ label: "topic" }, { label: "partition", num: true }, { label: "committed", num: true },
      { label: "high watermark", num: true }, { label: "lag", num: true }, { label: "behind" }, { label: "owner" }],
      g.partitions.map((p) => [`<a href="#/topics/${encodeURIComponent(p.topic)}">${esc(p.topic)}</a>`, num(p.partition), num(p.committed),
        num(p.high_watermark), num(p.lag), esc(secs(p.lag_seconds)), `<code>${esc(p.owner || "–")}</code>`]))}`;
  const b = document.getElementById("delete-group");
  if (b) {
    b.addEventListener("click", async () => {
      try {
        await api(`/api/v1/groups/${encodeURIComponent(name)}`, { method: "DELETE" });
        location.hash = "#/groups";
      } catch (e) {
        document.getElementById("form-error").innerHTML = error(e);
      }
    });
  }
}

function decode(v, format) {
  if (v === null) return '<span class="muted">null</span>';
  const raw = atob(v.base64);
  const u8 = Uint8Array.from(raw, (c) => c.charCodeAt(0));
  let shown;
  if (format === "hex") {
    shown = Array.from(u8, (b) => b.toString(16).padStart(2, "0")).join(" ");
  } else {
    const text = new TextDecoder("utf-8", { fatal: false }).decode(u8);
    shown = text;
    if (format === "json" && !v.truncated) {
      try {
        shown = JSON.stringify(JSON.parse(text), null, 2);
      } catch (_) {
        shown = text + "\n(not JSON)";
      }
    }
  }
  const size = v.truncated ? ` <span class="muted">(first ${num(u8.length)} of ${num(v.size)} bytes)</span>` : "";
  return `<pre class="value">${esc(shown)}</pre>${size}`;
}

async function pageRecords(params) {
  setActive("records");
  const topics = (await api("/api/v1/topics")).topics.map((t) => t.name);
  const topic = params.get("topic") || topics[0] || "";
  const format = params.get("format") || "text";
  const options = topics.map((t) => `<option ${t === topic ? "selected" : ""}>${esc(t)}</option>`).join("");
  main.innerHTML = `<h1>Records</h1>
    <form class="inline" id="browse">
      <label>topic<select name="topic">${options}</select></label>
      <label>partition<input name="partition" type="number" min="0" value="${esc(params.get("partition") || 0)}"></label>
      <label>offset<input name="offset" type="number" min="0" value="${esc(params.get("offset") || "")}" placeholder="first"></label>
      <label>or time (UTC)<input name="time" type="datetime-local" step="1" value="${esc(params.get("time") || "")}"></label>
      <label>records<input name="limit" type="number" min="1" max="500" value="${esc(params.get("limit") || 20)}"></label>
      <label>show as<select name="format">${["text", "json", "hex"].map((f) => `<option ${f === format ? "selected" : ""}>${f}</option>`).join("")}</select></label>
      <button>Read</button>
    </form><div id="records"></div>`;
  const f = document.getElementById("browse");
  f.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const k of ["topic", "partition", "offset", "time", "limit", "format"]) if (f.elements[k].value) q.set(k, f.elements[k].value);
    location.hash = "#/records?" + q.toString();
  });
  if (!topic) {
    document.getElementById("records").innerHTML = '<p class="muted">No topics yet.</p>';
    return;
  }
  const q = new URLSearchParams({ topic, partition: params.get("partition") || "0", limit: params.get("limit") || "20" });
  if (params.get("time")) q.set("timestamp", String(Date.parse(params.get("time") + "Z")));
  else if (params.get("offset")) q.set("offset", params.get("offset"));
  const out = document.getElementById("records");
  try {
    const r = await api("/api/v1/records?" + q.toString());
    out.innerHTML = `<p class="muted">partition ${num(r.partition)} from offset ${num(r.start)} · log ${num(r.log_start)} to ${num(r.high_watermark)} ·
      read from <span class="tag" id="records-source">${esc(r.source || "nowhere")}</span></p>
      ${table("records-table", [{ label: "offset", num: true }, { label: "time (UTC)" }, { label: "key" }, { label: "value" }, { label: "headers" }],
        r.records.map((x) => [num(x.offset), esc(time(x.timestamp)), decode(x.key, format), decode(x.value, format),
          x.headers.map((h) => `<code>${esc(h.key)}</code>: ${decode(h.value, "text")}`).join("")]))}`;
  } catch (e) {
    out.innerHTML = error(e);
  }
}

async function pageSql() {
  setActive("sql");
  const topics = (await api("/api/v1/topics")).topics.map((t) => t.name);
  const example = topics.length ? `SELECT partition, "offset", timestamp, CAST(value AS VARCHAR) AS value\nFROM "${topics[0]}"\nORDER BY "offset" LIMIT 20` : "SHOW TABLES";
  main.innerHTML = `<h1>SQL</h1>
    <p class="muted">Runs on this node's engine over the hot and cold tiers, as <code>tierlog sql</code> does (rows and time are limited).</p>
    <form id="sql-form"><textarea name="sql" spellcheck="false">${esc(sessionStorage.getItem("sql") || example)}</textarea>
    <p><button>Run</button></p></form><div id="sql-result"></div>`;
  const f = document.getElementById("sql-form");
  f.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const text = f.elements.sql.value;
    sessionStorage.setItem("sql", text);
    const out = document.getElementById("sql-result");
    out.innerHTML = '<p class="muted">Running…</p>';
    try {
      const r = await api("/api/v1/sql", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ sql: text }) });
      out.innerHTML = `<p class="muted">${num(r.rows.length)} rows${r.truncated ? ` (cut at ${num(r.max_rows)})` : ""} in ${num(r.elapsed_ms)} ms</p>
        ${table("sql-table", r.columns.map((c) => ({ label: c })), r.rows.map((row) => row.map((c) => (c === null ? '<span class="muted">null</span>' : esc(c)))))}`;
    } catch (e) {
      out.innerHTML = error(e);
    }
  });
}

// ---- routing ----------------------------------------------------------------------------

async function route() {
  if (timer) { clearInterval(timer); timer = null; }
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  try {
    if (!overview) {
      overview = await api("/api/v1/overview");
      document.getElementById("cluster").textContent = `cluster ${overview.cluster_id} · node ${overview.node_id}`;
    }
    if (parts.length === 0) await pageOverview();
    else if (parts[0] === "topics" && parts.length === 1) await pageTopics();
    else if (parts[0] === "topics") await pageTopic(parts[1]);
    else if (parts[0] === "groups" && parts.length === 1) await pageGroups();
    else if (parts[0] === "groups") await pageGroup(parts[1]);
    else if (parts[0] === "records") await pageRecords(params);
    else if (parts[0] === "sql") await pageSql();
    else main.innerHTML = error(`no page ${path}`);
  } catch (e) {
    main.innerHTML = error(e);
  }
  document.body.dataset.page = parts[0] || "overview";
  document.body.dataset.ready = "1";
}

window.addEventListener("hashchange", () => { document.body.dataset.ready = ""; route(); });
route();
