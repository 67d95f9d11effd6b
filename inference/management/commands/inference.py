"""`manage.py inference …`: make twin training data, train the forecaster, list and activate versions."""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime, timedelta

import numpy as np
from django.core.management.base import BaseCommand, CommandError

from facility.models import Site


def _instant(text: str) -> float:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(f"{text!r} is not an ISO 8601 time") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


class Command(BaseCommand):
    help = "Train and manage the telemetry forecaster."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        train = actions.add_parser("train", help="Train on stored telemetry and record an (active) model version.")
        train.add_argument("--site", help="Site slug (needed when there is more than one site).")
        train.add_argument("--attention", choices=["mla", "mha"], default="mla",
                           help="mla: the forecaster; mha: the comparison baseline (kind mha-baseline).")
        train.add_argument("--epochs", type=int, default=12)
        train.add_argument("--from", dest="start", type=_instant, help="ISO 8601 start of the data range.")
        train.add_argument("--to", dest="end", type=_instant, help="ISO 8601 end of the data range.")
        train.add_argument("--window", type=int, default=96, help="Training sequence length in samples "
                           "(the model's sliding window is half of it).")
        train.add_argument("--max-windows", type=int, default=1024,
                           help="Training windows per epoch at most (random, fixed by the seed).")
        train.add_argument("--batch-size", type=int, default=32)
        train.add_argument("--seed", type=int, default=0)
        train.add_argument("--threads", type=int, default=1,
                           help="Torch CPU threads (1 is fastest on a small, shared machine).")
        train.add_argument("--model-dir", help="Checkpoint directory (default settings.MODEL_DIR).")
        train.add_argument("--name", help="Version name (default SITE-ATTENTION-TIMESTAMP).")
        train.add_argument("--no-activate", action="store_true")
        train.add_argument("--unless-active", action="store_true",
                           help="Do nothing when a version of this kind is already active (make demo's first run).")
        train.add_argument("--generate-twin-hours", type=float, default=0,
                           help="First run the twin this many hours through the pipeline (make-dataset).")
        make = actions.add_parser("make-dataset",
                                  help="Run the site's twin fast through the real ingest pipeline to store "
                                       "training telemetry (ending now).")
        make.add_argument("--site")
        make.add_argument("--hours", type=float, default=2.0)
        make.add_argument("--interval", type=float, default=5.0, help="Scrape interval in seconds.")
        make.add_argument("--excite-every", type=float, default=300.0,
                          help="Move one random setpoint within its envelope this often (seconds; 0: never).")
        make.add_argument("--workload", default="hall-a=inference,hall-b=training",
                          help="A workload, or HALL=WORKLOAD pairs.")
        make.add_argument("--seed", type=int, default=0)
        actions.add_parser("versions", help="List model versions with their 60 s temperature MAE.")
        activate = actions.add_parser("activate", help="Make a version the active one of its kind.")
        activate.add_argument("name")
        step = actions.add_parser("step", help="Run one serving step in this process (what the worker does).")
        step.add_argument("--repeat", type=int, default=1)

    def handle(self, *args, action, **options):
        getattr(self, action.replace("-", "_"))(**options)

    def _site(self, slug):
        sites = Site.objects.filter(slug=slug) if slug else Site.objects.all()
        if len(sites) != 1:
            raise CommandError("name the site with --site" if not slug else f"no site {slug!r}")
        return sites[0]

    # -- train --------------------------------------------------------------------------------------------
    def train(self, site, attention, epochs, start, end, window, max_windows, batch_size, seed, threads,
              model_dir, name, no_activate, generate_twin_hours, unless_active, **_):
        from inference.checkpoint import CheckpointError
        from inference.model import FEATURE_NAMES
        from inference.models import ModelKind, ModelVersion
        from inference.training import FitSettings, train_site

        site = self._site(site)
        kind = ModelKind.FORECASTER if attention == "mla" else ModelKind.MHA_BASELINE
        if unless_active and (current := ModelVersion.objects.filter(kind=kind, active=True).first()):
            if list(current.features) == list(FEATURE_NAMES):
                self.stdout.write(f"{current.name} is active; not training (drop --unless-active to train anyway)")
                return
            self.stdout.write(f"{current.name} is active but was trained on another feature list; training a "
                              "new version")
        if generate_twin_hours:
            self.make_dataset(site.slug, generate_twin_hours, 5.0, 300.0, "hall-a=inference,hall-b=training", seed)
        settings = FitSettings(epochs=epochs, window=window, stride=window // 2, warmup=window // 4,
                               max_train_windows=max_windows, batch_size=batch_size, seed=seed, threads=threads)
        try:
            version, result = train_site(site, attention=attention, settings=settings, start_s=start, end_s=end,
                                         model_dir=model_dir, name=name, activate=not no_activate,
                                         log_fn=self.stdout.write)
        except (ValueError, CheckpointError) as exc:
            raise CommandError(str(exc)) from None
        for row in result.curves:
            self.stdout.write(f"epoch {row['epoch']:>3}: train {row['train_loss']:.4f}  val {row['val_loss']:.4f}")
        self.stdout.write(f"best epoch {result.best_epoch}, {result.seconds:.0f} s of training")
        self._metrics_table(version.metrics)
        state = "active" if version.active else "inactive"
        self.stdout.write(self.style.SUCCESS(
            f"model version {version.name} ({version.get_kind_display()}, {state}): {version.checkpoint_path} "
            f"sha256 {version.checksum_sha256[:12]}…"))

    def _metrics_table(self, metrics):
        horizons = metrics.get("horizons", {})
        if not horizons:
            self.stdout.write("no held-out metrics (the test block was empty)")
            return
        self.stdout.write(f"{'horizon':>7} {'target':<26} {'MAE':>8} {'persist.':>9} {'skill':>6} "
                          f"{'pinball':>8} {'p10-p90':>7}")
        for h, entry in horizons.items():
            for target, m in entry.items():
                if target == "throttle":
                    continue
                skill = f"{m['skill']:.2f}" if m["skill"] is not None else "-"
                self.stdout.write(f"{h:>7} {target:<26} {m['mae']:>8.3f} {m['persistence_mae']:>9.3f} {skill:>6} "
                                  f"{m['pinball']:>8.3f} {m['coverage_p10_p90']:>7.2f}")

    # -- data ---------------------------------------------------------------------------------------------
    def make_dataset(self, site, hours, interval, excite_every, workload, seed, **_):
        from tqdm import tqdm

        from inference.dataset import excitable_setpoints, excitation_range
        from telemetry import writer
        from telemetry.sources.twin import TwinSource, run

        site = self._site(site)
        if "=" in workload:
            workload = dict(part.split("=", 1) for part in workload.split(",") if part)
        warmup = 600
        start = datetime.now(UTC) - timedelta(hours=hours, seconds=warmup + 2 * interval)
        source = TwinSource(site, workload=workload, seed=seed, start=start)
        source.step(warmup)  # the twin settles from its initial state; those minutes are not emitted
        rng = np.random.default_rng([seed, 11])
        writable = excitable_setpoints(source.twin)
        total = int(hours * 3600 / interval)
        bar = tqdm(total=total, desc="twin → pipeline", unit="scrape")
        state = {"n": 0, "next": excite_every}
        consumer = f"make-dataset-{socket.gethostname()}"

        def tick(src):
            state["n"] += 1
            bar.update(1)
            if excite_every and writable and state["n"] * interval >= state["next"]:
                state["next"] += excite_every
                sp = writable[rng.integers(len(writable))]
                lo, hi = excitation_range(sp)
                src.twin.write_setpoint(sp["unit"], sp["name"], float(np.round(rng.uniform(lo, hi), 1)))
            if state["n"] % 20 == 0:
                writer.drain(consumer, time_budget_s=30)

        started = time.monotonic()
        emitted = run(source, interval=interval, speed=1e9, duration=hours * 3600, on_tick=tick)
        report = writer.drain(consumer, time_budget_s=120)
        bar.close()
        self.stdout.write(self.style.SUCCESS(
            f"{emitted} scrapes of {site.slug} ({hours:g} h at {interval:g} s) stored in "
            f"{time.monotonic() - started:.0f} s; last drain {report.gpu_rows} GPU rows"))

    # -- versions -----------------------------------------------------------------------------------------
    def versions(self, **_):
        from inference.models import ModelVersion

        for v in ModelVersion.objects.all():
            m = v.metrics.get("horizons", {}).get("60s", {}).get("gpu_temperature_celsius", {})
            mae = f"60 s temp MAE {m['mae']:.3f} vs persistence {m['persistence_mae']:.3f}" if m else "no metrics"
            self.stdout.write(f"{'*' if v.active else ' '} {v.name:<40} {v.kind:<13} {v.created_at:%Y-%m-%d %H:%M} "
                              f"{mae}")

    def activate(self, name, **_):
        from inference.models import ModelVersion

        version = ModelVersion.objects.filter(name=name).first()
        if version is None:
            raise CommandError(f"no model version {name!r}")
        version.load()  # refuse to activate a checkpoint that does not verify
        version.activate()
        self.stdout.write(self.style.SUCCESS(f"{name} is the active {version.get_kind_display()}"))

    def step(self, repeat, **_):
        from inference.serving import get_server

        server = get_server()
        for _ in range(repeat):
            self.stdout.write(json.dumps(server.step().as_dict()))

