"""Recurrent PPO: the GRU carry is reset exactly where an episode starts, the update replays the rollout exactly
(ratio 1 before the first step), truncation bootstraps with the carry before the reset, and a memory probe is
learned only with memory."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxppo
from jaxppo.agent import make_agent
from jaxppo.memory import ResetGRU
from jaxppo.networks import init_params
from jaxppo.normalizers import init_normalizers
from jaxppo.rollout import reset_envs, rollout
from tests import helpers, probe_envs


def test_gru_carry_is_reset_exactly_where_first_is_set():
    gru = ResetGRU(5)
    t, b = 7, 3
    inputs = jax.random.normal(jax.random.key(0), (t, b, 4))
    first = jnp.zeros((t, b), bool).at[0].set(True).at[3, 0].set(True).at[5, 1].set(True)
    carry0 = jax.random.normal(jax.random.key(1), (b, 5))  # a carry from an earlier rollout
    params = gru.init(jax.random.key(2), carry0, inputs, first)
    _, outputs = gru.apply(params, carry0, inputs, first)
    # Reference: one step at a time, the carry replaced by zeros by hand where an episode starts.
    h, expected = carry0, []
    for step in range(t):
        h = jnp.where(first[step][:, None], 0.0, h)
        h, out = gru.apply(params, h, inputs[step:step + 1], jnp.zeros((1, b), bool))
        expected.append(out[0])
    chex.assert_trees_all_close(outputs, jnp.stack(expected), rtol=1e-5, atol=1e-6)
    # A reset one step late gives different outputs from there on (the check can fail).
    late = jnp.zeros((t, b), bool).at[0].set(True).at[4, 0].set(True).at[5, 1].set(True)
    _, shifted = gru.apply(params, carry0, inputs, late)
    assert not np.allclose(shifted[3, 0], outputs[3, 0]) and np.allclose(shifted[:3], outputs[:3])


def _gru_config(**overrides):
    return jaxppo.PPOConfig(**{**dict(num_envs=4, num_steps=64, total_timesteps=4 * 64 * 2, num_minibatches=1,
                                      memory="gru", memory_size=16), **overrides})


def test_update_replays_the_rollout_from_the_stored_carry_with_its_resets():
    config = _gru_config()
    agent = make_agent(config)
    params = init_params(agent.network, agent.spec, jax.random.key(0))
    ids = jnp.arange(4, dtype=jnp.int32)
    carry = reset_envs(agent, jax.random.key(1), ids)
    normalizers = init_normalizers((4,))
    # A first rollout leaves non-zero carries and episodes in progress; the second one is replayed.
    carry, _, _ = rollout(agent, params, carry, jax.random.key(2), ids, normalizers, 0.99)
    start = carry
    end, traj, _ = rollout(agent, params, carry, jax.random.key(3), ids, normalizers, 0.99)
    assert np.asarray(traj.first[1:]).any() and not np.asarray(traj.first[0]).all()  # resets mid-sequence
    _, logits, values = agent.network.apply(params, start.memory, traj.obs, traj.first)
    log_probs = jnp.take_along_axis(jax.nn.log_softmax(logits), traj.action[..., None], axis=-1)[..., 0]
    chex.assert_trees_all_close(values, traj.value, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(log_probs, traj.log_prob, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(end.memory, agent.network.apply(params, start.memory, traj.obs, traj.first)[0],
                                rtol=1e-5, atol=1e-6)
    # Replaying without the resets gives other values: the check can tell.
    _, _, wrong = agent.network.apply(params, start.memory, traj.obs, jnp.zeros_like(traj.first))
    assert not np.allclose(np.asarray(wrong), np.asarray(traj.value), atol=1e-4)


@pytest.mark.parametrize("num_devices", [1, 2])
def test_ratio_is_one_at_the_first_minibatch_step(num_devices):
    # One epoch of one minibatch: the loss is evaluated at the rollout's parameters, so if the update replays the
    # rollout exactly (same carry, same resets) every ratio is 1: approx_kl 0, nothing clipped.
    config = _gru_config(num_epochs=1, num_devices=num_devices, total_timesteps=4 * 64)
    _, metrics = jax.jit(jaxppo.make_train(config))(jax.random.key(0))
    assert int(metrics.episodes_completed[0]) > 0  # episodes ended mid-sequence
    assert abs(float(metrics.loss.approx_kl[0])) < 1e-6
    assert float(metrics.loss.clip_fraction[0]) == 0.0


def test_memory_probe_is_learned_with_memory_only():
    env = probe_envs.RememberTheCue()  # +1 for recalling a cue shown 3 steps earlier, -1 otherwise
    base = dict(env="custom", num_envs=16, num_steps=16, total_timesteps=16 * 16 * 150, num_minibatches=4,
                lr=3e-3, anneal_lr=False, hidden_sizes=(32,), ent_coef=0.0)
    results = {}
    for memory in ("gru", "none"):
        config = jaxppo.PPOConfig(**base, memory=memory, memory_size=32, gamma=0.9)
        _, metrics = jax.jit(jaxppo.make_train(config, env=env))(jax.random.key(0))
        results[memory] = float(np.nanmean(np.asarray(metrics.episode_return)[-10:]))
    assert results["gru"] > 0.9, results
    assert abs(results["none"]) < 0.3, results  # chance: a memoryless policy expects 0


def test_truncation_bootstrap_uses_the_carry_before_the_reset():
    env = probe_envs.TimeLimitNoTermination()  # reward 1 forever, truncated after 5 steps: V = 1 / (1 - gamma)
    config = jaxppo.PPOConfig(**{**helpers.PROBE, "total_timesteps": 32_768, "lr": 1e-2, "gamma": 0.9,
                                 "memory": "gru", "memory_size": 16, "num_minibatches": 2})
    state, _ = jax.jit(jaxppo.make_train(config, env=env))(jax.random.key(0))
    value = jaxppo.make_value_fn(config, env=env)
    v, carry = value(state.params, jnp.ones((1, 1)))
    v2, _ = value(state.params, jnp.ones((1, 1)), carry=carry, first=jnp.zeros((1,), bool))
    np.testing.assert_allclose([float(v[0]), float(v2[0])], [10.0, 10.0], atol=0.6)


def test_recurrent_policy_api_takes_and_returns_the_carry():
    config = _gru_config()
    agent = make_agent(config)
    params = init_params(agent.network, agent.spec, jax.random.key(0))
    act = jaxppo.make_policy(config)
    obs = jax.random.normal(jax.random.key(1), (5, 4))
    actions, carry = act(params, obs)  # carry=None: a fresh episode for every environment
    assert actions.shape == (5,) and carry[0].shape == (5, 16)
    again, carry2 = act(params, obs, carry=carry)
    assert again.shape == (5,) and not np.allclose(carry2[0], carry[0])
    reset, carry3 = act(params, obs, carry=carry, first=jnp.ones((5,), bool))
    chex.assert_trees_all_close(carry3, carry)  # first=True resets: the same as a fresh start
