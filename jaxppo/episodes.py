"""Episode statistics tracked inside the compiled run: running sums per environment, tallies of finished episodes.

Statistics are on raw (unscaled) rewards and count truncated episodes as ended. Everything works on the B
environments of one device (axis 0); the tally of a rollout is reduced over the device axis in one collective.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct



@struct.dataclass
class EpisodeStats:
    """Per-environment running episode sums, and the last reported means (scalars, carried when none finish)."""

    returns: jax.Array  # float32 [B]: undiscounted raw return of the running episode
    lengths: jax.Array  # int32 [B]
    last_mean_return: jax.Array  # float32 []: mean return of the episodes completed in the latest update with
    last_mean_length: jax.Array  # float32 []   any (NaN until the first episode ends)


@struct.dataclass
class EpisodeTally:
    """Sums over the episodes completed during one rollout (per device until reduced)."""

    return_sum: jax.Array  # float32 []
    length_sum: jax.Array  # float32 []
    count: jax.Array  # float32 []


@struct.dataclass
class EpisodeSummary:
    """What one update reports about the episodes that ended in it (identical on every device)."""

    mean_return: jax.Array  # float32 []: the previous value when no episode ended; NaN before the first one
    mean_length: jax.Array  # float32 []
    completed: jax.Array  # float32 []: episodes that ended, over all devices


def init_episode_stats(num_envs: int) -> EpisodeStats:
    """Zeroed episode statistics for num_envs environments."""
    return EpisodeStats(
        returns=jnp.zeros((num_envs,), jnp.float32),
        lengths=jnp.zeros((num_envs,), jnp.int32),
        last_mean_return=jnp.full((), jnp.nan, jnp.float32),
        last_mean_length=jnp.full((), jnp.nan, jnp.float32),
    )


def empty_tally() -> EpisodeTally:
    zero = jnp.zeros((), jnp.float32)
    return EpisodeTally(zero, zero, zero)


def track_episodes(stats: EpisodeStats, tally: EpisodeTally, raw_reward: jax.Array,
                   done: jax.Array) -> tuple[EpisodeStats, EpisodeTally]:
    """Add one step's raw rewards [B]; episodes that end (done [B]: terminated or truncated) go to the tally."""
    returns = stats.returns + raw_reward
    lengths = stats.lengths + 1
    done_f = done.astype(jnp.float32)
    tally = EpisodeTally(
        return_sum=tally.return_sum + jnp.sum(returns * done_f),
        length_sum=tally.length_sum + jnp.sum(lengths.astype(jnp.float32) * done_f),
        count=tally.count + jnp.sum(done_f),
    )
    stats = stats.replace(returns=jnp.where(done, 0.0, returns), lengths=jnp.where(done, 0, lengths))
    return stats, tally


def close_tally(stats: EpisodeStats, tally: EpisodeTally) -> tuple[EpisodeStats, EpisodeSummary]:
    """A rollout's tally, already summed over devices (the trainer gathers it with its other statistics), as the
    update's EpisodeSummary.

    When no episode completed in this rollout (on any device), the previous means are reported again and
    `completed` (0 then) tells the two cases apart; before the first episode ends anywhere the means are NaN (there
    is no return to report yet, and a 0 would read as a real value: Pendulum's curve would start at the optimum).
    """
    return_sum, length_sum, count = tally.return_sum, tally.length_sum, tally.count
    any_done = count > 0
    safe_count = jnp.maximum(count, 1.0)
    mean_return = jnp.where(any_done, return_sum / safe_count, stats.last_mean_return)
    mean_length = jnp.where(any_done, length_sum / safe_count, stats.last_mean_length)
    stats = stats.replace(last_mean_return=mean_return, last_mean_length=mean_length)
    return stats, EpisodeSummary(mean_return, mean_length, count)
