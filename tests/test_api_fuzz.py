"""Schemathesis fuzzes every operation in the OpenAPI schema (drf-spectacular) against the real app, as an admin
token: no 5xx, and every response conforms to the schema (status code documented, content type, body).

Bounded: a few examples per operation (FUZZ_EXAMPLES, default 5) so CI stays quick; set it higher locally.
Found and fixed by it so far: ids like `null,null` reaching views (500), Django's HTML 404 under /api/,
an undecodable cursor answered 404, and error statuses missing from the schema.
"""

import os

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)


def _schema() -> dict:
    """The OpenAPI document `/api/schema/` serves, built in-process (the endpoint needs a signed-in caller, and no
    user exists while this module is imported)."""
    import json

    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.renderers import OpenApiJsonRenderer

    return json.loads(OpenApiJsonRenderer().render(SchemaGenerator().get_schema(request=None, public=True)))


app = get_wsgi_application()
schema = schemathesis.openapi.from_dict(_schema())
schema.app = app  # the cases call the real WSGI application
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "5"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def in_test_transaction():
    """Keep the WSGI app on the test's connection and transaction, as Django's test client does (a request
    normally closes old connections when it starts and finishes)."""
    from django.core import signals
    from django.db import close_old_connections

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def admin_token(db, make_user, in_test_transaction):
    from datetime import timedelta

    from django.contrib.auth.models import Group
    from django.utils import timezone

    from facility import facility_file
    from facility.models import ApiToken
    from facility.twin import synthetic_facility

    # A small facility: every kind of object exists, and each operation's set-up stays quick.
    small = synthetic_facility(air_racks=1, air_nodes_per_rack=1, liquid_racks=1, liquid_nodes_per_rack=1, crahs=1,
                               cdus=1)
    facility_file.import_facility(facility_file.parse(facility_file.dump(small)))
    user = make_user("fuzzer", "admin", "operator", "approver", "viewer")
    token = ApiToken(user=user, name="fuzz", expires_at=timezone.now() + timedelta(days=1))
    raw = token.issue()
    token.save()
    token.roles.set(Group.objects.filter(user=user))
    return raw


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_api_fuzz(case, admin_token):
    case.call_and_validate(headers={"Authorization": f"Bearer {admin_token}"}, checks=CHECKS)
