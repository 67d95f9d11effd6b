"""One Redis client per process for FuseDC's own keys (not Celery's or the channel layer's)."""

from functools import cache

import redis
from django.conf import settings


@cache
def get_redis() -> redis.Redis:
    if not settings.REDIS_URL:
        raise RuntimeError("REDIS_URL is not set: the embedded default runs without Redis")
    # Short timeouts: a request must not hang on a dead Redis; callers turn errors into 503s.
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
