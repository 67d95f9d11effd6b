/* Detail pages (GPU, node, rack, cooling unit): a window per range over REST, live ticks appended in "live".
 *
 * The chart spec (config.charts) names each trace by GPU uuid + storage column or by point series id; the
 * same spec drives the server's JSON window, its CSV export and the live updates here.
 */
(function () {
  "use strict";
  const F = window.FuseDC, C = F.config;
  const LIVE_SECONDS = 300;
  let range = { name: "live", query: "range=live" };
  let state = null;
  const charts = [];
  let loading = 0;

  function build() {
    for (const spec of C.charts || []) {
      const many = spec.traces.length > 8;
      const traces = spec.traces.map((t, i) => ({
        type: "scatter", mode: "lines", name: t.name, spec: t, x: [], y: [],
        line: { color: F.palette(i), width: many ? 1.2 : 2, dash: t.dash || "solid" },
        hovertemplate: "%{y:.2f} " + spec.unit + "<extra>" + t.name + "</extra>",
      }));
      const layout = F.layout({ yaxis: F.axis({ title: { text: spec.unit } }), showlegend: spec.traces.length > 1,
                                legend: { orientation: "h", y: -0.22, font: { size: 10 } } });
      if (spec.threshold) { layout.shapes = F.thresholdShapes("y"); layout.annotations = F.thresholdLabels("y"); }
      charts.push({ spec, chart: new F.Chart("chart-" + spec.id, traces, layout) });
    }
  }

  function showNow() {
    for (const { spec, chart } of charts) {
      const node = document.querySelector(`[data-now="${spec.id}"]`);
      if (!node) continue;
      if (chart.traces.length !== 1) { node.textContent = ""; continue; }
      const y = chart.traces[0].y;
      node.textContent = y.length ? "now " + F.fmt(y[y.length - 1], spec.unit === "MHz" || spec.unit === "W" ? 0 : 1) + " " + spec.unit : "";
    }
  }

  async function load() {
    const ticket = ++loading;
    document.getElementById("csv-export").href = C.csv + "?" + range.query;
    const data = await F.getJSON(C.data + "?" + range.query);
    if (ticket !== loading) return;
    data.charts.forEach((windowed, c) => {
      const chart = charts[c].chart;
      windowed.traces.forEach((w, i) => { chart.traces[i].x = F.toDates(w.t); chart.traces[i].y = w.v.slice(); });
      if (range.name === "custom") {
        chart.layout.xaxis = F.axis({ range: [new Date(data.start * 1000), new Date(data.end * 1000)] });
      } else {
        chart.layout.xaxis = F.axis();
      }
      chart.touch();
    });
    document.body.dataset.windowLoaded = String(ticket);
    showNow();
  }

  function append(tick) {
    if (range.name !== "live" || !state) return;
    const gpuAt = new Map(tick.gpus.i.map((i, j) => [i, j]));
    const pointAt = new Map(tick.points.id.map((id, j) => [id, j]));
    for (const { chart } of charts) {
      let changed = false;
      for (const trace of chart.traces) {
        const t = trace.spec;
        if (t.gpu !== undefined) {
          const i = state.uuidIndex.get(t.gpu);
          if (i === undefined || !gpuAt.has(i)) continue;
          const j = gpuAt.get(i);
          const value = tick.gpus[t.column] ? tick.gpus[t.column][j] : null;
          if (value === null || value === undefined) continue;
          F.push(trace, tick.gpus.time[j], value, tick.gpus.time[j] - LIVE_SECONDS);
          changed = true;
        } else if (pointAt.has(t.series)) {
          const j = pointAt.get(t.series);
          F.push(trace, tick.points.time[j], tick.points.value[j], tick.points.time[j] - LIVE_SECONDS);
          changed = true;
        }
      }
      if (changed) chart.touch();
    }
    showNow();
  }

  build();
  new F.RangePicker(document.getElementById("range-picker"), (value) => { range = value; load(); }, "live");
  load();
  new F.LiveFeed(C.ws, {
    hello(s, info) { state = s; if (info.reconnected && range.name === "live") load(); },
    tick(s, tick) { state = s; append(tick); },
    gap() { if (range.name === "live") load(); },
  });
})();
