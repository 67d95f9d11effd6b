"""Offline RL: logged datasets, a tiny training run, verified checkpoints, and the rl policy's envelope."""

import dataclasses
import itertools
import math

import numpy as np
import pytest
import torch

from control import policies
from control.policies.rl import PolicyUnavailable, RLPolicy
from control.rl.algorithms import TrainConfig
from control.rl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from control.rl.dataset import CollectConfig, Transitions, collect
from control.rl.features import FeatureMismatch, FeatureSpec, observe
from control.rl.training import train
from facility.twin import synthetic_facility
from facility.twin.env import TwinEnv
from facility.twin.evaluation import evaluate
from facility.twin.state import PolicyContext, state_from_twin

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def site():
    return synthetic_facility(air_racks=1, air_nodes_per_rack=2, liquid_racks=1, liquid_nodes_per_rack=2,
                              crahs=2, cdus=1)


@pytest.fixture(scope="module")
def data(site):
    """Four 15-minute episodes, one per behaviour, with plenty of exploration."""
    return collect(site, CollectConfig(episodes=4, episode_hours=0.25, climates=("hot",), noise=0.8,
                                       noise_prob=0.3, seed=3))


@pytest.fixture(scope="module")
def trained(data):
    return train(data, "td3bc", TrainConfig(steps=60, batch_size=32), hidden=32, log_every=20)


@pytest.fixture(scope="module")
def checkpoint(trained, tmp_path_factory):
    return save_checkpoint(trained.agent, trained.spec, tmp_path_factory.mktemp("rl"), "tiny",
                           config_extra={"gamma": 0.99})


def test_observation_is_the_envs(site):
    env = TwinEnv(site, climate="hot", episode_s=300)
    obs, _ = env.reset(seed=1)
    spec = FeatureSpec.from_env(env)
    for _ in range(3):
        state = state_from_twin(env.twin, env.envelopes, env.guard.last_change_s)
        assert spec.observation_names() == env.observation_names
        np.testing.assert_array_equal(observe(state, spec), obs)
        obs, *_ = env.step(env.action_space.sample())


def test_dataset_logs_the_applied_moves(data, site, tmp_path):
    n_eps = 4
    assert len(data) == n_eps * 15
    assert data.obs.shape == data.next_obs.shape == (len(data), data.spec.obs_dim)
    assert data.actions.shape == (len(data), data.spec.act_dim)
    assert np.all(np.abs(data.actions) <= 1.0) and np.all(np.isfinite(data.rewards)) and np.all(data.rewards < 0)
    assert data.timeouts.sum() == n_eps and data.timeouts[data.episodes == 0][-1]
    # Consecutive decisions chain: the next observation is the following row's observation.
    same = data.episodes[1:] == data.episodes[:-1]
    np.testing.assert_array_equal(data.next_obs[:-1][same], data.obs[1:][same])
    # Actions are what the guard applied: a held point (a move of 0) leaves its command unchanged.
    cmd = [i for i, n in enumerate(data.spec.observation_names()) if n.endswith("/command")]
    span = np.array([p.allowable_max - p.allowable_min for p in data.spec.points])
    steps = np.array([p.step for p in data.spec.points])
    moved = (data.next_obs[:, cmd] - data.obs[:, cmd]) * span / 2
    np.testing.assert_allclose(moved, data.actions * steps, atol=1e-4)
    assert (np.abs(data.actions) > 0).any(axis=0).sum() >= data.spec.act_dim // 2  # exploration covers points
    info = data.info
    assert [e["behaviour"] for e in info["episodes"]] == ["fixed", "trim_respond", "pid", "fixed_random"]
    assert info["episodes"][3]["params"] and info["data_start"] < info["data_end"]
    assert all(e["violations"] == 0 for e in info["episodes"])
    again = Transitions.load(data.save(tmp_path / "d.npz"))
    np.testing.assert_array_equal(again.actions, data.actions)
    assert again.spec == data.spec and again.info["transitions"] == len(data)
    train_set, held = data.split(0.25, seed=0)
    assert len(train_set) + len(held) == len(data) and not set(train_set.episodes) & set(held.episodes)


@pytest.mark.parametrize("algorithm", ["td3bc", "iql"])
def test_tiny_training_run(data, algorithm):
    result = train(data, algorithm, TrainConfig(steps=40, batch_size=32), hidden=32, log_every=20)
    assert [c["step"] for c in result.curves] == [20, 40]
    assert all(math.isfinite(v) for c in result.curves for v in c.values())
    held = result.metrics["held_out"]
    assert held["transitions"] > 0 and math.isfinite(held["td_rmse"]) and math.isfinite(held["advantage_vs_hold"])
    assert np.all(np.abs(result.agent.act(data.obs[:5])) <= 1.0)


def test_checkpoint_refuses_tampering_and_another_config(checkpoint, trained, tmp_path):
    agent, spec, meta = load_checkpoint(checkpoint.weights, expected_sha256=checkpoint.sha256,
                                        expected_config=checkpoint.meta["config"])
    assert spec == trained.spec and meta["sha256"] == checkpoint.sha256
    obs = np.zeros((1, spec.obs_dim), np.float32)
    np.testing.assert_allclose(agent.act(obs), trained.agent.act(obs), atol=1e-6)
    # Another config than the one recorded: refused, saying what differs.
    other = dataclasses.replace(spec.points[0], allowable_max=spec.points[0].allowable_max + 1)
    config = {**checkpoint.meta["config"], "features": FeatureSpec(
        spec.halls, (other, *spec.points[1:]), spec.nameplate_kw).to_dict()}
    with pytest.raises(CheckpointError, match=r"another config.*allowable_max"):
        load_checkpoint(checkpoint.weights, expected_config=config)
    with pytest.raises(CheckpointError, match=r"another config.*hidden"):
        load_checkpoint(checkpoint.weights, expected_config={
            **checkpoint.meta["config"], "agent": {**checkpoint.meta["config"]["agent"], "hidden": 64}})
    # Weights changed after saving: the checksum no longer matches.
    copy = save_checkpoint(trained.agent, trained.spec, tmp_path, "copy")
    blob = bytearray(copy.weights.read_bytes())
    blob[-1] ^= 0xFF
    copy.weights.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(copy.weights)
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(checkpoint.weights, expected_sha256="0" * 64)
    copy.config.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(copy.weights)


def _assert_inside(proposals, state):
    for p in proposals:
        sp = state.setpoints[p.key]
        env = sp.envelope
        assert env.allowable_min <= p.value <= env.allowable_max
        assert abs(p.value - sp.command) <= env.max_change(sp.since_change_s) + 1e-9
        assert p.rationale.startswith("RL tiny: Q advantage over holding")
        assert {"q_advantage_vs_hold", "q_advantage_this_move", "move_steps"} <= set(p.predicted_effect)


def test_rl_policy_proposals_stay_inside_the_envelope(checkpoint, site):
    policy = policies.create("rl", checkpoint=str(checkpoint.weights), require_advantage=False, deadband=0.0)
    result = evaluate(policy, site, days=1 / 24, climate="hot", progress=False)
    assert result.metrics["envelope_violations"] == 0 and result.metrics["shutdowns"] == 0
    assert result.metrics["setpoint_changes"] > 0  # it acted
    for key, series in result.series.items():
        if key.startswith("sp/"):
            unit, name = key[3:].split("/")
            env = next(e for e in policy.spec.points if (e.unit, e.name) == (unit, name))
            assert all(env.allowable_min - 1e-9 <= v <= env.allowable_max + 1e-9 for v in series)
            assert all(abs(b - a) <= env.step + 1e-9 for a, b in itertools.pairwise(series))
    # Directly: every proposal within one envelope move of the command, with its rationale.
    env = TwinEnv(site, climate="hot", episode_s=600)
    env.reset(seed=2)
    policy.reset(PolicyContext(env.envelopes, {}, 60.0))
    for _ in range(5):
        state = state_from_twin(env.twin, env.envelopes, env.guard.last_change_s)
        _assert_inside(props := policy.propose(state), state)
        env.guard.apply(props)
        env.twin.step(60)


def test_rl_policy_interlock_and_refusals(checkpoint, site):
    policy = RLPolicy(checkpoint=str(checkpoint.weights), require_advantage=False, deadband=0.0)
    env = TwinEnv(site, climate="hot", episode_s=600)
    env.reset(seed=2)
    state = state_from_twin(env.twin, env.envelopes, env.guard.last_change_s)
    # Every hall within 2 K of slowdown: nothing that reduces cooling may be proposed.
    hot = dataclasses.replace(state, halls={n: dataclasses.replace(h, gpu_temperature_max_c=87.0,
                                                                   margin_to_slowdown_k=2.0)
                                            for n, h in state.halls.items()})
    for p in policy.propose(hot):
        flow = "pump" in p.setpoint
        moved = p.value - hot.setpoints[p.key].command
        assert (moved > 0) if flow else (moved < 0), p
    # A site without the model's points is refused.
    fewer = dataclasses.replace(state, setpoints=dict(list(state.setpoints.items())[1:]))
    with pytest.raises(FeatureMismatch, match="lacks"):
        policy.propose(fewer)
    with pytest.raises(PolicyUnavailable):
        RLPolicy(checkpoint=str(checkpoint.weights) + ".missing").reset(PolicyContext({}, {}, 60.0))


@pytest.mark.django_db
def test_train_rl_command_records_an_active_verified_version(settings, tmp_path):
    from django.core.management import call_command

    from control.models import PolicyModelVersion

    settings.CONTROL_RL_MODEL_DIR = tmp_path
    call_command("control", "train-rl", "--episodes", "2", "--episode-hours", "0.1", "--steps", "20",
                 "--hidden", "16", "--batch-size", "16", "--name", "cmd-test", "--json",
                 "--save-dataset", str(tmp_path / "d.npz"))
    version = PolicyModelVersion.objects.get(name="cmd-test")
    assert version.active and version.algorithm == "iql" and version.checkpoint_path.startswith(str(tmp_path))
    assert version.data["transitions"] == 12 and version.data_start < version.data_end
    assert version.metrics["held_out"]["transitions"] == 6
    policy = policies.create("rl")  # the active version
    policy.reset(PolicyContext({}, {}, 60.0))
    assert policy.label == "cmd-test"
    # Retrain on the saved dataset; activating it deactivates the first.
    call_command("control", "train-rl", "--dataset", str(tmp_path / "d.npz"), "--steps", "10", "--hidden", "16",
                 "--algorithm", "td3bc", "--name", "cmd-test-2", "--json")
    assert list(PolicyModelVersion.objects.filter(active=True).values_list("name", flat=True)) == ["cmd-test-2"]
    # The record's config or checksum no longer matching the checkpoint: the policy refuses to run.
    version.refresh_from_db()
    version.config["agent"]["hidden"] = 99
    version.save(update_fields=["config"])
    with pytest.raises(PolicyUnavailable, match="another config"):
        policies.create("rl", model_version="cmd-test").reset(PolicyContext({}, {}, 60.0))
    PolicyModelVersion.objects.filter(name="cmd-test-2").update(checksum_sha256="f" * 64)
    with pytest.raises(PolicyUnavailable, match="SHA-256"):
        policies.create("rl").reset(PolicyContext({}, {}, 60.0))
    PolicyModelVersion.objects.update(active=False)
    with pytest.raises(PolicyUnavailable, match="no active RL model"):
        policies.create("rl").reset(PolicyContext({}, {}, 60.0))
