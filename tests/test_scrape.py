"""Polled sources: a dcgm-exporter /metrics endpoint and a Redfish service, served on 127.0.0.1."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from facility import facility_file
from facility.management.commands.seed_demo import DEMO_FILE
from telemetry import scrape, writer
from telemetry.buffer import get_buffer
from telemetry.models import GpuSample, PointSample, ScrapeTarget
from tests.conftest import SHARED_DATA
from tests.telemetry_helpers import dcgm_scrape, demo_gpus, make_source

pytestmark = pytest.mark.django_db(transaction=True)
REDFISH = SHARED_DATA / "redfish"


@pytest.fixture
def server():
    routes: dict[str, tuple[int, str, bytes]] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            status, content_type, body = routes.get(self.path, (404, "text/plain", b"not found"))
            if self.path == "/secret" and self.headers.get("Authorization") != "Basic dXNlcjpwdw==":
                status, body = 401, b"unauthorised"  # user:pw
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}", routes
    httpd.shutdown()


@pytest.fixture
def demo(redis_client):
    redis_client.flushdb()
    get_buffer.cache_clear()
    facility_file.import_facility(facility_file.parse(DEMO_FILE.read_text()))
    yield
    get_buffer.cache_clear()


def test_prometheus_target_is_scraped_when_due(server, demo):
    base, routes = server
    routes["/metrics"] = (200, "text/plain; version=0.0.4", dcgm_scrape(demo_gpus(8), temp=66.0).encode())
    source, _ = make_source("dcgm")
    target = ScrapeTarget.objects.create(source=source, kind="prometheus", url=f"{base}/metrics", interval_seconds=60)
    assert scrape.scrape_due() == {"ok": 1, "failed": 0}
    assert scrape.scrape_due() == {"ok": 0, "failed": 0}  # not due again for a minute
    writer.drain("test", time_budget_s=30)
    assert list(GpuSample.objects.values_list("gpu_temp", flat=True).distinct()) == [66.0]
    target.refresh_from_db()
    assert target.last_status == "ok: 32 samples" and target.consecutive_failures == 0


def test_redfish_collection_members_are_followed(server, demo):
    base, routes = server
    cdu = json.loads((REDFISH / "public-cooling-unit__ThermalEquipment__CDUs__1.json").read_text())
    pump = (REDFISH / "public-cooling-unit__ThermalEquipment__CDUs__1__Pumps__1.json").read_bytes()
    routes["/redfish/v1/ThermalEquipment/CDUs/1"] = (200, "application/json", json.dumps(cdu).encode())
    routes["/redfish/v1/ThermalEquipment/CDUs/1/Pumps"] = (200, "application/json", json.dumps({
        "@odata.id": "/redfish/v1/ThermalEquipment/CDUs/1/Pumps",
        "Members": [{"@odata.id": "/redfish/v1/ThermalEquipment/CDUs/1/Pumps/1"}],
    }).encode())
    routes["/redfish/v1/ThermalEquipment/CDUs/1/Pumps/1"] = (200, "application/json", pump)
    source, _ = make_source("redfish")
    for path in ("/redfish/v1/ThermalEquipment/CDUs/1", "/redfish/v1/ThermalEquipment/CDUs/1/Pumps"):
        ScrapeTarget.objects.create(source=source, kind="redfish", url=base + path, cooling_unit="cdu-b1")
    assert scrape.scrape_due() == {"ok": 2, "failed": 0}
    writer.drain("test", time_budget_s=30)
    metrics = set(PointSample.objects.values_list("series__metric", flat=True))
    assert "pump_speed_ratio" in metrics and len(metrics) > 1
    assert set(PointSample.objects.values_list("series__cooling_unit__name", flat=True)) == {"cdu-b1"}


def test_failures_are_recorded_not_raised(server, demo, monkeypatch):
    base, routes = server
    routes["/bad"] = (200, "text/plain", b"DCGM_FI_DEV_GPU_TEMP{gpu=\"0\" 61\n")
    routes["/secret"] = (200, "text/plain", dcgm_scrape(demo_gpus(1)).encode())
    source, _ = make_source("dcgm")
    targets = {
        "missing": ScrapeTarget.objects.create(source=source, kind="prometheus", url=f"{base}/nothing-here"),
        "bad": ScrapeTarget.objects.create(source=source, kind="prometheus", url=f"{base}/bad"),
        "down": ScrapeTarget.objects.create(source=source, kind="prometheus", url="http://127.0.0.1:9/metrics",
                                            timeout_seconds=1),
        "noenv": ScrapeTarget.objects.create(source=source, kind="prometheus", url=f"{base}/secret",
                                             auth_env="FUSEDC_TEST_SCRAPE_AUTH"),
    }
    assert scrape.scrape_due() == {"ok": 0, "failed": 4}
    status = {name: ScrapeTarget.objects.get(pk=t.pk).last_status for name, t in targets.items()}
    assert "HTTP 404" in status["missing"]
    assert "line 1" in status["bad"]
    assert status["down"].startswith("failed: http://127.0.0.1:9/metrics")
    assert "FUSEDC_TEST_SCRAPE_AUTH is not set" in status["noenv"]
    monkeypatch.setenv("FUSEDC_TEST_SCRAPE_AUTH", "user:pw")
    ScrapeTarget.objects.update(last_scraped_at=None)
    assert scrape.scrape_due()["ok"] == 1  # the authenticated one now works
    assert ScrapeTarget.objects.get(pk=targets["bad"].pk).consecutive_failures == 2
