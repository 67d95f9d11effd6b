"""ModbusActuator against pymodbus's own TCP server on 127.0.0.1: write and read back, a device that never
answers in time, one that holds a different value than written, and the register encoding."""

import itertools
from datetime import UTC, datetime

import pytest

from control import changes, envelope
from control.actuators import ActuatorError, for_setpoint
from control.actuators.modbus import ModbusActuator, from_raw, to_raw
from control.models import ChangeState, ModbusPoint
from control.tests.factories import ModbusServer, build_plant, free_port, make_user

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 6, 1, 12, tzinfo=UTC)
_n = itertools.count()


@pytest.fixture(scope="module")
def server():
    with ModbusServer(slow_seconds=2.0, clamp_raw=200) as s:
        yield s


@pytest.fixture
def plant():
    return build_plant(f"m{next(_n)}", gpus=False)


def _map(setpoint, server, device=1, **kw):
    """Map `setpoint` to a register of `device` that holds its stored value, as the plant would."""
    point = ModbusPoint.objects.create(setpoint=setpoint, host="127.0.0.1", port=server.port, unit_id=device,
                                       register=100 + setpoint.pk % 500, timeout_seconds=0.5, **kw)
    server.hold(setpoint)
    return point


def test_encoding():
    assert to_raw(18.5, 10, True) == 185 and from_raw(185, 10, True) == 18.5
    assert to_raw(-2.5, 10, True) == 0xFFFF - 24 and from_raw(0xFFFF - 24, 10, True) == -2.5
    assert from_raw(0xFFFF, 10, False) == 6553.5
    with pytest.raises(ActuatorError):
        to_raw(4000, 10, True)
    # Rounding to the register's 0.1 never leaves the allowable range (round(4.5) is 4: 0.4 < 0.45).
    assert to_raw(0.45, 10, False) == 4 and to_raw(0.45, 10, False, 0.45, 1.0) == 5
    assert to_raw(0.97, 10, False, 0.4, 0.96) == 9


def test_write_and_read_back(server, plant):
    point = _map(plant.crah_sat, server)
    actuator = for_setpoint(plant.crah_sat)
    assert isinstance(actuator, ModbusActuator)
    result = actuator.apply(plant.crah_sat, 18.5)
    assert result.ok and result.readback == 18.5
    assert (point.register, [185]) in server.writes[1]


def test_separate_readback_register(server, plant):
    _map(plant.cdu_pump, server, scale=1000, readback_register=900)
    result = ModbusActuator().apply(plant.cdu_pump, 1.1)  # register 900 still holds 0
    assert not result.ok and result.readback == 0 and "reads back 0" in result.reason


def test_actuator_refuses_values_outside_the_allowable_range(server, plant):
    _map(plant.crah_sat, server)
    before = len(server.writes[1])
    with pytest.raises(ActuatorError):
        ModbusActuator().apply(plant.crah_sat, 40.0)
    assert len(server.writes[1]) == before


def _apply_through_the_state_machine(setpoint, value, monkeypatch):
    monkeypatch.setattr(envelope, "read_gpu_temperatures", lambda *a: {})
    operator, approver = make_user(f"o{next(_n)}", "operator"), make_user(f"a{next(_n)}", "approver")
    change = changes.propose(setpoint, value, user=operator, now=T0)
    changes.approve(change.pk, approver, now=T0)
    changes.apply_change(change.pk, now=T0)
    change.refresh_from_db()
    setpoint.refresh_from_db()
    return change


def test_a_device_that_times_out_fails_the_change(server, plant, monkeypatch):
    _map(plant.crah_sat, server, device=2)
    change = _apply_through_the_state_machine(plant.crah_sat, 18.5, monkeypatch)
    assert change.state == ChangeState.FAILED and "No response" in change.state_reason
    assert plant.crah_sat.value == 18.0  # unknown: the setpoint keeps its last read-back


def test_a_device_that_reads_back_another_value_fails_the_change(server, plant, monkeypatch):
    plant.cdu_supply.value = 21.0
    plant.cdu_supply.save()
    _map(plant.cdu_supply, server, device=3)  # clamps to raw 200 = 20.0 °C
    change = _apply_through_the_state_machine(plant.cdu_supply, 22.0, monkeypatch)
    assert change.state == ChangeState.FAILED and "reads back 20" in change.state_reason
    assert change.readback_value == 20.0 and plant.cdu_supply.value == 20.0


def test_applied_through_the_state_machine(server, plant, monkeypatch):
    _map(plant.crah_sat, server)
    change = _apply_through_the_state_machine(plant.crah_sat, 17.5, monkeypatch)
    assert change.state == ChangeState.APPLIED and plant.crah_sat.value == 17.5


def test_unreachable_device(plant, monkeypatch):
    ModbusPoint.objects.create(setpoint=plant.crah_sat, host="127.0.0.1", port=free_port(), register=1,
                               timeout_seconds=0.5)
    change = _apply_through_the_state_machine(plant.crah_sat, 18.5, monkeypatch)
    assert change.state == ChangeState.FAILED and "cannot connect" in change.state_reason
