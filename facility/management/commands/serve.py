"""`manage.py serve`: the ASGI server (uvicorn) for the embedded default, as `make demo` runs it."""

import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Serve FuseDC over ASGI (HTTP and websockets) on the embedded default."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-twin", action="store_true", help="Do not run the digital twin as the plant.")
        parser.add_argument("--backfill-minutes", type=float, default=30,
                            help="Start the twin this far in the past so charts have history at once.")
        parser.add_argument("--speed", type=float, default=60, help="Twin speed while it catches up.")

    def handle(self, *args, host, port, no_twin, backfill_minutes, speed, **options):
        from config import inprocess

        if settings.EMBEDDED:
            inprocess.start(twin=not no_twin, backfill_minutes=backfill_minutes, speed=speed)
            mode = "embedded default: SQLite, in-process writer" + ("" if no_twin else " and digital twin")
        else:
            mode = "Redis-backed: run the Procfile's workers beside it (make up)"
        self.stdout.write(self.style.SUCCESS(f"FuseDC on http://{host}:{port}/  ({mode}); Ctrl-C stops it."))
        try:
            uvicorn.run("config.asgi:application", host=host, port=port, log_level="info", lifespan="off")
        finally:
            inprocess.stop.set()
