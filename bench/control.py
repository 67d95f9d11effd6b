"""The controller evaluation table in one command: every registered controller on the twin, against `fixed`.

    .venv/bin/python bench/control.py --quick           # CI: 2 h, mixed climate, seed 0
    .venv/bin/python bench/control.py                   # full: 7-day episodes, hot/mixed/cool, seeds 0-2
    .venv/bin/python bench/control.py --policy fixed --policy rl --days 1 --climate hot
    .venv/bin/python bench/control.py --checkpoint var/models/rl/x.safetensors   # rl from a file
    .venv/bin/python bench/control.py --policy fixed --policy mpc --min-throughput 0.97   # mpc with a work floor

Runs `fixed`, `trim_respond`, `pid`, then `mpc` and `llm` where registered, and `rl`: the active RL model
version, or a given checkpoint; with neither, a small one is trained first (`manage.py control train-rl`;
`--no-train` skips rl instead). Each run is `facility.twin.evaluation.evaluate` on the demo facility file
(TWIN.md protocol: physics at 1 s, each policy at its own decision interval, every proposal through the
envelope guard). Prints the full comparison table, then per policy and climate the ratios against `fixed`
(cooling kWh, kWh/EFLOP), the throughput share, violations and shutdowns, and whether the issue's targets
are met: cooling energy -14 % or better (Zhan et al. offline RL), total energy per unit of work -14.4 % vs
the ASHRAE-style controller (`trim_respond`; DC-CFR), throughput >= 99.5 % of unthrottled, no envelope
violations and no shutdowns. A controller that fails to start (no model, no LLM) is reported and skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

BASELINES = ("fixed", "trim_respond", "pid")
OPTIONAL = ("mpc", "llm")
TARGETS = {
    "cooling_vs_fixed": -0.14,  # Zhan et al. ICLR 2025: -14 to -21 % cooling energy
    "kwh_per_eflop_vs_trim_respond": -0.144,  # DC-CFR (AAAI 2024): -14.4 % total energy vs ASHRAE control
    "throughput": 0.995,
}


def _setup_django() -> None:
    import django

    django.setup()


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    _setup_django()


def _run(job: dict) -> dict:
    """One evaluation in a worker process: returns the result as a dict (or the error)."""
    import yaml

    from control import policies
    from facility.management.commands.seed_demo import DEMO_FILE
    from facility.twin.evaluation import evaluate

    facility = yaml.safe_load(DEMO_FILE.read_text())
    try:
        policy = policies.create(job.get("name", job["policy"]), **job["params"])
        r = evaluate(policy, facility, days=job["days"], climate=job["climate"], seed=job["seed"], progress=False)
        r.policy = job["policy"]  # a variant's label (mpc>=0.97) in the table
    except Exception as exc:  # a controller that cannot run is reported, not fatal
        return {**job, "error": f"{type(exc).__name__}: {exc}"}
    return {**job, "metrics": r.metrics, "wall_s": r.wall_s, "result": r}


def _rl_checkpoint(args) -> tuple[str | None, str]:
    """(checkpoint path, how it was found) for rl; trains a small model when there is none."""
    if args.checkpoint:
        return args.checkpoint, "given checkpoint"
    from control.models import PolicyModelVersion

    version = PolicyModelVersion.objects.filter(policy="rl", active=True).first()
    if version is None and not args.no_train:
        from django.core.management import call_command

        small = ["--episodes", "4", "--episode-hours", "2", "--steps", "2000"] if args.quick else []
        print(f"No active RL model: training one (manage.py control train-rl {' '.join(small)})…", flush=True)
        t0 = time.perf_counter()
        call_command("control", "train-rl", *small, "--workers", str(max(1, args.workers)), "--json")
        print(f"trained in {time.perf_counter() - t0:.0f} s", flush=True)
        version = PolicyModelVersion.objects.filter(policy="rl", active=True).first()
    if version is None:
        return None, "no active RL model version (--no-train)"
    version.load()  # verify checksum and config before spending evaluation time
    return version.checkpoint_path, f"model version {version.name}"


def _fmt_ratio(x: float) -> str:
    return f"{x:+.1%}" if x == x else "n/a"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CI protocol: 2 h, mixed climate, seed 0.")
    p.add_argument("--policy", action="append", help="Only these policies (repeat; fixed is always included).")
    p.add_argument("--days", type=float, help="Episode length (default 7; --quick 2 h).")
    p.add_argument("--climate", action="append", choices=["hot", "mixed", "cool"])
    p.add_argument("--seed", type=int, action="append")
    p.add_argument("--checkpoint", help="rl checkpoint (.safetensors) instead of the active model version.")
    p.add_argument("--no-train", action="store_true", help="Skip rl when no model exists instead of training one.")
    p.add_argument("--min-throughput", type=float, action="append", default=[],
                   help="Also run mpc with this throughput floor (share of unthrottled; repeat), as mpc>=X.")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="Evaluation processes.")
    p.add_argument("--threads", type=int, default=1, help="Torch threads per process.")
    p.add_argument("--json", help="Also write the results (metrics per run, ratios, targets) here.")
    p.add_argument("--report", help="Also write the plotly HTML report here.")
    args = p.parse_args(argv)

    _setup_django()
    from control import policies
    from facility.twin.evaluation import comparison_table, write_report

    days = args.days or (2 / 24 if args.quick else 7.0)
    climates = args.climate or (["mixed"] if args.quick else ["hot", "mixed", "cool"])
    seeds = args.seed or ([0] if args.quick else [0, 1, 2])
    wanted = args.policy or [*BASELINES, *(n for n in OPTIONAL if n in policies.names()), "rl"]
    wanted = list(dict.fromkeys(["fixed", *wanted]))
    params: dict[str, dict] = {name: {} for name in wanted}
    notes = {}
    if "rl" in wanted:
        path, how = _rl_checkpoint(args)
        notes["rl"] = how
        if path is None:
            wanted.remove("rl")
        else:
            params["rl"] = {"checkpoint": path}
    names = {n: n for n in wanted}
    for floor in args.min_throughput:
        label = f"mpc>={floor:g}"
        wanted.append(label)
        names[label], params[label] = "mpc", {"min_throughput": floor}
    jobs = [{"policy": n, "name": names[n], "params": params[n], "climate": c, "seed": s, "days": days}
            for n in wanted for c in climates for s in seeds]
    print(f"{len(jobs)} runs: {', '.join(wanted)} × {', '.join(climates)} × seeds {seeds}, {days * 24:g} h each"
          + (f" (rl: {notes['rl']})" if "rl" in notes else ""), flush=True)

    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    done = []
    if args.workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(min(args.workers, len(jobs)), _init_worker, (args.threads,)) as pool:
            for out in tqdm(pool.imap_unordered(_run, jobs), total=len(jobs), desc="evaluating", unit="run"):
                done.append(out)
    else:
        _init_worker(args.threads)
        for job in tqdm(jobs, desc="evaluating", unit="run"):
            done.append(_run(job))
    failed = [d for d in done if "error" in d]
    ok = [d for d in done if "error" not in d]
    for d in failed:
        print(f"! {d['policy']} / {d['climate']} / seed {d['seed']}: {d['error']}")
    results = [d["result"] for d in ok]
    order = {n: i for i, n in enumerate(wanted)}
    results.sort(key=lambda r: (order[r.policy], climates.index(r.climate), r.seed))
    print()
    print(comparison_table(results))

    def mean(policy, climate, key):
        vals = [float(r.metrics[key]) for r in results if r.policy == policy and r.climate == climate]
        return statistics.fmean(vals) if vals else float("nan")

    print(f"\nAgainst fixed (mean over seeds); targets: cooling kWh ≤ {TARGETS['cooling_vs_fixed']:.0%} vs fixed, "
          f"kWh/EFLOP ≤ {TARGETS['kwh_per_eflop_vs_trim_respond']:.1%} vs trim_respond, throughput ≥ "
          f"{TARGETS['throughput']:.1%}, 0 violations, 0 shutdowns")
    header = f"{'policy':>14} {'climate':>7} {'cooling':>9} {'kWh/EFLOP':>10} {'vs trim':>8} {'thru':>7} " \
             f"{'viol':>5} {'shut':>5}  targets met"
    print(header)
    print("-" * len(header))
    summary = []
    for policy in wanted:
        for climate in climates:
            if not any(r.policy == policy and r.climate == climate for r in results):
                continue
            cool = mean(policy, climate, "cooling_kwh") / mean("fixed", climate, "cooling_kwh") - 1
            kpe = mean(policy, climate, "kwh_per_eflop") / mean("fixed", climate, "kwh_per_eflop") - 1
            vs_trim = mean(policy, climate, "kwh_per_eflop") / mean("trim_respond", climate, "kwh_per_eflop") - 1
            thru = mean(policy, climate, "throughput_ratio")
            viol = mean(policy, climate, "envelope_violations")
            shut = mean(policy, climate, "shutdowns")
            met = {"cooling": cool <= TARGETS["cooling_vs_fixed"],
                   "total_vs_ashrae": vs_trim <= TARGETS["kwh_per_eflop_vs_trim_respond"],
                   "throughput": thru >= TARGETS["throughput"], "safe": viol == 0 and shut == 0}
            summary.append({"policy": policy, "climate": climate, "cooling_vs_fixed": cool,
                            "kwh_per_eflop_vs_fixed": kpe, "kwh_per_eflop_vs_trim_respond": vs_trim,
                            "throughput_ratio": thru, "violations": viol, "shutdowns": shut, "targets_met": met})
            flags = " ".join(f"{k}:{'yes' if v else 'no'}" for k, v in met.items())
            print(f"{policy:>14} {climate:>7} {_fmt_ratio(cool):>9} {_fmt_ratio(kpe):>10} {_fmt_ratio(vs_trim):>8} "
                  f"{thru:7.2%} {viol:5.0f} {shut:5.0f}  {flags if policy != 'fixed' else '(reference)'}")
    print(f"\n{len(ok)} runs in {time.perf_counter() - t0:.0f} s" + (f"; {len(failed)} failed" if failed else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "protocol": {"days": days, "climates": climates, "seeds": seeds, "notes": notes},
            "runs": [{k: d[k] for k in ("policy", "climate", "seed", "days", "metrics", "wall_s")} for d in ok],
            "failed": [{k: d[k] for k in ("policy", "climate", "seed", "error")} for d in failed],
            "summary": summary}, indent=2, default=str))
    if args.report:
        write_report(results, args.report)
    return 1 if failed and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
