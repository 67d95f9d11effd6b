"""`mpc`: model-predictive control by what-if rollouts, every 30 s (TWIN.md "How controllers are judged").

Each decision:

1. candidates (`candidates.generate`): hold, and every group of points the envelope lets move now one step
   down or up (interlocked: nothing that warms a hall whose GPUs are hot);
2. prediction: each candidate's outcome over the horizon (5 steps of 30 s) from the predictor - a copy of
   the twin at the current state in closed-loop evaluation (`PolicyContext.predictor`, a
   `candidates.TwinPredictor`), the MLA forecaster plus a plant energy model live
   (`candidates.ForecastPredictor`, when an active forecaster `ModelVersion` exists), else the analytical
   `SurrogatePredictor`; a predictor can also be passed in (`MPC(predictor=...)`);
3. a second round: the single moves that beat hold, merged (`candidates.combine`), predicted too;
4. choice: the lowest `candidates.score` (facility kWh per EFLOP with an end-of-horizon term, penalised
   for GPU-seconds above 85 C, thermal throttling, shutdowns and, with `min_throughput` (an operator's
   floor on work done, as a share of unthrottled), any predicted shortfall below that floor; with
   `cooling_weight` w, each kWh of cooling counts 1 + w times); it must beat hold by `min_gain` (relative)
   or the MPC holds - this keeps it from chattering on noise-level gains.

The Policy interface stays as it is: the only thing the MPC needs from a run is the predictor, and it
reads it from the context (`getattr(context, "predictor", None)`), so the baselines and the gym env are
untouched. Proposals carry the candidate's rationale and `predicted_effect` (horizon kWh, kWh/EFLOP,
max GPU temperature, throughput, and their deltas against holding), which the approver sees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from . import candidates as cand
from .base import Policy, PolicyContext, Proposal, State, register


@dataclass
class Decision:
    """One round of candidates, their predictions and scores; `best` indexes the chosen one."""

    candidates: list[cand.Candidate]
    outcomes: list[cand.Outcome]
    scores: list[float]
    best: int = 0
    predictor: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def hold(self) -> cand.Outcome | None:
        return self.outcomes[0] if self.outcomes else None

    def gain_pct(self, i: int) -> float:
        h = self.scores[0] if self.scores else math.inf
        return 100 * (1 - self.scores[i] / h) if math.isfinite(h) and h > 0 else 0.0


def _f(x, spec: str) -> str:
    """Format a predicted figure that may be missing (None)."""
    return "n/a" if x is None else format(x, spec)


def describe(d: Decision, i: int) -> str:
    """One line per candidate forecast: what the approver (and the LLM) reads. "objective" is the score
    the MPC ranks by (kWh/EFLOP including the end-of-horizon term and penalties) against holding."""
    c = d.candidates[i]
    if i >= len(d.outcomes):
        return f"{c.id}: {c.label}"
    o, hold = d.outcomes[i], d.hold
    s = (f"{c.id}: {c.label} -> {o.kwh_per_eflop:.4f} kWh/EFLOP, hottest GPU {o.end_max_gpu_c:.1f} C at the end"
         f" (max {o.max_gpu_c:.1f}), throughput {100 * o.throughput_ratio:.2f} %")
    if hold is not None and not c.is_hold:
        e = o.effect(hold)
        s += (f" (vs hold: objective {-d.gain_pct(i):+.3f} %, cooling {_f(e['delta_cooling_kwh'], '+.4f')} kWh,"
              f" hottest GPU {_f(e['delta_end_max_gpu_temperature_c'], '+.2f')} K,"
              f" throughput {_f(e['delta_throughput_pct'], '+.3f')} %)")
    return s


def to_proposals(decision: Decision, i: int, rationale: str, policy: str) -> list[Proposal]:
    """The proposals of candidate `i` (one per moved point), with the shared rationale and effect."""
    c, o = decision.candidates[i], decision.outcomes[i]
    effect = {**o.effect(decision.hold), "policy": policy, "candidate": c.id, "candidate_label": c.label,
              "candidates_considered": len(decision.candidates)}
    return [Proposal(unit, name, value, rationale, dict(effect), requested=c.requested.get((unit, name), value),
                     clipped=list(c.clipped.get((unit, name), [])))
            for (unit, name), value in sorted(c.targets.items())]


@register
class MPC(Policy):
    name = "mpc"
    decision_interval_s = 30.0

    def __init__(self, predictor: cand.Predictor | None = None, horizon_steps: int = 5, step_s: float = 30.0,
                 terminal_s: float = 300.0, min_gain: float = 2e-4, hot_c: float = 82.0,
                 interlock_margin_k: float = 5.0, combine: bool = True, steps: dict[str, float] | None = None,
                 min_throughput: float | None = None, cooling_weight: float = 0.0):
        if min_throughput is not None and not 0 < min_throughput <= 1:
            raise ValueError(f"min_throughput must be a share of unthrottled work in (0, 1], got {min_throughput}")
        if not (isinstance(cooling_weight, int | float) and math.isfinite(cooling_weight) and cooling_weight >= 0):
            raise ValueError(f"cooling_weight must be a finite number >= 0 (extra weight of a cooling kWh), "
                             f"got {cooling_weight}")
        self.min_throughput, self.cooling_weight = min_throughput, float(cooling_weight)
        self._given = predictor
        self.predictor: cand.Predictor | None = predictor
        self.horizon_steps, self.step_s = horizon_steps, step_s
        self.terminal_s, self.min_gain = terminal_s, min_gain
        self.hot_c, self.interlock_margin_k = hot_c, interlock_margin_k
        self.combine, self.steps = combine, steps
        self.decisions = self.moves = 0

    def reset(self, context: PolicyContext) -> None:
        self.predictor = self._given or cand.default_predictor(context)
        self.decisions = self.moves = 0

    def _predictor(self) -> cand.Predictor:
        if self.predictor is None:  # propose() without reset(): live use
            self.predictor = cand.default_predictor()
        return self.predictor

    def _score(self, outcome: cand.Outcome, gpus: int) -> float:
        return cand.score(outcome, gpus, self.terminal_s, min_throughput=self.min_throughput,
                          cooling_weight=self.cooling_weight)

    def decide(self, state: State) -> Decision:
        """Candidates, predictions, scores and the best candidate (index 0 is hold)."""
        cs = cand.generate(state, self.steps, self.hot_c, self.interlock_margin_k)
        pred = self._predictor()
        if len(cs) == 1:  # nothing can move now (dwell, bounds, interlock): no need to predict
            return Decision(cs, [], [0.0], 0, pred.name, ["no point can move now"])
        n = cand.gpu_count(state)
        outs = pred.predict(state, cs)
        scores = [self._score(o, n) for o in outs]
        if self.combine:
            merged = cand.combine(state, cs, scores)
            if merged is not None:
                o = pred.predict(state, [merged])[0]
                cs.append(merged)
                outs.append(o)
                scores.append(self._score(o, n))
        best = min(range(len(cs)), key=lambda i: (scores[i], i))
        d = Decision(cs, outs, scores, best, pred.name)
        if best and not scores[best] < scores[0] * (1 - self.min_gain):
            d.notes.append(f"best move {cs[best].label} gains only {d.gain_pct(best):.3f} % (< "
                           f"{100 * self.min_gain:.3f} %): hold")
            d.best = 0
        return d

    def rationale(self, d: Decision) -> str:
        c, o, hold = d.candidates[d.best], d.outcomes[d.best], d.hold
        e = o.effect(hold)
        return (f"MPC ({d.predictor} what-if, {o.horizon_s:.0f} s horizon): chose {c.label} of "
                f"{len(d.candidates)} candidates; predicted kWh/EFLOP {hold.kwh_per_eflop:.4f} -> "
                f"{o.kwh_per_eflop:.4f} ({_f(e['delta_kwh_per_eflop_pct'], '+.3f')} %; objective"
                f"{f' with cooling weighted {1 + self.cooling_weight:g}x' if self.cooling_weight else ''} "
                f"{-d.gain_pct(d.best):+.3f} %), "
                f"cooling {_f(e['delta_cooling_kwh'], '+.4f')} kWh over the horizon, hottest GPU "
                f"{o.end_max_gpu_c:.1f} C "
                f"at its end ({_f(e['delta_end_max_gpu_temperature_c'], '+.2f')} K), throughput "
                f"{_f(e['delta_throughput_pct'], '+.3f')} %." + self._floor_note(o, hold))

    def _floor_note(self, o: cand.Outcome, hold: cand.Outcome) -> str:
        if self.min_throughput is None:
            return ""
        return (f" Throughput floor {100 * self.min_throughput:.2f} % of unthrottled: sustained "
                f"{100 * hold.sustained_throughput_ratio:.2f} % holding, {100 * o.sustained_throughput_ratio:.2f} % "
                "with this move.")

    def propose(self, state: State) -> list[Proposal]:
        self.decisions += 1
        d = self.decide(state)
        if d.best == 0:
            return []
        self.moves += 1
        return to_proposals(d, d.best, self.rationale(d), self.name)
