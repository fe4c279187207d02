"""PPO loss: clipped surrogate, (optionally clipped) value loss and entropy bonus, with diagnostics.

All functions take one device's share of a minibatch (any shape [N, ...]); with an `axis_name` the advantage
normalisation statistics are those of the whole global minibatch, so the result does not depend on the device count.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from jaxppo.collectives import pmean


class LossInputs(NamedTuple):
    """One minibatch. Leading axis N (samples); obs already normalised as the policy saw them."""

    obs: jax.Array  # float32 [N, *obs]
    actions: jax.Array  # int32 [N] or float32 [N, D]
    old_log_probs: jax.Array  # float32 [N]
    old_values: jax.Array  # float32 [N]
    advantages: jax.Array  # float32 [N]
    returns: jax.Array  # float32 [N]


@struct.dataclass
class LossMetrics:
    """Scalars of one minibatch (device means; averaged over devices by the update)."""

    total_loss: jax.Array
    policy_loss: jax.Array
    value_loss: jax.Array
    entropy: jax.Array
    approx_kl: jax.Array
    clip_fraction: jax.Array


def normalize_advantages(advantages: jax.Array, axis_name: str | None = None) -> jax.Array:
    """(A - mean) / (std + 1e-8), mean and (population) std over the global minibatch."""
    mean = pmean(jnp.mean(advantages), axis_name)
    var = pmean(jnp.mean(jnp.square(advantages - mean)), axis_name)
    return (advantages - mean) / (jnp.sqrt(var) + 1e-8)


def clipped_surrogate_loss(log_probs: jax.Array, old_log_probs: jax.Array, advantages: jax.Array,
                           clip_eps: jax.Array | float) -> tuple[jax.Array, jax.Array]:
    """mean_i max(-A_i r_i, -A_i clip(r_i, 1 - eps, 1 + eps)), r_i = exp(log pi - log pi_old).

    Returns (loss, ratio [N]). Where the clipped term is the max, its gradient w.r.t. log pi is zero.
    """
    ratio = jnp.exp(log_probs - old_log_probs)
    unclipped = -advantages * ratio
    clipped = -advantages * jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    return jnp.mean(jnp.maximum(unclipped, clipped)), ratio


def value_loss(values: jax.Array, old_values: jax.Array, returns: jax.Array, clip_eps: jax.Array | float,
               clip: bool) -> jax.Array:
    """0.5 * mean (V - R)^2, or with clipping 0.5 * mean max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2)."""
    unclipped = jnp.square(values - returns)
    if not clip:
        return 0.5 * jnp.mean(unclipped)
    clipped_values = old_values + jnp.clip(values - old_values, -clip_eps, clip_eps)
    return 0.5 * jnp.mean(jnp.maximum(unclipped, jnp.square(clipped_values - returns)))


def ppo_loss(params, network, batch: LossInputs, clip_eps, vf_clip_eps, ent_coef, vf_coef, *,
             normalize_adv: bool, clip_value: bool, axis_name: str | None = None) -> tuple[jax.Array, LossMetrics]:
    """loss = policy_loss + vf_coef * value_loss - ent_coef * entropy, for one minibatch.

    Returns (loss, LossMetrics). approx_kl is the low-variance estimator mean((r - 1) - log r); clip_fraction is
    the share of samples with |r - 1| > clip_eps.
    """
    dist, values = network.apply(params, batch.obs)
    log_probs = dist.log_prob(batch.actions)
    advantages = normalize_advantages(batch.advantages, axis_name) if normalize_adv else batch.advantages
    pg_loss, ratio = clipped_surrogate_loss(log_probs, batch.old_log_probs, advantages, clip_eps)
    v_loss = value_loss(values, batch.old_values, batch.returns, vf_clip_eps, clip_value)
    entropy = jnp.mean(dist.entropy())
    total = pg_loss + vf_coef * v_loss - ent_coef * entropy
    log_ratio = log_probs - batch.old_log_probs
    metrics = LossMetrics(
        total_loss=total,
        policy_loss=pg_loss,
        value_loss=v_loss,
        entropy=entropy,
        approx_kl=jax.lax.stop_gradient(jnp.mean((ratio - 1.0) - log_ratio)),
        clip_fraction=jax.lax.stop_gradient(jnp.mean((jnp.abs(ratio - 1.0) > clip_eps).astype(jnp.float32))),
    )
    return total, metrics
