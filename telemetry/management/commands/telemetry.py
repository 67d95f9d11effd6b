"""`manage.py telemetry …`: source tokens and the writer, from the command line."""

import socket

from django.core.management.base import BaseCommand, CommandError

from facility.models import Site
from telemetry import maintenance, rollups, writer
from telemetry.buffer import get_buffer
from telemetry.models import Source, SourceKind


class Command(BaseCommand):
    help = "Manage telemetry sources and run the buffer writer."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        create = actions.add_parser("create-source", help="Create a source and print its token once.")
        create.add_argument("name")
        create.add_argument("--kind", choices=SourceKind.values, required=True)
        create.add_argument("--site", help="Site slug (needed when there is more than one site).")
        revoke = actions.add_parser("revoke-source", help="Revoke a source's token.")
        revoke.add_argument("name")
        drain = actions.add_parser("drain", help="Store buffered telemetry (what the ingest workers do).")
        drain.add_argument("--seconds", type=float, default=5.0, help="Time budget.")
        drain.add_argument("--consumer", default=f"cli-{socket.gethostname()}")
        actions.add_parser("status", help="Buffer depth: pending and undelivered entries.")
        actions.add_parser("rollup", help="Bring the 1 min and 1 h rollups up to date (beat does this every 30 s).")
        actions.add_parser("retention", help="Drop data past its retention (beat does this hourly).")

    def handle(self, *args, action, **options):
        getattr(self, action.replace("-", "_"))(**options)

    def create_source(self, name, kind, site, **_):
        sites = Site.objects.filter(slug=site) if site else Site.objects.all()
        if len(sites) != 1:
            raise CommandError("name the site with --site" if not site else f"no site {site!r}")
        if Source.objects.filter(name=name).exists():
            raise CommandError(f"a source named {name!r} exists; revoke it or choose another name")
        source = Source(name=name, kind=kind, site=sites[0])
        token = source.issue_token()
        source.save()
        self.stdout.write(f"Source {name!r} created. Its token (shown only now):\n{token}")

    def revoke_source(self, name, **_):
        source = Source.objects.filter(name=name, revoked_at__isnull=True).first()
        if source is None:
            raise CommandError(f"no active source {name!r}")
        source.revoke()
        self.stdout.write(f"Source {name!r} revoked.")

    def drain(self, seconds, consumer, **_):
        report = writer.drain(consumer, time_budget_s=seconds)
        self.stdout.write(f"{report.entries} entries: {report.gpu_rows} GPU rows, {report.point_rows} point rows "
                          f"({report.skipped_already_applied} already stored) in {report.seconds:.2f} s")

    def status(self, **_):
        self.stdout.write(", ".join(f"{k} {v}" for k, v in get_buffer().depth().items()))

    def rollup(self, **_):
        done = rollups.roll_up()
        self.stdout.write(", ".join(f"{r} s: {n} bucket(s)" for r, n in done.items()) or "no telemetry yet")

    def retention(self, **_):
        self.stdout.write(", ".join(f"{k} {v}" for k, v in maintenance.enforce_retention().items()))
