"""Every parameter of the twin, in one place (TWIN.md "GPU" and "Plant").

A calibration profile is the GPU/node fit from `data/twin-profiles.json` (copied from
`shared/data/twin-profiles.json`) on top of the H100 defaults below; `seed` is P1_hybrid_default (the
default, every published row within ~1.5 %), `physics` is P3_physics (leakage ~0.6 %/K).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"

# Profile name -> key in twin-profiles.json.
PROFILE_KEYS = {"seed": "P1_hybrid_default", "physics": "P3_physics"}
DEFAULT_PROFILE = "seed"


@dataclass(frozen=True)
class GpuParams:
    """One H100 SXM: power, clocks, limits and its two-node thermal path (TWIN.md "GPU")."""

    # Power model P = P_base + u*D*phi^alpha + L45*exp(beta*(Tj-45)).
    p_base_w: float = 60.0
    alpha: float = 2.5
    dynamic_w: float = 408.2  # D
    leak45_w: float = 149.8  # L45
    beta_per_k: float = 0.040
    p_cap_w: float = 700.0
    p_cap_min_w: float = 200.0
    phi_min: float = 0.3
    # Optional soft derate 1 - s*max(0, Tj - T_knee) (0 = off).
    soft_derate_per_k: float = 0.0
    soft_knee_c: float = 50.0
    # H100 SXM limits.
    sm_clock_max_mhz: float = 1980.0
    memory_clock_mhz: float = 2619.0  # HBM3, fixed
    t_max_operating_c: float = 87.0
    t_slowdown_c: float = 89.0
    t_shutdown_c: float = 92.0
    t_hbm_limit_c: float = 95.0
    # Our assumption: HBM throttles linearly from its limit to phi_min over this band.
    hbm_throttle_band_k: float = 2.0
    # HBM temperature: sink + half the junction-sink rise + self-heating * u, lag tau (our assumption).
    hbm_rise_k: float = 4.0
    hbm_tau_s: float = 20.0
    # Thermal path (K/W, J/K).
    r_js: float = 0.010
    c_j: float = 60.0
    c_s_air: float = 800.0
    c_s_liquid: float = 300.0
    # R_sf at the reference fan duty / nominal flow. Air: front row (index 0..3) and rear row (4..7).
    r_sf_air_front: float = 0.026
    r_sf_air_rear: float = 0.034
    # Liquid: the fitted pair reproduces the paper's 41-50 C spread only as per-position plate
    # resistances (positions 0..3 and 4..7, like the air rows); summed as [conductive, convective] the
    # liquid GPUs would run at ~56 C. So each plate's R_sf is split by this convective fraction for the
    # flow dependence (our assumption).
    r_sf_liquid_front: float = 0.012
    r_sf_liquid_rear: float = 0.023
    liquid_convective_fraction: float = 0.5
    flow_exponent: float = 0.8  # R_conv ~ flow^-0.8, R_sf(air) ~ duty^-0.8
    air_kg_s: float = 0.060  # per GPU at the reference duty
    fan_duty_ref: float = 0.8
    water_kg_s: float = 0.025  # per cold plate (1.5 L/min) at nominal flow
    cp_air: float = 1005.0
    cp_water: float = 4186.0
    # Throughput: GPU-Burn FP32 peak; BF16 dense peak (times MFU for training/inference).
    tflops_fp32: float = 54.0
    tflops_bf16: float = 989.0


@dataclass(frozen=True)
class NodeParams:
    """An 8-GPU HGX node: node power = (sum P_gpu + P_host + P_fan,max * duty^3) / eta_psu."""

    p_host_w: float = 1613.0
    # Host power at idle as a share of P_host (CPUs, NICs idle down; our assumption); 1.0 at u = 1.
    host_idle_share: float = 0.6
    p_fan_air_max_w: float = 1200.0
    p_fan_liquid_w: float = 150.0  # liquid nodes keep ~150 W of fans whatever the duty
    eta_psu: float = 0.95


@dataclass(frozen=True)
class PlantParams:
    """CRAHs, CDUs, chillers, towers, pumps, electrical (TWIN.md "Plant"); the marked ones are ours."""

    # Time constants (first-order lags).
    setpoint_readback_tau_s: float = 10.0  # ours: a written setpoint reads back after the BMS ramps it
    crah_supply_tau_s: float = 120.0
    chiller_supply_tau_s: float = 300.0  # ours
    cdu_supply_tau_s: float = 60.0  # ours
    tower_tau_s: float = 300.0  # ours
    pump_speed_tau_s: float = 10.0  # ours
    server_fan_tau_s: float = 5.0  # ours
    # Air side.
    coil_approach_k: float = 3.0  # supply air >= chilled water + 3 K
    inlet_offset_contained_k: float = 1.5
    inlet_offset_open_k: float = 4.5
    crah_design_delta_t_k: float = 12.0  # ours: sizes the rated airflow from capacity
    crah_fan_kw_per_kw: float = 0.05  # ours: fan power at rated airflow per kW of capacity
    crah_min_flow: float = 0.3
    crah_overprovision: float = 1.1  # ours: CRAH air over server air
    crac_evap_below_supply_k: float = 10.0  # ours: DX evaporator below supply air
    crac_cond_above_drybulb_k: float = 15.0  # ours: DX condenser above outdoor dry-bulb
    liquid_node_air_kg_s: float = 0.25  # ours: air through a liquid-cooled node
    # Chiller: COP = eff * T_evap / (T_cond - T_evap), clamped.
    chiller_efficiency: float = 0.5
    evap_below_chw_k: float = 2.0
    # T_cond = tower water + 5.44 K, i.e. wet-bulb + 11 K when the tower runs at wet-bulb + 5.56 K.
    cond_above_tower_water_k: float = 5.44
    air_cooled_cond_above_drybulb_k: float = 15.0  # ours: chiller without a tower
    cop_min: float = 2.0
    cop_max: float = 12.0
    chw_delta_t_k: float = 6.0  # ours: chilled-water return above supply
    condenser_delta_t_k: float = 5.5  # ours
    # Economiser / tower.
    economiser_hx_approach_k: float = 1.5  # ours: plate heat exchanger
    tower_design_approach_k: float = 5.56  # at full load and full fan (ASHRAE trim-and-respond uses it)
    tower_min_approach_k: float = 2.0  # ours
    tower_fan_kw_per_kw: float = 0.008  # ours: fan power at full speed per kW of capacity
    dry_cooler_design_approach_k: float = 8.0  # ours, to dry-bulb
    dry_cooler_fan_kw_per_kw: float = 0.02  # ours
    # Liquid hall.
    cdu_approach_k: float = 3.0  # facility water = secondary - 3 K
    cdu_bypass_share: float = 0.0
    # Pumps: dP * Q / eta.
    pump_dp_kpa: float = 300.0
    pump_efficiency: float = 0.87
    # Electrical.
    ups_efficiency: float = 0.96
    distribution_loss: float = 0.01
    water_density: float = 997.0
    air_density: float = 1.18


@dataclass(frozen=True)
class Profile:
    """A named calibration: GPU and node fit over the shared plant parameters."""

    name: str
    source: str  # key in twin-profiles.json
    gpu: GpuParams = field(default_factory=GpuParams)
    node: NodeParams = field(default_factory=NodeParams)
    plant: PlantParams = field(default_factory=PlantParams)
    fitted_result: dict = field(default_factory=dict, compare=False)


@cache
def _profiles_json() -> dict:
    return json.loads((DATA_DIR / "twin-profiles.json").read_text())


def load_profile(name: str = DEFAULT_PROFILE) -> Profile:
    """The calibration profile `name` ("seed" or "physics")."""
    if isinstance(name, Profile):
        return name
    if name not in PROFILE_KEYS:
        raise ValueError(f"unknown twin profile {name!r}; choose one of {sorted(PROFILE_KEYS)}")
    key = PROFILE_KEYS[name]
    p = _profiles_json()[key]
    gpu = replace(
        GpuParams(),
        dynamic_w=p["D"],
        leak45_w=p["L45"],
        beta_per_k=p["beta"],
        soft_derate_per_k=p.get("s_soft", 0.0),
        soft_knee_c=p.get("T_knee", 50.0),
        r_sf_air_front=p["R_sf_air_front"],
        r_sf_air_rear=p["R_sf_air_rear"],
        r_sf_liquid_front=p["R_sf_liq"][0],
        r_sf_liquid_rear=p["R_sf_liq"][1],
    )
    node = replace(
        NodeParams(), p_host_w=p["P_host_W"], p_fan_air_max_w=p["P_fan_air_max_W"], p_fan_liquid_w=p["P_fan_liq_W"]
    )
    return Profile(name=name, source=key, gpu=gpu, node=node, fitted_result=p.get("result", {}))
