"""Sensor realism for the twin's telemetry: gaussian noise, dropouts and stuck sensors (seeded).

The physics stays exact; this layer sits between the twin's read-outs and whatever emits telemetry.
Every value comes back as float, NaN where the reading dropped out. Counters (energy, violation time)
and state fields (clock reasons, shutdown) get no noise but can drop out or stick. A stuck sensor
repeats its last good reading for a random number of reads. It has its own random generator, so
reading telemetry never changes the twin's trajectory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

# Standard deviation of the noise per GPU field (in the field's unit).
GPU_NOISE = {
    "temperature_celsius": 0.3,
    "memory_temperature_celsius": 0.5,
    "power_watts": 3.0,
    "utilization_percent": 0.5,
    "tensor_active_ratio": 0.005,
    "tflops": 0.1,
}
# Standard deviation of the noise for unit/facility points, by the unit at the end of the point name.
POINT_NOISE = {
    "_celsius": 0.1,
    "_liters_per_minute": 0.5,
    "_kilograms_per_second": 0.02,
    "_kw": 0.05,
    "_kilopascals": 1.0,
}


@dataclass(frozen=True)
class SensorConfig:
    gpu_noise: Mapping[str, float] = field(default_factory=lambda: dict(GPU_NOISE))
    point_noise: Mapping[str, float] = field(default_factory=lambda: dict(POINT_NOISE))
    dropout_probability: float = 1e-3  # per value per read
    stuck_probability: float = 1e-5  # per sensor per read, chance it starts sticking
    stuck_reads: tuple[int, int] = (60, 900)  # how long it then sticks, in reads
    seed: int = 0


class SensorModel:
    """Apply noise, dropouts and stuck sensors to twin read-outs; keeps per-sensor stuck state."""

    def __init__(self, config: SensorConfig | None = None):
        self.config = config or SensorConfig()
        self.rng = np.random.default_rng([self.config.seed, 7])
        self._stuck: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # key -> (reads left, held value)

    def _pick(self, n: int, p: float) -> np.ndarray:
        """Indices of the ~n*p sensors an event hits (binomial count, then positions: cheap for small p)."""
        k = self.rng.binomial(n, p) if p > 0 and n else 0
        return self.rng.integers(0, n, size=k)

    def _apply(self, key: str, values: np.ndarray, sd: float) -> np.ndarray:
        c = self.config
        out = np.asarray(values, dtype=float).copy()
        n = out.size
        if sd > 0 and n:
            out += self.rng.normal(0.0, sd, n)
        left, held = self._stuck.get(key, (np.zeros(n, np.int64), np.zeros(n)))
        if left.size != n:
            left, held = np.zeros(n, np.int64), np.zeros(n)
        start = self._pick(n, c.stuck_probability)
        if start.size:
            fresh = start[left[start] == 0]
            left[fresh] = self.rng.integers(c.stuck_reads[0], c.stuck_reads[1] + 1, fresh.size)
            held[fresh] = out[fresh]
        stuck = left > 0
        if stuck.any():
            out[stuck] = held[stuck]
            left[stuck] -= 1
        self._stuck[key] = (left, held)
        out[self._pick(n, c.dropout_probability)] = np.nan
        return out

    def gpus(self, values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Sensor view of `Twin.gpus()`: float arrays, NaN for dropped readings."""
        return {k: self._apply(f"gpu:{k}", v, self.config.gpu_noise.get(k, 0.0)) for k, v in values.items()}

    def points(self, values: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
        """Sensor view of `Twin.units()` (or {"facility": Twin.facility()}); setpoint read-backs are exact."""
        out = {}
        for unit, points in values.items():
            keys = list(points)
            raw = np.array([points[k] for k in keys], dtype=float)
            sd = np.array([0.0 if "setpoint" in k else next(
                (s for suffix, s in self.config.point_noise.items() if k.endswith(suffix)), 0.0) for k in keys])
            noisy = self._apply(f"unit:{unit}", raw, 0.0) + self.rng.normal(0.0, 1.0, raw.size) * sd
            out[unit] = dict(zip(keys, noisy.tolist(), strict=True))
        return out
