// Fleet page: every edge with its state, rates and backlog, sortable, refreshed every 2 s.
"use strict";
const severity = { refused: 0, stalled: 1, silent: 2, behind: 3, forwarding: 4 };
let sortKey = "state", sortDir = 1, edges = [];
const rows = new Map();

function cmp(a, b) {
  let x = a[sortKey], y = b[sortKey];
  if (sortKey === "state") { x = severity[x]; y = severity[y]; }
  if (sortKey === "last_seen") { x = x ? Date.parse(x) : 0; y = y ? Date.parse(y) : 0; }
  if (x === undefined || x === null) x = -Infinity;
  if (y === undefined || y === null) y = -Infinity;
  const c = typeof x === "string" ? x.localeCompare(y) : x - y;
  return c * sortDir || a.id.localeCompare(b.id);
}

function row(e) {
  let r = rows.get(e.id);
  if (!r) {
    const cells = {};
    const tr = el("tr", { "data-edge": e.id });
    const add = (k, cls) => { const td = el("td", { class: cls || "" }); cells[k] = td; tr.append(td); };
    add("id"); add("state"); add("last_seen"); add("rate", "num"); add("spark");
    add("behind", "num"); add("oldest", "num"); add("gaps", "num hide-narrow"); add("devices", "num hide-narrow"); add("version", "hide-narrow");
    cells.id.append(el("a", { href: "/console/edges/" + encodeURIComponent(e.id), text: e.id }));
    const box = el("div", { class: "spark" });
    cells.spark.append(box);
    r = { tr, cells, box };
    rows.set(e.id, r);
  }
  const c = r.cells;
  r.tr.className = "state-" + e.state;
  c.state.replaceChildren(badge(e.state));
  c.state.title = e.reason;
  c.last_seen.textContent = ago(e.last_seen);
  c.rate.textContent = fmtRate(e.rate);
  c.behind.textContent = fmtNum(e.records_behind);
  c.oldest.textContent = e.oldest_unforwarded_s === undefined ? "—" : fmtDuration(e.oldest_unforwarded_s);
  c.gaps.textContent = fmtNum(e.gap_records);
  c.devices.textContent = fmtNum(e.devices);
  c.version.textContent = e.version || "—";
  if (e.rate_history) spark("fleet:" + e.id, r.box, seriesData(e.rate_history));
  return r.tr;
}

function render() {
  const body = document.querySelector("#edges tbody");
  const sorted = edges.slice().sort(cmp);
  const keep = new Set(sorted.map(e => e.id));
  for (const [id, r] of rows) if (!keep.has(id)) { r.tr.remove(); rows.delete(id); delete window.tributary.charts["fleet:" + id]; }
  for (const e of sorted) body.append(row(e)); // append moves a row: this is the reorder
  if (!sorted.length) body.replaceChildren(el("tr", {}, el("td", { colspan: 10, class: "muted", text: "No edge is registered yet: add one with `tributary central edges add ID`." })));
  const counts = {};
  for (const e of edges) counts[e.state] = (counts[e.state] || 0) + 1;
  document.getElementById("summary").replaceChildren(...Object.keys(severity).filter(s => counts[s]).map(s => el("span", {}, badge(s), " " + counts[s])));
  for (const th of document.querySelectorAll("th.sort")) {
    th.setAttribute("aria-sort", th.dataset.key === sortKey ? (sortDir > 0 ? "ascending" : "descending") : "none");
  }
}

document.addEventListener("DOMContentLoaded", () => {
  for (const th of document.querySelectorAll("th.sort")) {
    th.addEventListener("click", () => {
      if (sortKey === th.dataset.key) sortDir = -sortDir; else { sortKey = th.dataset.key; sortDir = 1; }
      render();
    });
  }
  poll(async () => {
    const v = await api("/console/api/fleet");
    edges = v.edges;
    render();
    const h = v.history;
    document.getElementById("history").textContent = "Plot history: " + fmtDuration(h.window_s) + " at " + h.step_s +
      " s per point, " + h.devices + " devices and " + h.edges + " edges held, bounded at " + fmtNum(h.bound_bytes / 1048576, 1) + " MiB.";
  }, 2000);
});
