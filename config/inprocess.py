"""The embedded default's in-process workers: what Celery workers, beat and the twin process do in production.

Threads in the ASGI server's process: a writer draining the telemetry buffer every second (the `ingest`
workers' job) and one twin per site feeding telemetry (the plant). They run the same code as production.
"""

import logging
import threading
from datetime import UTC, datetime, timedelta

from django.db import close_old_connections, connection

log = logging.getLogger(__name__)
stop = threading.Event()
# Running twins by site slug: the in-process actuator writes setpoints to these.
twins: dict = {}


def _writer_loop():
    from telemetry.writer import drain

    while not stop.is_set():
        try:
            drain("inprocess", time_budget_s=1.0)
        except Exception:
            log.exception("in-process writer failed")
        finally:
            close_old_connections()
        stop.wait(1.0)
    connection.close()


def _twin_loop(source, speed: float):
    from telemetry.sources.twin import run

    try:
        run(source, speed=speed, stop=stop)
    finally:
        connection.close()


def start(*, twin: bool = True, backfill_minutes: float = 30, speed: float = 60, profile: str = "seed"):
    """Start the writer and, unless disabled, a twin per site that backfills the last `backfill_minutes`."""
    from facility.models import Site
    from telemetry.sources.twin import TwinSource

    threads = [threading.Thread(target=_writer_loop, name="fusedc-writer", daemon=True)]
    if twin:
        begin = datetime.now(UTC) - timedelta(minutes=backfill_minutes)
        for site in Site.objects.all():
            source = TwinSource(site, profile=profile, start=begin)
            twins[site.slug] = source
            threads.append(threading.Thread(target=_twin_loop, args=(source, speed), name=f"fusedc-twin-{site.slug}",
                                            daemon=True))
    for thread in threads:
        thread.start()
    return threads
