/* FuseDC live pages: the facility socket, bounded chart windows, batched Plotly updates, the range picker.
 *
 * One websocket per page (ws/facilities/<site>/live). The server sends a `hello` (inventory order and a full
 * snapshot) and then columnar `tick`s with a `seq`; on a gap in seq, or after a reconnect, pages refetch
 * their chart windows over REST. Charts are redrawn with Plotly.react at most every FLUSH_MS with a constant
 * uirevision, so a user's zoom and pan survive live updates. No CDN: plotly.js comes from the installed
 * plotly package (static/vendor/plotly/plotly.min.js).
 */
(function () {
  "use strict";
  const FuseDC = (window.FuseDC = window.FuseDC || {});
  const configNode = document.getElementById("fusedc-config");
  FuseDC.config = configNode ? JSON.parse(configNode.textContent) : {};

  // ---- formatting ------------------------------------------------------------------------------------
  FuseDC.fmt = function (value, digits) {
    if (value === null || value === undefined || !isFinite(value)) return "—";
    const d = digits === undefined ? 1 : digits;
    return Number(value).toLocaleString("en-GB", { minimumFractionDigits: d, maximumFractionDigits: d });
  };
  FuseDC.clock = function (epoch) {
    if (!epoch) return "—";
    return new Date(epoch * 1000).toLocaleTimeString("en-GB", { hour12: false });
  };
  FuseDC.url = function (kind, key) {
    const urls = FuseDC.config.urls || {};
    if (kind === "gpu") return urls.gpu.replace("UUID", encodeURIComponent(key));
    if (kind === "node") return urls.node.replace("HOST", encodeURIComponent(key));
    if (kind === "rack") return urls.rack.replace("/0/", "/" + key + "/");
    if (kind === "unit") return urls.unit.replace("/0/", "/" + key + "/");
    return "#";
  };
  FuseDC.colors = { air: "#f2a541", liquid: "#3ecfb2", total: "#4fb3ff", bad: "#ff6b6b", warn: "#f2c94c",
                    muted: "#8a98a8", text: "#dfe6ee" };
  const PALETTE = ["#4fb3ff", "#f2a541", "#3ecfb2", "#c792ea", "#ff6b6b", "#f2c94c", "#82aaff", "#89ddff",
                   "#ffcb6b", "#c3e88d", "#f78c6c", "#b2ccd6"];
  FuseDC.palette = (i) => PALETTE[i % PALETTE.length];

  // ---- the live feed ---------------------------------------------------------------------------------
  const REFUSED = { 4401: "signed out", 4403: "no permission", 4404: "unknown site" };

  function makeState(hello) {
    const n = hello.gpus.uuid.length;
    const latest = {};
    hello.columns.forEach((c) => (latest[c] = hello.latest[c].slice()));
    const uuidIndex = new Map();
    hello.gpus.uuid.forEach((u, i) => uuidIndex.set(u, i));
    const series = new Map();
    hello.series.id.forEach((id, i) =>
      series.set(id, { unit: hello.series.unit[i], point: hello.series.point[i], metric: hello.series.metric[i] }));
    const points = new Map();
    hello.points.id.forEach((id, i) => points.set(id, { t: hello.points.time[i], v: hello.points.value[i] }));
    return { n, gpus: hello.gpus, halls: hello.halls, units: hello.units, columns: hello.columns, latest,
             time: hello.latest.time.slice(), uuidIndex, series, points, kpis: hello.kpis, alarms: hello.alarms,
             dataTime: hello.time, thresholds: hello.thresholds, heartbeat: 5, lastMessage: Date.now() };
  }

  function applyTick(state, tick) {
    const g = tick.gpus;
    for (let j = 0; j < g.i.length; j++) {
      const i = g.i[j];
      state.time[i] = g.time[j];
      for (const c of state.columns) if (g[c] && g[c][j] !== null) state.latest[c][i] = g[c][j];
    }
    for (let j = 0; j < tick.points.id.length; j++) {
      state.points.set(tick.points.id[j], { t: tick.points.time[j], v: tick.points.value[j] });
    }
    state.kpis = tick.kpis;
    state.alarms = tick.alarms;
    if (tick.time) state.dataTime = tick.time;
  }

  /* handlers: hello(state, {reconnected}), tick(state, tick), gap(state) — gap asks the page to refetch. */
  FuseDC.LiveFeed = class {
    constructor(path, handlers) {
      this.path = path;
      this.handlers = handlers;
      this.seq = null;
      this.state = null;
      this.retry = 1000;
      this.connects = 0;
      this.statusNode = document.getElementById("live-status");
      this.connect();
      setInterval(() => this.watchdog(), 1000);
    }
    status(kind, text) {
      if (!this.statusNode) return;
      this.statusNode.className = "live-status " + kind;
      this.statusNode.textContent = text;
      this.statusNode.dataset.state = kind;
    }
    connect() {
      const scheme = location.protocol === "https:" ? "wss://" : "ws://";
      const ws = (this.ws = new WebSocket(scheme + location.host + this.path));
      this.status("connecting", "connecting…");
      ws.onmessage = (event) => this.receive(JSON.parse(event.data));
      ws.onclose = (event) => {
        if (REFUSED[event.code]) {
          this.status("refused", "live feed refused: " + REFUSED[event.code]);
          return;
        }
        this.status("reconnecting", "reconnecting…");
        setTimeout(() => this.connect(), this.retry);
        this.retry = Math.min(this.retry * 2, 15000);
      };
    }
    receive(message) {
      if (message.type === "hello") {
        const reconnected = this.connects++ > 0 || this.state !== null;
        this.state = makeState(message);
        this.seq = message.seq;
        this.retry = 1000;
        this.handlers.hello && this.handlers.hello(this.state, { reconnected });
      } else if (message.type === "tick" && this.state) {
        const gap = this.seq !== null && message.seq !== this.seq + 1;
        this.seq = message.seq;
        applyTick(this.state, message);
        if (gap && this.handlers.gap) this.handlers.gap(this.state);
        this.handlers.tick && this.handlers.tick(this.state, message);
      }
      if (this.state) {
        this.state.lastMessage = Date.now();
        this.status("live", "live · " + FuseDC.clock(this.state.dataTime));
        document.body.dataset.liveSeq = String(this.seq);
      }
    }
    watchdog() {
      if (!this.state || !this.ws || this.ws.readyState !== WebSocket.OPEN) return;
      const quiet = (Date.now() - this.state.lastMessage) / 1000;
      if (quiet > 12) this.status("stale", "no data for " + Math.round(quiet) + " s");
    }
  };

  // ---- charts --------------------------------------------------------------------------------------
  const FLUSH_MS = 500; // each chart redraws at most twice a second
  FuseDC.MAX_POINTS = FuseDC.config.max_points || 1000;

  FuseDC.layout = function (extra) {
    const axis = { gridcolor: "#26313d", zerolinecolor: "#26313d", linecolor: "#26313d", tickfont: { size: 11 } };
    return Object.assign(
      {
        paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "#11181f", font: { color: "#c9d3de", size: 12 },
        margin: { l: 52, r: 16, t: 8, b: 36 }, uirevision: "keep", hovermode: "closest",
        legend: { orientation: "h", y: -0.18, font: { size: 11 } },
        xaxis: Object.assign({}, axis), yaxis: Object.assign({}, axis),
      },
      extra || {}
    );
  };
  FuseDC.axis = function (extra) {
    return Object.assign({ gridcolor: "#26313d", zerolinecolor: "#26313d", linecolor: "#26313d",
                           tickfont: { size: 11 } }, extra || {});
  };
  const PLOT_CONFIG = { displaylogo: false, responsive: true,
                        modeBarButtonsToRemove: ["select2d", "lasso2d", "toggleSpikelines"] };

  /* A chart whose traces and layout change often but are drawn at most every FLUSH_MS. */
  FuseDC.Chart = class {
    constructor(node, traces, layout) {
      this.node = typeof node === "string" ? document.getElementById(node) : node;
      this.traces = traces;
      this.layout = layout;
      this.timer = null;
      this.draws = 0;
      Plotly.newPlot(this.node, this.traces, this.layout, PLOT_CONFIG);
    }
    touch() {
      if (this.timer) return;
      this.timer = setTimeout(() => {
        this.timer = null;
        // Traces are mutated in place: a new datarevision tells Plotly.react to redraw them (uirevision stays).
        this.layout.datarevision = ++this.draws;
        Plotly.react(this.node, this.traces, this.layout, PLOT_CONFIG);
        this.node.dataset.draws = String(this.draws);
        this.node.dataset.points = String(this.traces.reduce((n, t) => n + (t.x ? t.x.length : 0), 0));
      }, FLUSH_MS);
    }
  };

  /* Append (t, v) to a time trace and keep it bounded: points older than `since` or beyond MAX_POINTS go. */
  FuseDC.push = function (trace, t, v, since) {
    const x = trace.x, y = trace.y;
    const date = new Date(t * 1000);
    if (x.length && x[x.length - 1] >= date) return; // in order only: a refetch covers the rest
    x.push(date);
    y.push(v);
    let drop = Math.max(0, x.length - FuseDC.MAX_POINTS);
    if (since) while (drop < x.length && x[drop] < new Date(since * 1000)) drop++;
    if (drop) { x.splice(0, drop); y.splice(0, drop); }
  };
  FuseDC.toDates = (ts) => ts.map((t) => new Date(t * 1000));

  FuseDC.thresholdShapes = function (axis) {
    const c = FuseDC.config;
    const line = (value, color, dash) => axis === "x"
      ? { type: "line", xref: "x", yref: "paper", x0: value, x1: value, y0: 0, y1: 1, line: { color, width: 1.5, dash } }
      : { type: "line", xref: "paper", yref: "y", y0: value, y1: value, x0: 0, x1: 1, line: { color, width: 1.5, dash } };
    return [line(c.warn_c, FuseDC.colors.warn, "dot"), line(c.slowdown_c, FuseDC.colors.bad, "dash")];
  };
  FuseDC.thresholdLabels = function (axis) {
    const c = FuseDC.config;
    const label = (value, color, text) => axis === "x"
      ? { x: value, xref: "x", y: 1, yref: "paper", text, showarrow: false, font: { color, size: 10 }, yanchor: "bottom",
          xanchor: value === c.warn_c ? "right" : "left" }
      : { y: value, yref: "y", x: 0, xref: "paper", text, showarrow: false, font: { color, size: 10 },
          xanchor: "left", yanchor: value === c.warn_c ? "top" : "bottom" };
    return [label(c.warn_c, FuseDC.colors.warn, "warn " + c.warn_c + " °C"),
            label(c.slowdown_c, FuseDC.colors.bad, "slowdown " + c.slowdown_c + " °C")];
  };

  // ---- the time-range picker -------------------------------------------------------------------------
  /* Buttons live / 15m / 1h / 24h / custom inside `node`; onChange({name, start, end, query}). */
  FuseDC.RangePicker = class {
    constructor(node, onChange, initial) {
      this.node = node;
      this.onChange = onChange;
      this.name = initial || "live";
      node.querySelectorAll("button[data-range]").forEach((b) =>
        b.addEventListener("click", () => this.pick(b.dataset.range)));
      const form = node.querySelector("form");
      if (form) form.addEventListener("submit", (e) => { e.preventDefault(); this.pick("custom"); });
      this.mark();
    }
    value() {
      if (this.name !== "custom") return { name: this.name, query: "range=" + this.name };
      const start = Date.parse(this.node.querySelector("[name=start]").value) / 1000;
      const endText = this.node.querySelector("[name=end]").value;
      const end = endText ? Date.parse(endText) / 1000 : Date.now() / 1000;
      return { name: "custom", start, end, query: "start=" + start + "&end=" + end };
    }
    pick(name) {
      if (name === "custom") {
        const start = this.node.querySelector("[name=start]");
        if (!start.value) {
          const d = new Date(Date.now() - 3600e3);
          start.value = new Date(d.getTime() - d.getTimezoneOffset() * 60e3).toISOString().slice(0, 16);
        }
        this.node.classList.add("custom-open");
      } else {
        this.node.classList.remove("custom-open");
      }
      this.name = name;
      this.mark();
      if (name !== "custom" || this.node.querySelector("[name=start]").value) this.onChange(this.value());
    }
    mark() {
      this.node.querySelectorAll("button[data-range]").forEach((b) =>
        b.classList.toggle("active", b.dataset.range === this.name));
    }
  };

  // Pickers that reload the page on change (no inline handlers: the Content-Security-Policy forbids them).
  document.querySelectorAll("select[data-autosubmit]").forEach((select) =>
    select.addEventListener("change", () => select.form.submit()));

  FuseDC.getJSON = async function (url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(url + ": HTTP " + response.status);
    return response.json();
  };
})();
