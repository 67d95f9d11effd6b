"""Writing samples to the database: COPY into daily partitions on PostgreSQL, batched INSERTs on SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from django.db import connection, transaction

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
                # Remember it only once committed: a partition created inside a transaction that later rolls
                # back (a caller's atomic block, a test) must be created again next time, not skipped.
                if not connection.in_atomic_block:
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


# PostgreSQL binary COPY: the header and trailer of a stream, and its timestamp epoch (2000-01-01 UTC).
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_COPY_TRAILER = b"\xff\xff"
_PG_EPOCH = 946_684_800


def pg_microseconds(times: np.ndarray) -> np.ndarray:
    """Epoch seconds → PostgreSQL timestamptz (µs since 2000-01-01), rounded as `datetime.fromtimestamp`."""
    seconds = np.floor(times)
    micros = np.round((times - seconds) * 1e6)
    return (seconds.astype(np.int64) - _PG_EPOCH) * 1_000_000 + micros.astype(np.int64)


def binary_copy(columns: list[tuple[np.ndarray, str]]) -> bytes:
    """One binary COPY stream from columns of equal length: (values, kind) with kind "i8" (bigint), "f8"
    (double precision), "ts" (timestamptz from epoch seconds) or "f8nan" (double precision, never NULL).
    NaN is NULL except in "f8nan" columns, where it is stored as NaN. (In GPU rows NaN means "not sent":
    no GPU metric allows NaN as a value.)

    Rows are grouped by which of their fields are NULL; each group is one fixed-layout numpy record array,
    so no Python object is made per row. Row order in the stream does not matter to COPY.
    """
    n = len(columns[0][0])
    values = [np.asarray(v, dtype=np.float64) if kind != "i8" or np.asarray(v).dtype.kind == "f" else v
              for v, kind in columns]
    nulls = [np.isnan(v) if v.dtype.kind == "f" and kind != "f8nan" else None
             for v, (_, kind) in zip(values, columns, strict=True)]
    pattern = np.zeros(n, dtype=np.int64)
    for bit, null in enumerate(nulls):
        if null is not None:
            pattern |= null.astype(np.int64) << bit
    chunks = [_COPY_HEADER]
    patterns = np.unique(pattern) if pattern.any() else np.zeros(1, dtype=np.int64)
    for p in patterns.tolist():
        rows = np.flatnonzero(pattern == p) if len(patterns) > 1 else slice(None)
        layout = [("count", ">i2")]
        for k, (_, kind) in enumerate(columns):
            layout.append((f"l{k}", ">i4"))
            if not p >> k & 1:
                layout.append((f"v{k}", ">f8" if kind in ("f8", "f8nan") else ">i8"))
        records = np.empty(n if isinstance(rows, slice) else len(rows), dtype=np.dtype(layout))
        records["count"] = len(columns)
        for k, ((_, kind), v) in enumerate(zip(columns, values, strict=True)):
            if p >> k & 1:
                records[f"l{k}"] = -1
                continue
            records[f"l{k}"] = 8
            v = v[rows]
            if kind == "ts":
                records[f"v{k}"] = pg_microseconds(v)
            elif kind == "i8" and v.dtype.kind == "f":
                records[f"v{k}"] = v.astype(np.int64)  # counters and bitmasks: exact integers, truncated as int()
            else:
                records[f"v{k}"] = v
        chunks.append(records.tobytes())
    chunks.append(_COPY_TRAILER)
    return b"".join(chunks)


def _column(payloads: list[dict], part: str, name: str, size: list[int]) -> np.ndarray:
    """One column over all payloads as float64 (None and absent columns: NaN)."""
    parts = []
    for p, n in zip(payloads, size, strict=True):
        values = p[part].get(name)
        parts.append(np.full(n, np.nan) if values is None else np.array(values, dtype=np.float64))
    return np.concatenate(parts) if parts else np.empty(0)


def write(payloads: list[dict]) -> tuple[int, int]:
    """Insert the samples of decoded buffer payloads; call inside the writer's transaction."""
    gpu_sizes = [len(p["gpu"]["gpu_id"]) for p in payloads]
    point_sizes = [len(p["points"]["series_id"]) for p in payloads]
    gpu_n, point_n = sum(gpu_sizes), sum(point_sizes)
    if connection.vendor != "postgresql":
        return _insert(payloads, gpu_n, point_n)
    with connection.cursor() as cursor:
        if gpu_n:
            ids = np.concatenate([np.array(p["gpu"]["gpu_id"], dtype=np.int64) for p in payloads])
            fields, columns = ["gpu_id", "time"], [(ids, "i8"), (_column(payloads, "gpu", "time", gpu_sizes), "ts")]
            for column in GPU_COLUMNS.values():
                if not any(column in p["gpu"] for p in payloads):
                    continue  # not sent by any: NULL by omission
                fields.append(column)
                columns.append((_column(payloads, "gpu", column, gpu_sizes), "i8" if column in INTEGER_COLUMNS
                                else "f8"))
            # Binary COPY of numpy-built rows: no Python object per row (bench/ingest.py measures it).
            _copy(cursor, GPU_TABLE, fields, binary_copy(columns))
        if point_n:
            ids = np.concatenate([np.array(p["points"]["series_id"], dtype=np.int64) for p in payloads])
            columns = [(ids, "i8"), (_column(payloads, "points", "time", point_sizes), "ts"),
                       (_column(payloads, "points", "value", point_sizes), "f8nan")]
            _copy(cursor, POINT_TABLE, ["series_id", "time", "value"], binary_copy(columns))
    return gpu_n, point_n


def _copy(cursor, table: str, fields: list[str], stream: bytes) -> None:
    """COPY the rows in; where one is already stored (a client sent its batch again after losing the answer,
    or two batches carry the same GPU and time), merge instead, as `_merge_sql` says. The fast path is plain
    COPY; the merge runs only for a stream that hit a stored key."""
    import psycopg

    columns = ", ".join(fields)
    try:
        # In a savepoint: a COPY that fails leaves the writer's transaction usable.
        with transaction.atomic(), cursor.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(stream)
        return
    except psycopg.errors.UniqueViolation:
        pass
    staging = f"{table}_staging"
    cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS {staging} (LIKE {table} INCLUDING DEFAULTS)")
    cursor.execute(f"TRUNCATE {staging}")
    with cursor.copy(f"COPY {staging} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(stream)
    cursor.execute(_merge_sql(table, staging, fields))
    cursor.execute(f"TRUNCATE {staging}")


def _upsert(table: str, fields: list[str]) -> str:
    """The ON CONFLICT clause that merges a row into `table` by key (PostgreSQL and SQLite): a value sent again
    replaces the stored one, a field not sent keeps it (GPU rows arrive field by field: NULL means "not in this
    batch"). Table and column names are this module's constants; no value is interpolated."""
    keep = "excluded.{0}" if table == POINT_TABLE else "COALESCE(excluded.{0}, {1}.{0})"
    return (f" ON CONFLICT ({', '.join(fields[:2])}) DO UPDATE SET "
            + ", ".join(f"{c} = {keep.format(c, table)}" for c in fields[2:]))


def _merge_sql(table: str, source: str, fields: list[str]) -> str:
    """Rows of `source` into `table` by key, as `_upsert` merges; within `source` the row added last wins a
    repeated key."""
    key, columns = ", ".join(fields[:2]), ", ".join(fields)
    return (f"INSERT INTO {table} ({columns}) SELECT DISTINCT ON ({key}) {columns} FROM {source} "
            f"ORDER BY {key}, ctid DESC" + _upsert(table, fields))


def _gpu_rows(gpu: dict, columns: list[str]):
    n = len(gpu["gpu_id"])
    series = [gpu.get(c, [None] * n) for c in columns]
    for i in range(n):
        values = []
        for column, values_of in zip(columns, series, strict=True):
            v = values_of[i]
            values.append(int(v) if v is not None and column in INTEGER_COLUMNS else v)
        yield (gpu["gpu_id"][i], to_datetime(gpu["time"][i]), *values)


def _insert(payloads: list[dict], gpu_n: int, point_n: int) -> tuple[int, int]:
    """SQLite (the embedded default): batched INSERTs."""
    columns = list(GPU_COLUMNS.values())
    gpu_fields = ["gpu_id", "time", *columns]
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        if gpu_n:
            cursor.executemany(
                f"INSERT INTO {GPU_TABLE} ({', '.join(gpu_fields)}) VALUES ({', '.join(['%s'] * len(gpu_fields))})"
                + _upsert(GPU_TABLE, gpu_fields),
                [(r[0], adapt(r[1]), *r[2:]) for p in payloads for r in _gpu_rows(p["gpu"], columns)],
            )
        if point_n:
            cursor.executemany(
                f"INSERT INTO {POINT_TABLE} (series_id, time, value) VALUES (%s, %s, %s)"
                + _upsert(POINT_TABLE, ["series_id", "time", "value"]),
                [(sid, adapt(to_datetime(t)), v) for p in payloads
                 for sid, t, v in zip(p["points"]["series_id"], p["points"]["time"], p["points"]["value"],
                                      strict=True)],
            )
    return gpu_n, point_n


def days_of(payloads: list[dict]) -> set:
    days = set()
    for p in payloads:
        for times in (p["gpu"]["time"], p["points"]["time"]):
            if len(times):
                days.update(np.unique(np.floor_divide(np.asarray(times, dtype=np.float64), 86400)).tolist())
    return {to_datetime(d * 86400).date() for d in days}
