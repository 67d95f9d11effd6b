"""Multi-Head Latent Attention (MLA), compatible with DeepSeek-V2/V3 checkpoints.

MLA (DeepSeek-V2, arXiv:2405.04434, section 2.1) compresses keys and values of every token into one
low-rank latent ``c_kv`` (``kv_lora_rank`` wide) plus one rotary key ``k_pe`` shared by all heads
(``qk_rope_head_dim`` wide, the "decoupled RoPE"). Only these two are cached, so a token costs
``kv_lora_rank + qk_rope_head_dim`` elements per layer instead of ``2 * heads * head_dim`` for MHA
(DeepSeek-V2: 576 against 32,768).

Decoding uses weight absorption (DeepSeek-V2 appendix C; DeepSeek-V3 ``inference/model.py``,
``attn_impl="absorb"``): the key up-projection ``W_UK`` is folded into the query, so scores are taken
against the cached latent directly, and the value up-projection ``W_UV`` is applied after attention.
Per-head keys and values are never rebuilt from the cache. A decompressing path (rebuild K/V from the
cache, the "naive" formulation) is kept only to compare against in tests and in ``bench/mla.py``.

Numerics follow ``transformers``' ``DeepseekV3Attention`` (eager) so its state dict loads strictly and
outputs agree: RMSNorm and softmax in float32 (float64 stays float64, where the reference would
downcast), rotary angles in float32 then cast to the activation dtype, interleaved or half-split
rotary layout (``rope_interleave``), softmax scale ``(qk_nope_head_dim + qk_rope_head_dim) ** -0.5``
times the YaRN ``mscale_all_dim`` correction squared (``rope_scaling=None`` means plain RoPE).

This module imports only torch and the standard library: it is shared by training, the serving
worker and the benchmark, none of which may pull in Django.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Self

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LATENT_NORM_EPS",
    "MLACache",
    "MLAConfig",
    "MultiHeadLatentAttention",
    "RMSNorm",
    "TokenCache",
    "apply_rotary",
    "attention_mask",
    "compute_dtype",
    "dense_attention",
    "expand_positions",
    "rotary_cos_sin",
    "rotary_inv_freq",
    "softmax_scale",
]

# transformers' DeepseekV3Attention and DeepSeek's reference code build q_a_layernorm and kv_a_layernorm
# with the RMSNorm default eps (1e-6) whatever config.rms_norm_eps says; we do the same so a checkpoint
# behaves identically here. rms_norm_eps is for the surrounding model's norms.
LATENT_NORM_EPS = 1e-6


@dataclass
class MLAConfig:
    """Shapes of one MLA layer, with the field names of a DeepSeek-V3 ``config.json``.

    Defaults are the telemetry forecaster's layer, not DeepSeek's. ``rope_scaling`` is ``None``
    (plain RoPE) or a YaRN dict as in DeepSeek-V3 (``{"rope_type": "yarn", "factor": 40,
    "original_max_position_embeddings": 4096, "mscale": 1.0, "mscale_all_dim": 1.0, "beta_fast": 32,
    "beta_slow": 1}``). ``sliding_window`` (not a DeepSeek field) bounds how many past tokens each token
    attends to; the cache then never holds more than that many.
    """

    hidden_size: int = 64
    num_attention_heads: int = 8
    q_lora_rank: int | None = None
    kv_lora_rank: int = 16
    qk_nope_head_dim: int = 16
    qk_rope_head_dim: int = 8
    v_head_dim: int = 16
    rope_theta: float = 10000.0
    rope_interleave: bool = True
    max_position_embeddings: int = 4096
    rms_norm_eps: float = 1e-6
    attention_bias: bool = False
    rope_scaling: dict[str, Any] | None = None
    sliding_window: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.qk_rope_head_dim % 2:
            raise ValueError("qk_rope_head_dim must be even (RoPE rotates pairs)")
        if self.sliding_window is not None and self.sliding_window < 1:
            raise ValueError("sliding_window must be >= 1 or None")
        if self.rope_scaling is not None:
            scaling = dict(self.rope_scaling)
            rope_type = scaling.pop("type", None) or scaling.get("rope_type", "default")
            scaling["rope_type"] = rope_type
            if rope_type == "default":
                self.rope_scaling = None
            elif rope_type == "yarn":
                self.rope_scaling = scaling
            else:
                raise ValueError(f"unsupported rope scaling {rope_type!r}: only None/default and yarn")

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def cache_elements_per_token(self) -> int:
        """Elements cached per token per layer: the latent plus the shared rotary key."""
        return self.kv_lora_rank + self.qk_rope_head_dim

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MLAConfig:
        """Build from our own ``to_dict`` or from a DeepSeek-V2/V3 ``config.json`` (extra keys are kept
        in ``extra`` and ignored). Accepts both ``rope_theta``/``rope_scaling`` (DeepSeek, transformers
        4) and ``rope_parameters`` (transformers 5)."""
        data = dict(data)
        rope_parameters = data.pop("rope_parameters", None)
        if rope_parameters:
            rope_parameters = dict(rope_parameters)
            data.setdefault("rope_theta", rope_parameters.pop("rope_theta", 10000.0))
            rope_type = rope_parameters.get("rope_type", rope_parameters.get("type", "default"))
            if rope_type != "default":
                data.setdefault("rope_scaling", rope_parameters)
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known and k != "extra"}
        return cls(**kwargs, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("extra")
        return out


# --------------------------------------------------------------------------------------------------
# RoPE (plain and YaRN), RMSNorm


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def rotary_inv_freq(config: MLAConfig, device: torch.device | None = None) -> tuple[torch.Tensor, float]:
    """Inverse frequencies (float32) of the rotary part, and the factor cos/sin are multiplied by.

    YaRN follows DeepSeek-V2's ``DeepseekV2YarnRotaryEmbedding`` (= transformers' ``_compute_yarn_
    parameters``): frequencies blend interpolation and extrapolation over a linear ramp, and cos/sin are
    scaled by ``mscale(factor, mscale) / mscale(factor, mscale_all_dim)`` (1.0 for DeepSeek-V3).
    """
    dim = config.qk_rope_head_dim
    base = config.rope_theta
    pos_freqs = base ** (torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim)
    if config.rope_scaling is None:
        return 1.0 / pos_freqs, 1.0
    rs = config.rope_scaling
    original = rs["original_max_position_embeddings"]
    factor = rs.get("factor") or config.max_position_embeddings / original
    mscale, mscale_all_dim = rs.get("mscale"), rs.get("mscale_all_dim")
    attention_factor = rs.get("attention_factor")
    if attention_factor is None:
        if mscale and mscale_all_dim:
            attention_factor = _yarn_mscale(factor, mscale) / _yarn_mscale(factor, mscale_all_dim)
        else:
            attention_factor = _yarn_mscale(factor)
    beta_fast, beta_slow = rs.get("beta_fast") or 32, rs.get("beta_slow") or 1

    def correction_dim(rotations: float) -> float:
        return (dim * math.log(original / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if rs.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp
    ramp = ((torch.arange(dim // 2, dtype=torch.float32, device=device) - low) / (high - low)).clamp(0, 1)
    extrapolation = 1 - ramp
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolation) + (1.0 / pos_freqs) * extrapolation
    return inv_freq, float(attention_factor)


def softmax_scale(config: MLAConfig) -> float:
    """``qk_head_dim ** -0.5``, times ``mscale(factor, mscale_all_dim) ** 2`` under YaRN (DeepSeek-V2
    appendix / transformers ``yarn_apply_mscale``): YaRN's attention temperature, applied to the scores
    because only the rotary half of q·k sees the cos/sin factor."""
    scale = config.qk_head_dim**-0.5
    rs = config.rope_scaling
    if rs is not None and rs.get("mscale_all_dim"):
        m = _yarn_mscale(rs["factor"], rs["mscale_all_dim"])
        scale = scale * m * m
    return scale


def rotary_cos_sin(
    positions: torch.Tensor, inv_freq: torch.Tensor, attention_factor: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape positions.shape + (rope_dim // 2,), one angle per rotated pair.

    Angles are computed in float32 and cast to ``dtype`` afterwards, as the reference does; positions are
    arbitrary (gaps, different per row): rotation depends only on the given position.
    """
    freqs = positions.to(torch.float32)[..., None] * inv_freq.to(positions.device)
    cos = freqs.cos() * attention_factor
    sin = freqs.sin() * attention_factor
    return cos.to(dtype), sin.to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleave: bool) -> torch.Tensor:
    """Rotate the last dim of ``x`` by cos/sin (broadcast over any head dims).

    ``interleave=True`` treats (x0, x1), (x2, x3)... as the pairs (DeepSeek's checkpoint layout) and
    returns them de-interleaved (all first elements, then all second elements), exactly like
    transformers' ``apply_rotary_pos_emb_interleave``; since q and k are laid out the same way, q·k is
    unchanged. ``interleave=False`` pairs x[i] with x[i + d/2] (``rotate_half``).
    """
    if interleave:
        x1, x2 = x[..., 0::2], x[..., 1::2]
    else:
        half = x.shape[-1] // 2
        x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Precision for norms and softmax: float32 for half types and float32 (as the reference), float64
    kept as float64 (the reference downcasts it; tests compare in float64 against a full-precision
    reference kernel instead)."""
    return torch.promote_types(dtype, torch.float32)


class RMSNorm(nn.Module):
    """RMSNorm computed in (at least) float32 and cast back, as DeepseekV3RMSNorm (parameter ``weight``)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x.to(compute_dtype(dtype))
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


# --------------------------------------------------------------------------------------------------
# Caches


class TokenCache:
    """Per-token storage for a batch of streams that all hold the same number of tokens.

    One preallocated buffer ``(batch, ..., capacity, ...)`` with the time axis at ``time_dim``; the filled
    part is the window ``[start, start + length)`` of that axis, in arrival order. Appending writes in
    place; when the end of the buffer is reached the filled part is moved to the front (a window-bounded
    cache) or the buffer doubles (an unbounded one), so both cost amortised O(1) per token. ``window``
    (if set) is how many tokens are kept: ``trim()`` drops the oldest beyond it by moving ``start``.

    All rows share one length on purpose: batched decode is then plain dense matmuls with no padding
    masks. The serving worker keeps streams that step together in one cache (``cat`` once, decode in
    place), takes rows out with ``select`` and writes them back with ``scatter_``; with a window every
    warmed-up stream has exactly ``window`` tokens, so all streams of a facility batch together.
    """

    time_dim: int = 1

    def __init__(self, buffer: torch.Tensor, *, length: int = 0, window: int | None = None) -> None:
        if window is not None and window < 1:
            raise ValueError("window must be >= 1 or None")
        if not 0 <= length <= buffer.shape[self.time_dim]:
            raise ValueError("length exceeds the buffer's capacity")
        self._buf = buffer
        self._start = 0
        self._length = length
        self.window = window

    # -- shape ---------------------------------------------------------------------------------
    @property
    def length(self) -> int:
        return self._length

    def __len__(self) -> int:
        return self._length

    @property
    def batch_size(self) -> int:
        return self._buf.shape[0]

    @property
    def capacity(self) -> int:
        return self._buf.shape[self.time_dim]

    @property
    def dtype(self) -> torch.dtype:
        return self._buf.dtype

    @property
    def device(self) -> torch.device:
        return self._buf.device

    @property
    def bytes_per_token(self) -> int:
        """Bytes one token of one row occupies (per layer)."""
        per = self._buf.element_size()
        for i, n in enumerate(self._buf.shape):
            if i not in (0, self.time_dim):
                per *= n
        return per

    @property
    def nbytes(self) -> int:
        """Bytes held by the filled part (what a stream really costs, not the preallocation)."""
        return self.bytes_per_token * self.batch_size * self._length

    @property
    def allocated_bytes(self) -> int:
        return self._buf.numel() * self._buf.element_size()

    def filled(self) -> torch.Tensor:
        """View of the filled part of the buffer, in arrival order (no copy)."""
        return self._buf.narrow(self.time_dim, self._start, self._length)

    # -- writing ---------------------------------------------------------------------------------
    def _append(self, new: torch.Tensor) -> None:
        n = new.shape[self.time_dim]
        if new.shape[0] != self.batch_size:
            raise ValueError(f"appending {new.shape[0]} rows to a cache of {self.batch_size}")
        end = self._start + self._length
        if end + n > self.capacity:
            if self.window is not None and self._length + n <= self.capacity:
                # Bounded cache: move the kept tokens to the front (clone: source and target may overlap).
                kept = self.filled().clone()
                self._buf.narrow(self.time_dim, 0, self._length).copy_(kept)
            else:
                want = max(2 * self.capacity, self._length + n)
                if self.window is not None:
                    want = max(2 * self.window, self._length + n)
                shape = list(self._buf.shape)
                shape[self.time_dim] = want
                buf = self._buf.new_empty(shape)
                buf.narrow(self.time_dim, 0, self._length).copy_(self.filled())
                self._buf = buf
            self._start = 0
            end = self._length
        self._buf.narrow(self.time_dim, end, n).copy_(new)
        self._length += n

    def trim(self) -> None:
        """Drop the oldest tokens beyond ``window`` (no copy)."""
        if self.window is not None and self._length > self.window:
            self._start += self._length - self.window
            self._length = self.window

    def truncate(self, length: int) -> None:
        """Keep only the first ``length`` tokens (roll back appended ones); no copy."""
        if not 0 <= length <= self._length:
            raise ValueError("can only truncate to a length between 0 and the current length")
        self._length = length

    # -- rows --------------------------------------------------------------------------------
    def _with_buffer(self, buffer: torch.Tensor, length: int) -> Self:
        other = copy.copy(self)
        other._buf, other._start, other._length = buffer, 0, length
        return other

    def select(self, rows: Sequence[int] | torch.Tensor | slice) -> Self:
        """A new cache holding a copy of the given rows (same length, window and metadata)."""
        if isinstance(rows, slice):
            data = self.filled()[rows].clone()
        else:
            index = torch.as_tensor(rows, dtype=torch.long, device=self.device)
            data = self.filled().index_select(0, index)
        return self._with_buffer(data, self._length)

    def split(self) -> list[Self]:
        """One single-row cache per stream."""
        return [self.select(slice(i, i + 1)) for i in range(self.batch_size)]

    def scatter_(self, rows: Sequence[int] | torch.Tensor, other: TokenCache) -> None:
        """Write ``other``'s rows back into ``rows`` of this cache (both must hold the same length)."""
        if other.length != self._length:
            raise ValueError("scatter_ needs equal lengths; group streams by cache length")
        index = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        self.filled().index_copy_(0, index, other.filled())

    @classmethod
    def cat(cls, caches: Sequence[Self], capacity: int | None = None) -> Self:
        """Batch several caches (one or more streams each) of equal length into one, row order kept."""
        if not caches:
            raise ValueError("nothing to concatenate")
        first = caches[0]
        if any(type(c) is not type(first) for c in caches):
            raise TypeError("cannot mix cache types")
        if len({c.length for c in caches}) != 1 or len({c.window for c in caches}) != 1:
            raise ValueError("caches must have equal lengths and windows; group streams by length")
        length = first.length
        capacity = max(capacity or 0, length, max(c.capacity for c in caches))
        shape = list(first._buf.shape)
        shape[0] = sum(c.batch_size for c in caches)
        shape[first.time_dim] = capacity
        buf = first._buf.new_empty(shape)
        torch.cat([c.filled() for c in caches], dim=0, out=buf.narrow(first.time_dim, 0, length))
        return first._with_buffer(buf, length)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Self:
        """A compact copy on another device/dtype (e.g. to move a stream between workers)."""
        return self._with_buffer(self.filled().to(device=device, dtype=dtype, copy=True), self._length)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(batch={self.batch_size}, length={self._length}, "
            f"capacity={self.capacity}, window={self.window}, bytes_per_token={self.bytes_per_token})"
        )


class MLACache(TokenCache):
    """The MLA cache: per token only the normalised latent ``c_kv`` and the rotary-applied shared key
    ``k_pe`` (DeepSeek-V2 eq. 10/14), stored side by side as ``(batch, capacity, kv_lora_rank +
    qk_rope_head_dim)`` so the absorbed decode scores both parts with a single matmul (as FlashMLA's 576-wide
    cache). Rotary is applied before caching, so positions are never stored.
    """

    time_dim = 1

    def __init__(
        self,
        batch_size: int,
        kv_lora_rank: int,
        qk_rope_head_dim: int,
        *,
        capacity: int = 64,
        window: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        self.kv_lora_rank = kv_lora_rank
        self.qk_rope_head_dim = qk_rope_head_dim
        width = kv_lora_rank + qk_rope_head_dim
        buf = torch.empty(batch_size, max(capacity, 1), width, dtype=dtype, device=device)
        super().__init__(buf, window=window)

    @classmethod
    def from_tensors(
        cls, c_kv: torch.Tensor, k_pe: torch.Tensor, *, window: int | None = None, capacity: int | None = None
    ) -> MLACache:
        """A cache holding the given ``(batch, length, kv_lora_rank)`` latents and ``(batch, length,
        qk_rope_head_dim)`` rotary keys (e.g. restored from storage, or synthetic for benchmarks)."""
        batch, length, rank = c_kv.shape
        cache = cls(
            batch, rank, k_pe.shape[-1], capacity=max(capacity or 0, length),
            window=window, dtype=c_kv.dtype, device=c_kv.device,
        )
        cache.append(c_kv, k_pe)
        return cache

    def append(self, c_kv: torch.Tensor, k_pe: torch.Tensor) -> None:
        self._append(torch.cat((c_kv, k_pe), dim=-1))

    def latents(self) -> torch.Tensor:
        """``(batch, length, kv_lora_rank + qk_rope_head_dim)``: [c_kv | k_pe] per token (a view)."""
        return self.filled()

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The filled part as views: c_kv ``(batch, length, kv_lora_rank)`` and k_pe ``(batch, length,
        qk_rope_head_dim)``."""
        data = self.filled()
        return data[..., : self.kv_lora_rank], data[..., self.kv_lora_rank :]


# --------------------------------------------------------------------------------------------------
# Attention


def expand_positions(
    positions: torch.Tensor | Sequence[int], batch: int, seq: int, device: torch.device
) -> torch.Tensor:
    """(seq,) or (batch, seq) positions → (batch, seq) (a broadcast view, no copy)."""
    positions = torch.as_tensor(positions, device=device)
    if positions.dim() == 1:
        positions = positions.unsqueeze(0).expand(batch, seq)
    if positions.shape != (batch, seq):
        raise ValueError(f"positions must be (seq,) or {(batch, seq)}, got {tuple(positions.shape)}")
    return positions


def attention_mask(
    queries: int, keys: int, past: int, window: int | None, device: torch.device
) -> torch.Tensor | None:
    """Boolean ``(queries, keys)`` mask, True where query ``t`` (key index ``past + t``) may attend: keys
    at or before itself, and not more than ``window`` tokens back. None when everything is visible."""
    if queries == 1 and (window is None or keys - 1 <= window):
        return None
    q = torch.arange(queries, device=device)[:, None] + past
    k = torch.arange(keys, device=device)[None, :]
    mask = k <= q
    if window is not None:
        mask &= k >= q - window
    return mask


def dense_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """softmax(q kᵀ · scale + mask) v over the last two dims, softmax in at least float32.

    Used for all decode paths (absorbed, decompressing and MHA) so the benchmark compares the same kernel.
    """
    scores = torch.matmul(q * scale, k.transpose(-1, -2))  # scale the (small) queries, not the scores
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1, dtype=compute_dtype(scores.dtype)).to(v.dtype)
    return torch.matmul(probs, v)


class MultiHeadLatentAttention(nn.Module):
    """DeepSeek-V2/V3 MLA layer; parameters named as transformers' ``DeepseekV3Attention``.

    ``forward(x, positions, cache=None)`` takes ``x`` (batch, seq, hidden) and ``positions`` (batch, seq)
    or (seq,). Positions only drive RoPE (they may have gaps and differ per row); causality is by order:
    each new token sees every cached token and the tokens of its own chunk up to itself (within
    ``sliding_window`` if set). Without a cache (or with an empty one) the chunk is a prefill; with a
    non-empty cache it is a decode step of one or several tokens, computed with absorbed weights.
    """

    def __init__(self, config: MLAConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.num_heads = c.num_attention_heads
        self.q_lora_rank = c.q_lora_rank
        self.kv_lora_rank = c.kv_lora_rank
        self.qk_nope_head_dim = c.qk_nope_head_dim
        self.qk_rope_head_dim = c.qk_rope_head_dim
        self.qk_head_dim = c.qk_head_dim
        self.v_head_dim = c.v_head_dim
        h = c.hidden_size
        if c.q_lora_rank is None:
            self.q_proj = nn.Linear(h, self.num_heads * self.qk_head_dim, bias=False)
        else:
            self.q_a_proj = nn.Linear(h, c.q_lora_rank, bias=c.attention_bias)
            self.q_a_layernorm = RMSNorm(c.q_lora_rank, eps=LATENT_NORM_EPS)
            self.q_b_proj = nn.Linear(c.q_lora_rank, self.num_heads * self.qk_head_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(h, c.kv_lora_rank + c.qk_rope_head_dim, bias=c.attention_bias)
        self.kv_a_layernorm = RMSNorm(c.kv_lora_rank, eps=LATENT_NORM_EPS)
        kv_b_out = self.num_heads * (c.qk_nope_head_dim + c.v_head_dim)
        self.kv_b_proj = nn.Linear(c.kv_lora_rank, kv_b_out, bias=False)
        self.o_proj = nn.Linear(self.num_heads * c.v_head_dim, h, bias=c.attention_bias)
        self.scaling = softmax_scale(c)
        # Not a buffer: keeps the state dict identical to DeepseekV3Attention and survives .to(bfloat16).
        self._inv_freq, self._rope_factor = rotary_inv_freq(c)

    def new_cache(
        self,
        batch_size: int,
        capacity: int = 64,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> MLACache:
        w = self.kv_a_proj_with_mqa.weight
        return MLACache(
            batch_size, self.kv_lora_rank, self.qk_rope_head_dim, capacity=capacity,
            window=self.config.sliding_window, dtype=dtype or w.dtype, device=device or w.device,
        )

    def _absorbed_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """W_UK (heads, nope, rank) and W_UV (heads, v, rank): views of kv_b_proj.weight, no copies."""
        w = self.kv_b_proj.weight.view(self.num_heads, -1, self.kv_lora_rank)
        return w[:, : self.qk_nope_head_dim], w[:, self.qk_nope_head_dim :]

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor | Sequence[int],
        cache: MLACache | None = None,
        *,
        use_cache: bool = True,
        decompress: bool = False,
    ) -> tuple[torch.Tensor, MLACache | None]:
        """Returns ``(out, cache)``: out is (batch, seq, hidden). A new cache is created for a prefill
        when ``use_cache`` (set it False for training); a given cache is appended to in place and
        returned. ``decompress=True`` decodes by rebuilding K/V from the cache: benchmark/test only."""
        bsz, seq, _ = x.shape
        positions = expand_positions(positions, bsz, seq, x.device)
        if cache is not None:
            if cache.window != self.config.sliding_window:
                raise ValueError("cache window differs from config.sliding_window")
            if cache.batch_size != bsz:
                raise ValueError(f"cache holds {cache.batch_size} rows, input has {bsz}")

        q = self.q_proj(x) if self.q_lora_rank is None else self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q = q.view(bsz, seq, self.num_heads, self.qk_head_dim)
        q_nope, q_pe = q.split([self.qk_nope_head_dim, self.qk_rope_head_dim], dim=-1)

        c_kv, k_pe = self.kv_a_proj_with_mqa(x).split([self.kv_lora_rank, self.qk_rope_head_dim], dim=-1)
        c_kv = self.kv_a_layernorm(c_kv)

        if self._inv_freq.device != x.device:
            self._inv_freq = self._inv_freq.to(x.device)
        cos, sin = rotary_cos_sin(positions, self._inv_freq, self._rope_factor, q.dtype)
        interleave = self.config.rope_interleave
        q_pe = apply_rotary(q_pe, cos[:, :, None], sin[:, :, None], interleave)  # (b, s, heads, rope)
        k_pe = apply_rotary(k_pe, cos, sin, interleave)  # (b, s, rope): one key shared by all heads
        c_kv = c_kv.to(q.dtype)  # the norm's float32 weight may have promoted it

        if cache is None or cache.length == 0:
            # Prefill: attend within the chunk from its own fresh latents (the cache is only written).
            out = self._attend_decompressed(q_nope, q_pe, c_kv, k_pe, past=0, prefill=True)
            if cache is None and use_cache:
                cache = self.new_cache(bsz, capacity=max(64, seq), dtype=c_kv.dtype, device=x.device)
            if cache is not None:
                cache.append(c_kv, k_pe)
                cache.trim()
        else:
            past = cache.length
            cache.append(c_kv, k_pe)
            if decompress:
                cached_c, cached_pe = cache.tensors()
                out = self._attend_decompressed(q_nope, q_pe, cached_c, cached_pe, past=past)
            else:
                out = self._attend_absorbed(q_nope, q_pe, cache.latents(), past=past)
            cache.trim()
        return self.o_proj(out), cache

    def _attend_decompressed(
        self,
        q_nope: torch.Tensor,
        q_pe: torch.Tensor,
        c_kv: torch.Tensor,
        k_pe: torch.Tensor,
        *,
        past: int,
        prefill: bool = False,
    ) -> torch.Tensor:
        """Rebuild per-head K/V from latents (the MHA-like formulation): prefill, and the benchmark's
        baseline decode. Returns (batch, seq, heads * v_head_dim)."""
        bsz, seq, heads, _ = q_nope.shape
        keys = c_kv.shape[1]
        kv = self.kv_b_proj(c_kv).view(bsz, keys, heads, self.qk_nope_head_dim + self.v_head_dim)
        k_nope, v = kv.split([self.qk_nope_head_dim, self.v_head_dim], dim=-1)
        k = torch.cat((k_nope, k_pe[:, :, None].expand(bsz, keys, heads, self.qk_rope_head_dim)), dim=-1)
        q = torch.cat((q_nope, q_pe), dim=-1).transpose(1, 2)  # (b, heads, seq, qk)
        k, v = k.transpose(1, 2), v.transpose(1, 2)
        window = self.config.sliding_window
        if prefill:
            # SDPA's fused CPU/GPU kernels keep training memory linear in sequence length.
            banded = window is not None and seq - 1 > window
            mask = attention_mask(seq, keys, 0, window, q.device) if banded else None
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=mask is None and seq > 1, scale=self.scaling
            )
        else:
            mask = attention_mask(seq, keys, past, window, q.device)
            out = dense_attention(q, k, v, mask, self.scaling)
        return out.transpose(1, 2).reshape(bsz, seq, heads * self.v_head_dim)

    def _attend_absorbed(
        self, q_nope: torch.Tensor, q_pe: torch.Tensor, latents: torch.Tensor, *, past: int
    ) -> torch.Tensor:
        """Decode with absorbed weights (DeepSeek-V2 appendix C).

        q·k_nope = q_nope·(W_UK c) = (W_UKᵀ q_nope)·c, so each head's query is mapped into the latent
        space once and scored against the cached ``[c_kv | k_pe]`` with one matmul per row, heads and
        new tokens folded into the matmul's rows (MQA over a single ``kv_lora_rank + rope`` wide "head").
        The attended latent is then mapped to values with W_UV. Nothing per-head is built per cached token.
        """
        bsz, seq, heads, _ = q_nope.shape
        w_uk, w_uv = self._absorbed_weights()
        q_lat = torch.einsum("bshd,hdr->bhsr", q_nope, w_uk)
        q_all = torch.cat((q_lat, q_pe.transpose(1, 2)), dim=-1).reshape(bsz, heads * seq, -1)
        mask = attention_mask(seq, latents.shape[1], past, self.config.sliding_window, q_all.device)
        if mask is not None:
            mask = mask.repeat(heads, 1)  # rows are (head, token)
        # Attend over the whole [c_kv | k_pe] rows and drop the rope columns after: a contiguous-row
        # operand is faster on CPU BLAS than the strided c_kv slice, for a few % more flops.
        out_lat = dense_attention(q_all, latents, latents, mask, self.scaling)[..., : self.kv_lora_rank]
        out = torch.einsum("bhsr,hvr->bshv", out_lat.view(bsz, heads, seq, self.kv_lora_rank), w_uv)
        return out.reshape(bsz, seq, heads * self.v_head_dim)
