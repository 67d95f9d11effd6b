"""JSON batches (`POST /api/v1/telemetry/samples`): the integrator's format, in rows or in columns.

Rows, one object per sample:

    {"samples": [
      {"metric": "DCGM_FI_DEV_GPU_TEMP", "uuid": "GPU-…", "timestamp": 1764262800.0, "value": 63.0},
      {"metric": "DCGM_FI_DEV_POWER_USAGE", "hostname": "a-r01-n1", "gpu": 3, "timestamp": "2026-11-27T17:00:00Z",
       "value": 612.5},
      {"metric": "supply_water_temperature_celsius", "cooling_unit": "cdu-b1", "point": "secondary",
       "timestamp": 1764262800.0, "value": 30.1}
    ]}

Columns, for high-rate GPU telemetry (a collector batching a whole row of racks each second): under `gpus`,
one list per identity key, `timestamp` and DCGM field, all of the same length; row i is one GPU at one time.

    {"gpus": {
      "uuid": ["GPU-…", "GPU-…"],                       # or "hostname": [...] and "gpu": [...]
      "timestamp": [1764262800.0, 1764262800.0],         # or one number / ISO text for every row
      "DCGM_FI_DEV_GPU_TEMP": [63.0, 61.0],
      "DCGM_FI_DEV_POWER_USAGE": [612.5, null]           # null: not sent for that GPU
    }}

Both may appear in one body (e.g. cooling points under `samples`, GPUs under `gpus`). Columns are checked
vectorised (numpy); every bad value is still named, e.g. `gpus.DCGM_FI_DEV_GPU_TEMP[17]`.

Timestamps are epoch seconds or ISO 8601 with a zone. Metrics are catalogue names or any accepted alias.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from telemetry.catalogue import Equipment, Kind, Metric, resolve
from telemetry.parsers import CoolingEntity, GpuEntity, ParseError, ParseResult, Sample

MAX_SAMPLES = 200_000
# Columnar bodies: at most this many GPU rows, and this many values in all (the body size limit also holds).
MAX_GPU_ROWS = 100_000
MAX_GPU_VALUES = 2_500_000
# At most this many errors are itemised per column (the response shows the first 100 of all anyway).
MAX_ERRORS_PER_COLUMN = 100
_GPU_KEYS = {"uuid", "hostname", "gpu"}
_ALLOWED = {"metric", "timestamp", "value", "uuid", "hostname", "gpu", "cooling_unit", "point"}
_IDENTITY_COLUMNS = ("uuid", "hostname", "gpu")
_NUMBER_TYPES = frozenset({int, float})
_VALUE_TYPES = frozenset({int, float, type(None)})


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


@dataclass(slots=True)
class GpuBlock:
    """GPU samples as columns: row i is one GPU at one time.

    `values` maps each sent metric (canonical name) to float64 values, NaN where the row has none (no GPU
    metric allows NaN as a value, so NaN means "not sent"). `keys` keeps the name each metric was sent
    under, so errors found later (time window, duplicates, counters) name the item as the client wrote it.
    """

    uuid: list | None
    hostname: list | None
    gpu: list | None
    timestamp: np.ndarray
    values: dict[str, np.ndarray]
    keys: dict[str, str]
    scalar_timestamp: bool = False
    prefix: str = "gpus"

    def __len__(self) -> int:
        return len(self.timestamp)

    def path(self, metric: str, row: int) -> str:
        return f"{self.prefix}.{self.keys[metric]}[{row}]"

    def time_path(self, row: int) -> str:
        return f"{self.prefix}.timestamp" if self.scalar_timestamp else f"{self.prefix}.timestamp[{row}]"

    def entity(self, row: int) -> GpuEntity:
        return GpuEntity(
            uuid=self.uuid[row] if self.uuid is not None else None,
            hostname=self.hostname[row] if self.hostname is not None else None,
            gpu=self.gpu[row] if self.gpu is not None else None,
        )

    def samples(self) -> list[Sample]:
        """The same data as row samples (for the rare body that also has GPU samples in rows)."""
        out = []
        times = self.timestamp.tolist()
        for metric, column in self.values.items():
            for row in np.flatnonzero(~np.isnan(column)).tolist():
                out.append(Sample(metric, float(column[row]), times[row], self.entity(row),
                                  path=self.path(metric, row)))
        return out


@dataclass(slots=True)
class BatchParseResult(ParseResult):
    """A parsed JSON batch: row samples, plus GPU rows kept as columns when the body sent them so."""

    gpu_block: GpuBlock | None = field(default=None)


def parse_json_batch(doc: Any) -> BatchParseResult:
    result = BatchParseResult()
    has_rows = isinstance(doc, dict) and "samples" in doc
    has_columns = isinstance(doc, dict) and "gpus" in doc
    if not isinstance(doc, dict) or not (has_rows or has_columns) or (
        has_rows and not isinstance(doc["samples"], list)
    ):
        result.errors.append(ParseError("expected an object with a list under 'samples' (rows) or an object "
                                        "under 'gpus' (columns)", path="samples"))
        return result
    if has_rows:
        _parse_rows(doc["samples"], result)
    if has_columns:
        block = _parse_columns(doc["gpus"], result.errors)
        if block is not None and len(block):
            if any(isinstance(s.entity, GpuEntity) for s in result.samples):
                result.samples.extend(block.samples())  # one path for GPU rows given both ways
            else:
                result.gpu_block = block
    return result


def _parse_rows(items: list, result: ParseResult) -> None:
    if len(items) > MAX_SAMPLES:
        result.errors.append(ParseError(f"{len(items)} samples; at most {MAX_SAMPLES} per batch", path="samples"))
        return
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


# --- columns -------------------------------------------------------------------------------------------


def _bad_items(values: list, ok, path: str, reason: str, errors: list[ParseError]) -> None:
    """Name each item of `values` that `ok` refuses (the slow path, only once something is wrong)."""
    found = 0
    for i, v in enumerate(values):
        if not ok(v):
            errors.append(ParseError(reason, path=f"{path}[{i}]"))
            found += 1
            if found >= MAX_ERRORS_PER_COLUMN:
                return


def _fits_float(v) -> bool:
    try:
        float(v if v is not None else 0.0)
    except OverflowError:
        return False
    return True


def _parse_columns(doc: Any, errors: list[ParseError]) -> GpuBlock | None:
    if not isinstance(doc, dict):
        errors.append(ParseError("expected an object of columns (lists of equal length)", path="gpus"))
        return None
    lists = {k: v for k, v in doc.items() if isinstance(v, list)}
    n = next((len(lists[k]) for k in (*_IDENTITY_COLUMNS, "timestamp") if k in lists), None)
    if n is None:
        errors.append(ParseError("a GPU column block needs uuid, or hostname and gpu (lists)", path="gpus"))
        return None
    before = len(errors)
    if n > MAX_GPU_ROWS or n * len(doc) > MAX_GPU_VALUES:
        errors.append(ParseError(f"{n} rows of {len(doc)} columns; at most {MAX_GPU_ROWS} rows and "
                                 f"{MAX_GPU_VALUES} values per batch", path="gpus"))
        return None
    for key, value in doc.items():
        if key == "timestamp" and not isinstance(value, list):
            continue
        if not isinstance(value, list):
            errors.append(ParseError(f"expected a list of {n} values", path=f"gpus.{key}"))
        elif len(value) != n:
            errors.append(ParseError(f"has {len(value)} values, the other columns {n}", path=f"gpus.{key}"))
    if len(errors) > before:
        return None

    identity = _identity(doc, n, errors)
    timestamp, scalar = _timestamps(doc.get("timestamp"), n, errors)
    values: dict[str, np.ndarray] = {}
    keys: dict[str, str] = {}
    for key, column in doc.items():
        if key in _IDENTITY_COLUMNS or key == "timestamp":
            continue
        path = f"gpus.{key}"
        metric = resolve(key)
        if metric is None:
            errors.append(ParseError(f"unknown metric {key!r}", path=path))
            continue
        if metric.equipment is not Equipment.GPU:
            errors.append(ParseError(f"{metric.name} is not a GPU metric (send it under 'samples')", path=path))
            continue
        if metric.name in keys:
            errors.append(ParseError(f"same metric as gpus.{keys[metric.name]}", path=path))
            continue
        array = _values(column, metric, path, errors)
        if array is not None:
            values[metric.name] = array
            keys[metric.name] = key
    if len(errors) > before or identity is None or timestamp is None:
        return None
    return GpuBlock(*identity, timestamp=timestamp, values=values, keys=keys, scalar_timestamp=scalar)


def _identity(doc: dict, n: int, errors: list[ParseError]) -> tuple | None:
    uuid, hostname, gpu = (doc.get(k) for k in _IDENTITY_COLUMNS)
    before = len(errors)
    if uuid is not None and not set(map(type, uuid)) <= {str, type(None)}:
        _bad_items(uuid, lambda v: v is None or isinstance(v, str), "gpus.uuid", "uuid must be text or null",
                   errors)
    if hostname is not None and not set(map(type, hostname)) <= {str, type(None)}:
        _bad_items(hostname, lambda v: v is None or isinstance(v, str), "gpus.hostname",
                   "hostname must be text or null", errors)
    if gpu is not None and not set(map(type, gpu)) <= {int, type(None)}:
        _bad_items(gpu, lambda v: v is None or type(v) is int, "gpus.gpu", "gpu must be an integer index or null",
                   errors)
    if len(errors) > before:
        return None
    # Every row needs a uuid, or a hostname and a gpu index (as in the row format).
    if uuid is not None and (hostname is None or gpu is None):
        if not all(uuid):
            _bad_items(uuid, bool, "gpus.uuid", "a GPU row needs uuid, or hostname and gpu (index)", errors)
    elif uuid is None and (hostname is None or gpu is None):
        errors.append(ParseError("a GPU column block needs uuid, or hostname and gpu (index)", path="gpus"))
    else:
        have = [bool(u) or (bool(h) and g is not None) for u, h, g in zip(uuid or [None] * n, hostname, gpu,
                                                                         strict=True)]
        if not all(have):
            _bad_items(have, bool, "gpus", "a GPU row needs uuid, or hostname and gpu (index)", errors)
    if len(errors) > before:
        return None
    return uuid, hostname, gpu


def _timestamps(raw: Any, n: int, errors: list[ParseError]) -> tuple[np.ndarray | None, bool]:
    if raw is None:
        errors.append(ParseError("missing: epoch seconds or ISO 8601 text, one per row or one for all",
                                 path="gpus.timestamp"))
        return None, False
    if not isinstance(raw, list):
        try:
            ts = _timestamp(raw)
            if not math.isfinite(ts):
                raise ValueError("timestamp must be finite")
        except (ValueError, OverflowError) as exc:
            errors.append(ParseError(str(exc), path="gpus.timestamp"))
            return None, True
        return np.full(n, ts), True
    if set(map(type, raw)) <= _NUMBER_TYPES:
        try:
            array = np.array(raw, dtype=np.float64)
        except OverflowError:
            array = None
        if array is not None and np.isfinite(array).all():
            return array, False
    # Slow path: ISO text, or something wrong to name item by item.
    out = np.empty(n)
    before = len(errors)
    for i, item in enumerate(raw):
        try:
            out[i] = _timestamp(item)
            if not math.isfinite(out[i]):
                raise ValueError("timestamp must be finite")
        except (ValueError, OverflowError) as exc:
            errors.append(ParseError(str(exc), path=f"gpus.timestamp[{i}]"))
            if len(errors) - before >= MAX_ERRORS_PER_COLUMN:
                break
    return (out if len(errors) == before else None), False


def _values(column: list, metric: Metric, path: str, errors: list[ParseError]) -> np.ndarray | None:
    """The column as float64 (NaN: null), or None after naming each value the catalogue refuses."""
    types = set(map(type, column))
    if not types <= _VALUE_TYPES:
        _bad_items(column, lambda v: type(v) in _VALUE_TYPES, path, "value must be a number or null", errors)
        return None
    try:
        array = np.array(column, dtype=np.float64)
    except OverflowError:
        _bad_items(column, _fits_float, path, "value out of range", errors)
        return None
    bad = np.zeros(len(array), bool)
    if not metric.allow_nan:  # NaN sent as a value (JSON NaN), as opposed to null
        bad = np.isnan(array)
        if type(None) in types and bad.any():
            bad &= np.array([v is not None for v in column])
    with np.errstate(invalid="ignore"):
        bad = bad | np.isinf(array)
        if metric.kind is Kind.BITMASK:
            bad |= np.isfinite(array) & (array != np.floor(array))
        if metric.min_value is not None:
            bad |= array < metric.min_value
        if metric.max_value is not None:
            bad |= array > metric.max_value
    if bad.any():
        for i in np.flatnonzero(bad)[:MAX_ERRORS_PER_COLUMN].tolist():
            errors.append(ParseError(metric.check(float(array[i])) or "value not allowed", path=f"{path}[{i}]"))
        return None
    return array
