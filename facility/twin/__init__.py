"""FuseDC's digital twin: pure numpy physics of GPUs, nodes and cooling plant (see shared TWIN.md).

Imports nothing from Django or the other apps; the telemetry app wraps it as a source and the control
app as an actuator.
"""

from .calibration import PUBLISHED, calibrate, comparison_rows, format_comparison, published
from .gpu import (
    REASON_GPU_IDLE,
    REASON_HW_SLOWDOWN,
    REASON_HW_THERMAL,
    REASON_SW_POWER_CAP,
    REASON_SW_THERMAL,
)
from .layout import Layout, LayoutError, layout_from_facility
from .params import PROFILE_KEYS, Profile, load_profile
from .sensors import SensorConfig, SensorModel
from .synthetic import synthetic_facility
from .twin import DCGM_FIELDS, GpuInfo, Scenario, Snapshot, Twin
from .weather import load_climate, wet_bulb_c
from .workload import WORKLOADS

PROFILES = tuple(PROFILE_KEYS)

__all__ = [
    "DCGM_FIELDS",
    "PROFILES",
    "PUBLISHED",
    "REASON_GPU_IDLE",
    "REASON_HW_SLOWDOWN",
    "REASON_HW_THERMAL",
    "REASON_SW_POWER_CAP",
    "REASON_SW_THERMAL",
    "WORKLOADS",
    "GpuInfo",
    "Layout",
    "LayoutError",
    "Profile",
    "Scenario",
    "SensorConfig",
    "SensorModel",
    "Snapshot",
    "Twin",
    "calibrate",
    "comparison_rows",
    "format_comparison",
    "layout_from_facility",
    "load_climate",
    "load_profile",
    "published",
    "synthetic_facility",
    "wet_bulb_c",
]
