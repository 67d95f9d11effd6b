"""Training and evaluation of the telemetry forecaster (torch and numpy only; Django only in ``train_site``).

``fit`` trains on windows from the training block with AdamW, evaluates the validation block every epoch,
keeps the best weights and stops early when validation loss has not improved for ``patience`` epochs.
``evaluate`` scores a model on held-out windows per horizon and target: MAE of the median, pinball loss,
p10-p90 coverage, and the persistence baseline (the last observed value) on exactly the same points;
throttling by Brier score. ``train_site`` is the ``manage.py inference train`` path: stored telemetry →
split by time → fit → checkpoint → ``ModelVersion``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from inference.dataset import HORIZONS_S, Frames, Windows
from inference.model import FEATURE_NAMES, FEATURES, ForecasterConfig, TelemetryForecaster, forecast_loss

__all__ = [
    "FitResult", "FitSettings", "conformal_interval_adjust", "evaluate", "fit", "make_config", "measure_delta_scales",
    "prepare", "seed_everything", "train_site",
]

log = logging.getLogger(__name__)
_FEATURE_BY_NAME = {f.name: f for f in FEATURES}


@dataclass
class FitSettings:
    """How to train. ``window`` is the training sequence length in grid steps (the model's sliding window
    is half of it, so most steps see a full window, as in serving)."""

    epochs: int = 20
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.01
    patience: int = 4
    seed: int = 0
    window: int = 192
    stride: int | None = 96
    warmup: int = 24
    split: tuple[float, float, float] = (0.7, 0.1, 0.2)
    max_train_windows: int | None = None
    calibrate_intervals: bool = True  # conformal p10-p90 widths from the validation block
    threads: int | None = None
    progress: bool = True


@dataclass
class FitResult:
    model: TelemetryForecaster
    curves: list[dict[str, float]]
    best_epoch: int
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_config(interval_s: float, *, attention: str = "mla", window: int = 192, **overrides) -> ForecasterConfig:
    """The forecaster's config for data on an ``interval_s`` grid: positions in grid steps, sliding window
    half the training window."""
    return ForecasterConfig(attention=attention, position_resolution_s=float(interval_s),
                            sliding_window=max(1, window // 2), horizons_s=HORIZONS_S, **overrides)


def prepare(frames: Frames, settings: FitSettings, config: ForecasterConfig) -> tuple[Windows, Windows, Windows]:
    """Train, validation and test windows from consecutive time blocks (test = the end of the range)."""
    (a, b), (c, d), (e, f) = frames.split(settings.split)
    kw = {"horizons_s": config.horizons_s, "targets": config.targets}
    train = frames.windows(a, b, settings.window, stride=settings.stride, warmup=0, **kw)
    if settings.max_train_windows and len(train) > settings.max_train_windows:
        pick = np.random.default_rng(settings.seed).choice(len(train), settings.max_train_windows, replace=False)
        train = train.subset(np.sort(pick))
    eval_len = min(2 * settings.window, max(d - c, f - e))
    val = frames.windows(c, d, eval_len, warmup=settings.warmup, **kw)
    test = frames.windows(e, f, eval_len, warmup=settings.warmup, **kw)
    return train, val, test


def _batches(w: Windows, batch_size: int, order: np.ndarray | None = None):
    order = np.arange(len(w)) if order is None else order
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        yield (torch.from_numpy(w.features[idx]), torch.from_numpy(w.positions[idx]),
               torch.from_numpy(w.targets[idx]), torch.from_numpy(w.throttled[idx]), idx)


@torch.no_grad()
def _loss(model: TelemetryForecaster, w: Windows, batch_size: int) -> float:
    model.eval()
    total, n = 0.0, 0
    for x, pos, y, thr, idx in _batches(w, batch_size):
        out, _ = model(x, pos, use_cache=False)
        total += forecast_loss(out, y, thr, model.config)["loss"].item() * len(idx)
        n += len(idx)
    return total / max(n, 1)


def fit(
    config: ForecasterConfig,
    train: Windows,
    val: Windows,
    settings: FitSettings,
    *,
    on_epoch: Callable[[dict], None] | None = None,
) -> FitResult:
    """Train a fresh model (deterministic for a seed on one thread count), early-stopped on validation loss.
    A config without ``delta_scales`` gets them measured on ``train`` (the model's ``config`` has them)."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    seed_everything(settings.seed)
    if not len(train):
        raise ValueError("no training windows: the data range is too short for the training window")
    if config.delta_scales is None:
        config = dataclasses.replace(config, delta_scales=measure_delta_scales(train, config))
    model = TelemetryForecaster(config)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(len(train) / settings.batch_size)
    total_steps = max(1, steps_per_epoch * settings.epochs)
    warm = max(1, total_steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total_steps))))
    rng = np.random.default_rng(settings.seed)
    curves: list[dict[str, float]] = []
    best = (math.inf, 0, copy.deepcopy(model.state_dict()))
    start = time.perf_counter()
    bar = None
    if settings.progress:
        from tqdm import tqdm

        bar = tqdm(total=total_steps, desc=f"train {config.attention}", unit="batch", leave=False)
    try:
        for epoch in range(1, settings.epochs + 1):
            model.train()
            total, n = 0.0, 0
            for x, pos, y, thr, idx in _batches(train, settings.batch_size, rng.permutation(len(train))):
                out, _ = model(x, pos, use_cache=False)
                loss = forecast_loss(out, y, thr, config)["loss"]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                total += loss.item() * len(idx)
                n += len(idx)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=epoch, loss=f"{loss.item():.4f}")
            val_loss = _loss(model, val, 2 * settings.batch_size) if len(val) else total / max(n, 1)
            row = {"epoch": epoch, "train_loss": total / max(n, 1), "val_loss": val_loss,
                   "seconds": time.perf_counter() - start}
            curves.append(row)
            if on_epoch is not None:
                on_epoch(row)
            if val_loss < best[0] - 1e-5:
                best = (val_loss, epoch, copy.deepcopy(model.state_dict()))
            elif epoch - best[1] >= settings.patience:
                log.info("early stop at epoch %d (best %d)", epoch, best[1])
                break
    finally:
        if bar is not None:
            bar.close()
    model.load_state_dict(best[2])
    model.eval()
    if settings.calibrate_intervals and len(val):
        model.set_interval_adjust(conformal_interval_adjust(model, val))
    return FitResult(model, curves, best[1], time.perf_counter() - start)


@torch.no_grad()
def conformal_interval_adjust(model: TelemetryForecaster, w: Windows, batch_size: int = 64,
                              min_points: int = 20) -> tuple[tuple[float, ...], ...] | None:
    """How far to move the outermost quantiles so that on ``w`` they cover their nominal share of outcomes
    (split-conformal quantile regression, Romano et al. 2019): per (horizon, target), the finite-sample
    ``nominal`` quantile of ``max(lo - y, y - hi)``, in physical units (0 where fewer than ``min_points``)."""
    cfg = model.config
    if len(cfg.quantiles) < 3 or not len(w):
        return None
    model.set_interval_adjust(None)  # measured against the bands as trained
    model.eval()
    nominal = cfg.quantiles[-1] - cfg.quantiles[0]
    scores: list[list[list[np.ndarray]]] = [[[] for _ in cfg.targets] for _ in cfg.horizons_s]
    for x, pos, y, _thr, idx in _batches(w, batch_size):
        quant = model(x, pos, use_cache=False)[0]["quantiles"].numpy()  # (b, s, h, t, q) normalised
        scored, y = w.scored[idx], y.numpy()
        for t, name in enumerate(cfg.targets):
            f = _FEATURE_BY_NAME[name]
            lo, hi = (quant[..., t, i] * f.scale + f.offset for i in (0, -1))  # (b, s, h)
            truth = y[..., t]
            ok = scored[..., None] & ~np.isnan(truth)
            outside = np.maximum(lo - truth, truth - hi)
            for h in range(len(cfg.horizons_s)):
                scores[h][t].append(outside[..., h][ok[..., h]])
    adjust = []
    for row in scores:
        out = []
        for parts in row:
            e = np.concatenate(parts)
            n = len(e)
            out.append(float(np.quantile(e, min(1.0, math.ceil((n + 1) * nominal) / n), method="higher"))
                       if n >= min_points else 0.0)
        adjust.append(tuple(out))
    return tuple(adjust)


def measure_delta_scales(w: Windows, config: ForecasterConfig) -> tuple[tuple[float, ...], ...]:
    """Mean absolute change of each target over each horizon in ``w`` (physical units), floored at 0.1 %
    of the feature's scale so a target that never moves still has a usable unit."""
    current = w.features[..., [FEATURE_NAMES.index(t) for t in config.targets]]  # (n, len, targets)
    change = np.abs(w.targets - current[:, :, None, :]).reshape(-1, *w.targets.shape[2:])  # (points, h, targets)
    known = ~np.isnan(change)
    with np.errstate(invalid="ignore", divide="ignore"):  # a horizon longer than the data has no points
        mean = np.where(known, change, 0.0).sum(axis=0) / known.sum(axis=0)
    scale = np.array([_FEATURE_BY_NAME[t].scale for t in config.targets])
    mean = np.where(np.isfinite(mean), np.maximum(mean, 1e-3 * scale), scale)  # no data: the feature's scale
    return tuple(tuple(float(v) for v in row) for row in mean)


@torch.no_grad()
def evaluate(model: TelemetryForecaster, w: Windows, batch_size: int = 64) -> dict[str, Any]:
    """Held-out metrics per horizon and target, in physical units, against persistence on the same points.

    ``{"horizons": {"60s": {"gpu_temperature_celsius": {"mae", "persistence_mae", "skill", "pinball",
    "coverage_p10_p90", "n"}, ..., "throttle": {"brier", "base_rate", "n"}}}, "points": n}``
    """
    model.eval()
    cfg = model.config
    n_h, n_t = len(cfg.horizons_s), len(cfg.targets)
    sums = np.zeros((n_h, n_t, 5))  # |err|, |persistence err|, pinball, covered, count
    thr_sums = np.zeros((n_h, 3))  # squared error, positives, count
    target_cols = [model._target_index[i] for i in range(n_t)]
    q = np.asarray(cfg.quantiles)
    lo_i, hi_i = 0, len(q) - 1
    for x, pos, y, thr, idx in _batches(w, batch_size):
        out, _ = model(x, pos, use_cache=False)
        quant = out["quantiles"].numpy()  # (b, s, h, t, q) normalised
        scored = w.scored[idx]
        y = y.numpy()
        current = x.numpy()[..., target_cols]  # (b, s, t)
        for t, name in enumerate(cfg.targets):
            f = _FEATURE_BY_NAME[name]
            phys = quant[..., t, :] * f.scale + f.offset  # (b, s, h, q)
            truth = y[..., t]  # (b, s, h)
            ok = scored[..., None] & ~np.isnan(truth) & ~np.isnan(current[..., t])[..., None]
            median = phys[..., len(q) // 2]
            err = np.abs(median - truth)
            pers = np.abs(current[..., t][..., None] - truth)
            diff = truth[..., None] - phys
            pin = np.maximum(q * diff, (q - 1) * diff).mean(-1)
            covered = (truth >= phys[..., lo_i]) & (truth <= phys[..., hi_i])
            for h in range(n_h):
                m = ok[..., h]
                sums[h, t] += (err[..., h][m].sum(), pers[..., h][m].sum(), pin[..., h][m].sum(),
                               covered[..., h][m].sum(), m.sum())
        prob = torch.sigmoid(out["throttle_logits"]).numpy()
        label = thr.numpy()
        for h in range(n_h):
            m = scored & ~np.isnan(label[..., h])
            thr_sums[h] += (((prob[..., h] - label[..., h]) ** 2)[m].sum(), label[..., h][m].sum(), m.sum())
    result: dict[str, Any] = {"horizons": {}, "points": int(w.scored.sum())}
    for h, horizon in enumerate(cfg.horizons_s):
        entry: dict[str, Any] = {}
        for t, name in enumerate(cfg.targets):
            e, p, pin, cov, n = sums[h, t]
            n = max(n, 1)
            entry[name] = {
                "mae": e / n, "persistence_mae": p / n, "skill": 1 - e / p if p > 0 else None,
                "pinball": pin / n, "coverage_p10_p90": cov / n, "n": int(sums[h, t, 4]),
            }
        se, pos_, n = thr_sums[h]
        entry["throttle"] = {"brier": se / max(n, 1), "base_rate": pos_ / max(n, 1), "n": int(n)}
        result["horizons"][f"{horizon:g}s"] = entry
    return result


# --------------------------------------------------------------------------------------------------
# From stored telemetry to a registered model version (Django)


def train_site(
    site,
    *,
    attention: str = "mla",
    settings: FitSettings | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
    model_dir=None,
    name: str | None = None,
    activate: bool = True,
    log_fn: Callable[[str], None] = print,
):
    """Train on a site's stored telemetry and record a ``ModelVersion`` (activated unless told not to)."""
    from datetime import UTC, datetime
    from pathlib import Path

    from django.conf import settings as django_settings

    from inference.checkpoint import save_checkpoint
    from inference.dataset import load_frames
    from inference.models import ModelKind, ModelVersion

    if name is not None:  # checked before minutes of training, and before a file of that name is written
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
            raise ValueError(f"name {name!r}: use letters, digits, '.', '_' and '-' (it names the checkpoint files)")
        if ModelVersion.objects.filter(name=name).exists():
            raise ValueError(f"a model version named {name!r} exists already (its checkpoint is kept); choose "
                             "another name")
    settings = settings or FitSettings()
    frames = load_frames(site, start_s, end_s)
    log_fn(f"data: {len(frames.uuids)} GPUs x {frames.steps} steps of {frames.interval_s:g} s "
           f"({frames.steps * frames.interval_s / 3600:.2f} h), {int(frames.present.sum()):,} samples")
    config = make_config(frames.interval_s, attention=attention, window=settings.window)
    train, val, test = prepare(frames, settings, config)
    log_fn(f"windows: {len(train)} train, {len(val)} validation, {len(test)} test (held out by time)")
    result = fit(config, train, val, settings)
    metrics = evaluate(result.model, test) if len(test) else {}
    metrics["split"] = {"fractions": list(settings.split), "best_epoch": result.best_epoch,
                        "training_seconds": round(result.seconds, 1)}
    kind = ModelKind.FORECASTER if attention == "mla" else ModelKind.MHA_BASELINE
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = name or f"{site.slug}-{attention}-{stamp}"
    directory = Path(model_dir or django_settings.MODEL_DIR)
    saved = save_checkpoint(result.model, directory, name)
    version = ModelVersion.objects.create(
        name=name, kind=kind, site=site, config=result.model.config.to_dict(), features=list(config.features),
        data_start=datetime.fromtimestamp(frames.start_s, UTC), data_end=datetime.fromtimestamp(frames.end_s, UTC),
        metrics=metrics, training_curves=result.curves, checkpoint_path=str(saved.weights.resolve()),
        checksum_sha256=saved.sha256, training_seconds=result.seconds,
    )
    if activate:
        version.activate()
    return version, result
