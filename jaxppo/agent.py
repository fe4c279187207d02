"""The agent a config describes: environment, its spaces and the actor-critic network; and the public
`make_policy` / `make_value_fn` that act with trained parameters."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxppo import envs
from jaxppo.config import CUSTOM_ENV, PPOConfig, check_env_compatible
from jaxppo.envs import EnvSpec, RunningMoments, normalize_obs
from jaxppo.networks import ActorCritic, make_network


class Agent(NamedTuple):
    """Static description of what is trained: config, gymnax env + params, spaces and network module."""

    config: PPOConfig
    env: Any
    env_params: Any
    spec: EnvSpec
    network: ActorCritic


def make_agent(config: PPOConfig, env: Any = None, env_params: Any = None) -> Agent:
    """Resolve the environment (config.env id, or the given gymnax instance) and build the network."""
    if env is None:
        if config.env == CUSTOM_ENV:
            raise ValueError("env='custom': pass the gymnax Environment instance as make_train(config, env=...)")
        env, default_params = envs.make_env(config.env)
        env_params = default_params if env_params is None else env_params
    else:
        for attribute in ("reset", "step", "action_space", "observation_space"):
            if not hasattr(env, attribute):
                raise ValueError(f"env={env!r}: not a gymnax Environment (missing .{attribute})")
        env_params = env.default_params if env_params is None else env_params
    check_env_compatible(config, env, env_params)
    spec = envs.env_spec(env, env_params)
    return Agent(config, env, env_params, spec, make_network(config, spec))


def policy_input(config: PPOConfig, obs: jax.Array, obs_moments: RunningMoments | None) -> jax.Array:
    """What the networks see: raw float32 obs, or obs normalised with the given moments."""
    obs = jnp.asarray(obs, jnp.float32)
    if not config.normalize_observations:
        return obs
    if obs_moments is None:
        raise ValueError(
            "normalize_observations=True: pass the normaliser statistics, e.g. act(state.params, obs, key, "
            "obs_moments=state.obs_moments)"
        )
    return normalize_obs(obs_moments, obs, config.obs_clip)


def env_action(spec: EnvSpec, action: jax.Array) -> jax.Array:
    """Map policy actions [..., D] to the env's action space: reshape and clip continuous ones (the env boundary)."""
    if not spec.continuous:
        return action
    lead = action.shape[:-1]
    return jnp.clip(action.reshape(lead + spec.action_shape), spec.action_low, spec.action_high)


def make_policy(config: PPOConfig, env: Any = None, env_params: Any = None) -> Callable:
    """act(params, obs, key=None, obs_moments=None) -> env actions for obs [..., *obs_shape].

    key=None acts deterministically (argmax / Gaussian mean); a key samples. Continuous actions are clipped to the
    action space, as the environment receives them.
    """
    agent = make_agent(config, env, env_params)

    def act(params, obs: jax.Array, key: jax.Array | None = None,
            obs_moments: RunningMoments | None = None) -> jax.Array:
        dist = agent.network.apply(params, policy_input(config, obs, obs_moments), method=agent.network.policy)
        action = dist.mode() if key is None else dist.sample(key)
        return env_action(agent.spec, action)

    return act


def make_value_fn(config: PPOConfig, env: Any = None, env_params: Any = None) -> Callable:
    """value(params, obs, obs_moments=None) -> float32 [...] predicted state values for obs [..., *obs_shape]."""
    agent = make_agent(config, env, env_params)

    def value(params, obs: jax.Array, obs_moments: RunningMoments | None = None) -> jax.Array:
        return agent.network.apply(params, policy_input(config, obs, obs_moments), method=agent.network.value)

    return value
