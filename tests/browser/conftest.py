"""Browser tests: real headless Chromium (Debian's, never a downloaded one) against the real ASGI app.

One server per module: uvicorn serving config.asgi (HTTP and websockets, channels-redis layer) on a free
port against the test database and Redis, with the digital twin feeding telemetry through the real ingest
pipeline (the buffer on Redis) and a writer storing it, both from this process. Screenshots go to
test-artifacts/screenshots/ (gitignored).
"""

import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.conf import settings

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
ROLES = ("viewer", "operator", "approver", "admin")
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Plant:
    """The twin emitting at real time (after a fast backfill) and a writer storing what it emits."""

    def __init__(self, site, backfill_minutes=20):
        from telemetry.sources.twin import TwinSource, run

        self.stop = threading.Event()
        self.source = TwinSource(site, start=datetime.now(UTC) - timedelta(minutes=backfill_minutes), sensors=True)
        run(self.source, interval=10, speed=1e6, duration=backfill_minutes * 60 - 15)
        self._drain()
        self.threads = [threading.Thread(target=self._twin, daemon=True),
                        threading.Thread(target=self._writer, daemon=True)]
        for t in self.threads:
            t.start()

    def _drain(self):
        from telemetry import writer

        writer.drain("browser-tests", time_budget_s=60)

    def _twin(self):
        from django.db import connection

        from telemetry.sources.twin import run

        try:
            run(self.source, interval=1, speed=30, stop=self.stop)
        finally:
            connection.close()

    def _writer(self):
        from django.db import connection

        try:
            while not self.stop.wait(1.0):
                self._drain()
        finally:
            connection.close()

    def close(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


@pytest.fixture(scope="module")
def live_site(django_db_setup, django_db_blocker, redis_client):
    """Demo facility, one user per role (and one with none), the plant running, and the ASGI server."""
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command
    from django.db import connection

    from facility import facility_file
    from facility.management.commands.seed_demo import DEMO_FILE
    from facility.models import Site
    from telemetry.buffer import get_buffer

    with django_db_blocker.unblock():
        redis_client.flushdb()
        get_buffer.cache_clear()
        facility_file.import_facility(facility_file.parse(DEMO_FILE.read_text()))
        site = Site.objects.get(slug="demo")
        users = {}
        for role in (*ROLES, None):
            name = f"browser-{role or 'nobody'}"
            password = secrets.token_urlsafe(16)
            user = User.objects.create_user(name, password=password)
            if role:
                user.groups.set(Group.objects.filter(name=role))
            users[role] = (name, password)
        plant = Plant(site)
        port = _free_port()
        db = settings.DATABASES["default"]
        env = dict(os.environ, DJANGO_SETTINGS_MODULE="config.settings.test", REDIS_URL=settings.REDIS_URL,
                   DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{connection.settings_dict['NAME']}")
        env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        log = open(REPO / "test-artifacts" / "uvicorn-browser.log", "w")  # noqa: SIM115 — closed with the server
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1", "--port", str(port),
             "--lifespan", "off", "--log-level", "warning"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(base + "/login/", timeout=2)  # noqa: S310 — our own local server
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    plant.close()
                    pytest.fail(f"uvicorn did not start (exit code {server.poll()})")
                time.sleep(0.3)
        try:
            yield {"base": base, "users": users, "site": site, "plant": plant}
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()
            plant.close()
            get_buffer.cache_clear()
            call_command("flush", interactive=False, verbosity=0)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield chromium
        chromium.close()


@pytest.fixture
def login(browser, live_site):
    """A page signed in as a role (None: a user without any role), through the real login form."""
    contexts, violations = [], []

    def sign_in(role):
        context = browser.new_context(viewport={"width": 1600, "height": 1000}, base_url=live_site["base"])
        contexts.append(context)
        page = context.new_page()
        # Any Content-Security-Policy violation (a blocked script, style or socket) fails the test.
        # (ReDoc's sidebar always asks for Redocly's logo from their CDN: blocked, as it should be, and hidden.)
        page.on("console", lambda msg: "Content Security Policy" in msg.text and REDOC_LOGO not in msg.text
                and violations.append(msg.text))
        username, password = live_site["users"][role]
        page.goto("/login/")
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", password)
        page.click("form [type=submit]")
        page.wait_for_load_state("networkidle")
        return page

    yield sign_in
    for context in contexts:
        context.close()
    assert not violations, violations


@pytest.fixture(scope="module", autouse=True)
def _allow_orm_beside_playwright():
    """Playwright's sync API runs an event loop in this thread; the ORM then needs this, for these tests only."""
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous
