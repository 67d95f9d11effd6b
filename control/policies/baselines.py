"""The TWIN.md baselines every learned controller is judged against, registered by name.

- `fixed`: air-hall CRAHs 18 C supply air, chilled water 10 C, CDU secondary 25 C at nominal pump speed;
  everything else stays as the facility file left it. Never changes after that.
- `trim_respond`: ASHRAE Guideline 36-style trim & respond per hall on the hottest GPU. While the
  hottest GPU has more than `trim_margin_k` to the 89 C slowdown, supply temperatures creep up by a small
  trim each decision; once it has less than `respond_margin_k`, they drop by `respond_k` per kelvin of
  shortfall (capped at `respond_max_k`). Chilled water follows the coldest CRAH supply setpoint minus
  `chw_below_sat_k` (the coil needs supply air >= chilled water + 3 K); towers leave at wet-bulb + 5.56 K.
- `pid`: PID per hall on the hottest GPU toward a target (75 C air, 60 C liquid junction), acting on
  the hall's CRAH supply-air (air hall) or CDU secondary-supply (liquid hall) setpoints; derivative on
  the measurement; anti-windup by back-calculation (the integrator tracks the value the envelope
  allowed, and while a dwell holds the point, no more than one max step from it). Interlock (DESIGN.md
  "Control safety"): never raise a supply temperature while the hottest GPU is within
  `interlock_margin_k` of slowdown.

All decide every 60 s and clip their own proposals to the envelope (recorded in `Proposal.clipped`).
"""

from __future__ import annotations

import math

from facility.twin.state import CDU_PUMP_SPEED as CDU_PUMP
from facility.twin.state import CDU_SECONDARY_SUPPLY as CDU_SUPPLY
from facility.twin.state import CHILLED_WATER as CHW
from facility.twin.state import CRAH_SUPPLY_AIR as CRAH_SAT
from facility.twin.state import SERVER_FAN_SPEED as FANS
from facility.twin.state import TOWER_LEAVING_WATER as TOWER
from facility.twin.state import is_server_fans

from .base import Policy, PolicyContext, Proposal, SetpointState, State, register

TOWER_ABOVE_WET_BULB_K = 5.56  # 10 F, the classic tower approach reset (TWIN.md baselines)


def _points(state: State, name: str, hall: str | None = None) -> list[SetpointState]:
    return [s for s in state.setpoints.values()
            if s.envelope.name == name and (hall is None or s.envelope.hall == hall)]


def _hall_points(state: State, hall) -> list[SetpointState]:
    """The supply-temperature points that set a hall's GPU coolant: CRAHs (air) or CDUs (liquid)."""
    return _points(state, CRAH_SAT if hall.cooling_type == "air" else CDU_SUPPLY, hall.name)


@register
class FixedSetpoints(Policy):
    name = "fixed"

    def __init__(self, air_supply_c: float = 18.0, chilled_water_c: float = 10.0,
                 liquid_supply_c: float = 25.0, pump_speed: float = 1.0, fan_duty: float = 0.8):
        # fan_duty: the BMC's default duty (TWIN.md calibration), where the server fans are a control point.
        self.targets = {CHW: chilled_water_c, CDU_SUPPLY: liquid_supply_c, CDU_PUMP: pump_speed, FANS: fan_duty}
        self.air_supply_c = air_supply_c

    def propose(self, state: State) -> list[Proposal]:
        out = []
        for sp in state.setpoints.values():
            env = sp.envelope
            if env.name == CRAH_SAT:
                hall = state.halls.get(env.hall)
                target = self.air_supply_c if hall is not None and hall.cooling_type == "air" else None
            elif env.name == FANS and not is_server_fans(env):
                target = None  # another unit's fans (a CRAH's): not the servers' BMC duty
            else:
                target = self.targets.get(env.name)
            if target is not None and (p := self.limited(sp, target, "fixed baseline setpoint")):
                out.append(p)
        return out


@register
class TrimRespond(Policy):
    name = "trim_respond"

    def __init__(self, trim_margin_k: float = 12.0, respond_margin_k: float = 9.0,
                 trim_k: dict | None = None, respond_k: dict | None = None, respond_max_k: float = 2.0,
                 chw_below_sat_k: float = 5.0):
        self.trim_margin_k, self.respond_margin_k = trim_margin_k, respond_margin_k
        self.trim_k = trim_k or {"air": 0.2, "liquid": 0.5}
        self.respond_k = respond_k or {"air": 0.5, "liquid": 1.0}
        self.respond_max_k = respond_max_k
        self.chw_below_sat_k = chw_below_sat_k
        self.targets: dict = {}

    def reset(self, context: PolicyContext) -> None:
        self.targets = {}

    def _move(self, sp: SetpointState, delta: float) -> float:
        """Accumulate trims/responds while the envelope holds the point; bounded so it cannot wind up."""
        env = sp.envelope
        t = self.targets.get(env.key, sp.command) + delta
        room = env.max_step if env.max_step is not None else math.inf
        t = min(max(t, sp.command - room, env.allowable_min), sp.command + room, env.allowable_max)
        self.targets[env.key] = t
        return t

    def propose(self, state: State) -> list[Proposal]:
        out = []
        for hall in state.halls.values():
            if hall.gpus == 0:
                continue
            margin = hall.margin_to_slowdown_k
            if margin > self.trim_margin_k:
                delta, why = self.trim_k[hall.cooling_type], f"trim: {margin:.1f} K to slowdown"
            elif margin < self.respond_margin_k:
                short = self.respond_margin_k - margin
                delta = -min(self.respond_k[hall.cooling_type] * max(1.0, math.ceil(short)), self.respond_max_k)
                why = f"respond: only {margin:.1f} K to slowdown"
            else:
                delta, why = 0.0, ""
            for sp in _hall_points(state, hall):
                t = self._move(sp, delta)
                if p := self.limited(sp, t, why, hall=hall.name, gpu_temperature_max_c=hall.gpu_temperature_max_c):
                    out.append(p)
        # Chilled water just cold enough for the coldest CRAH it serves; towers at wet-bulb + 5.56 K.
        sats = [s.command for s in _points(state, CRAH_SAT)]
        for p in [*(self._points_to(state, CHW, min(sats) - self.chw_below_sat_k, "chilled water follows the "
                                    "coldest supply-air setpoint") if sats else []),
                  *self._points_to(state, TOWER, state.outdoor_wet_bulb_c + TOWER_ABOVE_WET_BULB_K,
                                   f"tower at wet-bulb {state.outdoor_wet_bulb_c:.1f} C + 5.56 K")]:
            out.append(p)
        return out

    def _points_to(self, state: State, name: str, target: float, why: str) -> list[Proposal]:
        out = []
        for sp in _points(state, name):
            # A 0.1 K deadband keeps slow-moving resets from chattering against the dwell.
            if abs(target - sp.command) >= 0.1 and (p := self.limited(sp, target, why)):
                out.append(p)
        return out


@register
class PID(Policy):
    name = "pid"

    def __init__(self, target_c: dict | None = None, kp: float = 0.5, ti_s: float = 600.0, td_s: float = 60.0,
                 derivative_filter_s: float = 120.0, interlock_margin_k: float = 5.0):
        self.target_c = target_c or {"air": 75.0, "liquid": 60.0}
        self.kp, self.ti_s, self.td_s, self.tf_s = kp, ti_s, td_s, derivative_filter_s
        self.interlock_margin_k = interlock_margin_k
        self.loops: dict = {}

    def reset(self, context: PolicyContext) -> None:
        self.dt = context.decision_interval_s
        self.loops = {}

    def propose(self, state: State) -> list[Proposal]:
        out = []
        dt = getattr(self, "dt", self.decision_interval_s)
        for hall in state.halls.values():
            points = _hall_points(state, hall)
            if hall.gpus == 0 or not points:
                continue
            y = hall.gpu_temperature_max_c
            target = self.target_c[hall.cooling_type]
            lp = self.loops.get(hall.name)
            if lp is None:  # bumpless start from the current setpoint
                lp = self.loops[hall.name] = {"u0": points[0].command, "i": 0.0, "y": y, "d": 0.0}
            err = target - y  # below target -> warmer supply
            # Derivative on the measurement, first-order filtered (no kick on target changes).
            a = dt / (self.tf_s + dt)
            lp["d"] += a * (-(y - lp["y"]) / dt * self.kp * self.td_s - lp["d"])
            lp["y"] = y
            held = all(sp.envelope.max_change(sp.since_change_s) == 0.0 for sp in points)
            i_new = lp["i"] + self.kp * dt / self.ti_s * err
            raw = lp["u0"] + self.kp * err + i_new + lp["d"]
            wanted = raw
            if hall.margin_to_slowdown_k < self.interlock_margin_k:
                wanted = min(raw, min(sp.command for sp in points))
            sp0 = points[0]
            if held:
                # Dwell is sampling, not saturation: keep integrating, but only up to one step away.
                step = sp0.envelope.max_step if sp0.envelope.max_step is not None else math.inf
                track = min(max(raw, sp0.command - step, sp0.envelope.allowable_min),
                            sp0.command + step, sp0.envelope.allowable_max)
            else:
                track, _ = sp0.limit(wanted)
                for sp in points:
                    if p := self.limited(sp, wanted, f"PID on hottest GPU {y:.1f} C -> {target:.0f} C",
                                         hall=hall.name, error_k=round(err, 2)):
                        out.append(p)
            # Back-calculation: the integrator tracks what the envelope lets through.
            lp["i"] = i_new + (track - raw)
        return out
