"""The cooling plant and electrical losses (TWIN.md "Plant"), stepped at 1 s beside the GPUs.

- CRAH: fans by the affinity law (power ~ flow^3), flow follows the server airflow; supply air follows
  its setpoint with tau = 120 s but never below chilled water + 3 K (coil). CRAC: the same with its own
  DX compressor (condensing at outdoor dry-bulb + 15 K).
- Chiller: COP = 0.5 T_evap / (T_cond - T_evap), T_evap = CHW - 2 K, T_cond = tower water + 5.44 K
  (wet-bulb + 11 K with the tower at wet-bulb + 5.56 K), clamped 2-12. Its condenser tower is also a
  water-side economiser: it carries the share of the load its water (plus a 1.5 K heat-exchanger
  approach) can take off the chilled-water return; the chiller trims the rest.
- Cooling tower / dry cooler: leaving water follows its setpoint but not below wet-bulb (dry-bulb) + an
  approach that grows with load; fan speed is the airflow that approach needs, power ~ speed^3, so at a
  fixed approach fan power ~ (heat rejected)^3.
- CDU: secondary supply follows its setpoint (20-45 C); facility water = secondary - 3 K, from the tower
  on its return loop while wet-bulb + approach allows, the chiller trims the rest; pump power ~ speed^3.
- Pumps: dP * Q / eta (300 kPa, 0.87) on each chilled, condenser and facility water loop.
- Electrical: UPS eta 0.96 on IT plus 1 % distribution on everything; PUE = (IT + cooling + losses) / IT.
CRAHs and CDUs are vectorised (a large site has hundreds); chillers and towers are few.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .layout import Layout, Unit
from .params import PlantParams
from .state import (
    CDU_PUMP_SPEED,
    CDU_SECONDARY_SUPPLY,
    CHILLED_WATER,
    CRAH_SUPPLY_AIR,
    SERVER_FAN_RANGE,
    SERVER_FAN_SPEED,
    SERVER_FANS,
    TOWER_LEAVING_WATER,
)

T0 = 273.15

# Setpoints the physics reads, per unit kind: name -> (unit, default, allowable min, max).
KNOWN_SETPOINTS = {
    "crah": {CRAH_SUPPLY_AIR: ("celsius", 18.0, 16.0, 27.0)},
    "crac": {CRAH_SUPPLY_AIR: ("celsius", 18.0, 16.0, 27.0)},
    "chiller": {CHILLED_WATER: ("celsius", 10.0, 7.0, 20.0)},
    "cooling_tower": {TOWER_LEAVING_WATER: ("celsius", 20.0, 5.0, 45.0)},
    "dry_cooler": {TOWER_LEAVING_WATER: ("celsius", 25.0, 5.0, 50.0)},
    "cdu": {
        CDU_SECONDARY_SUPPLY: ("celsius", 25.0, 20.0, 45.0),
        CDU_PUMP_SPEED: ("ratio", 1.0, 0.3, 1.2),
    },
    "pump": {},
    # The twin applies it to its hall's nodes (`Twin`); the plant only keeps the setpoint.
    SERVER_FANS: {SERVER_FAN_SPEED: ("ratio", 0.8, *SERVER_FAN_RANGE)},
}
MIN_CDU_FLOW = 0.05  # a failed CDU pump still leaves some thermosiphon flow (ours; avoids 1/0)


def _lag(dt: float, tau: float) -> float:
    """Exact first-order-lag gain for a step of dt."""
    return 1.0 - math.exp(-dt / tau)


def _capacities(units: list[Unit], served_kw: np.ndarray) -> np.ndarray:
    """capacity_kw per unit; where the file gives none, 1.5x the nameplate heat it serves (our default)."""
    return np.array([u.capacity_kw or 1.5 * max(s, 1.0) for u, s in zip(units, served_kw, strict=True)])


def cop(evap_c: float, cond_c: float, p: PlantParams) -> float:
    """Chiller COP = 0.5 T_evap / (T_cond - T_evap), clamped to [2, 12]."""
    lift = cond_c - evap_c
    if lift <= 0:
        return p.cop_max
    return min(max(p.chiller_efficiency * (evap_c + T0) / lift, p.cop_min), p.cop_max)


def economiser_share(return_c: float, supply_c: float, cold_water_c: float, approach_k: float) -> float:
    """Share of the load a free-cooling water stream at cold_water_c (+ approach) can take off a loop
    returning at return_c and supplied at supply_c."""
    span = return_c - supply_c
    if span <= 0:
        return 0.0
    return min(max((return_c - cold_water_c - approach_k) / span, 0.0), 1.0)


class SetpointTable:
    """Every setpoint of the site: the last command and the read-back that follows it with a lag."""

    def __init__(self):
        self.index: dict[tuple[str, str], int] = {}
        self.units: list[str] = []
        self._command: list[float] = []
        self._lo: list[float] = []
        self._hi: list[float] = []

    def add(self, unit: str, name: str, value: float, lo: float, hi: float, unit_name: str) -> int:
        self.index[(unit, name)] = len(self._command)
        self.units.append(unit_name)
        self._command.append(value)
        self._lo.append(lo)
        self._hi.append(hi)
        return len(self._command) - 1

    def freeze(self) -> None:
        self.command = np.array(self._command, dtype=float)
        self.value = self.command.copy()
        self.lo = np.array(self._lo, dtype=float)
        self.hi = np.array(self._hi, dtype=float)

    def find(self, unit: str, name: str) -> int:
        try:
            return self.index[(unit, name)]
        except KeyError:
            names = sorted(n for u, n in self.index if u == unit)
            if not names and not any(u == unit for u, _ in self.index):
                raise KeyError(f"no cooling unit {unit!r} has setpoints") from None
            raise KeyError(f"{unit!r} has no setpoint {name!r}; it has {', '.join(names) or 'none'}") from None

    def write(self, unit: str, name: str, value: float) -> None:
        i = self.find(unit, name)
        value = float(value)
        if not math.isfinite(value) or not self.lo[i] <= value <= self.hi[i]:
            raise ValueError(f"{unit}.{name} = {value} lies outside [{self.lo[i]:g}, {self.hi[i]:g}]")
        self.command[i] = value

    def step(self, gain: float) -> None:
        self.value += (self.command - self.value) * gain


@dataclass
class _Chiller:
    unit: Unit
    sp: int  # index of its CHW setpoint
    tower: int | None  # index into plant.towers of its condenser tower (also its economiser)
    supply_c: float
    failed: bool = False
    # Last step.
    load_kw: float = 0.0
    mech_kw: float = 0.0  # load carried mechanically
    power_kw: float = 0.0
    cop: float = 0.0
    economiser_share: float = 0.0
    cond_c: float = 0.0
    chw_kg_s: float = 0.0
    cond_kg_s: float = 0.0


@dataclass
class _Tower:
    unit: Unit
    sp: int
    dry: bool
    supply_c: float
    failed: bool = False
    load_kw: float = 0.0
    fan_ratio: float = 0.0
    power_kw: float = 0.0
    share: float = 0.0  # facility-water share it carried (towers serving CDUs)


class Plant:
    """All cooling units of a layout; `step` takes per-rack heat and returns nothing, leaving state."""

    def __init__(self, layout: Layout, p: PlantParams, rack_units: list[tuple[str, ...]],
                 rack_hall: list[str], rack_gpus: np.ndarray, rack_nameplate_kw: np.ndarray,
                 water_kg_s_per_gpu: float):
        self.p = p
        self.layout = layout
        units = list(layout.units)
        self.unit_by_name = {u.name: u for u in units}
        hall_type = {h.name: h.cooling_type for h in layout.halls}
        n_racks = len(rack_units)

        # Setpoints: the ones in the layout, plus the ones the physics needs (defaults) if missing.
        sps = self.setpoints = SetpointTable()
        for u in units:
            for s in u.setpoints.values():
                sps.add(u.name, s.name, s.value, s.allowable_min, s.allowable_max, s.unit)
            for name, (unit_name, default, lo, hi) in KNOWN_SETPOINTS[u.kind].items():
                if name not in u.setpoints:
                    sps.add(u.name, name, default, lo, hi, unit_name)
        sps.freeze()

        # Which units cool which rack: its cooled_by of the right kind, else every such unit of its hall.
        def assign(kinds: tuple[str, ...], racks: list[int], what: str) -> tuple[list[Unit], np.ndarray]:
            chosen = [u for u in units if u.kind in kinds and u.hall in {rack_hall[r] for r in racks}]
            share = np.zeros((len(chosen), n_racks))
            col = {u.name: i for i, u in enumerate(chosen)}
            for r in racks:
                mine = [col[n] for n in rack_units[r] if n in col]
                if not mine:
                    mine = [col[u.name] for u in chosen if u.hall == rack_hall[r]]
                if not mine:
                    raise ValueError(
                        f"hall {rack_hall[r]!r}: rack {layout_rack_names[r]!r} needs a {what} "
                        f"(a cooling unit of kind {' or '.join(kinds)} in that hall)"
                    )
                share[mine, r] = 1.0 / len(mine)
            return chosen, share

        layout_rack_names = [r.name for h in layout.halls for r in h.racks]
        all_racks = list(range(n_racks))
        liquid_racks = [r for r in all_racks if hall_type[rack_hall[r]] == "liquid"]
        self.rack_liquid = np.array([hall_type[h] == "liquid" for h in rack_hall], dtype=bool)

        # --- CRAH / CRAC (vectorised) ---
        self.crahs, self.crah_share = assign(("crah", "crac"), all_racks, "CRAH or CRAC for its air heat")
        self.rack_crah_mean = (self.crah_share > 0) / np.maximum((self.crah_share > 0).sum(axis=0), 1)
        served_kw = self.crah_share @ rack_nameplate_kw
        self.crah_cap_kw = _capacities(self.crahs, served_kw)
        self.crah_rated_kg_s = self.crah_cap_kw * 1000.0 / (1005.0 * p.crah_design_delta_t_k)
        self.crah_fan_rated_kw = self.crah_cap_kw * p.crah_fan_kw_per_kw
        self.crah_dx = np.array([u.kind == "crac" for u in self.crahs], dtype=bool)
        self.crah_sp = np.array(
            [sps.find(u.name, CRAH_SUPPLY_AIR) for u in self.crahs], dtype=np.int64
        )
        self.crah_supply_c = sps.value[self.crah_sp].copy()
        self.crah_failed = np.zeros(len(self.crahs), dtype=bool)

        # --- chillers, towers ---
        chillers = [u for u in units if u.kind == "chiller"]
        towers = [u for u in units if u.kind in ("cooling_tower", "dry_cooler")]
        tower_col = {u.name: i for i, u in enumerate(towers)}
        self.towers = [
            _Tower(u, sps.find(u.name, TOWER_LEAVING_WATER), u.kind == "dry_cooler",
                   sps.value[sps.find(u.name, TOWER_LEAVING_WATER)])
            for u in towers
        ]
        self.chillers = []
        for u in chillers:
            cond = [t for t in towers if u.return_loop and t.supply_loop == u.return_loop]
            sp = sps.find(u.name, CHILLED_WATER)
            self.chillers.append(_Chiller(u, sp, tower_col[cond[0].name] if cond else None, sps.value[sp]))
        chiller_col = {c.unit.name: i for i, c in enumerate(self.chillers)}

        def chiller_for(u: Unit) -> int:
            by_loop = [c for c in self.chillers if u.return_loop and c.unit.supply_loop == u.return_loop]
            if by_loop:
                return chiller_col[by_loop[0].unit.name]
            if self.chillers:
                return 0
            raise ValueError(f"cooling unit {u.name!r} ({u.kind}) needs chilled water but the site has no chiller")

        self.crah_chiller = np.array([-1 if u.kind == "crac" else chiller_for(u) for u in self.crahs], dtype=np.int64)

        # --- CDUs (vectorised) ---
        self.cdus, self.cdu_share = assign(("cdu",), liquid_racks, "CDU for its liquid heat")
        self.rack_cdu_mean = (self.cdu_share > 0) / np.maximum((self.cdu_share > 0).sum(axis=0), 1)
        nd = len(self.cdus)
        self.cdu_nominal_kg_s = np.maximum(self.cdu_share @ rack_gpus, 1.0) * water_kg_s_per_gpu
        served_kw = self.cdu_share @ rack_nameplate_kw
        self.cdu_cap_kw = _capacities(self.cdus, served_kw)
        self.cdu_pump_nominal_kw = (
            p.pump_dp_kpa * self.cdu_nominal_kg_s / p.water_density / p.pump_efficiency
        )
        self.cdu_sp = np.array([sps.find(u.name, CDU_SECONDARY_SUPPLY) for u in self.cdus],
                               dtype=np.int64)
        self.cdu_pump_sp = np.array([sps.find(u.name, CDU_PUMP_SPEED) for u in self.cdus], dtype=np.int64)
        self.cdu_supply_c = sps.value[self.cdu_sp].copy()
        self.cdu_pump_speed = sps.value[self.cdu_pump_sp].copy()
        self.cdu_failed = np.zeros(nd, dtype=bool)
        # Facility water: the tower (or dry cooler) on its return loop, with the chiller as fallback; or a
        # chiller on its return loop; or any chiller.
        self.cdu_tower = np.full(nd, -1, dtype=np.int64)
        self.cdu_chiller = np.full(nd, -1, dtype=np.int64)
        for i, u in enumerate(self.cdus):
            src = [t for t in towers if u.return_loop and t.supply_loop == u.return_loop]
            if src:
                self.cdu_tower[i] = tower_col[src[0].name]
            if self.chillers:
                self.cdu_chiller[i] = chiller_for(u)
            if not src and not self.chillers:
                raise ValueError(f"CDU {u.name!r}: no cooling tower, dry cooler or chiller supplies its facility water")

        # Pumps report the loop they move; a loop without a pump unit is still pumped (and counted).
        self.pumps = [u for u in units if u.kind == "pump"]
        # Water loops by key (a unit's loop name, or a per-unit key when unnamed), and which unit ends feed
        # each: CDU primaries (facility water), CDU secondaries, chiller evaporators and condensers.
        keys: dict[str, int] = {}

        def key(loop: str | None, owner: str, tag: str) -> int:
            return keys.setdefault(loop or f"({owner} {tag})", len(keys))

        self._cdu_fw_loop = np.array([key(u.return_loop, u.name, "primary") for u in self.cdus], dtype=np.int64)
        self._cdu_tcs_loop = np.array([key(u.supply_loop, u.name, "secondary") for u in self.cdus], dtype=np.int64)
        self._chw_loop = np.array([key(c.unit.supply_loop, c.unit.name, "chilled") for c in self.chillers], np.int64)
        self._cw_loop = np.array([key(c.unit.return_loop, c.unit.name, "condenser") for c in self.chillers], np.int64)
        self.loop_names = list(keys)
        # Secondary loops are moved by their CDU's pump, counted on the CDU.
        self._pumped = np.ones(len(keys), dtype=bool)
        self._pumped[self._cdu_tcs_loop] = False
        self.loop_kg_s = np.zeros(len(keys))
        self.loop_pump_kw = np.zeros(len(keys))
        self.dt = None
        self._zero_state()

    def _zero_state(self) -> None:
        nc, nd = len(self.crahs), len(self.cdus)
        self.crah_heat_kw = np.zeros(nc)
        self.crah_fan_ratio = np.zeros(nc)
        self.crah_fan_kw = np.zeros(nc)
        self.crah_power_kw = np.zeros(nc)
        self.crah_return_c = self.crah_supply_c.copy()
        self.crah_air_kg_s = np.zeros(nc)
        self.cdu_heat_kw = np.zeros(nd)
        self.cdu_return_c = self.cdu_supply_c.copy()
        self.cdu_pump_kw = np.zeros(nd)
        self.cdu_flow_kg_s = np.zeros(nd)
        self.cdu_tower_share = np.zeros(nd)
        self.outdoor_dry_bulb_c = self.outdoor_wet_bulb_c = 0.0
        self.cooling_kw = 0.0

    def _gains(self, dt: float) -> None:
        p = self.p
        self.dt = dt
        self.k_readback = _lag(dt, p.setpoint_readback_tau_s)
        self.k_crah = _lag(dt, p.crah_supply_tau_s)
        self.k_chiller = _lag(dt, p.chiller_supply_tau_s)
        self.k_cdu = _lag(dt, p.cdu_supply_tau_s)
        self.k_tower = _lag(dt, p.tower_tau_s)
        self.k_pump = _lag(dt, p.pump_speed_tau_s)

    # --- boundary conditions for the racks (read before the GPUs step) ---

    def rack_supply_air_c(self) -> np.ndarray:
        return self.crah_supply_c @ self.rack_crah_mean

    def rack_liquid_supply_c(self) -> np.ndarray:
        return self.cdu_supply_c @ self.rack_cdu_mean

    def rack_flow_ratio(self) -> np.ndarray:
        return np.maximum(self.cdu_pump_speed, MIN_CDU_FLOW) @ self.rack_cdu_mean

    # --- one step ---

    def step(self, dt: float, rack_air_kw: np.ndarray, rack_liquid_kw: np.ndarray, rack_air_kg_s: np.ndarray,
             dry_bulb_c: float, wet_bulb_c: float) -> None:
        p = self.p
        if self.dt != dt:
            self._gains(dt)
        sps = self.setpoints
        sps.step(self.k_readback)
        self.outdoor_dry_bulb_c, self.outdoor_wet_bulb_c = dry_bulb_c, wet_bulb_c
        cp_w = 4.186  # kJ/(kg K)
        n_loops = len(self.loop_names)
        flows = np.zeros(n_loops)
        chiller_load = np.zeros(len(self.chillers))
        tower_load = np.zeros(len(self.towers))
        chw_supply = np.array([c.supply_c for c in self.chillers] or [0.0])
        tower_water = np.array([t.supply_c for t in self.towers] or [0.0])

        # CRAH / CRAC.
        if self.crahs:
            q_air = self.crah_share @ rack_air_kw
            need = (self.crah_share @ rack_air_kg_s) * p.crah_overprovision
            ratio = np.minimum(np.maximum(need / self.crah_rated_kg_s, p.crah_min_flow), 1.0)
            ratio[self.crah_failed] = 0.0
            fan_kw = self.crah_fan_rated_kw * ratio**3
            heat = q_air + fan_kw
            m_cp = np.maximum(ratio, p.crah_min_flow) * self.crah_rated_kg_s * 1.005  # kW/K
            self.crah_return_c = self.crah_supply_c + heat / m_cp
            coil_min = np.where(self.crah_dx, -np.inf, chw_supply[self.crah_chiller] + p.coil_approach_k)
            target = np.maximum(sps.value[self.crah_sp], coil_min)
            target += np.maximum(q_air - self.crah_cap_kw, 0.0) / m_cp
            # A failed CRAH stops cooling: its "supply" is the hall's return air.
            target = np.where(self.crah_failed, self.crah_return_c, target)
            self.crah_supply_c += (target - self.crah_supply_c) * self.k_crah
            removed = np.where(self.crah_failed, 0.0, heat)
            # DX compressors of CRACs.
            dx_kw = np.zeros(len(self.crahs))
            if self.crah_dx.any():
                evap = self.crah_supply_c - p.crac_evap_below_supply_k
                lift = np.maximum(dry_bulb_c + p.crac_cond_above_drybulb_k - evap, 1.0)
                dx_cop = np.clip(p.chiller_efficiency * (evap + T0) / lift, p.cop_min, p.cop_max)
                dx_kw = np.where(self.crah_dx, removed / dx_cop, 0.0)
            chilled = ~self.crah_dx
            if chilled.any():
                chiller_load += np.bincount(self.crah_chiller[chilled], removed[chilled],
                                            minlength=len(self.chillers))
            self.crah_heat_kw, self.crah_fan_ratio, self.crah_fan_kw = removed, ratio, fan_kw
            self.crah_power_kw = fan_kw + dx_kw
            self.crah_air_kg_s = ratio * self.crah_rated_kg_s

        # CDU: pump speed and secondary supply; facility water from its tower, the chiller trims.
        if self.cdus:
            q = self.cdu_share @ rack_liquid_kw
            speed_target = np.where(self.cdu_failed, 0.0, sps.value[self.cdu_pump_sp])
            self.cdu_pump_speed += (speed_target - self.cdu_pump_speed) * self.k_pump
            flow = self.cdu_nominal_kg_s * np.maximum(self.cdu_pump_speed, MIN_CDU_FLOW)
            self.cdu_return_c = self.cdu_supply_c + q / (flow * cp_w)
            fw_supply = self.cdu_supply_c - p.cdu_approach_k
            fw_return = self.cdu_return_c - p.cdu_approach_k
            has_tower = self.cdu_tower >= 0
            t_water = np.where(has_tower, tower_water[np.maximum(self.cdu_tower, 0)], np.inf)
            span = np.maximum(fw_return - fw_supply, 1e-9)
            share = np.minimum(np.maximum((fw_return - t_water) / span, 0.0), 1.0)
            has_chiller = self.cdu_chiller >= 0
            target = sps.value[self.cdu_sp].copy()
            # Without a chiller to trim, the secondary cannot be colder than the tower allows.
            target = np.where(has_chiller, target, np.maximum(target, t_water + p.cdu_approach_k))
            target += np.maximum(q - self.cdu_cap_kw, 0.0) / (flow * cp_w)
            target = np.where(self.cdu_failed, self.cdu_return_c, target)
            self.cdu_supply_c += (target - self.cdu_supply_c) * self.k_cdu
            if has_tower.any():
                tower_load += np.bincount(self.cdu_tower[has_tower], (share * q)[has_tower],
                                          minlength=len(self.towers))
            if has_chiller.any():
                chiller_load += np.bincount(self.cdu_chiller[has_chiller], ((1 - share) * q)[has_chiller],
                                            minlength=len(self.chillers))
                carried = np.bincount(self.cdu_tower[has_tower], (share * q)[has_tower], minlength=len(self.towers))
                offered = np.bincount(self.cdu_tower[has_tower], q[has_tower], minlength=len(self.towers))
                for t, c, o in zip(self.towers, carried, offered, strict=True):
                    t.share = float(c / o) if o > 0 else 0.0
            self.cdu_heat_kw = np.where(self.cdu_failed, 0.0, q)
            self.cdu_flow_kg_s = flow
            self.cdu_tower_share = share
            self.cdu_pump_kw = np.where(self.cdu_failed, 0.0, self.cdu_pump_nominal_kw * self.cdu_pump_speed**3)
            flows += np.bincount(self._cdu_fw_loop, flow, minlength=n_loops)
            flows += np.bincount(self._cdu_tcs_loop, flow, minlength=n_loops)

        # Chillers with their water-side economiser.
        for i, c in enumerate(self.chillers):
            cap = c.unit.capacity_kw or max(chiller_load[i] * 1.5, 1.0)
            c.load_kw = load = chiller_load[i]
            chw_return = c.supply_c + p.chw_delta_t_k
            if c.tower is not None:
                tw = self.towers[c.tower]
                c.economiser_share = economiser_share(chw_return, c.supply_c, tw.supply_c, p.economiser_hx_approach_k)
                c.cond_c = tw.supply_c + p.cond_above_tower_water_k
            else:
                c.economiser_share = 0.0
                c.cond_c = dry_bulb_c + p.air_cooled_cond_above_drybulb_k
            mech = 0.0 if c.failed else (1.0 - c.economiser_share) * load
            c.cop = cop(c.supply_c - p.evap_below_chw_k, c.cond_c, p)
            c.power_kw = mech / c.cop
            c.mech_kw = mech
            if c.tower is not None:
                tower_load[c.tower] += c.economiser_share * load + mech + c.power_kw
            if c.failed:
                target = c.supply_c + p.chw_delta_t_k * (1.0 - c.economiser_share)
            else:
                target = sps.value[c.sp] + max(mech - cap, 0.0) / cap * p.chw_delta_t_k
            c.supply_c += (target - c.supply_c) * self.k_chiller
            c.chw_kg_s = load / (cp_w * p.chw_delta_t_k)
            c.cond_kg_s = (mech + c.power_kw + c.economiser_share * load) / (cp_w * p.condenser_delta_t_k)
        if self.chillers:
            flows += np.bincount(self._chw_loop, [c.chw_kg_s for c in self.chillers], minlength=n_loops)
            flows += np.bincount(self._cw_loop, [c.cond_kg_s for c in self.chillers], minlength=n_loops)

        # Towers and dry coolers.
        for i, t in enumerate(self.towers):
            t.load_kw = load = tower_load[i]
            cap = t.unit.capacity_kw or max(load * 1.5, 1.0)
            ref = dry_bulb_c if t.dry else wet_bulb_c
            design = p.dry_cooler_design_approach_k if t.dry else p.tower_design_approach_k
            airflow_limit = 0.1 if t.failed else 1.0  # a failed fan leaves natural draft
            natural = max(p.tower_min_approach_k, design * load / cap / airflow_limit)
            target = max(sps.value[t.sp], ref + natural)
            t.supply_c += (target - t.supply_c) * self.k_tower
            approach = max(t.supply_c - ref, 0.1)
            t.fan_ratio = 0.0 if t.failed else min(load / cap * design / approach, 1.0)
            rated = (p.dry_cooler_fan_kw_per_kw if t.dry else p.tower_fan_kw_per_kw) * cap
            t.power_kw = rated * t.fan_ratio**3

        # Loop pumps (the secondary loops are moved by their CDU's pump), then the totals.
        self.loop_kg_s = flows
        self.loop_pump_kw = np.where(self._pumped, flows * (p.pump_dp_kpa / p.water_density / p.pump_efficiency), 0.0)
        self.cooling_kw = float(
            self.crah_power_kw.sum() + self.cdu_pump_kw.sum() + sum(c.power_kw for c in self.chillers)
            + sum(t.power_kw for t in self.towers) + self.loop_pump_kw.sum()
        )

    def losses_kw(self, it_kw: float) -> float:
        p = self.p
        return it_kw * (1.0 / p.ups_efficiency - 1.0) + p.distribution_loss * (it_kw + self.cooling_kw)

    # --- read-out ---

    def setpoint_points(self, unit: str) -> dict[str, float]:
        sps = self.setpoints
        return {
            f"{name}_{sps.units[i]}" if sps.units[i] else name: float(sps.value[i])
            for (u, name), i in sps.index.items() if u == unit
        }

    def unit_points(self) -> dict[str, dict[str, float]]:
        """Per cooling unit: its points (unit in every name) and setpoint read-backs."""
        p = self.p
        lpm = 60.0 / p.water_density * 1000.0  # kg/s -> L/min
        out: dict[str, dict[str, float]] = {}
        for i, u in enumerate(self.crahs):
            chiller = self.crah_chiller[i]
            out[u.name] = {
                "supply_air_temperature_celsius": float(self.crah_supply_c[i]),
                "return_air_temperature_celsius": float(self.crah_return_c[i]),
                "air_flow_kilograms_per_second": float(self.crah_air_kg_s[i]),
                "fan_speed_ratio": float(self.crah_fan_ratio[i]),
                "chilled_water_supply_temperature_celsius": (
                    float(self.chillers[chiller].supply_c) if chiller >= 0 else float("nan")),
                "chilled_water_flow_liters_per_minute": (
                    0.0 if chiller < 0 else float(self.crah_heat_kw[i] / (4.186 * p.chw_delta_t_k) * lpm)),
                "heat_removed_kw": float(self.crah_heat_kw[i]),
                "power_kw": float(self.crah_power_kw[i]),
                "failed": float(self.crah_failed[i]),
            }
        for i, u in enumerate(self.cdus):
            out[u.name] = {
                "secondary_supply_temperature_celsius": float(self.cdu_supply_c[i]),
                "secondary_return_temperature_celsius": float(self.cdu_return_c[i]),
                "secondary_flow_liters_per_minute": float(self.cdu_flow_kg_s[i] * lpm),
                "pump_speed_ratio": float(self.cdu_pump_speed[i]),
                "primary_supply_temperature_celsius": float(self.cdu_supply_c[i] - p.cdu_approach_k),
                "primary_return_temperature_celsius": float(self.cdu_return_c[i] - p.cdu_approach_k),
                "tower_share_ratio": float(self.cdu_tower_share[i]) if self.cdu_tower[i] >= 0 else 0.0,
                "heat_removed_kw": float(self.cdu_heat_kw[i]),
                "power_kw": float(self.cdu_pump_kw[i]),
                "failed": float(self.cdu_failed[i]),
            }
        for c in self.chillers:
            out[c.unit.name] = {
                "supply_temperature_celsius": c.supply_c,
                "return_temperature_celsius": c.supply_c + p.chw_delta_t_k,
                "flow_liters_per_minute": c.chw_kg_s * lpm,
                "condensing_temperature_celsius": c.cond_c,
                "load_kw": c.load_kw,
                "economiser_share_ratio": c.economiser_share,
                "heat_removed_kw": c.mech_kw,
                "cop_ratio": c.cop,
                "power_kw": c.power_kw,
                "failed": float(c.failed),
            }
        for t in self.towers:
            ref = self.outdoor_dry_bulb_c if t.dry else self.outdoor_wet_bulb_c
            flow = self._loop_value(self.loop_kg_s, t.unit.supply_loop)
            out[t.unit.name] = {
                "supply_temperature_celsius": t.supply_c,
                "return_temperature_celsius": t.supply_c + (t.load_kw / (4.186 * flow) if flow > 0 else 0.0),
                "approach_kelvin": t.supply_c - ref,
                "flow_liters_per_minute": flow * lpm,
                "fan_speed_ratio": t.fan_ratio,
                "facility_water_share_ratio": t.share,
                "heat_removed_kw": t.load_kw,
                "power_kw": t.power_kw,
                "failed": float(t.failed),
            }
        for u in self.pumps:
            loop = u.supply_loop or ""
            flow = self._loop_value(self.loop_kg_s, loop)
            design = self._design_flow_kg_s(loop)
            out[u.name] = {
                "flow_liters_per_minute": flow * lpm,
                "pump_speed_ratio": flow / design if design > 0 else 0.0,
                "differential_pressure_kilopascals": p.pump_dp_kpa if flow > 0 else 0.0,
                "power_kw": self._loop_value(self.loop_pump_kw, loop),
            }
        for name, points in out.items():
            for key, value in points.items():
                points[key] = float(value)
            points.update(self.setpoint_points(name))
        return out

    def _loop_value(self, values: np.ndarray, loop: str | None) -> float:
        return float(values[self.loop_names.index(loop)]) if loop in self.loop_names else 0.0

    def _design_flow_kg_s(self, loop: str) -> float:
        """Design flow of a loop: its supplier's capacity over the loop's design temperature difference."""
        p = self.p
        for u in self.layout.units:
            if loop and u.supply_loop == loop and u.kind != "pump" and u.capacity_kw:
                dt = p.condenser_delta_t_k if u.kind in ("cooling_tower", "dry_cooler") else p.chw_delta_t_k
                return u.capacity_kw / (4.186 * dt)
        return 0.0

    def set_failed(self, name: str, failed: bool) -> None:
        """Fail (or restore) a CRAH/CRAC, CDU, chiller or tower: it stops removing heat."""
        for i, u in enumerate(self.crahs):
            if u.name == name:
                self.crah_failed[i] = failed
                return
        for i, u in enumerate(self.cdus):
            if u.name == name:
                self.cdu_failed[i] = failed
                return
        for x in (*self.chillers, *self.towers):
            if x.unit.name == name:
                x.failed = failed
                return
        raise KeyError(f"no CRAH, CRAC, CDU, chiller or tower named {name!r}")
