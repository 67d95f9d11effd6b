"""The controller evaluation table in one command: every registered controller on the twin, against `fixed`.

    .venv/bin/python bench/control.py --quick           # CI: 2 h, mixed climate, seed 0
    .venv/bin/python bench/control.py                   # full: 7-day episodes, hot/mixed/cool, seeds 0-2
    .venv/bin/python bench/control.py --policy fixed --policy rl --days 1 --climate hot
    .venv/bin/python bench/control.py --checkpoint var/models/rl/x.safetensors   # rl from a file
    .venv/bin/python bench/control.py --policy fixed --policy mpc --min-throughput 0.97   # mpc with a work floor
    .venv/bin/python bench/control.py --policy fixed --min-throughput 0.97 --cooling-weight 1   # ... and cooling x2
    .venv/bin/python bench/control.py --policy fixed --days 1 --start 2025-07-06   # one day from 6 July
    .venv/bin/python bench/control.py --results runs.jsonl   # the full protocol, resumable: kept runs are not re-run

Runs `fixed`, `trim_respond`, `pid`, then `mpc` and `llm` where registered, and `rl`: the active RL model
version, or a given checkpoint; with neither, a small one is trained first (`manage.py control train-rl`;
`--no-train` skips rl instead). Each run is `facility.twin.evaluation.evaluate` on the demo facility file
(TWIN.md protocol: physics at 1 s, each policy at its own decision interval, every proposal through the
envelope guard). Prints the full comparison table, then per policy, climate and workload the ratios against
the baselines, and per policy the means over climates, workloads and seeds with the control issue's targets:
cooling energy at least 20 % below fixed setpoints and 10 % below trim & respond, facility energy per EFLOP
below every baseline's, throughput >= 99.5 % of unthrottled, no envelope violations and no shutdowns. The
policy meeting the most targets (then the lowest kWh/EFLOP) is named best. A controller that fails to start
(no model, no LLM) is reported and skipped.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from datetime import date, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

BASELINES = ("fixed", "trim_respond", "pid")
OPTIONAL = ("mpc", "llm")
WORKLOADS = ("training", "inference")  # TWIN.md protocol
# The control issue's targets, on means over climates, workloads and seeds; kWh/EFLOP must also be below
# every baseline's that ran.
TARGETS = {
    "cooling_vs_fixed": -0.20,
    "cooling_vs_trim_respond": -0.10,
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
    if not job.get("server_fans", True):
        from facility.twin.state import SERVER_FANS

        facility["cooling_units"] = [u for u in facility["cooling_units"] if u["kind"] != SERVER_FANS]
    try:
        policy = policies.create(job.get("name", job["policy"]), **job["params"])
        r = evaluate(policy, facility, days=job["days"], climate=job["climate"], workload=job["workload"],
                     seed=job["seed"], progress=False, start=datetime.fromisoformat(job["start"]))
        r.policy = job["policy"]  # a variant's label (mpc>=0.97) in the table
    except Exception as exc:  # a controller that cannot run is reported, not fatal
        return {**job, "error": f"{type(exc).__name__}: {exc}"}
    _add_cooling_with_server_fans(job, r.metrics)
    return {**job, "metrics": r.metrics, "wall_s": r.wall_s, "result": r}


@functools.cache
def _default_server_fan_kw() -> float:
    """The demo facility's server-fan power with every fan at the BMC default duty."""
    import yaml

    from facility.management.commands.seed_demo import DEMO_FILE
    from facility.twin.twin import Twin

    twin = Twin(yaml.safe_load(DEMO_FILE.read_text()))
    twin.step(1)
    return twin.server_fan_kw


def _add_cooling_with_server_fans(job: dict, metrics: dict) -> None:
    """`cooling_with_server_fans_kwh`: the plant's cooling plus the servers' fans (metered as IT; a policy that
    moves the fans can shift cooling work into them). A run without the metric that never moved the fans (a
    baseline, or one from before the fans were a control point) held them at the BMC default all along."""
    fans = metrics.get("server_fan_kwh")
    if fans is None and (job.get("name", job["policy"]) in BASELINES or not job.get("server_fans", True)):
        fans = _default_server_fan_kw() * job["days"] * 24
    if fans is not None:
        metrics["cooling_with_server_fans_kwh"] = metrics["cooling_kwh"] + fans



# --- a results file: each finished run appended as it ends, so a long protocol resumes where it stopped ---
KEY_FIELDS = ("policy", "name", "params", "climate", "workload", "seed", "days", "start")
SERIES_POINTS = 500  # a stored run's time series, thinned to at most this many points (the report's charts)


def _job_key(job: dict) -> str:
    """What identifies a run in a results file: the variant and its parameters, the episode, and whether the
    server fans were a control point (runs before they were have no such field). The baselines never move the
    fans (fixed holds the BMC default), so their runs are the same either way and keep one key (a test checks)."""
    key = {k: job[k] for k in KEY_FIELDS}
    if job.get("server_fans", True) and job.get("name", job["policy"]) not in BASELINES:
        key["server_fans"] = True
    return json.dumps(key, sort_keys=True)


def code_version() -> str:
    """The checkout's commit (with "+changes" when the work tree differs), for a stored run's provenance."""
    import subprocess

    repo = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+changes" if dirty else "")


def _record(job: dict, result, version: str) -> dict:
    step = max(1, -(-len(result.series.get("hours", [])) // SERIES_POINTS))
    return {"key": _job_key(job), "code": version, "profile": result.profile, "metrics": result.metrics,
            "wall_s": result.wall_s, "clipped_by": result.clipped_by, "violations_by": result.violations_by,
            "series": {k: v[::step] for k, v in result.series.items()}}


def _load_results(path: Path) -> dict[str, dict]:
    """The runs a results file holds, by key. A line that does not parse stops the bench, naming it, except a
    last line cut short (a run killed while writing it), which is removed from the file: that run runs again."""
    records = {}
    if not path.exists():
        return records
    text = path.read_text()
    lines = text.splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            records[record["key"]] = record
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            if n == len(lines) and not text.endswith("\n"):
                print(f"{path}:{n}: a run record cut short; removed (that run runs again)", flush=True)
                path.write_text(text[:text.rfind("\n") + 1])
                continue
            raise SystemExit(f"{path}:{n}: not a run record ({exc}); fix or remove that line") from None
    return records


def _from_record(job: dict, record: dict) -> dict:
    from facility.twin.evaluation import EvaluationResult

    result = EvaluationResult(job["policy"], job["climate"], job["workload"], job["seed"], job["days"],
                              record["profile"], record["metrics"], record["series"], record["clipped_by"],
                              record["violations_by"], record["wall_s"])
    _add_cooling_with_server_fans(job, result.metrics)
    return {**job, "metrics": result.metrics, "wall_s": result.wall_s, "result": result}

def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


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


def _fmt_ratio(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{x:+.1%}"


def _flag(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "no")


def _compare(results, policy: str, baseline: str, key: str, where=lambda r: True) -> float | None:
    """Mean over the (climate, workload, seed) runs both have of policy / baseline - 1 for `key` (a mean of
    ratios, so an inference run's kWh/EFLOP, 3x a training run's, does not outweigh it)."""
    def runs(name):
        return {(r.climate, r.workload, r.seed): float(r.metrics[key]) for r in results
                if r.policy == name and where(r) and key in r.metrics}
    mine, theirs = runs(policy), runs(baseline)
    both = mine.keys() & theirs.keys()
    if not both:
        return None
    return statistics.fmean(mine[k] / theirs[k] - 1 for k in both)


def _measures(results, policy: str, where=lambda r: True) -> dict:
    runs = [r for r in results if r.policy == policy and where(r)]
    out = {f"cooling_vs_{b}": _compare(results, policy, b, "cooling_kwh", where) for b in ("fixed", "trim_respond")}
    out |= {f"cooling_with_fans_vs_{b}": _compare(results, policy, b, "cooling_with_server_fans_kwh", where)
            for b in ("fixed", "trim_respond")}
    out |= {f"kwh_per_eflop_vs_{b}": _compare(results, policy, b, "kwh_per_eflop", where) for b in BASELINES}
    out["throughput_ratio"] = statistics.fmean(float(r.metrics["throughput_ratio"]) for r in runs)
    out["violations"] = sum(int(r.metrics["envelope_violations"]) for r in runs)
    out["shutdowns"] = sum(int(r.metrics["shutdowns"]) for r in runs)
    out["runs"] = len(runs)
    return out


def _targets_met(policy: str, m: dict) -> dict:
    below = [x for b in BASELINES if b != policy and (x := m[f"kwh_per_eflop_vs_{b}"]) is not None]
    return {
        "cooling_vs_fixed": None if m["cooling_vs_fixed"] is None
        else m["cooling_vs_fixed"] <= TARGETS["cooling_vs_fixed"],
        "cooling_vs_trim_respond": None if m["cooling_vs_trim_respond"] is None
        else m["cooling_vs_trim_respond"] <= TARGETS["cooling_vs_trim_respond"],
        "kwh_per_eflop_below_baselines": all(x < 0 for x in below) if below else None,
        "throughput": m["throughput_ratio"] >= TARGETS["throughput"],
        "safe": m["violations"] == 0 and m["shutdowns"] == 0,
    }


def summarise(results, policies: list[str], climates: list[str], workloads: list[str]) -> dict:
    """Ratios against the baselines per climate and workload, and per policy over all its runs with the
    control issue's targets (None where the baseline a target needs did not run); the best policy."""
    rows, overall, by_workload = [], [], []
    for policy in policies:
        for climate in climates:
            for workload in workloads:
                where = lambda r, c=climate, w=workload: r.climate == c and r.workload == w  # noqa: E731
                if any(r.policy == policy and where(r) for r in results):
                    rows.append({"policy": policy, "climate": climate, "workload": workload,
                                 **_measures(results, policy, where)})
        if not any(r.policy == policy for r in results):
            continue
        m = _measures(results, policy)
        overall.append({"policy": policy, **m, "targets_met": _targets_met(policy, m)})
        # The issue states its targets as means over climates and seeds: also judged within each workload.
        for workload in workloads:
            where = lambda r, w=workload: r.workload == w  # noqa: E731
            if len(workloads) > 1 and any(r.policy == policy and where(r) for r in results):
                mw = _measures(results, policy, where)
                by_workload.append({"policy": policy, "workload": workload, **mw,
                                    "targets_met": _targets_met(policy, mw)})
    # A policy with a violation or a shutdown is never the best, whatever else it meets.
    candidates = [o for o in overall if o["policy"] not in BASELINES and o["targets_met"]["safe"]]
    best = max(candidates, default=None, key=lambda o: (sum(v is True for v in o["targets_met"].values()),
                                                        -(o["kwh_per_eflop_vs_fixed"] or 0.0)))
    return {"rows": rows, "overall": overall, "by_workload": by_workload, "best": best["policy"] if best else None}


def summary_text(summary: dict) -> str:
    cols = ("cooling_vs_fixed", "cooling_vs_trim_respond", "kwh_per_eflop_vs_fixed", "kwh_per_eflop_vs_trim_respond",
            "kwh_per_eflop_vs_pid")
    heads = ("cool/fixed", "cool/trim", "kWh/EF/fixed", "kWh/EF/trim", "kWh/EF/pid")

    def line(label: str, m: dict) -> str:
        return (f"{label:<34}" + "".join(f"{_fmt_ratio(m[c]):>13}" for c in cols)
                + f"{m['throughput_ratio']:>8.2%}{m['violations']:>6}{m['shutdowns']:>6}")

    header = (f"{'policy / climate / workload':<34}" + "".join(f"{h:>13}" for h in heads)
              + f"{'thru':>8}{'viol':>6}{'shut':>6}")
    out = ["", "Against the baselines (mean over seeds of each run's ratio to the same run of the baseline)", header,
           "-" * len(header)]
    out += [line(f"{r['policy']} / {r['climate']} / {r['workload']}", r) for r in summary["rows"]]
    out += ["", "Means over climates, workloads and seeds; targets: cooling "
                f"{TARGETS['cooling_vs_fixed']:.0%} vs fixed and {TARGETS['cooling_vs_trim_respond']:.0%} vs "
                "trim_respond, kWh/EFLOP below every baseline's, "
                f"throughput >= {TARGETS['throughput']:.1%}, 0 violations, 0 shutdowns", header, "-" * len(header)]
    for o in summary["overall"]:
        flags = "(baseline)" if o["policy"] in BASELINES else " ".join(
            f"{k}:{_flag(v)}" for k, v in o["targets_met"].items())
        out.append(f"{line(o['policy'], o)}  {flags}")
    if summary.get("by_workload"):
        out += ["", "The same within each workload (means over climates and seeds)", header, "-" * len(header)]
        for o in summary["by_workload"]:
            flags = "(baseline)" if o["policy"] in BASELINES else " ".join(
                f"{k}:{_flag(v)}" for k, v in o["targets_met"].items())
            out.append(f"{line(o['policy'] + ' / ' + o['workload'], o)}  {flags}")
    with_fans = [o for o in summary["overall"] if o["policy"] not in BASELINES
                 and o.get("cooling_with_fans_vs_fixed") is not None]
    if with_fans:
        out += ["", "Cooling including the servers' fans (metered as IT power; a policy that moves them can shift "
                "cooling work into the servers), means over all runs:"]
        out += [f"{o['policy']:<34}{_fmt_ratio(o['cooling_with_fans_vs_fixed']):>13} vs fixed"
                f"{_fmt_ratio(o['cooling_with_fans_vs_trim_respond']):>13} vs trim_respond" for o in with_fans]
    if summary["best"]:
        out.append(f"\nbest policy: {summary['best']}")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CI protocol: 2 h, mixed climate, seed 0.")
    p.add_argument("--policy", action="append", help="Only these policies (repeat; fixed is always included).")
    p.add_argument("--days", type=float, help="Episode length (default 7; --quick 2 h).")
    p.add_argument("--start", type=_date, default=date(2025, 7, 1),
                   help="First day of each episode in the weather year, YYYY-MM-DD (default 2025-07-01).")
    p.add_argument("--climate", action="append", choices=["hot", "mixed", "cool"])
    p.add_argument("--workload", action="append", choices=["training", "inference", "burn"],
                   help="Workload of every hall (repeat; default training and inference, --quick training).")
    p.add_argument("--seed", type=int, action="append")
    p.add_argument("--checkpoint", help="rl checkpoint (.safetensors) instead of the active model version.")
    p.add_argument("--no-train", action="store_true", help="Skip rl when no model exists instead of training one.")
    p.add_argument("--min-throughput", type=float, action="append", default=[],
                   help="Also run mpc with this throughput floor (share of unthrottled; repeat), as mpc>=X.")
    p.add_argument("--cooling-weight", type=float, action="append", default=[],
                   help="Run each mpc>=X with this extra weight on cooling kWh instead (repeat), as mpc>=X,cw=W.")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="Evaluation processes.")
    p.add_argument("--threads", type=int, default=1, help="Torch threads per process.")
    p.add_argument("--results", help="A JSON-lines file: each finished run is appended as it ends, and runs "
                   "already in it are\nnot run again (resume a long protocol; the table covers both).")
    p.add_argument("--without-server-fans", action="store_true",
                   help="Drop the demo facility's server-fan control point (the facility of the runs stored before\n"
                   "it existed): the policies steer the cooling plant alone.")
    p.add_argument("--json", help="Also write the results (metrics per run, ratios, targets) here.")
    p.add_argument("--report", help="Also write the plotly HTML report here.")
    args = p.parse_args(argv)

    _setup_django()
    from control import policies
    from facility.twin.evaluation import comparison_table, write_report

    days = args.days or (2 / 24 if args.quick else 7.0)
    climates = args.climate or (["mixed"] if args.quick else ["hot", "mixed", "cool"])
    seeds = args.seed or ([0] if args.quick else [0, 1, 2])
    workloads = args.workload or (["training"] if args.quick else list(WORKLOADS))
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
    if args.cooling_weight and not args.min_throughput:
        p.error("--cooling-weight applies to the floored mpc variants: give --min-throughput too")
    for floor in args.min_throughput:
        for weight in args.cooling_weight or [0.0]:
            label = f"mpc>={floor:g}" + (f",cw={weight:g}" if weight else "")
            wanted.append(label)
            names[label], params[label] = "mpc", {"min_throughput": floor, "cooling_weight": weight}
    jobs = [{"policy": n, "name": names[n], "params": params[n], "climate": c, "workload": w, "seed": s,
             "days": days, "start": args.start.isoformat(), "server_fans": not args.without_server_fans}
            for n in wanted for c in climates for w in workloads for s in seeds]
    print(f"{len(jobs)} runs: {', '.join(wanted)} × {', '.join(climates)} × {', '.join(workloads)} × seeds {seeds}, "
          f"{days * 24:g} h each from {args.start}"
          + (f" (rl: {notes['rl']})" if "rl" in notes else ""), flush=True)

    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    results_file = Path(args.results) if args.results else None
    saved = _load_results(results_file) if results_file else {}
    done = [_from_record(job, saved[_job_key(job)]) for job in jobs if _job_key(job) in saved]
    todo = [job for job in jobs if _job_key(job) not in saved]
    version = code_version()
    if results_file:
        print(f"{len(done)} of the runs already in {results_file}, {len(todo)} to run", flush=True)
        older = sorted({saved[_job_key(j)].get("code", "unknown") for j in jobs if _job_key(j) in saved} - {version})
        if older:
            print(f"note: stored runs come from code {', '.join(older)}, this checkout is {version}", flush=True)

    def finished(out: dict) -> None:
        done.append(out)
        if results_file and "error" not in out:
            with results_file.open("a") as f:
                f.write(json.dumps(_record(out, out["result"], version)) + "\n")

    if args.workers > 1 and len(todo) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(min(args.workers, len(todo)), _init_worker, (args.threads,)) as pool:
            for out in tqdm(pool.imap_unordered(_run, todo), total=len(todo), desc="evaluating", unit="run"):
                finished(out)
    elif todo:
        _init_worker(args.threads)
        for job in tqdm(todo, desc="evaluating", unit="run"):
            finished(_run(job))
    failed = [d for d in done if "error" in d]
    ok = [d for d in done if "error" not in d]
    for d in failed:
        print(f"! {d['policy']} / {d['climate']} / {d['workload']} / seed {d['seed']}: {d['error']}")
    results = [d["result"] for d in ok]
    order = {n: i for i, n in enumerate(wanted)}
    results.sort(key=lambda r: (order[r.policy], climates.index(r.climate), r.workload, r.seed))
    print()
    print(comparison_table(results))
    summary = summarise(results, wanted, climates, workloads)
    print(summary_text(summary))
    print(f"\n{len(todo)} runs in {time.perf_counter() - t0:.0f} s" + (f"; {len(failed)} failed" if failed else "")
          + (f" ({len(done) - len(todo)} more from {results_file})" if len(done) > len(todo) else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "protocol": {"days": days, "start": args.start.isoformat(), "climates": climates, "workloads": workloads,
                         "seeds": seeds, "notes": notes},
            "runs": [{k: d[k] for k in ("policy", "climate", "workload", "seed", "days", "metrics", "wall_s")}
                     for d in ok],
            "failed": [{k: d[k] for k in ("policy", "climate", "workload", "seed", "error")} for d in failed],
            "summary": summary}, indent=2, default=str))
    if args.report:
        write_report(results, args.report)
    return 1 if failed and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
