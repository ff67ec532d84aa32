// Edge page: one edge's lanes, gaps and its throughput and backlog over time.
"use strict";
const edgeID = decodeURIComponent(location.pathname.split("/").pop());

function stat(label, value) { return el("div", {}, el("span", { class: "muted", text: label }), el("b", { text: value })); }

function cells(tr, vals) { for (const [v, cls] of vals) tr.append(el("td", { class: cls || "", text: v })); return tr; }

document.addEventListener("DOMContentLoaded", () => {
  document.title = edgeID + " · Tributary";
  const box = document.getElementById("chart");
  poll(async () => {
    const v = await api("/console/api/edges/" + encodeURIComponent(edgeID));
    document.getElementById("title").replaceChildren("Edge " + v.id + " ", badge(v.state));
    document.getElementById("reason").textContent = v.reason;
    document.getElementById("stats").replaceChildren(
      stat("Readings/s", fmtRate(v.rate)), stat("Records behind", fmtNum(v.records_behind)),
      stat("Oldest unforwarded", v.oldest_unforwarded_s === undefined ? "—" : fmtDuration(v.oldest_unforwarded_s)),
      stat("Gap records", fmtNum(v.gap_records) + " in " + v.gaps), stat("Last seen", ago(v.last_seen)),
      stat("Devices", fmtNum(v.devices)), stat("Version", v.version || "—"));
    const [t, rate] = seriesData(v.throughput);
    chart("edge", box, {
      scales: { x: { time: true }, rate: { range: (u, lo, hi) => [0, Math.max(hi, 1)] }, backlog: { range: (u, lo, hi) => [0, Math.max(hi, 1)] } },
      axes: [{}, { scale: "rate", label: "records/s" }, { scale: "backlog", side: 1, label: "behind", grid: { show: false } }],
      series: [{}, { label: "records/s", scale: "rate", stroke: "#1f6feb", width: 2 },
        { label: "records behind", scale: "backlog", stroke: "#cf222e", width: 2, dash: [6, 3] }],
    }, [t, rate, v.backlog.values]);
    const lanes = document.querySelector("#lanes tbody");
    lanes.replaceChildren(...v.lane_list.map(l => {
      const tr = el("tr", { class: "state-" + l.state });
      tr.append(el("td", { text: l.stream }), el("td", { class: "num", text: l.partition }), el("td", {}, badge(l.state)));
      return cells(tr, [[fmtNum(l.next), "num"], [fmtNum(l.edge_end), "num"], [fmtNum(l.behind), "num"],
        [ago(l.last_seen), "hide-narrow"], [ago(l.last_advance), "hide-narrow"], [l.epoch || "—", "num hide-narrow"]]);
    }));
    if (!v.lane_list.length) lanes.append(el("tr", {}, el("td", { colspan: 9, class: "muted", text: "No lane yet: the edge has not forwarded since central started." })));
    const gaps = document.querySelector("#gaps tbody");
    gaps.replaceChildren(...v.gap_list.map(g => cells(el("tr"), [[g.stream], [g.partition, "num"], [fmtNum(g.from), "num"],
      [fmtNum(g.to), "num"], [fmtNum(g.to - g.from), "num"], [g.reason], [g.time ? new Date(g.time).toLocaleString() : "—", "hide-narrow"]])));
    if (!v.gap_list.length) gaps.append(el("tr", {}, el("td", { colspan: 7, class: "muted", text: "No gaps: nothing was lost." })));
  }, 2000);
});
