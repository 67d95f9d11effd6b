"""Access for integrations and people: scoped, expiring, revocable API tokens; login lockout."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from facility import facility_file
from facility.management.commands.seed_demo import DEMO_FILE
from facility.models import ApiToken, Setpoint

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo(db):
    facility_file.import_facility(facility_file.parse(DEMO_FILE.read_text()))


def _create_token(client, user, *roles, days=30):
    from django.contrib.auth.models import Group

    client.force_login(user)
    pks = [Group.objects.get(name=r).pk for r in roles]
    response = client.post(reverse("facility:api-tokens"), {"name": "grafana", "roles": pks,
                                                             "expires_in_days": days})
    client.logout()
    return response


def _api(client, token, method="get", path="/api/v1/gpus/", **kwargs):
    return getattr(client, method)(path, HTTP_AUTHORIZATION=f"Bearer {token}", **kwargs)


def test_token_is_shown_once_stored_hashed_and_scoped_to_roles(client, make_user, demo):
    admin = make_user("alice", "admin", "viewer")
    response = _create_token(client, admin, "viewer")
    assert response.status_code == 200
    token = response.context["new_token"]
    assert token.startswith("fdu_") and token.encode() in response.content
    stored = ApiToken.objects.get(user=admin)
    assert token not in (stored.token_hash, stored.token_prefix)
    assert _api(client, token).status_code == 200
    point = Setpoint.objects.get(cooling_unit__name="crah-a1")
    patch = {"path": f"/api/v1/setpoints/{point.pk}/", "data": {"max_step": 0.5}, "content_type": "application/json"}
    assert _api(client, token, "patch", **patch).status_code == 403  # admin user, but a viewer-scoped token
    admin_token = _create_token(client, admin, "admin").context["new_token"]
    assert _api(client, admin_token, "patch", **patch).status_code == 200
    client.force_login(admin)
    assert token.encode() not in client.get(reverse("facility:api-tokens")).content  # never shown again


def test_token_cannot_carry_roles_its_user_lacks(client, make_user):
    viewer = make_user("bob", "viewer")
    response = _create_token(client, viewer, "admin")
    assert response.status_code == 400 and "Choose at least one of your roles" in response.content.decode()
    assert not ApiToken.objects.exists()


def test_expired_and_revoked_tokens_are_refused(client, make_user, demo):
    user = make_user("carol", "viewer")
    token = _create_token(client, user, "viewer").context["new_token"]
    assert _api(client, token).status_code == 200
    ApiToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert _api(client, token).status_code == 401
    ApiToken.objects.update(expires_at=timezone.now() + timedelta(days=1))
    client.force_login(user)
    client.post(reverse("facility:api-tokens"), {"revoke": ApiToken.objects.get().pk})
    client.logout()
    response = _api(client, token)
    assert response.status_code == 401 and response["WWW-Authenticate"] == "Bearer"


def test_api_without_credentials_is_401(client, demo):
    response = client.get("/api/v1/gpus/")
    assert response.status_code == 401 and response["WWW-Authenticate"] == "Bearer"


def test_repeated_login_failures_lock_the_account(client, make_user):
    from axes.models import AccessAttempt

    user = make_user("dave", "viewer")
    codes = [client.post(reverse("login"), {"username": "dave", "password": "wrong"}).status_code for _ in range(5)]
    assert codes == [200, 200, 200, 200, 429]  # the fifth failure locks
    locked = client.post(reverse("login"), {"username": "dave", "password": user.raw_password})
    assert locked.status_code == 429
    assert AccessAttempt.objects.get(username="dave").failures_since_start >= 5
    other = make_user("erin", "viewer")  # other accounts are not affected
    assert client.post(reverse("login"), {"username": "erin", "password": other.raw_password}).status_code == 302


def test_sign_ins_sign_outs_failures_and_token_use_are_audited(client, make_user, demo):
    from control.models import AuditAction, AuditEntry

    user = make_user("dora", "viewer")
    assert client.post(reverse("login"), {"username": "dora", "password": "wrong"}).status_code == 200
    client.post(reverse("login"), {"username": "dora", "password": user.raw_password})
    client.post(reverse("logout"))
    access = [AuditAction.LOGIN, AuditAction.LOGIN_FAILED, AuditAction.LOGOUT]
    entries = list(AuditEntry.objects.filter(action__in=access).order_by("id").values_list("action", "actor_label",
                                                                                           "actor"))
    assert entries == [(AuditAction.LOGIN_FAILED, "dora", None), (AuditAction.LOGIN, "dora", user.pk),
                           (AuditAction.LOGOUT, "dora", user.pk)]
    failed = AuditEntry.objects.get(action=AuditAction.LOGIN_FAILED)
    assert "wrong" not in str(failed.data) and failed.data["ip"] == "127.0.0.1"

    token = _create_token(client, user, "viewer").context["new_token"]
    for _ in range(3):  # a burst of requests is one entry (once per token per minute)
        assert _api(client, token).status_code == 200
    used = AuditEntry.objects.filter(action=AuditAction.TOKEN_USED)
    assert used.count() == 1
    entry = used.get()
    assert entry.actor == user and "/api/v1/gpus/" in entry.message and token not in entry.message
    assert entry.data["token_prefix"] == ApiToken.objects.get().token_prefix
    ApiToken.objects.update(last_used_at=timezone.now() - timedelta(minutes=2))
    _api(client, token)
    assert used.count() == 2
    # The log is append-only through the API too: no write methods on audit entries.
    client.force_login(make_user("erin", "admin"))
    # (403: no role holds a change or delete permission on it; the read-only viewset has no such method either.)
    assert client.delete(f"/api/v1/audit-entries/{entry.pk}/").status_code == 403
    assert client.patch(f"/api/v1/audit-entries/{entry.pk}/", {}, content_type="application/json").status_code == 403
    assert AuditEntry.objects.filter(pk=entry.pk).exists()


def test_token_form_refuses_crafted_ids_with_400(client, make_user):
    viewer = make_user("bob", "viewer")
    client.force_login(viewer)
    url = reverse("facility:api-tokens")
    response = client.post(url, {"revoke": "abc"})
    assert response.status_code == 400 and "is not a token id" in response.content.decode()
    response = client.post(url, {"name": "grafana", "roles": ["x"], "expires_in_days": 30})
    assert response.status_code == 400 and "Choose at least one of your roles" in response.content.decode()
    assert not ApiToken.objects.exists()


def test_admin_token_actions_need_the_change_permission(client, make_user, demo):
    """Django admin offers an action with no `permissions` to anyone who may see the list, and every role may."""
    from telemetry.models import Source
    from tests.telemetry_helpers import make_source

    source, source_token = make_source("dcgm")
    owner = make_user("olga", "operator")
    token = _create_token(client, owner, "operator").context["new_token"]
    stored = ApiToken.objects.get(user=owner)

    client.force_login(make_user("vic", "viewer", "operator", "approver"))
    for path, action, pk in (("/admin/telemetry/source/", "reissue", source.pk),
                             ("/admin/telemetry/source/", "revoke", source.pk),
                             ("/admin/facility/apitoken/", "revoke", stored.pk)):
        listing = client.get(path)
        assert listing.status_code == 200 and f'value="{action}"' not in listing.content.decode()
        client.post(path, {"action": action, "_selected_action": [pk], "index": 0})
    assert Source.authenticate(source_token) is not None  # neither reissued nor revoked
    assert _api(client, token).status_code == 200

    client.force_login(make_user("erin", "admin"))  # facility.* : may revoke API tokens
    assert 'value="revoke"' in client.get("/admin/facility/apitoken/").content.decode()
    client.post("/admin/facility/apitoken/", {"action": "revoke", "_selected_action": [stored.pk], "index": 0})
    client.logout()
    assert _api(client, token).status_code == 401
    # A revoked token cannot be brought back through its change form.
    client.force_login(make_user("frank", "admin"))
    form = client.get(f"/admin/facility/apitoken/{stored.pk}/change/").content.decode()
    assert 'name="revoked_at' not in form


def test_an_admin_manages_roles_but_cannot_make_a_superuser(client, make_user, django_user_model):
    from django.contrib.auth.models import Group, Permission

    admin_user = make_user("erin", "admin")
    root = django_user_model.objects.create_superuser("root", password="x-" + "y" * 20)
    client.force_login(admin_user)
    url = f"/admin/auth/user/{admin_user.pk}/change/"
    form = client.get(url).content.decode()
    assert 'name="is_superuser"' not in form and 'name="user_permissions"' not in form and 'name="groups"' in form
    approve = Permission.objects.get(codename="approve_setpointchange")
    client.post(url, {"username": "erin", "is_active": "on", "is_staff": "on", "is_superuser": "on",
                      "groups": [Group.objects.get(name="admin").pk], "user_permissions": [approve.pk],
                      "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00"})
    admin_user.refresh_from_db()
    assert not admin_user.is_superuser and not admin_user.user_permissions.exists()
    # A superuser's account (and password) is out of an admin's reach.
    shown = client.get(f"/admin/auth/user/{root.pk}/change/")  # read-only: admins have auth.view_user
    assert shown.status_code == 200 and 'name="username"' not in shown.content.decode()
    assert client.get(f"/admin/auth/user/{root.pk}/password/").status_code == 403
    assert client.post(f"/admin/auth/user/{root.pk}/delete/", {"post": "yes"}).status_code == 403
    assert django_user_model.objects.filter(pk=root.pk, is_superuser=True).exists()


def test_api_schema_and_docs_need_a_signed_in_caller_or_a_token(client, make_user):
    for url in ("/api/schema/", "/api/docs/", "/api/redoc/"):
        assert client.get(url).status_code in (401, 403), url
    token = _create_token(client, make_user("ivy", "viewer"), "viewer").context["new_token"]
    schema = _api(client, token, path="/api/schema/?format=json")
    assert schema.status_code == 200 and "/api/v1/setpoint-changes/" in schema.json()["paths"]
