"""Telemetry ingest end to end: HTTP → buffer → writers → rows committed in PostgreSQL, and ingest → live websocket.

    .venv/bin/python bench/ingest.py [--gpus 10000] [--seconds 40] [--capacity-seconds 20] [--quick]
                                     [--format columns|prometheus|rows] [--gpus-per-request 1000]
                                     [--web 2] [--writers 2]

Everything runs on this machine, on 127.0.0.1 only:

* its own PostgreSQL database (`fusedc_bench_run`: created, migrated with `manage.py migrate`, dropped at the
  end) and Redis database 10 (flushed; no other database is touched);
* a facility of --gpus GPUs (`facility.demo.build_demo_facility`, imported through the facility-file import);
* the real ASGI app (uvicorn, --web processes) and real writer processes (--writers, each looping
  `telemetry.writer.drain` as `manage.py telemetry drain` and the Celery `drain_buffer` task do);
* a load generator process: every GPU once a second with dcgm-exporter's default fields (21), batched
  --gpus-per-request GPUs to a POST as a collector would, the batches spread evenly over each second;
* a websocket client on `ws/facilities/<site>/live` (session-authenticated) noting the tick in which each
  batch's sample first shows; latency is from the POST's response to that tick's arrival.

Phases: raw binary COPY of the same rows (a scratch table shaped like telemetry_gpusample: same partitioning,
key and BRIN index; median of reps) → paced 1 Hz (sustained committed rows/s over the steady window, latency)
→ capacity (the generator sends as fast as the server answers; committed rows/s) → raw COPY again, so machine
load hits the baseline and the pipeline alike. Prints one table.
"""

from __future__ import annotations

import argparse
import bisect
import http.client
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PG = "postgres://postgres@127.0.0.1:5432"
DB_NAME = "fusedc_bench_run"
REDIS_URL = "redis://127.0.0.1:6379/10"
SITE = "demo"
PATH = {"columns": "/api/v1/telemetry/samples", "rows": "/api/v1/telemetry/samples",
        "prometheus": "/api/v1/telemetry/prometheus"}
# dcgm-exporter's default counters (etc/default-counters.csv) that the catalogue knows, with plausible values
# (low, high, decimals): 11 of them are hot columns of the wide GPU row, the other 10 are counted, not stored.
FIELDS = {
    "DCGM_FI_DEV_SM_CLOCK": (1400, 1980, 0), "DCGM_FI_DEV_MEM_CLOCK": (2619, 2619, 0),
    "DCGM_FI_DEV_MEMORY_TEMP": (40, 75, 0), "DCGM_FI_DEV_GPU_TEMP": (35, 84, 0),
    "DCGM_FI_DEV_POWER_USAGE": (90, 700, 3), "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": (1e9, 9e9, 0),
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": (0, 0, 0), "DCGM_FI_DEV_GPU_UTIL": (0, 100, 0),
    "DCGM_FI_DEV_MEM_COPY_UTIL": (0, 60, 0), "DCGM_FI_DEV_XID_ERRORS": (0, 0, 0),
    "DCGM_FI_DEV_FB_FREE": (1000, 40000, 0), "DCGM_FI_DEV_FB_USED": (40000, 80000, 0),
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": (0, 0, 0), "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS": (0, 0, 0),
    "DCGM_FI_DEV_ROW_REMAP_FAILURE": (0, 0, 0), "DCGM_FI_PROF_GR_ENGINE_ACTIVE": (0, 1, 4),
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": (0, 1, 4), "DCGM_FI_PROF_DRAM_ACTIVE": (0, 1, 4),
    "DCGM_FI_DEV_CLOCKS_EVENT_REASONS": (0, 0, 0), "DCGM_FI_DEV_POWER_VIOLATION": (0, 1e9, 0),
    "DCGM_FI_DEV_THERMAL_VIOLATION": (0, 1e9, 0),
}
VARIANTS = 4  # value sets per batch, rotated each second


def _env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.update(DATABASE_URL=f"{PG}/{DB_NAME}", REDIS_URL=REDIS_URL, DJANGO_SETTINGS_MODULE="config.settings.local",
               LOG_LEVEL="WARNING", CONN_MAX_AGE="600", PYTHONUNBUFFERED="1")
    env.update(extra or {})
    return env


def _django():
    os.environ.update(_env())
    import django

    django.setup()


# --- roles (subprocesses) ---------------------------------------------------------------------------------


def role_writer(consumer: str):
    """A writer: what `manage.py telemetry drain` does, in a loop (the Celery ingest worker's job)."""
    _django()
    from telemetry import writer

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.is_set():
        if writer.drain(consumer, time_budget_s=2.0).entries == 0:
            time.sleep(0.02)


def _value(rng: random.Random, low, high, decimals):
    v = rng.uniform(low, high)
    return round(v, decimals) if decimals else int(v)


def _bodies(plan: dict) -> list[list]:
    """Per batch, VARIANTS ways to build its body from a timestamp (pre-encoded around the timestamp)."""
    rng = random.Random(11)
    out = []
    for block in plan["blocks"]:
        uuids, hosts, indexes = block["uuid"], block["hostname"], block["gpu"]
        variants = []
        for _ in range(VARIANTS):
            values = {f: [_value(rng, *FIELDS[f]) for _ in uuids] for f in plan["fields"]}
            if plan["format"] == "columns":
                head = '{"gpus":{"uuid":' + json.dumps(uuids) + ',"timestamp":['
                tail = "]," + json.dumps(values)[1:] + "}"
                n = len(uuids)
                variants.append(lambda ts, head=head, tail=tail, n=n: (
                    head + ",".join([repr(ts)] * n) + tail).encode())
            elif plan["format"] == "rows":
                text = json.dumps({"samples": [
                    {"metric": f, "uuid": u, "timestamp": "__TS__", "value": values[f][i]}
                    for f in plan["fields"] for i, u in enumerate(uuids)]}).replace('"__TS__"', "{ts}")
                parts = text.split("{ts}")
                variants.append(lambda ts, parts=parts: repr(ts).join(parts).encode())
            else:  # dcgm-exporter text, no timestamps (as dcgm-exporter serves it): the server stamps it
                lines = []
                for f in plan["fields"]:
                    lines += [f"# HELP {f} {f}.", f"# TYPE {f} gauge"]
                    lines += [f'{f}{{gpu="{g}",UUID="{u}",pci_bus_id="00000000:18:00.0",device="nvidia{g}",'
                              f'modelName="NVIDIA H100 80GB HBM3",Hostname="{h}",DCGM_FI_DRIVER_VERSION="550.54.15"}}'
                              f" {values[f][i]}" for i, (u, h, g) in enumerate(zip(uuids, hosts, indexes, strict=True))]
                body = ("\n".join(lines) + "\n").encode()
                variants.append(lambda ts, body=body: body)
        out.append(variants)
    return out


def role_loadgen(plan_path: str, out_path: str):
    """Send the plan's batches (paced: each GPU once a second; max: as fast as answered) and log every request."""
    plan = json.loads(Path(plan_path).read_text())
    bodies = _bodies(plan)
    blocks = len(bodies)
    headers = {"Authorization": f"Bearer {plan['token']}",
               "Content-Type": "text/plain" if plan["format"] == "prometheus" else "application/json"}
    path = PATH[plan["format"]]
    start, seconds, paced = plan["start_at"], plan["seconds"], plan["mode"] == "paced"
    log: list[tuple] = []
    lock = threading.Lock()
    counter = iter(range(10**9))
    last_ts = [0.0] * blocks

    def next_job():
        with lock:
            k = next(counter)
        round_, block = divmod(k, blocks)
        if not paced:  # as fast as answered, until the phase ends
            return (round_, block, 0.0) if time.time() < start + seconds else None
        due = start + round_ + block / blocks
        return (round_, block, due) if due < start + seconds else None

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", plan["port"], timeout=60)
        while (job := next_job()) is not None:
            round_, block, due = job
            if paced:
                time.sleep(max(0.0, due - time.time()))
                ts = round(due, 3)
            else:
                with lock:
                    ts = last_ts[block] = max(round(time.time(), 3), last_ts[block] + 0.001)
            body = bodies[block][round_ % VARIANTS](ts)
            sent = time.time()
            try:
                conn.request("POST", path, body, headers)
                response = conn.getresponse()
                payload = response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", plan["port"], timeout=60)
                status, payload = 0, str(exc).encode()
            done = time.time()
            accepted = json.loads(payload).get("accepted", 0) if status == 202 else 0
            log.append((block, ts, sent, done, status, accepted, len(body)))
            if status not in (202,) and len(log) < 5:
                print(f"loadgen: {status} {payload[:300]!r}", file=sys.stderr)

    time.sleep(max(0.0, start - time.time()))
    threads = [threading.Thread(target=worker) for _ in range(plan["concurrency"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    Path(out_path).write_text(json.dumps(log))


def role_ws(plan_path: str, out_path: str):
    """Follow the live feed; note (batch, sample time, arrival) for the first GPU of every batch in each tick."""
    from websockets.sync.client import connect

    plan = json.loads(Path(plan_path).read_text())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    first = {block["uuid"][0]: b for b, block in enumerate(plan["blocks"])}
    seen: list[tuple] = []
    ticks = 0
    url = f"ws://127.0.0.1:{plan['port']}/ws/facilities/{SITE}/live"
    with connect(url, additional_headers={"Cookie": f"sessionid={plan['session']}"},
                 origin=f"http://127.0.0.1:{plan['port']}", max_size=None, open_timeout=60) as ws:
        track: dict[int, int] = {}
        while not stop.is_set():
            try:
                text = ws.recv(timeout=0.5)
            except TimeoutError:
                continue
            arrived = time.time()
            message = json.loads(text)
            if message["type"] == "hello":
                track = {i: first[u] for i, u in enumerate(message["gpus"]["uuid"]) if u in first}
                Path(out_path + ".ready").write_text("1")
                continue
            if message["type"] != "tick":
                continue
            ticks += 1
            gpus = message["gpus"]
            for i, t in zip(gpus["i"], gpus["time"], strict=True):
                if i in track:
                    seen.append((track[i], t, arrived))
    Path(out_path).write_text(json.dumps({"seen": seen, "ticks": ticks}))


# --- the orchestrator -------------------------------------------------------------------------------------


def _psql(sql: str, db: str = DB_NAME, fetch: bool = False):
    import psycopg

    with psycopg.connect(f"{PG.replace('postgres://', 'postgresql://')}/{db}", autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if fetch else None


def _count() -> int:
    return _psql("SELECT count(*) FROM telemetry_gpusample", fetch=True)[0][0]


def _backlog(client) -> int:
    """Buffer entries not yet acknowledged by a writer (pending + never delivered)."""
    try:
        group = next(g for g in client.xinfo_groups("fusedc:telemetry") if g["name"] == b"writers")
    except Exception:
        return 0
    return int(group.get("pending") or 0) + int(group.get("lag") or 0)


def _cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError):
            pass
    return total


def _machine_busy() -> tuple[float, float]:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def _tree(pid: int) -> list[int]:
    out = [pid]
    for child in Path("/proc").glob("[0-9]*"):
        try:
            if int(child.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out += _tree(int(child.name))
        except (OSError, ValueError, IndexError):
            pass
    return out


def setup(gpus: int) -> dict:
    """Fresh database and Redis db, the facility, a source token and a signed-in session for the live feed."""
    import psycopg
    import redis

    with psycopg.connect(f"{PG.replace('postgres://', 'postgresql://')}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=REPO, env=_env(),
                   check=True)
    redis.Redis.from_url(REDIS_URL).flushdb()
    _django()
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client

    from facility import facility_file
    from facility.demo import build_demo_facility
    from facility.models import GPU
    from telemetry.models import Source

    liquid = gpus // 2 // 32
    air = -(-(gpus - liquid * 32) // 16)
    started = time.time()
    facility_file.import_facility(facility_file.FacilityFile.model_validate(build_demo_facility(air, liquid)))
    imported = time.time() - started
    source = Source(name="bench", kind="json", site_id=GPU.objects.first().node.rack.hall.site_id,
                    rate_limit_per_minute=0)
    token = source.issue_token()
    source.save()
    user = get_user_model().objects.create_superuser("bench", password=None)
    client = Client()
    client.force_login(user)
    rows = list(GPU.objects.order_by("node__rack__hall__name", "node__hostname", "index")
                .values_list("pk", "uuid", "node__hostname", "index"))
    connection.close()
    return {"token": token, "session": client.cookies["sessionid"].value, "gpus": rows, "air_racks": air,
            "liquid_racks": liquid, "import_s": imported}


def _raw_rows(gpu_ids: list[int], seconds: int, start: float):
    """The rows the pipeline stores for `seconds` of the facility, as columns (11 hot DCGM fields, tflops NULL)."""
    import numpy as np

    from telemetry.schema import GPU_COLUMNS, INTEGER_COLUMNS

    rng = np.random.default_rng(5)
    n = len(gpu_ids) * seconds
    ids = np.tile(np.asarray(gpu_ids, dtype=np.int64), seconds)
    times = np.repeat(start + np.arange(seconds, dtype=np.float64), len(gpu_ids))
    columns = [(ids, "i8"), (times, "ts")]
    fields = ["gpu_id", "time"]
    for metric, column in GPU_COLUMNS.items():
        if metric not in FIELDS:
            continue
        low, high, decimals = FIELDS[metric]
        values = np.round(rng.uniform(low, high, n), decimals)
        columns.append((values, "i8" if column in INTEGER_COLUMNS else "f8"))
        fields.append(column)
    return fields, columns


def raw_copy(gpu_ids: list[int], seconds: int, reps: int, chunk_rows: int = 50_000) -> list[float]:
    """Rows/s of a bare binary COPY of the same rows into a table shaped like telemetry_gpusample."""
    import psycopg

    from telemetry.storage import binary_copy

    day = time.strftime("%Y-%m-%d", time.gmtime())
    nxt = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400))
    fields, columns = _raw_rows(gpu_ids, seconds, time.time() - seconds)
    n = len(columns[0][0])
    chunks = [binary_copy([(v[i:i + chunk_rows], k) for v, k in columns]) for i in range(0, n, chunk_rows)]
    rates = []
    with psycopg.connect(f"{PG.replace('postgres://', 'postgresql://')}/{DB_NAME}") as conn:
        conn.execute("DROP TABLE IF EXISTS bench_raw_gpusample")
        conn.execute("CREATE TABLE bench_raw_gpusample (LIKE telemetry_gpusample INCLUDING DEFAULTS) "
                     "PARTITION BY RANGE (time)")
        conn.execute("ALTER TABLE bench_raw_gpusample ADD PRIMARY KEY (gpu_id, time)")
        conn.execute("CREATE INDEX bench_raw_gpusample_time_brin ON bench_raw_gpusample USING brin (time)")
        conn.execute(f"CREATE TABLE bench_raw_gpusample_p PARTITION OF bench_raw_gpusample "
                     f"FOR VALUES FROM ('{day}') TO ('{nxt}')")
        conn.commit()
        for _ in range(reps):
            conn.execute("TRUNCATE bench_raw_gpusample")
            conn.commit()
            started = time.perf_counter()
            for chunk in chunks:
                with conn.cursor() as cur, cur.copy(f"COPY bench_raw_gpusample ({', '.join(fields)}) "
                                                    "FROM STDIN (FORMAT BINARY)") as copy:
                    copy.write(chunk)
                conn.commit()
            rates.append(n / (time.perf_counter() - started))
        conn.execute("DROP TABLE bench_raw_gpusample")
        conn.commit()
    return rates


class Run:
    def __init__(self, args, state: dict, workdir: Path):
        self.args, self.state, self.workdir = args, state, workdir
        self.procs: dict[str, subprocess.Popen] = {}
        self.port = args.port
        per = args.gpus_per_request
        gpus = state["gpus"]
        self.blocks = [{"uuid": [g[1] for g in gpus[i:i + per]], "hostname": [g[2] for g in gpus[i:i + per]],
                        "gpu": [g[3] for g in gpus[i:i + per]]} for i in range(0, len(gpus), per)]

    def spawn(self, name: str, argv: list[str], **kw):
        log = open(self.workdir / f"{name}.log", "w")  # noqa: SIM115 — closed with the process
        self.procs[name] = subprocess.Popen(argv, cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT, **kw)
        return self.procs[name]

    def start_servers(self):
        self.spawn("web", [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1",
                           "--port", str(self.port), "--workers", str(self.args.web), "--lifespan", "off",
                           "--no-access-log", "--log-level", "warning"])
        for i in range(self.args.writers):
            self.spawn(f"writer{i}", [sys.executable, __file__, "--role", "writer", "--consumer", f"bench-w{i}"])
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/healthz")
                if conn.getresponse().status in (200, 503):
                    return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"uvicorn did not answer on port {self.port}; see {self.workdir}/web.log")

    def plan(self, mode: str, seconds: float, start_at: float) -> Path:
        path = self.workdir / f"plan-{mode}.json"
        path.write_text(json.dumps({
            "token": self.state["token"], "session": self.state["session"], "port": self.port,
            "blocks": self.blocks, "fields": list(FIELDS), "format": self.args.format, "mode": mode,
            "seconds": seconds, "start_at": start_at,
            "concurrency": self.args.concurrency if mode == "paced" else self.args.capacity_concurrency,
        }))
        return path

    def pids(self, *names) -> list[int]:
        out = []
        for name, proc in self.procs.items():
            if not names or any(name.startswith(n) for n in names):
                out += _tree(proc.pid)
        return out

    def phase(self, mode: str, seconds: float, warmup: float) -> dict:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        start_at = time.time() + 3.0
        plan = self.plan(mode, seconds, start_at)
        out = self.workdir / f"load-{mode}.json"
        gen = self.spawn(f"loadgen-{mode}", [sys.executable, __file__, "--role", "loadgen", "--plan", str(plan),
                                             "--out", str(out)])
        time.sleep(max(0.0, start_at + warmup - time.time()))
        c0, t0, b0 = _count(), time.time(), _backlog(client)
        cpu0, busy0 = {k: _cpu_seconds(self.pids(k)) for k in ("web", "writer", "loadgen", "ws")}, _machine_busy()
        time.sleep(max(0.0, start_at + seconds - time.time()))
        c1, t1, b1 = _count(), time.time(), _backlog(client)
        cpu1, busy1 = {k: _cpu_seconds(self.pids(k)) for k in ("web", "writer", "loadgen", "ws")}, _machine_busy()
        gen.wait(timeout=300)
        stopped = time.time()
        while _backlog(client) and time.time() - stopped < 120:
            time.sleep(0.2)
        drained = time.time() - stopped
        log = json.loads(out.read_text())
        ok = [r for r in log if r[4] == 202]
        in_window = [r for r in ok if t0 <= r[3] < t1]
        window = t1 - t0
        cpu = {k: (cpu1[k] - cpu0[k]) / window for k in cpu0}
        cpu["machine"] = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]) * (os.cpu_count() or 1)
        return {
            "mode": mode, "window_s": window, "committed_rows_s": (c1 - c0) / window,
            "accepted_rows_s": sum(len(self.blocks[r[0]]["uuid"]) for r in in_window) / window,
            "backlog_start": b0, "backlog_end": b1, "drain_after_s": drained, "requests": len(log),
            "failed": len(log) - len(ok), "log": log, "cpu": cpu,
            "request_ms": statistics.median([(r[3] - r[2]) * 1000 for r in ok]) if ok else float("nan"),
            "body_bytes": statistics.median([r[6] for r in log]) if log else 0,
        }

    def stop(self, names=None):
        for name, proc in list(self.procs.items()):
            if (names is None or any(name.startswith(n) for n in names)) and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in list(self.procs.items()):
            if names is None or any(name.startswith(n) for n in names):
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()


def latency(load_log: list, seen: list, fmt: str) -> dict:
    """Per accepted batch: from its response to the first tick showing its first GPU at that sample or later."""
    by_block: dict[int, tuple[list, list]] = {}
    for block, t, arrived in sorted(seen, key=lambda r: r[2]):
        times, arrivals = by_block.setdefault(block, ([], []))
        times.append(t if not times else max(t, times[-1]))
        arrivals.append(arrived)
    values, missed = [], 0
    for block, ts, sent, done, status, *_ in load_log:
        if status != 202:
            continue
        # dcgm-exporter text carries no timestamps: the server stamps it on arrival, after `sent`.
        want = sent if fmt == "prometheus" else ts
        times, arrivals = by_block.get(block, ([], []))
        k = bisect.bisect_left(times, want - 1e-6)
        if k == len(times):
            missed += 1
            continue
        values.append(arrivals[k] - done)
    values.sort()

    def q(p):
        return values[min(len(values) - 1, int(p * len(values)))] if values else float("nan")

    return {"p50": q(0.50), "p99": q(0.99), "max": values[-1] if values else float("nan"), "n": len(values),
            "missed": missed}


def _fmt(v, digits=0) -> str:
    return "—" if v is None or v != v else f"{v:,.{digits}f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=["writer", "loadgen", "ws"], help=argparse.SUPPRESS)
    parser.add_argument("--consumer", help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--gpus", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=40, help="paced (1 Hz) phase length")
    parser.add_argument("--warmup", type=float, default=10, help="seconds of each phase before its window")
    parser.add_argument("--capacity-seconds", type=float, default=20, help="as-fast-as-answered phase; 0 skips")
    parser.add_argument("--format", choices=["columns", "rows", "prometheus"], default="columns")
    parser.add_argument("--gpus-per-request", type=int, default=1000)
    parser.add_argument("--web", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--writers", type=int, default=2, help="writer processes")
    parser.add_argument("--concurrency", type=int, default=4, help="load generator connections (paced)")
    parser.add_argument("--capacity-concurrency", type=int, default=4, help="load generator connections (capacity)")
    parser.add_argument("--raw-seconds", type=int, default=20, help="seconds of the facility in the raw COPY")
    parser.add_argument("--raw-reps", type=int, default=3, help="raw COPY repetitions before and after")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--quick", action="store_true", help="1,000 GPUs, 10 s paced, 8 s capacity")
    parser.add_argument("--keep", action="store_true", help="keep the bench database afterwards")
    args = parser.parse_args()
    if args.role == "writer":
        return role_writer(args.consumer)
    if args.role == "loadgen":
        return role_loadgen(args.plan, args.out)
    if args.role == "ws":
        return role_ws(args.plan, args.out)
    if args.quick:
        args.gpus, args.seconds, args.warmup, args.capacity_seconds = 1000, 10, 3, 8
        args.gpus_per_request = min(args.gpus_per_request, 250)
        args.raw_seconds, args.raw_reps = 50, 2

    workdir = Path(tempfile.mkdtemp(prefix="fusedc-bench-ingest-"))
    load_before = os.getloadavg()
    print(f"setting up {args.gpus:,} GPUs in {DB_NAME} (Redis db 10)…", flush=True)
    state = setup(args.gpus)
    gpu_ids = [g[0] for g in state["gpus"]]
    run = Run(args, state, workdir)
    raw_before = raw_copy(gpu_ids, args.raw_seconds, args.raw_reps)
    try:
        run.start_servers()
        live = _consumers_present()
        ws_out = workdir / "ws.json"
        if live:
            plan = run.plan("ws", 0, 0)
            run.spawn("ws", [sys.executable, __file__, "--role", "ws", "--plan", str(plan), "--out", str(ws_out)])
            deadline = time.time() + 90
            while not Path(str(ws_out) + ".ready").exists() and time.time() < deadline:
                if run.procs["ws"].poll() is not None:
                    break
                time.sleep(0.2)
        print(f"paced phase: {args.seconds:.0f} s at 1 Hz…", flush=True)
        paced = run.phase("paced", args.seconds, args.warmup)
        lat = None
        if live:
            run.stop(["ws"])
            if ws_out.exists():
                lat = latency(paced["log"], json.loads(ws_out.read_text())["seen"], args.format)
        capacity = None
        if args.capacity_seconds > 0:
            print(f"capacity phase: {args.capacity_seconds:.0f} s as fast as answered…", flush=True)
            capacity = run.phase("max", args.capacity_seconds, min(args.warmup, args.capacity_seconds / 3))
        run.stop()
        total_accepted = sum(len(run.blocks[r[0]]["uuid"]) for p in (paced, capacity) if p
                             for r in p["log"] if r[4] == 202)
        stored = _count()
        raw_after = raw_copy(gpu_ids, args.raw_seconds, args.raw_reps)
    finally:
        run.stop()
        if not args.keep:
            _psql(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)", db="postgres")
    report(args, state, paced, capacity, lat, live, raw_before + raw_after, total_accepted, stored, load_before)


def _consumers_present() -> bool:
    """The live endpoint is built by another part of the project; measure latency only where it exists."""
    try:
        from config.routing import websocket_urlpatterns

        return any("live" in str(p.pattern) for p in websocket_urlpatterns)
    except Exception:
        return False


def report(args, state, paced, capacity, lat, live, raw, total_accepted, stored, load_before):
    fields = len(FIELDS)
    stored_fields = 11
    raw_rate = statistics.median(raw)
    offered = args.gpus
    rows = []

    def line(name, rows_s, target, met, note=""):
        rows.append((name, _fmt(rows_s), _fmt(rows_s * fields if rows_s == rows_s else None),
                     f"1/{raw_rate / rows_s:.1f}" if rows_s and rows_s == rows_s else "—", target, met, note))

    line("offered: every GPU at 1 Hz", offered, "", "")
    sustained = paced["committed_rows_s"] >= 0.97 * offered and paced["backlog_end"] <= 2 * len(
        range(0, offered, args.gpus_per_request))
    line(f"end to end, paced ({paced['window_s']:.0f} s window)", paced["committed_rows_s"],
         f"≥ {offered * fields:,} samples/s", "yes" if sustained else "NO",
         f"backlog {paced['backlog_start']}→{paced['backlog_end']} batches, drained {paced['drain_after_s']:.1f} s "
         f"after")
    if capacity:
        ratio_ok = capacity["committed_rows_s"] * 8 >= raw_rate
        line(f"end to end, capacity ({capacity['window_s']:.0f} s window)", capacity["committed_rows_s"],
             "≥ 1/8 raw COPY", "yes" if ratio_ok else "NO",
             f"HTTP accepted {capacity['accepted_rows_s']:,.0f} rows/s; backlog {capacity['backlog_start']}→"
             f"{capacity['backlog_end']}")
    line(f"raw binary COPY, same rows (median of {len(raw)})", raw_rate, "", "",
         f"min {min(raw):,.0f}, max {max(raw):,.0f}")
    print()
    print(f"FuseDC telemetry ingest — {args.gpus:,} GPUs ({state['air_racks']} air racks × 16, "
          f"{state['liquid_racks']} liquid racks × 32), {fields} dcgm-exporter fields per GPU "
          f"({stored_fields} stored as wide-row columns), format {args.format}, {args.gpus_per_request} GPUs per "
          f"POST, {args.web} uvicorn worker(s), {args.writers} writer(s)")
    print(f"machine: {os.cpu_count()} cores; load average before {load_before[0]:.2f} / {load_before[1]:.2f}; "
          f"after {os.getloadavg()[0]:.2f}")
    head = ("", "rows/s", "samples/s", "vs raw COPY", "target", "met", "")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(str(c).ljust(w) if i in (0, 4, 6) else str(c).rjust(w) for i, (c, w) in
                        enumerate(zip(r, widths, strict=True))).rstrip())
    if lat is not None:
        ok = lat["p99"] < 1.0
        print(f"ingest → websocket (paced): p50 {lat['p50']:.3f} s, p99 {lat['p99']:.3f} s, max {lat['max']:.3f} s "
              f"over {lat['n']} batches ({lat['missed']} not seen) — target p99 < 1 s: {'yes' if ok else 'NO'}")
    elif live:
        print("ingest → websocket: not available: the live client did not connect (see the bench log folder)")
    else:
        print("ingest → websocket: not available: live endpoint missing")
    cpu = paced["cpu"]
    print(f"CPU (paced window, cores): web {cpu['web']:.2f}, writers {cpu['writer']:.2f}, load generator "
          f"{cpu['loadgen']:.2f}, ws client {cpu['ws']:.2f}; whole machine {cpu['machine']:.2f} (incl. PostgreSQL, "
          f"Redis and anything else running)")
    print(f"requests: paced {paced['requests']} ({paced['failed']} failed, median {paced['request_ms']:.1f} ms, "
          f"{paced['body_bytes'] / 1e3:,.0f} kB)" + (
              f", capacity {capacity['requests']} ({capacity['failed']} failed, median "
              f"{capacity['request_ms']:.1f} ms)" if capacity else ""))
    print(f"exactly once: {stored:,} rows stored for {total_accepted:,} rows accepted — "
          f"{'equal' if stored == total_accepted else 'MISMATCH'}")


if __name__ == "__main__":
    main()
