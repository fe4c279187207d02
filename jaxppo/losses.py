"""The PPO loss: clipped surrogate, (optionally clipped) value loss and entropy bonus, with diagnostics.

A loss is a parameter of the trainer (`make_train(config, loss_fn=...)`). It receives the parameters, one
minibatch (`LossInputs`, advantages already normalised with the global minibatch statistics), the traced
hyperparameters of the update (schedules applied), the config and `evaluate` (the update's replay,
`jaxppo.update.make_replay`), which recomputes the action distribution and values of the minibatch
under the given parameters (replaying whole sequences from their stored carry when the policy has memory). It
returns (scalar loss, metrics pytree of scalars); every metric leaf becomes a column of the run's metrics.
Leaf shapes are [N] for feed-forward minibatches and [T, N] for sequences; the losses below are shape-agnostic.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from jaxppo.config import HParams, PPOConfig, value_clip_eps
from jaxppo.distributions import Distribution


class LossInputs(NamedTuple):
    """One minibatch ([N, ...] samples, or [T, N, ...] sequences with memory)."""

    obs: jax.Array  # float32: observations as the policy saw them (normalised with the rollout's statistics)
    first: jax.Array  # bool: the observation starts an episode (resets the carry when replaying sequences)
    action_mask: jax.Array | None  # bool [..., A] legal actions (None without masks)
    actions: jax.Array  # int32 or float32 [..., D]
    old_log_probs: jax.Array  # float32
    old_values: jax.Array  # float32
    advantages: jax.Array  # float32 (normalised when config.normalize_advantages)
    returns: jax.Array  # float32: value targets
    memory: Any  # network carry at the start of each sequence [N, ...] (() without memory; before the layout
    # arranges a rollout batch: the carries at the starts of its sequences [C, B, ...], see jaxppo.update)


Evaluate = Callable[[Any, LossInputs], tuple[Distribution, jax.Array]]
"""evaluate(params, batch) -> (action distribution, values) with the batch's leading shape."""

LossFn = Callable[[Any, LossInputs, HParams, PPOConfig, Evaluate], tuple[jax.Array, Any]]
"""loss_fn(params, batch, hparams, config, evaluate) -> (loss, metrics pytree of float32 scalars).

A loss may declare traced coefficients of its own, without a PPOConfig field, as an attribute
`loss_fn.hyperparameters = {"l2_coef": 1e-4}` (name -> default value): the trainer adds them to HParams (read them
as `hparams.l2_coef`), so they can be overridden, vmapped, checkpointed and explored by population-based training
like lr or ent_coef (the spirit of optax's `inject_hyperparams`: hyperparameters are state, named by the
transformation that uses them)."""


def loss_hyperparameters(loss_fn: LossFn) -> dict[str, float]:
    """The traced coefficients a loss declares ({} for ppo_loss); ValueError naming a malformed declaration."""
    declared = getattr(loss_fn, "hyperparameters", {})
    if not isinstance(declared, dict) or not all(isinstance(k, str) and isinstance(v, (int, float))
                                                 and not isinstance(v, bool) for k, v in declared.items()):
        raise ValueError(f"{getattr(loss_fn, '__name__', 'loss_fn')}.hyperparameters={declared!r}: must be a dict "
                         "of name -> number, e.g. {'l2_coef': 1e-4}")
    return dict(declared)


@struct.dataclass
class LossMetrics:
    """Scalars of one minibatch (averaged over devices and minibatch steps by the update)."""

    total_loss: jax.Array
    policy_loss: jax.Array
    value_loss: jax.Array
    entropy: jax.Array
    approx_kl: jax.Array
    clip_fraction: jax.Array


def clipped_surrogate_loss(log_probs: jax.Array, old_log_probs: jax.Array, advantages: jax.Array,
                           clip_eps: jax.Array | float) -> tuple[jax.Array, jax.Array]:
    """mean_i max(-A_i r_i, -A_i clip(r_i, 1 - eps, 1 + eps)), r_i = exp(log pi - log pi_old).

    Returns (loss, ratio). Where the clipped term is the max, its gradient w.r.t. log pi is zero.
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


def ppo_loss(params, batch: LossInputs, hp: HParams, config: PPOConfig,
             evaluate: Evaluate) -> tuple[jax.Array, LossMetrics]:
    """loss = policy_loss + vf_coef * value_loss - ent_coef * entropy, for one minibatch.

    approx_kl is the low-variance estimator mean((r - 1) - log r); clip_fraction is the share of samples with
    |r - 1| > clip_eps. The value clip range is hp.vf_clip_eps, or hp.clip_eps when that is NaN (config None).
    """
    dist, values = evaluate(params, batch)
    log_probs = dist.log_prob(batch.actions)
    pg_loss, ratio = clipped_surrogate_loss(log_probs, batch.old_log_probs, batch.advantages, hp.clip_eps)
    v_loss = value_loss(values, batch.old_values, batch.returns, value_clip_eps(hp), config.clip_value_loss)
    entropy = jnp.mean(dist.entropy())
    total = pg_loss + hp.vf_coef * v_loss - hp.ent_coef * entropy
    log_ratio = log_probs - batch.old_log_probs
    metrics = LossMetrics(
        total_loss=total,
        policy_loss=pg_loss,
        value_loss=v_loss,
        entropy=entropy,
        approx_kl=jax.lax.stop_gradient(jnp.mean((ratio - 1.0) - log_ratio)),
        clip_fraction=jax.lax.stop_gradient(jnp.mean((jnp.abs(ratio - 1.0) > hp.clip_eps).astype(jnp.float32))),
    )
    return total, metrics
