// Shared helpers of the console's pages: data fetches, formatting, charts, live polling.
"use strict";
window.tributary = { charts: {}, updates: 0, errors: 0 };

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
}

function loginAgain() {
  location.href = "/console/login?next=" + encodeURIComponent(location.pathname + location.search);
}

async function api(path) {
  const r = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (r.status === 401) { loginAgain(); throw new Error("login needed"); }
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || ("HTTP " + r.status));
  return body;
}

function status(text, bad) {
  let s = document.getElementById("status");
  if (!s) { s = el("div", { id: "status", role: "status" }); document.body.append(s); }
  s.textContent = text;
  s.className = bad ? "error" : "";
}

// poll runs fn now and again every ms after it finishes, so a slow answer never piles up.
function poll(fn, ms) {
  const run = async () => {
    try {
      await fn();
      window.tributary.updates++;
      status("live · updated " + new Date().toLocaleTimeString());
    } catch (e) {
      window.tributary.errors++;
      status("update failed: " + e.message + " (retrying)", true);
    }
    setTimeout(run, ms);
  };
  run();
}

function fmtNum(n, digits) {
  if (n === null || n === undefined || Number.isNaN(n)) return "—";
  return Number(n).toLocaleString(undefined, { maximumFractionDigits: digits === undefined ? 0 : digits });
}

function fmtRate(n) { return n >= 100 ? fmtNum(n, 0) : fmtNum(n, 1); }

function fmtDuration(s) {
  if (s === null || s === undefined) return "—";
  if (s < 1) return "<1 s";
  if (s < 90) return Math.round(s) + " s";
  if (s < 5400) return Math.round(s / 60) + " min";
  if (s < 172800) return (s / 3600).toFixed(1) + " h";
  return Math.round(s / 86400) + " d";
}

function ago(t) {
  if (!t) return "never";
  const s = (Date.now() - Date.parse(t)) / 1000;
  return fmtDuration(Math.max(s, 0)) + " ago";
}

function badge(state) { return el("span", { class: "badge " + state, text: state }); }

// seriesData turns a history Series into uPlot's [times, values].
function seriesData(s) {
  const t0 = Date.parse(s.start) / 1000;
  return [s.values.map((_, i) => t0 + i * s.step_s), s.values];
}

function chartWidth(box) { return Math.max(box.clientWidth || 300, 200); }

// chart draws (or redraws) the uPlot chart called name inside box.
function chart(name, box, opts, data) {
  const have = window.tributary.charts[name];
  if (have) { have.setData(data); return have; }
  const u = new uPlot(Object.assign({ width: chartWidth(box), height: 220 }, opts), data, box);
  window.tributary.charts[name] = u;
  window.addEventListener("resize", () => u.setSize({ width: chartWidth(box), height: u.height }));
  return u;
}

// spark draws a small line without axes.
function spark(name, box, data) {
  return chart(name, box, {
    width: 120, height: 32, legend: { show: false }, cursor: { show: false },
    scales: { x: { time: true }, y: { range: (u, lo, hi) => [0, Math.max(hi, 1)] } },
    axes: [{ show: false }, { show: false }],
    series: [{}, { stroke: "#1f6feb", fill: "rgba(31,111,235,.15)", width: 1 }],
  }, data);
}

// nav marks the current page in the header.
document.addEventListener("DOMContentLoaded", () => {
  for (const a of document.querySelectorAll("header a[data-page]")) {
    if (a.dataset.page === document.body.dataset.page) a.classList.add("here");
  }
});
