"""Writing samples to the database: COPY into daily partitions on PostgreSQL, batched INSERTs on SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.db import connection

from telemetry.schema import GPU_COLUMNS, INTEGER_COLUMNS

GPU_TABLE = "telemetry_gpusample"
POINT_TABLE = "telemetry_pointsample"
_known_partitions: set[str] = set()


def to_datetime(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def ensure_partitions(days: set) -> None:
    """Create the daily partitions these dates fall in (PostgreSQL); idempotent, outside the write transaction."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        for day in sorted(days):
            for table in (GPU_TABLE, POINT_TABLE):
                name = f"{table}_p{day:%Y%m%d}"
                if name in _known_partitions:
                    continue
                cursor.execute(
                    f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table} "
                    f"FOR VALUES FROM ('{day:%Y-%m-%d}') TO ('{day + timedelta(days=1):%Y-%m-%d}')"
                )
                _known_partitions.add(name)


def drop_partitions_before(day) -> list[str]:
    """Retention: drop whole daily partitions older than `day` (PostgreSQL); returns their names."""
    if connection.vendor != "postgresql":
        return []
    dropped = []
    with connection.cursor() as cursor:
        for table in (GPU_TABLE, POINT_TABLE):
            cursor.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s", [table]
            )
            for (name,) in cursor.fetchall():
                if name < f"{table}_p{day:%Y%m%d}":
                    cursor.execute(f"DROP TABLE {name}")
                    _known_partitions.discard(name)
                    dropped.append(name)
    return dropped


def _gpu_rows(gpu: dict, columns: list[str]):
    n = len(gpu["gpu_id"])
    series = [gpu.get(c, [None] * n) for c in columns]
    for i in range(n):
        values = []
        for column, values_of in zip(columns, series, strict=True):
            v = values_of[i]
            values.append(int(v) if v is not None and column in INTEGER_COLUMNS else v)
        yield (gpu["gpu_id"][i], to_datetime(gpu["time"][i]), *values)


def write(payloads: list[dict]) -> int:
    """Insert the samples of decoded buffer payloads; call inside the writer's transaction."""
    columns = list(GPU_COLUMNS.values())
    gpu_rows = [row for p in payloads for row in _gpu_rows(p["gpu"], columns)]
    point_rows = [
        (sid, to_datetime(t), v)
        for p in payloads
        for sid, t, v in zip(p["points"]["series_id"], p["points"]["time"], p["points"]["value"], strict=True)
    ]
    gpu_fields = ["gpu_id", "time", *columns]
    point_fields = ["series_id", "time", "value"]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # COPY is several times faster than INSERT for batches (measured in bench/ingest.py).
            if gpu_rows:
                with cursor.copy(f"COPY {GPU_TABLE} ({', '.join(gpu_fields)}) FROM STDIN") as copy:
                    for row in gpu_rows:
                        copy.write_row(row)
            if point_rows:
                with cursor.copy(f"COPY {POINT_TABLE} ({', '.join(point_fields)}) FROM STDIN") as copy:
                    for row in point_rows:
                        copy.write_row(row)
        else:
            adapt = connection.ops.adapt_datetimefield_value
            if gpu_rows:
                cursor.executemany(
                    f"INSERT INTO {GPU_TABLE} ({', '.join(gpu_fields)}) VALUES ({', '.join(['%s'] * len(gpu_fields))})",
                    [(r[0], adapt(r[1]), *r[2:]) for r in gpu_rows],
                )
            if point_rows:
                cursor.executemany(
                    f"INSERT INTO {POINT_TABLE} ({', '.join(point_fields)}) VALUES (%s, %s, %s)",
                    [(r[0], adapt(r[1]), r[2]) for r in point_rows],
                )
    return len(gpu_rows), len(point_rows)


def days_of(payloads: list[dict]) -> set:
    times = [t for p in payloads for t in (*p["gpu"]["time"], *p["points"]["time"])]
    return {to_datetime(t).date() for t in {int(t // 86400) * 86400 for t in times}}
