"""Logged transitions for offline RL: baseline controllers (and exploration around them) run on the twin.

    data = collect(facility, CollectConfig(episodes=12, episode_hours=6))
    data.save("var/rl/data.npz"); data = Transitions.load("var/rl/data.npz")

Each episode runs one behaviour policy in one climate through `TwinEnv` (so rewards are the env's:
-(kWh/EFLOP) minus the hot/throttle/shutdown penalties, per 60 s decision). Behaviours: the registered
baselines (`fixed`, `trim_respond`, `pid`) and `fixed_random` (fixed setpoints drawn per episode across
the envelope, so the data holds steady states the baselines never visit). On top, with probability
`noise_prob` per decision and point, a Gaussian move of `noise` steps is added to the behaviour's target,
as operators' manual moves and commissioning tests add to real history. Every target still passes the
env's `EnvelopeGuard`; the logged action is the move that was actually applied (`features.action_from_moves`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from control.rl.features import FeatureSpec, action_from_moves, observe
from facility.twin.state import PolicyContext, state_from_twin

BEHAVIOURS = ("fixed", "trim_respond", "pid", "fixed_random")


@dataclass(frozen=True)
class CollectConfig:
    episodes: int = 12
    episode_hours: float = 6.0
    behaviours: tuple[str, ...] = BEHAVIOURS
    climates: tuple[str, ...] = ("hot", "mixed", "cool")
    workload: str = "training"
    profile: str = "seed"
    noise: float = 0.5  # exploration move, in steps (sd)
    noise_prob: float = 0.1  # per decision and point
    seed: int = 0
    first_day: str = "2025-06-24"  # episodes start on a random day in the 2 weeks from here, at a random hour
    workers: int = 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["behaviours"], d["climates"] = list(self.behaviours), list(self.climates)
        d.pop("workers")
        return d


@dataclass
class Transitions:
    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_obs: np.ndarray
    timeouts: np.ndarray  # last decision of an episode (truncation, not a terminal state)
    episodes: np.ndarray
    spec: FeatureSpec
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rewards)

    def save(self, path: str | Path) -> Path:
        import json

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, obs=self.obs, actions=self.actions, rewards=self.rewards, next_obs=self.next_obs,
                            timeouts=self.timeouts, episodes=self.episodes,
                            meta=np.array(json.dumps({"spec": self.spec.to_dict(), "info": self.info})))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Transitions:
        import json

        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return cls(z["obs"], z["actions"], z["rewards"], z["next_obs"], z["timeouts"], z["episodes"],
                       FeatureSpec.from_dict(meta["spec"]), meta["info"])

    def select(self, mask: np.ndarray) -> Transitions:
        return Transitions(self.obs[mask], self.actions[mask], self.rewards[mask], self.next_obs[mask],
                           self.timeouts[mask], self.episodes[mask], self.spec, self.info)

    def split(self, holdout: float = 0.2, seed: int = 0) -> tuple[Transitions, Transitions]:
        """(train, held out) by whole episodes, so held-out metrics see unseen episodes."""
        eps = np.unique(self.episodes)
        rng = np.random.default_rng(seed)
        n = max(1, round(len(eps) * holdout)) if len(eps) > 1 else 0
        held = set(rng.choice(eps, size=n, replace=False).tolist()) if n else set()
        mask = np.isin(self.episodes, list(held))
        return self.select(~mask), self.select(mask)

    @classmethod
    def concat(cls, parts: list[Transitions]) -> Transitions:
        cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
        return cls(cat("obs"), cat("actions"), cat("rewards"), cat("next_obs"), cat("timeouts"), cat("episodes"),
                   parts[0].spec, parts[0].info)


def _behaviour(name: str, rng: np.random.Generator):
    from control import policies

    if name != "fixed_random":
        return policies.create(name), {}
    air = float(rng.uniform(16.0, 24.0))
    params = {"air_supply_c": round(air, 2), "chilled_water_c": round(float(rng.uniform(7.0, min(14.0, air - 3.0))), 2),
              "liquid_supply_c": round(float(rng.uniform(20.0, 40.0)), 2),
              "pump_speed": round(float(rng.uniform(0.5, 1.2)), 2)}
    return policies.create("fixed", **params), params


def episode_plan(config: CollectConfig) -> list[dict]:
    rng = np.random.default_rng(config.seed)
    first = datetime.fromisoformat(config.first_day)
    plan = []
    for e in range(config.episodes):
        start = first + timedelta(days=int(rng.integers(0, 14)), hours=int(rng.integers(0, 24)))
        plan.append({"episode": e, "behaviour": config.behaviours[e % len(config.behaviours)],
                     "climate": config.climates[(e // len(config.behaviours)) % len(config.climates)],
                     "seed": config.seed * 10_000 + e, "start": start.isoformat()})
    return plan


def run_episode(facility: Mapping, config: CollectConfig, ep: dict) -> tuple[Transitions, dict]:
    """One logged episode (see the module docstring)."""
    from facility.twin.env import TwinEnv

    rng = np.random.default_rng(ep["seed"])
    env = TwinEnv(facility, climate=ep["climate"], workload=config.workload, profile=config.profile,
                  episode_s=config.episode_hours * 3600, start=datetime.fromisoformat(ep["start"]))
    env.reset(seed=ep["seed"])
    spec = FeatureSpec.from_env(env)
    policy, params = _behaviour(ep["behaviour"], rng)
    hall_types = {h.name: h.cooling_type for h in env.layout.halls}
    policy.reset(PolicyContext(env.envelopes, hall_types, env.interval, ep["seed"]))
    steps = np.array([p.step for p in spec.points])
    lo = np.array([p.allowable_min for p in spec.points])
    hi = np.array([p.allowable_max for p in spec.points])
    rows: dict[str, list] = {k: [] for k in ("obs", "actions", "rewards", "next_obs", "timeouts")}
    kwh = eflop = 0.0
    state = state_from_twin(env.twin, env.envelopes, env.guard.last_change_s)
    while True:
        target = {p.key: state.setpoints[p.key].command for p in spec.points}
        for prop in policy.propose(state):
            if prop.key in target:
                target[prop.key] = prop.value
        t = np.array([target[p.key] for p in spec.points], dtype=float)
        explore = rng.random(len(t)) < config.noise_prob
        t = np.clip(t + explore * rng.normal(0.0, config.noise, len(t)) * steps, lo, hi)
        before = {p.key: state.setpoints[p.key].command for p in spec.points}
        obs = observe(state, spec)
        # TwinEnv's action is the absolute target over the allowable range (float64: no rounding moves).
        _, reward, _, truncated, info = env.step(2.0 * (t - lo) / np.maximum(hi - lo, 1e-9) - 1.0)
        state = state_from_twin(env.twin, env.envelopes, env.guard.last_change_s)
        after = {p.key: state.setpoints[p.key].command for p in spec.points}
        rows["obs"].append(obs)
        rows["actions"].append(action_from_moves(before, after, spec))
        rows["rewards"].append(reward)
        rows["next_obs"].append(observe(state, spec))
        rows["timeouts"].append(truncated)
        kwh += info["kwh"]
        eflop += info["eflop"]
        if truncated:
            break
    n = len(rows["rewards"])
    data = Transitions(np.stack(rows["obs"]), np.stack(rows["actions"]), np.asarray(rows["rewards"], np.float32),
                       np.stack(rows["next_obs"]), np.asarray(rows["timeouts"], bool),
                       np.full(n, ep["episode"], np.int32), spec)
    summary = {**ep, "params": params, "decisions": n, "kwh_per_eflop": kwh / eflop if eflop > 0 else math.inf,
               "violations": env.guard.violations, "start_time": ep["start"], "end_time": env.twin.time.isoformat()}
    return data, summary


def _worker(args):
    return run_episode(*args)


def collect(facility: Mapping, config: CollectConfig | None = None, progress: bool = False) -> Transitions:
    """Log `config.episodes` episodes (in `config.workers` processes) into one `Transitions`."""
    config = config or CollectConfig()
    from tqdm.auto import tqdm

    plan = episode_plan(config)
    jobs = [(facility, config, ep) for ep in plan]
    bar = tqdm(total=len(jobs), desc="logging episodes", unit="episode", disable=not progress)
    results = []
    if config.workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(min(config.workers, len(jobs))) as pool:
            for r in pool.imap(_worker, jobs):
                results.append(r)
                bar.update()
    else:
        for job in jobs:
            results.append(_worker(job))
            bar.update()
    bar.close()
    data = Transitions.concat([r[0] for r in results])
    summaries = [r[1] for r in results]
    data.info = {"config": config.to_dict(), "episodes": summaries,
                 "data_start": min(s["start_time"] for s in summaries),
                 "data_end": max(s["end_time"] for s in summaries), "transitions": len(data),
                 "source": "twin"}
    return data
