"""Setpoint changes as annotations on the loop page's setpoint timeline (telemetry.views asks; we answer)."""

from __future__ import annotations

from datetime import UTC, datetime

from django.db.models import Q
from django.urls import reverse

from control.models import SetpointChange
from facility.twin.state import (
    CDU_PUMP_SPEED,
    CDU_SECONDARY_SUPPLY,
    CHILLED_WATER,
    CRAH_SUPPLY_AIR,
    SERVER_FAN_SPEED,
    TOWER_LEAVING_WATER,
)

# Metric of the setpoint read-back series each setpoint name is drawn on.
_SERIES = {
    CRAH_SUPPLY_AIR: "supply_air_temperature_setpoint_celsius",
    CDU_SECONDARY_SUPPLY: "secondary_supply_temperature_setpoint_celsius",
    CHILLED_WATER: "chilled_water_supply_temperature_setpoint_celsius",
    TOWER_LEAVING_WATER: "leaving_water_temperature_setpoint_celsius",
    CDU_PUMP_SPEED: "pump_speed_setpoint_ratio",
    SERVER_FAN_SPEED: "fan_speed_setpoint_ratio",
}


def _events(change: SetpointChange):
    """(time, state, value, text) for each step of the change's life the timeline should show."""
    who = change.policy or (change.proposed_by.get_username() if change.proposed_by_id else "operator")
    yield change.created_at, "proposed", change.to_value, f"proposed by {who}: {change.rationale[:140]}"
    if change.decided_at:
        verdict = "approved" if change.state not in ("denied", "canceled") else change.state
        by = change.decided_by.get_username() if change.decided_by_id else "autonomous mode"
        yield change.decided_at, verdict, change.to_value, f"{verdict} by {by}: {change.decision_comment[:140]}"
    if change.finished_at:
        value = change.readback_value if change.readback_value is not None else change.to_value
        yield change.finished_at, change.state, value, f"{change.state}: {change.state_reason[:140]}".rstrip(": ")


def effect(change: SetpointChange) -> dict | None:
    """Predicted (the forecast the policy or operator relied on) and measured (the watch window's facility KPIs,
    after minus before) changes in cooling and facility power, the hottest GPU and throughput; None until the
    watch window is over."""
    kpis = (change.measured_effect or {}).get("kpis")
    if not kpis:
        return None
    before, after = kpis.get("before", {}), kpis.get("after", {})

    def delta(key):
        a, b = after.get(key), before.get(key)
        return None if a is None or b is None else round(a - b, 3)

    def facility(side):
        it, cooling = side.get("it_power_kw"), side.get("cooling_power_kw")
        return None if it is None or cooling is None else it + cooling

    tflops_b, tflops_a, fac_b, fac_a = before.get("tflops"), after.get("tflops"), facility(before), facility(after)
    p = change.predicted_effect or {}
    hours = (p.get("horizon_s") or 0) / 3600

    def per_hour(key):
        return round(p[key] / hours, 3) if hours and p.get(key) is not None else None

    return {
        "window_s": kpis.get("window_s"),
        "measured": {
            "cooling_kw": delta("cooling_power_kw"),
            "facility_kw": None if fac_a is None or fac_b is None else round(fac_a - fac_b, 3),
            "hottest_gpu_c": delta("hottest_gpu_temp_c"),
            "throughput_pct": round(100 * (tflops_a / tflops_b - 1), 3) if tflops_a and tflops_b else None,
        },
        "predicted": {
            "cooling_kw": per_hour("delta_cooling_kwh"),
            "facility_kw": per_hour("delta_facility_kwh"),
            "hottest_gpu_c": p.get("delta_end_max_gpu_temperature_c"),
            "throughput_pct": p.get("delta_throughput_pct"),
        },
        "before": before, "after": after,
    }


def setpoint_change_annotations(site, start: float, end: float) -> list[dict]:
    lo, hi = datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC)
    changes = (
        SetpointChange.objects.filter(setpoint__cooling_unit__site=site)
        .filter(Q(created_at__range=(lo, hi)) | Q(decided_at__range=(lo, hi)) | Q(finished_at__range=(lo, hi)))
        .select_related("setpoint__cooling_unit", "proposed_by", "decided_by")
    )
    out = []
    for change in changes:
        point = change.setpoint
        for at, state, value, text in _events(change):
            if lo <= at <= hi:
                item = {
                    "time": at.timestamp(), "unit": point.cooling_unit.name,
                    "setpoint": _SERIES.get(point.name, point.name), "value": value, "state": state,
                    "text": text, "url": reverse("control:approvals") + f"#change-{change.pk}",
                }
                if state == "applied" and (measured := effect(change)) is not None:
                    item.update(change=change.pk, label=f"#{change.pk} {point.cooling_unit.name} "
                                f"{change.from_value:g}→{change.to_value:g}", effect=measured)
                out.append(item)
    return out
