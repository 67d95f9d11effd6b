"""Live fan-out: one broadcaster per facility per ASGI process, tailing the ingest buffer.

Where it runs, and why: each ASGI process runs, per site that has at least one open live socket, one asyncio
task (a `Broadcaster`). It tails the ingest buffer (`Buffer.tail`: XREAD past the writers' consumer group on
Redis, a bounded deque in the embedded default), so live latency never waits for the database writer. It
keeps the latest value of each GPU and cooling point of its site in fixed arrays, and every `TICK_SECONDS`
turns what changed into one columnar `tick` message that it hands to its own process's sockets. There is no
shared group: N ASGI processes each read the stream once (a cheap XREAD) instead of one publisher pushing
every tick through channels-redis to all of them, so nothing can be dropped silently by a full channel and
no process duplicates another's ticks. The task starts with the first subscriber of its site and stops
`LINGER_SECONDS` after the last one leaves.

Memory is bounded: arrays sized by the inventory, a bounded queue per socket (`QUEUE_TICKS`; when a slow
client's queue is full its oldest message is dropped and the client sees a gap in `seq`, on which it
refetches over REST), and at most `MAX_ENTRIES_PER_TICK` buffer entries read per tick (a backlog is skipped
forward rather than replayed; the skipped values are in the database for the REST refetch).

Messages (JSON text):

* `hello` — on connect and whenever the inventory changes: GPU order (uuid, hostname, gpu, hall, rack, slot,
  cooling) with the full snapshot of the latest values in that order, cooling/site point series (id →
  unit, point, metric), halls and units, KPIs, alarms, thresholds, and `seq` (the last tick sent; the next
  tick is seq + 1).
* `tick` — `seq`, `time` (the data clock: newest sample time seen), `gpus` (indices into the hello order of
  GPUs that reported since the last tick, with their latest `LIVE_COLUMNS` and sample time), `points`
  (changed point values), `kpis` (`telemetry.derived.facility_kpis` per hall and total) and `alarms`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection

from telemetry.buffer import BufferUnavailable, get_buffer
from telemetry.derived import facility_kpis
from telemetry.ingest import decode

log = logging.getLogger(__name__)

# At most this many ticks a second per facility (the page batches its charts on top).
TICK_SECONDS = 0.5
# A tick is sent at least this often even when nothing changed, so a client can tell a quiet plant from a
# dead socket.
HEARTBEAT_SECONDS = 5.0
# Keep the broadcaster (and its warm state) this long after its last subscriber left: page changes reconnect.
LINGER_SECONDS = 10.0
# Buffer entries read per tick at most; beyond that the tail jumps forward (a live view shows now).
MAX_ENTRIES_PER_TICK = 400
TAIL_BATCH = 100
# On start, also read this far back in the buffer: data accepted but not yet stored by a writer.
TAIL_LOOKBACK_SECONDS = 15
# Ticks a slow socket may have queued before its oldest is dropped (the client then sees a seq gap).
QUEUE_TICKS = 32
# Values older than this (on the data clock) do not count in KPIs, like the REST `latest` default.
KPI_WINDOW_SECONDS = 300
# A source, cooling unit or GPU without data for this long is stale (an alarm).
STALE_SECONDS = getattr(settings, "TELEMETRY_LIVE_STALE_SECONDS", 30)
# GPU temperature alarms: H100 slowdown at 89 °C; warn from 85 °C.
SLOWDOWN_C = 89.0
WARN_C = 85.0
# A cooling unit whose supply runs this far above its own setpoint read-back is not holding it (a fault).
SETPOINT_DEVIATION_K = 2.0
MAX_GPU_ALARMS = 25

# The per-GPU storage columns a live view gets (`telemetry.schema.GPU_COLUMNS` values).
LIVE_COLUMNS = ("gpu_temp", "sm_clock", "power_usage", "tflops", "clocks_event_reasons", "memory_temp", "gpu_util")
# Supply temperature metric (and point) whose own setpoint read-back it should follow.
_SUPPLY_OF_SETPOINT = {
    "supply_air_temperature_setpoint_celsius": ("supply_air_temperature_celsius", ""),
    "secondary_supply_temperature_setpoint_celsius": ("supply_water_temperature_celsius", "secondary"),
    "chilled_water_supply_temperature_setpoint_celsius": ("supply_water_temperature_celsius", "chilled_water"),
}


def _clean(value):
    """JSON-safe: NaN and infinities become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _floats(array: np.ndarray, digits: int = 3) -> list:
    return [None if not math.isfinite(v) else round(v, digits) for v in array.tolist()]


def dumps(message: dict) -> str:
    return json.dumps(message, separators=(",", ":"), allow_nan=False)


# --- The site's inventory, loaded from the database ------------------------------------------------------


@dataclass
class Inventory:
    site_id: int
    slug: str
    gpu_pk: list[int]
    gpus: dict[str, list]  # uuid, hostname, gpu, hall, rack, rack_id, slot, cooling
    halls: list[dict]  # name, cooling_type
    gpu_hall: np.ndarray  # hall index per GPU
    series_ids: list[int]
    series: dict[str, list]  # id, unit, point, metric
    units: dict[str, dict]  # name -> hall, kind, pk
    plant_halls: dict[str, list[str]]  # central-plant unit -> hall units it serves (through its loops)
    sources: set[int] = field(default_factory=set)
    foreign_sources: set[int] = field(default_factory=set)  # other sites' sources: ignored, not "unknown"

    @property
    def gpu_index(self) -> dict[int, int]:
        return {pk: i for i, pk in enumerate(self.gpu_pk)}


def load_inventory(site_id: int) -> Inventory:
    from facility.models import GPU, CoolingUnit, Hall, Site
    from telemetry.models import Series, Source

    site = Site.objects.get(pk=site_id)
    halls = list(Hall.objects.filter(site=site).order_by("name"))
    hall_pos = {h.pk: i for i, h in enumerate(halls)}
    rows = list(
        GPU.objects.filter(node__rack__hall__site=site)
        .order_by("node__rack__hall__name", "node__rack__row", "node__rack__position", "node__rack__name",
                  "node__slot", "node__hostname", "index")
        .values_list("pk", "uuid", "node__hostname", "index", "node__rack__hall_id", "node__rack__name",
                     "node__rack_id", "node__slot", "node__rack__hall__cooling_type")
    )
    gpus = {k: [] for k in ("uuid", "hostname", "gpu", "hall", "rack", "rack_id", "slot", "cooling")}
    for _pk, uuid, host, index, hall_id, rack, rack_id, slot, cooling in rows:
        for key, value in zip(gpus, (uuid, host, index, halls[hall_pos[hall_id]].name, rack, rack_id, slot, cooling),
                              strict=True):
            gpus[key].append(value)
    series = {"id": [], "unit": [], "point": [], "metric": []}
    for s in Series.objects.filter(site=site).select_related("cooling_unit").order_by("pk"):
        series["id"].append(s.pk)
        series["unit"].append(s.cooling_unit.name if s.cooling_unit_id else None)
        series["point"].append(s.point)
        series["metric"].append(s.metric)
    unit_rows = list(CoolingUnit.objects.filter(site=site).select_related("hall", "supply_loop", "return_loop"))
    units = {u.name: {"hall": u.hall.name if u.hall_id else None, "kind": u.kind, "pk": u.pk} for u in unit_rows}
    return Inventory(
        site_id=site.pk, slug=site.slug, gpu_pk=[r[0] for r in rows], gpus=gpus,
        halls=[{"name": h.name, "cooling_type": h.cooling_type} for h in halls],
        gpu_hall=np.array([hall_pos[r[4]] for r in rows], dtype=np.int64),
        series_ids=series["id"], series=series, units=units, plant_halls=_plant_halls(unit_rows),
        sources=set(Source.objects.filter(site=site).values_list("pk", flat=True)),
        foreign_sources=set(Source.objects.exclude(site=site).values_list("pk", flat=True)),
    )


def _plant_halls(units) -> dict[str, list[str]]:
    """Which hall units each central-plant unit serves: follow the loops from the halls' own units upstream.

    A hall unit takes its cooling from its `return_loop`; a plant unit supplying that loop serves it, and so
    does whatever supplies that plant unit's own return loop (chiller → condenser water → tower), and so on.
    """
    served: dict[str, set[str]] = {u.name: set() for u in units if not u.hall_id}
    for hall_unit in (u for u in units if u.hall_id):
        loops, seen = {hall_unit.return_loop_id} - {None}, set()
        while loops - seen:
            loop = (loops - seen).pop()
            seen.add(loop)
            for plant in (u for u in units if not u.hall_id and u.supply_loop_id == loop):
                served[plant.name].add(hall_unit.name)
                if plant.return_loop_id:
                    loops.add(plant.return_loop_id)
    return {name: sorted(hall_units) for name, hall_units in served.items()}


def load_snapshot(inv: Inventory, since: float) -> tuple[dict, dict]:
    """Latest stored values (for a broadcaster starting cold): GPU columns by index, points by series id."""
    from telemetry import query
    from telemetry.schema import METRIC_OF_COLUMN

    metrics = [METRIC_OF_COLUMN[c] for c in LIVE_COLUMNS]
    latest = query.latest_gpu_values(inv.site_id, metrics, since)
    index = {uuid: i for i, uuid in enumerate(inv.gpus["uuid"])}
    gpu = {"i": [index[u] for u in latest["uuid"]], "time": latest["time"]}
    for column, metric in zip(LIVE_COLUMNS, metrics, strict=True):
        gpu[column] = latest[metric]
    key = {(u, p, m): sid for sid, u, p, m in zip(inv.series["id"], inv.series["unit"], inv.series["point"],
                                                   inv.series["metric"], strict=True)}
    points = {}
    for p in query.latest_point_values(inv.site_id, None, since):
        sid = key.get((p["cooling_unit"], p["point"], p["metric"]))
        if sid is not None:
            points[sid] = (p["time"], p["value"])
    return gpu, points


KPI_COLUMNS = ("power_usage", "tflops", "clocks_event_reasons", "gpu_temp")


def kpis_by_hall(inv: Inventory, gpu: dict[str, np.ndarray], points: list[dict]) -> dict:
    """`facility_kpis` for the site and for each hall, JSON-safe.

    A hall counts its GPUs and its own cooling units. Central plant (chillers, towers, pumps) is shared among
    the halls whose units it serves (through its loops), in proportion to the heat those units remove
    (`heat_removed_kilowatt`), or to the halls' GPU power where units report no heat. The site's IT meter and
    its electrical losses are apportioned by GPU power, so hall IT, cooling and facility power add up to the
    site's; without meters a hall's IT power is its GPUs' power.
    """
    total = facility_kpis(gpu, points)
    masks = [inv.gpu_hall == h for h in range(len(inv.halls))]
    gpu_kw = {hall["name"]: float(np.nansum(gpu["power_usage"][m])) for hall, m in zip(inv.halls, masks, strict=True)}
    heat: dict[str, float] = {}
    for p in points:
        if p.get("cooling_unit") and p["metric"] == "heat_removed_kilowatt" and p["value"] > 0:
            heat[p["cooling_unit"]] = heat.get(p["cooling_unit"], 0.0) + p["value"]
    shares: dict[str, dict[str, float]] = {}  # plant unit -> hall -> share
    for plant, hall_units in inv.plant_halls.items():
        weights: dict[str, float] = {}
        for unit in hall_units:
            hall = inv.units[unit]["hall"]
            weights[hall] = weights.get(hall, 0.0) + heat.get(unit, 0.0)
        if sum(weights.values()) <= 0:
            weights = {hall: gpu_kw.get(hall, 0.0) for hall in weights}
        load = sum(weights.values())
        shares[plant] = {h: (w / load if load > 0 else 1 / len(weights)) for h, w in weights.items()}
    site_gpu_kw = sum(gpu_kw.values())
    meters = {p["metric"]: p["value"] for p in points if not p.get("cooling_unit")}
    it_meter, facility_meter = meters.get("it_power_kilowatt"), meters.get("facility_power_kilowatt")
    site_cooling = total["cooling_power_kw"]
    halls = {}
    for hall, mask in zip(inv.halls, masks, strict=True):
        name, mine = hall["name"], []
        for p in points:
            unit = p.get("cooling_unit")
            if unit is None:
                continue  # site meters are apportioned below
            if inv.units.get(unit, {}).get("hall") == name:
                mine.append(p)
            elif name in shares.get(unit, {}):
                mine.append({**p, "value": p["value"] * shares[unit][name]})
        # The site's IT meter (and its electrical losses: facility - IT - cooling) apportioned by GPU power, so
        # hall figures add up to the site's; without meters a hall's IT is its GPU power.
        share = gpu_kw[name] / site_gpu_kw if site_gpu_kw > 0 else 0.0
        if it_meter is not None and share:
            it_kw = it_meter * share
            cooling_kw = sum(p["value"] for p in mine if p["metric"] == "unit_power_kilowatt")
            mine.append({"cooling_unit": None, "metric": "it_power_kilowatt", "value": it_kw})
            if facility_meter is not None and math.isfinite(site_cooling):
                losses = max(0.0, facility_meter - it_meter - site_cooling) * share
                mine.append({"cooling_unit": None, "metric": "facility_power_kilowatt",
                             "value": it_kw + cooling_kw + losses})
        halls[name] = facility_kpis({c: np.asarray(v)[mask] for c, v in gpu.items()}, mine)
    return {
        "total": {k: _clean(v) for k, v in total.items()},
        "halls": {n: {k: _clean(v) for k, v in d.items()} for n, d in halls.items()},
    }


# --- Subscribers and the broadcaster ---------------------------------------------------------------------


class Subscriber:
    """One socket's bounded outbox of encoded messages."""

    def __init__(self):
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=QUEUE_TICKS)
        self.dropped = 0

    def offer(self, text: str):
        if self.queue.full():
            self.queue.get_nowait()  # the oldest goes; the client sees the gap in seq and refetches
            self.dropped += 1
        self.queue.put_nowait(text)


class Broadcaster:
    def __init__(self, site_id: int, slug: str):
        self.site_id, self.slug = site_id, slug
        self.subscribers: set[Subscriber] = set()
        self.loop = asyncio.get_running_loop()
        self.ready = asyncio.Event()
        self.seq = 0
        self.empty_since: float | None = None
        self.task: asyncio.Task | None = None
        self.inv: Inventory | None = None
        self.data_time = 0.0
        self.after_id = "0-0"
        self.started = time.time()
        self._last_sent = 0.0
        self._last_inventory_reload = 0.0
        self._names: dict[int, str] = {}
        self._reset_changes()

    # -- state --

    def _reset_changes(self):
        self.changed_gpus: set[int] = set()
        self.changed_points: set[int] = set()
        self.inventory_stale = False

    def _size(self, inv: Inventory):
        n = len(inv.gpu_pk)
        self.inv = inv
        self.gpu_index = inv.gpu_index
        self.series_pos = {sid: i for i, sid in enumerate(inv.series_ids)}
        self.latest = {c: np.full(n, np.nan) for c in LIVE_COLUMNS}
        self.latest_time = np.full(n, -np.inf)
        self.gpu_arrival = np.full(n, self.started)
        m = len(inv.series_ids)
        self.point_value = np.full(m, np.nan)
        self.point_time = np.full(m, -np.inf)
        self.point_arrival = np.full(m, np.nan)
        self.source_arrival = dict.fromkeys(inv.sources, self.started)
        self.hall_mask = [inv.gpu_hall == h for h in range(len(inv.halls))]

    async def _load(self, *, initial: bool):
        inv = await sync_to_async(load_inventory)(self.site_id)
        previous = (self.inv, self.latest, self.latest_time, self.gpu_arrival, self.point_value, self.point_time,
                    self.point_arrival, self.source_arrival) if self.inv else None
        self._size(inv)
        if previous is not None:  # carry values over by identity (uuid, series id, source id)
            old_inv, old_latest, old_time, old_arrival, old_pv, old_pt, old_pa, old_sources = previous
            old_index = {u: i for i, u in enumerate(old_inv.gpus["uuid"])}
            for i, uuid in enumerate(inv.gpus["uuid"]):
                if (j := old_index.get(uuid)) is not None:
                    self.latest_time[i], self.gpu_arrival[i] = old_time[j], old_arrival[j]
                    for c in LIVE_COLUMNS:
                        self.latest[c][i] = old_latest[c][j]
            old_pos = {sid: i for i, sid in enumerate(old_inv.series_ids)}
            for i, sid in enumerate(inv.series_ids):
                if (j := old_pos.get(sid)) is not None:
                    self.point_value[i], self.point_time[i], self.point_arrival[i] = old_pv[j], old_pt[j], old_pa[j]
            for sid in self.source_arrival:
                self.source_arrival[sid] = old_sources.get(sid, time.time())
        if initial:
            gpu, points = await sync_to_async(load_snapshot)(inv, time.time() - KPI_WINDOW_SECONDS)
            self._apply_gpu_columns(gpu["i"], gpu["time"], gpu, mark=False)
            for sid, (ts, value) in points.items():
                pos = self.series_pos[sid]
                self.point_value[pos], self.point_time[pos] = value, ts
                self.point_arrival[pos] = self.started
        self._last_inventory_reload = time.monotonic()

    def _apply_gpu_columns(self, idx, times, columns: dict, *, mark: bool):
        if not len(idx):
            return
        idx = np.asarray(idx, dtype=np.int64)
        times = np.asarray(times, dtype=float)
        order = np.argsort(times, kind="stable")  # oldest first: the newest write per GPU wins
        idx, times = idx[order], times[order]
        newer = times >= self.latest_time[idx]
        if not newer.any():
            return
        rows, idx_new = order[newer], idx[newer]
        for c in LIVE_COLUMNS:
            values = columns.get(c)
            if values is None:
                continue
            col = np.array([np.nan if v is None else v for v in values], dtype=float)[rows]
            ok = ~np.isnan(col)
            self.latest[c][idx_new[ok]] = col[ok]
        self.latest_time[idx_new] = np.maximum(self.latest_time[idx_new], times[newer])
        if mark:
            self.gpu_arrival[idx_new] = time.time()
            self.changed_gpus.update(idx_new.tolist())
        self.data_time = max(self.data_time, float(times.max()))

    def apply(self, payload: bytes):
        data = decode(payload)
        source = data.get("source")
        if source not in self.source_arrival:
            if source not in self.inv.foreign_sources:
                self.inventory_stale = True  # a new source: perhaps this site's
            return
        now = time.time()
        self.source_arrival[source] = now
        gpu = data.get("gpu") or {}
        ids = gpu.get("gpu_id") or []
        if ids:
            pos = [self.gpu_index.get(pk, -1) for pk in ids]
            keep = [j for j, p in enumerate(pos) if p >= 0]
            if len(keep) != len(pos):
                self.inventory_stale = True
            if keep:
                sub = {c: [gpu[c][j] for j in keep] for c in LIVE_COLUMNS if c in gpu}
                self._apply_gpu_columns([pos[j] for j in keep], [gpu["time"][j] for j in keep], sub, mark=True)
        points = data.get("points") or {}
        for sid, ts, value in zip(points.get("series_id", []), points.get("time", []), points.get("value", []),
                                  strict=True):
            p = self.series_pos.get(sid)
            if p is None:
                self.inventory_stale = True
                continue
            self.point_arrival[p] = now
            if ts >= self.point_time[p]:
                self.point_value[p], self.point_time[p] = value, ts
                self.changed_points.add(p)
            self.data_time = max(self.data_time, ts)

    # -- derived --

    def kpis(self) -> dict:
        inv = self.inv
        fresh = self.latest_time >= self.data_time - KPI_WINDOW_SECONDS
        gpu = {c: np.where(fresh, self.latest[c], np.nan) for c in KPI_COLUMNS}
        point_fresh = self.point_time >= self.data_time - KPI_WINDOW_SECONDS
        points = [
            {"cooling_unit": inv.series["unit"][i], "metric": inv.series["metric"][i], "value": float(v)}
            for i, v in enumerate(self.point_value) if point_fresh[i] and math.isfinite(v)
        ]
        return kpis_by_hall(inv, gpu, points)

    def alarms(self) -> list[dict]:
        inv, now, out = self.inv, time.time(), []
        temps = self.latest["gpu_temp"]
        fresh = self.latest_time >= self.data_time - STALE_SECONDS
        hot = np.flatnonzero(fresh & (temps >= WARN_C))
        for i in hot[np.argsort(-temps[hot])][:MAX_GPU_ALARMS].tolist():
            critical = temps[i] >= SLOWDOWN_C
            out.append({
                "level": "critical" if critical else "warning", "kind": "gpu_temperature",
                "subject": f"{inv.gpus['hostname'][i]}/gpu{inv.gpus['gpu'][i]}", "hall": inv.gpus["hall"][i],
                "uuid": inv.gpus["uuid"][i],
                "message": f"{temps[i]:.1f} °C — {'at or past' if critical else 'within'} "
                           f"{'slowdown' if critical else f'{SLOWDOWN_C - temps[i]:.1f} K of slowdown'} "
                           f"({SLOWDOWN_C:.0f} °C)",
            })
        if len(hot) > MAX_GPU_ALARMS:
            out.append({"level": "warning", "kind": "gpu_temperature", "subject": "more GPUs",
                        "message": f"{len(hot) - MAX_GPU_ALARMS} more GPUs above {WARN_C:.0f} °C"})
        for h, hall in enumerate(inv.halls):
            silent = int(np.count_nonzero(self.hall_mask[h] & (now - self.gpu_arrival > STALE_SECONDS)))
            if silent:
                out.append({"level": "warning", "kind": "stale", "subject": hall["name"],
                            "message": f"{silent} GPUs sent no data for {STALE_SECONDS} s", "hall": hall["name"]})
        names = self._names
        for sid, arrived in self.source_arrival.items():
            if now - arrived > STALE_SECONDS and sid in names:
                out.append({"level": "critical", "kind": "stale", "subject": f"source {names[sid]}",
                            "message": f"no data for {now - arrived:.0f} s"})
        out.extend(self._unit_alarms(now))
        return out

    def _unit_alarms(self, now: float) -> list[dict]:
        inv, out = self.inv, []
        seen: dict[str, float] = {}
        value = {}
        for i, unit in enumerate(inv.series["unit"]):
            if unit is None or math.isnan(self.point_arrival[i]):
                continue
            seen[unit] = max(seen.get(unit, 0.0), self.point_arrival[i])
            value[(unit, inv.series["point"][i], inv.series["metric"][i])] = self.point_value[i]
        for unit, arrived in sorted(seen.items()):
            if now - arrived > STALE_SECONDS:
                out.append({"level": "critical", "kind": "unit_fault", "subject": unit,
                            "hall": inv.units.get(unit, {}).get("hall"),
                            "message": f"no readings for {now - arrived:.0f} s"})
        for (unit, point, metric), sp in value.items():
            if metric in _SUPPLY_OF_SETPOINT and point == "":
                supply_metric, supply_point = _SUPPLY_OF_SETPOINT[metric]
                supply = value.get((unit, supply_point, supply_metric))
                if supply is not None and math.isfinite(supply) and supply - sp > SETPOINT_DEVIATION_K:
                    out.append({"level": "warning", "kind": "unit_fault", "subject": unit,
                                "hall": inv.units.get(unit, {}).get("hall"),
                                "message": f"supply {supply:.1f} °C is {supply - sp:.1f} K above its "
                                           f"setpoint {sp:.1f} °C"})
        return out

    # -- messages --

    def hello(self) -> str:
        inv = self.inv
        latest = {"time": [_clean(t) for t in self.latest_time.tolist()]}
        for c in LIVE_COLUMNS:
            latest[c] = _floats(self.latest[c])
        has = ~np.isnan(self.point_value)
        return dumps({
            "type": "hello", "site": inv.slug, "seq": self.seq, "time": _clean(self.data_time) or None,
            "tick_seconds": TICK_SECONDS, "stale_seconds": STALE_SECONDS,
            "thresholds": {"slowdown_c": SLOWDOWN_C, "warn_c": WARN_C},
            "columns": list(LIVE_COLUMNS),
            "gpus": inv.gpus,
            "halls": inv.halls,
            "units": {name: {"hall": u["hall"], "kind": u["kind"]} for name, u in inv.units.items()},
            "series": inv.series,
            "latest": latest,
            "points": {"id": [inv.series_ids[i] for i in np.flatnonzero(has)],
                       "time": [float(self.point_time[i]) for i in np.flatnonzero(has)],
                       "value": [float(self.point_value[i]) for i in np.flatnonzero(has)]},
            "kpis": self.kpis(),
            "alarms": self.alarms(),
        })

    def tick(self) -> str:
        inv = self.inv
        idx = np.array(sorted(self.changed_gpus), dtype=np.int64)
        gpus = {"i": idx.tolist(), "time": [float(t) for t in self.latest_time[idx]]}
        for c in LIVE_COLUMNS:
            values = self.latest[c][idx]
            gpus[c] = ([None if math.isnan(v) else int(v) for v in values.tolist()]
                       if c == "clocks_event_reasons" else _floats(values))
        pts = sorted(self.changed_points)
        self.seq += 1
        return dumps({
            "type": "tick", "seq": self.seq, "time": _clean(self.data_time) or None, "wall": time.time(),
            "gpus": gpus,
            "points": {"id": [inv.series_ids[p] for p in pts], "time": [float(self.point_time[p]) for p in pts],
                       "value": [float(self.point_value[p]) for p in pts]},
            "kpis": self.kpis(),
            "alarms": self.alarms(),
        })

    def send_all(self, text: str):
        for subscriber in list(self.subscribers):
            subscriber.offer(text)

    # -- the loop --

    async def _read(self):
        """Tail the buffer: at most MAX_ENTRIES_PER_TICK entries, off the event loop."""
        buffer = get_buffer()
        read = 0
        while read < MAX_ENTRIES_PER_TICK:
            entries = await sync_to_async(buffer.tail, thread_sensitive=False)(self.after_id, TAIL_BATCH)
            if not entries:
                return
            for entry_id, payload in entries:
                self.after_id = entry_id
                try:
                    self.apply(payload)
                except Exception:
                    log.exception("live: could not apply buffer entry %s", entry_id)
            read += len(entries)
        # Behind by more than a tick can carry: jump to now; the REST refetch fills what was skipped.
        self.after_id = f"{int(time.time() * 1000) - 1000}-0"

    async def run(self):
        try:
            await self._load(initial=True)
            self._names = await sync_to_async(_source_names)(self.site_id)
            self.after_id = f"{int((time.time() - TAIL_LOOKBACK_SECONDS) * 1000)}-0"
            self.ready.set()
            while True:
                started = self.loop.time()
                if not self.subscribers:
                    self.empty_since = self.empty_since or started
                    if started - self.empty_since > LINGER_SECONDS:
                        return
                else:
                    self.empty_since = None
                try:
                    await self._read()
                except BufferUnavailable as exc:
                    log.warning("live %s: buffer unavailable (%s)", self.slug, exc)
                if self.inventory_stale and time.monotonic() - self._last_inventory_reload > 2.0:
                    before = (self.inv.gpus["uuid"], self.inv.series_ids, self.inv.sources)
                    await self._load(initial=False)
                    self._names = await sync_to_async(_source_names)(self.site_id)
                    if before != (self.inv.gpus["uuid"], self.inv.series_ids, self.inv.sources):
                        self.changed_gpus.clear()
                        self.changed_points.clear()
                        self.send_all(self.hello())  # new order: clients start over from this snapshot
                    self.inventory_stale = False
                if self.changed_gpus or self.changed_points or started - self._last_sent >= HEARTBEAT_SECONDS:
                    if self.subscribers:
                        self.send_all(self.tick())
                    self._last_sent = started
                    self.changed_gpus.clear()
                    self.changed_points.clear()
                await asyncio.sleep(max(0.0, TICK_SECONDS - (self.loop.time() - started)))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("live broadcaster for %s failed", self.slug)
            raise
        finally:
            if _broadcasters.get(self.site_id) is self:
                del _broadcasters[self.site_id]
            # The thread that ran this broadcaster's queries keeps no connection once it is gone.
            await sync_to_async(connection.close)()


def _source_names(site_id: int) -> dict[int, str]:
    from telemetry.models import Source

    return dict(Source.objects.filter(site_id=site_id, revoked_at__isnull=True).values_list("pk", "name"))


# One broadcaster per site in this process (the ASGI server's event loop owns them all).
_broadcasters: dict[int, Broadcaster] = {}


async def subscribe(site_id: int, slug: str) -> tuple[Broadcaster, Subscriber]:
    """Join the site's broadcaster (starting it if needed); the subscriber's first message is a hello."""
    current = _broadcasters.get(site_id)
    if current is None or current.loop is not asyncio.get_running_loop() or (current.task and current.task.done()):
        current = Broadcaster(site_id, slug)
        _broadcasters[site_id] = current
        current.task = asyncio.create_task(current.run(), name=f"fusedc-live-{slug}")
    subscriber = Subscriber()
    current.subscribers.add(subscriber)
    ready = asyncio.create_task(current.ready.wait())
    done, _ = await asyncio.wait({ready, current.task}, return_when=asyncio.FIRST_COMPLETED)
    if ready not in done:
        ready.cancel()
        current.subscribers.discard(subscriber)
        raise RuntimeError(f"live broadcaster for {slug} failed to start")
    subscriber.offer(current.hello())
    return current, subscriber


def unsubscribe(broadcaster: Broadcaster, subscriber: Subscriber):
    broadcaster.subscribers.discard(subscriber)
