"""Redfish cooling resources (DSP0268 / DSP2046): CoolingUnit, CoolantConnector, Pump, Sensor, Control,
CoolingLoop, and the EnvironmentMetrics / ThermalMetrics of a chassis.

Dispatch is on ``@odata.type``. Readings become catalogue samples in SI units; Controls and control excerpts
(``SpeedControlPercent``...) also become :class:`SetpointReadback` records carrying AllowableMin/Max and
ControlMode. Properties that are neither mapped nor known metadata are counted in ``unknown_properties``
(``Type.Property``), so a firmware adding a new reading shows up instead of vanishing.

Only mappings that the resource itself makes unambiguous are built in. A bare temperature or pressure
Sensor (or a temperature Control) does not say whether it is a supply or a return, primary or secondary
point, so it is mapped only through ``point_metrics`` ({@odata.id or Id: catalogue name}) and counted
otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from telemetry.catalogue import Equipment, Metric, Unit, resolve
from telemetry.parsers import CoolingEntity, ParseError, ParseResult, Sample, SetpointReadback, clip

__all__ = ["parse_redfish"]

# Redfish units (UCUM strings used by Sensor.ReadingUnits / Control.SetPointUnits) to catalogue units.
_CONVERT: dict[tuple[str, Unit], Callable[[float], float]] = {
    ("Cel", Unit.CELSIUS): lambda v: v,
    ("K", Unit.CELSIUS): lambda v: v - 273.15,
    ("kPa", Unit.KILOPASCAL): lambda v: v,
    ("Pa", Unit.KILOPASCAL): lambda v: v / 1000.0,
    ("L/min", Unit.LITERS_PER_MINUTE): lambda v: v,
    ("L/s", Unit.LITERS_PER_MINUTE): lambda v: v * 60.0,
    ("%", Unit.RATIO): lambda v: v / 100.0,
    ("W", Unit.KILOWATT): lambda v: v / 1000.0,
    ("kW", Unit.KILOWATT): lambda v: v,
}
# SetPointUnits / ControlType spellings that mean percent.
_PERCENT_WORDS = {"Percent": "%", "DutyCycle": "%"}
# Default units per Sensor.ReadingType when ReadingUnits is absent.
_READING_TYPE_UNITS = {
    "Temperature": "Cel", "PressurekPa": "kPa", "PressurePa": "Pa", "Pressure": "Pa",
    "LiquidFlowLPM": "L/min", "LiquidFlow": "L/s", "Percent": "%", "Power": "W", "Heat": "kW",
}  # fmt: skip

# Properties that describe rather than measure: known, deliberately not turned into samples.
_METADATA = frozenset({
    "@odata.type", "@odata.id", "@odata.context", "@odata.etag", "@Redfish.Copyright", "@Redfish.Settings",
    "Id", "Name", "Description", "Status", "Oem", "Links", "Actions", "Location", "UserLabel", "Coolant",
    "PhysicalContext", "PhysicalSubContext", "Manufacturer", "Model", "SerialNumber", "PartNumber",
    "SparePartNumber", "AssetTag", "FirmwareVersion", "Version", "ProductionDate", "ServiceHours",
    "EquipmentType", "Assembly", "Identifiers", "LocationIndicatorActive", "Members@odata.count",
})  # fmt: skip
_EXTRA_METADATA = {
    "CoolingUnit": {"CoolingCapacityWatts"},
    "CoolantConnector": {"CoolantConnectorType", "RatedFlowLitersPerMinute", "RatedFlowPressurekPa",
                         "RatedPressurekPa"},
    "Pump": {"PumpType"},
    "Sensor": {"ReadingType", "ReadingUnits", "ReadingRangeMin", "ReadingRangeMax", "ReadingBasis",
               "SensingInterval", "Accuracy", "Precision", "Thresholds", "Implementation", "ReadingTime"},
    "Control": {"ControlType", "SetPointUnits", "ControlLoop", "AllowableMin", "AllowableMax",
                "ControlMode", "AllowableNumericValues", "SettingMin", "SettingMax", "DefaultSetPoint",
                "ControlDelaySeconds", "DeadBand", "Increment", "SetPointUpdateTime", "SetPointAccuracy",
                "Implementation", "RelatedItem", "Sensor", "SetPoint"},
    "CoolingLoop": {"CoolantLevelStatus", "CoolantQuality", "SupplyEquipmentNames",
                    "ConsumingEquipmentNames"},
    "EnvironmentMetrics": set(),
    "ThermalMetrics": set(),
}  # fmt: skip

# Reading excerpts ({"Reading": x, "DataSourceUri": ...}) per type: property -> (metric, Redfish unit).
_READINGS: dict[str, dict[str, tuple[str, str]]] = {
    "CoolantConnector": {
        "SupplyTemperatureCelsius": ("supply_water_temperature_celsius", "Cel"),
        "ReturnTemperatureCelsius": ("return_water_temperature_celsius", "Cel"),
        "SupplyPressurekPa": ("supply_water_pressure_kilopascal", "kPa"),
        "ReturnPressurekPa": ("return_water_pressure_kilopascal", "kPa"),
        "DeltaPressurekPa": ("differential_pressure_kilopascal", "kPa"),
        "FlowLitersPerMinute": ("flow_liters_per_minute", "L/min"),
        "HeatRemovedkW": ("heat_removed_kilowatt", "kW"),
    },
    "Pump": {"PumpSpeedPercent": ("pump_speed_ratio", "%")},
    "CoolingLoop": {"CoolantLevelPercent": ("coolant_level_ratio", "%")},
    "EnvironmentMetrics": {"PowerWatts": ("unit_power_kilowatt", "W")},
}
# Control excerpts ({"SetPoint", "AllowableMin", "AllowableMax", "ControlMode", "Reading"...}).
_CONTROL_EXCERPTS: dict[str, dict[str, tuple[str, str]]] = {
    "Pump": {"SpeedControlPercent": ("pump_speed_setpoint_ratio", "%")},
    "CoolantConnector": {"DeltaPressureControlkPa": ("differential_pressure_setpoint_kilopascal", "kPa")},
}
_EXCERPT_KEYS = frozenset({
    "Reading", "DataSourceUri", "SetPoint", "AllowableMin", "AllowableMax", "ControlMode", "ReadingUnits",
    "ControlLoop", "DefaultSetPoint", "SetPointUnits",
})  # fmt: skip
# Which reading a control's setpoint commands: its Reading (a copy of the sensor) is the measurement.
_READING_OF_SETPOINT = {
    "pump_speed_setpoint_ratio": "pump_speed_ratio",
    "fan_speed_setpoint_ratio": "fan_speed_ratio",
}

# Sensor.ReadingType values that say on their own which point they are.
_SENSOR_METRICS = {
    "LiquidFlowLPM": "flow_liters_per_minute",
    "LiquidFlow": "flow_liters_per_minute",
    "Heat": "heat_removed_kilowatt",
    "Power": "unit_power_kilowatt",
}

_MISSING = object()


def parse_redfish(
    doc: dict[str, Any] | list[dict[str, Any]],
    *,
    unit_name: str | None,
    default_timestamp: float,
    point_metrics: Mapping[str, str] | None = None,
) -> ParseResult:
    """Parse one Redfish resource (or a list, or a resource with expanded members) into cooling samples.

    ``unit_name`` names the cooling unit for every sample; None derives it from ``@odata.id``
    (``/redfish/v1/ThermalEquipment/CDUs/1/Pumps/1`` -> unit ``CDUs/1``, point ``Pumps/1``) or the ``Id``.
    ``point_metrics`` maps a Sensor/Control ``@odata.id`` (or ``Id``) to the catalogue metric it measures.
    """
    parser = _Parser(unit_name, default_timestamp, dict(point_metrics or {}))
    if isinstance(doc, list):
        for i, item in enumerate(doc):
            parser.resource(item, f"[{i}]", None)
    else:
        parser.resource(doc, "", None)
    return parser.result


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _locate(odata_id: str) -> tuple[str, str]:
    parts = [p for p in odata_id.split("?")[0].split("#")[0].split("/") if p]
    if parts[:2] == ["redfish", "v1"]:
        parts = parts[2:]
    if parts[:1] == ["ThermalEquipment"]:
        parts = parts[1:]
    if len(parts) >= 2:
        return f"{parts[0]}/{parts[1]}", "/".join(parts[2:])
    return "/".join(parts), ""


def _type_name(odata_type: str) -> str:
    # "#CoolingUnit.v1_5_0.CoolingUnit" -> "CoolingUnit"; "#PumpCollection.PumpCollection" -> "PumpCollection"
    return odata_type.lstrip("#").split(".")[0]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _Parser:
    def __init__(self, unit_name: str | None, timestamp: float, point_metrics: dict[str, str]) -> None:
        self.unit_name = unit_name
        self.timestamp = timestamp
        self.point_metrics = point_metrics
        self.result = ParseResult()

    # --- reporting ---

    def error(self, path: str, reason: str, value: object = _MISSING) -> None:
        text = "" if value is _MISSING else clip(repr(value))
        self.result.errors.append(ParseError(reason, path=path or "$", text=text))

    def unknown(self, key: str) -> None:
        self.result.unknown_properties[key] += 1

    # --- traversal ---

    def resource(self, res: object, path: str, parent: CoolingEntity | None) -> None:
        if not isinstance(res, dict):
            self.error(path, f"expected a JSON object, got {type(res).__name__}", res)
            return
        odata_type = res.get("@odata.type")
        if odata_type is None and isinstance(res.get("Members"), list):
            odata_type = "#Collection"
        if not isinstance(odata_type, str) or not odata_type.strip("#"):
            # A bare link ({"@odata.id": ...}) is a reference, not a resource to read.
            if set(res) <= {"@odata.id"} and res:
                return
            self.error(_join(path, "@odata.type"), "missing or invalid @odata.type", odata_type)
            return
        kind = _type_name(odata_type)
        entity = self.entity(res, path, parent)
        if entity is None:
            return
        if kind.endswith("Collection"):
            self.collection(res, path, entity)
            return
        handler = _HANDLERS.get(kind)
        if handler is None:
            self.unknown(kind)
            return
        handler(self, res, path, entity, kind)

    def entity(self, res: dict[str, Any], path: str, parent: CoolingEntity | None) -> CoolingEntity | None:
        odata_id = res.get("@odata.id")
        if isinstance(odata_id, str) and odata_id.strip("/"):
            unit, point = _locate(odata_id)
        elif parent is not None:
            rid = res.get("Id")
            unit, point = (
                parent.unit,
                "/".join(p for p in (parent.point, str(rid) if rid is not None else "") if p),
            )
        else:
            rid = res.get("Id")
            unit, point = (str(rid) if isinstance(rid, str | int) and not isinstance(rid, bool) else ""), ""
        if self.unit_name is not None:
            unit = self.unit_name
        if not unit:
            self.error(path, "cannot name the cooling unit: no unit_name, @odata.id or Id")
            return None
        return CoolingEntity(unit=unit, point=point)

    def collection(self, res: dict[str, Any], path: str, entity: CoolingEntity) -> None:
        members = res.get("Members", [])
        if not isinstance(members, list):
            self.error(_join(path, "Members"), "expected a list", members)
            return
        for i, member in enumerate(members):
            self.resource(member, f"{_join(path, 'Members')}[{i}]", entity)

    def nested(self, value: object, path: str, entity: CoolingEntity) -> bool:
        """Follow an expanded sub-resource or collection; True if ``value`` was one (or a plain link)."""
        if isinstance(value, dict):
            if set(value) <= {"@odata.id"}:
                return True
            if "@odata.type" in value or isinstance(value.get("Members"), list):
                self.resource(value, path, entity)
                return True
        if (
            isinstance(value, list)
            and value
            and all(isinstance(v, dict) and "@odata.type" in v for v in value)
        ):
            for i, item in enumerate(value):
                self.resource(item, f"{path}[{i}]", entity)
            return True
        return False

    # --- values ---

    def number(self, value: object, path: str, metric: Metric, units: str) -> float | None:
        """Convert a number in Redfish ``units`` to the metric's unit and check it; None if unusable."""
        if not _is_number(value):
            self.error(path, f"expected a number, got {type(value).__name__}", value)
            return None
        convert = _CONVERT.get((units, metric.unit))
        if convert is None:
            self.error(path, f"cannot convert {units!r} to {metric.unit} for {metric.name}", value)
            return None
        converted = convert(float(value))  # type: ignore[arg-type]
        problem = metric.check(converted)
        if problem is not None:
            self.error(path, problem, value)
            return None
        return converted

    def emit(self, metric: Metric, value: float, entity: CoolingEntity, path: str) -> None:
        self.result.samples.append(Sample(metric.name, value, self.timestamp, entity, path=path))

    def reading(self, excerpt: object, path: str, metric: Metric, units: str, entity: CoolingEntity) -> None:
        if excerpt is None:
            self.result.skipped_not_supported += 1
            return
        if not isinstance(excerpt, dict):
            self.error(path, "expected an object with a Reading", excerpt)
            return
        value = excerpt.get("Reading")
        for key in excerpt:
            if key not in _EXCERPT_KEYS and not key.startswith("@"):
                self.unknown(f"{metric.name}.{key}")
        if value is None:  # absent or null: the service has no reading now
            self.result.skipped_not_supported += 1
            return
        converted = self.number(value, _join(path, "Reading"), metric, units)
        if converted is not None:
            self.emit(metric, converted, entity, _join(path, "Reading"))

    def control(
        self, ctl: dict[str, Any], path: str, metric: Metric, units: str, entity: CoolingEntity
    ) -> None:
        """A Control resource or control excerpt: SetPoint as a sample, plus the full read-back."""
        values: dict[str, float | None] = {}
        for key in ("SetPoint", "AllowableMin", "AllowableMax"):
            raw = ctl.get(key)
            if raw is None:
                values[key] = None
                continue
            values[key] = self.number(raw, _join(path, key), _bounded(metric, key), units)
        mode = ctl.get("ControlMode")
        if mode is not None and not isinstance(mode, str):
            self.error(_join(path, "ControlMode"), "expected a string", mode)
            mode = None
        setpoint = values["SetPoint"]
        if setpoint is not None:
            self.emit(metric, setpoint, entity, _join(path, "SetPoint"))
        elif ctl.get("SetPoint") is None:
            self.result.skipped_not_supported += 1
        self.result.setpoints.append(
            SetpointReadback(
                metric=metric.name,
                entity=entity,
                setpoint=setpoint,
                allowable_min=values["AllowableMin"],
                allowable_max=values["AllowableMax"],
                control_mode=mode,
                timestamp=self.timestamp,
                path=path or "$",
            )
        )
        reading_name = _READING_OF_SETPOINT.get(metric.name)
        sensor = ctl.get("Sensor")
        if isinstance(sensor, dict) and reading_name is not None:
            self.reading(sensor, _join(path, "Sensor"), _metric(reading_name), units, entity)
        elif sensor is not None:
            self.unknown(f"{metric.name}.Sensor")

    def rest(
        self, res: dict[str, Any], path: str, entity: CoolingEntity, kind: str, handled: set[str]
    ) -> None:
        """Count what a handler did not map: metadata and links are known, the rest is unknown."""
        known = _METADATA | _EXTRA_METADATA.get(kind, set()) | handled
        for key, value in res.items():
            if key in known:
                continue
            if self.nested(value, _join(path, key), entity):
                continue
            self.unknown(f"{kind}.{key}")


def _metric(name: str) -> Metric:
    metric = resolve(name)
    if metric is None or metric.equipment is Equipment.GPU:
        raise KeyError(f"{name} is not a cooling metric of the catalogue")  # a bug in the tables above
    return metric


def _bounded(metric: Metric, key: str) -> Metric:
    # AllowableMin/Max describe the plant's range; only the SetPoint itself must lie within plausible bounds,
    # but the limits must still be finite numbers in the same unit.
    return metric if key == "SetPoint" else replace(metric, min_value=None, max_value=None)


# --- per-type handlers ------------------------------------------------------------------------------------


def _excerpts(p: _Parser, res: dict[str, Any], path: str, entity: CoolingEntity, kind: str) -> set[str]:
    handled: set[str] = set()
    for prop, (name, units) in _READINGS.get(kind, {}).items():
        if prop in res:
            handled.add(prop)
            p.reading(res[prop], _join(path, prop), _metric(name), units, entity)
    for prop, (name, units) in _CONTROL_EXCERPTS.get(kind, {}).items():
        if prop in res:
            handled.add(prop)
            ctl = res[prop]
            if isinstance(ctl, dict):
                p.control(ctl, _join(path, prop), _metric(name), units, entity)
            elif ctl is None:
                p.result.skipped_not_supported += 1
            else:
                p.error(_join(path, prop), "expected a control object", ctl)
    return handled


def _generic(p: _Parser, res: dict[str, Any], path: str, entity: CoolingEntity, kind: str) -> None:
    handled = _excerpts(p, res, path, entity, kind)
    p.rest(res, path, entity, kind, handled)


def _coolant_connector(p: _Parser, res: dict[str, Any], path: str, entity: CoolingEntity, kind: str) -> None:
    handled = _excerpts(p, res, path, entity, kind)
    # The supply temperature a CDU controls is its secondary (rack-side) supply; a primary-side supply
    # setpoint belongs to the facility plant, which has its own points.
    ctl = res.get("SupplyTemperatureControlCelsius")
    if isinstance(ctl, dict) and "secondary" in (entity.point + path).lower():
        handled.add("SupplyTemperatureControlCelsius")
        p.control(ctl, _join(path, "SupplyTemperatureControlCelsius"),
                  _metric("secondary_supply_temperature_setpoint_celsius"), "Cel", entity)  # fmt: skip
    p.rest(res, path, entity, kind, handled)


def _lookup_point(p: _Parser, res: dict[str, Any]) -> Metric | None:
    for key in (res.get("@odata.id"), res.get("Id")):
        if isinstance(key, str) and key in p.point_metrics:
            return resolve(p.point_metrics[key])
    return None


def _units(p: _Parser, res: dict[str, Any], path: str, key: str, default: str | None) -> str | None:
    units = res.get(key, default)
    units = _PERCENT_WORDS.get(units, units) if isinstance(units, str) else units
    if not isinstance(units, str):
        p.error(_join(path, key), "missing or invalid units", units)
        return None
    return units


def _sensor(p: _Parser, res: dict[str, Any], path: str, entity: CoolingEntity, kind: str) -> None:
    reading_type = res.get("ReadingType")
    context = res.get("PhysicalContext")
    metric = _lookup_point(p, res)
    if metric is None:
        name = _SENSOR_METRICS.get(str(reading_type))
        if reading_type == "Percent":
            name = {"Pump": "pump_speed_ratio", "Fan": "fan_speed_ratio"}.get(str(context))
        if name is None:
            p.unknown(f"Sensor.ReadingType={reading_type}@{context}")
            p.rest(res, path, entity, kind, {"Reading"})
            return
        metric = _metric(name)
    units = _units(p, res, path, "ReadingUnits", _READING_TYPE_UNITS.get(str(reading_type)))
    if units is not None:
        p.reading({"Reading": res.get("Reading")}, path, metric, units, entity)
    p.rest(res, path, entity, kind, {"Reading"})


def _control(p: _Parser, res: dict[str, Any], path: str, entity: CoolingEntity, kind: str) -> None:
    control_type = res.get("ControlType")
    metric = _lookup_point(p, res)
    if metric is None and control_type in ("Percent", "DutyCycle"):
        name = {"Pump": "pump_speed_setpoint_ratio", "Fan": "fan_speed_setpoint_ratio"}.get(
            str(res.get("PhysicalContext"))
        )
        metric = _metric(name) if name else None
    if metric is None:
        p.unknown(f"Control.ControlType={control_type}@{res.get('PhysicalContext')}")
    else:
        default = _PERCENT_WORDS.get(str(control_type)) or _READING_TYPE_UNITS.get(str(control_type))
        units = _units(p, res, path, "SetPointUnits", default)
        if units is not None:
            p.control(res, path, metric, units, entity)
    p.rest(res, path, entity, kind, set())


def _fans(p: _Parser, res: dict[str, Any], path: str, entity: CoolingEntity, kind: str) -> None:
    handled = _excerpts(p, res, path, entity, kind)
    fans = res.get("FanSpeedsPercent")
    where = _join(path, "FanSpeedsPercent")
    if fans is not None:
        handled.add("FanSpeedsPercent")
        if not isinstance(fans, list):
            p.error(where, "expected a list", fans)
        else:
            for i, fan in enumerate(fans):
                name = fan.get("DeviceName") if isinstance(fan, dict) else None
                point = f"{entity.point}/{name if isinstance(name, str) and name else i}".lstrip("/")
                fan_entity = CoolingEntity(entity.unit, point)
                if isinstance(fan, dict):
                    extra = {k: v for k, v in fan.items() if k not in ("DeviceName", "SpeedRPM")}
                    p.reading(extra, f"{where}[{i}]", _metric("fan_speed_ratio"), "%", fan_entity)
                else:
                    p.error(f"{where}[{i}]", "expected an object", fan)
    p.rest(res, path, entity, kind, handled)


# Server intake air is the supply air of the air loop; its exhaust is the return air.
_AIR_SUMMARY = (("Intake", "supply_air_temperature_celsius"), ("Exhaust", "return_air_temperature_celsius"))


def _thermal_metrics(p: _Parser, res: dict[str, Any], path: str, entity: CoolingEntity, kind: str) -> None:
    summary = res.get("TemperatureSummaryCelsius")
    if isinstance(summary, dict):
        base = _join(path, "TemperatureSummaryCelsius")
        for key, name in _AIR_SUMMARY:
            if key in summary:
                p.reading(summary[key], _join(base, key), _metric(name), "Cel", entity)
        for key in summary:
            if key not in dict(_AIR_SUMMARY) and not key.startswith("@"):
                p.unknown(f"ThermalMetrics.TemperatureSummaryCelsius.{key}")
    elif summary is not None:
        p.error(_join(path, "TemperatureSummaryCelsius"), "expected an object", summary)
    p.rest(res, path, entity, kind, {"TemperatureSummaryCelsius"})


_HANDLERS: dict[str, Callable[[_Parser, dict[str, Any], str, CoolingEntity, str], None]] = {
    "CoolingUnit": _generic,
    "CoolantConnector": _coolant_connector,
    "Pump": _generic,
    "Sensor": _sensor,
    "Control": _control,
    "CoolingLoop": _generic,
    "EnvironmentMetrics": _fans,
    "ThermalMetrics": _thermal_metrics,
}
