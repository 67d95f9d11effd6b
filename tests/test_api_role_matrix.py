"""Every REST endpoint against every role (in the spirit of NetBox's API test cases).

Endpoints are discovered from the URL configuration, so a new endpoint joins the matrix without anyone
remembering to add it: anonymous → 401, a user without a role → 403, every role reads (2xx), and only roles
holding the change permission may write (an empty PATCH, which changes nothing, must be 2xx for them and 403
for the others).
"""

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from facility import facility_file
from facility.management.commands.seed_demo import DEMO_FILE
from facility.roles import ROLES

pytestmark = pytest.mark.django_db

# Query strings an endpoint needs to answer a read (required parameters).
READ_PARAMS = {
    "telemetry/series": {"metrics": "DCGM_FI_DEV_GPU_TEMP", "gpus": "a-r01-n1/0"},
}
# Endpoints that are not read by people with a role: ingest (source tokens) and the schema/docs.
NOT_ROLE_READ = ("telemetry/samples", "telemetry/prometheus", "telemetry/redfish")


def _api_list_routes() -> list[str]:
    """Paths under /api/v1/ that list or query something (no detail routes, no format suffixes)."""
    routes = []

    def walk(patterns, prefix=""):
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + str(p.pattern))
            elif isinstance(p, URLPattern):
                route = (prefix + str(p.pattern)).replace("^", "").replace("$", "")
                if route.startswith("api/v1/") and "<" not in route and "(?P" not in route:
                    routes.append(route)
    walk(get_resolver().url_patterns)
    return sorted({r for r in routes if r.rstrip("/") != "api/v1" and not r.rstrip("/").endswith(NOT_ROLE_READ)})


ROUTES = _api_list_routes()
WRITABLE = ["sites", "halls", "cooling-loops", "cooling-units", "racks", "nodes", "gpus", "setpoints"]


@pytest.fixture
def demo(db):
    facility_file.import_facility(facility_file.parse(DEMO_FILE.read_text()))


def _params(route):
    key = route.removeprefix("api/v1/").rstrip("/")
    return READ_PARAMS.get(key, {})


def test_the_matrix_covers_every_api_area():
    areas = {r.removeprefix("api/v1/").split("/")[0] for r in ROUTES}
    assert {"sites", "gpus", "setpoints", "telemetry", "setpoint-changes", "audit-entries", "inference"} <= areas


@pytest.mark.parametrize("route", ROUTES)
def test_reads_by_role(route, client, make_user, demo):
    path = "/" + route
    assert client.get(path, _params(route)).status_code == 401, "anonymous"
    client.force_login(make_user("nobody"))
    assert client.get(path, _params(route)).status_code == 403, "no role"
    for role in ROLES:
        client.force_login(make_user(f"u-{role}", role))
        response = client.get(path, _params(route))
        assert 200 <= response.status_code < 300, (role, response.status_code, response.content[:300])


@pytest.mark.parametrize("resource", WRITABLE)
def test_writes_by_role(resource, client, make_user, demo):
    from django.contrib.auth.models import Group

    client.force_login(make_user("lister", "viewer"))
    first = client.get(f"/api/v1/{resource}/", {"limit": 1}).json()["results"][0]
    key = first.get("slug") if resource == "sites" else first["id"]
    path = f"/api/v1/{resource}/{key}/"
    model = {"cooling-loops": "coolingloop", "cooling-units": "coolingunit"}.get(resource, resource.rstrip("s"))
    for role in ROLES:
        client.force_login(make_user(f"w-{role}", role))
        allowed = Group.objects.get(name=role).permissions.filter(codename=f"change_{model}").exists()
        status = client.patch(path, {}, content_type="application/json").status_code
        assert (200 <= status < 300) if allowed else status == 403, (role, status)


def test_inventory_writes_the_database_would_refuse_get_400_or_409(client, make_user, demo):
    from facility.models import CoolingLoop, Setpoint

    client.force_login(make_user("ada", "admin"))
    setpoint = Setpoint.objects.first()
    for field, value in (("max_step", 0), ("max_rate_per_minute", -1)):
        r = client.patch(f"/api/v1/setpoints/{setpoint.pk}/", {field: value}, content_type="application/json")
        assert r.status_code == 400 and r.json()["errors"][0]["item"] == field, r.json()
    loop = CoolingLoop.objects.filter(supplied_by__isnull=False).first()
    r = client.delete(f"/api/v1/cooling-loops/{loop.pk}/")
    assert r.status_code == 409 and r.json()["code"] == "conflict", r.json()
    assert "still referenced by" in r.json()["message"] and "cooling unit" in r.json()["message"]
    assert CoolingLoop.objects.filter(pk=loop.pk).exists()
