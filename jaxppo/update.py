"""The learning half of an update: optimizer, minibatch shuffling, one minibatch step, epochs over a rollout.

`minibatch_step` is the per-device unit of learning: loss and gradient on this device's share of the minibatch,
then gradients *and* metrics averaged with `lax.pmean` over `axis_name` (when given), then one optax step, so
parameters stay identical on every device.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax import lax

from jaxppo.agent import Agent
from jaxppo.collectives import pmean
from jaxppo.config import HParams, PPOConfig
from jaxppo.losses import LossInputs, LossMetrics, ppo_loss


@struct.dataclass
class StepMetrics:
    """Means over one update's minibatch steps (identical on every device)."""

    loss: LossMetrics
    grad_norm: jax.Array  # global norm of the averaged gradient, before clipping


def make_optimizer(config: PPOConfig, max_grad_norm: jax.Array | float, lr: jax.Array | float):
    """clip_by_global_norm -> Adam(eps=config.adam_eps) -> scale by -lr. Hyperparameters may be traced."""
    return optax.chain(
        optax.clip_by_global_norm(max_grad_norm),
        optax.scale_by_adam(eps=config.adam_eps),
        optax.scale_by_learning_rate(lr, flip_sign=True),
    )


def init_optimizer_state(config: PPOConfig, params):
    """Optimizer state for params (its structure does not depend on the hyperparameter values)."""
    return make_optimizer(config, 1.0, 1.0).init(params)


def annealed_lr(config: PPOConfig, lr: jax.Array, update_index: jax.Array) -> jax.Array:
    """Learning rate of update `update_index` (0-based): lr * (1 - u / num_updates) when annealing, else lr."""
    if not config.anneal_lr:
        return lr
    return lr * (1.0 - update_index.astype(jnp.float32) / config.num_updates)


def shuffle_group_size(num_steps: int, num_minibatches: int) -> int:
    """Envs per shuffle group: the fewest g with g * num_steps divisible by num_minibatches."""
    return num_minibatches // math.gcd(num_minibatches, num_steps)


def minibatch_indices(key: jax.Array, num_local_envs: int, num_steps: int, num_minibatches: int,
                      first_env: jax.Array | int) -> jax.Array:
    """Shuffled minibatches of this device's [B_local * T] samples (laid out env-major: index = env * T + t).

    Environments are cut into fixed groups of g = shuffle_group_size(T, M) consecutive global env indices; each
    group's g*T samples are permuted with a key that depends only on the group's global index, and minibatch m
    takes the m-th slice of every group's permutation. So the global minibatch m is the same set of samples
    whichever device holds which group: shuffling does not depend on the device count.

    Args:
      key: epoch key (replicated). first_env: global index of this device's first environment.
    Returns:
      int32 [M, B_local * T / M] local sample indices.
    """
    g = shuffle_group_size(num_steps, num_minibatches)
    num_groups = num_local_envs // g
    group_samples = g * num_steps
    group_ids = first_env // g + jnp.arange(num_groups)
    perms = jax.vmap(lambda gid: jax.random.permutation(jax.random.fold_in(key, gid), group_samples))(group_ids)
    indices = perms + (jnp.arange(num_groups) * group_samples)[:, None]
    indices = indices.reshape(num_groups, num_minibatches, group_samples // num_minibatches)
    return jnp.transpose(indices, (1, 0, 2)).reshape(num_minibatches, -1)


def minibatch_step(agent: Agent, params, opt_state, batch: LossInputs, hp: HParams, lr: jax.Array,
                   axis_name: str | None = None):
    """One gradient step on a minibatch (this device's share); returns (params, opt_state, StepMetrics)."""
    config = agent.config
    grad_fn = jax.value_and_grad(ppo_loss, has_aux=True)
    (_, metrics), grads = grad_fn(
        params, agent.network, batch, hp.clip_eps, hp.vf_clip_eps, hp.ent_coef, hp.vf_coef,
        normalize_adv=config.normalize_advantages, clip_value=config.clip_value_loss, axis_name=axis_name,
    )
    grads = pmean(grads, axis_name)
    metrics = pmean(metrics, axis_name)
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = make_optimizer(config, hp.max_grad_norm, lr).update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, StepMetrics(metrics, grad_norm)


def run_epochs(agent: Agent, params, opt_state, batch: LossInputs, hp: HParams, lr: jax.Array, key: jax.Array,
               first_env: jax.Array | int, axis_name: str | None = None):
    """config.num_epochs passes of config.num_minibatches steps over a rollout batch.

    Args:
      batch: LossInputs with fields [T, B_local, ...] (time-major, as collected).
      key: update key (replicated); epoch k shuffles with fold_in(key, k).
    Returns:
      (params, opt_state, StepMetrics averaged over all minibatch steps).
    """
    config = agent.config
    num_local_envs = batch.advantages.shape[1]
    # env-major flat layout: sample index = env * T + t
    flat = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1).reshape((-1,) + x.shape[2:]), batch)

    def epoch(carry, epoch_index):
        params, opt_state = carry
        indices = minibatch_indices(jax.random.fold_in(key, epoch_index), num_local_envs, config.num_steps,
                                    config.num_minibatches, first_env)

        def step(carry, idx):
            params, opt_state = carry
            minibatch = jax.tree.map(lambda x: jnp.take(x, idx, axis=0), flat)
            params, opt_state, metrics = minibatch_step(agent, params, opt_state, minibatch, hp, lr, axis_name)
            return (params, opt_state), metrics

        return lax.scan(step, (params, opt_state), indices)

    (params, opt_state), metrics = lax.scan(epoch, (params, opt_state), jnp.arange(config.num_epochs))
    return params, opt_state, jax.tree.map(jnp.mean, metrics)
