"""The embedded default's in-process workers: what Celery workers, beat and the twin process do in production.

Threads in the ASGI server's process: a beat that runs every CELERY_BEAT_SCHEDULE task in-process at its
interval (the buffer writer every second, rollups, retention, and whatever other apps schedule), and one
twin per site feeding telemetry (the plant). They run the same task code as production workers.
"""

import logging
import threading
import time
from datetime import UTC, datetime, timedelta

from django.db import close_old_connections, connection

log = logging.getLogger(__name__)
stop = threading.Event()
# Running twins by site slug: the in-process actuator writes setpoints to these.
twins: dict = {}


def _beat_loop():
    from django.conf import settings

    from config.celery_app import app

    # Celery discovers each app's tasks module lazily (when a worker starts); import them now, as a worker would.
    app.loader.import_default_modules()
    schedule = settings.CELERY_BEAT_SCHEDULE
    due = dict.fromkeys(schedule, 0.0)
    while not stop.is_set():
        now = time.monotonic()
        for name, entry in schedule.items():
            if now < due[name]:
                continue
            due[name] = now + float(entry["schedule"])
            try:
                app.tasks[entry["task"]].apply(args=entry.get("args", ()), kwargs=entry.get("kwargs", {}))
            except Exception:
                log.exception("in-process task %s failed", name)
            finally:
                close_old_connections()
        stop.wait(max(0.05, min(due.values()) - time.monotonic()))
    connection.close()


def _twin_loop(source, speed: float):
    from telemetry.sources.twin import run

    try:
        run(source, speed=speed, stop=stop)
    finally:
        connection.close()


def _twin_start(site, backfill_minutes: float) -> datetime:
    """Backfill `backfill_minutes`, but never over telemetry already stored: a restarted demo (or one after
    `inference train --generate-twin-hours`) continues the site's history instead of writing it twice."""
    from django.db.models import Max

    from telemetry.models import GpuSample

    begin = datetime.now(UTC) - timedelta(minutes=backfill_minutes)
    newest = GpuSample.objects.filter(gpu__node__rack__hall__site=site).aggregate(t=Max("time"))["t"]
    return max(begin, newest + timedelta(seconds=1)) if newest else begin


def start(*, twin: bool = True, backfill_minutes: float = 30, speed: float = 60, profile: str = "seed"):
    """Start the in-process beat and, unless disabled, a twin per site backfilling the last `backfill_minutes`."""
    from facility.models import Site
    from telemetry.sources.twin import TwinSource

    threads = [threading.Thread(target=_beat_loop, name="fusedc-beat", daemon=True)]
    if twin:
        for site in Site.objects.all():
            source = TwinSource(site, profile=profile, start=_twin_start(site, backfill_minutes))
            twins[site.slug] = source
            threads.append(threading.Thread(target=_twin_loop, args=(source, speed), name=f"fusedc-twin-{site.slug}",
                                            daemon=True))
    for thread in threads:
        thread.start()
    return threads
