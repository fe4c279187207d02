"""gymnax adapter: batched stepping with final observations, episode statistics, running normalisers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P

import jaxppo
from jaxppo import envs
from jaxppo.collectives import DEVICE_AXIS
from tests import probe_envs


def test_step_envs_keeps_final_observation_apart_from_reset_observation():
    env = probe_envs.TwoStepDiscount()  # obs = time step: 0, 1, then terminal 2 and reset to 0
    params = env.default_params
    keys = jax.random.split(jax.random.key(0), 3)
    obs, state = envs.reset_envs(env, params, keys)
    step = envs.step_envs(env, params, keys, state, jnp.zeros(3, jnp.int32))
    np.testing.assert_array_equal(step.obs[:, 0], [1, 1, 1])
    assert not step.terminated.any() and not step.truncated.any()
    step = envs.step_envs(env, params, keys, step.env_state, jnp.zeros(3, jnp.int32))
    np.testing.assert_array_equal(step.final_obs[:, 0], [2, 2, 2])  # reached by the step
    np.testing.assert_array_equal(step.obs[:, 0], [0, 0, 0])  # auto-reset, what the next step acts on
    np.testing.assert_array_equal(step.reward, [1, 1, 1])
    assert step.terminated.all() and not step.truncated.any()


def test_time_limit_is_truncation_not_termination():
    env = probe_envs.TimeLimitNoTermination()  # truncated after 5 steps
    params = env.default_params
    keys = jax.random.split(jax.random.key(0), 2)
    _, state = envs.reset_envs(env, params, keys)
    flags = []
    for _ in range(5):
        step = envs.step_envs(env, params, keys, state, jnp.zeros(2, jnp.int32))
        state = step.env_state
        flags.append((bool(step.terminated.any()), bool(step.truncated.all())))
    assert flags == [(False, False)] * 4 + [(False, True)]


def test_episode_tally_and_carried_means():
    stats = envs.init_episode_stats(3)
    tally = envs.empty_tally()
    rewards = jnp.array([1.0, 2.0, 3.0])
    stats, tally = envs.track_episodes(stats, tally, rewards, jnp.array([False, False, False]))
    stats, tally = envs.track_episodes(stats, tally, rewards, jnp.array([True, False, True]))
    # Env 0 ended with return 1+1 = 2, env 2 with 3+3 = 6, both after 2 steps; env 1 still runs (4 so far).
    np.testing.assert_allclose(stats.returns, [0.0, 4.0, 0.0])
    np.testing.assert_array_equal(stats.lengths, [0, 2, 0])
    stats, mean_return, mean_length, count = envs.close_tally(stats, tally)
    assert (float(mean_return), float(mean_length), float(count)) == (4.0, 2.0, 2.0)
    # A rollout in which nothing ends repeats the previous means.
    _, mean_return, _, count = envs.close_tally(stats, envs.empty_tally())
    assert (float(mean_return), float(count)) == (4.0, 0.0)


def test_running_moments_match_numpy_over_several_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(n, 2)).astype(np.float32) for n in (5, 17, 64)]
    moments = envs.init_moments((2,))
    for batch in batches:
        moments = envs.update_moments(moments, jnp.asarray(batch))
    data = np.concatenate(batches)
    # Prior: mean 0, var 1, weight 1e-4, merged like one more (tiny) sample set.
    prior = 1e-4
    mean = (data.sum(0)) / (len(data) + prior)
    var = (prior * 1.0 + prior * mean**2 + ((data - mean) ** 2).sum(0)) / (len(data) + prior)
    np.testing.assert_allclose(moments.mean, mean, rtol=1e-5)
    np.testing.assert_allclose(moments.var, var, rtol=1e-4)
    np.testing.assert_allclose(moments.count, len(data) + prior, rtol=1e-6)
    normalized = envs.normalize_obs(moments, jnp.asarray(data), clip=10.0)
    np.testing.assert_allclose(np.mean(normalized, 0), 0.0, atol=1e-3)
    np.testing.assert_allclose(np.std(normalized, 0), 1.0, atol=1e-3)
    assert float(jnp.max(envs.normalize_obs(moments, jnp.full((1, 2), 1e6), clip=5.0))) == 5.0


def test_running_moments_over_devices_equal_single_device():
    data = jax.random.normal(jax.random.key(1), (32, 3)) * 4.0 + 1.0
    single = envs.update_moments(envs.init_moments((3,)), data)
    mesh = Mesh(np.array(jax.devices()[:4]), (DEVICE_AXIS,))
    sharded = jax.jit(jax.shard_map(lambda x: envs.update_moments(envs.init_moments((3,)), x, DEVICE_AXIS),
                                    mesh=mesh, in_specs=P(DEVICE_AXIS), out_specs=P(), check_vma=False))(data)
    np.testing.assert_allclose(sharded.mean, single.mean, rtol=1e-5)
    np.testing.assert_allclose(sharded.var, single.var, rtol=1e-5)
    np.testing.assert_allclose(sharded.count, single.count)


def test_reward_scaling_divides_by_return_std_without_centring():
    moments = envs.RunningMoments(mean=jnp.asarray(5.0), var=jnp.asarray(4.0), count=jnp.asarray(10.0))
    np.testing.assert_allclose(envs.scale_reward(moments, jnp.array([2.0, -30.0]), clip=10.0), [1.0, -10.0],
                               rtol=1e-6)


def test_minatar_cnn_trains_end_to_end():
    config = jaxppo.PPOConfig(env="Breakout-MinAtar", num_envs=4, num_steps=8, total_timesteps=64,
                              num_minibatches=2)
    state, metrics = jax.jit(jaxppo.make_train(config))(jax.random.key(0))
    assert metrics.policy_loss.shape == (2,) and np.all(np.isfinite(np.asarray(metrics.total_loss)))
    assert state.env.obs.shape == (4, 10, 10, 4)
    assert state.params["params"]["actor_torso"]["conv"]["kernel"].shape == (36, 16)
