// The dashboard's only script: polls the JSON API once a second and redraws.
"use strict";

const token = new URLSearchParams(location.search).get("token");
const SVG = "http://www.w3.org/2000/svg";

async function api(path) {
  const url = token ? `${path}?token=${encodeURIComponent(token)}` : path;
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

function el(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function num(x) { return x === null || x === undefined ? "-" : Number(x).toLocaleString("en"); }
function rate(x) { return `${Math.round(x).toLocaleString("en")}/s`; }
function pct(x) { return x === null || x === undefined ? "-" : `${Math.round(x * 100)}%`; }
function bytes(b) {
  if (b >= 1 << 20) return `${(b / (1 << 20)).toFixed(1)} MiB`;
  if (b >= 1 << 10) return `${(b / (1 << 10)).toFixed(1)} KiB`;
  return `${b} B`;
}
function ms(x) { return x === null || x === undefined ? "-" : `${x} ms`; }

function drawGraph(job) {
  const svg = document.getElementById("graph");
  svg.replaceChildren();
  const defs = el("defs", {});
  const marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
    markerWidth: 10, markerHeight: 10, markerUnits: "userSpaceOnUse", orient: "auto" });
  marker.appendChild(el("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#56627a" }));
  defs.appendChild(marker);
  svg.appendChild(defs);
  // depth = longest path from a source; operators of one depth stack vertically
  const depth = {};
  for (const op of job.operators) {
    const ins = job.edges.filter((e) => e.to === op.id);
    depth[op.id] = ins.length ? Math.max(...ins.map((e) => depth[e.from] + 1)) : 0;
  }
  const rows = {};
  const pos = {};
  const W = 150, H = 46, GX = 80, GY = 30, X0 = 20, Y0 = 30;
  for (const op of job.operators) {
    const d = depth[op.id];
    rows[d] = (rows[d] || 0) + 1;
    pos[op.id] = { x: X0 + d * (W + GX), y: Y0 + (rows[d] - 1) * (H + GY) };
  }
  for (const chain of job.chains) {
    const ps = chain.operators.map((id) => pos[id]);
    const x1 = Math.min(...ps.map((p) => p.x)) - 8, y1 = Math.min(...ps.map((p) => p.y)) - 8;
    const x2 = Math.max(...ps.map((p) => p.x)) + W + 8, y2 = Math.max(...ps.map((p) => p.y)) + H + 8;
    svg.appendChild(el("rect", { class: "chain", x: x1, y: y1, width: x2 - x1, height: y2 - y1 }));
    svg.appendChild(el("text", { class: "edge-label", x: x1 + 34, y: y1 - 4 },
      `task ×${job.parallelism}`));
  }
  for (const e of job.edges) {
    const a = pos[e.from], b = pos[e.to];
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2;
    svg.appendChild(el("path", { class: `edge ${e.chained ? "chained" : "network"}`,
      d: `M ${x1} ${y1} C ${x1 + GX / 2} ${y1}, ${x2 - GX / 2} ${y2}, ${x2} ${y2}` }));
    if (!e.chained || e.output !== "main") {
      const label = e.output === "main" ? e.partitioning : `${e.partitioning} (${e.output})`;
      svg.appendChild(el("text", { class: "edge-label", x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 12 }, label));
    }
  }
  for (const op of job.operators) {
    const p = pos[op.id];
    const g = el("g", { class: `node ${op.kind}`, "data-operator": op.name });
    g.appendChild(el("rect", { x: p.x, y: p.y, width: W, height: H }));
    g.appendChild(el("text", { x: p.x + W / 2, y: p.y + 19 }, op.name));
    g.appendChild(el("text", { x: p.x + W / 2, y: p.y + 36 }, `${op.kind} · p=${job.parallelism}`));
    svg.appendChild(g);
  }
  const maxRows = Math.max(...Object.values(rows));
  const maxDepth = Math.max(...Object.values(depth));
  svg.setAttribute("viewBox", `0 0 ${X0 * 2 + (maxDepth + 1) * (W + GX)} ${Y0 + maxRows * (H + GY)}`);
}

function fill(id, rows) {
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren();
  for (const cells of rows) {
    const tr = document.createElement("tr");
    for (const c of cells) {
      const td = document.createElement("td");
      if (c instanceof Node) td.appendChild(c); else td.textContent = c;
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
}

function breaker(state) {
  const span = document.createElement("span");
  span.className = `breaker-${state}`;
  span.textContent = state;
  return span;
}

function counts(byKey) {
  return Object.entries(byKey).map(([k, n]) => `${k}: ${num(n)}`).join(", ");
}

function status(s) {
  const span = document.createElement("span");
  span.className = s;
  span.textContent = s;
  return span;
}

async function refresh() {
  try {
    const [ops, cps, lag, st, conns, workers] = await Promise.all([
      api("api/operators"), api("api/checkpoints"), api("api/lag"), api("api/status"),
      api("api/connectors"), api("api/workers")]);
    fill("workers", workers.map((w) => [w.worker, w.host, w.placed_on, w.slots, status(w.state),
      w.subtasks.join(", ") || "-"]));
    fill("operators", ops.map((o) => [o.operator, o.kind, o.parallelism, rate(o.in_rate),
      rate(o.out_rate), num(o.records_in), num(o.records_out), num(o.filtered), num(o.late),
      num(o.dead_lettered), pct(o.backpressured_ratio), pct(o.input_usage), pct(o.output_usage),
      num(o.watermark_ms)]));
    fill("checkpoints", cps.slice(-15).reverse().map((c) => [c.checkpoint_id, status(c.status),
      ms(c.duration_ms), ms(c.alignment_ms), bytes(c.full_bytes), bytes(c.incremental_bytes)]));
    fill("lag", Object.entries(lag).map(([split, n]) => [split, num(n)]));
    fill("connectors", conns.map((c) => [c.operator, c.subtask, breaker(c.breaker),
      num(c.rows_written), counts(c.rejected), counts(c.retries), num(c.transactions),
      c.transactions ? ms(Math.round(1000 * c.transaction_s / c.transactions)) : "-"]));
    const age = st.checkpoint_age_ms === null ? "" : ` (${(st.checkpoint_age_ms / 1000).toFixed(1)} s ago)`;
    document.getElementById("progress").textContent =
      `in ${rate(st.in_per_s)} · out ${rate(st.out_per_s)} · watermark ${num(st.watermark_ms)} · ` +
      `lag ${num(st.lag_records)} · last checkpoint ${st.last_checkpoint ?? "none"}${age} · ` +
      `restarts ${st.restarts} · dead letters ${st.dead_letters}`;
  } catch (err) {
    document.getElementById("progress").textContent = `not reachable: ${err.message}`;
  }
}

async function start() {
  const job = await api("api/job");
  document.getElementById("job").textContent = `${job.job} (parallelism ${job.parallelism})`;
  drawGraph(job);
  await refresh();
  setInterval(refresh, 1000);
}

start().catch((err) => {
  document.getElementById("progress").textContent = `cannot load the job: ${err.message}`;
});
