"""/metrics: Prometheus exposition of FuseDC's own health, for scrapers with a token and staff users."""

import pytest
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.django_db(transaction=True)


def _families(body: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(body)}


def test_metrics_need_a_token_or_staff(client, make_user):
    assert client.get("/metrics").status_code == 401
    client.force_login(make_user("viewer-not-staff", "viewer", staff=False))
    assert client.get("/metrics").status_code == 401
    with override_settings(METRICS_TOKEN="s3cret-token-for-tests"):
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token-for-tests").status_code == 200


def test_metrics_report_requests_queues_workers_and_buffer(client, make_user, celery_worker):
    client.force_login(make_user("ops", "admin"))
    client.get("/healthz")
    response = client.get("/metrics")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    families = _families(response.content.decode())
    requests = [s for s in families["fusedc_http_requests"].samples if s.labels.get("route") == "healthz"]
    assert requests and requests[0].value >= 1
    assert {s.labels["queue"] for s in families["fusedc_celery_queue_length"].samples} >= {"ingest", "control"}
    workers = {s.labels["worker"] for s in families["fusedc_worker_heartbeat_age_seconds"].samples}
    assert celery_worker["hostname"] in workers
    up = {s.labels["part"]: s.value for s in families["fusedc_component_up"].samples}
    assert up == {"buffer": 1, "redis": 1, "database": 1}


def test_metrics_report_ingest_rate_and_the_serving_worker(client, make_user, redis_client):
    from django.core.cache import cache

    from facility import facility_file
    from facility.management.commands.seed_demo import DEMO_FILE
    from inference.models import InferenceStats
    from telemetry.ingest import ACCEPTED_KEY
    from tests.telemetry_helpers import dcgm_scrape, demo_gpus, make_source

    facility_file.import_facility(facility_file.parse(DEMO_FILE.read_text()))
    cache.delete(ACCEPTED_KEY)
    _, token = make_source()
    body = dcgm_scrape(demo_gpus(8))
    for _ in range(2):
        response = client.post("/api/v1/telemetry/prometheus", body, content_type="text/plain",
                               HTTP_AUTHORIZATION=f"Bearer {token}")
        assert response.status_code == 202
    InferenceStats.objects.create(worker="inference@a", streams=256, cache_bytes=3_538_944, step_seconds=0.13,
                                  tokens_per_second=1900.0)
    client.force_login(make_user("ops", "admin"))
    families = _families(client.get("/metrics").content.decode())
    accepted = families["fusedc_ingest_samples_accepted"].samples[0].value
    assert accepted == 2 * 8 * 4  # two scrapes of 8 GPUs with 4 fields each
    streams = {s.labels["worker"]: s.value for s in families["fusedc_inference_streams"].samples}
    assert streams == {"inference@a": 256}
    assert families["fusedc_inference_step_seconds"].samples[0].value == 0.13
