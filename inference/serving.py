"""The serving worker's forecaster: one latent cache per GPU stream, one batched decode step per tick.

``ForecastServer.step()`` (run by ``inference.tasks.forecast_step`` on queue ``inference``, beat every 5 s):

1. Load the active ``ModelVersion`` (checksum and config verified); a newly activated version drops every
   cache (they belong to the old weights).
2. Per site, read the GPU rows newer than each stream's watermark (``GpuSample.time`` > the last sample the
   stream consumed) and assemble their features with the cooling inputs (``inference.dataset``).
3. Streams the worker does not hold yet (new GPUs, or every GPU after a restart) are rebuilt from stored
   history by prefill: the last ``(num_layers + 1) * sliding_window`` samples, enough that the cache is
   exactly what continuous decoding would have built, so a restart leaves no gap and no drift.
4. Streams that advanced take one decode step, batched: streams whose caches hold the same number of
   tokens share one batched cache per layer (``TokenCache.cat``/``select``/``scatter_``), so a step is
   dense matmuls over all of them with no padding. With a sliding window every warmed-up stream holds
   exactly ``sliding_window`` tokens and the whole facility steps as one batch.
5. Forecasts of the newest sample of every advanced stream are written (``Forecast``, one row per GPU and
   horizon, ``made_at`` = that sample's time); streams quiet for ``INFERENCE_EVICT_SECONDS`` are evicted;
   the worker's figures go to ``InferenceStats`` (one row per worker) and the log.

State lives in the worker process (``get_server()``); run one inference worker process (the Procfile's
``--concurrency 1``). A second one would hold its own caches and write the same forecasts (they are unique
per GPU, horizon and time, so duplicates are ignored), at twice the cost.

``forecast_effect`` answers the control app's question "what would this setpoint change do?" without the
worker's state: it rebuilds the GPUs' streams from history and runs the last step twice, as measured and
with the candidate setpoints (see its docstring).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import torch

from facility.twin.state import CDU_PUMP_SPEED, CDU_SECONDARY_SUPPLY, CRAH_SUPPLY_AIR
from inference.dataset import (
    LOAD_DROP_FEATURES,
    MAX_POINT_AGE_S,
    CoolingMap,
    LoadDrops,
    PointData,
    assemble_rows,
    load_drops_before,
    load_gpu_rows,
    load_points,
    site_cooling_map,
)
from inference.mla import TokenCache
from inference.model import TelemetryForecaster, cat_stream_caches, predict, select_stream_caches

__all__ = ["ForecastServer", "StepReport", "forecast_effect", "get_server", "reset_server"]

log = logging.getLogger(__name__)

# Seconds of data before "now" in which a GPU counts as live when the worker starts (or discovers it).
DEFAULT_FRESH_SECONDS = 600.0
# A stream with no new sample for this long (wall clock) is dropped; it is rebuilt by prefill if it returns.
DEFAULT_EVICT_SECONDS = 300.0
# Positions grow with time; past this many steps a stream is rebuilt with a new origin (float32 RoPE angles).
MAX_POSITION = 200_000
# Without a sliding window the prefill is capped at this many samples.
MAX_PREFILL = 1024
FORECAST_RETENTION_HOURS = 24.0


def _setting(name: str, default: float) -> float:
    from django.conf import settings

    return float(getattr(settings, name, default))


def _epoch(dt: datetime) -> float:
    return dt.timestamp()


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


@dataclass
class Stream:
    """One GPU's place in the worker: where its positions start and the newest sample it consumed."""

    gpu_id: int
    site_id: int
    origin_s: float
    last_time_s: float
    length: int  # tokens its cache holds (its group's key)
    load_drops: LoadDrops = field(default_factory=LoadDrops)  # carried into each new sample's features
    touched: float = field(default_factory=time.monotonic)


@dataclass
class StepReport:
    model_version: str | None = None
    streams: int = 0
    prefilled: int = 0
    advanced: int = 0
    tokens: int = 0
    evicted: int = 0
    forecasts: int = 0
    cache_bytes: int = 0
    model_seconds: float = 0.0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.model_seconds if self.model_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "tokens_per_second": round(self.tokens_per_second, 1)}


class _Group:
    """Streams whose caches hold the same number of tokens, batched: row i of every layer is ``gpu_ids[i]``."""

    def __init__(self, gpu_ids: list[int], cache: list[TokenCache]):
        self.gpu_ids = gpu_ids
        self.cache = cache

    @property
    def nbytes(self) -> int:
        return sum(layer.nbytes for layer in self.cache)


@dataclass
class _SiteInputs:
    cmap: CoolingMap
    index: dict[int, int]  # GPU pk -> cmap row
    built: float


class ForecastServer:
    """Per-process serving state: the model, the streams and their batched caches."""

    def __init__(self, worker: str | None = None):
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}"
        self.model: TelemetryForecaster | None = None
        self.version = None
        self.streams: dict[int, Stream] = {}
        self.groups: dict[int, _Group] = {}
        self.scan_mark: dict[int, float] = {}  # per site: data time up to which new GPUs were looked for
        self._sites: dict[int, _SiteInputs] = {}
        self.lock = threading.Lock()
        self.steps_total = self.prefills_total = self.evictions_total = 0
        # The last step's forecasts: {(gpu_id, horizon_s): {column: value}} (tests, the management command).
        self.last_forecasts: dict[tuple[int, int], dict[str, float]] = {}

    # -- model ------------------------------------------------------------------------------------------
    def _ensure_model(self) -> bool:
        from inference.models import ModelKind, ModelVersion

        active = ModelVersion.objects.filter(kind=ModelKind.FORECASTER, active=True).first()
        if active is None:
            if self.model is not None:
                log.info("no active forecaster any more: dropping %d streams", len(self.streams))
            self.model, self.version = None, None
            self._drop_all()
            return False
        held = self.version
        if held is None or active.pk != held.pk or active.checksum_sha256 != held.checksum_sha256:
            self.model = active.load()
            self.version = active
            self._drop_all()
            log.info("serving model version %s", active.name)
        return True

    def _drop_all(self) -> None:
        self.streams.clear()
        self.groups.clear()
        self.scan_mark.clear()

    @property
    def window(self) -> int | None:
        return self.model.config.sliding_window if self.model is not None else None

    @property
    def prefill_tokens(self) -> int:
        """History that makes a rebuilt cache identical to a continuously decoded one: every layer widens the
        receptive field by one window."""
        w = self.window
        return MAX_PREFILL if w is None else (self.model.config.num_layers + 1) * w

    @property
    def cache_bytes(self) -> int:
        return sum(g.nbytes for g in self.groups.values())

    # -- groups -----------------------------------------------------------------------------------------
    def _take(self, length: int, gpu_ids: list[int]) -> list[TokenCache]:
        """Remove these streams from their group and return their cache rows (in ``gpu_ids`` order)."""
        group = self.groups[length]
        if gpu_ids == group.gpu_ids:
            del self.groups[length]
            return group.cache
        row = {g: i for i, g in enumerate(group.gpu_ids)}
        taken = select_stream_caches(group.cache, [row[g] for g in gpu_ids])
        leaving = set(gpu_ids)
        keep = [i for i, g in enumerate(group.gpu_ids) if g not in leaving]
        if keep:
            group.cache = select_stream_caches(group.cache, keep)
            group.gpu_ids = [group.gpu_ids[i] for i in keep]
        else:
            del self.groups[length]
        return taken

    def _put(self, length: int, gpu_ids: list[int], cache: list[TokenCache]) -> None:
        group = self.groups.get(length)
        if group is None:
            self.groups[length] = _Group(list(gpu_ids), cache)
        else:
            group.cache = cat_stream_caches([group.cache, cache])
            group.gpu_ids = group.gpu_ids + list(gpu_ids)
        for g in gpu_ids:
            self.streams[g].length = length

    def _evict(self, gpu_ids: Sequence[int]) -> None:
        by_length: dict[int, list[int]] = {}
        for g in gpu_ids:
            by_length.setdefault(self.streams[g].length, []).append(g)
        for length, ids in by_length.items():
            self._take(length, ids)
        for g in gpu_ids:
            del self.streams[g]
        self.evictions_total += len(gpu_ids)

    # -- inputs -----------------------------------------------------------------------------------------
    def _site_inputs(self, site) -> _SiteInputs:
        entry = self._sites.get(site.pk)
        if entry is None or time.monotonic() - entry.built > 300:  # inventory edits show up within minutes
            cmap, index = site_cooling_map(site)
            entry = self._sites[site.pk] = _SiteInputs(cmap, index, time.monotonic())
        return entry

    # -- the step ---------------------------------------------------------------------------------------
    def step(self, now: float | None = None) -> StepReport:
        with self.lock, torch.inference_mode():
            try:
                return self._step(time.time() if now is None else now)
            except BaseException:
                # A step cut short (its time limit, out of memory, the database) may have taken streams' cache
                # rows out of their groups or advanced some layers only: drop every cache, so the next step
                # rebuilds them by prefill instead of failing on the half-moved state until a restart.
                self._drop_all()
                raise

    def _step(self, now: float) -> StepReport:
        from facility.models import Site

        started = time.perf_counter()
        report = StepReport()
        if not self._ensure_model():
            report.seconds = time.perf_counter() - started
            return report
        report.model_version = self.version.name
        fresh = _setting("INFERENCE_FRESH_SECONDS", DEFAULT_FRESH_SECONDS)
        evict_after = _setting("INFERENCE_EVICT_SECONDS", DEFAULT_EVICT_SECONDS)
        outputs: list[tuple[list[int], dict]] = []
        for site in Site.objects.all():
            inputs = self._site_inputs(site)
            if inputs.index:
                outputs += self._step_site(site, inputs, now, fresh, report)
        report.forecasts = self._write_forecasts(outputs)
        quiet = [g for g, s in self.streams.items() if time.monotonic() - s.touched > evict_after]
        quiet += [g for g, s in self.streams.items()
                  if (s.last_time_s - s.origin_s) / self.model.config.position_resolution_s > MAX_POSITION]
        if quiet:
            self._evict(sorted(set(quiet)))
            report.evicted = len(set(quiet))
        self.steps_total += 1
        report.streams = len(self.streams)
        report.cache_bytes = self.cache_bytes
        report.seconds = time.perf_counter() - started
        self._record(report)
        if self.steps_total % 120 == 1:
            self._enforce_retention(now)
        return report

    def _step_site(self, site, inputs: _SiteInputs, now: float, fresh: float, report: StepReport):
        cmap, index = inputs.cmap, inputs.index
        known = [s for s in self.streams.values() if s.site_id == site.pk]
        since = min([s.last_time_s for s in known] + [self.scan_mark.get(site.pk, now - fresh)])
        # Up to now: a sample stamped ahead (ingest accepts a clock up to 5 min fast) waits for its time instead
        # of becoming the stream's newest and shutting out the correctly stamped samples before it.
        raw = load_gpu_rows(list(index), since, now + self.model.config.position_resolution_s, after=True)
        if not len(raw):
            return []
        gpu_ids = raw[:, 0].astype(np.int64)
        times = raw[:, 1]
        self.scan_mark[site.pk] = max(self.scan_mark.get(site.pk, now - fresh), float(times.max()) - 60.0)
        # Known streams: rows past their own watermark (late rows behind it cannot enter a causal cache), on the
        # model's sample grid.
        last = np.array([self.streams[g].last_time_s if g in self.streams else np.inf for g in gpu_ids])
        newer = on_grid(raw, self.model.config.position_resolution_s, last)
        unknown = sorted({int(g) for g in gpu_ids} - set(self.streams))
        results = []
        if unknown:
            results += self._prefill(site, cmap, index, unknown, report)
        if newer.any():
            results += self._decode(site, cmap, index, raw[newer], report)
        return results

    def _features(self, site, cmap: CoolingMap, index: dict[int, int], raw: np.ndarray,
                  previous_time: np.ndarray | None = None, points: PointData | None = None,
                  load_drops: dict[int, LoadDrops] | None = None):
        """Features of ``raw`` rows; ``load_drops`` (by GPU id) is each stream's carried load-drop state,
        updated in place."""
        if points is None:
            points = load_points(site, cmap, float(raw[:, 1].min()) - MAX_POINT_AGE_S, float(raw[:, 1].max()))
        lookup = np.array([index[int(g)] for g in raw[:, 0]], dtype=np.int64)
        by_lookup = None if load_drops is None else {index[g]: state for g, state in load_drops.items()}
        feats, _ = assemble_rows(cmap, lookup, raw[:, 1], raw[:, 2:], points, previous_time=previous_time,
                                 load_drops=by_lookup)
        return feats, points

    def _history(self, site, cmap, index, gpu_ids: list[int], tokens: int):
        """The last ``tokens`` samples of each GPU, with features: ``{gpu_id: (times, features, raw rows,
        load-drop state after the newest)}``. Rows are read from a span before the GPUs' newest sample; the
        row before the first kept one gives that one its gap, and the drops before the span seed the
        load-drop features, so they match a continuously fed stream's."""
        res = self.model.config.position_resolution_s
        span = (tokens + 1) * res * 3 + 60.0
        out: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, LoadDrops]] = {}
        if not gpu_ids:
            return out
        now = time.time()
        since = min(_newest(gpu_ids), now) - span
        raw = load_gpu_rows(gpu_ids, since, now + res, after=True)  # up to now, as `_step_site` reads
        raw = raw[on_grid(raw, res)]
        if not len(raw):
            return out
        drops = load_drops_before(gpu_ids, since + 1e-3)
        feats, _ = self._features(site, cmap, index, raw, load_drops=drops)
        ids = raw[:, 0].astype(np.int64)
        bounds = np.flatnonzero(np.diff(ids)) + 1
        for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(ids)], strict=True):
            keep = slice(max(lo, hi - tokens), hi)
            out[int(ids[lo])] = (raw[keep, 1], feats[keep], raw[keep], drops[int(ids[lo])])
        return out

    def _prefill(self, site, cmap, index, gpu_ids: list[int], report: StepReport):
        history = self._history(site, cmap, index, gpu_ids, self.prefill_tokens)
        by_len: dict[int, list[int]] = {}
        for g, (times, *_) in history.items():
            by_len.setdefault(len(times), []).append(g)
        results = []
        res = self.model.config.position_resolution_s
        for n, ids in by_len.items():
            x = torch.from_numpy(np.stack([history[g][1] for g in ids]))
            origin = np.array([history[g][0][0] for g in ids])
            t = np.stack([history[g][0] for g in ids])
            pos = torch.from_numpy(np.round((t - origin[:, None]) / res).astype(np.int64))
            began = time.perf_counter()
            pred, cache = predict(self.model, x, pos)
            report.model_seconds += time.perf_counter() - began
            report.tokens += n * len(ids)
            length = cache[0].length
            for i, g in enumerate(ids):
                self.streams[g] = Stream(g, site.pk, float(origin[i]), float(t[i, -1]), length,
                                         load_drops=history[g][3])
            self._put(length, ids, cache)
            results.append((ids, pred, [float(v) for v in t[:, -1]]))
        report.prefilled += sum(len(v) for v in by_len.values())
        self.prefills_total += report.prefilled
        return results

    def _decode(self, site, cmap, index, raw: np.ndarray, report: StepReport):
        ids = raw[:, 0].astype(np.int64)
        previous = np.r_[np.nan, raw[:-1, 1]]
        first = np.r_[True, ids[1:] != ids[:-1]]
        previous[first] = [self.streams[int(g)].last_time_s for g in ids[first]]
        drops = {int(g): self.streams[int(g)].load_drops for g in ids[first]}
        feats, _ = self._features(site, cmap, index, raw, previous_time=previous, load_drops=drops)
        bounds = np.flatnonzero(first)
        per_stream = {int(ids[lo]): (raw[lo:hi, 1], feats[lo:hi])
                      for lo, hi in zip(bounds, np.r_[bounds[1:], len(ids)], strict=True)}
        # Batch by (cache length, new tokens): equal lengths make one dense decode with no padding.
        batches: dict[tuple[int, int], list[int]] = {}
        for g, (times, _) in per_stream.items():
            batches.setdefault((self.streams[g].length, len(times)), []).append(g)
        res = self.model.config.position_resolution_s
        results = []
        for (length, k), gids in batches.items():
            group = self.groups[length]
            in_place = gids == group.gpu_ids
            cache = group.cache if in_place else self._take(length, gids)
            x = torch.from_numpy(np.stack([per_stream[g][1] for g in gids]))
            t = np.stack([per_stream[g][0] for g in gids])
            origin = np.array([self.streams[g].origin_s for g in gids])
            pos = torch.from_numpy(np.round((t - origin[:, None]) / res).astype(np.int64))
            began = time.perf_counter()
            pred, cache = predict(self.model, x, pos, cache)
            report.model_seconds += time.perf_counter() - began
            report.tokens += k * len(gids)
            for i, g in enumerate(gids):
                s = self.streams[g]
                s.last_time_s = float(t[i, -1])
                s.touched = time.monotonic()
            new_length = cache[0].length
            if in_place and new_length == length:
                pass
            elif in_place:
                del self.groups[length]
                self._put(new_length, gids, cache)
            else:
                self._put(new_length, gids, cache)
            results.append((gids, pred, [float(v) for v in t[:, -1]]))
        report.advanced += len(per_stream)
        return results

    # -- output -----------------------------------------------------------------------------------------
    def _write_forecasts(self, outputs) -> int:
        from inference.models import Forecast

        rows = []
        self.last_forecasts = {}
        for gids, pred, made in outputs:
            for horizon, entry in pred.items():
                h = round(float(horizon.rstrip("s")))
                cols = {}
                for target in ("gpu_temperature_celsius", "sm_clock_megahertz", "power_watts"):
                    for q in ("p10", "p50", "p90"):
                        cols[f"{target}_{q}"] = entry[target][q].tolist()
                thr = entry["throttle_probability"].tolist()
                for i, g in enumerate(gids):
                    values = {k: float(v[i]) for k, v in cols.items()}
                    values["throttle_probability"] = float(thr[i])
                    self.last_forecasts[(g, h)] = {**values, "made_at": made[i]}
                    rows.append(Forecast(gpu_id=g, model_version=self.version, made_at=_dt(made[i]), horizon_s=h,
                                         **values))
        if rows:
            Forecast.objects.bulk_create(rows, batch_size=2000, ignore_conflicts=True)
        return len(rows)

    def _record(self, report: StepReport) -> None:
        from inference.models import InferenceStats

        InferenceStats.objects.update_or_create(worker=self.worker, defaults={
            "model_version": self.version, "streams": report.streams, "cache_bytes": report.cache_bytes,
            "step_seconds": report.model_seconds, "tokens": report.tokens,
            "tokens_per_second": report.tokens_per_second, "forecasts_written": report.forecasts,
            "steps_total": self.steps_total, "prefills_total": self.prefills_total,
            "evictions_total": self.evictions_total,
        })
        if report.tokens:
            log.info("inference step: %s", report.as_dict())

    def _enforce_retention(self, now: float) -> None:
        from inference.models import Forecast

        hours = _setting("INFERENCE_FORECAST_RETENTION_HOURS", FORECAST_RETENTION_HOURS)
        Forecast.objects.filter(made_at__lt=_dt(now) - timedelta(hours=hours)).delete()


def on_grid(raw: np.ndarray, resolution_s: float, last: np.ndarray | None = None) -> np.ndarray:
    """Which rows (sorted by GPU, then time) keep each stream on the model's sample grid: the first row in each
    `resolution_s` slot of time, after the slot of the stream's last fed sample (`last`, per row).

    A model trained on 5 s samples sees 5 s samples when the plant reports every second: fed every row, its
    positions and `sample_gap_seconds` would be ones it never saw in training (its forecasts drift).
    """
    if not len(raw):
        return np.zeros(0, dtype=bool)
    ids, slot = raw[:, 0].astype(np.int64), np.floor(raw[:, 1] / resolution_s)
    keep = np.ones(len(raw), dtype=bool)
    keep[1:] = (ids[1:] != ids[:-1]) | (slot[1:] != slot[:-1])
    if last is not None:
        with np.errstate(invalid="ignore"):
            keep &= slot > np.floor(last / resolution_s)
    return keep


def _newest(gpu_ids: Sequence[int]) -> float:
    """Newest sample time among these GPUs (epoch seconds)."""
    from django.db.models import Max

    from telemetry.models import GpuSample

    newest = GpuSample.objects.filter(gpu_id__in=list(gpu_ids)).aggregate(t=Max("time"))["t"]
    return _epoch(newest) if newest else time.time()


_server: ForecastServer | None = None
_server_lock = threading.Lock()


def get_server() -> ForecastServer:
    """This process's serving state (created on first use)."""
    global _server
    with _server_lock:
        if _server is None:
            _server = ForecastServer()
        return _server


def reset_server() -> None:
    """Forget this process's serving state, as a restart would (tests; next step rebuilds by prefill)."""
    global _server
    with _server_lock:
        _server = None


# --------------------------------------------------------------------------------------------------
# What-if: the effect of candidate setpoints


def forecast_effect(
    setpoints: Mapping[str, float],
    *,
    site=None,
    gpus: Sequence | None = None,
    model_version=None,
    shift_measured: bool = False,
) -> dict[str, Any]:
    """Forecast each affected GPU as measured and as if candidate setpoints had been written now.

    ``setpoints``: ``{"UNIT.SETPOINT": value}``, e.g. ``{"crah-a1.supply_air_temperature_setpoint": 22.0,
    "cdu-b1.pump_speed_setpoint": 0.9}`` (``facility.Setpoint`` names, as in ``str(setpoint)``). ``gpus``:
    GPU objects or primary keys (default: every GPU whose rack the named units cool). ``model_version``:
    default the active forecaster. ``shift_measured``: also move the measured input the setpoint controls
    (supply air / coolant supply by the same change, coolant flow in proportion to pump speed), i.e. assume
    the plant has already tracked the setpoint; by default only the setpoint inputs change and the model
    forecasts the plant's response itself.

    Each GPU's stream is rebuilt from stored history (prefill, as the serving worker does after a restart);
    its newest sample is then decoded twice from the same cache: as measured, and with the candidate inputs.
    Returns ``{"model_version", "made_at", "setpoints", "horizons": [...], "gpus": {uuid: {"60s":
    {"gpu_temperature_celsius": {"baseline": {p10, p50, p90}, "candidate": {...}, "delta_p50": x}, ...,
    "throttle_probability": {"baseline", "candidate", "delta"}}}}, "summary": {"60s": {"gpus",
    "max_delta_gpu_temperature_celsius", "mean_delta_gpu_temperature_celsius",
    "max_candidate_p90_gpu_temperature_celsius", "max_candidate_throttle_probability"}}}``.
    Raises ``ValueError`` for unknown setpoints, no active model or no recent telemetry.
    """
    from facility.models import GPU, Setpoint
    from inference.models import ModelKind, ModelVersion

    version = model_version or ModelVersion.objects.filter(kind=ModelKind.FORECASTER, active=True).first()
    if version is None:
        raise ValueError("no active forecaster model version")
    resolved = []
    for key, value in setpoints.items():
        unit, _, name = key.partition(".")
        sp = Setpoint.objects.select_related("cooling_unit__site").filter(cooling_unit__name=unit, name=name)
        if site is not None:
            sp = sp.filter(cooling_unit__site=site)
        sp = sp.first()
        if sp is None:
            raise ValueError(f"unknown setpoint {key!r}")
        resolved.append((sp, float(value)))
    site = site or (resolved[0][0].cooling_unit.site if resolved else None)
    if site is None:
        raise ValueError("name at least one setpoint or a site")
    server = ForecastServer(worker="forecast-effect")
    server.model, server.version = version.load(), version
    cmap, index = site_cooling_map(site)
    if gpus is None:
        uuids = {u for sp, _ in resolved for u in cmap.gpus_cooled_by(sp.cooling_unit.name)}
        gpu_ids = list(GPU.objects.filter(uuid__in=uuids).values_list("pk", flat=True))
    else:
        gpu_ids = [g if isinstance(g, int) else g.pk for g in gpus]
    gpu_ids = sorted(g for g in gpu_ids if g in index)
    history = server._history(site, cmap, index, gpu_ids, server.prefill_tokens + 1)
    ids = [g for g in gpu_ids if g in history and len(history[g][0]) >= 2]
    if not ids:
        raise ValueError("no recent telemetry for the affected GPUs")
    # Prefill all but the newest sample, grouped by history length, then decode the newest twice.
    last_t = np.array([history[g][0][-1] for g in ids])
    points = load_points(site, cmap, float(last_t.min()) - MAX_POINT_AGE_S, float(last_t.max()))
    candidate_points = _with_setpoints(points, cmap, resolved, last_t, shift_measured)
    raw_last = np.stack([history[g][2][-1] for g in ids])
    prev = np.array([history[g][0][-2] for g in ids])
    base_x, _ = server._features(site, cmap, index, raw_last, previous_time=prev, points=points)
    cand_x, _ = server._features(site, cmap, index, raw_last, previous_time=prev, points=candidate_points)
    # The newest sample's load-drop features depend on the stream's past, which its history already carries.
    drop_cols = [server.model.config.features.index(f) for f in LOAD_DROP_FEATURES]
    newest_drops = np.stack([history[g][1][-1, drop_cols] for g in ids])
    base_x[:, drop_cols] = cand_x[:, drop_cols] = newest_drops
    res = version.config.get("position_resolution_s", 1.0)
    out_base: dict[int, dict] = {}
    out_cand: dict[int, dict] = {}
    by_len: dict[int, list[int]] = {}
    for i, g in enumerate(ids):
        by_len.setdefault(len(history[g][0]) - 1, []).append(i)
    model = server.model
    for _n, rows in by_len.items():
        gids = [ids[i] for i in rows]
        t = np.stack([history[g][0] for g in gids])
        pos = np.round((t - t[:, :1]) / res).astype(np.int64)
        x = torch.from_numpy(np.stack([history[g][1][:-1] for g in gids]))
        _, cache = predict(model, x, torch.from_numpy(pos[:, :-1]))
        twin_cache = select_stream_caches(cache, list(range(len(gids))))
        last_pos = torch.from_numpy(pos[:, -1:])
        base, _ = predict(model, torch.from_numpy(base_x[rows])[:, None], last_pos, cache)
        cand, _ = predict(model, torch.from_numpy(cand_x[rows])[:, None], last_pos, twin_cache)
        for j, g in enumerate(gids):
            out_base[g] = _row(base, j)
            out_cand[g] = _row(cand, j)
    uuid_of = dict(GPU.objects.filter(pk__in=ids).values_list("pk", "uuid"))
    result_gpus: dict[str, Any] = {}
    summary: dict[str, dict[str, Any]] = {}
    for g in ids:
        per_h = {}
        for h, entry in out_base[g].items():
            cand = out_cand[g][h]
            item = {}
            for target, qs in entry.items():
                if target == "throttle_probability":
                    item[target] = {"baseline": qs, "candidate": cand[target], "delta": cand[target] - qs}
                else:
                    item[target] = {"baseline": qs, "candidate": cand[target],
                                    "delta_p50": cand[target]["p50"] - qs["p50"]}
            per_h[h] = item
            s = summary.setdefault(h, {"gpus": 0, "deltas": [], "p90": [], "thr": []})
            s["gpus"] += 1
            s["deltas"].append(item["gpu_temperature_celsius"]["delta_p50"])
            s["p90"].append(cand["gpu_temperature_celsius"]["p90"])
            s["thr"].append(cand["throttle_probability"])
        result_gpus[uuid_of[g]] = per_h
    return {
        "model_version": version.name,
        "made_at": _dt(float(last_t.max())).isoformat(),
        "setpoints": {str(sp): v for sp, v in resolved},
        "horizons": [f"{h:g}s" for h in version.config.get("horizons_s", [])],
        "gpus": result_gpus,
        "summary": {
            h: {"gpus": s["gpus"], "max_delta_gpu_temperature_celsius": float(np.max(s["deltas"])),
                "mean_delta_gpu_temperature_celsius": float(np.mean(s["deltas"])),
                "max_candidate_p90_gpu_temperature_celsius": float(np.max(s["p90"])),
                "max_candidate_throttle_probability": float(np.max(s["thr"]))}
            for h, s in summary.items()
        },
    }


def _row(pred: dict, j: int) -> dict[str, dict]:
    out = {}
    for h, entry in pred.items():
        item = {}
        for target, value in entry.items():
            if isinstance(value, dict):
                item[target] = {q: float(v[j]) for q, v in value.items()}
            else:
                item[target] = float(value[j])
        out[h] = item
    return out


# Setpoint -> the measured series it drives, and how ("shift": by the same change, "scale": in proportion).
_DRIVES = {
    CRAH_SUPPLY_AIR: ("supply_air_temperature_celsius", "", "shift"),
    CDU_SECONDARY_SUPPLY: ("supply_water_temperature_celsius", "secondary", "shift"),
    CDU_PUMP_SPEED: ("flow_liters_per_minute", "secondary", "scale"),
}


def _with_setpoints(points: PointData, cmap: CoolingMap, resolved, last_t: np.ndarray,
                    shift_measured: bool) -> PointData:
    """A copy of ``points`` whose named setpoint series (and, with ``shift_measured``, the series they
    drive) read the candidate value from the newest sample time on."""
    times = [t.copy() for t in points.times]
    values = [v.copy() for v in points.values]
    at = float(last_t.min()) - 1e-3
    series = {key: i for i, key in enumerate(cmap.series)}
    for sp, value in resolved:
        unit = sp.cooling_unit.name
        matches = [i for (u, _p, metric), i in series.items() if u == unit and metric.startswith(sp.name + "_")]
        old = sp.value
        for i in matches:
            old = _latest(times[i], values[i], sp.value)
            times[i], values[i] = _override(times[i], values[i], at, value)
        drive = _DRIVES.get(sp.name)
        driven = series.get((unit, drive[1], drive[0])) if drive else None
        if not matches and not (shift_measured and driven is not None):
            raise ValueError(f"{sp} does not feed any GPU input of the forecaster (try shift_measured=True)")
        if shift_measured and driven is not None and len(values[driven]):
            current = _latest(times[driven], values[driven], np.nan)
            how = drive[2]
            new = current + (value - old) if how == "shift" else (current * value / old if old else current)
            times[driven], values[driven] = _override(times[driven], values[driven], at, new)
    return PointData(times, values)


def _latest(times: np.ndarray, values: np.ndarray, default: float) -> float:
    return float(values[-1]) if len(values) else float(default)


def _override(times: np.ndarray, values: np.ndarray, at: float, value: float) -> tuple[np.ndarray, np.ndarray]:
    keep = times < at
    return np.r_[times[keep], at], np.r_[values[keep], value]
