"""Operator pages: roles, rendering with data, JSON windows and CSV export from the same chart specs."""

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse

from facility import facility_file
from facility.management.commands.seed_demo import DEMO_FILE
from facility.models import GPU, CoolingUnit, Rack, Site
from telemetry import views, writer
from telemetry.buffer import get_buffer
from telemetry.sources.twin import TwinSource, run

ROLES = ("viewer", "operator", "approver", "admin")


@pytest.fixture
def demo(db):
    facility_file.import_facility(facility_file.parse(DEMO_FILE.read_text()))
    return Site.objects.get(slug="demo")


@pytest.fixture
def fed(redis_client, transactional_db):
    """The demo facility with ten minutes of twin telemetry stored."""
    redis_client.flushdb()
    get_buffer.cache_clear()
    facility_file.import_facility(facility_file.parse(DEMO_FILE.read_text()))
    site = Site.objects.get(slug="demo")
    source = TwinSource(site, start=datetime.now(UTC) - timedelta(minutes=10), sensors=False)
    run(source, interval=10, speed=1e6, duration=590)
    writer.drain("test", time_budget_s=60)
    yield site
    get_buffer.cache_clear()


def _pages(site):
    gpu = GPU.objects.select_related("node__rack").order_by("node__hostname", "index").first()
    unit = CoolingUnit.objects.get(site=site, name="cdu-b1")
    return {
        "live": reverse("telemetry:live"),
        "loop": reverse("telemetry:loop"),
        "gpu": reverse("telemetry:gpu", args=[gpu.uuid]),
        "node": reverse("telemetry:node", args=[gpu.node.hostname]),
        "rack": reverse("telemetry:rack", args=[gpu.node.rack_id]),
        "unit": reverse("telemetry:cooling-unit", args=[unit.pk]),
    }


def _config(response) -> dict:
    match = re.search(r'<script id="fusedc-config" type="application/json">(.*?)</script>', response.content.decode(),
                      re.S)
    return json.loads(match.group(1))


@pytest.mark.parametrize("role", ROLES)
def test_every_role_sees_every_page(demo, role_client, role):
    client = role_client(role)
    for name, url in _pages(demo).items():
        response = client.get(url)
        assert response.status_code == 200, (name, role)
        body = response.content.decode()
        assert "/static/vendor/plotly/plotly.min.js" in body
        assert not re.search(r'(src|href)="(https?:)?//', body)  # nothing from another host: no CDN
        assert _config(response)["ws"] == "/ws/facilities/demo/live"
    nav = client.get(reverse("telemetry:live")).context["navigation"]
    assert {"Live", "Loop", "Models"} <= {item["label"] for item in nav}


def test_anonymous_goes_to_login_and_no_role_is_refused(demo, client, make_user):
    pages = _pages(demo)
    for url in [*pages.values(), pages["gpu"] + "data", pages["gpu"] + "export.csv", reverse("telemetry:kpi-history"),
                reverse("inference:models")]:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("login")), url
    client.force_login(make_user("nobody"))
    for url in [*pages.values(), pages["rack"] + "data", pages["unit"] + "export.csv", reverse("telemetry:loop-data"),
                reverse("inference:models"), reverse("inference:model-data")]:
        assert client.get(url).status_code == 403, url


def test_unknown_objects_are_404(demo, role_client):
    client = role_client("viewer")
    assert client.get(reverse("telemetry:gpu", args=["GPU-nope"])).status_code == 404
    assert client.get(reverse("telemetry:rack", args=[999999])).status_code == 404
    assert client.get(reverse("telemetry:live") + "?site=nowhere").status_code == 404


def test_bad_window_parameters_are_400_naming_the_parameter(demo, role_client):
    client = role_client("viewer")
    gpu = reverse("telemetry:gpu", args=[GPU.objects.first().uuid])
    for url, item in ((gpu + "data?range=bogus", "range"), (gpu + "export.csv?start=x", "start"),
                      (reverse("telemetry:loop-data") + "?start=20&end=10", "start"),
                      (gpu + "data?start=1e12&end=1000000000010", "start"),
                      (reverse("telemetry:kpi-history") + "?range=1h&max_points=many", "max_points")):
        response = client.get(url)
        assert response.status_code == 400 and response.json()["errors"][0]["item"] == item, (url, response.content)


def test_plotly_is_served_from_the_installed_package(demo, role_client):
    response = role_client("viewer").get("/static/vendor/plotly/plotly.min.js")
    assert response.status_code == 200
    assert b"plotly.js" in b"".join(response.streaming_content)[:400]


def test_detail_windows_and_csv_come_from_the_same_spec(fed, role_client):
    client = role_client("viewer")
    pages = _pages(fed)
    for kind in ("gpu", "node", "rack", "unit"):
        page = client.get(pages[kind])
        charts = _config(page)["charts"]
        assert charts and all(c["traces"] for c in charts), kind
        data = client.get(pages[kind] + "data", {"range": "1h"}).json()
        assert [c["id"] for c in data["charts"]] == [c["id"] for c in charts]
        points = sum(len(t["t"]) for c in data["charts"] for t in c["traces"])
        assert points > 0, kind
        assert all(len(t["t"]) <= views.MAX_POINTS for c in data["charts"] for t in c["traces"])
        export = client.get(pages[kind] + "export.csv", {"range": "1h"})
        assert export["Content-Type"].startswith("text/csv")
        assert "attachment" in export["Content-Disposition"]
        rows = list(csv.DictReader(io.StringIO(export.content.decode())))
        assert len(rows) == points, kind
        assert {"time", "chart", "trace", "metric", "unit", "value"} <= set(rows[0])
    gpu = client.get(pages["gpu"] + "data", {"range": "1h"}).json()
    temps = gpu["charts"][0]["traces"][0]["v"]
    assert temps and all(20 < t < 95 for t in temps)
    # A custom window: only what lies in it.
    start = datetime.now(UTC).timestamp() - 300
    custom = client.get(pages["gpu"] + "data", {"start": start, "end": start + 120}).json()
    ts = custom["charts"][0]["traces"][0]["t"]
    assert ts and all(start - 1 <= t < start + 120 for t in ts), (min(ts) - start, max(ts) - start, len(ts))


def test_kpi_history_per_hall(fed, role_client):
    data = role_client("operator").get(reverse("telemetry:kpi-history"), {"range": "15m"}).json()
    assert set(data["halls"]) == {"hall-a", "hall-b"}
    assert len(data["t"]) >= 50  # ten minutes at 10 s
    it = [v for v in data["total"]["it_power_kw"] if v is not None]
    assert it and all(v > 100 for v in it)
    pue = [v for v in data["total"]["pue"] if v is not None]
    assert pue and all(1.0 < v < 2.0 for v in pue)
    air = [v for v in data["halls"]["hall-a"]["tflops_per_kw"] if v is not None]
    liquid = [v for v in data["halls"]["hall-b"]["tflops_per_kw"] if v is not None]
    assert sum(liquid) / len(liquid) > sum(air) / len(air)


def test_loop_page_takes_setpoint_annotations_from_providers(fed, role_client, monkeypatch):
    now = datetime.now(UTC).timestamp()
    note = {"time": now - 60, "unit": "cdu-b1", "setpoint": "secondary_supply_temperature_setpoint", "value": 26.0,
            "state": "proposed", "text": "PID policy"}
    monkeypatch.setattr(views, "SETPOINT_ANNOTATION_PROVIDERS", [lambda site, start, end: [note]])
    client = role_client("viewer")
    config = _config(client.get(reverse("telemetry:loop")))
    assert config["annotations"] == [note]
    names = [t["name"] for t in config["charts"][0]["traces"]]
    assert any("cdu-b1" in n for n in names) and any("crah-a1" in n for n in names)
    data = client.get(reverse("telemetry:loop-data"), {"range": "15m"}).json()
    assert data["annotations"] == [note]
    cdu = next(i for i, t in enumerate(config["charts"][0]["traces"]) if t["unit_name"] == "cdu-b1")
    assert set(data["charts"][0]["traces"][cdu]["v"]) == {25.0}


def test_rack_page_links_cooling_and_nodes(demo, role_client):
    rack = Rack.objects.get(name="b-r01")
    page = role_client("viewer").get(reverse("telemetry:rack", args=[rack.pk]))
    body = page.content.decode()
    assert reverse("telemetry:cooling-unit", args=[CoolingUnit.objects.get(name="cdu-b1").pk]) in body
    assert reverse("telemetry:node", args=[rack.nodes.first().hostname]) in body


def test_loop_shows_each_changes_predicted_and_measured_effect(redis_client, db, make_user, role_client, monkeypatch):
    """A change applied to the twin mid-history: after its watch window the loop page's data carries the forecast
    it was approved on beside the facility's measured change (after vs before) in power, heat and throughput."""
    from config import inprocess
    from control import changes
    from facility.models import Setpoint

    redis_client.flushdb()
    get_buffer.cache_clear()
    facility_file.import_facility(facility_file.parse(DEMO_FILE.read_text()))
    site = Site.objects.get(slug="demo")
    start = datetime.now(UTC) - timedelta(minutes=21)
    source = TwinSource(site, start=start, sensors=False)
    monkeypatch.setitem(inprocess.twins, site.slug, source)  # the in-process twin actuator writes to it
    run(source, interval=10, speed=1e6, duration=600)
    writer.drain("test", time_budget_s=60)
    applied_at = start + timedelta(seconds=600)
    point = Setpoint.objects.get(cooling_unit__name="crah-a1", name="supply_air_temperature_setpoint")
    operator, approver = make_user("fx-operator", "operator"), make_user("fx-approver", "approver")
    change = changes.propose(point, point.value + 0.5, user=operator, rationale="warmer supply air", now=applied_at,
                             predicted_effect={"horizon_s": 600, "delta_cooling_kwh": -0.5, "delta_facility_kwh": -0.4,
                                               "delta_end_max_gpu_temperature_c": 0.6, "delta_throughput_pct": 0.0})
    changes.approve(change.pk, approver, "ok", now=applied_at)
    assert changes.apply_change(change.pk, now=applied_at)["status"] == "applied"
    run(source, interval=10, speed=1e6, duration=600)
    writer.drain("test", time_budget_s=60)
    assert changes.watch_changes(now=applied_at + timedelta(seconds=605))["done"] == 1

    data = role_client("viewer").get(reverse("telemetry:loop-data"), {"site": "demo", "range": "1h"}).json()
    (applied,) = [a for a in data["annotations"] if a.get("effect")]
    effect = applied["effect"]
    assert applied["change"] == change.pk and applied["label"].startswith(f"#{change.pk} crah-a1")
    assert effect["predicted"] == {"cooling_kw": -3.0, "facility_kw": -2.4, "hottest_gpu_c": 0.6, "throughput_pct": 0.0}
    assert all(effect["measured"][k] is not None for k in ("cooling_kw", "facility_kw", "hottest_gpu_c",
                                                           "throughput_pct"))
    assert effect["before"]["it_power_kw"] > 0 and 590 <= effect["window_s"] <= 610
    # Warmer supply air: the air-cooled GPUs run warmer afterwards (the twin's physics, measured from storage).
    assert effect["after"]["hottest_gpu_temp_c"] >= effect["before"]["hottest_gpu_temp_c"] - 0.5


def test_favicon_is_served(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301
    icon = client.get(response["Location"])
    assert icon.status_code == 200 and icon["Content-Type"] == "image/svg+xml"
    body = b"".join(icon.streaming_content) if icon.streaming else icon.content
    assert b"<svg" in body
