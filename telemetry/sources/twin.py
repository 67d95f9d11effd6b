"""The digital twin as a telemetry source: it speaks dcgm-exporter text for GPUs and Brick-style JSON points
for cooling, and goes through the same parsers, checks, buffer and writers as any real source.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from datetime import UTC, datetime

import numpy as np

from facility.facility_file import export_facility
from facility.models import Site
from facility.twin import DCGM_FIELDS, Scenario, SensorConfig, SensorModel, Twin
from telemetry import catalogue
from telemetry.ingest import IngestReport, ingest
from telemetry.models import Source, SourceKind
from telemetry.parsers.json_batch import parse_json_batch
from telemetry.parsers.prometheus import parse_exposition
from telemetry.schema import GPU_COLUMNS

log = logging.getLogger(__name__)

# Twin read-outs worth exporting, as (catalogue metric, point). Internal plant state (COP, shares) stays inside.
UNIT_POINTS = {
    "supply_temperature_celsius": ("supply_water_temperature_celsius", ""),
    "return_temperature_celsius": ("return_water_temperature_celsius", ""),
    "primary_supply_temperature_celsius": ("supply_water_temperature_celsius", "primary"),
    "primary_return_temperature_celsius": ("return_water_temperature_celsius", "primary"),
    "secondary_supply_temperature_celsius": ("supply_water_temperature_celsius", "secondary"),
    "secondary_return_temperature_celsius": ("return_water_temperature_celsius", "secondary"),
    "secondary_flow_liters_per_minute": ("flow_liters_per_minute", "secondary"),
    "chilled_water_supply_temperature_celsius": ("supply_water_temperature_celsius", "chilled_water"),
    "chilled_water_flow_liters_per_minute": ("flow_liters_per_minute", "chilled_water"),
    "flow_liters_per_minute": ("flow_liters_per_minute", ""),
    "differential_pressure_kilopascals": ("differential_pressure_kilopascal", ""),
    "pump_speed_ratio": ("pump_speed_ratio", ""),
    "fan_speed_ratio": ("fan_speed_ratio", ""),
    "supply_air_temperature_celsius": ("supply_air_temperature_celsius", ""),
    "return_air_temperature_celsius": ("return_air_temperature_celsius", ""),
    "heat_removed_kw": ("heat_removed_kilowatt", ""),
    "power_kw": ("unit_power_kilowatt", ""),
    "supply_air_temperature_setpoint_celsius": ("supply_air_temperature_setpoint_celsius", ""),
    "chilled_water_supply_temperature_setpoint_celsius": ("chilled_water_supply_temperature_setpoint_celsius", ""),
    "leaving_water_temperature_setpoint_celsius": ("leaving_water_temperature_setpoint_celsius", ""),
    "secondary_supply_temperature_setpoint_celsius": ("secondary_supply_temperature_setpoint_celsius", ""),
    "pump_speed_setpoint_ratio": ("pump_speed_setpoint_ratio", ""),
    "fan_speed_setpoint_ratio": ("fan_speed_setpoint_ratio", ""),
}
SITE_POINTS = {
    "outdoor_dry_bulb_celsius": "outdoor_dry_bulb_temperature_celsius",
    "outdoor_wet_bulb_celsius": "outdoor_wet_bulb_temperature_celsius",
    "it_power_kw": "it_power_kilowatt",
    "facility_power_kw": "facility_power_kilowatt",
}
# DCGM reports violation time in ns; the twin counts µs.
_SCALE = {"DCGM_FI_DEV_THERMAL_VIOLATION": 1000, "DCGM_FI_DEV_POWER_VIOLATION": 1000}
_EXPORTED = [(m, k) for m, k in (*DCGM_FIELDS.items(), ("FUSEDC_GPU_TFLOPS", "tflops")) if m in GPU_COLUMNS]


def _saturate(metric: str, values):
    """Real sensors read within their range: noise added by the sensor model must not leave it."""
    m = catalogue.get(metric)
    lo = -np.inf if m.min_value is None else m.min_value
    hi = np.inf if m.max_value is None else m.max_value
    return np.clip(values, lo, hi)


class TwinSource:
    """One site's twin, stepping in simulated time and emitting what its sensors would report."""

    def __init__(self, site: Site, *, profile: str = "seed", workload: str = "training", seed: int = 0,
                 start: datetime | None = None, sensors: bool = True, **scenario):
        """``scenario``: further ``Scenario`` fields (e.g. ``checkpoint_interval_s``)."""
        self.site = site
        self.profile = profile
        self.twin = Twin(export_facility(site), profile=profile, scenario=Scenario(
            workload=workload, start=start or datetime.now(UTC), seed=seed, **scenario))
        self.sensors = SensorModel(SensorConfig(seed=seed)) if sensors else None
        self.source = Source.objects.filter(name=f"twin-{site.slug}").first()
        if self.source is None:
            self.source = Source(name=f"twin-{site.slug}", kind=SourceKind.TWIN, site=site, rate_limit_per_minute=0)
            self.source.issue_token()  # in-process source: the token is never shown or used
            self.source.save()
        info = self.twin.gpu_info
        # dcgm-exporter's label set, built once: gpu, UUID, pci_bus_id, device, modelName, Hostname.
        self._labels = [
            f'gpu="{g.index}",UUID="{g.uuid}",pci_bus_id="{g.pci_bus_id}",device="nvidia{g.index}",'
            f'modelName="{g.model}",Hostname="{g.hostname}"'
            for g in info
        ]
        self.lock = threading.Lock()  # the actuator writes setpoints from other threads

    @property
    def sim_time(self) -> float:
        return self.twin.time.replace(tzinfo=UTC).timestamp() if self.twin.time.tzinfo is None \
            else self.twin.time.timestamp()

    def step(self, seconds: float):
        with self.lock:
            self.twin.step(max(1, round(seconds)))

    def exposition(self, gpus: dict, ts_ms: int) -> str:
        lines = []
        for metric, key in _EXPORTED:
            values = _saturate(metric, np.asarray(gpus[key], dtype=float) * _SCALE.get(metric, 1))
            lines.append(f"# TYPE {metric} {'counter' if 'ENERGY' in metric or 'VIOLATION' in metric else 'gauge'}")
            integer = GPU_COLUMNS[metric] in ("total_energy", "clocks_event_reasons", "power_violation",
                                              "thermal_violation")
            for labels, value in zip(self._labels, values, strict=True):
                if math.isnan(value):
                    continue  # a dropped reading: dcgm-exporter omits the line
                text = str(int(value)) if integer else f"{value:.6g}"
                lines.append(f"{metric}{{{labels}}} {text} {ts_ms}")
        return "\n".join(lines) + "\n"

    def points(self, units: dict, facility: dict, ts: float) -> dict:
        samples = []
        for unit, values in units.items():
            for key, value in values.items():
                if key in UNIT_POINTS and value is not None and math.isfinite(value):
                    metric, point = UNIT_POINTS[key]
                    samples.append({"metric": metric, "cooling_unit": unit, "point": point, "timestamp": ts,
                                    "value": float(_saturate(metric, value))})
        for key, metric in SITE_POINTS.items():
            value = facility.get(key)
            if value is not None and math.isfinite(value):
                samples.append({"metric": metric, "timestamp": ts, "value": float(value)})
        return {"samples": samples}

    def emit(self, now: float | None = None) -> tuple[IngestReport, IngestReport]:
        """Read the twin's sensors and ingest one GPU scrape and one cooling batch, like real sources do."""
        with self.lock:
            gpus, units, facility = self.twin.gpus(), self.twin.units(), self.twin.facility()
            ts = self.sim_time
        if self.sensors is not None:
            gpus = self.sensors.gpus(gpus)
            units = self.sensors.points(units)
        scrape = parse_exposition(self.exposition(gpus, int(ts * 1000)), default_timestamp=ts)
        cooling = parse_json_batch(self.points(units, facility, ts))
        return ingest(self.source, scrape, now=now), ingest(self.source, cooling, now=now)


def run(source: TwinSource, *, interval: float = 1.0, speed: float = 1.0, stop: threading.Event | None = None,
        duration: float | None = None, on_tick=None) -> int:
    """Step and emit every `interval` simulated seconds, never ahead of the wall clock.

    The twin may start in the past (to backfill history); it then runs at up to `speed` × real time until it
    has caught up, and at real time after that. Returns the number of emissions.
    """
    stop = stop or threading.Event()
    wall0, sim0, emitted = time.time(), source.sim_time, 0
    while not stop.is_set():
        sim_next = source.sim_time + interval
        if duration is not None and sim_next - sim0 > duration:
            break
        # Not ahead of the wall clock, and not faster than `speed` while catching up.
        wait = max(sim_next - time.time(), wall0 + (sim_next - sim0) / speed - time.time())
        if wait > 0 and stop.wait(wait):
            break
        source.step(interval)
        try:
            source.emit()
            emitted += 1
        except Exception:
            log.exception("twin emission failed; the plant keeps running")
        if on_tick is not None:
            on_tick(source)
    return emitted
