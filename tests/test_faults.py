"""Faults while telemetry flows: Redis, PostgreSQL and the ingest worker killed and restarted.

The test owns its services, so it may kill them: a private Redis (appendonly, fsync always — how the buffer's
Redis must run in production) and a private PostgreSQL cluster (initdb in a temporary directory), the real
ASGI app (uvicorn) and a real Celery worker with beat (queue `ingest`: the buffer writer every second). A
load generator posts dcgm-exporter scrapes with a new timestamp each. Then:

* Redis killed (SIGKILL): ingest answers 503 + Retry-After (nothing accepted), /healthz answers 503 naming
  Redis; restarted, ingest resumes on its own;
* PostgreSQL stopped hard (immediate shutdown, as a crash): the same, naming the database;
* the worker killed mid-flow: ingest keeps accepting into Redis; a new worker reclaims and stores the rest.

At the end every accepted sample is stored exactly once: rows = accepted batches x GPUs, no duplicates.
"""

import contextlib
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg
import pytest

from control.tests.factories import free_port
from facility import facility_file
from facility.twin import synthetic_facility
from tests.conftest import REPO

pytestmark = pytest.mark.slow
SMALL = {"air_racks": 1, "air_nodes_per_rack": 1, "liquid_racks": 1, "liquid_nodes_per_rack": 1, "crahs": 1,
         "cdus": 1}
DB = "fusedc_faults"


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


class PrivateRedis:
    def __init__(self, directory):
        self.port, self.dir, self.proc = free_port(), directory, None

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", "",
             "--appendonly", "yes", "--appendfsync", "always"], stdout=subprocess.DEVNULL)
        _wait(lambda: subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True,
                                     text=True).stdout.strip() == "PONG", 20, "redis")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


class PrivateDatabase:
    """A throwaway PostgreSQL cluster (as the postgres user when we are root: initdb refuses root)."""

    def __init__(self):
        # Its own directory under /tmp: pytest's tmp_path sits below a root-only (0700) directory.
        self.port, self.dir = free_port(), Path(tempfile.mkdtemp(prefix="fusedc-faults-pg-")) / "pg"
        self.bin = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]

    def _run(self, *args, check=True):
        command = [f"{self.bin}/{args[0]}", *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True, timeout=120)

    def init(self):
        self.dir.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.dir.parent, "postgres")
            shutil.chown(self.dir, "postgres")
        self._run("initdb", "-D", str(self.dir), "-A", "trust", "-U", "postgres")
        self.start()
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DB}")

    def start(self):
        self._run("pg_ctl", "-D", str(self.dir), "-l", str(self.dir / "log"), "-w", "start", "-o",
                  f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir} "
                  "-c fsync=off -c max_connections=60")

    def crash(self):
        self._run("pg_ctl", "-D", str(self.dir), "-m", "immediate", "stop")

    def stop(self):
        self._run("pg_ctl", "-D", str(self.dir), "-m", "fast", "stop", check=False)
        shutil.rmtree(self.dir.parent, ignore_errors=True)

    def url(self, name=DB):
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def count(self) -> tuple[int, int]:
        with psycopg.connect(self.url(), connect_timeout=3) as conn:
            return conn.execute("SELECT COUNT(*), COUNT(DISTINCT (gpu_id, time)) FROM telemetry_gpusample").fetchone()


class Stack:
    """uvicorn and a Celery worker + beat against the private services."""

    def __init__(self, tmp_path, redis, pg):
        self.tmp, self.redis, self.pg = tmp_path, redis, pg
        self.env = dict(os.environ, DJANGO_SETTINGS_MODULE="config.settings.test", DATABASE_URL=pg.url(),
                        REDIS_URL=f"redis://127.0.0.1:{redis.port}/0", WORKER_HEARTBEAT_INTERVAL="1",
                        TELEMETRY_RECLAIM_IDLE_MS="2000", HEALTHZ_REQUIRED_QUEUES="ingest")
        self.env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        self.port = free_port()
        self.web = self.worker = None

    def manage(self, *args) -> str:
        return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=self.env, check=True,
                              capture_output=True, text=True, timeout=300).stdout

    def start_web(self):
        log = open(self.tmp / "uvicorn.log", "a")  # noqa: SIM115 - closed when the process ends
        self.web = subprocess.Popen([sys.executable, "-m", "uvicorn", "config.asgi:application", "--host",
                                     "127.0.0.1", "--port", str(self.port), "--lifespan", "off"],
                                    cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        _wait(lambda: self.get("/healthz")[0] in (200, 503), 60, "uvicorn")

    def start_worker(self):
        log = open(self.tmp / "worker.log", "a")  # noqa: SIM115
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "-B", "-s", str(self.tmp / "beat-schedule"),
             "-P", "solo", "-Q", "ingest", "-n", f"faults-{time.monotonic_ns()}@localhost", "--without-mingle",
             "--without-gossip", "-l", "warning"], cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)  # its own process group: `-B` forks a beat child that a kill must take too

    def kill_worker(self):
        """SIGKILL the worker and its beat child at once, as a dead host would (killing the parent alone
        leaves the beat child running, orphaned, after the test)."""
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait()

    def get(self, path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
                return r.status, json.loads(r.read() or b"{}"), {k.lower(): v for k, v in r.headers.items()}
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}"), {k.lower(): v for k, v in e.headers.items()}
        except OSError:
            return 0, {}, {}

    def close(self):
        for proc in (self.web, self.worker):
            if proc and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if self.worker:  # whatever of the worker's group is left (its beat child)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.worker.pid, signal.SIGKILL)


class Load(threading.Thread):
    """Posts a scrape of every GPU every 0.25 s, each with a new timestamp; counts what was accepted."""

    def __init__(self, stack, gpus, token):
        super().__init__(daemon=True)
        self.stack, self.gpus, self.token = stack, gpus, token
        self.stop, self.statuses, self.accepted_batches, self.retry_after = threading.Event(), [], 0, set()
        self.t_ms = int(time.time() * 1000) - 600_000  # ten minutes ago, 250 ms apart: always in the past

    def body(self) -> bytes:
        self.t_ms += 250
        lines = []
        for metric, value in (("DCGM_FI_DEV_GPU_TEMP", 61.0), ("DCGM_FI_DEV_POWER_USAGE", 612.5)):
            for host, index, uuid in self.gpus:
                lines.append(f'{metric}{{gpu="{index}",UUID="{uuid}",Hostname="{host}"}} {value} {self.t_ms}')
        return ("\n".join(lines) + "\n").encode()

    def run(self):
        url = f"http://127.0.0.1:{self.stack.port}/api/v1/telemetry/prometheus"
        while not self.stop.wait(0.25):
            request = urllib.request.Request(url, data=self.body(), method="POST", headers={
                "Authorization": f"Bearer {self.token}", "Content-Type": "text/plain"})
            try:
                with urllib.request.urlopen(request, timeout=10) as r:  # noqa: S310 - our local server
                    status = r.status
            except urllib.error.HTTPError as e:
                status = e.code
                if e.headers.get("Retry-After"):
                    self.retry_after.add(status)
            except OSError:
                status = 0
            self.statuses.append(status)
            if status == 202:
                self.accepted_batches += 1

    def since(self, mark: int) -> set:
        return set(self.statuses[mark:])


@pytest.fixture
def stack(tmp_path):
    redis, pg = PrivateRedis(tmp_path), PrivateDatabase()
    redis.start()
    pg.init()
    s = Stack(tmp_path, redis, pg)
    try:
        s.manage("migrate", "--noinput", "-v", "0")
        doc = synthetic_facility(**SMALL)
        (tmp_path / "facility.yaml").write_text(facility_file.dump(doc))
        s.manage("facility", "import", str(tmp_path / "facility.yaml"))
        out = s.manage("telemetry", "create-source", "faults", "--kind", "dcgm")
        s.token = out.strip().splitlines()[-1]
        s.gpus = [(n["hostname"], g["index"], g["uuid"]) for h in doc["halls"] for r in h["racks"]
                  for n in r["nodes"] for g in n["gpus"]]
        s.start_web()
        s.start_worker()
        yield s
    finally:
        s.close()
        if redis.proc and redis.proc.poll() is None:
            redis.kill()
        pg.stop()


def test_redis_postgres_and_worker_faults_lose_and_double_nothing(stack):
    load = Load(stack, stack.gpus, stack.token)
    load.start()
    try:
        _wait(lambda: load.accepted_batches >= 8, 60, "telemetry to flow")
        _wait(lambda: stack.pg.count()[0] > 0, 60, "the worker to store telemetry")

        # Redis dies: nothing can be buffered, so nothing is accepted; healthz says why.
        stack.redis.kill()
        mark = len(load.statuses)
        _wait(lambda: 503 in load.since(mark), 30, "503 while Redis is down")
        status, health, headers = stack.get("/healthz")
        assert status == 503 and health["checks"]["redis"]["ok"] is False and headers.get("retry-after")
        time.sleep(2)
        assert load.since(mark + 2) <= {503}, "every request while Redis is down is a 503"
        assert 503 in load.retry_after
        stack.redis.start()  # the AOF brings back what was buffered and not yet stored
        mark = len(load.statuses)
        _wait(lambda: 202 in load.since(mark), 60, "ingest to resume after Redis")

        # PostgreSQL crashes: the source token cannot be checked, so nothing is accepted; healthz says why.
        stack.pg.crash()
        mark = len(load.statuses)
        _wait(lambda: 503 in load.since(mark), 30, "503 while PostgreSQL is down")
        status, health, _ = stack.get("/healthz")
        assert status == 503 and health["checks"]["database"]["ok"] is False
        time.sleep(2)
        assert load.since(mark + 2) <= {503}
        stack.pg.start()
        mark = len(load.statuses)
        _wait(lambda: 202 in load.since(mark), 60, "ingest to resume after PostgreSQL")

        # The ingest worker dies: the API keeps accepting into Redis; a new worker stores the backlog.
        stack.kill_worker()
        mark = len(load.statuses)
        time.sleep(3)
        assert load.since(mark) == {202}
        stack.start_worker()
        time.sleep(3)
    finally:
        load.stop.set()
        load.join(timeout=30)
    assert 0 not in set(load.statuses) and set(load.statuses) <= {202, 503}, "no 500s, no dropped connections"
    expected = load.accepted_batches * len(stack.gpus)
    _wait(lambda: stack.pg.count()[0] >= expected, 120, f"{expected} rows stored")
    time.sleep(2)
    rows, distinct = stack.pg.count()
    assert rows == distinct == expected
    status, health, _ = stack.get("/healthz")
    assert status == 200, health
