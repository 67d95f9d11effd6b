"""The twin actuator: in process (embedded default) and over the Redis command channel (production)."""

import threading
import time

import pytest

from config import inprocess
from control.actuators import ActuatorError
from control.actuators.twin import TwinActuator, command_key, serve_commands
from control.tests.factories import build_plant

pytestmark = pytest.mark.django_db


@pytest.fixture
def twin_plant():
    from telemetry.sources.twin import TwinSource

    plant = build_plant("tw", twin=True)
    return plant, TwinSource(plant.site, sensors=False)


def test_in_process(twin_plant, monkeypatch):
    plant, source = twin_plant
    monkeypatch.setitem(inprocess.twins, plant.site.slug, source)
    result = TwinActuator().apply(plant.crah_sat, 19.0)
    assert result.ok and result.readback == 19.0
    assert source.twin.setpoint_command("crah-a1", "supply_air_temperature_setpoint") == 19.0


def test_over_redis(twin_plant, redis_client, settings):
    plant, source = twin_plant
    redis_client.delete(command_key(plant.site.slug))
    stop = threading.Event()

    def twin_process():  # what `manage.py twin run` does each tick
        while not stop.is_set():
            serve_commands(source, redis_client)
            time.sleep(0.05)

    thread = threading.Thread(target=twin_process, daemon=True)
    thread.start()
    try:
        result = TwinActuator().apply(plant.cdu_supply, 27.0)
        assert result.ok and result.readback == 27.0
        with pytest.raises(ActuatorError, match="refused"):
            TwinActuator().write(plant.cdu_supply, 99.0)  # the twin's own range check answers too
    finally:
        stop.set()
        thread.join(5)


def test_no_twin_answers(twin_plant, redis_client, settings):
    plant, _ = twin_plant
    settings.CONTROL_TWIN_COMMAND_TIMEOUT_SECONDS = 0.3
    redis_client.delete(command_key(plant.site.slug))
    with pytest.raises(ActuatorError, match="no twin process answered"):
        TwinActuator().write(plant.crah_sat, 19.0)
    assert redis_client.llen(command_key(plant.site.slug)) == 0  # withdrawn: never applied late
