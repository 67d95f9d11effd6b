"""RL policy checkpoints: safetensors weights beside a JSON config, verified before use.

    saved = save_checkpoint(agent, spec, Path("var/models/rl"), "rl-td3bc-20260101T000000Z", extra={...})
    agent, spec, meta = load_checkpoint(saved.weights, expected_sha256=saved.sha256)

``NAME.safetensors`` holds the agent's state dict (no pickle: loading runs no code); ``NAME.json`` the
`AgentConfig`, the `FeatureSpec` (halls, points with their envelopes, nameplates), the observation names,
every tensor's shape and the weights' SHA-256. `load_checkpoint` refuses (`CheckpointError`, saying what
differs) weights whose SHA-256 is not the expected one (the model version's, else the JSON's), a JSON
config that differs from the one the model version recorded, and weights that do not fit the config.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from control.rl.algorithms import Agent, AgentConfig
from control.rl.features import FeatureSpec

FORMAT = "fusedc-rl-policy/1"


class CheckpointError(Exception):
    """A checkpoint that must not be used: corrupted, replaced, or built for another config."""


@dataclass(frozen=True)
class SavedCheckpoint:
    weights: Path
    config: Path
    sha256: str
    meta: dict


def sha256_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_config(agent: Agent, spec: FeatureSpec, **more) -> dict[str, Any]:
    """The config a checkpoint is built for: what the model version records and the loader compares."""
    return {"format": FORMAT, "agent": agent.config.to_dict(), "features": spec.to_dict(),
            "observation_names": spec.observation_names(), **more}


def save_checkpoint(agent: Agent, spec: FeatureSpec, directory: Path | str, name: str, *,
                    config_extra: dict | None = None, extra: dict | None = None) -> SavedCheckpoint:
    """Write ``directory/name.safetensors`` and ``directory/name.json``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights, meta_path = directory / f"{name}.safetensors", directory / f"{name}.json"
    state = {k: v.detach().contiguous().cpu() for k, v in agent.state_dict().items()}
    save_file(state, str(weights), metadata={"format": FORMAT})
    digest = sha256_file(weights)
    meta = {"format": FORMAT, "name": name, "config": model_config(agent, spec, **(config_extra or {})),
            "shapes": {k: list(v.shape) for k, v in state.items()}, "weights": weights.name, "sha256": digest,
            **(extra or {})}
    meta_path.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return SavedCheckpoint(weights, meta_path, digest, meta)


def read_meta(weights: Path | str) -> dict[str, Any]:
    path = Path(weights).with_suffix(".json")
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: a checkpoint needs its JSON config beside the weights") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None


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
    meta = read_meta(weights)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{weights} is a {meta.get('format')!r} checkpoint, not {FORMAT}")
    digest = sha256_file(weights)
    want = expected_sha256 or meta.get("sha256")
    if digest != want:
        raise CheckpointError(f"{weights.name}: SHA-256 {digest[:12]}… does not match the expected {str(want)[:12]}…"
                              " (corrupted or replaced)")
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
    state = load_file(str(weights))
    own = agent.state_dict()
    bad = sorted(set(own) ^ set(state))
    bad += [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if bad:
        raise CheckpointError(f"{weights.name}: weights do not fit the config ({', '.join(bad[:5])})")
    agent.load_state_dict(state, strict=True)
    agent.eval()
    return agent, spec, meta
