"""bench/control.py's verdict on the control issue's targets, from hand-made evaluation results."""

import importlib.util
import json
from pathlib import Path

import pytest

from facility.twin.evaluation import EvaluationResult

SPEC = importlib.util.spec_from_file_location("bench_control", Path(__file__).parent.parent / "bench" / "control.py")
bench = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench)


def run(policy, climate, cooling, kwh_per_eflop, throughput=0.97, workload="training", seed=0, violations=0):
    metrics = {"cooling_kwh": cooling, "kwh_per_eflop": kwh_per_eflop, "throughput_ratio": throughput,
               "envelope_violations": violations, "shutdowns": 0}
    return EvaluationResult(policy, climate, workload, seed, 1.0, "seed", metrics)


BASELINE_RUNS = [
    run("fixed", "hot", 1000, 0.83), run("fixed", "cool", 800, 0.83),
    run("trim_respond", "hot", 850, 1.02), run("trim_respond", "cool", 650, 1.02),
    run("pid", "hot", 900, 0.94), run("pid", "cool", 700, 0.94),
]


def test_targets_are_judged_on_means_over_climates():
    results = [
        *BASELINE_RUNS,
        # -30 % cooling in hot, -11 % in cool: judged on the mean over both, -20.5 % vs fixed.
        run("good", "hot", 700, 0.80, throughput=0.996), run("good", "cool", 712, 0.82, throughput=0.996),
        run("short", "hot", 900, 0.80), run("short", "cool", 700, 0.84),
    ]
    s = bench.summarise(results, ["fixed", "trim_respond", "pid", "good", "short"], ["hot", "cool"], ["training"])
    overall = {o["policy"]: o for o in s["overall"]}
    good = overall["good"]
    assert good["cooling_vs_fixed"] == pytest.approx(-0.205)
    assert good["cooling_vs_trim_respond"] == pytest.approx((700 / 850 + 712 / 650) / 2 - 1)
    assert good["targets_met"] == {"cooling_vs_fixed": True, "cooling_vs_trim_respond": False,
                                   "kwh_per_eflop_below_baselines": True, "throughput": True, "safe": True}
    short = overall["short"]["targets_met"]
    assert short["cooling_vs_fixed"] is False and short["throughput"] is False
    assert short["kwh_per_eflop_below_baselines"] is True  # -3.6 % and +1.2 % vs fixed: -1.2 % on the mean
    assert s["best"] == "good"
    rows = {(r["policy"], r["climate"]): r for r in s["rows"]}
    assert rows["good", "hot"]["cooling_vs_fixed"] == pytest.approx(-0.30)
    assert rows["short", "cool"]["kwh_per_eflop_vs_fixed"] == pytest.approx(0.84 / 0.83 - 1)
    text = bench.summary_text(s)
    assert "best policy: good" in text and "cooling_vs_trim_respond:no" in text


def test_a_violation_or_a_missing_baseline_is_not_a_pass():
    results = [run("fixed", "hot", 1000, 0.83), run("mpc", "hot", 500, 0.79, violations=1)]
    s = bench.summarise(results, ["fixed", "mpc"], ["hot"], ["training"])
    met = s["overall"][1]["targets_met"]
    assert met["safe"] is False
    assert met["cooling_vs_trim_respond"] is None  # trim_respond did not run: unknown, not met
    assert "cooling_vs_trim_respond:n/a" in bench.summary_text(s)


def test_only_runs_both_policies_have_are_compared():
    # mpc ran seed 1 only: compared with fixed's seed 1, not with the mean over fixed's seeds.
    results = [run("fixed", "hot", 1000, 0.83, seed=0), run("fixed", "hot", 600, 0.83, seed=1),
               run("mpc", "hot", 480, 0.80, seed=1)]
    s = bench.summarise(results, ["fixed", "mpc"], ["hot"], ["training"])
    assert s["overall"][1]["cooling_vs_fixed"] == pytest.approx(-0.2)


def test_a_cooling_weighted_mpc_variant_runs_under_its_own_label(capsys):
    bench.main(["--policy", "fixed", "--min-throughput", "0.97", "--cooling-weight", "1", "--days", "0.01",
                "--climate", "mixed", "--workload", "training", "--seed", "0", "--workers", "1",
                "--start", "2025-07-06"])
    out = capsys.readouterr().out
    assert "2 runs: fixed, mpc>=0.97,cw=1" in out and "from 2025-07-06" in out
    assert "! mpc" not in out, out  # the variant ran
    with pytest.raises(SystemExit):
        bench.main(["--policy", "fixed", "--cooling-weight", "1", "--days", "0.01"])
    assert "give --min-throughput too" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--start", "6 July"])
    assert "not a date (YYYY-MM-DD): '6 July'" in capsys.readouterr().err


def test_a_results_file_keeps_each_run_and_a_rerun_resumes_from_it(tmp_path, capsys):
    results = tmp_path / "runs.jsonl"
    short = ["--days", "0.002", "--climate", "mixed", "--workload", "training", "--seed", "0", "--workers", "1",
             "--results", str(results)]
    bench.main(["--policy", "fixed", *short])
    first = capsys.readouterr().out
    assert "0 of the runs already in" in first and len(results.read_text().splitlines()) == 1
    bench.main(["--policy", "fixed", "--policy", "trim_respond", *short, "--json", str(tmp_path / "out.json")])
    second = capsys.readouterr().out
    assert "1 of the runs already in" in second and "1 to run" in second  # only trim & respond ran
    assert len(results.read_text().splitlines()) == 2
    runs = {r["policy"]: r["metrics"] for r in json.loads((tmp_path / "out.json").read_text())["runs"]}
    kept = json.loads(results.read_text().splitlines()[0])
    assert runs["fixed"] == pytest.approx(kept["metrics"])  # the table's fixed row is the stored run's
    assert _table_row(first, "fixed") == _table_row(second, "fixed")
    assert kept["code"] == bench.code_version() != "unknown"  # each run says which code made it
    lines = results.read_text().splitlines()
    results.write_text("\n".join([lines[0], lines[1][:100]]))  # killed while writing trim & respond's run
    bench.main(["--policy", "fixed", "--policy", "trim_respond", *short])
    resumed = capsys.readouterr().out
    assert "runs.jsonl:2: a run record cut short; removed" in resumed and "1 to run" in resumed
    assert [json.loads(line)["key"] for line in results.read_text().splitlines()] == [
        json.loads(line)["key"] for line in lines]  # the cut line replaced by the re-run's whole record
    with results.open("a") as f:
        f.write("{not json\n")
    with pytest.raises(SystemExit, match=r"runs.jsonl:3: not a run record"):
        bench.main(["--policy", "fixed", *short])


def _table_row(out: str, policy: str) -> list[str]:
    return next(line.split() for line in out.splitlines() if line.strip().startswith(f"{policy} "))


def test_the_baselines_run_the_same_with_or_without_the_server_fan_point():
    """Why a baseline's stored run serves both facilities (`_job_key`): none of them moves the server fans."""
    for name in bench.BASELINES:
        job = {"policy": name, "name": name, "params": {}, "climate": "hot", "workload": "training", "seed": 0,
               "days": 15 / 1440, "start": "2025-07-01T12:00:00"}
        with_fans, without = bench._run({**job, "server_fans": True}), bench._run({**job, "server_fans": False})
        assert "error" not in with_fans and "error" not in without
        assert with_fans["metrics"] == without["metrics"], name
        assert bench._job_key({**job, "server_fans": True}) == bench._job_key({**job, "server_fans": False})
    mpc = {"policy": "mpc", "name": "mpc", "params": {}, "climate": "hot", "workload": "training", "seed": 0,
           "days": 1.0, "start": "2025-07-01"}
    assert bench._job_key({**mpc, "server_fans": True}) != bench._job_key({**mpc, "server_fans": False})


def test_targets_within_each_workload_fan_energy_and_an_unsafe_policy_is_never_best():
    def with_fans(result, fans_kwh):
        result.metrics["cooling_with_server_fans_kwh"] = result.metrics["cooling_kwh"] + fans_kwh
        return result

    results = [
        with_fans(run("fixed", "hot", 1000, 0.83, workload="training"), 500),
        with_fans(run("fixed", "hot", 800, 2.0, throughput=1.0, workload="inference"), 500),
        with_fans(run("trim_respond", "hot", 900, 1.0, workload="training"), 500),
        with_fans(run("trim_respond", "hot", 700, 2.5, throughput=1.0, workload="inference"), 500),
        # Throughput 99.4 % on training and 100 % on inference: the mean passes, training alone does not; and it
        # moved cooling work into the server fans (+300 kWh on training).
        with_fans(run("mpc", "hot", 700, 0.80, throughput=0.994, workload="training"), 800),
        with_fans(run("mpc", "hot", 500, 1.9, throughput=1.0, workload="inference"), 400),
        run("unsafe", "hot", 100, 0.5, throughput=1.0, workload="training", violations=1),
        run("unsafe", "hot", 100, 1.0, throughput=1.0, workload="inference"),
    ]
    s = bench.summarise(results, ["fixed", "trim_respond", "mpc", "unsafe"], ["hot"], ["training", "inference"])
    overall = {o["policy"]: o for o in s["overall"]}
    assert overall["mpc"]["targets_met"]["throughput"] is True
    per = {(o["policy"], o["workload"]): o for o in s["by_workload"]}
    assert per["mpc", "training"]["targets_met"]["throughput"] is False
    assert per["mpc", "inference"]["targets_met"]["throughput"] is True
    assert overall["mpc"]["cooling_with_fans_vs_fixed"] == pytest.approx(((1500 / 1500) + (900 / 1300)) / 2 - 1)
    assert s["best"] == "mpc"  # "unsafe" meets more targets but had a violation
    text = bench.summary_text(s)
    assert "The same within each workload" in text and "Cooling including the servers' fans" in text


def test_a_stored_run_that_never_moved_the_fans_counts_them_at_the_bmc_default():
    metrics = {"cooling_kwh": 100.0}
    bench._add_cooling_with_server_fans({"policy": "fixed", "name": "fixed", "days": 1.0}, metrics)
    assert metrics["cooling_with_server_fans_kwh"] == pytest.approx(100.0 + bench._default_server_fan_kw() * 24)
    # 16 air-cooled nodes' fans (1.2 kW at full duty) at 0.8, 16 liquid-cooled nodes' fixed 150 W, through the PSUs.
    assert bench._default_server_fan_kw() == pytest.approx((16 * 1200 * 0.8 ** 3 + 16 * 150) / 0.95 / 1000)
    mpc = {"cooling_kwh": 100.0}
    bench._add_cooling_with_server_fans({"policy": "mpc", "name": "mpc", "days": 1.0, "server_fans": True}, mpc)
    assert "cooling_with_server_fans_kwh" not in mpc  # it may have moved them and did not record their energy
