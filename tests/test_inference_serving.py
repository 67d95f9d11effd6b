"""The forecaster served from stored telemetry: the dataset read back from the pipeline, the serving task in a
real Celery worker, a restart rebuilding the caches, the API's role checks, and the what-if for control."""

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from django.db.models import Max
from django.test import override_settings

from facility import facility_file
from facility.models import GPU, Site
from facility.twin import synthetic_facility
from inference.checkpoint import save_checkpoint
from inference.dataset import INLET_OFFSET_CONTAINED_K, load_frames
from inference.model import FEATURE_NAMES, TelemetryForecaster
from inference.models import Forecast, InferenceStats, ModelKind, ModelVersion
from inference.serving import ForecastServer, forecast_effect
from inference.training import make_config
from telemetry import writer
from telemetry.buffer import get_buffer
from telemetry.models import GpuSample, PointSample, Series
from telemetry.sources.twin import TwinSource, run

pytestmark = pytest.mark.django_db(transaction=True)

SMALL = {"air_racks": 1, "air_nodes_per_rack": 1, "liquid_racks": 1, "liquid_nodes_per_rack": 1, "crahs": 1,
         "cdus": 1}
F = {name: i for i, name in enumerate(FEATURE_NAMES)}
INTERVAL = 2.0


@pytest.fixture
def site(redis_client):
    redis_client.flushdb()
    get_buffer.cache_clear()
    facility_file.import_facility(facility_file.parse(facility_file.dump(synthetic_facility(**SMALL))))
    yield Site.objects.get()
    get_buffer.cache_clear()


@pytest.fixture
def twin(site):
    """The site's twin, started four minutes ago; `feed(seconds)` runs it on and stores what it reports."""
    source = TwinSource(site, start=datetime.now(UTC) - timedelta(minutes=4), sensors=False)

    def feed(seconds: float) -> float:
        run(source, interval=INTERVAL, speed=1e6, duration=seconds)
        writer.drain("test", time_budget_s=30)
        return source.sim_time

    source.feed = feed
    return source


@pytest.fixture
def active_model(tmp_path, site):
    """An (untrained) forecaster with a short sliding window, saved and active."""
    import torch

    torch.manual_seed(0)
    config = make_config(INTERVAL, window=16, num_layers=2, hidden_size=32, intermediate_size=64,
                         num_attention_heads=4)
    model = TelemetryForecaster(config)
    with torch.no_grad():  # a non-zero head so forecasts depend on the inputs
        model.quantile_head.weight.normal_(0, 0.05)
    saved = save_checkpoint(model, tmp_path, "test-forecaster")
    return ModelVersion.objects.create(
        name="test-forecaster", kind=ModelKind.FORECASTER, site=site, config=config.to_dict(),
        features=list(FEATURE_NAMES), checkpoint_path=str(saved.weights), checksum_sha256=saved.sha256, active=True,
    )


def newest_sample():
    return GpuSample.objects.aggregate(t=Max("time"))["t"]


def test_dataset_from_stored_telemetry_is_aligned(twin, site):
    end = twin.feed(40)
    frames = load_frames(site)
    gpus = GPU.objects.count()
    assert frames.interval_s == INTERVAL and frames.steps == 20 and frames.present.all()
    assert frames.end_s == pytest.approx(end + INTERVAL, abs=1e-3)
    uuid = frames.uuids[0]
    gpu = GPU.objects.get(uuid=uuid)
    stored = list(GpuSample.objects.filter(gpu=gpu).order_by("time").values_list("gpu_temp", flat=True))
    np.testing.assert_allclose(frames.features[0, :, F["gpu_temperature_celsius"]], stored, rtol=1e-5)
    # An air-cooled GPU's inlet is its CRAH's supply air plus the containment offset, at the same scrape.
    air = next(i for i, u in enumerate(frames.uuids) if GPU.objects.get(uuid=u).node.rack.hall.cooling_type == "air")
    supply = Series.objects.get(cooling_unit__name="crah-a1", metric="supply_air_temperature_celsius", point="")
    readings = list(PointSample.objects.filter(series=supply).order_by("time").values_list("value", flat=True))
    np.testing.assert_allclose(frames.features[air, :, F["inlet_air_temperature_celsius"]],
                               np.array(readings) + INLET_OFFSET_CONTAINED_K, rtol=1e-5)
    assert np.isnan(frames.features[air, :, F["coolant_supply_temperature_celsius"]]).all()
    assert len(frames.uuids) == gpus


def test_serving_task_in_a_celery_worker_writes_forecasts(twin, active_model, celery_worker):
    from inference.tasks import forecast_step

    twin.feed(30)
    report = forecast_step.delay().get(timeout=120)
    gpus = GPU.objects.count()
    assert report["model_version"] == "test-forecaster"
    assert report["streams"] == gpus and report["prefilled"] == gpus and report["forecasts"] == 3 * gpus
    assert Forecast.objects.count() == 3 * gpus
    made = set(Forecast.objects.values_list("made_at", flat=True))
    assert made == {newest_sample()}
    forecast = Forecast.objects.filter(horizon_s=60).first()
    assert forecast.gpu_temperature_celsius_p10 <= forecast.gpu_temperature_celsius_p50 \
        <= forecast.gpu_temperature_celsius_p90
    assert 0 <= forecast.throttle_probability <= 1
    # The worker keeps its caches: the next step decodes only what is new.
    twin.feed(6)
    report = forecast_step.delay().get(timeout=120)
    assert report["prefilled"] == 0 and report["advanced"] == gpus and report["tokens"] == 3 * gpus
    assert Forecast.objects.filter(made_at=newest_sample()).count() == 3 * gpus
    stats = InferenceStats.objects.get(worker__startswith=celery_worker["hostname"])
    assert stats.streams == gpus and stats.cache_bytes > 0 and stats.steps_total >= 2


def test_restart_rebuilds_the_caches_from_history(twin, active_model):
    twin.feed(80)  # 40 samples: more than the (layers + 1) x window = 24 a rebuild reads
    running = ForecastServer(worker="a")
    first = running.step()
    assert first.prefilled == GPU.objects.count() and running.cache_bytes > 0
    # Every stream's cache holds exactly the sliding window (8 tokens), all in one batch.
    assert list(running.groups) == [8]
    twin.feed(20)
    second = running.step()
    assert second.prefilled == 0 and second.tokens == 10 * GPU.objects.count()
    restarted = ForecastServer(worker="b")  # a fresh process: nothing held
    rebuilt = restarted.step()
    assert rebuilt.prefilled == GPU.objects.count()
    assert running.last_forecasts.keys() == restarted.last_forecasts.keys()
    for key, values in running.last_forecasts.items():
        other = restarted.last_forecasts[key]
        assert other["made_at"] == values["made_at"]
        for column, value in values.items():
            assert other[column] == pytest.approx(value, rel=1e-4, abs=1e-3), (key, column)
    # Forecasts exist for every sample time the worker stepped at, with no gap at the restart.
    assert Forecast.objects.values("made_at").distinct().count() == 2


def test_a_rebuilt_stream_keeps_its_load_drop_rhythm(site, active_model):
    # Checkpoints every 250 s: longer than the span a rebuild reads (3 x 8 tokens, about 210 s), so the drops
    # that set the rhythm lie before it and must come from the database.
    source = TwinSource(site, start=datetime.now(UTC) - timedelta(minutes=20), sensors=False,
                        checkpoint_interval_s=250.0, checkpoint_duration_s=10.0)
    run(source, interval=INTERVAL, speed=1e6, duration=900)
    writer.drain("test", time_budget_s=30)
    running = ForecastServer(worker="e")
    running.step()
    run(source, interval=INTERVAL, speed=1e6, duration=100)
    writer.drain("test", time_budget_s=30)
    running.step()
    restarted = ForecastServer(worker="f")
    restarted.step()
    assert running.streams.keys() == restarted.streams.keys() and running.streams
    for g in running.streams:  # every hall runs training: every stream has seen drops 250 s apart
        kept, rebuilt = running.streams[g].load_drops, restarted.streams[g].load_drops
        assert kept.last_drop_s == pytest.approx(rebuilt.last_drop_s, abs=1e-3)
        assert kept.previous_drop_s == pytest.approx(rebuilt.previous_drop_s, abs=1e-3)
        assert kept.last_drop_s - kept.previous_drop_s == pytest.approx(250.0, abs=INTERVAL)
    for key, values in running.last_forecasts.items():
        for column, value in values.items():
            assert restarted.last_forecasts[key][column] == pytest.approx(value, rel=1e-4, abs=1e-3), (key, column)


def _utilisation_samples(gpu, start: float, values) -> list[GpuSample]:
    """GpuSamples of one GPU, 5 s apart from ``start``; None values leave a gap, "null" stores a NULL."""
    return [GpuSample(gpu=gpu, time=datetime.fromtimestamp(start + 5 * i, UTC), gpu_temp=60.0,
                      gpu_util=None if v == "null" else v)
            for i, v in enumerate(values) if v is not None]


def test_load_drops_found_through_the_rollups_equal_a_full_raw_scan(site):
    from inference import dataset
    from telemetry import rollups
    from telemetry.storage import ensure_partitions

    a, b, c, d, e = GPU.objects.order_by("pk")[:5]
    start = (datetime.now(UTC) - timedelta(minutes=40)).timestamp() // 60 * 60
    steady = [95.0] * 12
    samples = [
        # a: a 60 s dip starting 25 s into a minute, one starting on a minute's first reading, then steady.
        *_utilisation_samples(a, start, [*steady * 5, *[95.0] * 5, *[10.0] * 12, *[95.0] * 7, *steady * 4,
                                         *[10.0] * 12, *steady * 10]),
        # b: readings stop for two minutes and resume low (the drop's previous reading is three minutes
        # back), and NULL utilisation between the loaded readings and the gap.
        *_utilisation_samples(b, start, [*steady * 10, 95.0, "null", "null", *[None] * 33, *[8.0] * 30,
                                         *[90.0] * 60]),
        # c: never drops by 40 points (steps of 30).
        *_utilisation_samples(c, start, [*[90.0] * 60, *[60.0] * 60, *[30.0] * 60, *[60.0] * 60]),
        # d: nothing rolled up yet (it starts reporting after the rollups' watermark) and drops there.
        *_utilisation_samples(d, start + 37 * 60, [90.0] * 10 + [20.0] * 10),
        # e: readings 3 s into each 5 s step, so a minute's first reading is not on the minute.
        *_utilisation_samples(e, start + 3, [50.0] * 460),
    ]
    ensure_partitions({datetime.fromtimestamp(start, UTC).date(), datetime.now(UTC).date()})
    GpuSample.objects.bulk_create(samples)
    end = start + 39 * 60
    rollups.roll_up(now=start + 36 * 60 + rollups.SETTLE_SECONDS)  # minutes up to 36 rolled up, the rest raw
    ids = [a.pk, b.pk, c.pk, d.pk, e.pk]

    def both_ways(at: float):
        """load_drops_before through the rollups, then reading everything raw; they must agree exactly."""
        found = dataset.load_drops_before(ids, at)
        raw = dataset.load_drops_before(ids, at, rollups=False)
        for g in ids:
            assert (found[g].previous_drop_s, found[g].last_drop_s, found[g].last_utilization) == pytest.approx(
                (raw[g].previous_drop_s, raw[g].last_drop_s, raw[g].last_utilization), rel=0, abs=1e-6,
                nan_ok=True), (g, at)
        return found

    spans = dataset._drop_ranges(ids, end - dataset.MAX_LOAD_DROP_AGE_S, end)
    stored = [(s.gpu_id, s.time.timestamp()) for s in GpuSample.objects.filter(gpu__in=ids)]
    read = [(g, t) for g, t in stored if any(g == h and lo <= t < hi for h, lo, hi in spans)]
    assert len(read) < 0.4 * len(stored)  # the rollups spared most of the raw readings
    found = both_ways(end)
    assert (found[a.pk].previous_drop_s, found[a.pk].last_drop_s) == (start + 325, start + 660)
    assert found[b.pk].last_drop_s == start + 5 * 156 and np.isnan(found[b.pk].previous_drop_s)
    assert np.isnan(found[c.pk].last_drop_s) and found[c.pk].last_utilization == pytest.approx(0.6)
    assert found[d.pk].last_drop_s == start + 37 * 60 + 50
    # An end inside a rolled-up minute (a rebuild's is in the past): that minute's rollup holds later readings.
    both_ways(start + 660 + 1)
    assert both_ways(start + 20 * 60 + 1)[e.pk].last_utilization == pytest.approx(0.5)

    # A late sample in a rolled-up minute (the writer marks its bucket dirty): c falls 85 points there. Until
    # the next roll-up the rollups are stale, so the whole span is read raw.
    late = start + 15 * 60 + 2.5
    GpuSample.objects.bulk_create(_utilisation_samples(c, late, [85.0, 0.0]))
    rollups.mark_dirty(60, [late, late + 5])
    assert dataset._drop_ranges(ids, end - dataset.MAX_LOAD_DROP_AGE_S, end) is None
    assert both_ways(end)[c.pk].last_drop_s == late + 5
    rollups.roll_up(now=start + 36 * 60 + rollups.SETTLE_SECONDS)  # recomputes the dirty minute
    assert dataset._drop_ranges(ids, end - dataset.MAX_LOAD_DROP_AGE_S, end) is not None
    assert both_ways(end)[c.pk].last_drop_s == late + 5


def test_quiet_streams_are_evicted_and_come_back_by_prefill(twin, active_model):
    twin.feed(20)
    server = ForecastServer(worker="c")
    with override_settings(INFERENCE_EVICT_SECONDS=-1):
        report = server.step()
    assert report.evicted == GPU.objects.count() and not server.streams and server.cache_bytes == 0
    twin.feed(4)
    again = server.step()
    assert again.prefilled == GPU.objects.count()


def test_a_step_cut_short_leaves_no_half_moved_cache(twin, active_model, monkeypatch):
    from inference import serving

    twin.feed(20)
    server = ForecastServer(worker="f")
    server.step()
    twin.feed(4)

    def cut_short(*args, **kwargs):
        raise TimeoutError("soft time limit")  # as Celery's SoftTimeLimitExceeded, mid-decode

    with monkeypatch.context() as m:
        m.setattr(serving, "predict", cut_short)
        with pytest.raises(TimeoutError):
            server.step()
    assert not server.streams and not server.groups
    twin.feed(4)
    report = server.step()  # rebuilt by prefill, forecasts again
    assert report.prefilled == GPU.objects.count() and report.forecasts > 0


def test_a_sample_stamped_ahead_waits_for_its_time(twin, active_model):
    """A GPU whose clock runs 200 s fast (ingest accepts up to 300 s) must not become the stream's newest sample:
    the correctly stamped samples after it would all be behind the stream's watermark and dropped."""
    import time

    from telemetry import storage

    twin.feed(20)
    server = ForecastServer(worker="g")
    server.step()
    gpu = GPU.objects.first()
    ahead = time.time() + 200
    payload = {"gpu": {"gpu_id": [gpu.pk], "time": [ahead], "gpu_temp": [60.0]},
               "points": {"series_id": [], "time": [], "value": []}}
    storage.ensure_partitions(storage.days_of([payload]))
    storage.write([payload])
    before = server.streams[gpu.pk].last_time_s
    twin.feed(4)
    server.step()
    assert before < server.streams[gpu.pk].last_time_s < ahead - 100  # fed on by the twin's samples


def test_a_new_active_version_replaces_the_caches(twin, active_model, tmp_path):
    twin.feed(20)
    server = ForecastServer(worker="d")
    server.step()
    model = TelemetryForecaster(make_config(INTERVAL, window=12, num_layers=1, hidden_size=16,
                                            intermediate_size=32, num_attention_heads=2))
    saved = save_checkpoint(model, tmp_path, "next")
    nxt = ModelVersion.objects.create(name="next", config=model.config.to_dict(), features=list(FEATURE_NAMES),
                                      checkpoint_path=str(saved.weights), checksum_sha256=saved.sha256)
    nxt.activate()
    active_model.refresh_from_db()
    assert not active_model.active
    report = server.step()
    assert report.model_version == "next" and report.prefilled == GPU.objects.count()


def test_admin_activates_only_a_checkpoint_that_verifies(site, active_model, tmp_path, client, django_user_model):
    model = TelemetryForecaster(make_config(INTERVAL, window=12, num_layers=1, hidden_size=16,
                                            intermediate_size=32, num_attention_heads=2))
    saved = save_checkpoint(model, tmp_path, "tampered")
    bad = ModelVersion.objects.create(name="tampered", config=model.config.to_dict(), features=list(FEATURE_NAMES),
                                      checkpoint_path=str(saved.weights), checksum_sha256=saved.sha256)
    saved.weights.write_bytes(saved.weights.read_bytes()[:-8] + b"\0" * 8)
    client.force_login(django_user_model.objects.create_superuser("root", password="x-" + "y" * 20))
    response = client.post("/admin/inference/modelversion/", {"action": "activate", "_selected_action": [bad.pk]},
                           follow=True)
    assert "was not activated" in response.content.decode()
    assert ModelVersion.objects.get(pk=active_model.pk).active and not ModelVersion.objects.get(pk=bad.pk).active


def test_forecast_api_role_checks_and_filters(twin, active_model, role_client, client):
    twin.feed(20)
    ForecastServer(worker="e").step()
    gpus = GPU.objects.count()
    # Anonymous: 401 where a token scheme is offered (WWW-Authenticate), else 403; never data.
    assert client.get("/api/v1/inference/forecasts").status_code in (401, 403)
    assert client.get("/api/v1/inference/model-versions").status_code in (401, 403)
    viewer = role_client("viewer")
    body = viewer.get("/api/v1/inference/forecasts").json()
    assert body["site"] == Site.objects.get().slug and len(body["forecasts"]) == 3 * gpus
    gpu = GPU.objects.select_related("node").first()
    one = viewer.get("/api/v1/inference/forecasts", {"gpus": f"{gpu.node.hostname}/{gpu.index}", "horizon": 60})
    assert one.status_code == 200
    [row] = one.json()["forecasts"]
    assert row["gpu"] == gpu.uuid and row["horizon_s"] == 60 and row["model_version"] == "test-forecaster"
    assert set(row["gpu_temperature_celsius"]) == {"p10", "p50", "p90"}
    twin.feed(10)
    ForecastServer(worker="e").step()  # a second round: only each (GPU, horizon)'s newest comes back
    rows = viewer.get("/api/v1/inference/forecasts").json()["forecasts"]
    newest = {(f.gpu.uuid, f.horizon_s): f.made_at for f in Forecast.objects.select_related("gpu").order_by("made_at")}
    assert Forecast.objects.count() > len(rows) == len(newest) == 3 * gpus
    assert all(datetime.fromisoformat(r["made_at"].replace("Z", "+00:00")) == newest[(r["gpu"], r["horizon_s"])]
               for r in rows)
    bad = viewer.get("/api/v1/inference/forecasts", {"gpus": "nope/9", "horizon": 0})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_query"
    assert {e["item"] for e in bad.json()["errors"]} == {"horizon"}
    versions = viewer.get("/api/v1/inference/model-versions").json()
    assert [v["name"] for v in versions["results"]] == ["test-forecaster"] and versions["results"][0]["active"]


def test_forecast_effect_of_a_candidate_setpoint(twin, active_model):
    twin.feed(40)
    effect = forecast_effect({"cdu-b1.secondary_supply_temperature_setpoint": 32.0}, shift_measured=True)
    liquid = set(GPU.objects.filter(node__rack__cooled_by__name="cdu-b1").values_list("uuid", flat=True))
    assert set(effect["gpus"]) == liquid
    entry = effect["gpus"][next(iter(liquid))]["60s"]["gpu_temperature_celsius"]
    assert set(entry) == {"baseline", "candidate", "delta_p50"}
    assert entry["delta_p50"] == pytest.approx(entry["candidate"]["p50"] - entry["baseline"]["p50"])
    assert effect["summary"]["60s"]["gpus"] == len(liquid)
    # The unchanged setpoint gives no effect at all.
    same = forecast_effect({"cdu-b1.secondary_supply_temperature_setpoint": 25.0})
    assert abs(same["summary"]["60s"]["max_delta_gpu_temperature_celsius"]) < 1e-4
    with pytest.raises(ValueError, match="unknown setpoint"):
        forecast_effect({"cdu-b1.no_such_setpoint": 1.0})


def _page_config(response) -> dict:
    import json
    import re

    match = re.search(r'<script id="fusedc-config" type="application/json">(.*?)</script>', response.content.decode(),
                      re.S)
    return json.loads(match.group(1))


def test_model_page_shows_the_active_version_and_live_error(twin, active_model, role_client, client):
    from django.urls import reverse

    active_model.training_curves = [{"epoch": 1, "train_loss": 0.9, "val_loss": 0.8},
                                    {"epoch": 2, "train_loss": 0.7, "val_loss": 0.75}]
    active_model.metrics = {"horizons": {"60s": {"gpu_temperature_celsius": {
        "mae": 0.5, "persistence_mae": 1.5, "coverage_p10_p90": 0.812}}}, "split": {"best_epoch": 2}}
    active_model.save()
    server = ForecastServer(worker="page")
    twin.feed(40)
    server.step()
    for _ in range(40):  # 80 s more, one step per sample: forecasts whose +10 s and +60 s are now measured
        twin.feed(INTERVAL)
        server.step()
    url = reverse("inference:models")
    assert client.get(url).status_code == 302  # anonymous: to the login page
    assert role_client("viewer").get(url).status_code == 200
    response = client.get(url)
    assert b"test-forecaster" in response.content
    assert b"holds 81 % of outcomes" in response.content
    config = _page_config(response)
    assert config["curves"]["best_epoch"] == 2 and len(config["curves"]["active"]) == 2
    assert config["errors"]["active"]["gpu_temperature_celsius"]["60s"]["mae"] == 0.5
    gpus = GPU.objects.count()
    (cache,) = config["cache"]
    assert cache["worker"] == "page" and cache["streams"] == gpus
    # The MHA-equivalent cache for the same streams is larger by the per-token ratio of the shapes.
    assert cache["mha_bytes"] > 4 * cache["bytes"] > 0
    # The JSON window: forecasts at their valid times, the measured series, and a live MAE per horizon.
    gpu = GPU.objects.get(uuid=config["gpu"])
    data = client.get(reverse("inference:model-data"), {"gpu": gpu.uuid, "range": "15m"}).json()
    assert set(data["horizons"]) == {"10", "60", "300"}
    ten = data["horizons"]["10"]
    assert len(ten["valid_at"]) == len(ten["targets"]["gpu_temperature_celsius"]["p50"]) >= 40
    err = ten["errors"]["gpu_temperature_celsius"]
    assert err["n"] >= 30 and err["mae"] >= 0 and err["persistence_mae"] >= 0 and abs(err["bias"]) <= err["mae"]
    assert data["horizons"]["300"]["errors"]["gpu_temperature_celsius"]["n"] == 0  # nothing is 300 s old yet
    assert len(data["measured"]["gpu_temperature_celsius"]["t"]) > 40
    # Bad queries: 400 naming the parameter.
    bad = client.get(reverse("inference:model-data"), {"gpu": "nope", "range": "1h"})
    assert bad.status_code == 400 and bad.json()["errors"][0]["item"] == "gpu"
    bad = client.get(reverse("inference:model-data"), {"gpu": gpu.uuid, "range": "1y"})
    assert bad.status_code == 400 and bad.json()["errors"][0]["item"] == "range"


def test_live_error_scores_the_median_against_the_measurement_at_its_valid_time():
    from inference.views import _live_error

    t = np.arange(0.0, 100.0, 5.0)
    v = 50.0 + 0.1 * t  # a measured ramp
    made = np.array([0.0, 10.0, 20.0, 95.0])  # the last one's valid time (155 s) is not measured yet
    p50 = 50.0 + 0.1 * (made + 60.0) - 2.0  # 2 units under the truth
    err = _live_error(made, 60.0, p50, t, v, width=5.0)
    assert err["n"] == 3
    assert err["mae"] == pytest.approx(2.0) and err["bias"] == pytest.approx(-2.0)
    assert err["persistence_mae"] == pytest.approx(6.0)  # the ramp rises 6 units in 60 s
    assert _live_error(made[:0], 60.0, p50[:0], t, v, 5.0) == {"mae": None, "persistence_mae": None, "bias": None,
                                                               "n": 0}


def test_model_page_without_a_model_says_how_to_train_one(site, role_client):
    from django.urls import reverse

    response = role_client("operator").get(reverse("inference:models"))
    assert response.status_code == 200 and b"No active forecaster" in response.content
    assert b"fusedc-config" not in response.content
    from django.test import Client

    assert Client().get(reverse("inference:model-data"), {"gpu": "x"}).status_code == 302  # anonymous: log in


def test_model_page_shows_a_version_trained_on_an_older_feature_list(site, active_model, role_client):
    from django.urls import reverse

    old = {**active_model.config, "features": list(FEATURE_NAMES[:-2])}  # no worker serves it; the page shows it
    ModelVersion.objects.filter(pk=active_model.pk).update(config=old, features=old["features"])
    response = role_client("viewer").get(reverse("inference:models"))
    assert response.status_code == 200 and active_model.name in response.content.decode()


def test_a_plant_reporting_faster_than_the_model_is_fed_on_the_model_grid(site, active_model):
    """The model was trained on 2 s samples; the plant reports every second. Serving feeds one sample per 2 s
    slot, so positions and sample gaps are the ones the model was trained on."""
    source = TwinSource(site, start=datetime.now(UTC) - timedelta(minutes=3), sensors=False)
    run(source, interval=1.0, speed=1e6, duration=60)
    writer.drain("test", time_budget_s=30)
    server = ForecastServer(worker="grid")
    server.step()
    gpus = GPU.objects.count()
    run(source, interval=1.0, speed=1e6, duration=20)
    writer.drain("test", time_budget_s=30)
    report = server.step()
    assert report.advanced == gpus and report.tokens == 10 * gpus  # 20 one-second samples: 10 two-second slots
    # Each stream's newest fed sample is the first of its 2 s slot, 2 s after the previous one it was fed.
    slots = {round(s.last_time_s, 3) // 2 for s in server.streams.values()}
    assert len(slots) == 1


def test_model_page_leaves_out_workers_that_stopped_reporting(site, active_model, role_client):
    from django.urls import reverse
    from django.utils import timezone

    InferenceStats.objects.create(worker="live", model_version=active_model, streams=4, cache_bytes=4096)
    InferenceStats.objects.create(worker="gone", model_version=active_model, streams=4, cache_bytes=4096)
    InferenceStats.objects.filter(worker="gone").update(updated_at=timezone.now() - timedelta(hours=1))
    config = _page_config(role_client("viewer").get(reverse("inference:models")))
    assert [c["worker"] for c in config["cache"]] == ["live"]


def test_demo_training_replaces_an_active_version_built_for_another_feature_list(twin, active_model, tmp_path):
    from django.core.management import call_command

    twin.feed(240)
    args = ("inference", "train", "--unless-active", "--epochs", "1", "--window", "16", "--max-windows", "8",
            "--model-dir", str(tmp_path / "models"))
    out = io.StringIO()
    call_command(*args, stdout=out)
    assert "is active; not training" in out.getvalue()
    assert ModelVersion.objects.filter(kind=ModelKind.FORECASTER).count() == 1
    # A version from before a feature was added cannot be served: make demo's first-run step trains anew.
    ModelVersion.objects.filter(pk=active_model.pk).update(features=list(FEATURE_NAMES[:-2]))
    out = io.StringIO()
    call_command(*args, stdout=out)
    assert "trained on another feature list" in out.getvalue()
    active = ModelVersion.objects.get(kind=ModelKind.FORECASTER, active=True)
    assert active.pk != active_model.pk and active.features == list(FEATURE_NAMES)
    assert Path(active.checkpoint_path).is_absolute()
    # A name already taken, or one that is not a plain file name, is refused before anything is trained or written.
    from django.core.management.base import CommandError

    before = sorted(p.name for p in (tmp_path / "models").iterdir())
    for name, why in ((active.name, "exists already"), ("../outside", "use letters, digits")):
        with pytest.raises(CommandError, match=why):
            call_command("inference", "train", "--name", name, *args[3:], stdout=io.StringIO())
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == before
    assert ModelVersion.objects.get(pk=active.pk).load() is not None  # its checkpoint still verifies
