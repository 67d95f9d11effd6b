"""The columnar GPU format of `POST /api/v1/telemetry/samples` (`{"gpus": {...}}`) and the binary COPY writer.

Columns are checked vectorised, but every refusal must still name its item (`gpus.<field>[i]`), and the
same data sent as rows or as columns must end up as the same buffer payload and the same stored rows.
"""

import json
import random
import time
from datetime import UTC, datetime

import numpy as np
import pytest

from facility import facility_file
from facility.management.commands.seed_demo import DEMO_FILE
from telemetry import writer
from telemetry.buffer import get_buffer
from telemetry.ingest import decode, ingest
from telemetry.models import GpuSample, PointSample, UnknownEntity
from telemetry.parsers.json_batch import parse_json_batch
from telemetry.storage import pg_microseconds
from tests.telemetry_helpers import demo_gpus, make_source

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/api/v1/telemetry/samples"
TEMP, POWER, ENERGY, REASONS = (
    "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
    "DCGM_FI_DEV_CLOCKS_EVENT_REASONS",
)


@pytest.fixture
def demo(redis_client):
    redis_client.flushdb()
    get_buffer.cache_clear()
    facility_file.import_facility(facility_file.parse(DEMO_FILE.read_text()))
    yield
    get_buffer.cache_clear()


@pytest.fixture
def token(demo):
    return make_source("json")[1]


def post(client, body, token):
    data = body if isinstance(body, str) else json.dumps(body)
    return client.post(URL, data, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}")


def _stream_length(redis_client) -> int:
    return redis_client.xlen("fusedc:telemetry") if redis_client.exists("fusedc:telemetry") else 0


def test_columns_are_stored_with_nulls_where_not_sent(client, token):
    gpus = demo_gpus(3)
    now = time.time()
    body = {"gpus": {
        "uuid": [gpus[0].uuid, gpus[1].uuid, None],
        "hostname": [None, None, gpus[2].node.hostname],
        "gpu": [None, None, gpus[2].index],
        "timestamp": [now - 2, now - 2, now - 1.5],
        TEMP: [61.0, 62.5, 63],
        "DCGM_FI_DEV_BOARD_POWER_WATTS": [600.25, None, 700],  # an alias, and one GPU that did not send it
        ENERGY: [1_000_000, 2_000_000, 3_000_000],
        REASONS: [0, 4, 64],
        "DCGM_FI_DEV_FB_USED": [100, 200, 300],  # a DCGM field FuseDC does not store: counted
    }}
    response = post(client, body, token)
    assert response.status_code == 202, response.json()
    report = response.json()
    assert report["accepted"] == 3 + 2 + 3 + 3
    assert report["unknown_metrics"] == {"DCGM_FI_DEV_FB_USED": 3}
    assert writer.drain("test-writer", time_budget_s=30).gpu_rows == 3
    stored = {s.gpu_id: s for s in GpuSample.objects.all()}
    assert [stored[g.pk].gpu_temp for g in gpus] == [61.0, 62.5, 63.0]
    assert [stored[g.pk].power_usage for g in gpus] == [600.25, None, 700.0]
    assert [stored[g.pk].total_energy for g in gpus] == [1_000_000, 2_000_000, 3_000_000]
    assert [stored[g.pk].clocks_event_reasons for g in gpus] == [0, 4, 64]
    assert stored[gpus[0].pk].sm_clock is None
    assert stored[gpus[2].pk].time == datetime.fromtimestamp(now - 1.5, UTC)


def test_one_timestamp_for_all_rows_and_iso_text(client, token):
    gpus = demo_gpus(2)
    stamp = datetime.now(UTC).replace(microsecond=250_000)
    body = {"gpus": {"uuid": [g.uuid for g in gpus], "timestamp": stamp.isoformat().replace("+00:00", "Z"),
                     TEMP: [50, 51]}}
    assert post(client, body, token).status_code == 202
    writer.drain("test-writer", time_budget_s=30)
    assert set(GpuSample.objects.values_list("time", flat=True)) == {stamp}


def test_unknown_gpus_are_counted_and_the_rest_stored(client, token):
    gpu = demo_gpus(1)[0]
    body = {"gpus": {"uuid": [gpu.uuid, "GPU-not-in-inventory"], "timestamp": time.time(), TEMP: [60, 61],
                     POWER: [500, None]}}
    response = post(client, body, token)
    assert response.status_code == 202
    assert response.json()["unknown_entities"] == {"gpu:GPU-not-in-inventory": 1}
    assert response.json()["accepted"] == 2
    assert UnknownEntity.objects.get(key="GPU-not-in-inventory").samples == 1
    writer.drain("test-writer", time_budget_s=30)
    assert list(GpuSample.objects.values_list("gpu_id", flat=True)) == [gpu.pk]


def _body(n=3, **columns):
    gpus = demo_gpus(n)
    now = int(time.time())  # integer seconds: no digits in the body that a test's text edit could hit
    doc = {"uuid": [g.uuid for g in gpus], "timestamp": [now - 1] * n, TEMP: [60.0 + i for i in range(n)]}
    doc.update(columns)
    return {"gpus": doc}


@pytest.mark.parametrize(
    ("body", "item", "reason"),
    [
        (lambda: _body(**{TEMP: [60, "hot", 61]}), f"gpus.{TEMP}[1]", "must be a number"),
        (lambda: _body(**{TEMP: [True, 60, 61]}), f"gpus.{TEMP}[0]", "must be a number"),
        (lambda: json.dumps(_body()).replace("61.0", "NaN"), f"gpus.{TEMP}[1]", "NaN is not allowed"),
        (lambda: json.dumps(_body()).replace("62.0", "Infinity"), f"gpus.{TEMP}[2]", "inf is not allowed"),
        (lambda: _body(**{POWER: [500, 600]}), f"gpus.{POWER}", "has 2 values, the other columns 3"),
        (lambda: _body(**{"NO_SUCH_METRIC": [1, 2, 3]}), "gpus.NO_SUCH_METRIC", "unknown metric"),
        (lambda: _body(**{"supply_water_temperature_celsius": [1, 2, 3]}), "gpus.supply_water_temperature_celsius",
         "not a GPU metric"),
        (lambda: _body(**{TEMP: [60, 61, 1e9]}), f"gpus.{TEMP}[2]", "above the plausible maximum"),
        (lambda: _body(**{REASONS: [0, 4.5, 8]}), f"gpus.{REASONS}[1]", "is a bitmask"),
        (lambda: _body(**{"DCGM_FI_DEV_GPU_TEMP_CELSIUS": [1, 2, 3]}), "gpus.DCGM_FI_DEV_GPU_TEMP_CELSIUS",
         "same metric as gpus.DCGM_FI_DEV_GPU_TEMP"),
        (lambda: _body(uuid=["GPU-a", 7, "GPU-c"]), "gpus.uuid[1]", "uuid must be text"),
        (lambda: _body(timestamp=[1, "yesterday", 2]), "gpus.timestamp[1]", "Invalid isoformat"),
        (lambda: _body(timestamp=[time.time() - 30 * 86400] * 3), "gpus.timestamp[0]", "in the past"),
        (lambda: _body(timestamp=time.time() + 3600), "gpus.timestamp", "in the future"),
        (lambda: {"gpus": {"uuid": ["GPU-a"], TEMP: [60]}}, "gpus.timestamp", "missing"),
        (lambda: {"gpus": [1, 2]}, "gpus", "expected an object"),
        (lambda: {"gpus": {"timestamp": [1.0], TEMP: [60]}}, "gpus", "needs uuid, or hostname and gpu"),
    ],
)
def test_bad_columns_are_refused_naming_the_item(client, token, redis_client, body, item, reason):
    response = post(client, body(), token)
    assert response.status_code == 400, response.content
    errors = response.json()["errors"]
    assert any(e["item"] == item and reason in e["reason"] for e in errors), errors
    assert _stream_length(redis_client) == 0


def test_a_gpu_twice_at_one_time_merges_fields_and_refuses_a_field_twice(client, token):
    gpu = demo_gpus(1)[0]
    now = time.time()
    merged = {"gpus": {"uuid": [gpu.uuid, gpu.uuid], "timestamp": now - 1, TEMP: [60, None], POWER: [None, 500]}}
    assert post(client, merged, token).status_code == 202
    writer.drain("test-writer", time_budget_s=30)
    assert list(GpuSample.objects.values_list("gpu_temp", "power_usage")) == [(60.0, 500.0)]
    twice = {"gpus": {"uuid": [gpu.uuid, gpu.uuid], "timestamp": now - 2, TEMP: [60, 61]}}
    response = post(client, twice, token)
    assert response.status_code == 400
    assert response.json()["errors"][0]["item"] == f"gpus.{TEMP}[1]"
    assert "duplicate sample" in response.json()["errors"][0]["reason"]


def test_a_counter_going_backwards_names_the_later_row(client, token):
    gpu = demo_gpus(1)[0]
    now = time.time()
    body = {"gpus": {"uuid": [gpu.uuid, gpu.uuid], "timestamp": [now - 1, now - 2], ENERGY: [4000, 5000]}}
    response = post(client, body, token)
    assert response.status_code == 400
    reason = f"counter {ENERGY} goes backwards within the batch (5000 → 4000)"
    assert response.json()["errors"] == [{"item": f"gpus.{ENERGY}[0]", "reason": reason}]


def test_rows_and_columns_give_the_same_payload(demo):
    source, _ = make_source("json")
    gpus = demo_gpus(8)
    now = time.time()
    rng = random.Random(7)
    values = {(g.uuid, m): (None if rng.random() < 0.2 else float(rng.randint(1, 90)))
              for g in gpus for m in (TEMP, POWER, ENERGY, REASONS)}
    rows = {"samples": [{"metric": m, "uuid": u, "timestamp": now - 1, "value": v}
                        for (u, m), v in values.items() if v is not None]}
    columns = {"gpus": {"uuid": [g.uuid for g in gpus], "timestamp": now - 1,
                        **{m: [values[(g.uuid, m)] for g in gpus] for m in (TEMP, POWER, ENERGY, REASONS)}}}
    a = ingest(source, parse_json_batch(rows))
    b = ingest(source, parse_json_batch(columns))
    assert a.accepted == b.accepted == sum(v is not None for v in values.values())
    entries = dict(get_buffer().claim("test", 10))
    assert decode(entries[a.entry_id])["gpu"] == decode(entries[b.entry_id])["gpu"]


def test_cooling_rows_beside_gpu_columns_and_gpu_rows_beside_columns(client, token):
    gpus = demo_gpus(2)
    now = time.time()
    body = {
        "samples": [{"metric": "supply_water_temperature_celsius", "cooling_unit": "cdu-b1", "point": "secondary",
                     "timestamp": now - 1, "value": 30.5}],
        "gpus": {"uuid": [g.uuid for g in gpus], "timestamp": now - 1, TEMP: [60, 61]},
    }
    assert post(client, body, token).json()["accepted"] == 3
    both = {"samples": [{"metric": TEMP, "uuid": gpus[0].uuid, "timestamp": now - 2, "value": 59.0}],
            "gpus": {"uuid": [gpus[0].uuid], "timestamp": now - 2, TEMP: [58.0]}}
    response = post(client, both, token)
    assert response.status_code == 400 and response.json()["errors"][0]["item"] == f"gpus.{TEMP}[0]"
    writer.drain("test-writer", time_budget_s=30)
    assert GpuSample.objects.count() == 2 and PointSample.objects.get().value == 30.5


def test_nan_outside_columns_is_still_a_json_error(client, token):
    gpu = demo_gpus(1)[0]
    body = json.dumps({"samples": [{"metric": TEMP, "uuid": gpu.uuid, "timestamp": time.time(), "value": 1.5}]})
    response = post(client, body.replace("1.5", "NaN"), token)
    assert response.status_code == 400 and "Out of range float values" in response.content.decode()


def test_binary_timestamps_round_like_datetime():
    rng = np.random.default_rng(3)
    times = np.concatenate([1.7e9 + rng.random(2000) * 1e8, 1.7e9 + rng.integers(0, 10**6, 500) / 1e3,
                            np.array([1764262800.0000005, 1764262800.9999996, 1764262800.5])])
    expected = [(datetime.fromtimestamp(t, UTC) - datetime(2000, 1, 1, tzinfo=UTC)) for t in times.tolist()]
    micros = [d.days * 86_400_000_000 + d.seconds * 1_000_000 + d.microseconds for d in expected]
    assert pg_microseconds(times).tolist() == micros
