"""The live operator dashboard in a real browser with 4,096 GPUs live: ingest-to-paint latency, frame rate, memory.

    .venv/bin/python bench/dashboard.py [--gpus 4096] [--minutes 3] [--pages live,loop] [--quick]
    .venv/bin/python bench/dashboard.py --minutes 60        # the hour-long memory check: an hour per page
    .venv/bin/python bench/dashboard.py --minutes 60 --pages loop   # … of one page

The server side is bench/ingest.py's, imported and reused (all on 127.0.0.1):

* its own PostgreSQL database, `fusedc_bench_dashboard` (created, migrated, dropped at the end), and Redis
  database 11 (flushed at both ends); no other database is touched;
* a facility of --gpus GPUs (`facility.demo.build_demo_facility` through the facility-file import);
* the real ASGI app (uvicorn, --web processes) and real writer processes (--writers), without persistent
  database connections (see `_env` below);
* ingest's paced load generator: every GPU once a second (21 dcgm-exporter fields and FuseDC's TFLOPS,
  columnar JSON POSTs of --gpus-per-request GPUs spread over each second), for the whole run;
* ingest's websocket client on `ws/facilities/<site>/live`: when each batch first shows in a tick. That is
  the latency baseline.

The browser side is Debian's Chromium (headless, software GL), driven by Playwright, signed in as a viewer
through the real login form. An init script (no product code changes) counts animation frames, long tasks,
and paints: it wraps `FuseDC.LiveFeed` (to see the page's data) and `Plotly.react`, and records the first
animation frame after each redraw together with the sample time the page held for the first GPU of every
load-generator batch. Pages, one after another, each in a fresh tab, on a fixed schedule against the same
feed:

  static page (no live feed: /account/api-tokens/) → /live/ → /loop/ → the static page again

Per live page, after --warmup seconds:
* ingest → paint: from a batch's POST to the first frame after the page drew it. On /live/ that means the
  first frame after the tick that carried the batch (the KPI cards and hottest-GPU table are redrawn in that
  frame); on /loop/ it means the first frame after a Plotly.react of the every-GPU charts (scatters, heatmaps)
  resolved. The baseline is the same batches' ingest → websocket latency (the Python client).
* frame rate (requestAnimationFrame callbacks), long tasks and total blocking time, main-thread busy time;
  the baseline is the static page's frame rate in the same run.
* memory: `performance.memory.usedJSHeapSize` every --memory-every seconds (start, end, max, least-squares
  slope), the heap after a forced GC at the start and end of the window, DOM nodes and event listeners.

Prints one table.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import secrets
import signal
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
import ingest  # noqa: E402 — bench/ingest.py, which also puts the repository on sys.path

# ingest.py names its own database and Redis db in module constants, read at call time by `_env` (every
# subprocess environment), `setup` and the Redis client. Point them at this bench's before anything runs, in
# this process and in every role subprocess (they re-run this file). Never call ingest's `_psql` or `_count`
# without `db=`: their default was bound to ingest's database when it was imported.
DB_NAME = "fusedc_bench_dashboard"
REDIS_URL = "redis://127.0.0.1:6379/11"
ingest.DB_NAME = DB_NAME
ingest.REDIS_URL = REDIS_URL
# Under ASGI each request's sync code runs in a thread of its own, so persistent connections (ingest sets
# CONN_MAX_AGE=600) are left behind until garbage-collected; Django's docs say to disable them under ASGI. They
# ran a shared PostgreSQL (max_connections 100) out of connections mid-run: this bench closes them per request.
_ingest_env = ingest._env


def _env(extra: dict | None = None) -> dict:
    return _ingest_env({"CONN_MAX_AGE": "0", **(extra or {})})


ingest._env = _env
# dcgm-exporter's fields carry no TFLOPS; FuseDC's own metric (what the twin sends) fills /loop/'s TFLOPS scatter
# as in production. ingest reads FIELDS when it plans the load and when the load generator builds its bodies.
ingest.FIELDS = {**ingest.FIELDS, "FUSEDC_GPU_TFLOPS": (150, 990, 1)}

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--enable-precise-memory-info"]
VIEWPORT = {"width": 1600, "height": 1000}
STATIC_PAGE = "/account/api-tokens/"
LIVE_PAGES = {"live": "/live/", "loop": "/loop/"}
LEAD_SECONDS = 10  # load running before the first page opens: the live feed has data and a steady rate
SETTLE_SECONDS = 5  # batches POSTed this close to a window's end may be painted after it: not counted
HELLO_TIMEOUT_S = 120
MIB = 1024 * 1024

# Runs in every document before its own scripts. Wraps FuseDC.LiveFeed (set by fusedc-live.js) and
# Plotly.react (set by plotly.min.js) through property setters, so the page code runs unchanged.
INIT_SCRIPT = """
(() => {
  const TRACK = __TRACK__;  // the first GPU (uuid) of each load-generator batch
  const bench = (window.__bench = { frames: 0, longtasks: 0, blocking: 0, hellos: 0, ticks: 0, reacts: 0,
                                    reactErrors: 0, gpus: null, paints: [] });
  const frame = () => { bench.frames++; requestAnimationFrame(frame); };
  requestAnimationFrame(frame);
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) { bench.longtasks++; bench.blocking += Math.max(0, e.duration - 50); }
    }).observe({ type: "longtask", buffered: true });
  } catch (e) { /* no long-task timing: counts stay 0 */ }

  // The sample time the page holds for each tracked GPU, right now.
  let feed = null, tracked = null;
  const held = () => (feed && tracked ? tracked.map((i) => (i < 0 ? null : feed.state.time[i])) : null);
  // [kind, painted at (ms epoch), held sample times, chart id, react's main-thread ms]: stamped in the next
  // animation frame.
  const afterPaint = (record) => requestAnimationFrame(() => { record[1] = Date.now(); bench.paints.push(record); });

  const fuse = (window.FuseDC = window.FuseDC || {});
  let Feed;
  Object.defineProperty(fuse, "LiveFeed", { configurable: true, enumerable: true, get: () => Feed, set(Base) {
    Feed = class extends Base {
      receive(message) {
        super.receive(message);
        if (!this.state) return;
        feed = this;
        if (message.type === "hello") {
          bench.hellos++;
          bench.gpus = this.state.n;
          tracked = TRACK.map((u) => { const i = this.state.uuidIndex.get(u); return i === undefined ? -1 : i; });
        } else if (message.type === "tick" && message.gpus.i.length) {
          bench.ticks++;
          afterPaint(["tick", 0, held(), "", 0]);  // the page's own render is queued ahead of this frame callback
        }
      }
    };
  } });

  const wrapReact = (react) => function (gd, ...rest) {
    const record = ["react", 0, held(), (gd && gd.id) || "", performance.now()];
    const out = react.call(this, gd, ...rest);
    record[4] = performance.now() - record[4];
    Promise.resolve(out).then(() => { bench.reacts++; afterPaint(record); }, () => { bench.reactErrors++; });
    return out;
  };
  let plotly;
  Object.defineProperty(window, "Plotly", { configurable: true, enumerable: true, get: () => plotly, set(value) {
    // plotly.js may export read-only members: then hand the page an object inheriting from it instead.
    let wrapped = null;
    try { const w = wrapReact(value.react); value.react = w; if (value.react === w) wrapped = value; } catch (e) {}
    if (!wrapped) {
      wrapped = Object.create(value);
      Object.defineProperty(wrapped, "react", { value: wrapReact(value.react) });
    }
    plotly = wrapped;
  } });
})();
"""

READ_COUNTERS = """() => {
  const b = window.__bench, status = document.getElementById("live-status");
  return { now: performance.now(), frames: b.frames, longtasks: b.longtasks, blocking: b.blocking, ticks: b.ticks,
           reacts: b.reacts, reactErrors: b.reactErrors, gpus: b.gpus, heap: performance.memory.usedJSHeapSize,
           status: status ? status.dataset.state || status.textContent : null };
}"""
DRAIN_PAINTS = "() => { const p = window.__bench.paints; window.__bench.paints = []; return p; }"
# What the every-GPU charts of /loop/ show (FuseDC.Chart sets data-points after each redraw).
LOOP_POINTS = """() => ["chart-clock", "chart-tflops"].map((id) => {
  const node = document.getElementById(id);
  return node && node.data ? node.data.reduce((n, t) => n + (t.x ? t.x.length : 0), 0) : null; })"""


# --- role subprocesses: ingest's, with this bench's database and Redis db ------------------------------------


def run_role(args):
    if args.role == "writer":
        return ingest.role_writer(args.consumer)
    if args.role == "loadgen":
        return ingest.role_loadgen(args.plan, args.out)
    return ingest.role_ws(args.plan, args.out)


class DashboardRun(ingest.Run):
    """ingest's servers, load generator and websocket client; its role subprocesses re-run this file."""

    def spawn(self, name: str, argv: list[str], **kw):
        # ingest.Run starts its roles as `python bench/ingest.py --role …`, which would use ingest's own
        # database and Redis db: run them through this file, which points those at this bench's first.
        argv = [str(HERE) if a == ingest.__file__ else a for a in argv]
        return super().spawn(name, argv, **kw)

    def start_role(self, role: str, plan: Path, out: Path):
        return self.spawn(role, [sys.executable, str(HERE), "--role", role, "--plan", str(plan), "--out", str(out)])


def add_viewer() -> tuple[str, str]:
    """A user in the `viewer` group (as the browser tests make them): the browser signs in with it."""
    from django.contrib.auth.models import Group, User
    from django.db import connection

    password = secrets.token_urlsafe(16)
    user = User.objects.create_user("bench-viewer", password=password)
    user.groups.set(Group.objects.filter(name="viewer"))
    connection.close()
    return user.username, password


def drop_everything():
    """The bench database and Redis db 11, whatever state the run stopped in."""
    import redis

    try:
        ingest._psql(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)", db="postgres")
    finally:
        redis.Redis.from_url(REDIS_URL).flushdb()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the browser --------------------------------------------------------------------------------------------


@dataclass
class Segment:
    name: str
    path: str
    live: bool
    start: float  # scheduled, epoch seconds
    end: float
    warmup: float


@dataclass
class PageResult:
    segment: Segment
    window: tuple[float, float] = (0.0, 0.0)  # steady window, epoch seconds
    counters: tuple[dict, dict] = ({}, {})
    metrics: tuple[dict, dict] = ({}, {})  # CDP Performance.getMetrics at the window's ends
    heap_gc: tuple[float, float] = (float("nan"), float("nan"))
    heap: list[tuple[float, float]] = field(default_factory=list)  # (epoch s, bytes), raw, every --memory-every
    paints: dict[str, list[tuple]] = field(default_factory=dict)  # kind -> [(block, held time, painted at)]
    react_ms: dict[str, list[float]] = field(default_factory=dict)
    loop_points: list | None = None
    errors: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # cores over the window
    failed: str | None = None


def sign_in(context, base: str, username: str, password: str):
    page = context.new_page()
    page.goto(base + "/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("form [type=submit]")
    page.wait_for_load_state("networkidle")
    if "/login/" in page.url:
        raise RuntimeError("the viewer could not sign in through /login/")
    page.close()


class PaintLog:
    """Paint records reduced as they are drained: per kind and batch, only frames showing a newer sample."""

    def __init__(self, blocks: int, loop_charts_only: bool):
        self.blocks, self.loop_charts_only = blocks, loop_charts_only
        self.last: dict[tuple[str, int], float] = {}
        self.by_kind: dict[str, list[tuple]] = {"tick": [], "react": []}
        self.react_ms: dict[str, list[float]] = {}  # chart id -> main-thread ms of each Plotly.react

    def add(self, records: list):
        for kind, painted_ms, held, chart, react_ms in records:
            if kind == "react":
                self.react_ms.setdefault(chart, []).append(react_ms)
                # On /loop/ only the charts of every GPU count; others (efficiency, setpoints) draw other data.
                if self.loop_charts_only and not (chart in ("chart-clock", "chart-tflops")
                                                  or chart.startswith("heatmap-")):
                    continue
            if not held:
                continue
            for block, sample_time in enumerate(held[:self.blocks]):
                if sample_time is None or sample_time <= self.last.get((kind, block), float("-inf")):
                    continue
                self.last[(kind, block)] = sample_time
                self.by_kind[kind].append((block, sample_time, painted_ms / 1000))


def _cdp_metrics(cdp) -> dict:
    return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}


def _heap_after_gc(page, cdp) -> float:
    cdp.send("HeapProfiler.collectGarbage")
    return page.evaluate("performance.memory.usedJSHeapSize")


def measure(context, base: str, segment: Segment, blocks: int, memory_every: float, run: DashboardRun) -> PageResult:
    """Open the page in a fresh tab, let it warm up, then watch it until the segment's scheduled end."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    result = PageResult(segment)
    page = context.new_page()
    page.on("pageerror", lambda exc: result.errors.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: msg.type == "error" and result.errors.append(f"console: {msg.text}"))
    cdp = context.new_cdp_session(page)
    cdp.send("Performance.enable")
    paints = PaintLog(blocks, loop_charts_only=segment.path == LIVE_PAGES["loop"])
    try:
        page.goto(base + segment.path, wait_until="load", timeout=180_000)
        if segment.live:
            try:
                page.wait_for_function("window.__bench.hellos > 0", timeout=HELLO_TIMEOUT_S * 1000)
            except PlaywrightTimeout:
                # A broken page is a finding, not a crash: report it (with its JS errors) and go on.
                result.failed = f"no live data (hello) within {HELLO_TIMEOUT_S} s of loading"
                return result
        page.wait_for_timeout(max(0.0, segment.start + segment.warmup - time.time()) * 1000)
        paints.add(page.evaluate(DRAIN_PAINTS))

        heap_gc_start = _heap_after_gc(page, cdp)  # before the window opens: its long task is not counted
        browser0, server0, busy0 = _cpu(run)
        start, metrics_start, t0 = page.evaluate(READ_COUNTERS), _cdp_metrics(cdp), time.time()
        while (left := segment.end - time.time()) > 0:
            page.wait_for_timeout(min(memory_every, left) * 1000)
            paints.add(page.evaluate(DRAIN_PAINTS))
            result.heap.append((time.time(), page.evaluate("performance.memory.usedJSHeapSize")))
        end, metrics_end, t1 = page.evaluate(READ_COUNTERS), _cdp_metrics(cdp), time.time()
        browser1, server1, busy1 = _cpu(run)
        heap_gc_end = _heap_after_gc(page, cdp)
        # DOM nodes and listeners compared after GC at both ends: detached ones awaiting collection don't count.
        metrics_end.update({k: v for k, v in _cdp_metrics(cdp).items() if k in ("Nodes", "JSEventListeners")})
        if segment.path == LIVE_PAGES["loop"]:
            result.loop_points = page.evaluate(LOOP_POINTS)
        page.wait_for_timeout(200)  # frames already requested still land
        paints.add(page.evaluate(DRAIN_PAINTS))
    finally:
        page.close()
    result.window = (t0, max(t1, t0 + 1e-3))  # a page that loaded past its slot has an empty window
    result.counters, result.metrics = (start, end), (metrics_start, metrics_end)
    result.heap_gc = (heap_gc_start, heap_gc_end)
    result.paints, result.react_ms = paints.by_kind, paints.react_ms
    window = result.window[1] - t0
    result.cpu = {"browser": (browser1 - browser0) / window, "server": (server1 - server0) / window,
                  "machine": (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]) * (os.cpu_count() or 1)}
    return result


def _cpu(run: DashboardRun) -> tuple[float, float, tuple]:
    """CPU seconds so far: the browser (Playwright's driver and Chromium), the servers, and the whole machine."""
    ours = set(run.pids())
    browser = [p for p in ingest._tree(os.getpid()) if p != os.getpid() and p not in ours]
    return ingest._cpu_seconds(browser), ingest._cpu_seconds(run.pids("web", "writer")), ingest._machine_busy()


# --- latency ---------------------------------------------------------------------------------------------------


def shown_after_post(load_log: list, observed: list[tuple], since: float, until: float) -> tuple[list[float], int]:
    """Seconds from each accepted batch's POST (sent in [since, until)) to the first observation holding its
    sample, and how many were never observed. `observed`: (batch, sample time held, observed at).

    Like ingest.latency, but from the POST (not its response, so paint and socket share one origin) and per
    window, keeping every value for p95.
    """
    by_block: dict[int, tuple[list, list]] = {}
    for block, held, at in sorted(observed, key=lambda r: r[2]):
        times, ats = by_block.setdefault(block, ([], []))
        times.append(held if not times else max(held, times[-1]))
        ats.append(at)
    values, missed = [], 0
    for block, ts, sent, _done, status, *_ in load_log:
        if status != 202 or not since <= sent < until:
            continue
        times, ats = by_block.get(block, ([], []))
        k = bisect.bisect_left(times, ts - 1e-6)
        if k == len(times):
            missed += 1
        else:
            values.append(ats[k] - sent)
    return sorted(values), missed


def quantile(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(p * len(values)))] if values else float("nan")


def slope_per_minute(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (epoch s, bytes) in MiB per minute."""
    if len(samples) < 3:
        return float("nan")
    xs = [t / 60 for t, _ in samples]
    ys = [v / MIB for _, v in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else float("nan")


# --- the run ---------------------------------------------------------------------------------------------------


def _interrupt(*_):
    raise KeyboardInterrupt


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=["writer", "loadgen", "ws"], help=argparse.SUPPRESS)
    parser.add_argument("--consumer", help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--gpus", type=int, default=4096)
    parser.add_argument("--minutes", type=float, default=3, help="per live page, warm-up included")
    parser.add_argument("--pages", default="live,loop", help="live pages to open, in order (live, loop)")
    parser.add_argument("--warmup", type=float, default=30, help="seconds on a page before its window opens")
    parser.add_argument("--static-seconds", type=float, default=30, help="static baseline page, before and after")
    parser.add_argument("--memory-every", type=float, default=10, help="seconds between JS heap samples")
    parser.add_argument("--gpus-per-request", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=4, help="load generator connections")
    # One web process: the browser and the baseline client then share one broadcaster, so one tick stream.
    parser.add_argument("--web", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--writers", type=int, default=1, help="writer processes")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 512 GPUs, 45 s per page")
    args = parser.parse_args()
    if args.role:
        return run_role(args)
    if args.quick:
        args.gpus, args.minutes, args.warmup, args.static_seconds = 512, 0.75, 10, 10
        args.gpus_per_request = min(args.gpus_per_request, 128)
    pages = [p.strip() for p in args.pages.split(",") if p.strip()]
    unknown = set(pages) - set(LIVE_PAGES)
    if unknown:
        parser.error(f"unknown page(s): {', '.join(sorted(unknown))}; choose from {', '.join(LIVE_PAGES)}")
    # What ingest.Run reads from its args.
    args.port, args.format, args.capacity_concurrency = free_port(), "columns", args.concurrency

    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop the servers and drop the database.
    signal.signal(signal.SIGTERM, _interrupt)
    assert ingest.DB_NAME == DB_NAME and ingest.REDIS_URL == REDIS_URL
    workdir = Path(tempfile.mkdtemp(prefix="fusedc-bench-dashboard-"))
    load_before = os.getloadavg()
    run = None
    try:
        print(f"setting up {args.gpus:,} GPUs in {DB_NAME} (Redis db 11)…", flush=True)
        state = ingest.setup(args.gpus)
        viewer = add_viewer()
        run = DashboardRun(args, state, workdir)
        run.start_servers()
        results, load_log, ws_seen, browser_version = browse(args, pages, run, viewer, workdir)
        (workdir / "memory.json").write_text(json.dumps(
            {r.segment.name: {"heap": r.heap, "heap_after_gc": r.heap_gc, "window": r.window} for r in results}))
    finally:
        if run is not None:
            run.stop()
        drop_everything()
    report(args, state, run, results, load_log, ws_seen, browser_version, load_before, workdir)


def browse(args, pages: list[str], run: DashboardRun, viewer: tuple[str, str], workdir: Path):
    """Start the load and the baseline socket client, then the pages on their schedule; returns what they saw."""
    from playwright.sync_api import sync_playwright

    base = f"http://127.0.0.1:{run.port}"
    track = [block["uuid"][0] for block in run.blocks]
    page_seconds = args.minutes * 60
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport=VIEWPORT)
            context.add_init_script(script=INIT_SCRIPT.replace("__TRACK__", json.dumps(track)))
            sign_in(context, base, *viewer)

            # The schedule is fixed up front: the load generator runs for exactly its length.
            start_at = time.time() + 3
            plan_order = [("static (before)", STATIC_PAGE, False, args.static_seconds, min(5.0, args.warmup))]
            plan_order += [(LIVE_PAGES[name], LIVE_PAGES[name], True, page_seconds, args.warmup) for name in pages]
            plan_order += [("static (after)", STATIC_PAGE, False, args.static_seconds, min(5.0, args.warmup))]
            segments, t = [], start_at + LEAD_SECONDS
            for name, path, live, seconds, warmup in plan_order:
                segments.append(Segment(name, path, live, t, t + seconds, warmup))
                t += seconds
            load_seconds = t + 2 - start_at
            load_out, ws_out = workdir / "load.json", workdir / "ws.json"
            loadgen = run.start_role("loadgen", run.plan("paced", load_seconds, start_at), load_out)
            run.start_role("ws", run.plan("ws", 0, 0), ws_out)
            deadline = time.time() + 90
            while not Path(f"{ws_out}.ready").exists():
                if run.procs["ws"].poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"the websocket client did not connect; see {workdir}/ws.log")
                time.sleep(0.2)
            print(f"load: {args.gpus:,} GPUs at 1 Hz for {load_seconds / 60:.1f} min; pages: "
                  + " → ".join(f"{s.name} ({s.end - s.start:.0f} s)" for s in segments), flush=True)
            results = []
            for segment in segments:
                time.sleep(max(0.0, segment.start - time.time()))
                print(f"  {segment.name}…", flush=True)
                results.append(measure(context, base, segment, len(run.blocks), args.memory_every, run))
            version = browser.version
        finally:
            browser.close()
    loadgen.wait(timeout=load_seconds + 120)
    run.stop(["ws"])
    load_log = json.loads(load_out.read_text())
    ws_seen = json.loads(ws_out.read_text())["seen"] if ws_out.exists() else []
    return results, load_log, ws_seen, version


# --- the report ------------------------------------------------------------------------------------------------


def _f(value, digits=0, suffix="") -> str:
    return "—" if value is None or value != value else f"{value:,.{digits}f}{suffix}"


def report(args, state, run, all_results, load_log, ws_seen, browser_version, load_before, workdir):
    results = [r for r in all_results if not r.failed]
    statics = [r for r in results if not r.segment.live]

    def fps(r: PageResult) -> float:
        a, b = r.counters
        return (b["frames"] - a["frames"]) / ((b["now"] - a["now"]) / 1000)

    static_fps = statistics.fmean(fps(r) for r in statics) if statics else float("nan")
    columns = [r.segment.name for r in results]
    rows: list[tuple[str, list[str]]] = []

    def row(label, fn):
        rows.append((label, [fn(r) for r in results]))

    def latency(r: PageResult):
        """(paint values, not painted, socket values) for the batches POSTed in the page's window."""
        t0, t1 = r.window
        kind = "react" if r.segment.path == LIVE_PAGES["loop"] else "tick"
        paint, missed = shown_after_post(load_log, r.paints.get(kind, []), t0, t1 - SETTLE_SECONDS)
        socket_values, _ = shown_after_post(load_log, ws_seen, t0, t1 - SETTLE_SECONDS)
        return paint, missed, socket_values

    lat = {id(r): latency(r) for r in results if r.segment.live}

    def quartet(values):
        return " / ".join(_f(quantile(values, p), 2) for p in (0.5, 0.95, 0.99)) + " / " + _f(
            values[-1] if values else None, 2)

    def ratios(r):
        paint, _, sock = lat[id(r)]
        return " / ".join(_f(quantile(paint, p) / quantile(sock, p), 1, "×") for p in (0.5, 0.95, 0.99))

    def live_only(fn):
        return lambda r: fn(r) if r.segment.live else "—"

    def minutes(r):
        return (r.window[1] - r.window[0]) / 60

    def metric_delta(name):
        return lambda r: r.metrics[1].get(name, float("nan")) - r.metrics[0].get(name, float("nan"))

    row("window (s, after warm-up)", lambda r: _f(r.window[1] - r.window[0]))
    row("GPUs on the page", live_only(lambda r: _f(r.counters[1]["gpus"]) + (
        f" ({'+'.join(_f(n) for n in r.loop_points)} in the scatters)" if r.loop_points else "")))
    row("ingest → paint, s: p50 / p95 / p99 / max", live_only(lambda r: quartet(lat[id(r)][0])))
    row("ingest → websocket, same batches (baseline)", live_only(lambda r: quartet(lat[id(r)][2])))
    row("paint / websocket: p50 / p95 / p99", live_only(ratios))
    row("batches timed (never painted)", live_only(lambda r: f"{len(lat[id(r)][0]):,} ({lat[id(r)][1]:,})"))
    row("frame rate (fps)", lambda r: _f(fps(r), 1))
    row("  vs static page (same run)", lambda r: _f(fps(r) / static_fps, 2, "×"))
    row("long tasks (per min)", lambda r: _f((r.counters[1]["longtasks"] - r.counters[0]["longtasks"]) / minutes(r), 1))
    row("total blocking time (ms per min)",
        lambda r: _f((r.counters[1]["blocking"] - r.counters[0]["blocking"]) / minutes(r)))
    row("main thread busy (%)", lambda r: _f(metric_delta("TaskDuration")(r) / (r.window[1] - r.window[0]) * 100))
    row("ticks with data / Plotly redraws (per min)", live_only(lambda r: "{} / {}".format(
        _f((r.counters[1]["ticks"] - r.counters[0]["ticks"]) / minutes(r)),
        _f((r.counters[1]["reacts"] - r.counters[0]["reacts"]) / minutes(r)))))
    def react_ms(r):
        values = sorted(v for chart in r.react_ms.values() for v in chart)
        return f"{_f(quantile(values, 0.5))} / {_f(quantile(values, 0.95))}"

    row("Plotly.react, main thread (ms): median / p95", live_only(react_ms))
    row("JS heap used, MiB: start / end / max", lambda r: " / ".join(
        _f(v / MIB, 1) for v in (r.heap[0][1], r.heap[-1][1], max(v for _, v in r.heap))) if r.heap else "—")
    row("JS heap slope, raw (MiB/min, least squares)", lambda r: _f(slope_per_minute(r.heap), 2))
    row("JS heap after forced GC, MiB: start → end",
        lambda r: f"{_f(r.heap_gc[0] / MIB, 1)} → {_f(r.heap_gc[1] / MIB, 1)}")
    row("  growth after GC (MiB/min)", lambda r: _f((r.heap_gc[1] - r.heap_gc[0]) / MIB / minutes(r), 2))
    row("DOM nodes after GC: start → end",
        lambda r: f"{_f(r.metrics[0].get('Nodes'))} → {_f(r.metrics[1].get('Nodes'))}")
    row("JS event listeners after GC: start → end",
        lambda r: f"{_f(r.metrics[0].get('JSEventListeners'))} → {_f(r.metrics[1].get('JSEventListeners'))}")
    row("JS errors", lambda r: str(len(r.errors) + r.counters[1].get("reactErrors", 0)))
    row("CPU cores: browser / server / machine",
        lambda r: f"{r.cpu['browser']:.2f} / {r.cpu['server']:.2f} / {r.cpu['machine']:.2f}")

    ok = [r for r in load_log if r[4] == 202]
    print()
    print(f"FuseDC live dashboard — {args.gpus:,} GPUs live ({state['air_racks']} air racks × 16, "
          f"{state['liquid_racks']} liquid racks × 32): every GPU at 1 Hz with {len(ingest.FIELDS) - 1} "
          f"dcgm-exporter fields and TFLOPS, {args.gpus_per_request} GPUs per POST ({len(run.blocks)} POSTs/s), "
          f"{args.web} uvicorn worker(s), {args.writers} writer(s); Chromium {browser_version} headless, "
          f"software GL, {VIEWPORT['width']}×{VIEWPORT['height']}")
    print(f"machine: {os.cpu_count()} cores; load average before {load_before[0]:.2f} / {load_before[1]:.2f}; after "
          f"{os.getloadavg()[0]:.2f} (shared: other work on the machine shows in every column)")
    head = ("", *columns)
    widths = [max(len(r[0]) for r in rows)] + [max(len(columns[i]), *(len(r[1][i]) for r in rows))
                                               for i in range(len(columns))]
    print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(head, widths, strict=True))))
    for label, values in rows:
        print("  ".join([label.ljust(widths[0]), *(v.rjust(w) for v, w in zip(values, widths[1:], strict=True))]))
    print(f"ingest → paint: from the batch's POST to the first animation frame after the page drew it (/live/: the "
          f"tick's render of the KPI cards and hottest GPUs; /loop/: Plotly.react of the scatters or heatmaps); "
          f"batches POSTed in the last {SETTLE_SECONDS} s of a window are not timed")
    print(f"load: {len(load_log):,} POSTs, {len(load_log) - len(ok)} failed, median "
          f"{_f(statistics.median([(r[3] - r[2]) * 1000 for r in ok]) if ok else None, 1)} ms; "
          f"static page: {STATIC_PAGE}; logs: {workdir}")
    for r in all_results:
        if r.failed:
            print(f"  {r.segment.name} FAILED: {r.failed}")
        if r.react_ms:
            slowest = sorted(r.react_ms.items(), key=lambda kv: -statistics.median(kv[1]))[:4]
            print(f"  {r.segment.name} Plotly.react median ms by chart (redraws): " + ", ".join(
                f"{chart or '?'} {statistics.median(ms):.0f} ({len(ms)})" for chart, ms in slowest))
        for message in sorted(set(r.errors))[:5]:
            print(f"  {r.segment.name}: {message[:300]}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # the finally blocks have stopped the servers and dropped the database
        sys.exit("interrupted")
