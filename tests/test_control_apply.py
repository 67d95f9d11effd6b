"""Applying approved changes on a real Celery worker (queue `control`), real PostgreSQL and Redis, and a
real Modbus device (pymodbus's server in this process, counting writes): redelivery writes nothing twice."""

import time

import pytest

from control import changes
from control.models import AuditEntry, ChangeState, ModbusPoint, SetpointChange
from control.tasks import apply_setpoint_change
from control.tests.factories import ModbusServer, build_plant

pytestmark = pytest.mark.django_db(transaction=True)


def _wait_for(change_id: int, states, timeout: float = 60.0) -> SetpointChange:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        change = SetpointChange.objects.get(pk=change_id)
        if change.state in states:
            return change
        time.sleep(0.2)
    pytest.fail(f"change {change_id} still {change.state} after {timeout} s")


def test_apply_on_the_worker_is_idempotent(celery_worker, make_user):
    plant = build_plant("wk", gpus=False)  # cools no GPU: no telemetry needed for this test
    operator, approver = make_user("wk-operator", "operator"), make_user("wk-approver", "approver")
    with ModbusServer() as device:
        for register, setpoint in ((10, plant.crah_sat), (20, plant.cdu_supply)):
            ModbusPoint.objects.create(setpoint=setpoint, host="127.0.0.1", port=device.port, register=register,
                                       timeout_seconds=2)
            device.hold(setpoint)  # the plant holds the stored value (apply reads it before writing)

        first = changes.propose(plant.crah_sat, 18.5, user=operator, rationale="worker test")
        changes.approve(first.pk, approver, "go")  # enqueues apply on commit (autocommit: now)
        applied = _wait_for(first.pk, {ChangeState.APPLIED, ChangeState.FAILED})
        assert applied.state == ChangeState.APPLIED, applied.state_reason
        assert applied.readback_value == 18.5
        # Redelivery (or a duplicate enqueue) finds the change applied and does nothing.
        for _ in range(2):
            assert apply_setpoint_change.apply_async((first.pk,)).get(timeout=30)["status"] == "skipped"
        assert device.writes[1] == [(10, [185])]

        # Several deliveries racing for one approval: still one write.
        second = changes.propose(plant.cdu_supply, 26, user=operator)
        changes.approve(second.pk, approver)
        results = [apply_setpoint_change.apply_async((second.pk,)) for _ in range(3)]
        statuses = sorted(r.get(timeout=30)["status"] for r in results)
        assert _wait_for(second.pk, {ChangeState.APPLIED}).readback_value == 26
        assert statuses.count("applied") <= 1 and device.writes[1][1:] == [(20, [260])]

    plant.crah_sat.refresh_from_db()
    assert plant.crah_sat.value == 18.5
    actions = list(AuditEntry.objects.filter(change=first).order_by("id").values_list("action", flat=True))
    assert actions == ["proposed", "approved", "applying", "applied"]


def test_worker_killed_while_applying_writes_once_and_is_reconciled(django_db_setup, make_user):
    """The process applying a change dies mid-write (SIGKILL). Nothing re-sends the write: the change stays
    Applying until the reconciler reads the plant back and finishes it as Applied (the write landed) or Failed.

    The dying process runs the apply task's body (`changes.apply_change`) itself, with no broker reachable, so
    no other worker of the test session can pick the change up."""
    import os
    import signal
    import subprocess
    import sys
    from datetime import timedelta

    from django.db import connection
    from django.utils import timezone

    from tests.conftest import REPO, _worker_env

    plant = build_plant("kill", gpus=False)
    operator, approver = make_user("kill-operator", "operator"), make_user("kill-approver", "approver")
    with ModbusServer(slow_seconds=4) as device:
        ModbusPoint.objects.create(setpoint=plant.crah_sat, host="127.0.0.1", port=device.port, unit_id=2,
                                   register=10, timeout_seconds=8)  # device 2 answers a write after 4 s
        device.hold(plant.crah_sat)
        change = changes.propose(plant.crah_sat, 18.5, user=operator, rationale="killed mid-write")
        env = _worker_env(connection.settings_dict["NAME"])
        env["REDIS_URL"] = "redis://127.0.0.1:1/0"  # no broker: only this process applies the change
        worker = subprocess.Popen(
            [sys.executable, "manage.py", "shell", "-c",
             f"from control import changes; from django.contrib.auth import get_user_model; "
             f"changes.approve({change.pk}, get_user_model().objects.get(pk={approver.pk}), 'go'); "
             f"changes.apply_change({change.pk})"],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_for(change.pk, {ChangeState.APPLYING})
            time.sleep(1.0)  # the write is out: the device holds its answer 4 s, the process waits up to 8 s
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait()
        finally:
            if worker.poll() is None:
                worker.kill()
        assert SetpointChange.objects.get(pk=change.pk).state == ChangeState.APPLYING
        time.sleep(5)  # the device finishes the write it got
        out = changes.expire_changes(now=timezone.now() + timedelta(minutes=5))
        assert out["reconciled"] == 1
        done = SetpointChange.objects.get(pk=change.pk)
        assert done.state in (ChangeState.APPLIED, ChangeState.FAILED), done.state
        if done.state == ChangeState.APPLIED:
            assert done.readback_value == 18.5
        else:
            assert "interrupted while applying" in done.state_reason
        assert len(device.writes[2]) == 1  # written once: nothing re-sent the write
        assert changes.expire_changes(now=timezone.now() + timedelta(minutes=6))["reconciled"] == 0
    actions = list(AuditEntry.objects.filter(change=change).order_by("id").values_list("action", flat=True))
    assert actions[:3] == ["proposed", "approved", "applying"] and actions[3] in ("applied", "failed")


def test_approval_while_the_broker_is_down_is_applied_once_it_is_back(celery_worker, make_user):
    """An approver approves while Redis (the broker) is unreachable: the approval stands (no error, nothing
    lost) and the expiry sweep re-sends it once the broker answers; the device gets exactly one write."""
    import subprocess
    import sys
    from datetime import timedelta

    from django.db import connection
    from django.utils import timezone

    from tests.conftest import REPO, _worker_env

    plant = build_plant("brk", gpus=False)
    operator, approver = make_user("brk-operator", "operator"), make_user("brk-approver", "approver")
    with ModbusServer() as device:
        ModbusPoint.objects.create(setpoint=plant.crah_sat, host="127.0.0.1", port=device.port, register=10,
                                   timeout_seconds=2)
        device.hold(plant.crah_sat)
        change = changes.propose(plant.crah_sat, 18.5, user=operator, rationale="broker down")
        env = _worker_env(connection.settings_dict["NAME"])
        env["REDIS_URL"] = "redis://127.0.0.1:1/0"  # nothing listens there: the broker is down for this process
        approve = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c",
             f"from control import changes; from django.contrib.auth import get_user_model; "
             f"changes.approve({change.pk}, get_user_model().objects.get(pk={approver.pk}), 'go')"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert approve.returncode == 0, approve.stderr[-2000:]
        assert "the sweep will re-send it" in approve.stderr
        assert SetpointChange.objects.get(pk=change.pk).state == ChangeState.APPROVED
        assert device.writes[1] == []
        # The broker is back (this process uses the real one): the sweep re-sends, the worker applies once.
        assert changes.expire_changes(now=timezone.now() + timedelta(minutes=1))["resent"] == 1
        assert _wait_for(change.pk, {ChangeState.APPLIED, ChangeState.FAILED}).state == ChangeState.APPLIED
        changes.expire_changes(now=timezone.now() + timedelta(minutes=2))  # a later sweep sends nothing more
        time.sleep(1)
        assert device.writes[1] == [(10, [185])]
