"""The safety envelope: the one check every setpoint value passes before it may reach the plant.

Every path goes through `check()`: a policy's proposal, an operator's change (page, REST, admin), an
autonomous change, a rollback, and the apply task again right before it writes the actuator. It returns a
`Verdict`: allowed, clipped (to a value inside the envelope) or refused, with structured reasons.

What it enforces, for one `facility.Setpoint`:

- the value is a finite number in the setpoint's own unit;
- allowable min/max, and at most `max_step` away from the current read-back (clipped);
- coil interlock: a CRAH's supply air stays at least chilled-water supply + 3 K (clipped both ways: the
  CRAH setpoint from below, the chiller's chilled-water setpoint from above);
- at application (`at_apply=True`): `min_dwell_seconds` since the point was last written, and
  `max_rate_per_minute` × the minutes since then. These are timing, not value, limits: the verdict says how
  long to wait (`wait_seconds`) instead of clipping, because an approver approved one value;
- thermal interlock: no change that reduces cooling (raising a temperature setpoint, lowering a pump, fan or
  flow setpoint) while any GPU the unit cools is within `CONTROL_THERMAL_MARGIN_K` of its slowdown
  temperature, by latest telemetry (a GPU that went silent counts with its last reading of the last
  `SILENT_GPU_LOOKBACK_S`) or by a forecast when one is supplied;
- stale-telemetry watchdog: refused when the affected GPUs' telemetry is older than
  `CONTROL_TELEMETRY_MAX_AGE_SECONDS` (the caller then pauses the site's controllers).

A rollback (`rollback=True`, a return to the last approved value) waives only dwell and rate.

`evaluate()` is pure (a `Context` in, a `Verdict` out) so it can be tested exhaustively; `gather()` builds
the context from the database and telemetry; `check()` is both.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

__all__ = ["Context", "Reason", "Verdict", "check", "evaluate", "fed_gpu_ids", "gather"]

EPS = 1e-9
# A GPU that stopped reporting may be the one overheating (a GPU at 92 °C shuts down and goes quiet): while
# enough others report for the telemetry to count as fresh, its last reading this recent still counts.
SILENT_GPU_LOOKBACK_S = 900.0
ALLOWED, CLIPPED, REFUSED = "allowed", "clipped", "refused"
# Setpoints whose decrease reduces cooling (pump, fan, flow); temperature setpoints reduce it by rising.
_FLOW_WORDS = ("pump", "fan", "flow", "speed")


@dataclass(frozen=True)
class Reason:
    code: str  # stable slug: unit, not_finite, stale_telemetry, allowable_min, max_step, coil, dwell, ...
    message: str
    kind: str  # "clip" (value changed), "refuse" (no value), "wait" (timing: allowed later)


@dataclass
class Context:
    """Everything the envelope needs about one setpoint now. Built by `gather`, or by hand in tests."""

    name: str
    unit: str
    current: float  # the plant's read-back
    allowable_min: float
    allowable_max: float
    max_step: float | None
    max_rate_per_minute: float | None
    min_dwell_seconds: float | None
    now: datetime
    last_written_at: datetime | None = None  # when the actuator was last written for this point
    cooling_direction: int = 0  # +1: raising reduces cooling (temperatures); -1: lowering does; 0: neither
    coil_min: float | None = None  # CRAH supply air: chilled-water supply + approach
    coil_max: float | None = None  # chiller chilled-water supply: coldest CRAH supply air - approach
    gpus: int = 0  # GPUs this point cools
    gpus_reporting: int = 0  # of those, with telemetry younger than the maximum age
    newest_telemetry_age_s: float | None = None
    hottest_gpu_c: float | None = None  # latest telemetry
    forecast_hottest_gpu_c: float | None = None
    slowdown_c: float = 89.0
    margin_k: float = 4.0
    min_reporting_fraction: float = 0.9
    max_telemetry_age_s: float = 120.0

    def snapshot(self) -> dict:
        out = {k: _json_number(v) if isinstance(v, float) else v for k, v in asdict(self).items()}
        for key in ("now", "last_written_at"):
            out[key] = out[key].isoformat() if out[key] else None
        return out


@dataclass
class Verdict:
    outcome: str  # allowed / clipped / refused
    value: float | None  # what may be written (None when refused)
    requested: float | None
    reasons: list[Reason] = field(default_factory=list)
    wait_seconds: float | None = None  # refused for timing only: allowed after this long
    context: dict = field(default_factory=dict)

    @property
    def allowed(self) -> bool:
        return self.outcome == ALLOWED

    @property
    def refused(self) -> bool:
        return self.outcome == REFUSED

    @property
    def codes(self) -> list[str]:
        return [r.code for r in self.reasons]

    @property
    def message(self) -> str:
        return "; ".join(r.message for r in self.reasons) or "inside the envelope"

    def as_dict(self) -> dict:
        return {
            "outcome": self.outcome, "value": _json_number(self.value), "requested": _json_number(self.requested),
            "reasons": [asdict(r) for r in self.reasons], "wait_seconds": self.wait_seconds,
            "context": self.context,
        }


def _json_number(x):
    """JSON (and PostgreSQL jsonb) have no NaN or infinity: keep them readable as strings."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x


def _as_float(value) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return out


def evaluate(ctx: Context, value, unit: str | None = None, *, at_apply: bool = False,
             rollback: bool = False) -> Verdict:
    """The verdict on moving `ctx`'s point to `value` (given in `unit`; None means the point's own unit)."""
    requested = _as_float(value)
    snap = ctx.snapshot()

    def refuse(*reasons: Reason, wait: float | None = None) -> Verdict:
        return Verdict(REFUSED, None, requested, list(reasons), wait, snap)

    if unit is not None and unit != ctx.unit:
        return refuse(Reason("unit", f"value given in {unit!r}; {ctx.name} takes {ctx.unit!r}", "refuse"))
    if requested is None or not math.isfinite(requested):
        return refuse(Reason("not_finite", f"{value!r} is not a finite number", "refuse"))
    current = ctx.current
    if ctx.gpus:
        fresh_share = ctx.gpus_reporting / ctx.gpus
        if (ctx.newest_telemetry_age_s is None or ctx.newest_telemetry_age_s > ctx.max_telemetry_age_s
                or fresh_share < ctx.min_reporting_fraction):
            age = "none" if ctx.newest_telemetry_age_s is None else f"{ctx.newest_telemetry_age_s:.0f} s old"
            return refuse(Reason(
                "stale_telemetry",
                f"telemetry of the GPUs this point cools is stale ({ctx.gpus_reporting}/{ctx.gpus} reporting "
                f"within {ctx.max_telemetry_age_s:.0f} s; newest {age})", "refuse"))

    reasons: list[Reason] = []
    lo, hi = ctx.allowable_min, ctx.allowable_max
    v = requested
    if v < lo - EPS:
        reasons.append(Reason("allowable_min", f"{v:g} is below the allowable minimum {lo:g}", "clip"))
    elif v > hi + EPS:
        reasons.append(Reason("allowable_max", f"{v:g} is above the allowable maximum {hi:g}", "clip"))
    if ctx.coil_min is not None and ctx.coil_min > lo:
        if v < ctx.coil_min - EPS:
            reasons.append(Reason("coil", f"CRAH supply air must stay ≥ chilled water + approach "
                                          f"({ctx.coil_min:g})", "clip"))
        lo = ctx.coil_min
    if ctx.coil_max is not None and ctx.coil_max < hi:
        if v > ctx.coil_max + EPS:
            reasons.append(Reason("coil", f"chilled water must stay ≤ coldest CRAH supply air − approach "
                                          f"({ctx.coil_max:g})", "clip"))
        hi = ctx.coil_max
    if ctx.max_step is not None:
        if abs(v - current) > ctx.max_step + EPS:
            reasons.append(Reason("max_step", f"a change of {v - current:+g} exceeds the maximum step "
                                              f"{ctx.max_step:g}", "clip"))
        lo, hi = max(lo, current - ctx.max_step), min(hi, current + ctx.max_step)
    if lo > hi + EPS:
        return refuse(*reasons, Reason("no_feasible_value", f"no value satisfies the envelope from {current:g} "
                                                            f"(allowed window [{lo:g}, {hi:g}] is empty)", "refuse"))
    v = min(max(v, lo), hi)

    direction = (v > current + EPS) - (v < current - EPS)
    if direction and ctx.cooling_direction and direction == ctx.cooling_direction:
        hottest = [t for t in (ctx.hottest_gpu_c, ctx.forecast_hottest_gpu_c) if t is not None and math.isfinite(t)]
        threshold = ctx.slowdown_c - ctx.margin_k
        if hottest and max(hottest) >= threshold - EPS:
            which = "forecast" if ctx.forecast_hottest_gpu_c is not None and \
                ctx.forecast_hottest_gpu_c == max(hottest) else "latest telemetry"
            return refuse(*reasons, Reason(
                "thermal_margin", f"a GPU this point cools is at {max(hottest):.1f} °C ({which}), within "
                                  f"{ctx.margin_k:g} K of its {ctx.slowdown_c:g} °C slowdown: no change that "
                                  "reduces cooling", "refuse"))

    if at_apply and not rollback and direction and ctx.last_written_at is not None:
        since = (ctx.now - ctx.last_written_at).total_seconds()
        wait = 0.0
        waits = []
        if ctx.min_dwell_seconds and since < ctx.min_dwell_seconds - EPS:
            wait = max(wait, ctx.min_dwell_seconds - since)
            waits.append(Reason("dwell", f"last written {since:.0f} s ago; minimum dwell "
                                         f"{ctx.min_dwell_seconds:g} s", "wait"))
        if ctx.max_rate_per_minute:
            needed = abs(v - current) / ctx.max_rate_per_minute * 60.0
            if since < needed - 1e-6:
                wait = max(wait, needed - since)
                waits.append(Reason("max_rate", f"{abs(v - current):g} in {since:.0f} s exceeds "
                                                f"{ctx.max_rate_per_minute:g} per minute", "wait"))
        if waits:
            return refuse(*reasons, *waits, wait=math.ceil(wait))

    return Verdict(CLIPPED if reasons else ALLOWED, v, requested, reasons, None, snap)


# --- Building the context from the database --------------------------------------------------------


def cooling_direction(setpoint) -> int:
    if setpoint.unit == "celsius":
        return 1
    if any(word in setpoint.name for word in _FLOW_WORDS):
        return -1
    return 0


def _downstream_units(unit) -> list:
    """`unit` and every unit fed by the loops it supplies, transitively (tower → chiller → CRAHs)."""
    from facility.models import CoolingUnit

    seen, frontier = {unit.pk: unit}, [unit]
    while frontier:
        loops = [u.supply_loop_id for u in frontier if u.supply_loop_id]
        if not loops:
            break
        frontier = [u for u in CoolingUnit.objects.filter(return_loop_id__in=loops) if u.pk not in seen]
        seen.update((u.pk, u) for u in frontier)
    return list(seen.values())


def fed_gpu_ids(unit) -> list[int]:
    """GPUs a cooling unit cools: racks it (or any unit downstream of it) cools → nodes → GPUs.

    Where the inventory names no racks for it, a hall unit cools its hall and a central plant unit the whole
    site: the conservative reading.
    """
    from facility.models import GPU

    units = _downstream_units(unit)
    gpus = list(GPU.objects.filter(node__rack__cooled_by__in=[u.pk for u in units]).distinct()
                .values_list("pk", flat=True))
    if gpus:
        return gpus
    if unit.hall_id:
        return list(GPU.objects.filter(node__rack__hall_id=unit.hall_id).values_list("pk", flat=True))
    return list(GPU.objects.filter(node__rack__hall__site_id=unit.site_id).values_list("pk", flat=True))


def read_gpu_temperatures(site_id: int, gpu_ids: list[int], since: float) -> dict[int, tuple[float, float]]:
    """Latest (epoch time, °C) per GPU id with a sample since `since`. Tests may replace this function."""
    from django.db import connection

    from telemetry.query import _epoch
    from telemetry.storage import GPU_TABLE, to_datetime

    if not gpu_ids:
        return {}
    # The table name is a constant; every value is a bound parameter.
    sql = (
        f"SELECT gpu_id, time, gpu_temp FROM {GPU_TABLE} WHERE (gpu_id, time) IN ("  # noqa: S608
        f"SELECT gpu_id, MAX(time) FROM {GPU_TABLE} WHERE time >= %s AND gpu_id IN "
        f"({', '.join(['%s'] * len(gpu_ids))}) GROUP BY gpu_id)"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [connection.ops.adapt_datetimefield_value(to_datetime(since)), *gpu_ids])
        return {gpu_id: (_epoch(ts), temp) for gpu_id, ts, temp in cursor.fetchall()}


def _coupled_values(points) -> list[float]:
    """The values the coupled points may hold: each one's stored value and, where a change to it is being
    applied, that change's target too (its write may have landed before its read-back is stored)."""
    from control.models import ChangeState, SetpointChange

    stored = dict(points.values_list("pk", "value"))
    applying = SetpointChange.objects.filter(setpoint_id__in=list(stored), state=ChangeState.APPLYING)
    return [*stored.values(), *applying.values_list("to_value", flat=True)]


def _coil_bounds(setpoint) -> tuple[float | None, float | None]:
    """(min, max) the coil interlock puts on a CRAH supply-air or chiller chilled-water setpoint."""
    from facility.models import Setpoint

    unit = setpoint.cooling_unit
    approach = settings.CONTROL_COIL_APPROACH_K
    if unit.kind == "crah" and setpoint.name.startswith("supply_air_temperature") and unit.return_loop_id:
        chw = _coupled_values(Setpoint.objects.filter(
            cooling_unit__supply_loop_id=unit.return_loop_id, cooling_unit__kind="chiller",
            name__startswith="chilled_water_supply_temperature",
        ))
        return (max(chw) + approach if chw else None), None
    if unit.kind == "chiller" and setpoint.name.startswith("chilled_water_supply_temperature") and unit.supply_loop_id:
        sat = _coupled_values(Setpoint.objects.filter(
            cooling_unit__return_loop_id=unit.supply_loop_id, cooling_unit__kind="crah",
            name__startswith="supply_air_temperature",
        ))
        return None, (min(sat) - approach if sat else None)
    return None, None


def last_written_at(setpoint) -> datetime | None:
    from control.models import SetpointChange

    return (SetpointChange.objects.filter(setpoint=setpoint, written_at__isnull=False)
            .order_by("-written_at").values_list("written_at", flat=True).first())


def gather(setpoint, *, now: datetime | None = None, forecast_hottest_gpu_c: float | None = None) -> Context:
    """The envelope context of `setpoint` now: its envelope, history, interlock bounds and GPU telemetry."""
    now = now or timezone.now()
    unit = setpoint.cooling_unit
    max_age = float(settings.CONTROL_TELEMETRY_MAX_AGE_SECONDS)
    gpu_ids = fed_gpu_ids(unit)
    latest = read_gpu_temperatures(unit.site_id, gpu_ids, (now - timedelta(seconds=max_age)).timestamp())
    silent = [g for g in gpu_ids if g not in latest]
    last_known = read_gpu_temperatures(unit.site_id, silent, now.timestamp() - SILENT_GPU_LOOKBACK_S) if silent else {}
    temps = [t for _, t in (*latest.values(), *last_known.values()) if t is not None and math.isfinite(t)]
    coil_min, coil_max = _coil_bounds(setpoint)
    forecast = _as_float(forecast_hottest_gpu_c)
    return Context(
        name=str(setpoint), unit=setpoint.unit, current=float(setpoint.value),
        allowable_min=setpoint.allowable_min, allowable_max=setpoint.allowable_max, max_step=setpoint.max_step,
        max_rate_per_minute=setpoint.max_rate_per_minute, min_dwell_seconds=setpoint.min_dwell_seconds,
        now=now, last_written_at=last_written_at(setpoint), cooling_direction=cooling_direction(setpoint),
        coil_min=coil_min, coil_max=coil_max, gpus=len(gpu_ids), gpus_reporting=len(latest),
        newest_telemetry_age_s=(now.timestamp() - max(t for t, _ in latest.values())) if latest else None,
        hottest_gpu_c=max(temps) if temps else None,
        forecast_hottest_gpu_c=forecast if forecast is not None and math.isfinite(forecast) else None,
        slowdown_c=settings.CONTROL_SLOWDOWN_TEMPERATURE_C, margin_k=settings.CONTROL_THERMAL_MARGIN_K,
        min_reporting_fraction=settings.CONTROL_MIN_REPORTING_FRACTION, max_telemetry_age_s=max_age,
    )


def check(setpoint, value, unit: str | None = None, *, now: datetime | None = None, at_apply: bool = False,
          rollback: bool = False, forecast_hottest_gpu_c: float | None = None) -> Verdict:
    """`gather` then `evaluate`: the verdict on moving `setpoint` to `value` now."""
    ctx = gather(setpoint, now=now, forecast_hottest_gpu_c=forecast_hottest_gpu_c)
    return evaluate(ctx, value, unit, at_apply=at_apply, rollback=rollback)
