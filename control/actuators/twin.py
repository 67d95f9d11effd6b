"""The digital twin as the plant: setpoints written to a running `telemetry.sources.twin.TwinSource`.

Two transports, one behaviour:

- in process (embedded default): the twin runs in this process (`config.inprocess.twins`); write and read
  under the source's lock;
- over Redis (production): the twin runs in its own process (`manage.py twin run`). The actuator pushes a
  command onto `fusedc:twin:<site>:commands` and waits for the answer on a per-command reply key; the twin
  process calls `serve_commands(source)` once per tick (its `on_tick`), so a command waits at most about one
  simulated step. If no twin process serves the site, the write times out and the change fails with that
  reason — nothing is queued for later.

The read-back is the twin's commanded setpoint (`Twin.setpoint_command`), as a BMS reads back the active
setpoint register; the plant's physical response (supply temperatures) lags it and is watched separately.
"""

from __future__ import annotations

import json
import logging
import time
import uuid

from django.conf import settings

from control.actuators.base import Actuator, ActuatorError

__all__ = ["TwinActuator", "command_key", "serve_commands"]
log = logging.getLogger(__name__)


def command_key(site_slug: str) -> str:
    return f"fusedc:twin:{site_slug}:commands"


def _reply_key(command_id: str) -> str:
    return f"fusedc:twin:reply:{command_id}"


def _execute(source, command: dict) -> dict:
    twin = source.twin
    try:
        with source.lock:
            if command["op"] == "write":
                twin.write_setpoint(command["unit"], command["name"], float(command["value"]))
            value = twin.setpoint_command(command["unit"], command["name"])
        return {"ok": True, "value": value}
    except (KeyError, ValueError, TypeError) as exc:
        return {"ok": False, "error": str(exc)}


def serve_commands(source, redis_client=None, *, limit: int = 100) -> int:
    """Answer the actuator commands queued for this twin's site (call from the twin process each tick)."""
    if redis_client is None:
        from config.redis_client import get_redis

        redis_client = get_redis()
    served = 0
    key = command_key(source.site.slug)
    while served < limit:
        raw = redis_client.lpop(key)
        if raw is None:
            break
        try:
            command = json.loads(raw)
            reply = _execute(source, command)
        except (ValueError, KeyError) as exc:  # malformed: nobody can be answered
            log.warning("ignoring malformed twin command %r: %s", raw, exc)
            continue
        pipe = redis_client.pipeline()
        pipe.rpush(_reply_key(command["id"]), json.dumps(reply))
        pipe.expire(_reply_key(command["id"]), 60)
        pipe.execute()
        served += 1
    return served


class TwinActuator(Actuator):
    name = "twin"

    def _call(self, setpoint, op: str, value: float | None = None) -> float:
        unit = setpoint.cooling_unit
        command = {"op": op, "unit": unit.name, "name": setpoint.name, "value": value}
        from config import inprocess

        source = inprocess.twins.get(unit.site.slug)
        if source is not None:
            reply = _execute(source, command)
        elif settings.REDIS_URL:
            import redis

            try:
                reply = self._remote(unit.site.slug, command)
            except redis.RedisError as exc:  # the link to the twin is down: the plant cannot be reached
                raise ActuatorError(f"cannot reach the twin of site {unit.site.slug!r}: {exc}") from exc
        else:
            raise ActuatorError(f"no twin is running for site {unit.site.slug!r} in this process")
        if not reply.get("ok"):
            raise ActuatorError(f"the twin refused {op} of {setpoint}: {reply.get('error')}")
        return float(reply["value"])

    def _remote(self, site_slug: str, command: dict) -> dict:
        from config.redis_client import get_redis

        redis_client = get_redis()
        command = {**command, "id": uuid.uuid4().hex}
        payload = json.dumps(command)
        redis_client.rpush(command_key(site_slug), payload)
        deadline = time.monotonic() + settings.CONTROL_TWIN_COMMAND_TIMEOUT_SECONDS
        while (left := deadline - time.monotonic()) > 0:
            # Short blocking pops: the shared client's socket timeout is 2 s.
            answer = redis_client.blpop([_reply_key(command["id"])], timeout=max(0.1, min(1.0, left)))
            if answer is not None:
                return json.loads(answer[1])
        # Withdraw the command if the twin has not taken it, so it is never applied late.
        redis_client.lrem(command_key(site_slug), 1, payload)
        raise ActuatorError(f"no twin process answered for site {site_slug!r} within "
                            f"{settings.CONTROL_TWIN_COMMAND_TIMEOUT_SECONDS:g} s")

    def write(self, setpoint, value: float) -> None:
        self._call(setpoint, "write", value)

    def read(self, setpoint) -> float:
        return self._call(setpoint, "read")
