"""The twin object: order, workloads, weather, read-outs, sensors."""

from datetime import datetime

import numpy as np
import pytest

from facility.twin import DCGM_FIELDS, Scenario, SensorConfig, SensorModel, Twin, load_climate, synthetic_facility
from facility.twin.weather import hour_of_year


def test_gpu_order_is_the_layout_order(make_twin, small_site):
    t = make_twin()
    expected = [g["uuid"] for h in small_site["halls"] for r in h["racks"] for n in r["nodes"] for g in n["gpus"]]
    assert list(t.gpu_uuids) == expected
    assert t.gpu_info[9].hostname == small_site["halls"][0]["racks"][0]["nodes"][1]["hostname"]
    assert set(DCGM_FIELDS.values()) <= set(t.gpus())


def test_training_has_checkpoint_dips(make_twin):
    t = make_twin(workload="training", checkpoint_interval_s=300, checkpoint_duration_s=30)
    util = []
    for _ in range(600):
        t.step()
        util.append(t.gpus()["utilization_percent"].mean())
    util = np.array(util)
    assert util.max() > 95
    low = util < 60
    assert 30 <= low.sum() <= 130  # two halls x two dips x 30 s, some overlapping
    assert t.facility()["tflops"] > 0


def test_inference_is_diurnal():
    site = synthetic_facility(air_racks=1, liquid_racks=1)
    night = Twin(site, "seed", _scenario("inference", datetime(2025, 3, 1, 4)))
    day = Twin(site, "seed", _scenario("inference", datetime(2025, 3, 1, 16)))
    night.step(30)
    day.step(30)
    un, ud = night.gpus()["utilization_percent"], day.gpus()["utilization_percent"]
    assert un.mean() < 35 < 70 < ud.mean()
    assert un.std() > 0  # per-GPU variation
    assert day.facility()["it_power_kw"] > night.facility()["it_power_kw"] * 1.3


def _scenario(workload, start, **kw):
    return Scenario(workload=workload, start=start, **kw)


def test_burn_and_idle(make_twin):
    burn, idle = make_twin(workload="burn"), make_twin(workload="idle")
    burn.step(60)
    idle.step(60)
    assert np.all(burn.gpus()["utilization_percent"] == 100)
    assert np.all(burn.gpus()["tensor_active_ratio"] == 0)  # FP32 GPU-Burn uses no tensor pipes
    assert np.all(idle.gpus()["utilization_percent"] == 0)
    assert idle.facility()["it_power_kw"] < 0.5 * burn.facility()["it_power_kw"]


def test_weather_follows_the_epw():
    start = datetime(2025, 7, 15, 14, 30)
    t = Twin(synthetic_facility(air_racks=1, liquid_racks=1), "seed", _scenario("idle", start, climate="hot"))
    t.step(1)
    f = t.facility()
    db, wb = load_climate("hot").at(hour_of_year(start))
    assert f["outdoor_dry_bulb_celsius"] == pytest.approx(db)
    assert f["outdoor_wet_bulb_celsius"] == pytest.approx(wb)
    assert f["outdoor_wet_bulb_celsius"] < f["outdoor_dry_bulb_celsius"]
    t.step(1800)
    assert t.time == datetime(2025, 7, 15, 15, 0, 1)
    assert t.facility()["outdoor_dry_bulb_celsius"] == pytest.approx(
        load_climate("hot").at(hour_of_year(start) + 1800 / 3600)[0])


def test_snapshot(make_twin):
    t = make_twin()
    t.step(10)
    s = t.snapshot()
    assert s.elapsed_s == 10
    assert set(s.units) == {u.name for u in t.layout.units}
    for points in s.units.values():
        assert all(isinstance(v, float) for v in points.values())
    assert s.facility["it_power_kw"] > 0
    assert set(s.halls) == {"hall-a", "hall-b"}
    s.gpus["power_watts"][:] = 0  # copies: the twin is not affected
    assert t.gpus()["power_watts"].min() > 0


def test_power_cap_command(make_twin):
    t = make_twin(workload="burn")
    some = t.gpu_uuids[40:48]
    t.set_power_cap(300, some)
    t.step(120)
    g = t.gpus()
    assert g["power_watts"][40:48].max() <= 300.5
    assert g["power_cap_watts"][40:48].max() == 300 and g["power_cap_watts"][:8].min() == 700
    with pytest.raises(ValueError):
        t.set_power_cap(900)
    with pytest.raises(KeyError):
        t.set_power_cap(500, ["GPU-nope"])


def test_sensors_are_seeded_and_realistic(make_twin):
    t = make_twin(workload="burn")
    t.step(60)
    g = t.gpus()
    cfg = SensorConfig(dropout_probability=0.05, stuck_probability=0.02, seed=5)
    a, b = SensorModel(cfg), SensorModel(cfg)
    ra, rb = a.gpus(g), b.gpus(g)
    for key in ra:
        np.testing.assert_array_equal(ra[key], rb[key])
    temp = ra["temperature_celsius"]
    ok = ~np.isnan(temp)
    assert 0 < (~ok).sum() < 0.2 * temp.size  # a few dropouts
    assert 0 < np.abs(temp[ok] - g["temperature_celsius"][ok]).max() < 2.0  # noise, ~0.3 K
    # Counters get no noise.
    e = ra["energy_millijoules"]
    ok = ~np.isnan(e)
    assert np.array_equal(e[ok], g["energy_millijoules"][ok].astype(float))
    # Reading telemetry does not change the physics.
    u = make_twin(workload="burn")
    u.step(60)
    np.testing.assert_array_equal(u.gpus()["temperature_celsius"], g["temperature_celsius"])
    # Unit points: setpoint read-backs are exact.
    pts = a.points(t.units())
    assert set(pts) == set(t.units())
    sp = pts["crah-a1"]["supply_air_temperature_setpoint_celsius"]
    assert np.isnan(sp) or sp == t.units()["crah-a1"]["supply_air_temperature_setpoint_celsius"]


def test_stuck_sensor_repeats_its_value():
    m = SensorModel(SensorConfig(gpu_noise={"x": 1.0}, dropout_probability=0.0, stuck_probability=0.5,
                                 stuck_reads=(5, 5), seed=1))
    first = m.gpus({"x": np.zeros(100)})["x"]
    second = m.gpus({"x": np.full(100, 50.0)})["x"]
    held = np.abs(second - 50) > 10
    assert 20 < held.sum() < 80  # roughly half stuck at their first (noisy ~0) reading
    # Those that started sticking on the first read hold the first read's value.
    assert np.all(np.abs(second[held]) < 5)
    assert np.all(np.isfinite(first))


def _with_server_fans(site, hall="hall-a", name="fans-a", lo=0.4):
    site = {**site, "cooling_units": [*site["cooling_units"], {
        "name": name, "kind": "server_fans", "hall": hall, "setpoints": [
            {"name": "fan_speed_setpoint", "unit": "ratio", "value": 0.8, "allowable_min": lo, "allowable_max": 1.0}]}]}
    return site


def test_server_fans_are_a_control_point_of_their_hall(make_twin, small_site):
    """A hall's `server_fans` unit sets its nodes' fan duty: faster fans, cooler and less power-capped GPUs for
    more IT power; the unit reports the duty as its read-back; the liquid hall is untouched."""
    base = make_twin(workload="training", site=_with_server_fans(small_site))
    fast = make_twin(workload="training", site=_with_server_fans(small_site))
    fast.write_setpoint("fans-a", "fan_speed_setpoint", 1.0)
    base.step(240)
    fast.step(240)
    a, b = base.halls(), fast.halls()
    assert fast.read_fan_duty("hall-a") == pytest.approx(1.0, abs=1e-6)
    assert fast.units()["fans-a"] == {"fan_speed_ratio": pytest.approx(1.0, abs=1e-6),
                                      "fan_speed_setpoint_ratio": pytest.approx(1.0, abs=1e-6)}
    assert b["hall-a"]["gpu_temperature_celsius_max"] < a["hall-a"]["gpu_temperature_celsius_max"] - 4
    assert b["hall-a"]["tflops"] > a["hall-a"]["tflops"] * 1.02  # the power cap binds less on cooler silicon
    assert b["hall-a"]["it_power_kw"] > a["hall-a"]["it_power_kw"]  # fans ~ duty^3, counted as IT power
    assert b["hall-b"]["gpu_temperature_celsius_max"] == pytest.approx(a["hall-b"]["gpu_temperature_celsius_max"])
    # The direct command goes through the point, inside the file's allowable range.
    fast.set_fan_duty("hall-a", 0.6)
    assert fast.setpoint_command("fans-a", "fan_speed_setpoint") == 0.6
    with pytest.raises(ValueError, match=r"fans-a.fan_speed_setpoint = 0.3 lies outside \[0.4, 1\]"):
        fast.write_setpoint("fans-a", "fan_speed_setpoint", 0.3)
