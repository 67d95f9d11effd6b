"""One error body for the whole REST API: `{"code", "message", "errors": [{"item", "reason"}]}`.

`code` is a stable slug (invalid, not_authenticated, permission_denied, not_found, rate_limited, …);
`errors` names each problem's field or item path (`samples[3].value`, `start`) where there is one.
"""

from collections import Counter

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db.models import ProtectedError, RestrictedError
from django.http import Http404, JsonResponse
from django.views import defaults
from rest_framework import exceptions
from rest_framework.views import exception_handler as drf_exception_handler


def _flatten(data, prefix: str = ""):
    if isinstance(data, dict):
        for key, value in data.items():
            name = "" if key == "non_field_errors" else str(key)
            yield from _flatten(value, f"{prefix}.{name}" if prefix and name else prefix or name)
    elif isinstance(data, list) and data and all(isinstance(v, dict | list) for v in data):
        for i, value in enumerate(data):
            yield from _flatten(value, f"{prefix}[{i}]")
    elif isinstance(data, list):
        for value in data:
            yield {"item": prefix or "(request)", "reason": str(value)}
    else:
        yield {"item": prefix or "(request)", "reason": str(data)}


class Conflict(exceptions.APIException):
    status_code = 409
    default_code = "conflict"


def _protected(exc: ProtectedError | RestrictedError) -> Conflict:
    """A delete that other records still depend on (on_delete=PROTECT): 409 naming what depends on it."""
    objects = exc.protected_objects if isinstance(exc, ProtectedError) else exc.restricted_objects
    counts = Counter(str(obj._meta.verbose_name_plural) for obj in objects)
    return Conflict(f"cannot delete: still referenced by {', '.join(f'{n} {what}' for what, n in counts.items())}")


def api_exception_handler(exc, context):
    if isinstance(exc, ProtectedError | RestrictedError):
        exc = _protected(exc)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        errors = list(_flatten(response.data))
        response.data = {"code": "invalid", "message": f"{len(errors)} problem(s) in the request", "errors": errors}
    else:
        code = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
        detail = response.data.get("detail", response.data) if isinstance(response.data, dict) else response.data
        response.data = {"code": code if isinstance(code, str) else "error", "message": str(detail)}
    return response


# Django's own error pages for paths no view handled, in the same body under /api/ (config.urls handler404/500).
def not_found(request, exception=None):
    if request.path.startswith("/api/"):
        return JsonResponse({"code": "not_found", "message": f"no such resource: {request.path}"}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    if request.path.startswith("/api/"):
        return JsonResponse({"code": "server_error", "message": "an unexpected error; it has been logged"},
                            status=500)
    return defaults.server_error(request)
