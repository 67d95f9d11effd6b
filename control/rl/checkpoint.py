"""RL policy checkpoints: safetensors weights beside a JSON config, verified before use.

    saved = save_checkpoint(agent, spec, Path("var/models/rl"), "rl-td3bc-20260101T000000Z", extra={...})
    agent, spec, meta = load_checkpoint(saved.weights, expected_sha256=saved.sha256)

``NAME.safetensors`` holds the agent's state dict (no pickle: loading runs no code); ``NAME.json`` the
`AgentConfig`, the `FeatureSpec` (halls, points with their envelopes, nameplates), the observation names,
every tensor's shape and the weights' SHA-256. `load_checkpoint` refuses (`CheckpointError`, saying what
differs) weights whose SHA-256 is not the expected one (the model version's, else the JSON's), a JSON
config that differs from the one the model version recorded, and weights that do not fit the config.
Writing, the format and SHA-256 checks and the state-dict fit are the forecaster's (inference/checkpoint.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from control.rl.algorithms import Agent, AgentConfig
from control.rl.features import FeatureSpec
from inference.checkpoint import (
    CheckpointError,
    SavedCheckpoint,
    load_fitting,
    read_meta,
    verify_sha256,
    write_checkpoint,
)

__all__ = ["FORMAT", "CheckpointError", "SavedCheckpoint", "load_checkpoint", "model_config", "save_checkpoint"]

FORMAT = "fusedc-rl-policy/1"


def model_config(agent: Agent, spec: FeatureSpec, **more) -> dict[str, Any]:
    """The config a checkpoint is built for: what the model version records and the loader compares."""
    return {"format": FORMAT, "agent": agent.config.to_dict(), "features": spec.to_dict(),
            "observation_names": spec.observation_names(), **more}


def save_checkpoint(agent: Agent, spec: FeatureSpec, directory: Path | str, name: str, *,
                    config_extra: dict | None = None, extra: dict | None = None) -> SavedCheckpoint:
    """Write ``directory/name.safetensors`` and ``directory/name.json``."""
    return write_checkpoint(agent, directory, name, FORMAT, {
        "name": name, "config": model_config(agent, spec, **(config_extra or {})), **(extra or {})})


def _differences(expected: Any, found: Any, prefix: str = "") -> list[str]:
    if isinstance(expected, dict) and isinstance(found, dict):
        out = []
        for k in sorted(set(expected) | set(found)):
            where = f"{prefix}.{k}" if prefix else str(k)
            if k not in found:
                out.append(f"{where} missing")
            elif k not in expected:
                out.append(f"{where} unexpected")
            else:
                out += _differences(expected[k], found[k], where)
        return out
    if isinstance(expected, list) and isinstance(found, list) and len(expected) == len(found):
        return [d for i, (e, f) in enumerate(zip(expected, found, strict=True))
                for d in _differences(e, f, f"{prefix}[{i}]")]
    return [] if expected == found else [f"{prefix or 'config'}: expected {expected!r:.60}, found {found!r:.60}"]


def load_checkpoint(weights: Path | str, *, expected_sha256: str | None = None,
                    expected_config: dict | None = None) -> tuple[Agent, FeatureSpec, dict]:
    """The verified agent (eval mode), its feature spec and the checkpoint's JSON."""
    weights = Path(weights)
    if not weights.exists():
        raise CheckpointError(f"{weights} does not exist")
    meta = read_meta(weights, FORMAT)
    verify_sha256(weights, meta, expected_sha256)
    config = meta.get("config") or {}
    if expected_config is not None:
        diff = _differences(json.loads(json.dumps(expected_config, default=str)), config)
        if diff:
            raise CheckpointError(f"{weights.name} was built for another config: {'; '.join(diff[:5])}")
    try:
        agent = Agent(AgentConfig(**config["agent"]))
        spec = FeatureSpec.from_dict(config["features"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{weights.name}: unusable config ({exc})") from None
    if spec.obs_dim != agent.config.obs_dim or spec.act_dim != agent.config.act_dim:
        raise CheckpointError(f"{weights.name}: features give {spec.obs_dim}/{spec.act_dim} inputs/actions, "
                              f"the agent has {agent.config.obs_dim}/{agent.config.act_dim}")
    return load_fitting(agent, weights), spec, meta
