"""Reading telemetry back: series over a time range (downsampled to at most N points) and latest values."""

from __future__ import annotations

import math
from dataclasses import dataclass

from django.db import connection

from facility.models import GPU
from telemetry.catalogue import get
from telemetry.models import Series
from telemetry.schema import GPU_COLUMNS
from telemetry.storage import GPU_TABLE, POINT_TABLE, to_datetime


def _bucket_sql(width: int) -> str:
    """Epoch seconds of the start of the `width`-second bucket each row's time falls in."""
    if connection.vendor == "postgresql":
        return f"floor(extract(epoch from time) / {width}) * {width}"
    return f"CAST((julianday(time) - 2440587.5) * 86400.0 / {width} AS INTEGER) * {width}"


def bucket_seconds(start: float, end: float, max_points: int) -> int:
    """The bucket width giving at most `max_points` per series: 1 s (raw at 1 Hz) or wider."""
    return max(1, math.ceil((end - start) / max_points))


@dataclass
class SeriesData:
    entity: dict
    metric: str
    unit: str
    t: list
    v: list

    def as_dict(self) -> dict:
        return {"entity": self.entity, "metric": self.metric, "unit": self.unit, "t": self.t, "v": self.v}


def gpu_series(gpus: list[GPU], metrics: list[str], start: float, end: float, max_points: int) -> list[SeriesData]:
    width = bucket_seconds(start, end, max_points)
    columns = [GPU_COLUMNS[m] for m in metrics]
    by_id = {g.pk: g for g in gpus}
    out: dict[tuple[int, str], SeriesData] = {}
    for gpu in gpus:
        for metric in metrics:
            entity = {"uuid": gpu.uuid, "hostname": gpu.node.hostname, "gpu": gpu.index}
            out[(gpu.pk, metric)] = SeriesData(entity, metric, str(get(metric).unit), [], [])
    if not gpus:
        return []
    aggregates = ", ".join(f"AVG({c})" for c in columns)
    sql = (
        f"SELECT gpu_id, {_bucket_sql(width)} AS bucket, {aggregates} FROM {GPU_TABLE} "
        f"WHERE gpu_id IN ({', '.join(['%s'] * len(by_id))}) AND time >= %s AND time < %s "
        "GROUP BY gpu_id, bucket ORDER BY gpu_id, bucket"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*by_id, *_range(start, end)])
        for gpu_id, bucket, *values in cursor.fetchall():
            for metric, value in zip(metrics, values, strict=True):
                if value is not None:
                    series = out[(gpu_id, metric)]
                    series.t.append(float(bucket))
                    series.v.append(float(value))
    return list(out.values())


def point_series(series: list[Series], start: float, end: float, max_points: int) -> list[SeriesData]:
    if not series:
        return []
    width = bucket_seconds(start, end, max_points)
    out = {
        s.pk: SeriesData(
            {"cooling_unit": s.cooling_unit.name if s.cooling_unit_id else None, "point": s.point},
            s.metric, str(get(s.metric).unit), [], [],
        )
        for s in series
    }
    sql = (
        f"SELECT series_id, {_bucket_sql(width)} AS bucket, AVG(value) FROM {POINT_TABLE} "
        f"WHERE series_id IN ({', '.join(['%s'] * len(out))}) AND time >= %s AND time < %s "
        "GROUP BY series_id, bucket ORDER BY series_id, bucket"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*out, *_range(start, end)])
        for series_id, bucket, value in cursor.fetchall():
            out[series_id].t.append(float(bucket))
            out[series_id].v.append(float(value))
    return list(out.values())


def _range(start: float, end: float):
    adapt = connection.ops.adapt_datetimefield_value
    return [adapt(to_datetime(start)), adapt(to_datetime(end))]


def latest_gpu_values(site_id: int, metrics: list[str], since: float) -> dict:
    """The newest sample of each GPU of a site since `since`, columnar: uuid, hostname, gpu, time, metrics."""
    columns = [GPU_COLUMNS[m] for m in metrics]
    gpus = {
        pk: (uuid, host, index)
        for pk, uuid, host, index in GPU.objects.filter(node__rack__hall__site_id=site_id).values_list(
            "pk", "uuid", "node__hostname", "index"
        )
    }
    result = {"uuid": [], "hostname": [], "gpu": [], "time": [], **{m: [] for m in metrics}}
    if not gpus:
        return result
    # Row-value IN works on PostgreSQL and SQLite alike; the inner MAX uses the (gpu_id, time) key.
    sql = (
        f"SELECT gpu_id, time, {', '.join(columns) or 'NULL'} FROM {GPU_TABLE} WHERE (gpu_id, time) IN ("
        f"SELECT gpu_id, MAX(time) FROM {GPU_TABLE} WHERE time >= %s AND gpu_id IN "
        f"({', '.join(['%s'] * len(gpus))}) GROUP BY gpu_id) ORDER BY gpu_id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [connection.ops.adapt_datetimefield_value(to_datetime(since)), *gpus])
        rows = cursor.fetchall()
    for gpu_id, ts, *values in rows:
        uuid, host, index = gpus[gpu_id]
        result["uuid"].append(uuid)
        result["hostname"].append(host)
        result["gpu"].append(index)
        result["time"].append(_epoch(ts))
        for metric, value in zip(metrics, values, strict=True):
            result[metric].append(value)
    return result


def latest_point_values(site_id: int, metrics: list[str] | None, since: float) -> list[dict]:
    series = Series.objects.filter(site_id=site_id).select_related("cooling_unit")
    if metrics:
        series = series.filter(metric__in=metrics)
    by_id = {s.pk: s for s in series}
    if not by_id:
        return []
    sql = (
        f"SELECT series_id, time, value FROM {POINT_TABLE} WHERE (series_id, time) IN ("
        f"SELECT series_id, MAX(time) FROM {POINT_TABLE} WHERE time >= %s AND series_id IN "
        f"({', '.join(['%s'] * len(by_id))}) GROUP BY series_id) ORDER BY series_id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [connection.ops.adapt_datetimefield_value(to_datetime(since)), *by_id])
        rows = cursor.fetchall()
    return [
        {
            "cooling_unit": by_id[sid].cooling_unit.name if by_id[sid].cooling_unit_id else None,
            "point": by_id[sid].point, "metric": by_id[sid].metric, "time": _epoch(ts), "value": value,
        }
        for sid, ts, value in rows
    ]


def _epoch(ts) -> float:
    if isinstance(ts, str):  # SQLite hands back text
        from django.utils.dateparse import parse_datetime

        ts = parse_datetime(ts)
    if ts.tzinfo is None:
        from datetime import UTC

        ts = ts.replace(tzinfo=UTC)
    return ts.timestamp()


def facility_now(site_id: int, since: float) -> dict:
    """The derived facility KPIs (telemetry.derived) from the latest readings since `since`."""
    import numpy as np

    from telemetry.derived import facility_kpis
    from telemetry.schema import METRIC_OF_COLUMN

    columns = ("power_usage", "tflops", "clocks_event_reasons", "gpu_temp")
    latest = latest_gpu_values(site_id, [METRIC_OF_COLUMN[c] for c in columns], since)
    gpu = {c: np.array(latest[METRIC_OF_COLUMN[c]], dtype=float) for c in columns}
    return facility_kpis(gpu, latest_point_values(site_id, None, since))
