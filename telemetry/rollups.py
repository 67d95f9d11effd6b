"""Rollups at 1 min and 1 h, maintained incrementally and exactly.

Each run aggregates the buckets that closed since the last run (`RollupState.done_until`); the 1 h rollups
are built from the 1 min ones. Samples that arrive for an already rolled-up bucket mark it dirty
(`DirtyBucket`, written by the writer in its transaction) and the next run recomputes just that bucket.
Recomputing a bucket replaces its row, so a rollup always equals the aggregate of what is stored.
"""

from __future__ import annotations

import time

from django.db import connection, transaction

from telemetry.models import DirtyBucket, Resolution, RollupState
from telemetry.schema import GPU_COLUMNS
from telemetry.storage import GPU_TABLE, POINT_TABLE, to_datetime

MINUTE, HOUR = Resolution.MINUTE.value, Resolution.HOUR.value
# Wait this long after a bucket ends before rolling it up, so the writers have stored its samples.
SETTLE_SECONDS = 15
_COLUMNS = list(GPU_COLUMNS.values())


def bucket_expr(width: int, column: str = "time") -> str:
    """SQL for the start of the `width`-second bucket a timestamp falls in, as a timestamp value."""
    if connection.vendor == "postgresql":
        return f"to_timestamp(floor(extract(epoch from {column}) / {width}) * {width})"
    # '%%s': the statement goes through parameter substitution, where a bare %s would be a placeholder.
    return f"datetime(CAST(strftime('%%s', {column}) AS INTEGER) / {width} * {width}, 'unixepoch')"


def _params(start: float, end: float):
    adapt = connection.ops.adapt_datetimefield_value
    return [adapt(to_datetime(start)), adapt(to_datetime(end))]


def _gpu_from_raw(start: float, end: float):
    aggregates = ", ".join(f"AVG({c}), MIN({c}), MAX({c})" for c in _COLUMNS)
    targets = ", ".join(f"avg_{c}, min_{c}, max_{c}" for c in _COLUMNS)
    updates = ", ".join(f"{p}{c} = excluded.{p}{c}" for c in _COLUMNS for p in ("avg_", "min_", "max_"))
    return (
        f"INSERT INTO telemetry_gpurollup (resolution, gpu_id, bucket, count, {targets}) "
        f"SELECT {MINUTE}, gpu_id, {bucket_expr(MINUTE)} AS b, COUNT(*), {aggregates} FROM {GPU_TABLE} "
        "WHERE time >= %s AND time < %s GROUP BY gpu_id, b "
        f"ON CONFLICT (resolution, gpu_id, bucket) DO UPDATE SET count = excluded.count, {updates}",
        _params(start, end),
    )


def _gpu_from_minutes(start: float, end: float):
    # Hourly mean = count-weighted mean of the minute means; min of mins; max of maxes.
    aggregates = ", ".join(
        f"SUM(avg_{c} * count) / NULLIF(SUM(CASE WHEN avg_{c} IS NULL THEN 0 ELSE count END), 0), "
        f"MIN(min_{c}), MAX(max_{c})" for c in _COLUMNS
    )
    targets = ", ".join(f"avg_{c}, min_{c}, max_{c}" for c in _COLUMNS)
    updates = ", ".join(f"{p}{c} = excluded.{p}{c}" for c in _COLUMNS for p in ("avg_", "min_", "max_"))
    return (
        f"INSERT INTO telemetry_gpurollup (resolution, gpu_id, bucket, count, {targets}) "
        f"SELECT {HOUR}, gpu_id, {bucket_expr(HOUR, 'bucket')} AS b, SUM(count), {aggregates} "
        f"FROM telemetry_gpurollup WHERE resolution = {MINUTE} AND bucket >= %s AND bucket < %s GROUP BY gpu_id, b "
        f"ON CONFLICT (resolution, gpu_id, bucket) DO UPDATE SET count = excluded.count, {updates}",
        _params(start, end),
    )


def _points_from_raw(start: float, end: float):
    return (
        "INSERT INTO telemetry_pointrollup (resolution, series_id, bucket, count, avg, min, max) "
        f"SELECT {MINUTE}, series_id, {bucket_expr(MINUTE)} AS b, COUNT(*), AVG(value), MIN(value), MAX(value) "
        f"FROM {POINT_TABLE} WHERE time >= %s AND time < %s GROUP BY series_id, b "
        "ON CONFLICT (resolution, series_id, bucket) DO UPDATE SET count = excluded.count, avg = excluded.avg, "
        "min = excluded.min, max = excluded.max",
        _params(start, end),
    )


def _points_from_minutes(start: float, end: float):
    return (
        "INSERT INTO telemetry_pointrollup (resolution, series_id, bucket, count, avg, min, max) "
        f"SELECT {HOUR}, series_id, {bucket_expr(HOUR, 'bucket')} AS b, SUM(count), SUM(avg * count) / SUM(count), "
        "MIN(min), MAX(max) FROM telemetry_pointrollup "
        f"WHERE resolution = {MINUTE} AND bucket >= %s AND bucket < %s GROUP BY series_id, b "
        "ON CONFLICT (resolution, series_id, bucket) DO UPDATE SET count = excluded.count, avg = excluded.avg, "
        "min = excluded.min, max = excluded.max",
        _params(start, end),
    )


_BUILDERS = {MINUTE: (_gpu_from_raw, _points_from_raw), HOUR: (_gpu_from_minutes, _points_from_minutes)}


def _aggregate(resolution: int, start: float, end: float):
    with connection.cursor() as cursor:
        for build in _BUILDERS[resolution]:
            sql, params = build(start, end)
            cursor.execute(sql, params)


def _earliest_sample() -> float | None:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT MIN(time) FROM {GPU_TABLE}")
        gpu = cursor.fetchone()[0]
        cursor.execute(f"SELECT MIN(time) FROM {POINT_TABLE}")
        point = cursor.fetchone()[0]
    from telemetry.query import _epoch

    times = [_epoch(t) for t in (gpu, point) if t is not None]
    return min(times) if times else None


def roll_up(now: float | None = None) -> dict[int, int]:
    """Aggregate newly closed buckets and recompute dirty ones; returns buckets processed per resolution."""
    now = time.time() if now is None else now
    done: dict[int, int] = {}
    for resolution in (MINUTE, HOUR):
        with transaction.atomic():
            state = RollupState.objects.select_for_update().filter(resolution=resolution).first()
            # The hour waits for its minutes; the minute for the writers.
            ceiling = now - SETTLE_SECONDS if resolution == MINUTE else (
                RollupState.objects.get(resolution=MINUTE).done_until.timestamp()
                if RollupState.objects.filter(resolution=MINUTE).exists() else 0
            )
            horizon = (ceiling // resolution) * resolution
            if state is None:
                earliest = _earliest_sample()
                if earliest is None:
                    continue
                state = RollupState.objects.create(resolution=resolution,
                                                   done_until=to_datetime((earliest // resolution) * resolution))
            start = state.done_until.timestamp()
            count = 0
            if horizon > start:
                _aggregate(resolution, start, horizon)
                state.done_until = to_datetime(horizon)
                state.save(update_fields=["done_until"])
                count = int((horizon - start) // resolution)
            dirty = list(DirtyBucket.objects.select_for_update().filter(resolution=resolution)
                         .values_list("bucket", flat=True))
            # Cleared before recomputing: a writer marking one of them again meanwhile waits for this
            # transaction, and its mark (for rows this recompute cannot see) survives it.
            DirtyBucket.objects.filter(resolution=resolution, bucket__in=dirty).delete()
            for bucket in dirty:
                begin = bucket.timestamp()
                _aggregate(resolution, begin, begin + resolution)
                if resolution == MINUTE:  # the hour containing it now needs recomputing too
                    mark_dirty(HOUR, [begin])
                count += 1
            done[resolution] = count
    return done


def mark_dirty(resolution: int, times: list[float]):
    buckets = {(t // resolution) * resolution for t in times}
    DirtyBucket.objects.bulk_create(
        [DirtyBucket(resolution=resolution, bucket=to_datetime(b)) for b in sorted(buckets)], ignore_conflicts=True
    )


def _watermark_for_writer(resolution: int) -> float | None:
    """The rolled-up-until time, read FOR SHARE on PostgreSQL: a roll-up in progress holds the row FOR UPDATE
    and aggregates a snapshot without the writer's uncommitted rows, so the writer waits for it and judges
    lateness by the new watermark (a plain read sees the old one: such rows would be neither rolled up nor
    marked dirty)."""
    if connection.vendor != "postgresql":  # SQLite runs one writing transaction at a time
        row = RollupState.objects.filter(resolution=resolution).values_list("done_until", flat=True).first()
        return row.timestamp() if row else None
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT done_until FROM {RollupState._meta.db_table} WHERE resolution = %s FOR SHARE",
                       [resolution])
        row = cursor.fetchone()
    return row[0].timestamp() if row else None


def mark_late_samples(payloads: list[dict]):
    """Called by the writer inside its transaction: buckets already rolled up that these samples fall in."""
    done_until = _watermark_for_writer(MINUTE)
    if done_until is None:
        return
    late = [t for p in payloads for t in (*p["gpu"]["time"], *p["points"]["time"]) if t < done_until]
    if late:
        mark_dirty(MINUTE, late)
