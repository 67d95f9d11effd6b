/* The facility overview: KPI cards per hall and total, hottest GPUs, alarms, KPI history with live tail. */
(function () {
  "use strict";
  const F = window.FuseDC, C = F.config;
  const HOTTEST = 6;
  let halls = [];
  let charts = null;
  let bucketSeconds = 1;
  let lastAppend = 0;
  let rangeName = "1h";
  let renderQueued = false;

  function setKpi(root, kpis) {
    root.querySelectorAll(".kpi").forEach((node) => {
      const key = node.dataset.kpi;
      const value = kpis ? kpis[key] : null;
      const v = node.querySelector(".v");
      if (key === "gpus_throttling") {
        v.textContent = value == null ? "—" : value + " / " + (kpis.gpus_reporting || 0);
      } else {
        v.textContent = F.fmt(value, Number(node.dataset.digits));
      }
      node.classList.remove("warn", "bad", "ok");
      if (key === "hottest_gpu_temp_c" && value != null) {
        node.classList.add(value >= C.slowdown_c ? "bad" : value >= C.warn_c ? "warn" : "ok");
      }
      if (key === "gpus_throttling" && value) node.classList.add(value > 0 ? "warn" : "ok");
    });
  }

  function hottest(state, hall) {
    const temps = state.latest.gpu_temp;
    const rows = [];
    for (let i = 0; i < state.n; i++) if (state.gpus.hall[i] === hall && temps[i] !== null) rows.push(i);
    rows.sort((a, b) => temps[b] - temps[a]);
    return rows.slice(0, HOTTEST);
  }

  function tempClass(t) {
    return t >= C.slowdown_c ? "bad" : t >= C.warn_c ? "warn" : "";
  }

  function renderHottest(state) {
    document.querySelectorAll("tbody[data-hottest]").forEach((body) => {
      const rows = hottest(state, body.dataset.hottest);
      if (!rows.length) { body.innerHTML = '<tr><td colspan="6" class="muted">no data</td></tr>'; return; }
      const L = state.latest, g = state.gpus;
      body.innerHTML = rows.map((i) =>
        `<tr><td><a href="${F.url("gpu", g.uuid[i])}">${g.hostname[i]}/gpu${g.gpu[i]}</a></td>` +
        `<td><a href="${F.url("rack", g.rack_id[i])}">${g.rack[i]}</a></td>` +
        `<td class="num ${tempClass(L.gpu_temp[i])}">${F.fmt(L.gpu_temp[i], 1)}</td>` +
        `<td class="num">${F.fmt(L.sm_clock[i], 0)}</td><td class="num">${F.fmt(L.tflops[i], 1)}</td>` +
        `<td class="num">${F.fmt(L.power_usage[i], 0)}</td></tr>`).join("");
    });
  }

  function alarmLink(alarm) {
    if (alarm.uuid) return F.url("gpu", alarm.uuid);
    if (alarm.kind === "unit_fault" && C.unit_ids[alarm.subject]) return F.url("unit", C.unit_ids[alarm.subject]);
    return null;
  }

  function renderAlarms(state) {
    const list = document.getElementById("alarms");
    const count = document.getElementById("alarm-count");
    const alarms = state.alarms || [];
    const critical = alarms.filter((a) => a.level === "critical").length;
    count.textContent = alarms.length ? `${critical} critical · ${alarms.length - critical} warning` : "none";
    count.className = "alarm-count " + (critical ? "bad" : alarms.length ? "warn" : "ok");
    if (!alarms.length) { list.innerHTML = '<li class="all-clear">All clear: no GPU near slowdown, every source and unit reporting.</li>'; return; }
    list.innerHTML = alarms.map((a) => {
      const link = alarmLink(a);
      const subject = link ? `<a href="${link}">${a.subject}</a>` : a.subject;
      const kind = { gpu_temperature: "GPU temp", stale: "stale", unit_fault: "unit" }[a.kind] || a.kind;
      return `<li class="alarm ${a.level}" data-kind="${a.kind}"><span class="lvl">${a.level}</span>` +
             `<span class="what">${kind}</span><span class="subj">${subject}</span>` +
             `<span class="msg">${a.message}</span>${a.hall ? `<span class="hall-tag">${a.hall}</span>` : ""}</li>`;
    }).join("");
  }

  function render(state) {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(() => {
      renderQueued = false;
      setKpi(document.getElementById("kpi-total"), state.kpis.total);
      document.querySelectorAll("[data-hall]").forEach((card) => setKpi(card, state.kpis.halls[card.dataset.hall]));
      renderHottest(state);
      renderAlarms(state);
    });
  }

  // ---- history charts --------------------------------------------------------------------------------
  function hallColor(name) {
    const hall = halls.find((h) => h.name === name);
    return hall ? F.colors[hall.cooling_type] : F.colors.total;
  }

  function line(name, color, dash, extra) {
    return Object.assign({ type: "scatter", mode: "lines", name, x: [], y: [],
                           line: { color, width: 2, dash: dash || "solid" } }, extra || {});
  }

  /* traces: [{key, who: hall name | "total", trace}] */
  function buildCharts() {
    const specs = { power: [], pue: [], eff: [], hot: [] };
    for (const h of halls) {
      const c = hallColor(h.name);
      specs.power.push({ key: "it_power_kw", who: h.name, trace: line(h.name + " IT", c) });
      specs.power.push({ key: "cooling_power_kw", who: h.name, trace: line(h.name + " cooling", c, "dot") });
      specs.pue.push({ key: "pue", who: h.name, trace: line(h.name, c) });
      specs.eff.push({ key: "tflops_per_kw", who: h.name, trace: line(h.name, c) });
      specs.hot.push({ key: "hottest_gpu_temp_c", who: h.name, trace: line(h.name + " hottest", c) });
      specs.hot.push({ key: "gpus_throttling", who: h.name,
                       trace: line(h.name + " throttling", c, "dot", { yaxis: "y2", line: { color: c, width: 1.5, dash: "dot", shape: "hv" } }) });
    }
    specs.pue.push({ key: "pue", who: "total", trace: line("site", F.colors.total, "dash") });
    specs.eff.push({ key: "tflops_per_kw", who: "total", trace: line("site", F.colors.total, "dash") });
    const base = F.layout();
    charts = {
      power: { specs: specs.power, chart: new F.Chart("chart-power", specs.power.map((s) => s.trace), F.layout({ yaxis: F.axis({ rangemode: "tozero" }) })) },
      pue: { specs: specs.pue, chart: new F.Chart("chart-pue", specs.pue.map((s) => s.trace), base) },
      eff: { specs: specs.eff, chart: new F.Chart("chart-eff", specs.eff.map((s) => s.trace), F.layout()) },
      hot: { specs: specs.hot, chart: new F.Chart("chart-hot", specs.hot.map((s) => s.trace), F.layout({
        shapes: F.thresholdShapes("y"), annotations: F.thresholdLabels("y"),
        yaxis: F.axis({ title: { text: "°C", font: { size: 11 } } }),
        yaxis2: F.axis({ overlaying: "y", side: "right", rangemode: "tozero", showgrid: false, tickformat: ",d",
                         title: { text: "GPUs throttling", font: { size: 11 } } }),
        margin: { l: 52, r: 52, t: 8, b: 36 },
      })) },
    };
  }

  async function loadHistory() {
    const range = rangeName;
    const data = await F.getJSON(C.history + "&range=" + range);
    if (range !== rangeName || !charts) return;
    bucketSeconds = data.bucket_seconds;
    const x = F.toDates(data.t);
    for (const group of Object.values(charts)) {
      for (const s of group.specs) {
        const values = s.who === "total" ? data.total[s.key] : (data.halls[s.who] || {})[s.key];
        s.trace.x = x.slice();
        s.trace.y = (values || []).slice();
      }
      group.chart.touch();
    }
  }

  function appendLive(state, tick) {
    // One live point per history bucket, so the window keeps its span within the 1,000-point bound.
    if (!charts || !tick.time || tick.time - lastAppend < bucketSeconds) return;
    lastAppend = tick.time;
    const span = { "15m": 900, "1h": 3600, "24h": 86400 }[rangeName] || 3600;
    for (const group of Object.values(charts)) {
      for (const s of group.specs) {
        const kpis = s.who === "total" ? state.kpis.total : state.kpis.halls[s.who];
        if (kpis) F.push(s.trace, tick.time, kpis[s.key], tick.time - span);
      }
      group.chart.touch();
    }
  }

  new F.RangePicker(document.getElementById("range-picker"), (value) => {
    rangeName = value.name;
    loadHistory();
  }, rangeName);

  new F.LiveFeed(C.ws, {
    hello(state, info) {
      const first = !charts;
      halls = state.halls;
      if (first) buildCharts();
      if (first || info.reconnected) loadHistory();
      render(state);
    },
    tick(state, tick) {
      render(state);
      // Only ticks that carry new data extend the history (heartbeats repeat the same values).
      if (tick.gpus.i.length || tick.points.id.length) appendLive(state, tick);
    },
    gap() { loadHistory(); },
  });
})();
