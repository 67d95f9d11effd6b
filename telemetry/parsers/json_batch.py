"""JSON batches (`POST /api/v1/telemetry/samples`): the integrator's format.

    {"samples": [
      {"metric": "DCGM_FI_DEV_GPU_TEMP", "uuid": "GPU-…", "timestamp": 1764262800.0, "value": 63.0},
      {"metric": "DCGM_FI_DEV_POWER_USAGE", "hostname": "a-r01-n1", "gpu": 3, "timestamp": "2026-11-27T17:00:00Z",
       "value": 612.5},
      {"metric": "supply_water_temperature_celsius", "cooling_unit": "cdu-b1", "point": "secondary",
       "timestamp": 1764262800.0, "value": 30.1}
    ]}

Timestamps are epoch seconds or ISO 8601 with a zone. Metrics are catalogue names or any accepted alias.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from telemetry.catalogue import Equipment, resolve
from telemetry.parsers import CoolingEntity, GpuEntity, ParseError, ParseResult, Sample

MAX_SAMPLES = 200_000
_GPU_KEYS = {"uuid", "hostname", "gpu"}
_ALLOWED = {"metric", "timestamp", "value", "uuid", "hostname", "gpu", "cooling_unit", "point"}


def _timestamp(raw: Any) -> float:
    if isinstance(raw, bool):
        raise ValueError("timestamp must be epoch seconds or ISO 8601 text")
    if isinstance(raw, int | float):
        return float(raw)
    if isinstance(raw, str):
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            raise ValueError("ISO 8601 timestamp needs a zone (e.g. Z)")
        return parsed.timestamp()
    raise ValueError("timestamp must be epoch seconds or ISO 8601 text")


def parse_json_batch(doc: Any) -> ParseResult:
    result = ParseResult()
    if not isinstance(doc, dict) or not isinstance(doc.get("samples"), list):
        result.errors.append(ParseError("expected an object with a list under 'samples'", path="samples"))
        return result
    items = doc["samples"]
    if len(items) > MAX_SAMPLES:
        result.errors.append(ParseError(f"{len(items)} samples; at most {MAX_SAMPLES} per batch", path="samples"))
        return result
    for i, item in enumerate(items):
        path = f"samples[{i}]"
        if not isinstance(item, dict):
            result.errors.append(ParseError("expected an object", path=path))
            continue
        extra = set(item) - _ALLOWED
        if extra:
            result.errors.append(ParseError(f"unknown field(s): {', '.join(sorted(extra))}", path=path))
            continue
        name = item.get("metric")
        metric = resolve(name) if isinstance(name, str) else None
        if metric is None:
            # Integrators name metrics on purpose: an unknown one is a mistake to report, not noise to count.
            reason = f"unknown metric {name!r}" if isinstance(name, str) else "metric must be a metric name"
            result.errors.append(ParseError(reason, path=f"{path}.metric"))
            continue
        value = item.get("value")
        if isinstance(value, bool) or not isinstance(value, int | float):
            result.errors.append(ParseError("value must be a number", path=f"{path}.value"))
            continue
        value = float(value)
        if (problem := metric.check(value)) is not None:
            result.errors.append(ParseError(problem, path=f"{path}.value"))
            continue
        try:
            ts = _timestamp(item.get("timestamp"))
            if not math.isfinite(ts):
                raise ValueError("timestamp must be finite")
        except (ValueError, OverflowError) as exc:
            result.errors.append(ParseError(str(exc), path=f"{path}.timestamp"))
            continue
        if metric.equipment is Equipment.GPU:
            if not (item.get("uuid") or (item.get("hostname") and isinstance(item.get("gpu"), int))):
                result.errors.append(ParseError("a GPU metric needs uuid, or hostname and gpu (index)", path=path))
                continue
            entity = GpuEntity(uuid=item.get("uuid"), hostname=item.get("hostname"), gpu=item.get("gpu"))
        else:
            unit = item.get("cooling_unit")
            if metric.equipment is Equipment.COOLING_UNIT and not isinstance(unit, str):
                result.errors.append(ParseError("a cooling metric needs cooling_unit", path=f"{path}.cooling_unit"))
                continue
            if _GPU_KEYS & set(item):
                result.errors.append(ParseError(f"{metric.name} is not a GPU metric", path=path))
                continue
            entity = CoolingEntity(unit=unit or "", point=str(item.get("point") or ""))
        result.samples.append(Sample(metric.name, value, ts, entity, path=path))
    return result
