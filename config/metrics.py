"""`/metrics`: FuseDC's own health in Prometheus format, so existing Prometheus/Grafana stacks can watch it.

Request rates and latencies are per process (scrape each ASGI server, as usual for Prometheus). Everything
else is read at scrape time from the shared parts (Redis, the database), so any process answers for all:
ingest buffer depth and lag, Celery queue depths, worker heartbeats, rollup lag. Access: a bearer token
(`METRICS_TOKEN`) for scrapers, or a signed-in staff user.
"""

from __future__ import annotations

import logging
import secrets
import time
from datetime import timedelta

from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

log = logging.getLogger(__name__)
REQUESTS = Counter("fusedc_http_requests", "HTTP requests served by this process", ["method", "route", "status"])
LATENCY = Histogram(
    "fusedc_http_request_duration_seconds", "HTTP request latency in this process", ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
QUEUES = ("ingest", "inference", "control", "default")


class RequestMetricsMiddleware:
    """Counts and times every request by its URL pattern (not the raw path, which would explode cardinality)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        route = match.route if match and match.route else "unmatched"
        LATENCY.labels(request.method, route).observe(time.perf_counter() - started)
        REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        return response


class SharedStateCollector:
    """Gauges read at scrape time from Redis and the database."""

    def collect(self):
        from telemetry.buffer import BufferUnavailable, get_buffer

        up = GaugeMetricFamily("fusedc_component_up", "1 when the component answered this scrape", labels=["part"])
        try:
            depth = get_buffer().depth()
            up.add_metric(["buffer"], 1)
            buffer = GaugeMetricFamily("fusedc_ingest_buffer_entries", "Telemetry batches in the buffer",
                                       labels=["state"])
            buffer.add_metric(["pending"], depth["pending"])  # claimed by a writer, not yet stored
            buffer.add_metric(["undelivered"], depth["lag"])  # not yet claimed
            yield buffer
            if depth.get("oldest_pending_age_seconds") is not None:
                yield GaugeMetricFamily(
                    "fusedc_ingest_oldest_pending_seconds", "Age of the oldest batch not yet stored",
                    value=depth["oldest_pending_age_seconds"],
                )
        except (BufferUnavailable, Exception):
            log.warning("metrics: the telemetry buffer did not answer", exc_info=True)
            up.add_metric(["buffer"], 0)
        if settings.REDIS_URL:
            try:
                yield from self._redis_metrics()
                up.add_metric(["redis"], 1)
            except Exception:
                up.add_metric(["redis"], 0)
        try:
            yield from self._database_metrics()
            up.add_metric(["database"], 1)
        except Exception:
            up.add_metric(["database"], 0)
        yield up

    @staticmethod
    def _redis_metrics():
        from config.heartbeat import live_workers
        from config.redis_client import get_redis

        client = get_redis()
        queues = GaugeMetricFamily("fusedc_celery_queue_length", "Tasks waiting in each Celery queue", labels=["queue"])
        for queue in QUEUES:
            queues.add_metric([queue], client.llen(queue))
        yield queues
        age = GaugeMetricFamily("fusedc_worker_heartbeat_age_seconds", "Seconds since each worker's heartbeat",
                                labels=["worker"])
        done = GaugeMetricFamily("fusedc_worker_tasks_processed", "Tasks each worker has processed",
                                 labels=["worker"])
        for worker in live_workers():
            age.add_metric([worker["hostname"]], worker["age_seconds"])
            done.add_metric([worker["hostname"]], worker["tasks_processed"])
        yield age
        yield done

    @staticmethod
    def _database_metrics():
        from django.core.cache import cache
        from django.utils import timezone

        from inference.models import InferenceStats
        from telemetry.ingest import ACCEPTED_KEY
        from telemetry.models import RollupState

        yield CounterMetricFamily("fusedc_ingest_samples_accepted", "Telemetry samples accepted by ingest",
                                  value=cache.get(ACCEPTED_KEY, 0))
        recent = timezone.now() - timedelta(minutes=5)
        stats = list(InferenceStats.objects.filter(updated_at__gte=recent))
        for name, help_text, field in (
            ("fusedc_inference_step_seconds", "Model time of the serving worker's last step", "step_seconds"),
            ("fusedc_inference_streams", "GPU streams with a latent cache in the serving worker", "streams"),
            ("fusedc_inference_cache_bytes", "Bytes of latent cache the serving worker holds", "cache_bytes"),
            ("fusedc_inference_tokens_per_second", "Samples per second of the last serving step", "tokens_per_second"),
        ):
            family = GaugeMetricFamily(name, help_text, labels=["worker"])
            for row in stats:
                family.add_metric([row.worker], getattr(row, field))
            yield family

        lag = GaugeMetricFamily("fusedc_rollup_lag_seconds", "Seconds the rollups trail the clock",
                                labels=["resolution"])
        for resolution, done_until in RollupState.objects.values_list("resolution", "done_until"):
            lag.add_metric([f"{resolution}s"], time.time() - done_until.timestamp())
        yield lag


_shared = CollectorRegistry(auto_describe=False)
_shared.register(SharedStateCollector())


def _allowed(request) -> bool:
    token = settings.METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and header.startswith("Bearer ") and secrets.compare_digest(header[7:], token):
        return True
    return request.user.is_authenticated and request.user.is_staff


@require_GET
def metrics(request):
    if not _allowed(request):
        response = HttpResponse("metrics need a bearer token (METRICS_TOKEN) or a staff session\n", status=401,
                                content_type="text/plain")
        response["WWW-Authenticate"] = "Bearer"
        return response
    body = generate_latest(REGISTRY) + generate_latest(_shared)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
