"""The setpoint-change state machine: two-person rule, expiry, apply (idempotent), rollback, audit, autonomy."""

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from control import changes, envelope
from control.actuators import ActuatorError
from control.models import AuditAction, AuditEntry, ChangeState, ControllerPause, SetpointChange
from control.tests.factories import RecordingActuator, build_plant, make_user, write_gpu_temps

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 6, 1, 12, tzinfo=UTC)
_n = itertools.count()


@pytest.fixture
def plant():
    return build_plant(f"c{next(_n)}")


@pytest.fixture
def people():
    return {role: make_user(f"{role}-{next(_n)}", role) for role in ("viewer", "operator", "approver", "admin")}


@pytest.fixture
def gpus(monkeypatch):
    """Fresh GPU telemetry at a settable temperature (`gpus["temp"]`, `gpus["age"]` seconds old)."""
    from django.conf import settings

    state = {"temp": 60.0, "age": 5.0}

    def read(site_id, gpu_ids, since):
        at = since + settings.CONTROL_TELEMETRY_MAX_AGE_SECONDS - state["age"]  # `age` before the caller's now
        return {g: (at, state["temp"]) for g in gpu_ids if at >= since}

    monkeypatch.setattr(envelope, "read_gpu_temperatures", read)
    return state


def _approved(plant, people, value=18.5, now=T0):
    change = changes.propose(plant.crah_sat, value, user=people["operator"], rationale="save fan energy", now=now)
    return changes.approve(change.pk, people["approver"], "ok", now=now)


def test_propose_clips_and_records(plant, people, gpus, django_capture_on_commit_callbacks):
    change = changes.propose(plant.crah_sat, 30, user=people["operator"], rationale="warmer", now=T0,
                             predicted_effect={"cooling_kw": -4.2, "hottest_gpu_c": 71})
    assert change.state == ChangeState.PENDING and change.to_value == 19.0 and change.requested_value == 30
    assert {r["code"] for r in change.envelope_verdict["reasons"]} == {"allowable_max", "max_step"}
    assert change.telemetry_snapshot["hottest_gpu_c"] == 60.0
    assert change.expires_at == T0 + timedelta(hours=1)
    assert AuditEntry.objects.filter(change=change, action=AuditAction.PROPOSED).count() == 1


def test_viewer_and_approver_cannot_propose(plant, people, gpus):
    for role in ("viewer", "approver"):
        with pytest.raises(changes.ControlError) as exc:
            changes.propose(plant.crah_sat, 18.5, user=people[role], now=T0)
        assert exc.value.status == 403


def test_two_person_rule(plant, people, gpus, django_capture_on_commit_callbacks):
    change = changes.propose(plant.crah_sat, 18.5, user=people["admin"], now=T0)
    with pytest.raises(changes.ControlError) as exc:
        changes.approve(change.pk, people["admin"], now=T0)  # admin holds approve, but proposed it
    assert exc.value.code == "two_person_rule"
    with pytest.raises(changes.ControlError) as exc:
        changes.approve(change.pk, people["operator"], now=T0)  # no approve permission
    assert exc.value.status == 403
    with django_capture_on_commit_callbacks() as callbacks:
        approved = changes.approve(change.pk, people["approver"], "fine", now=T0)
    assert approved.state == ChangeState.APPROVED and approved.decided_by == people["approver"]
    assert len(callbacks) == 1  # the apply task is enqueued only after the approval commits


def test_policy_run_by_operator_counts_as_proposer(plant, people, gpus):
    from facility.twin.state import Proposal

    proposal = Proposal("crah-a1", "supply_air_temperature_setpoint", 18.5, "trim", {"cooling_kw": -1})
    change = changes.propose_from_policy(plant.site, proposal, policy="trim_respond", run_by=people["operator"],
                                         now=T0)
    assert change.origin == "policy" and change.policy == "trim_respond" and change.proposed_by == people["operator"]
    assert "policy trim_respond (run by" in change.audit.get(action="proposed").actor_label
    with pytest.raises(changes.ControlError):
        changes.approve(change.pk, people["operator"], now=T0)


def test_deny_cancel_and_invalid_transitions(plant, people, gpus):
    a = changes.propose(plant.crah_sat, 18.5, user=people["operator"], now=T0)
    assert changes.deny(a.pk, people["approver"], "not today", now=T0).state == ChangeState.DENIED
    with pytest.raises(changes.ControlError) as exc:
        changes.approve(a.pk, people["admin"], now=T0)
    assert exc.value.code == "invalid_state" and exc.value.status == 409
    b = changes.propose(plant.crah_sat, 18.5, user=people["operator"], now=T0)
    with pytest.raises(changes.ControlError):
        changes.cancel(b.pk, people["viewer"], now=T0)
    assert changes.cancel(b.pk, people["operator"], "withdrawn", now=T0).state == ChangeState.CANCELED


def test_expiry_by_sweep_and_on_late_approval(plant, people, gpus):
    a = changes.propose(plant.crah_sat, 18.5, user=people["operator"], now=T0)
    b = changes.propose(plant.cdu_supply, 26.0, user=people["operator"], now=T0)
    later = T0 + timedelta(hours=1, seconds=1)
    with pytest.raises(changes.ControlError) as exc:
        changes.approve(a.pk, people["approver"], now=later)
    assert exc.value.code == "expired"
    assert changes.expire_changes(now=later)["expired"] == 1
    assert {c.state for c in SetpointChange.objects.filter(pk__in=[a.pk, b.pk])} == {ChangeState.EXPIRED}


def test_apply_writes_once_reads_back_and_updates_the_setpoint(plant, people, gpus):
    change = _approved(plant, people)
    actuator = RecordingActuator()
    assert changes.apply_change(change.pk, actuator=actuator, now=T0)["status"] == "applied"
    assert changes.apply_change(change.pk, actuator=actuator, now=T0)["status"] == "skipped"  # redelivery
    assert actuator.writes == [(plant.crah_sat.pk, 18.5)]
    change.refresh_from_db()
    plant.crah_sat.refresh_from_db()
    assert change.state == ChangeState.APPLIED and change.readback_value == 18.5 and plant.crah_sat.value == 18.5
    assert change.watch_until == T0 + timedelta(seconds=600)
    assert list(change.audit.order_by("id").values_list("action", flat=True)) == [
        "proposed", "approved", "applying", "applied"]


def test_apply_fails_when_the_plant_reads_back_something_else(plant, people, gpus):
    change = _approved(plant, people)
    changes.apply_change(change.pk, actuator=RecordingActuator(readback_offset=-0.3), now=T0)
    change.refresh_from_db()
    plant.crah_sat.refresh_from_db()
    assert change.state == ChangeState.FAILED and "reads back 18.2" in change.state_reason
    assert plant.crah_sat.value == pytest.approx(18.2)  # the setpoint shows what the plant holds


def test_apply_rechecks_the_envelope_and_waits_for_dwell(plant, people, gpus):
    first = _approved(plant, people)
    actuator = RecordingActuator()
    changes.apply_change(first.pk, actuator=actuator, now=T0)
    second = _approved(plant, people, value=19.0, now=T0 + timedelta(seconds=60))
    result = changes.apply_change(second.pk, actuator=actuator, now=T0 + timedelta(seconds=60))
    assert result["status"] == "waiting" and result["seconds"] == 240  # 300 s dwell
    assert changes.apply_change(second.pk, actuator=actuator, now=T0 + timedelta(seconds=300))["status"] == "applied"
    # Hot GPUs by the time of application: the approved raise is refused, nothing written.
    third = _approved(plant, people, value=19.5, now=T0 + timedelta(seconds=700))
    gpus["temp"] = 86.0
    changes.apply_change(third.pk, actuator=actuator, now=T0 + timedelta(seconds=700))
    third.refresh_from_db()
    assert third.state == ChangeState.FAILED and "slowdown" in third.state_reason
    assert [v for _, v in actuator.writes] == [18.5, 19.0]


def test_rollback_on_thermal_breach(plant, people, gpus, django_capture_on_commit_callbacks):
    change = changes.propose(plant.cdu_supply, 27, user=people["operator"], now=T0,
                             predicted_effect={"hottest_gpu_c": 70})
    changes.approve(change.pk, people["approver"], now=T0)
    actuator = RecordingActuator()
    changes.apply_change(change.pk, actuator=actuator, now=T0)
    assert changes.watch_changes(now=T0 + timedelta(seconds=30))["rollbacks"] == 0
    gpus["temp"], later = 87.5, T0 + timedelta(seconds=60)
    with django_capture_on_commit_callbacks():
        assert changes.watch_changes(now=later)["rollbacks"] == 1
    back = SetpointChange.objects.get(rollback_of=change)
    assert back.state == ChangeState.APPROVED and back.to_value == 25 and back.decided_by is None
    # Within the dwell: a rollback waives dwell and rate.
    assert changes.apply_change(back.pk, actuator=actuator, now=later)["status"] == "applied"
    change.refresh_from_db()
    assert change.state == ChangeState.ROLLED_BACK and change.watch_outcome == "breach"
    assert change.measured_effect["deviation_k"] == pytest.approx(17.5)
    assert [v for _, v in actuator.writes] == [27, 25]
    watched = changes.watch_changes(now=later)  # still hot, but the rollback added cooling: not undone
    assert watched["breaches"] == 1 and watched["rollbacks"] == 0
    assert SetpointChange.objects.get(pk=back.pk).state == ChangeState.APPLIED


def test_watch_window_ends_ok(plant, people, gpus):
    change = _approved(plant, people)
    changes.apply_change(change.pk, actuator=RecordingActuator(), now=T0)
    changes.watch_changes(now=T0 + timedelta(seconds=601))
    change.refresh_from_db()
    assert change.watch_outcome == "ok" and change.measured_effect["hottest_gpu_c"] == 60


def test_stale_telemetry_refuses_pauses_and_expires(plant, people, gpus):
    pending = changes.propose(plant.cdu_supply, 26, user=people["operator"], now=T0)
    gpus["age"] = 121
    with pytest.raises(changes.EnvelopeRefused) as exc:
        changes.propose(plant.crah_sat, 18.5, user=people["operator"], now=T0)
    assert exc.value.status == 422 and exc.value.reasons[0]["code"] == "stale_telemetry"
    assert changes.controllers_paused(plant.site)
    pending.refresh_from_db()
    assert pending.state == ChangeState.EXPIRED and pending.state_reason.startswith("stale")
    assert AuditEntry.objects.filter(action=AuditAction.REFUSED, setpoint=plant.crah_sat).exists()
    from facility.twin.state import Proposal

    with pytest.raises(changes.ControlError) as exc:  # policies do not run while paused
        changes.propose_from_policy(plant.site, Proposal("cdu-b1", "pump_speed_setpoint", 1.1), policy="pid",
                                    run_by=people["operator"], now=T0)
    assert exc.value.code == "controllers_paused"
    gpus["age"] = 5
    assert changes.telemetry_watchdog(now=T0)[plant.site.slug] == "running"
    assert not changes.controllers_paused(plant.site)


def test_watchdog_pauses_a_silent_site(plant, gpus):
    gpus["age"] = 500
    assert changes.telemetry_watchdog(now=T0)[plant.site.slug] == "paused"
    assert ControllerPause.objects.get(site=plant.site).automatic


def test_autonomous_mode_and_its_budget(plant, people, gpus, django_capture_on_commit_callbacks):
    from facility.twin.state import Proposal

    with pytest.raises(changes.ControlError):
        changes.set_autonomy(plant.cdu_pump, people["approver"], autonomous=True)
    changes.set_autonomy(plant.cdu_pump, people["admin"], autonomous=True, daily_change_budget=1)
    run = {"policy": "pid", "run_by": people["operator"]}
    with django_capture_on_commit_callbacks() as callbacks:
        auto = changes.propose_from_policy(plant.site, Proposal("cdu-b1", "pump_speed_setpoint", 1.1), now=T0, **run)
    assert auto.state == ChangeState.APPROVED and auto.autonomous and len(callbacks) == 1
    assert changes.apply_change(auto.pk, actuator=RecordingActuator(), now=T0)["status"] == "applied"
    second = changes.propose_from_policy(plant.site, Proposal("cdu-b1", "pump_speed_setpoint", 1.0), now=T0, **run)
    assert second.state == ChangeState.PENDING  # budget used up: a person decides
    assert second.audit.filter(action=AuditAction.AUTONOMY_BUDGET).count() == 1
    assert not second.audit.filter(action=AuditAction.APPROVED).exists()
    changes.cancel(second.pk, people["operator"], "an operator's own change instead", now=T0)
    manual = changes.propose(plant.cdu_pump, 1.2, user=people["operator"], now=T0)
    assert manual.state == ChangeState.PENDING  # an operator's own change always needs a second person
    assert AuditEntry.objects.filter(action=AuditAction.AUTONOMY_CHANGED, setpoint=plant.cdu_pump).exists()


def test_audit_entries_are_append_only(plant, people, gpus):
    change = changes.propose(plant.crah_sat, 18.5, user=people["operator"], now=T0)
    entry = change.audit.get()
    entry.message = "rewritten"
    with pytest.raises(PermissionDenied):
        entry.save()
    with pytest.raises(PermissionDenied):
        entry.delete()
    assert AuditEntry.objects.get(pk=entry.pk).message == ""


def test_envelope_edits_are_audited(plant):
    plant.crah_sat.max_step = 2.0
    plant.crah_sat.save()
    entry = AuditEntry.objects.filter(action=AuditAction.ENVELOPE_CHANGED, setpoint=plant.crah_sat).latest("id")
    assert entry.data["before"]["max_step"] == 1.0 and entry.data["after"]["max_step"] == 2.0
    assert entry.message == "changed: max_step"
    count = AuditEntry.objects.count()
    plant.crah_sat.save()  # no envelope change, no entry
    assert AuditEntry.objects.count() == count


def test_gather_reads_real_telemetry_and_topology(plant):
    """Against the real GPU table: freshness, hottest GPU, which GPUs a unit cools, coil bounds."""
    from telemetry import storage

    now = timezone.now()
    try:
        write_gpu_temps(plant.air_gpus, 71.0, now - timedelta(seconds=10))
        write_gpu_temps(plant.liquid_gpus, 55.0, now - timedelta(seconds=300))
        crah = envelope.gather(plant.crah_sat, now=now)
        assert (crah.gpus, crah.gpus_reporting, crah.hottest_gpu_c) == (2, 2, 71.0)
        assert crah.coil_min == 13.0 and 9 < crah.newest_telemetry_age_s < 11
        assert envelope.gather(plant.chiller_chw, now=now).coil_max == 15.0
        # The chiller feeds the CRAH's racks only; the tower → facility water → CDU chain its own.
        assert sorted(envelope.fed_gpu_ids(plant.chiller_chw.cooling_unit)) == sorted(g.pk for g in plant.air_gpus)
        assert envelope.gather(plant.cdu_supply, now=now).gpus_reporting == 0  # 300 s old: stale
        assert envelope.check(plant.cdu_supply, 26, now=now).codes == ["stale_telemetry"]
    finally:
        storage._known_partitions.clear()  # the test transaction rolls the partitions back


def test_changes_annotate_the_loop_page_timeline(plant, people, gpus):
    from telemetry.views import setpoint_annotations

    change = _approved(plant, people)
    marks = setpoint_annotations(plant.site, (T0 - timedelta(minutes=1)).timestamp(),
                                 (T0 + timedelta(minutes=1)).timestamp())
    assert [(m["state"], m["unit"], m["setpoint"], m["value"]) for m in marks] == [
        ("proposed", "crah-a1", "supply_air_temperature_setpoint_celsius", 18.5),
        ("approved", "crah-a1", "supply_air_temperature_setpoint_celsius", 18.5),
    ]
    assert "save fan energy" in marks[0]["text"] and marks[1]["url"].endswith(f"#change-{change.pk}")
    assert setpoint_annotations(plant.site, (T0 + timedelta(hours=2)).timestamp(),
                                (T0 + timedelta(hours=3)).timestamp()) == []


class _Plant(RecordingActuator):
    """A plant that holds `held` before anything is written, and can fail reads or writes."""

    def __init__(self, held: dict | None = None, *, read_error: str = "", write_error: str = ""):
        super().__init__()
        self.values.update(held or {})
        self.read_error, self.write_error = read_error, write_error

    def read(self, setpoint):
        if self.read_error:
            raise ActuatorError(self.read_error)
        return super().read(setpoint)

    def write(self, setpoint, value):
        if self.write_error:
            raise ActuatorError(self.write_error)
        super().write(setpoint, value)


def test_apply_judges_the_step_from_what_the_plant_holds(plant, people, gpus):
    # A local override left the plant at 17 while FuseDC's last read-back says 18: 18 → 18.5 was approved, but
    # from 17 it is a step of 1.5 (max 1): refused at application, nothing written, the stored value corrected.
    change = _approved(plant, people)
    actuator = _Plant({plant.crah_sat.pk: 17.0})
    assert changes.apply_change(change.pk, actuator=actuator, now=T0)["status"] == "failed"
    change.refresh_from_db()
    plant.crah_sat.refresh_from_db()
    assert "maximum step 1" in change.state_reason and actuator.writes == [] and plant.crah_sat.value == 17.0
    assert change.audit.get(action=AuditAction.FAILED).data["stored_value"] == 18.0
    # Held at 18.2: the step is fine; the change starts from what the plant held (the watch and a rollback use it).
    change = _approved(plant, people, value=17.5, now=T0 + timedelta(seconds=1))
    actuator = _Plant({plant.crah_sat.pk: 18.2})
    assert changes.apply_change(change.pk, actuator=actuator, now=T0 + timedelta(seconds=1))["status"] == "applied"
    change.refresh_from_db()
    assert change.from_value == 18.2 and actuator.writes == [(plant.crah_sat.pk, 17.5)]
    assert change.audit.get(action=AuditAction.APPLYING).data["from_value_proposed"] == 17.0
    # A plant that cannot be read is not written.
    change = _approved(plant, people, value=18.0, now=T0 + timedelta(seconds=2))
    actuator = _Plant(read_error="no response from the BMS gateway")
    assert changes.apply_change(change.pk, actuator=actuator, now=T0 + timedelta(seconds=2))["status"] == "failed"
    change.refresh_from_db()
    assert "could not read" in change.state_reason and "BMS gateway" in change.state_reason and not actuator.writes


def test_coil_interlock_counts_a_change_being_applied_to_the_other_point(plant, people, gpus):
    # Chilled water stored at 14.5 and a raise to 15 being applied (its read-back not stored yet): the CRAH's
    # supply air may not go below 15 + 3 K, though the stored water alone would allow 17.5.
    plant.chiller_chw.value = 14.5
    plant.chiller_chw.save()
    assert envelope.check(plant.crah_sat, 17.5, now=T0).value == 17.5
    SetpointChange.objects.create(setpoint=plant.chiller_chw, state=ChangeState.APPLYING, from_value=14.5,
                                  to_value=15.0, created_at=T0, expires_at=T0 + timedelta(hours=1), written_at=T0)
    verdict = envelope.check(plant.crah_sat, 17.5, now=T0)
    assert verdict.value == 18.0 and "coil" in verdict.codes


def test_a_policy_forecast_of_a_hot_gpu_refuses_less_cooling(plant, people, gpus):
    from facility.twin.state import Proposal

    run = {"policy": "mpc", "run_by": people["operator"], "now": T0}
    hot = Proposal("cdu-b1", "secondary_supply_temperature_setpoint", 26.0, "warmer water",
                   {"max_gpu_temperature_c": 85.0})  # GPUs read 60 °C now; the MPC predicts 85 over its horizon
    with pytest.raises(changes.EnvelopeRefused) as exc:
        changes.propose_from_policy(plant.site, hot, **run)
    assert exc.value.reasons[0]["code"] == "thermal_margin" and "forecast" in exc.value.message
    cool = Proposal("cdu-b1", "secondary_supply_temperature_setpoint", 26.0, "warmer water",
                    {"max_gpu_temperature_c": 80.0})
    assert changes.propose_from_policy(plant.site, cool, **run).state == ChangeState.PENDING


def test_a_rollback_that_fails_is_retried_and_survives_a_pause(plant, people, gpus,
                                                              django_capture_on_commit_callbacks):
    change = changes.propose(plant.cdu_supply, 27, user=people["operator"], now=T0,
                             predicted_effect={"max_gpu_temperature_c": 70})
    changes.approve(change.pk, people["approver"], now=T0)
    changes.apply_change(change.pk, actuator=RecordingActuator(), now=T0)
    gpus["temp"] = 87.5
    with django_capture_on_commit_callbacks():
        assert changes.watch_changes(now=T0 + timedelta(seconds=60))["rollbacks"] == 1
    first = SetpointChange.objects.get(rollback_of=change)
    assert SetpointChange.objects.get(pk=change.pk).measured_effect["deviation_k"] == pytest.approx(17.5)
    # The site's controllers pause meanwhile: open proposals expire, the rollback does not.
    changes.pause_controllers(plant.site, "operator pause", automatic=False)
    assert SetpointChange.objects.get(pk=first.pk).state == ChangeState.APPROVED
    changes.apply_change(first.pk, actuator=_Plant(write_error="CDU refused the write"),
                         now=T0 + timedelta(seconds=61))
    assert SetpointChange.objects.get(pk=first.pk).state == ChangeState.FAILED
    # Still breached on the next watch tick: a new rollback, which applies.
    with django_capture_on_commit_callbacks():
        assert changes.watch_changes(now=T0 + timedelta(seconds=90))["rollbacks"] == 1
    again = SetpointChange.objects.filter(rollback_of=change).exclude(pk=first.pk).get()
    assert changes.apply_change(again.pk, actuator=RecordingActuator(), now=T0 + timedelta(seconds=91))[
        "status"] == "applied"
    assert SetpointChange.objects.get(pk=change.pk).state == ChangeState.ROLLED_BACK
    assert changes.watch_changes(now=T0 + timedelta(seconds=120))["rollbacks"] == 0  # nothing left to undo


def test_an_approval_too_old_to_act_on_fails(plant, people, gpus):
    change = _approved(plant, people)
    late = T0 + timedelta(seconds=901)  # the broker was down for 15 minutes
    assert changes.apply_change(change.pk, actuator=RecordingActuator(), now=late)["status"] == "failed"
    change.refresh_from_db()
    assert "too long ago to apply" in change.state_reason


def test_a_gpu_that_went_silent_counts_with_its_last_reading(plant, people, monkeypatch, settings):
    # 1 of the 2 liquid-cooled GPUs stopped reporting 5 min ago at 86 °C (19 of 20 would still count as fresh):
    # warmer water is refused on its last reading, not waved through on the other GPU's 60 °C.
    silent = plant.liquid_gpus[0].pk

    def read(site_id, gpu_ids, since):
        now = T0.timestamp()
        fresh = {g: (now - 5, 60.0) for g in gpu_ids if g != silent}
        return fresh | ({silent: (now - 300, 86.0)} if silent in gpu_ids and since <= now - 300 else {})

    monkeypatch.setattr(envelope, "read_gpu_temperatures", read)
    settings.CONTROL_MIN_REPORTING_FRACTION = 0.5
    with pytest.raises(changes.EnvelopeRefused) as exc:
        changes.propose(plant.cdu_supply, 26, user=people["operator"], now=T0)
    assert exc.value.reasons[0]["code"] == "thermal_margin" and "86.0" in exc.value.message
    assert changes.propose(plant.cdu_supply, 24, user=people["operator"], now=T0).to_value == 24  # more cooling


def test_one_open_change_per_point_and_a_rollback_withdraws_the_waiting_one(plant, people, gpus):
    """A second proposal for a point with an open change is refused (409, naming it), from any path; a rollback
    withdraws a proposal still waiting on its point, so approving it later cannot undo the rollback."""
    first = changes.propose(plant.crah_sat, 18.5, user=people["operator"], now=T0)
    with pytest.raises(changes.ControlError) as exc:
        changes.propose(plant.crah_sat, 17.5, user=people["admin"], now=T0)
    assert (exc.value.code, exc.value.status) == ("open_change", 409)
    assert f"open change #{first.pk} (Pending, to 18.5)" in exc.value.message
    assert changes.propose(plant.cdu_supply, 26.0, user=people["operator"], now=T0)  # other points are free
    changes.approve(first.pk, people["approver"], now=T0)
    assert changes.apply_change(first.pk, actuator=RecordingActuator(), now=T0)["status"] == "applied"
    waiting = changes.propose(plant.crah_sat, 19.0, user=people["operator"], now=T0)  # applied: no longer open
    first.refresh_from_db()
    back = changes.rollback(first, "breach", now=T0 + timedelta(seconds=30))
    assert back is not None and back.state == ChangeState.APPROVED
    waiting.refresh_from_db()
    assert waiting.state == ChangeState.CANCELED and waiting.state_reason == f"superseded by rollback #{back.pk}"
    assert waiting.audit.filter(action=AuditAction.CANCELED, actor_label="rollback").exists()
