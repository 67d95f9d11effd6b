"""The ingest buffer: accepted batches wait here until a writer has stored them.

Production: a Redis stream with a consumer group of writers (at-least-once: an entry stays pending until a
writer acknowledges it after its database commit; entries of a dead writer are reclaimed after
TELEMETRY_RECLAIM_IDLE_MS). Embedded default: the same interface in process memory.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from functools import cache

import redis
from django.conf import settings

STREAM = "fusedc:telemetry"
GROUP = "writers"
# The in-process buffer keeps this many recent entries for `tail` (live views), about minutes of a site.
TAIL_KEEP = 2048
# Trimming never drops entries younger than this, so live views tailing the stream see every batch.
TRIM_KEEP_SECONDS = 60


class BufferUnavailable(Exception):
    """The buffer cannot take data now (Redis down): the caller answers 503, nothing is accepted."""

    code = "buffer_unavailable"
    message = "telemetry buffer is unavailable; nothing was accepted, retry"


class BufferFull(BufferUnavailable):
    """The buffer holds TELEMETRY_BUFFER_MAX_ENTRIES batches not yet trimmed: writers are behind (or the database
    is down). Refused like an outage (503, nothing accepted) so Redis memory stays bounded."""

    code = "buffer_full"

    def __init__(self, held: int, limit: int):
        self.message = (f"the telemetry buffer holds {held} batches, its limit is {limit}: the writers are behind; "
                        "nothing was accepted, retry")
        super().__init__(self.message)


# Check the backlog and append in one round trip, atomically (two ingest requests cannot both take the last place).
_APPEND_UNLESS_FULL = """
local held = redis.call('XLEN', KEYS[1])
if held >= tonumber(ARGV[1]) then return {0, held} end
return {1, redis.call('XADD', KEYS[1], '*', 'b', ARGV[2])}
"""


class RedisBuffer:
    def __init__(self, client: redis.Redis, reclaim_idle_ms: int, max_entries: int):
        self.client = client
        self.reclaim_idle_ms = reclaim_idle_ms
        self.max_entries = max_entries
        self._append = client.register_script(_APPEND_UNLESS_FULL)
        self._group_ready = False

    def _ensure_group(self):
        if self._group_ready:
            return
        try:
            self.client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def _grouped(self, operation):
        """Run `operation` with the consumer group in place. A Redis that restarted empty (or lost the key)
        has no group: create it again from the stream's start and retry once, so nothing appended since is
        skipped and the writers do not fail forever on NOGROUP."""
        self._ensure_group()
        try:
            return operation()
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._group_ready = False
            self._ensure_group()
            return operation()

    def append(self, payload: bytes) -> str:
        try:
            self._ensure_group()
            added, value = self._append(keys=[STREAM], args=[self.max_entries, payload])
        except redis.RedisError as exc:
            self._group_ready = False
            raise BufferUnavailable(str(exc)) from exc
        if not added:
            raise BufferFull(int(value), self.max_entries)
        return value.decode()

    def claim(self, consumer: str, count: int) -> list[tuple[str, bytes]]:
        """Entries for this consumer: first any left pending too long by a dead writer, then new ones."""
        return self._grouped(lambda: self._claim(consumer, count))

    def _claim(self, consumer: str, count: int) -> list[tuple[str, bytes]]:
        _, stale, _ = self.client.xautoclaim(STREAM, GROUP, consumer, self.reclaim_idle_ms, "0-0", count=count)
        entries = [(eid, fields) for eid, fields in stale if fields]
        if not entries:
            reply = self.client.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=count)
            entries = reply[0][1] if reply else []
        return [(eid.decode(), fields[b"b"]) for eid, fields in entries]

    def ack(self, entry_ids: list[str]):
        if entry_ids:
            self.client.xack(STREAM, GROUP, *entry_ids)

    def depth(self) -> dict:
        return self._grouped(self._depth)

    def _depth(self) -> dict:
        summary = self.client.xpending(STREAM, GROUP)
        groups = {g["name"].decode(): g for g in self.client.xinfo_groups(STREAM)}
        oldest = None
        if summary["pending"]:
            oldest_ms = int(summary["min"].decode().split("-")[0])
            oldest = max(0.0, time.time() - oldest_ms / 1000)
        return {"pending": summary["pending"], "lag": groups[GROUP].get("lag") or 0,
                "length": self.client.xlen(STREAM), "oldest_pending_age_seconds": oldest}

    def trim(self):
        """Drop entries every writer has acknowledged (never one still pending or undelivered)."""
        self._grouped(self._trim)

    def _trim(self):
        summary = self.client.xpending(STREAM, GROUP)
        groups = {g["name"].decode(): g for g in self.client.xinfo_groups(STREAM)}
        horizon = summary["min"] if summary["pending"] else groups[GROUP]["last-delivered-id"]
        if horizon and horizon not in (b"0-0", "0-0"):
            ms, seq = (horizon.decode() if isinstance(horizon, bytes) else horizon).split("-")
            # Live views tail the stream past the writers: keep the last minute whatever was acknowledged.
            keep_ms = int((time.time() - TRIM_KEEP_SECONDS) * 1000)
            if int(ms) > keep_ms:
                ms, seq = str(keep_ms), "0"
            # MINID keeps entries >= horizon; when nothing is pending, keep the last delivered one too.
            self.client.xtrim(STREAM, minid=f"{ms}-{seq}", approximate=False)

    def tail(self, after_id: str, count: int) -> list[tuple[str, bytes]]:
        """Up to `count` entries after `after_id`, read past the writers' group (live views; nothing is claimed).

        Entry ids are `<ms>-<seq>`, so `f"{ms}-0"` starts at a point in time. Entries already trimmed are gone.
        """
        try:
            reply = self.client.xread({STREAM: after_id}, count=count)
        except redis.RedisError as exc:
            raise BufferUnavailable(str(exc)) from exc
        entries = reply[0][1] if reply else []
        return [(eid.decode(), fields[b"b"]) for eid, fields in entries if b"b" in fields]


class InProcessBuffer:
    """The embedded default's buffer: same contract, in memory (data in flight is lost with the process)."""

    def __init__(self, reclaim_idle_ms: int, max_entries: int):
        self.reclaim_idle_ms = reclaim_idle_ms
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._new: dict[str, bytes] = {}
        self._pending: dict[str, tuple[str, float, bytes]] = {}  # id -> (consumer, delivered_at, payload)
        self._last_ms, self._seq = 0, 0
        # Recent entries for live views (`tail`), acknowledged or not; bounded like a trimmed stream.
        self._recent: deque[tuple[tuple[int, int], str, bytes]] = deque(maxlen=TAIL_KEEP)

    def append(self, payload: bytes) -> str:
        with self._lock:
            held = len(self._new) + len(self._pending)
            if held >= self.max_entries:
                raise BufferFull(held, self.max_entries)
            ms = int(time.time() * 1000)
            self._seq = self._seq + 1 if ms <= self._last_ms else 0
            self._last_ms = max(ms, self._last_ms)
            entry_id = f"{self._last_ms}-{self._seq}"
            self._new[entry_id] = payload
            self._recent.append(((self._last_ms, self._seq), entry_id, payload))
            return entry_id

    def claim(self, consumer: str, count: int) -> list[tuple[str, bytes]]:
        now = time.monotonic()
        with self._lock:
            stale = [eid for eid, (_, at, _) in self._pending.items() if (now - at) * 1000 >= self.reclaim_idle_ms]
            chosen = [(eid, self._pending[eid][2]) for eid in stale[:count]]
            if not chosen:
                chosen = list(self._new.items())[:count]
                for eid, _ in chosen:
                    del self._new[eid]
            for eid, payload in chosen:
                self._pending[eid] = (consumer, now, payload)
            return chosen

    def ack(self, entry_ids: list[str]):
        with self._lock:
            for eid in entry_ids:
                self._pending.pop(eid, None)

    def depth(self) -> dict:
        with self._lock:
            return {"pending": len(self._pending), "lag": len(self._new), "length": len(self._new) + len(self._pending)}

    def trim(self):
        """Acknowledged entries are already gone."""

    def tail(self, after_id: str, count: int) -> list[tuple[str, bytes]]:
        """Up to `count` of the last TAIL_KEEP entries after `after_id` (same contract as RedisBuffer.tail)."""
        after = _id_key(after_id)
        with self._lock:
            return [(eid, payload) for key, eid, payload in self._recent if key > after][:count]


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@cache
def get_buffer() -> RedisBuffer | InProcessBuffer:
    if settings.REDIS_URL:
        from config.redis_client import get_redis

        return RedisBuffer(get_redis(), settings.TELEMETRY_RECLAIM_IDLE_MS, settings.TELEMETRY_BUFFER_MAX_ENTRIES)
    return InProcessBuffer(settings.TELEMETRY_RECLAIM_IDLE_MS, settings.TELEMETRY_BUFFER_MAX_ENTRIES)
