"""The environment adapter protocol: what the trainer needs from any environment suite.

An adapter wraps ONE environment (no batch axis) behind three pure functions; the trainer vmaps them over its
environments. Steps auto-reset, and report termination and truncation apart, with the observation reached before
the reset (`final_obs`), so time limits can be bootstrapped. Observations are one float32 array (a vector or an
HxWxC image); environments with illegal actions report a boolean mask of the legal ones next to the observation.

    class MyAdapter:
        spec: EnvSpec
        def reset(self, key) -> (state, obs, action_mask)
        def step(self, key, state, action) -> (state, TimeStep)
        def step_reached(self, key, state, action) -> (state, TimeStep)   # optional: see step_batch
        def step_reset(self, key) -> (state, obs, action_mask)             # optional, with step_reached

An adapter whose reset is costly (a generated world: a Craftax reset costs ~25x its step) may also offer
`step_reached`: the same step without the auto-reset (the reached state; `obs` = `final_obs`), and, where its
step does not reset with the step's own key, `step_reset(key)`: the fresh episode that step would start (default:
`reset(key)`). `step_batch` then resets only the environments that ended (`reset_where`) instead of computing a
fresh reset for all B and keeping the ended ones' — the same results, at the cost of the resets that happen.
"""

from __future__ import annotations

import difflib
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


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


RESET_CHUNKS = 16
"""reset_where resets the ended environments of a batch of B in chunks of ceil(B / RESET_CHUNKS)."""


def reset_where(env: Env, keys: jax.Array, done: jax.Array, reached: tuple[Any, jax.Array, jax.Array | None],
                chunk: int | None = None) -> tuple[Any, jax.Array, jax.Array | None]:
    """Auto-reset of a batch that computes only the resets that happen: where done[e], environment e's
    (state, obs, action_mask) become the adapter's step_reset(keys[e]) (reset(keys[e]) if it has none), as
    vmapping `auto_reset` over the batch gives; but the ended environments are gathered first and reset `chunk` at
    a time in a while loop (ceil(count / chunk) iterations; none when no episode ended), instead of resetting all B
    and keeping the ended ones'.

    Bitwise the same as the vmapped form where the reset gives the same result at any position in a vmapped batch.
    Craftax's world generation does not (measured: rows 8-15 of a batch of 16 generate other worlds than the same
    keys at rows 0-7), so there the worlds differ from the old form's, as they already did between device layouts.

    Args:
      keys: [B] the step keys (the ones `step` would reset with); done: bool [B];
      reached: (state [B], obs [B, *obs], action_mask [B, A] or None) the step reached;
      chunk: resets per iteration (default ceil(B / RESET_CHUNKS)).
    Returns:
      (state [B], obs [B, *obs], action_mask or None), with the reached state's dtypes.
    """
    reset = getattr(env, "step_reset", env.reset)
    batch = done.shape[0]
    chunk = min(batch, chunk or -(-batch // RESET_CHUNKS))
    order = jnp.argsort(jnp.logical_not(done), stable=True).astype(jnp.int32)  # the ended environments first
    count = jnp.sum(done, dtype=jnp.int32)

    def reset_chunk(carry):
        start, current = carry
        # The last chunk may overlap the one before (the start is clamped to B - chunk): those environments get
        # the same fresh value again.
        begin = jnp.minimum(start, batch - chunk)
        ids = lax.dynamic_slice(order, (begin,), (chunk,))
        ended = begin + jnp.arange(chunk, dtype=jnp.int32) < count  # [chunk]: ids[i] is an ended environment
        fresh = jax.vmap(reset)(keys[ids])

        def put(old, new):
            rows = old[ids]
            chosen = jnp.where(ended.reshape((chunk,) + (1,) * (rows.ndim - 1)), new.astype(rows.dtype), rows)
            return old.at[ids].set(chosen)

        return start + chunk, jax.tree.map(put, current, fresh)

    _, result = lax.while_loop(lambda carry: carry[0] < count, reset_chunk, (jnp.int32(0), reached))
    return result


def step_batch(env: Env, keys: jax.Array, state: Any, actions: jax.Array) -> tuple[Any, TimeStep]:
    """Step B environments with auto-reset. keys: [B]; actions: [B, ...] -> (state [B], TimeStep with [B] leaves).

    With an adapter's `step_reached` (module docstring), only the environments that ended are reset (reset_where);
    otherwise the adapter's own auto-resetting `step` is vmapped."""
    step_reached = getattr(env, "step_reached", None)
    if step_reached is None:
        return jax.vmap(env.step)(keys, state, actions)
    reached, timestep = jax.vmap(step_reached)(keys, state, actions)
    done = timestep.terminated | timestep.truncated
    state, obs, mask = reset_where(env, keys, done, (reached, timestep.obs, timestep.action_mask))
    return state, timestep._replace(obs=obs, action_mask=mask)
