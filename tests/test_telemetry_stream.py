"""Streaming ingest over the websocket: token auth, per-frame replies, whole-batch rejection, close codes."""

import json
import time

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from config.asgi import application
from facility import facility_file
from facility.management.commands.seed_demo import DEMO_FILE
from telemetry import writer
from telemetry.buffer import get_buffer
from telemetry.models import GpuSample
from tests.telemetry_helpers import dcgm_scrape, demo_gpus, make_source

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def token(redis_client):
    redis_client.flushdb()
    get_buffer.cache_clear()
    facility_file.import_facility(facility_file.parse(DEMO_FILE.read_text()))
    yield make_source("stream")[1]
    get_buffer.cache_clear()


def _session(token, frames):
    """Connect, send each frame, collect one reply per frame; returns (connected, close code or replies)."""

    async def go():
        headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
        communicator = WebsocketCommunicator(application, "ws/telemetry/ingest", headers=headers)
        connected, code = await communicator.connect()
        if not connected:
            return False, code
        replies = []
        for frame in frames:
            await communicator.send_to(text_data=frame if isinstance(frame, str) else json.dumps(frame))
            replies.append(json.loads(await communicator.receive_from(timeout=10)))
        await communicator.disconnect()
        return True, replies

    return async_to_sync(go)()


def test_stream_accepts_json_and_prometheus_frames(token):
    gpus = demo_gpus(2)
    now = time.time()
    frames = [
        {"id": "a", "samples": [{"metric": "DCGM_FI_DEV_GPU_TEMP", "uuid": gpus[0].uuid, "timestamp": now - 1,
                                 "value": 61.0}]},
        {"id": "b", "format": "prometheus", "text": dcgm_scrape(gpus, temp=62.0)},
    ]
    connected, replies = _session(token, frames)
    assert connected
    assert [(r["id"], r["status"]) for r in replies] == [("a", 202), ("b", 202)]
    assert replies[1]["accepted"] == 8
    writer.drain("test", time_budget_s=30)
    assert sorted(GpuSample.objects.values_list("gpu_temp", flat=True)) == [61.0, 62.0, 62.0]


def test_bad_frames_get_400_and_the_connection_stays_open(token):
    gpu = demo_gpus(1)[0]
    good = {"samples": [{"metric": "DCGM_FI_DEV_GPU_TEMP", "uuid": gpu.uuid, "timestamp": time.time(),
                         "value": 60.0}]}
    bad = {"id": 7, "samples": [{"metric": "DCGM_FI_DEV_GPU_TEMP", "uuid": gpu.uuid, "timestamp": time.time(),
                                 "value": "hot"}]}
    connected, replies = _session(token, ["{oops", bad, {"format": "prometheus", "text": 5}, good])
    assert connected
    assert [r["status"] for r in replies] == [400, 400, 400, 202]
    assert replies[1]["id"] == 7 and replies[1]["errors"] == [{"item": "samples[0].value",
                                                                "reason": "value must be a number"}]
    assert replies[2]["errors"][0]["item"] == "text"


@pytest.mark.parametrize("bad_token", [None, "fdc_nope_nope"])
def test_stream_needs_a_valid_token(token, bad_token):
    connected, code = _session(bad_token, [])
    assert not connected and code == 4401


@pytest.mark.parametrize("how", ["revoke", "reissue"])
def test_an_open_socket_stops_ingesting_once_its_token_is_revoked_or_reissued(token, how, monkeypatch):
    from telemetry import stream
    from telemetry.models import Source

    monkeypatch.setattr(stream, "TOKEN_RECHECK_S", 0.0)
    gpu = demo_gpus(1)[0]

    def frame(value):
        return json.dumps({"samples": [{"metric": "DCGM_FI_DEV_GPU_TEMP", "uuid": gpu.uuid,
                                        "timestamp": time.time(), "value": value}]})

    async def go():
        communicator = WebsocketCommunicator(application, "ws/telemetry/ingest",
                                             headers=[(b"authorization", f"Bearer {token}".encode())])
        assert (await communicator.connect())[0]
        await communicator.send_to(text_data=frame(61.0))
        accepted = json.loads(await communicator.receive_from(timeout=10))["status"]
        source = await Source.objects.aget(name="stream-source")
        if how == "revoke":
            await database_sync_to_async(source.revoke)()
        else:
            source.issue_token()
            await source.asave()
        await communicator.send_to(text_data=frame(99.0))
        closed = await communicator.receive_output(timeout=10)
        await communicator.wait()
        return accepted, closed

    accepted, closed = async_to_sync(go)()
    assert accepted == 202 and closed == {"type": "websocket.close", "code": 4401}
    writer.drain("test", time_budget_s=30)
    assert list(GpuSample.objects.values_list("gpu_temp", flat=True)) == [61.0]  # the first frame is kept
