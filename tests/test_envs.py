"""The environment adapter protocol and the gymnax adapter: auto-reset with the final observation kept apart,
truncation vs termination, action masks, suite ids and the missing-extra error."""

from __future__ import annotations

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxppo
from jaxppo.envs import EnvSpec, make_env, reset_batch, split_env_id, step_batch
from tests import probe_envs


def test_step_keeps_final_observation_apart_from_reset_observation():
    env = make_env("custom", probe_envs.TwoStepDiscount())  # obs = time step: 0, 1, then terminal 2 and reset to 0
    keys = jax.random.split(jax.random.key(0), 3)
    state, obs, mask = reset_batch(env, keys)
    assert mask is None and obs.dtype == jnp.float32
    state, step = step_batch(env, keys, state, jnp.zeros(3, jnp.int32))
    np.testing.assert_array_equal(step.obs[:, 0], [1, 1, 1])
    assert not step.terminated.any() and not step.truncated.any()
    state, step = step_batch(env, keys, state, jnp.zeros(3, jnp.int32))
    np.testing.assert_array_equal(step.final_obs[:, 0], [2, 2, 2])  # reached by the step
    np.testing.assert_array_equal(step.obs[:, 0], [0, 0, 0])  # auto-reset, what the next step acts on
    np.testing.assert_array_equal(step.reward, [1, 1, 1])
    assert step.terminated.all() and not step.truncated.any()


def test_time_limit_is_truncation_not_termination():
    env = make_env("custom", probe_envs.TimeLimitNoTermination())  # truncated after 5 steps
    keys = jax.random.split(jax.random.key(0), 2)
    state, _, _ = reset_batch(env, keys)
    flags = []
    for _ in range(5):
        state, step = step_batch(env, keys, state, jnp.zeros(2, jnp.int32))
        flags.append((bool(step.terminated.any()), bool(step.truncated.all())))
    assert flags == [(False, False)] * 4 + [(False, True)]
    assert env.spec.max_episode_steps == 5


def test_spec_of_discrete_continuous_and_image_envs():
    cartpole, pendulum, breakout = (make_env(e).spec for e in ("CartPole-v1", "Pendulum-v1", "Breakout-MinAtar"))
    assert (cartpole.obs_shape, cartpole.continuous, cartpole.num_actions, cartpole.max_episode_steps) == (
        (4,), False, 2, 500)
    assert pendulum.continuous and pendulum.action_shape == (1,) and float(pendulum.action_high[0]) == 2.0
    assert breakout.obs_shape == (10, 10, 4) and not breakout.has_action_mask


def test_time_limit_stored_as_a_float_is_read_and_evaluation_runs_whole_episodes():
    # gymnax's BernoulliBandit-misc stores max_steps_in_episode=100.0; it is still the time limit that evaluation
    # runs to (it used to be dropped, and evaluating the preset then failed with "no time limit").
    assert make_env("BernoulliBandit-misc").spec.max_episode_steps == 100
    config = jaxppo.PPOConfig(env="BernoulliBandit-misc", num_envs=4, num_steps=8, total_timesteps=32,
                              num_minibatches=1)
    state, _ = jax.jit(jaxppo.make_train(config))(jax.random.key(0))
    result = jaxppo.evaluate_policy(config, state.params, jax.random.key(1), num_episodes=3)
    np.testing.assert_array_equal(result.lengths, [100, 100, 100])


def test_action_mask_method_is_reported_next_to_each_observation():
    env = make_env("custom", probe_envs.MaskedBestAction())
    assert env.spec.has_action_mask
    keys = jax.random.split(jax.random.key(1), 64)
    state, obs, mask = reset_batch(env, keys)
    assert mask.shape == (64, 3) and mask.dtype == jnp.bool_
    # The mask is the env's own rule for the observation it comes with: action 0 is illegal when obs > 0.
    np.testing.assert_array_equal(np.asarray(mask[:, 0]), np.asarray(obs[:, 0] <= 0))
    state, step = step_batch(env, keys, state, jnp.ones(64, jnp.int32))
    np.testing.assert_array_equal(np.asarray(step.action_mask[:, 0]), np.asarray(step.obs[:, 0] <= 0))


def test_suite_prefixes_and_unknown_ids():
    assert split_env_id("brax/ant") == ("brax", "ant")
    assert split_env_id("jumanji/Snake-v1") == ("jumanji", "Snake-v1")
    assert split_env_id("CartPole-v1") == ("gymnax", "CartPole-v1")
    assert split_env_id("nosuite/x") == ("gymnax", "nosuite/x")
    with pytest.raises(ValueError, match=r"env='CartPol-v1': not a registered gymnax environment; did you mean"):
        make_env("CartPol-v1")
    with pytest.raises(ValueError, match="custom"):
        make_env("custom")
    with pytest.raises(ValueError, match="neither a gymnax Environment"):
        make_env("custom", object())


@pytest.mark.parametrize("suite", ["brax", "jumanji", "craftax"])
def test_missing_suite_is_one_line_naming_the_install_command(suite, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == suite else real(name, *a))
    with pytest.raises(ValueError) as error:
        make_env(f"{suite}/whatever")
    message = str(error.value)
    assert message == (f"env='{suite}/whatever': the {suite} package is not installed; pip install -e \".[{suite}]\" "
                       "(or pip install -e \".[envs]\" for every suite)")


def test_adapter_instances_are_accepted_as_they_are():
    adapter = make_env("CartPole-v1")
    assert make_env("custom", adapter) is adapter
    assert isinstance(adapter.spec, EnvSpec)


def test_minatar_cnn_trains_end_to_end():
    config = jaxppo.PPOConfig(env="Breakout-MinAtar", num_envs=4, num_steps=8, total_timesteps=64,
                              num_minibatches=2)
    state, metrics = jax.jit(jaxppo.make_train(config))(jax.random.key(0))
    assert metrics.loss.policy_loss.shape == (2,) and np.all(np.isfinite(np.asarray(metrics.loss.total_loss)))
    assert state.env.obs.shape == (4, 10, 10, 4)
    assert state.params["params"]["actor_torso"]["conv"]["kernel"].shape == (36, 16)


def test_auto_reset_takes_the_fresh_episode_exactly_where_done():
    from jaxppo.envs.protocol import auto_reset

    reached = ({"t": jnp.int32(7), "pos": jnp.float32(2.5)}, jnp.array([1.0, 2.0]), jnp.array([True, False]))
    fresh = ({"t": jnp.int32(0), "pos": jnp.float32(0.0)}, jnp.array([9.0, 9.0]), jnp.array([False, True]))
    state, obs, mask = auto_reset(jnp.bool_(False), reached, fresh)
    assert int(state["t"]) == 7 and obs.tolist() == [1.0, 2.0] and mask.tolist() == [True, False]
    state, obs, mask = auto_reset(jnp.bool_(True), reached, fresh)
    assert int(state["t"]) == 0 and obs.tolist() == [9.0, 9.0] and mask.tolist() == [False, True]
    assert state["t"].dtype == jnp.int32 and state["pos"].dtype == jnp.float32
    _, _, no_mask = auto_reset(jnp.bool_(True), (reached[0], reached[1], None), (fresh[0], fresh[1], None))
    assert no_mask is None


class _CountingAdapter:
    """A toy adapter with `step_reached`: the state counts steps and holds a position drawn by reset; an episode
    ends when the count reaches the env's own limit (state['limit'], drawn by reset). Resets are counted in a
    host-side list (one entry per traced vmapped reset call and its batch size) to see how many were computed."""

    spec = EnvSpec(obs_shape=(2,), continuous=True, num_actions=2, action_shape=(2,), action_low=None,
                   action_high=None)

    def __init__(self):
        self.reset_batches: list[int] = []

    def reset(self, key):
        position = jax.random.uniform(key, (2,))
        limit = jax.random.randint(jax.random.fold_in(key, 1), (), 1, 4)
        return {"t": jnp.int32(0), "limit": limit, "pos": position}, position, None

    def step_reached(self, key, state, action):
        del key
        state = {"t": state["t"] + 1, "limit": state["limit"], "pos": state["pos"] + action}
        done = state["t"] >= state["limit"]
        return state, jaxppo.envs.TimeStep(obs=state["pos"], action_mask=None, reward=jnp.float32(1.0),
                                           terminated=done, truncated=jnp.bool_(False), final_obs=state["pos"])

    def step(self, key, state, action):
        from jaxppo.envs.protocol import auto_reset

        reached, timestep = self.step_reached(key, state, action)
        state, obs, _ = auto_reset(timestep.terminated, (reached, timestep.obs, None), self.reset(key))
        return state, timestep._replace(obs=obs)


@pytest.mark.parametrize("chunk", [1, 3, 16])
def test_resetting_only_the_ended_environments_equals_resetting_all(chunk):
    # reset_where (reset the ended environments only, `chunk` at a time) against auto_reset vmapped over the batch,
    # where none, some (more than a chunk, not a multiple of it, scattered) and all of the 16 environments ended.
    from jaxppo.envs.protocol import auto_reset, reset_where

    env = _CountingAdapter()
    keys = jax.random.split(jax.random.key(0), 16)
    state, _, _ = reset_batch(env, keys)
    step_keys = jax.random.split(jax.random.key(1), 16)
    reached, timestep = jax.vmap(env.step_reached)(step_keys, state, jnp.ones((16, 2)))
    fresh = reset_batch(env, step_keys)
    run = jax.jit(lambda d: reset_where(env, step_keys, d, (reached, timestep.obs, None), chunk))
    for done in [np.zeros(16, bool), np.isin(np.arange(16), [1, 4, 5, 9, 15]), np.ones(16, bool)]:
        want_state, want_obs, _ = jax.vmap(auto_reset)(jnp.asarray(done), (reached, timestep.obs, None), fresh)
        got_state, got_obs, got_mask = run(jnp.asarray(done))
        assert got_mask is None
        np.testing.assert_array_equal(got_obs, want_obs)
        jax.tree.map(np.testing.assert_array_equal, got_state, want_state)
        assert got_state["t"].dtype == jnp.int32
    # step_batch takes this path for an adapter with step_reached, and equals the vmapped auto-resetting step
    # over a few steps (the toy's episodes end after 1-3 steps).
    for t in range(4):
        step_keys = jax.random.split(jax.random.key(10 + t), 16)
        got_state, got = step_batch(env, step_keys, state, jnp.ones((16, 2)))
        want_state, want = jax.vmap(env.step)(step_keys, state, jnp.ones((16, 2)))
        for name in ("obs", "final_obs", "terminated"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
        jax.tree.map(np.testing.assert_array_equal, got_state, want_state)
        state = got_state


def test_reset_where_computes_only_the_resets_that_happen():
    # The loop runs ceil(ended / chunk) times: none when no episode ended, 2 for 5 ended with chunks of 4.
    from jaxppo.envs.protocol import reset_where

    calls = []

    class Recording(_CountingAdapter):
        def reset(self, key):
            out = super().reset(key)
            jax.debug.callback(lambda pos: calls.append(np.shape(pos)[0] if np.ndim(pos) > 1 else 1), out[1])
            return out

    env = Recording()
    keys = jax.random.split(jax.random.key(1), 16)
    state, obs, _ = reset_batch(_CountingAdapter(), keys)
    run = jax.jit(lambda d: reset_where(env, keys, d, (state, obs, None), 4))
    for ended, iterations in [(0, 0), (5, 2), (16, 4)]:
        calls.clear()
        jax.block_until_ready(run(jnp.arange(16) < ended))
        assert sum(calls) == iterations * 4, (ended, calls)  # resets computed: 4 per iteration
    # step_batch resets through reset_where for an adapter with step_reached: with every episode's limit at 5
    # steps, one step from a reset ends none, and no reset is computed (vmapping the adapter's step computes 16).
    long_lived = dict(state)
    long_lived["limit"] = jnp.full(16, 5, jnp.int32)
    calls.clear()
    jax.block_until_ready(jax.jit(lambda s: step_batch(env, keys, s, jnp.ones((16, 2))))(long_lived))
    assert sum(calls) == 0, calls
