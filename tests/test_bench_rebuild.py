"""bench/rebuild.py runs end to end on a small facility: its own database, both lookups, the same drops."""

import subprocess
import sys

from tests.conftest import REPO


def test_rebuild_bench_finds_the_same_drops_both_ways():
    done = subprocess.run([sys.executable, str(REPO / "bench" / "rebuild.py"), "--gpus", "16", "--hours", "0.5",
                           "--reps", "1"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "16 GPUs over 2 h (8 GPUs with drops; same drops both ways: True)" in done.stdout
    assert "rollups + " in done.stdout and "raw span (baseline)" in done.stdout
    listing = subprocess.run(["psql", "postgres://postgres@127.0.0.1:5432/postgres", "-Atc",
                              "SELECT count(*) FROM pg_database WHERE datname = 'fusedc_bench_rebuild'"],
                             capture_output=True, text=True, check=True)
    assert listing.stdout.strip() == "0"  # dropped at the end
