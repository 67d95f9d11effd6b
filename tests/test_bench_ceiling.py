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


def test_fan_sweep_prints_each_duty_against_the_bmc_default():
    done = subprocess.run([sys.executable, str(REPO / "bench" / "ceiling.py"), "--fan-sweep", "--minutes", "1",
                           "--warmup-minutes", "5"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = re.findall(r"^(training|inference)\s+([\d.]+)\s+([\d.]+)%\s+[\d.]+\s+([+-][\d.]+)%", done.stdout, re.M)
    assert [(w, float(d)) for w, d, _, _ in rows] == [(w, d) for w in ("training", "inference")
                                                      for d in (0.6, 0.7, 0.8, 0.9, 1.0)], done.stdout
    assert all(float(vs) == 0.0 for _, d, _, vs in rows if d == "0.8")
    training = [float(t) for w, _, t, _ in rows if w == "training"]
    assert training == sorted(training) and training[-1] > training[2]  # faster fans, less power-capped
