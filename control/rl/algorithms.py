"""Compact offline RL in torch: TD3+BC (Fujimoto & Gu, 2021) and IQL (Kostrikov et al., 2022).

Both learn a deterministic tanh actor and twin Q critics from a fixed `Transitions` set; IQL adds a state
value trained by expectile regression and fits the actor by advantage-weighted regression, so it never
queries Q outside the data's actions. `Agent` holds what a policy needs at run time (actor, critics and
the observation/reward normalisation); the target networks and optimisers live only in `Trainer`.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

ALGORITHMS = ("td3bc", "iql")


@dataclass(frozen=True)
class AgentConfig:
    obs_dim: int
    act_dim: int
    algorithm: str = "td3bc"
    hidden: int = 256
    layers: int = 2

    def to_dict(self) -> dict:
        return asdict(self)


def mlp(inp: int, out: int, hidden: int, layers: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    d = inp
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.ReLU()]
        d = hidden
    mods.append(nn.Linear(d, out))
    return nn.Sequential(*mods)


class Agent(nn.Module):
    def __init__(self, config: AgentConfig):
        super().__init__()
        if config.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {config.algorithm!r}; choose from {', '.join(ALGORITHMS)}")
        self.config = config
        o, a, h, n = config.obs_dim, config.act_dim, config.hidden, config.layers
        self.actor = mlp(o, a, h, n)
        self.q1, self.q2 = mlp(o + a, 1, h, n), mlp(o + a, 1, h, n)
        if config.algorithm == "iql":
            self.value = mlp(o, 1, h, n)
        self.register_buffer("obs_mean", torch.zeros(o))
        self.register_buffer("obs_std", torch.ones(o))
        self.register_buffer("reward_mean", torch.zeros(()))
        self.register_buffer("reward_std", torch.ones(()))

    def norm(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.obs_mean) / self.obs_std

    def act_normed(self, s: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.actor(s))

    def q_normed(self, s: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sa = torch.cat([s, a], -1)
        return self.q1(sa).squeeze(-1), self.q2(sa).squeeze(-1)

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        s = self.norm(torch.as_tensor(np.atleast_2d(obs), dtype=torch.float32))
        return self.act_normed(s).numpy()

    @torch.no_grad()
    def q(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """min(Q1, Q2) in reward units of the normalised reward (see `reward_std` to convert)."""
        s = self.norm(torch.as_tensor(np.atleast_2d(obs), dtype=torch.float32))
        a = torch.as_tensor(np.atleast_2d(actions), dtype=torch.float32)
        return torch.minimum(*self.q_normed(s, a)).numpy()


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 20_000
    batch_size: int = 256
    gamma: float = 0.99
    lr: float = 3e-4
    tau: float = 0.005
    # TD3+BC
    alpha: float = 2.5
    policy_noise: float = 0.2
    noise_clip: float = 0.5
    policy_freq: int = 2
    # IQL
    expectile: float = 0.7
    beta: float = 3.0
    max_weight: float = 100.0
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class Trainer:
    """Gradient steps on one `Agent` from arrays already in memory (`update()` one step, returns losses)."""

    def __init__(self, agent: Agent, config: TrainConfig, obs, actions, rewards, next_obs):
        torch.manual_seed(config.seed)
        self.agent, self.cfg = agent, config
        self.rng = np.random.default_rng(config.seed)
        # Observations are already scaled to about [-1, 1]: a floor on the sd keeps a feature that is
        # constant in the data (fan duty, a never-throttling hall) from exploding when it moves live.
        mean, std = obs.mean(0), np.maximum(obs.std(0), 0.1)
        agent.obs_mean.copy_(torch.as_tensor(mean))
        agent.obs_std.copy_(torch.as_tensor(std))
        r_mean, r_std = float(rewards.mean()), float(rewards.std() + 1e-6)
        agent.reward_mean.fill_(r_mean)
        agent.reward_std.fill_(r_std)
        self.s = agent.norm(torch.as_tensor(obs, dtype=torch.float32))
        self.s2 = agent.norm(torch.as_tensor(next_obs, dtype=torch.float32))
        self.a = torch.as_tensor(actions, dtype=torch.float32)
        self.r = (torch.as_tensor(rewards, dtype=torch.float32) - r_mean) / r_std
        self.n = len(rewards)
        self.q_target = copy.deepcopy(nn.ModuleList([agent.q1, agent.q2])).requires_grad_(False)
        self.q_opt = torch.optim.Adam([*agent.q1.parameters(), *agent.q2.parameters()], lr=config.lr)
        self.pi_opt = torch.optim.Adam(agent.actor.parameters(), lr=config.lr)
        if agent.config.algorithm == "td3bc":
            self.actor_target = copy.deepcopy(agent.actor).requires_grad_(False)
        else:
            self.v_opt = torch.optim.Adam(agent.value.parameters(), lr=config.lr)
        self.it = 0

    def _soft(self, target: nn.Module, source: nn.Module) -> None:
        with torch.no_grad():
            for t, s in zip(target.parameters(), source.parameters(), strict=True):
                t.lerp_(s, self.cfg.tau)

    def _target_q(self, s, a) -> torch.Tensor:
        sa = torch.cat([s, a], -1)
        return torch.minimum(self.q_target[0](sa), self.q_target[1](sa)).squeeze(-1)

    def update(self) -> dict[str, float]:
        idx = torch.as_tensor(self.rng.integers(0, self.n, self.cfg.batch_size))
        s, a, r, s2 = self.s[idx], self.a[idx], self.r[idx], self.s2[idx]
        self.it += 1
        step = self._td3bc if self.agent.config.algorithm == "td3bc" else self._iql
        return step(s, a, r, s2)

    def _td3bc(self, s, a, r, s2) -> dict[str, float]:
        ag, c = self.agent, self.cfg
        with torch.no_grad():
            noise = (torch.randn_like(a) * c.policy_noise).clamp(-c.noise_clip, c.noise_clip)
            a2 = (torch.tanh(self.actor_target(s2)) + noise).clamp(-1, 1)
            y = r + c.gamma * self._target_q(s2, a2)  # no terminal states: episodes only truncate
        q1, q2 = ag.q_normed(s, a)
        q_loss = F.mse_loss(q1, y) + F.mse_loss(q2, y)
        self.q_opt.zero_grad(set_to_none=True)
        q_loss.backward()
        self.q_opt.step()
        out = {"critic_loss": q_loss.item()}
        if self.it % c.policy_freq == 0:
            pi = ag.act_normed(s)
            q = ag.q1(torch.cat([s, pi], -1))
            lmbda = c.alpha / q.abs().mean().detach().clamp_min(1e-6)
            bc = F.mse_loss(pi, a)
            pi_loss = -lmbda * q.mean() + bc
            self.pi_opt.zero_grad(set_to_none=True)
            pi_loss.backward()
            self.pi_opt.step()
            self._soft(self.q_target, nn.ModuleList([ag.q1, ag.q2]))
            self._soft(self.actor_target, ag.actor)
            out.update(actor_loss=pi_loss.item(), bc_mse=bc.item())
        return out

    def _iql(self, s, a, r, s2) -> dict[str, float]:
        ag, c = self.agent, self.cfg
        with torch.no_grad():
            tq = self._target_q(s, a)
        v = ag.value(s).squeeze(-1)
        u = tq - v
        v_loss = (torch.abs(c.expectile - (u < 0).float()) * u.pow(2)).mean()
        self.v_opt.zero_grad(set_to_none=True)
        v_loss.backward()
        self.v_opt.step()
        with torch.no_grad():
            y = r + c.gamma * ag.value(s2).squeeze(-1)
        q1, q2 = ag.q_normed(s, a)
        q_loss = F.mse_loss(q1, y) + F.mse_loss(q2, y)
        self.q_opt.zero_grad(set_to_none=True)
        q_loss.backward()
        self.q_opt.step()
        with torch.no_grad():
            w = torch.exp(c.beta * (tq - v.detach())).clamp(max=c.max_weight)
        pi = ag.act_normed(s)
        bc = (pi - a).pow(2).sum(-1)
        pi_loss = (w * bc).mean()
        self.pi_opt.zero_grad(set_to_none=True)
        pi_loss.backward()
        self.pi_opt.step()
        self._soft(self.q_target, nn.ModuleList([ag.q1, ag.q2]))
        return {"critic_loss": q_loss.item(), "value_loss": v_loss.item(), "actor_loss": pi_loss.item(),
                "bc_mse": bc.mean().item() / a.shape[-1]}
