"""Writers move buffer entries into the database, exactly once.

Each batch of entries is stored in one transaction together with its entry ids (`AppliedEntry`); the
entries are acknowledged in the buffer only after the commit. A writer killed before the commit leaves its
entries pending, and another writer reclaims them; one killed after the commit but before the
acknowledgement leaves entries whose ids are already in the ledger, so they are acknowledged and skipped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from django.db import IntegrityError, transaction

from telemetry import rollups, storage
from telemetry.buffer import get_buffer
from telemetry.ingest import decode
from telemetry.models import AppliedEntry

log = logging.getLogger(__name__)


@dataclass
class DrainReport:
    entries: int = 0
    skipped_already_applied: int = 0
    gpu_rows: int = 0
    point_rows: int = 0
    seconds: float = 0.0


def store(entries: list[tuple[str, bytes]], report: DrainReport) -> None:
    """Store the entries not yet applied, in one transaction with their ledger rows."""
    payloads = {eid: decode(payload) for eid, payload in entries}
    storage.ensure_partitions(storage.days_of(list(payloads.values())))
    with transaction.atomic():
        done = set(AppliedEntry.objects.filter(entry_id__in=list(payloads)).values_list("entry_id", flat=True))
        fresh = [eid for eid in payloads if eid not in done]
        # Ledger first: a second writer holding the same reclaimed entries blocks here, then fails cleanly.
        AppliedEntry.objects.bulk_create([AppliedEntry(entry_id=eid) for eid in fresh])
        gpu_rows, point_rows = storage.write([payloads[eid] for eid in fresh])
        rollups.mark_late_samples([payloads[eid] for eid in fresh])
    report.skipped_already_applied += len(done)
    report.gpu_rows += gpu_rows
    report.point_rows += point_rows


def drain(consumer: str, *, batch_entries: int = 50, time_budget_s: float = 5.0) -> DrainReport:
    """Store whatever the buffer holds, batch by batch, until it is empty or the time budget is spent."""
    buffer = get_buffer()
    report = DrainReport()
    started = time.monotonic()
    while time.monotonic() - started < time_budget_s:
        entries = buffer.claim(consumer, batch_entries)
        if not entries:
            break
        try:
            store(entries, report)
        except IntegrityError:
            # Another writer applied some of these concurrently; its commit is in the ledger now.
            log.info("entries applied concurrently; re-checking the ledger")
            store(entries, report)
        buffer.ack([eid for eid, _ in entries])
        report.entries += len(entries)
    report.seconds = time.monotonic() - started
    return report
