"""The policy runner on a real Celery worker (queue `control`) with real PostgreSQL and Redis: runs of the
baselines file Pending proposals from stored telemetry; paused controllers file none; the API starts and
stops runs with the control API's error bodies."""

import math
from datetime import timedelta

import pytest
from django.utils import timezone

from control import changes, runner
from control.models import ChangeState, PolicyRun, SetpointChange
from control.tasks import run_policies
from control.tests.factories import build_plant, write_gpu_temps

pytestmark = pytest.mark.django_db(transaction=True)


def _plant(slug: str, temp: float = 60.0):
    plant = build_plant(slug)
    write_gpu_temps(plant.air_gpus + plant.liquid_gpus, temp, timezone.now())
    return plant


def test_state_from_database_reads_telemetry_and_setpoints(make_user):
    plant = _plant("st", temp=70.0)
    write_gpu_temps(plant.liquid_gpus, 50.0, timezone.now())
    state = runner.state_from_database(plant.site)
    air, liquid = state.halls["hall-a"], state.halls["hall-b"]
    assert (air.gpus, air.gpu_temperature_max_c, air.margin_to_slowdown_k) == (2, 70.0, 19.0)
    assert (liquid.cooling_type, liquid.gpu_temperature_mean_c) == ("liquid", 50.0)
    sp = state.setpoints[("crah-a1", "supply_air_temperature_setpoint")]
    assert (sp.command, sp.value, sp.since_change_s) == (18.0, 18.0, math.inf)
    assert sp.envelope.max_step == 1.0 and sp.envelope.hall == "hall-a"
    assert math.isnan(state.outdoor_wet_bulb_c)  # no weather station: policies leave the towers alone


def test_runs_file_pending_proposals_on_the_worker(celery_worker, make_user):
    operator = make_user("runner-op", "operator")
    fixed_plant, trim_plant, paused_plant = _plant("rf"), _plant("rt"), _plant("rp")
    for plant in (fixed_plant, paused_plant):  # away from the fixed baseline's 18 °C / 25 °C
        plant.crah_sat.value, plant.cdu_supply.value = 20.0, 28.0
        plant.crah_sat.save()
        plant.cdu_supply.save()
    fixed = runner.start_run(fixed_plant.site, "fixed", user=operator, interval_seconds=60)
    trim = runner.start_run(trim_plant.site, "trim_respond", user=operator, interval_seconds=60)
    paused = runner.start_run(paused_plant.site, "fixed", user=operator, interval_seconds=60)
    changes.pause_controllers(paused_plant.site, "test pause", automatic=False)

    result = run_policies.apply_async().get(timeout=60)
    assert result["ran"] == 3

    by_site = lambda plant: SetpointChange.objects.filter(setpoint__cooling_unit__site=plant.site)  # noqa: E731
    made = {c.setpoint.name: c for c in by_site(fixed_plant)}
    assert set(made) == {"supply_air_temperature_setpoint", "secondary_supply_temperature_setpoint"}
    assert made["supply_air_temperature_setpoint"].to_value == 19.0  # one max step toward 18
    assert made["secondary_supply_temperature_setpoint"].to_value == 26.0
    for c in made.values():
        assert (c.state, c.policy, c.proposed_by, c.origin) == (ChangeState.PENDING, "fixed", operator, "policy")
        assert c.rationale.startswith("fixed baseline setpoint (policy clipped its request")
    trimmed = {c.setpoint.name: c for c in by_site(trim_plant)}
    assert trimmed["supply_air_temperature_setpoint"].to_value == pytest.approx(18.2)  # trim: 29 K to slowdown
    assert trimmed["secondary_supply_temperature_setpoint"].to_value == pytest.approx(25.5)
    assert trimmed["chilled_water_supply_temperature_setpoint"].to_value == pytest.approx(10.5)
    assert all(c.state == ChangeState.PENDING and c.policy == "trim_respond" for c in trimmed.values())
    assert "trim" in trimmed["supply_air_temperature_setpoint"].rationale
    assert not by_site(paused_plant).exists()

    runs = {r.pk: r for r in PolicyRun.objects.all()}
    assert runs[fixed.pk].last_outcome == "proposed" and runs[fixed.pk].proposals_filed == 2
    assert runs[trim.pk].last_outcome == "proposed" and runs[trim.pk].proposals_filed == 3
    assert runs[paused.pk].last_outcome == "paused" and runs[paused.pk].proposals_filed == 0

    # Not due again within the interval.
    assert run_policies.apply_async().get(timeout=60)["ran"] == 0
    # Due later: points with a pending change are skipped, not buried under new proposals.
    later = timezone.now() + timedelta(seconds=61)
    write_gpu_temps(fixed_plant.air_gpus + fixed_plant.liquid_gpus, 60.0, later)
    out = runner.run_due_policies(now=later)
    fixed_result = next(r for r in out["results"] if r["run"] == fixed.pk)
    assert fixed_result["outcome"] == "nothing" and "skipped 2 with an open change" in fixed_result["message"]
    assert by_site(fixed_plant).count() == 2

    # Stopped runs do not run.
    runner.stop_run(fixed.pk, user=operator)
    out = runner.run_due_policies(now=later + timedelta(seconds=120))
    assert fixed.pk not in [r["run"] for r in out["results"]]


def test_starter_without_permission_stops_the_run(make_user):
    operator = make_user("runner-op2", "operator")
    plant = _plant("rs")
    plant.crah_sat.value = 20.0
    plant.crah_sat.save()
    run = runner.start_run(plant.site, "fixed", user=operator)
    operator.groups.clear()
    out = runner.run_due_policies()
    assert out["results"][0]["outcome"] == "stopped"
    run.refresh_from_db()
    assert not run.enabled and not SetpointChange.objects.exists()


def test_policy_runs_api(role_client, make_user):
    plant = _plant("ra")
    viewer = role_client("viewer")
    assert viewer.get("/api/v1/policy-runs/").status_code == 200
    r = viewer.post("/api/v1/policy-runs/", {"site": "ra", "policy": "fixed"}, content_type="application/json")
    assert r.status_code == 403 and r.json()["code"] == "permission_denied"
    viewer.logout()

    client = role_client("operator")
    r = client.post("/api/v1/policy-runs/", {"site": "ra", "policy": "fixed", "interval_seconds": 30},
                    content_type="application/json")
    assert r.status_code == 201, r.json()
    body = r.json()
    assert (body["site"], body["policy"], body["enabled"], body["started_by"], body["interval_seconds"]) == (
        "ra", "fixed", True, "user-operator", 30)
    again = client.post("/api/v1/policy-runs/", {"site": "ra", "policy": "fixed"}, content_type="application/json")
    assert again.status_code == 409 and again.json()["code"] == "already_running"
    bad = client.post("/api/v1/policy-runs/", {"site": "ra", "policy": "nope"}, content_type="application/json")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid"
    short = client.post("/api/v1/policy-runs/", {"site": "ra", "policy": "pid", "interval_seconds": 1},
                        content_type="application/json")
    assert short.status_code == 400 and short.json()["errors"][0]["item"] == "interval_seconds"
    long = client.post("/api/v1/policy-runs/", {"site": "ra", "policy": "pid", "interval_seconds": 3_000_000_000},
                       content_type="application/json")
    assert long.status_code == 400 and long.json()["errors"][0]["item"] == "interval_seconds"
    # A file on the server or an object it builds is not a run's to name (only stored, checksummed versions).
    for policy, params in (("rl", {"checkpoint": "/etc/passwd"}), ("llm", {"backend": "http://10.0.0.1/"}),
                           ("mpc", {"predictor": "twin"})):
        refused = client.post("/api/v1/policy-runs/", {"site": "ra", "policy": policy, "params": params},
                              content_type="application/json")
        assert refused.status_code == 400 and f"params.{next(iter(params))} cannot be set" in refused.json()["message"]
    floor = client.post("/api/v1/policy-runs/", {"site": "ra", "policy": "mpc", "params": {"min_throughput": 1.5}},
                        content_type="application/json")
    assert floor.status_code == 400 and "min_throughput" in floor.json()["message"], floor.json()
    for weight in (-1, "twice"):
        cw = client.post("/api/v1/policy-runs/", {"site": "ra", "policy": "mpc", "params": {"cooling_weight": weight}},
                         content_type="application/json")
        assert cw.status_code == 400 and "cooling_weight" in cw.json()["message"], cw.json()
    rl = client.post("/api/v1/policy-runs/", {"site": "ra", "policy": "rl"}, content_type="application/json")
    assert rl.status_code == 422 and rl.json()["code"] == "policy_unavailable"
    listed = client.get("/api/v1/policy-runs/?site=ra&enabled=true").json()["results"]
    assert [x["id"] for x in listed] == [body["id"]]
    stop = client.post(f"/api/v1/policy-runs/{body['id']}/stop/")
    assert stop.status_code == 200 and stop.json()["enabled"] is False and stop.json()["stopped_by"] == "user-operator"
    assert client.post(f"/api/v1/policy-runs/{body['id']}/stop/").json()["code"] == "invalid_state"
    assert client.post("/api/v1/policy-runs/999999/stop/").status_code == 404
    assert plant.site.policy_runs.count() == 1


def test_admin_start_form_makes_the_same_checks(client, make_user):
    plant = _plant("rb")
    client.force_login(make_user("olga", "operator"))
    refused = (({"policy": "rl", "params": '{"checkpoint": "/etc/passwd"}'}, "params.checkpoint cannot be set"),
               ({"policy": "pid", "interval_seconds": 100_000}, "interval_seconds must be 10 to 86400"))
    for fields, why in refused:
        form = {"site": plant.site.pk, "interval_seconds": 60, "params": "{}", **fields}
        r = client.post("/admin/control/policyrun/add/", form)
        assert r.status_code == 200 and why in r.content.decode(), r.content.decode()[:2000]
    assert not plant.site.policy_runs.exists()


def test_state_from_database_reads_the_server_fan_duty(make_user, redis_client):
    """A hall's fan duty comes from its server fans' measured duty; a hall without server fans keeps the BMC
    default. The fan point is a setpoint like the others."""
    from facility.models import CoolingUnit, Setpoint
    from telemetry import writer
    from telemetry.buffer import get_buffer
    from telemetry.ingest import ingest
    from telemetry.parsers.json_batch import parse_json_batch
    from tests.telemetry_helpers import make_source

    redis_client.flushdb()
    get_buffer.cache_clear()
    plant = _plant("fd")
    fans = CoolingUnit.objects.create(site=plant.site, hall=plant.air_gpus[0].node.rack.hall, name="fans-a",
                                      kind="server_fans")
    Setpoint.objects.create(cooling_unit=fans, name="fan_speed_setpoint", unit="ratio", value=0.9, allowable_min=0.4,
                            allowable_max=1.0, max_step=0.1, min_dwell_seconds=60)
    source, _ = make_source("json", site=plant.site)
    now = timezone.now().timestamp()
    ingest(source, parse_json_batch({"samples": [
        {"metric": "fan_speed_ratio", "cooling_unit": "fans-a", "timestamp": now, "value": 0.9}]}), now=now)
    writer.drain("test", time_budget_s=30)
    get_buffer.cache_clear()
    state = runner.state_from_database(plant.site)
    assert state.halls["hall-a"].fan_duty == pytest.approx(0.9)
    assert state.halls["hall-b"].fan_duty == 0.8
    point = state.setpoints[("fans-a", "fan_speed_setpoint")]
    assert (point.command, point.envelope.kind, point.envelope.hall) == (0.9, "server_fans", "hall-a")
