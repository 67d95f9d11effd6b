"""Forecaster checkpoints: weights as safetensors beside a JSON config, verified before use.

    saved = save_checkpoint(model, Path("var/models"), "demo-mla-20260101T000000Z")
    model = load_checkpoint(saved.weights, expected_sha256=saved.sha256)

``NAME.safetensors`` holds the state dict (no pickle: loading runs no code). ``NAME.json`` holds the
``ForecasterConfig``, the feature list, every tensor's shape and the weights' SHA-256. Loading refuses, with
a ``CheckpointError`` that says what differs: a file whose SHA-256 is not the expected one (the
``ModelVersion``'s, else the JSON's), a config built for another feature list, and weights whose names or
shapes do not fit the config. Torch, safetensors and the standard library only (no Django).

The format-independent half (writing weights and JSON, checking format and SHA-256, fitting a state dict)
is shared with the RL policies' checkpoints (control/rl/checkpoint.py): `write_checkpoint`, `read_meta`,
`verify_sha256`, `load_fitting`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from inference.model import FEATURE_NAMES, ForecasterConfig, TelemetryForecaster, count_parameters

__all__ = ["FORMAT", "CheckpointError", "SavedCheckpoint", "load_checkpoint", "load_fitting", "read_meta",
           "save_checkpoint", "sha256_file", "verify_sha256", "write_checkpoint"]

FORMAT = "fusedc-forecaster/1"


class CheckpointError(Exception):
    """A checkpoint that must not be used: corrupted, replaced, or built for another model or feature list."""


@dataclass(frozen=True)
class SavedCheckpoint:
    weights: Path
    config: Path
    sha256: str
    meta: dict = field(default_factory=dict)


def sha256_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_checkpoint(module, directory: Path | str, name: str, fmt: str, meta: dict[str, Any]) -> SavedCheckpoint:
    """Write ``module``'s state dict to ``directory/name.safetensors`` and ``meta`` (with the format, every
    tensor's shape and the weights' SHA-256 added) to ``directory/name.json``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights, meta_path = directory / f"{name}.safetensors", directory / f"{name}.json"
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(state, str(weights), metadata={"format": fmt})
    digest = sha256_file(weights)
    meta = {"format": fmt, **meta, "shapes": {k: list(v.shape) for k, v in state.items()}, "weights": weights.name,
            "sha256": digest}
    meta_path.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return SavedCheckpoint(weights, meta_path, digest, meta)


def save_checkpoint(model: TelemetryForecaster, directory: Path | str, name: str,
                    extra: dict[str, Any] | None = None) -> SavedCheckpoint:
    """Write ``directory/name.safetensors`` and ``directory/name.json``; returns their paths and the SHA-256."""
    return write_checkpoint(model, directory, name, FORMAT, {
        "config": model.config.to_dict(), "features": list(model.config.features),
        "targets": list(model.config.targets), "parameters": count_parameters(model), **(extra or {})})


def read_meta(weights: Path | str, fmt: str = FORMAT) -> dict[str, Any]:
    """The JSON beside the weights, refused unless it is of format ``fmt``."""
    path = Path(weights).with_suffix(".json")
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: a checkpoint needs its JSON config beside the weights") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc})") from None
    if meta.get("format") != fmt:
        raise CheckpointError(f"{path}: format {meta.get('format')!r}, expected {fmt!r}")
    return meta


def verify_sha256(weights: Path, meta: dict[str, Any], expected_sha256: str | None) -> None:
    """Refuse weights whose SHA-256 is not ``expected_sha256`` (the model version's), else the JSON's own."""
    want = expected_sha256 or meta.get("sha256")
    actual = sha256_file(weights)
    if want != actual:
        raise CheckpointError(
            f"checksum mismatch for {weights}: SHA-256 is {actual}, expected {want} "
            "(the file was corrupted or replaced; refusing to load it)")
    if expected_sha256 and meta.get("sha256") not in (None, expected_sha256):
        raise CheckpointError(f"{weights}: its JSON records SHA-256 {meta['sha256']}, expected {expected_sha256}")


def load_fitting(module, weights: Path, map_location: str = "cpu"):
    """Load the weights into ``module`` (strict), refusing names or shapes that do not fit it."""
    state = load_file(str(weights), device=map_location)
    own = module.state_dict()
    problems = [f"missing {k}" for k in own if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in own]
    problems += [f"{k}: {list(state[k].shape)} != {list(v.shape)}" for k, v in own.items()
                 if k in state and state[k].shape != v.shape]
    if problems:
        raise CheckpointError(f"{weights.name}: weights do not fit the config ({len(problems)} problem(s)): "
                              + "; ".join(problems[:8]))
    module.load_state_dict(state, strict=True)
    return module.to(map_location).eval()


def check_config(meta: dict[str, Any], expected_config: dict[str, Any] | None = None) -> ForecasterConfig:
    """The checkpoint's config, refused if its features are not ours or it differs from ``expected_config``."""
    features = list(meta.get("features") or meta.get("config", {}).get("features") or [])
    if features != list(FEATURE_NAMES):
        missing = [f for f in FEATURE_NAMES if f not in features]
        extra = [f for f in features if f not in FEATURE_NAMES]
        detail = "; ".join(
            part for part in (f"missing {missing}" if missing else "", f"unknown {extra}" if extra else "",
                              "same names in another order" if not (missing or extra) else "") if part
        )
        raise CheckpointError(f"checkpoint was trained on another feature list ({detail}); retrain it")
    if expected_config is not None:
        ours = ForecasterConfig.from_dict(expected_config).to_dict()
        theirs = ForecasterConfig.from_dict(meta["config"]).to_dict()
        diff = sorted(k for k in ours if ours[k] != theirs.get(k))
        if diff:
            raise CheckpointError(
                "checkpoint config differs from the model version's: "
                + ", ".join(f"{k} {theirs.get(k)!r} != {ours[k]!r}" for k in diff))
    try:
        return ForecasterConfig.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint config is not a valid ForecasterConfig: {exc}") from None


def load_checkpoint(weights: Path | str, *, expected_sha256: str | None = None,
                    expected_config: dict[str, Any] | None = None, map_location: str = "cpu") -> TelemetryForecaster:
    """Load a verified model (eval mode). ``expected_sha256``: the checksum recorded elsewhere (the
    ``ModelVersion``); without it the JSON's own is checked. ``expected_config``: refuse a different config."""
    weights = Path(weights)
    if not weights.exists():
        raise CheckpointError(f"{weights} does not exist")
    meta = read_meta(weights)
    verify_sha256(weights, meta, expected_sha256)
    return load_fitting(TelemetryForecaster(check_config(meta, expected_config)), weights, map_location)
