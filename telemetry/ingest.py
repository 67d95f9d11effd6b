"""The one ingest pipeline every source goes through: parsed samples → checks → inventory → buffer.

A batch is accepted or rejected whole. Accepted means durable in the buffer (a Redis stream in production);
writers store it afterwards. Anything not in the inventory is counted and recorded for an admin to map.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import msgpack
from django.conf import settings
from django.db.models import F
from django.db.models.signals import post_delete, post_save

from facility.models import GPU, CoolingUnit, Node
from telemetry.buffer import get_buffer
from telemetry.catalogue import Equipment, Kind, get
from telemetry.models import Series, Source, UnknownEntity
from telemetry.parsers import CoolingEntity, GpuEntity, ParseError, ParseResult
from telemetry.schema import GPU_COLUMNS

PAYLOAD_VERSION = 1


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
    """Lookup of GPUs and cooling units by the names sources use, per site; dropped on inventory changes."""

    def __init__(self):
        self._lock = threading.Lock()
        self._sites: dict[int, dict] = {}

    def clear(self, **kwargs):
        with self._lock:
            self._sites.clear()

    def for_site(self, site_id: int) -> dict:
        with self._lock:
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
for _model in (GPU, Node, CoolingUnit):
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


def ingest(source: Source, parsed: ParseResult, *, now: float | None = None) -> IngestReport:
    """Check a parsed batch, map it to the inventory and append it to the buffer; all or nothing.

    Raises BatchRejected (→ 400) or telemetry.buffer.BufferUnavailable (→ 503).
    """
    now = time.time() if now is None else now
    errors = list(parsed.errors)
    report = IngestReport(
        unknown_metrics=Counter(parsed.unknown_metrics),
        skipped_not_supported=parsed.skipped_not_supported,
        duplicates_folded=parsed.duplicates_folded + parsed.mig_duplicates_folded,
    )
    index = inventory.for_site(source.site_id)
    gpu_rows: dict[tuple[int, float], dict] = {}
    points: dict[tuple[int, float], float] = {}
    last_counter: dict[tuple, float] = {}
    unknown: Counter = Counter()
    for sample in parsed.samples:
        if (problem := _check_time(sample.timestamp, now)) is not None:
            errors.append(ParseError(problem, **_where(sample)))
            continue
        metric = get(sample.metric)
        if (problem := metric.check(sample.value)) is not None:
            errors.append(ParseError(problem, **_where(sample)))
            continue
        entity = sample.entity
        if isinstance(entity, GpuEntity):
            gpu_id = _gpu_id(index, entity)
            if gpu_id is None:
                unknown[("gpu", entity.uuid or f"{entity.hostname}/gpu{entity.gpu}")] += 1
                continue
            column = GPU_COLUMNS.get(metric.name)
            if column is None:
                report.unknown_metrics[metric.name] += 1  # a DCGM field FuseDC does not store
                continue
            row = gpu_rows.setdefault((gpu_id, sample.timestamp), {})
            if column in row:
                errors.append(ParseError(f"duplicate sample of {metric.name} for this GPU and time", **_where(sample)))
                continue
            row[column] = sample.value
            series_key = (gpu_id, column)
        else:
            assert isinstance(entity, CoolingEntity)
            unit_id = None
            if metric.equipment is Equipment.COOLING_UNIT:
                unit_id = index["units"].get(entity.unit)
                if unit_id is None:
                    unknown[("cooling_unit", entity.unit)] += 1
                    continue
            series_id = _series_id(index, source.site_id, unit_id, entity.point, metric.name)
            if (series_id, sample.timestamp) in points:
                errors.append(
                    ParseError(f"duplicate sample of {metric.name} for this point and time", **_where(sample))
                )
                continue
            points[(series_id, sample.timestamp)] = sample.value
            series_key = ("p", series_id)
        if metric.kind is Kind.COUNTER:
            previous = last_counter.get(series_key)
            if previous is not None and previous[0] < sample.timestamp and previous[1] > sample.value:
                errors.append(ParseError(f"counter {metric.name} goes backwards within the batch "
                                         f"({previous[1]:g} → {sample.value:g})", **_where(sample)))
            last_counter[series_key] = (sample.timestamp, sample.value)
    if errors:
        raise BatchRejected(errors)
    _record_unknown(source, unknown)
    report.unknown_entities = Counter({f"{kind}:{key}": n for (kind, key), n in unknown.items()})
    report.accepted = sum(len(r) for r in gpu_rows.values()) + len(points)
    if report.accepted:
        report.entry_id = get_buffer().append(encode(source, gpu_rows, points))
    return report


def encode(source: Source, gpu_rows: dict, points: dict) -> bytes:
    """Columnar payload: one wide GPU row per (gpu, time), one value per (series, time)."""
    keys = sorted(gpu_rows)
    gpu = {"gpu_id": [k[0] for k in keys], "time": [k[1] for k in keys]}
    for column in GPU_COLUMNS.values():
        values = [gpu_rows[k].get(column) for k in keys]
        if any(v is not None for v in values):
            gpu[column] = values
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
