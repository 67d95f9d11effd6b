"""Setpoint changes as annotations on the loop page's setpoint timeline (telemetry.views asks; we answer)."""

from __future__ import annotations

from datetime import UTC, datetime

from django.db.models import Q
from django.urls import reverse

from control.models import SetpointChange

# Metric of the setpoint read-back series each setpoint name is drawn on.
_SERIES = {
    "supply_air_temperature_setpoint": "supply_air_temperature_setpoint_celsius",
    "secondary_supply_temperature_setpoint": "secondary_supply_temperature_setpoint_celsius",
    "chilled_water_supply_temperature_setpoint": "chilled_water_supply_temperature_setpoint_celsius",
    "leaving_water_temperature_setpoint": "leaving_water_temperature_setpoint_celsius",
    "pump_speed_setpoint": "pump_speed_setpoint_ratio",
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
                out.append({
                    "time": at.timestamp(), "unit": point.cooling_unit.name,
                    "setpoint": _SERIES.get(point.name, point.name), "value": value, "state": state,
                    "text": text, "url": reverse("control:approvals") + f"#change-{change.pk}",
                })
    return out
