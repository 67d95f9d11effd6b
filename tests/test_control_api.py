"""Setpoint changes by role on every surface: REST API, the approvals page, Django admin; one error shape."""

import itertools

import pytest
from django.test import Client
from django.urls import reverse

from control import envelope
from control.models import AuditEntry, ChangeState, SetpointChange
from control.tests.factories import build_plant

pytestmark = pytest.mark.django_db
LIST = "/api/v1/setpoint-changes/"
_n = itertools.count()


@pytest.fixture
def plant(monkeypatch):
    # Fresh telemetry for every GPU the envelope asks about (real telemetry is covered in control/tests).
    monkeypatch.setattr(envelope, "read_gpu_temperatures",
                        lambda site_id, gpu_ids, since: dict.fromkeys(gpu_ids, (since + 60, 60.0)))
    return build_plant(f"api{next(_n)}")


@pytest.fixture
def pending(plant, make_user):
    from control import changes

    proposer = make_user(f"proposer-{next(_n)}", "operator")
    return changes.propose(plant.crah_sat, 18.5, user=proposer, rationale="warmer supply air saves fan energy",
                           predicted_effect={"cooling_kw": -3.5, "hottest_gpu_c": 72})


@pytest.mark.parametrize(("role", "list_status", "propose_status"), [
    (None, 401, 401), ("viewer", 200, 403), ("operator", 200, 201), ("approver", 200, 403), ("admin", 200, 201),
])
def test_api_list_and_propose_by_role(role_client, plant, role, list_status, propose_status):
    client = role_client(role)
    assert client.get(LIST).status_code == list_status
    response = client.post(LIST, {"setpoint": plant.crah_sat.pk, "value": 18.5, "rationale": "test"},
                           content_type="application/json")
    assert response.status_code == propose_status
    if propose_status == 201:
        assert response.json()["state"] == "pending" and response.json()["to_value"] == 18.5
    else:
        assert "code" in response.json() and "message" in response.json()


@pytest.mark.parametrize(("role", "status", "state"), [
    ("viewer", 403, "pending"), ("operator", 403, "pending"), ("approver", 200, "approved"), ("admin", 200, "approved"),
])
def test_api_approve_by_role(role_client, pending, role, status, state, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks():
        response = role_client(role).post(f"{LIST}{pending.pk}/approve/", {"comment": "looks right"},
                                          content_type="application/json")
    assert response.status_code == status, response.json()
    pending.refresh_from_db()
    assert pending.state == state
    if status == 200:
        assert response.json()["decision_comment"] == "looks right"
    else:
        assert response.json()["code"] == "permission_denied"


def test_api_two_person_rule_deny_cancel_and_errors(client, make_user, plant, django_capture_on_commit_callbacks):
    alice, bob = make_user("alice", "operator", "approver"), make_user("bob", "approver")
    client.force_login(alice)
    created = client.post(LIST, {"setpoint": plant.crah_sat.pk, "value": 40}, content_type="application/json")
    assert created.status_code == 201 and created.json()["to_value"] == 19.0  # clipped: range, then step
    change = created.json()["id"]
    refused = client.post(f"{LIST}{change}/approve/", {}, content_type="application/json")
    assert refused.status_code == 403 and refused.json()["code"] == "two_person_rule"
    client.force_login(bob)
    assert client.post(f"{LIST}{change}/deny/", {"comment": "no"}, content_type="application/json").json()[
        "state"] == "denied"
    again = client.post(f"{LIST}{change}/approve/", {}, content_type="application/json")
    assert again.status_code == 409 and again.json()["code"] == "invalid_state"
    missing = client.post(f"{LIST}999999/approve/", {}, content_type="application/json")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    client.force_login(alice)
    bad = client.post(LIST, {"setpoint": plant.crah_sat.pk, "value": "warm"}, content_type="application/json")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid"
    assert "value" in {e["item"] for e in bad.json()["errors"]}
    wrong_unit = client.post(LIST, {"setpoint": plant.crah_sat.pk, "value": 291, "unit": "kelvin"},
                             content_type="application/json")
    assert wrong_unit.status_code == 422 and wrong_unit.json()["reasons"][0]["code"] == "unit"
    hot = client.post(LIST, {"setpoint": plant.crah_sat.pk, "value": 18.5, "forecast_hottest_gpu_c": 87},
                      content_type="application/json")
    assert hot.status_code == 422 and hot.json()["reasons"][0]["code"] == "thermal_margin"
    own = client.post(LIST, {"setpoint": plant.crah_sat.pk, "value": 18.5}, content_type="application/json").json()
    assert client.post(f"{LIST}{own['id']}/cancel/", {}, content_type="application/json").json()["state"] == "canceled"


def test_api_has_no_edit_or_delete(role_client, pending):
    client = role_client("admin")
    assert client.patch(f"{LIST}{pending.pk}/", {"to_value": 27}, content_type="application/json").status_code == 405
    assert client.delete(f"{LIST}{pending.pk}/").status_code == 405
    entries = client.get("/api/v1/audit-entries/")
    assert entries.status_code == 200 and entries.json()["results"]
    entry = entries.json()["results"][0]["id"]
    assert client.delete(f"/api/v1/audit-entries/{entry}/").status_code in (403, 405)
    assert client.put(f"/api/v1/audit-entries/{entry}/", {}, content_type="application/json").status_code in (403, 405)


PAGE = "/control/approvals/"


@pytest.mark.parametrize(("role", "buttons"), [("viewer", False), ("operator", False), ("approver", True),
                                                ("admin", True)])
def test_page_shows_the_forms_only_to_approvers(role_client, pending, role, buttons):
    response = role_client(role).get(PAGE)
    assert response.status_code == 200
    body = response.content.decode()
    assert "warmer supply air saves fan energy" in body and "cooling_kw" in body
    assert ('data-action="approve"' in body) is buttons


def test_page_hides_approval_from_the_proposer(client, pending):
    client.force_login(pending.proposed_by)
    body = client.get(PAGE).content.decode()
    assert 'data-action="approve"' not in body and "two-person rule" in body and 'data-action="cancel"' in body


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_page_post_is_forbidden_without_the_permission(role_client, pending, role):
    response = role_client(role).post(PAGE, {"change": pending.pk, "decision": "approve"})
    assert response.status_code == 403
    assert SetpointChange.objects.get(pk=pending.pk).state == ChangeState.PENDING


def test_page_approve_and_deny_with_csrf(make_user, pending, plant, django_capture_on_commit_callbacks):
    approver = make_user("carla", "approver")
    csrf = Client(enforce_csrf_checks=True)
    csrf.force_login(approver)
    assert csrf.post(PAGE, {"change": pending.pk, "decision": "approve"}).status_code == 403  # no token
    page = csrf.get(PAGE)
    token = page.cookies["csrftoken"].value
    with django_capture_on_commit_callbacks():
        response = csrf.post(PAGE, {"change": pending.pk, "decision": "approve", "comment": "ok",
                                    "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    pending.refresh_from_db()
    assert pending.state == ChangeState.APPROVED and pending.decision_comment == "ok"
    assert "Approved" in csrf.get(PAGE).content.decode()


def test_anonymous_page_goes_to_login(client):
    response = client.get(PAGE)
    assert response.status_code == 302 and reverse("login") in response["Location"]


def test_admin_actions_and_read_only_audit(client, make_user, pending, django_capture_on_commit_callbacks):
    approver = make_user("dora", "approver")
    client.force_login(approver)
    url = reverse("admin:control_setpointchange_changelist")
    confirm = client.post(url, {"action": "approve_selected", "_selected_action": [pending.pk]})
    assert confirm.status_code == 200 and b"comment" in confirm.content
    with django_capture_on_commit_callbacks():
        client.post(url, {"action": "approve_selected", "_selected_action": [pending.pk], "confirm": "Approve",
                          "comment": "from admin"})
    pending.refresh_from_db()
    assert pending.state == ChangeState.APPROVED and pending.decided_by == approver
    admin = make_user("erin", "admin")
    client.force_login(admin)
    entry = AuditEntry.objects.filter(change=pending).first()
    assert client.get(reverse("admin:control_auditentry_change", args=[entry.pk])).status_code == 200
    assert client.post(reverse("admin:control_auditentry_delete", args=[entry.pk]), {"post": "yes"}).status_code == 403
    assert AuditEntry.objects.filter(pk=entry.pk).exists()
    assert client.get(reverse("admin:control_setpointchange_add")).status_code == 403


def test_viewer_cannot_use_admin_actions(client, make_user, pending):
    client.force_login(make_user("fred", "viewer"))
    url = reverse("admin:control_setpointchange_changelist")
    response = client.post(url, {"action": "approve_selected", "_selected_action": [pending.pk], "confirm": "Approve"})
    assert response.status_code in (200, 302)
    assert SetpointChange.objects.get(pk=pending.pk).state == ChangeState.PENDING


def test_roles_hold_the_control_permissions():
    from django.contrib.auth.models import Group

    def perms(role):
        return {f"{p.content_type.app_label}.{p.codename}" for p in Group.objects.get(name=role).permissions.all()}

    assert {"control.add_setpointchange", "control.run_policy"} <= perms("operator")
    assert "control.approve_setpointchange" not in perms("operator")
    assert "control.approve_setpointchange" in perms("approver") and "control.add_setpointchange" not in perms(
        "approver")
    assert {"control.change_autonomysetting", "control.approve_setpointchange", "control.view_auditentry"} <= perms(
        "admin")
    assert not any(p.startswith(("control.change_audit", "control.delete_audit")) for r in ("admin",)
                   for p in perms(r))
    assert perms("viewer") & {p for p in perms("admin") if p.startswith("control.")} == {
        p for p in perms("admin") if p.startswith("control.view_")}


def test_openapi_schema_builds_without_warnings():
    from django.core.management import call_command

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null")
