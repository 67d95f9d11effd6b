"""Setpoints on Modbus TCP devices (BMS gateways, CDU controllers), per `control.models.ModbusPoint`.

One short-lived synchronous connection per operation: setpoint writes are rare, and a fresh connection
never carries state from an earlier failure. No retries here (retries=0): a timeout fails the change with
its reason and a person or the policy proposes again.
"""

from __future__ import annotations

import math

from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusException

from control.actuators.base import Actuator, ActuatorError

__all__ = ["ModbusActuator", "from_raw", "to_raw"]


def to_raw(value: float, scale: float, signed: bool, lo: float = -math.inf, hi: float = math.inf) -> int:
    """The register value for `value` at the point's resolution (1/scale), never outside [lo, hi]: where
    rounding would step out of the allowable range (0.45 at a resolution of 0.1), it steps back inside."""
    raw = round(value * scale)
    if raw / scale < lo:
        raw = math.ceil(lo * scale - 1e-9)
    if raw / scale > hi:
        raw = math.floor(hi * scale + 1e-9)
    lo, hi = (-32768, 32767) if signed else (0, 65535)
    if not lo <= raw <= hi:
        raise ActuatorError(f"{value:g} × {scale:g} = {raw} does not fit a {'signed' if signed else 'unsigned'} "
                            "16-bit register")
    return raw & 0xFFFF


def from_raw(raw: int, scale: float, signed: bool) -> float:
    if signed and raw >= 0x8000:
        raw -= 0x10000
    return raw / scale


class ModbusActuator(Actuator):
    name = "modbus"

    def _point(self, setpoint):
        from control.models import ModbusPoint

        try:
            return setpoint.modbus
        except ModbusPoint.DoesNotExist:
            raise ActuatorError(f"{setpoint} has no Modbus register map") from None

    def _client(self, point) -> ModbusTcpClient:
        client = ModbusTcpClient(point.host, port=point.port, timeout=point.timeout_seconds, retries=0,
                                 reconnect_delay=0)
        if not client.connect():
            client.close()
            raise ActuatorError(f"cannot connect to {point.host}:{point.port}")
        return client

    def tolerance(self, setpoint) -> float:
        return 0.5 / self._point(setpoint).scale + 1e-9

    def write(self, setpoint, value: float) -> None:
        point = self._point(setpoint)
        raw = to_raw(value, point.scale, point.signed, setpoint.allowable_min, setpoint.allowable_max)
        client = self._client(point)
        try:
            response = client.write_register(point.register, raw, device_id=point.unit_id)
        except ModbusException as exc:
            raise ActuatorError(f"write to {point.host}:{point.port} unit {point.unit_id} register "
                                f"{point.register} failed: {exc}") from exc
        finally:
            client.close()
        if response.isError():
            raise ActuatorError(f"device refused the write to register {point.register}: {response}")

    def read(self, setpoint) -> float:
        point = self._point(setpoint)
        register = point.register if point.readback_register is None else point.readback_register
        client = self._client(point)
        try:
            response = client.read_holding_registers(register, count=1, device_id=point.unit_id)
        except ModbusException as exc:
            raise ActuatorError(f"read-back of register {register} from {point.host}:{point.port} failed: "
                                f"{exc}") from exc
        finally:
            client.close()
        if response.isError() or not response.registers:
            raise ActuatorError(f"device refused the read of register {register}: {response}")
        return from_raw(response.registers[0], point.scale, point.signed)
