"""Housekeeping: retention per resolution, the exactly-once ledger, the buffer's acknowledged entries."""

from __future__ import annotations

import time
from datetime import timedelta

from django.conf import settings
from django.db import connection

from telemetry import storage
from telemetry.buffer import get_buffer
from telemetry.models import AppliedEntry, GpuRollup, PointRollup, Resolution
from telemetry.storage import to_datetime

# Ledger rows only guard against redelivery of entries still in the buffer; a day is far beyond that.
LEDGER_DAYS = 1


def enforce_retention(now: float | None = None) -> dict[str, int]:
    now = time.time() if now is None else now
    day = timedelta(days=1).total_seconds()
    raw_cutoff = now - settings.TELEMETRY_RETENTION_RAW_DAYS * day
    removed = {}
    if connection.vendor == "postgresql":
        removed["raw_partitions"] = len(storage.drop_partitions_before(to_datetime(raw_cutoff).date()))
    else:
        with connection.cursor() as cursor:
            total = 0
            for table in (storage.GPU_TABLE, storage.POINT_TABLE):
                cursor.execute(f"DELETE FROM {table} WHERE time < %s",  # noqa: S608 — table names are constants
                               [connection.ops.adapt_datetimefield_value(to_datetime(raw_cutoff))])
                total += cursor.rowcount
            removed["raw_rows"] = total
    for resolution, days in ((Resolution.MINUTE, settings.TELEMETRY_RETENTION_1M_DAYS),
                             (Resolution.HOUR, settings.TELEMETRY_RETENTION_1H_DAYS)):
        cutoff = to_datetime(now - days * day)
        removed[f"rollup_{resolution.label}"] = (
            GpuRollup.objects.filter(resolution=resolution, bucket__lt=cutoff).delete()[0]
            + PointRollup.objects.filter(resolution=resolution, bucket__lt=cutoff).delete()[0]
        )
    removed["ledger"] = AppliedEntry.objects.filter(applied_at__lt=to_datetime(now - LEDGER_DAYS * day)).delete()[0]
    get_buffer().trim()
    return removed
