"""The safety envelope: each rule, and properties over arbitrary proposals (nothing outside reaches a plant)."""

import itertools
import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from control import changes, envelope
from control.envelope import Context, evaluate
from control.models import ChangeState
from control.tests.factories import RecordingActuator, build_plant, make_user

T0 = datetime(2026, 6, 1, 12, tzinfo=UTC)
_ids = itertools.count()


def ctx(**kw) -> Context:
    base = {
        "name": "crah-a1.supply_air_temperature_setpoint", "unit": "celsius", "current": 18.0, "allowable_min": 16.0,
        "allowable_max": 27.0, "max_step": 1.0, "max_rate_per_minute": 0.5, "min_dwell_seconds": 300, "now": T0,
        "cooling_direction": 1, "gpus": 4, "gpus_reporting": 4, "newest_telemetry_age_s": 5.0, "hottest_gpu_c": 70.0,
    }
    return Context(**{**base, **kw})


def test_inside_is_allowed():
    v = evaluate(ctx(), 18.5)
    assert v.allowed and v.value == 18.5 and v.reasons == []


@pytest.mark.parametrize(("value", "expected", "code"), [(30, 19.0, "allowable_max"), (10, 17.0, "allowable_min"),
                                                          (20, 19.0, "max_step"), (16.2, 17.0, "max_step")])
def test_range_and_step_clip(value, expected, code):
    v = evaluate(ctx(), value)
    assert v.outcome == "clipped" and v.value == pytest.approx(expected) and code in v.codes


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "hot", None, True, 10**400])
def test_not_a_finite_number_is_refused(value):
    v = evaluate(ctx(), value)
    assert v.refused and v.value is None and v.codes == ["not_finite"]


def test_wrong_unit_is_refused():
    assert evaluate(ctx(), 291.0, "kelvin").codes == ["unit"]
    assert evaluate(ctx(), 18.5, "celsius").allowed


def test_no_raise_near_slowdown_by_telemetry_or_forecast():
    assert evaluate(ctx(hottest_gpu_c=85.0), 18.5).codes == ["thermal_margin"]  # 89 - 4 = 85
    assert evaluate(ctx(hottest_gpu_c=84.9), 18.5).allowed
    assert evaluate(ctx(hottest_gpu_c=70, forecast_hottest_gpu_c=86), 18.5).codes == ["thermal_margin"]
    # Lowering (more cooling) stays allowed while hot.
    assert evaluate(ctx(hottest_gpu_c=88.0), 17.5).allowed
    # A pump: lowering is what reduces cooling.
    pump = ctx(name="cdu.pump_speed_setpoint", unit="ratio", current=1.0, allowable_min=0.3, allowable_max=1.2,
               max_step=0.1, cooling_direction=-1, hottest_gpu_c=87.0)
    assert evaluate(pump, 0.95).codes == ["thermal_margin"] and evaluate(pump, 1.05).allowed


def test_stale_telemetry_is_refused():
    assert evaluate(ctx(newest_telemetry_age_s=121), 18.5).codes == ["stale_telemetry"]
    assert evaluate(ctx(newest_telemetry_age_s=None, gpus_reporting=0), 17.5).codes == ["stale_telemetry"]
    assert evaluate(ctx(gpus=10, gpus_reporting=8), 17.5).codes == ["stale_telemetry"]  # below 90 % reporting
    assert evaluate(ctx(gpus=0, gpus_reporting=0, newest_telemetry_age_s=None), 17.5).allowed  # cools no GPU


def test_coil_interlock_clips_both_sides():
    v = evaluate(ctx(current=14.0, allowable_min=10, coil_min=13.0, max_step=5), 11.0)
    assert v.value == 13.0 and "coil" in v.codes
    chw = ctx(name="chiller", current=10, allowable_min=7, allowable_max=20, max_step=5, coil_max=15.0)
    assert evaluate(chw, 18).value == 15.0
    assert evaluate(ctx(current=18, coil_min=30.0), 18).codes[-1] == "no_feasible_value"


def test_dwell_and_rate_wait_at_application_only():
    recent = ctx(last_written_at=T0 - timedelta(seconds=100))
    v = evaluate(recent, 19.0, at_apply=True)
    assert v.refused and {"dwell"} <= set(v.codes) and v.wait_seconds == 200
    assert evaluate(recent, 19.0).allowed  # proposing is not timed
    slow = ctx(last_written_at=T0 - timedelta(seconds=400), max_rate_per_minute=0.1, max_step=2)
    v = evaluate(slow, 19.0, at_apply=True)  # 1 K at 0.1 K/min needs 600 s
    assert v.codes == ["max_rate"] and v.wait_seconds == 200
    assert evaluate(recent, 19.0, at_apply=True, rollback=True).allowed  # a return waives dwell and rate only
    assert evaluate(ctx(hottest_gpu_c=88, last_written_at=T0), 19.0, at_apply=True, rollback=True).refused


# --- Properties -------------------------------------------------------------------------------------------

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
anything = st.one_of(st.floats(), st.integers(), st.text(max_size=4), st.none(), st.booleans())


@st.composite
def contexts(draw):
    lo = draw(st.floats(min_value=-50, max_value=100, allow_nan=False))
    hi = lo + draw(st.floats(min_value=0, max_value=60, allow_nan=False))
    return ctx(
        unit=draw(st.sampled_from(["celsius", "ratio"])),
        current=draw(st.one_of(st.floats(min_value=lo, max_value=hi), finite)),
        allowable_min=lo, allowable_max=hi,
        max_step=draw(st.one_of(st.none(), st.floats(min_value=1e-3, max_value=20))),
        max_rate_per_minute=draw(st.one_of(st.none(), st.floats(min_value=1e-3, max_value=10))),
        min_dwell_seconds=draw(st.one_of(st.none(), st.integers(0, 900))),
        last_written_at=draw(st.one_of(st.none(), st.integers(0, 3600).map(lambda s: T0 - timedelta(seconds=s)))),
        cooling_direction=draw(st.sampled_from([-1, 0, 1])),
        coil_min=draw(st.one_of(st.none(), finite)), coil_max=draw(st.one_of(st.none(), finite)),
        gpus=(g := draw(st.integers(0, 8))), gpus_reporting=draw(st.integers(0, g)),
        newest_telemetry_age_s=draw(st.one_of(st.none(), st.floats(min_value=0, max_value=600))),
        hottest_gpu_c=draw(st.one_of(st.none(), st.floats(min_value=20, max_value=95))),
        forecast_hottest_gpu_c=draw(st.one_of(st.none(), st.floats(min_value=20, max_value=95))),
    )


def _inside(c: Context, v: float, *, at_apply: bool, rollback: bool = False) -> list[str]:
    """An independent statement of the envelope: what is wrong with writing `v` from `c` (empty: nothing)."""
    eps = 1e-6
    wrong = []
    if not math.isfinite(v):
        return ["finite"]
    if not c.allowable_min - eps <= v <= c.allowable_max + eps:
        wrong.append("range")
    if c.max_step is not None and abs(v - c.current) > c.max_step + eps:
        wrong.append("step")
    if c.coil_min is not None and v < c.coil_min - eps:
        wrong.append("coil_min")
    if c.coil_max is not None and v > c.coil_max + eps:
        wrong.append("coil_max")
    if c.gpus and (c.newest_telemetry_age_s is None or c.newest_telemetry_age_s > c.max_telemetry_age_s
                   or c.gpus_reporting / c.gpus < c.min_reporting_fraction):
        wrong.append("stale")
    moved = v - c.current
    hot = max([t for t in (c.hottest_gpu_c, c.forecast_hottest_gpu_c) if t is not None], default=-math.inf)
    if abs(moved) > 1e-9 and c.cooling_direction and math.copysign(1, moved) == c.cooling_direction \
            and hot >= c.slowdown_c - c.margin_k - eps:
        wrong.append("thermal")
    if at_apply and not rollback and abs(moved) > 1e-9 and c.last_written_at is not None:
        since = (c.now - c.last_written_at).total_seconds()
        if c.min_dwell_seconds and since < c.min_dwell_seconds - eps:
            wrong.append("dwell")
        if c.max_rate_per_minute and abs(moved) > c.max_rate_per_minute * since / 60 + eps:
            wrong.append("rate")
    return wrong


@settings(max_examples=600, deadline=None)
@given(c=contexts(), value=st.one_of(finite, anything), unit=st.sampled_from([None, "celsius", "ratio", "kelvin"]),
       at_apply=st.booleans(), rollback=st.booleans())
def test_property_a_verdict_value_is_always_inside(c, value, unit, at_apply, rollback):
    v = evaluate(c, value, unit, at_apply=at_apply, rollback=rollback)
    assert v.outcome in ("allowed", "clipped", "refused")
    if v.refused:
        assert v.value is None and v.reasons
        return
    assert unit in (None, c.unit)
    assert _inside(c, v.value, at_apply=at_apply, rollback=rollback) == []
    if v.allowed:
        assert v.value == pytest.approx(float(value))
    v.as_dict()  # always JSON-serialisable


# --- Every path through the database ends in the same envelope --------------------------------------------

step = st.fixed_dictionaries({
    "value": st.one_of(st.floats(min_value=0, max_value=60), anything),
    "unit": st.sampled_from([None, None, None, "celsius", "ratio"]),
    "after_s": st.sampled_from([0, 30, 90, 200, 400, 1000]),
    "hottest": st.one_of(st.none(), st.floats(min_value=40, max_value=92)),
    "telemetry_age_s": st.sampled_from([1, 30, 200]),
    "forecast": st.one_of(st.none(), st.floats(min_value=40, max_value=92)),
    "target": st.sampled_from(["crah", "cdu"]),
})


@pytest.mark.django_db
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(steps=st.lists(step, min_size=1, max_size=6))
def test_property_nothing_outside_the_envelope_reaches_the_actuator(steps, monkeypatch):
    """Arbitrary proposals at arbitrary times, each approved and applied by the real services with a recording
    actuator; every write the actuator saw is checked against the envelope by an independent oracle."""
    n = next(_ids)
    operator, approver = make_user(f"op-{n}", "operator"), make_user(f"ap-{n}", "approver")
    plant = build_plant(f"p{n}", gpus=True)
    actuator = RecordingActuator()
    reading = {}
    monkeypatch.setattr(envelope, "read_gpu_temperatures", lambda site_id, gpu_ids, since: {
        g: (reading["at"], reading["hottest"]) for g in gpu_ids if reading["at"] >= since})
    now = T0
    last_write: dict[int, tuple[datetime, float]] = {}
    for s in steps:
        now += timedelta(seconds=s["after_s"])
        reading.update(at=(now - timedelta(seconds=s["telemetry_age_s"])).timestamp(),
                       hottest=s["hottest"] if s["hottest"] is not None else 50.0)
        sp = plant.crah_sat if s["target"] == "crah" else plant.cdu_supply
        sp.refresh_from_db()
        before = sp.value
        try:
            change = changes.propose(sp, s["value"], user=operator, unit=s["unit"],
                                     forecast_hottest_gpu_c=s["forecast"], now=now)
        except changes.ControlError:
            continue
        changes.approve(change.pk, approver, now=now)
        n = len(actuator.writes)
        changes.apply_change(change.pk, actuator=actuator, now=now)
        change.refresh_from_db()
        if len(actuator.writes) == n:
            assert change.state in (ChangeState.APPROVED, ChangeState.FAILED)  # waiting for dwell, or refused
            continue
        (pk, written), = actuator.writes[n:]
        sp.refresh_from_db()
        prev = last_write.get(pk)
        oracle = ctx(
            name=str(sp), unit=sp.unit, current=before, allowable_min=sp.allowable_min,
            allowable_max=sp.allowable_max, max_step=sp.max_step, max_rate_per_minute=sp.max_rate_per_minute,
            min_dwell_seconds=sp.min_dwell_seconds, now=now, last_written_at=prev[0] if prev else None,
            cooling_direction=1, coil_min=plant.chiller_chw.value + 3 if sp == plant.crah_sat else None,
            gpus=2, gpus_reporting=2, newest_telemetry_age_s=s["telemetry_age_s"], hottest_gpu_c=reading["hottest"],
            forecast_hottest_gpu_c=s["forecast"],
        )
        assert _inside(oracle, written, at_apply=True) == [], (s, written)
        assert change.state == ChangeState.APPLIED and sp.value == written
        last_write[pk] = (now, written)
    event(f"actuator writes: {min(len(actuator.writes), 3)}{'+' if len(actuator.writes) >= 3 else ''}")
