import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telemetry.parsers import CoolingEntity, ParseResult
from telemetry.parsers.redfish import parse_redfish
from telemetry.tests import DATA

T0 = 1_700_000_000.0
REDFISH = DATA / "redfish"


def load(name: str) -> dict:
    return json.loads((REDFISH / name).read_text(encoding="utf-8"))


CONNECTOR = "public-cooling-unit__ThermalEquipment__CDUs__1__PrimaryCoolantConnectors__1.json"
PUMP = "public-cooling-unit__ThermalEquipment__CDUs__1__Pumps__1.json"
CDU = "public-cooling-unit__ThermalEquipment__CDUs__1.json"
SENSOR = "public-cooling-unit__Chassis__CDU__Sensors__PrimaryFlow.json"
CONTROL = "public-cooling-unit__Chassis__CDU__Controls__Pump1Speed.json"
LOOP = "DSP2046-examples__CoolingLoop-v1-example.json"
ENV = "public-liquid-cooled-server__Chassis__1U__EnvironmentMetrics.json"
THERMAL = "public-liquid-cooled-server__Chassis__1U__ThermalSubsystem__ThermalMetrics.json"

# Per file: the samples (metric -> SI value) it must give, and the properties it must count as unmapped.
EXPECTED = {
    CONNECTOR: (
        {"supply_water_temperature_celsius": 30, "return_water_temperature_celsius": 40,
         "supply_water_pressure_kilopascal": 827, "return_water_pressure_kilopascal": 965,
         "differential_pressure_kilopascal": 138, "flow_liters_per_minute": 42, "heat_removed_kilowatt": 25.48},
        {"CoolantConnector.DeltaTemperatureCelsius": 1},
    ),
    PUMP: ({"pump_speed_ratio": 0.385, "pump_speed_setpoint_ratio": 0.45}, {}),
    CDU: ({}, {}),
    SENSOR: ({"flow_liters_per_minute": 42}, {}),
    CONTROL: ({"pump_speed_setpoint_ratio": 0.45}, {}),
    LOOP: ({"coolant_level_ratio": 0.95}, {}),
    ENV: (
        {"unit_power_kilowatt": 0.374, "fan_speed_ratio": 0.55},
        {"EnvironmentMetrics.TemperatureCelsius": 1, "EnvironmentMetrics.PowerLimitWatts": 1},
    ),
    THERMAL: (
        {"supply_air_temperature_celsius": 24.8, "return_air_temperature_celsius": 40.5},
        {"ThermalMetrics.TemperatureSummaryCelsius.Internal": 1, "ThermalMetrics.TemperatureSummaryCelsius.Ambient": 1,
         "ThermalMetrics.TemperatureReadingsCelsius": 1},
    ),
}  # fmt: skip


def parse(doc, unit_name=None, **kwargs) -> ParseResult:
    return parse_redfish(doc, unit_name=unit_name, default_timestamp=T0, **kwargs)


def test_every_file_is_covered():
    assert {p.name for p in REDFISH.glob("*.json")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_real_file_parses(name):
    result = parse(load(name))
    assert result.errors == []
    values, unknown = EXPECTED[name]
    assert {s.metric: s.value for s in result.samples} == pytest.approx(values)
    assert dict(result.unknown_properties) == unknown
    assert all(s.timestamp == T0 and s.path for s in result.samples)


def test_connector_entity_and_paths():
    result = parse(load(CONNECTOR))
    assert {s.entity for s in result.samples} == {CoolingEntity("CDUs/1", "PrimaryCoolantConnectors/1")}
    paths = {s.metric: s.path for s in result.samples}
    assert paths["supply_water_temperature_celsius"] == "SupplyTemperatureCelsius.Reading"


def test_unit_name_from_the_caller_wins():
    result = parse(load(CONNECTOR), unit_name="cdu-rack4")
    assert {s.entity for s in result.samples} == {CoolingEntity("cdu-rack4", "PrimaryCoolantConnectors/1")}


def test_pump_setpoint_readback():
    result = parse(load(PUMP))
    (readback,) = result.setpoints
    assert readback.metric == "pump_speed_setpoint_ratio"
    assert readback.setpoint == pytest.approx(0.45)
    assert readback.control_mode == "Automatic"
    assert readback.entity == CoolingEntity("CDUs/1", "Pumps/1")
    assert readback.path == "SpeedControlPercent"


def test_control_with_allowable_range_and_sensor_reading():
    sensor = {"Reading": 43.5, "DataSourceUri": "/redfish/v1/Chassis/CDU/Sensors/Pump1"}
    doc = load(CONTROL) | {"AllowableMin": 20, "AllowableMax": 90, "ControlMode": "Manual", "Sensor": sensor}
    result = parse(doc)
    assert result.errors == []
    (readback,) = result.setpoints
    assert (readback.setpoint, readback.allowable_min, readback.allowable_max) == pytest.approx((0.45, 0.2, 0.9))
    assert readback.control_mode == "Manual"
    assert {s.metric: s.value for s in result.samples} == pytest.approx(
        {"pump_speed_setpoint_ratio": 0.45, "pump_speed_ratio": 0.435}
    )


def test_fans_are_separate_points():
    result = parse(load(ENV))
    fans = [s for s in result.samples if s.metric == "fan_speed_ratio"]
    assert [(s.entity.point, s.value) for s in fans] == [
        ("EnvironmentMetrics/Chassis Fan #1", 0.45),
        ("EnvironmentMetrics/Chassis Fan #2", 0.55),
    ]
    assert fans[0].path == "FanSpeedsPercent[0].Reading"


def test_cooling_unit_links_are_not_unknown_and_conditions_are_metadata():
    result = parse(load(CDU))
    assert result.samples == [] and result.errors == [] and not result.unknown_properties


@pytest.mark.parametrize(
    ("units", "expected"), [("L/min", 42.0), ("L/s", 2520.0), (None, 42.0)], ids=["lpm", "lps", "default"]
)
def test_sensor_flow_unit_conversion(units, expected):
    doc = load(SENSOR)
    if units is None:
        del doc["ReadingUnits"]
    else:
        doc["ReadingUnits"] = units
    if units == "L/s":
        doc["ReadingType"] = "LiquidFlow"
    (sample,) = parse(doc).samples
    assert sample.value == pytest.approx(expected)
    assert sample.entity == CoolingEntity("Chassis/CDU", "Sensors/PrimaryFlow")


def test_ambiguous_temperature_sensor_is_counted_unless_mapped():
    doc = {"@odata.type": "#Sensor.v1_12_0.Sensor", "Id": "SecondarySupplyTemp", "ReadingType": "Temperature",
           "Reading": 31.5, "ReadingUnits": "Cel", "PhysicalContext": "LiquidInlet",
           "@odata.id": "/redfish/v1/Chassis/CDU/Sensors/SecondarySupplyTemp"}  # fmt: skip
    unmapped = parse(doc)
    assert unmapped.samples == []
    assert unmapped.unknown_properties == {"Sensor.ReadingType=Temperature@LiquidInlet": 1}
    mapped = parse(doc, point_metrics={doc["@odata.id"]: "supply_water_temperature_celsius"})
    assert [(s.metric, s.value) for s in mapped.samples] == [("supply_water_temperature_celsius", 31.5)]
    by_id = {"SecondarySupplyTemp": "supply_water_temperature_celsius"}
    kelvin = parse(doc | {"ReadingUnits": "K", "Reading": 300.0}, point_metrics=by_id)
    assert kelvin.samples[0].value == pytest.approx(26.85)


def test_secondary_supply_temperature_setpoint():
    doc = {
        "@odata.type": "#CoolantConnector.v1_3_0.CoolantConnector",
        "@odata.id": "/redfish/v1/ThermalEquipment/CDUs/1/SecondaryCoolantConnectors/1",
        "SupplyTemperatureCelsius": {"Reading": 32},
        "SupplyTemperatureControlCelsius": {"SetPoint": 30, "AllowableMin": 20, "AllowableMax": 45,
                                            "ControlMode": "Automatic"},
        "DeltaPressureControlkPa": {"SetPoint": 50, "ControlMode": "Automatic"},
    }  # fmt: skip
    result = parse(doc)
    assert result.errors == []
    assert {s.metric: s.value for s in result.samples} == {
        "supply_water_temperature_celsius": 32,
        "secondary_supply_temperature_setpoint_celsius": 30,
        "differential_pressure_setpoint_kilopascal": 50,
    }
    readback = next(r for r in result.setpoints if r.metric == "secondary_supply_temperature_setpoint_celsius")
    assert (readback.allowable_min, readback.allowable_max) == (20, 45)
    assert readback.entity == CoolingEntity("CDUs/1", "SecondaryCoolantConnectors/1")
    # On the primary side the same property is the facility's business: counted, not mapped.
    primary = copy.deepcopy(doc)
    primary["@odata.id"] = primary["@odata.id"].replace("Secondary", "Primary")
    assert parse(primary).unknown_properties == {"CoolantConnector.SupplyTemperatureControlCelsius": 1}


def test_expanded_cooling_unit_error_names_the_json_path():
    connector = load(CONNECTOR)
    connector["SupplyTemperatureCelsius"]["Reading"] = "hot"
    cdu = load(CDU) | {"PrimaryCoolantConnectors": [connector]}
    result = parse(cdu)
    (error,) = result.errors
    assert error.path == "PrimaryCoolantConnectors[0].SupplyTemperatureCelsius.Reading"
    assert "expected a number" in error.reason and error.text == "'hot'"
    assert len(result.samples) == 6  # the other readings still come through


def test_expanded_collection_members():
    cdu = load(CDU) | {"Pumps": {"@odata.type": "#PumpCollection.PumpCollection", "Members": [load(PUMP)]}}
    result = parse(cdu)
    assert result.errors == []
    assert {s.metric for s in result.samples} == {"pump_speed_ratio", "pump_speed_setpoint_ratio"}


def test_list_of_documents_prefixes_paths():
    bad = load(SENSOR) | {"Reading": float("nan")}
    result = parse([load(PUMP), bad])
    (error,) = result.errors
    assert error.path == "[1].Reading"
    assert "NaN" in error.reason
    assert len(result.samples) == 2


MALFORMED = [
    ({"Reading": True}, SENSOR, "Reading", "expected a number"),
    ({"Reading": 5e6}, SENSOR, "Reading", "above the plausible maximum"),
    ({"ReadingUnits": "gal/min"}, SENSOR, "Reading", "cannot convert 'gal/min'"),
    ({"ReadingUnits": 7}, SENSOR, "ReadingUnits", "missing or invalid units"),
    ({"PumpSpeedPercent": 38.5}, PUMP, "PumpSpeedPercent", "expected an object"),
    ({"PumpSpeedPercent": {"Reading": 180}}, PUMP, "PumpSpeedPercent.Reading", "above the plausible maximum"),
    ({"SpeedControlPercent": {"SetPoint": "45"}}, PUMP, "SpeedControlPercent.SetPoint", "expected a number"),
    ({"SpeedControlPercent": {"SetPoint": 45, "ControlMode": 1}}, PUMP, "SpeedControlPercent.ControlMode",
     "expected a string"),
    ({"SupplyTemperatureCelsius": {"Reading": 500}}, CONNECTOR, "SupplyTemperatureCelsius.Reading",
     "above the plausible maximum"),
    ({"@odata.type": None}, CONNECTOR, "@odata.type", "missing or invalid"),
    ({"FanSpeedsPercent": {"Reading": 1}}, ENV, "FanSpeedsPercent", "expected a list"),
    ({"TemperatureSummaryCelsius": [1]}, THERMAL, "TemperatureSummaryCelsius", "expected an object"),
]  # fmt: skip


@pytest.mark.parametrize(("patch", "name", "path", "reason"), MALFORMED, ids=[m[2] + ":" + m[3] for m in MALFORMED])
def test_malformed_property_is_an_error_naming_its_path(patch, name, path, reason):
    result = parse(load(name) | patch)
    assert [e.path for e in result.errors] == [path]
    assert reason in result.errors[0].reason


def test_not_a_resource():
    assert [e.path for e in parse(["nope"]).errors] == ["[0]"]
    assert [e.reason for e in parse({"Id": "x"}).errors] == ["missing or invalid @odata.type"]
    no_unit = parse({"@odata.type": "#Pump.v1_2_0.Pump", "PumpSpeedPercent": {"Reading": 1}})
    assert "cannot name the cooling unit" in no_unit.errors[0].reason


def test_null_readings_are_no_data_and_unknowns_are_counted():
    doc = load(CONNECTOR) | {"FlowLitersPerMinute": {"Reading": None}, "ReturnTemperatureCelsius": None,
                              "VendorWidgetkW": {"Reading": 1}}  # fmt: skip
    result = parse(doc)
    assert result.errors == []
    assert result.skipped_not_supported == 2
    assert result.unknown_properties["CoolantConnector.VendorWidgetkW"] == 1
    assert parse({"@odata.type": "#Chassis.v1_25_0.Chassis", "Id": "CDU"}).unknown_properties == {"Chassis": 1}


# --- robustness ---

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
_types = st.sampled_from([f"#{t}.v1_0_0.{t}" for t in ("CoolingUnit", "CoolantConnector", "Pump", "Sensor",
                                                        "Control", "CoolingLoop", "EnvironmentMetrics",
                                                        "ThermalMetrics", "PumpCollection", "Unknown")])  # fmt: skip
_keys = st.sampled_from(["SupplyTemperatureCelsius", "PumpSpeedPercent", "SpeedControlPercent", "Reading",
                         "ReadingUnits", "ReadingType", "SetPoint", "SetPointUnits", "ControlType", "PhysicalContext",
                         "Members", "FanSpeedsPercent", "TemperatureSummaryCelsius", "@odata.id", "Id",
                         "SupplyTemperatureControlCelsius", "CoolantLevelPercent", "PowerWatts"])  # fmt: skip


@settings(max_examples=400, deadline=None, database=None)
@given(odata_type=_types, body=st.dictionaries(_keys, _json, max_size=6), unit=st.none() | st.text(max_size=5))
def test_random_resources_never_raise(odata_type, body, unit):
    result = parse({"@odata.type": odata_type, **body}, unit_name=unit)
    assert isinstance(result, ParseResult)
    assert all(e.path for e in result.errors)


@settings(max_examples=200, deadline=None, database=None)
@given(_json)
def test_random_json_never_raises(doc):
    parse(doc)  # type: ignore[arg-type]
