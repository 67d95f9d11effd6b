"""The one ingest pipeline every source goes through: parsed samples → checks → inventory → buffer.

A batch is accepted or rejected whole. Accepted means durable in the buffer (a Redis stream in production);
writers store it afterwards. Anything not in the inventory is counted and recorded for an admin to map.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import cache

import msgpack
import numpy as np
from django.conf import settings
from django.db.models import F
from django.db.models.signals import post_delete, post_save

from facility.models import GPU, CoolingUnit, Hall, Node, Rack
from telemetry.buffer import get_buffer
from telemetry.catalogue import Equipment, Kind, get
from telemetry.models import Series, Source, UnknownEntity
from telemetry.parsers import CoolingEntity, GpuEntity, ParseError, ParseResult
from telemetry.parsers.json_batch import MAX_ERRORS_PER_COLUMN, GpuBlock
from telemetry.schema import GPU_COLUMNS

PAYLOAD_VERSION = 1

log = logging.getLogger(__name__)


class BatchRejected(Exception):
    """The batch has errors; nothing of it was accepted. `errors` name the item or line of each."""

    def __init__(self, errors: list[ParseError]):
        self.errors = errors
        super().__init__(f"{len(errors)} error(s)")


@dataclass
class IngestReport:
    accepted: int = 0
    entry_id: str | None = None
    unknown_entities: Counter = field(default_factory=Counter)
    unknown_metrics: Counter = field(default_factory=Counter)
    skipped_not_supported: int = 0
    duplicates_folded: int = 0
    counter_resets: int = 0

    def as_dict(self) -> dict:
        return {
            "accepted": self.accepted,
            "entry_id": self.entry_id,
            "unknown_entities": dict(self.unknown_entities),
            "unknown_metrics": dict(self.unknown_metrics),
            "skipped_not_supported": self.skipped_not_supported,
            "duplicates_folded": self.duplicates_folded,
        }


class _Inventory:
    """Lookup of GPUs and cooling units by the names sources use, per site; dropped on inventory changes.

    A change saves in one process (an admin request, `facility import`); every other web and worker process
    holds its own lookup. The change bumps a version in the shared cache (Redis in production), and each
    process compares it at most every `RECHECK_S`, so a new GPU's samples are not dropped as unknown there."""

    VERSION_KEY = "fusedc:ingest:inventory-version"
    RECHECK_S = 5.0

    def __init__(self):
        self._lock = threading.Lock()
        self._sites: dict[int, dict] = {}
        self._version = None
        self._checked_at = -math.inf

    def clear(self, **kwargs):
        from django.core.cache import cache as shared

        with self._lock:
            self._sites.clear()
        try:
            try:
                shared.incr(self.VERSION_KEY)
            except ValueError:  # not set yet (or the cache was emptied)
                shared.set(self.VERSION_KEY, time.time_ns(), timeout=None)
        except Exception:  # the cache is down: other processes catch up when it is back
            log.warning("could not announce an inventory change", exc_info=True)

    def _drop_if_changed_elsewhere(self) -> None:
        from django.core.cache import cache as shared

        now = time.monotonic()
        if now - self._checked_at < self.RECHECK_S:
            return
        self._checked_at = now
        try:
            version = shared.get(self.VERSION_KEY)
        except Exception:
            return
        if version != self._version:
            self._sites.clear()
            self._version = version

    def for_site(self, site_id: int) -> dict:
        with self._lock:
            self._drop_if_changed_elsewhere()
            if site_id not in self._sites:
                gpus = GPU.objects.filter(node__rack__hall__site_id=site_id).values_list(
                    "pk", "uuid", "node__hostname", "index"
                )
                self._sites[site_id] = {
                    "uuid": {uuid: pk for pk, uuid, _, _ in gpus},
                    "host_index": {(host, index): pk for pk, _, host, index in gpus},
                    "units": dict(CoolingUnit.objects.filter(site_id=site_id).values_list("name", "pk")),
                    "series": {},
                }
            return self._sites[site_id]


inventory = _Inventory()
for _model in (GPU, Node, Rack, Hall, CoolingUnit):
    post_save.connect(inventory.clear, sender=_model, dispatch_uid=f"telemetry.inventory.{_model.__name__}.save")
    post_delete.connect(inventory.clear, sender=_model, dispatch_uid=f"telemetry.inventory.{_model.__name__}.del")


def _gpu_id(index: dict, entity: GpuEntity) -> int | None:
    if entity.uuid and entity.uuid in index["uuid"]:
        return index["uuid"][entity.uuid]
    if entity.hostname is not None and entity.gpu is not None:
        return index["host_index"].get((entity.hostname, entity.gpu))
    return None


def _series_id(index: dict, site_id: int, unit_id: int | None, point: str, metric: str) -> int:
    key = (unit_id, point, metric)
    if key not in index["series"]:
        series, _ = Series.objects.get_or_create(site_id=site_id, cooling_unit_id=unit_id, point=point, metric=metric)
        index["series"][key] = series.pk
    return index["series"][key]


def _check_time(ts: float, now: float) -> str | None:
    if ts < now - settings.TELEMETRY_MAX_AGE_SECONDS:
        return f"timestamp {ts:.3f} is more than {settings.TELEMETRY_MAX_AGE_SECONDS} s in the past"
    if ts > now + settings.TELEMETRY_MAX_FUTURE_SECONDS:
        return f"timestamp {ts:.3f} is more than {settings.TELEMETRY_MAX_FUTURE_SECONDS} s in the future"
    return None


def _where(sample) -> dict:
    return {"line": sample.line} if sample.line is not None else {"path": sample.path}


_BIG = sys.float_info.max


@cache
def _fast_bounds(name: str) -> tuple[float, float]:
    """Bounds inside which a value needs no further check (not NaN, not infinite; bitmasks always checked)."""
    metric = get(name)
    if metric.kind is Kind.BITMASK:
        return math.inf, -math.inf  # nothing passes: the full check runs
    return (-_BIG if metric.min_value is None else metric.min_value,
            _BIG if metric.max_value is None else metric.max_value)


def ingest(source: Source, parsed: ParseResult, *, now: float | None = None) -> IngestReport:
    """Check a parsed batch, map it to the inventory and append it to the buffer; all or nothing.

    Row samples go through one loop; a columnar GPU block (`parsed.gpu_block`, from the JSON columns format)
    through the same checks done on whole columns. Raises BatchRejected (→ 400) or
    telemetry.buffer.BufferUnavailable (→ 503).
    """
    now = time.time() if now is None else now
    errors = list(parsed.errors)
    report = IngestReport(
        unknown_metrics=Counter(parsed.unknown_metrics),
        skipped_not_supported=parsed.skipped_not_supported,
        duplicates_folded=parsed.duplicates_folded + parsed.mig_duplicates_folded,
    )
    index = inventory.for_site(source.site_id)
    samples = parsed.samples
    block = getattr(parsed, "gpu_block", None)
    if block is not None and any(type(s.entity) is GpuEntity for s in samples):
        samples, block = [*samples, *block.samples()], None  # GPU rows given both ways: one path for all
    unknown: Counter = Counter()
    gpu_rows, points = _rows(source, samples, index, now, errors, report, unknown)
    columns = _block(block, index, now, errors, report, unknown) if block is not None and len(block) else None
    if errors:
        raise BatchRejected(errors)
    _record_unknown(source, unknown)
    report.unknown_entities = Counter({f"{kind}:{key}": n for (kind, key), n in unknown.items()})
    report.accepted = sum(len(r) for r in gpu_rows.values()) + len(points)
    if columns is not None:
        report.accepted += columns.pop("_accepted")
        gpu = columns
    else:
        gpu = _gpu_payload(gpu_rows)
    if report.accepted:
        report.entry_id = get_buffer().append(_pack(source, gpu, points))
        count_accepted(report.accepted)
    return report


ACCEPTED_KEY = "fusedc:ingest:samples_accepted"


def count_accepted(n: int) -> None:
    """Add to the samples-accepted counter every web process shares (the cache: Redis in production);
    /metrics exports it, so Prometheus derives the ingest rate with rate()."""
    from django.core.cache import cache

    try:
        try:
            cache.incr(ACCEPTED_KEY, n)  # one round trip per batch on the ingest path
        except ValueError:  # the first batch since the cache was emptied
            cache.add(ACCEPTED_KEY, 0, timeout=None)
            cache.incr(ACCEPTED_KEY, n)
    except Exception:  # a counter must never refuse a batch the buffer already holds
        log.warning("could not count %d accepted samples", n, exc_info=True)


def _rows(source: Source, samples: list, index: dict, now: float, errors: list, report: IngestReport,
          unknown: Counter) -> tuple[dict, dict]:
    """Row samples → wide GPU rows {(gpu_id, time): {column: value}} and points {(series_id, time): value}."""
    gpu_rows: dict[tuple[int, float], dict] = {}
    points: dict[tuple[int, float], float] = {}
    last_counter: dict[tuple, tuple] = {}
    # Per-MIG-instance samples of one GPU column: (sum of value x compute slices, sum of slices, instance ids).
    mig: dict[tuple, list] = {}
    oldest = now - settings.TELEMETRY_MAX_AGE_SECONDS
    newest = now + settings.TELEMETRY_MAX_FUTURE_SECONDS
    by_uuid, by_host, units = index["uuid"], index["host_index"], index["units"]
    columns = GPU_COLUMNS
    unknown_metrics = report.unknown_metrics
    for sample in samples:
        ts, value = sample.timestamp, sample.value
        if not oldest <= ts <= newest and (problem := _check_time(ts, now)) is not None:
            errors.append(ParseError(problem, **_where(sample)))
            continue
        metric = get(sample.metric)
        lo, hi = _fast_bounds(metric.name)
        if not lo <= value <= hi and (problem := metric.check(value)) is not None:
            errors.append(ParseError(problem, **_where(sample)))
            continue
        entity = sample.entity
        if type(entity) is GpuEntity:
            uuid = entity.uuid
            gpu_id = by_uuid.get(uuid) if uuid else None
            if gpu_id is None and entity.hostname is not None and entity.gpu is not None:
                gpu_id = by_host.get((entity.hostname, entity.gpu))
            if gpu_id is None:
                unknown[("gpu", uuid or f"{entity.hostname}/gpu{entity.gpu}")] += 1
                continue
            column = columns.get(metric.name)
            if column is None:
                unknown_metrics[metric.name] += 1  # a DCGM field FuseDC does not store
                continue
            row = gpu_rows.get((gpu_id, ts))
            if row is None:
                row = gpu_rows[(gpu_id, ts)] = {}
            if entity.gpu_instance_id is not None:  # one sample per MIG instance: the GPU's row holds them all
                cell = mig.setdefault((gpu_id, ts, column), [0.0, 0.0, set()])
                if entity.gpu_instance_id in cell[2] or (column in row and not cell[2]):
                    errors.append(ParseError(f"duplicate sample of {metric.name} for this GPU and time",
                                             **_where(sample)))
                    continue
                if cell[2]:
                    report.duplicates_folded += 1
                slices = _mig_slices(entity.gpu_instance_profile)
                cell[0] += value * slices
                cell[1] += slices
                cell[2].add(entity.gpu_instance_id)
                row[column] = cell[0] / cell[1]
                continue
            if column in row:
                errors.append(ParseError(f"duplicate sample of {metric.name} for this GPU and time", **_where(sample)))
                continue
            row[column] = value
            series_key = (gpu_id, column)
        else:
            assert isinstance(entity, CoolingEntity)
            unit_id = None
            if metric.equipment is Equipment.COOLING_UNIT:
                unit_id = units.get(entity.unit)
                if unit_id is None:
                    unknown[("cooling_unit", entity.unit)] += 1
                    continue
            series_id = _series_id(index, source.site_id, unit_id, entity.point, metric.name)
            if (series_id, ts) in points:
                errors.append(
                    ParseError(f"duplicate sample of {metric.name} for this point and time", **_where(sample))
                )
                continue
            points[(series_id, ts)] = value
            series_key = ("p", series_id)
        if metric.kind is Kind.COUNTER:
            previous = last_counter.get(series_key)
            if previous is not None and previous[0] < ts and previous[1] > value:
                errors.append(ParseError(f"counter {metric.name} goes backwards within the batch "
                                         f"({previous[1]:g} → {value:g})", **_where(sample)))
            last_counter[series_key] = (ts, value)
    return gpu_rows, points


def _mig_slices(profile: str | None) -> int:
    """Compute slices of a MIG instance from its profile ("3g.40gb" → 3; unknown → 1). A per-instance ratio
    (tensor activity) becomes the GPU's as the slice-weighted mean over its instances."""
    head = (profile or "").split("g.", 1)[0]
    return int(head) if head.isdigit() and int(head) > 0 else 1


def _block(block: GpuBlock, index: dict, now: float, errors: list, report: IngestReport,
           unknown: Counter) -> dict | None:
    """A columnar GPU block → the payload's `gpu` columns (plus `_accepted`), with the row path's checks.

    Everything is done on whole columns; Python loops run only over rows something is wrong with (or over
    GPUs that appear more than once in the block).
    """
    ts = block.timestamp
    max_age, max_future = settings.TELEMETRY_MAX_AGE_SECONDS, settings.TELEMETRY_MAX_FUTURE_SECONDS
    late = (ts < now - max_age) | (ts > now + max_future)
    if late.any():
        for i in np.flatnonzero(late)[: 1 if block.scalar_timestamp else MAX_ERRORS_PER_COLUMN].tolist():
            errors.append(ParseError(_check_time(float(ts[i]), now), path=block.time_path(i)))
        return None
    by_uuid, by_host = index["uuid"], index["host_index"]
    if block.hostname is None or block.gpu is None:
        ids = [by_uuid.get(u, -1) for u in block.uuid]
    else:
        uuids = block.uuid or [None] * len(block)
        ids = [by_uuid[u] if u and u in by_uuid else by_host.get((h, g), -1)
               for u, h, g in zip(uuids, block.hostname, block.gpu, strict=True)]
    gpu_id = np.array(ids, dtype=np.int64)
    present = {m: ~np.isnan(v) for m, v in block.values.items()}
    known = gpu_id >= 0
    if not known.all():
        sent = np.zeros(len(block), dtype=np.int64)
        for mask in present.values():
            sent += mask
        for i in np.flatnonzero(~known).tolist():
            entity = block.entity(i)
            if sent[i]:
                unknown[("gpu", entity.uuid or f"{entity.hostname}/gpu{entity.gpu}")] += int(sent[i])
        rows = np.flatnonzero(known)
    else:
        rows = np.arange(len(block))
    # Oldest first per GPU: the order of the stored rows, and what duplicate and counter checks compare.
    rows = rows[np.lexsort((ts[rows], gpu_id[rows]))]
    ids_sorted = gpu_id[rows]
    values = {m: v[rows] for m, v in block.values.items()}
    present = {m: p[rows] for m, p in present.items()}
    if len(rows) > 1 and (ids_sorted[1:] == ids_sorted[:-1]).any():
        keep = _repeated_gpus(block, rows, ids_sorted, ts[rows], values, present, errors)
        if keep is None:
            return None
        rows, ids_sorted = rows[keep], ids_sorted[keep]
        values = {m: v[keep] for m, v in values.items()}
        present = {m: p[keep] for m, p in present.items()}
    gpu: dict = {"gpu_id": ids_sorted.tolist(), "time": ts[rows].tolist()}
    accepted = 0
    for metric, column in GPU_COLUMNS.items():
        if metric not in values:
            continue
        count = int(np.count_nonzero(present[metric]))
        if not count:
            continue
        accepted += count
        items = values[metric].tolist()
        if count < len(items):
            for i in np.flatnonzero(~present[metric]).tolist():
                items[i] = None
        gpu[column] = items
    for metric in values.keys() - GPU_COLUMNS.keys():
        count = int(np.count_nonzero(present[metric]))
        if count:
            report.unknown_metrics[metric] += count  # a DCGM field FuseDC does not store
    gpu["_accepted"] = accepted
    return gpu


def _repeated_gpus(block: GpuBlock, rows, ids, times, values: dict, present: dict, errors: list):
    """Rows of a GPU that appears more than once (sorted by GPU, then time): merge rows of the same time
    that carry different fields, refuse a field sent twice for one time, and a counter going backwards.
    Returns which of the sorted rows to keep, or None after naming the errors."""
    n = len(rows)
    keep = np.ones(n, dtype=bool)
    before = len(errors)
    counters = [m for m in values if get(m).kind is Kind.COUNTER]
    start = 0
    while start < n:
        end = start + 1
        while end < n and ids[end] == ids[start]:
            end += 1
        target = start
        last: dict[str, tuple[float, float]] = {}
        for j in range(start, end):
            if j > start and times[j] == times[target]:
                keep[j] = False
                for m in values:
                    if not present[m][j]:
                        continue
                    if present[m][target]:
                        errors.append(ParseError(f"duplicate sample of {m} for this GPU and time",
                                                 path=block.path(m, int(rows[j]))))
                    else:
                        values[m][target], present[m][target] = values[m][j], True
            elif j > start:
                target = j
            for m in counters:
                if present[m][j]:
                    previous = last.get(m)
                    value = float(values[m][j])
                    if previous is not None and previous[0] < times[j] and previous[1] > value:
                        errors.append(ParseError(f"counter {m} goes backwards within the batch "
                                                 f"({previous[1]:g} → {value:g})", path=block.path(m, int(rows[j]))))
                    last[m] = (float(times[j]), value)
        start = end
    return keep if len(errors) == before else None


def encode(source: Source, gpu_rows: dict, points: dict) -> bytes:
    """Columnar payload: one wide GPU row per (gpu, time), one value per (series, time)."""
    return _pack(source, _gpu_payload(gpu_rows), points)


def _gpu_payload(gpu_rows: dict) -> dict:
    keys = sorted(gpu_rows)
    gpu = {"gpu_id": [k[0] for k in keys], "time": [k[1] for k in keys]}
    for column in GPU_COLUMNS.values():
        values = [gpu_rows[k].get(column) for k in keys]
        if any(v is not None for v in values):
            gpu[column] = values
    return gpu


def _pack(source: Source, gpu: dict, points: dict) -> bytes:
    point_keys = sorted(points)
    return msgpack.packb({
        "v": PAYLOAD_VERSION,
        "source": source.pk,
        "gpu": gpu,
        "points": {"series_id": [k[0] for k in point_keys], "time": [k[1] for k in point_keys],
                   "value": [points[k] for k in point_keys]},
    })


def decode(payload: bytes) -> dict:
    data = msgpack.unpackb(payload)
    if data.get("v") != PAYLOAD_VERSION:
        raise ValueError(f"buffer entry of unknown payload version {data.get('v')!r}")
    return data


def _record_unknown(source: Source, unknown: Counter):
    for (kind, key), n in unknown.items():
        entry, created = UnknownEntity.objects.get_or_create(source=source, kind=kind, key=key[:300],
                                                             defaults={"samples": n})
        if not created:
            UnknownEntity.objects.filter(pk=entry.pk).update(samples=F("samples") + n)
