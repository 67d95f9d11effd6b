"""Actuators: how an approved setpoint reaches the plant (`base.Actuator`: write, read back, compare).

`for_setpoint` picks one per `CONTROL_ACTUATOR`: "auto" (Modbus where the point has a register map, else
the twin), "twin" or "modbus".
"""

from django.conf import settings

from control.actuators.base import Actuator, ActuatorError, ApplyResult

__all__ = ["Actuator", "ActuatorError", "ApplyResult", "for_setpoint"]


def for_setpoint(setpoint) -> Actuator:
    from control.actuators.modbus import ModbusActuator
    from control.actuators.twin import TwinActuator
    from control.models import ModbusPoint

    choice = settings.CONTROL_ACTUATOR
    if choice == "twin":
        return TwinActuator()
    if choice == "modbus":
        return ModbusActuator()
    return ModbusActuator() if ModbusPoint.objects.filter(setpoint=setpoint).exists() else TwinActuator()
