"""Rollouts: shapes, the final observation apart from the reset one, truncation bootstraps, the discounted return
reset on done, scaled rewards for learning with raw episode statistics, and randomness by global env index."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

import jaxppo
from jaxppo.agent import make_agent, policy_input
from jaxppo.networks import init_params
from jaxppo.normalizers import Normalizers, RunningMoments, init_moments, init_normalizers
from jaxppo.rollout import next_values, reset_envs, rollout, rollout_randomness
from tests import probe_envs


def _setup(config, env=None):
    agent = make_agent(config, env=env)
    params = init_params(agent.network, agent.spec, jax.random.key(0))
    ids = jnp.arange(config.num_envs, dtype=jnp.int32)
    return agent, params, reset_envs(agent, jax.random.key(1), ids), ids


def test_shapes_and_first_flags():
    config = jaxppo.PPOConfig(num_envs=3, num_steps=40, total_timesteps=120, num_minibatches=1)
    agent, params, carry, ids = _setup(config)
    carry, traj, tally = rollout(agent, params, carry, jax.random.key(2), ids, init_normalizers((4,)), 0.99)
    chex.assert_shape((traj.obs, traj.action, traj.log_prob, traj.value, traj.reward, traj.first),
                      [(40, 3, 4), (40, 3), (40, 3), (40, 3), (40, 3), (40, 3)])
    assert traj.action_mask is None and traj.discounted_return is None  # nothing stored that is not needed
    done = np.asarray(traj.terminated | traj.truncated)
    first = np.asarray(traj.first)
    assert first[0].all()  # fresh environments
    np.testing.assert_array_equal(first[1:], done[:-1])  # obs t+1 starts an episode exactly when step t ended one
    np.testing.assert_array_equal(np.asarray(carry.first), done[-1])
    assert float(tally.count) == done.sum()


def test_truncated_steps_bootstrap_from_the_final_observation():
    env = probe_envs.TimeLimitNoTermination()  # truncated after 5 steps; obs is constant 1 before and after
    config = jaxppo.PPOConfig(env="custom", num_envs=2, num_steps=12, total_timesteps=24, num_minibatches=1)
    agent, params, carry, ids = _setup(config, env)
    end, traj, _ = rollout(agent, params, carry, jax.random.key(2), ids, init_normalizers((1,)), 0.9)
    truncated = np.asarray(traj.truncated)
    assert truncated[[4, 9]].all() and truncated.sum() == 4 and not np.asarray(traj.terminated).any()
    v_one = float(agent.network.apply(params, (), jnp.ones((1, 1)), method=agent.network.value_from)[0])
    np.testing.assert_allclose(np.asarray(traj.bootstrap_value)[truncated], v_one, rtol=1e-6)
    assert not np.asarray(traj.bootstrap_value)[~truncated].any()
    # GAE's next values: the bootstrap at truncations, else the next step's value (the last: the carry's obs).
    v_next = np.asarray(next_values(agent, params, end, traj, init_normalizers((1,))))
    np.testing.assert_allclose(v_next[:-1][~truncated[:-1]], np.asarray(traj.value)[1:][~truncated[:-1]], rtol=1e-6)
    np.testing.assert_allclose(v_next[truncated], v_one, rtol=1e-6)


def test_scaled_rewards_for_learning_raw_returns_in_episode_statistics():
    env = probe_envs.TwoStepDiscount()  # rewards 0 then 1, episodes of 2 steps
    config = jaxppo.PPOConfig(env="custom", num_envs=2, num_steps=6, total_timesteps=12, num_minibatches=1,
                              normalize_rewards=True)
    agent, params, carry, ids = _setup(config, env)
    normalizers = Normalizers(obs=init_moments((1,)), reward=RunningMoments(jnp.asarray(0.0), jnp.asarray(4.0),
                                                                           jnp.asarray(10.0)))
    _, traj, tally = rollout(agent, params, carry, jax.random.key(2), ids, normalizers, 0.9)
    # Learning sees reward / sqrt(4 + 1e-8) = 0.5; the episode statistics see the raw return 1.
    np.testing.assert_allclose(np.asarray(traj.reward)[1::2], 0.5, rtol=1e-6)
    assert float(tally.return_sum) / float(tally.count) == 1.0
    # The running discounted raw return: 0, 0.9 * 0 + 1 = 1, then reset to 0 at the episode end.
    np.testing.assert_allclose(np.asarray(traj.discounted_return)[:, 0], [0.0, 1.0] * 3, rtol=1e-6)


def test_a_fixed_reward_scale_multiplies_the_learning_reward_only():
    env = probe_envs.TwoStepDiscount()  # rewards 0 then 1, episodes of 2 steps
    base = dict(env="custom", num_envs=2, num_steps=6, total_timesteps=12, num_minibatches=1)
    plain = jaxppo.PPOConfig(**base, reward_scale=10.0)
    agent, params, carry, ids = _setup(plain, env)
    _, traj, tally = rollout(agent, params, carry, jax.random.key(2), ids, init_normalizers((1,)), 0.9)
    np.testing.assert_array_equal(np.asarray(traj.reward), np.tile([[0.0], [10.0]], (3, 2)))  # 10 x (0, 1)
    assert float(tally.return_sum) / float(tally.count) == 1.0  # reported returns stay unscaled
    # With reward normalisation the scale applies after it (Brax's order: scaling of the reward learnt from):
    # 10 x 1 / sqrt(4) = 5.
    both = jaxppo.PPOConfig(**base, reward_scale=10.0, normalize_rewards=True)
    agent, params, carry, ids = _setup(both, env)
    normalizers = Normalizers(obs=init_moments((1,)), reward=RunningMoments(jnp.asarray(0.0), jnp.asarray(4.0),
                                                                           jnp.asarray(10.0)))
    _, traj, _ = rollout(agent, params, carry, jax.random.key(2), ids, normalizers, 0.9)
    np.testing.assert_allclose(np.asarray(traj.reward)[1::2], 5.0, rtol=1e-6)


def test_randomness_depends_on_the_global_env_index_only():
    config = jaxppo.PPOConfig(num_envs=4, num_steps=16, total_timesteps=64, num_minibatches=1)
    agent, params, _, ids = _setup(config)
    key = jax.random.key(7)
    all_envs = rollout(agent, params, reset_envs(agent, jax.random.key(1), ids), key, ids, init_normalizers((4,)),
                       0.99)[1]
    upper = ids[2:]
    two_envs = rollout(agent, params, reset_envs(agent, jax.random.key(1), upper), key, upper,
                       init_normalizers((4,)), 0.99)[1]
    chex.assert_trees_all_close(jax.tree.map(lambda x: x[:, 2:], all_envs), two_envs, rtol=1e-6, atol=1e-7)
    noise, keys = rollout_randomness(agent, key, 3, ids)
    assert noise.shape == (3, 4, 2) and keys.shape == (3, 4)
    noise_23, keys_23 = rollout_randomness(agent, key, 3, ids[2:])
    np.testing.assert_array_equal(noise[:, 2:], noise_23)
    np.testing.assert_array_equal(jax.random.key_data(keys[:, 2:]), jax.random.key_data(keys_23))
    assert len({tuple(np.asarray(jax.random.key_data(k))) for k in keys.ravel()}) == 12  # all distinct


def test_action_noise_from_random_words_has_the_right_distribution():
    from jaxppo.distributions import gumbel_from_bits, normal_from_bits, open_unit_interval

    bits = jax.random.bits(jax.random.key(0), (200_000,), jnp.uint32)
    u = np.asarray(open_unit_interval(bits))
    assert u.min() > 0.0 and u.max() < 1.0
    gumbel = np.asarray(gumbel_from_bits(bits))
    normal = np.asarray(normal_from_bits(bits))
    # Standard Gumbel: mean = Euler's gamma 0.5772, variance pi^2 / 6 = 1.645; standard normal: 0 and 1.
    np.testing.assert_allclose([gumbel.mean(), gumbel.var()], [0.5772, 1.6449], atol=0.02)
    np.testing.assert_allclose([normal.mean(), normal.var()], [0.0, 1.0], atol=0.01)
    assert np.all(np.isfinite(gumbel)) and np.all(np.isfinite(normal))
    extremes = np.asarray(gumbel_from_bits(jnp.array([0, 2**32 - 1], jnp.uint32)))
    assert np.all(np.isfinite(extremes))


def test_observations_are_normalised_only_for_the_network():
    config = jaxppo.PPOConfig(env="Pendulum-v1", num_envs=2, num_steps=4, total_timesteps=8, num_minibatches=1,
                              normalize_observations=True)
    agent, params, carry, ids = _setup(config)
    normalizers = Normalizers(obs=RunningMoments(jnp.array([1.0, 0.0, 0.0]), jnp.array([4.0, 1.0, 1.0]),
                                                 jnp.asarray(5.0)), reward=init_moments(()))
    _, traj, _ = rollout(agent, params, carry, jax.random.key(2), ids, normalizers, 0.99)
    assert float(jnp.max(jnp.abs(traj.obs[..., :2]))) <= 1.0 + 1e-6  # raw cos/sin are stored
    x = policy_input(config, traj.obs[0], normalizers)
    np.testing.assert_allclose(np.asarray(x[:, 0]), (np.asarray(traj.obs[0, :, 0]) - 1.0) / 2.0, rtol=1e-5)
