"""How telemetry sources authenticate (their own API tokens) and how fast they may send."""

from django.utils import timezone
from rest_framework import authentication, exceptions, permissions, throttling

from telemetry.models import Source


class SourceTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer fdc_…`: the request is made by a telemetry source (request.auth)."""

    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1").split()
        if not header or header[0] != self.keyword:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Authorization header must be 'Bearer <token>'.")
        source = Source.authenticate(header[1])
        if source is None:
            raise exceptions.AuthenticationFailed("Unknown or revoked source token.")
        Source.objects.filter(pk=source.pk).update(last_used_at=timezone.now())
        return (None, source)

    def authenticate_header(self, request):
        return self.keyword


class IsTelemetrySource(permissions.BasePermission):
    message = "A telemetry source token is required (Authorization: Bearer fdc_…)."

    def has_permission(self, request, view):
        return isinstance(request.auth, Source)


class SourceRateThrottle(throttling.SimpleRateThrottle):
    """Per-token limit: the source's own `rate_limit_per_minute` (0 disables it)."""

    scope = "telemetry-source"

    def allow_request(self, request, view):
        source = request.auth
        if not isinstance(source, Source) or source.rate_limit_per_minute == 0:
            return True
        self.rate = f"{source.rate_limit_per_minute}/min"
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)

    def get_rate(self):
        return None  # set per source in allow_request

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": request.auth.pk}
