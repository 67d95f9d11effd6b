"""Plant behaviour: setpoint dynamics, coil constraint, economiser, COP, PUE (TWIN.md "Plant")."""

import math
from itertools import pairwise

import numpy as np
import pytest

from facility.twin import Scenario, Twin, synthetic_facility
from facility.twin.params import PlantParams
from facility.twin.plant import cop, economiser_share

SAT = "supply_air_temperature_setpoint"


def test_setpoint_read_back_follows_command_with_lag(make_twin):
    t = make_twin()
    assert t.read_setpoint("crah-a1", SAT) == 18.0
    t.write_setpoint("crah-a1", SAT, 22.0)
    assert t.setpoint_command("crah-a1", SAT) == 22.0
    assert t.read_setpoint("crah-a1", SAT) == 18.0  # nothing moves until the plant steps
    t.step(1)
    first = t.read_setpoint("crah-a1", SAT)
    assert 18.0 < first < 19.0
    t.step(9)  # tau = 10 s: 63 % after 10 s
    assert t.read_setpoint("crah-a1", SAT) == pytest.approx(18 + 4 * (1 - math.exp(-1)), abs=0.01)
    t.step(60)
    assert t.read_setpoint("crah-a1", SAT) == pytest.approx(22.0, abs=0.01)
    assert t.units()["crah-a1"]["supply_air_temperature_setpoint_celsius"] == pytest.approx(22.0, abs=0.01)


def test_supply_air_follows_with_its_time_constant(make_twin):
    t = make_twin()
    t.step(600)
    t.write_setpoint("crah-a1", SAT, 24.0)
    temps = []
    for _ in range(12):
        t.step(60)
        temps.append(t.units()["crah-a1"]["supply_air_temperature_celsius"])
    assert all(b >= a for a, b in pairwise(temps))
    # After 120 s, roughly half way (tau 120 s behind the 10 s read-back ramp); after 12 min, there.
    assert 20.5 < temps[1] < 22.2
    assert temps[-1] == pytest.approx(24.0, abs=0.05)
    # Other CRAHs were not touched.
    assert t.units()["crah-a2"]["supply_air_temperature_celsius"] == pytest.approx(18.0, abs=0.01)


def test_coil_needs_chilled_water_plus_3k(make_twin):
    t = make_twin()
    t.write_setpoint("chiller-1", "chilled_water_supply_temperature_setpoint", 18.0)
    t.write_setpoint("crah-a1", SAT, 16.0)
    t.step(3600)
    u = t.units()
    assert u["chiller-1"]["supply_temperature_celsius"] == pytest.approx(18.0, abs=0.05)
    assert u["crah-a1"]["supply_air_temperature_celsius"] == pytest.approx(21.0, abs=0.05)


def test_out_of_range_and_unknown_setpoints(make_twin):
    t = make_twin()
    with pytest.raises(ValueError, match="outside"):
        t.write_setpoint("crah-a1", SAT, 30.0)
    with pytest.raises(ValueError, match="outside"):
        t.write_setpoint("cdu-b1", "pump_speed_setpoint", float("nan"))
    with pytest.raises(KeyError, match="has no setpoint"):
        t.write_setpoint("crah-a1", "chilled_water_supply_temperature_setpoint", 10.0)
    with pytest.raises(KeyError, match="no cooling unit"):
        t.read_setpoint("crah-z9", SAT)
    with pytest.raises(ValueError, match="fan duty"):
        t.set_fan_duty("hall-a", 0.1)
    with pytest.raises(KeyError, match="no hall"):
        t.set_fan_duty("hall-z", 0.5)


def test_cdu_setpoints_drive_secondary_loop(make_twin):
    t = make_twin(workload="burn")
    t.step(300)
    before = t.units()["cdu-b1"]
    t.write_setpoint("cdu-b1", "secondary_supply_temperature_setpoint", 32.0)
    t.write_setpoint("cdu-b1", "pump_speed_setpoint", 0.6)
    t.step(900)
    after = t.units()["cdu-b1"]
    assert after["secondary_supply_temperature_celsius"] == pytest.approx(32.0, abs=0.05)
    assert after["pump_speed_ratio"] == pytest.approx(0.6, abs=1e-3)
    assert after["secondary_flow_liters_per_minute"] == pytest.approx(0.6 * before["secondary_flow_liters_per_minute"],
                                                                     rel=1e-3)
    assert after["power_kw"] == pytest.approx(0.216 * before["power_kw"], rel=1e-3)  # pump ~ speed^3
    assert after["primary_supply_temperature_celsius"] == pytest.approx(29.0, abs=0.05)  # secondary - 3 K
    assert after["secondary_return_temperature_celsius"] > before["secondary_return_temperature_celsius"] + 5


def test_chiller_cop():
    p = PlantParams()
    # TWIN.md: about 6 at 10 C chilled water and 20 C wet-bulb (T_evap 8 C, T_cond 31 C).
    assert cop(8.0, 31.0, p) == pytest.approx(6.1, abs=0.05)
    assert cop(8.0, 8.5, p) == p.cop_max
    assert cop(8.0, 200.0, p) == p.cop_min


def test_economiser_share_function():
    assert economiser_share(16, 10, 5, 1.5) == 1.0
    assert economiser_share(16, 10, 20, 1.5) == 0.0
    assert economiser_share(16, 10, 11.5, 1.5) == pytest.approx(0.5)


def _tower_steady(wet_bulb: float, workload="training"):
    t = Twin(synthetic_facility(air_racks=2, liquid_racks=2), "seed",
             Scenario(workload=workload, outdoor=(wet_bulb + 8.0, wet_bulb)))
    for tower in ("tower-1", "tower-2"):  # trim-and-respond: towers at wet-bulb + 5.56 K (within their range)
        t.write_setpoint(tower, "leaving_water_temperature_setpoint", max(12.0, wet_bulb + 5.56))
    t.step(2400)
    return t.units(), t.facility()


def test_economiser_share_falls_as_wet_bulb_rises():
    runs = {wb: _tower_steady(wb) for wb in (0.0, 6.0, 10.0, 16.0, 24.0)}
    chw = [runs[wb][0]["chiller-1"]["economiser_share_ratio"] for wb in sorted(runs)]
    fws = [runs[wb][0]["tower-2"]["facility_water_share_ratio"] for wb in sorted(runs)]
    power = [runs[wb][0]["chiller-1"]["power_kw"] for wb in sorted(runs)]
    assert all(b <= a + 1e-9 for a, b in pairwise(chw)), chw
    assert all(b <= a + 1e-9 for a, b in pairwise(fws)), fws
    assert chw[0] > 0.3 and chw[-1] == 0.0
    # The CDUs' tower carries everything while wet-bulb + approach is below the facility water...
    assert fws[0] == 1.0 and fws[2] == 1.0
    # ...and hands all of it to the chiller when it is not (24 + 5.56 > 22 + 6 K return).
    assert fws[-1] == 0.0
    assert power[-1] > 3 * max(power[0], 0.1)


def test_pue_plausible_for_demo_like_site():
    for climate in ("hot", "mixed", "cool"):
        t = Twin(synthetic_facility(), "seed", Scenario(workload="training", climate=climate))
        t.step(1800)
        f = t.facility()
        assert 1.05 <= f["pue"] <= 1.6, (climate, f["pue"])
        assert f["cooling_power_kw"] > 0 and f["losses_kw"] > 0.05 * f["it_power_kw"]
        assert f["facility_power_kw"] == pytest.approx(f["it_power_kw"] + f["cooling_power_kw"] + f["losses_kw"])
        assert f["tflops_per_kw"] == pytest.approx(f["tflops"] / f["facility_power_kw"])


def test_heat_balance(make_twin):
    t = make_twin(workload="burn")
    t.step(1800)
    u, f = t.units(), t.facility()
    crah = sum(v["heat_removed_kw"] for k, v in u.items() if k.startswith("crah"))
    cdu = sum(v["heat_removed_kw"] for k, v in u.items() if k.startswith("cdu"))
    fans = sum(v["power_kw"] for k, v in u.items() if k.startswith("crah"))
    # All IT heat leaves through the CRAHs (air) and the CDUs (liquid); CRAH fan heat adds to the air side.
    assert crah + cdu == pytest.approx(f["it_power_kw"] + fans, rel=1e-3)
    # The liquid hall's residual air heat (host, fans, PSU) is 20-30 % of its IT power.
    hb = t.halls()["hall-b"]["it_power_kw"]
    assert 0.2 < u["crah-b1"]["heat_removed_kw"] / hb < 0.35
    # Chilled water: CRAH heat (the CDUs' tower carries all of theirs at 18 C wet-bulb).
    assert u["chiller-1"]["load_kw"] == pytest.approx(crah, rel=1e-3)
    assert u["tower-2"]["heat_removed_kw"] == pytest.approx(cdu, rel=1e-3)
    for pump in ("chw-pump-1", "cw-pump-1", "fws-pump-1"):
        assert u[pump]["power_kw"] > 0 and u[pump]["flow_liters_per_minute"] > 0


def test_failed_crah_heats_the_hall(make_twin):
    t = make_twin(workload="burn")
    t.step(600)
    inlet = t.halls()["hall-a"]["server_inlet_temperature_celsius"]
    for name in ("crah-a1", "crah-a2", "crah-a3", "crah-a4"):
        t.fail_unit(name)
    t.step(300)
    assert t.halls()["hall-a"]["server_inlet_temperature_celsius"] > inlet + 10
    assert t.units()["crah-a1"]["heat_removed_kw"] == 0
    with pytest.raises(KeyError):
        t.fail_unit("chw-pump-1")


def test_losses():
    p = PlantParams()
    t = Twin(synthetic_facility(air_racks=1, liquid_racks=1), "seed", Scenario(outdoor=(20, 15)))
    t.step(60)
    f = t.facility()
    expected = f["it_power_kw"] * (1 / 0.96 - 1) + p.distribution_loss * (f["it_power_kw"] + f["cooling_power_kw"])
    assert f["losses_kw"] == pytest.approx(expected)
    assert np.isfinite(f["pue"])
