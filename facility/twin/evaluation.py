"""Closed-loop evaluation of a controller on the twin (TWIN.md "How controllers are judged").

    result = evaluate(policy, facility_dict, days=1, climate="hot", workload="training", seed=0)
    print(comparison_table([result, ...]))
    write_report([result, ...], "report.html")

`policy` is any object with the `facility.twin.state.PolicyLike` shape (the `control.policies.Policy`
subclasses are); this module never imports `control` - a management command resolves a policy name in
the control app's registry and passes the instance in. Physics runs at 1 s; the policy decides every
`decision_interval_s`; every proposal passes the `EnvelopeGuard` before it reaches the twin. `Meter`
integrates the metrics every second (the gym env uses it too).

Metrics (all over the run): facility/IT/cooling/losses kWh; EFLOP done; kWh per EFLOP and facility
TFLOPS/kW (energy-weighted: sum of TFLOP / sum of kWh); PUE (energy-weighted); throttle events (a GPU's
clock fraction below 0.98 for 5 s or more, counted once when it reaches 5 s, with its cause from the
clocks-event bits then: thermal if a thermal bit is set, else power cap); GPU-seconds throttled and
above 85 C; shutdowns; envelope violations (must be 0) and clipped actions; temperature variability
(per-GPU sd over time, averaged, and mean |dTj/dt|); throughput as a share of the unthrottled
reference (every running GPU at clock fraction 1 for the same utilisation).
"""

from __future__ import annotations

import html
import math
import statistics
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from .layout import Layout, layout_from_facility
from .state import (
    THERMAL_BITS,
    THROTTLE_PHI,
    EnvelopeGuard,
    PolicyContext,
    PolicyLike,
    TwinWhatIf,
    coil_violations,
    envelopes_from_layout,
    state_from_twin,
)
from .twin import Scenario, Twin

THROTTLE_MIN_S = 5
HOT_C = 85.0


class Meter:
    """Per-second accumulation of the judged metrics for one twin (call `sample(dt)` after each step)."""

    def __init__(self, twin: Twin):
        self.twin = twin
        n = len(twin.gpu_uuids)
        self.seconds = 0.0
        self.it_kwh = self.cooling_kwh = self.losses_kwh = self.server_fan_kwh = 0.0
        self.tflop = self.ref_tflop = 0.0
        self.gpu_s_throttled = self.gpu_s_hot = 0.0
        self.events_power = self.events_thermal = 0
        self._run = np.zeros(n, dtype=np.int64)
        self._tj_prev = twin.bank.tj.copy()
        self._tj_sum = np.zeros(n)
        self._tj_sq = np.zeros(n)
        self._abs_dtj = 0.0
        self._shutdown0 = twin.bank.shutdown_events
        self._ref_version = -1
        self._ref = 0.0

    def sample(self, dt: float = 1.0) -> dict[str, float]:
        """Account the last step; returns this step's increments (kWh, TFLOP, GPU-seconds...)."""
        tw, b = self.twin, self.twin.bank
        it_kw = float(tw.node_power_w.sum()) / 1000
        cool_kw = tw.plant.cooling_kw
        loss_kw = tw.plant.losses_kw(it_kw)
        h = dt / 3600
        tflop = float(b.tflops().sum()) * dt
        wl = tw.workload
        if wl.version != self._ref_version:  # the reference changes only with utilisation
            self._ref_version = wl.version
            self._ref = float((wl.tflops_max * wl.u).sum())
        throttled = (b.phi < THROTTLE_PHI) & ~b.shutdown
        n_thr = int(throttled.sum())
        tj = b.tj
        n_hot = int((tj > HOT_C).sum())
        self._run = np.where(throttled, self._run + 1, 0)
        new = self._run == THROTTLE_MIN_S
        if new.any():
            thermal = (b.clocks_event_reasons()[new] & THERMAL_BITS) != 0
            self.events_thermal += int(thermal.sum())
            self.events_power += int((~thermal).sum())
        self._abs_dtj += float(np.abs(tj - self._tj_prev).sum())
        self._tj_prev = tj.copy()
        self._tj_sum += tj
        self._tj_sq += tj * tj
        self.it_kwh += it_kw * h
        self.cooling_kwh += cool_kw * h
        self.server_fan_kwh += tw.server_fan_kw * h
        self.losses_kwh += loss_kw * h
        self.tflop += tflop
        self.ref_tflop += self._ref * dt
        self.gpu_s_throttled += n_thr * dt
        self.gpu_s_hot += n_hot * dt
        self.seconds += dt
        return {"facility_kwh": (it_kw + cool_kw + loss_kw) * h, "tflop": tflop, "gpu_s_throttled": n_thr * dt,
                "gpu_s_hot": n_hot * dt, "it_kw": it_kw, "cooling_kw": cool_kw}

    @property
    def shutdowns(self) -> int:
        return self.twin.bank.shutdown_events - self._shutdown0

    def metrics(self) -> dict[str, float]:
        fac = self.it_kwh + self.cooling_kwh + self.losses_kwh
        eflop = self.tflop / 1e6
        n = max(self.seconds, 1.0)
        sd = np.sqrt(np.maximum(self._tj_sq / n - (self._tj_sum / n) ** 2, 0.0))
        gpus = max(len(self._run), 1)
        return {
            "facility_kwh": fac,
            "it_kwh": self.it_kwh,
            "cooling_kwh": self.cooling_kwh,
            # The servers' fans: metered as IT (node power), but cooling work a policy can trade against the plant's.
            "server_fan_kwh": self.server_fan_kwh,
            "losses_kwh": self.losses_kwh,
            "eflop": eflop,
            "kwh_per_eflop": fac / eflop if eflop > 0 else math.inf,
            "tflops_per_kw": self.tflop / (fac * 3600) if fac > 0 else 0.0,
            "pue": fac / self.it_kwh if self.it_kwh > 0 else math.nan,
            "throughput_ratio": self.tflop / self.ref_tflop if self.ref_tflop > 0 else math.nan,
            "throttle_events": self.events_power + self.events_thermal,
            "throttle_events_power_cap": self.events_power,
            "throttle_events_thermal": self.events_thermal,
            "gpu_seconds_throttled": self.gpu_s_throttled,
            "gpu_seconds_above_85c": self.gpu_s_hot,
            "shutdowns": self.shutdowns,
            "temperature_sd_c": float(sd.mean()) if sd.size else 0.0,
            "mean_abs_dtj_dt_c_per_s": self._abs_dtj / (gpus * n),
        }


@dataclass
class EvaluationResult:
    policy: str
    climate: str
    workload: str
    seed: int
    days: float
    profile: str
    metrics: dict[str, float]
    series: dict[str, list[float]] = field(default_factory=dict)
    clipped_by: dict[str, int] = field(default_factory=dict)
    violations_by: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.policy} / {self.climate} / {self.workload} / seed {self.seed}"


def evaluate(policy: PolicyLike, facility: Mapping | Layout, days: float = 1.0, climate: str = "mixed",
             workload: str | Mapping[str, str] = "training", seed: int = 0, profile: str = "seed",
             progress: bool = True, start: datetime = datetime(2025, 7, 1), outdoor=None,
             warmup_s: float = 900.0) -> EvaluationResult:
    """Run `policy` closed-loop on the twin of `facility` for `days` and measure it (module docstring).
    The first `warmup_s` run at the file's setpoints, unmeasured, so runs start from a warm plant (the
    twin starts with GPUs at coolant temperature)."""
    from tqdm.auto import tqdm  # only the evaluation needs it

    t0 = time.perf_counter()
    layout = facility if isinstance(facility, Layout) else layout_from_facility(facility)
    twin = Twin(layout, profile, Scenario(workload=workload, climate=climate, start=start, seed=seed,
                                          outdoor=outdoor))
    twin.step(int(warmup_s))
    envelopes = envelopes_from_layout(layout)
    guard = EnvelopeGuard(twin, envelopes)
    interval = float(policy.decision_interval_s)
    policy.reset(PolicyContext(envelopes, {h.name: h.cooling_type for h in layout.halls}, interval, seed,
                               predictor=TwinWhatIf(twin)))
    meter = Meter(twin)
    total_s = round(days * 86400)
    t_start = twin.elapsed_s
    decisions = max(1, math.ceil(total_s / interval))
    series: dict[str, list[float]] = {"hours": []}
    expected = {k: twin.setpoint_command(*k) for k in envelopes}
    audit_violations = 0

    def record() -> None:
        fac, halls = twin.facility(), twin.halls()
        series["hours"].append((twin.elapsed_s - t_start) / 3600)
        for k, v in (("pue", fac["pue"]), ("cooling_kw", fac["cooling_power_kw"]), ("it_kw", fac["it_power_kw"]),
                     ("tflops", fac["tflops"]), ("outdoor_wet_bulb_c", fac["outdoor_wet_bulb_celsius"])):
            series.setdefault(k, []).append(v)
        for name, h in halls.items():
            series.setdefault(f"gpu_max_c/{name}", []).append(h["gpu_temperature_celsius_max"])
        for unit, name in envelopes:
            series.setdefault(f"sp/{unit}/{name}", []).append(twin.setpoint_command(unit, name))

    bar = tqdm(total=decisions, desc=f"{policy.name} {climate}", unit="decision", disable=not progress, leave=False)
    for _ in range(decisions):
        state = state_from_twin(twin, envelopes, guard.last_change_s)
        for a in guard.apply(policy.propose(state)):
            expected[a.key] = a.value
        # Audit every applied setpoint independently of the guard: in range, and nothing else moved it; and the
        # coil interlock across points.
        commands = {k: twin.setpoint_command(*k) for k in envelopes}
        for k, env in envelopes.items():
            cmd = commands[k]
            if abs(cmd - expected[k]) > 1e-9 or not env.allowable_min - 1e-9 <= cmd <= env.allowable_max + 1e-9:
                audit_violations += 1
        audit_violations += len(coil_violations(commands, envelopes))
        record()
        n = min(int(interval), round(t_start + total_s - twin.elapsed_s))
        for _ in range(max(n, 0)):
            twin.step(1)
            meter.sample(1.0)
        bar.update()
    bar.close()
    record()
    m = meter.metrics()
    m["envelope_violations"] = guard.violations + audit_violations
    m["clipped_actions"] = guard.clipped
    m["setpoint_changes"] = guard.applied
    m["max_gpu_temperature_c"] = max(max(v) for k, v in series.items() if k.startswith("gpu_max_c/"))
    return EvaluationResult(policy.name, climate, workload if isinstance(workload, str) else "mixed", seed, days,
                            profile, m, series, dict(guard.clipped_by), dict(guard.violations_by),
                            time.perf_counter() - t0)


def evaluate_many(policies: Iterable[PolicyLike], facility, climates=("mixed",), seeds=(0,), **kw) -> list:
    """Every policy x climate x seed (the policy is reset before each run)."""
    return [evaluate(p, facility, climate=c, seed=s, **kw) for p in policies for c in climates for s in seeds]


TABLE_COLUMNS = (
    ("kwh_per_eflop", "kWh/EFLOP", "{:.4f}"),
    ("tflops_per_kw", "TFLOPS/kW", "{:.1f}"),
    ("facility_kwh", "facility kWh", "{:.0f}"),
    ("it_kwh", "IT kWh", "{:.0f}"),
    ("cooling_kwh", "cooling kWh", "{:.1f}"),
    ("pue", "PUE", "{:.4f}"),
    ("throughput_ratio", "thru/unthr", "{:.4f}"),
    ("throttle_events_power_cap", "thr ev pcap", "{:.0f}"),
    ("throttle_events_thermal", "thr ev therm", "{:.0f}"),
    ("gpu_seconds_throttled", "GPU-s thr", "{:.0f}"),
    ("gpu_seconds_above_85c", "GPU-s >85C", "{:.0f}"),
    ("shutdowns", "shutdowns", "{:.0f}"),
    ("envelope_violations", "violations", "{:.0f}"),
    ("clipped_actions", "clipped", "{:.0f}"),
    ("max_gpu_temperature_c", "max Tj", "{:.1f}"),
    ("temperature_sd_c", "Tj sd", "{:.2f}"),
    ("mean_abs_dtj_dt_c_per_s", "|dTj/dt|", "{:.4f}"),
)


def _groups(results: list[EvaluationResult]) -> dict[tuple, list[EvaluationResult]]:
    groups: dict[tuple, list[EvaluationResult]] = {}
    for r in results:
        groups.setdefault((r.policy, r.climate, r.workload, r.days, r.profile), []).append(r)
    return groups


def comparison_table(results: list[EvaluationResult]) -> str:
    """A text table, one row per policy x climate x workload; mean +- sd where several seeds ran."""
    header = ["policy", "climate", "workload", "days", "seeds", *[c[1] for c in TABLE_COLUMNS], "wall s"]
    rows = []
    for (policy, climate, wl, days, _), rs in _groups(results).items():
        cells = [policy, climate, wl, f"{days:g}", str(len(rs))]
        for key, _, fmt in TABLE_COLUMNS:
            vals = [float(r.metrics[key]) for r in rs]
            cell = fmt.format(statistics.fmean(vals))
            if len(vals) > 1:
                cell += " ± " + fmt.format(statistics.stdev(vals))
            cells.append(cell)
        cells.append(f"{statistics.fmean(r.wall_s for r in rs):.1f}")
        rows.append(cells)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _run_figure(r: EvaluationResult):
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=4, cols=1, shared_xaxes=True, vertical_spacing=0.04,
                        subplot_titles=("hottest GPU per hall (°C)", "PUE", "cooling power (kW)",
                                        "setpoint commands"))
    x = r.series["hours"]
    for k, v in r.series.items():
        if k.startswith("gpu_max_c/"):
            fig.add_scatter(x=x, y=v, name=k.split("/", 1)[1], row=1, col=1)
    fig.add_scatter(x=x, y=r.series["pue"], name="PUE", row=2, col=1)
    fig.add_scatter(x=x, y=r.series["cooling_kw"], name="cooling kW", row=3, col=1)
    for k, v in r.series.items():
        if k.startswith("sp/"):
            fig.add_scatter(x=x, y=v, name=k[3:], row=4, col=1, line={"shape": "hv"})
    fig.update_xaxes(title_text="hours", row=4, col=1)
    fig.update_layout(height=900, title=r.label, template="plotly_white")
    return fig


def _comparison_figure(results: list[EvaluationResult]):
    from plotly.subplots import make_subplots

    shown = (("kwh_per_eflop", "kWh per EFLOP"), ("cooling_kwh", "cooling kWh"), ("pue", "PUE"),
             ("throughput_ratio", "throughput / unthrottled"))
    fig = make_subplots(rows=1, cols=len(shown), subplot_titles=[s[1] for s in shown])
    groups = _groups(results)
    policies = list(dict.fromkeys(k[0] for k in groups))
    for policy in policies:
        keys = [k for k in groups if k[0] == policy]
        x = [f"{k[1]} {k[2]}" for k in keys]
        for col, (metric, _) in enumerate(shown, start=1):
            vals = [[r.metrics[metric] for r in groups[k]] for k in keys]
            fig.add_bar(x=x, y=[statistics.fmean(v) for v in vals], name=policy, legendgroup=policy,
                        showlegend=col == 1, row=1, col=col,
                        error_y={"type": "data", "array": [statistics.stdev(v) if len(v) > 1 else 0 for v in vals]})
    fig.update_layout(barmode="group", height=450, title="comparison (mean ± sd over seeds)",
                      template="plotly_white")
    return fig


def write_report(results: list[EvaluationResult], path: str | Path) -> Path:
    """A self-contained HTML report: the comparison, the table and one time-series figure per run.
    plotly.js is embedded inline (no CDN), so it opens offline."""
    import plotly.io as pio

    path = Path(path)
    figs = [_comparison_figure(results), *(_run_figure(r) for r in results)]
    parts = [pio.to_html(f, full_html=False, include_plotlyjs=(i == 0)) for i, f in enumerate(figs)]
    doc = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>FuseDC controller evaluation</title>"
           "</head><body><h1>FuseDC controller evaluation</h1>\n"
           f"<pre>{html.escape(comparison_table(results))}</pre>\n" + "\n".join(parts) + "\n</body></html>\n")
    path.write_text(doc, encoding="utf-8")
    return path
