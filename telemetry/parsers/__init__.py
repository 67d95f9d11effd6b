"""Parsers that turn source payloads into catalogue-named samples.

Each parser returns a :class:`ParseResult`: the normalised samples plus everything it did not turn into a
sample (errors, unknown names, not-supported sentinels, folded duplicates), so nothing is dropped silently.
The caller rejects the whole batch when ``errors`` is not empty.

- ``telemetry.parsers.prometheus.parse_exposition``: dcgm-exporter / Prometheus text and OpenMetrics.
- ``telemetry.parsers.redfish.parse_redfish``: Redfish CoolingUnit, CoolantConnector, Pump, Sensor, Control...

Pure Python (no Django), so they can run in any worker.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["CoolingEntity", "GpuEntity", "ParseError", "ParseResult", "Sample", "SetpointReadback"]

# Errors quote the offending text, cut to this length so a hostile payload cannot bloat logs.
MAX_ERROR_TEXT = 200


@dataclass(frozen=True, slots=True)
class GpuEntity:
    """A physical GPU (or, for per-MIG-instance metrics, one MIG instance on it) as dcgm-exporter labels it."""

    uuid: str | None
    hostname: str | None
    gpu: int | None
    pci_bus_id: str | None = None
    model_name: str | None = None
    device: str | None = None
    gpu_instance_id: int | None = None
    gpu_instance_profile: str | None = None


@dataclass(frozen=True, slots=True)
class CoolingEntity:
    """A point on a cooling unit: ``unit`` names the equipment, ``point`` the part of it (e.g.
    ``PrimaryCoolantConnectors/1``, ``Pumps/1``); the metric name says what quantity was measured."""

    unit: str
    point: str = ""


@dataclass(frozen=True, slots=True)
class Sample:
    metric: str  # canonical catalogue name
    value: float  # in the catalogue unit of ``metric``
    timestamp: float  # seconds since the epoch
    entity: GpuEntity | CoolingEntity
    line: int | None = None  # 1-based line in a text exposition
    path: str | None = None  # JSON path in a Redfish document


@dataclass(frozen=True, slots=True)
class SetpointReadback:
    """A Redfish Control (or control excerpt) as read back: its setpoint, allowed range and mode, in SI."""

    metric: str
    entity: CoolingEntity
    setpoint: float | None
    allowable_min: float | None
    allowable_max: float | None
    control_mode: str | None
    timestamp: float
    path: str


@dataclass(frozen=True, slots=True)
class ParseError:
    reason: str
    line: int | None = None
    path: str | None = None
    text: str = ""

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else (self.path or "document")
        return f"{where}: {self.reason}" + (f" ({self.text!r})" if self.text else "")


@dataclass(slots=True)
class ParseResult:
    samples: list[Sample] = field(default_factory=list)
    errors: list[ParseError] = field(default_factory=list)
    # Series (Prometheus) or properties/resources (Redfish) with no catalogue mapping, counted per name.
    unknown_metrics: Counter[str] = field(default_factory=Counter)
    unknown_properties: Counter[str] = field(default_factory=Counter)
    # DCGM "blank"/not-supported sentinels and Redfish null readings: no data, not an error.
    skipped_not_supported: int = 0
    # Device-level values repeated once per MIG instance, kept once per physical GPU.
    mig_duplicates_folded: int = 0
    # Other repeats of the same series at the same time (e.g. one GPU shared by several pods).
    duplicates_folded: int = 0
    setpoints: list[SetpointReadback] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def clip(text: str) -> str:
    return text if len(text) <= MAX_ERROR_TEXT else text[: MAX_ERROR_TEXT - 1] + "…"
