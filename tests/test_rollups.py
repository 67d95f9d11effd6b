"""Rollups (1 min from raw, 1 h from minutes), late samples, retention, and queries that use them."""

import json
import math
import os
import subprocess
import sys
import time

import pytest
from django.test import override_settings

from facility import facility_file
from facility.management.commands.seed_demo import DEMO_FILE
from telemetry import maintenance, rollups, writer
from telemetry.buffer import get_buffer
from telemetry.ingest import ingest
from telemetry.models import GpuRollup, GpuSample, PointRollup, RollupState
from telemetry.parsers.json_batch import parse_json_batch
from tests.conftest import REPO
from tests.telemetry_helpers import demo_gpus, make_source

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def source(redis_client):
    redis_client.flushdb()
    get_buffer.cache_clear()
    facility_file.import_facility(facility_file.parse(DEMO_FILE.read_text()))
    yield make_source("json")[0]
    get_buffer.cache_clear()


def _send(source, gpu, samples, now=None):
    """samples: (timestamp, temperature); also a CDU flow point at the same times."""
    body = {"samples": [
        *({"metric": "DCGM_FI_DEV_GPU_TEMP", "uuid": gpu.uuid, "timestamp": t, "value": v} for t, v in samples),
        *({"metric": "flow_liters_per_minute", "cooling_unit": "cdu-b1", "timestamp": t, "value": 2 * v}
          for t, v in samples),
    ]}
    ingest(source, parse_json_batch(body), now=now)
    writer.drain("test", time_budget_s=30)


def _minute_avgs(gpu):
    return {r.bucket.timestamp(): (r.avg_gpu_temp, r.min_gpu_temp, r.max_gpu_temp, r.count)
            for r in GpuRollup.objects.filter(resolution=60, gpu=gpu).order_by("bucket")}


def test_minutes_then_hours_then_late_samples(source):
    gpu = demo_gpus(1)[0]
    hour = math.floor(time.time() / 3600) * 3600 - 2 * 3600  # two hours ago, on the hour
    # 10 s samples over 3 minutes straddling nothing, values 40..57
    samples = [(hour + 10 * i, 40.0 + i) for i in range(18)]
    _send(source, gpu, samples)
    rollups.roll_up(now=hour + 3 * 3600)
    minutes = _minute_avgs(gpu)
    assert minutes == {
        hour: (42.5, 40.0, 45.0, 6), hour + 60: (48.5, 46.0, 51.0, 6), hour + 120: (54.5, 52.0, 57.0, 6),
    }
    hourly = GpuRollup.objects.get(resolution=3600, gpu=gpu, bucket__gte=rollups.to_datetime(hour))
    assert (hourly.avg_gpu_temp, hourly.min_gpu_temp, hourly.max_gpu_temp, hourly.count) == (48.5, 40.0, 57.0, 18)
    point = PointRollup.objects.get(resolution=3600)
    assert (point.avg, point.count) == (97.0, 18)
    # A late sample for the first minute: marked dirty by the writer, recomputed by the next run.
    _send(source, gpu, [(hour + 5, 100.0)])
    rollups.roll_up(now=hour + 3 * 3600)
    assert _minute_avgs(gpu)[hour] == pytest.approx(((42.5 * 6 + 100) / 7, 40.0, 100.0, 7))
    hourly.refresh_from_db()
    assert hourly.count == 19 and hourly.max_gpu_temp == 100.0


def test_series_uses_rollups_and_raw_tail_consistently(source, role_client):
    gpu = demo_gpus(1)[0]
    now = math.floor(time.time() / 60) * 60  # minute-aligned, so every bucket holds one 12-sample period
    start = now - 1800
    samples = [(start + 5 * i, 50.0 + (i % 12)) for i in range(360)]
    _send(source, gpu, samples, now=now)
    rollups.roll_up(now=now - 600)  # rollups cover the first 20 minutes; the rest is only raw
    assert RollupState.objects.get(resolution=60).done_until.timestamp() <= now - 600
    body = role_client("viewer").get("/api/v1/telemetry/series", {
        "metrics": "DCGM_FI_DEV_GPU_TEMP", "gpus": gpu.uuid, "start": start, "end": now, "max_points": 30,
    }).json()
    assert body["bucket_seconds"] == 60
    series = body["series"][0]
    assert len(series["v"]) == 30 and all(v == pytest.approx(55.5) for v in series["v"])


def test_retention_drops_old_data(source):
    gpu = demo_gpus(1)[0]
    old = time.time() - 3 * 86400
    _send(source, gpu, [(old, 50.0), (time.time() - 60, 51.0)])
    rollups.roll_up()
    with override_settings(TELEMETRY_RETENTION_RAW_DAYS=2, TELEMETRY_RETENTION_1M_DAYS=2):
        removed = maintenance.enforce_retention()
    assert list(GpuSample.objects.values_list("gpu_temp", flat=True)) == [51.0]
    assert removed["rollup_1 min"] >= 1
    assert not GpuRollup.objects.filter(resolution=60, bucket__lt=rollups.to_datetime(old + 3600)).exists()


def test_embedded_default_runs_the_same_pipeline(tmp_path):
    """SQLite, no Redis: twin → parsers → in-process buffer → writer → rollups → query."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(DJANGO_SETTINGS_MODULE="config.settings.local", FUSEDC_VAR_DIR=str(tmp_path))

    def manage(*args):
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    manage("migrate", "-v", "0")
    manage("seed_demo", "--no-users")
    manage("twin", "run", "--backfill-minutes", "6", "--duration", "300", "--interval", "10", "--speed", "1000")
    assert "bucket" in manage("telemetry", "rollup")
    out = manage("shell", "-c", (
        "import json, time\n"
        "from facility.models import GPU\n"
        "from telemetry import query\n"
        "from telemetry.models import GpuRollup, GpuSample\n"
        "g = GPU.objects.select_related('node').first()\n"
        "s = query.gpu_series([g], ['DCGM_FI_DEV_GPU_TEMP'], time.time() - 600, time.time(), 5)[0]\n"
        "print(json.dumps({'raw': GpuSample.objects.count(), 'rollups': GpuRollup.objects.count(), 'v': s.v}))\n"
    ))
    result = json.loads(out.strip().splitlines()[-1])
    assert result["raw"] == 30 * 256 and result["rollups"] >= 256
    assert result["v"] and all(20 < v < 90 for v in result["v"])


def test_a_late_sample_written_during_a_roll_up_is_marked_for_the_next(transactional_db):
    """A roll-up holds the watermark FOR UPDATE while it aggregates a snapshot; a writer committing a late
    sample then must wait for it and judge by the new watermark, else the sample is neither rolled up nor
    marked dirty and the rollups miss it for good."""
    import threading
    from datetime import UTC, datetime

    import psycopg
    from django.db import connection, transaction

    from telemetry.models import DirtyBucket

    t0 = 1_790_000_040.0  # on a minute boundary
    RollupState.objects.create(resolution=rollups.MINUTE, done_until=datetime.fromtimestamp(t0, UTC))
    db = connection.settings_dict
    roll_up = psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"])
    roll_up.execute("SELECT done_until FROM telemetry_rollupstate WHERE resolution = 60 FOR UPDATE")
    roll_up.execute("UPDATE telemetry_rollupstate SET done_until = to_timestamp(%s) WHERE resolution = 60",
                    [t0 + 600])
    late = {"gpu": {"gpu_id": [1], "time": [t0 + 300]}, "points": {"series_id": [], "time": [], "value": []}}

    def writer_transaction():
        try:
            with transaction.atomic():
                rollups.mark_late_samples([late])
        finally:
            connection.close()

    writing = threading.Thread(target=writer_transaction)
    try:
        writing.start()
        time.sleep(1.0)
        waited = writing.is_alive()  # for the roll-up's watermark
    finally:
        roll_up.commit()  # whatever happened: a lock left behind would hang the database flush
        roll_up.close()
    writing.join(10)
    assert waited
    assert [b.timestamp() for b in DirtyBucket.objects.values_list("bucket", flat=True)] == [t0 + 300]
