"""bench/ceiling.py runs end to end: the coldest setpoints and full server fans each lift training throughput."""

import re
import subprocess
import sys

from tests.conftest import REPO


def test_ceiling_bench_prints_each_case_against_the_baseline():
    done = subprocess.run([sys.executable, str(REPO / "bench" / "ceiling.py"), "--minutes", "1", "--warmup-minutes",
                           "5"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    ratios = [float(x) for x in re.findall(r"all\s+[\d.]+%.*?([\d.]+)x$", done.stdout, re.M)]
    assert len(ratios) == 3 and ratios[0] == 1.0 and 1.0 < ratios[1] < ratios[2], done.stdout
    liquid = re.findall(r"liquid\s+([\d.]+)%", done.stdout)
    assert liquid == ["100.00"] * 3  # the liquid-cooled GPUs are never limited at these setpoints
