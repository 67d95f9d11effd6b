"""What the learned policy sees and how its actions map onto setpoints.

The observation is `facility.twin.env.TwinEnv`'s, rebuilt from a `State` (`observe`), so one network runs
on the twin (training data, evaluation) and on live telemetry (`control.runner.state_from_database`): per
hall, (hottest GPU - 60)/30, (mean GPU - 60)/30, margin to 89 C / 30, share throttling, share thermally
throttling, IT kW / nameplate kW, fan duty; per point, command and read-back as -1..1 over the allowable
range and the dwell still to run; outdoor dry/wet bulb, PUE - 1, hour of day as sin/cos.

Actions are moves, not absolute targets: entry i in [-1, 1] asks for `command + a_i x step_i`, where
step_i is the point's max step (a tenth of its range where it has none). Zero holds the point, which makes
"the value of this move over holding" (the rationale the policy gives) a single Q difference, and keeps
what a policy may ask for within one envelope step of where the plant is, as logged history is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

from facility.twin.state import SLOWDOWN_C, Envelope, Key, State

OBS_BOUND = 10.0  # as TwinEnv
HOLD_DEADBAND = 0.1  # moves smaller than this share of a step are not proposed (no chatter against dwell)


class FeatureMismatch(ValueError):
    """The state does not have the halls or points the model was trained on."""


@dataclass(frozen=True)
class PointSpec:
    unit: str
    name: str
    kind: str
    hall: str | None
    allowable_min: float
    allowable_max: float
    step: float
    min_dwell_seconds: float

    @property
    def key(self) -> Key:
        return (self.unit, self.name)

    @classmethod
    def from_envelope(cls, e: Envelope) -> PointSpec:
        span = e.allowable_max - e.allowable_min
        step = e.max_step if e.max_step else span / 10.0
        return cls(e.unit, e.name, e.kind, e.hall, e.allowable_min, e.allowable_max, float(step),
                   float(e.min_dwell_seconds or 0.0))


@dataclass(frozen=True)
class FeatureSpec:
    """The halls and points a model was trained on, in order, and each hall's nameplate IT kW."""

    halls: tuple[tuple[str, str], ...]  # (name, cooling type)
    points: tuple[PointSpec, ...]
    nameplate_kw: tuple[float, ...]

    @property
    def obs_dim(self) -> int:
        return 7 * len(self.halls) + 3 * len(self.points) + 5

    @property
    def act_dim(self) -> int:
        return len(self.points)

    def observation_names(self) -> list[str]:
        names = []
        for h, _ in self.halls:
            names += [f"{h}/{k}" for k in ("gpu_max", "gpu_mean", "margin", "throttling", "thermal_throttling",
                                           "it_load", "fan_duty")]
        for p in self.points:
            names += [f"{p.unit}/{p.name}/{k}" for k in ("command", "value", "dwell")]
        return [*names, "outdoor_dry_bulb", "outdoor_wet_bulb", "pue_minus_1", "hour_sin", "hour_cos"]

    def to_dict(self) -> dict:
        return {"halls": [list(h) for h in self.halls], "points": [asdict(p) for p in self.points],
                "nameplate_kw": list(self.nameplate_kw)}

    @classmethod
    def from_dict(cls, d: Mapping) -> FeatureSpec:
        return cls(tuple((str(n), str(t)) for n, t in d["halls"]), tuple(PointSpec(**p) for p in d["points"]),
                   tuple(float(x) for x in d["nameplate_kw"]))

    @classmethod
    def from_env(cls, env) -> FeatureSpec:
        """The spec of a `TwinEnv` (call after `reset`, which computes the nameplates)."""
        types = {h.name: h.cooling_type for h in env.layout.halls}
        return cls(tuple((h, types[h]) for h in env.halls),
                   tuple(PointSpec.from_envelope(env.envelopes[k]) for k in env.points),
                   tuple(float(env._nameplate_kw.get(h, 0.0)) for h in env.halls))

    def check(self, state: State) -> None:
        """Refuse a state without the model's halls and points (another site, or an edited inventory)."""
        missing = [f"{p.unit}.{p.name}" for p in self.points if p.key not in state.setpoints]
        missing += [f"hall {h}" for h, _ in self.halls if h not in state.halls]
        if missing:
            raise FeatureMismatch(f"the model was trained on points this site lacks: {', '.join(missing)}")


def _norm(x: float, p: PointSpec) -> float:
    span = max(p.allowable_max - p.allowable_min, 1e-9)
    return 2 * (x - p.allowable_min) / span - 1


def observe(state: State, spec: FeatureSpec) -> np.ndarray:
    """The model's input for `state` (float32, `spec.obs_dim`); equal to `TwinEnv`'s on the twin."""
    spec.check(state)
    obs: list[float] = []
    for (name, _), nameplate in zip(spec.halls, spec.nameplate_kw, strict=True):
        h = state.halls[name]
        g = max(h.gpus, 1)
        tmax = h.gpu_temperature_max_c if h.gpus else 60.0
        tmean = h.gpu_temperature_mean_c if h.gpus else 60.0
        obs += [(tmax - 60) / 30, (tmean - 60) / 30, (SLOWDOWN_C - tmax) / 30, h.gpus_throttling / g,
                h.gpus_thermal_throttling / g, h.it_power_kw / max(nameplate, 1e-6), h.fan_duty]
    for p in spec.points:
        sp = state.setpoints[p.key]
        dwell = p.min_dwell_seconds
        left = max(dwell - sp.since_change_s, 0.0) / dwell if dwell else 0.0
        obs += [_norm(sp.command, p), _norm(sp.value, p), left]
    t = state.time
    hour = t.hour + t.minute / 60 + t.second / 3600
    pue = state.facility.get("pue", math.nan)
    obs += [(state.outdoor_dry_bulb_c - 20) / 20, (state.outdoor_wet_bulb_c - 15) / 15,
            (pue - 1) if pue is not None and math.isfinite(pue) else 0.0,
            math.sin(2 * math.pi * hour / 24), math.cos(2 * math.pi * hour / 24)]
    return np.clip(np.nan_to_num(np.asarray(obs, dtype=np.float32)), -OBS_BOUND, OBS_BOUND)


def targets(state: State, spec: FeatureSpec, action) -> list[float]:
    """Setpoint targets for an action (moves from each point's current command), inside the allowable range."""
    a = np.clip(np.asarray(action, dtype=float), -1.0, 1.0)
    out = []
    for x, p in zip(a, spec.points, strict=True):
        cmd = state.setpoints[p.key].command
        out.append(min(max(cmd + float(x) * p.step, p.allowable_min), p.allowable_max))
    return out


def action_from_moves(before: Mapping[Key, float], after: Mapping[Key, float], spec: FeatureSpec) -> np.ndarray:
    """The logged action: each point's applied move as a share of its step (what history records)."""
    return np.clip(np.array([(after[p.key] - before[p.key]) / p.step for p in spec.points], dtype=np.float32),
                   -1.0, 1.0)
