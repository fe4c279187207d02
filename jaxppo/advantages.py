"""Generalised advantage estimation as a reverse `lax.scan`, with termination and truncation kept apart."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def gae(
    r_t: jax.Array,
    v_t: jax.Array,
    v_next_t: jax.Array,
    terminated_t: jax.Array,
    done_t: jax.Array,
    gamma: jax.Array | float,
    gae_lambda: jax.Array | float,
    horizon: int = 0,
) -> tuple[jax.Array, jax.Array]:
    """GAE(lambda) over a time-major rollout.

        delta_t = r_t + gamma * (1 - terminated_t) * v_next_t - v_t
        A_t     = delta_t + gamma * lambda * (1 - cut_t) * A_{t+1},      A_T = 0
        cut_t   = done_t, or (horizon > 0) t + 1 is a multiple of horizon

    `v_next_t` is the value of the observation that step t reached *before* any auto-reset (gymnax's
    `final_observation`): on truncation the return is bootstrapped from it, on termination with 0. `done_t`
    (terminated or truncated) cuts the trace, so no advantage leaks across an episode boundary. The last step of the
    rollout bootstraps from its own `v_next_t`, which needs no special case. With a horizon k the trace is also cut
    after every k steps of the rollout, so each advantage sums at most k TD errors and the return bootstraps from
    the critic there: GAE over unrolls of k steps, as Brax's PPO computes it over its `unroll_length` (5 in its
    notebooks); the values are unchanged, only how far each advantage looks ahead.

    Args:
      r_t: float32 [T, ...] rewards.
      v_t: float32 [T, ...] values of the observations acted on.
      v_next_t: float32 [T, ...] values of the observations reached.
      terminated_t: bool [T, ...] true terminal transitions.
      done_t: bool [T, ...] episode ended at step t (terminated or truncated).
      gamma, gae_lambda: scalars (may be traced).
      horizon: static int >= 0: cut the trace after every `horizon` steps (0: only at episode ends).
    Returns:
      (advantages, returns) float32 [T, ...], returns = advantages + v_t (the value-loss targets).
    """
    if not (r_t.shape == v_t.shape == v_next_t.shape == terminated_t.shape == done_t.shape):
        raise ValueError(
            f"gae: inputs must share one [T, ...] shape, got r_t {r_t.shape}, v_t {v_t.shape}, "
            f"v_next_t {v_next_t.shape}, terminated_t {terminated_t.shape}, done_t {done_t.shape}"
        )
    if not (isinstance(horizon, int) and horizon >= 0):
        raise ValueError(f"gae: horizon={horizon!r} must be an int >= 0 (0: no cut but episode ends)")
    not_terminated = 1.0 - terminated_t.astype(jnp.float32)
    cut_t = done_t
    if horizon:
        unroll_ends = (jnp.arange(r_t.shape[0]) + 1) % horizon == 0
        cut_t = done_t | unroll_ends.reshape((-1,) + (1,) * (r_t.ndim - 1))
    not_done = 1.0 - cut_t.astype(jnp.float32)
    delta_t = r_t + gamma * not_terminated * v_next_t - v_t

    def backward(a_next, inputs):
        delta, cont = inputs
        a = delta + gamma * gae_lambda * cont * a_next
        return a, a

    _, advantages = lax.scan(backward, jnp.zeros_like(delta_t[0]), (delta_t, not_done), reverse=True)
    return advantages, advantages + v_t
