// The console's only script of its own (no inline script is allowed by the page's CSP).
// Charts: every element with data-chart reads its data from data-src (JSON, same origin)
// and redraws every data-refresh seconds; htmx handles the rest of the live values.
(function () {
  "use strict";
  var palette = ["#1f6feb", "#cf222e", "#1a7f37", "#9a6700", "#8250df", "#0a7ea4", "#bf3989", "#57606a"];

  function roundsChart(el, data) {
    var names = Object.keys(data.series);
    var rows = [data.rounds].concat(names.map(function (n) { return data.series[n]; }));
    var series = [{ label: "round" }].concat(names.map(function (n, i) {
      return { label: n, stroke: palette[i % palette.length], width: 2, points: { show: true, size: 6 },
               scale: n.indexOf("loss") >= 0 ? "loss" : "y" };
    }));
    return { rows: rows, opts: { title: data.rounds.length ? "" : "waiting for the first round…",
      series: series, scales: { x: { time: false } },
      axes: [{ label: "round" }, { scale: "y", label: "accuracy / other" }, { scale: "loss", side: 1, label: "loss", grid: { show: false } }] } };
  }

  function resourcesChart(el, data) {
    return { rows: [data.times, data.load, data.memory_percent], opts: {
      series: [{}, { label: "load (1 min)", stroke: palette[0], width: 2 },
               { label: "memory used %", stroke: palette[2], width: 2, scale: "pct" }],
      axes: [{}, { label: "load" }, { scale: "pct", side: 1, label: "%", grid: { show: false } }] } };
  }

  var builders = { rounds: roundsChart, resources: resourcesChart };

  function draw(el) {
    fetch(el.dataset.src, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
      .then(function (data) {
        var spec = builders[el.dataset.chart](el, data);
        var key = JSON.stringify(spec.opts.series.map(function (s) { return s.label; }));
        if (el._plot && el._key === key) { el._plot.setData(spec.rows); }
        else {
          if (el._plot) { el._plot.destroy(); }
          spec.opts.width = Math.max(300, el.clientWidth - 20); spec.opts.height = 280;
          el._plot = new uPlot(spec.opts, spec.rows, el); el._key = key;
        }
        el.dataset.points = String(spec.rows[0].length);
        if (data.state && data.state !== "running") { el.dataset.done = "1"; }
      })
      .catch(function () { /* the next refresh tries again */ });
  }

  function start() {
    document.querySelectorAll("[data-chart]").forEach(function (el) {
      draw(el);
      var every = parseFloat(el.dataset.refresh || "2") * 1000;
      var timer = setInterval(function () { if (el.dataset.done) { clearInterval(timer); } else { draw(el); } }, every);
    });
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
})();
