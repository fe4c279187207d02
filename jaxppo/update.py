"""The learning side of an update, in two parts: `prepare` (lay out the rollout batch, plan every epoch's
minibatches, this device's advantage statistics) and `learn` (epochs of minibatch steps, given the statistics the
trainer gathered from every device); plus the optimizer and the minibatch layouts.

Minibatches. Feed-forward policies learn from shuffled samples, stratified by groups of environments: the
environments are cut into fixed groups of g = shuffle_group_size(T, M) consecutive global indices, each group's
g*T samples are permuted with a key that depends only on the group's global index, and minibatch m takes the
m-th slice of every group's permutation (when T % M == 0, g = 1: every minibatch holds T/M steps of every
environment). Each sample is in exactly one minibatch per epoch, and the global minibatch m is the same set of
samples on any number of devices. Policies with memory learn from sequences: the rollout of every environment is
cut into C = T / L sequences of L = config.sequence_length steps (C = 1: whole rollouts), sequence c of
environment b has the global index b * C + c, minibatches are groups of sequences permuted within groups of M
consecutive global indices, and each sequence is replayed from the carry the rollout stored at its start. The
layout (`SampleLayout` / `SequenceLayout`) is chosen once, by `make_layout`; nothing else in the update asks
whether the policy has memory.

Collectives. `minibatch_step` averages gradients *and* loss metrics over the device axis in one all-reduce, then
applies one optimizer step on the flat parameter vector, so parameters stay identical on every device. The
advantage statistics of every minibatch of every epoch are computed before the epochs (`advantage_statistics`,
from one all-gather done by the trainer); with `recompute_advantages` each later epoch starts by recomputing the
advantages and value targets with its starting critic (`recompute_targets`; the first epoch's critic is the
rollout's, so it keeps the rollout's targets) and every epoch gathers its own statistics (one all-gather per epoch).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax import lax
from jax.flatten_util import ravel_pytree

from jaxppo.agent import Agent, apply_policy, policy_step
from jaxppo.advantages import gae
from jaxppo.collectives import Moments, combine_moments, gather, local_moments, pmean_flat
from jaxppo.distributions import Distribution
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


def apply_gradient(config: PPOConfig, flat_params: jax.Array, grads: jax.Array, opt_state: Any,
                   hp: HParams) -> tuple[jax.Array, Any, jax.Array]:
    """Global-norm clipping -> Adam -> step of size hp.lr, on flat vectors [P]. Returns (params, state, grad norm).

    The same arithmetic as optax.chain(clip_by_global_norm, scale_by_adam, scale_by_learning_rate), on one leaf so
    the whole step is a few fused loops.
    """
    grad_norm = jnp.sqrt(jnp.sum(jnp.square(grads)))
    grads = jnp.where(grad_norm < hp.max_grad_norm, grads, grads * (hp.max_grad_norm / grad_norm))
    updates, opt_state = _adam(config).update(grads, opt_state)
    return flat_params - hp.lr * updates, opt_state, grad_norm


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


def _env_major(x: jax.Array) -> jax.Array:
    """[T, B, ...] -> [B * T, ...]: the T entries of each environment consecutive."""
    return jnp.swapaxes(x, 0, 1).reshape((-1,) + x.shape[2:])


class SampleLayout(NamedTuple):
    """Feed-forward minibatches: shuffled samples. The rollout [T, B, ...] is laid out env-major as [B*T, ...];
    minibatch indices are sample indices [E, M, B*T/M] (stratified by environment groups, see the module
    docstring); a minibatch is replayed as one step of N observations."""

    num_steps: int
    num_minibatches: int
    num_epochs: int

    def arrange(self, batch: LossInputs) -> LossInputs:
        return self.arrange_steps(batch)

    def arrange_steps(self, steps: Any) -> Any:
        return jax.tree.map(_env_major, steps)

    def minibatches(self, key: jax.Array, num_local_envs: int, first_env: jax.Array | int) -> jax.Array:
        return sample_minibatches(key, jnp.arange(self.num_epochs), num_local_envs, self.num_steps,
                                  self.num_minibatches, first_env)

    def take(self, batch: LossInputs, index: jax.Array) -> LossInputs:
        return jax.tree.map(lambda x: jnp.take(x, index, axis=0), batch)

    def advantage_moments(self, advantages: jax.Array, indices: jax.Array) -> Moments:
        return local_moments(jnp.take(advantages, indices, axis=0), (2,))

    def replay(self, agent: Agent, params, batch: LossInputs) -> tuple[Distribution, jax.Array]:
        _, dist, values = policy_step(agent, params, (), batch.obs, batch.first, batch.action_mask)
        return dist, values


class SequenceLayout(NamedTuple):
    """Minibatches of sequences (policies with memory): the rollout [T, B, ...] becomes [L, B * C, ...] (sequence
    b * C + c: steps c * L ... c * L + L - 1 of environment b; unchanged when C = 1) with the carries stored at the
    sequence starts [C, B, ...] becoming [B * C, ...]; minibatch indices are sequences [E, M, B * C / M]; a
    minibatch is replayed over its L steps from its stored carries, resetting where `first` is set."""

    num_minibatches: int
    num_epochs: int
    sequences_per_env: int = 1  # C

    def arrange(self, batch: LossInputs) -> LossInputs:
        """batch with time-major fields [T, B, ...] and memory the carries at the sequence starts [C, B, ...]."""
        starts = jax.tree.map(_env_major, batch.memory)  # [C, B, ...] -> [B * C, ...]
        return self.arrange_steps(batch._replace(memory=()))._replace(memory=starts)

    def arrange_steps(self, steps: Any) -> Any:
        """Any pytree of time-major [T, B, ...] -> [L, B * C, ...] (the sequence order above)."""
        if self.sequences_per_env == 1:
            return steps

        def cut(x):
            by_sequence = x.reshape((self.sequences_per_env, -1) + x.shape[1:])  # [C, L, B, ...]
            return jnp.moveaxis(by_sequence, 0, 2).reshape((by_sequence.shape[1], -1) + x.shape[2:])

        return jax.tree.map(cut, steps)

    def minibatches(self, key: jax.Array, num_local_envs: int, first_env: jax.Array | int) -> jax.Array:
        c = self.sequences_per_env
        return sequence_minibatches(key, jnp.arange(self.num_epochs), num_local_envs * c, self.num_minibatches,
                                    first_env * c)

    def take(self, batch: LossInputs, index: jax.Array) -> LossInputs:
        sequences = jax.tree.map(lambda x: jnp.take(x, index, axis=1), batch._replace(memory=()))
        return sequences._replace(memory=jax.tree.map(lambda x: jnp.take(x, index, axis=0), batch.memory))

    def advantage_moments(self, advantages: jax.Array, indices: jax.Array) -> Moments:
        return local_moments(jnp.take(advantages, indices, axis=1), (0, 3))  # [T, E, M, n] -> [E, M]

    def replay(self, agent: Agent, params, batch: LossInputs) -> tuple[Distribution, jax.Array]:
        _, dist, values = apply_policy(agent, params, batch.memory, batch.obs, batch.first, batch.action_mask)
        return dist, values


Layout = SampleLayout | SequenceLayout
"""How a rollout batch is cut into minibatches and replayed: chosen once per run by `make_layout`.

    arrange(batch: LossInputs of [T, B, ...], memory [C, B, ...]) -> laid out;  arrange_steps(any pytree of
    [T, B, ...]) -> laid out;  minibatches(key, B_local, first_env) -> int32 [E, M, n];
    take(laid-out batch, index [n]) -> minibatch;  advantage_moments(laid-out advantages, indices) -> Moments [E, M];
    replay(agent, params, minibatch) -> (distribution, values) under params."""


def make_layout(config: PPOConfig) -> Layout:
    """Sequences for policies with memory, shuffled samples otherwise (the only place that asks)."""
    if config.recurrent:
        return SequenceLayout(config.num_minibatches, config.num_epochs, config.sequences_per_env)
    return SampleLayout(config.num_steps, config.num_minibatches, config.num_epochs)


# ----------------------------------------------------------------------------------------- minibatch step
def advantage_statistics(gathered: Moments, count_per_device: int) -> tuple[jax.Array, jax.Array]:
    """(mean [E, M], std [E, M]) of every global minibatch from the gathered per-device Moments [D, E, M]."""
    mean, var = combine_moments(gathered, count_per_device)
    return mean, jnp.sqrt(var)


def make_replay(agent: Agent, layout: Layout) -> Callable[[Any, LossInputs], tuple[Distribution, jax.Array]]:
    """replay(params, minibatch) -> (distribution, values) of the minibatch under params: what a loss function
    receives as its `evaluate` argument (see jaxppo.losses)."""
    return lambda params, batch: layout.replay(agent, params, batch)


def minibatch_step(agent: Agent, layout: Layout, loss_fn: LossFn, unravel: Callable, flat_params: jax.Array,
                   opt_state: Any, batch: LossInputs, hp: HParams, axis_name: str | None = None):
    """One gradient step on a minibatch (this device's share); returns (flat params, opt_state, StepMetrics).

    Gradients and loss metrics are averaged over the device axis in ONE all-reduce.
    """
    replay = make_replay(agent, layout)

    def loss_of(flat):
        return loss_fn(unravel(flat), batch, hp, agent.config, replay)

    (_, metrics), grads = jax.value_and_grad(loss_of, has_aux=True)(flat_params)
    grads, metrics = pmean_flat((grads, metrics), axis_name)
    flat_params, opt_state, grad_norm = apply_gradient(agent.config, flat_params, grads, opt_state, hp)
    return flat_params, opt_state, StepMetrics(metrics, grad_norm)


class TargetInputs(NamedTuple):
    """What a rollout's advantages and value targets are recomputed from (config.recompute_advantages), time-major.

    obs and first have one step more than the rollout: the observation the rollout stopped at, whose value
    bootstraps the last step."""

    obs: jax.Array  # float32 [T + 1, B, *obs] as the networks saw them (normalised with the rollout's statistics)
    first: jax.Array  # bool [T + 1, B]: the observation starts an episode (resets the carry)
    memory: Any  # network carry at the start of the rollout [B, ...] (() without memory)
    reward: jax.Array  # float32 [T, B] rewards as learned from (scaled / normalised)
    terminated: jax.Array  # bool [T, B]
    truncated: jax.Array  # bool [T, B]
    bootstrap_value: jax.Array  # float32 [T, B] the rollout critic's value of the final observation where truncated


VALUE_CHUNK_ROWS = 4096
"""At most this many rows (steps x environments) per chunk of `replayed_values`. Run over a whole rollout at once,
the critic's activations are [T + 1, B, width] (170 MB at Brax's notebook batch, 81 x 2048 x 256 float32), far
beyond the caches, and its matmuls and activations wait on memory; in chunks of a few thousand rows they stay in
cache. Measured on the 2-core CPU box (the critic of the brax/inverted_pendulum preset, 2 x 256 SiLU, over
81 x 2048 observations, best of 5): 273 ms at once, 141 / 134 / 133 / 143 ms in chunks of 1,296 / 2,592 / 5,184 /
10,368 rows; the 5 x 256 critic of brax/inverted_double_pendulum 623 ms at once, 500 / 478 / 548 / 562 ms."""


def env_chunk_size(num_envs: int, rows_per_env: int, max_rows: int = VALUE_CHUNK_ROWS) -> int:
    """The largest divisor d of num_envs with d * rows_per_env <= max_rows; num_envs (one chunk) when all of them
    fit, or when even the best divisor would cut the rollout into chunks of fewer than max_rows / 4 rows (many
    tiny chunks, e.g. a prime num_envs, cost more loop steps than the cache saves)."""
    if num_envs * rows_per_env <= max_rows:
        return num_envs
    limit = max(max_rows, rows_per_env)  # one environment per chunk at least
    size = max(d for d in range(1, num_envs + 1) if num_envs % d == 0 and d * rows_per_env <= limit)
    return size if 4 * size * rows_per_env >= max_rows else num_envs


def replayed_values(agent: Agent, params, memory, obs: jax.Array, first: jax.Array,
                    max_rows: int = VALUE_CHUNK_ROWS) -> jax.Array:
    """float32 [T, B] values of the critic of `params` over obs [T, B, *obs] (first bool [T, B], memory the carry
    [B, ...] before step 0), computed in chunks of `env_chunk_size(B, T, max_rows)` environments (`lax.map`, each
    chunk its own sequences: environments never mix), so every chunk's activations fit in cache. Equal to one
    `network.apply` over all environments."""
    steps, num_envs = first.shape
    size = env_chunk_size(num_envs, steps, max_rows)
    if size == num_envs:
        return agent.network.apply(params, memory, obs, first)[2]
    count = num_envs // size

    def split(x: jax.Array, axis: int) -> jax.Array:  # [..., B, ...] -> [count, ..., size, ...]
        return jnp.moveaxis(x.reshape(x.shape[:axis] + (count, size) + x.shape[axis + 1:]), axis, 0)

    chunks = (jax.tree.map(lambda x: split(x, 0), memory), split(obs, 1), split(first, 1))
    values = lax.map(lambda chunk: agent.network.apply(params, *chunk)[2], chunks)  # [count, T, size]
    return jnp.moveaxis(values, 0, 1).reshape(steps, num_envs)


def recompute_targets(agent: Agent, params, inputs: TargetInputs, hp: HParams) -> tuple[jax.Array, jax.Array]:
    """(advantages, returns) float32 [T, B] of the rollout under the critic of `params` (GAE with the config's
    horizon and advantage form). Values are replayed over the T + 1 observations (sequences from the stored carry,
    with memory); truncated steps keep the rollout critic's value of their final observation, which the rollout
    does not store (Brax's PPO drops truncated steps' TD errors instead)."""
    values = replayed_values(agent, params, inputs.memory, inputs.obs, inputs.first)  # [T + 1, B]
    values_next = jnp.where(inputs.truncated, inputs.bootstrap_value, values[1:])
    return gae(inputs.reward, values[:-1], values_next, inputs.terminated, inputs.terminated | inputs.truncated,
               hp.gamma, hp.gae_lambda, agent.config.gae_horizon, agent.config.advantage_form)


class UpdatePlan(NamedTuple):
    """The first half of an update (`prepare`): the laid-out batch, every epoch's minibatch indices, and this
    device's statistics that must be gathered before learning."""

    batch: LossInputs  # laid out by the layout
    indices: jax.Array  # int32 [E, M, n]
    advantage_moments: Moments  # [E, M]: this device's share of every minibatch's advantages
    targets: TargetInputs | None  # what every epoch's targets are recomputed from (recompute_advantages only)


def prepare(layout: Layout, batch: LossInputs, key: jax.Array, num_local_envs: int,
            first_env: jax.Array | int, targets: TargetInputs | None = None) -> UpdatePlan:
    """Lay out a rollout batch ([T, B, ...], carries at the sequence starts [C, B, ...]) and plan every epoch's
    minibatches."""
    batch = layout.arrange(batch)
    indices = layout.minibatches(key, num_local_envs, first_env)
    return UpdatePlan(batch, indices, layout.advantage_moments(batch.advantages, indices), targets)


def normalize_advantages(minibatches: LossInputs, gathered_moments: Moments, count_per_device: int) -> LossInputs:
    """Minibatches [K, ...] with advantages shifted and scaled by their global minibatch's mean and std, from the
    gathered per-device Moments [D, ..., K] (flattened to K minibatches in order)."""
    mean, std = advantage_statistics(gathered_moments, count_per_device)
    expand = tuple(range(1, minibatches.advantages.ndim))
    scale = jnp.expand_dims(1.0 / (std.reshape(-1) + 1e-8), expand)
    shift = jnp.expand_dims(mean.reshape(-1), expand)
    return minibatches._replace(advantages=(minibatches.advantages - shift) * scale)


def learn(agent: Agent, layout: Layout, loss_fn: LossFn, params, opt_state, plan: UpdatePlan,
          gathered_advantage_moments: Moments, hp: HParams, axis_name: str | None = None):
    """The second half of an update: config.num_epochs passes of config.num_minibatches steps over plan.batch.

    Args:
      gathered_advantage_moments: Moments [D, E, M] of every device's plan.advantage_moments (one all-gather done
        by the trainer with its other statistics); used when normalize_advantages (and not recompute_advantages,
        where each epoch gathers its own).
      hp: the update's effective hyperparameters (schedules applied).
    Returns:
      (params, opt_state, StepMetrics averaged over all minibatch steps).
    """
    config = agent.config
    flat_params, unravel = ravel_pytree(params)
    per_device = plan.batch.advantages.size // config.num_minibatches

    def take_all(batch: LossInputs, indices: jax.Array) -> LossInputs:
        return jax.vmap(lambda index: layout.take(batch, index))(indices)  # one vectorised gather

    def step(carry, minibatch):
        flat_params, opt_state = carry
        flat_params, opt_state, metrics = minibatch_step(agent, layout, loss_fn, unravel, flat_params, opt_state,
                                                         minibatch, hp, axis_name)
        return (flat_params, opt_state), metrics

    if plan.targets is None:  # every minibatch of every epoch gathered at once, then one scan over all steps
        minibatches = take_all(plan.batch, plan.indices.reshape((-1,) + plan.indices.shape[2:]))
        if config.normalize_advantages:
            minibatches = normalize_advantages(minibatches, gathered_advantage_moments, per_device)
        (flat_params, opt_state), metrics = lax.scan(step, (flat_params, opt_state), minibatches)
        return unravel(flat_params), opt_state, jax.tree.map(jnp.mean, metrics)

    def targets_of(flat_params) -> tuple[jax.Array, jax.Array]:
        return layout.arrange_steps(recompute_targets(agent, unravel(flat_params), plan.targets, hp))

    def epoch(carry, epoch_plan):
        """One pass over minibatches indices [M, n], its targets from the critic the epoch starts with: the first
        epoch starts with the rollout's critic, so it takes the rollout's targets (plan.batch's) and skips the
        critic pass that would recompute them."""
        epoch_index, indices = epoch_plan
        advantages, returns = lax.cond(epoch_index == 0, lambda _: (plan.batch.advantages, plan.batch.returns),
                                       targets_of, carry[0])
        batch = plan.batch._replace(advantages=advantages, returns=returns)
        minibatches = take_all(batch, indices)
        if config.normalize_advantages:
            moments = gather(layout.advantage_moments(advantages, indices[None]), axis_name)  # [D, 1, M]
            minibatches = normalize_advantages(minibatches, moments, per_device)
        return lax.scan(step, carry, minibatches)

    epoch_plans = (jnp.arange(plan.indices.shape[0]), plan.indices)
    (flat_params, opt_state), metrics = lax.scan(epoch, (flat_params, opt_state), epoch_plans)
    return unravel(flat_params), opt_state, jax.tree.map(jnp.mean, metrics)
