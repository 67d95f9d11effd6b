"""The `mpc` policy and the shared candidate/prediction machinery (control/policies/candidates.py).

Pure Python: constructed States with adversarial predictors for the safety rules, and the demo facility's
twin (a few hundred simulated seconds) for the what-if rollouts."""

import copy
import math
from datetime import datetime

import numpy as np
import pytest

from control import policies
from control.policies import candidates as cand
from control.policies.mpc import MPC
from facility.twin import layout_from_facility, synthetic_facility
from facility.twin.state import (
    Envelope,
    HallState,
    PolicyContext,
    SetpointState,
    State,
    envelopes_from_layout,
    state_from_twin,
)
from facility.twin.twin import Scenario, Twin

SAT, CHW, TOWER = cand.CRAH_SAT, cand.CHW, cand.TOWER
CDU_SUPPLY, CDU_PUMP = cand.CDU_SUPPLY, cand.CDU_PUMP


def _sp(unit, name, kind, hall, value, lo, hi, step, since=math.inf):
    coil_loop = "chw" if name in (SAT, CHW) else None  # the CRAHs' coils draw on the chiller's loop
    env = Envelope(unit, name, kind, hall, lo, hi, max_step=step, max_rate_per_minute=None, min_dwell_seconds=60.0,
                   coil_loop=coil_loop)
    return SetpointState(env, value, value, since)


def _hall(name, kind, tmax, gpus=64):
    return HallState(name, kind, tmax, tmax - 8, 89.0 - tmax, 0, 0, gpus, 100.0, 40000.0, 20.0, 0.8)


def make_state(air_max=70.0, liquid_max=50.0, since=math.inf, sat=20.0, chw=14.0):
    sps = [
        _sp("crah-a1", SAT, "crah", "hall-a", sat, 16, 27, 1.0, since),
        _sp("crah-a2", SAT, "crah", "hall-a", sat, 16, 27, 1.0, since),
        _sp("chiller-1", CHW, "chiller", None, chw, 7, 20, 0.5, since),
        _sp("tower-1", TOWER, "cooling_tower", None, 24.0, 12, 32, 1.0, since),
        _sp("cdu-b1", CDU_SUPPLY, "cdu", "hall-b", 30.0, 20, 45, 2.0, since),
        _sp("cdu-b1", CDU_PUMP, "cdu", "hall-b", 1.0, 0.3, 1.2, 0.1, since),
    ]
    halls = {"hall-a": _hall("hall-a", "air", air_max), "hall-b": _hall("hall-b", "liquid", liquid_max)}
    fac = {"it_power_kw": 200.0, "cooling_power_kw": 30.0, "losses_kw": 10.0, "facility_power_kw": 240.0,
           "pue": 1.2, "tflops": 80000.0}
    return State(datetime(2025, 7, 1, 12), 0.0, 25.0, 18.0, {s.envelope.key: s for s in sps}, halls, fac)


def _warmth(state, c):
    """How much a candidate warms: kelvin of setpoint rise, plus pump-speed cut."""
    return sum((v - state.setpoints[k].command) * (-1 if k[1] == CDU_PUMP else 1) for k, v in c.targets.items())


class GreedyForWarmth:
    """An adversarial predictor: the warmer the candidate's setpoints (and the less pumping), the better."""

    name = "adversary"

    def __init__(self):
        self.calls = 0

    def predict(self, state, candidates):
        self.calls += len(candidates)
        out = []
        for c in candidates:
            warmth = _warmth(state, c)
            kwh = 10.0 - warmth
            out.append(cand.Outcome(150.0, kwh, 8.0, 2.0 - 0.1 * warmth, 1e7, 1.01e7, 70.0 + warmth, 0, 0, 0, kwh * 24,
                                    1e7 / 150, self.name))
        return out


def _raises_supply(state, proposals, hall):
    for p in proposals:
        sp = state.setpoints[p.key]
        if sp.envelope.hall == hall and p.setpoint in (SAT, CDU_SUPPLY) and p.value > sp.command:
            return True
        if sp.envelope.hall == hall and p.setpoint == CDU_PUMP and p.value < sp.command:
            return True
    return False


def test_registered():
    assert {"mpc", "llm"} <= set(policies.names())
    assert policies.get("mpc").decision_interval_s == 30.0


@pytest.mark.parametrize("hot_hall", ["hall-a", "hall-b"])
def test_hot_gpus_never_warmed_even_if_the_model_wants_it(hot_hall):
    hot = {"air_max": 86.0 if hot_hall == "hall-a" else 60.0, "liquid_max": 86.0 if hot_hall == "hall-b" else 45.0}
    state = make_state(**hot, sat=17.5, chw=14.0)
    mpc = MPC(predictor=GreedyForWarmth())
    out = mpc.propose(state)
    assert out, "the adversary makes some move attractive"
    assert not _raises_supply(state, out, hot_hall)
    # chilled water may not rise past the coil approach of the CRAHs (17.5 - 3 = 14.5 allows 14.5)
    for p in out:
        if p.setpoint == CHW:
            assert p.value + cand.COIL_APPROACH_K <= 17.5 + 1e-9
    # and with the hall cool, the same adversary does warm it: the rule, not the model, held it back
    cool = make_state(air_max=60.0, liquid_max=45.0, sat=17.5, chw=14.0)
    assert _raises_supply(cool, MPC(predictor=GreedyForWarmth()).propose(cool), hot_hall)


def test_nothing_free_means_no_prediction():
    state = make_state(since=0.0)  # every point changed just now: dwell holds all
    pred = GreedyForWarmth()
    assert MPC(predictor=pred).propose(state) == []
    assert pred.calls == 0


def test_candidates_are_bounded_and_inside_the_envelope():
    state = make_state(sat=16.0)  # at the bottom of the CRAH range: no "down" for hall-a
    cs = cand.generate(state)
    assert cs[0].is_hold and len(cs) <= 1 + 2 * len(cand.groups(state))
    labels = [c.label for c in cs]
    assert not any(lbl.startswith("supply air hall-a -") for lbl in labels)
    for c in cs:
        for k, v in c.targets.items():
            assert state.setpoints[k].limit(v) == (v, [])
    # both CRAHs of a hall move together
    moved = [c for c in cs if any(k[1] == SAT for k in c.targets)]
    assert moved and all(len(c.targets) == 2 for c in moved)


def test_candidates_keep_the_coil_interlock():
    # Supply air 17.5 over chilled water 14.5: exactly the 3 K approach. Neither may close it further.
    state = make_state(sat=17.5, chw=14.5)
    labels = [c.label for c in cand.generate(state)]
    assert not any(lbl.startswith(("chilled water chiller-1 +", "supply air hall-a -")) for lbl in labels)
    assert "chilled water chiller-1 -0.50 K" in labels and "supply air hall-a +1.00 K" in labels
    # With room for half a step, the supply-air cut is clipped to the approach, as the safety layer would.
    state = make_state(sat=18.0, chw=14.5)
    cut = next(c for c in cand.generate(state) if c.label.startswith("supply air hall-a -"))
    assert set(cut.targets.values()) == {17.5} and all("coil" in r for r in cut.clipped.values())
    # Each single move keeps the approach; together they would not, so they are not merged.
    cs = cand.generate(state)
    picked = [c for c in cs if c.is_hold or c.label.startswith(("chilled water chiller-1 +", "supply air hall-a -"))]
    assert len(picked) == 3
    assert cand.combine(state, picked, [1.0, 0.5, 0.5]) is None


def test_combine_merges_improving_single_moves():
    state = make_state()
    cs = cand.generate(state)
    outs = GreedyForWarmth().predict(state, cs)
    scores = [cand.score(o, 128) for o in outs]
    merged = cand.combine(state, cs, scores)
    assert merged is not None and len(merged.moves) >= 2
    assert len({m[0] for m in merged.moves}) == len(merged.moves)  # one move per group


def test_surrogate_directions():
    state = make_state()
    s = cand.SurrogatePredictor()
    chw_up = {("chiller-1", CHW): 14.5}
    pump_down = {("cdu-b1", CDU_PUMP): 0.9}
    hold = s.outcome(state, {})
    assert s.outcome(state, chw_up).cooling_kwh < hold.cooling_kwh
    assert s.outcome(state, pump_down).cooling_kwh < hold.cooling_kwh
    assert s.gpu_shift_k(state, state.halls["hall-b"], pump_down) > 0
    assert s.gpu_shift_k(state, state.halls["hall-a"], {("crah-a1", SAT): 19.0, ("crah-a2", SAT): 19.0}) == -1.0


class WarmthCostsWork:
    """Warmer setpoints save energy per unit of work but throttle: throughput 0.98 at hold, 1 point less per
    kelvin of warmth (the seed profile's soft derate, exaggerated)."""

    name = "warmth-costs-work"

    def predict(self, state, candidates):
        out = []
        for c in candidates:
            warmth = _warmth(state, c)
            tflop = 1e7 * (0.98 - 0.01 * warmth)
            kwh = 10.0 - 0.5 * warmth
            out.append(cand.Outcome(150.0, kwh, 8.0, 2.0, tflop, 1e7, 70.0 + warmth, end_facility_kw=kwh * 24,
                                    end_tflops=tflop / 150, source=self.name))
        return out


def test_a_throughput_floor_stops_the_mpc_trading_work_for_energy():
    state = make_state()
    free = MPC(predictor=WarmthCostsWork())
    free.reset(PolicyContext({}, {}, 30.0))
    assert any(p.value > state.setpoints[p.key].command for p in free.propose(state)
               if p.setpoint in (SAT, CDU_SUPPLY)), "without a floor, warmer is cheaper per unit of work"
    floored = MPC(predictor=WarmthCostsWork(), min_throughput=0.985)
    floored.reset(PolicyContext({}, {}, 30.0))
    proposals = floored.propose(state)
    assert proposals, "below the floor it must act to recover throughput"
    assert not _raises_supply(state, proposals, "hall-a") and not _raises_supply(state, proposals, "hall-b")
    assert "Throughput floor 98.50 % of unthrottled: sustained 98.00 % holding" in proposals[0].rationale
    with pytest.raises(ValueError, match="min_throughput"):
        MPC(min_throughput=1.5)


class WarmthSavesCoolingNotEnergy:
    """Warmer setpoints cut cooling but add more in leakage (IT) power than they save: per unit of work they
    cost energy; the same work at every candidate."""

    name = "warmth-saves-cooling"

    def predict(self, state, candidates):
        out = []
        for c in candidates:
            warmth = _warmth(state, c)
            it, cool = 8.0 + 0.4 * warmth, 2.0 - 0.3 * warmth
            out.append(cand.Outcome(150.0, it + cool, it, cool, 1e7, 1e7, 70.0 + warmth,
                                    end_facility_kw=(it + cool) * 24, end_tflops=1e7 / 150, source=self.name))
        return out


def test_a_cooling_weight_trades_facility_energy_for_cooling_energy():
    state = make_state(sat=20.0, chw=14.0)

    def warms(mpc):
        mpc.reset(PolicyContext({}, {}, 30.0))
        proposals = mpc.propose(state)
        return proposals, any(p.value > state.setpoints[p.key].command for p in proposals
                              if p.setpoint in (SAT, CDU_SUPPLY))

    _, plain_warms = warms(MPC(predictor=WarmthSavesCoolingNotEnergy()))
    assert not plain_warms, "per unit of work, warmer costs energy: plain MPC must not warm"
    weighted, weighted_warms = warms(MPC(predictor=WarmthSavesCoolingNotEnergy(), cooling_weight=4.0))
    assert weighted_warms, "cooling counted 5x: warmer is cheaper"
    assert "cooling weighted 5x" in weighted[0].rationale
    for bad in (-0.5, math.inf, math.nan):
        with pytest.raises(ValueError, match="cooling_weight"):
            MPC(cooling_weight=bad)


def test_score_weights_cooling_over_horizon_and_continuation():
    o = cand.Outcome(150.0, 10.0, 8.0, 2.0, 1e7, 1e7, 70.0, end_facility_kw=240.0, end_tflops=1e7 / 150)
    # 30 kWh (10 over the horizon, 240 kW for 300 s) for 30 PFLOP (1e7 TFLOP, then 1e7/150 TFLOPS for 300 s).
    assert cand.score(o, 10, cooling_weight=0.0) == pytest.approx(30.0 / 30.0)
    # No end cooling rate given: the horizon's mean cooling rate (48 kW) continues for terminal_s.
    assert cand.score(o, 10, cooling_weight=1.0) == pytest.approx((30.0 + 2.0 + 48 * 300 / 3600) / 30.0)
    o.end_cooling_kw = 60.0
    assert cand.score(o, 10, cooling_weight=1.0) == pytest.approx((30.0 + 2.0 + 5.0) / 30.0)
    tail = cand.Outcome(150.0, 10.0, 8.0, 2.0, 1e7, 1e7, 70.0, tail_kwh=30.0, tail_tflop=3e7, tail_s=600.0,
                        tail_cooling_kwh=6.0)
    assert cand.score(tail, 10, cooling_weight=2.0) == pytest.approx((40.0 + 2 * 8.0) / 40.0)


def test_mpc_without_a_run_predictor_uses_the_surrogate():
    mpc = MPC()
    mpc.reset(PolicyContext({}, {}, 30.0))
    assert isinstance(mpc.predictor, cand.SurrogatePredictor)
    out = mpc.propose(make_state())
    for p in out:
        assert p.predicted_effect["predictor"] == "surrogate"


# ---- on the twin ----


@pytest.fixture(scope="module")
def warm_twin():
    layout = layout_from_facility(synthetic_facility(air_racks=2, air_nodes_per_rack=2, liquid_racks=2,
                                                     liquid_nodes_per_rack=2))
    twin = Twin(layout, "seed", Scenario(workload="training", climate="mixed", seed=3))
    twin.step(300)
    return twin, envelopes_from_layout(layout)


def test_twin_predictor_leaves_the_live_twin_alone(warm_twin):
    twin, envs = warm_twin
    before = (twin.elapsed_s, twin.bank.tj.copy(), twin.setpoint_command("crah-a1", SAT))
    pred = cand.TwinPredictor(twin)
    state = state_from_twin(twin, envs)
    o = pred.predict(state, [cand.Candidate("c1", "x", {("crah-a1", SAT): 22.0})])[0]
    assert twin.elapsed_s == before[0] and np.array_equal(twin.bank.tj, before[1])
    assert twin.setpoint_command("crah-a1", SAT) == before[2]
    assert o.horizon_s == 150.0 and o.tflop > 0 and o.facility_kwh > 0


def test_twin_rollouts_see_the_physics(warm_twin):
    twin, envs = warm_twin
    state = state_from_twin(twin, envs)
    pred = cand.TwinPredictor(twin)
    crahs = [k for k in envs if k[1] == SAT and envs[k].hall == "hall-a"]
    hold, warmer = pred.predict(state, [cand.Candidate("c0", "hold"),
                                        cand.Candidate("c1", "warm", dict.fromkeys(crahs, 20.0))])
    assert warmer.max_gpu_c > hold.max_gpu_c  # warmer supply air, warmer GPUs
    assert warmer.tflop < hold.tflop  # the seed profile's soft derate costs throughput


def _run(twin, envs, decisions=4):
    """A few closed-loop decisions of the MPC on its own twin; the proposals it made, per decision."""
    from facility.twin.state import EnvelopeGuard

    guard = EnvelopeGuard(twin, envs)
    mpc = MPC(predictor=cand.TwinPredictor(twin))
    mpc.reset(PolicyContext(envs, {}, 30.0))
    made = []
    for _ in range(decisions):
        state = state_from_twin(twin, envs, guard.last_change_s)
        props = mpc.propose(state)
        for p in props:
            sp = state.setpoints[p.key]
            assert sp.limit(p.value) == (p.value, []), "inside the envelope"
            e = p.predicted_effect
            for key in ("facility_kwh", "kwh_per_eflop", "max_gpu_temperature_c", "throughput_ratio",
                        "delta_kwh_per_eflop_pct", "candidate"):
                assert key in e
            assert p.rationale.startswith("MPC (twin what-if")
        guard.apply(props)
        assert guard.violations == 0
        made.append([(p.key, round(p.value, 9)) for p in props])
        twin.step(30)
    return made


def test_closed_loop_proposals_are_valid_and_deterministic(warm_twin):
    twin, envs = warm_twin
    a = _run(copy.deepcopy(twin), envs)
    b = _run(copy.deepcopy(twin), envs)
    assert a == b
    assert any(a), "the MPC moves something on the demo plant"


# ---- server fans: a hall's fan duty as a control point ----

FANS = cand.FANS


def fan_state(air_max=70.0, duty=0.8):
    state = make_state(air_max=air_max)
    fans = _sp("fans-a", FANS, "server_fans", "hall-a", duty, 0.4, 1.0, 0.1)
    return State(state.time, state.elapsed_s, state.outdoor_dry_bulb_c, state.outdoor_wet_bulb_c,
                 {**state.setpoints, fans.envelope.key: fans}, state.halls, state.facility)


def test_server_fans_are_candidates_and_a_fan_cut_counts_as_warming():
    state = fan_state()
    moves = {c.label: c.targets for c in cand.generate(state)}
    assert moves["server fans hall-a +0.05"] == {("fans-a", FANS): pytest.approx(0.85)}
    assert moves["server fans hall-a -0.05"] == {("fans-a", FANS): pytest.approx(0.75)}
    hot = fan_state(air_max=86.0)  # within the interlock margin: no fan cut, a fan raise stays
    labels = [c.label for c in cand.generate(hot)]
    assert "server fans hall-a +0.05" in labels and "server fans hall-a -0.05" not in labels


def test_surrogate_server_fans_cool_the_gpus_and_cost_it_power():
    state = fan_state()
    s = cand.SurrogatePredictor()
    up = {("fans-a", FANS): 0.9}
    hall = state.halls["hall-a"]
    # 75 % of the GPUs' rise over their inlet air (62 - 20 C here) scales as duty^-0.8.
    rise = hall.gpu_temperature_mean_c - hall.server_inlet_c
    assert s.gpu_shift_k(state, hall, up) == pytest.approx(0.75 * rise * ((0.9 / 0.8) ** -0.8 - 1))
    assert s.gpu_shift_k(state, state.halls["hall-b"], up) == 0.0  # liquid hall: no air fans to speak of
    hold, faster = s.outcome(state, {}), s.outcome(state, up)
    fan_kw = 64 * 0.158 * (0.9 ** 3 - 0.8 ** 3)
    leakage_kw = 100.0 * 0.003 * s.gpu_shift_k(state, hall, up)
    assert faster.it_kwh - hold.it_kwh == pytest.approx((fan_kw + leakage_kw) * 150 / 3600)
    assert faster.max_gpu_c < hold.max_gpu_c


def test_fixed_setpoints_return_the_fans_to_the_bmc_default():
    state = fan_state(duty=0.9)
    proposals = [p for p in policies.create("fixed").propose(state) if p.setpoint == FANS]
    assert [(p.unit, p.value) for p in proposals] == [("fans-a", pytest.approx(0.8))]


def test_a_throughput_floor_turns_the_fans_up_on_the_twin():
    """Training on air-cooled GPUs is held by the 700 W power cap (leakage grows with temperature): the MPC with a
    work floor above what cooling alone reaches raises the server fans, on its own twin."""
    from facility.demo import build_demo_facility
    from facility.twin.state import EnvelopeGuard

    facility = build_demo_facility(air_racks=2, liquid_racks=1)
    layout = layout_from_facility(facility)
    twin = Twin(layout, "seed", Scenario(workload="training", climate="mixed", seed=0))
    twin.step(300)
    envs = envelopes_from_layout(layout)
    guard = EnvelopeGuard(twin, envs)
    mpc = MPC(min_throughput=0.995)
    mpc.reset(PolicyContext(envs, {}, 30.0, predictor=twin))
    for _ in range(3):
        guard.apply(mpc.propose(state_from_twin(twin, envs, guard.last_change_s)))
        twin.step(60)
    assert twin.setpoint_command("fans-a", FANS) > 0.8


def test_another_units_fan_setpoint_is_not_the_server_fans():
    """A CRAH's own fan speed setpoint shares the name: neither the candidates nor fixed treat it as server fans."""
    state = fan_state(duty=0.9)
    crah_fan = _sp("crah-a1", FANS, "crah", "hall-a", 1.0, 0.3, 1.0, 0.1)
    state = State(state.time, state.elapsed_s, state.outdoor_dry_bulb_c, state.outdoor_wet_bulb_c,
                  {**state.setpoints, crah_fan.envelope.key: crah_fan}, state.halls, state.facility)
    moved = {k for c in cand.generate(state) for k in c.targets}
    assert ("fans-a", FANS) in moved and ("crah-a1", FANS) not in moved
    assert [p.unit for p in policies.create("fixed").propose(state) if p.setpoint == FANS] == ["fans-a"]
    s = cand.SurrogatePredictor()
    assert s.fan_delta_kw(state, state.halls["hall-a"], {("crah-a1", FANS): 0.5}) == 0.0


def test_a_cooling_weight_prices_the_server_fans_as_cooling():
    """Server fans are metered as IT but do cooling work: a cooling weight must not make moving that work from
    the plant into the servers look cheap."""
    plant_only = cand.Outcome(150.0, 10.0, 8.0, 2.0, 1e7, 1e7, 70.0, end_facility_kw=240.0, end_tflops=1e7 / 150,
                              end_cooling_kw=48.0)
    into_fans = cand.Outcome(150.0, 10.0, 8.0, 1.0, 1e7, 1e7, 70.0, end_facility_kw=240.0, end_tflops=1e7 / 150,
                             end_cooling_kw=24.0, server_fan_kwh=1.0, end_server_fan_kw=24.0)
    weighted = cand.score(plant_only, 10, cooling_weight=4.0)
    assert cand.score(into_fans, 10, cooling_weight=4.0) == pytest.approx(weighted)
    s = cand.SurrogatePredictor()
    state = fan_state()
    up = s.outcome(state, {("fans-a", FANS): 0.9})
    hold = s.outcome(state, {})
    assert up.server_fan_kwh - hold.server_fan_kwh == pytest.approx(64 * 0.158 * (0.9 ** 3 - 0.8 ** 3) * 150 / 3600)
