"""Experience collection: one env step as a pure function, and a rollout as `lax.scan` over time.

All randomness of a rollout is drawn before the time loop, in one vectorised pass: environment e at step t draws
its words from the counter (env_id, t) of the rollout key, a function of its *global* index alone, so environment
e sees the same actions and transitions whichever device steps it, and a run on D devices collects the same
experience as a run on one.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from jax import lax

from jaxppo.agent import Agent, initial_carry, policy_input, policy_step
from jaxppo.envs import reset_batch, step_batch
from jaxppo.episodes import EpisodeStats, EpisodeTally, empty_tally, init_episode_stats, track_episodes
from jaxppo.networks import Carry
from jaxppo.normalizers import Normalizers, scale_reward
from jaxppo.random_words import words


@struct.dataclass
class EnvCarry:
    """The environments' side of the training state, for B local environments (all fields [B, ...])."""

    env_state: Any  # the suite's state pytree [B, ...]
    obs: jax.Array  # float32 [B, *obs]: raw observation to act on next
    action_mask: jax.Array | None  # bool [B, A]: legal actions for obs (None: the env has no masks)
    first: jax.Array  # bool [B]: obs is the first observation of an episode
    memory: Carry  # network carry before acting on obs (() without memory)
    episodes: EpisodeStats
    discounted_return: jax.Array  # float32 [B]: running discounted raw return, for reward scaling


@struct.dataclass
class Transition:
    """A rollout, time-major: every field [T, B, ...]."""

    obs: jax.Array  # float32 [T, B, *obs] raw observations acted on
    action_mask: jax.Array | None  # bool [T, B, A] legal actions at obs (None without masks)
    first: jax.Array  # bool [T, B] obs starts an episode (the network reset its carry before it)
    action: jax.Array  # int32 [T, B] or float32 [T, B, D], unclipped policy sample
    log_prob: jax.Array  # float32 [T, B] log pi_old(action | obs)
    value: jax.Array  # float32 [T, B] V_old(obs)
    reward: jax.Array  # float32 [T, B] reward used for learning (normalised / times reward_scale when set)
    terminated: jax.Array  # bool [T, B]
    truncated: jax.Array  # bool [T, B] (never together with terminated)
    bootstrap_value: jax.Array  # float32 [T, B] V_old(final obs, carry before the reset) where truncated, else 0
    discounted_return: jax.Array | None  # float32 [T, B] running discounted raw return (normalize_rewards only)
    invalid_masks: jax.Array | None  # float32 [T]: environments whose mask allowed no action (masks only)


def rollout_randomness(agent: Agent, key: jax.Array, num_steps: int,
                       env_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """All randomness of a rollout at once: (action noise float32 [T, B, noise_size], env step keys [T, B]).

    Environment e at step t draws its words from the counter (e, t) of the rollout key (jaxppo.random_words): the
    action noise and the raw data of the key its env step uses. One threefry evaluation for the whole rollout,
    whatever T, B and the action size, which also keeps compilation short.
    """
    impl = jax.random.key_impl(key)
    key_words = jax.random.key_data(key).shape[-1]
    noise_size = agent.family.noise_size
    counters = (env_ids.astype(jnp.uint32)[None, :] * jnp.uint32(num_steps)
                + jnp.arange(num_steps, dtype=jnp.uint32)[:, None])  # [T, B]: unique (env, step) pairs
    drawn = words(key, counters, noise_size + key_words)  # [T, B, noise + key words]
    noise = agent.family.noise(drawn[..., :noise_size])
    step_keys = jax.random.wrap_key_data(drawn[..., noise_size:], impl=impl)
    return noise, step_keys


def reset_envs(agent: Agent, key: jax.Array, env_ids: jax.Array) -> EnvCarry:
    """Fresh environments for the global indices env_ids [B]; env e is reset with fold_in(key, e)."""
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, env_ids)
    env_state, obs, mask = reset_batch(agent.env, keys)
    num_envs = env_ids.shape[0]
    return EnvCarry(env_state=env_state, obs=obs, action_mask=mask, first=jnp.ones((num_envs,), bool),
                    memory=initial_carry(agent, num_envs), episodes=init_episode_stats(num_envs),
                    discounted_return=jnp.zeros((num_envs,), jnp.float32))


def _bootstrap_values(agent: Agent, params, memory: Carry, final_obs: jax.Array, truncated: jax.Array,
                      normalizers: Normalizers) -> jax.Array:
    """float32 [B]: V(final obs, carry before the reset) where truncated, else 0; computed only if any truncated."""

    def values(_):
        x = policy_input(agent.config, final_obs, normalizers)
        v = agent.network.apply(params, memory, x, method=agent.network.value_from)
        return jnp.where(truncated, v, 0.0)

    return lax.cond(jnp.any(truncated), values, lambda _: jnp.zeros(truncated.shape, jnp.float32), None)


def env_step(agent: Agent, params, carry: EnvCarry, tally: EpisodeTally, noise: jax.Array, step_keys: jax.Array,
             normalizers: Normalizers, gamma: jax.Array) -> tuple[EnvCarry, EpisodeTally, Transition]:
    """Act in and step B environments once with pre-drawn randomness; episodes that end go to the tally.

    Args:
      noise: float32 [B, noise_size] action noise; step_keys: [B] env step keys.
    Returns:
      (carry, tally, transition without the time axis).
    """
    config = agent.config
    x = policy_input(config, carry.obs, normalizers)
    memory, dist, value = policy_step(agent, params, carry.memory, x, carry.first, carry.action_mask)
    action = dist.sample_from(noise)
    log_prob = dist.log_prob(action)
    env_state, step = step_batch(agent.env, step_keys, carry.env_state, agent.family.to_env(action))
    done = step.terminated | step.truncated
    bootstrap = _bootstrap_values(agent, params, memory, step.final_obs, step.truncated, normalizers)
    reward = step.reward
    discounted_return = None
    if config.normalize_rewards:
        discounted_return = carry.discounted_return * gamma + step.reward
        reward = scale_reward(normalizers.reward, step.reward, config.reward_clip)
    if config.reward_scale != 1.0:
        reward = reward * jnp.float32(config.reward_scale)
    episodes, tally = track_episodes(carry.episodes, tally, step.reward, done)
    invalid = None
    if step.action_mask is not None:
        invalid = jnp.sum(~jnp.any(step.action_mask, axis=-1)).astype(jnp.float32)
    transition = Transition(
        obs=carry.obs, action_mask=carry.action_mask, first=carry.first, action=action, log_prob=log_prob,
        value=value, reward=reward, terminated=step.terminated, truncated=step.truncated,
        bootstrap_value=bootstrap, discounted_return=discounted_return, invalid_masks=invalid,
    )
    carry = EnvCarry(
        env_state=env_state, obs=step.obs, action_mask=step.action_mask, first=done, memory=memory,
        episodes=episodes,
        discounted_return=carry.discounted_return if discounted_return is None else jnp.where(done, 0.0,
                                                                                             discounted_return),
    )
    return carry, tally, transition


def rollout(agent: Agent, params, carry: EnvCarry, key: jax.Array, env_ids: jax.Array, normalizers: Normalizers,
            gamma: jax.Array, num_steps: int | None = None) -> tuple[EnvCarry, Transition, EpisodeTally]:
    """Collect num_steps (default config.num_steps) steps from B environments with fixed params and statistics.

    Args:
      key: one key for the whole rollout (see rollout_randomness).
      env_ids: int32 [B] global indices of the local environments.
      gamma: discount of the running return that reward scaling divides by.
    Returns:
      (carry after the rollout, Transition [T, B, ...], tally of episodes completed in the rollout).
    """
    num_steps = agent.config.num_steps if num_steps is None else num_steps
    noise, step_keys = rollout_randomness(agent, key, num_steps, env_ids)
    (carry, tally), transitions = lax.scan(_step_body(agent, params, normalizers, gamma), (carry, empty_tally()),
                                           (noise, step_keys))
    return carry, transitions, tally


def _step_body(agent: Agent, params, normalizers: Normalizers, gamma: jax.Array):
    """The body of a scan over rollout steps: ((carry, tally), (noise, step keys)) -> ((carry, tally), transition)."""

    def body(loop, xs):
        carry, tally = loop
        carry, tally, transition = env_step(agent, params, carry, tally, xs[0], xs[1], normalizers, gamma)
        return (carry, tally), transition

    return body


def rollout_sequences(agent: Agent, params, carry: EnvCarry, key: jax.Array, env_ids: jax.Array,
                      normalizers: Normalizers, gamma: jax.Array) -> tuple[EnvCarry, Transition, EpisodeTally, Carry]:
    """`rollout` of config.num_steps steps that also returns the network carry at the start of each of the
    C = config.sequences_per_env sequences the update replays (config.sequence_length steps each).

    The same steps, randomness and results as `rollout` (a scan over C sequences of a scan over their steps);
    with one sequence (sequence_length 0) it is `rollout` itself.
    Returns:
      (carry after the rollout, Transition [T, B, ...], tally, carries at every sequence start [C, B, ...] per
      branch: () without memory).
    """
    num_sequences = agent.config.sequences_per_env
    if num_sequences == 1:
        starts = jax.tree.map(lambda x: x[None], carry.memory)
        return rollout(agent, params, carry, key, env_ids, normalizers, gamma) + (starts,)
    noise, step_keys = rollout_randomness(agent, key, agent.config.num_steps, env_ids)
    body = _step_body(agent, params, normalizers, gamma)

    def sequence(loop, xs):
        start = loop[0].memory
        loop, transitions = lax.scan(body, loop, xs)
        return loop, (start, transitions)

    by_sequence = jax.tree.map(lambda x: x.reshape((num_sequences, -1) + x.shape[1:]), (noise, step_keys))
    (carry, tally), (starts, transitions) = lax.scan(sequence, (carry, empty_tally()), by_sequence)
    transitions = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), transitions)  # [C, L, B, ...] -> [T, B]
    return carry, transitions, tally, starts


def next_values(agent: Agent, params, carry: EnvCarry, traj: Transition, normalizers: Normalizers) -> jax.Array:
    """float32 [T, B]: the value each step bootstraps from (GAE's v_next).

    Truncated steps: V(final observation, carry before the reset), from the rollout. Other steps: the value of
    the next observation, which the rollout already computed (the next step's value; after the last step, the
    value of the carry's observation, computed here). Terminated steps bootstrap with 0 in GAE whatever this holds.
    """
    x = policy_input(agent.config, carry.obs, normalizers)
    _, _, last = agent.network.apply(params, carry.memory, x[None], carry.first[None])
    following = jnp.concatenate([traj.value[1:], last], axis=0)
    return jnp.where(traj.truncated, traj.bootstrap_value, following)
