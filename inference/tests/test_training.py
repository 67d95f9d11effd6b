"""Dataset alignment and the time split, checkpoints (round trip, checksum and config refusals), and a tiny
training run that beats persistence. No database: rows are built here or come straight from the twin."""

import json

import numpy as np
import pytest
import torch

from facility.twin import synthetic_facility
from inference.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from inference.dataset import (
    INLET_OFFSET_CONTAINED_K,
    LOAD_DROP_OVERDUE_S,
    MAX_LOAD_DROP_AGE_S,
    ROW_COLUMNS,
    CoolingMap,
    Frames,
    LoadDrops,
    PointData,
    assemble_rows,
    load_drop_features,
    twin_frames,
)
from inference.model import FEATURE_NAMES, TARGETS, TelemetryForecaster
from inference.training import (
    FitSettings,
    conformal_interval_adjust,
    evaluate,
    fit,
    make_config,
    measure_delta_scales,
    prepare,
)

F = {name: i for i, name in enumerate(FEATURE_NAMES)}
SMALL = {"air_racks": 1, "air_nodes_per_rack": 1, "liquid_racks": 1, "liquid_nodes_per_rack": 2, "crahs": 2,
         "cdus": 1}


def grid_rows(gpus=2, steps=40, interval=5.0, t0=1_000_000.0, drop=()):
    """Rows (gpu-major) whose GPU temperature encodes (gpu, step): 100 * gpu + step."""
    gpu, times, cols = [], [], []
    for g in range(gpus):
        for s in range(steps):
            if (g, s) in drop:
                continue
            row = np.full(len(ROW_COLUMNS), np.nan)
            row[ROW_COLUMNS.index("gpu_temp")] = 100 * g + s
            row[ROW_COLUMNS.index("clocks_event_reasons")] = 0x20 if s % 10 == 0 else 0x1
            gpu.append(g)
            times.append(t0 + s * interval + 0.3)  # jitter within a step rounds onto the grid
            cols.append(row)
    return np.array(gpu), np.array(times), np.array(cols)


def frames_from(gpu, times, cols, gpus=2, **kw):
    cmap = CoolingMap([f"GPU-{g}" for g in range(gpus)], [], {n: np.zeros((gpus, 0)) for n in (
        "inlet_air_temperature_celsius", "coolant_supply_temperature_celsius", "coolant_flow_liters_per_minute",
        "supply_temperature_setpoint_celsius", "fan_speed_setpoint_ratio", "pump_speed_setpoint_ratio")})
    feats, thr = assemble_rows(cmap, gpu, times, cols, PointData.empty(0))
    return Frames.from_rows(cmap.uuids, gpu, times, feats, thr, **kw)


def test_rows_align_on_the_grid_and_targets_shift_by_horizon():
    gpu, times, cols = grid_rows(drop={(1, 7)})
    frames = frames_from(gpu, times, cols)
    assert frames.interval_s == 5.0 and frames.steps == 40
    temp = frames.features[..., F["gpu_temperature_celsius"]]
    assert temp[0, 12] == 12 and temp[1, 3] == 103
    assert not frames.present[1, 7] and np.isnan(temp[1, 7])
    # Gaps: the sample after a missing one says so.
    gap = frames.features[..., F["sample_gap_seconds"]]
    assert gap[1, 8] == pytest.approx(10.0) and gap[0, 8] == pytest.approx(5.0) and np.isnan(gap[0, 0])
    y, thr = frames.targets((10.0, 60.0), TARGETS)
    t = TARGETS.index("gpu_temperature_celsius")
    assert y[0, 5, 0, t] == 7 and y[0, 5, 1, t] == 17  # 10 s = 2 steps, 60 s = 12 steps
    assert np.isnan(y[0, 30, 1, t])  # 30 + 12 is past the end
    assert np.isnan(y[1, 5, 0, t])  # the target sample (1, 7) is missing
    assert thr[0, 8, 0] == 1.0 and thr[0, 9, 0] == 0.0  # thermal bit at step 10
    with pytest.raises(ValueError, match="multiples"):
        frames.targets((7.0,))


def test_load_drop_features_follow_the_rhythm_and_carry_across_calls():
    # One GPU checkpointing every 60 s (utilisation 1 -> 0.15 for 10 s), read every 5 s, one reading lost.
    times = np.arange(0.0, 300.0, 5.0)
    util = np.where(times % 60 < 10, 0.15, 1.0)
    util[times == 125.0] = np.nan
    gpu = np.zeros(len(times), dtype=np.int64)
    feats = load_drop_features(gpu, times, util)
    since, until = feats[:, 0], feats[:, 1]
    # No drop is seen at t = 0 (no earlier reading), the first at 60 s; the next is expected once two are seen.
    assert np.isnan(since[times < 60]).all() and np.isnan(until[times < 120]).all()
    assert since[times == 60.0] == 0 and since[times == 95.0] == 35
    assert since[times == 175.0] == 55 and since[times == 180.0] == 0
    assert until[times == 120.0] == 60 and until[times == 175.0] == 5 and until[times == 180.0] == 60
    # A drop that does not come reads as overdue, by at most LOAD_DROP_OVERDUE_S.
    overdue = load_drop_features(np.zeros(3, dtype=np.int64), np.array([0.0, 60.0, 900.0]),
                                 np.array([1.0, 0.1, 0.1]), {0: LoadDrops(np.nan, 0.0, -60.0)})
    assert overdue[1, 1] == 60 and overdue[2, 1] == -LOAD_DROP_OVERDUE_S
    # Fed a sample at a time with carried state (the serving worker), the features are the same.
    memory = {}
    one_by_one = np.vstack([load_drop_features(gpu[i:i + 1], times[i:i + 1], util[i:i + 1], memory)
                            for i in range(len(times))])
    np.testing.assert_array_equal(one_by_one, feats)
    # A rhythm that stopped long ago says nothing.
    late = load_drop_features(np.zeros(1, dtype=np.int64), np.array([300.0 + MAX_LOAD_DROP_AGE_S]),
                              np.array([1.0]), memory)
    assert np.isnan(late).all()
    # Gradual changes (inference load) are not drops.
    ramp = load_drop_features(gpu, times, np.linspace(1.0, 0.0, len(times)))
    assert np.isnan(ramp).all()


def test_split_holds_out_the_end_and_training_targets_stay_inside():
    frames = frames_from(*grid_rows(steps=100))
    (a, b), (c, d), (e, f) = frames.split((0.7, 0.1, 0.2))
    assert (a, b, c, d, e, f) == (0, 70, 70, 80, 80, 100)
    w = frames.windows(a, b, 20, stride=10, horizons_s=(10.0, 60.0))
    t = TARGETS.index("gpu_temperature_celsius")
    steps = w.features[..., F["gpu_temperature_celsius"]] % 100
    assert steps.max() < b
    target_steps = w.targets[..., t] % 100
    assert np.nanmax(target_steps) < b  # no training target from the held-out block
    assert len(w) == 2 * 6 and w.positions[0, 0] == 0 and w.positions[0, -1] == 19
    test = frames.windows(e, f, 20, horizons_s=(10.0, 60.0), warmup=5)
    assert (test.features[..., F["gpu_temperature_celsius"]] % 100).min() >= e
    assert not test.scored[:, :5].any() and test.scored[:, 5:].all()


def test_cooling_inputs_come_from_the_racks_units():
    fac = synthetic_facility(**SMALL)
    cmap = CoolingMap.from_facility(fac)
    air_gpu = next(i for i, u in enumerate(cmap.uuids) if cmap.racks[u].startswith("a"))
    liquid_gpu = next(i for i, u in enumerate(cmap.uuids) if not cmap.racks[u].startswith("a"))
    series = {key: i for i, key in enumerate(cmap.series)}
    values = {("crah-a1", "", "supply_air_temperature_celsius"): 18.0,
              ("crah-a2", "", "supply_air_temperature_celsius"): 20.0,
              ("cdu-b1", "secondary", "supply_water_temperature_celsius"): 30.0,
              ("cdu-b1", "secondary", "flow_liters_per_minute"): 24.0,
              ("cdu-b1", "", "secondary_supply_temperature_setpoint_celsius"): 30.0}
    times = [np.array([0.0])] * len(cmap.series)
    vals = [np.array([values.get(key, np.nan)]) for key in cmap.series]
    points = PointData(list(times), vals)
    rows = np.full((2, len(ROW_COLUMNS)), np.nan)
    feats, _ = assemble_rows(cmap, np.array([air_gpu, liquid_gpu]), np.array([5.0, 5.0]), rows, points)
    air_units = cmap.units_of_rack[cmap.racks[cmap.uuids[air_gpu]]]
    expected = np.mean([values[(u, "", "supply_air_temperature_celsius")] for u in air_units
                        if (u, "", "supply_air_temperature_celsius") in values])
    assert feats[0, F["inlet_air_temperature_celsius"]] == pytest.approx(expected + INLET_OFFSET_CONTAINED_K)
    assert np.isnan(feats[0, F["coolant_supply_temperature_celsius"]])
    assert feats[1, F["coolant_supply_temperature_celsius"]] == pytest.approx(30.0)
    assert feats[1, F["coolant_flow_liters_per_minute"]] == pytest.approx(24.0 / 2)  # CDU flow over its 2 nodes
    assert feats[1, F["supply_temperature_setpoint_celsius"]] == pytest.approx(30.0)  # the CDU's, not a CRAH's
    assert ("cdu-b1", "secondary", "flow_liters_per_minute") in series
    # A reading older than the age limit is not used.
    stale, _ = assemble_rows(cmap, np.array([liquid_gpu]), np.array([1000.0]), rows[:1], points)
    assert np.isnan(stale[0, F["coolant_supply_temperature_celsius"]])


def test_twin_frames_report_every_gpu_each_scrape():
    frames = twin_frames(synthetic_facility(**SMALL), hours=0.05, interval_s=5, warmup_s=60, sensors=False)
    assert frames.steps == 36 and frames.present.all()
    assert np.isfinite(frames.features[..., F["gpu_temperature_celsius"]]).all()


# --------------------------------------------------------------------------------------------------
# Checkpoints


def tiny_model(**overrides):
    torch.manual_seed(0)
    cfg = make_config(5.0, window=16, num_layers=1, hidden_size=16, intermediate_size=32, num_attention_heads=2,
                      **overrides)
    return TelemetryForecaster(cfg)


def test_checkpoint_round_trip(tmp_path):
    model = tiny_model()
    saved = save_checkpoint(model, tmp_path, "v1")
    loaded = load_checkpoint(saved.weights, expected_sha256=saved.sha256, expected_config=model.config.to_dict())
    x = torch.randn(2, 10, len(FEATURE_NAMES)) * 0.1 + 40
    with torch.no_grad():
        a, _ = model(x, torch.arange(10), use_cache=False)
        b, _ = loaded(x, torch.arange(10), use_cache=False)
    torch.testing.assert_close(a["quantiles"], b["quantiles"])
    meta = json.loads(saved.config.read_text())
    assert meta["features"] == list(FEATURE_NAMES) and meta["sha256"] == saved.sha256


def test_checkpoint_with_another_checksum_is_refused(tmp_path):
    saved = save_checkpoint(tiny_model(), tmp_path, "v1")
    data = bytearray(saved.weights.read_bytes())
    data[-1] ^= 0xFF
    saved.weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(saved.weights, expected_sha256=saved.sha256)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(saved.weights)  # against the JSON's own record


def test_checkpoint_for_another_config_is_refused(tmp_path):
    saved = save_checkpoint(tiny_model(), tmp_path, "v1")
    meta = json.loads(saved.config.read_text())
    other = dict(meta, features=[*meta["features"][:-1], "inlet_humidity_ratio"])
    saved.config.write_text(json.dumps(other))
    with pytest.raises(CheckpointError, match=r"another feature list.*missing.*seconds_until_expected_load_drop"):
        load_checkpoint(saved.weights)
    shapes = dict(meta, config=dict(meta["config"], hidden_size=32))
    saved.config.write_text(json.dumps(shapes))
    with pytest.raises(CheckpointError, match="do not fit the config"):
        load_checkpoint(saved.weights)
    saved.config.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="sliding_window"):
        load_checkpoint(saved.weights, expected_config=dict(meta["config"], sliding_window=4))


# --------------------------------------------------------------------------------------------------
# Training


def test_tiny_training_run_beats_persistence():
    """Training hall, checkpoint dips every 5 min: after a dip starts or ends, the model knows where the
    temperature is heading and persistence does not."""
    frames = twin_frames(synthetic_facility(**SMALL), hours=0.6, interval_s=5, workload="training",
                         checkpoint_interval_s=300, excite_every_s=None, seed=3, warmup_s=300)
    settings = FitSettings(epochs=10, window=48, stride=12, warmup=12, batch_size=16, lr=5e-3, patience=5,
                           threads=1, progress=False, split=(0.6, 0.1, 0.3))
    config = make_config(frames.interval_s, window=settings.window, num_layers=2, hidden_size=32,
                         intermediate_size=64, num_attention_heads=4)
    train, val, test = prepare(frames, settings, config)
    result = fit(config, train, val, settings)
    assert [row["epoch"] for row in result.curves] == list(range(1, len(result.curves) + 1))
    assert result.curves[-1]["train_loss"] < result.curves[0]["train_loss"]
    metrics = evaluate(result.model, test)
    m = metrics["horizons"]["60s"]["gpu_temperature_celsius"]
    assert m["n"] > 100
    assert m["mae"] < 0.8 * m["persistence_mae"], m
    assert 0.3 < m["coverage_p10_p90"] <= 1.0


def test_fit_measures_delta_scales_and_the_checkpoint_keeps_them(tmp_path):
    """The typical change per (horizon, target) is measured on the training windows: clocks that sit at
    their maximum barely move in 10 s, temperatures move more over 60 s than over 10 s."""
    frames = twin_frames(synthetic_facility(**SMALL), hours=0.15, interval_s=5, seed=1, warmup_s=60)
    settings = FitSettings(epochs=1, window=24, stride=24, batch_size=8, threads=1, progress=False)
    config = make_config(5.0, window=24, num_layers=1, hidden_size=16, intermediate_size=32, num_attention_heads=2)
    train, val, _ = prepare(frames, settings, config)
    scales = np.array(measure_delta_scales(train, config))  # (horizons, targets)
    temp = TARGETS.index("gpu_temperature_celsius")
    assert scales.shape == (3, len(TARGETS)) and (scales > 0).all()
    assert scales[1, temp] > scales[0, temp]
    current = train.features[..., F["gpu_temperature_celsius"]]
    expected = np.nanmean(np.abs(train.targets[:, :, 0, temp] - current))
    assert scales[0, temp] == pytest.approx(expected, rel=1e-5)
    result = fit(config, train, val, settings)
    assert result.model.config.delta_scales == tuple(tuple(row) for row in scales.tolist())
    saved = save_checkpoint(result.model, tmp_path, "scaled")
    loaded = load_checkpoint(saved.weights, expected_config=result.model.config.to_dict())
    assert loaded.config.delta_scales == result.model.config.delta_scales
    torch.testing.assert_close(loaded.delta_scale, result.model.delta_scale)


def test_fit_calibrates_the_bands_on_the_validation_block(tmp_path):
    """Split-conformal: after fit, the p10-p90 band covers at least 80 % of the validation outcomes for every
    horizon and target (it did not as trained), and the checkpoint carries the widening."""
    frames = twin_frames(synthetic_facility(**SMALL), hours=0.6, interval_s=5, seed=2, warmup_s=60)
    settings = FitSettings(epochs=1, window=24, stride=12, warmup=6, batch_size=8, threads=1, progress=False,
                           split=(0.5, 0.3, 0.2), calibrate_intervals=False)
    config = make_config(5.0, window=24, num_layers=1, hidden_size=16, intermediate_size=32, num_attention_heads=2)
    train, val, _ = prepare(frames, settings, config)
    raw = fit(config, train, val, settings).model
    assert raw.config.interval_adjust is None
    before = evaluate(raw, val)["horizons"]
    adjust = conformal_interval_adjust(raw, val)
    raw.set_interval_adjust(adjust)
    after = evaluate(raw, val)["horizons"]
    for h in ("10s", "60s", "300s"):
        for t in TARGETS:
            assert after[h][t]["n"] > 300
            assert after[h][t]["coverage_p10_p90"] >= 0.79, (h, t, before[h][t], after[h][t])
            assert after[h][t]["mae"] == pytest.approx(before[h][t]["mae"])  # the median is untouched
    assert any(before[h][t]["coverage_p10_p90"] < 0.79 for h in before for t in TARGETS)
    saved = save_checkpoint(raw, tmp_path, "calibrated")
    loaded = load_checkpoint(saved.weights, expected_config=raw.config.to_dict())
    assert loaded.config.interval_adjust == adjust
    x = torch.from_numpy(val.features[:2])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, torch.from_numpy(val.positions[:2]), use_cache=False)[0]["quantiles"],
                                   raw(x, torch.from_numpy(val.positions[:2]), use_cache=False)[0]["quantiles"])


def test_training_is_deterministic_for_a_seed():
    frames = twin_frames(synthetic_facility(**SMALL), hours=0.15, interval_s=5, seed=1, warmup_s=60)
    settings = FitSettings(epochs=1, window=24, stride=24, batch_size=8, threads=1, progress=False)
    config = make_config(5.0, window=24, num_layers=1, hidden_size=16, intermediate_size=32, num_attention_heads=2)
    train, val, _ = prepare(frames, settings, config)
    a = fit(config, train, val, settings)
    b = fit(config, train, val, settings)
    assert a.curves[0]["train_loss"] == b.curves[0]["train_loss"]
    for (_, p), (_, q) in zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
