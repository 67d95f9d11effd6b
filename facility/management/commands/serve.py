"""`manage.py serve`: the ASGI server (uvicorn) for the embedded default, as `make demo` runs it."""

import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Serve FuseDC over ASGI (HTTP and websockets) on the embedded default."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, host, port, **options):
        mode = "embedded default (SQLite, in-process workers)" if settings.EMBEDDED else "Redis-backed"
        self.stdout.write(self.style.SUCCESS(f"FuseDC on http://{host}:{port}/  ({mode}); Ctrl-C stops it."))
        uvicorn.run("config.asgi:application", host=host, port=port, log_level="info", lifespan="off")
