"""Policy evaluation: complete episodes run in parallel (vmap), each up to its time limit, truncation respected."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxppo.agent import env_action, make_agent, policy_input
from jaxppo.config import PPOConfig
from jaxppo.envs import RunningMoments, reset_envs, step_envs


class EvalResult(NamedTuple):
    """Per-episode results. returns: float32 [N] undiscounted raw returns; lengths: int32 [N]."""

    returns: jax.Array
    lengths: jax.Array


def episode_step_limit(env: Any, env_params: Any, max_steps: int | None) -> int:
    """Steps to run so that every episode ends: the env's time limit unless given."""
    if max_steps is not None:
        return int(max_steps)
    limit = getattr(env_params, "max_steps_in_episode", None)
    if limit is None:
        raise ValueError("evaluate: the environment has no max_steps_in_episode; pass max_steps=...")
    return int(limit)


def make_evaluate(config: PPOConfig, num_episodes: int = 10, deterministic: bool = True, env: Any = None,
                  env_params: Any = None, max_steps: int | None = None) -> Callable[..., EvalResult]:
    """Build evaluate(params, key, obs_moments=None) -> EvalResult over num_episodes parallel episodes (jittable).

    Each episode runs from a reset until it terminates or is truncated (its first `done`); steps after that are
    masked out. The key fixes the resets and, with deterministic=False, the action draws.

    Args:
      config: the config the parameters were trained with (network, env id, normalize_observations, obs_clip).
      num_episodes: episodes run in parallel.
      deterministic: act with the distribution's mode (argmax / Gaussian mean); False samples.
      env, env_params: a gymnax environment instance and its params, instead of config.env.
      max_steps: steps to run; default the env's max_steps_in_episode (every episode ends). A smaller value cuts
        episodes short: their length is then max_steps and their return partial.

    Returns:
      evaluate(params, key, obs_moments=None) -> EvalResult with returns float32 [N] and lengths int32 [N].
      obs_moments (the trained TrainState.obs_moments) is required when config.normalize_observations.
    """
    if num_episodes < 1:
        raise ValueError(f"num_episodes={num_episodes}: must be at least 1")
    agent = make_agent(config, env, env_params)
    limit = episode_step_limit(agent.env, agent.env_params, max_steps)

    def evaluate(params, key: jax.Array, obs_moments: RunningMoments | None = None) -> EvalResult:
        reset_key, loop_key = jax.random.split(key)
        obs, state = reset_envs(agent.env, agent.env_params, jax.random.split(reset_key, num_episodes))

        def body(carry, t):
            obs, state, returns, lengths, running = carry
            step_key = jax.random.fold_in(loop_key, t)
            act_key, env_key = jax.random.split(step_key)
            dist = agent.network.apply(params, policy_input(config, obs, obs_moments), method=agent.network.policy)
            action = dist.mode() if deterministic else dist.sample(act_key)
            step = step_envs(agent.env, agent.env_params, jax.random.split(env_key, num_episodes), state,
                             env_action(agent.spec, action))
            returns = returns + jnp.where(running, step.reward, 0.0)
            lengths = lengths + running.astype(jnp.int32)
            running = running & ~(step.terminated | step.truncated)
            return (step.obs, step.env_state, returns, lengths, running), None

        init = (obs, state, jnp.zeros(num_episodes, jnp.float32), jnp.zeros(num_episodes, jnp.int32),
                jnp.ones(num_episodes, bool))
        (_, _, returns, lengths, _), _ = lax.scan(body, init, jnp.arange(limit))
        return EvalResult(returns, lengths)

    return evaluate


def evaluate(config: PPOConfig, params, key: jax.Array, num_episodes: int = 10, deterministic: bool = True,
             obs_moments: RunningMoments | None = None, env: Any = None, env_params: Any = None,
             max_steps: int | None = None) -> EvalResult:
    """Run num_episodes complete episodes with params; returns per-episode returns and lengths.

    Compiles on every call; for repeated evaluation build the function once with `make_evaluate` and jit it.

    Args:
      config: the config the parameters were trained with.
      params: network parameters of one seed (e.g. TrainState.params).
      key: PRNG key for the resets and, with deterministic=False, the action draws.
      num_episodes, deterministic, env, env_params, max_steps: as in make_evaluate.
      obs_moments: the trained normaliser statistics (TrainState.obs_moments); required when
        config.normalize_observations, ignored otherwise.

    Returns:
      EvalResult: returns float32 [num_episodes] (undiscounted, raw rewards), lengths int32 [num_episodes].
    """
    fn = make_evaluate(config, num_episodes, deterministic, env, env_params, max_steps)
    return jax.jit(fn)(params, key, obs_moments)
