"""The load-drop scan of a restarted forecast worker, at facility scale: through the 1-minute rollups vs raw.

    .venv/bin/python bench/rebuild.py [--gpus 4096] [--hours 2] [--interval 5] [--reps 3]

When the serving worker rebuilds a stream (restart, eviction, new model) it seeds the stream's load-drop
inputs from the database: `inference.dataset.load_drops_before` finds each GPU's last two sharp falls in
utilisation over the last `MAX_LOAD_DROP_AGE_S` (2 h). This bench stores --hours of readings every --interval
seconds for --gpus GPUs in its own PostgreSQL database (`fusedc_bench_rebuild`: created, migrated, dropped at
the end), half of them training-like (a 60 s checkpoint dip every 15 min, each GPU at its own phase) and half
inference-like (utilisation wandering between 70 and 100 %, never a drop), rolls them up as the beat task
does, and times the lookup for every GPU both ways, interleaved, median of --reps: reading the whole span raw
(the baseline; what SQLite and a site without rollups do) and reading raw only the minutes the rollups say
can hold a drop. Both must find the same drops. Prints one table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DB_NAME = "fusedc_bench_rebuild"
PG = "postgres://postgres@127.0.0.1:5432"


def _psql(sql: str) -> None:
    done = subprocess.run(["psql", f"{PG}/postgres", "-q", "-c", sql], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"psql failed on {sql!r}: {done.stderr.strip()}")


def _store(gpus: int, hours: float, interval: float) -> float:
    """Insert the readings (one statement, generated in the database); returns the end of the data."""
    from datetime import UTC, datetime, timedelta

    from django.db import connection

    from telemetry.storage import ensure_partitions

    steps = int(hours * 3600 / interval)
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(seconds=steps * interval)
    ensure_partitions({start.date(), end.date()})
    dip = round(900 / interval)  # a checkpoint every 15 min, lasting 60 s
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO telemetry_gpusample (gpu_id, time, gpu_temp, power_usage, gpu_util) "
            "SELECT g, %s + s * %s * interval '1 second', 60, 600, "
            "CASE WHEN g %% 2 = 1 THEN CASE WHEN (s + g * 7) %% %s < %s THEN 5 ELSE 95 END "
            "ELSE 70 + 30 * abs(sin(g * 0.37 + s * 0.05)) END "
            "FROM generate_series(1, %s) g, generate_series(0, %s) s",
            [start, interval, dip, round(60 / interval), gpus, steps - 1],
        )
        cursor.execute("ANALYZE telemetry_gpusample")
    return end.timestamp()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gpus", type=int, default=4096)
    p.add_argument("--hours", type=float, default=2.0)
    p.add_argument("--interval", type=float, default=5.0, help="Seconds between a GPU's readings.")
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args(argv)

    env = {**os.environ, "DATABASE_URL": f"{PG}/{DB_NAME}", "DJANGO_SETTINGS_MODULE": "config.settings.local"}
    _psql(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
    _psql(f"CREATE DATABASE {DB_NAME}")
    try:
        subprocess.run([sys.executable, str(REPO / "manage.py"), "migrate", "-v", "0"], env=env, check=True)
        os.environ.update(env)
        import django

        django.setup()
        import numpy as np
        from tqdm import tqdm

        from inference import dataset
        from telemetry import rollups

        t0 = time.perf_counter()
        end = _store(args.gpus, args.hours, args.interval)
        stored_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        rollups.roll_up(now=end + rollups.SETTLE_SECONDS)
        rolled_s = time.perf_counter() - t0
        rows = int(args.gpus * args.hours * 3600 / args.interval)
        print(f"{rows:,} readings of {args.gpus:,} GPUs stored in {stored_s:.0f} s, rolled up in {rolled_s:.0f} s")

        ids = list(range(1, args.gpus + 1))
        times: dict[str, list[float]] = {"raw": [], "rollups": []}
        found = {}
        for _ in tqdm(range(args.reps), desc="lookups", unit="rep"):
            for name in ("raw", "rollups"):
                t0 = time.perf_counter()
                found[name] = dataset.load_drops_before(ids, end, rollups=name == "rollups")
                times[name].append(time.perf_counter() - t0)
        spans = dataset._drop_ranges(ids, end - dataset.MAX_LOAD_DROP_AGE_S, end)
        same = all(np.array_equal([a.previous_drop_s, a.last_drop_s, a.last_utilization],
                                  [b.previous_drop_s, b.last_drop_s, b.last_utilization], equal_nan=True)
                   for a, b in ((found["raw"][g], found["rollups"][g]) for g in ids))
        with_drops = sum(not np.isnan(s.last_drop_s) for s in found["rollups"].values())
        base = statistics.median(times["raw"])
        print(f"\nload_drops_before for {args.gpus:,} GPUs over {dataset.MAX_LOAD_DROP_AGE_S / 3600:g} h "
              f"({with_drops:,} GPUs with drops; same drops both ways: {same})")
        print(f"{'method':<34} {'median s':>9} {'speed-up vs raw':>16}")
        print(f"{'raw span (baseline)':<34} {base:>9.2f} {1.0:>15.2f}x")
        med = statistics.median(times["rollups"])
        print(f"{f'rollups + {len(spans):,} raw spans':<34} {med:>9.2f} {base / med:>15.2f}x")
        return 0 if same else 1
    finally:
        from django.db import connections

        connections.close_all()
        _psql(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")


if __name__ == "__main__":
    sys.exit(main())
