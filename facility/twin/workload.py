"""Workload traces: per-GPU utilisation u(t), peak throughput and tensor-pipe share (TWIN.md "GPU" 5).

- `burn`: GPU-Burn-like FP32 stress, u = 1, 54 TFLOPS peak, tensor pipes idle.
- `training`: LLM training, BF16 989 TFLOPS x MFU; u ~ 0.97-1 with a synchronous checkpoint dip per
  hall (every `checkpoint_interval_s`, lasting `checkpoint_duration_s`, u drops to 0.15).
- `inference`: diurnal load (low at 04:00, peak at 16:00 local) with per-GPU AR(1) variation refreshed
  every 10 s; BF16 at a lower MFU.
- `idle`: u = 0.
Utilisation is recomputed only when it changes (cheap at 1 s steps).
"""

from __future__ import annotations

import math

import numpy as np

WORKLOADS = ("training", "inference", "burn", "idle")
CHECKPOINT_U = 0.15
INFERENCE_REFRESH_S = 10
INFERENCE_MFU = 0.2
TENSOR_SHARE = {"training": 0.5, "inference": 0.3, "burn": 0.0, "idle": 0.0}


class WorkloadTrace:
    """u(t) for every GPU; `kinds[g]` is the workload of GPU g's hall (group `group[g]`)."""

    def __init__(self, kinds: list[str], group: np.ndarray, n_groups: int, *, seed: int, mfu: float,
                 tflops_fp32: float, tflops_bf16: float, checkpoint_interval_s: float,
                 checkpoint_duration_s: float):
        for k in set(kinds):
            if k not in WORKLOADS:
                raise ValueError(f"unknown workload {k!r}; choose one of {', '.join(WORKLOADS)}")
        n = len(kinds)
        kinds_arr = np.array(kinds, dtype=object)
        self._mask = {k: kinds_arr == k for k in WORKLOADS}
        self.group = group
        rng = np.random.default_rng([seed, 1])
        peak = {"training": tflops_bf16 * mfu, "inference": tflops_bf16 * INFERENCE_MFU,
                "burn": tflops_fp32, "idle": tflops_fp32}
        self.tflops_max = np.array([peak[k] for k in kinds])
        self.tensor_share = np.array([TENSOR_SHARE[k] for k in kinds])
        # Training: small static per-GPU shortfall (stragglers, data loading) and a per-hall checkpoint phase.
        self._train_base = rng.uniform(0.97, 1.0, n)
        self._phase = rng.uniform(0, checkpoint_interval_s, n_groups)
        self._interval = checkpoint_interval_s
        self._duration = checkpoint_duration_s
        self._noise = np.zeros(n)
        self._rng = np.random.default_rng([seed, 2])
        self.u = np.zeros(n)
        self._u_group = np.zeros(n_groups)
        self.u[self._mask["burn"]] = 1.0
        self._last_dip = None
        self._last_inference = None
        self.version = 0  # bumped whenever u changes

    def reseed(self, seed) -> None:
        """Draw a different future of the random variation from here on (what-if rollouts of a copied twin
        that must not know the run's own future)."""
        self._rng = np.random.default_rng(seed)

    def update(self, t_s: float, local_hour: float) -> None:
        """Bring `self.u` to time t_s (seconds since start); `local_hour` drives the diurnal curve."""
        m = self._mask
        if m["training"].any():
            dip = ((t_s + self._phase) % self._interval) < self._duration
            if self._last_dip is None or not np.array_equal(dip, self._last_dip):
                self._last_dip = dip
                scale = np.where(dip, CHECKPOINT_U, 1.0)[self.group]
                self.u[m["training"]] = (self._train_base * scale)[m["training"]]
                self.version += 1
        if m["inference"].any():
            tick = int(t_s // INFERENCE_REFRESH_S)
            if tick != self._last_inference:
                self._last_inference = tick
                rho = 0.9  # AR(1) per 10 s: variation decorrelates over ~100 s
                self._noise *= rho
                self._noise += math.sqrt(1 - rho * rho) * self._rng.standard_normal(self._noise.size)
                level = 0.25 + 0.55 * 0.5 * (1 - math.cos(2 * math.pi * (local_hour - 4.0) / 24))
                u = np.clip(level * (1 + 0.15 * self._noise), 0.0, 1.0)
                self.u[m["inference"]] = u[m["inference"]]
                self.version += 1
