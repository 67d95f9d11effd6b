"""Policies on a schedule: the live `State` of a site, and the runner behind `control.tasks.run_policies`.

    state = state_from_database(site)          # the live counterpart of facility.twin.state.state_from_twin
    run = start_run(site, "trim_respond", user=operator, interval_seconds=60)
    run_due_policies()                          # what the beat task does: every due, enabled, unpaused run
    stop_run(run.pk, user=operator)

`state_from_database` reads the latest telemetry (no older than CONTROL_TELEMETRY_MAX_AGE_SECONDS) and
the setpoints: per hall the hottest and mean GPU, throttling counts from the DCGM clocks-event bits
(telemetry.derived), GPU power as IT power (site meters give only totals), TFLOPS and the CRAHs' supply
air as server inlet; per setpoint its stored value as the command, its telemetry read-back where one is
reported (else the command) and the time since it was last written; outdoor dry/wet bulb and the facility
KPIs. A hall whose GPUs did not report counts zero GPUs, which every policy reads as "leave it alone".

A run (`PolicyRun`) is claimed under a row lock (two beat ticks or two workers never run it twice), then
the policy proposes and every `Proposal` goes through `control.changes.propose_from_policy` as its
starter: the envelope clips or refuses it and it waits for another user's approval (or the point's
autonomous mode). A point that already has an open change is skipped, so a waiting approval is not
buried under a new proposal every minute. Policy objects are kept per run in the worker process, so
stateful policies (PID integrators, trim & respond targets) carry on between ticks.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime, timedelta

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from control import changes
from control.models import OPEN_STATES, PolicyRun, SetpointChange
from facility.models import GPU, Hall, Setpoint, Site
from facility.twin.state import SLOWDOWN_C, Envelope, HallState, PolicyContext, SetpointState, State

log = logging.getLogger(__name__)

__all__ = ["envelopes_for_site", "run_due_policies", "run_policy", "start_run", "state_from_database", "stop_run"]

_GPU_COLUMNS = ("gpu_temp", "power_usage", "tflops", "clocks_event_reasons")
_OUTDOOR = ("outdoor_dry_bulb_temperature_celsius", "outdoor_wet_bulb_temperature_celsius")


def envelopes_for_site(site: Site) -> tuple[dict, list[Setpoint]]:
    """Every setpoint of the site as an `Envelope` keyed (unit name, setpoint name), and the rows."""
    rows = list(Setpoint.objects.filter(cooling_unit__site=site).select_related("cooling_unit__hall"))
    out = {}
    for sp in rows:
        u = sp.cooling_unit
        out[(u.name, sp.name)] = Envelope(
            u.name, sp.name, u.kind, u.hall.name if u.hall_id else None, float(sp.allowable_min),
            float(sp.allowable_max), None if sp.max_step is None else float(sp.max_step),
            None if sp.max_rate_per_minute is None else float(sp.max_rate_per_minute),
            None if sp.min_dwell_seconds is None else float(sp.min_dwell_seconds))
    return out, rows


def state_from_database(site: Site, *, now: datetime | None = None) -> State:
    """The `State` a policy sees for `site` now, from stored telemetry and setpoints (module docstring)."""
    from django.db.models import Max

    from facility.twin.twin import DEFAULT_FAN_DUTY
    from telemetry.derived import THERMAL_REASONS, THROTTLE_REASONS, facility_kpis
    from telemetry.query import latest_gpu_values, latest_point_values
    from telemetry.schema import METRIC_OF_COLUMN

    now = now or timezone.now()
    since = now.timestamp() - float(settings.CONTROL_TELEMETRY_MAX_AGE_SECONDS)
    envelopes, rows = envelopes_for_site(site)
    written = dict(SetpointChange.objects.filter(setpoint__in=rows, written_at__isnull=False)
                   .values("setpoint").annotate(at=Max("written_at")).values_list("setpoint", "at"))
    points = latest_point_values(site.pk, None, since)
    by_unit = {(p["cooling_unit"], p["metric"]): p["value"] for p in points if p["cooling_unit"]}
    site_points = {p["metric"]: p["value"] for p in points if not p["cooling_unit"]}

    setpoints = {}
    for sp in rows:
        key = (sp.cooling_unit.name, sp.name)
        readback = by_unit.get((sp.cooling_unit.name, f"{sp.name}_{sp.unit}"))
        at = written.get(sp.pk)
        setpoints[key] = SetpointState(envelopes[key], float(sp.value),
                                       float(readback) if readback is not None else float(sp.value),
                                       (now - at).total_seconds() if at else math.inf)

    metrics = [METRIC_OF_COLUMN[c] for c in _GPU_COLUMNS]
    latest = latest_gpu_values(site.pk, metrics, since)
    gpu = {c: np.asarray(latest[METRIC_OF_COLUMN[c]], dtype=float) for c in _GPU_COLUMNS}
    hall_of_uuid = dict(GPU.objects.filter(node__rack__hall__site=site).values_list("uuid", "node__rack__hall__name"))
    hall_of = np.array([hall_of_uuid.get(u) for u in latest["uuid"]], dtype=object)
    halls = {}
    for hall in Hall.objects.filter(site=site).prefetch_related("cooling_units").order_by("name"):
        m = hall_of == hall.name
        temps = gpu["gpu_temp"][m]
        temps = temps[np.isfinite(temps)]
        reasons = gpu["clocks_event_reasons"][m]
        reasons = reasons[np.isfinite(reasons)].astype(np.int64)
        inlet = [by_unit.get((u.name, "supply_air_temperature_celsius")) for u in hall.cooling_units.all()
                 if u.kind == "crah"]
        inlet = [v for v in inlet if v is not None]
        fans = [by_unit.get((u.name, "fan_speed_ratio")) for u in hall.cooling_units.all() if u.kind == "server_fans"]
        fans = [v for v in fans if v is not None]
        tmax = float(temps.max()) if temps.size else math.nan
        halls[hall.name] = HallState(
            hall.name, hall.cooling_type, tmax, float(temps.mean()) if temps.size else math.nan,
            SLOWDOWN_C - tmax if temps.size else math.inf, int(np.count_nonzero(reasons & THROTTLE_REASONS)),
            int(np.count_nonzero(reasons & THERMAL_REASONS)), int(temps.size),
            float(np.nansum(gpu["power_usage"][m])) / 1000, float(np.nansum(gpu["tflops"][m])),
            float(np.mean(inlet)) if inlet else math.nan, float(np.mean(fans)) if fans else DEFAULT_FAN_DUTY)
    facility = facility_kpis(gpu, points)
    return State(now, now.timestamp(), float(site_points.get(_OUTDOOR[0], math.nan)),
                 float(site_points.get(_OUTDOOR[1], math.nan)), setpoints, halls, facility)


# --- Starting and stopping runs -------------------------------------------------------------------------


def _check_permission(user, verb: str) -> None:
    if user is None or not user.has_perm("control.run_policy"):
        raise changes.ControlError(f"to {verb} a policy run needs the control.run_policy permission",
                                   "permission_denied", 403)


MAX_INTERVAL_S = 86_400

# Policy keywords a scheduled run may not set: they name a file on the server or an object the server builds
# (an RL checkpoint outside the stored, checksummed model versions; the LLM backend; the MPC's predictor).
SERVER_ONLY_PARAMS = {
    "checkpoint": "name a stored model_version instead (a checkpoint file is for the command line)",
    "backend": "the LLM backend comes from the server's settings (LLM_BASE_URL, LLM_MODEL)",
    "predictor": "the predictor is chosen by the server",
}


def _instantiate(name: str, params: dict):
    from control import policies
    from control.policies.rl import PolicyUnavailable

    if name not in policies.names():
        raise changes.ControlError(f"no policy {name!r}; registered: {', '.join(policies.names())}", "invalid", 400)
    refused = sorted(set(params or {}) & set(SERVER_ONLY_PARAMS))
    if refused:
        key = refused[0]
        raise changes.ControlError(f"params.{key} cannot be set for a run: {SERVER_ONLY_PARAMS[key]}", "invalid", 400)
    try:
        policy = policies.create(name, **(params or {}))
    except (TypeError, ValueError) as exc:  # unknown keyword, wrong type, or a value the policy refuses
        raise changes.ControlError(f"bad parameters for {name}: {exc}", "invalid", 400) from None
    if hasattr(policy, "_load"):
        try:
            policy._load()
        except PolicyUnavailable as exc:
            raise changes.ControlError(f"{name} cannot run: {exc}", "policy_unavailable", 422) from None
    return policy


def check_request(policy: str, params: dict, interval_seconds: int) -> None:
    """What every way of starting a run checks before it is stored (API, admin): ControlError if refused."""
    if not 10 <= interval_seconds <= MAX_INTERVAL_S:
        raise changes.ControlError(f"interval_seconds must be 10 to {MAX_INTERVAL_S} (a day)", "invalid", 400)
    _instantiate(policy, params)


def start_run(site: Site, policy: str, *, user, interval_seconds: int = 60, params: dict | None = None,
              now: datetime | None = None) -> PolicyRun:
    """Start running `policy` on `site` every `interval_seconds`, proposing as `user`."""
    _check_permission(user, "start")
    check_request(policy, params or {}, interval_seconds)
    with transaction.atomic():
        if PolicyRun.objects.select_for_update().filter(site=site, policy=policy, enabled=True).exists():
            raise changes.ControlError(f"{policy} is already running on {site.slug}", "already_running", 409)
        return PolicyRun.objects.create(site=site, policy=policy, params=params or {}, started_by=user,
                                        started_at=now or timezone.now(), interval_seconds=interval_seconds)


def stop_run(run_id: int, *, user, now: datetime | None = None) -> PolicyRun:
    _check_permission(user, "stop")
    with transaction.atomic():
        run = PolicyRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None:
            raise changes.ControlError(f"no policy run #{run_id}", "not_found", 404)
        if not run.enabled:
            raise changes.ControlError(f"policy run #{run_id} is already stopped", "invalid_state", 409)
        run.enabled, run.stopped_by, run.stopped_at = False, user, now or timezone.now()
        run.last_outcome, run.last_message = "stopped", f"stopped by {user.get_username()}"
        run.save()
    _INSTANCES.pop(run_id, None)
    return run


# --- Running ------------------------------------------------------------------------------------------

# Policy objects per run, in this worker process: (fingerprint, policy).
_INSTANCES: dict[int, tuple[str, object]] = {}


def _policy_for(run: PolicyRun, envelopes: dict, hall_types: dict):
    # A new policy object when the run, its parameters or any envelope changed.
    fingerprint = json.dumps([run.policy, run.params, run.started_at.isoformat(),
                              sorted(repr(e) for e in envelopes.values())], sort_keys=True, default=str)
    cached = _INSTANCES.get(run.pk)
    if cached is not None and cached[0] == fingerprint:
        return cached[1]
    policy = _instantiate(run.policy, run.params)
    policy.reset(PolicyContext(envelopes, hall_types, float(run.interval_seconds), run.pk))
    _INSTANCES[run.pk] = (fingerprint, policy)
    return policy


def _finish(run: PolicyRun, outcome: str, message: str, filed: int = 0, **fields) -> dict:
    PolicyRun.objects.filter(pk=run.pk).update(last_outcome=outcome, last_message=message[:2000],
                                               proposals_filed=run.proposals_filed + filed, **fields)
    return {"run": run.pk, "policy": run.policy, "site": run.site.slug, "outcome": outcome, "filed": filed,
            "message": message}


def run_policy(run: PolicyRun, *, now: datetime | None = None) -> dict:
    """One decision of a claimed run: live state -> proposals -> Pending changes. Returns what happened."""
    from control.policies.rl import PolicyUnavailable
    from control.rl.features import FeatureMismatch

    now = now or timezone.now()
    site = run.site
    if changes.controllers_paused(site):
        return _finish(run, "paused", "the site's controllers are paused")
    try:
        state = state_from_database(site, now=now)
        hall_types = {h.name: h.cooling_type for h in state.halls.values()}
        policy = _policy_for(run, {k: s.envelope for k, s in state.setpoints.items()}, hall_types)
        proposals = policy.propose(state)
    except (PolicyUnavailable, FeatureMismatch, changes.ControlError) as exc:
        return _finish(run, "error", str(getattr(exc, "message", exc)))
    except Exception as exc:  # a policy bug must not stop the other runs
        log.exception("policy run #%s (%s on %s) failed", run.pk, run.policy, site.slug)
        return _finish(run, "error", f"{type(exc).__name__}: {exc}")
    open_points = set(SetpointChange.objects.filter(setpoint__cooling_unit__site=site, state__in=OPEN_STATES)
                      .values_list("setpoint__cooling_unit__name", "setpoint__name"))
    filed, skipped, refused = [], [], []
    for p in proposals:
        if p.key in open_points:
            skipped.append(f"{p.unit}.{p.setpoint}")
            continue
        try:
            change = changes.propose_from_policy(site, p, policy=run.policy, run_by=run.started_by, now=now)
        except changes.ControlError as exc:
            if exc.code == "permission_denied":  # the starter lost the right to run policies
                PolicyRun.objects.filter(pk=run.pk).update(enabled=False, stopped_at=now)
                return _finish(run, "stopped", f"stopped: {exc.message}", len(filed))
            if exc.code == "controllers_paused":
                return _finish(run, "paused", exc.message, len(filed))
            refused.append(f"{p.unit}.{p.setpoint}: {exc.code}")
            continue
        filed.append(change.pk)
        open_points.add(p.key)
    parts = [f"{len(proposals)} proposal(s)", f"filed {len(filed)}" + (f" (#{', #'.join(map(str, filed))})"
                                                                    if filed else "")]
    if skipped:
        parts.append(f"skipped {len(skipped)} with an open change ({', '.join(skipped)})")
    if refused:
        parts.append(f"refused {len(refused)} ({'; '.join(refused)})")
    outcome = "proposed" if filed else "refused" if refused else "nothing"
    return _finish(run, outcome, "; ".join(parts), len(filed))


def _due(run: PolicyRun, now: datetime) -> bool:
    # One second of slack: a beat tick a hair early must not skip a whole interval.
    return run.last_run_at is None or now - run.last_run_at >= timedelta(seconds=run.interval_seconds - 1)


def run_due_policies(*, now: datetime | None = None) -> dict:
    """Every enabled run whose interval has passed, each claimed under a row lock first."""
    now = now or timezone.now()
    out = {"ran": 0, "results": []}
    for run_id in PolicyRun.objects.filter(enabled=True).values_list("pk", flat=True):
        with transaction.atomic():
            run = (PolicyRun.objects.select_for_update(skip_locked=True).select_related("site", "started_by")
                   .filter(pk=run_id, enabled=True).first())
            if run is None or not _due(run, now):
                continue
            run.last_run_at = now
            run.runs += 1
            run.save(update_fields=["last_run_at", "runs"])
        out["ran"] += 1
        out["results"].append(run_policy(run, now=now))
    return out
