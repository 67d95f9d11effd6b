"""Roles: the groups and their permissions, and how pages, admin and the API treat each role."""

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from facility import facility_file
from facility.management.commands.seed_demo import DEMO_FILE
from facility.roles import ROLES

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo_facility(db):
    facility_file.import_facility(facility_file.parse(DEMO_FILE.read_text()))


def _perms(role):
    return {f"{p.content_type.app_label}.{p.codename}" for p in Group.objects.get(name=role).permissions.all()}


def test_role_groups_exist_from_migrations():
    assert set(Group.objects.values_list("name", flat=True)) >= set(ROLES)


def test_every_role_reads_the_inventory_and_only_admin_edits_it():
    for role in ROLES:
        assert {"facility.view_gpu", "facility.view_setpoint", "facility.view_site"} <= _perms(role)
    for role in ("viewer", "operator", "approver"):
        assert not any(p.startswith("facility.change_") for p in _perms(role))
    assert {"facility.change_setpoint", "facility.add_node", "auth.add_user"} <= _perms("admin")


@pytest.mark.parametrize("role", [*ROLES])
def test_overview_for_each_role(role_client, demo_facility, role):
    response = role_client(role).get(reverse("facility:overview"))
    assert response.status_code == 200
    body = response.content.decode()
    assert "hall-a" in body and "hall-b" in body and "chiller-1" in body
    assert body.count("data-gpu-count>128<") == 2


def test_anonymous_is_sent_to_login(client):
    response = client.get(reverse("facility:overview"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_user_without_a_role_is_refused(client, make_user):
    client.force_login(make_user("nobody"))
    assert client.get(reverse("facility:overview")).status_code == 403


def test_login_and_logout_pages(client, make_user):
    user = make_user("alice", "viewer")
    assert client.get(reverse("login")).status_code == 200
    response = client.post(reverse("login"), {"username": "alice", "password": user.raw_password})
    assert response.status_code == 302 and response["Location"] == reverse("facility:overview")
    assert client.get(reverse("facility:overview")).status_code == 200
    assert client.post(reverse("logout")).status_code == 302
    assert client.get(reverse("facility:overview")).status_code == 302


def test_login_rejects_wrong_password(client, make_user):
    make_user("bob", "viewer")
    response = client.post(reverse("login"), {"username": "bob", "password": "wrong-password"})
    assert response.status_code == 200 and "didn't match" in response.content.decode()


def test_logout_needs_csrf(make_user):
    from django.test import Client

    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(make_user("carol", "viewer"))
    assert csrf_client.post(reverse("logout")).status_code == 403


@pytest.mark.parametrize(
    ("role", "view", "add"),
    [("viewer", 200, 403), ("operator", 200, 403), ("approver", 200, 403), ("admin", 200, 200)],
)
def test_admin_respects_roles(role_client, demo_facility, role, view, add):
    client = role_client(role)
    assert client.get(reverse("admin:facility_gpu_changelist") + "?q=a-r01-n1").status_code == view
    assert client.get(reverse("admin:facility_node_add")).status_code == add


@pytest.mark.parametrize(
    ("role", "read", "write"),
    [(None, 401, 401), ("viewer", 200, 403), ("operator", 200, 403), ("approver", 200, 403), ("admin", 200, 200)],
)
def test_api_respects_roles(role_client, demo_facility, role, read, write):
    client = role_client(role)
    assert client.get("/api/v1/gpus/").status_code == read
    sp = client.get("/api/v1/setpoints/?limit=1") if read == 200 else None
    if sp is not None:
        assert len(sp.json()["results"]) == 1
    from facility.models import Setpoint

    point = Setpoint.objects.get(cooling_unit__name="crah-a1")
    response = client.patch(f"/api/v1/setpoints/{point.pk}/", {"max_step": 0.5}, content_type="application/json")
    assert response.status_code == write


def test_api_never_writes_a_setpoint_value(role_client, demo_facility):
    from facility.models import Setpoint

    point = Setpoint.objects.get(cooling_unit__name="crah-a1")
    role_client("admin").patch(f"/api/v1/setpoints/{point.pk}/", {"value": 26.0}, content_type="application/json")
    point.refresh_from_db()
    assert point.value == 18.0
