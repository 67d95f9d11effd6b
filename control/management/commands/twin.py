"""`manage.py twin calibrate|run|evaluate`: the digital twin from the command line.

It lives in the control app (the top of the dependency chain) because `run` feeds the telemetry pipeline
and `evaluate` drives control policies; the twin itself (facility/twin) imports neither.
"""

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from facility.models import Site
from facility.twin import PROFILE_KEYS, calibrate, format_comparison


class Command(BaseCommand):
    help = "Run the digital twin: calibration against published measurements, or as the plant."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        cal = actions.add_parser("calibrate", help="Reproduce the published air-vs-liquid experiment.")
        cal.add_argument("--profile", default="seed", choices=sorted(PROFILE_KEYS))
        cal.add_argument("--json", action="store_true", dest="as_json", help="Print one JSON object.")
        run = actions.add_parser("run", help="Run the twin as a telemetry source through the ingest pipeline.")
        run.add_argument("--site", help="Site slug (needed when there is more than one site).")
        run.add_argument("--profile", default="seed", choices=sorted(PROFILE_KEYS))
        run.add_argument("--workload", default="training", choices=["training", "inference", "burn", "idle"])
        run.add_argument("--speed", type=float, default=1.0, help="Speed (× real time) while catching up.")
        run.add_argument("--backfill-minutes", type=float, default=0.0,
                         help="Start this far in the past; runs at --speed until caught up with the clock.")
        run.add_argument("--interval", type=float, default=1.0, help="Simulated seconds between scrapes.")
        run.add_argument("--duration", type=float, help="Stop after this many simulated seconds.")
        run.add_argument("--seed", type=int, default=0)
        ev = actions.add_parser("evaluate", help="Closed-loop evaluation of policies (TWIN.md protocol).")
        ev.add_argument("--policy", action="append", required=True,
                        help="Registered policy name; repeat to compare several.")
        ev.add_argument("--days", type=float, default=7.0)
        ev.add_argument("--climate", action="append", choices=["hot", "mixed", "cool"],
                        help="Repeat for several (default: all three).")
        ev.add_argument("--workload", default="training", choices=["training", "inference", "burn", "idle"])
        ev.add_argument("--seed", type=int, action="append", help="Repeat for several (default: 0).")
        ev.add_argument("--profile", default="seed", choices=sorted(PROFILE_KEYS))
        ev.add_argument("--site", help="Site slug to evaluate on (default: the demo facility file).")
        ev.add_argument("--start", default="2025-07-01", help="First simulated day (ISO date).")
        ev.add_argument("--report", help="Plotly HTML report path (default: var/reports/evaluation-<time>.html).")

    def handle(self, *args, action, **options):
        getattr(self, action)(**options)

    def calibrate(self, profile, as_json, **_):
        result = calibrate(profile)
        if as_json:
            self.stdout.write(json.dumps(result))
        else:
            self.stdout.write(format_comparison(result))

    def evaluate(self, policy, days, climate, workload, seed, profile, site, start, report, **_):
        from control import policies
        from facility.facility_file import export_facility
        from facility.management.commands.seed_demo import DEMO_FILE
        from facility.twin.evaluation import comparison_table, evaluate, write_report

        unknown = [name for name in policy if name not in policies.names()]
        if unknown:
            raise CommandError(f"unknown policy {', '.join(unknown)}; registered: {', '.join(policies.names())}")
        if days <= 0:
            raise CommandError("--days must be positive")
        try:
            first_day = datetime.fromisoformat(start)
        except ValueError:
            raise CommandError(f"--start {start!r} is not an ISO date") from None
        if site:
            found = Site.objects.filter(slug=site).first()
            if found is None:
                raise CommandError(f"no site {site!r}")
            facility = export_facility(found)
        else:
            facility = yaml.safe_load(DEMO_FILE.read_text())
        results = [
            evaluate(policies.create(name), facility, days=days, climate=c, workload=workload, seed=s,
                     profile=profile, start=first_day)
            for name in policy for c in (climate or ["hot", "mixed", "cool"]) for s in (seed or [0])
        ]
        self.stdout.write(comparison_table(results))
        path = Path(report) if report else Path(settings.VAR_DIR) / "reports" / (
            f"evaluation-{datetime.now(UTC):%Y%m%dT%H%M%S}.html")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_report(results, path)
        self.stdout.write(f"Report: {path}")

    def run(self, site, profile, workload, speed, backfill_minutes, interval, duration, seed, **_):
        from control.actuators.twin import serve_commands
        from telemetry.sources.twin import TwinSource
        from telemetry.sources.twin import run as run_twin
        from telemetry.writer import drain

        sites = Site.objects.filter(slug=site) if site else Site.objects.all()
        if len(sites) != 1:
            raise CommandError("name the site with --site" if not site else f"no site {site!r}")
        if speed <= 0 or interval <= 0:
            raise CommandError("--speed and --interval must be positive")
        start = datetime.now(UTC) - timedelta(minutes=backfill_minutes)
        source = TwinSource(sites[0], profile=profile, workload=workload, seed=seed, start=start)
        self.stdout.write(f"Twin of {sites[0].slug} ({profile} profile, {workload}) from {start:%Y-%m-%d %H:%M:%S} "
                          f"UTC, {len(source.twin.gpu_uuids)} GPUs; Ctrl-C stops it.")
        stop = threading.Event()

        def report(src):
            if settings.EMBEDDED:
                # No Redis: the buffer lives in this process, so this process also stores what it emits.
                drain("twin-run", time_budget_s=1.0)
            else:
                # Setpoint writes from the control workers arrive over Redis (control.actuators.twin).
                serve_commands(src)
            facility = src.twin.facility()
            self.stdout.write(
                f"\r{src.twin.time:%H:%M:%S}  IT {facility['it_power_kw']:7.1f} kW  PUE {facility['pue']:.3f}  "
                f"max GPU {facility['gpu_temperature_celsius_max']:5.1f} °C  throttling {facility['gpus_throttling']}",
                ending="",
            )

        try:
            emitted = run_twin(source, interval=interval, speed=speed, stop=stop, duration=duration, on_tick=report)
        except KeyboardInterrupt:
            stop.set()
            emitted = None
        self.stdout.write(f"\nstopped{'' if emitted is None else f' after {emitted} emissions'}")
