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
