"""Generalised advantage estimation as a reverse `lax.scan`, with termination and truncation kept apart; the same
scan also gives IMPALA's (and Brax's PPO's) form of the policy's advantages."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

ADVANTAGE_FORMS = ("gae", "vtrace")
"""The policy's advantages `gae` can return (see its docstring): GAE's, or IMPALA's / Brax's PPO's."""


def gae(
    r_t: jax.Array,
    v_t: jax.Array,
    v_next_t: jax.Array,
    terminated_t: jax.Array,
    done_t: jax.Array,
    gamma: jax.Array | float,
    gae_lambda: jax.Array | float,
    horizon: int = 0,
    form: str = "gae",
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

    With form="vtrace" the policy's advantages are IMPALA's (Espeholt et al. 2018, eq. 2 with on-policy V-trace
    targets, rho = c = 1) and Brax's PPO's (`brax/training/agents/ppo/losses.py`, `compute_gae`): the one-step
    return through the next step's lambda-return, minus the value,

        A^vtrace_t = r_t + gamma * (1 - terminated_t) * G_{t+1} - v_t = delta_t + gamma * (1 - cut_t) * A_{t+1}

    with G_{t+1} = v_{t+1} + A_{t+1} the next step's value target (v_next_t where step t cuts the trace; the two
    forms of the equation agree where v_next_t = v_{t+1} inside an episode, as in the trainer's rollouts). Against
    GAE it weighs the next step's advantage by gamma instead of gamma * lambda (the same at lambda = 1). The value
    targets (`returns`) are GAE's lambda-returns in both forms.

    Args:
      r_t: float32 [T, ...] rewards.
      v_t: float32 [T, ...] values of the observations acted on.
      v_next_t: float32 [T, ...] values of the observations reached.
      terminated_t: bool [T, ...] true terminal transitions.
      done_t: bool [T, ...] episode ended at step t (terminated or truncated).
      gamma, gae_lambda: scalars (may be traced).
      horizon: static int >= 0: cut the trace after every `horizon` steps (0: only at episode ends).
      form: static, one of ADVANTAGE_FORMS: "gae" or "vtrace" (above).
    Returns:
      (advantages, returns) float32 [T, ...]: the policy's advantages (of `form`) and the value-loss targets,
      GAE's advantages + v_t.
    """
    if not (r_t.shape == v_t.shape == v_next_t.shape == terminated_t.shape == done_t.shape):
        raise ValueError(
            f"gae: inputs must share one [T, ...] shape, got r_t {r_t.shape}, v_t {v_t.shape}, "
            f"v_next_t {v_next_t.shape}, terminated_t {terminated_t.shape}, done_t {done_t.shape}"
        )
    if not (isinstance(horizon, int) and horizon >= 0):
        raise ValueError(f"gae: horizon={horizon!r} must be an int >= 0 (0: no cut but episode ends)")
    if form not in ADVANTAGE_FORMS:
        raise ValueError(f"gae: form={form!r} must be one of {', '.join(ADVANTAGE_FORMS)}")
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
        return a, (a, delta + gamma * cont * a_next) if form == "vtrace" else a

    _, emitted = lax.scan(backward, jnp.zeros_like(delta_t[0]), (delta_t, not_done), reverse=True)
    advantages, policy_advantages = emitted if form == "vtrace" else (emitted, emitted)
    return policy_advantages, advantages + v_t
