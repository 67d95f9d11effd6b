"""The one actuator interface: write a setpoint to the plant and read it back.

`Actuator.apply` is the only way the control app writes: it refuses (without writing) any value that is not
finite or lies outside the setpoint's allowable range — a last guard behind `control.envelope`, which has
already checked step, rate, dwell and interlocks — then writes, reads back and compares.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

__all__ = ["Actuator", "ActuatorError", "ApplyResult"]


class ActuatorError(Exception):
    """The plant could not be written or read (unreachable, timed out, refused the value)."""


@dataclass
class ApplyResult:
    ok: bool
    readback: float | None
    reason: str = ""


class Actuator(ABC):
    name = "actuator"

    @abstractmethod
    def write(self, setpoint, value: float) -> None:
        """Command `value`; raise ActuatorError if the plant did not accept it."""

    @abstractmethod
    def read(self, setpoint) -> float:
        """The setpoint the plant holds now (its read-back); raise ActuatorError if it cannot be read."""

    def tolerance(self, setpoint) -> float:
        """How far a read-back may differ from the written value and still count as the same."""
        return 1e-6 * max(1.0, abs(setpoint.allowable_max), abs(setpoint.allowable_min))

    def apply(self, setpoint, value: float) -> ApplyResult:
        value = float(value)
        if not math.isfinite(value) or not setpoint.allowable_min <= value <= setpoint.allowable_max:
            raise ActuatorError(f"{value!r} lies outside {setpoint}'s allowable range; nothing written")
        self.write(setpoint, value)
        readback = self.read(setpoint)
        if not math.isfinite(readback) or abs(readback - value) > self.tolerance(setpoint):
            return ApplyResult(False, readback if math.isfinite(readback) else None,
                               f"wrote {value:g} but the plant reads back {readback:g}")
        return ApplyResult(True, readback)
