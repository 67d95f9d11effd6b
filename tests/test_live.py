"""The live feed: `ws/facilities/<slug>/live` through the real ASGI app, fed by the real buffer on Redis."""

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from facility import facility_file
from facility.management.commands.seed_demo import DEMO_FILE
from facility.models import GPU, Site
from telemetry import consumers, live
from telemetry.buffer import InProcessBuffer, get_buffer
from telemetry.ingest import encode, ingest
from telemetry.parsers.prometheus import parse_exposition
from telemetry.sources.twin import TwinSource
from tests.telemetry_helpers import dcgm_scrape, demo_gpus, make_source

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def demo(redis_client):
    redis_client.flushdb()
    get_buffer.cache_clear()
    facility_file.import_facility(facility_file.parse(DEMO_FILE.read_text()))
    yield Site.objects.get(slug="demo")
    get_buffer.cache_clear()


def _cookie(_client, user) -> bytes:
    from django.test import Client

    client = Client()  # one session per user: logging in another user on the same client ends the first's
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


def _communicator(path="/ws/facilities/demo/live", cookie: bytes | None = None):
    from config.asgi import application

    headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")]
    if cookie:
        headers.append((b"cookie", cookie))
    return WebsocketCommunicator(application, path, headers=headers)


async def _closed_with(communicator) -> int:
    connected, _ = await communicator.connect(timeout=10)
    assert connected  # accepted, then closed with an application code the browser can read
    message = await communicator.receive_output(timeout=10)
    assert message["type"] == "websocket.close"
    await communicator.wait()
    return message["code"]


async def _next(communicator, kind: str, timeout=10.0, where=lambda m: True) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no {kind} message in {timeout} s"
        message = json.loads(await communicator.receive_from(timeout=left))
        if message["type"] == kind and where(message):
            return message


def test_refuses_anonymous_forbidden_and_unknown_site(demo, client, make_user):
    nobody = make_user("nobody")  # signed in, no role
    viewer = make_user("viewer-1", "viewer")

    async def scenario():
        assert await _closed_with(_communicator()) == consumers.CLOSE_UNAUTHENTICATED
        assert await _closed_with(_communicator(cookie=nobody_cookie)) == consumers.CLOSE_FORBIDDEN
        assert await _closed_with(_communicator("/ws/facilities/nowhere/live", viewer_cookie)) == \
            consumers.CLOSE_NOT_FOUND

    nobody_cookie = _cookie(client, nobody)
    viewer_cookie = _cookie(client, viewer)
    asyncio.run(scenario())


def test_hello_then_ticks_with_increasing_seq_after_telemetry(demo, client, make_user):
    cookie = _cookie(client, make_user("viewer-2", "viewer"))
    source = TwinSource(demo, start=datetime.now(UTC) - timedelta(seconds=30), sensors=False)
    gpu_count = GPU.objects.count()

    def emit():
        source.step(1)
        source.emit()

    async def scenario():
        communicator = _communicator(cookie=cookie)
        connected, _ = await communicator.connect(timeout=10)
        assert connected
        hello = await _next(communicator, "hello")
        assert len(hello["gpus"]["uuid"]) == gpu_count
        assert set(hello["gpus"]) >= {"uuid", "hostname", "gpu", "hall", "rack", "slot", "cooling"}
        assert hello["gpus"]["cooling"][0] == "air" and hello["gpus"]["cooling"][-1] == "liquid"
        assert {h["name"] for h in hello["halls"]} == {"hall-a", "hall-b"}
        start = hello["seq"]

        await sync_to_async(emit)()
        tick = await _next(communicator, "tick", where=lambda m: m["gpus"]["i"])
        assert tick["seq"] > start
        assert len(tick["gpus"]["i"]) == gpu_count
        assert set(live.LIVE_COLUMNS) <= set(tick["gpus"])
        temps = [t for t in tick["gpus"]["gpu_temp"] if t is not None]
        assert len(temps) == gpu_count and all(20 < t < 95 for t in temps)
        # The plant keeps reporting; point series new to the site join on the broadcaster's next inventory
        # reload (a fresh hello), after which ticks carry GPUs and points together.
        stop = asyncio.Event()

        async def plant():
            while not stop.is_set():
                await sync_to_async(emit)()
                await asyncio.sleep(0.5)

        feeding = asyncio.create_task(plant())
        seen = [tick["seq"]]
        tick = await _next(communicator, "tick", timeout=20, where=lambda m: m["gpus"]["i"] and m["points"]["id"])
        seen.append(tick["seq"])
        for _ in range(3):
            seen.append((await _next(communicator, "tick"))["seq"])
        stop.set()
        await feeding
        kpis = tick["kpis"]
        assert kpis["total"]["gpus_reporting"] == gpu_count
        assert kpis["total"]["tflops"] > 0 and 1.01 < kpis["total"]["pue"] < 2
        assert set(kpis["halls"]) == {"hall-a", "hall-b"}
        assert kpis["halls"]["hall-a"]["gpus_reporting"] + kpis["halls"]["hall-b"]["gpus_reporting"] == gpu_count
        # Plant power is shared out: the halls' cooling adds up to the site's.
        for key in ("cooling_power_kw", "it_power_kw", "facility_power_kw", "tflops"):
            halls_sum = sum(k[key] for k in kpis["halls"].values())
            assert halls_sum == pytest.approx(kpis["total"][key], rel=1e-6), key
        # Liquid cooling costs less power per TFLOPS than air.
        assert kpis["halls"]["hall-b"]["tflops_per_kw"] > kpis["halls"]["hall-a"]["tflops_per_kw"]
        assert seen == sorted(seen) and seen[-3:] == list(range(seen[-4] + 1, seen[-4] + 4))
        await communicator.disconnect()

    asyncio.run(scenario())


def test_ticks_carry_changed_points_and_deltas_only(demo, client, make_user):
    cookie = _cookie(client, make_user("viewer-3", "viewer"))
    dcgm, _ = make_source("dcgm", name="dcgm-live")
    gpus = demo_gpus(8)

    def scrape(temp):
        ingest(dcgm, parse_exposition(dcgm_scrape(gpus, temp=temp, ts_ms=int(time.time() * 1000)),
                                      default_timestamp=time.time()))

    async def scenario():
        communicator = _communicator(cookie=cookie)
        await communicator.connect(timeout=10)
        hello = await _next(communicator, "hello")
        order = {u: i for i, u in enumerate(hello["gpus"]["uuid"])}
        await sync_to_async(scrape)(86.5)
        tick = await _next(communicator, "tick", where=lambda m: m["gpus"]["i"])
        assert sorted(tick["gpus"]["i"]) == sorted(order[g.uuid] for g in gpus)  # only those that reported
        assert set(tick["gpus"]["gpu_temp"]) == {86.5}
        assert tick["gpus"]["sm_clock"][0] == 1980
        warnings = [a for a in tick["alarms"] if a["kind"] == "gpu_temperature"]
        assert len(warnings) == 8 and {a["level"] for a in warnings} == {"warning"}
        await sync_to_async(scrape)(90.0)
        tick = await _next(communicator, "tick", where=lambda m: m["gpus"]["i"])
        assert {a["level"] for a in tick["alarms"] if a["kind"] == "gpu_temperature"} == {"critical"}
        await communicator.disconnect()

    asyncio.run(scenario())


def test_permission_is_checked_per_event(demo, client, make_user, monkeypatch):
    monkeypatch.setattr(consumers, "PERMISSION_TTL", 0.0)
    user = make_user("viewer-4", "viewer")
    cookie = _cookie(client, user)

    async def scenario():
        communicator = _communicator(cookie=cookie)
        await communicator.connect(timeout=10)
        await _next(communicator, "hello")
        await sync_to_async(user.groups.clear)()
        # The next heartbeat tick is not forwarded: the socket closes with 4403 instead.
        deadline = time.monotonic() + live.HEARTBEAT_SECONDS + 5
        while True:
            message = await communicator.receive_output(timeout=deadline - time.monotonic())
            if message["type"] == "websocket.close":
                assert message["code"] == consumers.CLOSE_FORBIDDEN
                break
            assert message["type"] == "websocket.send"

    asyncio.run(scenario())


def test_in_process_buffer_tail_is_bounded_and_ordered(settings):
    buffer = InProcessBuffer(1000, max_entries=10_000)
    ids = [buffer.append(f"p{i}".encode()) for i in range(5)]
    assert [eid for eid, _ in buffer.tail("0-0", 10)] == ids
    assert [p for _, p in buffer.tail(ids[1], 2)] == [b"p2", b"p3"]
    buffer.claim("w", 10)
    buffer.ack(ids)
    assert len(buffer.tail(ids[0], 10)) == 4  # tail reads past the writers: acknowledged entries stay visible
    for i in range(live.QUEUE_TICKS):
        buffer.append(str(i).encode())
    from telemetry.buffer import TAIL_KEEP

    for _ in range(TAIL_KEEP):
        buffer.append(b"x")
    assert len(buffer.tail("0-0", TAIL_KEEP * 2)) == TAIL_KEEP


def test_redis_buffer_tail_reads_past_the_group(demo):
    buffer = get_buffer()
    dcgm, _ = make_source("dcgm", name="dcgm-tail")
    first = buffer.append(encode(dcgm, {}, {}))
    second = buffer.append(encode(dcgm, {}, {}))
    buffer.claim("writer", 10)
    buffer.ack([first, second])
    assert [eid for eid, _ in buffer.tail("0-0", 10)][-2:] == [first, second]
    assert [eid for eid, _ in buffer.tail(first, 10)] == [second]


def test_slow_subscriber_drops_oldest_so_the_client_sees_a_gap():
    async def scenario():
        subscriber = live.Subscriber()
        for seq in range(live.QUEUE_TICKS + 3):
            subscriber.offer(json.dumps({"seq": seq}))
        first = json.loads(subscriber.queue.get_nowait())["seq"]
        assert first == 3 and subscriber.dropped == 3

    asyncio.run(scenario())
