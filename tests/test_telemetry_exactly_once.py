"""At-least-once delivery, exactly-once storage: writers killed at the worst moments lose and double nothing."""

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import psycopg
import pytest
from django.db import connection

from facility import facility_file
from facility.management.commands.seed_demo import DEMO_FILE
from telemetry import storage, writer
from telemetry.buffer import GROUP, STREAM, get_buffer
from telemetry.ingest import ingest
from telemetry.models import AppliedEntry, GpuSample
from telemetry.parsers.prometheus import parse_exposition
from tests.conftest import REPO, _worker_env
from tests.telemetry_helpers import dcgm_scrape, demo_gpus, make_source

pytestmark = pytest.mark.django_db(transaction=True)
BATCHES = 12


@pytest.fixture
def buffered(redis_client, settings):
    """Twelve dcgm-exporter scrapes of 16 GPUs, accepted into the Redis stream and not yet stored."""
    settings.TELEMETRY_RECLAIM_IDLE_MS = 1000
    redis_client.flushdb()
    get_buffer.cache_clear()
    facility_file.import_facility(facility_file.parse(DEMO_FILE.read_text()))
    source, _ = make_source("dcgm")
    gpus = demo_gpus(16)
    now_ms = int(time.time() * 1000)
    for i in range(BATCHES):
        text = dcgm_scrape(gpus, ts_ms=now_ms - (BATCHES - i) * 1000, energy=1000 + i)
        ingest(source, parse_exposition(text, default_timestamp=time.time()))
    storage.ensure_partitions({datetime.fromtimestamp(now_ms / 1000 - BATCHES, UTC).date(),
                               datetime.now(UTC).date()})
    yield BATCHES * len(gpus)
    get_buffer.cache_clear()


def _drain_process(extra_env=None):
    env = _worker_env(connection.settings_dict["NAME"]) | {"TELEMETRY_RECLAIM_IDLE_MS": "1000"} | (extra_env or {})
    return subprocess.Popen(
        [sys.executable, "manage.py", "telemetry", "drain", "--seconds", "60", "--consumer", f"w{time.time_ns()}"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait_for_lock_wait(conninfo: str, timeout: float = 30):
    with psycopg.connect(conninfo, autocommit=True) as watcher:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = watcher.execute(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query ILIKE 'COPY%%'"
            ).fetchone()
            if row:
                return row[0]
            time.sleep(0.05)
    raise AssertionError("the writer never reached its COPY")


def _pending(redis_client) -> int:
    return redis_client.xpending(STREAM, GROUP)["pending"]


def test_writer_killed_mid_batch(buffered, redis_client):
    db = connection.settings_dict
    conninfo = f"host={db['HOST']} port={db['PORT']} user={db['USER']} dbname={db['NAME']}"
    today = f"{storage.GPU_TABLE}_p{datetime.now(UTC):%Y%m%d}"
    with psycopg.connect(conninfo) as blocker:
        # Hold the partition so the writer stops inside its transaction: ledger written, COPY waiting.
        blocker.execute(f"LOCK TABLE {today} IN EXCLUSIVE MODE")
        proc = _drain_process()
        _wait_for_lock_wait(conninfo)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        blocker.rollback()
    assert GpuSample.objects.count() == 0 and AppliedEntry.objects.count() == 0
    assert _pending(redis_client) > 0  # claimed by the dead writer, not acknowledged
    time.sleep(1.2)  # past TELEMETRY_RECLAIM_IDLE_MS: the next writer reclaims them
    proc = _drain_process()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert GpuSample.objects.count() == buffered
    assert AppliedEntry.objects.count() == BATCHES
    assert _pending(redis_client) == 0
    energies = sorted(GpuSample.objects.filter(gpu=demo_gpus(1)[0]).values_list("total_energy", flat=True))
    assert energies == [1000 + i for i in range(BATCHES)]


def test_writer_dying_after_commit_before_ack_stores_nothing_twice(buffered, redis_client):
    buffer = get_buffer()
    entries = buffer.claim("doomed", BATCHES)
    writer.store(entries, writer.DrainReport())  # committed; the process "dies" before buffer.ack
    assert GpuSample.objects.count() == buffered and _pending(redis_client) == BATCHES
    time.sleep(1.2)
    report = writer.drain("survivor", time_budget_s=30)
    assert report.skipped_already_applied == BATCHES and report.gpu_rows == 0
    assert GpuSample.objects.count() == buffered and _pending(redis_client) == 0


def test_celery_writer_task_drains_the_buffer(buffered, celery_worker):
    from telemetry.tasks import drain_buffer

    result = drain_buffer.apply_async(queue="ingest").get(timeout=60)
    assert result["gpu_rows"] == buffered
    assert GpuSample.objects.count() == buffered


def test_buffer_survives_redis_losing_its_keys(redis_client, transactional_db):
    """A Redis that restarts empty (no persistence) or loses the stream: the buffer re-creates its consumer
    group and nothing appended afterwards is skipped (writers used to fail forever on NOGROUP)."""
    from telemetry.buffer import get_buffer

    get_buffer.cache_clear()
    buffer = get_buffer()
    buffer.append(b"before")
    assert [p for _, p in buffer.claim("w", 10)] == [b"before"]
    redis_client.flushdb()  # as a restart without persistence would
    assert buffer.depth()["length"] == 0
    buffer.append(b"after")
    assert [p for _, p in buffer.claim("w", 10)] == [b"after"]
    redis_client.flushdb()
    buffer.append(b"again")  # xadd re-creates the stream but not the group
    assert buffer.depth()["lag"] in (0, 1) and [p for _, p in buffer.claim("w", 10)] == [b"again"]
    get_buffer.cache_clear()
