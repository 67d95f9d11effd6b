"""The "Cooling Matters" air-vs-liquid experiment (TWIN.md "Published measurements")."""

import pytest

from facility.twin import calibrate, comparison_rows, format_comparison, published

KEYS = {"gpu_temp_c_min", "gpu_temp_c_max", "tflops_per_gpu", "node_power_kw", "tflops_per_gpu_per_node_kw"}


@pytest.fixture(scope="module")
def seed():
    return calibrate("seed")


@pytest.fixture(scope="module")
def physics():
    return calibrate("physics")


def test_shape_is_exact(seed):
    assert set(seed) == {"profile", "air", "liquid"}
    assert seed["profile"] == "seed"
    assert set(seed["air"]) == KEYS and set(seed["liquid"]) == KEYS


def test_published_values():
    p = published()
    assert p["air"] == {"gpu_temp_c_min": 54, "gpu_temp_c_max": 72, "tflops_per_gpu": 46, "node_power_kw": 8.16,
                        "tflops_per_gpu_per_node_kw": 5.6}
    assert p["liquid"] == {"gpu_temp_c_min": 41, "gpu_temp_c_max": 50, "tflops_per_gpu": 54, "node_power_kw": 6.99,
                           "tflops_per_gpu_per_node_kw": 7.7}
    p["air"]["node_power_kw"] = 0  # a copy: callers cannot corrupt the reference
    assert published()["air"]["node_power_kw"] == 8.16


def test_seed_every_value_within_10_percent(seed):
    for kind, key, model, ref, err in comparison_rows(seed):
        assert abs(err) <= 0.10, f"{kind}.{key}: model {model:.2f} vs published {ref:.2f}"


def test_seed_is_as_close_as_its_fit(seed):
    # TWIN.md: the seed profile lands within ~1.5 % (2 % here: the paper's 5.6 is its own rounding of 46/8.16).
    for kind, key, _model, _ref, err in comparison_rows(seed):
        assert abs(err) <= 0.02, f"{kind}.{key}: {err:+.1%}"


def test_physics_temperatures_and_node_power(physics):
    for kind, key, model, ref, err in comparison_rows(physics):
        if key.startswith("gpu_temp"):
            assert abs(err) <= 0.06, f"{kind}.{key}: {model:.1f} vs {ref}"
        if key == "node_power_kw":
            # The fitted P3 profile itself gives 7.41 kW liquid (+6.0..6.1 %): TWIN.md's "6 %" is rounded.
            assert abs(err) <= 0.065, f"{kind}.{key}: {model:.2f} vs {ref}"


def test_physics_throughput_gap_is_small(physics):
    # Leakage-driven physics cannot reproduce the paper's 15 % throughput gap; TWIN.md says ~3 %.
    gap = 1 - physics["air"]["tflops_per_gpu"] / physics["liquid"]["tflops_per_gpu"]
    assert 0.0 < gap < 0.05


def test_liquid_beats_air_in_both_profiles(seed, physics):
    for r in (seed, physics):
        assert r["liquid"]["gpu_temp_c_max"] < r["air"]["gpu_temp_c_min"] + 1
        assert r["liquid"]["tflops_per_gpu_per_node_kw"] > r["air"]["tflops_per_gpu_per_node_kw"]


def test_comparison_table_mentions_every_value(seed):
    text = format_comparison(seed)
    for key in KEYS:
        assert key in text


def test_unknown_profile():
    with pytest.raises(ValueError, match="unknown twin profile"):
        calibrate("nope")
