/* The loop page: cooling → performance scatters and heatmaps, air vs liquid efficiency, the setpoint timeline.
 *
 * Annotations hook: the setpoint timeline draws control's proposals/approvals from config.annotations (filled
 * server-side by telemetry.views.SETPOINT_ANNOTATION_PROVIDERS), from each window refetch, and from
 * FuseDC.loop.setAnnotations(list) / addAnnotations(list) for anything pushed live later. Each annotation:
 * {time, unit, setpoint, value, state: proposed|approved|rejected|applied|..., text, url}.
 */
(function () {
  "use strict";
  const F = window.FuseDC, C = F.config;
  const COLORSCALE = [[0, "#1f4e8c"], [0.35, "#2a9d8f"], [0.6, "#3ecfb2"], [0.8, "#f2a541"], [0.92, "#ff8c42"], [1, "#ff3b3b"]];
  const ZMIN = 30, ZMAX = C.slowdown_c + 1;
  let state = null, scatters = null, heatmaps = [], effNow = null, effTime = null, setpoints = null;
  let effRange = "1h", spRange = "1h", effBucket = 1, effLast = 0;
  let annotations = (C.annotations || []).slice();

  // ---- cooling → performance ------------------------------------------------------------------------
  function hallTraces(yColumn) {
    return state.halls.map((h) => ({
      type: "scattergl", mode: "markers", name: h.name + " (" + h.cooling_type + ")", hall: h.name,
      x: [], y: [], customdata: [], text: [],
      marker: { color: F.colors[h.cooling_type], size: 6, opacity: 0.8, line: { width: 0 } },
      hovertemplate: "%{text}<br>%{x:.1f} °C<br>%{y:.0f} " + (yColumn === "sm_clock" ? "MHz" : "TFLOPS") + "<extra></extra>",
    }));
  }

  function fillScatter(traces, yColumn) {
    const L = state.latest, g = state.gpus;
    for (const trace of traces) { trace.x = []; trace.y = []; trace.customdata = []; trace.text = []; }
    const byHall = new Map(traces.map((t) => [t.hall, t]));
    for (let i = 0; i < state.n; i++) {
      const t = byHall.get(g.hall[i]);
      if (!t || L.gpu_temp[i] === null || L[yColumn][i] === null) continue;
      t.x.push(L.gpu_temp[i]); t.y.push(L[yColumn][i]); t.customdata.push(g.uuid[i]);
      t.text.push(g.hostname[i] + "/gpu" + g.gpu[i]);
    }
  }

  function scatterLayout(yTitle) {
    return F.layout({
      xaxis: F.axis({ title: { text: "GPU temperature (°C)" }, range: [25, C.slowdown_c + 8] }),
      yaxis: F.axis({ title: { text: yTitle } }),
      shapes: F.thresholdShapes("x"), annotations: F.thresholdLabels("x"), margin: { l: 60, r: 16, t: 18, b: 44 },
      legend: { orientation: "h", y: -0.2 },
    });
  }

  function clickToGpu(node) {
    node.on("plotly_click", (event) => {
      const p = event.points && event.points[0];
      if (p && p.customdata) location.href = F.url("gpu", Array.isArray(p.customdata) ? p.customdata[0] : p.customdata);
    });
  }

  function buildScatters() {
    scatters = {
      clock: new F.Chart("chart-clock", hallTraces("sm_clock"), scatterLayout("SM clock (MHz)")),
      tflops: new F.Chart("chart-tflops", hallTraces("tflops"), scatterLayout("TFLOPS")),
    };
    clickToGpu(scatters.clock.node);
    clickToGpu(scatters.tflops.node);
  }

  // ---- heatmaps: per hall, rack (x) × node slot and GPU index (y) -----------------------------------
  function buildHeatmaps() {
    const root = document.getElementById("heatmaps");
    root.innerHTML = "";
    heatmaps = state.halls.map((hall, h) => {
      const racks = [], rows = [], cells = new Map();
      const slotGpus = new Map();
      for (let i = 0; i < state.n; i++) {
        if (state.gpus.hall[i] !== hall.name) continue;
        const rack = state.gpus.rack[i];
        if (!racks.includes(rack)) racks.push(rack);
        const row = "n" + state.gpus.slot[i] + " · g" + state.gpus.gpu[i];
        if (!slotGpus.has(row)) slotGpus.set(row, [state.gpus.slot[i], state.gpus.gpu[i]]);
        cells.set(rack + "|" + row, i);
      }
      // Top of the rack at the top: highest slot first, GPU 0 first within a node.
      rows.push(...[...slotGpus.keys()].sort((a, b) => {
        const [sa, ga] = slotGpus.get(a), [sb, gb] = slotGpus.get(b);
        return sb - sa || ga - gb;
      }));
      const index = rows.map((row) => racks.map((rack) => cells.has(rack + "|" + row) ? cells.get(rack + "|" + row) : -1));
      const figure = document.createElement("figure");
      figure.innerHTML = `<figcaption><span class="badge ${hall.cooling_type}">${hall.cooling_type}</span> ${hall.name}</figcaption>`;
      const div = document.createElement("div");
      div.className = "chart heatmap";
      div.id = "heatmap-" + h;
      div.style.height = Math.max(220, 40 + rows.length * 13) + "px";
      figure.appendChild(div);
      root.appendChild(figure);
      const trace = {
        type: "heatmap", x: racks, y: rows, z: [], text: [], customdata: [], zmin: ZMIN, zmax: ZMAX,
        colorscale: COLORSCALE, xgap: 2, ygap: 1, hoverongaps: false,
        colorbar: { title: { text: "°C", side: "top" }, thickness: 10, tickfont: { size: 10 },
                    tickvals: [30, 40, 50, 60, 70, 80, C.slowdown_c] },
        hovertemplate: "%{text}<br>%{z:.1f} °C<extra></extra>",
      };
      const chart = new F.Chart(div, [trace], F.layout({
        margin: { l: 66, r: 8, t: 4, b: 28 }, xaxis: F.axis({ side: "bottom", type: "category" }),
        yaxis: F.axis({ type: "category", tickfont: { size: 9 }, autorange: "reversed" }),
      }));
      clickToGpu(div);
      return { chart, trace, index, rows };
    });
  }

  function fillHeatmaps() {
    const L = state.latest, g = state.gpus;
    for (const hm of heatmaps) {
      hm.trace.z = hm.index.map((row) => row.map((i) => (i < 0 ? null : L.gpu_temp[i])));
      hm.trace.text = hm.index.map((row) => row.map((i) => (i < 0 ? "" : g.hostname[i] + "/gpu" + g.gpu[i])));
      hm.trace.customdata = hm.index.map((row) => row.map((i) => (i < 0 ? null : g.uuid[i])));
      hm.chart.touch();
    }
  }

  // ---- efficiency ---------------------------------------------------------------------------------
  function buildEfficiency() {
    const names = state.halls.map((h) => h.name).concat(["site"]);
    const colors = state.halls.map((h) => F.colors[h.cooling_type]).concat([F.colors.total]);
    effNow = new F.Chart("chart-eff-now", [{
      type: "bar", x: names, y: names.map(() => null), marker: { color: colors }, text: [], textposition: "outside",
      cliponaxis: false, hovertemplate: "%{x}: %{y:.2f} TFLOPS/kW<extra></extra>",
    }], F.layout({ yaxis: F.axis({ rangemode: "tozero", title: { text: "TFLOPS/kW" } }), showlegend: false,
                   margin: { l: 52, r: 8, t: 20, b: 36 } }));
    const traces = state.halls.map((h) => ({ type: "scatter", mode: "lines", name: h.name + " (" + h.cooling_type + ")",
      who: h.name, x: [], y: [], line: { color: F.colors[h.cooling_type], width: 2 } }));
    traces.push({ type: "scatter", mode: "lines", name: "site", who: "total", x: [], y: [],
                  line: { color: F.colors.total, width: 1.5, dash: "dash" } });
    effTime = new F.Chart("chart-eff-time", traces, F.layout({ yaxis: F.axis({ title: { text: "TFLOPS/kW" } }) }));
  }

  function fillEffNow() {
    const k = state.kpis;
    const values = state.halls.map((h) => (k.halls[h.name] || {}).tflops_per_kw).concat([k.total.tflops_per_kw]);
    effNow.traces[0].y = values;
    effNow.traces[0].text = values.map((v) => F.fmt(v, 2));
    effNow.touch();
  }

  async function loadEfficiency() {
    const range = effRange;
    const data = await F.getJSON(C.history + "&range=" + range);
    if (range !== effRange) return;
    effBucket = data.bucket_seconds;
    const x = F.toDates(data.t);
    for (const t of effTime.traces) {
      t.x = x.slice();
      t.y = ((t.who === "total" ? data.total : data.halls[t.who] || {}).tflops_per_kw || []).slice();
    }
    effTime.touch();
  }

  function appendEfficiency(tick) {
    if (!tick.time || tick.time - effLast < effBucket) return;
    effLast = tick.time;
    const span = { "15m": 900, "1h": 3600, "24h": 86400 }[effRange] || 3600;
    for (const t of effTime.traces) {
      const k = t.who === "total" ? state.kpis.total : state.kpis.halls[t.who];
      if (k) F.push(t, tick.time, k.tflops_per_kw, tick.time - span);
    }
    effTime.touch();
  }

  // ---- setpoint timeline with annotations ------------------------------------------------------------
  const STATE_STYLE = {
    proposed: { symbol: "circle-open", color: "#f2c94c" }, approved: { symbol: "diamond", color: "#6bd48c" },
    rejected: { symbol: "x", color: "#ff6b6b" }, applied: { symbol: "star", color: "#4fb3ff" },
  };

  function buildSetpoints() {
    const spec = (C.charts || [])[0] || { traces: [] };
    const groups = [...new Set(spec.traces.map((t) => t.group))];
    const traces = spec.traces.map((t, i) => ({
      type: "scatter", mode: "lines", name: t.name, series: t.series, unitName: t.unit_name, metric: t.metric,
      x: [], y: [], line: { color: F.palette(i), width: 2, shape: "hv", dash: groups.indexOf(t.group) % 2 ? "dot" : "solid" },
    }));
    traces.push({ type: "scatter", mode: "markers", name: "control actions", annotationTrace: true, x: [], y: [],
                  text: [], marker: { size: 11, symbol: [], color: [] }, hovertemplate: "%{text}<extra></extra>" });
    setpoints = new F.Chart("chart-setpoints", traces, F.layout({
      yaxis: F.axis({ title: { text: "°C" } }), legend: { orientation: "h", y: -0.15 }, shapes: [],
    }));
    setpoints.node.dataset.annotations = "0";
  }

  function drawAnnotations() {
    const marker = setpoints.traces[setpoints.traces.length - 1];
    marker.x = []; marker.y = []; marker.text = []; marker.marker.symbol = []; marker.marker.color = [];
    const shapes = [];
    for (const a of annotations) {
      const style = STATE_STYLE[a.state] || { symbol: "circle", color: "#c9d3de" };
      const when = new Date(a.time * 1000);
      shapes.push({ type: "line", xref: "x", yref: "paper", x0: when, x1: when, y0: 0, y1: 1,
                    line: { color: style.color, width: 1, dash: "dot" } });
      if (a.value !== undefined && a.value !== null) {
        marker.x.push(when); marker.y.push(a.value);
        marker.text.push(`${a.state}: ${a.unit || ""} ${a.setpoint || ""} → ${a.value}${a.text ? "<br>" + a.text : ""}`);
        marker.marker.symbol.push(style.symbol); marker.marker.color.push(style.color);
      }
    }
    setpoints.layout.shapes = shapes;
    setpoints.node.dataset.annotations = String(annotations.length);
    setpoints.touch();
    drawEffects();
  }

  // ---- predicted vs measured effect of each applied change (after its watch window) -----------------------
  const EFFECTS = [["cooling_kw", "Cooling power", "kW"], ["facility_kw", "Facility power", "kW"],
                   ["hottest_gpu_c", "Hottest GPU", "K"], ["throughput_pct", "Throughput", "%"]];
  const effectCharts = {};

  function drawEffects() {
    const done = annotations.filter((a) => a.effect);
    const grid = document.getElementById("effect-charts");
    if (!grid) return;
    document.getElementById("effects-empty").hidden = done.length > 0;
    grid.hidden = done.length === 0;
    if (!done.length) return;
    const labels = done.map((a) => a.label);
    const hover = (a, key, unit) => {
      const e = a.effect;
      return `${a.label}<br>predicted ${F.fmt(e.predicted[key], 2)} ${unit}, measured ${F.fmt(e.measured[key], 2)} ${unit}` +
             `<br>over ${Math.round((e.window_s || 0) / 60)} min before vs after`;
    };
    EFFECTS.forEach(([key, title, unit], i) => {
      const traces = [
        { type: "bar", name: "predicted (the forecast relied on)", x: labels, y: done.map((a) => a.effect.predicted[key]),
          marker: { color: F.colors.muted }, hovertext: done.map((a) => hover(a, key, unit)), hovertemplate: "%{hovertext}<extra></extra>",
          showlegend: i === 0 },
        { type: "bar", name: "measured (watch window)", x: labels, y: done.map((a) => a.effect.measured[key]),
          marker: { color: F.palette(0) }, hovertext: done.map((a) => hover(a, key, unit)), hovertemplate: "%{hovertext}<extra></extra>",
          showlegend: i === 0 },
      ];
      const layout = F.layout({ barmode: "group", showlegend: i === 0, margin: { l: 52, r: 12, t: 8, b: 60 },
                                yaxis: F.axis({ title: { text: "Δ " + unit }, zeroline: true }), xaxis: F.axis({ type: "category" }) });
      if (!effectCharts[key]) {
        const fig = document.createElement("figure");
        fig.innerHTML = "<figcaption></figcaption><div class='chart'></div>";
        fig.querySelector("figcaption").textContent = title;
        fig.querySelector(".chart").id = "chart-effect-" + key;
        grid.appendChild(fig);
        effectCharts[key] = new F.Chart(fig.querySelector(".chart"), traces, layout);
      } else {
        Object.assign(effectCharts[key], { traces, layout });
        effectCharts[key].touch();
      }
    });
    grid.dataset.changes = String(done.length);
  }

  async function loadSetpoints() {
    const range = spRange;
    const data = await F.getJSON(C.data + "&range=" + range);
    if (range !== spRange) return;
    const chart = data.charts[0] || { traces: [] };
    chart.traces.forEach((w, i) => { setpoints.traces[i].x = F.toDates(w.t); setpoints.traces[i].y = w.v.slice(); });
    if (data.annotations) annotations = data.annotations;
    drawAnnotations();
  }

  function appendSetpoints(tick) {
    const at = new Map(tick.points.id.map((id, j) => [id, j]));
    const span = { "15m": 900, "1h": 3600, "24h": 86400 }[spRange] || 3600;
    let changed = false;
    for (const t of setpoints.traces) {
      if (t.series === undefined || !at.has(t.series)) continue;
      const j = at.get(t.series);
      F.push(t, tick.points.time[j], tick.points.value[j], tick.points.time[j] - span);
      changed = true;
    }
    if (changed) setpoints.touch();
  }

  FuseDC.loop = {
    setAnnotations(list) { annotations = list.slice(); if (setpoints) drawAnnotations(); },
    addAnnotations(list) { annotations = annotations.concat(list); if (setpoints) drawAnnotations(); },
  };

  // ---- wiring ------------------------------------------------------------------------------------------
  function refreshLive() {
    fillScatter(scatters.clock.traces, "sm_clock");
    fillScatter(scatters.tflops.traces, "tflops");
    scatters.clock.touch();
    scatters.tflops.touch();
    fillHeatmaps();
    fillEffNow();
  }

  new F.RangePicker(document.getElementById("range-picker"), (v) => { effRange = v.name; loadEfficiency(); }, effRange);
  new F.RangePicker(document.getElementById("setpoint-range"), (v) => { spRange = v.name; loadSetpoints(); }, spRange);

  new F.LiveFeed(C.ws, {
    hello(s, info) {
      const first = state === null;
      state = s;
      if (first) { buildScatters(); buildEfficiency(); buildSetpoints(); }
      buildHeatmaps(); // the inventory order may have changed
      refreshLive();
      if (first || info.reconnected) { loadEfficiency(); loadSetpoints(); }
    },
    tick(s, tick) {
      state = s;
      if (tick.gpus.i.length || tick.points.id.length) {
        refreshLive();
        appendEfficiency(tick);
        appendSetpoints(tick);
      }
    },
    gap() { loadEfficiency(); loadSetpoints(); },
  });
})();
