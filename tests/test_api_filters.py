"""List filtering and ordering across the API: NetBox-style filters, `?ordering=`, cursor pages, and a 400
naming the parameter when a filter value does not parse."""

import pytest

from control import changes
from control.models import AuditEntry, SetpointChange
from facility import facility_file
from facility.management.commands.seed_demo import DEMO_FILE
from facility.models import GPU, CoolingUnit, Hall, Node, Setpoint

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo(db):
    facility_file.import_facility(facility_file.parse(DEMO_FILE.read_text()))


def _all(client, url, **params):
    """Every row of a list, following the cursor."""
    rows, page = [], client.get(url, params).json()
    while True:
        rows += page["results"]
        if not page["next"]:
            return rows
        page = client.get(page["next"]).json()


def test_inventory_filters(demo, role_client):
    client = role_client("viewer")
    liquid = Hall.objects.get(cooling_type="liquid")
    halls = _all(client, "/api/v1/halls/", site="demo", cooling_type="liquid")
    assert [h["id"] for h in halls] == [liquid.pk]
    gpus = _all(client, "/api/v1/gpus/", hall=liquid.pk, limit=50)
    assert len(gpus) == GPU.objects.filter(node__rack__hall=liquid).count() > 50
    node = Node.objects.order_by("hostname").first()
    assert {g["index"] for g in _all(client, "/api/v1/gpus/", hostname=node.hostname)} == set(range(8))
    assert _all(client, "/api/v1/gpus/", site="nowhere") == []
    setpoints = _all(client, "/api/v1/setpoints/", name="supply_air_temperature_setpoint")
    assert setpoints and all(s["name"] == "supply_air_temperature_setpoint" for s in setpoints)


def test_ordering_and_cursor_pages(demo, role_client):
    client = role_client("viewer")
    names = [n["hostname"] for n in _all(client, "/api/v1/nodes/", ordering="-hostname", limit=7)]
    assert names == sorted(Node.objects.values_list("hostname", flat=True), reverse=True)
    ids = [g["id"] for g in _all(client, "/api/v1/gpus/", limit=100)]
    assert ids == sorted(GPU.objects.values_list("pk", flat=True))  # default: by id, no row twice


@pytest.mark.parametrize(("url", "params", "item"), [
    ("/api/v1/gpus/", {"hall": "two"}, "hall"),
    ("/api/v1/halls/", {"cooling_type": "steam"}, "cooling_type"),
    ("/api/v1/setpoint-changes/", {"after": "yesterday"}, "after"),
    ("/api/v1/audit-entries/", {"action": "exploded"}, "action"),
    ("/api/v1/nodes/", {"ordering": "secret_field"}, None),
])
def test_bad_filter_values_are_400_naming_the_parameter(demo, role_client, url, params, item):
    response = role_client("viewer").get(url, params)
    if item is None:  # DRF ignores ordering by fields that are not offered (never sorts by hidden ones)
        assert response.status_code == 200
        return
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] and item in {e["item"] for e in body["errors"]}, body


def test_control_lists_filter_by_state_site_action_and_time(demo, make_user, role_client, monkeypatch):
    from control import envelope

    # Fresh GPU temperatures for the envelope's interlock (the envelope itself is tested in control/tests).
    monkeypatch.setattr(envelope, "read_gpu_temperatures",
                        lambda site_id, gpu_ids, since: dict.fromkeys(gpu_ids, (since + 60, 60.0)))
    operator = make_user("op", "operator")
    approver = make_user("ap", "approver")
    sp = Setpoint.objects.filter(name="supply_air_temperature_setpoint").first()
    first = changes.propose(sp, sp.value + 0.5, user=operator, rationale="warmer")
    changes.deny(first.pk, approver, "not now")
    second = changes.propose(sp, sp.value + 0.5, user=operator, rationale="again")
    client = role_client("viewer")
    pending = _all(client, "/api/v1/setpoint-changes/", state="pending", site="demo")
    assert [c["id"] for c in pending] == [second.pk]
    assert _all(client, "/api/v1/setpoint-changes/", site="elsewhere") == []
    later = SetpointChange.objects.get(pk=second.pk).created_at
    after = _all(client, "/api/v1/setpoint-changes/", after=later.isoformat())
    assert [c["id"] for c in after] == [second.pk]
    denied = _all(client, "/api/v1/audit-entries/", action="denied")
    assert [e["change"] for e in denied] == [first.pk]
    both = _all(client, "/api/v1/audit-entries/", action=["denied", "proposed"], ordering="-at")
    assert len(both) == AuditEntry.objects.filter(action__in=["denied", "proposed"]).count() == 3
    assert [e["at"] for e in both] == sorted((e["at"] for e in both), reverse=True)


def test_malformed_ids_cursors_and_paths_are_4xx_in_the_error_body(demo, role_client):
    client = role_client("approver")
    for path in ("/api/v1/setpoint-changes/null,null/approve/", "/api/v1/gpus/0.5/", "/api/v1/nowhere/"):
        response = client.post(path) if path.endswith("approve/") else client.get(path)
        assert response.status_code == 404 and response.json()["code"] == "not_found", path
    response = client.get("/api/v1/gpus/", {"cursor": "not-a-cursor"})
    assert response.status_code == 400 and response.json()["errors"][0]["item"] == "cursor"


def test_cooling_unit_rules_of_the_model_hold_on_the_api(demo, role_client):
    """What `CoolingUnit.clean` refuses in admin and the facility file is a 400 naming the field on the API too."""
    from facility.models import Site

    client = role_client("admin")
    site, hall_a = Site.objects.get(slug="demo"), Hall.objects.get(name="hall-a")
    other = Site.objects.create(slug="other", name="Other")
    cases = [
        ({"site": site.pk, "hall": None, "name": "fans-x", "kind": "server_fans"}, "hall",
         "Server fans belong to a hall"),
        ({"site": site.pk, "hall": hall_a.pk, "name": "fans-x", "kind": "server_fans"}, "kind",
         "Hall hall-a already has server fans (fans-a)"),
        ({"site": other.pk, "hall": hall_a.pk, "name": "crah-x", "kind": "crah"}, "hall",
         "The hall belongs to another site."),
    ]
    for body, item, reason in cases:
        response = client.post("/api/v1/cooling-units/", body, content_type="application/json")
        assert response.status_code == 400, response.content
        assert {"item": item, "reason": reason[:20]} in [
            {"item": e["item"], "reason": e["reason"][:20]} for e in response.json()["errors"]]
    assert not CoolingUnit.objects.filter(name__in=["fans-x", "crah-x"]).exists()
    fans = CoolingUnit.objects.get(name="fans-a")
    response = client.patch(f"/api/v1/cooling-units/{fans.pk}/", {"capacity_kw": 5.0}, content_type="application/json")
    assert response.status_code == 200, response.content  # the unit itself does not count against its hall
    duty = Setpoint.objects.get(cooling_unit=fans, name="fan_speed_setpoint")
    response = client.patch(f"/api/v1/setpoints/{duty.pk}/", {"allowable_min": 0.0}, content_type="application/json")
    assert response.status_code == 400 and response.json()["errors"][0]["item"] == "allowable_min", response.content
    assert "server fan duty must stay within [0.2, 1]" in response.json()["errors"][0]["reason"]
    duty.refresh_from_db()
    assert duty.allowable_min == 0.4
