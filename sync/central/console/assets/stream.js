// Stream page: a live tail of a central stream over server-sent events, filterable by key, pausable.
"use strict";
const maxRows = 200;
let source = null, paused = false, received = 0, whilePaused = 0, shown = [], dirty = false;

function keyFilter() { return document.getElementById("key").value.trim(); }

function matches(m) { const k = keyFilter(); return !k || m.key.startsWith(k); }

function open(stream) {
  if (source) source.close();
  shown = []; dirty = true;
  source = new EventSource("/console/api/tail/" + encodeURIComponent(stream));
  source.onopen = () => status("live · tailing " + stream);
  source.onerror = () => {
    status("tail interrupted: reconnecting", true);
    api("/console/api/streams").catch(() => {}); // a 401 here sends the browser to the login
  };
  source.onmessage = ev => {
    received++;
    window.tributary.updates++;
    const m = JSON.parse(ev.data);
    if (!matches(m)) return;
    if (paused) whilePaused++; // kept (the newest maxRows), shown on resume
    shown.push(m);
    if (shown.length > maxRows) shown.splice(0, shown.length - maxRows);
    dirty = true;
  };
}

function render() {
  document.getElementById("counts").textContent = received + " received" + (paused ? " · paused, " + whilePaused + " new not shown yet" : "");
  if (!dirty || paused) return;
  dirty = false;
  const body = document.querySelector("#tail tbody");
  body.replaceChildren(...shown.filter(matches).reverse().map(m => el("tr", { "data-key": m.key },
    el("td", { text: new Date(m.timestamp).toLocaleTimeString() }), el("td", { text: m.key }),
    el("td", { class: "hide-narrow", text: m.edge }), el("td", { class: "num hide-narrow", text: m.partition + ":" + m.offset }),
    el("td", { class: "value", text: m.value !== undefined ? JSON.stringify(m.value) : "(" + (m.value_base64 || "").length + " bytes base64)" }))));
}

document.addEventListener("DOMContentLoaded", async () => {
  const sel = document.getElementById("stream");
  const params = new URLSearchParams(location.search);
  document.getElementById("key").value = params.get("key") || "";
  document.getElementById("key").addEventListener("input", () => { dirty = true; });
  document.getElementById("pause").addEventListener("click", ev => {
    paused = !paused; whilePaused = 0;
    ev.target.textContent = paused ? "Resume" : "Pause";
    ev.target.setAttribute("aria-pressed", paused);
    dirty = true;
  });
  sel.addEventListener("change", () => open(sel.value));
  setInterval(render, 250);
  try {
    const streams = await api("/console/api/streams");
    sel.replaceChildren(...streams.map(s => el("option", { value: s.name, text: s.name + " (" + s.partitions + " partitions)" })));
    const want = params.get("stream") || (streams.some(s => s.name === "readings") ? "readings" : streams[0] && streams[0].name);
    if (want) { sel.value = want; open(want); } else status("no stream yet: no edge has forwarded anything");
  } catch (e) { status(e.message, true); }
});
