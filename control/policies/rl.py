"""`rl`: the offline-RL policy (control.rl), acting every 60 s through the same Proposal path as the baselines.

    policy = create("rl")                                  # the active PolicyModelVersion (needs Django)
    policy = create("rl", model_version="rl-td3bc-...")    # a named version
    policy = create("rl", checkpoint="var/models/rl/x.safetensors")  # a checkpoint file (no Django)

Each decision: the observation is built from the `State` (control.rl.features, the twin env's own), the
actor proposes a move per point (a share of the point's max step), and then, before anything is proposed:

- points the dwell holds, and moves under the deadband, are left alone;
- the interlock of DESIGN.md "Control safety": no move that reduces cooling (a warmer supply, a slower
  pump) of a hall whose hottest GPU is within `interlock_margin_k` of slowdown (central-plant points look
  at every hall);
- the critics (min of the twin Qs) must prefer each point's move alone to holding everything, and the
  remaining moves together to holding; a move that fails is dropped (all of them, for the second test).

Every proposal is clipped into its envelope (`Policy.limited`) and carries the rationale: the Q advantage
of the chosen action over holding, overall and for that point's move alone, in the reward's units
(discounted sum of -kWh/EFLOP and penalties) and per decision; the predicted effect repeats them as data.
"""

from __future__ import annotations

import math

import numpy as np

from control.rl.features import HOLD_DEADBAND, observe, targets

from .base import Policy, PolicyContext, Proposal, State, register

_FLOW_WORDS = ("pump", "fan", "flow", "speed")


class PolicyUnavailable(RuntimeError):
    """No model to run: none trained/activated, or its checkpoint failed verification."""


def _reduces_cooling(name: str, move: float) -> bool:
    flow = any(w in name for w in _FLOW_WORDS)
    return move < 0 if flow else move > 0


@register
class RLPolicy(Policy):
    name = "rl"
    decision_interval_s = 60.0

    def __init__(self, checkpoint: str | None = None, model_version: str | int | None = None,
                 interlock_margin_k: float = 5.0, deadband: float = HOLD_DEADBAND, require_advantage: bool = True):
        self.checkpoint, self.model_version = checkpoint, model_version
        self.interlock_margin_k, self.deadband = interlock_margin_k, deadband
        self.require_advantage = require_advantage
        self.agent = self.spec = None
        self.label, self.gamma = "", 0.99

    def _load(self) -> None:
        if self.agent is not None:
            return
        from control.rl.checkpoint import CheckpointError, load_checkpoint

        try:
            if self.checkpoint:
                agent, spec, meta = load_checkpoint(self.checkpoint)
                label = meta.get("name", str(self.checkpoint))
            else:
                from control.models import PolicyModelVersion

                qs = PolicyModelVersion.objects.filter(policy=self.name)
                if self.model_version is None:
                    version = qs.filter(active=True).first()
                elif str(self.model_version).isdigit():
                    version = qs.filter(pk=int(self.model_version)).first()
                else:
                    version = qs.filter(name=self.model_version).first()
                if version is None:
                    raise PolicyUnavailable(
                        "no active RL model version" if self.model_version is None else
                        f"no RL model version {self.model_version!r}"
                        "; train one with `manage.py control train-rl`")
                agent, spec, meta = version.load()
                label = version.name
        except CheckpointError as exc:
            raise PolicyUnavailable(str(exc)) from exc
        self.agent, self.spec, self.label = agent, spec, label
        self.gamma = float(meta.get("config", {}).get("gamma", 0.99))

    def reset(self, context: PolicyContext) -> None:
        self._load()

    def decide(self, state: State) -> tuple[np.ndarray, dict]:
        """The move per point (after dwell, deadband, interlock and the advantage check) and the Q figures."""
        self._load()
        spec, agent = self.spec, self.agent
        obs = observe(state, spec)
        raw = agent.act(obs)[0].astype(np.float64)
        a = raw.copy()
        blocked = []
        margins = {h.name: h.margin_to_slowdown_k for h in state.halls.values() if h.gpus}
        for i, p in enumerate(spec.points):
            sp = state.setpoints[p.key]
            if sp.envelope.max_change(sp.since_change_s) == 0.0 or abs(a[i]) < self.deadband:
                a[i] = 0.0
                continue
            margin = margins.get(p.hall, math.inf) if p.hall else min(margins.values(), default=math.inf)
            if _reduces_cooling(p.name, a[i]) and margin < self.interlock_margin_k:
                blocked.append(f"{p.unit}.{p.name}")
                a[i] = 0.0
        scale = float(agent.reward_std)
        # Each point's move alone against holding everything (one batch of Q evaluations).
        moved = np.flatnonzero(a)
        singles = np.zeros((len(moved) + 1, len(a)), dtype=np.float32)  # row 0: hold
        singles[np.arange(1, len(moved) + 1), moved] = a[moved]
        q = agent.q(np.repeat(obs[None], len(singles), 0), singles)
        per_point = {int(i): float(q[1 + j] - q[0]) * scale for j, i in enumerate(moved)}
        if self.require_advantage:  # keep only the moves the critics prefer to holding
            for i, adv in per_point.items():
                if adv <= 0:
                    a[i] = 0.0
        q_all = agent.q(obs[None], a[None].astype(np.float32))[0]
        advantage = float(q_all - q[0]) * scale
        if self.require_advantage and advantage <= 0:
            a[:] = 0.0
        return a, {"advantage": advantage, "per_point": per_point, "raw": raw, "blocked": blocked}

    def propose(self, state: State) -> list[Proposal]:
        a, info = self.decide(state)
        spec = self.spec
        per_decision = info["advantage"] * (1 - self.gamma)
        out = []
        for i, (p, target) in enumerate(zip(spec.points, targets(state, spec, a), strict=True)):
            if a[i] == 0.0:
                continue
            sp = state.setpoints[p.key]
            alone = info["per_point"].get(i, 0.0)
            why = (f"RL {self.label}: Q advantage over holding {info['advantage']:+.4f} "
                   f"(≈ {per_decision:+.5f} reward per decision, reward = −kWh/EFLOP − penalties); "
                   f"this move alone {alone:+.4f}")
            prop = self.limited(sp, target, why, model_version=self.label, move_steps=round(float(a[i]), 3),
                                q_advantage_vs_hold=round(info["advantage"], 6),
                                q_advantage_this_move=round(alone, 6),
                                reward_gain_per_decision=round(per_decision, 7),
                                interlock_blocked=info["blocked"])
            if prop is not None:
                out.append(prop)
        return out
