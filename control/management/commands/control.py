"""`manage.py control train-rl`: offline RL for the cooling plant, from logged transitions to an active model.

    manage.py control train-rl                         # demo size: 12 six-hour episodes, IQL, 10k steps
    manage.py control train-rl --algorithm td3bc --episodes 24 --steps 20000 --save-dataset var/rl/data.npz
    manage.py control train-rl --dataset var/rl/data.npz --name rl-iql-2   # retrain on a saved dataset

Logs the baselines (plus exploration) on the twin of the demo facility file (or `--site`), trains the
agent (control.rl), writes `CONTROL_RL_MODEL_DIR/NAME.safetensors` + `NAME.json` (config and SHA-256)
and records a `PolicyModelVersion` (metrics, config, data range, checkpoint path, checksum), made the
active version unless `--no-activate`. The `rl` policy then runs it (`twin evaluate --policy rl`, or a
policy run).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from facility.models import Site


class Command(BaseCommand):
    help = "Control tools: train the offline-RL policy (train-rl)."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        tr = actions.add_parser("train-rl", help="Log transitions on the twin, train offline RL, register it.")
        data = tr.add_argument_group("dataset")
        data.add_argument("--dataset", help="Train on this saved dataset (.npz) instead of logging a new one.")
        data.add_argument("--save-dataset", help="Also save the logged dataset here (.npz).")
        data.add_argument("--episodes", type=int, default=12, help="Logged episodes (default 12).")
        data.add_argument("--episode-hours", type=float, default=6.0, help="Hours per episode (default 6).")
        data.add_argument("--behaviour", action="append", choices=["fixed", "trim_respond", "pid", "fixed_random"],
                          help="Behaviour policies, cycled over episodes (repeat; default all four).")
        data.add_argument("--climate", action="append", choices=["hot", "mixed", "cool"],
                          help="Climates (repeat; default all three).")
        data.add_argument("--noise", type=float, default=0.5, help="Exploration move sd, in max steps.")
        data.add_argument("--noise-prob", type=float, default=0.1, help="Chance per decision and point of a move.")
        data.add_argument("--workload", default="training", choices=["training", "inference", "burn"])
        data.add_argument("--profile", default="seed")
        data.add_argument("--site", help="Site slug whose facility to use (default: the demo facility file).")
        data.add_argument("--workers", type=int, default=1, help="Processes logging episodes in parallel.")
        learn = tr.add_argument_group("training")
        learn.add_argument("--algorithm", default="iql", choices=["iql", "td3bc"],
                           help="iql (default: in-sample, stable on this data) or td3bc.")
        learn.add_argument("--steps", type=int, default=10_000, help="Gradient steps (default 10000).")
        learn.add_argument("--batch-size", type=int, default=256)
        learn.add_argument("--hidden", type=int, default=256)
        learn.add_argument("--gamma", type=float, default=0.99)
        learn.add_argument("--holdout", type=float, default=0.2, help="Share of episodes held out.")
        learn.add_argument("--seed", type=int, default=0)
        learn.add_argument("--threads", type=int, default=None,
                           help="Torch threads (default CONTROL_RL_TORCH_THREADS).")
        out = tr.add_argument_group("output")
        out.add_argument("--name", help="Model version name (default rl-<algorithm>-<UTC time>).")
        out.add_argument("--no-activate", action="store_true", help="Record the version without activating it.")
        out.add_argument("--json", action="store_true", dest="as_json", help="Print the result as one JSON object.")

    def handle(self, *args, action, **options):
        getattr(self, action.replace("-", "_"))(**options)

    def train_rl(self, *, dataset, save_dataset, episodes, episode_hours, behaviour, climate, noise, noise_prob,
                 workload, profile, site, workers, algorithm, steps, batch_size, hidden, gamma, holdout, seed, threads,
                 name, no_activate, as_json, **_):
        import torch

        from control.models import PolicyModelVersion
        from control.rl.algorithms import TrainConfig
        from control.rl.checkpoint import save_checkpoint
        from control.rl.dataset import BEHAVIOURS, CollectConfig, Transitions, collect
        from control.rl.training import train

        torch.set_num_threads(threads or settings.CONTROL_RL_TORCH_THREADS)
        name = name or f"rl-{algorithm}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
        if PolicyModelVersion.objects.filter(name=name).exists():
            raise CommandError(f"a model version named {name!r} exists")
        if steps < 1 or episodes < 1 or episode_hours <= 0:
            raise CommandError("--steps, --episodes and --episode-hours must be positive")
        site_obj = None
        t0 = time.perf_counter()
        if dataset:
            try:
                data = Transitions.load(dataset)
            except (OSError, ValueError, KeyError) as exc:
                raise CommandError(f"cannot read dataset {dataset}: {exc}") from None
        else:
            if site:
                from facility.facility_file import export_facility

                site_obj = Site.objects.filter(slug=site).first()
                if site_obj is None:
                    raise CommandError(f"no site {site!r}")
                facility = export_facility(site_obj)
            else:
                from facility.management.commands.seed_demo import DEMO_FILE

                facility = yaml.safe_load(DEMO_FILE.read_text())
            cfg = CollectConfig(episodes=episodes, episode_hours=episode_hours,
                                behaviours=tuple(behaviour or BEHAVIOURS),
                                climates=tuple(climate or ("hot", "mixed", "cool")), workload=workload,
                                profile=profile, noise=noise, noise_prob=noise_prob, seed=seed, workers=workers)
            if not as_json:
                self.stdout.write(f"Logging {episodes} × {episode_hours:g} h episodes ({', '.join(cfg.behaviours)}; "
                                  f"{', '.join(cfg.climates)}) on the twin…")
            data = collect(facility, cfg, progress=not as_json)
            if save_dataset:
                data.save(save_dataset)
        t_data = time.perf_counter() - t0
        tcfg = TrainConfig(steps=steps, batch_size=batch_size, gamma=gamma, seed=seed)
        result = train(data, algorithm, tcfg, hidden=hidden, holdout=holdout, progress=not as_json,
                       log_every=max(1, steps // 20))
        info = data.info
        data_record = {
            "source": info.get("source", "twin"), "transitions": len(data), "dataset": dataset or save_dataset or "",
            "config": info.get("config", {}),
            "episodes": [{k: e.get(k) for k in ("behaviour", "climate", "seed", "params", "decisions",
                                                  "kwh_per_eflop", "start_time", "end_time")}
                         for e in info.get("episodes", [])],
            "logging_seconds": round(t_data, 1),
        }
        saved = save_checkpoint(result.agent, result.spec, settings.CONTROL_RL_MODEL_DIR, name,
                                config_extra={"gamma": gamma},
                                extra={"metrics": result.metrics, "training": tcfg.to_dict(),
                                       "data": {k: v for k, v in data_record.items() if k != "episodes"}})

        def aware(s):
            return datetime.fromisoformat(s).replace(tzinfo=UTC) if s else None

        version = PolicyModelVersion.objects.create(
            name=name, policy="rl", algorithm=algorithm, site=site_obj, config=saved.meta["config"],
            training=tcfg.to_dict() | {"hidden": hidden, "holdout": holdout}, data=data_record,
            data_start=aware(info.get("data_start")), data_end=aware(info.get("data_end")), metrics=result.metrics,
            training_curves=result.curves, training_seconds=round(result.seconds, 1),
            checkpoint_path=str(saved.weights), checksum_sha256=saved.sha256)
        if not no_activate:
            version.activate()
        summary = {"name": name, "id": version.pk, "active": not no_activate, "algorithm": algorithm,
                   "transitions": len(data), "logging_seconds": round(t_data, 1),
                   "training_seconds": round(result.seconds, 1), "checkpoint": str(saved.weights),
                   "sha256": saved.sha256, "held_out": result.metrics.get("held_out", {})}
        if as_json:
            self.stdout.write(json.dumps(summary))
            return
        h = {k: summary["held_out"].get(k, float("nan")) for k in
             ("td_rmse", "bc_mse", "advantage_vs_hold", "hold_share", "logged_hold_share")}
        self.stdout.write(
            f"Model version {name} (#{version.pk}{', active' if not no_activate else ''}): {len(data)} transitions "
            f"logged in {t_data:.0f} s, trained {steps} {algorithm} steps in {result.seconds:.0f} s.\n"
            f"Held out: TD RMSE {h['td_rmse']:.3f}, BC MSE {h['bc_mse']:.3f}, Q advantage over holding "
            f"{h['advantage_vs_hold']:+.3f}, holds {h['hold_share']:.0%} of points "
            f"(logged {h['logged_hold_share']:.0%}).\n"
            f"Checkpoint: {Path(saved.weights)} (SHA-256 {saved.sha256[:12]}…)")
