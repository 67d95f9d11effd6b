"""Forecaster inputs from telemetry: per-GPU rows of ``FEATURES``, aligned on a time grid, with targets.

One path for training, evaluation and serving:

1. ``CoolingMap`` says, from a facility-file dict (``facility.facility_file.export_facility`` or the twin's
   own), which cooling points feed each GPU: the CRAH/CRAC supply air of its rack (plus the containment
   offset) as inlet air, the CDU secondary supply and flow as coolant, and the current setpoints.
2. ``assemble_rows`` turns GPU rows (gpu, time, DCGM columns) and point series into ``(rows, FEATURES)``
   physical values, taking each cooling point's latest reading at or before the row's time (vectorised with
   ``searchsorted``; a reading older than ``max_point_age_s`` counts as missing).
3. ``Frames`` puts rows on a grid of ``interval_s`` (1 s, or the scrape interval) per GPU; ``Frames.targets``
   shifts the target columns by each horizon, and the throttle label comes from the clocks-event-reason
   thermal/power bits. ``Frames.split`` holds out the end of the range by time; ``Frames.windows`` cuts
   fixed-length training windows (index arithmetic, no per-sample Python loops).

Rows come from the database (``load_frames``, ``load_rows``: Django imported lazily) or straight from the
twin (``twin_frames``: no Django, for benchmarks and fast tests). Both go through ``assemble_rows``; a test
checks they agree on the same run.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from facility.twin.state import CDU_PUMP_SPEED, CDU_SECONDARY_SUPPLY, CRAH_SUPPLY_AIR
from inference.model import FEATURE_NAMES, TARGETS

__all__ = [
    "GPU_FEATURE_COLUMNS",
    "HORIZONS_S",
    "THROTTLE_REASON_MASK",
    "CoolingMap",
    "Frames",
    "LoadDrops",
    "Windows",
    "assemble_rows",
    "excitable_setpoints",
    "excitation_range",
    "load_drop_features",
    "load_drops_before",
    "load_frames",
    "load_rows",
    "twin_frames",
]

HORIZONS_S = (10.0, 60.0, 300.0)
# Server inlet ≈ CRAH supply air + this (facility.models.Hall.contained: 1–2 K contained, 4–5 K open).
INLET_OFFSET_CONTAINED_K = 1.5
INLET_OFFSET_OPEN_K = 4.5
# DCGM clocks-event reasons that mean "slowed for power or heat": SW power cap, HW slowdown, SW/HW thermal.
THROTTLE_REASON_MASK = 0x4 | 0x8 | 0x20 | 0x40
# A cooling reading older than this is not used (the point stopped reporting).
MAX_POINT_AGE_S = 120.0
# Cooling and GPU sources stamp one scrape slightly differently (ms truncation, separate requests): a reading
# up to this much after a GPU sample counts as taken with it.
POINT_LOOKAHEAD_S = 0.5

# A utilisation reading this far below the stream's previous one is a load drop (0-1 scale; a checkpoint
# takes a training GPU from ~1 to ~0.15, inference load moves ~0.1 between reads).
LOAD_DROP_RATIO = 0.4
# A drop (or an interval between drops) this long ago no longer says anything about the next one.
MAX_LOAD_DROP_AGE_S = 7200.0
# An overdue drop reads as at most this late: how late matters little once the rhythm is broken.
LOAD_DROP_OVERDUE_S = 600.0

# GPU feature -> (wide-row column, scale to the feature's unit).
GPU_FEATURE_COLUMNS: dict[str, tuple[str, float]] = {
    "gpu_temperature_celsius": ("gpu_temp", 1.0),
    "memory_temperature_celsius": ("memory_temp", 1.0),
    "power_watts": ("power_usage", 1.0),
    "sm_clock_megahertz": ("sm_clock", 1.0),
    "gpu_utilization_ratio": ("gpu_util", 0.01),
    "tensor_active_ratio": ("tensor_active", 1.0),
}
ROW_COLUMNS = (*(c for c, _ in GPU_FEATURE_COLUMNS.values()), "clocks_event_reasons")

# Cooling point series, as stored (metric, point) per unit kind, and the twin read-out each comes from.
AIR_KINDS = ("crah", "crac")
LIQUID_KINDS = ("cdu",)
SERIES = {
    "supply_air": ("supply_air_temperature_celsius", "", "supply_air_temperature_celsius"),
    "fan": ("fan_speed_ratio", "", "fan_speed_ratio"),
    "air_setpoint": ("supply_air_temperature_setpoint_celsius", "", "supply_air_temperature_setpoint_celsius"),
    "coolant_supply": ("supply_water_temperature_celsius", "secondary", "secondary_supply_temperature_celsius"),
    "coolant_flow": ("flow_liters_per_minute", "secondary", "secondary_flow_liters_per_minute"),
    "coolant_setpoint": ("secondary_supply_temperature_setpoint_celsius", "",
                         "secondary_supply_temperature_setpoint_celsius"),
    "pump_setpoint": ("pump_speed_setpoint_ratio", "", "pump_speed_setpoint_ratio"),
}
SeriesKey = tuple[str, str, str]  # (cooling unit name, point, metric)


# --------------------------------------------------------------------------------------------------
# Which cooling points feed which GPU


@dataclass
class CoolingMap:
    """Per GPU (by UUID) and cooling feature: the point series feeding it and how they combine.

    ``weights[feature]`` is (gpus, series): a GPU's value is the weighted mean of the series that are present
    at that time (``sum`` features — coolant flow per node — multiply back by the total weight so a CDU's flow
    is shared among the nodes it cools). ``offsets[feature]`` is added per GPU (the inlet offset).
    """

    uuids: list[str]
    series: list[SeriesKey]
    weights: dict[str, np.ndarray]
    offsets: dict[str, np.ndarray] = field(default_factory=dict)
    sums: frozenset[str] = frozenset({"coolant_flow_liters_per_minute"})
    racks: dict[str, str] = field(default_factory=dict)  # uuid -> rack name
    units_of_rack: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_facility(cls, facility: Mapping) -> CoolingMap:
        kinds = {u["name"]: u["kind"] for u in facility.get("cooling_units", [])}
        uuids: list[str] = []
        gpu_units: list[list[str]] = []
        gpu_offset: list[float] = []
        gpu_node: list[str] = []
        racks: dict[str, str] = {}
        units_of_rack: dict[str, list[str]] = {}
        nodes_of_unit: dict[str, set[str]] = {}
        for hall in facility.get("halls", []):
            offset = INLET_OFFSET_CONTAINED_K if hall.get("contained", True) else INLET_OFFSET_OPEN_K
            for rack in hall.get("racks", []):
                units = list(rack.get("cooled_by", []))
                units_of_rack[rack["name"]] = units
                for node in rack.get("nodes", []):
                    for unit in units:
                        nodes_of_unit.setdefault(unit, set()).add(node["hostname"])
                    for gpu in node.get("gpus", []):
                        uuids.append(gpu["uuid"])
                        gpu_units.append(units)
                        gpu_offset.append(offset)
                        gpu_node.append(node["hostname"])
                        racks[gpu["uuid"]] = rack["name"]
        series: list[SeriesKey] = []
        index: dict[SeriesKey, int] = {}

        def column(unit: str, name: str) -> int:
            metric, point, _ = SERIES[name]
            key = (unit, point, metric)
            if key not in index:
                index[key] = len(series)
                series.append(key)
            return index[key]

        rows: dict[str, list[tuple[int, int, float]]] = {f: [] for f in COOLING_FEATURES}
        for g, units in enumerate(gpu_units):
            air = [u for u in units if kinds.get(u) in AIR_KINDS]
            liquid = [u for u in units if kinds.get(u) in LIQUID_KINDS]
            for u in air:
                rows["inlet_air_temperature_celsius"].append((g, column(u, "supply_air"), 1.0))
                rows["fan_speed_setpoint_ratio"].append((g, column(u, "fan"), 1.0))
            for u in liquid:
                rows["coolant_supply_temperature_celsius"].append((g, column(u, "coolant_supply"), 1.0))
                rows["coolant_flow_liters_per_minute"].append(
                    (g, column(u, "coolant_flow"), 1.0 / max(1, len(nodes_of_unit.get(u, ())))))
                rows["supply_temperature_setpoint_celsius"].append((g, column(u, "coolant_setpoint"), 1.0))
                rows["pump_speed_setpoint_ratio"].append((g, column(u, "pump_setpoint"), 1.0))
            if not liquid:  # an air-cooled rack's supply setpoint is its CRAHs'
                for u in air:
                    rows["supply_temperature_setpoint_celsius"].append((g, column(u, "air_setpoint"), 1.0))
        weights = {}
        for name, entries in rows.items():
            w = np.zeros((len(uuids), len(series)))
            for g, s, value in entries:
                w[g, s] = value
            weights[name] = w
        offsets = {"inlet_air_temperature_celsius": np.array(gpu_offset, dtype=float)}
        return cls(uuids, series, weights, offsets, racks=racks, units_of_rack=units_of_rack)

    def gpu_index(self, uuids: Iterable[str]) -> np.ndarray:
        position = {u: i for i, u in enumerate(self.uuids)}
        return np.array([position[u] for u in uuids], dtype=np.int64)

    def gpus_cooled_by(self, unit: str) -> list[str]:
        return [u for u in self.uuids if unit in self.units_of_rack.get(self.racks[u], ())]


COOLING_FEATURES = (
    "inlet_air_temperature_celsius",
    "coolant_supply_temperature_celsius",
    "coolant_flow_liters_per_minute",
    "supply_temperature_setpoint_celsius",
    "fan_speed_setpoint_ratio",
    "pump_speed_setpoint_ratio",
)
LOAD_DROP_FEATURES = ("seconds_since_load_drop", "seconds_until_expected_load_drop")
assert set(GPU_FEATURE_COLUMNS) | set(COOLING_FEATURES) | {"sample_gap_seconds", *LOAD_DROP_FEATURES} == set(
    FEATURE_NAMES)


# --------------------------------------------------------------------------------------------------
# Rows -> features


@dataclass
class PointData:
    """Readings of the cooling series a CoolingMap names: per series, sorted times (s) and values."""

    times: list[np.ndarray]
    values: list[np.ndarray]

    @classmethod
    def empty(cls, n: int) -> PointData:
        return cls([np.zeros(0)] * n, [np.zeros(0)] * n)

    def at(self, times: np.ndarray, max_age_s: float = MAX_POINT_AGE_S) -> np.ndarray:
        """(series, len(times)): each series' latest reading at or before each time, NaN if none or stale."""
        out = np.full((len(self.times), len(times)), np.nan)
        for s, (t, v) in enumerate(zip(self.times, self.values, strict=True)):
            if not len(t):
                continue
            i = np.searchsorted(t, times + POINT_LOOKAHEAD_S, side="right") - 1
            ok = (i >= 0) & (times - t[np.maximum(i, 0)] <= max_age_s)
            out[s, ok] = v[i[ok]]
        return out


@dataclass
class LoadDrops:
    """What one stream's load-drop features carry from sample to sample: its latest utilisation reading and
    the times of its last two sharp falls (NaN until seen)."""

    last_utilization: float = np.nan
    last_drop_s: float = np.nan
    previous_drop_s: float = np.nan


def load_drop_features(gpu: np.ndarray, times: np.ndarray, utilization: np.ndarray,
                       memory: dict[int, LoadDrops] | None = None) -> np.ndarray:
    """(rows, 2): ``seconds_since_load_drop`` and ``seconds_until_expected_load_drop`` (the interval between
    the last two drops minus the time since the last; negative when overdue, down to ``-LOAD_DROP_OVERDUE_S``)
    for rows sorted by (gpu, time).

    A drop is a utilisation reading at least ``LOAD_DROP_RATIO`` below the stream's previous reading (missing
    readings are skipped). ``memory`` carries each stream's state across calls (serving feeds one sample at
    a time) and is updated in place; without it every stream starts unseen. With the last drop or interval
    older than ``MAX_LOAD_DROP_AGE_S`` both are missing: the rhythm has stopped.
    """
    memory = {} if memory is None else memory
    out = np.full((len(times), 2), np.nan)
    starts = np.flatnonzero(np.r_[True, gpu[1:] != gpu[:-1]]) if len(gpu) else np.zeros(0, dtype=int)
    for lo, hi in zip(starts, np.r_[starts[1:], len(gpu)], strict=True):
        state = memory.setdefault(int(gpu[lo]), LoadDrops())
        t, u = times[lo:hi], utilization[lo:hi]
        # Each row's previous valid reading: forward-fill from the carried one.
        valid = ~np.isnan(u)
        last_valid = np.maximum.accumulate(np.where(valid, np.arange(len(u)), -1))
        filled = np.where(last_valid >= 0, u[np.maximum(last_valid, 0)], state.last_utilization)
        previous = np.r_[state.last_utilization, filled[:-1]]
        with np.errstate(invalid="ignore"):
            dropped = valid & (previous - u >= LOAD_DROP_RATIO)
        drop_times = np.r_[state.previous_drop_s, state.last_drop_s, t[dropped]]
        k = np.cumsum(dropped) + 1  # index in drop_times of the latest drop at or before each row
        out[lo:hi, 0] = t - drop_times[k]
        out[lo:hi, 1] = drop_times[k] - drop_times[k - 1]  # the interval, turned into time-to-next below
        state.last_utilization = float(filled[-1])
        state.previous_drop_s, state.last_drop_s = float(drop_times[-2]), float(drop_times[-1])
    with np.errstate(invalid="ignore"):
        out[(out > MAX_LOAD_DROP_AGE_S).any(axis=1)] = np.nan
    out[:, 1] = np.maximum(out[:, 1] - out[:, 0], -LOAD_DROP_OVERDUE_S)
    return out


def assemble_rows(
    cmap: CoolingMap,
    gpu: np.ndarray,
    times: np.ndarray,
    columns: np.ndarray,
    points: PointData,
    *,
    previous_time: np.ndarray | None = None,
    load_drops: dict[int, LoadDrops] | None = None,
    max_point_age_s: float = MAX_POINT_AGE_S,
) -> tuple[np.ndarray, np.ndarray]:
    """Physical FEATURES for GPU rows, and their throttle labels.

    ``gpu``: (rows,) indices into ``cmap.uuids``; ``times``: epoch seconds; ``columns``: (rows,
    len(ROW_COLUMNS)) wide-row values (NaN missing); rows sorted by (gpu, time). ``previous_time``: each row's
    stream's previous sample time (NaN if unknown) for ``sample_gap_seconds``; by default computed from the
    rows themselves. ``load_drops``: each stream's load-drop state (``load_drop_features``), updated in place;
    by default streams start unseen. Returns ``(features (rows, F) float32, throttled (rows,) float32)``.
    """
    n = len(times)
    feats = np.full((n, len(FEATURE_NAMES)), np.nan)
    col = {name: i for i, name in enumerate(ROW_COLUMNS)}
    for name, (column, scale) in GPU_FEATURE_COLUMNS.items():
        feats[:, FEATURE_NAMES.index(name)] = columns[:, col[column]] * scale
    if n and cmap.series:
        # Points are evaluated once per distinct time (all GPUs of a scrape share one).
        unique_t, inverse = np.unique(times, return_inverse=True)
        values = points.at(unique_t, max_point_age_s)  # (series, unique times)
        valid = ~np.isnan(values)
        filled = np.where(valid, values, 0.0)
        for name in COOLING_FEATURES:
            w = cmap.weights[name]  # (gpus, series)
            num = (w @ filled)[gpu, inverse]
            den = (w @ valid)[gpu, inverse]
            with np.errstate(invalid="ignore", divide="ignore"):
                value = np.where(den > 0, num / den, np.nan)
            if name in cmap.sums:
                value = value * w.sum(axis=1)[gpu]
            if name in cmap.offsets:
                value = value + cmap.offsets[name][gpu]
            feats[:, FEATURE_NAMES.index(name)] = value
    if previous_time is None:
        previous_time = np.full(n, np.nan)
        if n > 1:
            same = gpu[1:] == gpu[:-1]
            previous_time[1:] = np.where(same, times[:-1], np.nan)
    feats[:, FEATURE_NAMES.index("sample_gap_seconds")] = times - previous_time
    utilization = feats[:, FEATURE_NAMES.index("gpu_utilization_ratio")]
    feats[:, [FEATURE_NAMES.index(f) for f in LOAD_DROP_FEATURES]] = load_drop_features(
        gpu, times, utilization, load_drops)
    reasons = columns[:, col["clocks_event_reasons"]]
    with np.errstate(invalid="ignore"):
        throttled = np.where(
            np.isnan(reasons), np.nan, (np.nan_to_num(reasons).astype(np.int64) & THROTTLE_REASON_MASK) != 0
        )
    return feats.astype(np.float32), throttled.astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Grid


@dataclass
class Windows:
    """Fixed-length training/evaluation windows: inputs, positions and targets, as numpy arrays."""

    features: np.ndarray  # (n, length, F)
    positions: np.ndarray  # (n, length) int64, grid steps since the window's start
    targets: np.ndarray  # (n, length, horizons, targets), NaN unknown
    throttled: np.ndarray  # (n, length, horizons), NaN unknown
    scored: np.ndarray  # (n, length) bool: positions that count in metrics (after the warm-up)

    def __len__(self) -> int:
        return len(self.features)

    def subset(self, pick: np.ndarray) -> Windows:
        """The windows selected by ``pick`` (indices or a boolean mask), in order."""
        return Windows(*(x[pick] for x in (self.features, self.positions, self.targets, self.throttled,
                                           self.scored)))


@dataclass
class Frames:
    """GPU streams on one time grid: ``features`` (gpus, steps, F) with NaN missing, ``present`` (gpus,
    steps) where a sample exists, ``throttled`` (gpus, steps) in {0, 1, NaN}. Step i is ``start_s + i *
    interval_s``."""

    uuids: list[str]
    start_s: float
    interval_s: float
    features: np.ndarray
    present: np.ndarray
    throttled: np.ndarray

    @property
    def steps(self) -> int:
        return self.features.shape[1]

    @property
    def end_s(self) -> float:
        return self.start_s + self.steps * self.interval_s

    @classmethod
    def from_rows(cls, uuids: list[str], gpu: np.ndarray, times: np.ndarray, features: np.ndarray,
                  throttled: np.ndarray, *, interval_s: float | None = None,
                  start_s: float | None = None, end_s: float | None = None) -> Frames:
        """Place rows on the grid (rounding each time to the nearest step; a later row wins a clash)."""
        if interval_s is None:
            interval_s = infer_interval(gpu, times)
        if start_s is None:
            start_s = float(times.min()) if len(times) else 0.0
        if end_s is None:
            end_s = float(times.max()) + interval_s if len(times) else start_s
        steps = max(0, round((end_s - start_s) / interval_s))
        step = np.round((times - start_s) / interval_s).astype(np.int64)
        keep = (step >= 0) & (step < steps)
        feats = np.full((len(uuids), steps, features.shape[1]), np.nan, dtype=np.float32)
        present = np.zeros((len(uuids), steps), dtype=bool)
        thr = np.full((len(uuids), steps), np.nan, dtype=np.float32)
        g, s = gpu[keep], step[keep]
        feats[g, s] = features[keep]
        present[g, s] = True
        thr[g, s] = throttled[keep]
        return cls(list(uuids), float(start_s), float(interval_s), feats, present, thr)

    def horizon_steps(self, horizons_s: Sequence[float]) -> list[int]:
        steps = [h / self.interval_s for h in horizons_s]
        if any(abs(s - round(s)) > 1e-6 or s < 1 for s in steps):
            raise ValueError(f"horizons {list(horizons_s)} s are not whole multiples of the {self.interval_s:g} s grid")
        return [round(s) for s in steps]

    def targets(self, horizons_s: Sequence[float] = HORIZONS_S, targets: Sequence[str] = TARGETS,
                limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Target values (gpus, steps, horizons, targets) and throttle labels (gpus, steps, horizons) at t + h;
        NaN past the end of the grid or past step ``limit`` (so a training split never sees held-out data)."""
        g, t = self.present.shape
        limit = t if limit is None else limit
        cols = [FEATURE_NAMES.index(name) for name in targets]
        values = self.features[..., cols]
        out = np.full((g, t, len(horizons_s), len(cols)), np.nan, dtype=np.float32)
        thr = np.full((g, t, len(horizons_s)), np.nan, dtype=np.float32)
        for i, k in enumerate(self.horizon_steps(horizons_s)):
            n = max(0, min(t, limit) - k)
            out[:, :n, i] = values[:, k:k + n]
            thr[:, :n, i] = self.throttled[:, k:k + n]
        return out, thr

    def split(self, fractions: Sequence[float] = (0.7, 0.1, 0.2)) -> list[tuple[int, int]]:
        """Step ranges [start, end) of consecutive time blocks (train, validation, test by default): the
        held-out parts are the END of the range, never interleaved with training."""
        total = sum(fractions)
        bounds = np.round(np.cumsum([0, *fractions]) / total * self.steps).astype(int)
        return [(int(a), int(b)) for a, b in itertools.pairwise(bounds)]

    def windows(self, begin: int, end: int, length: int, *, stride: int | None = None,
                horizons_s: Sequence[float] = HORIZONS_S, targets: Sequence[str] = TARGETS,
                warmup: int = 0, min_present: float = 0.5) -> Windows:
        """Windows of ``length`` grid steps inside steps [begin, end) of every GPU, ``stride`` apart; targets
        never reach past ``end``. Windows with less than ``min_present`` of their steps present are dropped;
        absent steps stay in as all-NaN inputs with unknown targets."""
        stride = stride or length
        end = min(end, self.steps)
        if end - begin < length:
            length = end - begin
        if length <= 0:
            raise ValueError("no steps in the requested range")
        y, thr = self.targets(horizons_s, targets, limit=end)
        starts = np.arange(begin, end - length + 1, stride)
        g_idx, s_idx = np.meshgrid(np.arange(self.present.shape[0]), starts, indexing="ij")
        g_idx, s_idx = g_idx.ravel(), s_idx.ravel()
        steps = s_idx[:, None] + np.arange(length)[None, :]  # (n, length)
        rows = g_idx[:, None]
        present = self.present[rows, steps]
        keep = present.mean(axis=1) >= min_present
        rows, steps, present = rows[keep], steps[keep], present[keep]
        feats = self.features[rows, steps]
        yy = np.where(present[..., None, None], y[rows, steps], np.nan).astype(np.float32)
        tt = np.where(present[..., None], thr[rows, steps], np.nan).astype(np.float32)
        positions = (steps - steps[:, :1]).astype(np.int64)
        scored = np.broadcast_to(np.arange(length)[None, :] >= warmup, steps.shape) & present
        return Windows(feats, positions, yy, tt, scored.copy())


def infer_interval(gpu: np.ndarray, times: np.ndarray) -> float:
    """The streams' typical sampling interval: the median gap between a GPU's consecutive samples."""
    if len(times) < 2:
        return 1.0
    order = np.lexsort((times, gpu))
    g, t = gpu[order], times[order]
    gaps = np.diff(t)[np.diff(g) == 0]
    gaps = gaps[gaps > 0]
    return float(max(1.0, np.round(np.median(gaps)))) if len(gaps) else 1.0


# --------------------------------------------------------------------------------------------------
# From the database (Django imported here only)


def _epoch_sql(column: str = "time") -> str:
    from django.db import connection

    if connection.vendor == "postgresql":
        return f"extract(epoch from {column})::float8"
    return f"(julianday({column}) - 2440587.5) * 86400.0"


def site_cooling_map(site) -> tuple[CoolingMap, dict[int, int]]:
    """The site's CoolingMap and GPU primary key -> index into its ``uuids``."""
    from facility.facility_file import export_facility
    from facility.models import GPU

    cmap = CoolingMap.from_facility(export_facility(site))
    by_uuid = dict(GPU.objects.filter(node__rack__hall__site=site).values_list("uuid", "pk"))
    return cmap, {by_uuid[u]: i for i, u in enumerate(cmap.uuids) if u in by_uuid}


def load_points(site, cmap: CoolingMap, start_s: float, end_s: float) -> PointData:
    """Readings of the map's series in [start_s, end_s], sorted by time."""
    from django.db import connection

    from telemetry.models import Series
    from telemetry.storage import POINT_TABLE, to_datetime

    wanted = {key: i for i, key in enumerate(cmap.series)}
    ids = {}
    for sid, unit, point, metric in Series.objects.filter(site=site, cooling_unit__isnull=False).values_list(
        "pk", "cooling_unit__name", "point", "metric"
    ):
        if (unit, point, metric) in wanted:
            ids[sid] = wanted[(unit, point, metric)]
    data = PointData.empty(len(cmap.series))
    if not ids:
        return data
    adapt = connection.ops.adapt_datetimefield_value
    sql = (
        f"SELECT series_id, {_epoch_sql()}, value FROM {POINT_TABLE} WHERE series_id IN "  # noqa: S608 — constants
        f"({', '.join(['%s'] * len(ids))}) AND time >= %s AND time <= %s ORDER BY series_id, time"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*ids, adapt(to_datetime(start_s)), adapt(to_datetime(end_s + POINT_LOOKAHEAD_S))])
        rows = np.array(cursor.fetchall(), dtype=float).reshape(-1, 3)
    for sid, s in ids.items():
        mine = rows[rows[:, 0] == sid]
        data.times[s], data.values[s] = mine[:, 1], mine[:, 2]
    return data


def load_gpu_rows(gpu_ids: Sequence[int], start_s: float, end_s: float, *, after: bool = False) -> np.ndarray:
    """(rows, 2 + len(ROW_COLUMNS)): gpu_id, epoch time, ROW_COLUMNS; sorted by (gpu, time). Rows in
    [start_s, end_s), or (start_s, end_s] with ``after`` (the serving watermark)."""
    from django.db import connection

    from telemetry.storage import GPU_TABLE, to_datetime

    if not gpu_ids:
        return np.zeros((0, 2 + len(ROW_COLUMNS)))
    adapt = connection.ops.adapt_datetimefield_value
    lower, upper = (">", "<=") if after else (">=", "<")
    sql = (
        f"SELECT gpu_id, {_epoch_sql()}, {', '.join(ROW_COLUMNS)} FROM {GPU_TABLE} WHERE gpu_id IN "  # noqa: S608
        f"({', '.join(['%s'] * len(gpu_ids))}) AND time {lower} %s AND time {upper} %s ORDER BY gpu_id, time"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*gpu_ids, adapt(to_datetime(start_s)), adapt(to_datetime(end_s))])
        return np.array(cursor.fetchall(), dtype=float).reshape(-1, 2 + len(ROW_COLUMNS))


def load_drops_before(gpu_ids: Sequence[int], end_s: float, *, rollups: bool = True) -> dict[int, LoadDrops]:
    """Each GPU's load-drop state from its last ``MAX_LOAD_DROP_AGE_S`` of readings before ``end_s``, so a
    stream rebuilt from a short history still knows its rhythm.

    The database finds the drops (``lag`` over each GPU's valid readings) and returns only those rows and each
    GPU's last reading. On PostgreSQL, where the 1-minute rollups cover the span, only the minutes that could
    hold a drop are read raw (`_drop_ranges`): 2 h of 5 s readings for 4,096 GPUs are 6 M rows, of which a
    training GPU's checkpoint dips touch a few dozen per GPU (docs/BENCHMARKS.md, "Rebuilding streams").
    ``rollups=False`` reads the whole span raw: the reference the rollup path is checked and benchmarked against."""
    from django.db import connection

    drops = {int(g): LoadDrops() for g in gpu_ids}
    if not drops:
        return drops
    start = end_s - MAX_LOAD_DROP_AGE_S
    rows = None
    if rollups and connection.vendor == "postgresql":
        with _one_snapshot():  # rollups, their watermark and the raw rows as of one moment
            ranges = _drop_ranges(list(drops), start, end_s)
            if ranges is not None:
                rows = _drop_rows_in_ranges(ranges)
    if rows is None:
        rows = _drop_rows(list(drops), start, end_s)
    found: dict[int, set[float]] = {g: set() for g in drops}
    newest: dict[int, tuple[float, float]] = {}
    for gpu_id, t, value, dropped, last in rows:
        g, t = int(gpu_id), float(t)
        if dropped:
            found[g].add(t)
        if last and (g not in newest or t > newest[g][0]):
            newest[g] = (t, float(value))
    scale = GPU_FEATURE_COLUMNS["gpu_utilization_ratio"][1]
    for g, state in drops.items():
        state.previous_drop_s, state.last_drop_s = [np.nan, np.nan, *sorted(found[g])][-2:]
        if g in newest:
            state.last_utilization = newest[g][1] * scale
    return drops


def _drop_rows(gpu_ids: list[int], start_s: float, end_s: float) -> list[tuple]:
    """(gpu_id, t, utilisation, dropped, last) for every drop reading and each GPU's last reading in
    [start_s, end_s), from the raw samples (any database)."""
    from django.db import connection

    from telemetry.storage import GPU_TABLE, to_datetime

    column = GPU_FEATURE_COLUMNS["gpu_utilization_ratio"][0]
    sql = (
        f"SELECT gpu_id, t, {column}, previous - {column} >= %s, next IS NULL FROM (SELECT gpu_id, "  # noqa: S608
        f"{_epoch_sql()} AS t, {column}, lag({column}) OVER w AS previous, lead(time) OVER w AS next "
        f"FROM {GPU_TABLE} WHERE gpu_id IN ({', '.join(['%s'] * len(gpu_ids))}) AND time >= %s AND time < %s "
        f"AND {column} IS NOT NULL WINDOW w AS (PARTITION BY gpu_id ORDER BY time)) AS readings "
        f"WHERE previous - {column} >= %s OR next IS NULL"
    )
    adapt = connection.ops.adapt_datetimefield_value
    threshold = _drop_threshold()
    with connection.cursor() as cursor:
        cursor.execute(sql, [threshold, *gpu_ids, adapt(to_datetime(start_s)), adapt(to_datetime(end_s)), threshold])
        return cursor.fetchall()


@contextlib.contextmanager
def _one_snapshot():
    """A REPEATABLE READ transaction (PostgreSQL) where none is open yet; inside one, its own snapshot rules."""
    from django.db import connection, transaction

    if connection.in_atomic_block:
        yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield


def _drop_threshold() -> float:
    """LOAD_DROP_RATIO in the stored utilisation unit (%)."""
    return LOAD_DROP_RATIO / GPU_FEATURE_COLUMNS["gpu_utilization_ratio"][1]


def _drop_ranges(gpu_ids: list[int], start_s: float, end_s: float) -> list[tuple[int, float, float]] | None:
    """Per GPU, the spans of [start_s, end_s) whose raw readings can hold a drop, merged: each rolled-up minute
    whose utilisation range, or the fall from the previous minute's maximum to its minimum, reaches the drop
    threshold (from the previous minute on, so the reading before the drop is read too), and everything from
    each GPU's last rolled-up minute before ``end_s``'s to ``end_s``. None when the minute rollups do not reach
    into the span, or a minute in it is dirty (late samples not rolled up again yet; the next roll-up clears
    it): then read it all raw."""
    from django.db import connection

    from telemetry.models import DirtyBucket, Resolution, RollupState
    from telemetry.storage import to_datetime

    minute = Resolution.MINUTE.value
    state = RollupState.objects.filter(resolution=minute).first()
    # Only whole minutes before end_s's own: a minute's rollup also holds readings after end_s.
    covered = min(state.done_until.timestamp(), end_s // minute * minute) if state else start_s
    first = start_s // minute * minute
    if covered < start_s + minute or DirtyBucket.objects.filter(
            resolution=minute, bucket__gte=to_datetime(first), bucket__lt=to_datetime(covered)).exists():
        return None
    column = GPU_FEATURE_COLUMNS["gpu_utilization_ratio"][0]
    sql = (
        f"SELECT gpu_id, b, previous_b, candidate, next_b IS NULL FROM (SELECT gpu_id, "  # noqa: S608 — constants
        f"{_epoch_sql('bucket')} AS b, "
        f"lag({_epoch_sql('bucket')}) OVER w AS previous_b, lead(bucket) OVER w AS next_b, "
        f"(max_{column} - min_{column} >= %s OR lag(max_{column}) OVER w - min_{column} >= %s) AS candidate "
        f"FROM unnest(%s::bigint[]) AS g(id) JOIN telemetry_gpurollup ON gpu_id = g.id AND resolution = %s "
        f"AND bucket >= %s AND bucket < %s AND max_{column} IS NOT NULL "
        f"WINDOW w AS (PARTITION BY gpu_id ORDER BY bucket)) AS minutes "
        f"WHERE candidate OR next_b IS NULL"
    )
    threshold = _drop_threshold()
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.execute(sql, [threshold, threshold, gpu_ids, minute, adapt(to_datetime(first)),
                             adapt(to_datetime(covered))])
        minutes = cursor.fetchall()
    spans: dict[int, list[tuple[float, float]]] = {g: [] for g in gpu_ids}
    tail_from = dict.fromkeys(gpu_ids, start_s)  # a GPU with no rolled-up minute is read raw from the start
    for gpu_id, b, previous_b, candidate, last in minutes:
        if candidate:
            spans[gpu_id].append((previous_b if previous_b is not None else b, b + minute))
        if last:
            tail_from[gpu_id] = b
    out = []
    for g in gpu_ids:
        merged: list[list[float]] = []
        for lo, hi in sorted([*spans[g], (tail_from[g], end_s)]):
            lo, hi = max(lo, start_s), min(hi, end_s)
            if merged and lo <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            elif lo < hi:
                merged.append([lo, hi])
        out += [(g, lo, hi) for lo, hi in merged]
    return out


def _drop_rows_in_ranges(ranges: list[tuple[int, float, float]]) -> list[tuple]:
    """`_drop_rows` over per-GPU spans (PostgreSQL): each span is read on the (gpu_id, time) key by itself,
    and a reading's predecessor is looked for within its span only."""
    from django.db import connection

    from telemetry.storage import GPU_TABLE, to_datetime

    if not ranges:
        return []
    column = GPU_FEATURE_COLUMNS["gpu_utilization_ratio"][0]
    sql = (
        f"SELECT gpu, t, u, previous - u >= %s, next IS NULL FROM (SELECT r.gpu, r.k, "  # noqa: S608 — constants
        f"{_epoch_sql('s.time')} AS t, s.{column} AS u, lag(s.{column}) OVER w AS previous, "
        f"lead(s.time) OVER w AS next FROM unnest(%s::bigint[], %s::timestamptz[], %s::timestamptz[]) "
        f"WITH ORDINALITY AS r(gpu, lo, hi, k) CROSS JOIN LATERAL (SELECT time, {column} FROM {GPU_TABLE} "
        f"WHERE gpu_id = r.gpu AND time >= r.lo AND time < r.hi AND {column} IS NOT NULL) AS s "
        f"WINDOW w AS (PARTITION BY r.k ORDER BY s.time)) AS readings WHERE previous - u >= %s OR next IS NULL"
    )
    threshold = _drop_threshold()
    gpus, los, his = zip(*ranges, strict=True)
    with connection.cursor() as cursor:
        cursor.execute(sql, [threshold, list(gpus), [to_datetime(t) for t in los], [to_datetime(t) for t in his],
                             threshold])
        return cursor.fetchall()


def load_rows(site, start_s: float, end_s: float, *, cmap: CoolingMap | None = None,
              index: dict[int, int] | None = None, gpu_ids: Sequence[int] | None = None):
    """Stored telemetry of a site's GPUs in [start_s, end_s) as assembled rows:
    ``(cmap, gpu index, times, features, throttled)``."""
    if cmap is None or index is None:
        cmap, index = site_cooling_map(site)
    ids = list(index) if gpu_ids is None else [g for g in gpu_ids if g in index]
    raw = load_gpu_rows(ids, start_s, end_s)
    points = load_points(site, cmap, start_s - MAX_POINT_AGE_S, end_s)
    lookup = np.full(max(index, default=0) + 1, -1, dtype=np.int64)
    lookup[list(index)] = list(index.values())
    gpu = lookup[raw[:, 0].astype(np.int64)]
    feats, thr = assemble_rows(cmap, gpu, raw[:, 1], raw[:, 2:], points)
    return cmap, gpu, raw[:, 1], feats, thr


def data_range(site) -> tuple[float, float] | None:
    """First and last sample time of a site's GPUs (epoch seconds), or None without data."""
    from django.db import connection

    from facility.models import GPU
    from telemetry.storage import GPU_TABLE

    ids = list(GPU.objects.filter(node__rack__hall__site=site).values_list("pk", flat=True))
    if not ids:
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT MIN({_epoch_sql()}), MAX({_epoch_sql()}) FROM {GPU_TABLE} "  # noqa: S608 — constants
            f"WHERE gpu_id IN ({', '.join(['%s'] * len(ids))})", ids,
        )
        lo, hi = cursor.fetchone()
    return None if lo is None else (float(lo), float(hi))


def load_frames(site, start_s: float | None = None, end_s: float | None = None, *,
                interval_s: float | None = None) -> Frames:
    """A site's stored GPU telemetry on a grid (the interval inferred from the data unless given)."""
    if start_s is None or end_s is None:
        span = data_range(site)
        if span is None:
            raise ValueError(f"no GPU telemetry stored for site {site.slug!r}")
        start_s = span[0] if start_s is None else start_s
        end_s = span[1] + 1e-3 if end_s is None else end_s
    cmap, gpu, times, feats, thr = load_rows(site, start_s, end_s)
    if not len(times):
        raise ValueError(f"no GPU telemetry for site {site.slug!r} between {start_s} and {end_s}")
    return Frames.from_rows(cmap.uuids, gpu, times, feats, thr, interval_s=interval_s)


# --------------------------------------------------------------------------------------------------
# Straight from the twin (no Django): benchmarks and fast tests


def excitable_setpoints(twin) -> list[dict]:
    """The twin's setpoints that excitation moves (so the data shows their effect): CRAH supply air, CDU
    supply and CDU pump speed."""
    return [s for s in twin.setpoints() if s["name"] in (CRAH_SUPPLY_AIR, CDU_SECONDARY_SUPPLY, CDU_PUMP_SPEED)]


def excitation_range(sp: dict) -> tuple[float, float]:
    """Where excitation moves a setpoint: inside its allowable range, away from extremes that would only
    shut GPUs down."""
    lo, hi = sp["allowable_min"], sp["allowable_max"]
    if sp["name"] == CDU_PUMP_SPEED:
        return max(lo, 0.5), min(hi, 1.1)
    if sp["name"] == CRAH_SUPPLY_AIR:
        return lo, min(hi, 24.0)
    return lo, min(hi, 35.0)


def twin_frames(
    facility: Mapping | None = None,
    *,
    hours: float = 1.0,
    interval_s: float = 5.0,
    seed: int = 0,
    workload: str | Mapping[str, str] | None = None,
    excite_every_s: float | None = 600.0,
    sensors: bool = True,
    warmup_s: float = 600.0,
    start: datetime | None = None,
    checkpoint_interval_s: float = 900.0,
    on_read: Callable[[Any, int], None] | None = None,
) -> Frames:
    """Run the twin for ``hours`` and read what its sensors report every ``interval_s``, through the same
    feature assembly as stored telemetry. ``excite_every_s`` moves one random setpoint (CRAH supply air, CDU
    supply or pump speed, within its allowable range) that often so the data shows cooling changes; the
    first ``warmup_s`` (the twin settling from its initial state) are run but not kept. ``on_read(twin, r)``
    is called at each read ``r`` (grid step r of the frames), e.g. to roll copies of the twin forward.
    """
    from facility.twin import Scenario, SensorConfig, SensorModel, Twin, synthetic_facility

    facility = facility or synthetic_facility()
    workload = workload or {"hall-a": "inference", "hall-b": "training"}
    hall_names = {h["name"] for h in facility.get("halls", [])}
    if isinstance(workload, Mapping):
        workload = {k: v for k, v in workload.items() if k in hall_names}
    start = start or datetime(2025, 7, 1, 8)
    twin = Twin(facility, scenario=Scenario(workload=workload, start=start, seed=seed,
                                            checkpoint_interval_s=checkpoint_interval_s))
    sensor = SensorModel(SensorConfig(seed=seed)) if sensors else None
    cmap = CoolingMap.from_facility(facility)
    gpu_of_twin = cmap.gpu_index(twin.gpu_uuids)
    rng = np.random.default_rng([seed, 11])
    writable = excitable_setpoints(twin)
    step = max(1, round(interval_s))
    twin.step(int(warmup_s))
    n_reads = int(hours * 3600 / step)
    t0 = (start + timedelta(seconds=twin.elapsed_s)).replace(tzinfo=UTC).timestamp()
    cols = np.full((n_reads, len(cmap.uuids), len(ROW_COLUMNS)), np.nan)
    point_values = np.full((len(cmap.series), n_reads), np.nan)
    key_of = {metric_point: name for name, metric_point in
              ((n, (m, p)) for n, (m, p, _) in SERIES.items())}
    next_excite = excite_every_s
    for r in range(n_reads):
        twin.step(step)
        elapsed = (r + 1) * step
        if excite_every_s and writable and elapsed >= next_excite:
            next_excite += excite_every_s
            sp = writable[rng.integers(len(writable))]
            lo, hi = excitation_range(sp)
            twin.write_setpoint(sp["unit"], sp["name"], float(np.round(rng.uniform(lo, hi), 1)))
        if on_read is not None:
            on_read(twin, r)
        gpus, units = twin.gpus(), twin.units()
        if sensor is not None:
            gpus, units = sensor.gpus(gpus), sensor.points(units)
        for c, (_, (column, _scale)) in enumerate(GPU_FEATURE_COLUMNS.items()):
            cols[r, gpu_of_twin, c] = _twin_gpu_value(gpus, column)
        cols[r, gpu_of_twin, len(ROW_COLUMNS) - 1] = np.asarray(gpus["clocks_event_reasons"], dtype=float)
        for s, (unit, point, metric) in enumerate(cmap.series):
            twin_key = SERIES[key_of[(metric, point)]][2]
            point_values[s, r] = units.get(unit, {}).get(twin_key, np.nan)
    times = t0 + step * (np.arange(n_reads) + 1.0)
    points = PointData([times[~np.isnan(v)] for v in point_values], [v[~np.isnan(v)] for v in point_values])
    gpu = np.repeat(np.arange(len(cmap.uuids))[None, :], n_reads, axis=0).T.ravel()  # gpu-major order
    row_times = np.tile(times, len(cmap.uuids))
    row_cols = cols.transpose(1, 0, 2).reshape(-1, len(ROW_COLUMNS))
    feats, thr = assemble_rows(cmap, gpu, row_times, row_cols, points)
    return Frames.from_rows(cmap.uuids, gpu, row_times, feats, thr, interval_s=float(step),
                            start_s=float(times[0]) if n_reads else t0)


_TWIN_GPU_KEYS = {
    "gpu_temp": "temperature_celsius", "memory_temp": "memory_temperature_celsius", "power_usage": "power_watts",
    "sm_clock": "sm_clock_mhz", "gpu_util": "utilization_percent", "tensor_active": "tensor_active_ratio",
}


def _twin_gpu_value(gpus: Mapping[str, np.ndarray], column: str) -> np.ndarray:
    return np.asarray(gpus[_TWIN_GPU_KEYS[column]], dtype=float)
