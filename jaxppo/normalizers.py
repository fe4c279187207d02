"""Running normalisers: observation mean/variance and the discounted-return variance used to scale rewards.

Both travel through the run as one pytree, `Normalizers`. Statistics of a batch split over devices are those of
the union over devices, so they do not depend on the device count.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from jaxppo.collectives import Moments, combine_moments

VARIANCE_EPS = 1e-8


@struct.dataclass
class RunningMoments:
    """Running mean and variance of a quantity (parallel-merge form, as in gym's RunningMeanStd)."""

    mean: jax.Array  # float32 [*shape]
    var: jax.Array  # float32 [*shape]
    count: jax.Array  # float32 []


@struct.dataclass
class Normalizers:
    """The run's normaliser statistics (each is updated only when its config flag is on)."""

    obs: RunningMoments  # observations [*obs_shape]
    reward: RunningMoments  # discounted raw returns [], whose std scales the rewards


def init_moments(shape: tuple[int, ...]) -> RunningMoments:
    """Mean 0, variance 1, weight 1e-4: the first batch all but replaces the prior."""
    return RunningMoments(jnp.zeros(shape, jnp.float32), jnp.ones(shape, jnp.float32), jnp.asarray(1e-4, jnp.float32))


def init_normalizers(obs_shape: tuple[int, ...]) -> Normalizers:
    """Identity-like statistics for observations of obs_shape and for scalar returns."""
    return Normalizers(obs=init_moments(obs_shape), reward=init_moments(()))


def merge_moments(moments: RunningMoments, gathered: Moments, count_per_device: int) -> RunningMoments:
    """Merge a batch, given as every device's Moments [D, *shape] of count_per_device samples, into the running
    moments. The result is the same on every device and for any split of the batch over devices."""
    batch_mean, batch_var = combine_moments(gathered, count_per_device)
    batch_count = jnp.asarray(count_per_device * gathered.mean.shape[0], jnp.float32)
    total = moments.count + batch_count
    delta = batch_mean - moments.mean
    mean = moments.mean + delta * batch_count / total
    m2 = moments.var * moments.count + batch_var * batch_count + jnp.square(delta) * moments.count * batch_count / total
    return RunningMoments(mean=mean, var=m2 / total, count=total)


def normalize_obs(moments: RunningMoments, obs: jax.Array, clip: float) -> jax.Array:
    """(obs - mean) / sqrt(var + 1e-8), clipped to [-clip, clip]; broadcasts over leading axes."""
    return jnp.clip((obs - moments.mean) * jax.lax.rsqrt(moments.var + VARIANCE_EPS), -clip, clip)


def scale_reward(moments: RunningMoments, reward: jax.Array, clip: float) -> jax.Array:
    """reward / sqrt(var(discounted return) + 1e-8), clipped to [-clip, clip] (no centring, as in gym)."""
    return jnp.clip(reward * jax.lax.rsqrt(moments.var + VARIANCE_EPS), -clip, clip)
