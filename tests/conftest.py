"""Fixtures shared by the cross-app tests: role users, a real Celery worker on Redis."""

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def make_user(db, django_user_model):
    """A user in the given role groups, with a random password (returned as user.raw_password)."""
    from django.contrib.auth.models import Group

    def make(username: str, *roles: str, staff: bool = True):
        password = secrets.token_urlsafe(16)
        user = django_user_model.objects.create_user(username=username, password=password, is_staff=staff)
        user.groups.set(Group.objects.filter(name__in=roles))
        user.raw_password = password
        return user

    return make


@pytest.fixture
def role_client(client, make_user):
    """A logged-in test client for a role name (or None for anonymous)."""

    def login(role: str | None):
        if role is not None:
            client.force_login(make_user(f"user-{role}", role))
        return client

    return login


@pytest.fixture(scope="session")
def redis_client():
    from config.redis_client import get_redis

    client = get_redis()
    client.flushdb()  # the tests' own database number (REDIS_URL .../15), never the default
    return client


def _worker_env(db_name: str) -> dict:
    db = settings.DATABASES["default"]
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.test",
        DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db_name}",
        REDIS_URL=settings.REDIS_URL,
        WORKER_HEARTBEAT_INTERVAL="1",
    )
    return env


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker, redis_client):
    """A real `celery worker` process consuming every queue, against the test database and Redis."""
    from django.db import connection

    from config.heartbeat import live_workers

    with django_db_blocker.unblock():
        db_name = connection.settings_dict["NAME"]
    hostname = f"test-{secrets.token_hex(3)}@localhost"
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-P", "solo", "-n", hostname,
         "-Q", "ingest,inference,control,default", "--without-mingle", "--without-gossip", "-l", "warning"],
        cwd=REPO, env=_worker_env(db_name),
    )
    deadline = time.monotonic() + 60
    while not any(w["hostname"] == hostname for w in live_workers()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"celery worker did not start (exit code {proc.returncode})")
        time.sleep(0.2)
    yield {"hostname": hostname, "process": proc}
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
