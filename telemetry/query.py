"""Reading telemetry back: series over a time range (downsampled to at most N points) and latest values."""

from __future__ import annotations

import math
from dataclasses import dataclass

from django.db import connection

from facility.models import GPU
from telemetry.catalogue import get
from telemetry.models import Resolution, RollupState, Series
from telemetry.schema import GPU_COLUMNS
from telemetry.storage import GPU_TABLE, POINT_TABLE, to_datetime

MINUTE, HOUR = Resolution.MINUTE.value, Resolution.HOUR.value


def _bucket_sql(width: int, column: str = "time") -> str:
    """Epoch seconds of the start of the `width`-second bucket each row's time falls in."""
    if connection.vendor == "postgresql":
        return f"floor(extract(epoch from {column}) / {width}) * {width}"
    return f"CAST(strftime('%%s', {column}) AS INTEGER) / {width} * {width}"


def bucket_seconds(start: float, end: float, max_points: int) -> int:
    """The bucket width giving at most `max_points` per series: 1 s (raw at 1 Hz) or wider."""
    return max(1, math.ceil((end - start) / max_points))


def resolution_for(width: int) -> int:
    """The coarsest stored resolution no wider than the bucket: raw (0), 1 min or 1 h rollups."""
    return HOUR if width >= HOUR else MINUTE if width >= MINUTE else 0


def _segments(width: int, start: float, end: float) -> list[tuple[int, float, float]]:
    """(resolution, start, end) pieces: rollups where they are complete, raw samples for the recent tail."""
    resolution = resolution_for(width)
    if resolution == 0:
        return [(0, start, end)]
    done = {r: t.timestamp() for r, t in RollupState.objects.values_list("resolution", "done_until")}
    pieces, cursor = [], start
    for r in (HOUR, MINUTE):
        if r > resolution or r not in done or done[r] <= cursor:
            continue
        upto = min(done[r], end)
        pieces.append((r, cursor, upto))
        cursor = upto
    if cursor < end:
        pieces.append((0, cursor, end))
    return pieces


@dataclass
class SeriesData:
    entity: dict
    metric: str
    unit: str
    t: list
    v: list

    def as_dict(self) -> dict:
        return {"entity": self.entity, "metric": self.metric, "unit": self.unit, "t": self.t, "v": self.v}


def _aggregated(key: str, ids: list[int], values: list[str], width: int, start: float, end: float):
    """Rows of (id, bucket, (mean, count) per value) over raw and rollup pieces, merged per bucket."""
    raw_table, rollup_table = (GPU_TABLE, "telemetry_gpurollup") if key == "gpu_id" else (
        POINT_TABLE, "telemetry_pointrollup")
    merged: dict[tuple[int, float], list[list[float]]] = {}
    placeholders = ", ".join(["%s"] * len(ids))
    for resolution, lo, hi in _segments(width, start, end):
        if resolution == 0:
            select = ", ".join(f"SUM({v}), COUNT({v})" for v in values)
            sql = (f"SELECT {key}, {_bucket_sql(width)} AS b, {select} FROM {raw_table} "
                   f"WHERE {key} IN ({placeholders}) AND time >= %s AND time < %s GROUP BY {key}, b")
        else:
            avg = (lambda v: f"avg_{v}") if key == "gpu_id" else (lambda v: "avg")
            select = ", ".join(
                f"SUM({avg(v)} * count), SUM(CASE WHEN {avg(v)} IS NULL THEN 0 ELSE count END)" for v in values
            )
            sql = (f"SELECT {key}, {_bucket_sql(width, 'bucket')} AS b, {select} FROM {rollup_table} "
                   f"WHERE resolution = {resolution} AND {key} IN ({placeholders}) AND bucket >= %s AND bucket < %s "
                   f"GROUP BY {key}, b")
        with connection.cursor() as cursor:
            cursor.execute(sql, [*ids, *_range(lo, hi)])
            for row_id, bucket, *sums in cursor.fetchall():
                acc = merged.setdefault((row_id, float(bucket)), [[0.0, 0] for _ in values])
                for i in range(len(values)):
                    total, count = sums[2 * i], sums[2 * i + 1]
                    if count:
                        acc[i][0] += float(total)
                        acc[i][1] += int(count)
    for (row_id, bucket) in sorted(merged):
        yield row_id, bucket, [(a[0] / a[1], a[1]) if a[1] else (None, 0) for a in merged[(row_id, bucket)]]


def gpu_series(gpus: list[GPU], metrics: list[str], start: float, end: float, max_points: int) -> list[SeriesData]:
    if not gpus or not metrics:
        return []
    width = bucket_seconds(start, end, max_points)
    out: dict[tuple[int, str], SeriesData] = {}
    for gpu in gpus:
        for metric in metrics:
            entity = {"uuid": gpu.uuid, "hostname": gpu.node.hostname, "gpu": gpu.index}
            out[(gpu.pk, metric)] = SeriesData(entity, metric, str(get(metric).unit), [], [])
    columns = [GPU_COLUMNS[m] for m in metrics]
    for gpu_id, bucket, values in _aggregated("gpu_id", [g.pk for g in gpus], columns, width, start, end):
        for metric, (mean, _) in zip(metrics, values, strict=True):
            if mean is not None:
                out[(gpu_id, metric)].t.append(bucket)
                out[(gpu_id, metric)].v.append(mean)
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
    for series_id, bucket, ((mean, _),) in _aggregated("series_id", list(out), ["value"], width, start, end):
        if mean is not None:
            out[series_id].t.append(bucket)
            out[series_id].v.append(mean)
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
