"""gymnax adapter: environment lookup and spaces, batched reset/step, episode statistics, running normalisers.

Everything here works on a batch of B environments held by one device (axis 0 of every array). Statistics that
must not depend on how environments are spread over devices take an optional `axis_name` and are reduced over it.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxppo.collectives import pmean, psum

# gymnax is imported inside the functions that need it: importing it starts JAX's backend, which must wait until
# jax.distributed.initialize has run in a multi-host program (see jaxppo.distributed.initialize).


class EnvSpec(NamedTuple):
    """What the networks and the trainer need to know about an environment's spaces."""

    obs_shape: tuple[int, ...]
    continuous: bool
    num_actions: int  # discrete: number of actions; continuous: flat action dimension
    action_shape: tuple[int, ...]
    action_low: np.ndarray | None  # continuous only, float32 [*action_shape]
    action_high: np.ndarray | None


def registered_env_ids() -> list[str]:
    """gymnax environment ids, built-in and registered at run time with `gymnax.register`."""
    import gymnax

    return list(gymnax.registered_envs)


def make_env(env_id: str) -> tuple[Any, Any]:
    """Build a registered gymnax environment and its default parameters."""
    import gymnax

    return gymnax.make(env_id)


def env_spec(env: Any, env_params: Any) -> EnvSpec:
    """Read observation and action spaces of a gymnax environment (ValueError for unsupported spaces)."""
    from gymnax.environments import spaces

    obs_space = env.observation_space(env_params)
    if not isinstance(obs_space, spaces.Box):
        raise ValueError(
            f"env {env.name}: observation space {obs_space!r} is not supported; jaxppo needs a single Box "
            "(vector or HxWxC image) observation"
        )
    action_space = env.action_space(env_params)
    obs_shape = tuple(int(d) for d in obs_space.shape)
    if isinstance(action_space, spaces.Discrete):
        return EnvSpec(obs_shape, False, int(action_space.n), (), None, None)
    if isinstance(action_space, spaces.Box):
        shape = tuple(int(d) for d in action_space.shape)
        low = np.broadcast_to(np.asarray(action_space.low, np.float32), shape)
        high = np.broadcast_to(np.asarray(action_space.high, np.float32), shape)
        return EnvSpec(obs_shape, True, int(math.prod(shape)), shape, low, high)
    raise ValueError(f"env {env.name}: action space {action_space!r} is not supported (Discrete or Box only)")


class StepResult(NamedTuple):
    """One batched env step, time index dropped. Shapes for B environments."""

    obs: jax.Array  # float32 [B, *obs]: next observation, already auto-reset where done
    env_state: Any  # pytree [B, ...]
    reward: jax.Array  # float32 [B]
    terminated: jax.Array  # bool [B]: a true terminal state, bootstrap with 0
    truncated: jax.Array  # bool [B]: time limit, bootstrap from final_obs
    final_obs: jax.Array  # float32 [B, *obs]: observation reached by this step, before any auto-reset


def reset_envs(env: Any, env_params: Any, keys: jax.Array) -> tuple[jax.Array, Any]:
    """Reset B environments. keys: [B] PRNG keys. Returns (obs float32 [B, *obs], env_state [B])."""
    obs, state = jax.vmap(env.reset, in_axes=(0, None))(keys, env_params)
    return obs.astype(jnp.float32), state


def step_envs(env: Any, env_params: Any, keys: jax.Array, env_state: Any, actions: jax.Array) -> StepResult:
    """Step B environments with auto-reset (gymnax >= 1.0 six-value API). keys: [B]; actions: [B, ...]."""
    obs, state, reward, terminated, truncated, info = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
        keys, env_state, actions, env_params
    )
    return StepResult(
        obs=obs.astype(jnp.float32),
        env_state=state,
        reward=jnp.asarray(reward, jnp.float32).reshape(-1),
        terminated=jnp.asarray(terminated, bool).reshape(-1),
        truncated=jnp.asarray(truncated, bool).reshape(-1),
        final_obs=info["final_observation"].astype(jnp.float32),
    )


# --------------------------------------------------------------------------------------------- episode stats
@struct.dataclass
class EpisodeStats:
    """Per-environment running episode sums, and the last reported means (scalars, carried when none finish)."""

    returns: jax.Array  # float32 [B]: undiscounted raw return of the running episode
    lengths: jax.Array  # int32 [B]
    last_mean_return: jax.Array  # float32 []: mean return of the episodes completed in the latest update with any
    last_mean_length: jax.Array  # float32 []


@struct.dataclass
class EpisodeTally:
    """Sums over the episodes completed during one rollout (per device until reduced)."""

    return_sum: jax.Array  # float32 []
    length_sum: jax.Array  # float32 []
    count: jax.Array  # float32 []


def init_episode_stats(num_envs: int) -> EpisodeStats:
    """Zeroed episode statistics for num_envs environments."""
    return EpisodeStats(
        returns=jnp.zeros((num_envs,), jnp.float32),
        lengths=jnp.zeros((num_envs,), jnp.int32),
        last_mean_return=jnp.zeros((), jnp.float32),
        last_mean_length=jnp.zeros((), jnp.float32),
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


def close_tally(stats: EpisodeStats, tally: EpisodeTally,
                axis_name: str | None = None) -> tuple[EpisodeStats, jax.Array, jax.Array, jax.Array]:
    """Reduce a rollout's tally over devices; returns (stats, mean_return, mean_length, episodes_completed).

    When no episode completed in this rollout (on any device), the previous means are reported again, so the
    metric is never NaN; `episodes_completed` (0 then) tells the two cases apart.
    """
    return_sum = psum(tally.return_sum, axis_name)
    length_sum = psum(tally.length_sum, axis_name)
    count = psum(tally.count, axis_name)
    any_done = count > 0
    safe_count = jnp.maximum(count, 1.0)
    mean_return = jnp.where(any_done, return_sum / safe_count, stats.last_mean_return)
    mean_length = jnp.where(any_done, length_sum / safe_count, stats.last_mean_length)
    stats = stats.replace(last_mean_return=mean_return, last_mean_length=mean_length)
    return stats, mean_return, mean_length, count


# ------------------------------------------------------------------------------------------ running moments
@struct.dataclass
class RunningMoments:
    """Running mean and variance of a quantity (parallel-merge form, as in gym's RunningMeanStd)."""

    mean: jax.Array  # float32 [*shape]
    var: jax.Array  # float32 [*shape]
    count: jax.Array  # float32 []


def init_moments(shape: tuple[int, ...]) -> RunningMoments:
    """Mean 0, variance 1, weight 1e-4: the first batch all but replaces the prior."""
    return RunningMoments(jnp.zeros(shape, jnp.float32), jnp.ones(shape, jnp.float32), jnp.asarray(1e-4, jnp.float32))


def update_moments(moments: RunningMoments, batch: jax.Array, axis_name: str | None = None) -> RunningMoments:
    """Merge a batch [N, *shape] (leading axes flattened by the caller) into the running moments.

    With axis_name the batch is this device's share of an equal-sized split; mean and variance are those of the
    union over devices (two-pass, so no cancellation), hence identical on every device.
    """
    n_local = batch.shape[0]
    batch_mean = pmean(jnp.mean(batch, axis=0), axis_name)
    batch_var = pmean(jnp.mean(jnp.square(batch - batch_mean), axis=0), axis_name)
    batch_count = psum(jnp.asarray(n_local, jnp.float32), axis_name)
    total = moments.count + batch_count
    delta = batch_mean - moments.mean
    mean = moments.mean + delta * batch_count / total
    m2 = moments.var * moments.count + batch_var * batch_count + jnp.square(delta) * moments.count * batch_count / total
    return RunningMoments(mean=mean, var=m2 / total, count=total)


def normalize_obs(moments: RunningMoments, obs: jax.Array, clip: float) -> jax.Array:
    """(obs - mean) / sqrt(var + 1e-8), clipped to [-clip, clip]; broadcasts over leading axes."""
    return jnp.clip((obs - moments.mean) / jnp.sqrt(moments.var + 1e-8), -clip, clip)


def scale_reward(moments: RunningMoments, reward: jax.Array, clip: float) -> jax.Array:
    """reward / sqrt(var(discounted return) + 1e-8), clipped to [-clip, clip] (no centring, as in gym)."""
    return jnp.clip(reward / jnp.sqrt(moments.var + 1e-8), -clip, clip)
