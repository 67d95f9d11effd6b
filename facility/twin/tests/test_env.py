"""The gymnasium env over the twin: API conformance, determinism, the envelope and the reward."""

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from facility.twin.env import TwinEnv


@pytest.fixture
def env(small_site):
    return TwinEnv(small_site, episode_s=300, warmup_s=60, climate="mixed")


def test_env_checker_passes(env):
    check_env(env, skip_render_check=True)


def test_spaces_and_names(env):
    obs, _ = env.reset(seed=0)
    assert obs.shape == env.observation_space.shape == (len(env.observation_names),)
    assert env.action_space.shape == (len(env.points),)
    assert ("crah-a1", "supply_air_temperature_setpoint") in env.points
    assert env.targets(np.ones(len(env.points)))[env.points.index(("crah-a1", "supply_air_temperature_setpoint"))] \
        == 27.0


def _rollout(env, seed, steps=5):
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(7)
    out = [obs]
    rewards = []
    for _ in range(steps):
        obs, r, *_ = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        out.append(obs)
        rewards.append(r)
    return np.array(out), np.array(rewards)


def test_deterministic_for_a_seed(small_site):
    a = _rollout(TwinEnv(small_site, episode_s=300, warmup_s=60), seed=3)
    b = _rollout(TwinEnv(small_site, episode_s=300, warmup_s=60), seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_episode_truncates_after_episode_s(env):
    env.reset(seed=0)
    flags = [env.step(env.action_space.sample())[3] for _ in range(5)]
    assert flags == [False, False, False, False, True]
    assert env.twin.elapsed_s == 60 + 300


def test_extreme_actions_are_clipped_never_violate(env):
    env.reset(seed=0)
    clipped = 0
    for a in (1.0, -1.0, 1.0, -1.0, 1.0):
        _, _, _, _, info = env.step(np.full(env.action_space.shape, a, dtype=np.float32))
        clipped += info["clipped_actions"]
        assert info["envelope_violations"] == 0
        for (u, n), e in env.envelopes.items():
            assert e.allowable_min <= env.twin.setpoint_command(u, n) <= e.allowable_max
    assert clipped > 0
    # Max step 1 K per move and a 300 s dwell: five minutes of "go to 27 C" moves a CRAH by at most 1 K.
    assert env.twin.setpoint_command("crah-a1", "supply_air_temperature_setpoint") <= 18.0 + 1.0


def test_reward_is_energy_per_work_plus_penalties(small_site):
    env = TwinEnv(small_site, episode_s=120, warmup_s=60, w_hot=0, w_throttle=0, w_shutdown=0)
    env.reset(seed=0)
    hold = env.action_space.sample() * 0  # mid-range targets
    _, r, _, _, info = env.step(hold)
    assert r == pytest.approx(-info["kwh"] / info["eflop"])
    assert 0.1 < info["kwh_per_eflop"] < 10
    pen = TwinEnv(small_site, episode_s=120, warmup_s=60, w_hot=0, w_throttle=5.0, w_shutdown=0)
    pen.reset(seed=0)
    _, r2, _, _, info2 = pen.step(hold)
    share = info2["gpu_seconds_throttled"] / (len(pen.twin.gpu_uuids) * 60)
    assert share > 0  # the seed profile's soft derate throttles warm GPUs
    assert r2 == pytest.approx(r - 5.0 * share)
