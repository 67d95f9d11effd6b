"""A gymnasium environment over the twin, for training and testing learned controllers (TWIN.md).

    env = TwinEnv(facility_dict, climate="mixed", workload="training", episode_s=86400)
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())

One step = one decision interval (60 twin seconds, physics at 1 s). Deterministic for a seed.

Actions: a Box in [-1, 1], one entry per controllable setpoint (`env.points`, every setpoint with an
envelope in the facility file, in file order). Entry a maps to the target min + (a + 1)/2 (max - min) of
that point's allowable range; the `EnvelopeGuard` then limits the move by max step, max rate and dwell
(as the product's safety layer would) and counts the clipped actions (`info["clipped_actions"]`).

Observation (float32, `env.observation_names` names every entry), all roughly in [-1, 1]:
per hall (file order): (hottest GPU - 60 C)/30, (mean GPU - 60 C)/30, margin to 89 C slowdown / 30,
share of GPUs throttling, share thermally throttling, IT kW / hall nameplate kW, fan duty;
per point: command and read-back as -1..1 over the allowable range, and the dwell still to run as a
share of min dwell (0: free to move); outdoor dry-bulb (x - 20)/20 and wet-bulb (x - 15)/15; PUE - 1;
hour of day as sin/cos. Clipped to [-10, 10].

Reward per step (TWIN.md headline, energy per unit of work, with the safety penalties):
    - facility kWh / EFLOP over the step (capped at `max_kwh_per_eflop` when the work is near zero)
    - `w_hot` x share of GPU-seconds above 85 C
    - `w_throttle` x share of GPU-seconds throttled
    - `w_shutdown` x GPUs shut down during the step.
Episodes end by truncation after `episode_s` (24 h by default); nothing terminates them early. Each
reset first runs `warmup_s` (900 s) at the file's setpoints, unrewarded, so episodes start warm.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .evaluation import Meter
from .layout import Layout, layout_from_facility
from .state import EnvelopeGuard, Proposal, envelopes_from_layout, state_from_twin
from .twin import Scenario, Twin

OBS_BOUND = 10.0


class TwinEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, facility: Mapping | Layout, *, climate: str = "mixed",
                 workload: str | Mapping[str, str] = "training", profile: str = "seed",
                 episode_s: float = 86400.0, decision_interval_s: float = 60.0,
                 start: datetime = datetime(2025, 7, 1), random_start: bool = False, outdoor=None,
                 w_hot: float = 1.0, w_throttle: float = 0.5, w_shutdown: float = 10.0,
                 max_kwh_per_eflop: float = 10.0, warmup_s: float = 900.0):
        self.layout = facility if isinstance(facility, Layout) else layout_from_facility(facility)
        self.climate, self.workload, self.profile = climate, workload, profile
        self.episode_s, self.interval = float(episode_s), float(decision_interval_s)
        self.start, self.random_start, self.outdoor = start, random_start, outdoor
        self.w_hot, self.w_throttle, self.w_shutdown = w_hot, w_throttle, w_shutdown
        self.max_kwh_per_eflop = max_kwh_per_eflop
        self.warmup_s = float(warmup_s)
        self.envelopes = envelopes_from_layout(self.layout)
        self.points = list(self.envelopes)
        self.halls = [h.name for h in self.layout.halls]
        names = []
        for h in self.halls:
            names += [f"{h}/{k}" for k in ("gpu_max", "gpu_mean", "margin", "throttling", "thermal_throttling",
                                             "it_load", "fan_duty")]
        for u, n in self.points:
            names += [f"{u}/{n}/{k}" for k in ("command", "value", "dwell")]
        names += ["outdoor_dry_bulb", "outdoor_wet_bulb", "pue_minus_1", "hour_sin", "hour_cos"]
        self.observation_names = names
        self.observation_space = spaces.Box(-OBS_BOUND, OBS_BOUND, (len(names),), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (len(self.points),), np.float32)
        self.twin: Twin | None = None
        self._nameplate_kw: dict[str, float] = {}

    # --- gym API ---

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        # The twin's own randomness is seeded from the env's generator, so a seed fixes the episode.
        twin_seed = int(self.np_random.integers(0, 2**31 - 1))
        start = self.start
        if self.random_start:
            start = start.replace(month=1, day=1) + timedelta(days=int(self.np_random.integers(0, 364)))
        self.twin = Twin(self.layout, self.profile, Scenario(workload=self.workload, climate=self.climate,
                                                             start=start, seed=twin_seed, outdoor=self.outdoor))
        self.twin.step(int(self.warmup_s))  # start from a warm plant, at the file's setpoints
        self._end_s = self.twin.elapsed_s + self.episode_s
        self.guard = EnvelopeGuard(self.twin, self.envelopes)
        self.meter = Meter(self.twin)
        if not self._nameplate_kw:
            g, nd = self.twin.profile.gpu, self.twin.profile.node
            self._nameplate_kw = {
                h.name: sum((len(n.gpus) * g.p_cap_w + nd.p_host_w + nd.p_fan_air_max_w) / nd.eta_psu / 1000
                            for r in h.racks for n in r.nodes) for h in self.layout.halls}
        return self._observe(), {"time": self.twin.time.isoformat()}

    def targets(self, action) -> list[float]:
        """The setpoint targets an action asks for (before the envelope's step/rate/dwell limits)."""
        a = np.clip(np.asarray(action, dtype=float), -1.0, 1.0)
        return [e.allowable_min + (x + 1.0) / 2.0 * (e.allowable_max - e.allowable_min)
                for x, e in zip(a, (self.envelopes[k] for k in self.points), strict=True)]

    def step(self, action):
        if self.twin is None:
            raise RuntimeError("call reset() before step()")
        tw = self.twin
        clipped0 = self.guard.clipped
        props = [Proposal(u, n, t) for (u, n), t in zip(self.points, self.targets(action), strict=True)]
        self.guard.apply(props)
        n = max(min(int(self.interval), math.ceil(self._end_s - tw.elapsed_s)), 0)
        kwh = tflop = thr = hot = 0.0
        down0 = self.meter.shutdowns
        for _ in range(n):
            tw.step(1)
            inc = self.meter.sample(1.0)
            kwh += inc["facility_kwh"]
            tflop += inc["tflop"]
            thr += inc["gpu_s_throttled"]
            hot += inc["gpu_s_hot"]
        gpu_s = max(len(tw.gpu_uuids) * n, 1)
        eflop = tflop / 1e6
        kwh_per_eflop = min(kwh / eflop, self.max_kwh_per_eflop) if eflop > 0 else self.max_kwh_per_eflop
        shutdowns = self.meter.shutdowns - down0
        reward = -(kwh_per_eflop + self.w_hot * hot / gpu_s + self.w_throttle * thr / gpu_s
                   + self.w_shutdown * shutdowns)
        truncated = tw.elapsed_s >= self._end_s - 1e-9
        info = {"kwh": kwh, "eflop": eflop, "kwh_per_eflop": kwh_per_eflop, "gpu_seconds_throttled": thr,
                "gpu_seconds_above_85c": hot, "shutdowns": shutdowns, "clipped_actions": self.guard.clipped - clipped0,
                "envelope_violations": self.guard.violations, "time": tw.time.isoformat()}
        return self._observe(), float(reward), False, bool(truncated), info

    # --- observation ---

    def _observe(self) -> np.ndarray:
        st = state_from_twin(self.twin, self.envelopes, self.guard.last_change_s)
        obs = []
        for name in self.halls:
            h = st.halls[name]
            g = max(h.gpus, 1)
            tmax = h.gpu_temperature_max_c if h.gpus else 60.0
            tmean = h.gpu_temperature_mean_c if h.gpus else 60.0
            obs += [(tmax - 60) / 30, (tmean - 60) / 30, (89.0 - tmax) / 30, h.gpus_throttling / g,
                    h.gpus_thermal_throttling / g, h.it_power_kw / max(self._nameplate_kw.get(name, 0.0), 1e-6),
                    h.fan_duty]
        for key in self.points:
            sp = st.setpoints[key]
            e = sp.envelope
            span = max(e.allowable_max - e.allowable_min, 1e-9)
            dwell = e.min_dwell_seconds or 0.0
            left = max(dwell - sp.since_change_s, 0.0) / dwell if dwell else 0.0
            obs += [2 * (sp.command - e.allowable_min) / span - 1, 2 * (sp.value - e.allowable_min) / span - 1, left]
        hour = st.time.hour + st.time.minute / 60 + st.time.second / 3600
        pue = st.facility["pue"]
        obs += [(st.outdoor_dry_bulb_c - 20) / 20, (st.outdoor_wet_bulb_c - 15) / 15,
                (pue - 1) if math.isfinite(pue) else 0.0,
                math.sin(2 * math.pi * hour / 24), math.cos(2 * math.pi * hour / 24)]
        return np.clip(np.nan_to_num(np.asarray(obs, dtype=np.float32)), -OBS_BOUND, OBS_BOUND)
