"""Candidate setpoint moves and what-if predictions of their outcome: shared by the `mpc` and `llm` policies.

Pure Python + numpy (no Django), like the rest of `control.policies`.

Candidates. Controllable points are grouped: every point with the same setpoint name in the same hall
(all CRAHs of hall A, all CDU supply setpoints of hall B...) moves together; site-level points (each
chiller, each tower) are groups of one. A candidate is "hold" or one group moved one step up or down
(`generate`): 1 + 2 x groups candidates, never the product of all combinations. `combine` then merges the
single moves that each beat "hold" (one per group) into one more candidate, so coordinated moves are found
in two rounds of prediction instead of an exponential search. Only groups that their envelope lets move now
(dwell, rate) get candidates; every target is clipped into the envelope (`SetpointState.limit`).

Interlock (DESIGN.md "Control safety"): no candidate warms a hall whose hottest GPU is at or above
`hot_c` or within `interlock_margin_k` of slowdown - no supply-temperature rise (CRAH supply air, CDU
secondary supply), no CDU flow cut, and no chilled-water rise that would lift that hall's supply air
through the coil approach (supply air >= chilled water + 3 K).

Predictors (`Predictor` protocol): `predict(state, candidates) -> list[Outcome]`, one per candidate,
each the outcome over the horizon (TWIN.md: 5 steps of 30 s) if the candidate were applied now and then
held. Three are provided:

- `TwinPredictor(twin or handle)`: a copy of the live twin at the current state per candidate (the run's
  handle's `copy()`, or `copy_twin`: `copy.deepcopy` sharing the read-only layout, profile, weather and
  scenario, ~1 ms for the 256-GPU demo), stepped at `substep_s` (30 s default, the 5 x 30 s of TWIN.md;
  backward Euler is stable there, a 150 s rollout costs a few ms, and 10 s gave the same decisions on
  the demo). Used in closed-loop evaluation, where `facility.twin.evaluation` hands the policy a what-if
  handle of its twin as `PolicyContext.predictor` (see `context_predictor`). Disturbances (weather,
  workload) follow the live twin's own seeds, so the forecast of them is perfect: an optimistic what-if,
  stated here so nobody mistakes it for a live result. Each rollout then continues coarsely for
  `tail_steps` x `tail_step_s` (4 x 150 s): the chiller and tower lag 300 s and the air 120 s, so a 150 s
  horizon alone sees a chilled-water rise's savings before the warmer air it brings (the terminal cost).
- `SurrogatePredictor()`: a small analytical model built from the `State` alone (GPU temperatures move
  1:1 with their coolant supply with a first-order lag, leakage and the soft clock derate as in TWIN.md,
  plant power from the chiller COP / affinity laws). It is the fallback when neither a twin nor a trained
  forecaster is available, and its plant-energy part is reused by the next one.
- `ForecastPredictor(site)`: live. GPU temperature deltas from the active MLA forecaster
  (`inference.serving.forecast_effect`, the what-if of each candidate's setpoints), plant energy from the
  surrogate's plant model. Needs Django and an active `ModelVersion`; `ForecastPredictor.available()`
  says whether one is there, and every failure falls back to the surrogate for that decision.

Scoring (`score`): facility energy per unit of work over the horizon plus a terminal term (the predicted
continuation where the predictor gives one, else the end-of-horizon rates held for `terminal_s`, since
setpoint effects outlast a 150 s horizon), times penalties for GPU-seconds above 85 C, thermal throttling
and (heavily) any shutdown. Lower is better.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from facility.twin.state import CDU_PUMP_SPEED as CDU_PUMP
from facility.twin.state import CDU_SECONDARY_SUPPLY as CDU_SUPPLY
from facility.twin.state import CHILLED_WATER as CHW
from facility.twin.state import (
    COIL_APPROACH_K,
    SLOWDOWN_C,
    THERMAL_BITS,
    THROTTLE_PHI,
    Envelope,
    Key,
    SetpointState,
    State,
    coil_bounds,
    coil_violations,
    is_server_fans,
)
from facility.twin.state import CRAH_SUPPLY_AIR as CRAH_SAT
from facility.twin.state import SERVER_FAN_SPEED as FANS
from facility.twin.state import TOWER_LEAVING_WATER as TOWER

# One candidate step per point (clipped further by the envelope's max_step and rate).
DEFAULT_STEPS = {CRAH_SAT: 1.0, CHW: 0.5, TOWER: 1.0, CDU_SUPPLY: 1.0, CDU_PUMP: 0.1, FANS: 0.05}
SHORT_NAMES = {CRAH_SAT: "supply air", CHW: "chilled water", TOWER: "tower leaving water", CDU_SUPPLY: "CDU supply",
               CDU_PUMP: "CDU pump speed", FANS: "server fans"}
# Points where "up" warms GPUs; on the flow points (pump speed, server fan duty) a cut warms them (`_warms`).
SUPPLY_POINTS = {CRAH_SAT, CDU_SUPPLY}
FLOW_POINTS = {CDU_PUMP, FANS}
HOT_C = 85.0


# --------------------------------------------------------------------------------------------------
# Candidates


@dataclass(frozen=True)
class Group:
    """Points moved together: one setpoint name within one hall (or one site-level unit)."""

    name: str  # setpoint name
    hall: str | None
    keys: tuple[Key, ...]
    label: str


@dataclass
class Candidate:
    id: str
    label: str
    targets: dict[Key, float] = field(default_factory=dict)  # only points that move
    requested: dict[Key, float] = field(default_factory=dict)
    clipped: dict[Key, list[str]] = field(default_factory=dict)
    moves: tuple[tuple[str, float], ...] = ()  # (group label, signed step) of each move

    @property
    def is_hold(self) -> bool:
        return not self.targets


def groups(state: State) -> list[Group]:
    """The controllable groups of `state`, in a stable order."""
    found: dict[tuple[str, str | None, str | None], list[Key]] = {}
    for key, sp in sorted(state.setpoints.items()):
        env = sp.envelope
        if env.name not in DEFAULT_STEPS or (env.name == FANS and not is_server_fans(env)):
            continue
        unit = None if env.hall is not None else env.unit  # site-level units are groups of one
        found.setdefault((env.name, env.hall, unit), []).append(key)
    out = []
    for (name, hall, unit), keys in found.items():
        short = SHORT_NAMES[name]
        where = hall if hall is not None else unit
        out.append(Group(name, hall, tuple(keys), f"{short} {where}"))
    return out


def hot_halls(state: State, hot_c: float = 82.0, interlock_margin_k: float = 5.0) -> set[str]:
    return {h.name for h in state.halls.values()
            if h.gpus and (h.gpu_temperature_max_c >= hot_c or h.margin_to_slowdown_k < interlock_margin_k)}


def _warms(state: State, group: Group, sign: int, hot: set[str]) -> bool:
    """Would this move warm a hot hall's GPUs? (A chilled-water rise cannot: the coil interlock keeps every
    CRAH able to reach its supply air.)"""
    if group.name in SUPPLY_POINTS:
        return sign > 0 and group.hall in hot
    if group.name in FLOW_POINTS:
        return sign < 0 and group.hall in hot
    return False


def _envelopes(state: State) -> dict[Key, Envelope]:
    return {k: sp.envelope for k, sp in state.setpoints.items()}


def _move(group: Group, state: State, sign: int, steps: dict[str, float]) -> tuple[dict, dict, dict] | None:
    """Targets for every point of `group` one step in direction `sign`, clipped (by its envelope and the
    coil interlock, as the safety layer would); None if nothing moves."""
    targets, requested, clipped = {}, {}, {}
    commands, envelopes = {k: sp.command for k, sp in state.setpoints.items()}, _envelopes(state)
    for key in group.keys:
        sp: SetpointState = state.setpoints[key]
        want = sp.command + sign * steps[group.name]
        value, reasons = sp.limit(want)
        lo, hi = coil_bounds(key, commands, envelopes)
        if not lo - 1e-9 <= value <= hi + 1e-9:
            value, more = sp.limit(min(max(value, lo), hi))
            reasons = [*reasons, "coil", *more]
        if abs(value - sp.command) < 1e-9 or (value - sp.command) * sign < 0:
            return None  # held (dwell) or at its bound: the group cannot move that way now
        targets[key], requested[key] = value, want
        if reasons:
            clipped[key] = reasons
    return targets, requested, clipped


def generate(state: State, steps: dict[str, float] | None = None, hot_c: float = 82.0,
             interlock_margin_k: float = 5.0, only: Sequence[str] | None = None) -> list[Candidate]:
    """"hold" plus each free group one step down and one step up (interlocked). Ids: c0 (hold), c1, ..."""
    steps = {**DEFAULT_STEPS, **(steps or {})}
    hot = hot_halls(state, hot_c, interlock_margin_k)
    out = [Candidate("c0", "hold everything")]
    for g in groups(state):
        if only is not None and g.name not in only:
            continue
        for sign in (-1, 1):
            m = _move(g, state, sign, steps)
            if m is None or _warms(state, g, sign, hot):
                continue
            targets, requested, clipped = m
            delta = next(iter(targets.values())) - state.setpoints[g.keys[0]].command
            unit = "" if g.name in FLOW_POINTS else " K"
            out.append(Candidate(f"c{len(out)}", f"{g.label} {delta:+.2f}{unit}", targets, requested, clipped,
                                 ((g.label, delta),)))
    return out


def combine(state: State, candidates: Sequence[Candidate], scores: Sequence[float]) -> Candidate | None:
    """The union of the single moves that beat "hold" (the better direction per group), if two or more."""
    hold = scores[0]
    best: dict[str, tuple[float, Candidate]] = {}
    for c, s in zip(candidates, scores, strict=True):
        if c.is_hold or len(c.moves) != 1 or not s < hold:
            continue
        g = c.moves[0][0]
        if g not in best or s < best[g][0]:
            best[g] = (s, c)
    if len(best) < 2:
        return None
    merged = Candidate(f"c{len(candidates)}", "combined: " + ", ".join(c.label for _, c in best.values()))
    for _, c in best.values():
        merged.targets.update(c.targets)
        merged.requested.update(c.requested)
        merged.clipped.update(c.clipped)
        merged.moves += c.moves
    # The coil interlock again on the merged set (a CHW rise next to a supply-air cut is judged on the new air).
    commands = {k: merged.targets.get(k, sp.command) for k, sp in state.setpoints.items()}
    if coil_violations(commands, _envelopes(state)):
        return None
    return merged


# --------------------------------------------------------------------------------------------------
# Outcomes and scoring


@dataclass
class Outcome:
    """Predicted totals over the horizon (and the rates at its end) if a candidate were applied now."""

    horizon_s: float
    facility_kwh: float
    it_kwh: float
    cooling_kwh: float
    tflop: float
    ref_tflop: float  # the same work at clock fraction 1 (unthrottled)
    max_gpu_c: float
    gpu_s_above_85c: float = 0.0
    gpu_s_thermal_throttled: float = 0.0
    shutdowns: int = 0
    end_facility_kw: float = 0.0
    end_tflops: float = 0.0
    source: str = "twin"
    # Optional coarse continuation past the horizon (TwinPredictor tail_steps): its energy and work.
    tail_kwh: float = 0.0
    tail_tflop: float = 0.0
    end_max_gpu_c: float = math.nan  # hottest GPU at the end of the horizon (max_gpu_c: over it)
    tail_s: float = 0.0  # length of the continuation; its hot GPU-seconds and shutdowns count above
    tail_ref_tflop: float = 0.0  # the continuation's work at clock fraction 1
    tail_cooling_kwh: float = 0.0  # the continuation's cooling share of tail_kwh
    end_cooling_kw: float = math.nan  # cooling power at the end of the horizon (nan: unknown, use the mean)
    # The servers' fans (part of IT): cooling work done inside the servers, priced with the plant's by
    # `cooling_weight` so a policy cannot look cheaper on cooling by moving the work into the servers.
    server_fan_kwh: float = 0.0
    tail_server_fan_kwh: float = 0.0
    end_server_fan_kw: float = math.nan

    @property
    def kwh_per_eflop(self) -> float:
        return self.facility_kwh / (self.tflop / 1e6) if self.tflop > 0 else math.inf

    @property
    def throughput_ratio(self) -> float:
        return self.tflop / self.ref_tflop if self.ref_tflop > 0 else math.nan

    @property
    def sustained_throughput_ratio(self) -> float:
        """Over the horizon and its continuation: a supply change reaches GPU clocks minutes later."""
        ref = self.ref_tflop + self.tail_ref_tflop
        return (self.tflop + self.tail_tflop) / ref if ref > 0 else math.nan

    def effect(self, hold: Outcome | None = None) -> dict[str, Any]:
        """The `Proposal.predicted_effect` the approver sees (deltas against holding, where given); JSON-safe
        (a value that is not finite becomes None: PostgreSQL's jsonb has no NaN)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in self._effect(hold).items()}

    def _effect(self, hold: Outcome | None) -> dict[str, Any]:
        out = {
            "horizon_s": self.horizon_s,
            "predictor": self.source,
            "facility_kwh": round(self.facility_kwh, 4),
            "cooling_kwh": round(self.cooling_kwh, 4),
            "kwh_per_eflop": round(self.kwh_per_eflop, 5),
            "max_gpu_temperature_c": round(self.max_gpu_c, 2),
            "end_max_gpu_temperature_c": round(self.end_max_gpu_c, 2),
            "throughput_ratio": round(self.throughput_ratio, 5),
            "gpu_seconds_above_85c": round(self.gpu_s_above_85c, 1),
            "shutdowns": int(self.shutdowns),
        }
        if hold is not None:
            out.update({
                "delta_facility_kwh": round(self.facility_kwh - hold.facility_kwh, 5),
                "delta_cooling_kwh": round(self.cooling_kwh - hold.cooling_kwh, 5),
                "delta_kwh_per_eflop_pct": round(100 * (self.kwh_per_eflop / hold.kwh_per_eflop - 1), 4)
                if math.isfinite(hold.kwh_per_eflop) and hold.kwh_per_eflop > 0 else None,
                "delta_max_gpu_temperature_c": round(self.max_gpu_c - hold.max_gpu_c, 3),
                "delta_end_max_gpu_temperature_c": round(self.end_max_gpu_c - hold.end_max_gpu_c, 3),
                "delta_throughput_pct": round(100 * (self.tflop / hold.tflop - 1), 4) if hold.tflop > 0 else None,
            })
        return out


def score(o: Outcome, gpus: int, terminal_s: float = 300.0, hot_weight: float = 0.2,
          throttle_weight: float = 0.5, shutdown_weight: float = 10.0, min_throughput: float | None = None,
          floor_weight: float = 100.0, cooling_weight: float = 0.0) -> float:
    """kWh per EFLOP over the horizon plus `terminal_s` at the end-of-horizon rates, times (1 + penalties);
    the penalties are shares of GPU-time hot (>85 C) or thermally throttled, shutdowns per GPU, and (with
    `min_throughput`, a share of unthrottled work) the predicted shortfall below that floor over the horizon
    and its continuation: each point below it costs `floor_weight` points of objective, far more than any
    energy a move saves. `cooling_weight` counts each kWh of cooling 1 + w times, the plant's and the server
    fans' alike: an operator's price on cooling beyond its energy (water, plant wear, a demand charge); 0 is
    plain facility energy."""
    if o.tail_tflop > 0:  # a predicted continuation replaces the held end rates
        kwh, tflop = o.facility_kwh + o.tail_kwh, o.tflop + o.tail_tflop
        cooling = o.cooling_kwh + o.tail_cooling_kwh + o.server_fan_kwh + o.tail_server_fan_kwh
    else:
        kwh = o.facility_kwh + o.end_facility_kw * terminal_s / 3600
        tflop = o.tflop + o.end_tflops * terminal_s

        def held(end_kw: float, over_horizon_kwh: float) -> float:
            mean_kw = over_horizon_kwh * 3600 / o.horizon_s if o.horizon_s > 0 else 0.0
            kw = end_kw if math.isfinite(end_kw) else mean_kw
            return over_horizon_kwh + kw * terminal_s / 3600

        cooling = held(o.end_cooling_kw, o.cooling_kwh) + held(o.end_server_fan_kw, o.server_fan_kwh)
    if tflop <= 0:
        return math.inf
    gpu_s = max(gpus, 1) * max(o.horizon_s + o.tail_s, 1.0)
    pen = (hot_weight * o.gpu_s_above_85c / gpu_s + throttle_weight * o.gpu_s_thermal_throttled / gpu_s
           + shutdown_weight * o.shutdowns / max(gpus, 1))
    if min_throughput is not None and math.isfinite(o.sustained_throughput_ratio):
        pen += floor_weight * max(0.0, min_throughput - o.sustained_throughput_ratio)
    return (kwh + cooling_weight * cooling) / (tflop / 1e6) * (1.0 + pen)


# --------------------------------------------------------------------------------------------------
# Predictors


class Predictor(Protocol):
    name: str

    def predict(self, state: State, candidates: Sequence[Candidate]) -> list[Outcome]: ...


def context_predictor(context) -> Predictor | None:
    """The what-if model a run hands its policy (`PolicyContext.predictor`), if any: a `Predictor` as is,
    a twin what-if handle (an object with `copy()`, or a `Twin`) wrapped in a `TwinPredictor`."""
    p = getattr(context, "predictor", None)
    if p is None or callable(getattr(p, "predict", None)):
        return p
    return TwinPredictor(p)


def copy_twin(twin):
    """An independent copy of a twin at its current state, sharing what never changes in a twin's life
    (layout, profile, scenario, weather tables, GPU inventory): ~1 ms for the 256-GPU demo."""
    shared = [twin.layout, twin.profile, twin.scenario, twin.weather, twin.gpu_info, *twin.layout.units,
              *(getattr(twin.profile, a, None) for a in ("gpu", "node", "plant"))]
    return copy.deepcopy(twin, {id(x): x for x in shared if x is not None})


class TwinPredictor:
    """What-if rollouts on copies of a live `facility.twin.Twin` (module docstring)."""

    name = "twin"

    def __init__(self, source, horizon_steps: int = 5, step_s: float = 30.0, substep_s: float = 30.0,
                 tail_steps: int = 4, tail_step_s: float = 150.0):
        """`source`: a `Twin`, or a what-if handle whose `copy()` returns an independent copy of the plant
        at its current state (what a run hands over as `PolicyContext.predictor`). `tail_steps` x
        `tail_step_s` continue each rollout coarsely past the horizon (the terminal cost; 0: the score
        holds the end-of-horizon rates instead)."""
        self.source = source
        self.horizon_steps, self.step_s, self.substep_s = int(horizon_steps), float(step_s), float(substep_s)
        self.tail_steps, self.tail_step_s = int(tail_steps), float(tail_step_s)
        self.rollouts = 0

    @property
    def horizon_s(self) -> float:
        return self.horizon_steps * self.step_s

    def _copy(self):
        if callable(getattr(self.source, "copy", None)):
            return self.source.copy()
        return copy_twin(self.source)

    def rollout(self, targets: dict[Key, float]) -> Outcome:
        tw = self._copy()
        sps = tw.plant.setpoints
        for (unit, name), value in targets.items():
            i = sps.find(unit, name)
            tw.write_setpoint(unit, name, float(min(max(value, sps.lo[i]), sps.hi[i])))
        b = tw.bank
        n_sub = max(1, round(self.step_s / self.substep_s))
        dt = self.step_s / n_sub
        h = dt / 3600
        fac = it = cool = fans = tflop = ref = hot = thr = 0.0
        tmax = float(b.tj.max()) if b.n else math.nan
        shut0 = b.shutdown_events
        fac_kw = tflops = cool_kw = 0.0
        for _ in range(self.horizon_steps * n_sub):
            tw.step(1, dt)
            it_kw = float(tw.node_power_w.sum()) / 1000
            cool_kw = tw.plant.cooling_kw
            fac_kw = it_kw + cool_kw + tw.plant.losses_kw(it_kw)
            tflops = float(b.tflops().sum())
            fac += fac_kw * h
            it += it_kw * h
            cool += cool_kw * h
            fans += tw.server_fan_kw * h
            tflop += tflops * dt
            ref += float((tw.workload.tflops_max * tw.workload.u).sum()) * dt
            tj = b.tj
            tmax = max(tmax, float(tj.max()) if b.n else math.nan)
            hot += float((tj > HOT_C).sum()) * dt
            thermal = (b.phi < THROTTLE_PHI) & ~b.shutdown & ((b.clocks_event_reasons() & THERMAL_BITS) != 0)
            thr += float(thermal.sum()) * dt
        end_max = float(b.tj.max()) if b.n else math.nan
        end_cool_kw = cool_kw if self.horizon_steps else math.nan
        end_fans_kw = tw.server_fan_kw if self.horizon_steps else math.nan
        tail_kwh = tail_cool = tail_fans = tail_tflop = tail_ref = 0.0
        for _ in range(self.tail_steps):
            tw.step(1, self.tail_step_s)
            it_kw = float(tw.node_power_w.sum()) / 1000
            cool_kw = tw.plant.cooling_kw
            tail_kwh += (it_kw + cool_kw + tw.plant.losses_kw(it_kw)) * self.tail_step_s / 3600
            tail_cool += cool_kw * self.tail_step_s / 3600
            tail_fans += tw.server_fan_kw * self.tail_step_s / 3600
            tail_tflop += float(b.tflops().sum()) * self.tail_step_s
            tail_ref += float((tw.workload.tflops_max * tw.workload.u).sum()) * self.tail_step_s
            hot += float((b.tj > HOT_C).sum()) * self.tail_step_s
        self.rollouts += 1
        return Outcome(self.horizon_s, fac, it, cool, tflop, ref, tmax, hot, thr, int(b.shutdown_events - shut0),
                       fac_kw, tflops, self.name, tail_kwh, tail_tflop, end_max, self.tail_steps * self.tail_step_s,
                       tail_ref, tail_cool, end_cool_kw, fans, tail_fans, end_fans_kw)

    def predict(self, state: State, candidates: Sequence[Candidate]) -> list[Outcome]:
        return [self.rollout(c.targets) for c in candidates]


# ---- the analytical surrogate (and plant energy model) ----


@dataclass
class SurrogateParams:
    """TWIN.md seed-profile figures the surrogate uses; rough on purpose (it is a fallback)."""

    soft_derate_per_k: float = 0.004  # throughput lost per K above the knee
    soft_knee_c: float = 50.0
    leakage_per_k: float = 0.003  # share of IT power per K of junction temperature
    gpu_tau_s: float = 60.0  # junction response to a coolant-supply change
    air_tau_s: float = 120.0  # CRAH supply air follows its setpoint
    liquid_tau_s: float = 60.0  # CDU secondary supply
    chw_delta_t_k: float = 6.0
    evap_below_chw_k: float = 2.0
    cond_above_tower_k: float = 5.44
    chiller_efficiency: float = 0.5
    cop_min: float = 2.0
    cop_max: float = 12.0
    flow_r_exponent: float = 0.8  # junction-to-coolant resistance ~ flow^-0.8 (convective part ~60 %)
    liquid_rise_k_per_flow: float = 8.0  # junction rise over supply at nominal flow that scales with flow
    # Server fans (air halls): the share of the junction's rise over its inlet air that scales as duty^-0.8
    # (the heat sink's R_sf of R_js + R_sf, 0.03 of 0.04 K/W), and their power at full duty per GPU
    # (1.2 kW per 8-GPU node through a 0.95 PSU), counted as IT power.
    fan_rise_share: float = 0.75
    fan_rise_k: float = 25.0  # the rise when the state does not give one (no inlet reading)
    server_fan_kw_per_gpu: float = 0.158


def _server_fans(state: State, hall: str) -> list[SetpointState]:
    """A hall's server-fan duty points (not other units' fans of the same setpoint name)."""
    return [sp for sp in state.setpoints.values() if is_server_fans(sp.envelope) and sp.envelope.hall == hall]


class SurrogatePredictor:
    """A State-only what-if (module docstring). Coarse: it knows the TWIN.md laws, not this site's data."""

    name = "surrogate"

    def __init__(self, horizon_s: float = 150.0, params: SurrogateParams | None = None):
        self.horizon_s = float(horizon_s)
        self.p = params or SurrogateParams()

    def _chiller_kw(self, state: State, chw_c: float, tower_c: float | None) -> float:
        """Mechanical-cooling power at chilled water chw_c, scaled from the present chiller power."""
        p = self.p
        t_cond = (tower_c if tower_c is not None else state.outdoor_wet_bulb_c + 5.56) + p.cond_above_tower_k
        evap = chw_c - p.evap_below_chw_k
        lift = max(t_cond - evap, 0.1)
        return float(np.clip(p.chiller_efficiency * (evap + 273.15) / lift, p.cop_min, p.cop_max))

    def plant_delta_kw(self, state: State, targets: dict[Key, float]) -> float:
        """Cooling power change if `targets` held (steady state): chiller COP with chilled water and tower
        water, CDU pumps by the affinity law. Other plant terms are taken as unchanged."""
        fac = state.facility
        cooling_kw = fac.get("cooling_power_kw", 0.0)
        delta = 0.0
        chws = [(k, sp) for k, sp in state.setpoints.items() if sp.envelope.name == CHW]
        towers = [sp for sp in state.setpoints.values() if sp.envelope.name == TOWER]
        tower_now = min((t.command for t in towers), default=None)
        tower_new = min((targets.get(t.envelope.key, t.command) for t in towers), default=None)
        if chws:
            # The chiller's share of cooling power: assume ~70 % of cooling (TWIN.md plant) when not reported.
            chiller_kw = 0.7 * cooling_kw
            for k, sp in chws:
                cop_now = self._chiller_kw(state, sp.command, tower_now)
                cop_new = self._chiller_kw(state, targets.get(k, sp.command), tower_new)
                delta += chiller_kw / len(chws) * (cop_now / cop_new - 1.0)
        for k, sp in state.setpoints.items():
            if sp.envelope.name == CDU_PUMP and k in targets:
                nominal_kw = 0.55  # per CDU at speed 1 (demo plant; pump dP*Q/eta)
                delta += nominal_kw * (targets[k] ** 3 - sp.command ** 3)
        return delta

    def gpu_shift_k(self, state: State, hall, targets: dict[Key, float]) -> float:
        """Steady junction-temperature change of a hall from its supply / flow targets."""
        p = self.p

        def of(name: str) -> list[SetpointState]:
            return [sp for sp in state.setpoints.values() if sp.envelope.name == name and sp.envelope.hall == hall.name]

        if hall.cooling_type == "air":
            pts = of(CRAH_SAT)
            chws = [sp for sp in state.setpoints.values() if sp.envelope.name == CHW]
            floor_now = max((sp.command for sp in chws), default=-math.inf) + COIL_APPROACH_K
            floor_new = max((targets.get(sp.envelope.key, sp.command) for sp in chws),
                            default=-math.inf) + COIL_APPROACH_K
            now = [max(sp.command, floor_now) for sp in pts]
            new = [max(targets.get(sp.envelope.key, sp.command), floor_new) for sp in pts]
            shift = float(np.mean(new) - np.mean(now)) if pts else 0.0
            fans = _server_fans(state, hall.name)
            if fans:
                rise = hall.gpu_temperature_mean_c - hall.server_inlet_c
                rise = rise if math.isfinite(rise) and rise > 0 else p.fan_rise_k
                ratio = np.mean([targets.get(sp.envelope.key, sp.command) / max(sp.command, 0.05) for sp in fans])
                shift += p.fan_rise_share * rise * (ratio ** -p.flow_r_exponent - 1.0)
            return shift
        shift = 0.0
        sup = of(CDU_SUPPLY)
        if sup:
            shift += float(np.mean([targets.get(sp.envelope.key, sp.command) - sp.command for sp in sup]))
        pumps = of(CDU_PUMP)
        if pumps:
            ratio = np.mean([targets.get(sp.envelope.key, sp.command) / max(sp.command, 0.05) for sp in pumps])
            shift += p.liquid_rise_k_per_flow * (ratio ** -p.flow_r_exponent - 1.0)
        return shift

    def server_fans_kw(self, state: State, hall, targets: dict[Key, float]) -> float:
        """An air hall's server-fan power with `targets` (affinity law, power ~ duty^3; part of its IT power; the
        hall's own duty where it has no fan point). Liquid halls' fans are fixed and not counted here."""
        if hall.cooling_type != "air":
            return 0.0
        fans = _server_fans(state, hall.name)
        cube = (float(np.mean([targets.get(sp.envelope.key, sp.command) ** 3 for sp in fans])) if fans
                else hall.fan_duty ** 3)
        return hall.gpus * self.p.server_fan_kw_per_gpu * cube

    def fan_delta_kw(self, state: State, hall, targets: dict[Key, float]) -> float:
        """Server-fan power change of a hall if `targets` held."""
        return self.server_fans_kw(state, hall, targets) - self.server_fans_kw(state, hall, {})

    def outcome(self, state: State, targets: dict[Key, float],
                gpu_shift: dict[str, float] | None = None, source: str | None = None) -> Outcome:
        p, fac = self.p, state.facility
        h = self.horizon_s / 3600
        it_kw = tflops = ref = 0.0
        tmax = -math.inf
        for hall in state.halls.values():
            if not hall.gpus:
                continue
            ss = (gpu_shift or {}).get(hall.name, self.gpu_shift_k(state, hall, targets))
            # Average over the horizon of a first-order response; the end rates use the full shift.
            tau = p.air_tau_s + p.gpu_tau_s if hall.cooling_type == "air" else p.liquid_tau_s + p.gpu_tau_s
            avg = ss * (1 - tau / self.horizon_s * (1 - math.exp(-self.horizon_s / tau)))
            over_now = max(0.0, hall.gpu_temperature_mean_c - p.soft_knee_c)
            over_new = max(0.0, hall.gpu_temperature_mean_c + ss - p.soft_knee_c)
            tf = hall.tflops * (1 - p.soft_derate_per_k * (over_new - over_now))
            it_kw += hall.it_power_kw * (1 + p.leakage_per_k * ss) + self.fan_delta_kw(state, hall, targets)
            tflops += tf
            ref += hall.tflops / max(1 - p.soft_derate_per_k * over_now, 0.3)
            tmax = max(tmax, hall.gpu_temperature_max_c + max(ss, avg))
        fans_kw = sum(self.server_fans_kw(state, hall, targets) for hall in state.halls.values())
        cool_kw = fac.get("cooling_power_kw", 0.0) + self.plant_delta_kw(state, targets)
        loss_ratio = fac.get("losses_kw", 0.0) / max(fac.get("it_power_kw", 0.0), 1e-9)
        fac_kw = it_kw + cool_kw + loss_ratio * it_kw
        hot = 0.0
        for hall in state.halls.values():
            if hall.gpus and hall.gpu_temperature_max_c + (gpu_shift or {}).get(hall.name, 0.0) > HOT_C:
                hot += hall.gpus * self.horizon_s * 0.1
        return Outcome(self.horizon_s, fac_kw * h, it_kw * h, cool_kw * h, tflops * self.horizon_s,
                       ref * self.horizon_s, tmax if math.isfinite(tmax) else math.nan, hot, 0.0,
                       int(tmax >= 92.0), fac_kw, tflops, source or self.name,
                       end_max_gpu_c=tmax if math.isfinite(tmax) else math.nan, end_cooling_kw=cool_kw,
                       server_fan_kwh=fans_kw * h, end_server_fan_kw=fans_kw)

    def predict(self, state: State, candidates: Sequence[Candidate]) -> list[Outcome]:
        return [self.outcome(state, c.targets) for c in candidates]


class ForecastPredictor:
    """Live what-if: the active MLA forecaster for GPU temperatures (`inference.serving.forecast_effect`),
    the surrogate's plant model for energy. Needs Django; falls back to the surrogate per decision on any
    forecaster error (no active model, no recent telemetry), counting `fallbacks`."""

    name = "forecaster"

    def __init__(self, site=None, horizon_s: float = 150.0, horizon_key: str | None = None):
        self.site = site
        self.surrogate = SurrogatePredictor(horizon_s)
        self.horizon_key = horizon_key
        self.fallbacks = 0
        self.last_error = ""

    @staticmethod
    def available() -> bool:
        try:
            from inference.models import ModelKind, ModelVersion

            return ModelVersion.objects.filter(kind=ModelKind.FORECASTER, active=True).exists()
        except Exception:  # no Django, no table, no app: not available
            return False

    def _shifts(self, state: State, c: Candidate) -> dict[str, float] | None:
        from inference.serving import forecast_effect

        if c.is_hold:
            return {}
        # The forecaster has no server-fan input (its training data never moved them): the surrogate's fan
        # law judges those moves, the forecaster the rest.
        fans = {k: v for k, v in c.targets.items() if is_server_fans(state.setpoints[k].envelope)}
        rest = {k: v for k, v in c.targets.items() if k not in fans}
        shifts: dict[str, float] = {}
        if rest:
            effect = forecast_effect({f"{u}.{n}": v for (u, n), v in rest.items()}, site=self.site)
            summary = effect.get("summary") or {}
            if not summary:
                return None
            key = self.horizon_key or max(summary, key=lambda h: float(h.rstrip("s")))
            halls = {state.setpoints[k].envelope.hall for k in rest} - {None}
            shifts = dict.fromkeys(halls or set(state.halls), float(summary[key]["mean_delta_gpu_temperature_celsius"]))
        for hall in {state.setpoints[k].envelope.hall for k in fans}:
            if hall in state.halls:
                shifts[hall] = shifts.get(hall, 0.0) + self.surrogate.gpu_shift_k(state, state.halls[hall], fans)
        return shifts

    def predict(self, state: State, candidates: Sequence[Candidate]) -> list[Outcome]:
        out = []
        for c in candidates:
            try:
                shifts = self._shifts(state, c)
            except Exception as e:  # any forecaster failure: the surrogate decides
                shifts, self.last_error = None, f"{type(e).__name__}: {e}"
            if shifts is None:
                self.fallbacks += 1
                out.append(self.surrogate.outcome(state, c.targets, source="surrogate (forecaster unavailable)"))
            else:
                out.append(self.surrogate.outcome(state, c.targets, gpu_shift=shifts, source=self.name))
        return out


def default_predictor(context=None, site=None) -> Predictor:
    """The run's predictor if it handed one over, else the forecaster if a model is active, else the surrogate."""
    p = context_predictor(context) if context is not None else None
    if p is not None:
        return p
    if ForecastPredictor.available():
        return ForecastPredictor(site)
    return SurrogatePredictor()


def gpu_count(state: State) -> int:
    return sum(h.gpus for h in state.halls.values())


def slowdown_margin(state: State) -> float:
    return min((SLOWDOWN_C - h.gpu_temperature_max_c for h in state.halls.values() if h.gpus), default=math.inf)
