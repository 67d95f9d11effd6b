"""Dataset -> trained agent -> held-out metrics (no Django; `manage.py control train-rl` adds the record).

    data = collect(facility, CollectConfig(...))
    result = train(data, "td3bc", TrainConfig(steps=20_000))
    saved = save_checkpoint(result.agent, result.spec, directory, name, config_extra=..., extra=...)

Held-out metrics, on whole episodes the agent never trained on: the critics' TD error (in normalised
reward units), the actor's mean squared distance to the logged moves, its mean Q advantage over holding
(normalised reward units, and per decision in kWh/EFLOP-equivalent reward), and the share of points it
would leave alone (moves under `HOLD_DEADBAND`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from control.rl.algorithms import Agent, AgentConfig, TrainConfig, Trainer
from control.rl.dataset import Transitions
from control.rl.features import HOLD_DEADBAND, FeatureSpec


@dataclass
class TrainResult:
    agent: Agent
    spec: FeatureSpec
    metrics: dict
    curves: list[dict] = field(default_factory=list)
    seconds: float = 0.0


@torch.no_grad()
def offline_metrics(agent: Agent, data: Transitions, gamma: float) -> dict[str, float]:
    if len(data) == 0:
        return {}
    pi = agent.act(data.obs)
    hold = np.zeros_like(pi)
    q_pi, q_hold = agent.q(data.obs, pi), agent.q(data.obs, hold)
    q_data = agent.q(data.obs, data.actions)
    r = (data.rewards - float(agent.reward_mean)) / float(agent.reward_std)
    q_next = agent.q(data.next_obs, agent.act(data.next_obs))
    td = r + gamma * q_next - q_data
    adv = q_pi - q_hold
    return {
        "transitions": len(data),
        "td_rmse": float(np.sqrt(np.mean(td ** 2))),
        "bc_mse": float(np.mean((pi - data.actions) ** 2)),
        "advantage_vs_hold": float(adv.mean()),
        "advantage_vs_hold_reward": float(adv.mean() * float(agent.reward_std) * (1 - gamma)),
        "advantage_vs_logged": float((q_pi - q_data).mean()),
        "hold_share": float(np.mean(np.abs(pi) < HOLD_DEADBAND)),
        "logged_hold_share": float(np.mean(np.abs(data.actions) < HOLD_DEADBAND)),
        "mean_reward": float(data.rewards.mean()),
    }


def train(data: Transitions, algorithm: str = "td3bc", config: TrainConfig | None = None, *, hidden: int = 256,
          layers: int = 2, holdout: float = 0.2, progress: bool = False, log_every: int = 1000) -> TrainResult:
    from tqdm.auto import tqdm

    config = config or TrainConfig()
    t0 = time.perf_counter()
    train_set, held = data.split(holdout, seed=config.seed)
    agent = Agent(AgentConfig(data.spec.obs_dim, data.spec.act_dim, algorithm, hidden, layers))
    trainer = Trainer(agent, config, train_set.obs, train_set.actions, train_set.rewards, train_set.next_obs)
    curves, window = [], []
    bar = tqdm(total=config.steps, desc=f"train {algorithm}", unit="step", disable=not progress)
    for step in range(1, config.steps + 1):
        losses = trainer.update()
        window.append(losses)
        if step % log_every == 0 or step == config.steps:
            keys = {k for w in window for k in w}
            point = {"step": step, **{k: float(np.mean([w[k] for w in window if k in w])) for k in sorted(keys)}}
            curves.append(point)
            window = []
            bar.set_postfix(critic=f"{point['critic_loss']:.3f}", bc=f"{point.get('bc_mse', float('nan')):.3f}")
        bar.update()
    bar.close()
    agent.eval()
    metrics = {"train": offline_metrics(agent, train_set, config.gamma),
               "held_out": offline_metrics(agent, held, config.gamma),
               "episodes": {"train": len(np.unique(train_set.episodes)), "held_out": len(np.unique(held.episodes))}}
    return TrainResult(agent, data.spec, metrics, curves, time.perf_counter() - t0)
