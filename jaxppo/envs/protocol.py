"""The environment adapter protocol: what the trainer needs from any environment suite.

An adapter wraps ONE environment (no batch axis) behind three pure functions; the trainer vmaps them over its
environments. Steps auto-reset, and report termination and truncation apart, with the observation reached before
the reset (`final_obs`), so time limits can be bootstrapped. Observations are one float32 array (a vector or an
HxWxC image); environments with illegal actions report a boolean mask of the legal ones next to the observation.

    class MyAdapter:
        spec: EnvSpec
        def reset(self, key) -> (state, obs, action_mask)
        def step(self, key, state, action) -> (state, TimeStep)
"""

from __future__ import annotations

import difflib
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np


class EnvSpec(NamedTuple):
    """What the networks and the trainer need to know about an environment's spaces."""

    obs_shape: tuple[int, ...]
    continuous: bool
    num_actions: int  # discrete: number of actions; continuous: flat action dimension
    action_shape: tuple[int, ...]  # () for discrete actions
    action_low: np.ndarray | None  # continuous only, float32 [*action_shape]
    action_high: np.ndarray | None
    has_action_mask: bool = False  # the env reports legal actions (discrete only)
    max_episode_steps: int | None = None  # time limit, if the env has one (evaluation runs this many steps)


class TimeStep(NamedTuple):
    """One env step, for one environment (or B of them after vmap)."""

    obs: jax.Array  # float32 [*obs]: next observation, already auto-reset where the episode ended
    action_mask: jax.Array | None  # bool [A]: legal actions for obs; None when the env has no masks
    reward: jax.Array  # float32 []
    terminated: jax.Array  # bool []: a true terminal state, bootstrap with 0
    truncated: jax.Array  # bool []: time limit (and not terminated), bootstrap from final_obs
    final_obs: jax.Array  # float32 [*obs]: observation this step reached, before any auto-reset


class Env(Protocol):
    """One environment of some suite, behind pure functions (see the module docstring)."""

    spec: EnvSpec

    def reset(self, key: jax.Array) -> tuple[Any, jax.Array, jax.Array | None]:
        """(state, obs float32 [*obs], action_mask bool [A] or None)."""
        ...

    def step(self, key: jax.Array, state: Any, action: jax.Array) -> tuple[Any, TimeStep]:
        """Advance one step with auto-reset; action is an env action (int32 [] or float32 [*action_shape])."""
        ...


def resolve_name(name: str, known: list[str], suite: str) -> str:
    """The registered name for name: exact, else case-insensitive; KeyError naming close matches (adapters'
    `make` raise it; the registry turns it into a one-line ValueError)."""
    if name in known:
        return name
    lowered = {k.lower(): k for k in known}
    if name.lower() in lowered:
        return lowered[name.lower()]
    close = difflib.get_close_matches(name, known, n=4, cutoff=0.4)
    hint = f"did you mean {', '.join(close)}?" if close else f"registered: {', '.join(known)}"
    raise KeyError(f"not a registered {suite} environment; {hint}")


def raw_key_data(key: jax.Array) -> jax.Array:
    """uint32 key data of a typed PRNG key (a raw key is returned as it is). Suites whose states keep a key store
    it raw: the state is then plain arrays, which checkpoints can store."""
    return jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key


def auto_reset(done: jax.Array, reached: tuple[Any, jax.Array, jax.Array | None],
               fresh: tuple[Any, jax.Array, jax.Array | None]) -> tuple[Any, jax.Array, jax.Array | None]:
    """For suites that do not reset themselves: where `done`, the fresh episode's (state, obs, action_mask) replace
    the reached ones. reached/fresh: (state, obs, action_mask or None) of one environment; done: bool []. The
    state keeps the reached state's dtypes (a scan carries it)."""
    (reached_state, reached_obs, reached_mask), (fresh_state, fresh_obs, fresh_mask) = reached, fresh
    state = jax.tree.map(lambda new, old: jnp.where(done, new, old).astype(jnp.result_type(old)), fresh_state,
                         reached_state)
    mask = None if reached_mask is None else jnp.where(done, fresh_mask, reached_mask)
    return state, jnp.where(done, fresh_obs, reached_obs), mask


def reset_batch(env: Env, keys: jax.Array) -> tuple[Any, jax.Array, jax.Array | None]:
    """Reset B environments. keys: [B] -> (state [B], obs float32 [B, *obs], action_mask bool [B, A] or None)."""
    return jax.vmap(env.reset)(keys)


def step_batch(env: Env, keys: jax.Array, state: Any, actions: jax.Array) -> tuple[Any, TimeStep]:
    """Step B environments with auto-reset. keys: [B]; actions: [B, ...] -> (state [B], TimeStep with [B] leaves)."""
    return jax.vmap(env.step)(keys, state, actions)
