"""What a controller sees of the twin and what it may ask of it: the twin side of the policy contract.

The split (DESIGN.md: dependencies point one way, control -> facility):

- here, in `facility/twin`: `Envelope` (one setpoint's safety envelope and the clip that enforces it),
  `State` / `HallState` / `SetpointState` (what a policy reads), `Proposal` (what it asks for),
  `PolicyLike` (the duck type evaluation and the gym env drive), `state_from_twin`, and `EnvelopeGuard`,
  the safety layer that clips every proposal and checks every applied value before it reaches the twin;
- in `control/policies`: the abstract `Policy`, the registry and the baselines. `control` re-exports
  `State` and `Proposal` from here, so there is one definition and the twin never imports control.

Envelope semantics (per setpoint, from the facility file): allowable min/max; a change may not exceed
`max_step`, nor `max_rate_per_minute` x the minutes since the point last changed; a point that changed
less than `min_dwell_seconds` ago is held. Missing fields do not limit. Across points, the coil interlock
(as in `control.envelope`): a CRAH's supply air stays at least `COIL_APPROACH_K` above the chilled water of
the loop its coil draws from (`coil_bounds`).
"""

from __future__ import annotations

import copy
import math
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import numpy as np

from .gpu import REASON_HW_SLOWDOWN, REASON_HW_THERMAL, REASON_SW_THERMAL

SLOWDOWN_C = 89.0  # H100 thermal slowdown (TWIN.md "GPU")
THROTTLE_PHI = 0.98  # TWIN.md: a GPU below this clock fraction is throttling
THERMAL_BITS = REASON_SW_THERMAL | REASON_HW_THERMAL | REASON_HW_SLOWDOWN
EPS = 1e-9
# A CRAH coil cannot cool air to within this of its chilled water (settings.CONTROL_COIL_APPROACH_K live).
COIL_APPROACH_K = 3.0
# Setpoint names the controllers reason about (the facility file's, TWIN.md "Controls").
CRAH_SUPPLY_AIR = "supply_air_temperature_setpoint"
CHILLED_WATER = "chilled_water_supply_temperature_setpoint"
TOWER_LEAVING_WATER = "leaving_water_temperature_setpoint"
CDU_SECONDARY_SUPPLY = "secondary_supply_temperature_setpoint"
CDU_PUMP_SPEED = "pump_speed_setpoint"
# Server fan duty of every node in a hall (the BMC fan policy), on a `server_fans` unit: 0.2-1.0. Other fans
# (a CRAH's, a dry cooler's) may carry the same setpoint name: `is_server_fans` tells them apart.
SERVER_FANS = "server_fans"
SERVER_FAN_SPEED = "fan_speed_setpoint"
SERVER_FAN_RANGE = (0.2, 1.0)

Key = tuple[str, str]  # (unit, setpoint name)


def is_server_fans(envelope) -> bool:
    """Is this point a hall's server fan duty (not some other unit's fan)?"""
    return envelope.kind == SERVER_FANS and envelope.name == SERVER_FAN_SPEED


def server_fan_range_problem(kind: str, name: str, measure: str, allowable_min: float,
                             allowable_max: float) -> str | None:
    """Why a setpoint's envelope is not physical for a server-fan duty (None: it is, or the point is not one): a
    ratio inside 0.2-1.0, so no envelope can ever let a controller stop a hall's server fans."""
    if kind != SERVER_FANS or name != SERVER_FAN_SPEED:
        return None
    lo, hi = SERVER_FAN_RANGE
    if measure != "ratio":
        return f"server fan duty is a ratio (0-1), not {measure}"
    if not lo <= allowable_min <= allowable_max <= hi:
        return (f"server fan duty must stay within [{lo:g}, {hi:g}]; the allowable range is "
                f"[{allowable_min:g}, {allowable_max:g}]")
    return None


@dataclass(frozen=True)
class Envelope:
    unit: str
    name: str
    kind: str  # the unit's kind: crah, chiller, cooling_tower, cdu...
    hall: str | None
    allowable_min: float
    allowable_max: float
    max_step: float | None = None
    max_rate_per_minute: float | None = None
    min_dwell_seconds: float | None = None
    coil_loop: str | None = None  # chilled-water loop of a CRAH's coil / a chiller's supply (coil interlock)

    @property
    def key(self) -> Key:
        return (self.unit, self.name)

    def max_change(self, since_change_s: float) -> float:
        """Largest |change| allowed now; 0 while the dwell holds the point."""
        if self.min_dwell_seconds and since_change_s < self.min_dwell_seconds - EPS:
            return 0.0
        limit = math.inf
        if self.max_step is not None:
            limit = self.max_step
        if self.max_rate_per_minute is not None and math.isfinite(since_change_s):
            limit = min(limit, self.max_rate_per_minute * since_change_s / 60.0)
        return limit

    def limit(self, target: float, current: float, since_change_s: float) -> tuple[float, list[str]]:
        """`target` clipped into the envelope from `current`; the reasons it was clipped (empty: untouched)."""
        reasons = []
        value = float(target)
        if not math.isfinite(value):
            return current, ["not finite"]
        if value < self.allowable_min:
            value, reasons = self.allowable_min, [*reasons, "allowable_min"]
        elif value > self.allowable_max:
            value, reasons = self.allowable_max, [*reasons, "allowable_max"]
        room = self.max_change(since_change_s)
        if abs(value - current) > room + EPS:
            if room == 0.0:
                return current, [*reasons, "dwell"]
            why = "max_step" if self.max_step is not None and room >= self.max_step - EPS else "max_rate"
            value = current + math.copysign(room, value - current)
            reasons.append(why)
        return value, reasons

    def violations(self, previous: float, new: float, since_change_s: float) -> list[str]:
        """What is wrong with moving from `previous` to `new` now (empty: allowed). Independent of `limit`."""
        out = []
        if not self.allowable_min - EPS <= new <= self.allowable_max + EPS:
            out.append("range")
        change = abs(new - previous)
        if change > EPS:
            if self.min_dwell_seconds and since_change_s < self.min_dwell_seconds - EPS:
                out.append("dwell")
            if self.max_step is not None and change > self.max_step + 1e-6:
                out.append("max_step")
            if (self.max_rate_per_minute is not None and math.isfinite(since_change_s)
                    and change > self.max_rate_per_minute * since_change_s / 60.0 + 1e-6):
                out.append("max_rate")
        return out


def envelopes_from_layout(layout) -> dict[Key, Envelope]:
    """Every setpoint of a `Layout`'s cooling units with its envelope."""
    out = {}
    for u in layout.units:
        coil_loop = {"crah": u.return_loop, "chiller": u.supply_loop}.get(u.kind)
        for sp in u.setpoints.values():
            out[(u.name, sp.name)] = Envelope(
                u.name, sp.name, u.kind, u.hall, float(sp.allowable_min), float(sp.allowable_max),
                None if sp.max_step is None else float(sp.max_step),
                None if sp.max_rate_per_minute is None else float(sp.max_rate_per_minute),
                None if sp.min_dwell_seconds is None else float(sp.min_dwell_seconds),
                coil_loop if sp.name in (CRAH_SUPPLY_AIR, CHILLED_WATER) else None)
    return out


def coil_bounds(key: Key, commands: Mapping[Key, float], envelopes: Mapping[Key, Envelope]) -> tuple[float, float]:
    """(lowest, highest) value the coil interlock allows point `key` given the other points' `commands`: a
    CRAH's supply air at least its loop's warmest chilled-water setpoint + COIL_APPROACH_K, a chiller's chilled
    water at most its loop's coldest CRAH supply air - COIL_APPROACH_K; unbounded for other points."""
    env = envelopes[key]
    if env.coil_loop is None:
        return -math.inf, math.inf
    other = {CRAH_SUPPLY_AIR: ("chiller", CHILLED_WATER), CHILLED_WATER: ("crah", CRAH_SUPPLY_AIR)}[env.name]
    values = [commands[k] for k, e in envelopes.items() if (e.kind, e.name) == other and e.coil_loop == env.coil_loop]
    if not values:
        return -math.inf, math.inf
    if env.name == CRAH_SUPPLY_AIR:
        return max(values) + COIL_APPROACH_K, math.inf
    return -math.inf, min(values) - COIL_APPROACH_K


def coil_violations(commands: Mapping[Key, float], envelopes: Mapping[Key, Envelope]) -> list[Key]:
    """The points whose command breaks the coil interlock (an audit, independent of any clipping)."""
    out = []
    for key in commands:
        lo, hi = coil_bounds(key, commands, envelopes)
        if not lo - 1e-6 <= commands[key] <= hi + 1e-6:
            out.append(key)
    return out


@dataclass(frozen=True)
class SetpointState:
    envelope: Envelope
    command: float  # last applied command
    value: float  # the plant's read-back (lags the command)
    since_change_s: float  # inf if never changed in this run

    def limit(self, target: float) -> tuple[float, list[str]]:
        return self.envelope.limit(target, self.command, self.since_change_s)


@dataclass(frozen=True)
class HallState:
    name: str
    cooling_type: str  # air or liquid
    gpu_temperature_max_c: float
    gpu_temperature_mean_c: float
    margin_to_slowdown_k: float  # 89 C - hottest GPU
    gpus_throttling: int  # clock fraction < 0.98, any cause
    gpus_thermal_throttling: int  # of those, with a thermal clocks-event bit (0x8/0x20/0x40)
    gpus: int
    it_power_kw: float
    tflops: float
    server_inlet_c: float
    fan_duty: float


@dataclass(frozen=True)
class State:
    time: datetime
    elapsed_s: float
    outdoor_dry_bulb_c: float
    outdoor_wet_bulb_c: float
    setpoints: dict[Key, SetpointState]
    halls: dict[str, HallState]
    facility: dict[str, float]  # Twin.facility(): it/cooling/losses/facility kW, PUE, TFLOPS...

    def of_kind(self, kind: str, hall: str | None = None) -> list[SetpointState]:
        return [s for s in self.setpoints.values()
                if s.envelope.kind == kind and (hall is None or s.envelope.hall == hall)]


@dataclass
class Proposal:
    unit: str
    setpoint: str
    value: float
    rationale: str = ""
    predicted_effect: dict[str, Any] = field(default_factory=dict)
    requested: float | None = None  # what the policy wanted before it clipped to the envelope
    clipped: list[str] = field(default_factory=list)  # why it was clipped (empty: not)

    @property
    def key(self) -> Key:
        return (self.unit, self.setpoint)


@dataclass(frozen=True)
class PolicyContext:
    envelopes: dict[Key, Envelope]
    hall_types: dict[str, str]
    decision_interval_s: float
    seed: int = 0
    # What-if access for model-predictive policies (None where a run has none): an object whose `copy()`
    # returns an independent copy of the plant at its current state - a `TwinWhatIf` in twin runs.
    predictor: Any = None


class TwinWhatIf:
    """`PolicyContext.predictor` of a twin run: `copy()` is a deep copy of the live twin to step without
    touching the run (sharing what never changes in a twin's life: layout, profile, scenario, weather)."""

    def __init__(self, twin):
        self._twin = twin

    def copy(self):
        tw = self._twin
        shared = (tw.layout, tw.profile, tw.scenario, tw.weather, tw.gpu_info)
        return copy.deepcopy(tw, {id(x): x for x in shared if x is not None})


class PolicyLike(Protocol):
    name: str
    decision_interval_s: float

    def reset(self, context: PolicyContext) -> None: ...

    def propose(self, state: State) -> list[Proposal]: ...


_HALL_INDEX: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _hall_index(twin) -> np.ndarray:
    """Hall number of every GPU (cached per twin: the GPU order is fixed for its life)."""
    idx = _HALL_INDEX.get(twin)
    if idx is None:
        pos = {h: i for i, h in enumerate(twin.hall_names)}
        idx = _HALL_INDEX[twin] = np.array([pos[g.hall] for g in twin.gpu_info], dtype=np.int64)
    return idx


def state_from_twin(twin, envelopes: dict[Key, Envelope], last_change_s: dict[Key, float] | None = None) -> State:
    """The `State` a policy sees now. `last_change_s` (twin elapsed seconds of each point's last change)
    comes from the `EnvelopeGuard`; without it every point counts as unchanged."""
    last_change_s = last_change_s or {}
    now = twin.elapsed_s
    sps = {}
    for key, env in envelopes.items():
        sps[key] = SetpointState(env, twin.setpoint_command(*key), twin.read_setpoint(*key),
                                 now - last_change_s.get(key, -math.inf))
    types = {h.name: h.cooling_type for h in twin.layout.halls}
    hall_of = _hall_index(twin)
    b = twin.bank
    thermal = (b.phi < THROTTLE_PHI) & ~b.shutdown & ((b.clocks_event_reasons() & THERMAL_BITS) != 0)
    n_thermal = np.bincount(hall_of, thermal, minlength=len(twin.hall_names))
    n_gpus = np.bincount(hall_of, minlength=len(twin.hall_names))
    halls = {}
    for i, (name, h) in enumerate(twin.halls().items()):
        tmax = h["gpu_temperature_celsius_max"]
        halls[name] = HallState(name, types[name], tmax, h["gpu_temperature_celsius_mean"], SLOWDOWN_C - tmax,
                                h["gpus_throttling"], int(n_thermal[i]), int(n_gpus[i]), h["it_power_kw"], h["tflops"],
                                h["server_inlet_temperature_celsius"], h["fan_duty_ratio"])
    fac = twin.facility()
    return State(twin.time, now, fac["outdoor_dry_bulb_celsius"], fac["outdoor_wet_bulb_celsius"], sps, halls, fac)


@dataclass
class Applied:
    key: Key
    requested: float
    value: float
    reasons: list[str]


class EnvelopeGuard:
    """The safety layer between a policy and the twin: clips each proposal into its envelope, checks the
    result independently, writes it, and counts clipped actions and (must be zero) violations."""

    def __init__(self, twin, envelopes: dict[Key, Envelope]):
        self.twin, self.envelopes = twin, envelopes
        self.last_change_s: dict[Key, float] = {}
        self.clipped = 0
        self.clipped_by: dict[str, int] = {}
        self.violations = 0
        self.violations_by: dict[str, int] = {}
        self.applied = 0
        self.unknown = 0

    def since_change(self, key: Key) -> float:
        return self.twin.elapsed_s - self.last_change_s.get(key, -math.inf)

    def _count(self, table: dict[str, int], reasons: list[str]) -> None:
        for r in reasons:
            table[r] = table.get(r, 0) + 1

    def apply(self, proposals: list[Proposal]) -> list[Applied]:
        out = []
        for p in proposals:
            env = self.envelopes.get(p.key)
            if env is None:  # a point without an envelope is not controllable
                self.unknown += 1
                continue
            current = self.twin.setpoint_command(*p.key)
            since = self.since_change(p.key)
            value, reasons = env.limit(p.value, current, since)
            if env.coil_loop is not None:  # judged against the other points as written so far this round
                commands = {k: self.twin.setpoint_command(*k) for k in self.envelopes}
                lo, hi = coil_bounds(p.key, commands, self.envelopes)
                if not lo - EPS <= value <= hi + EPS:
                    value, more = env.limit(min(max(value, lo), hi), current, since)
                    reasons = [*reasons, "coil", *more]
            # A policy that clipped its own request still made a clipped action.
            reasons = list(dict.fromkeys([*p.clipped, *reasons]))
            if reasons:
                self.clipped += 1
                self._count(self.clipped_by, reasons)
            bad = env.violations(current, value, since)
            if bad:  # the guard itself is wrong: count and refuse
                self.violations += 1
                self._count(self.violations_by, bad)
                continue
            if abs(value - current) > EPS:
                self.twin.write_setpoint(*p.key, value)
                self.last_change_s[p.key] = self.twin.elapsed_s
                self.applied += 1
            out.append(Applied(p.key, p.requested if p.requested is not None else p.value, value, reasons))
        return out
