"""Twin speed: steps/s and real-time factor at 1,000 and 10,000 GPUs on one core (TWIN.md: a prototype
did 10,000 GPUs in ~0.3 ms per 1 s step; the target is >= 1,000x real time, i.e. <= 1 ms per step).

    .venv/bin/python bench/twin.py [--steps N]

Beside each run, a baseline measured in the same process on the same arrays: a bare numpy pass of the
core electro-thermal update (leakage, power, coolant rise, two-node backward Euler) with no limiters,
counters, nodes or plant. Twin and baseline chunks alternate, so machine load hits both alike; the
figure is the median chunk.
"""

from __future__ import annotations

import os

# One core: BLAS/OpenMP pools to one thread before numpy loads, and pin the process.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from facility.twin import Scenario, Twin, load_profile, synthetic_facility  # noqa: E402

CHUNK = 100  # steps per timed chunk


def facility_for(gpus: int) -> dict:
    """A demo-shaped site with `gpus` GPUs (8 per node, half the nodes air-cooled, 4 nodes a rack)."""
    nodes = gpus // 8
    air_nodes = (nodes + 1) // 2
    liquid_nodes = nodes - air_nodes
    return synthetic_facility(
        air_nodes=air_nodes, air_nodes_per_rack=4, liquid_nodes=liquid_nodes, liquid_nodes_per_rack=4,
        crahs=max(4, air_nodes // 25), cdus=max(2, liquid_nodes // 100),
    )


class Baseline:
    """The bare numpy pass: the same GPU count, the profile's numbers, nothing else."""

    def __init__(self, n: int):
        g = load_profile("seed").gpu
        self.g = g
        self.tj = np.full(n, 40.0)
        self.ts = np.full(n, 35.0)
        self.u = np.ones(n)
        self.t_in = np.full(n, 25.0)
        self.half = np.full(n, 1 / (2 * g.air_kg_s * g.cp_air))
        self.g2 = np.full(n, 1 / g.r_sf_air_front)
        self.b = np.full(n, g.c_s_air)
        self.p = np.empty(n)
        self.tf = np.empty(n)

    def step(self) -> None:
        g = self.g
        a, g1 = g.c_j, 1 / g.r_js
        p = self.p
        np.subtract(self.tj, 45.0, out=p)
        p *= g.beta_per_k
        np.exp(p, out=p)
        p *= g.leak45_w
        p += g.p_base_w + g.dynamic_w * self.u
        tf = self.t_in + p * self.half
        r1 = a * self.tj + p
        r2 = self.b * self.ts + self.g2 * tf
        a22 = self.b + g1 + self.g2
        inv = 1 / ((a + g1) * a22 - g1 * g1)
        self.tj = (r1 * a22 + g1 * r2) * inv
        self.ts = ((a + g1) * r2 + g1 * r1) * inv


def measure(gpus: int, steps: int) -> dict:
    twin = Twin(facility_for(gpus), "seed", Scenario(workload="training", climate="mixed", seed=0))
    base = Baseline(twin.bank.n)
    twin.step(300)  # warm up past the start-up transient
    for _ in range(300):
        base.step()
    t_twin, t_base = [], []
    for _ in tqdm(range(max(steps // CHUNK, 3)), desc=f"{gpus:>6,} GPUs", unit="chunk", leave=False):
        t0 = time.perf_counter()
        twin.step(CHUNK)
        t1 = time.perf_counter()
        for _ in range(CHUNK):
            base.step()
        t2 = time.perf_counter()
        t_twin.append((t1 - t0) / CHUNK)
        t_base.append((t2 - t1) / CHUNK)
    per_step = statistics.median(t_twin)
    return {
        "gpus": twin.bank.n, "units": len(twin.layout.units), "steps": len(t_twin) * CHUNK,
        "ms": per_step * 1e3, "steps_s": 1 / per_step, "rtf": 1.0 / per_step,  # 1 simulated s per step
        "base_ms": statistics.median(t_base) * 1e3, "pue": twin.facility()["pue"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000, help="timed steps per size (default 3000)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    rows = [measure(n, args.steps) for n in args.sizes]
    print(f"twin bench: numpy {np.__version__}, one core, 1 s steps, median of {CHUNK}-step chunks")
    print(f"{'GPUs':>7} {'units':>6} {'steps':>6} {'ms/step':>8} {'steps/s':>9} {'x real time':>12}"
          f" {'baseline ms':>12} {'twin/baseline':>14}")
    for r in rows:
        print(f"{r['gpus']:>7,} {r['units']:>6} {r['steps']:>6} {r['ms']:>8.3f} {r['steps_s']:>9,.0f}"
              f" {r['rtf']:>12,.0f} {r['base_ms']:>12.3f} {r['ms'] / r['base_ms']:>14.1f}")
    big = [r for r in rows if r["gpus"] >= 10000]
    if big:
        ok = big[-1]["rtf"] >= 1000
        print(f"target >= 1,000x real time at 10,000 GPUs: {'met' if ok else 'NOT met'} "
              f"({big[-1]['rtf']:,.0f}x; prototype ~3,300x)")


if __name__ == "__main__":
    main()
