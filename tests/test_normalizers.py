"""Running normalisers: moments against NumPy, the same over devices as on one, reward scaling without centring."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P

from jaxppo.collectives import DEVICE_AXIS, gather, local_moments
from jaxppo.normalizers import RunningMoments, init_moments, merge_moments, normalize_obs, scale_reward


def update_moments(moments, batch, axis_name=None):
    """What the trainer does with a rollout's observations: this device's moments, one all-gather, merge."""
    return merge_moments(moments, gather(local_moments(batch, (0,)), axis_name), batch.shape[0])


def test_running_moments_match_numpy_over_several_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(n, 2)).astype(np.float32) for n in (5, 17, 64)]
    moments = init_moments((2,))
    for batch in batches:
        moments = update_moments(moments, jnp.asarray(batch))
    data = np.concatenate(batches)
    # Prior: mean 0, var 1, weight 1e-4, merged like one more (tiny) sample set.
    prior = 1e-4
    mean = (data.sum(0)) / (len(data) + prior)
    var = (prior * 1.0 + prior * mean**2 + ((data - mean) ** 2).sum(0)) / (len(data) + prior)
    np.testing.assert_allclose(moments.mean, mean, rtol=1e-5)
    np.testing.assert_allclose(moments.var, var, rtol=1e-4)
    np.testing.assert_allclose(moments.count, len(data) + prior, rtol=1e-6)
    normalized = normalize_obs(moments, jnp.asarray(data), clip=10.0)
    np.testing.assert_allclose(np.mean(normalized, 0), 0.0, atol=1e-3)
    np.testing.assert_allclose(np.std(normalized, 0), 1.0, atol=1e-3)
    assert float(jnp.max(normalize_obs(moments, jnp.full((1, 2), 1e6), clip=5.0))) == 5.0


def test_running_moments_over_devices_equal_single_device():
    data = jax.random.normal(jax.random.key(1), (32, 3)) * 4.0 + 1.0
    single = update_moments(init_moments((3,)), data)
    mesh = Mesh(np.array(jax.devices()[:4]), (DEVICE_AXIS,))
    sharded = jax.jit(jax.shard_map(lambda x: update_moments(init_moments((3,)), x, DEVICE_AXIS),
                                    mesh=mesh, in_specs=P(DEVICE_AXIS), out_specs=P(), check_vma=False))(data)
    np.testing.assert_allclose(sharded.mean, single.mean, rtol=1e-5)
    np.testing.assert_allclose(sharded.var, single.var, rtol=1e-5)
    np.testing.assert_allclose(sharded.count, single.count)


def test_reward_scaling_divides_by_return_std_without_centring():
    moments = RunningMoments(mean=jnp.asarray(5.0), var=jnp.asarray(4.0), count=jnp.asarray(10.0))
    np.testing.assert_allclose(scale_reward(moments, jnp.array([2.0, -30.0]), clip=10.0), [1.0, -10.0], rtol=1e-6)


def test_warm_up_seeds_the_statistics_in_separate_environments():
    import jaxppo
    from jaxppo.train import init_state, make_train_parts

    config = jaxppo.PPOConfig(env="Pendulum-v1", num_envs=4, num_steps=8, total_timesteps=64, num_minibatches=1,
                              normalize_observations=True, normalize_rewards=True, normalizer_warmup_steps=50)
    agent = make_train_parts(config).agent
    state = init_state(agent, jax.random.key(0), jaxppo.HParams.from_config(config))
    # 4 environments x 50 warm-up steps were merged into the prior (weight 1e-4).
    np.testing.assert_allclose(float(state.normalizers.obs.count), 200 + 1e-4, rtol=1e-6)
    np.testing.assert_allclose(float(state.normalizers.reward.count), 200 + 1e-4, rtol=1e-6)
    assert float(state.normalizers.reward.var) > 0.1  # returns of a random policy on Pendulum are far from 0
    # cos, sin of the angle: the mean of |cos|, |sin| is well inside [0, 1]; the angular velocity varies.
    assert float(jnp.max(jnp.abs(state.normalizers.obs.mean))) < 1.0 and float(state.normalizers.obs.var[2]) > 0.01
    # The trained environments start fresh: no step taken, every observation the first of an episode.
    assert bool(jnp.all(state.env.first)) and int(jnp.sum(state.env.episodes.lengths)) == 0
    plain = init_state(make_train_parts(jaxppo.PPOConfig(**{**config.__dict__, "normalizer_warmup_steps": 0}))
                       .agent, jax.random.key(0), jaxppo.HParams.from_config(config))
    np.testing.assert_array_equal(np.asarray(plain.env.obs), np.asarray(state.env.obs))  # same resets either way
    np.testing.assert_allclose(float(plain.normalizers.obs.count), 1e-4)
