"""Outdoor weather for the twin: hourly EPW files interpolated to the step, wet-bulb by psychrometrics.

TWIN.md "Plant": hot = Phoenix, mixed = Leesburg (Northern Virginia), cool = Seattle (`data/weather/`,
see its README for the source). Wet-bulb is the thermodynamic wet-bulb of ASHRAE Handbook -
Fundamentals (2017) ch. 1: saturation pressure by Hyland-Wexler (eqs. 5-6), humidity ratio from the
dew point and station pressure, then the wet-bulb that gives the same humidity ratio (eqs. 33/35),
solved by bisection (vectorised; Stull's pressure-free fit is off by up to ~1 K at altitude).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache

import numpy as np

from .params import DATA_DIR

WEATHER_DIR = DATA_DIR / "weather"
EPW_FILES = {
    "hot": "USA_AZ_Phoenix-Sky.Harbor.epw",
    "mixed": "USA_VA_Leesburg.Exec.epw",
    "cool": "USA_WA_Seattle-Tacoma.epw",
}
HOURS_PER_YEAR = 8760
_EPS = 0.621945  # ratio of molecular masses, water / dry air


def saturation_pressure_pa(t_c):
    """Saturation vapour pressure over water (t >= 0.01 C) or ice, Pa (ASHRAE 2017 ch. 1 eqs. 5-6)."""
    t = np.asarray(t_c, dtype=float) + 273.15
    ln_ice = (
        -5.6745359e3 / t + 6.3925247 - 9.677843e-3 * t + 6.2215701e-7 * t**2
        + 2.0747825e-9 * t**3 - 9.484024e-13 * t**4 + 4.1635019 * np.log(t)
    )
    ln_water = (
        -5.8002206e3 / t + 1.3914993 - 4.8640239e-2 * t + 4.1764768e-5 * t**2
        - 1.4452093e-8 * t**3 + 6.5459673 * np.log(t)
    )
    return np.exp(np.where(t >= 273.16, ln_water, ln_ice))


def humidity_ratio_from_dew_point(dew_point_c, pressure_pa):
    pw = saturation_pressure_pa(dew_point_c)
    return _EPS * pw / (np.asarray(pressure_pa, dtype=float) - pw)


def humidity_ratio_from_wet_bulb(dry_bulb_c, wet_bulb_c, pressure_pa):
    """Humidity ratio (kg/kg dry air) of air at this dry-bulb and thermodynamic wet-bulb (eqs. 33, 35)."""
    tdb = np.asarray(dry_bulb_c, dtype=float)
    twb = np.asarray(wet_bulb_c, dtype=float)
    pws = saturation_pressure_pa(twb)
    ws = _EPS * pws / (np.asarray(pressure_pa, dtype=float) - pws)
    above = ((2501.0 - 2.326 * twb) * ws - 1.006 * (tdb - twb)) / (2501.0 + 1.86 * tdb - 4.186 * twb)
    below = ((2830.0 - 0.24 * twb) * ws - 1.006 * (tdb - twb)) / (2830.0 + 1.86 * tdb - 2.1 * twb)
    return np.where(twb >= 0.0, above, below)


def wet_bulb_from_humidity_ratio(dry_bulb_c, humidity_ratio, pressure_pa, iterations: int = 60):
    """Thermodynamic wet-bulb, C, by bisection between the dew point and the dry-bulb."""
    tdb, w, p = np.broadcast_arrays(
        np.asarray(dry_bulb_c, dtype=float), np.asarray(humidity_ratio, dtype=float), np.asarray(pressure_pa, float)
    )
    lo = np.full(tdb.shape, -100.0)
    hi = tdb.copy()
    for _ in range(iterations):  # 60 halvings of <= 160 K: far below 1e-9 K
        mid = 0.5 * (lo + hi)
        too_wet = humidity_ratio_from_wet_bulb(tdb, mid, p) > w
        hi = np.where(too_wet, mid, hi)
        lo = np.where(too_wet, lo, mid)
    out = 0.5 * (lo + hi)
    return out if out.ndim else float(out)


def wet_bulb_c(dry_bulb_c, dew_point_c, pressure_pa):
    """Thermodynamic wet-bulb from dry-bulb, dew point and station pressure (scalars or arrays)."""
    dew = np.minimum(np.asarray(dew_point_c, dtype=float), np.asarray(dry_bulb_c, dtype=float))
    return wet_bulb_from_humidity_ratio(dry_bulb_c, humidity_ratio_from_dew_point(dew, pressure_pa), pressure_pa)


def hour_of_year(when: datetime) -> float:
    """Hours since 1 Jan 00:00 in a 365-day year (29 Feb reads as 28 Feb), in the EPW's local time."""
    doy = min(when.timetuple().tm_yday, 365)
    if when.month > 2 and when.year % 4 == 0 and (when.year % 100 != 0 or when.year % 400 == 0):
        doy -= 1  # keep March onwards aligned with the 365-day TMY
    elif when.month == 2 and when.day == 29:
        doy -= 1
    return (doy - 1) * 24 + when.hour + when.minute / 60 + when.second / 3600


@dataclass(frozen=True)
class Weather:
    """One year of hourly outdoor conditions; `at(hour)` interpolates linearly, wrapping at new year."""

    name: str
    dry_bulb_c: np.ndarray  # HOURS_PER_YEAR + 1 values at 0, 1, ..., 8760 h (0 == 8760)
    dew_point_c: np.ndarray
    pressure_pa: np.ndarray
    wet_bulb_c: np.ndarray

    def at(self, hour: float) -> tuple[float, float]:
        """(dry-bulb, wet-bulb) in C at `hour` hours since 1 Jan 00:00 (any real, wraps yearly)."""
        h = hour % HOURS_PER_YEAR
        i = int(h)
        f = h - i
        db = self.dry_bulb_c[i] + f * (self.dry_bulb_c[i + 1] - self.dry_bulb_c[i])
        wb = self.wet_bulb_c[i] + f * (self.wet_bulb_c[i + 1] - self.wet_bulb_c[i])
        return float(db), float(wb)


def parse_epw(text: str, name: str = "epw") -> Weather:
    """Dry-bulb, dew point and pressure (columns 7, 8, 10) of an EPW's 8760 data rows (after 8 header lines)."""
    rows = [line.split(",") for line in text.splitlines()[8:] if line.strip()]
    if len(rows) != HOURS_PER_YEAR:
        raise ValueError(f"{name}: expected {HOURS_PER_YEAR} hourly rows, found {len(rows)}")
    data = np.array([[float(r[6]), float(r[7]), float(r[9])] for r in rows])
    # EPW row k is the hour ending at k+1 h; the value at 0 h is the year's last row (wrap).
    db, dp, p = (np.concatenate([data[-1:, j], data[:, j]]) for j in range(3))
    return Weather(name=name, dry_bulb_c=db, dew_point_c=dp, pressure_pa=p, wet_bulb_c=wet_bulb_c(db, dp, p))


@cache
def load_climate(climate: str) -> Weather:
    """The shipped weather year for `climate` (hot, mixed or cool)."""
    if climate not in EPW_FILES:
        raise ValueError(f"unknown climate {climate!r}; choose one of {sorted(EPW_FILES)}")
    return parse_epw((WEATHER_DIR / EPW_FILES[climate]).read_text(), climate)
