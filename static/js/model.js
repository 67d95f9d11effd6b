/* The forecaster page: training curves, cache memory (MLA held vs MHA equivalent), forecast vs actual with
 * p10–p90 bands for one GPU and horizon, and the error per horizon (held out at training, and live from the
 * same stored forecasts the chart shows). The forecast window is refetched every REFRESH_MS; uirevision keeps
 * the user's zoom. */
(function () {
  "use strict";
  const F = window.FuseDC, C = F.config;
  const REFRESH_MS = 10000;
  const TARGETS = Object.keys(C.targets);
  let horizon = String(C.horizons.includes(60) ? 60 : C.horizons[0]), range = "1h", last = null;
  const forecastCharts = {}, errorCharts = {};

  function curves() {
    const rows = C.curves.active, base = C.curves.baseline;
    const line = (data, key, name, color, dash) => ({
      type: "scatter", mode: "lines+markers", name, x: data.map((r) => r.epoch), y: data.map((r) => r[key]),
      line: { color, dash, width: 2 }, marker: { size: 5 } });
    const traces = [line(rows, "train_loss", "MLA train", F.palette(0)), line(rows, "val_loss", "MLA validation", F.palette(1))];
    if (base.length) traces.push(line(base, "val_loss", "MHA variant validation", F.colors.muted, "dot"));
    const shapes = C.curves.best_epoch == null ? [] : [{ type: "line", xref: "x", yref: "paper", x0: C.curves.best_epoch,
      x1: C.curves.best_epoch, y0: 0, y1: 1, line: { color: F.colors.warn, dash: "dot", width: 1 } }];
    new F.Chart("chart-curves", traces, F.layout({ margin: { l: 52, r: 16, t: 20, b: 36 }, xaxis: F.axis({ title: { text: "epoch" }, dtick: 1 }),
      yaxis: F.axis({ title: { text: "loss (pinball + BCE)" } }), shapes,
      annotations: shapes.length ? [{ x: C.curves.best_epoch, y: 1, xref: "x", yref: "paper", text: "kept",
        showarrow: false, font: { color: F.colors.warn, size: 10 }, yanchor: "bottom" }] : [] }));
  }

  function cache() {
    const rows = C.cache;
    const mib = (b) => b / 1048576;
    const names = rows.map((r) => r.worker + " (" + r.streams.toLocaleString() + " streams)");
    new F.Chart("chart-cache", [
      { type: "bar", orientation: "h", name: "MLA latent cache (held)", y: names, x: rows.map((r) => mib(r.bytes)),
        marker: { color: F.palette(2) }, hovertemplate: "%{x:.2f} MiB<extra>MLA</extra>" },
      { type: "bar", orientation: "h", name: "MHA, same streams and history", y: names, x: rows.map((r) => mib(r.mha_bytes)),
        marker: { color: F.colors.muted }, hovertemplate: "%{x:.2f} MiB<extra>MHA</extra>" },
    ], F.layout({ barmode: "group", margin: { l: 200, r: 16, t: 8, b: 36 },
                  xaxis: F.axis({ ticksuffix: " MiB" }), yaxis: F.axis({ automargin: true }),
                  annotations: rows.length ? [] : [{ text: "no serving worker has reported yet", xref: "paper",
                    yref: "paper", x: 0.5, y: 0.5, showarrow: false, font: { color: F.colors.muted } }] }));
  }

  function figure(container, id, title) {
    const fig = document.createElement("figure");
    fig.innerHTML = "<figcaption></figcaption><div class='chart'></div>";
    fig.querySelector("figcaption").textContent = title;
    fig.querySelector(".chart").id = id;
    container.appendChild(fig);
    return fig.querySelector(".chart");
  }

  function drawForecast(data) {
    const entry = data.horizons[horizon];
    document.getElementById("forecast-gpu").textContent = data.gpu.name + ", +" + horizon + " s";
    let shown = 0;
    for (const target of TARGETS) {
      const meta = C.targets[target], truth = data.measured[target] || { t: [], v: [] };
      const f = entry ? entry.targets[target] : { p10: [], p50: [], p90: [] };
      const x = F.toDates(entry ? entry.valid_at : []);
      shown += x.length;
      const traces = [
        { type: "scatter", mode: "lines", name: "p90", x, y: f.p90, line: { width: 0 }, showlegend: false, hoverinfo: "skip" },
        { type: "scatter", mode: "lines", name: "p10–p90", x, y: f.p10, fill: "tonexty", line: { width: 0 },
          fillcolor: "rgba(79,179,255,0.25)", hoverinfo: "skip" },
        { type: "scatter", mode: "lines", name: "forecast p50", x, y: f.p50, line: { color: F.palette(0), width: 1.5 } },
        { type: "scatter", mode: "lines", name: "measured", x: F.toDates(truth.t), y: truth.v,
          line: { color: F.palette(1), width: 1.5 } },
      ];
      const first = target === TARGETS[0];
      traces.forEach((t) => { if (!first) t.showlegend = false; });
      const layout = F.layout({ showlegend: first, xaxis: F.axis({ type: "date", range: [new Date(data.start * 1000), new Date((data.end + Number(horizon)) * 1000)] }),
                                yaxis: F.axis({ title: { text: meta.unit } }) });
      if (target === "gpu_temperature_celsius") {
        layout.shapes = [{ type: "line", xref: "paper", yref: "y", x0: 0, x1: 1, y0: C.slowdown_c,
                           y1: C.slowdown_c, line: { color: F.colors.bad, dash: "dash", width: 1 } }];
      }
      if (!forecastCharts[target]) {
        const node = figure(document.getElementById("forecast-charts"), "chart-forecast-" + target, meta.label);
        forecastCharts[target] = new F.Chart(node, traces, layout);
      } else {
        Object.assign(forecastCharts[target], { traces, layout: Object.assign(layout, { uirevision: horizon + range }) });
        forecastCharts[target].touch();
      }
    }
    document.getElementById("forecast-note").textContent = shown
      ? "Forecasts drawn at the time they were for (made " + horizon + " s earlier); refreshed every " + REFRESH_MS / 1000 + " s."
      : "No stored forecasts for this GPU and horizon in this window yet: the serving worker writes them every step.";
  }

  function drawErrors(data) {
    for (const target of TARGETS) {
      const meta = C.targets[target], held = C.errors.active[target] || {}, base = C.errors.baseline[target] || {};
      const labels = C.horizons.map((h) => h + " s");
      const pick = (obj, key) => C.horizons.map((h) => (obj[h + "s"] || {})[key] ?? null);
      const live = (key) => C.horizons.map((h) => ((data.horizons[String(h)] || { errors: {} }).errors[target] || {})[key] ?? null);
      const traces = [
        { type: "bar", name: "MLA (held out)", x: labels, y: pick(held, "mae"), marker: { color: F.palette(0) } },
        { type: "bar", name: "persistence (held out)", x: labels, y: pick(held, "persistence_mae"), marker: { color: F.colors.muted } },
      ];
      if (Object.keys(base).length) traces.push({ type: "bar", name: "MHA variant (held out)", x: labels, y: pick(base, "mae"),
                                                  marker: { color: F.palette(3) } });
      // The bias in the hover: a systematic under- or over-prediction shows there, not in the MAE.
      traces.push({ type: "scatter", mode: "markers", name: "MLA live, this GPU", x: labels, y: live("mae"),
                    customdata: live("bias"), marker: { color: F.palette(1), size: 11, symbol: "diamond" },
                    hovertemplate: "%{x}: MAE %{y:.3g} " + meta.unit + ", bias %{customdata:+.3g} " + meta.unit +
                                   "<extra>MLA live</extra>" });
      traces.push({ type: "scatter", mode: "markers", name: "persistence live, this GPU", x: labels, y: live("persistence_mae"),
                    marker: { color: F.colors.text, size: 9, symbol: "x" } });
      if (target !== TARGETS[0]) traces.forEach((t) => (t.showlegend = false));
      const layout = F.layout({ barmode: "group", showlegend: target === TARGETS[0], xaxis: F.axis(),
                                yaxis: F.axis({ title: { text: "MAE (" + meta.unit + ")" }, rangemode: "tozero" }) });
      if (!errorCharts[target]) {
        errorCharts[target] = new F.Chart(figure(document.getElementById("error-charts"), "chart-error-" + target, meta.label), traces, layout);
      } else {
        Object.assign(errorCharts[target], { traces, layout });
        errorCharts[target].touch();
      }
    }
  }

  async function refresh() {
    const gpu = document.getElementById("gpu-select").value;
    try {
      last = await F.getJSON(C.data + "?gpu=" + encodeURIComponent(gpu) + "&range=" + range);
      drawForecast(last);
      drawErrors(last);
    } catch (err) {
      document.getElementById("forecast-note").textContent = "Could not load forecasts: " + err.message;
    }
  }

  function picker(id, attr, initial, onPick) {
    const node = document.getElementById(id);
    const mark = (value) => node.querySelectorAll("button").forEach((b) => b.classList.toggle("active", b.dataset[attr] === value));
    node.querySelectorAll("button").forEach((b) => b.addEventListener("click", () => { mark(b.dataset[attr]); onPick(b.dataset[attr]); }));
    mark(initial);
  }

  curves();
  cache();
  picker("horizon-picker", "horizon", horizon, (h) => { horizon = h; if (last) drawForecast(last); });
  picker("forecast-range", "range", range, (r) => { range = r; refresh(); });
  document.getElementById("gpu-select").addEventListener("change", (e) => {
    const url = new URL(location.href);
    url.searchParams.set("gpu", e.target.value);
    history.replaceState(null, "", url);
    refresh();
  });
  refresh();
  setInterval(refresh, REFRESH_MS);
})();
