import csv
import subprocess
import sys
from pathlib import Path

import pytest

from telemetry import catalogue
from telemetry.catalogue import HOT_GPU_METRICS, Equipment, Kind, Origin, Unit, all_metrics, get, resolve
from telemetry.tests import DATA

# In dcgm-exporter's default set but deliberately not catalogued: a label, a licence flag, and an NVLink
# figure whose unit DCGM's own documents disagree on.
NOT_CATALOGUED = {
    "DCGM_FI_DRIVER_VERSION",
    "DCGM_FI_DEV_VGPU_LICENSE_STATUS",
    "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
    "dcgm_nvlink_bandwidth_total",
}

# (old name, DCGM 4.6 name): the renames this catalogue accepts, from DCGM 4.6's dcgm_fields.
RENAMES = [
    ("DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_GPU_TEMP_CELSIUS"),
    ("DCGM_FI_DEV_MEMORY_TEMP", "DCGM_FI_DEV_MEMORY_TEMP_CELSIUS"),
    ("DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_BOARD_POWER_WATTS"),
    ("DCGM_FI_DEV_SLOWDOWN_TEMP", "DCGM_FI_DEV_GPU_TEMP_SLOWDOWN_CELSIUS"),
    ("DCGM_FI_DEV_POWER_MGMT_LIMIT", "DCGM_FI_DEV_BOARD_POWER_LIMIT_REQUESTED_WATTS"),
    ("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "DCGM_FI_DEV_CLOCKS_EVENT_REASONS"),
    ("DCGM_FI_DEV_XID_ERRORS", "DCGM_FI_DEV_XID_ERROR"),
    ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "DCGM_FI_DEV_PCIE_REPLAY_TOTAL"),
    ("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "DCGM_FI_DEV_ROW_REMAP_UNCORRECTABLE_TOTAL"),
    ("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", "DCGM_FI_DEV_ROW_REMAP_CORRECTABLE_TOTAL"),
    ("DCGM_FI_DEV_ROW_REMAP_FAILURE", "DCGM_FI_DEV_ROW_REMAP_FAILED"),
    ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "DCGM_FI_PROF_GR_ENGINE_UTIL_RATIO"),
    ("DCGM_FI_PROF_SM_ACTIVE", "DCGM_FI_PROF_SM_UTIL_RATIO"),
    ("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "DCGM_FI_PROF_TENSOR_UTIL_RATIO"),
    ("DCGM_FI_PROF_DRAM_ACTIVE", "DCGM_FI_PROF_DRAM_UTIL_RATIO"),
]

# (dcgm-exporter 1.x name, current exporter name), paired by their help text in the two csv files.
OLD_NAMESPACE = [
    ("dcgm_sm_clock", "DCGM_FI_DEV_SM_CLOCK"),
    ("dcgm_memory_clock", "DCGM_FI_DEV_MEM_CLOCK"),
    ("dcgm_memory_temp", "DCGM_FI_DEV_MEMORY_TEMP"),
    ("dcgm_gpu_temp", "DCGM_FI_DEV_GPU_TEMP"),
    ("dcgm_power_usage", "DCGM_FI_DEV_POWER_USAGE"),
    ("dcgm_total_energy_consumption", "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"),
    ("dcgm_pcie_replay_counter", "DCGM_FI_DEV_PCIE_REPLAY_COUNTER"),
    ("dcgm_gpu_utilization", "DCGM_FI_DEV_GPU_UTIL"),
    ("dcgm_mem_copy_utilization", "DCGM_FI_DEV_MEM_COPY_UTIL"),
    ("dcgm_enc_utilization", "DCGM_FI_DEV_ENC_UTIL"),
    ("dcgm_dec_utilization", "DCGM_FI_DEV_DEC_UTIL"),
    ("dcgm_xid_errors", "DCGM_FI_DEV_XID_ERRORS"),
    ("dcgm_power_violation", "DCGM_FI_DEV_POWER_VIOLATION"),
    ("dcgm_thermal_violation", "DCGM_FI_DEV_THERMAL_VIOLATION"),
    ("dcgm_fb_free", "DCGM_FI_DEV_FB_FREE"),
    ("dcgm_fb_used", "DCGM_FI_DEV_FB_USED"),
    ("dcgm_fi_prof_gr_engine_active", "DCGM_FI_PROF_GR_ENGINE_ACTIVE"),
    ("dcgm_fi_prof_sm_active", "DCGM_FI_PROF_SM_ACTIVE"),
    ("dcgm_fi_prof_pipe_tensor_active", "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE"),
    ("dcgm_fi_prof_dram_active", "DCGM_FI_PROF_DRAM_ACTIVE"),
    ("dcgm_fi_prof_pcie_tx_bytes", "DCGM_FI_PROF_PCIE_TX_BYTES"),
    ("dcgm_fi_prof_pcie_rx_bytes", "DCGM_FI_PROF_PCIE_RX_BYTES"),
]


def csv_fields(path: Path, *, commented: bool = False) -> list[str]:
    """Field names of a dcgm-exporter collector csv (optionally including the commented-out examples)."""
    names = []
    for row in csv.reader(path.read_text(encoding="utf-8").splitlines()):
        if not row or not row[0].strip():
            continue
        first = row[0].strip()
        if first.startswith("#"):
            first = first.lstrip("#").strip()
            if not commented or len(row) < 3:
                continue
        names.append(first)
    return names


@pytest.mark.parametrize("csv_name", ["default-counters.csv", "dcp-metrics-included.csv"])
def test_every_active_default_counter_is_catalogued(csv_name):
    fields = csv_fields(DATA / "dcgm" / csv_name)
    assert len(fields) > 20
    missing = [f for f in fields if resolve(f) is None and f not in NOT_CATALOGUED]
    assert missing == []


def test_every_active_old_namespace_name_is_catalogued():
    fields = csv_fields(DATA / "dcgm" / "1.x-compatibility-metrics.csv")
    missing = [f for f in fields if resolve(f) is None and f not in NOT_CATALOGUED]
    assert missing == []


def test_catalogued_canonical_names_are_dcgm_exporter_names():
    # Canonical names are what dcgm-exporter exports (active or commented example), not a private spelling.
    exporter = set(csv_fields(DATA / "dcgm" / "default-counters.csv", commented=True))
    exporter |= {"DCGM_FI_DEV_SLOWDOWN_TEMP", "DCGM_FI_DEV_POWER_MGMT_LIMIT", "DCGM_FI_DEV_CLOCKS_EVENT_REASONS",
                 "DCGM_FI_DEV_FAN_SPEED"}  # fmt: skip
    for metric in all_metrics():
        if metric.origin is Origin.DCGM:
            assert metric.name in exporter, metric.name


@pytest.mark.parametrize(("old", "new"), RENAMES)
def test_old_and_new_dcgm_names_resolve_to_the_same_metric(old, new):
    assert resolve(old) is not None
    assert resolve(old) is resolve(new)


@pytest.mark.parametrize(("old", "current"), OLD_NAMESPACE)
def test_exporter_1x_names_resolve_to_the_same_metric(old, current):
    assert resolve(old) is not None
    assert resolve(old) is resolve(current)


def test_gpu_util_ratio_is_not_silently_aliased():
    # Its scale (percent vs 0-1) differs between DCGM releases; better unknown than off by 100x.
    assert resolve("DCGM_FI_DEV_GPU_UTIL_RATIO") is None


def test_resolve_unknown_and_get():
    assert resolve("go_goroutines") is None
    assert resolve("dcgm_fi_dev_gpu_temp") is None  # exact case only
    with pytest.raises(KeyError):
        get("nope")
    assert get("DCGM_FI_DEV_GPU_TEMP_CELSIUS").name == "DCGM_FI_DEV_GPU_TEMP"


def test_names_aliases_and_field_ids_are_unique():
    seen: dict[str, str] = {}
    for metric in all_metrics():
        for key in (metric.name, *metric.aliases):
            assert key not in seen, (key, seen.get(key))
            seen[key] = metric.name
    ids = [m.dcgm_field_id for m in all_metrics() if m.dcgm_field_id is not None]
    assert len(ids) == len(set(ids))
    assert set(catalogue.CATALOGUE) == {m.name for m in all_metrics()}


def test_field_ids_of_the_core_metrics():
    expected = {
        "DCGM_FI_DEV_SM_CLOCK": 100, "DCGM_FI_DEV_MEM_CLOCK": 101, "DCGM_FI_DEV_CLOCKS_EVENT_REASONS": 112,
        "DCGM_FI_DEV_MEMORY_TEMP": 140, "DCGM_FI_DEV_GPU_TEMP": 150, "DCGM_FI_DEV_POWER_USAGE": 155,
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": 156, "DCGM_FI_DEV_GPU_UTIL": 203,
        "DCGM_FI_DEV_POWER_VIOLATION": 240, "DCGM_FI_DEV_THERMAL_VIOLATION": 241,
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": 1004,
    }  # fmt: skip
    assert {name: get(name).dcgm_field_id for name in expected} == expected


def test_units_and_kinds_of_the_core_metrics():
    assert get("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION").unit is Unit.MILLIJOULE
    assert get("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION").kind is Kind.COUNTER
    assert get("DCGM_FI_DEV_GPU_UTIL").unit is Unit.PERCENT
    assert get("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE").unit is Unit.RATIO
    assert (get("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE").min_value, get("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE").max_value) == (
        0,
        1,
    )
    assert get("DCGM_FI_DEV_CLOCKS_EVENT_REASONS").kind is Kind.BITMASK
    assert get("DCGM_FI_DEV_THERMAL_VIOLATION").kind is Kind.COUNTER
    for metric in all_metrics():
        if metric.name.startswith("DCGM_FI_PROF_") and metric.unit is not Unit.BYTES_PER_SECOND:
            assert metric.unit is Unit.RATIO and metric.per_mig_instance, metric.name
        if metric.name.endswith("_UTIL"):
            assert metric.unit is Unit.PERCENT, metric.name


def test_tflops_is_fusedc_defined():
    tflops = get("FUSEDC_GPU_TFLOPS")
    assert tflops.origin is Origin.FUSEDC
    assert tflops.dcgm_field_id is None
    assert "NOT a DCGM field" in tflops.description
    assert tflops.unit is Unit.TFLOPS


def test_hot_gpu_metrics_are_fixed_and_gpu():
    assert HOT_GPU_METRICS[:3] == ("DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_MEMORY_TEMP", "DCGM_FI_DEV_POWER_USAGE")
    assert len(set(HOT_GPU_METRICS)) == len(HOT_GPU_METRICS)
    for name in HOT_GPU_METRICS:
        assert get(name).name == name
        assert get(name).equipment is Equipment.GPU
    assert "FUSEDC_GPU_TFLOPS" in HOT_GPU_METRICS
    assert "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE" in HOT_GPU_METRICS


REQUIRED_POINTS = [
    "supply_water_temperature_celsius", "return_water_temperature_celsius", "supply_air_temperature_celsius",
    "return_air_temperature_celsius", "flow_liters_per_minute", "differential_pressure_kilopascal",
    "pump_speed_ratio", "fan_speed_ratio", "heat_removed_kilowatt", "unit_power_kilowatt",
    "supply_air_temperature_setpoint_celsius", "chilled_water_supply_temperature_setpoint_celsius",
    "leaving_water_temperature_setpoint_celsius", "secondary_supply_temperature_setpoint_celsius",
    "pump_speed_setpoint_ratio", "outdoor_dry_bulb_temperature_celsius", "outdoor_wet_bulb_temperature_celsius",
]  # fmt: skip


@pytest.mark.parametrize("name", REQUIRED_POINTS)
def test_cooling_and_site_points_exist(name):
    metric = get(name)
    assert metric.equipment in (Equipment.COOLING_UNIT, Equipment.SITE)
    assert metric.dcgm_field_id is None
    assert metric.setpoint == ("_setpoint_" in name)


def test_brick_point_names_carry_their_unit():
    for metric in all_metrics():
        if metric.origin is Origin.BRICK:
            assert metric.name.endswith("_" + metric.unit.value), metric.name
            assert metric.name == metric.name.lower()


def test_check_rejects_nan_inf_out_of_range_and_fractional_bitmasks():
    temp = get("DCGM_FI_DEV_GPU_TEMP")
    assert temp.check(55.0) is None
    assert "NaN" in temp.check(float("nan"))
    assert temp.check(float("inf")) is not None
    assert "maximum" in temp.check(1000.0)
    assert "minimum" in temp.check(-300.0)
    reasons = get("DCGM_FI_DEV_CLOCKS_EVENT_REASONS")
    assert reasons.check(0x60) is None
    assert "bitmask" in reasons.check(1.5)
    assert get("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION").check(1e15) is None  # counters have no upper bound


def test_catalogue_and_parsers_do_not_import_django():
    code = (
        "import sys, telemetry.catalogue, telemetry.parsers.prometheus, telemetry.parsers.redfish; "
        "assert not [m for m in sys.modules if m.split('.')[0] == 'django'], 'django imported'"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)
