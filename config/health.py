"""/healthz: is each part FuseDC needs up? JSON for people and load balancers; 503 when a required part is down.
Anonymous callers get each part's ok and nothing more; signed-in users also the details and `?deep=1`."""

import time

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET


def _timed(check):
    started = time.perf_counter()
    try:
        result = check()
        result.setdefault("ok", True)
    except Exception as exc:
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


def _database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"vendor": connection.vendor}


def _redis():
    from config.redis_client import get_redis

    get_redis().ping()
    return {}


def _celery():
    from config.heartbeat import live_workers

    workers = live_workers()
    served = {queue for worker in workers for queue in worker["queues"]}
    missing = [queue for queue in settings.HEALTHZ_REQUIRED_QUEUES if queue not in served]
    result = {
        "workers": [
            {key: w[key] for key in ("hostname", "queues", "age_seconds", "tasks_processed")} for w in workers
        ],
        "required_queues": settings.HEALTHZ_REQUIRED_QUEUES,
    }
    if missing:
        result.update(ok=False, error=f"no live worker for queue(s): {', '.join(missing)}")
    return result


def _round_trips():
    """?deep=1: send a probe task through every required queue and wait for each answer."""
    from facility.tasks import probe

    pending = {queue: probe.apply_async(queue=queue) for queue in settings.HEALTHZ_REQUIRED_QUEUES}
    answers = {}
    for queue, result in pending.items():
        try:
            answers[queue] = result.get(timeout=5)["worker"]
        except Exception as exc:
            return {"ok": False, "answered": answers, "error": f"queue {queue}: {type(exc).__name__}"}
    return {"answered": answers}


@never_cache
@require_GET
def healthz(request):
    # Load balancers ask anonymously and get each part's ok; the details (error texts that may name hosts and
    # users, worker names) and the deep probe, which makes work for every queue, are for signed-in users.
    signed_in = request.user.is_authenticated
    if request.GET.get("deep") and not signed_in:
        return JsonResponse({"status": "forbidden", "error": "deep=1 needs a signed-in user"}, status=403)
    checks = {"database": _timed(_database)}
    if settings.REDIS_URL:
        checks["redis"] = _timed(_redis)
        checks["celery"] = _timed(_celery) if checks["redis"]["ok"] else {"ok": False, "error": "redis down"}
        if request.GET.get("deep") and checks["celery"]["ok"]:
            checks["task_round_trip"] = _timed(_round_trips)
    else:
        checks["redis"] = {"ok": True, "configured": False}
        checks["celery"] = {"ok": True, "mode": "in-process (embedded default)"}
    healthy = all(check["ok"] for check in checks.values())
    if not signed_in:
        checks = {name: {"ok": check["ok"]} for name, check in checks.items()}
    body = {"status": "ok" if healthy else "unavailable", "checks": checks}
    response = JsonResponse(body, status=200 if healthy else 503)
    if not healthy:
        response["Retry-After"] = "10"
    return response
