// The edge status page: polls /status/api and the server-drawn plots every 2 s and fills the
// page in. Plain JS, no library: the edge binary carries it.
"use strict";

const pollMs = 2000;

function $(id) { return document.getElementById(id); }

function fmtNumber(v) {
  if (v >= 1e9) return (v / 1e9).toFixed(1) + " G";
  if (v >= 1e6) return (v / 1e6).toFixed(1) + " M";
  if (v >= 1e4) return (v / 1e3).toFixed(1) + " k";
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

function fmtBytes(v) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? v : v.toFixed(1)) + " " + units[i];
}

function fmtAge(s) {
  if (s <= 0) return "none";
  if (s < 90) return s.toFixed(1) + " s";
  if (s < 5400) return (s / 60).toFixed(1) + " min";
  return (s / 3600).toFixed(1) + " h";
}

function fillTable(id, rows, empty) {
  const body = $(id);
  body.replaceChildren();
  if (rows.length === 0) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = 6;
    td.className = "muted";
    td.textContent = empty;
    tr.append(td);
    body.append(tr);
    return;
  }
  for (const cells of rows) {
    const tr = document.createElement("tr");
    for (const c of cells) {
      const td = document.createElement("td");
      if (typeof c === "object" && c !== null) {
        td.textContent = c.text;
        td.className = c.cls || "";
      } else {
        td.textContent = c;
      }
      tr.append(td);
    }
    body.append(tr);
  }
}

function render(s) {
  $("edge-id").textContent = s.edge_id || "(no edge_id set)";
  document.title = "Tributary edge " + (s.edge_id || "");
  $("logout").hidden = !s.login_required;
  $("updated").textContent = "updated " + new Date(s.time).toLocaleTimeString();
  $("devices-count").textContent = String(s.devices.connected);
  $("readings-rate").textContent = fmtNumber(s.readings.per_second);
  $("readings-total").textContent = fmtNumber(s.readings.total);

  const d = s.disk;
  $("disk-used").textContent = fmtBytes(d.used_bytes);
  $("disk-quota").textContent = d.quota_bytes > 0 ? fmtBytes(d.quota_bytes) : "none";
  $("disk-policy").textContent = d.policy;
  $("disk-dropped").textContent = fmtNumber(d.dropped_records);
  const ratio = d.used_ratio === undefined ? 0 : Math.min(d.used_ratio, 1);
  $("disk-bar").style.width = (ratio * 100).toFixed(1) + "%";
  $("disk-bar").className = ratio > 0.9 ? "high" : "";

  const f = s.forwarding;
  const state = $("fwd-state");
  state.textContent = f.state;
  state.className = "state " + f.state;
  $("fwd-behind").textContent = fmtNumber(f.behind);
  $("fwd-age").textContent = fmtAge(f.oldest_unforwarded_age_seconds);
  $("fwd-rate").textContent = fmtNumber(f.per_second);
  $("fwd-central").textContent = f.enabled ? "to " + f.central + (f.last_error ? " · " + f.last_error : "") : "no central configured: readings stay on this edge";
  fillTable("lanes", f.lanes.map((l) => [l.stream + "/" + l.partition, l.end, l.acked, l.end - l.acked,
    l.stalled ? "stalled" : (l.connected ? "connected" : (l.end === l.acked && !l.last_error ? "idle, up to date" : "not connected")), { text: l.last_error || "", cls: "wrap" }]),
  f.enabled ? "no lanes yet" : "not forwarding");

  $("dead-total").textContent = "(" + s.dead_letters.total + " in the log)";
  fillTable("dead", s.dead_letters.recent.map((x) => [new Date(x.time).toLocaleString(), x.device,
    { text: x.topic, cls: "wrap" }, x.reason, x.bytes]), "none");

  const more = s.devices.connected - s.devices.clients.length;
  const rows = s.devices.clients.map((c) => [c.device, c.client_id, c.remote]);
  if (more > 0) rows.push(["… and " + more + " more", "", ""]);
  fillTable("clients", rows, "no device connected");
}

async function plot(id, chart) {
  const r = await fetch("/status/plot.svg?chart=" + chart, { cache: "no-store" });
  if (!r.ok) throw new Error("plot " + chart + ": HTTP " + r.status);
  const doc = new DOMParser().parseFromString(await r.text(), "image/svg+xml");
  $(id).replaceChildren(document.importNode(doc.documentElement, true));
}

async function poll() {
  try {
    const r = await fetch("/status/api", { cache: "no-store" });
    if (r.status === 401) { location.href = "/login"; return; }
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || "HTTP " + r.status);
    render(body);
    await Promise.all([plot("plot-rates", "rates"), plot("plot-backlog", "backlog")]);
    $("problem").hidden = true;
  } catch (e) {
    $("problem").textContent = "The edge did not answer (" + e.message + "); trying again.";
    $("problem").hidden = false;
  } finally {
    setTimeout(poll, pollMs);
  }
}

poll();
