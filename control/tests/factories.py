"""Test plants for the control tests: a tiny site, GPU telemetry, a recording actuator, a Modbus server."""

from __future__ import annotations

import asyncio
import socket
import threading
from dataclasses import dataclass, field
from datetime import datetime

from control.actuators.base import Actuator
from facility.models import GPU, CoolingLoop, CoolingUnit, Hall, Node, Rack, Setpoint, Site


@dataclass
class Plant:
    site: Site
    chiller_chw: Setpoint  # chilled_water_supply_temperature_setpoint, 10 °C
    crah_sat: Setpoint  # supply_air_temperature_setpoint, 18 °C, cools rack-a
    cdu_supply: Setpoint  # secondary_supply_temperature_setpoint, 25 °C, cools rack-b
    cdu_pump: Setpoint
    air_gpus: list[GPU] = field(default_factory=list)
    liquid_gpus: list[GPU] = field(default_factory=list)


def build_plant(slug: str = "t", *, gpus: bool = True, twin: bool = False) -> Plant:
    """Chiller → chilled water → CRAH (air hall, rack-a); tower → facility water → CDU (liquid hall, rack-b)."""
    site = Site.objects.create(slug=slug, name=f"Test {slug}")
    air = Hall.objects.create(site=site, name="hall-a", cooling_type="air")
    liquid = Hall.objects.create(site=site, name="hall-b", cooling_type="liquid")
    chw = CoolingLoop.objects.create(site=site, name="chw", kind="chilled_water")
    fws = CoolingLoop.objects.create(site=site, name="fws", kind="facility_water")
    tcs = CoolingLoop.objects.create(site=site, name="tcs", kind="technology_cooling")
    chiller = CoolingUnit.objects.create(site=site, name="chiller-1", kind="chiller", supply_loop=chw)
    CoolingUnit.objects.create(site=site, name="tower-2", kind="cooling_tower", supply_loop=fws)
    crah = CoolingUnit.objects.create(site=site, hall=air, name="crah-a1", kind="crah", return_loop=chw)
    cdu = CoolingUnit.objects.create(site=site, hall=liquid, name="cdu-b1", kind="cdu", supply_loop=tcs,
                                     return_loop=fws)

    def sp(unit, name, measure, value, lo, hi, step, rate, dwell):
        return Setpoint.objects.create(cooling_unit=unit, name=name, unit=measure, value=value, allowable_min=lo,
                                       allowable_max=hi, max_step=step, max_rate_per_minute=rate,
                                       min_dwell_seconds=dwell)

    plant = Plant(
        site=site,
        chiller_chw=sp(chiller, "chilled_water_supply_temperature_setpoint", "celsius", 10, 7, 20, 0.5, 0.1, 300),
        crah_sat=sp(crah, "supply_air_temperature_setpoint", "celsius", 18, 16, 27, 1.0, 0.5, 300),
        cdu_supply=sp(cdu, "secondary_supply_temperature_setpoint", "celsius", 25, 20, 45, 2.0, 1.0, 120),
        cdu_pump=sp(cdu, "pump_speed_setpoint", "ratio", 1.0, 0.3, 1.2, 0.1, 0.2, 60),
    )
    if twin:  # the twin wants a CRAH for the liquid hall's air-side heat too
        crah_b = CoolingUnit.objects.create(site=site, hall=liquid, name="crah-b1", kind="crah", return_loop=chw)
        sp(crah_b, "supply_air_temperature_setpoint", "celsius", 20, 16, 27, 1.0, 0.5, 300)
    if gpus:
        for hall, unit, out in ((air, crah, plant.air_gpus), (liquid, cdu, plant.liquid_gpus)):
            rack = Rack.objects.create(hall=hall, name=f"rack-{hall.name[-1]}")
            rack.cooled_by.add(unit)
            node = Node.objects.create(rack=rack, hostname=f"{slug}-{hall.name}-n1")
            out.extend(GPU.objects.create(node=node, index=i, uuid=f"GPU-{slug}-{hall.name}-{i}") for i in range(2))
    return plant


def write_gpu_temps(gpus: list[GPU], temp: float, at: datetime) -> None:
    """Store one GPU sample per GPU at `at` (through the telemetry writer's storage path)."""
    from telemetry import storage

    ts = at.timestamp()
    payload = {"gpu": {"gpu_id": [g.pk for g in gpus], "time": [ts] * len(gpus), "gpu_temp": [temp] * len(gpus)},
               "points": {"series_id": [], "time": [], "value": []}}
    storage.ensure_partitions(storage.days_of([payload]))
    storage.write([payload])


class RecordingActuator(Actuator):
    """An in-memory plant that records every write; optionally reads back something else."""

    name = "recording"

    def __init__(self, readback_offset: float = 0.0):
        self.values: dict[int, float] = {}
        self.writes: list[tuple[int, float]] = []
        self.readback_offset = readback_offset

    def write(self, setpoint, value):
        self.writes.append((setpoint.pk, value))
        self.values[setpoint.pk] = value

    def read(self, setpoint):
        return self.values.get(setpoint.pk, setpoint.value) + self.readback_offset


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ModbusServer:
    """pymodbus's own TCP server on 127.0.0.1 in a thread. Devices: 1 normal, 2 never answers a write in time
    (sleeps `slow_seconds`), 3 clamps every written value to `clamp_raw`. Counts writes per device; `hold`
    presets what a register holds, as a plant does before FuseDC first writes."""

    def __init__(self, *, slow_seconds: float = 3.0, clamp_raw: int = 200):
        from pymodbus.simulator import DataType, SimData, SimDevice

        self.port = free_port()
        self.writes: dict[int, list[tuple[int, list[int]]]] = {1: [], 2: [], 3: []}
        self.slow_seconds, self.clamp_raw = slow_seconds, clamp_raw
        self.presetting = False

        def device(dev_id, hook):
            async def action(function_code, start_address, address, count, current_registers, set_values):
                if self.presetting:
                    return None
                if set_values is not None:
                    self.writes[dev_id].append((address, list(set_values)))
                return await hook(set_values)

            return SimDevice(id=dev_id, simdata=[SimData(address=0, count=1000, values=0,
                                                         datatype=DataType.REGISTERS)], action=action)

        async def normal(set_values):
            return None

        async def slow(set_values):
            if set_values is not None:
                await asyncio.sleep(self.slow_seconds)

        async def clamp(set_values):
            if set_values is not None:
                set_values[:] = [min(v, self.clamp_raw) for v in set_values]

        self.devices = [device(1, normal), device(2, slow), device(3, clamp)]
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True, name="modbus-test-server")
        self._ready = threading.Event()

    def hold(self, setpoint, value: float | None = None) -> None:
        """Make the register mapped to `setpoint` hold `value` (default: its stored value), not counted as a
        write and past any device's quirk."""
        from control.actuators.modbus import ModbusActuator

        self.presetting = True
        try:
            ModbusActuator().write(setpoint, setpoint.value if value is None else value)
        finally:
            self.presetting = False

    def _run(self):
        from pymodbus.server import ModbusTcpServer

        asyncio.set_event_loop(self.loop)

        async def start():
            self.server = ModbusTcpServer(self.devices, address=("127.0.0.1", self.port))
            await self.server.serve_forever(background=True)
            self._ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def __enter__(self):
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the Modbus test server did not start")
        return self

    def __exit__(self, *exc):
        async def stop():
            await self.server.shutdown()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def make_user(username: str, *roles: str, staff: bool = True):
    """A user in the given role groups (tests/conftest.py's fixture is not visible to app test packages)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    user = get_user_model().objects.create_user(username=username, password=None, is_staff=staff)
    user.groups.set(Group.objects.filter(name__in=roles))
    return user
