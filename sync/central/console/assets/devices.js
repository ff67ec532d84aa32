// Devices page: search by id or prefix; one device's last reading and a live chart of a field.
"use strict";
let current = null, readings = [], nextOffset = null, field = null;
const maxPoints = 2000;

// numericFields lists the paths of the numbers in a JSON value ("a.b" for nested ones).
function numericFields(v, prefix, out) {
  out = out || [];
  if (v && typeof v === "object" && !Array.isArray(v)) {
    for (const [k, x] of Object.entries(v)) numericFields(x, prefix ? prefix + "." + k : k, out);
  } else if (typeof v === "number" && prefix) out.push(prefix);
  return out;
}

function pick(v, path) {
  for (const k of path.split(".")) { if (v === null || typeof v !== "object") return null; v = v[k]; }
  return typeof v === "number" ? v : null;
}

function stat(label, value) { return el("div", {}, el("span", { class: "muted", text: label }), el("b", { text: value })); }

function drawChart() {
  if (!field) return;
  const xs = readings.map(r => Date.parse(r.timestamp) / 1000), ys = readings.map(r => pick(r.value, field));
  const u = window.tributary.charts.device;
  if (u && u.series[1].label !== field) { u.destroy(); delete window.tributary.charts.device; }
  chart("device", document.getElementById("chart"), {
    scales: { x: { time: true } },
    series: [{}, { label: field, stroke: "#1f6feb", width: 2, points: { show: readings.length < 200 } }],
  }, [xs, ys]);
  document.getElementById("points").textContent = readings.length + " readings from central's log";
}

async function loadReadings() {
  const q = nextOffset === null ? "window=10m&max=1000" : "from=" + nextOffset;
  const v = await api("/console/api/devices/" + encodeURIComponent(current) + "/readings?" + q);
  nextOffset = v.next;
  readings = readings.concat(v.readings.filter(r => r.value !== null)).slice(-maxPoints);
}

async function showDevice() {
  const d = await api("/console/api/devices/" + encodeURIComponent(current));
  document.getElementById("detail").hidden = false;
  document.getElementById("dtitle").textContent = "Device " + d.id;
  const edge = el("a", { href: "/console/edges/" + encodeURIComponent(d.edge), text: d.edge || "—" });
  document.getElementById("dstats").replaceChildren(
    el("div", {}, el("span", { class: "muted", text: "Edge" }), el("b", {}, edge)),
    stat("Readings/s", fmtRate(d.rate)), stat("Last seen", ago(d.last_seen)),
    stat("Stream", d.stream + " / " + d.partition));
  const last = d.last_value !== undefined ? JSON.stringify(d.last_value, null, 2) : d.last_value_text;
  document.getElementById("last").textContent = last + (d.last_value_cut ? "\n… (cut at 1 KiB)" : "");
  const sel = document.getElementById("field");
  const fields = d.last_value !== undefined ? numericFields(d.last_value, "") : [];
  if (sel.options.length !== fields.length || fields.some((f, i) => sel.options[i].value !== f)) {
    sel.replaceChildren(...fields.map(f => el("option", { value: f, text: f })));
    if (!fields.includes(field)) field = fields.find(f => !/^(seq|ts|time|timestamp)$/i.test(f)) || fields[0] || null;
    sel.value = field || "";
  }
  await loadReadings();
  drawChart();
}

async function search() {
  const prefix = document.getElementById("prefix").value.trim();
  const v = await api("/console/api/devices?limit=200&prefix=" + encodeURIComponent(prefix));
  document.getElementById("count").textContent = v.total + " matching" + (v.total > v.devices.length ? ", first " + v.devices.length + " shown" : "");
  document.querySelector("#devices tbody").replaceChildren(...v.devices.map(d => el("tr", { "data-device": d.id },
    el("td", {}, el("a", { href: "?id=" + encodeURIComponent(d.id), text: d.id, onclick: ev => { ev.preventDefault(); select(d.id); } })),
    el("td", { text: d.edge }), el("td", { class: "num", text: fmtRate(d.rate) }), el("td", { text: ago(d.last_seen) }),
    el("td", { class: "hide-narrow", text: d.stream }))));
  // An exact id opens the device.
  if (prefix && v.devices.some(d => d.id === prefix) && current !== prefix) select(prefix);
}

function select(id) {
  current = id; readings = []; nextOffset = null;
  history.replaceState(null, "", "?id=" + encodeURIComponent(id));
  showDevice().catch(e => status(e.message, true));
}

document.addEventListener("DOMContentLoaded", () => {
  const params = new URLSearchParams(location.search);
  const input = document.getElementById("prefix");
  input.value = params.get("prefix") || "";
  if (params.get("id")) current = params.get("id");
  let timer;
  input.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(() => search().catch(e => status(e.message, true)), 250); });
  document.getElementById("field").addEventListener("change", ev => { field = ev.target.value; drawChart(); });
  poll(async () => {
    await search();
    if (current) await showDevice();
  }, 2000);
});
