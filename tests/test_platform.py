"""The platform under the product: healthz, a real Celery worker over Redis, production settings."""

import os
import secrets
import subprocess
import sys

import pytest
from django.test import override_settings

from control.tests.factories import free_port
from tests.conftest import REPO


@pytest.mark.django_db(transaction=True)
def test_celery_round_trip_through_redis(celery_worker):
    from facility.models import Site
    from facility.tasks import probe

    Site.objects.create(slug="s1", name="Site one")
    for queue in ("ingest", "inference", "control", "default"):
        answer = probe.apply_async(queue=queue).get(timeout=20)
        assert answer == {"worker": celery_worker["hostname"], "sites": 1}


@pytest.mark.django_db(transaction=True)
def test_healthz_deep_round_trips_every_required_queue(client, role_client, celery_worker):
    assert client.get("/healthz?deep=1").status_code == 403  # anonymous: no probes through every queue
    client = role_client("viewer")
    with override_settings(HEALTHZ_REQUIRED_QUEUES=["ingest", "inference", "control"]):
        body = client.get("/healthz?deep=1").json()
    assert body["checks"]["task_round_trip"]["answered"] == dict.fromkeys(
        ["ingest", "inference", "control"], celery_worker["hostname"]
    )


@pytest.mark.django_db(transaction=True)
def test_healthz_reports_database_redis_and_workers(client, role_client, celery_worker):
    anonymous = client.get("/healthz")  # a load balancer's view: each part's ok, no names
    assert anonymous.status_code == 200 and anonymous.json() == {
        "status": "ok", "checks": {"database": {"ok": True}, "redis": {"ok": True}, "celery": {"ok": True}}}
    response = role_client("viewer").get("/healthz")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"] == body["checks"]["database"] | {"ok": True, "vendor": "postgresql"}
    hostnames = [w["hostname"] for w in body["checks"]["celery"]["workers"]]
    assert celery_worker["hostname"] in hostnames


@pytest.mark.django_db
def test_healthz_503_when_a_required_queue_has_no_worker(role_client, redis_client):
    with override_settings(HEALTHZ_REQUIRED_QUEUES=["no-such-queue"]):
        response = role_client("viewer").get("/healthz")
    assert response.status_code == 503
    assert response["Retry-After"]
    assert "no-such-queue" in response.json()["checks"]["celery"]["error"]


@pytest.mark.django_db
def test_healthz_503_when_redis_is_unreachable(client):
    from config.redis_client import get_redis

    get_redis.cache_clear()
    try:
        with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
            response = client.get("/healthz")
    finally:
        get_redis.cache_clear()
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["redis"]["ok"] is False and body["checks"]["database"]["ok"] is True


def test_check_deploy_is_clean_under_production_settings():
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}  # never set in deployment
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.production",
        SECRET_KEY=secrets.token_urlsafe(64),
        ALLOWED_HOSTS="fusedc.example.com",
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres",
        REDIS_URL="redis://127.0.0.1:6379/15",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_settings_refuse_to_start_without_secrets():
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL")}
    env["DJANGO_SETTINGS_MODULE"] = "config.settings.production"
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0 and "SECRET_KEY" in result.stderr


def test_openapi_schema_builds_without_warnings():
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="config.settings.test")
    result = subprocess.run(
        [sys.executable, "manage.py", "spectacular", "--validate", "--fail-on-warn", "--file", os.devnull],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_embedded_demo_serves_with_its_in_process_workers(tmp_path):
    """`make demo`'s path on the embedded default (SQLite, no Redis, in-process beat and twin): telemetry is
    stored by the in-process writer, rolled up, and no scheduled task fails (each must be registered)."""
    import json
    import sqlite3
    import time
    import urllib.request

    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env.update(FUSEDC_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="config.settings.local")
    manage = [sys.executable, "manage.py"]
    for command in (["migrate", "--noinput", "-v", "0"], ["seed_demo", "--no-users"]):
        subprocess.run([*manage, *command], cwd=REPO, env=env, check=True, capture_output=True, timeout=300)
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        server = subprocess.Popen([*manage, "serve", "--port", str(port), "--backfill-minutes", "3"], cwd=REPO,
                                  env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        db = sqlite3.connect(tmp_path / "fusedc.sqlite3", timeout=30)
        deadline, stored, rolled = time.monotonic() + 120, 0, 0
        while time.monotonic() < deadline and not (stored > 256 * 60 and rolled):
            time.sleep(2)
            stored = db.execute("SELECT COUNT(*) FROM telemetry_gpusample").fetchone()[0]
            rolled = db.execute("SELECT COUNT(*) FROM telemetry_gpurollup").fetchone()[0]
        health = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10))
    finally:
        server.terminate()
        server.wait(timeout=30)
    text = log.read_text()
    import re

    # Each failure: the task's name and the exception line of its traceback.
    failures = re.findall(r"in-process task (\S+) failed\n(?:.*\n){0,40}?"
                          r"(\w+(?:\.\w+)*(?:Error|Exception|NotRegistered)\b.*)", text)
    assert not failures, failures
    assert stored > 256 * 60 and rolled > 0
    # (Anonymous, so each part's ok only; the rows stored and rolled up with no Redis are the in-process workers.)
    assert health == {"status": "ok", "checks": {part: {"ok": True} for part in ("database", "redis", "celery")}}

