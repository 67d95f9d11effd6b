"""MLA against MHA for the telemetry forecaster: cache bytes per token, and decode-step throughput.

    .venv/bin/python bench/mla.py                 # 4,096 streams, 128/512/1,024/2,048 steps of history
    .venv/bin/python bench/mla.py --quick         # short smoke run
    .venv/bin/python bench/mla.py --device cuda   # on a GPU, if there is one
    .venv/bin/python bench/mla.py --threads 1     # steadier numbers on a shared, busy CPU

What is timed is one attention layer at the forecaster's default shapes (``ForecasterConfig()``) taking
one decode step for every stream against a cache already holding ``history`` tokens per stream: MLA with
absorbed weights (what the worker runs), MLA rebuilding K/V from the cache (the naive way), and standard
MHA with the same parameter budget and a full per-head K/V cache. All three use the same dense attention
kernel (``inference.mla.dense_attention``) and the same stream chunking, under ``torch.inference_mode``,
after a warm-up, reporting the median of several runs. Caches are filled with random values (timings do
not depend on them); the absorbed and decompressing paths are checked to agree before timing.
"""

from __future__ import annotations

import argparse
import copy
import gc
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from inference.mla import MLAConfig, MultiHeadLatentAttention
from inference.model import FEATURE_NAMES, ForecasterConfig, MultiHeadAttention, count_parameters

GIB = 1024**3
METHODS = {"MLA absorbed": "absorbed", "MLA decompressing": "decompressing", "MHA": "mha"}
MEMORY_BUDGET = 24 * GIB  # the box the worker must fit on; also capped by what this machine has free


# --------------------------------------------------------------------------------------------------
# Cache sizes


def cache_rows(dtype: torch.dtype) -> list[tuple[str, str, int, str]]:
    """(shapes, method, elements per token per layer, formula) for the forecaster and DeepSeek-V2."""
    f = ForecasterConfig()
    h, d = f.num_attention_heads, f.resolved_mha_head_dim()
    groups = 2
    rows = [
        ("forecaster", "MLA", f.kv_lora_rank + f.qk_rope_head_dim,
         f"kv_lora_rank {f.kv_lora_rank} + rope {f.qk_rope_head_dim}"),
        ("forecaster", "MHA", 2 * h * d, f"2 x {h} heads x {d} (budget-matched head dim)"),
        ("forecaster", f"GQA-{groups}", 2 * groups * d, f"2 x {groups} kv heads x {d}"),
    ]
    # DeepSeek-V2 (arXiv:2405.04434, table 1): 128 heads of 128, d_c = 512, d_h^R = 64.
    rows += [
        ("DeepSeek-V2", "MLA", 512 + 64, "kv_lora_rank 512 + rope 64"),
        ("DeepSeek-V2", "MHA", 2 * 128 * 128, "2 x 128 heads x 128"),
        ("DeepSeek-V2", "GQA-8", 2 * 8 * 128, "2 x 8 kv heads x 128"),
        ("DeepSeek-V2", "MQA", 2 * 128, "2 x 1 kv head x 128"),
    ]
    return rows


def print_cache_table(dtype: torch.dtype, streams: int, history: int) -> None:
    size = torch.empty((), dtype=dtype).element_size()
    print(f"\nCache per token per layer ({dtype}, {size} B/element); last column: {streams:,} streams x "
          f"{history:,} steps, one layer")
    print(f"{'shapes':<12} {'method':<7} {'elements':>9} {'bytes':>8} {'vs MHA':>8} {'GiB':>8}  formula")
    mha = {shape: elems for shape, method, elems, _ in cache_rows(dtype) if method == "MHA"}
    for shape, method, elems, formula in cache_rows(dtype):
        total = streams * history * elems * size / GIB
        print(f"{shape:<12} {method:<7} {elems:>9,} {elems * size:>8,} {elems / mha[shape]:>8.4f} "
              f"{total:>8.2f}  {formula}")
    f = ForecasterConfig()
    print(f"forecaster: {f.num_layers} layers -> MLA {f.num_layers * (f.kv_lora_rank + f.qk_rope_head_dim) * size:,}"
          f" B/token/stream; MHA {f.num_layers * 2 * f.num_attention_heads * f.resolved_mha_head_dim() * size:,}")


# --------------------------------------------------------------------------------------------------
# Throughput


def available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return MEMORY_BUDGET


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_layers(device: torch.device, dtype: torch.dtype) -> tuple[MultiHeadLatentAttention, MultiHeadAttention]:
    f = ForecasterConfig()
    torch.manual_seed(0)
    mla = MultiHeadLatentAttention(f.mla_config()).to(device, dtype).eval()
    mha = MultiHeadAttention(
        f.hidden_size, f.num_attention_heads, f.resolved_mha_head_dim(), f.qk_rope_head_dim, f.mla_config()
    ).to(device, dtype).eval()
    return mla, mha


def fill_caches(layer, streams: int, chunk: int, history: int, device, dtype) -> list:
    """Caches of ``history`` random tokens for all streams, one cache per chunk of streams, with room for
    one more token so a decode step never reallocates."""
    caches = []
    piece = min(history, 256)
    for start in range(0, streams, chunk):
        n = min(chunk, streams - start)
        cache = layer.new_cache(n, capacity=history + 1, dtype=dtype, device=device)
        if isinstance(layer, MultiHeadLatentAttention):
            c_kv = torch.randn(n, piece, layer.kv_lora_rank, device=device, dtype=dtype)
            k_pe = torch.randn(n, piece, layer.qk_rope_head_dim, device=device, dtype=dtype)
            parts = (c_kv, k_pe)
        else:
            k = torch.randn(n, layer.num_heads, piece, layer.head_dim, device=device, dtype=dtype)
            parts = (k, 0.5 * k)
        done = 0
        while done < history:
            take = min(piece, history - done)
            cache.append(*(p.narrow(-2 if p.dim() == 4 else 1, 0, take) for p in parts))
            done += take
        caches.append(cache)
    return caches


def decode_step(layer, caches, history, device, dtype, **kwargs):
    """A closure running one decode step for every stream (all chunks), leaving the caches as found."""
    hidden = layer.o_proj.out_features
    xs = [torch.randn(c.batch_size, 1, hidden, device=device, dtype=dtype) for c in caches]
    positions = torch.full((1,), history, device=device)

    def step() -> None:
        for x, cache in zip(xs, caches, strict=True):
            layer(x, positions, cache, **kwargs)
            cache.truncate(history)  # undo the append so every run sees the same history

    return step


def time_round_robin(steps: dict, runs: int, warmup: int, device) -> dict[str, list[float]]:
    """Seconds per step for each method, timed in turn within every run so that background load on a
    shared machine hits all methods alike (ratios stay meaningful even when absolute times wobble)."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(runs):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def check_paths_agree(mla: MultiHeadLatentAttention, device, dtype) -> float:
    """Absorbed vs decompressing decode on a real prefill: max abs difference."""
    torch.manual_seed(1)
    x = torch.randn(8, 65, mla.config.hidden_size, device=device, dtype=dtype)
    pos = torch.arange(65, device=device)
    _, cache = mla(x[:, :64], pos[:64])
    other = cache.select(range(8))
    a, _ = mla(x[:, 64:], pos[64:], cache)
    b, _ = mla(x[:, 64:], pos[64:], other, decompress=True)
    return (a - b).abs().max().item()


def run_throughput(args, device: torch.device, dtype: torch.dtype) -> None:
    mla, mha = build_layers(device, dtype)
    f = ForecasterConfig()
    size = torch.empty((), dtype=dtype).element_size()
    print(f"\nDecode-step throughput, one attention layer at the forecaster's shapes (hidden {f.hidden_size}, "
          f"{f.num_attention_heads} heads): {args.streams:,} streams, chunks of {args.chunk}, {dtype}, "
          f"median of {args.runs} runs (methods interleaved) after {args.warmup} warm-up")
    print(f"parameters per layer: MLA {count_parameters(mla):,}, MHA {count_parameters(mha):,} "
          f"(head dim {mha.head_dim}); absorbed vs decompressing max |diff| "
          f"{check_paths_agree(mla, device, dtype):.2e}")
    print(f"{'history':>8} {'method':<18} {'cache GiB':>9} {'ms/step':>9} {'best ms':>9} "
          f"{'stream-steps/s':>15} {'vs MHA':>7}")
    mla_token = (mla.kv_lora_rank + mla.qk_rope_head_dim) * size
    mha_token = 2 * mha.num_heads * mha.head_dim * size
    # The decompressing path materialises K, V and their concatenation for a chunk, per history token.
    scratch_token = 3 * args.chunk * mla.num_heads * (mla.qk_head_dim + mla.v_head_dim) * size
    selected = [m for m in METHODS if METHODS[m] in args.methods]
    for history in args.histories:
        # All selected methods' caches are alive together (round-robin timing), plus decompress scratch.
        need = args.streams * history * (mha_token if "MHA" in selected else 0)
        if any(m.startswith("MLA") for m in selected):
            need += args.streams * history * mla_token
        if "MLA decompressing" in selected:
            need += scratch_token * history
        limit = min(MEMORY_BUDGET, int(0.8 * available_bytes(device)))
        if need > limit:
            print(f"{history:>8,} needs {need / GIB:.1f} GiB > {limit / GIB:.1f} GiB available: skipped "
                  f"(use --streams or --chunk)")
            continue
        with torch.inference_mode():
            steps = {}
            if any(m.startswith("MLA") for m in selected):
                mla_caches = fill_caches(mla, args.streams, args.chunk, history, device, dtype)
                if "MLA absorbed" in selected:
                    steps["MLA absorbed"] = decode_step(mla, mla_caches, history, device, dtype)
                if "MLA decompressing" in selected:
                    steps["MLA decompressing"] = decode_step(
                        mla, mla_caches, history, device, dtype, decompress=True
                    )
            if "MHA" in selected:
                steps["MHA"] = decode_step(
                    mha, fill_caches(mha, args.streams, args.chunk, history, device, dtype), history, device, dtype
                )
            times = time_round_robin(steps, args.runs, args.warmup, device)
        del steps
        mla_caches = None
        gc.collect()
        median = {name: statistics.median(t) for name, t in times.items()}
        base = median.get("MHA")
        for name, seconds in median.items():
            gib = args.streams * history * (mha_token if name == "MHA" else mla_token) / GIB
            ratio = f"{base / seconds:>6.2f}x" if base else "    n/a"
            print(f"{history:>8,} {name:<18} {gib:>9.2f} {1e3 * seconds:>9.1f} {1e3 * min(times[name]):>9.1f} "
                  f"{args.streams / seconds:>15,.0f} {ratio:>7}")


# --------------------------------------------------------------------------------------------------
# Accuracy


class ForecastBound:
    """The best any forecaster could do on the accuracy data: at held-out reads, copies of the twin itself
    (its true state, physics and workload schedule) are rolled forward with freshly drawn workload variation,
    which no forecaster can know; the median of those futures is the forecast. Scored against the sensors'
    noisy reading like the models, it bounds the persistence/forecast ratio the data allows."""

    def __init__(self, n_reads: int, interval_s: float, *, horizon_s: float = 60.0, test_from: float = 0.8,
                 every: int = 6, rollouts: int = 16, seed: int = 0):
        self.ahead = round(horizon_s / interval_s)
        self.horizon_s, self.n_reads, self.every, self.rollouts, self.seed = horizon_s, n_reads, every, rollouts, seed
        self.test_from = round(test_from * n_reads)
        self.medians: dict[int, tuple[tuple[str, ...], np.ndarray]] = {}

    def on_read(self, twin, r: int) -> None:
        if r < self.test_from or (r - self.test_from) % self.every or r + self.ahead >= self.n_reads:
            return
        futures = []
        for k in range(self.rollouts):
            future = copy.deepcopy(twin)
            future.workload.reseed([self.seed, 99, r, k])
            future.step(int(self.horizon_s))
            futures.append(future.gpus()["temperature_celsius"])
        self.medians[r] = (twin.gpu_uuids, np.median(futures, axis=0))

    def score(self, frames, gpus: np.ndarray | None = None) -> dict[str, float]:
        """MAE of the rollout median and of persistence on the same points, against measured temperature
        (of the GPUs selected by the boolean mask ``gpus``, default all)."""
        temp = frames.features[..., FEATURE_NAMES.index("gpu_temperature_celsius")]
        selected = np.ones(len(frames.uuids), bool) if gpus is None else gpus
        errors, persistence = [], []
        for r, (uuids, median) in self.medians.items():
            position = {u: i for i, u in enumerate(uuids)}
            median = median[[position[u] for u in frames.uuids]]
            now, later = temp[:, r], temp[:, r + self.ahead]
            ok = ~np.isnan(now) & ~np.isnan(later) & selected
            errors.append(np.abs(median - later)[ok])
            persistence.append(np.abs(now - later)[ok])
        mae, pers = float(np.concatenate(errors).mean()), float(np.concatenate(persistence).mean())
        return {"mae": mae, "persistence_mae": pers, "ratio": pers / mae, "points": sum(map(len, errors))}


@torch.no_grad()
def error_by_regime(model, w, batch: int = 64) -> dict[str, tuple[int, float, float, float]]:
    """60 s GPU-temperature error split by what the GPU is doing: {regime: (points, model MAE, persistence
    MAE, model bias)}. Regimes: low load now (utilisation < 0.5: a checkpoint dip on training GPUs), a drop
    of more than 5 degC in the next minute while loaded (what only a known schedule could foresee), the rest."""
    from inference.model import _FEATURE_BY_NAME

    cfg = model.config
    h, t = list(cfg.horizons_s).index(60.0), list(cfg.targets).index("gpu_temperature_celsius")
    f = _FEATURE_BY_NAME["gpu_temperature_celsius"]
    temp, util = FEATURE_NAMES.index(f.name), FEATURE_NAMES.index("gpu_utilization_ratio")
    model.eval()
    parts: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(w), batch):
        sl = slice(i, i + batch)
        out, _ = model(torch.from_numpy(w.features[sl]), torch.from_numpy(w.positions[sl]), use_cache=False)
        median = out["quantiles"][..., h, t, len(cfg.quantiles) // 2].numpy() * f.scale + f.offset
        truth, now = w.targets[sl][..., h, t], w.features[sl][..., temp]
        ok = w.scored[sl] & ~np.isnan(truth) & ~np.isnan(now)
        low = w.features[sl][..., util] < 0.5
        drop = ~low & (truth - now < -5.0)
        for name, mask in (("low load now", ok & low), ("loaded, drop > 5 degC ahead", ok & drop),
                           ("loaded, no drop ahead", ok & ~low & ~drop)):
            entry = parts.setdefault(name, [[], []])
            entry[0].append((median - truth)[mask])
            entry[1].append(np.abs(now - truth)[mask])
    out = {}
    for name, (err, pers) in parts.items():
        err, pers = np.concatenate(err), np.concatenate(pers)
        if len(err):
            out[name] = (len(err), float(np.abs(err).mean()), float(pers.mean()), float(err.mean()))
    return out


def accuracy_on_heldout_twin_data(args) -> None:
    """Forecast accuracy of MLA vs MHA (and persistence) on held-out digital-twin data.

    The twin (``facility.twin``, demo-shaped facility: an air hall on an inference workload, a liquid hall
    on training with checkpoint dips, one random setpoint move every 5 min) is read every 5 s through the
    forecaster's feature assembly with sensor noise and dropouts (``inference.dataset.twin_frames``). The
    range is split by time (70 % train, 10 % validation for early stopping, the last 20 % held out); both
    variants train with the same data, seed, windows and epochs (``inference.training.fit``); the table is
    the held-out MAE of the median forecast per horizon, with persistence (the last observed value) scored
    on exactly the same points, p10-p90 coverage, and throttle Brier score.
    """
    if args.skip_accuracy:
        return
    from inference.dataset import twin_frames
    from inference.training import FitSettings, evaluate, fit, make_config, prepare

    started = time.perf_counter()
    interval_s = 5.0
    bound = ForecastBound(round(args.accuracy_hours * 3600 / interval_s), interval_s, seed=args.accuracy_seed)
    frames = twin_frames(hours=args.accuracy_hours, interval_s=interval_s, seed=args.accuracy_seed,
                         on_read=bound.on_read)
    gen_s = time.perf_counter() - started
    # Scored steps have the model's whole sliding window (half the training window) of history, as in serving.
    window = args.accuracy_window
    settings = FitSettings(epochs=args.accuracy_epochs, window=window, stride=window // 2, warmup=window // 2,
                           max_train_windows=args.accuracy_windows, threads=args.threads or 1, progress=False,
                           seed=args.accuracy_seed)
    print(f"\nAccuracy on held-out twin data: {len(frames.uuids)} GPUs x {frames.steps} steps of "
          f"{frames.interval_s:g} s ({args.accuracy_hours:g} h, generated in {gen_s:.0f} s); split 70/10/20 by "
          f"time; {settings.epochs} epochs max, {settings.max_train_windows} windows of {settings.window} per "
          f"epoch, seed {settings.seed}, {settings.threads} thread(s)")
    coolant = FEATURE_NAMES.index("coolant_supply_temperature_celsius")
    results, by_cooling = {}, {}
    for attention in ("mla", "mha"):
        config = make_config(frames.interval_s, attention=attention, window=settings.window)
        train, val, test = prepare(frames, settings, config)
        result = fit(config, train, val, settings)
        results[attention] = (evaluate(result.model, test), result)
        liquid = ~np.isnan(test.features[..., coolant]).all(axis=1)  # windows of GPUs whose node reports coolant
        held_out = {name: test.subset(mask) for name, mask in (("air-cooled", ~liquid), ("liquid-cooled", liquid))
                    if mask.any()}
        by_cooling[attention] = {name: (evaluate(result.model, w)["horizons"]["60s"], error_by_regime(result.model, w))
                                 for name, w in held_out.items()}
        print(f"  {attention.upper()}: {count_parameters(result.model):,} parameters, trained in "
              f"{result.seconds:.0f} s (best epoch {result.best_epoch} of {len(result.curves)}), "
              f"{len(test)} held-out windows")
    target = "gpu_temperature_celsius"
    print(f"\n{'horizon':>7} {'target':<24} {'persist.':>9} {'MLA':>8} {'MHA':>8} {'pers/MLA':>9} "
          f"{'MLA vs MHA':>10} {'MLA p10-p90':>11} {'MHA p10-p90':>11}")
    for horizon in results["mla"][0]["horizons"]:
        for name in (target, "sm_clock_megahertz", "power_watts"):
            a = results["mla"][0]["horizons"][horizon][name]
            b = results["mha"][0]["horizons"][horizon][name]
            ratio = a["persistence_mae"] / a["mae"] if a["mae"] > 0 else float("inf")
            print(f"{horizon:>7} {name:<24} {a['persistence_mae']:>9.3f} {a['mae']:>8.3f} {b['mae']:>8.3f} "
                  f"{ratio:>8.2f}x {100 * (a['mae'] / b['mae'] - 1):>+9.1f}% {a['coverage_p10_p90']:>11.2f} "
                  f"{b['coverage_p10_p90']:>11.2f}")
    for horizon in results["mla"][0]["horizons"]:
        a = results["mla"][0]["horizons"][horizon]["throttle"]
        b = results["mha"][0]["horizons"][horizon]["throttle"]
        print(f"throttle {horizon:>5}: Brier MLA {a['brier']:.4f}, MHA {b['brier']:.4f} "
              f"(base rate {a['base_rate']:.4f})")
    a = results["mla"][0]["horizons"]["60s"][target]
    b = results["mha"][0]["horizons"]["60s"][target]
    ratio = a["persistence_mae"] / a["mae"]
    best = bound.score(frames)
    print(f"best possible at 60 s (the twin's own futures, {bound.rollouts} rollouts at {len(bound.medians)} "
          f"held-out reads, {best['points']:,} points): MAE {best['mae']:.3f} vs persistence "
          f"{best['persistence_mae']:.3f}, {best['ratio']:.2f}x")
    liquid = ~np.isnan(frames.features[..., coolant]).all(axis=1)  # GPUs whose node reports coolant
    for name, mask in (("air-cooled", ~liquid), ("liquid-cooled", liquid)):
        if mask.any():
            part = bound.score(frames, mask)
            print(f"  {name} GPUs ({mask.sum()}): MAE {part['mae']:.3f} vs persistence {part['persistence_mae']:.3f}, "
                  f"{part['ratio']:.2f}x")
            for attention, parts in by_cooling.items():
                m, regimes = parts[name][0][target], parts[name][1]
                print(f"    {attention.upper()} on all their held-out points: MAE {m['mae']:.3f} vs persistence "
                      f"{m['persistence_mae']:.3f}, {m['persistence_mae'] / m['mae']:.2f}x; by regime:")
                for regime, (n, mae, pers, bias) in regimes.items():
                    print(f"      {regime:<28} {n:>7,} points: MAE {mae:.3f} vs persistence {pers:.3f}, "
                          f"bias {bias:+.3f}")
    print(f"targets, 60 s GPU temperature: MLA {ratio:.2f}x better than persistence (target >= 3x: "
          f"{'met' if ratio >= 3 else 'NOT met'}); MLA within {100 * (a['mae'] / b['mae'] - 1):+.1f}% of MHA "
          f"(target <= +5%: {'met' if a['mae'] <= 1.05 * b['mae'] else 'NOT met'})")


# --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="512 streams, short histories, 3 runs")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:n]")
    parser.add_argument("--streams", type=int, default=None, help="concurrent streams (default 4,096)")
    parser.add_argument("--histories", type=str, default=None, help="comma-separated history lengths")
    parser.add_argument("--chunk", type=int, default=None, help="streams per layer call (bounds scratch memory)")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--methods", default="absorbed,decompressing,mha", help="subset to time")
    parser.add_argument("--skip-accuracy", action="store_true", help="timings only (no training)")
    parser.add_argument("--accuracy-only", action="store_true", help="accuracy only (no timings)")
    parser.add_argument("--accuracy-hours", type=float, default=None, help="twin hours (default 6; quick 0.75)")
    parser.add_argument("--accuracy-epochs", type=int, default=None, help="max epochs (default 30; quick 3)")
    parser.add_argument("--accuracy-windows", type=int, default=None,
                        help="training windows per epoch (default 1,024; quick 256)")
    parser.add_argument("--accuracy-window", type=int, default=96,
                        help="training window in 5 s steps (default 96; the model attends to half of it)")
    parser.add_argument("--accuracy-seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.streams = args.streams or 512
        args.histories = args.histories or "128,512"
        args.runs = args.runs or 3
    args.streams = args.streams or 4096
    args.histories = [int(h) for h in (args.histories or "128,512,1024,2048").split(",")]
    args.runs = args.runs or 5
    args.accuracy_hours = args.accuracy_hours or (0.75 if args.quick else 6.0)
    args.accuracy_epochs = args.accuracy_epochs or (3 if args.quick else 30)
    args.accuracy_windows = args.accuracy_windows or (256 if args.quick else 1024)
    args.methods = set(args.methods.split(","))
    if unknown := args.methods - set(METHODS.values()):
        parser.error(f"unknown methods {sorted(unknown)}; choose from {sorted(METHODS.values())}")
    args.chunk = args.chunk or (args.streams if args.device.startswith("cuda") else min(512, args.streams))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            sys.exit("--device cuda: no CUDA device available")
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU, {torch.get_num_threads()} threads"
    print(f"bench/mla.py  torch {torch.__version__}  device: {name}")
    print_cache_table(dtype, args.streams, max(args.histories))
    # DeepSeek-V2 sanity: the module's own accounting matches the paper's 576.
    v2 = MLAConfig(hidden_size=5120, num_attention_heads=128, q_lora_rank=1536, kv_lora_rank=512,
                   qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128)
    assert v2.cache_elements_per_token == 576
    if not args.accuracy_only:
        run_throughput(args, device, dtype)
    accuracy_on_heldout_twin_data(args)


if __name__ == "__main__":
    main()
