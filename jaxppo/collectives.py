"""Cross-device reductions that are the identity on a single device.

The trainer's per-device code calls these with `axis_name=None` when it runs on one device and with
`DEVICE_AXIS` under `jax.pmap` / `jax.shard_map`, so the same function serves both.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

DEVICE_AXIS = "devices"
"""The one axis name over which experience is split and gradients and metrics are averaged."""


def pmean(tree, axis_name: str | None):
    """lax.pmean over axis_name, or the tree unchanged when axis_name is None."""
    return tree if axis_name is None else lax.pmean(tree, axis_name)


def psum(tree, axis_name: str | None):
    """lax.psum over axis_name, or the tree unchanged when axis_name is None."""
    return tree if axis_name is None else lax.psum(tree, axis_name)


def device_index(axis_name: str | None) -> jax.Array | int:
    """This device's position along axis_name (0 on a single device)."""
    return 0 if axis_name is None else lax.axis_index(axis_name)


def replicas_in_sync(tree, axis_name: str | None) -> jax.Array:
    """bool []: every device along axis_name holds the same tree (pmin == pmax of a fingerprint); True on one device.

    The fingerprint is each leaf's sum and sum of squares, a few scalars per leaf: cheap enough for every update.
    """
    if axis_name is None:
        return jnp.asarray(True)
    leaves = jax.tree.leaves(tree)
    fingerprint = jnp.stack([jnp.sum(x.astype(jnp.float32)) for x in leaves]
                            + [jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves])
    return jnp.all(lax.pmin(fingerprint, axis_name) == lax.pmax(fingerprint, axis_name))
