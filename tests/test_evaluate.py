"""Evaluation of trained parameters on probe environments with known returns."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxppo
from jaxppo.agent import make_agent
from jaxppo.networks import init_params
from jaxppo.normalizers import Normalizers, RunningMoments, init_moments
from tests import probe_envs
from tests.helpers import fold_obs_normalisation


def test_evaluate_time_limit_episode_returns_and_lengths():
    env = probe_envs.TimeLimitNoTermination()  # reward 1 per step, truncated after 5 steps
    config = jaxppo.PPOConfig(env="custom", num_envs=4, num_steps=8, total_timesteps=32, num_minibatches=1)
    agent = make_agent(config, env=env)
    params = init_params(agent.network, agent.spec, jax.random.key(0))
    # Run 12 steps: episodes must stop counting at their first end (5), not continue into the next episode.
    result = jaxppo.evaluate_policy(config, params, jax.random.key(1), num_episodes=6, env=env, max_steps=12)
    np.testing.assert_array_equal(result.returns, np.full(6, 5.0))
    np.testing.assert_array_equal(result.lengths, np.full(6, 5))


def test_evaluate_deterministic_uses_the_greedy_action():
    env = probe_envs.ActionDependentReward()  # reward 1 for action 1, one step
    config = jaxppo.PPOConfig(env="custom", num_envs=4, num_steps=8, total_timesteps=32, num_minibatches=1)
    agent = make_agent(config, env=env)
    params = init_params(agent.network, agent.spec, jax.random.key(0))
    bias = params["params"]["actor_head"]["bias"]
    params["params"]["actor_head"]["bias"] = bias.at[1].set(5.0)  # action 1 strongly preferred
    greedy = jaxppo.evaluate_policy(config, params, jax.random.key(1), num_episodes=50, env=env)
    np.testing.assert_array_equal(greedy.returns, np.ones(50))
    params["params"]["actor_head"]["bias"] = bias.at[1].set(0.0).at[0].set(0.0)  # uniform policy
    sampled = jaxppo.evaluate_policy(config, params, jax.random.key(1), num_episodes=400, env=env, deterministic=False)
    assert 0.4 < float(jnp.mean(sampled.returns)) < 0.6
    np.testing.assert_array_equal(sampled.lengths, np.ones(400))


def test_evaluate_trained_cartpole_policy():
    config = jaxppo.PPOConfig(env="CartPole-v1", total_timesteps=200_000)
    state, _ = jax.jit(jaxppo.make_train(config))(jax.random.key(0))
    result = jaxppo.evaluate_policy(config, state.params, jax.random.key(2), num_episodes=8)
    assert result.returns.shape == (8,)
    np.testing.assert_array_equal(result.returns, result.lengths)  # CartPole pays 1 per step
    assert float(jnp.mean(result.returns)) > 150  # a random policy lasts about 22 steps


def test_evaluate_normalises_observations_once_with_the_given_statistics():
    config = jaxppo.PPOConfig(env="Pendulum-v1", normalize_observations=True, obs_clip=1e3)  # no clipping
    raw_config = dataclasses.replace(config, normalize_observations=False)
    agent = make_agent(config)
    params = init_params(agent.network, agent.spec, jax.random.key(0))
    # A decisive actor (mean actions of order 1, not 0.01) so that different inputs give different returns.
    # (log_std starts at 0, so scaling the whole Gaussian head leaves it at 0)
    params["params"]["actor_head"] = jax.tree.map(lambda x: x * 100.0, params["params"]["actor_head"])
    moments = RunningMoments(mean=jnp.array([0.3, -0.2, 1.0]), var=jnp.array([0.25, 4.0, 9.0]),
                             count=jnp.asarray(100.0))
    key = jax.random.key(3)
    normalizers = Normalizers(obs=moments, reward=init_moments(()))
    result = jaxppo.evaluate_policy(config, params, key, num_episodes=4, normalizers=normalizers)

    # Reference: the same policy written by hand for raw observations (row 0). Rows 1 and 2 show the comparison
    # can tell: statistics ignored, or applied twice, change every episode's return.
    folded = fold_obs_normalisation(params, moments)
    candidates = jax.tree.map(lambda *leaves: jnp.stack(leaves), folded, params,
                              fold_obs_normalisation(folded, moments))
    evaluate_raw = jax.jit(jax.vmap(jaxppo.make_evaluate(raw_config, num_episodes=4), in_axes=(0, None)))
    once, ignored, twice = np.asarray(evaluate_raw(candidates, key).returns)
    np.testing.assert_allclose(result.returns, once, rtol=1e-4)
    np.testing.assert_array_equal(result.lengths, np.full(4, 200))  # Pendulum's time limit
    assert np.all(np.abs(ignored - result.returns) > 1.0) and np.all(np.abs(twice - result.returns) > 1.0)
    with pytest.raises(ValueError, match="normalizers"):
        jaxppo.evaluate_policy(config, params, key, num_episodes=4)


def test_evaluate_recurrent_policy_and_masks_on_probes():
    # A GRU policy evaluates with its carry reset at every episode start; a masked env never gets an illegal action.
    env = probe_envs.RememberTheCue()
    config = jaxppo.PPOConfig(env="custom", num_envs=4, num_steps=8, total_timesteps=32, num_minibatches=1,
                              memory="gru", memory_size=8)
    agent = make_agent(config, env=env)
    params = init_params(agent.network, agent.spec, jax.random.key(0))
    result = jaxppo.evaluate_policy(config, params, jax.random.key(1), num_episodes=16, env=env, max_steps=12)
    np.testing.assert_array_equal(result.lengths, np.full(16, 4))  # cue + 3 steps
    assert set(np.unique(np.asarray(result.returns))) <= {-1.0, 1.0}

    masked = probe_envs.MaskedBestAction()
    config = jaxppo.PPOConfig(env="custom", num_envs=4, num_steps=8, total_timesteps=32, num_minibatches=1)
    agent = make_agent(config, env=masked)
    params = init_params(agent.network, agent.spec, jax.random.key(0))
    params["params"]["actor_head"]["bias"] = jnp.array([10.0, 0.0, 0.0])  # action 0 preferred, illegal on +1
    result = jaxppo.evaluate_policy(config, params, jax.random.key(2), num_episodes=200, env=masked,
                                    deterministic=False)
    # Legal action 0 pays 1 on -1 observations; on +1 the best legal preference is action 1 or 2 (0.5 or 0).
    returns = np.asarray(result.returns)
    assert set(np.unique(returns)) <= {0.0, 0.5, 1.0} and np.any(returns == 1.0) and np.any(returns < 1.0)
