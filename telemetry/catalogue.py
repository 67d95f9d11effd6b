"""The metric catalogue: every telemetry point FuseDC stores, in one place.

GPU metrics are named as dcgm-exporter names them by default (its etc/default-counters.csv), because that
is what operators already have in Prometheus and Grafana. DCGM 4.6 renamed many fields (``GPU_TEMP`` ->
``GPU_TEMP_CELSIUS``, ``POWER_USAGE`` -> ``BOARD_POWER_WATTS``, ``PROF_PIPE_TENSOR_ACTIVE`` ->
``PROF_TENSOR_UTIL_RATIO``...) while keeping the numeric field id; those names, and dcgm-exporter 1.x
(``--use-old-namespace``) names such as ``dcgm_gpu_temp``, are accepted as aliases.

Cooling and site points use Brick-style names with the SI unit in the name.

Pure Python: no Django import, so parsers and workers can use it anywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

__all__ = [
    "CATALOGUE",
    "HOT_GPU_METRICS",
    "Equipment",
    "Kind",
    "Metric",
    "Origin",
    "Unit",
    "all_metrics",
    "get",
    "resolve",
]


class Unit(StrEnum):
    CELSIUS = "celsius"
    KELVIN = "kelvin"
    WATT = "watt"
    KILOWATT = "kilowatt"
    MILLIJOULE = "millijoule"
    MEGAHERTZ = "megahertz"
    PERCENT = "percent"
    RATIO = "ratio"
    BITMASK = "bitmask"
    NANOSECOND = "nanosecond"
    MEBIBYTE = "mebibyte"
    BYTES_PER_SECOND = "bytes_per_second"
    COUNT = "count"
    TFLOPS = "tflops"
    LITERS_PER_MINUTE = "liters_per_minute"
    KILOPASCAL = "kilopascal"


class Kind(StrEnum):
    GAUGE = "gauge"
    # Monotonic; a decrease means a reset (driver reload for DCGM counters), not negative usage.
    COUNTER = "counter"
    # Integer flags; never averaged or interpolated.
    BITMASK = "bitmask"


class Equipment(StrEnum):
    GPU = "gpu"
    COOLING_UNIT = "cooling_unit"
    SITE = "site"


class Origin(StrEnum):
    DCGM = "dcgm"
    # Computed by FuseDC itself; no DCGM field or vendor sensor behind it.
    FUSEDC = "fusedc"
    BRICK = "brick"


@dataclass(frozen=True, slots=True)
class Metric:
    """One telemetry point: its canonical name, accepted aliases, SI unit and plausible range."""

    name: str
    dcgm_field_id: int | None
    aliases: tuple[str, ...]
    unit: Unit
    kind: Kind
    equipment: Equipment
    description: str
    min_value: float | None = None
    max_value: float | None = None
    allow_nan: bool = False
    origin: Origin = Origin.DCGM
    # True where dcgm-exporter reports one value per MIG GPU instance (profiling, framebuffer); False where
    # the value belongs to the physical GPU and MIG instances merely repeat it.
    per_mig_instance: bool = False
    # A read-back of a commanded value (not a measurement); control proposes changes to these.
    setpoint: bool = False

    def check(self, value: float) -> str | None:
        """Return why ``value`` is not acceptable for this metric, or None if it is."""
        if math.isnan(value):
            return None if self.allow_nan else f"NaN is not allowed for {self.name}"
        if math.isinf(value):
            return f"{value} is not allowed for {self.name}"
        if self.kind is Kind.BITMASK and value != int(value):
            return f"{self.name} is a bitmask; {value!r} is not an integer"
        if self.min_value is not None and value < self.min_value:
            return f"{value!r} is below the plausible minimum {self.min_value!r} {self.unit} for {self.name}"
        if self.max_value is not None and value > self.max_value:
            return f"{value!r} is above the plausible maximum {self.max_value!r} {self.unit} for {self.name}"
        return None


def _gpu(
    name: str,
    field_id: int | None,
    unit: Unit,
    kind: Kind,
    description: str,
    *aliases: str,
    lo: float | None = None,
    hi: float | None = None,
    per_mig_instance: bool = False,
    origin: Origin = Origin.DCGM,
) -> Metric:
    return Metric(
        name=name,
        dcgm_field_id=field_id,
        aliases=aliases,
        unit=unit,
        kind=kind,
        equipment=Equipment.GPU,
        description=description,
        min_value=lo,
        max_value=hi,
        per_mig_instance=per_mig_instance,
        origin=origin,
    )


def _point(
    name: str,
    unit: Unit,
    description: str,
    lo: float,
    hi: float,
    *,
    equipment: Equipment = Equipment.COOLING_UNIT,
    setpoint: bool = False,
) -> Metric:
    return Metric(
        name=name,
        dcgm_field_id=None,
        aliases=(),
        unit=unit,
        kind=Kind.GAUGE,
        equipment=equipment,
        description=description,
        min_value=lo,
        max_value=hi,
        origin=Origin.BRICK,
        setpoint=setpoint,
    )


G, C, B = Kind.GAUGE, Kind.COUNTER, Kind.BITMASK
# Bounds are "physically plausible", deliberately wide: they catch unit mix-ups and garbage, not alarms.
# fmt: off
_METRICS: tuple[Metric, ...] = (
    # --- GPU: thermal ---
    _gpu("DCGM_FI_DEV_GPU_TEMP", 150, Unit.CELSIUS, G, "GPU die temperature.",
         "DCGM_FI_DEV_GPU_TEMP_CELSIUS", "dcgm_gpu_temp", lo=-40, hi=150),
    # Some boards (e.g. L4, T4) report 0 rather than a blank when they have no memory sensor.
    _gpu("DCGM_FI_DEV_MEMORY_TEMP", 140, Unit.CELSIUS, G, "GPU memory (HBM/GDDR) temperature.",
         "DCGM_FI_DEV_MEMORY_TEMP_CELSIUS", "dcgm_memory_temp", lo=-40, hi=150),
    _gpu("DCGM_FI_DEV_SLOWDOWN_TEMP", 158, Unit.CELSIUS, G,
         "Temperature at which the GPU starts slowing its clocks (interlock reference).",
         "DCGM_FI_DEV_GPU_TEMP_SLOWDOWN_CELSIUS", lo=0, hi=150),
    _gpu("DCGM_FI_DEV_FAN_SPEED", 191, Unit.PERCENT, G, "GPU fan speed (air-cooled boards); may exceed 100.",
         lo=0, hi=200),
    # --- GPU: power and energy ---
    _gpu("DCGM_FI_DEV_POWER_USAGE", 155, Unit.WATT, G, "Board power draw.",
         "DCGM_FI_DEV_BOARD_POWER_WATTS", "dcgm_power_usage", lo=0, hi=5000),
    _gpu("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", 156, Unit.MILLIJOULE, C,
         "Energy consumed since the driver was last loaded; resets on driver reload.",
         "dcgm_total_energy_consumption", lo=0, hi=2**62),  # stored as bigint: below 2**63
    _gpu("DCGM_FI_DEV_POWER_MGMT_LIMIT", 160, Unit.WATT, G, "Current (requested) board power limit.",
         "DCGM_FI_DEV_BOARD_POWER_LIMIT_REQUESTED_WATTS", lo=0, hi=5000),
    # --- GPU: clocks and throttling ---
    _gpu("DCGM_FI_DEV_SM_CLOCK", 100, Unit.MEGAHERTZ, G, "SM (graphics) clock.",
         "dcgm_sm_clock", lo=0, hi=10000),
    _gpu("DCGM_FI_DEV_MEM_CLOCK", 101, Unit.MEGAHERTZ, G, "Memory clock.",
         "dcgm_memory_clock", lo=0, hi=30000),
    _gpu("DCGM_FI_DEV_CLOCKS_EVENT_REASONS", 112, Unit.BITMASK, B,
         "Why clocks are below their maximum (DCGM_CLOCKS_EVENT_REASON_* flags: 0x20 SW thermal, "
         "0x40 HW thermal, 0x4 SW power cap, 0x8 HW slowdown, ...).",
         "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", lo=0, hi=2**62),
    # dcgm-exporter's help text and NVML say ns; DCGM's header comment says usec. We follow what is exported.
    _gpu("DCGM_FI_DEV_POWER_VIOLATION", 240, Unit.NANOSECOND, C,
         "Cumulative time clocks were held down by the power limit.", "dcgm_power_violation", lo=0, hi=2**62),
    _gpu("DCGM_FI_DEV_THERMAL_VIOLATION", 241, Unit.NANOSECOND, C,
         "Cumulative time clocks were held down by thermal limits.", "dcgm_thermal_violation", lo=0, hi=2**62),
    # --- GPU: utilisation ---
    # Not aliased: DCGM_FI_DEV_GPU_UTIL_RATIO, because DCGM releases disagree on whether it is the same
    # integer percent (id 203) or a new 0-1 double; mapping it here could scale values by 100.
    _gpu("DCGM_FI_DEV_GPU_UTIL", 203, Unit.PERCENT, G, "Percent of time a kernel was running (0-100).",
         "dcgm_gpu_utilization", lo=0, hi=100),
    _gpu("DCGM_FI_DEV_MEM_COPY_UTIL", 204, Unit.PERCENT, G,
         "Percent of time memory was being read or written.",
         "dcgm_mem_copy_utilization", lo=0, hi=100),
    _gpu("DCGM_FI_DEV_ENC_UTIL", 206, Unit.PERCENT, G, "Video encoder utilisation.",
         "dcgm_enc_utilization", lo=0, hi=100),
    _gpu("DCGM_FI_DEV_DEC_UTIL", 207, Unit.PERCENT, G, "Video decoder utilisation.",
         "dcgm_dec_utilization", lo=0, hi=100),
    # PROF_* are 0-1 ratios, even where the 1.x help text says "(in %)".
    _gpu("DCGM_FI_PROF_GR_ENGINE_ACTIVE", 1001, Unit.RATIO, G,
         "Fraction of time the graphics/compute engine was active.",
         "DCGM_FI_PROF_GR_ENGINE_UTIL_RATIO", "dcgm_fi_prof_gr_engine_active",
         lo=0, hi=1, per_mig_instance=True),
    _gpu("DCGM_FI_PROF_SM_ACTIVE", 1002, Unit.RATIO, G,
         "Fraction of time at least one warp was active on an SM.",
         "DCGM_FI_PROF_SM_UTIL_RATIO", "dcgm_fi_prof_sm_active",
         lo=0, hi=1, per_mig_instance=True),
    _gpu("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", 1004, Unit.RATIO, G,
         "Fraction of cycles the tensor pipe was active.",
         "DCGM_FI_PROF_TENSOR_UTIL_RATIO", "dcgm_fi_prof_pipe_tensor_active",
         lo=0, hi=1, per_mig_instance=True),
    _gpu("DCGM_FI_PROF_DRAM_ACTIVE", 1005, Unit.RATIO, G,
         "Fraction of cycles the memory interface was busy.",
         "DCGM_FI_PROF_DRAM_UTIL_RATIO", "dcgm_fi_prof_dram_active",
         lo=0, hi=1, per_mig_instance=True),
    # A rate in bytes/s (dcgm-exporter >= 3 exports it as a gauge; 1.x called it a counter).
    _gpu("DCGM_FI_PROF_PCIE_TX_BYTES", 1009, Unit.BYTES_PER_SECOND, G,
         "PCIe transmit rate incl. protocol headers.", "dcgm_fi_prof_pcie_tx_bytes", lo=0, hi=1e12),
    _gpu("DCGM_FI_PROF_PCIE_RX_BYTES", 1010, Unit.BYTES_PER_SECOND, G,
         "PCIe receive rate incl. protocol headers.", "dcgm_fi_prof_pcie_rx_bytes", lo=0, hi=1e12),
    # --- GPU: memory and health ---
    _gpu("DCGM_FI_DEV_FB_FREE", 251, Unit.MEBIBYTE, G, "Framebuffer memory free.",
         "dcgm_fb_free", lo=0, hi=1e7, per_mig_instance=True),
    _gpu("DCGM_FI_DEV_FB_USED", 252, Unit.MEBIBYTE, G, "Framebuffer memory used.",
         "dcgm_fb_used", lo=0, hi=1e7, per_mig_instance=True),
    _gpu("DCGM_FI_DEV_FB_RESERVED", 253, Unit.MEBIBYTE, G, "Framebuffer memory reserved by the driver.",
         lo=0, hi=1e7, per_mig_instance=True),
    # A gauge: the last XID seen, not a count of them.
    _gpu("DCGM_FI_DEV_XID_ERRORS", 230, Unit.COUNT, G, "Value (code) of the last XID error.",
         "DCGM_FI_DEV_XID_ERROR", "dcgm_xid_errors", lo=0, hi=1e6),
    _gpu("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", 202, Unit.COUNT, C, "PCIe replays (retries).",
         "DCGM_FI_DEV_PCIE_REPLAY_TOTAL", "dcgm_pcie_replay_counter", lo=0),
    _gpu("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", 393, Unit.COUNT, C,
         "Rows remapped for uncorrectable errors.", "DCGM_FI_DEV_ROW_REMAP_UNCORRECTABLE_TOTAL", lo=0),
    _gpu("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", 394, Unit.COUNT, C,
         "Rows remapped for correctable errors.", "DCGM_FI_DEV_ROW_REMAP_CORRECTABLE_TOTAL", lo=0),
    _gpu("DCGM_FI_DEV_ROW_REMAP_FAILURE", 395, Unit.COUNT, G, "1 if row remapping has failed.",
         "DCGM_FI_DEV_ROW_REMAP_FAILED", lo=0, hi=1),
    # --- GPU: FuseDC-defined ---
    _gpu("FUSEDC_GPU_TFLOPS", None, Unit.TFLOPS, G,
         "NOT a DCGM field: achieved dense throughput computed by FuseDC (workload counters or "
         "tensor activity times the model's peak).", lo=0, hi=50000, origin=Origin.FUSEDC),
    # --- Cooling: water side (primary/secondary, pump 1/2... is the entity's point) ---
    _point("supply_water_temperature_celsius", Unit.CELSIUS, "Coolant supply temperature.", -10, 100),
    _point("return_water_temperature_celsius", Unit.CELSIUS, "Coolant return temperature.", -10, 100),
    _point("supply_water_pressure_kilopascal", Unit.KILOPASCAL, "Coolant supply pressure.", -100, 3000),
    _point("return_water_pressure_kilopascal", Unit.KILOPASCAL, "Coolant return pressure.", -100, 3000),
    _point("differential_pressure_kilopascal", Unit.KILOPASCAL, "Supply-return pressure difference.",
           -1000, 3000),
    _point("flow_liters_per_minute", Unit.LITERS_PER_MINUTE, "Coolant volumetric flow.", 0, 1e6),
    _point("pump_speed_ratio", Unit.RATIO, "Pump speed as a fraction of nominal (may exceed 1).", 0, 1.5),
    _point("heat_removed_kilowatt", Unit.KILOWATT, "Heat carried away by the coolant.", -1000, 1e5),
    _point("coolant_level_ratio", Unit.RATIO, "Reservoir or loop coolant level as a fraction of full.", 0, 1),
    # --- Cooling: air side ---
    _point("supply_air_temperature_celsius", Unit.CELSIUS,
           "Air supplied to IT (CRAH discharge / cold aisle / server intake).", -20, 80),
    _point("return_air_temperature_celsius", Unit.CELSIUS,
           "Air returned from IT (hot aisle / CRAH intake / server exhaust).", -20, 100),
    _point("fan_speed_ratio", Unit.RATIO, "Fan speed as a fraction of full speed.", 0, 1),
    # --- Cooling: equipment power ---
    _point("unit_power_kilowatt", Unit.KILOWATT, "Electrical power drawn by the equipment the entity names.",
           0, 1e5),
    # --- Cooling: setpoint read-backs ---
    _point("supply_air_temperature_setpoint_celsius", Unit.CELSIUS, "CRAH/CRAC supply air setpoint.", 5, 45,
           setpoint=True),
    _point("chilled_water_supply_temperature_setpoint_celsius", Unit.CELSIUS,
           "Chiller leaving chilled-water setpoint.", 0, 35, setpoint=True),
    _point("leaving_water_temperature_setpoint_celsius", Unit.CELSIUS,
           "Cooling tower / dry cooler leaving condenser-water setpoint.", 0, 60, setpoint=True),
    _point("secondary_supply_temperature_setpoint_celsius", Unit.CELSIUS,
           "CDU secondary (technology cooling system) supply temperature setpoint.", 5, 70, setpoint=True),
    _point("differential_pressure_setpoint_kilopascal", Unit.KILOPASCAL,
           "Loop differential pressure setpoint.", 0, 3000, setpoint=True),
    _point("pump_speed_setpoint_ratio", Unit.RATIO, "Commanded pump speed, as a fraction of nominal.", 0, 1.5,
           setpoint=True),
    _point("fan_speed_setpoint_ratio", Unit.RATIO, "Commanded fan speed.", 0, 1, setpoint=True),
    # --- Site / weather ---
    _point("outdoor_dry_bulb_temperature_celsius", Unit.CELSIUS, "Outdoor dry-bulb air temperature.", -70, 60,
           equipment=Equipment.SITE),
    _point("outdoor_wet_bulb_temperature_celsius", Unit.CELSIUS, "Outdoor wet-bulb temperature.", -70, 45,
           equipment=Equipment.SITE),
    _point("outdoor_relative_humidity_ratio", Unit.RATIO, "Outdoor relative humidity.", 0, 1,
           equipment=Equipment.SITE),
    # Site electrical meters (UPS output = IT load; utility incomer = whole facility), as a BMS/EPMS reports them.
    _point("it_power_kilowatt", Unit.KILOWATT, "IT load: UPS output / PDU sum.", 0, 1e6,
           equipment=Equipment.SITE),
    _point("facility_power_kilowatt", Unit.KILOWATT, "Whole-facility power at the utility incomer.", 0, 1e6,
           equipment=Equipment.SITE),
)
# fmt: on

# The columns of a wide per-GPU row, in a fixed order (append only: storage layouts depend on it).
HOT_GPU_METRICS: tuple[str, ...] = (
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_MEMORY_TEMP",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
    "DCGM_FI_DEV_SM_CLOCK",
    "DCGM_FI_DEV_MEM_CLOCK",
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
    "DCGM_FI_DEV_CLOCKS_EVENT_REASONS",
    "DCGM_FI_DEV_POWER_VIOLATION",
    "DCGM_FI_DEV_THERMAL_VIOLATION",
    "FUSEDC_GPU_TFLOPS",
)


def _index(metrics: tuple[Metric, ...]) -> MappingProxyType[str, Metric]:
    by_name: dict[str, Metric] = {}
    for metric in metrics:
        for key in (metric.name, *metric.aliases):
            # A name that meant two things would silently merge two series.
            if key in by_name:
                raise ValueError(f"metric name {key!r} is defined twice in the catalogue")
            by_name[key] = metric
    return MappingProxyType(by_name)


CATALOGUE: MappingProxyType[str, Metric] = MappingProxyType({m.name: m for m in _METRICS})
_BY_ANY_NAME = _index(_METRICS)

for _name in HOT_GPU_METRICS:
    if CATALOGUE.get(_name) is None or CATALOGUE[_name].equipment is not Equipment.GPU:
        raise ValueError(f"hot metric {_name!r} is not a GPU metric of the catalogue")


def resolve(name: str) -> Metric | None:
    """The metric that ``name`` (canonical or any alias, exact case) refers to, or None."""
    return _BY_ANY_NAME.get(name)


def get(name: str) -> Metric:
    """The metric with canonical or alias ``name``; KeyError if unknown."""
    metric = _BY_ANY_NAME.get(name)
    if metric is None:
        raise KeyError(name)
    return metric


def all_metrics() -> tuple[Metric, ...]:
    """Every metric, in catalogue order."""
    return _METRICS
