"""API tokens for integrators: `Authorization: Bearer fdu_…`, acting as the token's user within its roles."""

from datetime import timedelta

from django.db.models import Q
from django.dispatch import Signal
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from facility.models import ApiToken

# Sent at most once per token per TOKEN_USE_RESOLUTION (the first request after a quiet spell), with
# `token` and `request`: the control app writes it to the audit log. `last_used_at` has the same resolution.
api_token_used = Signal()
TOKEN_USE_RESOLUTION = timedelta(minutes=1)


def scoped(user, allowed: set[str]):
    """The user, but answering has_perm only for permissions the token's roles also grant."""
    user_has_perm = user.has_perm

    def has_perm(perm, obj=None):
        return perm in allowed and user_has_perm(perm, obj)

    # An instance attribute shadows the method for this request's user object only.
    user.has_perm = has_perm
    user.has_perms = lambda perms, obj=None: all(has_perm(p, obj) for p in perms)
    return user


class ApiTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1").split()
        if len(header) != 2 or header[0] != self.keyword or not header[1].startswith(ApiToken.PREFIX):
            return None  # not ours (anonymous, a session, or a telemetry source token)
        token = ApiToken.authenticate(header[1])
        if token is None:
            raise exceptions.AuthenticationFailed("Unknown, expired or revoked API token.")
        now = timezone.now()
        quiet = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - TOKEN_USE_RESOLUTION)
        if ApiToken.objects.filter(quiet, pk=token.pk).update(last_used_at=now):
            api_token_used.send(sender=ApiToken, token=token, request=request)
        return scoped(token.user, token.scope()), token

    def authenticate_header(self, request):
        # Makes DRF answer 401 (not 403) to requests without credentials.
        return self.keyword


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "facility.api.auth.ApiTokenAuthentication"
    name = "apiToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "A personal API token, fdu_… (Account › API tokens)"}
