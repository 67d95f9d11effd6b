"""Facility series derived from the latest readings: one definition for the API, live views and reports.

IT and facility power come from the site's meters when it has them (`it_power_kilowatt`, the UPS output;
`facility_power_kilowatt`, the utility incomer), else from the sum of GPU power and IT + cooling power.
"""

from __future__ import annotations

import math

import numpy as np

# DCGM clocks-event reasons that mean the GPU is held below its clocks by power or heat (0x1 idle and
# 0x2 application clocks setting are not throttling).
THROTTLE_REASONS = 0x4 | 0x8 | 0x20 | 0x40 | 0x80
THERMAL_REASONS = 0x8 | 0x20 | 0x40
POWER_REASONS = 0x4 | 0x80


def _total(values) -> float:
    array = np.asarray(values, dtype=float)
    return float(np.nansum(array)) if array.size and not np.all(np.isnan(array)) else math.nan


def facility_kpis(gpu: dict[str, np.ndarray], points: list[dict]) -> dict[str, float]:
    """KPIs from the latest value of each GPU column (NaN where missing) and each point.

    `gpu` holds arrays keyed by storage column (`power_usage` W, `tflops`, `clocks_event_reasons`,
    `gpu_temp`); `points` dicts with cooling_unit, metric and value.
    """
    site = {p["metric"]: p["value"] for p in points if not p.get("cooling_unit")}
    cooling_kw = _total([p["value"] for p in points if p.get("cooling_unit") and p["metric"] == "unit_power_kilowatt"])
    gpu_kw = _total(gpu.get("power_usage", [])) / 1000
    it_kw = site.get("it_power_kilowatt", gpu_kw)
    facility_kw = site.get("facility_power_kilowatt")
    if facility_kw is None:
        facility_kw = it_kw + (0.0 if math.isnan(cooling_kw) else cooling_kw)
    tflops = _total(gpu.get("tflops", []))
    reasons = np.asarray(gpu.get("clocks_event_reasons", []), dtype=float)
    known = reasons[~np.isnan(reasons)].astype(np.int64)
    temps = np.asarray(gpu.get("gpu_temp", []), dtype=float)
    return {
        "it_power_kw": it_kw,
        "gpu_power_kw": gpu_kw,
        "cooling_power_kw": cooling_kw,
        "facility_power_kw": facility_kw,
        "pue": facility_kw / it_kw if it_kw and not math.isnan(it_kw) and it_kw > 0 else math.nan,
        "tflops": tflops,
        "tflops_per_kw": tflops / facility_kw if facility_kw and facility_kw > 0 else math.nan,
        "gpus_reporting": int(np.count_nonzero(~np.isnan(temps))) if temps.size else 0,
        "gpus_throttling": int(np.count_nonzero(known & THROTTLE_REASONS)),
        "gpus_thermal_throttling": int(np.count_nonzero(known & THERMAL_REASONS)),
        "hottest_gpu_temp_c": float(np.nanmax(temps)) if temps.size and not np.all(np.isnan(temps)) else math.nan,
    }
