"""The learning half of an update: optimizer, minibatch layout, one minibatch step, epochs over a rollout.

Minibatches. Feed-forward policies learn from shuffled samples, stratified by groups of environments: the
environments are cut into fixed groups of g = shuffle_group_size(T, M) consecutive global indices, each group's
g*T samples are permuted with a key that depends only on the group's global index, and minibatch m takes the
m-th slice of every group's permutation (when T % M == 0, g = 1: every minibatch holds T/M steps of every
environment). Each sample is in exactly one minibatch per epoch, and the global minibatch m is the same set of
samples on any number of devices. Policies with memory learn from whole sequences: minibatches are groups of
environments (their T steps each), permuted within groups of M consecutive global indices, and replayed from the
carry stored at the start of the rollout.

Collectives. `minibatch_step` averages gradients *and* loss metrics over the device axis in one all-reduce, then
applies one optimizer step on the flat parameter vector, so parameters stay identical on every device. The
advantage statistics of every minibatch of every epoch are computed before the epochs (`advantage_statistics`,
from one all-gather done by the trainer).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax import lax
from jax.flatten_util import ravel_pytree

from jaxppo.agent import Agent, distribution
from jaxppo.collectives import Moments, combine_moments, local_moments, pmean_flat
from jaxppo.config import HParams, PPOConfig
from jaxppo.losses import LossFn, LossInputs
from jaxppo.random_words import counter_words


@struct.dataclass
class StepMetrics:
    """Means over one update's minibatch steps (identical on every device)."""

    loss: Any  # the loss function's metrics pytree
    grad_norm: jax.Array  # global norm of the averaged gradient, before clipping


# --------------------------------------------------------------------------------------------------- optimizer
def _adam(config: PPOConfig) -> optax.GradientTransformation:
    return optax.scale_by_adam(eps=config.adam_eps)


def init_optimizer_state(config: PPOConfig, params) -> Any:
    """Adam state of the flat parameter vector (its structure does not depend on hyperparameter values)."""
    flat, _ = ravel_pytree(params)
    return _adam(config).init(flat)


def apply_gradient(config: PPOConfig, flat_params: jax.Array, grads: jax.Array, opt_state: Any, hp: HParams,
                   lr: jax.Array) -> tuple[jax.Array, Any, jax.Array]:
    """Global-norm clipping -> Adam -> step of size lr, on flat vectors [P]. Returns (params, state, grad norm).

    The same arithmetic as optax.chain(clip_by_global_norm, scale_by_adam, scale_by_learning_rate), on one leaf so
    the whole step is a few fused loops.
    """
    grad_norm = jnp.sqrt(jnp.sum(jnp.square(grads)))
    grads = jnp.where(grad_norm < hp.max_grad_norm, grads, grads * (hp.max_grad_norm / grad_norm))
    updates, opt_state = _adam(config).update(grads, opt_state)
    return flat_params - lr * updates, opt_state, grad_norm


def annealed_lr(config: PPOConfig, lr: jax.Array, update_index: jax.Array) -> jax.Array:
    """Learning rate of update `update_index` (0-based): lr * (1 - u / num_updates) when annealing, else lr.

    Constant within an update; the last update (u = N - 1) uses lr / N.
    """
    if not config.anneal_lr:
        return lr
    return lr * (1.0 - update_index.astype(jnp.float32) / config.num_updates)


# ------------------------------------------------------------------------------------------ minibatch layout
def shuffle_group_size(num_steps: int, num_minibatches: int) -> int:
    """Envs per shuffle group: the fewest g with g * num_steps divisible by num_minibatches."""
    return num_minibatches // math.gcd(num_minibatches, num_steps)


def random_permutation(words: jax.Array) -> jax.Array:
    """int32 [..., n]: random permutations of range(n) from random uint32 words [..., n], by ONE sort of single
    32-bit words: random high bits with the index in the low ceil(log2 n) bits (equal random parts, of probability
    about n^2 / 2^(33 - log2 n), keep index order). XLA:CPU sorts one operand 3-4x faster than the key-value sorts
    of argsort or jax.random.permutation."""
    n = words.shape[-1]
    index_bits = max(1, (n - 1).bit_length())
    if index_bits > 24:  # too few random bits would be left: sort the words with the indices instead
        return jnp.argsort(words, axis=-1, stable=True).astype(jnp.int32)
    packed = (words << index_bits) | jnp.arange(n, dtype=jnp.uint32)
    return (jnp.sort(packed, axis=-1) & jnp.uint32((1 << index_bits) - 1)).astype(jnp.int32)


def group_permutations(key: jax.Array, epochs: jax.Array, group_ids: jax.Array, n: int) -> jax.Array:
    """int32 [E, G, n]: a permutation of range(n) for every epoch and group, from the counters (group id, epoch)
    of key alone: the same for a group whichever device holds it (one threefry evaluation for all of them)."""
    pairs = (n + 1) // 2
    lo = epochs.astype(jnp.uint32)[:, None, None] * jnp.uint32(pairs) + jnp.arange(pairs, dtype=jnp.uint32)
    drawn = counter_words(key, group_ids.astype(jnp.uint32)[None, :, None], lo)  # [E, G, pairs, 2]
    return random_permutation(drawn.reshape(drawn.shape[:2] + (2 * pairs,))[..., :n])


def sample_minibatches(key: jax.Array, epochs: jax.Array, num_local_envs: int, num_steps: int, num_minibatches: int,
                       first_env: jax.Array | int) -> jax.Array:
    """Shuffled minibatches of this device's [B_local * T] samples (laid out env-major: index = env * T + t) for
    every epoch in `epochs` (int32 [E]). See the module docstring for the layout. first_env: global index of this
    device's first environment. Returns int32 [E, M, B_local * T / M] local sample indices."""
    g = shuffle_group_size(num_steps, num_minibatches)
    num_groups = num_local_envs // g
    group_samples = g * num_steps
    group_ids = first_env // g + jnp.arange(num_groups)
    perms = group_permutations(key, epochs, group_ids, group_samples)  # [E, G, g*T]
    indices = perms + (jnp.arange(num_groups) * group_samples)[:, None]
    indices = indices.reshape(epochs.shape[0], num_groups, num_minibatches, group_samples // num_minibatches)
    return jnp.transpose(indices, (0, 2, 1, 3)).reshape(epochs.shape[0], num_minibatches, -1)


def sequence_minibatches(key: jax.Array, epochs: jax.Array, num_local_envs: int, num_minibatches: int,
                         first_env: jax.Array | int) -> jax.Array:
    """Shuffled minibatches of this device's environments (whole sequences) for every epoch: int32 [E, M, B_local /
    M] local env indices. Groups of M consecutive global environments are permuted with their group's counters;
    minibatch m takes the m-th environment of every group (the same global sets on any number of devices)."""
    num_groups = num_local_envs // num_minibatches
    group_ids = first_env // num_minibatches + jnp.arange(num_groups)
    perms = group_permutations(key, epochs, group_ids, num_minibatches)  # [E, G, M]
    indices = perms + (jnp.arange(num_groups) * num_minibatches)[:, None]
    return jnp.swapaxes(indices, 1, 2)


def epoch_minibatches(config: PPOConfig, key: jax.Array, num_local_envs: int, first_env: jax.Array | int
                      ) -> jax.Array:
    """Minibatch indices of every epoch: int32 [E, M, n] (samples, or environments with memory)."""
    epochs = jnp.arange(config.num_epochs)
    if config.recurrent:
        return sequence_minibatches(key, epochs, num_local_envs, config.num_minibatches, first_env)
    return sample_minibatches(key, epochs, num_local_envs, config.num_steps, config.num_minibatches, first_env)


def layout_batch(config: PPOConfig, batch: LossInputs) -> LossInputs:
    """The batch as minibatches are taken from it: feed-forward -> samples [B*T, ...] env-major; memory -> as is
    ([T, B, ...] with the carry [B, ...])."""
    if config.recurrent:
        return batch
    return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1).reshape((-1,) + x.shape[2:]), batch)


def take_minibatch(config: PPOConfig, batch: LossInputs, index: jax.Array) -> LossInputs:
    """Minibatch `index` (int32 [n]) of a laid-out batch."""
    if config.recurrent:
        sequences = jax.tree.map(lambda x: jnp.take(x, index, axis=1), batch._replace(memory=()))
        return sequences._replace(memory=jax.tree.map(lambda x: jnp.take(x, index, axis=0), batch.memory))
    return jax.tree.map(lambda x: jnp.take(x, index, axis=0), batch)


def local_advantage_moments(config: PPOConfig, advantages: jax.Array, indices: jax.Array) -> Moments:
    """This device's share of every minibatch's advantages, as Moments [E, M].

    advantages: laid out like the batch ([B*T] or [T, B]); indices: [E, M, n] from epoch_minibatches.
    """
    if config.recurrent:
        shares = jnp.take(advantages, indices, axis=1)  # [T, E, M, n]
        return local_moments(shares, (0, 3))
    return local_moments(jnp.take(advantages, indices, axis=0), (2,))


def advantage_statistics(gathered: Moments, count_per_device: int) -> tuple[jax.Array, jax.Array]:
    """(mean [E, M], std [E, M]) of every global minibatch from the gathered per-device Moments [D, E, M]."""
    mean, var = combine_moments(gathered, count_per_device)
    return mean, jnp.sqrt(var)


# ----------------------------------------------------------------------------------------- minibatch step
def make_evaluate(agent: Agent) -> Callable[[Any, LossInputs], tuple[Any, jax.Array]]:
    """evaluate(params, minibatch) -> (distribution, values): samples [N] as one step of N observations, or
    sequences [T, N] replayed from their stored carry with the stored resets."""

    def evaluate(params, batch: LossInputs):
        if agent.config.recurrent:
            _, out, values = agent.network.apply(params, batch.memory, batch.obs, batch.first)
            return distribution(agent, params, out, batch.action_mask), values
        _, out, values = agent.network.apply(params, (), batch.obs[None], batch.first[None])
        return distribution(agent, params, out[0], batch.action_mask), values[0]

    return evaluate


def minibatch_step(agent: Agent, loss_fn: LossFn, unravel: Callable, flat_params: jax.Array, opt_state: Any,
                   batch: LossInputs, hp: HParams, lr: jax.Array, axis_name: str | None = None):
    """One gradient step on a minibatch (this device's share); returns (flat params, opt_state, StepMetrics).

    Gradients and loss metrics are averaged over the device axis in ONE all-reduce.
    """
    evaluate = make_evaluate(agent)

    def loss_of(flat):
        return loss_fn(unravel(flat), batch, hp, agent.config, evaluate)

    (_, metrics), grads = jax.value_and_grad(loss_of, has_aux=True)(flat_params)
    grads, metrics = pmean_flat((grads, metrics), axis_name)
    flat_params, opt_state, grad_norm = apply_gradient(agent.config, flat_params, grads, opt_state, hp, lr)
    return flat_params, opt_state, StepMetrics(metrics, grad_norm)


def run_epochs(agent: Agent, loss_fn: LossFn, params, opt_state, batch: LossInputs, indices: jax.Array,
               adv_mean: jax.Array, adv_std: jax.Array, hp: HParams, lr: jax.Array,
               axis_name: str | None = None):
    """config.num_epochs passes of config.num_minibatches steps over a laid-out rollout batch.

    Args:
      batch: layout_batch(config, rollout batch).
      indices: int32 [E, M, n] from epoch_minibatches.
      adv_mean, adv_std: float32 [E, M] statistics of each global minibatch (used when normalize_advantages).
    Returns:
      (params, opt_state, StepMetrics averaged over all minibatch steps).
    """
    config = agent.config
    flat_params, unravel = ravel_pytree(params)
    # Every minibatch of every epoch gathered at once (one vectorised gather instead of one per step).
    indices = indices.reshape((-1,) + indices.shape[2:])
    minibatches = jax.vmap(lambda index: take_minibatch(config, batch, index))(indices)
    if config.normalize_advantages:
        mean, std = adv_mean.reshape(-1), adv_std.reshape(-1)
        scale = jnp.expand_dims(1.0 / (std + 1e-8), tuple(range(1, minibatches.advantages.ndim)))
        shift = jnp.expand_dims(mean, tuple(range(1, minibatches.advantages.ndim)))
        minibatches = minibatches._replace(advantages=(minibatches.advantages - shift) * scale)

    def step(carry, minibatch):
        flat_params, opt_state = carry
        flat_params, opt_state, metrics = minibatch_step(agent, loss_fn, unravel, flat_params, opt_state, minibatch,
                                                         hp, lr, axis_name)
        return (flat_params, opt_state), metrics

    (flat_params, opt_state), metrics = lax.scan(step, (flat_params, opt_state), minibatches)
    return unravel(flat_params), opt_state, jax.tree.map(jnp.mean, metrics)
