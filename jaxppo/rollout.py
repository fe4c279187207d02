"""Experience collection: one env step as a pure function, and a rollout as `lax.scan` over time.

Randomness is keyed by the *global* environment index (`jax.random.fold_in(step_key, env_id)`), so environment
e sees the same actions and transitions whichever device steps it: a run on D devices collects the same
experience as a run on one.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from jax import lax

from jaxppo.agent import Agent, env_action, policy_input
from jaxppo.envs import EpisodeStats, EpisodeTally, RunningMoments, empty_tally, scale_reward, step_envs, \
    track_episodes


@struct.dataclass
class EnvCarry:
    """The environments' side of the training state, for B local environments."""

    env_state: Any  # gymnax state pytree [B, ...]
    obs: jax.Array  # float32 [B, *obs]: raw observation to act on next
    episodes: EpisodeStats
    discounted_return: jax.Array  # float32 [B]: running discounted raw return, for reward scaling


@struct.dataclass
class Transition:
    """A rollout, time-major: every field [T, B, ...]."""

    obs: jax.Array  # float32 [T, B, *obs] raw observations acted on
    action: jax.Array  # int32 [T, B] or float32 [T, B, D], unclipped policy sample
    log_prob: jax.Array  # float32 [T, B] log pi_old(action | obs)
    value: jax.Array  # float32 [T, B] V_old(obs)
    reward: jax.Array  # float32 [T, B] reward used for learning (scaled if normalize_rewards)
    terminated: jax.Array  # bool [T, B]
    truncated: jax.Array  # bool [T, B]
    final_obs: jax.Array  # float32 [T, B, *obs] raw observation reached, before auto-reset
    discounted_return: jax.Array  # float32 [T, B] running discounted raw return after the step


def per_env_keys(key: jax.Array, env_ids: jax.Array) -> jax.Array:
    """One key per environment, a function of the global env index alone. env_ids: int32 [B] -> keys [B]."""
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, env_ids)


def env_step(agent: Agent, params, carry: EnvCarry, tally: EpisodeTally, key: jax.Array, env_ids: jax.Array,
             obs_moments: RunningMoments, reward_moments: RunningMoments,
             gamma: jax.Array) -> tuple[EnvCarry, EpisodeTally, Transition]:
    """Act in and step B environments once; episodes that end are added to the tally.

    Returns (carry, tally, transition without the time axis).
    """
    config = agent.config
    keys = per_env_keys(key, env_ids)
    act_keys, step_keys = jax.vmap(jax.random.split, out_axes=1)(keys)
    dist, value = agent.network.apply(params, policy_input(config, carry.obs, obs_moments))
    action = jax.vmap(lambda d, k: d.sample(k))(dist, act_keys)
    log_prob = dist.log_prob(action)
    step = step_envs(agent.env, agent.env_params, step_keys, carry.env_state, env_action(agent.spec, action))
    done = step.terminated | step.truncated
    discounted_return = carry.discounted_return * gamma + step.reward
    reward = step.reward
    if config.normalize_rewards:
        reward = scale_reward(reward_moments, step.reward, config.reward_clip)
    episodes, tally = track_episodes(carry.episodes, tally, step.reward, done)
    transition = Transition(
        obs=carry.obs, action=action, log_prob=log_prob, value=value, reward=reward,
        terminated=step.terminated, truncated=step.truncated, final_obs=step.final_obs,
        discounted_return=discounted_return,
    )
    carry = EnvCarry(
        env_state=step.env_state, obs=step.obs, episodes=episodes,
        discounted_return=jnp.where(done, 0.0, discounted_return),
    )
    return carry, tally, transition


def rollout(agent: Agent, params, carry: EnvCarry, key: jax.Array, env_ids: jax.Array,
            obs_moments: RunningMoments, reward_moments: RunningMoments,
            gamma: jax.Array) -> tuple[EnvCarry, Transition, EpisodeTally]:
    """Collect config.num_steps steps from B environments with fixed params and normaliser statistics.

    Args:
      key: one key for the whole rollout; step t uses fold_in(key, t), env e fold_in(that, env_ids[e]).
      env_ids: int32 [B] global indices of the local environments.
      gamma: discount of the running return that reward scaling divides by.
    Returns:
      (carry after the rollout, Transition [T, B, ...], tally of episodes completed in the rollout).
    """

    def body(loop, t):
        carry, tally = loop
        carry, tally, transition = env_step(agent, params, carry, tally, jax.random.fold_in(key, t), env_ids,
                                            obs_moments, reward_moments, gamma)
        return (carry, tally), transition

    (carry, tally), transitions = lax.scan(body, (carry, empty_tally()), jnp.arange(agent.config.num_steps))
    return carry, transitions, tally
