"""A part FuseDC needs is down (PostgreSQL, Redis): answer 503 with Retry-After, not a 500.

Django turns any exception a view raises into a 500; a lost database or broker connection is not a bug in
the request but a fault that passes, so clients (and load balancers) should retry. Pages get a short
HTML note, the API and JSON clients the API's error body. Nothing was accepted when this answers:
the request's transaction (if any) did not commit.
"""

import logging

import redis
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse
from kombu.exceptions import OperationalError as BrokerError

log = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = 10
FAULTS = {
    "database": (OperationalError, InterfaceError),
    "redis": (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, BrokerError),
}


def fault_of(exc: BaseException) -> str | None:
    """Which part is down, judging by the exception (or what it was raised from), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        for part, types in FAULTS.items():
            if isinstance(exc, types) and not (part == "database" and _is_query_error(exc)):
                return part
        exc = exc.__cause__ or exc.__context__
    return None


def _is_query_error(exc: DatabaseError) -> bool:
    # An OperationalError can also be a query's own problem (e.g. a lock timeout); those have a SQLSTATE
    # outside connection exceptions (class 08) and operator intervention / shutdown (57P).
    sqlstate = getattr(getattr(exc, "__cause__", None), "sqlstate", None)
    return bool(sqlstate) and not sqlstate.startswith(("08", "57P"))


def unavailable(part: str, request) -> HttpResponse:
    message = f"{part} is unavailable; nothing was changed. Retry after {RETRY_AFTER_SECONDS} s."
    if request.path.startswith("/api/") or "json" in request.headers.get("Accept", ""):
        response = JsonResponse({"code": f"{part}_unavailable", "message": message}, status=503)
    else:
        response = HttpResponse(f"<!doctype html><title>FuseDC: temporarily unavailable</title><p>{message}</p>",
                                status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


class ServiceUnavailableMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    # Views (and the lazy session and user loading they trigger) raise here; middleware below answers
    # nothing from the database itself.
    def process_exception(self, request, exc):
        part = fault_of(exc)
        if part is None:
            return None
        log.warning("%s unavailable serving %s: %s", part, request.path, exc)
        return unavailable(part, request)
