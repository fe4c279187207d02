"""Whole episodes played by any policy step function, optionally recording the environment states: what rendering
(jaxppo.render) and the evaluation of an exported policy (jaxppo.export) share.

A policy step is one pure function, whatever the policy is behind it (a trained run's `act`, a `jax.export`ed
file):

    step(obs [B, *obs], action_mask [B, A] | None, carry, first bool [B], key) -> (actions [B, ...], carry)

`carry` is the memory a recurrent policy carries from step to step (None without memory); `first` marks the
observations that start an episode, where a recurrent policy resets its carry before acting.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxppo.envs import Env, reset_batch, step_batch

StepFn = Callable[..., tuple[jax.Array, Any]]
"""step(obs, action_mask, carry, first, key) -> (actions, carry); see the module docstring."""


class Played(NamedTuple):
    """num_steps steps of B environments, each starting a fresh episode at step 0 (auto-reset afterwards).

    states: the env states the actions were taken in, leaves [T, B, ...] (None unless recorded).
    rewards: float32 [T, B]; done: bool [T, B], the episode ended (terminated or truncated) with step t.
    """

    states: Any
    rewards: jax.Array
    done: jax.Array


def play(env: Env, step: StepFn, key: jax.Array, num_envs: int, num_steps: int,
         record_states: bool = False) -> Played:
    """Run step on num_envs fresh episodes for num_steps steps (jittable; num_envs and num_steps static).

    The key fixes the resets and the keys passed to step (sampling policies). A recurrent policy starts from a zero
    carry with first=True, i.e. from its reset carry.
    """
    reset_key, loop_key = jax.random.split(key)
    state, obs, mask = reset_batch(env, jax.random.split(reset_key, num_envs))
    first = jnp.ones((num_envs,), bool)
    shapes = jax.eval_shape(lambda: step(obs, mask, None, first, loop_key)[1])
    carry = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def body(loop, t):
        state, obs, mask, carry, first = loop
        act_key, env_key = jax.random.split(jax.random.fold_in(loop_key, t))
        action, carry = step(obs, mask, carry, first, act_key)
        next_state, out = step_batch(env, jax.random.split(env_key, num_envs), state, action)
        done = out.terminated | out.truncated
        recorded = (state if record_states else None, out.reward, done)
        return (next_state, out.obs, out.action_mask, carry, done), recorded

    _, (states, rewards, done) = lax.scan(body, (state, obs, mask, carry, first), jnp.arange(num_steps))
    return Played(states, rewards, done)


def episode_lengths(done: np.ndarray) -> np.ndarray:
    """int [B]: steps of each environment's first episode (its first done step + 1; T where none ended).
    done: bool [T, B]."""
    done = np.asarray(done, bool)
    return np.where(done.any(axis=0), done.argmax(axis=0) + 1, done.shape[0])


def episode_returns(rewards: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """float64 [B]: undiscounted return of each environment's first episode. rewards: [T, B]; lengths: [B]."""
    rewards = np.asarray(rewards, np.float64)
    inside = np.arange(rewards.shape[0])[:, None] < np.asarray(lengths)[None, :]
    return np.where(inside, rewards, 0.0).sum(axis=0)


def run_step(act: Callable, recurrent: bool, stochastic: bool) -> StepFn:
    """The step function of a policy with make_policy's act(obs, key, action_mask=, carry=, first=) interface
    (params and normalisers already bound, as `jaxppo.load(run).act`). stochastic=False acts greedily."""

    def step(obs, action_mask, carry, first, key):
        key = key if stochastic else None
        if recurrent:
            return act(obs, key, action_mask=action_mask, carry=carry, first=first)
        return act(obs, key, action_mask=action_mask), carry

    return step
