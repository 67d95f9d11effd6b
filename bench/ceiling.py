"""Where the training workload's throughput ceiling comes from, on the twin of the demo facility.

    .venv/bin/python bench/ceiling.py [--minutes 10] [--warmup-minutes 30] [--climate mixed]

Holds every cooling setpoint at its coldest allowed value (CRAH supply air 16 °C, chilled water 7 °C, CDU supply
20 °C, pump 1.2) and runs the training workload; then the same with the server fans at full duty (the
`server_fans` control point, here set directly: the twin's `set_fan_duty`). Prints, per cooling type,
the throughput as a share of unthrottled (every GPU at clock fraction 1) and the share each limiter takes: the
power cap (leakage grows with junction temperature and eats the 700 W budget) and the `seed` profile's soft
derate (0.4 %/K above 50 °C). The first row (fixed setpoints, fans 0.8) is the baseline the others are read
against.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

COLDEST = {"supply_air_temperature_setpoint": 16.0, "chilled_water_supply_temperature_setpoint": 7.0,
           "secondary_supply_temperature_setpoint": 20.0, "pump_speed_setpoint": 1.2}
CASES = (("fixed setpoints, fans 0.8 (baseline)", None, 0.8), ("coldest setpoints, fans 0.8", COLDEST, 0.8),
         ("coldest setpoints, fans 1.0", COLDEST, 1.0))


def measure(setpoints: dict | None, fan_duty: float, *, climate: str, warmup_s: int, seconds: int,
            workload: str = "training") -> dict:
    """u-weighted throughput and limiter shortfalls over `seconds`, per cooling type and in all; for all GPUs
    also the facility energy per unit of work (kWh per EFLOP) and the IT and cooling power."""
    import numpy as np
    import yaml

    from facility.management.commands.seed_demo import DEMO_FILE
    from facility.twin.twin import Scenario, Twin

    twin = Twin(yaml.safe_load(DEMO_FILE.read_text()), "seed", Scenario(workload=workload, climate=climate))
    for point in twin.setpoints():
        if setpoints and point["name"] in setpoints:
            twin.write_setpoint(point["unit"], point["name"], setpoints[point["name"]])
    for hall in twin.hall_names:
        twin.set_fan_duty(hall, fan_duty)
    twin.step(warmup_s)
    bank = twin.bank
    sums = {k: np.zeros(len(bank.u)) for k in ("ref", "work", "power_cap", "soft")}
    kwh = tflop = it_kw = cooling_kw = 0.0
    for _ in range(seconds):
        twin.step(1)
        site = twin.facility()
        kwh, tflop = kwh + site["facility_power_kw"] / 3600, tflop + site["tflops"]
        it_kw, cooling_kw = it_kw + site["it_power_kw"] / seconds, cooling_kw + site["cooling_power_kw"] / seconds
        sums["ref"] += bank.u
        sums["work"] += bank.u * bank.phi
        sums["power_cap"] += bank.u * (1 - bank.phi_pc)
        sums["soft"] += bank.u * (1 - bank.phi_soft)
    out = {}
    for name, mask in (("all", slice(None)), ("air", ~bank.liquid), ("liquid", bank.liquid)):
        ref = sums["ref"][mask].sum()
        out[name] = {k: sums[k][mask].sum() / ref for k in ("work", "power_cap", "soft")}
        out[name]["max_tj"] = float(bank.tj[mask].max())
    out["all"].update(kwh_per_eflop=kwh / (tflop / 1e6), it_kw=it_kw, cooling_kw=cooling_kw)
    return out


def fan_sweep(args) -> None:
    """Fixed setpoints, each workload, the server fans at each duty: what the fans buy and what they cost."""
    from tqdm import tqdm

    duties = (0.6, 0.7, 0.8, 0.9, 1.0)
    cases = [(w, d) for w in ("training", "inference") for d in duties]
    rows = {case: measure(None, case[1], climate=args.climate, warmup_s=int(args.warmup_minutes * 60),
                          seconds=max(1, int(args.minutes * 60)), workload=case[0])
            for case in tqdm(cases, desc="cases", unit="case")}
    print(f"\nFixed setpoints, server fans at each duty, {args.climate} climate, {args.minutes:g} min after "
          f"{args.warmup_minutes:g} min (against the BMC default 0.8)")
    print(f"{'workload':<10} {'duty':>5} {'throughput':>10} {'kWh/EFLOP':>10} {'vs 0.8':>8} {'IT kW':>7} "
          f"{'cooling kW':>10} {'hottest air GPU':>16}")
    for (workload, duty), result in rows.items():
        r, base = result["all"], rows[workload, 0.8]["all"]["kwh_per_eflop"]
        print(f"{workload:<10} {duty:>5.1f} {r['work']:>10.2%} {r['kwh_per_eflop']:>10.4f} "
              f"{r['kwh_per_eflop'] / base - 1:>+8.2%} {r['it_kw']:>7.1f} {r['cooling_kw']:>10.1f} "
              f"{result['air']['max_tj']:>16.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10, help="Measured span after the warm-up.")
    p.add_argument("--warmup-minutes", type=float, default=30)
    p.add_argument("--climate", choices=("hot", "mixed", "cool"), default="mixed")
    p.add_argument("--fan-sweep", action="store_true",
                   help="Instead: fixed setpoints, both workloads, the server fans at duty 0.6-1.0.")
    args = p.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    import django

    django.setup()
    if args.fan_sweep:
        return fan_sweep(args)
    from tqdm import tqdm

    rows = [(label, measure(setpoints, duty, climate=args.climate, warmup_s=int(args.warmup_minutes * 60),
                            seconds=max(1, int(args.minutes * 60))))
            for label, setpoints, duty in tqdm(CASES, desc="cases", unit="case")]
    base = rows[0][1]["all"]["work"]
    print(f"\nTraining workload, {args.climate} climate, {args.minutes:g} min after {args.warmup_minutes:g} min "
          "(throughput and each limiter's shortfall as shares of unthrottled work)")
    print(f"{'case':<38} {'GPUs':<7} {'throughput':>10} {'power cap':>10} {'soft derate':>12} {'max Tj':>7} "
          f"{'vs baseline':>12}")
    for label, result in rows:
        for name in ("all", "air", "liquid"):
            r = result[name]
            ratio = f"{r['work'] / base:.4f}x" if name == "all" else ""
            print(f"{label if name == 'all' else '':<38} {name:<7} {r['work']:>10.2%} {r['power_cap']:>10.2%} "
                  f"{r['soft']:>12.2%} {r['max_tj']:>7.1f} {ratio:>12}")


if __name__ == "__main__":
    main()
