"""The setpoint-change state machine: every transition, its permission check, envelope check and audit entry.

Pages, the REST API, admin actions, policy runs and Celery tasks all call these functions; none of them
changes a `SetpointChange`'s state any other way.

    propose ─► Pending ─► Approved ─► Applying ─► Applied ─► Rolled back
                  │          │            └─────► Failed
                  ├► Denied  ├► Canceled / Expired / Failed (envelope at apply)
                  ├► Canceled
                  └► Expired

Applying follows STYLE.md: the approval commits, then `apply(change_id)` is enqueued on commit; the task
locks the row, acts only if Approved, re-checks the envelope, marks Applying (its claim, committed before
the plant is touched), writes through the actuator, reads back and records Applied or Failed. A redelivered
task finds the change no longer Approved and does nothing; a change left Applying by a dead worker is
reconciled from the plant's read-back by the expiry sweep, never written again.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from control import envelope
from control.actuators import Actuator, ActuatorError, ApplyResult, for_setpoint
from control.models import (
    OPEN_STATES,
    TRANSITIONS,
    AuditAction,
    AuditEntry,
    AutonomySetting,
    ChangeOrigin,
    ChangeState,
    ControllerPause,
    SetpointChange,
)
from facility.models import Setpoint, Site

log = logging.getLogger(__name__)

__all__ = [
    "ControlError",
    "EnvelopeRefused",
    "apply_change",
    "approve",
    "audit",
    "cancel",
    "controllers_paused",
    "deny",
    "expire_changes",
    "pause_controllers",
    "propose",
    "propose_from_policy",
    "resume_controllers",
    "rollback",
    "set_autonomy",
    "telemetry_watchdog",
    "watch_changes",
]


class ControlError(Exception):
    """A refused request: `code` is a stable slug, `status` the HTTP status the API answers with."""

    status = 409

    def __init__(self, message: str, code: str = "conflict", status: int | None = None, reasons=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reasons = reasons or []
        if status is not None:
            self.status = status


class EnvelopeRefused(ControlError):
    def __init__(self, verdict: envelope.Verdict):
        super().__init__(f"refused by the safety envelope: {verdict.message}", "envelope_refused", 422,
                         [{"code": r.code, "message": r.message, "kind": r.kind} for r in verdict.reasons])
        self.verdict = verdict


def _forbid(message: str) -> ControlError:
    return ControlError(message, "permission_denied", 403)


# --- Audit -------------------------------------------------------------------------------------------


def _label(user) -> str:
    return user.get_username() if user is not None else "system"


def audit(action: str, *, actor=None, actor_label: str | None = None, change: SetpointChange | None = None,
          setpoint: Setpoint | None = None, site: Site | None = None, message: str = "", data: dict | None = None,
          at: datetime | None = None) -> AuditEntry:
    """Append one entry to the control log."""
    if change is not None and setpoint is None:
        setpoint = change.setpoint
    if setpoint is not None and site is None:
        site = setpoint.cooling_unit.site
    subject = str(setpoint) if setpoint is not None else (site.slug if site is not None else "")
    return AuditEntry.objects.create(
        at=at or timezone.now(), actor=actor, actor_label=actor_label or _label(actor), action=action,
        change=change, setpoint=setpoint, site=site, subject=subject[:200], message=message, data=data or {},
    )


def _transition(change: SetpointChange, state: str, *, now: datetime, reason: str = "") -> None:
    if state not in TRANSITIONS[change.state]:
        raise ControlError(f"change #{change.pk} is {change.get_state_display()}; it cannot become "
                           f"{ChangeState(state).label}", "invalid_state")
    change.state = state
    if reason:
        change.state_reason = reason


def _lock(change_id: int) -> SetpointChange:
    try:
        return (SetpointChange.objects.select_for_update(of=("self",))
                .select_related("setpoint__cooling_unit__site", "proposed_by").get(pk=change_id))
    except SetpointChange.DoesNotExist:
        raise ControlError(f"no setpoint change #{change_id}", "not_found", 404) from None


def _enqueue_apply(change_id: int, countdown: float | None = None) -> None:
    from control.tasks import apply_setpoint_change

    def send():
        if countdown and settings.CELERY_TASK_ALWAYS_EAGER:
            return  # eager (embedded): no delayed tasks; the expiry sweep re-sends when the wait is over
        try:
            apply_setpoint_change.apply_async((change_id,), countdown=countdown)
        except Exception as exc:  # kombu, redis, or Celery's result backend giving up: the broker is down
            # The decision is committed. The expiry sweep (beat) re-sends approved changes whose time has come,
            # so this one is applied once the broker is back, not lost, and the decision is not reported failed.
            log.warning("could not enqueue the application of change #%s (%s); the sweep will re-send it",
                        change_id, exc)

    transaction.on_commit(send)


# --- Controllers paused (stale telemetry) ---------------------------------------------------------------


def controllers_paused(site: Site) -> bool:
    """Whether policies for this site must not run (policy runners check this before every decision)."""
    return ControllerPause.objects.filter(site=site, paused=True).exists()


def pause_controllers(site: Site, reason: str, *, now: datetime | None = None, actor=None,
                      automatic: bool = True) -> int:
    """Pause the site's controllers and expire its open proposals; returns how many changes expired."""
    now = now or timezone.now()
    with transaction.atomic():
        pause, _ = ControllerPause.objects.select_for_update().get_or_create(site=site)
        newly = not pause.paused
        if newly:
            pause.paused, pause.reason, pause.automatic, pause.since = True, reason, automatic, now
            pause.save()
            audit(AuditAction.PAUSED, actor=actor, site=site, message=reason, at=now)
        expired = 0
        # Rollbacks stay: a return to the last approved value is what a paused site needs most.
        for change_id in SetpointChange.objects.filter(
            setpoint__cooling_unit__site=site, state__in=(ChangeState.PENDING, ChangeState.APPROVED)
        ).exclude(origin=ChangeOrigin.ROLLBACK).values_list("pk", flat=True):
            change = _lock(change_id)
            if change.state in (ChangeState.PENDING, ChangeState.APPROVED):
                _transition(change, ChangeState.EXPIRED, now=now, reason=f"stale: {reason}")
                change.save()
                audit(AuditAction.EXPIRED, change=change, message=change.state_reason, at=now)
                expired += 1
    return expired


def resume_controllers(site: Site, reason: str, *, now: datetime | None = None, actor=None) -> bool:
    now = now or timezone.now()
    with transaction.atomic():
        pause = ControllerPause.objects.select_for_update().filter(site=site, paused=True).first()
        if pause is None:
            return False
        pause.paused, pause.reason, pause.since = False, reason, now
        pause.save()
        audit(AuditAction.RESUMED, actor=actor, site=site, message=reason, at=now)
    return True


def telemetry_watchdog(*, now: datetime | None = None) -> dict:
    """Pause the controllers of every site whose GPU telemetry went stale; resume those it paused once fresh."""
    from facility.models import GPU

    now = now or timezone.now()
    max_age = settings.CONTROL_TELEMETRY_MAX_AGE_SECONDS
    out = {}
    for site in Site.objects.filter(cooling_units__setpoints__isnull=False).distinct():
        gpu_ids = list(GPU.objects.filter(node__rack__hall__site=site).values_list("pk", flat=True))
        if not gpu_ids:
            continue
        latest = envelope.read_gpu_temperatures(site.pk, gpu_ids, now.timestamp() - max_age)
        fresh = len(latest) / len(gpu_ids) >= settings.CONTROL_MIN_REPORTING_FRACTION
        if not fresh:
            pause_controllers(site, f"telemetry stale: {len(latest)}/{len(gpu_ids)} GPUs reported within "
                                    f"{max_age} s", now=now)
            out[site.slug] = "paused"
        else:
            if ControllerPause.objects.filter(site=site, paused=True, automatic=True).exists():
                resume_controllers(site, "telemetry fresh again", now=now)
            out[site.slug] = "running"
    return out


# --- Proposing -----------------------------------------------------------------------------------------


def _refused(verdict: envelope.Verdict, setpoint: Setpoint, *, actor, actor_label: str | None, now: datetime):
    audit(AuditAction.REFUSED, actor=actor, actor_label=actor_label, setpoint=setpoint, message=verdict.message,
          data={"verdict": verdict.as_dict()}, at=now)
    if "stale_telemetry" in verdict.codes:
        pause_controllers(setpoint.cooling_unit.site, verdict.message, now=now)
    return EnvelopeRefused(verdict)


def _clean_json(value):
    """JSON (PostgreSQL jsonb) refuses NaN and infinity; keep them as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean_json(v) for v in value]
    return value


def propose(setpoint: Setpoint, value, *, user, unit: str | None = None, policy: str = "", rationale: str = "",
            predicted_effect: dict | None = None, forecast_hottest_gpu_c: float | None = None,
            now: datetime | None = None) -> SetpointChange:
    """A new Pending change (clipped into the envelope), or EnvelopeRefused. Autonomous points approve it."""
    now = now or timezone.now()
    if user is None or not user.has_perm("control.add_setpointchange"):
        raise _forbid("proposing a setpoint change needs the control.add_setpointchange permission")
    if policy and not user.has_perm("control.run_policy"):
        raise _forbid("running a policy needs the control.run_policy permission")
    setpoint = Setpoint.objects.select_related("cooling_unit__site").get(pk=setpoint.pk)
    site = setpoint.cooling_unit.site
    label = f"policy {policy} (run by {_label(user)})" if policy else None
    if policy and controllers_paused(site):
        pause = ControllerPause.objects.get(site=site)
        raise ControlError(f"the controllers of {site.slug} are paused: {pause.reason}", "controllers_paused")
    verdict = envelope.check(setpoint, value, unit, now=now, forecast_hottest_gpu_c=forecast_hottest_gpu_c)
    if verdict.refused:
        raise _refused(verdict, setpoint, actor=user, actor_label=label, now=now)
    if abs(verdict.value - setpoint.value) < 1e-9:
        raise ControlError(f"{setpoint} already holds {setpoint.value:g}" +
                           (f" (clipped: {verdict.message})" if verdict.reasons else ""), "no_change", 422,
                           [{"code": r.code, "message": r.message, "kind": r.kind} for r in verdict.reasons])
    with transaction.atomic():
        # One open change per point: a second would be judged against a value the first is about to move, and an
        # approver could not tell which one wins. Locked so two proposers cannot both pass this check.
        Setpoint.objects.select_for_update().filter(pk=setpoint.pk).first()
        other = open_changes_for(setpoint).order_by("pk").first()
        if other is not None:
            raise ControlError(f"{setpoint} already has an open change #{other.pk} ({other.get_state_display()}, to "
                               f"{other.to_value:g}): decide or cancel it first", "open_change", 409,
                               [{"code": "open_change", "message": f"change #{other.pk} is {other.state}",
                                 "kind": "refuse", "change": other.pk}])
        change = SetpointChange.objects.create(
            setpoint=setpoint, origin=ChangeOrigin.POLICY if policy else ChangeOrigin.OPERATOR,
            from_value=setpoint.value, to_value=verdict.value, requested_value=verdict.requested
            if verdict.requested is not None and math.isfinite(verdict.requested) else None,
            proposed_by=user, policy=policy, rationale=rationale,
            predicted_effect=_clean_json(predicted_effect or {}), telemetry_snapshot=verdict.context,
            envelope_verdict=verdict.as_dict(), created_at=now,
            expires_at=now + timedelta(seconds=settings.CONTROL_PROPOSAL_TTL_SECONDS),
        )
        audit(AuditAction.PROPOSED, actor=user, actor_label=label, change=change, message=rationale,
              data={"from": change.from_value, "to": change.to_value, "verdict": verdict.as_dict()}, at=now)
        if policy:
            _maybe_autonomous(change, now=now)
    return change


def _maybe_autonomous(change: SetpointChange, *, now: datetime) -> None:
    # Locked, so two policy runs proposing for one point at once cannot both take its last change of the day.
    setting = AutonomySetting.objects.select_for_update().filter(setpoint=change.setpoint, autonomous=True).first()
    if setting is None:
        return
    used = SetpointChange.objects.filter(setpoint=change.setpoint, autonomous=True,
                                         created_at__gte=now - timedelta(days=1)).count()
    if used >= setting.daily_change_budget:
        audit(AuditAction.AUTONOMY_BUDGET, actor_label="autonomous mode", change=change, at=now,
              message=f"daily budget of {setting.daily_change_budget} autonomous changes used up: "
                      "left Pending for an approver")
        return
    _transition(change, ChangeState.APPROVED, now=now)
    change.autonomous, change.decided_at, change.apply_after = True, now, now
    change.decision_comment = f"autonomous mode ({used + 1}/{setting.daily_change_budget} today)"
    change.save()
    audit(AuditAction.APPROVED, actor_label="autonomous mode", change=change, message=change.decision_comment,
          at=now, data={"approved": True})
    _enqueue_apply(change.pk)


def propose_from_policy(site: Site, proposal, *, policy: str, run_by, forecast_hottest_gpu_c=None,
                        now: datetime | None = None) -> SetpointChange:
    """A policy's `Proposal` (unit name, setpoint name, value, rationale, predicted effect) as a change."""
    try:
        setpoint = Setpoint.objects.get(cooling_unit__site=site, cooling_unit__name=proposal.unit,
                                        name=proposal.setpoint)
    except Setpoint.DoesNotExist:
        raise ControlError(f"{site.slug} has no setpoint {proposal.unit}.{proposal.setpoint}", "not_found",
                           404) from None
    rationale = proposal.rationale
    if getattr(proposal, "clipped", None):
        rationale += f" (policy clipped its request {proposal.requested:g}: {', '.join(proposal.clipped)})"
    if forecast_hottest_gpu_c is None:  # the policy's own prediction of the hottest GPU, where it makes one
        forecast_hottest_gpu_c = _predicted_hottest(proposal.predicted_effect)
    return propose(setpoint, proposal.value, user=run_by, policy=policy, rationale=rationale,
                   predicted_effect=proposal.predicted_effect, forecast_hottest_gpu_c=forecast_hottest_gpu_c,
                   now=now)


# --- Deciding ------------------------------------------------------------------------------------------


def _decide(change_id: int, user, comment: str, state: str, *, now: datetime | None) -> SetpointChange:
    now = now or timezone.now()
    verb = "approve" if state == ChangeState.APPROVED else "deny"
    if user is None or not user.has_perm("control.approve_setpointchange"):
        raise _forbid(f"to {verb} a setpoint change needs the control.approve_setpointchange permission")
    with transaction.atomic():
        change = _lock(change_id)
        if change.proposed_by_id is not None and change.proposed_by_id == user.pk:
            raise ControlError(f"two-person rule: {user.get_username()} proposed change #{change.pk} (or ran the "
                               f"policy that did) and cannot {verb} it", "two_person_rule", 403)
        if change.state == ChangeState.PENDING and change.expires_at <= now:
            _transition(change, ChangeState.EXPIRED, now=now, reason="not decided before it expired")
            change.save()
            audit(AuditAction.EXPIRED, change=change, message=change.state_reason, at=now)
        else:
            _transition(change, state, now=now)
            change.decided_by, change.decided_at, change.decision_comment = user, now, comment
            if state == ChangeState.APPROVED:
                change.apply_after = now
            change.save()
            audit(AuditAction.APPROVED if state == ChangeState.APPROVED else AuditAction.DENIED, actor=user,
                  change=change, message=comment, at=now)
            if state == ChangeState.APPROVED:
                _enqueue_apply(change.pk)
            return change
    raise ControlError(f"change #{change_id} expired at {change.expires_at:%Y-%m-%d %H:%M:%S} before it was "
                       "decided", "expired")


def approve(change_id: int, user, comment: str = "", *, now: datetime | None = None) -> SetpointChange:
    return _decide(change_id, user, comment, ChangeState.APPROVED, now=now)


def deny(change_id: int, user, comment: str = "", *, now: datetime | None = None) -> SetpointChange:
    return _decide(change_id, user, comment, ChangeState.DENIED, now=now)


def cancel(change_id: int, user, comment: str = "", *, now: datetime | None = None) -> SetpointChange:
    """Withdraw a Pending or Approved (not yet applying) change: its proposer, or an approver."""
    now = now or timezone.now()
    with transaction.atomic():
        change = _lock(change_id)
        own = user is not None and change.proposed_by_id == user.pk and user.has_perm("control.add_setpointchange")
        if not own and (user is None or not user.has_perm("control.approve_setpointchange")):
            raise _forbid("only the proposer or an approver may cancel a setpoint change")
        _transition(change, ChangeState.CANCELED, now=now, reason=comment)
        change.decided_by, change.decided_at, change.decision_comment = user, now, comment
        change.save()
        audit(AuditAction.CANCELED, actor=user, change=change, message=comment, at=now)
    return change


def set_autonomy(setpoint: Setpoint, user, *, autonomous: bool, daily_change_budget: int | None = None,
                 now: datetime | None = None) -> AutonomySetting:
    """Admins only: let policy proposals for this point apply without a human approval (still enveloped)."""
    if user is None or not user.has_perm("control.change_autonomysetting"):
        raise _forbid("autonomous mode needs the control.change_autonomysetting permission (admin)")
    with transaction.atomic():
        setting, _ = AutonomySetting.objects.select_for_update().get_or_create(setpoint=setpoint)
        before = {"autonomous": setting.autonomous, "daily_change_budget": setting.daily_change_budget}
        setting.autonomous = autonomous
        if daily_change_budget is not None:
            setting.daily_change_budget = daily_change_budget
        setting.updated_by = user
        setting.save()
        audit(AuditAction.AUTONOMY_CHANGED, actor=user, setpoint=setpoint, at=now,
              data={"before": before, "after": {"autonomous": setting.autonomous,
                                                "daily_change_budget": setting.daily_change_budget}})
    return setting


# --- Applying ------------------------------------------------------------------------------------------


def apply_change(change_id: int, *, actuator: Actuator | None = None, now: datetime | None = None) -> dict:
    """The body of the `control` queue's apply task. Safe to run any number of times for one change."""
    clock = (lambda: now) if now is not None else timezone.now
    with transaction.atomic():
        change = _lock(change_id)
        if change.state != ChangeState.APPROVED:
            return {"change": change_id, "status": "skipped", "state": change.state}
        # One claim per site at a time: the coil interlock couples points of different units (a CRAH's supply
        # air, its chiller's water), so each claim must see the other's Applying target (envelope._coil_bounds).
        site_id = Setpoint.objects.filter(pk=change.setpoint_id).values_list("cooling_unit__site_id", flat=True).get()
        Site.objects.select_for_update().only("pk").get(pk=site_id)
        setpoint = Setpoint.objects.select_for_update(of=("self",)).select_related("cooling_unit__site").get(
            pk=change.setpoint_id)
        at = clock()
        limit = (change.decided_at or at) + timedelta(seconds=settings.CONTROL_APPLY_MAX_WAIT_SECONDS)
        if at > limit:  # e.g. the broker was down for hours: a decision that old is not acted on
            return _fail(change, f"approved at {change.decided_at:%Y-%m-%d %H:%M:%S}, too long ago to apply "
                                 f"(limit {settings.CONTROL_APPLY_MAX_WAIT_SECONDS} s)", now=at)
        if SetpointChange.objects.filter(setpoint=setpoint, state=ChangeState.APPLYING).exclude(pk=change.pk).exists():
            return _wait(change, 5, "another change of this point is being applied", now=at)
        actuator = actuator or for_setpoint(setpoint)
        # Read before write, under the locks: the envelope judges step and direction from what the plant holds
        # now (a failed read-back or a local override leaves the stored value behind), and the watch and a
        # rollback start from it.
        try:
            held = float(actuator.read(setpoint))
        except Exception as exc:  # ActuatorError, or an actuator bug: nothing has been written
            return _fail(change, f"could not read {setpoint} from the plant before writing: {exc}", now=at)
        drift = {}
        if math.isfinite(held) and abs(held - setpoint.value) > actuator.tolerance(setpoint):
            drift["stored_value"] = setpoint.value
            Setpoint.objects.filter(pk=setpoint.pk).update(value=held, updated_at=at)
            setpoint.value = held
        if math.isfinite(held) and abs(held - change.from_value) > actuator.tolerance(setpoint):
            drift["from_value_proposed"], change.from_value = change.from_value, held
        rollback_mode = change.origin == ChangeOrigin.ROLLBACK
        verdict = envelope.check(setpoint, change.to_value, now=at, at_apply=True, rollback=rollback_mode,
                                 forecast_hottest_gpu_c=None if rollback_mode else
                                 _predicted_hottest(change.predicted_effect))
        if verdict.refused and verdict.wait_seconds and all(r.kind == "wait" for r in verdict.reasons):
            if drift:
                change.save(update_fields=["from_value", "updated_at"])
            return _wait(change, verdict.wait_seconds, verdict.message, now=at)
        if not verdict.allowed or abs(verdict.value - change.to_value) > 1e-9:
            change.envelope_verdict = verdict.as_dict()
            if "stale_telemetry" in verdict.codes:
                transaction.on_commit(lambda: pause_controllers(setpoint.cooling_unit.site, verdict.message))
            return _fail(change, f"envelope at application: {verdict.message}", now=at,
                         data={"verdict": verdict.as_dict(), **drift})
        _transition(change, ChangeState.APPLYING, now=at)
        change.written_at, change.envelope_verdict = at, verdict.as_dict()
        change.save()
        audit(AuditAction.APPLYING, change=change, at=at,
              data={"from": change.from_value, "to": change.to_value, "verdict": verdict.as_dict(), **drift})
    # The Applying state is committed: our claim. Only now write to the plant, outside any lock.
    try:
        result = actuator.apply(setpoint, change.to_value)
    except ActuatorError as exc:
        result = ApplyResult(False, None, str(exc))
    except Exception as exc:  # an actuator bug must still end the change, never leave it Applying
        log.exception("actuator %s failed on change %s", actuator.name, change_id)
        result = ApplyResult(False, None, f"{type(exc).__name__}: {exc}")
    return _finish(change_id, result, actuator=actuator, now=clock())


def _fail(change: SetpointChange, reason: str, *, now: datetime, data: dict | None = None) -> dict:
    """End an Approved change as Failed without touching the plant (the caller holds its row lock)."""
    _transition(change, ChangeState.FAILED, now=now, reason=reason)
    change.finished_at = now
    change.save()
    audit(AuditAction.FAILED, change=change, message=reason, at=now, data=data)
    return {"change": change.pk, "status": "failed", "reason": reason}


def _wait(change: SetpointChange, seconds: float, why: str, *, now: datetime) -> dict:
    limit = (change.decided_at or now) + timedelta(seconds=settings.CONTROL_APPLY_MAX_WAIT_SECONDS)
    ready = now + timedelta(seconds=seconds)
    if ready > limit:
        return _fail(change, f"cannot be applied before {limit:%H:%M:%S}: {why}", now=now)
    change.apply_after = ready
    change.save(update_fields=["apply_after", "updated_at"])
    _enqueue_apply(change.pk, countdown=seconds)
    return {"change": change.pk, "status": "waiting", "seconds": seconds, "reason": why}


def _finish(change_id: int, result: ApplyResult, *, actuator: Actuator, now: datetime) -> dict:
    with transaction.atomic():
        change = _lock(change_id)
        if change.state != ChangeState.APPLYING:
            return {"change": change_id, "status": "skipped", "state": change.state}
        if result.readback is not None:
            Setpoint.objects.filter(pk=change.setpoint_id).update(value=result.readback, updated_at=now)
        change.readback_value, change.finished_at = result.readback, now
        data = {"to": change.to_value, "readback": result.readback, "actuator": actuator.name}
        if result.ok:
            _transition(change, ChangeState.APPLIED, now=now)
            change.watch_until = now + timedelta(seconds=settings.CONTROL_WATCH_SECONDS)
            change.save()
            audit(AuditAction.APPLIED, change=change, at=now, data=data,
                  message=f"{change.from_value:g} → {result.readback:g} via {actuator.name}")
            if change.rollback_of_id:
                original = _lock(change.rollback_of_id)
                if original.state == ChangeState.APPLIED:
                    _transition(original, ChangeState.ROLLED_BACK, now=now,
                                reason=f"rolled back by change #{change.pk}: {change.rationale}")
                    original.save()
                    audit(AuditAction.ROLLED_BACK, change=original, at=now, message=original.state_reason)
            return {"change": change_id, "status": "applied", "readback": result.readback}
        _transition(change, ChangeState.FAILED, now=now, reason=result.reason)
        change.save()
        audit(AuditAction.FAILED, change=change, at=now, message=result.reason, data=data)
        return {"change": change_id, "status": "failed", "reason": result.reason}


# --- Sweeps (beat) ---------------------------------------------------------------------------------------


def expire_changes(*, now: datetime | None = None, actuator: Actuator | None = None) -> dict:
    """Expire undecided changes; re-send approved ones whose wait is over; reconcile ones stuck Applying."""
    now = now or timezone.now()
    out = {"expired": 0, "resent": 0, "reconciled": 0}
    for change_id in SetpointChange.objects.filter(state=ChangeState.PENDING, expires_at__lte=now).values_list(
            "pk", flat=True):
        with transaction.atomic():
            change = _lock(change_id)
            if change.state == ChangeState.PENDING and change.expires_at <= now:
                _transition(change, ChangeState.EXPIRED, now=now, reason="not decided before it expired")
                change.save()
                audit(AuditAction.EXPIRED, change=change, message=change.state_reason, at=now)
                out["expired"] += 1
    grace = now - timedelta(seconds=30)
    for change_id in SetpointChange.objects.filter(state=ChangeState.APPROVED, apply_after__lte=grace).values_list(
            "pk", flat=True):
        transaction.on_commit(lambda cid=change_id: _send_apply(cid))
        out["resent"] += 1
    stuck = now - timedelta(seconds=settings.CONTROL_APPLYING_STALE_SECONDS)
    for change in SetpointChange.objects.filter(state=ChangeState.APPLYING, written_at__lte=stuck).select_related(
            "setpoint__cooling_unit__site"):
        act = actuator or for_setpoint(change.setpoint)
        try:
            readback = act.read(change.setpoint)
            ok = abs(readback - change.to_value) <= act.tolerance(change.setpoint)
            result = ApplyResult(ok, readback, "" if ok else
                                 f"interrupted while applying; the plant reads back {readback:g}")
        except Exception as exc:  # the plant or its link is down (or an actuator bug): end it, go on to the next
            result = ApplyResult(False, None, f"interrupted while applying; read-back failed: {exc}")
        _finish(change.pk, result, actuator=act, now=now)
        out["reconciled"] += 1
    return out


def _send_apply(change_id: int) -> None:
    from control.tasks import apply_setpoint_change

    apply_setpoint_change.delay(change_id)


def rollback(change: SetpointChange, reason: str, *, now: datetime | None = None) -> SetpointChange | None:
    """Return a change's point to the value before it (no approval needed); None if the envelope refuses."""
    now = now or timezone.now()
    setpoint = Setpoint.objects.select_related("cooling_unit__site").get(pk=change.setpoint_id)
    verdict = envelope.check(setpoint, change.from_value, now=now, rollback=True)
    if not verdict.allowed:
        audit(AuditAction.REFUSED, setpoint=setpoint, change=change, at=now,
              message=f"rollback of #{change.pk} refused: {verdict.message}", data={"verdict": verdict.as_dict()})
        return None
    with transaction.atomic():
        back = SetpointChange.objects.create(
            setpoint=setpoint, origin=ChangeOrigin.ROLLBACK, rollback_of=change, state=ChangeState.APPROVED,
            from_value=setpoint.value, to_value=change.from_value, rationale=reason,
            telemetry_snapshot=verdict.context, envelope_verdict=verdict.as_dict(), created_at=now,
            decided_at=now, apply_after=now, decision_comment="automatic rollback to the last approved value",
            expires_at=now + timedelta(seconds=settings.CONTROL_PROPOSAL_TTL_SECONDS),
        )
        audit(AuditAction.ROLLBACK, change=back, at=now, message=reason,
              data={"rollback_of": change.pk, "to": back.to_value, "verdict": verdict.as_dict()})
        # A proposal still waiting on this point would undo the rollback once approved: it is withdrawn.
        for waiting in (SetpointChange.objects.select_for_update().filter(
                setpoint=setpoint, state__in=(ChangeState.PENDING, ChangeState.APPROVED)).exclude(pk=back.pk)):
            _transition(waiting, ChangeState.CANCELED, now=now, reason=f"superseded by rollback #{back.pk}")
            waiting.decided_at = now
            waiting.save()
            audit(AuditAction.CANCELED, actor_label="rollback", change=waiting, at=now, message=waiting.state_reason)
        _enqueue_apply(back.pk)
    return back


# Keys of a predicted effect that forecast the hottest GPU: the API's, and the MPC's and LLM's (over their
# horizon). A baseline's `gpu_temperature_max_c` is the reading it acted on, not a forecast.
PREDICTED_HOTTEST_KEYS = ("hottest_gpu_c", "max_gpu_temperature_c")


def _predicted_hottest(effect: dict) -> float | None:
    for key in PREDICTED_HOTTEST_KEYS:
        value = envelope._as_float(effect.get(key)) if isinstance(effect, dict) else None
        if value is not None and math.isfinite(value):
            return value
    return None


def watch_changes(*, now: datetime | None = None) -> dict:
    """Compare each recently applied change's measured effect with its prediction; roll back on a breach."""
    now = now or timezone.now()
    limit_c = settings.CONTROL_THERMAL_LIMIT_C
    max_age = settings.CONTROL_TELEMETRY_MAX_AGE_SECONDS
    out = {"watched": 0, "breaches": 0, "rollbacks": 0, "done": 0}
    # Watched: each applied change until its window ends; and within it, a breach whose rollback the envelope
    # refused or that failed or expired, so the rollback is tried again while the breach lasts.
    no_rollback_under_way = ~Q(rollbacks__state__in=(*OPEN_STATES, ChangeState.APPLIED))
    watched = SetpointChange.objects.filter(state=ChangeState.APPLIED, watch_until__isnull=False).filter(
        Q(watch_outcome="") | (Q(watch_outcome="breach", watch_until__gte=now) & no_rollback_under_way))
    for change in watched.distinct().select_related("setpoint__cooling_unit"):
        unit = change.setpoint.cooling_unit
        latest = envelope.read_gpu_temperatures(unit.site_id, envelope.fed_gpu_ids(unit), now.timestamp() - max_age)
        temps = [t for _, t in latest.values() if t is not None and math.isfinite(t)]
        hottest = max(temps) if temps else None
        before = envelope._as_float(change.telemetry_snapshot.get("hottest_gpu_c"))
        predicted = _predicted_hottest(change.predicted_effect)
        measured = {
            "checked_at": now.isoformat(), "hottest_gpu_c": hottest, "hottest_gpu_c_before": before,
            "change_k": None if hottest is None or before is None else round(hottest - before, 3),
            "predicted_hottest_gpu_c": predicted,
            "deviation_k": None if hottest is None or predicted is None else round(hottest - predicted, 3),
            "gpus_at_limit": sum(t >= limit_c for t in temps), "thermal_limit_c": limit_c,
        }
        out["watched"] += 1
        breached = hottest is not None and hottest >= limit_c
        # Only a change that took cooling away is undone; undoing a rollback or added cooling makes it worse.
        moved = change.to_value - change.from_value
        direction = envelope.cooling_direction(change.setpoint)
        undo = (change.origin != ChangeOrigin.ROLLBACK and direction != 0
                and (moved > 0) == (direction > 0) and abs(moved) > 1e-9)
        if change.watch_outcome == "breach":  # an earlier breach with no rollback under way
            if breached and undo and rollback(change, f"thermal limit still breached after change #{change.pk}: "
                                                      f"GPU at {hottest:.1f} °C (rollback retried)", now=now):
                out["rollbacks"] += 1
            continue
        if breached:
            with transaction.atomic():
                locked = _lock(change.pk)
                if locked.state != ChangeState.APPLIED or locked.watch_outcome:
                    continue
                locked.measured_effect, locked.watch_outcome = measured, "breach"
                locked.save(update_fields=["measured_effect", "watch_outcome", "updated_at"])
                audit(AuditAction.WATCH, change=locked, at=now, data=measured,
                      message=f"thermal limit breached: a GPU at {hottest:.1f} °C ≥ {limit_c:g} °C; "
                              + ("rolling back" if undo else "the change did not reduce cooling: not rolled back"))
            out["breaches"] += 1
            if undo and rollback(locked, f"thermal limit breached after change #{change.pk}: GPU at "
                                         f"{hottest:.1f} °C", now=now) is not None:
                out["rollbacks"] += 1
            continue
        done = now >= change.watch_until
        fields = {"measured_effect": measured}
        if done:
            fields["watch_outcome"] = "ok" if hottest is not None else "no_data"
            measured["kpis"] = _kpis_around(change, now)
        SetpointChange.objects.filter(pk=change.pk, state=ChangeState.APPLIED, watch_outcome="").update(
            updated_at=now, **fields)
        if done:
            audit(AuditAction.WATCH, change=change, at=now, data=measured,
                  message=f"watch window over: {fields['watch_outcome']}")
            out["done"] += 1
    return out


def _kpis_around(change: SetpointChange, now: datetime) -> dict:
    """Facility KPIs averaged over the watch window after the change and as long a window before it."""
    from telemetry.views import kpi_means

    site, applied = change.setpoint.cooling_unit.site, change.finished_at.timestamp()
    span = max(now.timestamp() - applied, 60.0)
    return {"before": kpi_means(site, applied - span, applied), "after": kpi_means(site, applied, applied + span),
            "window_s": round(span)}


def open_changes_for(setpoint: Setpoint):
    return SetpointChange.objects.filter(setpoint=setpoint, state__in=OPEN_STATES)
