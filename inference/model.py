"""The telemetry forecaster: a small causal transformer over one GPU's telemetry stream.

Each time step is one GPU sample (its own metrics plus its node's cooling inputs and setpoints); the
model forecasts GPU temperature, SM clock and power at several horizons as quantiles, plus the
probability that the GPU is throttling. Attention is DeepSeek's Multi-Head Latent Attention
(``inference.mla``) so the serving worker can keep a 2,048-step history for thousands of streams in a
latent cache of ``kv_lora_rank + qk_rope_head_dim`` elements per token and layer; ``attention="mha"``
builds the same model with standard multi-head attention of (about) the same parameter count, for
comparison (``bench/mla.py``, tests).

Architecture only: training is the lead's (``forecast_loss`` and ``predict`` are the contract it and the
serving worker use). Imports only torch and the standard library.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .mla import (
    MLAConfig,
    MultiHeadLatentAttention,
    RMSNorm,
    TokenCache,
    apply_rotary,
    attention_mask,
    dense_attention,
    expand_positions,
    rotary_cos_sin,
)

__all__ = [
    "FEATURES",
    "FEATURE_NAMES",
    "TARGETS",
    "DecoderBlock",
    "Feature",
    "ForecasterConfig",
    "MHACache",
    "MultiHeadAttention",
    "SwiGLU",
    "TelemetryForecaster",
    "cache_bytes_per_token",
    "cat_stream_caches",
    "count_parameters",
    "encode_features",
    "forecast_loss",
    "model_summary",
    "normalise_targets",
    "positions_from_timestamps",
    "predict",
    "select_stream_caches",
]


# --------------------------------------------------------------------------------------------------
# Features: the one list training and serving share


@dataclass(frozen=True)
class Feature:
    """One input channel: ``(value - offset) / scale`` after an optional ``log1p``; NaN means missing.

    ``source`` names where the value comes from (DCGM field, Redfish/Brick point) so the telemetry side can
    map its catalogue onto it.
    """

    name: str
    offset: float
    scale: float
    source: str
    log1p: bool = False

    def normalise(self, values: torch.Tensor) -> torch.Tensor:
        if self.log1p:
            values = torch.log1p(values.clamp_min(0))
        return (values - self.offset) / self.scale

    def denormalise(self, values: torch.Tensor) -> torch.Tensor:
        values = values * self.scale + self.offset
        return torch.expm1(values) if self.log1p else values


# Offsets/scales put an H100/B200-class GPU's normal range at roughly [-1, 1]; they are normalisation,
# not physics, and changing them invalidates trained checkpoints (the config records FEATURE_NAMES).
FEATURES: tuple[Feature, ...] = (
    Feature("gpu_temperature_celsius", 60.0, 15.0, "DCGM_FI_DEV_GPU_TEMP"),
    Feature("memory_temperature_celsius", 65.0, 15.0, "DCGM_FI_DEV_MEMORY_TEMP"),
    Feature("power_watts", 400.0, 250.0, "DCGM_FI_DEV_POWER_USAGE"),
    Feature("sm_clock_megahertz", 1500.0, 400.0, "DCGM_FI_DEV_SM_CLOCK"),
    Feature("gpu_utilization_ratio", 0.5, 0.5, "DCGM_FI_DEV_GPU_UTIL / 100"),
    Feature("tensor_active_ratio", 0.3, 0.3, "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE"),
    # Node cooling inputs: air-cooled nodes have no coolant values and vice versa (missing → flagged).
    Feature("inlet_air_temperature_celsius", 25.0, 5.0, "node inlet air (Brick Air_Temperature_Sensor)"),
    Feature("coolant_supply_temperature_celsius", 30.0, 8.0, "Redfish CoolantConnector supply temperature"),
    Feature("coolant_flow_liters_per_minute", 10.0, 10.0, "Redfish CoolantConnector FlowLitersPerMinute"),
    Feature("supply_temperature_setpoint_celsius", 30.0, 8.0, "current supply temperature setpoint"),
    Feature("fan_speed_setpoint_ratio", 0.6, 0.3, "current fan duty setpoint, 0-1"),
    Feature("pump_speed_setpoint_ratio", 0.6, 0.3, "current pump speed setpoint, 0-1"),
    # Seconds since this stream's previous sample: irregular sampling and outages are visible to the model.
    Feature("sample_gap_seconds", 1.0, 1.0, "time since the previous sample", log1p=True),
    # The stream's load-drop rhythm (a training job's checkpoints): seconds since its utilisation last fell
    # sharply, and until the next fall if the last interval repeats. Periodic drops lie further back than the
    # attention window; with these the model can see the next one coming (missing until seen).
    Feature("seconds_since_load_drop", 900.0, 900.0, "derived: time since GPU utilisation last fell sharply"),
    Feature("seconds_until_expected_load_drop", 0.0, 300.0,
            "derived: last interval between sharp falls minus the time since the last"),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
_FEATURE_BY_NAME = {f.name: f for f in FEATURES}

# Forecast as quantiles, predicted as a change from the current value (persistence is the baseline).
TARGETS: tuple[str, ...] = ("gpu_temperature_celsius", "sm_clock_megahertz", "power_watts")


def encode_features(features: torch.Tensor) -> torch.Tensor:
    """(..., len(FEATURES)) physical values, NaN for missing → (..., 2 * len(FEATURES)): normalised
    values (missing → 0) followed by missing flags."""
    if features.shape[-1] != len(FEATURES):
        raise ValueError(f"expected {len(FEATURES)} features in FEATURES order, got {features.shape[-1]}")
    missing = torch.isnan(features)
    normed = torch.stack([f.normalise(features[..., i]) for i, f in enumerate(FEATURES)], dim=-1)
    normed = normed.masked_fill(missing, 0.0)
    return torch.cat((normed, missing.to(normed.dtype)), dim=-1)


def normalise_targets(values: torch.Tensor, targets: Sequence[str] = TARGETS) -> torch.Tensor:
    """(..., len(targets)) physical values → the model's normalised space (NaN stays NaN)."""
    return torch.stack([_FEATURE_BY_NAME[t].normalise(values[..., i]) for i, t in enumerate(targets)], -1)


# --------------------------------------------------------------------------------------------------
# Config


@dataclass
class ForecasterConfig:
    """Shapes of the forecaster. Defaults: hidden 64, 3 layers, 8 heads, MLA latent 16 + rope 8 (24
    cached elements per token and layer), about 0.2 M parameters. ``mha_head_dim=None`` picks the MHA
    head size whose attention parameters match MLA's (same heads, partial RoPE over ``qk_rope_head_dim``).

    Positions are sample times in units of ``position_resolution_s`` since the stream's start (gaps in
    sampling are gaps in positions); ``sliding_window`` bounds the history each step attends to and the
    cache holds.
    """

    hidden_size: int = 64
    num_layers: int = 3
    num_attention_heads: int = 8
    q_lora_rank: int | None = None
    kv_lora_rank: int = 16
    qk_nope_head_dim: int = 16
    qk_rope_head_dim: int = 8
    v_head_dim: int = 16
    intermediate_size: int = 176
    rope_theta: float = 10000.0
    rope_interleave: bool = False
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 8192
    sliding_window: int | None = None
    position_resolution_s: float = 1.0
    attention: str = "mla"
    mha_head_dim: int | None = None
    horizons_s: tuple[float, ...] = (10.0, 60.0, 300.0)
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)
    targets: tuple[str, ...] = TARGETS
    features: tuple[str, ...] = FEATURE_NAMES
    throttle_loss_weight: float = 1.0
    # Typical size of each (horizon, target) change in physical units (``fit`` measures it on the training
    # data). The head predicts changes in these units, so a clock that barely moves in 10 s and a temperature
    # that moves degrees in 300 s are learnt on the same footing; None uses each feature's scale.
    delta_scales: tuple[tuple[float, ...], ...] | None = None
    # Conformal widening of the outer quantiles, (horizons, targets) in physical units: ``fit`` measures on the
    # validation block how far outcomes fall outside the p10-p90 band and moves both ends by that much
    # (negative narrows), so the band covers its nominal share of outcomes.
    interval_adjust: tuple[tuple[float, ...], ...] | None = None

    def __post_init__(self) -> None:
        self.horizons_s = tuple(float(h) for h in self.horizons_s)
        for name in ("delta_scales", "interval_adjust"):
            table = getattr(self, name)
            if table is None:
                continue
            table = tuple(tuple(float(v) for v in row) for row in table)
            if len(table) != len(self.horizons_s) or any(len(row) != len(self.targets) for row in table):
                raise ValueError(f"{name} must be (horizons, targets)")
            if not all(math.isfinite(v) for row in table for v in row):
                raise ValueError(f"{name} must be finite")
            setattr(self, name, table)
        if self.delta_scales is not None and not all(v > 0 for row in self.delta_scales for v in row):
            raise ValueError("delta_scales must be positive")
        self.quantiles = tuple(float(q) for q in self.quantiles)
        self.targets = tuple(self.targets)
        self.features = tuple(self.features)
        if self.attention not in ("mla", "mha"):
            raise ValueError("attention must be 'mla' or 'mha'")
        if self.features != FEATURE_NAMES:
            raise ValueError("config was built for another feature list; retrain or map features")
        if unknown := set(self.targets) - set(FEATURE_NAMES):
            raise ValueError(f"targets must be input features (deltas are from the last value): {unknown}")
        if list(self.quantiles) != sorted(self.quantiles) or not all(0 < q < 1 for q in self.quantiles):
            raise ValueError("quantiles must be increasing, in (0, 1)")

    @property
    def input_size(self) -> int:
        return 2 * len(self.features)

    def mla_config(self) -> MLAConfig:
        return MLAConfig(
            hidden_size=self.hidden_size, num_attention_heads=self.num_attention_heads,
            q_lora_rank=self.q_lora_rank, kv_lora_rank=self.kv_lora_rank,
            qk_nope_head_dim=self.qk_nope_head_dim, qk_rope_head_dim=self.qk_rope_head_dim,
            v_head_dim=self.v_head_dim, rope_theta=self.rope_theta, rope_interleave=self.rope_interleave,
            max_position_embeddings=self.max_position_embeddings, rms_norm_eps=self.rms_norm_eps,
            sliding_window=self.sliding_window,
        )

    def mla_attention_parameters(self) -> int:
        c, h = self.mla_config(), self.hidden_size
        q = h * c.num_attention_heads * c.qk_head_dim if c.q_lora_rank is None else (
            h * c.q_lora_rank + c.q_lora_rank + c.q_lora_rank * c.num_attention_heads * c.qk_head_dim
        )
        kv = h * c.cache_elements_per_token + c.kv_lora_rank
        kv += c.kv_lora_rank * c.num_attention_heads * (c.qk_nope_head_dim + c.v_head_dim)
        return q + kv + c.num_attention_heads * c.v_head_dim * h

    def resolved_mha_head_dim(self) -> int:
        if self.mha_head_dim is not None:
            return self.mha_head_dim
        per_unit = 4 * self.hidden_size * self.num_attention_heads  # q, k, v, o per head dim
        return max(2, round(self.mla_attention_parameters() / per_unit))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ForecasterConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for name in ("delta_scales", "interval_adjust"):
            if getattr(self, name) is not None:
                out[name] = [list(row) for row in getattr(self, name)]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def normalised_delta_scales(self) -> torch.Tensor:
        """(horizons, targets): ``delta_scales`` in each target's normalised units (1 without them)."""
        if self.delta_scales is None:
            return torch.ones(len(self.horizons_s), len(self.targets))
        feature_scale = torch.tensor([_FEATURE_BY_NAME[t].scale for t in self.targets])
        return torch.tensor(self.delta_scales) / feature_scale

    def normalised_interval_adjust(self) -> torch.Tensor:
        """(horizons, targets): ``interval_adjust`` in each target's normalised units (0 without it)."""
        if self.interval_adjust is None:
            return torch.zeros(len(self.horizons_s), len(self.targets))
        feature_scale = torch.tensor([_FEATURE_BY_NAME[t].scale for t in self.targets])
        return torch.tensor(self.interval_adjust) / feature_scale


# --------------------------------------------------------------------------------------------------
# MHA comparison variant


class MHACache(TokenCache):
    """Standard per-head K/V cache: ``(batch, heads, 2, capacity, head_dim)``, time on dim 3. Each head's
    keys (and values) are contiguous rows and (batch, heads) flatten into one matmul batch dim, so decode
    reads the cache in place without a copy (the usual ``(b, h, t, d)`` layout, K and V interleaved)."""

    time_dim = 3

    def __init__(
        self,
        batch_size: int,
        num_heads: int,
        head_dim: int,
        *,
        capacity: int = 64,
        window: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        buf = torch.empty(batch_size, num_heads, 2, max(capacity, 1), head_dim, dtype=dtype, device=device)
        super().__init__(buf, window=window)

    @classmethod
    def from_tensors(
        cls, k: torch.Tensor, v: torch.Tensor, *, window: int | None = None, capacity: int | None = None
    ) -> MHACache:
        batch, heads, length, dim = k.shape
        cache = cls(batch, heads, dim, capacity=max(capacity or 0, length), window=window,
                    dtype=k.dtype, device=k.device)
        cache.append(k, v)
        return cache

    def append(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """k, v: (batch, heads, new, head_dim)."""
        self._append(torch.stack((k, v), dim=2))

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """k and v, each (batch, heads, length, head_dim) views."""
        data = self.filled()
        return data[:, :, 0], data[:, :, 1]


class MultiHeadAttention(nn.Module):
    """Standard multi-head attention with the same interface as MultiHeadLatentAttention.

    RoPE is applied to the first ``rope_dim`` dims of each head's q and k (partial rotary) so positions
    enter the same way as in MLA's decoupled rope part; the cache holds full per-head K and V.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        head_dim: int,
        rope_dim: int,
        mla_config: MLAConfig,
    ) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        self.rope_dim = min(rope_dim, head_dim - head_dim % 2)
        self.window = mla_config.sliding_window
        self.q_proj = nn.Linear(hidden_size, num_heads * head_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, num_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, num_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(num_heads * head_dim, hidden_size, bias=False)
        self.scaling = head_dim**-0.5
        self.rope_interleave = mla_config.rope_interleave
        theta = mla_config.rope_theta
        d = self.rope_dim
        self._inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d))

    def new_cache(self, batch_size: int, capacity: int = 64, *, dtype=None, device=None) -> MHACache:
        w = self.k_proj.weight
        return MHACache(batch_size, self.num_heads, self.head_dim, capacity=capacity, window=self.window,
                        dtype=dtype or w.dtype, device=device or w.device)

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        d = self.rope_dim
        return torch.cat((apply_rotary(x[..., :d], cos, sin, self.rope_interleave), x[..., d:]), dim=-1)

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor | Sequence[int],
        cache: MHACache | None = None,
        *,
        use_cache: bool = True,
        decompress: bool = False,  # accepted for interface parity; MHA has nothing to decompress
    ) -> tuple[torch.Tensor, MHACache | None]:
        bsz, seq, _ = x.shape
        positions = expand_positions(positions, bsz, seq, x.device)
        if cache is not None and cache.window != self.window:
            raise ValueError("cache window differs from the layer's sliding window")
        shape = (bsz, seq, self.num_heads, self.head_dim)
        q = self.q_proj(x).view(shape).transpose(1, 2)  # (b, heads, seq, d)
        k = self.k_proj(x).view(shape).transpose(1, 2)
        v = self.v_proj(x).view(shape).transpose(1, 2)
        if self._inv_freq.device != x.device:
            self._inv_freq = self._inv_freq.to(x.device)
        cos, sin = rotary_cos_sin(positions, self._inv_freq, 1.0, x.dtype)
        cos, sin = cos[:, None], sin[:, None]
        q, k = self._rope(q, cos, sin), self._rope(k, cos, sin)

        if cache is None or cache.length == 0:
            banded = self.window is not None and seq - 1 > self.window
            mask = attention_mask(seq, seq, 0, self.window, x.device) if banded else None
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=mask is None and seq > 1, scale=self.scaling
            )
            if cache is None and use_cache:
                cache = self.new_cache(bsz, capacity=max(64, seq), dtype=k.dtype, device=x.device)
            if cache is not None:
                cache.append(k, v)
                cache.trim()
        else:
            past = cache.length
            cache.append(k, v)
            keys, values = cache.tensors()
            mask = attention_mask(seq, keys.shape[2], past, self.window, x.device)
            out = dense_attention(q, keys, values, mask, self.scaling)
            cache.trim()
        out = out.transpose(1, 2).reshape(bsz, seq, self.num_heads * self.head_dim)
        return self.o_proj(out), cache


# --------------------------------------------------------------------------------------------------
# The forecaster


class SwiGLU(nn.Module):
    """DeepSeek's dense MLP: down(silu(gate(x)) * up(x))."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderBlock(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x)) (DeepSeek layer names)."""

    def __init__(self, config: ForecasterConfig) -> None:
        super().__init__()
        mla = config.mla_config()
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.self_attn: nn.Module
        if config.attention == "mla":
            self.self_attn = MultiHeadLatentAttention(mla)
        else:
            self.self_attn = MultiHeadAttention(
                config.hidden_size, config.num_attention_heads, config.resolved_mha_head_dim(),
                config.qk_rope_head_dim, mla,
            )
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = SwiGLU(config.hidden_size, config.intermediate_size)

    def forward(self, x, positions, cache, use_cache, decompress):
        attn, cache = self.self_attn(
            self.input_layernorm(x), positions, cache, use_cache=use_cache, decompress=decompress
        )
        x = x + attn
        return x + self.mlp(self.post_attention_layernorm(x)), cache


class TelemetryForecaster(nn.Module):
    """input projection → ``num_layers`` decoder blocks → final norm → quantile and throttle heads.

    ``forward(features, positions, cache=None)`` takes raw physical ``features`` (batch, seq,
    len(FEATURES)) in FEATURES order with NaN for missing values, and ``positions`` (batch, seq) or (seq,).
    It returns ``(outputs, cache)`` where outputs has, in the normalised target space,
    ``"quantiles"`` (batch, seq, horizons, targets, quantiles), monotone in the last dim, and
    ``"throttle_logits"`` (batch, seq, horizons); cache is a per-layer list of MLACache (or MHACache),
    created on prefill and appended to in place on decode.
    """

    def __init__(self, config: ForecasterConfig) -> None:
        super().__init__()
        self.config = config
        n_h, n_t, n_q = len(config.horizons_s), len(config.targets), len(config.quantiles)
        self.input_proj = nn.Linear(config.input_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderBlock(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.quantile_head = nn.Linear(config.hidden_size, n_h * n_t * n_q)
        self.throttle_head = nn.Linear(config.hidden_size, n_h)
        self._target_index = [FEATURE_NAMES.index(t) for t in config.targets]
        # Derived from the config, so not saved with the weights.
        self.register_buffer("delta_scale", config.normalised_delta_scales(), persistent=False)
        self.register_buffer("interval_adjust", config.normalised_interval_adjust(), persistent=False)
        # Start at persistence: zero delta for the first quantile, the rest spread by softplus(0).
        nn.init.zeros_(self.quantile_head.weight)
        nn.init.zeros_(self.quantile_head.bias)

    def new_cache(self, batch_size: int, capacity: int = 64, *, dtype=None, device=None) -> list[TokenCache]:
        kw = {"dtype": dtype, "device": device}
        return [layer.self_attn.new_cache(batch_size, capacity, **kw) for layer in self.layers]

    def forward(
        self,
        features: torch.Tensor,
        positions: torch.Tensor | Sequence[int],
        cache: list[TokenCache] | None = None,
        *,
        use_cache: bool = True,
        decompress: bool = False,
    ) -> tuple[dict[str, torch.Tensor], list[TokenCache] | None]:
        cfg = self.config
        encoded = encode_features(features.to(self.input_proj.weight.dtype))
        x = self.input_proj(encoded)
        if cache is not None and len(cache) != len(self.layers):
            raise ValueError(f"cache has {len(cache)} layers, model has {len(self.layers)}")
        new_cache: list[TokenCache] = []
        for i, layer in enumerate(self.layers):
            x, layer_cache = layer(x, positions, None if cache is None else cache[i], use_cache, decompress)
            if layer_cache is not None:
                new_cache.append(layer_cache)
        x = self.norm(x)

        bsz, seq, _ = x.shape
        n_h, n_t, n_q = len(cfg.horizons_s), len(cfg.targets), len(cfg.quantiles)
        raw = self.quantile_head(x).view(bsz, seq, n_h, n_t, n_q)
        # Monotone quantiles: the lowest, then non-negative increments (no crossing by construction).
        steps = torch.cat((raw[..., :1], F.softplus(raw[..., 1:])), dim=-1).cumsum(-1)
        steps = steps * self.delta_scale.to(steps.dtype)[:, :, None]
        last = encoded[..., self._target_index]  # current values, normalised (0 where missing)
        quantiles = last[:, :, None, :, None] + steps
        if cfg.interval_adjust is not None and n_q >= 3:
            quantiles = self._widen(quantiles)
        outputs = {"quantiles": quantiles, "throttle_logits": self.throttle_head(x)}
        return outputs, (new_cache if new_cache else None)


    def _widen(self, quantiles: torch.Tensor) -> torch.Tensor:
        """Move the outermost quantiles out by ``interval_adjust`` (in by a negative one, never past the
        median); the inner ones stay as trained."""
        adj = self.interval_adjust.to(quantiles.dtype)
        mid = quantiles[..., len(self.config.quantiles) // 2]
        lo = torch.minimum(quantiles[..., 0] - adj, mid)
        hi = torch.maximum(quantiles[..., -1] + adj, mid)
        return torch.cat((lo[..., None], quantiles[..., 1:-1], hi[..., None]), dim=-1)

    def set_interval_adjust(self, adjust: Sequence[Sequence[float]] | None) -> None:
        """Calibrate the bands after training (``ForecasterConfig.interval_adjust``)."""
        self.config = replace(self.config, interval_adjust=adjust)
        self.interval_adjust = self.config.normalised_interval_adjust().to(self.interval_adjust)


# --------------------------------------------------------------------------------------------------
# Loss and prediction


def forecast_loss(
    outputs: dict[str, torch.Tensor],
    targets: torch.Tensor,
    throttled: torch.Tensor | None,
    config: ForecasterConfig,
) -> dict[str, torch.Tensor]:
    """Pinball (quantile) loss on the targets plus BCE on throttling.

    ``targets``: (batch, seq, horizons, targets) physical values at t + horizon, NaN where unknown (end of
    the series, missing samples). ``throttled``: (batch, seq, horizons) in {0, 1}, NaN where unknown, or
    None. Returns ``{"loss", "pinball", "throttle"}``; the pinball term is averaged over known targets, each
    error measured in its (horizon, target)'s ``delta_scales`` so every forecast counts alike.
    """
    y = normalise_targets(targets, config.targets).to(outputs["quantiles"].dtype)[..., None]
    known = ~torch.isnan(y)
    q = torch.tensor(config.quantiles, dtype=y.dtype, device=y.device)
    scale = config.normalised_delta_scales().to(y)[:, :, None]
    err = (torch.where(known, y, 0.0) - outputs["quantiles"]) / scale
    pinball = torch.maximum(q * err, (q - 1) * err)
    pinball = (pinball * known).sum() / (known.sum() * len(config.quantiles)).clamp_min(1)
    bce = pinball.new_zeros(())
    if throttled is not None:
        seen = ~torch.isnan(throttled)
        if seen.any():
            logits = outputs["throttle_logits"]
            labels = torch.where(seen, throttled, 0.0).to(logits.dtype)
            per = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
            bce = (per * seen).sum() / seen.sum()
    return {"loss": pinball + config.throttle_loss_weight * bce, "pinball": pinball, "throttle": bce}


def _horizon_label(seconds: float) -> str:
    return f"{seconds:g}s"


def _quantile_label(q: float) -> str:
    return f"p{round(q * 100):02d}"


@torch.inference_mode()
def predict(
    model: TelemetryForecaster,
    features: torch.Tensor,
    positions: torch.Tensor | Sequence[int],
    cache: list[TokenCache] | None = None,
    *,
    last_only: bool = True,
) -> tuple[dict[str, dict[str, Any]], list[TokenCache] | None]:
    """Forecast in physical units, named: ``{"10s": {"gpu_temperature_celsius": {"p10": t, "p50": t,
    "p90": t}, ..., "throttle_probability": t}, "60s": ...}``, each tensor (batch,) for the last step
    (or (batch, seq) with ``last_only=False``). Returns the updated cache too, so the worker can call
    it once per new sample."""
    outputs, cache = model(features, positions, cache)
    cfg = model.config
    quantiles, throttle = outputs["quantiles"], torch.sigmoid(outputs["throttle_logits"])
    if last_only:
        quantiles, throttle = quantiles[:, -1], throttle[:, -1]
    result: dict[str, dict[str, Any]] = {}
    for h, horizon in enumerate(cfg.horizons_s):
        entry: dict[str, Any] = {}
        for t, name in enumerate(cfg.targets):
            feature = _FEATURE_BY_NAME[name]
            entry[name] = {
                _quantile_label(q): feature.denormalise(quantiles[..., h, t, i])
                for i, q in enumerate(cfg.quantiles)
            }
        entry["throttle_probability"] = throttle[..., h]
        result[_horizon_label(horizon)] = entry
    return result, cache


# --------------------------------------------------------------------------------------------------
# Sizes, and batching streams for the worker


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def cache_bytes_per_token(config: ForecasterConfig, dtype: torch.dtype = torch.float32) -> dict[str, int]:
    """Cache bytes per token of one stream, per layer and for the whole model."""
    size = torch.empty((), dtype=dtype).element_size()
    if config.attention == "mla":
        per_layer = (config.kv_lora_rank + config.qk_rope_head_dim) * size
    else:
        per_layer = 2 * config.num_attention_heads * config.resolved_mha_head_dim() * size
    return {"per_layer": per_layer, "model": per_layer * config.num_layers}


def model_summary(config: ForecasterConfig, dtype: torch.dtype = torch.float32) -> dict[str, int]:
    """Parameter counts and cache bytes per token for a config (builds the model on CPU; it is tiny)."""
    model = TelemetryForecaster(config)
    attn = model.layers[0].self_attn
    return {
        "parameters": count_parameters(model),
        "attention_parameters_per_layer": count_parameters(attn),
        "cache_bytes_per_token_per_layer": cache_bytes_per_token(config, dtype)["per_layer"],
        "cache_bytes_per_token": cache_bytes_per_token(config, dtype)["model"],
    }


def cat_stream_caches(streams: Sequence[list[TokenCache]]) -> list[TokenCache]:
    """Batch per-stream model caches (each a per-layer list, equal lengths) into one per-layer list."""
    return [type(layers[0]).cat(list(layers)) for layers in zip(*streams, strict=True)]


def select_stream_caches(cache: list[TokenCache], rows: Sequence[int] | torch.Tensor) -> list[TokenCache]:
    """Copy the given streams (rows) out of a batched model cache."""
    return [layer.select(rows) for layer in cache]


def positions_from_timestamps(
    timestamps_s: torch.Tensor, start_s: float, config: ForecasterConfig
) -> torch.Tensor:
    """Sample times (seconds) → integer positions since the stream's start, in ``position_resolution_s``."""
    return torch.round((timestamps_s - start_s) / config.position_resolution_s).to(torch.long)

