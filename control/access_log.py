"""Sign-ins, sign-outs, failed sign-ins and API token use, appended to the audit log beside every setpoint
transition (DESIGN.md: one append-only log of who did what). Connected in ControlConfig.ready."""

from django.contrib.auth import signals as auth_signals
from django.dispatch import receiver

from control.models import AuditAction, AuditEntry
from facility.api.auth import api_token_used


def _client(request) -> dict:
    if request is None:
        return {}
    return {"ip": request.META.get("REMOTE_ADDR", ""), "user_agent": request.META.get("HTTP_USER_AGENT", "")[:200],
            "path": request.path}


@receiver(auth_signals.user_logged_in, dispatch_uid="control.audit_login")
def _logged_in(sender, request, user, **kwargs):
    AuditEntry.objects.create(actor=user, actor_label=user.get_username(), action=AuditAction.LOGIN,
                              message="signed in", data=_client(request))


@receiver(auth_signals.user_logged_out, dispatch_uid="control.audit_logout")
def _logged_out(sender, request, user, **kwargs):
    if user is not None:
        AuditEntry.objects.create(actor=user, actor_label=user.get_username(), action=AuditAction.LOGOUT,
                                  message="signed out", data=_client(request))


@receiver(auth_signals.user_login_failed, dispatch_uid="control.audit_login_failed")
def _login_failed(sender, credentials, request=None, **kwargs):
    # The name tried, never the password (Django already masks it in `credentials`; we do not keep it at all).
    username = str(credentials.get("username", ""))[:150]
    AuditEntry.objects.create(actor=None, actor_label=username or "(no name)", action=AuditAction.LOGIN_FAILED,
                              message="sign-in failed", data=_client(request))


@receiver(api_token_used, dispatch_uid="control.audit_token_used")
def _token_used(sender, token, request, **kwargs):
    AuditEntry.objects.create(
        actor=token.user, actor_label=token.user.get_username(), action=AuditAction.TOKEN_USED,
        subject=f"API token {token.name}"[:200],
        message=f"API token {token.name!r} ({token.token_prefix}…) used: {request.method} {request.path}",
        data={"token_id": token.pk, "token_prefix": token.token_prefix, **_client(request)})
