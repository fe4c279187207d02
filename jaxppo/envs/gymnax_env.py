"""gymnax adapter (gymnax >= 1.0, six-value step API): any registered id (case-insensitive) or gymnax `Environment`
instance.

Action masks: an environment may declare its legal actions with a method `action_mask(state, params) -> bool [A]`;
the adapter then reports the mask of every observation it returns.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxppo.envs.protocol import EnvSpec, TimeStep, resolve_name

# gymnax is imported inside the functions that need it: importing it starts JAX's backend, which must wait until
# jax.distributed.initialize has run in a multi-host program.


def registered_ids() -> list[str]:
    """gymnax environment ids, built-in and registered at run time with `gymnax.register`."""
    import gymnax

    return list(gymnax.registered_envs)


def is_gymnax_env(env: Any) -> bool:
    """Whether env looks like a gymnax Environment (has reset/step/action_space/observation_space)."""
    return all(hasattr(env, name) for name in ("reset", "step", "action_space", "observation_space"))


def time_limit(env_params: Any) -> int | None:
    """env_params.max_steps_in_episode as an int (some gymnax envs store it as a float, e.g. 100.0), or None."""
    limit = getattr(env_params, "max_steps_in_episode", None)
    try:
        value = float(limit)
    except (TypeError, ValueError):  # absent, or not a concrete number
        return None
    return int(value) if math.isfinite(value) and value >= 1 and value == int(value) else None


def read_spec(env: Any, env_params: Any) -> EnvSpec:
    """Observation and action spaces of a gymnax environment (ValueError for unsupported spaces)."""
    from gymnax.environments import spaces

    obs_space = env.observation_space(env_params)
    if not isinstance(obs_space, spaces.Box):
        raise ValueError(
            f"env {env.name}: observation space {obs_space!r} is not supported; jaxppo needs a single Box "
            "(vector or HxWxC image) observation"
        )
    obs_shape = tuple(int(d) for d in obs_space.shape)
    limit = time_limit(env_params)
    action_space = env.action_space(env_params)
    if isinstance(action_space, spaces.Discrete):
        return EnvSpec(obs_shape, False, int(action_space.n), (), None, None,
                       has_action_mask=callable(getattr(env, "action_mask", None)), max_episode_steps=limit)
    if isinstance(action_space, spaces.Box):
        shape = tuple(int(d) for d in action_space.shape)
        low = np.broadcast_to(np.asarray(action_space.low, np.float32), shape)
        high = np.broadcast_to(np.asarray(action_space.high, np.float32), shape)
        return EnvSpec(obs_shape, True, int(math.prod(shape)), shape, low, high, max_episode_steps=limit)
    raise ValueError(f"env {env.name}: action space {action_space!r} is not supported (Discrete or Box only)")


class GymnaxEnv:
    """A gymnax environment and its parameters behind the adapter protocol (see jaxppo.envs.protocol)."""

    def __init__(self, env: Any, env_params: Any = None):
        self.env = env
        self.env_params = env.default_params if env_params is None else env_params
        self.spec = read_spec(env, self.env_params)

    def _mask(self, state: Any) -> jax.Array | None:
        if not self.spec.has_action_mask:
            return None
        return jnp.asarray(self.env.action_mask(state, self.env_params), bool).reshape(self.spec.num_actions)

    def reset(self, key: jax.Array) -> tuple[Any, jax.Array, jax.Array | None]:
        obs, state = self.env.reset(key, self.env_params)
        return state, jnp.asarray(obs, jnp.float32), self._mask(state)

    def step(self, key: jax.Array, state: Any, action: jax.Array) -> tuple[Any, TimeStep]:
        obs, state, reward, terminated, truncated, info = self.env.step(key, state, action, self.env_params)
        terminated = jnp.asarray(terminated, bool).reshape(())
        return state, TimeStep(
            obs=jnp.asarray(obs, jnp.float32),
            action_mask=self._mask(state),
            reward=jnp.asarray(reward, jnp.float32).reshape(()),
            terminated=terminated,
            truncated=jnp.asarray(truncated, bool).reshape(()) & ~terminated,
            final_obs=jnp.asarray(info["final_observation"], jnp.float32),
        )


def make(env_id: str) -> GymnaxEnv:
    """The adapter of a registered gymnax id (matched exactly, else case-insensitively: 'cartpole-v1') with its
    default parameters; KeyError naming close matches for an unknown id."""
    import gymnax

    env, env_params = gymnax.make(resolve_name(env_id, registered_ids(), "gymnax"))
    return GymnaxEnv(env, env_params)
