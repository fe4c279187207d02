"""The agent: what the network sees (normalised observations), env actions (reshape and clip at the boundary),
make_policy / make_value_fn."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxppo
from jaxppo.agent import make_agent, policy_input
from jaxppo.distributions import make_family
from jaxppo.envs import EnvSpec
from jaxppo.networks import init_params
from jaxppo.normalizers import Normalizers, RunningMoments, init_moments


def test_continuous_actions_are_reshaped_and_clipped_only_at_the_env_boundary():
    spec = EnvSpec(obs_shape=(3,), continuous=True, num_actions=4, action_shape=(2, 2),
                   action_low=np.full((2, 2), -1.0, np.float32), action_high=np.array([[1, 2], [3, 4]], np.float32))
    flat = jnp.array([[5.0, -5.0, 2.5, 0.5], [0.0, 0.0, 0.0, 9.0]])
    family = make_family(jaxppo.PPOConfig(env="Pendulum-v1"), spec)
    out = np.asarray(family.to_env(flat))
    assert out.shape == (2, 2, 2)
    np.testing.assert_array_equal(out[0], [[1.0, -1.0], [2.5, 0.5]])
    np.testing.assert_array_equal(out[1], [[0.0, 0.0], [0.0, 4.0]])
    discrete = EnvSpec((3,), False, 2, (), None, None)
    np.testing.assert_array_equal(make_family(jaxppo.PPOConfig(), discrete).to_env(jnp.array([1, 0])), [1, 0])


def test_policy_input_normalises_with_the_given_statistics_or_asks_for_them():
    config = jaxppo.PPOConfig(normalize_observations=True, obs_clip=2.0)
    normalizers = Normalizers(obs=RunningMoments(jnp.array([1.0, 0, 0, 0]), jnp.array([4.0, 1, 1, 1]),
                                                 jnp.asarray(3.0)), reward=init_moments(()))
    x = np.asarray(policy_input(config, jnp.array([[5.0, 0.5, -9.0, 0.0]]), normalizers))
    np.testing.assert_allclose(x, [[2.0, 0.5, -2.0, 0.0]], rtol=1e-6)  # (5-1)/2 = 2; -9 clipped at -2
    with pytest.raises(ValueError, match="normalizers=state.normalizers"):
        policy_input(config, jnp.zeros((1, 4)), None)
    plain = jaxppo.PPOConfig()
    np.testing.assert_array_equal(policy_input(plain, jnp.ones((1, 4)), None), np.ones((1, 4)))


def test_make_policy_and_value_fn_follow_leading_axes():
    config = jaxppo.PPOConfig(env="Pendulum-v1")
    agent = make_agent(config)
    params = init_params(agent.network, agent.spec, jax.random.key(0))
    act, value = jaxppo.make_policy(config), jaxppo.make_value_fn(config)
    obs = jax.random.normal(jax.random.key(1), (3, 5, 3))
    greedy = act(params, obs)
    assert greedy.shape == (3, 5, 1) and float(jnp.max(jnp.abs(greedy))) <= 2.0
    sampled = act(params, obs, jax.random.key(2))
    assert sampled.shape == (3, 5, 1) and not np.allclose(sampled, greedy)
    assert value(params, obs).shape == (3, 5)
    np.testing.assert_allclose(value(params, obs)[1, 2], value(params, obs[1, 2])[()], rtol=1e-5)
