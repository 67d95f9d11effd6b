"""Closed-loop evaluation: the metrics add up, the safety layer holds, the report is self-contained."""

import math
import re
from types import SimpleNamespace

import numpy as np
import pytest

from facility.twin import Scenario, Twin
from facility.twin.evaluation import Meter, comparison_table, evaluate, write_report
from facility.twin.gpu import REASON_SW_POWER_CAP, REASON_SW_THERMAL
from facility.twin.state import (
    CHILLED_WATER,
    COIL_APPROACH_K,
    CRAH_SUPPLY_AIR,
    Envelope,
    Proposal,
    coil_bounds,
    coil_violations,
)


class Hold:
    name = "hold"
    decision_interval_s = 60.0

    def reset(self, context):
        self.context = context

    def propose(self, state):
        return []


class Reckless:
    """Asks for absurd setpoints every decision; the guard must clip every one and never violate."""

    name = "reckless"
    decision_interval_s = 60.0

    def reset(self, context):
        self.n = 0

    def propose(self, state):
        self.n += 1
        wild = 100.0 if self.n % 2 else -100.0
        return [Proposal(u, n, wild) for (u, n) in state.setpoints]


def test_energies_add_up_and_match_an_independent_integration(small_site):
    r = evaluate(Hold(), small_site, days=600 / 86400, outdoor=(25.0, 18.0), warmup_s=60, progress=False)
    m = r.metrics
    assert m["facility_kwh"] == pytest.approx(m["it_kwh"] + m["cooling_kwh"] + m["losses_kwh"], rel=1e-12)
    assert m["pue"] == pytest.approx(m["facility_kwh"] / m["it_kwh"])
    assert m["kwh_per_eflop"] * m["eflop"] == pytest.approx(m["facility_kwh"])
    assert m["tflops_per_kw"] == pytest.approx(m["eflop"] * 1e6 / (m["facility_kwh"] * 3600))
    # The same scenario stepped by hand, integrating Twin.facility() each second.
    twin = Twin(small_site, "seed", Scenario(outdoor=(25.0, 18.0)))
    twin.step(60)
    kwh = tflop = 0.0
    for _ in range(600):
        twin.step(1)
        f = twin.facility()
        kwh += f["facility_power_kw"] / 3600
        tflop += f["tflops"]
    assert m["facility_kwh"] == pytest.approx(kwh, rel=1e-9)
    assert m["eflop"] == pytest.approx(tflop / 1e6, rel=1e-9)
    assert 0.9 < m["throughput_ratio"] <= 1.0
    assert m["envelope_violations"] == 0 and m["clipped_actions"] == 0 and m["shutdowns"] == 0
    assert len(r.series["hours"]) == 11  # one record per decision and one at the end


def test_reckless_policy_is_clipped_not_obeyed(small_site):
    r = evaluate(Reckless(), small_site, days=1200 / 86400, outdoor=(25.0, 18.0), warmup_s=0, progress=False)
    assert r.metrics["envelope_violations"] == 0
    assert r.metrics["clipped_actions"] > 0
    assert {"allowable_max", "allowable_min"} <= set(r.clipped_by)
    assert r.metrics["shutdowns"] == 0


class CoilSqueezer:
    """Asks for the coldest supply air and the warmest chilled water every decision: the coil interlock
    (supply air >= chilled water + 3 K) must hold against it."""

    name = "coil-squeezer"
    decision_interval_s = 60.0

    def reset(self, context):
        pass

    def propose(self, state):
        out = []
        for (unit, name), sp in state.setpoints.items():
            if name == CRAH_SUPPLY_AIR:
                out.append(Proposal(unit, name, sp.envelope.allowable_min))
            elif name == CHILLED_WATER:
                out.append(Proposal(unit, name, sp.envelope.allowable_max))
        return out


def test_the_coil_interlock_holds_against_a_policy_that_squeezes_it(small_site):
    r = evaluate(CoilSqueezer(), small_site, days=3600 / 86400, outdoor=(25.0, 18.0), warmup_s=0, progress=False)
    assert r.metrics["envelope_violations"] == 0
    assert r.clipped_by.get("coil", 0) > 0
    sat = [v for k, v in r.series.items() if k.endswith(CRAH_SUPPLY_AIR)]
    chw = [v for k, v in r.series.items() if k.endswith(CHILLED_WATER)]
    assert sat and chw
    assert (np.min(sat, axis=0) >= np.max(chw, axis=0) + COIL_APPROACH_K - 1e-9).all()
    # Squeezed from both sides, the two meet at the approach.
    assert np.min(sat, axis=0)[-1] == pytest.approx(np.max(chw, axis=0)[-1] + COIL_APPROACH_K)


def test_coil_bounds_pair_the_points_of_one_loop():
    envs = {("crah-1", CRAH_SUPPLY_AIR): Envelope("crah-1", CRAH_SUPPLY_AIR, "crah", "h", 16, 27, coil_loop="chw"),
            ("crah-2", CRAH_SUPPLY_AIR): Envelope("crah-2", CRAH_SUPPLY_AIR, "crah", "h", 16, 27, coil_loop="other"),
            ("ch-1", CHILLED_WATER): Envelope("ch-1", CHILLED_WATER, "chiller", None, 7, 20, coil_loop="chw")}
    commands = {("crah-1", CRAH_SUPPLY_AIR): 18.0, ("crah-2", CRAH_SUPPLY_AIR): 16.0, ("ch-1", CHILLED_WATER): 14.0}
    assert coil_bounds(("crah-1", CRAH_SUPPLY_AIR), commands, envs) == (17.0, math.inf)
    assert coil_bounds(("ch-1", CHILLED_WATER), commands, envs) == (-math.inf, 15.0)
    assert coil_bounds(("crah-2", CRAH_SUPPLY_AIR), commands, envs) == (-math.inf, math.inf)  # another loop
    assert coil_violations(commands, envs) == []
    assert coil_violations({**commands, ("ch-1", CHILLED_WATER): 15.5}, envs) == [
        ("crah-1", CRAH_SUPPLY_AIR), ("ch-1", CHILLED_WATER)]


class _FakeTwin:
    """Just what Meter reads, with clock fractions scripted per second."""

    def __init__(self, n):
        self.gpu_uuids = tuple(range(n))
        self.node_power_w = np.array([1000.0])
        self.server_fan_kw = 0.1
        self.plant = SimpleNamespace(cooling_kw=0.5, losses_kw=lambda it: 0.1)
        self.workload = SimpleNamespace(version=0, tflops_max=np.full(n, 10.0), u=np.ones(n))
        self.bank = SimpleNamespace(phi=np.ones(n), shutdown=np.zeros(n, bool), tj=np.full(n, 49.0),
                                    shutdown_events=0, bits=np.zeros(n, np.int64))
        self.bank.tflops = lambda: 10.0 * self.bank.phi
        self.bank.clocks_event_reasons = lambda: self.bank.bits


def test_throttle_events_need_five_seconds_and_take_their_cause_from_the_bits():
    tw = _FakeTwin(3)
    m = Meter(tw)
    b = tw.bank
    b.bits[:] = [REASON_SW_POWER_CAP, REASON_SW_POWER_CAP, REASON_SW_THERMAL]
    for t in range(10):
        b.phi[:] = [0.9 if t < 4 else 1.0, 0.9 if t < 7 else 1.0, 0.95 if 2 <= t < 7 else 1.0]
        b.tj[:] = 50.0 + t  # +1 K/s on every GPU
        m.sample(1.0)
    out = m.metrics()
    assert out["throttle_events_power_cap"] == 1  # GPU 1 (7 s); GPU 0 recovered after 4 s
    assert out["throttle_events_thermal"] == 1  # GPU 2 (5 s)
    assert out["gpu_seconds_throttled"] == 4 + 7 + 5
    assert out["throughput_ratio"] == pytest.approx(1 - (0.1 * 4 + 0.1 * 7 + 0.05 * 5) / 30)
    assert out["mean_abs_dtj_dt_c_per_s"] == pytest.approx(1.0)
    assert out["temperature_sd_c"] == pytest.approx(np.std(np.arange(10.0)))


def test_envelope_limit_and_independent_check():
    e = Envelope("crah", "sat", "crah", "h", 16, 27, max_step=1.0, max_rate_per_minute=0.5, min_dwell_seconds=300)
    assert e.limit(30, 18, float("inf")) == (19.0, ["allowable_max", "max_step"])
    assert e.limit(19, 18, 100) == (18, ["dwell"])
    assert e.limit(17.5, 18, 300) == (17.5, [])
    assert e.violations(18, 19.5, 1e9) == ["max_step"]
    assert e.violations(18, 18.6, 60) == ["dwell", "max_rate"]
    assert e.violations(18, 18, 0) == []


def test_report_is_self_contained_and_table_has_spread(small_site, tmp_path):
    kw = {"days": 300 / 86400, "outdoor": (25.0, 18.0), "warmup_s": 0, "progress": False}
    rs = [evaluate(Hold(), small_site, seed=s, **kw) for s in (0, 1)]
    table = comparison_table(rs)
    assert "±" in table and "hold" in table
    path = write_report(rs, tmp_path / "report.html")
    text = path.read_text(encoding="utf-8")
    assert len(text) > 1_000_000  # plotly.js itself is inline
    srcs = re.findall(r"<script[^>]*\bsrc\s*=\s*['\"]?([^'\" >]+)", text, flags=re.I)
    assert srcs == []
    assert "cdn.plot.ly" not in "".join(srcs) and "https://" not in "".join(srcs)
    assert text.count("Plotly.newPlot") == 1 + len(rs)
