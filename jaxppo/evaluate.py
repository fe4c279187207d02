"""Policy evaluation: complete episodes run in parallel (vmap), each up to its time limit, truncation respected."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxppo.agent import Agent, initial_carry, make_agent, policy_input, policy_step
from jaxppo.config import PPOConfig
from jaxppo.envs import reset_batch, step_batch
from jaxppo.normalizers import Normalizers


class EvalResult(NamedTuple):
    """Per-episode results. returns: float32 [N] undiscounted raw returns; lengths: int32 [N]."""

    returns: jax.Array
    lengths: jax.Array


def make_evaluate(config: PPOConfig, num_episodes: int = 10, deterministic: bool = True, env: Any = None,
                  env_params: Any = None, max_steps: int | None = None,
                  agent: Agent | None = None) -> Callable[..., EvalResult]:
    """Build evaluate(params, key, normalizers=None) -> EvalResult over num_episodes parallel episodes (jittable).

    Each episode runs from a reset until it terminates or is truncated (its first end); steps after that are
    masked out. The key fixes the resets and, with deterministic=False, the action draws. Policies with memory
    start every episode from the initial carry; action masks are respected.

    Args:
      config: the config the parameters were trained with (network, env id, normalize_observations, obs_clip).
      num_episodes: episodes run in parallel.
      deterministic: act with the distribution's mode (argmax over legal actions / Gaussian mean); False samples.
      env, env_params: an environment instance instead of config.env.
      max_steps: steps to run; default the env's time limit (every episode ends). A smaller value cuts episodes
        short: their length is then max_steps and their return partial.
      agent: an already built agent (jaxppo.agent.make_agent; e.g. the training run's, custom env included)
        instead of building one from config / env / env_params.

    Returns:
      evaluate(params, key, normalizers=None) -> EvalResult with returns float32 [N] and lengths int32 [N].
      normalizers (the trained TrainState.normalizers) are required when config.normalize_observations.
    """
    if num_episodes < 1:
        raise ValueError(f"num_episodes={num_episodes}: must be at least 1")
    agent = make_agent(config, env, env_params) if agent is None else agent
    limit = agent.spec.max_episode_steps if max_steps is None else int(max_steps)
    if limit is None:
        raise ValueError(f"evaluate: {config.env} has no time limit; pass max_steps=...")

    def evaluate(params, key: jax.Array, normalizers: Normalizers | None = None) -> EvalResult:
        reset_key, loop_key = jax.random.split(key)
        state, obs, mask = reset_batch(agent.env, jax.random.split(reset_key, num_episodes))
        carry = initial_carry(agent, num_episodes)
        first = jnp.ones((num_episodes,), bool)

        def body(loop, t):
            state, obs, mask, carry, first, returns, lengths, running = loop
            act_key, env_key = jax.random.split(jax.random.fold_in(loop_key, t))
            x = policy_input(agent.config, obs, normalizers)
            carry, dist, _ = policy_step(agent, params, carry, x, first, mask)
            action = dist.mode() if deterministic else dist.sample(act_key)
            state, step = step_batch(agent.env, jax.random.split(env_key, num_episodes), state,
                                     agent.family.to_env(action))
            returns = returns + jnp.where(running, step.reward, 0.0)
            lengths = lengths + running.astype(jnp.int32)
            done = step.terminated | step.truncated
            running = running & ~done
            return (state, step.obs, step.action_mask, carry, done, returns, lengths, running), None

        init = (state, obs, mask, carry, first, jnp.zeros(num_episodes, jnp.float32),
                jnp.zeros(num_episodes, jnp.int32), jnp.ones(num_episodes, bool))
        final, _ = lax.scan(body, init, jnp.arange(limit))
        return EvalResult(final[5], final[6])

    return evaluate


def evaluate_policy(config: PPOConfig, params, key: jax.Array, num_episodes: int = 10, deterministic: bool = True,
                    normalizers: Normalizers | None = None, env: Any = None, env_params: Any = None,
                    max_steps: int | None = None) -> EvalResult:
    """Run num_episodes complete episodes with params; returns per-episode returns and lengths.

    Compiles on every call; for repeated evaluation build the function once with `make_evaluate` and jit it.

    Args:
      config: the config the parameters were trained with.
      params: network parameters of one seed (e.g. TrainState.params).
      key: PRNG key for the resets and, with deterministic=False, the action draws.
      num_episodes, deterministic, env, env_params, max_steps: as in make_evaluate.
      normalizers: the trained normaliser statistics (TrainState.normalizers); required when
        config.normalize_observations, ignored otherwise.

    Returns:
      EvalResult: returns float32 [num_episodes] (undiscounted, raw rewards), lengths int32 [num_episodes].
    """
    fn = make_evaluate(config, num_episodes, deterministic, env, env_params, max_steps)
    return jax.jit(fn)(params, key, normalizers)
