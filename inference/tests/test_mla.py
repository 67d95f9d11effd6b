"""MultiHeadLatentAttention against transformers' DeepseekV3Attention (eager), the reference the
DESIGN's MLA contract names, plus the cache's own guarantees."""

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from inference.mla import (
    LATENT_NORM_EPS,
    MLACache,
    MLAConfig,
    MultiHeadLatentAttention,
    softmax_scale,
)

transformers = pytest.importorskip("transformers")
from transformers import DeepseekV3Config  # noqa: E402
from transformers.modeling_utils import AttentionInterface  # noqa: E402
from transformers.models.deepseek_v3.modeling_deepseek_v3 import (  # noqa: E402
    DeepseekV3Attention,
    DeepseekV3RotaryEmbedding,
)


def _eager_full_precision(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """transformers' eager_attention_forward (no GQA here) with the softmax kept in the input dtype:
    the stock kernel computes it in float32 even for float64 inputs, which would cap the float64
    comparison at ~1e-7."""
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = torch.softmax(scores, dim=-1)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs


AttentionInterface.register("fusedc_eager_full_precision", _eager_full_precision)


def _full_precision_norm(norm):
    """DeepseekV3RMSNorm downcasts float64 to float32; same formula without the downcast."""

    def forward(x):
        return norm.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon))

    norm.forward = forward

HIDDEN, HEADS, RANK, NOPE, ROPE, V = 64, 4, 16, 8, 8, 8
YARN = {
    "rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 32,
    "mscale": 1.0, "mscale_all_dim": 1.0, "beta_fast": 32, "beta_slow": 1,
}
TOL = {torch.float64: {"atol": 1e-10, "rtol": 1e-9}, torch.float32: {"atol": 2e-5, "rtol": 1e-4}}


def make_pair(
    q_lora_rank=None, interleave=True, dtype=torch.float32, rope_parameters=None, rms_norm_eps=1e-6,
    window=None, seed=0,
):
    torch.manual_seed(seed)
    hf_config = DeepseekV3Config(
        hidden_size=HIDDEN, num_attention_heads=HEADS, num_key_value_heads=HEADS, kv_lora_rank=RANK,
        q_lora_rank=q_lora_rank, qk_nope_head_dim=NOPE, qk_rope_head_dim=ROPE, v_head_dim=V,
        rope_interleave=interleave, max_position_embeddings=128, rms_norm_eps=rms_norm_eps,
        rope_parameters=rope_parameters or {"rope_type": "default", "rope_theta": 10000.0},
    )
    hf_config._attn_implementation = "fusedc_eager_full_precision" if dtype == torch.float64 else "eager"
    ref = DeepseekV3Attention(hf_config, layer_idx=0)
    if dtype == torch.float64:
        for norm in (ref.kv_a_layernorm, ref.q_a_layernorm):
            if norm is not None:
                _full_precision_norm(norm)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith("layernorm.weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))  # non-trivial norm weights
            else:
                p.normal_(0, 0.15)
    config = MLAConfig.from_dict({**hf_config.to_dict(), "sliding_window": window})
    ours = MultiHeadLatentAttention(config)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref.to(dtype).eval()
    ours.to(dtype).eval()
    return ref, ours, hf_config


def reference(ref, hf_config, x, positions, window=None):
    """Full-sequence output of DeepseekV3Attention with a causal (optionally banded) additive mask."""
    bsz, seq, _ = x.shape
    cos, sin = DeepseekV3RotaryEmbedding(hf_config)(x, positions)
    q = torch.arange(seq)[:, None]
    k = torch.arange(seq)[None, :]
    allowed = k <= q
    if window is not None:
        allowed &= k >= q - window
    mask = torch.zeros(seq, seq, dtype=x.dtype).masked_fill(~allowed, torch.finfo(x.dtype).min)
    out, _ = ref(x, (cos, sin), mask[None, None].expand(bsz, 1, seq, seq))
    return out


def gappy_positions(bsz, seq, seed=1):
    """Per-row positions with gaps and different offsets (rows sample at different times)."""
    g = torch.Generator().manual_seed(seed)
    steps = torch.randint(1, 4, (bsz, seq), generator=g)
    return steps.cumsum(1) + torch.arange(bsz)[:, None] * 7


def inputs(dtype, bsz=3, seq=12, seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(bsz, seq, HIDDEN, generator=g, dtype=torch.float64).to(dtype)


VARIANTS = [
    pytest.param(q, i, d, id=f"qlora={q}-interleave={i}-{str(d)[6:]}")
    for q in (None, 12)
    for i in (True, False)
    for d in (torch.float32, torch.float64)
]


@pytest.mark.parametrize(("q_lora_rank", "interleave", "dtype"), VARIANTS)
def test_prefill_matches_reference(q_lora_rank, interleave, dtype):
    ref, ours, hf_config = make_pair(q_lora_rank, interleave, dtype)
    x, pos = inputs(dtype), gappy_positions(3, 12)
    with torch.no_grad():
        expected = reference(ref, hf_config, x, pos)
        out, cache = ours(x, pos)
    torch.testing.assert_close(out, expected, **TOL[dtype])
    assert cache.length == 12


@pytest.mark.parametrize(("q_lora_rank", "interleave", "dtype"), VARIANTS)
def test_token_by_token_decode_matches_reference(q_lora_rank, interleave, dtype):
    ref, ours, hf_config = make_pair(q_lora_rank, interleave, dtype)
    x, pos = inputs(dtype), gappy_positions(3, 12)
    with torch.no_grad():
        expected = reference(ref, hf_config, x, pos)
        out, cache = ours(x[:, :4], pos[:, :4])
        torch.testing.assert_close(out, expected[:, :4], **TOL[dtype])
        for t in range(4, 12):
            step, cache = ours(x[:, t : t + 1], pos[:, t : t + 1], cache)
            torch.testing.assert_close(step, expected[:, t : t + 1], **TOL[dtype])
    assert cache.length == 12


@pytest.mark.parametrize(("q_lora_rank", "interleave", "dtype"), VARIANTS)
def test_chunked_decode_matches_reference(q_lora_rank, interleave, dtype):
    ref, ours, hf_config = make_pair(q_lora_rank, interleave, dtype)
    x, pos = inputs(dtype, seq=14), gappy_positions(3, 14)
    with torch.no_grad():
        expected = reference(ref, hf_config, x, pos)
        cache, start = None, 0
        for size in (3, 1, 4, 2, 4):
            out, cache = ours(x[:, start : start + size], pos[:, start : start + size], cache)
            torch.testing.assert_close(out, expected[:, start : start + size], **TOL[dtype])
            start += size


def test_first_decode_from_explicit_empty_cache_is_prefill():
    ref, ours, hf_config = make_pair(dtype=torch.float64)
    x, pos = inputs(torch.float64), gappy_positions(3, 12)
    cache = ours.new_cache(3, capacity=2)  # also forces the buffer to grow
    with torch.no_grad():
        out, cache2 = ours(x, pos, cache)
    assert cache2 is cache and cache.length == 12 and cache.capacity >= 12
    torch.testing.assert_close(out, reference(ref, hf_config, x, pos), **TOL[torch.float64])


def test_positions_1d_broadcast_over_batch():
    ref, ours, hf_config = make_pair(dtype=torch.float64)
    x = inputs(torch.float64)
    pos = torch.tensor([0, 1, 2, 5, 6, 9, 10, 11, 15, 16, 17, 30])
    with torch.no_grad():
        out, _ = ours(x, pos)
        expected = reference(ref, hf_config, x, pos[None].expand(3, -1))
    torch.testing.assert_close(out, expected, **TOL[torch.float64])


@pytest.mark.parametrize("interleave", [True, False])
def test_yarn_rope_scaling_matches_reference(interleave):
    ref, ours, hf_config = make_pair(interleave=interleave, dtype=torch.float64, rope_parameters=YARN)
    assert ours.scaling == pytest.approx(ref.scaling)
    assert ours.scaling > (NOPE + ROPE) ** -0.5  # the mscale_all_dim correction is in
    x, pos = inputs(torch.float64), gappy_positions(3, 12) * 5  # beyond original_max_position_embeddings
    with torch.no_grad():
        expected = reference(ref, hf_config, x, pos)
        out, cache = ours(x[:, :6], pos[:, :6])
        step, _ = ours(x[:, 6:], pos[:, 6:], cache)
    torch.testing.assert_close(torch.cat((out, step), 1), expected, **TOL[torch.float64])


def test_latent_norms_use_reference_eps_not_rms_norm_eps():
    # DeepseekV3Attention builds its latent norms with eps 1e-6 regardless of rms_norm_eps.
    ref, ours, hf_config = make_pair(dtype=torch.float64, rms_norm_eps=0.5)
    assert ours.kv_a_layernorm.eps == LATENT_NORM_EPS == ref.kv_a_layernorm.variance_epsilon
    x, pos = inputs(torch.float64), gappy_positions(3, 12)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, pos)[0], reference(ref, hf_config, x, pos), **TOL[torch.float64])


@pytest.mark.parametrize("q_lora_rank", [None, 12])
def test_state_dict_loads_strictly_both_ways(q_lora_rank):
    ref, ours, _ = make_pair(q_lora_rank)
    assert set(ours.state_dict()) == set(ref.state_dict())
    fresh_ref = DeepseekV3Attention(ref.config, layer_idx=0)
    fresh_ref.load_state_dict(ours.state_dict(), strict=True)
    fresh = MultiHeadLatentAttention(ours.config)
    fresh.load_state_dict(ref.state_dict(), strict=True)
    for name, tensor in fresh_ref.state_dict().items():
        assert torch.equal(tensor, ours.state_dict()[name])


def test_bfloat16_is_finite_and_close():
    ref, ours, hf_config = make_pair(12, True, torch.bfloat16)
    x, pos = inputs(torch.bfloat16), gappy_positions(3, 12)
    with torch.no_grad():
        expected = reference(ref, hf_config, x, pos).float()
        out, cache = ours(x[:, :8], pos[:, :8])
        steps = [out]
        for t in range(8, 12):
            step, cache = ours(x[:, t : t + 1], pos[:, t : t + 1], cache)
            steps.append(step)
    got = torch.cat(steps, 1).float()
    assert torch.isfinite(got).all()
    assert cache.dtype == torch.bfloat16
    scale = expected.abs().mean()
    assert (got - expected).abs().max() < 0.1 * scale + 0.02
    assert (got - expected).abs().mean() < 0.02 * scale + 0.005


# -- the cache --------------------------------------------------------------------------------------


def test_cache_holds_only_latent_and_rope_key():
    _, ours, _ = make_pair(dtype=torch.float32)
    x, pos = inputs(torch.float32), gappy_positions(3, 12)
    with torch.no_grad():
        _, cache = ours(x, pos)
    c_kv, k_pe = cache.tensors()
    assert c_kv.shape == (3, 12, RANK)
    assert k_pe.shape == (3, 12, ROPE)
    assert cache.bytes_per_token == (RANK + ROPE) * 4
    assert cache.nbytes == 3 * 12 * (RANK + ROPE) * 4
    # DeepSeek-V2's shapes: 576 cached elements per token and layer, against 2*128*128 for MHA.
    v2 = MLAConfig(hidden_size=5120, num_attention_heads=128, kv_lora_rank=512, qk_rope_head_dim=64,
                   qk_nope_head_dim=128, v_head_dim=128, q_lora_rank=1536)
    assert v2.cache_elements_per_token == 576
    # The cache stores the normalised latent and the rotated key: recompute them independently.
    with torch.no_grad():
        kv = ours.kv_a_proj_with_mqa(x)
        latent = ours.kv_a_layernorm(kv[..., :RANK])
    torch.testing.assert_close(c_kv, latent)


def test_absorbed_decode_never_builds_per_head_keys_or_values():
    """kv_b_proj (the only way to per-head K/V) is never called in absorbed decode; the decompressing
    path calls it and agrees numerically."""
    _, ours, _ = make_pair(12, True, torch.float64)
    calls = []
    ours.kv_b_proj.register_forward_hook(lambda module, args, out: calls.append(args[0].shape))
    x, pos = inputs(torch.float64, seq=10), gappy_positions(3, 10)
    with torch.no_grad():
        _, cache = ours(x[:, :6], pos[:, :6])
        calls.clear()
        other = cache.select(range(3))
        absorbed, cache = ours(x[:, 6:], pos[:, 6:], cache)
        assert calls == []
        decompressed, other = ours(x[:, 6:], pos[:, 6:], other, decompress=True)
        assert calls == [torch.Size([3, 10, RANK])]
    torch.testing.assert_close(absorbed, decompressed, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(cache.latents(), other.latents())


@pytest.mark.parametrize("window", [1, 3, 5])
def test_sliding_window_prefill_decode_and_reference_agree(window):
    ref, ours, hf_config = make_pair(dtype=torch.float64, window=window)
    x, pos = inputs(torch.float64, seq=14), gappy_positions(3, 14)
    with torch.no_grad():
        expected = reference(ref, hf_config, x, pos, window=window)
        full, _ = ours(x, pos)
        torch.testing.assert_close(full, expected, **TOL[torch.float64])
        cache, start = None, 0
        for size in (4, 1, 1, 3, 1, 2, 2):
            out, cache = ours(x[:, start : start + size], pos[:, start : start + size], cache)
            torch.testing.assert_close(out, expected[:, start : start + size], **TOL[torch.float64])
            start += size
            assert cache.length == min(start, window)
            assert cache.capacity <= max(64, 2 * window + 4)


def test_window_mismatch_is_refused():
    _, ours, _ = make_pair()
    cache = MLACache(3, RANK, ROPE, window=4)
    with pytest.raises(ValueError, match="window"):
        ours(inputs(torch.float32), gappy_positions(3, 12), cache)


def test_batched_streams_equal_separate_streams():
    """Caches of single streams batch with cat, decode together, and split back unchanged."""
    _, ours, _ = make_pair(dtype=torch.float64)
    x, pos = inputs(torch.float64, bsz=4, seq=9), gappy_positions(4, 9)
    with torch.no_grad():
        singles = [ours(x[i : i + 1, :6], pos[i : i + 1, :6])[1] for i in range(4)]
        batch = MLACache.cat(singles, capacity=16)
        batched, batch = ours(x[:, 6:], pos[:, 6:], batch)
        for i, single in enumerate(singles):
            out, single = ours(x[i : i + 1, 6:], pos[i : i + 1, 6:], single)
            torch.testing.assert_close(batched[i : i + 1], out, atol=1e-12, rtol=1e-10)
            torch.testing.assert_close(batch.split()[i].latents(), single.latents())
        # A subset steps on its own (e.g. only these streams got a sample) and is written back.
        rows = [3, 1]
        part = batch.select(rows)
        _, part = ours(x[rows, -1:], pos[rows, -1:] + 1, part)
        with pytest.raises(ValueError, match="equal lengths"):
            batch.scatter_(rows, part)  # 9 tokens against 10
        _, batch = ours(x[:, -1:] * 2, pos[:, -1:] + 1, batch)
        others = batch.select([0, 2]).latents()
        batch.scatter_(rows, part)
        assert torch.equal(batch.select(rows).latents(), part.latents())
        assert torch.equal(batch.select([0, 2]).latents(), others)


def test_cat_refuses_unequal_lengths():
    a = MLACache.from_tensors(torch.zeros(1, 3, RANK), torch.zeros(1, 3, ROPE))
    b = MLACache.from_tensors(torch.zeros(1, 4, RANK), torch.zeros(1, 4, ROPE))
    with pytest.raises(ValueError, match="equal lengths"):
        MLACache.cat([a, b])


def test_cache_growth_compaction_and_truncate():
    cache = MLACache(2, 3, 2, capacity=4, window=5)
    rows = []
    for t in range(23):
        c = torch.full((2, 1, 3), float(t))
        cache.append(c, torch.full((2, 1, 2), -float(t)))
        cache.trim()
        rows.append(t)
        c_kv, k_pe = cache.tensors()
        assert c_kv[0, :, 0].tolist() == [float(v) for v in rows[-5:]]
        assert k_pe[1, :, 1].tolist() == [-float(v) for v in rows[-5:]]
    assert cache.capacity == 10  # 2 * window: compaction every ~window steps, no unbounded growth
    cache.truncate(2)
    assert cache.tensors()[0][0, :, 0].tolist() == [18.0, 19.0]
    moved = cache.to(dtype=torch.float64)
    assert moved.dtype == torch.float64 and moved.length == 2 and moved.window == 5


@settings(max_examples=15, deadline=None)
@given(sizes=st.lists(st.integers(1, 5), min_size=1, max_size=6), window=st.sampled_from([None, 2, 6]))
def test_any_chunking_equals_one_prefill(sizes, window):
    _, ours, _ = make_pair(dtype=torch.float64, window=window)
    total = sum(sizes)
    x, pos = inputs(torch.float64, bsz=2, seq=total), gappy_positions(2, total)
    with torch.no_grad():
        full, _ = ours(x, pos)
        cache, start, outs = None, 0, []
        for size in sizes:
            out, cache = ours(x[:, start : start + size], pos[:, start : start + size], cache)
            outs.append(out)
            start += size
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-11, rtol=1e-9)


def test_config_json_round_trip_and_deepseek_config_json():
    config = MLAConfig(q_lora_rank=32, rope_scaling={**YARN}, sliding_window=128)
    again = MLAConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert again.rope_scaling["rope_type"] == "yarn"
    # A DeepSeek-V3 config.json (transformers 4 style: rope_scaling with "type") loads too.
    v3 = {
        "hidden_size": 7168, "num_attention_heads": 128, "q_lora_rank": 1536, "kv_lora_rank": 512,
        "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128, "rope_theta": 10000,
        "rms_norm_eps": 1e-6, "max_position_embeddings": 163840, "vocab_size": 129280,
        "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
                         "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
    }
    cfg = MLAConfig.from_dict(v3)
    assert cfg.extra == {"vocab_size": 129280}
    assert cfg.rope_scaling["rope_type"] == "yarn"
    mscale = 0.1 * math.log(40) + 1
    assert softmax_scale(cfg) == pytest.approx(192**-0.5 * mscale**2)
    with pytest.raises(ValueError, match="unsupported"):
        MLAConfig(rope_scaling={"rope_type": "dynamic", "factor": 2.0})


def test_training_path_backpropagates_without_cache():
    _, ours, _ = make_pair()
    ours.train()
    x, pos = inputs(torch.float32), gappy_positions(3, 12)
    out, cache = ours(x, pos, use_cache=False)
    assert cache is None
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in ours.parameters())
