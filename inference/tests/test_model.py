"""The telemetry forecaster: shapes, causality, prefill-then-decode, budgets, and that it can learn."""

import json
import math

import pytest
import torch

from inference.mla import MLACache
from inference.model import (
    FEATURE_NAMES,
    FEATURES,
    TARGETS,
    ForecasterConfig,
    MHACache,
    TelemetryForecaster,
    cache_bytes_per_token,
    cat_stream_caches,
    count_parameters,
    encode_features,
    forecast_loss,
    model_summary,
    normalise_targets,
    predict,
    select_stream_caches,
)

ATTENTION = ["mla", "mha"]


def synthetic(bsz=2, seq=24, seed=0):
    """Plausible physical telemetry with a few missing values, per-row irregular positions."""
    g = torch.Generator().manual_seed(seed)
    values = torch.stack(
        [f.offset + 0.5 * f.scale * torch.randn(bsz, seq, generator=g) for f in FEATURES], dim=-1
    )
    values[..., FEATURE_NAMES.index("sample_gap_seconds")] = torch.randint(1, 4, (bsz, seq), generator=g).float()
    values[0, :, FEATURE_NAMES.index("coolant_flow_liters_per_minute")] = float("nan")  # an air-cooled node
    values[1, 3, FEATURE_NAMES.index("power_watts")] = float("nan")  # a dropped sample
    positions = values[..., FEATURE_NAMES.index("sample_gap_seconds")].long().cumsum(1)
    return values.double(), positions


def build(attention, **kwargs):
    torch.manual_seed(0)
    model = TelemetryForecaster(ForecasterConfig(attention=attention, **kwargs)).double().eval()
    with torch.no_grad():  # the quantile head starts at zero (persistence); give it something to say
        model.quantile_head.weight.normal_(0, 0.1)
    return model


@pytest.mark.parametrize("attention", ATTENTION)
def test_shapes_and_monotone_quantiles(attention):
    model = build(attention)
    x, pos = synthetic()
    out, cache = model(x, pos)
    assert out["quantiles"].shape == (2, 24, 3, 3, 3)
    assert out["throttle_logits"].shape == (2, 24, 3)
    assert torch.isfinite(out["quantiles"]).all()
    assert (out["quantiles"].diff(dim=-1) >= 0).all()
    assert len(cache) == 3 and all(c.length == 24 for c in cache)
    assert isinstance(cache[0], MLACache if attention == "mla" else MHACache)


@pytest.mark.parametrize("attention", ATTENTION)
def test_causal(attention):
    model = build(attention)
    x, pos = synthetic()
    changed = x.clone()
    changed[:, 15:] += 5.0
    a, _ = model(x, pos, use_cache=False)
    b, _ = model(changed, pos, use_cache=False)
    torch.testing.assert_close(a["quantiles"][:, :15], b["quantiles"][:, :15], atol=1e-12, rtol=0)
    assert not torch.allclose(a["quantiles"][:, 15:], b["quantiles"][:, 15:])


@pytest.mark.parametrize("attention", ATTENTION)
@pytest.mark.parametrize("window", [None, 6])
def test_prefill_then_decode_equals_full_forward(attention, window):
    model = build(attention, sliding_window=window)
    x, pos = synthetic(seq=20)
    with torch.no_grad():
        full, _ = model(x, pos)
        out, cache = model(x[:, :12], pos[:, :12])
        steps = [out]
        for t in range(12, 20):
            step, cache = model(x[:, t : t + 1], pos[:, t : t + 1], cache)
            steps.append(step)
    for key in full:
        torch.testing.assert_close(torch.cat([s[key] for s in steps], 1), full[key], atol=1e-10, rtol=1e-9)
    assert all(c.length == (20 if window is None else window) for c in cache)


def test_decompressing_decode_agrees_for_the_whole_model():
    model = build("mla")
    x, pos = synthetic(seq=10)
    with torch.no_grad():
        _, cache = model(x[:, :8], pos[:, :8])
        other = select_stream_caches(cache, [0, 1])
        a, _ = model(x[:, 8:], pos[:, 8:], cache)
        b, _ = model(x[:, 8:], pos[:, 8:], other, decompress=True)
    torch.testing.assert_close(a["quantiles"], b["quantiles"], atol=1e-11, rtol=1e-9)


def test_streams_batch_and_unbatch():
    model = build("mla")
    x, pos = synthetic(bsz=3, seq=9)
    with torch.no_grad():
        per_stream = [model(x[i : i + 1, :8], pos[i : i + 1, :8])[1] for i in range(3)]
        batched = cat_stream_caches(per_stream)
        out, batched = model(x[:, 8:], pos[:, 8:], batched)
        alone, _ = model(x[1:2, 8:], pos[1:2, 8:], per_stream[1])
    torch.testing.assert_close(out["quantiles"][1:2], alone["quantiles"], atol=1e-12, rtol=1e-10)


def test_parameter_budgets_match_within_five_percent():
    mla, mha = ForecasterConfig(attention="mla"), ForecasterConfig(attention="mha")
    n_mla = count_parameters(TelemetryForecaster(mla))
    n_mha = count_parameters(TelemetryForecaster(mha))
    assert abs(n_mha - n_mla) / n_mla <= 0.05
    attn_mla = model_summary(mla)["attention_parameters_per_layer"]
    attn_mha = model_summary(mha)["attention_parameters_per_layer"]
    assert abs(attn_mha - attn_mla) / attn_mla <= 0.05
    assert attn_mla == mla.mla_attention_parameters()


def test_mla_cache_is_at_most_an_eighth_of_mha():
    mla = cache_bytes_per_token(ForecasterConfig(attention="mla"))
    mha = cache_bytes_per_token(ForecasterConfig(attention="mha"))
    assert mla["per_layer"] * 8 <= mha["per_layer"]
    # And the real caches agree with the formula.
    for attention, expected in (("mla", mla), ("mha", mha)):
        model = build(attention)
        x, pos = synthetic(seq=5)
        _, cache = model(x, pos)
        assert cache[0].bytes_per_token == expected["per_layer"] * 2  # float64 here, float32 in the formula


def test_config_json_round_trip():
    config = ForecasterConfig(attention="mha", horizons_s=(5, 30), sliding_window=512, q_lora_rank=24)
    again = ForecasterConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    with pytest.raises(ValueError, match="feature"):
        ForecasterConfig(features=("gpu_temperature_celsius",))
    scaled = ForecasterConfig(horizons_s=(5, 30), delta_scales=((0.2, 1.0, 5.0), (1.0, 3.0, 20.0)))
    assert ForecasterConfig.from_dict(json.loads(json.dumps(scaled.to_dict()))) == scaled
    with pytest.raises(ValueError, match=r"\(horizons, targets\)"):
        ForecasterConfig(horizons_s=(5, 30), delta_scales=((1.0, 1.0, 1.0),))
    with pytest.raises(ValueError, match="positive"):
        ForecasterConfig(horizons_s=(5,), delta_scales=((1.0, 0.0, 1.0),))


def test_delta_scales_set_the_unit_of_the_predicted_change():
    """The head predicts changes in each (horizon, target)'s delta scale: the same head output moves a
    forecast by twice as much where the scale is twice as big, and the loss weighs errors in those units."""
    base = ForecasterConfig(horizons_s=(10, 60), num_layers=1)
    scaled = ForecasterConfig(horizons_s=(10, 60), num_layers=1, delta_scales=((0.5, 2.0, 10.0), (1.0, 4.0, 20.0)))
    torch.manual_seed(0)
    a, b = TelemetryForecaster(base), TelemetryForecaster(scaled)
    b.load_state_dict(a.state_dict())  # the scales are derived from the config, not stored weights
    torch.nn.init.normal_(a.quantile_head.bias)
    b.quantile_head.bias.data.copy_(a.quantile_head.bias)
    x = torch.randn(1, 4, len(FEATURE_NAMES)) + 40
    with torch.no_grad():
        qa = a(x, torch.arange(4), use_cache=False)[0]["quantiles"]
        qb = b(x, torch.arange(4), use_cache=False)[0]["quantiles"]
    last = encode_features(x)[..., [FEATURE_NAMES.index(t) for t in TARGETS]][:, :, None, :, None]
    ratio = (qb - last) / (qa - last)
    expected = scaled.normalised_delta_scales()[None, None, :, :, None].expand_as(ratio)
    torch.testing.assert_close(ratio, expected, rtol=1e-4, atol=1e-4)


def test_encode_features_flags_missing():
    x, _ = synthetic()
    enc = encode_features(x)
    n = len(FEATURES)
    assert enc.shape[-1] == 2 * n and torch.isfinite(enc).all()
    flow = FEATURE_NAMES.index("coolant_flow_liters_per_minute")
    assert (enc[0, :, n + flow] == 1).all() and (enc[0, :, flow] == 0).all()
    assert (enc[1, :, n + flow] == 0).all()


def test_predict_names_horizons_targets_quantiles():
    model = build("mla")
    x, pos = synthetic()
    result, cache = predict(model, x[:, :20], pos[:, :20])
    assert list(result) == ["10s", "60s", "300s"]
    entry = result["60s"]
    assert set(entry) == {"gpu_temperature_celsius", "sm_clock_megahertz", "power_watts", "throttle_probability"}
    temp = entry["gpu_temperature_celsius"]
    assert list(temp) == ["p10", "p50", "p90"] and temp["p50"].shape == (2,)
    assert (temp["p10"] <= temp["p50"]).all() and (temp["p50"] <= temp["p90"]).all()
    assert ((entry["throttle_probability"] >= 0) & (entry["throttle_probability"] <= 1)).all()
    # The median is in physical units near the current temperature (deltas from the last value).
    last = x[:, 19, FEATURE_NAMES.index("gpu_temperature_celsius")]
    assert (temp["p50"] - last).abs().max() < 60
    step, cache = predict(model, x[:, 20:21], pos[:, 20:21], cache)
    assert step["10s"]["power_watts"]["p90"].shape == (2,) and cache[0].length == 21


def test_loss_ignores_unknown_targets():
    model = build("mla")
    x, pos = synthetic()
    out, _ = model(x, pos, use_cache=False)
    targets = torch.full((2, 24, 3, 3), float("nan"), dtype=torch.float64)
    targets[:, :10] = 60.0
    throttled = torch.full((2, 24, 3), float("nan"), dtype=torch.float64)
    parts = forecast_loss(out, targets, throttled, model.config)
    assert torch.isfinite(parts["loss"]) and parts["throttle"] == 0
    assert normalise_targets(torch.tensor([60.0, 1500.0, 400.0])).abs().max() == 0


def test_loss_decreases_on_a_tiny_synthetic_sequence():
    """A thermal toy: temperature relaxes towards a level set by power and coolant; the model must
    learn it beyond persistence within a few dozen steps."""
    torch.manual_seed(0)
    bsz, seq, horizons = 8, 48, (10.0, 60.0, 300.0)
    t = torch.arange(seq, dtype=torch.float32)
    power = 400 + 200 * torch.sin(t[None] / 6 + torch.rand(bsz, 1) * 6)
    supply = 25 + 10 * torch.rand(bsz, 1).expand(bsz, seq)
    temp = supply + 0.06 * power
    x = torch.stack([f.offset + 0 * t[None].expand(bsz, seq) for f in FEATURES], dim=-1)
    x[..., FEATURE_NAMES.index("gpu_temperature_celsius")] = temp
    x[..., FEATURE_NAMES.index("power_watts")] = power
    x[..., FEATURE_NAMES.index("coolant_supply_temperature_celsius")] = supply
    x[..., FEATURE_NAMES.index("sample_gap_seconds")] = 10.0
    pos = torch.arange(seq)
    # Targets one step (10 s) ahead for every horizon; the last step has none.
    future = torch.stack([temp, 1500 + 0 * temp, power], -1).roll(-1, dims=1)
    targets = future[:, :, None, :].expand(bsz, seq, len(horizons), 3).clone()
    targets[:, -1] = float("nan")
    throttled = (future[..., 0] > 55).float()[:, :, None].expand(bsz, seq, len(horizons)).clone()
    throttled[:, -1] = float("nan")

    model = TelemetryForecaster(ForecasterConfig(horizons_s=horizons))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        out, _ = model(x, pos, use_cache=False)
        loss = forecast_loss(out, targets, throttled, model.config)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert math.isfinite(losses[-1])
    assert losses[-1] < 0.5 * losses[0], losses
