"""Evaluation of trained parameters on probe environments with known returns."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import jaxppo
from jaxppo.networks import init_params
from jaxppo.agent import make_agent
from tests import probe_envs


def test_evaluate_time_limit_episode_returns_and_lengths():
    env = probe_envs.TimeLimitNoTermination()  # reward 1 per step, truncated after 5 steps
    config = jaxppo.PPOConfig(env="custom", num_envs=4, num_steps=8, total_timesteps=32, num_minibatches=1)
    agent = make_agent(config, env=env)
    params = init_params(agent.network, agent.spec, jax.random.key(0))
    # Run 12 steps: episodes must stop counting at their first end (5), not continue into the next episode.
    result = jaxppo.evaluate(config, params, jax.random.key(1), num_episodes=6, env=env, max_steps=12)
    np.testing.assert_array_equal(result.returns, np.full(6, 5.0))
    np.testing.assert_array_equal(result.lengths, np.full(6, 5))


def test_evaluate_deterministic_uses_the_greedy_action():
    env = probe_envs.ActionDependentReward()  # reward 1 for action 1, one step
    config = jaxppo.PPOConfig(env="custom", num_envs=4, num_steps=8, total_timesteps=32, num_minibatches=1)
    agent = make_agent(config, env=env)
    params = init_params(agent.network, agent.spec, jax.random.key(0))
    bias = params["params"]["actor_head"]["bias"]
    params["params"]["actor_head"]["bias"] = bias.at[1].set(5.0)  # action 1 strongly preferred
    greedy = jaxppo.evaluate(config, params, jax.random.key(1), num_episodes=50, env=env)
    np.testing.assert_array_equal(greedy.returns, np.ones(50))
    params["params"]["actor_head"]["bias"] = bias.at[1].set(0.0).at[0].set(0.0)  # uniform policy
    sampled = jaxppo.evaluate(config, params, jax.random.key(1), num_episodes=400, env=env, deterministic=False)
    assert 0.4 < float(jnp.mean(sampled.returns)) < 0.6
    np.testing.assert_array_equal(sampled.lengths, np.ones(400))


def test_evaluate_trained_cartpole_policy():
    config = jaxppo.PPOConfig(env="CartPole-v1", total_timesteps=200_000)
    state, _ = jax.jit(jaxppo.make_train(config))(jax.random.key(0))
    result = jaxppo.evaluate(config, state.params, jax.random.key(2), num_episodes=8)
    assert result.returns.shape == (8,)
    np.testing.assert_array_equal(result.returns, result.lengths)  # CartPole pays 1 per step
    assert float(jnp.mean(result.returns)) > 150  # a random policy lasts about 22 steps
