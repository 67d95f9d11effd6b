"""Telemetry end to end on real PostgreSQL and Redis: ingest paths, bad input, buffer, writer, queries."""

import json
import math
import time
from pathlib import Path

import pytest
from django.test import override_settings

from facility import facility_file
from facility.management.commands.seed_demo import DEMO_FILE
from facility.models import GPU, CoolingUnit, Hall, Node, Rack, Site
from telemetry import writer
from telemetry.buffer import get_buffer
from telemetry.models import GpuSample, PointSample, Source, UnknownEntity
from telemetry.parsers.prometheus import parse_exposition
from telemetry.schema import GPU_COLUMNS
from tests.conftest import SHARED_DATA
from tests.telemetry_helpers import dcgm_scrape, demo_gpus, make_source

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def demo(redis_client):
    redis_client.flushdb()
    get_buffer.cache_clear()
    facility_file.import_facility(facility_file.parse(DEMO_FILE.read_text()))
    yield Site.objects.get(slug="demo")
    get_buffer.cache_clear()


@pytest.fixture
def source(demo):
    return make_source("dcgm")


def post(client, path, body, token, content_type="application/json"):
    data = json.dumps(body) if content_type == "application/json" and not isinstance(body, str | bytes) else body
    return client.post(path, data, content_type=content_type, HTTP_AUTHORIZATION=f"Bearer {token}")


def drain():
    return writer.drain("test-writer", time_budget_s=30)


def test_json_batch_is_stored_and_queried(client, source, role_client):
    _, token = source
    gpu = demo_gpus(1)[0]
    now = time.time()
    samples = [
        {"metric": "DCGM_FI_DEV_GPU_TEMP", "uuid": gpu.uuid, "timestamp": now - 2, "value": 61.0},
        {"metric": "DCGM_FI_DEV_GPU_TEMP_CELSIUS", "hostname": gpu.node.hostname, "gpu": gpu.index,
         "timestamp": now - 1, "value": 63.0},
        {"metric": "supply_water_temperature_celsius", "cooling_unit": "cdu-b1", "point": "secondary",
         "timestamp": now - 1, "value": 30.5},
    ]
    response = post(client, "/api/v1/telemetry/samples", {"samples": samples}, token)
    assert response.status_code == 202, response.json()
    assert response.json()["accepted"] == 3
    report = drain()
    assert (report.gpu_rows, report.point_rows) == (2, 1)
    assert GpuSample.objects.filter(gpu=gpu).count() == 2
    viewer = role_client("viewer")
    body = viewer.get("/api/v1/telemetry/series", {
        "metrics": "DCGM_FI_DEV_GPU_TEMP,supply_water_temperature_celsius", "gpus": gpu.uuid,
        "cooling_units": "cdu-b1", "start": now - 60, "end": now + 1, "max_points": 100,
    }).json()
    temps = next(s for s in body["series"] if s["metric"] == "DCGM_FI_DEV_GPU_TEMP")
    assert temps["v"] == [61.0, 63.0] and temps["entity"]["uuid"] == gpu.uuid
    water = next(s for s in body["series"] if s["metric"] == "supply_water_temperature_celsius")
    assert water["v"] == [30.5] and water["entity"] == {"cooling_unit": "cdu-b1", "point": "secondary"}


def test_prometheus_push_with_label_quirks(client, source, role_client):
    _, token = source
    gpus = demo_gpus(16)
    scrape = dcgm_scrape(gpus[:8], temp=55.0) + dcgm_scrape(gpus[8:], temp=57.0, host_label="hostname")
    response = post(client, "/api/v1/telemetry/prometheus", scrape, token, "text/plain")
    assert response.status_code == 202, response.json()
    assert response.json()["accepted"] == 16 * 4
    drain()
    latest = role_client("viewer").get("/api/v1/telemetry/latest", {"metrics": "DCGM_FI_DEV_GPU_TEMP"}).json()
    by_uuid = dict(zip(latest["gpus"]["uuid"], latest["gpus"]["DCGM_FI_DEV_GPU_TEMP"], strict=True))
    assert by_uuid[gpus[0].uuid] == 55.0 and by_uuid[gpus[15].uuid] == 57.0
    assert len(by_uuid) == 16


def _facility_for_scrape(site: Site, text: str):
    """Put the GPUs a real scrape reports into the inventory, as an admin would map them."""
    hall = Hall.objects.create(site=site, name="scraped", cooling_type="air")
    rack = Rack.objects.create(hall=hall, name="scraped-r1")
    for sample in parse_exposition(text, default_timestamp=time.time()).samples:
        e = sample.entity
        node, _ = Node.objects.get_or_create(hostname=e.hostname or "unnamed", defaults={"rack": rack})
        GPU.objects.get_or_create(uuid=e.uuid, defaults={"node": node, "index": e.gpu})


@pytest.mark.parametrize("name", ["example-scrape-L4-default-counters.prom", "example-scrape-T4-gardener.prom"])
def test_real_dcgm_exporter_scrapes_round_trip(client, source, role_client, name):
    text = (SHARED_DATA / "dcgm" / name).read_text()
    _facility_for_scrape(source[0].site, text)
    response = post(client, "/api/v1/telemetry/prometheus", text, source[1], "text/plain")
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["accepted"] > 0 and body["unknown_entities"] == {}
    drain()
    samples = [s for s in parse_exposition(text, default_timestamp=time.time()).samples if s.metric in GPU_COLUMNS]
    metric = samples[0].metric  # scrapes differ in which fields they carry
    expected = {s.entity.uuid: s.value for s in samples if s.metric == metric}
    latest = role_client("viewer").get(
        "/api/v1/telemetry/latest", {"metrics": metric, "within_seconds": 600}
    ).json()
    got = dict(zip(latest["gpus"]["uuid"], latest["gpus"][metric], strict=True))
    assert got == expected and expected


def test_redfish_cdu_resources_round_trip(client, demo, role_client):
    _, token = make_source("redfish")
    folder = SHARED_DATA / "redfish"
    cdu = json.loads((folder / "public-cooling-unit__ThermalEquipment__CDUs__1.json").read_text())
    connector = json.loads(
        (folder / "public-cooling-unit__ThermalEquipment__CDUs__1__PrimaryCoolantConnectors__1.json").read_text()
    )
    response = post(client, "/api/v1/telemetry/redfish?cooling_unit=cdu-b1", [cdu, connector], token)
    assert response.status_code == 202, response.json()
    assert response.json()["accepted"] > 0
    drain()
    points = role_client("viewer").get("/api/v1/telemetry/latest", {"within_seconds": 600}).json()["points"]
    assert points and all(p["cooling_unit"] == "cdu-b1" for p in points)
    assert PointSample.objects.count() == response.json()["accepted"]


def test_unknown_entities_are_counted_and_listed(client, source):
    source_obj, token = source
    text = dcgm_scrape(demo_gpus(1)).replace(demo_gpus(1)[0].uuid, "GPU-not-in-inventory").replace(
        demo_gpus(1)[0].node.hostname, "stranger"
    )
    response = post(client, "/api/v1/telemetry/prometheus", text, token, "text/plain")
    assert response.status_code == 202
    assert response.json()["unknown_entities"] == {"gpu:GPU-not-in-inventory": 4}
    post(client, "/api/v1/telemetry/prometheus", text, token, "text/plain")
    entry = UnknownEntity.objects.get(source=source_obj)
    assert (entry.kind, entry.key, entry.samples) == ("gpu", "GPU-not-in-inventory", 8)


def _stream_length(redis_client):
    return redis_client.xlen("fusedc:telemetry") if redis_client.exists("fusedc:telemetry") else 0


@pytest.mark.parametrize(
    ("body", "content_type", "status", "where"),
    [
        ("{not json", "application/json", 400, "JSON parse error"),
        ({"samples": [{"metric": "DCGM_FI_DEV_GPU_TEMP", "uuid": "U", "timestamp": 1, "value": "hot"}]},
         "application/json", 400, "samples[0].value"),
        ({"samples": [{"metric": "NO_SUCH_METRIC", "uuid": "U", "timestamp": 1, "value": 1}]},
         "application/json", 400, "samples[0].metric"),
        ('{"samples": [{"metric": "DCGM_FI_DEV_GPU_TEMP", "uuid": "U", "timestamp": 1, "value": NaN}]}',
         "application/json", 400, "Out of range float values"),
        ("DCGM_FI_DEV_GPU_TEMP{gpu=\"0\" 61\n", "text/plain", 400, '"line":1'),
        ("DCGM_FI_DEV_GPU_TEMP{gpu=\"0\",UUID=\"U\"} +Inf\n", "text/plain", 400, '"line":1'),
        ("anything", "application/xml", 415, "Unsupported media type"),
    ],
)
def test_bad_input_is_refused_with_where_and_why(client, source, redis_client, body, content_type, status, where):
    path = "/api/v1/telemetry/prometheus" if content_type in ("text/plain", "application/xml") else \
        "/api/v1/telemetry/samples"
    before = _stream_length(redis_client)
    response = post(client, path, body, source[1], content_type)
    assert response.status_code == status, response.content
    assert where in response.content.decode()
    assert _stream_length(redis_client) == before


def _json_samples(gpu, *values_and_offsets, metric="DCGM_FI_DEV_GPU_TEMP"):
    now = time.time()
    return {"samples": [{"metric": metric, "uuid": gpu.uuid, "timestamp": now + off, "value": v}
                        for v, off in values_and_offsets]}


@pytest.mark.parametrize(
    ("samples", "reason"),
    [
        (((60.0, -30 * 86400),), "in the past"),
        (((60.0, 3600),), "in the future"),
        (((60.0, -1), (61.0, -1)), "duplicate sample"),
    ],
)
def test_time_and_duplicate_rules(client, source, redis_client, samples, reason):
    gpu = demo_gpus(1)[0]
    response = post(client, "/api/v1/telemetry/samples", _json_samples(gpu, *samples), source[1])
    assert response.status_code == 400
    assert reason in json.dumps(response.json()) and response.json()["errors"][0]["item"].startswith("samples[")
    assert _stream_length(redis_client) == 0


def test_counter_going_backwards_names_the_item(client, source):
    gpu = demo_gpus(1)[0]
    body = _json_samples(gpu, (5000, -2), (4000, -1), metric="DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION")
    response = post(client, "/api/v1/telemetry/samples", body, source[1])
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"item": "samples[1]", "reason": "counter DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION goes backwards within "
                                         "the batch (5000 → 4000)"}
    ]


def test_one_bad_item_rejects_the_whole_batch_and_keeps_earlier_data(client, source):
    gpu = demo_gpus(1)[0]
    assert post(client, "/api/v1/telemetry/samples", _json_samples(gpu, (60.0, -5)), source[1]).status_code == 202
    bad = _json_samples(gpu, (61.0, -4), (1e9, -3))
    response = post(client, "/api/v1/telemetry/samples", bad, source[1])
    assert response.status_code == 400 and response.json()["errors"][0]["item"] == "samples[1].value"
    drain()
    assert list(GpuSample.objects.values_list("gpu_temp", flat=True)) == [60.0]


def test_oversized_body_is_413(client, source):
    with override_settings(TELEMETRY_MAX_BODY_BYTES=1000):
        response = post(client, "/api/v1/telemetry/prometheus", "x" * 2000, source[1], "text/plain")
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"


def test_tokens_authenticate_and_revoke(client, source):
    source_obj, token = source
    gpu = demo_gpus(1)[0]
    body = _json_samples(gpu, (60.0, -1))
    assert client.post("/api/v1/telemetry/samples", body, content_type="application/json").status_code == 401
    assert post(client, "/api/v1/telemetry/samples", body, token[:-2] + "xx").status_code == 401
    assert Source.objects.get(pk=source_obj.pk).token_hash != token  # stored hashed
    source_obj.revoke()
    assert post(client, "/api/v1/telemetry/samples", body, token).status_code == 401


def test_per_token_rate_limit(client, demo):
    from django.core.cache import cache

    cache.clear()
    _, token = make_source("json", rate_limit_per_minute=2)
    gpu = demo_gpus(1)[0]
    codes = [post(client, "/api/v1/telemetry/samples", _json_samples(gpu, (60.0, -i - 1)), token).status_code
             for i in range(3)]
    assert codes == [202, 202, 429]


def test_redis_down_is_503_with_retry_after_and_nothing_lost(client, source):
    gpu = demo_gpus(1)[0]
    assert post(client, "/api/v1/telemetry/samples", _json_samples(gpu, (60.0, -5)), source[1]).status_code == 202
    from config.redis_client import get_redis

    get_buffer.cache_clear()
    get_redis.cache_clear()
    try:
        with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
            response = post(client, "/api/v1/telemetry/samples", _json_samples(gpu, (61.0, -4)), source[1])
    finally:
        get_buffer.cache_clear()
        get_redis.cache_clear()
    assert response.status_code == 503 and response["Retry-After"] == "5"
    drain()
    assert list(GpuSample.objects.values_list("gpu_temp", flat=True)) == [60.0]


def test_series_downsamples_to_max_points(client, source, role_client):
    gpu = demo_gpus(1)[0]
    now = math.floor(time.time())
    body = {"samples": [{"metric": "DCGM_FI_DEV_GPU_TEMP", "uuid": gpu.uuid, "timestamp": now - 600 + i,
                         "value": 40.0 + (i % 10)} for i in range(600)]}
    assert post(client, "/api/v1/telemetry/samples", body, source[1]).status_code == 202
    drain()
    series = role_client("viewer").get("/api/v1/telemetry/series", {
        "metrics": "DCGM_FI_DEV_GPU_TEMP", "gpus": f"{gpu.node.hostname}/{gpu.index}",
        "start": now - 600, "end": now, "max_points": 60,
    }).json()["series"][0]
    assert len(series["v"]) <= 61 and all(v == pytest.approx(44.5) for v in series["v"][1:-1])


def test_query_errors_name_the_parameter(role_client, demo):
    client = role_client("viewer")
    response = client.get("/api/v1/telemetry/series", {"metrics": "NOPE", "start": "yesterday"})
    assert response.status_code == 400
    items = {e["item"] for e in response.json()["errors"]}
    assert items == {"metrics", "start"}


def test_queries_need_the_read_permission(client, make_user, demo):
    assert client.get("/api/v1/telemetry/latest").status_code == 401
    client.force_login(make_user("norole"))
    assert client.get("/api/v1/telemetry/latest").status_code == 403


def test_cooling_unit_unknown_is_reported(client, demo):
    _, token = make_source("json")
    now = time.time()
    body = {"samples": [{"metric": "flow_liters_per_minute", "cooling_unit": "cdu-z9", "timestamp": now,
                         "value": 100.0}]}
    response = post(client, "/api/v1/telemetry/samples", body, token)
    assert response.status_code == 202 and response.json()["unknown_entities"] == {"cooling_unit:cdu-z9": 1}
    assert CoolingUnit.objects.filter(name="cdu-z9").count() == 0


def test_the_upstream_malformed_example_is_reported_by_line(client, source):
    text = (SHARED_DATA / "prometheus" / "prometheus-text-0.0.4-example.txt").read_text()
    response = post(client, "/api/v1/telemetry/prometheus", text, source[1], "text/plain")
    assert response.status_code == 400
    assert response.json()["errors"][0]["line"] == 10


def test_shared_data_is_present():
    assert Path(SHARED_DATA / "dcgm").is_dir()


def test_a_batch_sent_again_is_stored_once_and_a_later_field_merges(client, source):
    """A client that lost the 202 sends its batch again (at-least-once): the samples are in the buffer twice, and
    the writer stores them once instead of failing on the key forever. A later batch for the same GPU and time
    with another field fills it in; a field sent again with a new value replaces the old one."""
    gpu = demo_gpus(1)[0]
    now = round(time.time()) - 10.0
    batch = {"samples": [{"metric": "DCGM_FI_DEV_GPU_TEMP", "uuid": gpu.uuid, "timestamp": now, "value": 61.0}]}
    for _ in range(2):
        assert post(client, "/api/v1/telemetry/samples", batch, source[1]).status_code == 202
    assert drain().entries == 2
    power = {"samples": [{"metric": "DCGM_FI_DEV_POWER_USAGE", "uuid": gpu.uuid, "timestamp": now, "value": 650.0},
                         {"metric": "DCGM_FI_DEV_GPU_TEMP", "uuid": gpu.uuid, "timestamp": now + 5, "value": 62.0}]}
    assert post(client, "/api/v1/telemetry/samples", power, source[1]).status_code == 202
    again = {"samples": [{"metric": "DCGM_FI_DEV_GPU_TEMP", "uuid": gpu.uuid, "timestamp": now + 5, "value": 62.5}]}
    assert post(client, "/api/v1/telemetry/samples", again, source[1]).status_code == 202
    assert drain().entries == 2
    rows = list(GpuSample.objects.filter(gpu=gpu).order_by("time").values_list("gpu_temp", "power_usage"))
    assert rows == [(61.0, 650.0), (62.5, None)]


def test_a_body_of_garbage_is_refused_briefly(client, source):
    """Nonsense lines are reported up to a limit (no object per line of a 16 MiB body), and a timestamp of
    hundreds of digits is one more bad line, not a server error."""
    from telemetry.parsers.prometheus import MAX_PARSE_ERRORS

    body = f"DCGM_FI_DEV_GPU_TEMP{{gpu=\"0\"}} 60 {'9' * 5000}\n" + "x\n" * 50_000
    response = post(client, "/api/v1/telemetry/prometheus", body, source[1], content_type="text/plain")
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert "out of range" in errors[0]["reason"] and response.json()["errors_truncated"] > 0
    assert f"{MAX_PARSE_ERRORS + 1} problem(s)" in response.json()["message"]


def test_a_counter_beyond_a_bigint_is_refused_not_wrapped(client, source):
    gpu = demo_gpus(1)[0]
    body = _json_samples(gpu, (2.0**63, -1), metric="DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION")
    response = post(client, "/api/v1/telemetry/samples", body, source[1])
    assert response.status_code == 400 and response.json()["errors"][0]["item"] == "samples[0].value"


def test_a_mig_partitioned_gpu_reports_one_row(client, source, role_client):
    """dcgm-exporter on a MIG-partitioned GPU repeats device fields per GPU instance (folded by the parser) and
    gives per-instance fields one sample per instance: they become the GPU's slice-weighted mean, not a 400."""
    snippet = (SHARED_DATA / "dcgm" / "example-snippets-from-issues.prom").read_text()
    mig = "\n".join(line for line in snippet.splitlines() if 'GPU_I_ID' in line and "yg-data" in line)
    labels = ('gpu="0",UUID="GPU-265c9814-6156-355b-e589-ff2064894f16",device="nvidia0",modelName="NVIDIA A30",'
              'Hostname="yg-data-k8s-gpu-a30-node-test-test0003.mt"')
    text = (mig + "\n# TYPE DCGM_FI_PROF_PIPE_TENSOR_ACTIVE gauge\n"
            f'DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{{{labels},GPU_I_PROFILE="1g.6gb",GPU_I_ID="3"}} 0.9\n'
            f'DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{{{labels},GPU_I_PROFILE="2g.12gb",GPU_I_ID="1"}} 0.3\n')
    _facility_for_scrape(source[0].site, text)
    response = post(client, "/api/v1/telemetry/prometheus", text, source[1], "text/plain")
    assert response.status_code == 202, response.json()
    drain()
    row = GpuSample.objects.get(gpu__uuid="GPU-265c9814-6156-355b-e589-ff2064894f16")
    assert row.tensor_active == pytest.approx((0.9 * 1 + 0.3 * 2) / 3) and row.gpu_temp == 35


def test_a_gpu_added_in_another_process_is_known_here_within_seconds(client, source, monkeypatch):
    """The inventory lookup lives per process; a GPU added elsewhere (an admin request served by another web
    process, `facility import`) must not have its samples dropped as unknown here."""
    import subprocess
    import sys

    from django.db import connection

    from telemetry.ingest import inventory
    from tests.conftest import REPO, _worker_env

    monkeypatch.setattr(type(inventory), "RECHECK_S", 0.0)
    node = demo_gpus(1)[0].node
    batch = {"samples": [{"metric": "DCGM_FI_DEV_GPU_TEMP", "uuid": "GPU-added-elsewhere", "timestamp": time.time(),
                          "value": 55.0}]}
    assert post(client, "/api/v1/telemetry/samples", batch, source[1]).json()["unknown_entities"]  # loads the lookup
    create = ("from facility.models import GPU; "
              f"GPU.objects.create(node_id={node.pk}, index=99, uuid='GPU-added-elsewhere')")
    added = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", create],
        cwd=REPO, env=_worker_env(connection.settings_dict["NAME"]), capture_output=True, text=True, timeout=120)
    assert added.returncode == 0, added.stderr[-2000:]
    response = post(client, "/api/v1/telemetry/samples", batch, source[1]).json()
    assert response["accepted"] == 1 and not response["unknown_entities"]


def test_a_full_buffer_is_503_with_retry_after_and_accepts_again_once_drained(client, source, monkeypatch):
    """Backpressure: with the writers behind, the buffer stops at TELEMETRY_BUFFER_MAX_ENTRIES batches; what it
    refuses is not accepted (503, Retry-After), what it took is stored, and ingest resumes once it drains."""
    from telemetry import buffer

    monkeypatch.setattr(buffer, "TRIM_KEEP_SECONDS", 0)  # live views' last minute would count against the cap
    gpu = demo_gpus(1)[0]
    get_buffer.cache_clear()
    try:
        with override_settings(TELEMETRY_BUFFER_MAX_ENTRIES=2):
            for ago in (-9, -8):
                assert post(client, "/api/v1/telemetry/samples", _json_samples(gpu, (60.0 - ago, ago)),
                            source[1]).status_code == 202
            full = post(client, "/api/v1/telemetry/samples", _json_samples(gpu, (99.0, -7)), source[1])
            assert full.status_code == 503 and full["Retry-After"] == "5"
            assert full.json()["code"] == "buffer_full" and "holds 2 batches, its limit is 2" in full.json()["message"]
            drain()
            get_buffer().trim()
            again = post(client, "/api/v1/telemetry/samples", _json_samples(gpu, (70.0, -6)), source[1])
            assert again.status_code == 202, again.content
            drain()
    finally:
        get_buffer.cache_clear()
    assert sorted(GpuSample.objects.values_list("gpu_temp", flat=True)) == [68.0, 69.0, 70.0]
