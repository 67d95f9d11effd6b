"""The twin as plant and source: calibration from the command line, telemetry through the real pipeline."""

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command

from facility import facility_file
from facility.management.commands.seed_demo import DEMO_FILE
from facility.models import GPU, Site
from telemetry import writer
from telemetry.buffer import get_buffer
from telemetry.models import GpuSample, PointSample, Series
from telemetry.sources.twin import TwinSource, run

PUBLISHED = {
    "air": {"gpu_temp_c_min": 54, "gpu_temp_c_max": 72, "tflops_per_gpu": 46, "node_power_kw": 8.16,
            "tflops_per_gpu_per_node_kw": 5.6},
    "liquid": {"gpu_temp_c_min": 41, "gpu_temp_c_max": 50, "tflops_per_gpu": 54, "node_power_kw": 6.99,
               "tflops_per_gpu_per_node_kw": 7.7},
}


def test_calibrate_json_is_within_ten_percent_with_seed(capsys):
    call_command("twin", "calibrate", "--json")
    result = json.loads(capsys.readouterr().out)
    assert result["profile"] == "seed"
    for cooling, values in PUBLISHED.items():
        for key, published in values.items():
            assert result[cooling][key] == pytest.approx(published, rel=0.10), (cooling, key)


def test_calibrate_table_shows_errors(capsys):
    call_command("twin", "calibrate", "--profile", "physics")
    out = capsys.readouterr().out
    assert "profile physics" in out and "error" in out


@pytest.mark.django_db(transaction=True)
def test_twin_feeds_the_ingest_pipeline(redis_client):
    redis_client.flushdb()
    get_buffer.cache_clear()
    facility_file.import_facility(facility_file.parse(DEMO_FILE.read_text()))
    site = Site.objects.get(slug="demo")
    source = TwinSource(site, start=datetime.now(UTC) - timedelta(minutes=2))
    emitted = run(source, interval=10, speed=1e6, duration=60)
    assert emitted == 6
    report = writer.drain("test", time_budget_s=30)
    gpus = GPU.objects.count()
    # Dropouts remove a few readings, never whole rows: every GPU reports at every scrape.
    assert report.gpu_rows == GpuSample.objects.count() == emitted * gpus
    temps = list(GpuSample.objects.values_list("gpu_temp", flat=True))
    assert sum(t is not None for t in temps) > 0.99 * len(temps)
    assert all(20 < t < 92 for t in temps if t is not None)
    assert PointSample.objects.exists()
    cdu = Series.objects.get(cooling_unit__name="cdu-b1", metric="supply_water_temperature_celsius",
                             point="secondary")
    readings = list(PointSample.objects.filter(series=cdu).values_list("value", flat=True))
    assert len(readings) == emitted and all(24 < v < 26 for v in readings)  # the 25 °C setpoint, with noise
    assert Series.objects.filter(metric="outdoor_wet_bulb_temperature_celsius", cooling_unit=None).exists()
    get_buffer.cache_clear()


@pytest.mark.django_db(transaction=True)
def test_facility_kpis_from_twin_telemetry(redis_client, role_client):
    redis_client.flushdb()
    get_buffer.cache_clear()
    facility_file.import_facility(facility_file.parse(DEMO_FILE.read_text()))
    source = TwinSource(Site.objects.get(slug="demo"), start=datetime.now(UTC) - timedelta(minutes=1), sensors=False)
    run(source, interval=5, speed=1e6, duration=10)
    writer.drain("test", time_budget_s=30)
    truth = source.twin.facility()
    kpis = role_client("viewer").get("/api/v1/telemetry/latest", {"within_seconds": 600}).json()["facility"]
    assert kpis["it_power_kw"] == pytest.approx(truth["it_power_kw"], rel=1e-6)
    assert kpis["pue"] == pytest.approx(truth["pue"], rel=1e-6)
    assert kpis["tflops"] == pytest.approx(truth["tflops"], rel=1e-3)
    assert kpis["gpus_reporting"] == GPU.objects.count()
    get_buffer.cache_clear()


def test_evaluate_prints_the_table_and_writes_an_offline_report(tmp_path, capsys):
    report = tmp_path / "eval.html"
    call_command("twin", "evaluate", "--policy", "fixed", "--policy", "trim_respond", "--days", "0.02",
                 "--climate", "mixed", "--report", str(report))
    out = capsys.readouterr().out
    assert "kWh/EFLOP" in out and "trim_respond" in out and f"Report: {report}" in out
    # plotly.js is inlined: no script is loaded from anywhere (the bundle's own default URLs are unused).
    assert re.findall(r"<script[^>]*\bsrc=", report.read_text()) == []


def test_evaluate_refuses_unknown_policies():
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="unknown policy nope; registered: fixed"):
        call_command("twin", "evaluate", "--policy", "nope", "--days", "0.01")
