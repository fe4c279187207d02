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
) -> tuple[jax.Array, jax.Array]:
    """GAE(lambda) over a time-major rollout.

        delta_t = r_t + gamma * (1 - terminated_t) * v_next_t - v_t
        A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1},      A_T = 0

    `v_next_t` is the value of the observation that step t reached *before* any auto-reset (gymnax's
    `final_observation`): on truncation the return is bootstrapped from it, on termination with 0. `done_t`
    (terminated or truncated) cuts the trace, so no advantage leaks across an episode boundary. The last step of the
    rollout bootstraps from its own `v_next_t`, which needs no special case.

    Args:
      r_t: float32 [T, ...] rewards.
      v_t: float32 [T, ...] values of the observations acted on.
      v_next_t: float32 [T, ...] values of the observations reached.
      terminated_t: bool [T, ...] true terminal transitions.
      done_t: bool [T, ...] episode ended at step t (terminated or truncated).
      gamma, gae_lambda: scalars (may be traced).
    Returns:
      (advantages, returns) float32 [T, ...], returns = advantages + v_t (the value-loss targets).
    """
    if not (r_t.shape == v_t.shape == v_next_t.shape == terminated_t.shape == done_t.shape):
        raise ValueError(
            f"gae: inputs must share one [T, ...] shape, got r_t {r_t.shape}, v_t {v_t.shape}, "
            f"v_next_t {v_next_t.shape}, terminated_t {terminated_t.shape}, done_t {done_t.shape}"
        )
    not_terminated = 1.0 - terminated_t.astype(jnp.float32)
    not_done = 1.0 - done_t.astype(jnp.float32)
    delta_t = r_t + gamma * not_terminated * v_next_t - v_t

    def backward(a_next, inputs):
        delta, cont = inputs
        a = delta + gamma * gae_lambda * cont * a_next
        return a, a

    _, advantages = lax.scan(backward, jnp.zeros_like(delta_t[0]), (delta_t, not_done), reverse=True)
    return advantages, advantages + v_t
