"""Who is acting, for audit entries written where no request is at hand (model signals)."""

from contextvars import ContextVar

current_request: ContextVar = ContextVar("fusedc_control_current_request", default=None)


def current_user():
    """The signed-in user of the request being served in this context, or None (workers, shell, anonymous)."""
    request = current_request.get()
    user = getattr(request, "user", None) if request is not None else None
    return user if user is not None and user.is_authenticated else None


class AuditActorMiddleware:
    """Remember the request (not its user: that stays lazy, no query unless an audit entry needs it)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = current_request.set(request)
        try:
            return self.get_response(request)
        finally:
            current_request.reset(token)
