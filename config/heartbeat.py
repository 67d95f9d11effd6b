"""Worker liveness: a heartbeat written to Redis from the worker's own event loop.

A worker's PID can outlive its ability to consume (workers have been seen to stop consuming after a
Redis reconnect), so health is judged by a timer that only fires while the consumer loop is running.
"""

import json
import logging
import os
import time

from celery import bootsteps
from celery.worker import state

HEARTBEAT_KEY_PREFIX = "fusedc:worker:"
log = logging.getLogger(__name__)


class WorkerHeartbeat(bootsteps.StartStopStep):
    """Consumer step: every WORKER_HEARTBEAT_INTERVAL s, SET fusedc:worker:<hostname> with a TTL."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        self.tref = None

    def start(self, c):
        from django.conf import settings

        self.interval = settings.WORKER_HEARTBEAT_INTERVAL
        self.ttl = settings.WORKER_HEARTBEAT_TTL
        self.beat(c)
        self.tref = c.timer.call_repeatedly(self.interval, self.beat, (c,), priority=10)

    def stop(self, c):
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None
        try:
            from config.redis_client import get_redis

            get_redis().delete(HEARTBEAT_KEY_PREFIX + c.hostname)
        except Exception:
            log.debug("could not remove heartbeat", exc_info=True)

    def beat(self, c):
        from config.redis_client import get_redis

        payload = {
            "hostname": c.hostname,
            "pid": os.getpid(),
            "queues": sorted(q.name for q in c.task_consumer.queues) if c.task_consumer else [],
            "seen_at": time.time(),
            "tasks_processed": sum(state.total_count.values()),
        }
        try:
            get_redis().set(HEARTBEAT_KEY_PREFIX + c.hostname, json.dumps(payload), ex=self.ttl)
        except Exception:
            log.warning("heartbeat not written", exc_info=True)


def live_workers() -> list[dict]:
    """Workers whose heartbeat has not expired, newest first."""
    from config.redis_client import get_redis

    client = get_redis()
    keys = list(client.scan_iter(HEARTBEAT_KEY_PREFIX + "*", count=100))
    workers = [json.loads(raw) for raw in client.mget(keys) if raw] if keys else []
    now = time.time()
    for worker in workers:
        worker["age_seconds"] = round(now - worker["seen_at"], 1)
    return sorted(workers, key=lambda w: w["age_seconds"])
