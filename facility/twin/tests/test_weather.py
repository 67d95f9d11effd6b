"""Psychrometrics against ASHRAE Handbook - Fundamentals (2017) ch. 1, and the EPW weather years."""

from datetime import datetime

import numpy as np
import pytest

from facility.twin.weather import (
    HOURS_PER_YEAR,
    hour_of_year,
    humidity_ratio_from_wet_bulb,
    load_climate,
    parse_epw,
    saturation_pressure_pa,
    wet_bulb_c,
    wet_bulb_from_humidity_ratio,
)


@pytest.mark.parametrize(("t", "pws"), [(-20, 103.24), (-5, 401.74), (5, 872.6), (25, 3169.7), (50, 12351.3)])
def test_saturation_pressure_matches_ashrae_table_3(t, pws):
    assert saturation_pressure_pa(t) == pytest.approx(pws, rel=3e-4)


def test_humidity_ratio_from_wet_bulb():
    # PsychroLib's reference values (computed from the same ASHRAE equations), 500 m standard pressure.
    assert humidity_ratio_from_wet_bulb(30, 25, 95461) == pytest.approx(0.0192281, rel=3e-4)
    assert humidity_ratio_from_wet_bulb(-1, -5, 95461) == pytest.approx(0.00120400, rel=3e-4)


def test_ashrae_example_1():
    # 40 C dry-bulb, 20 C thermodynamic wet-bulb, 101.325 kPa: W = 0.0065 kg/kg (Handbook text).
    assert wet_bulb_from_humidity_ratio(40, 0.0065, 101325) == pytest.approx(20.0, abs=0.1)
    # The Handbook's chart dew point for that air is 7 C (its own rounding): within 0.3 K.
    assert wet_bulb_c(40, 7.0, 101325) == pytest.approx(20.0, abs=0.3)


def test_textbook_points():
    # 25 C and 50 % RH at sea level: dew point 13.86 C, wet-bulb 17.9 C on the psychrometric chart.
    assert wet_bulb_c(25, 13.86, 101325) == pytest.approx(17.9, abs=0.1)
    # Saturated air: wet-bulb = dry-bulb = dew point.
    assert wet_bulb_c(20, 20, 101325) == pytest.approx(20, abs=1e-6)
    # Below freezing.
    w = humidity_ratio_from_wet_bulb(-1, -5, 95461)
    assert wet_bulb_from_humidity_ratio(-1, w, 95461) == pytest.approx(-5, abs=1e-3)


def test_pressure_matters():
    # The same air at altitude (lower pressure) has a lower wet-bulb; a pressure-free fit misses this.
    sea = wet_bulb_c(35, 10, 101325)
    high = wet_bulb_c(35, 10, 84000)
    assert high < sea - 0.5


def test_vectorised():
    out = wet_bulb_c(np.array([40.0, 25.0]), np.array([7.0, 13.86]), np.array([101325, 101325]))
    assert out.shape == (2,)
    assert out[1] == pytest.approx(17.9, abs=0.1)


def _epw(values):
    header = "\n".join(f"HEADER {i}" for i in range(8))
    rows = [f"2021,1,1,{h % 24 + 1},0,flags,{db},{dp},50,{p},0" for h, (db, dp, p) in enumerate(values)]
    return header + "\n" + "\n".join(rows) + "\n"


def test_interpolation_and_wrap():
    values = [(10.0 + (h % 2) * 2.0, 5.0, 101325) for h in range(HOURS_PER_YEAR)]
    w = parse_epw(_epw(values))
    # Row 0 is the hour ending 01:00, row 1 ends 02:00; row 8759 (12 C) stands for 00:00 too.
    assert w.at(1.0)[0] == pytest.approx(10.0)
    assert w.at(2.0)[0] == pytest.approx(12.0)
    assert w.at(1.5)[0] == pytest.approx(11.0)
    assert w.at(0.0)[0] == pytest.approx(12.0)
    assert w.at(0.5)[0] == pytest.approx(11.0)
    assert w.at(HOURS_PER_YEAR + 1.5) == pytest.approx(w.at(1.5))
    db, wb = w.at(1.25)
    assert wb < db and wb == pytest.approx(
        0.75 * wet_bulb_c(10, 5, 101325) + 0.25 * wet_bulb_c(12, 5, 101325), abs=1e-9)


def test_bad_epw():
    with pytest.raises(ValueError, match="8760"):
        parse_epw(_epw([(10.0, 5.0, 101325)] * 10))


def test_hour_of_year():
    assert hour_of_year(datetime(2025, 1, 1)) == 0
    assert hour_of_year(datetime(2025, 1, 2, 6, 30)) == 30.5
    # Leap years: March onwards aligns with the 365-day TMY; 29 Feb reads as 28 Feb.
    assert hour_of_year(datetime(2024, 3, 1)) == hour_of_year(datetime(2025, 3, 1))
    assert hour_of_year(datetime(2024, 2, 29, 12)) == hour_of_year(datetime(2025, 2, 28, 12))


def test_shipped_climates_are_plausible():
    hot, mixed, cool = (load_climate(c) for c in ("hot", "mixed", "cool"))
    july = slice(4344, 5088)
    assert hot.dry_bulb_c[july].mean() > mixed.dry_bulb_c[july].mean() > cool.dry_bulb_c[july].mean()
    for w in (hot, mixed, cool):
        assert np.all(w.wet_bulb_c <= w.dry_bulb_c + 1e-9)
        assert np.all(w.wet_bulb_c >= w.dew_point_c - 1e-9)
    # Phoenix is dry: a big wet-bulb depression in July afternoons.
    assert (hot.dry_bulb_c[july] - hot.wet_bulb_c[july]).max() > 15
    with pytest.raises(ValueError, match="unknown climate"):
        load_climate("arctic")
