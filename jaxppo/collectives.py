"""Cross-device reductions that are the identity on a single device, and the statistics built on them.

The trainer's per-device code calls these with `axis_name=None` on one device and with `DEVICE_AXIS` under
`jax.shard_map`, so the same function serves both. Collectives are expensive on some backends (an in-process
rendezvous costs tens of microseconds on XLA:CPU), so the trainer issues few: one all-reduce per minibatch step
(gradients and loss metrics in one buffer) and one all-gather per update (`gather`) for every statistic of the
rollout, combined on each device in the same order, hence identically everywhere.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

DEVICE_AXIS = "devices"
"""The one axis name over which experience is split and gradients and metrics are averaged."""


def pmean_flat(tree, axis_name: str | None):
    """pmean of every leaf of a float32 tree as ONE all-reduce (the leaves travel in one flat buffer)."""
    if axis_name is None:
        return tree
    flat, unravel = ravel_pytree(tree)
    return unravel(lax.pmean(flat, axis_name))


def gather(tree, axis_name: str | None):
    """Every device's copy of a float32 tree, leaves [D, ...] in device order, with ONE all-gather ([1, ...] on
    a single device)."""
    if axis_name is None:
        return jax.tree.map(lambda x: x[None], tree)
    flat, unravel = ravel_pytree(tree)
    gathered = lax.all_gather(flat, axis_name)
    return jax.vmap(unravel)(gathered)


def device_index(axis_name: str | None) -> jax.Array | int:
    """This device's position along axis_name (0 on a single device)."""
    return 0 if axis_name is None else lax.axis_index(axis_name)


class Moments(NamedTuple):
    """Mean and sum of squared deviations (M2) of equal-sized samples, per device or combined."""

    mean: jax.Array
    m2: jax.Array


def local_moments(x: jax.Array, axes: tuple[int, ...]) -> Moments:
    """Moments of x over `axes` (two-pass: no cancellation)."""
    mean = jnp.mean(x, axis=axes)
    return Moments(mean, jnp.sum(jnp.square(x - jnp.expand_dims(mean, axes)), axis=axes))


def combine_moments(gathered: Moments, count_per_device: int) -> tuple[jax.Array, jax.Array]:
    """(mean, population variance) of the union of D equal-sized samples from gathered per-device Moments [D, ...].

    Chan et al.'s parallel merge: M2 = sum_d M2_d + n * sum_d (mean_d - mean)^2.
    """
    num_devices = gathered.mean.shape[0]
    mean = jnp.mean(gathered.mean, axis=0)
    m2 = jnp.sum(gathered.m2, axis=0) + count_per_device * jnp.sum(jnp.square(gathered.mean - mean), axis=0)
    return mean, m2 / (count_per_device * num_devices)


def replicas_in_sync(tree, axis_name: str | None) -> jax.Array:
    """bool []: every device along axis_name holds the same tree; True on one device.

    Compares a fingerprint (each leaf's sum and sum of squares) gathered from every device: one collective.
    """
    if axis_name is None:
        return jnp.asarray(True)
    leaves = [x.astype(jnp.float32) for x in jax.tree.leaves(tree)]
    fingerprint = jnp.stack([jnp.sum(x) for x in leaves] + [jnp.sum(jnp.square(x)) for x in leaves])
    everyone = lax.all_gather(fingerprint, axis_name)
    return jnp.all(everyone == everyone[0])
