"""End-to-end training: probe environments with known values, real learning, vmap/determinism/compilation."""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxppo
from jaxppo.config import HParams, stack_hparams
from jaxppo.losses import ppo_loss
from tests import helpers, probe_envs

PROBE_KW = helpers.PROBE


def _train_probe(env, total_timesteps=16_384, **overrides):
    config = jaxppo.PPOConfig(**{**PROBE_KW, "total_timesteps": total_timesteps, **overrides})
    state, metrics = jax.jit(jaxppo.make_train(config, env=env))(jax.random.key(0))
    value = jaxppo.make_value_fn(config, env=env)
    return config, state, metrics, value


def test_probe_constant_reward_learns_value_one():
    _, state, _, value = _train_probe(probe_envs.ConstantReward())
    # One step, reward 1, terminal: V = 1 exactly.
    np.testing.assert_allclose(value(state.params, jnp.array([[1.0]])), [1.0], atol=0.05)


def test_probe_observation_dependent_value():
    _, state, _, value = _train_probe(probe_envs.ObsDependentReward())
    np.testing.assert_allclose(value(state.params, jnp.array([[1.0], [-1.0]])), [1.0, -1.0], atol=0.05)


def test_probe_action_dependent_reward_learns_policy():
    env = probe_envs.ActionDependentReward()
    config, state, _, value = _train_probe(env, ent_coef=0.0)
    act = jaxppo.make_policy(config, env=env)
    obs = jnp.ones((256, 1))
    sampled = act(state.params, obs, jax.random.key(1))
    assert float(jnp.mean(sampled == 1)) > 0.95
    assert int(act(state.params, obs[:1])[0]) == 1  # deterministic action
    np.testing.assert_allclose(value(state.params, obs[:1]), [1.0], atol=0.1)


def test_probe_two_step_discounting():
    _, state, _, value = _train_probe(probe_envs.TwoStepDiscount(), gamma=0.9)
    # V(obs 0) = 0 + gamma * 1 = 0.9 ; V(obs 1) = 1.
    np.testing.assert_allclose(value(state.params, jnp.array([[0.0], [1.0]])), [0.9, 1.0], atol=0.05)


def test_probe_truncation_bootstraps_from_final_observation():
    _, state, metrics, value = _train_probe(probe_envs.TimeLimitNoTermination(), gamma=0.9, total_timesteps=32_768,
                                            lr=1e-2)
    # Never terminates, reward 1 per step: V = 1 / (1 - 0.9) = 10. Treating truncation as termination would give
    # the mean truncated sum over t = 0..4 of (1 - 0.9^(5-t)) / 0.1 = 3.44.
    np.testing.assert_allclose(value(state.params, jnp.array([[1.0]])), [10.0], atol=0.5)
    # Episodes are the 5-step truncated ones: return 5, length 5.
    np.testing.assert_allclose(metrics.episode_return[-1], 5.0)
    np.testing.assert_allclose(metrics.episode_length[-1], 5.0)


def test_probe_masked_best_action_learns_the_best_legal_action():
    env = probe_envs.MaskedBestAction()
    config, state, metrics, _ = _train_probe(env, ent_coef=0.0, total_timesteps=32_768)
    act = jaxppo.make_policy(config, env=env)
    plus, minus = jnp.ones((512, 1)), -jnp.ones((512, 1))
    mask_plus = jnp.tile(jnp.array([[False, True, True]]), (512, 1))
    mask_minus = jnp.ones((512, 3), bool)
    # Where the best action (0) is illegal the policy picks the best legal one (1); elsewhere 0.
    sampled_plus = np.asarray(act(state.params, plus, jax.random.key(1), action_mask=mask_plus))
    assert not np.any(sampled_plus == 0) and np.mean(sampled_plus == 1) > 0.95
    assert int(act(state.params, plus[:1], action_mask=mask_plus[:1])[0]) == 1
    assert int(act(state.params, minus[:1], action_mask=mask_minus[:1])[0]) == 0
    # Training return: 0.5 on +1 and 1 on -1, i.e. 0.75 on average (an illegal action never paid 1 on +1).
    assert 0.7 <= float(np.mean(np.asarray(metrics.episode_return)[-5:])) <= 0.8
    assert int(np.sum(metrics.invalid_action_masks)) == 0


@pytest.mark.slow
def test_cartpole_reaches_475_across_seeds(optimized_compile):
    config = jaxppo.PPOConfig(env="CartPole-v1")  # the defaults: 4 envs x 128 steps, 500k steps
    keys = jax.random.split(jax.random.key(42), 4)
    _, metrics = jax.jit(jax.vmap(jaxppo.make_train(config)))(keys)
    final = np.asarray(metrics.episode_return[:, -10:]).mean(axis=1)  # last 10 updates, per seed
    assert metrics.episode_return.shape == (4, config.num_updates)
    assert int(metrics.env_steps[0, -1]) == config.num_env_steps == 499_712
    assert final.mean() >= 475, final
    assert np.all(np.isfinite(np.asarray(metrics.episode_return)))


@pytest.mark.slow
def test_pendulum_clearly_improves(optimized_compile):
    config = jaxppo.PPOConfig(
        env="Pendulum-v1", num_envs=16, num_steps=256, total_timesteps=245_760, num_epochs=10, num_minibatches=16,
        lr=1e-3, gamma=0.9, ent_coef=0.0, normalize_observations=True, normalize_rewards=True,
    )
    keys = jax.random.split(jax.random.key(0), 2)
    _, metrics = jax.jit(jax.vmap(jaxppo.make_train(config)))(keys)
    returns = np.asarray(metrics.episode_return)
    first, last = returns[:, :3].mean(), returns[:, -5:].mean()
    # A random policy scores about -1200; a swinging-up policy about -200.
    assert last > first + 600, (first, last)
    assert last > -500, last


def _short_config(**overrides):
    return jaxppo.PPOConfig(**{**dict(num_envs=4, num_steps=32, total_timesteps=4 * 32 * 6), **overrides})


def test_no_recompile_when_only_hparams_change():
    config = _short_config()
    train = jax.jit(jaxppo.make_train(config))
    hp = HParams.from_config(config)
    _, a = train(jax.random.key(0), hp)
    _, b = train(jax.random.key(0), hp.replace(lr=1e-3, clip_eps=0.1, gamma=0.9))
    assert train._cache_size() == 1
    assert not np.allclose(np.asarray(a.loss.value_loss), np.asarray(b.loss.value_loss))


def test_progress_callback_runs_about_100_times_per_seed_not_every_update():
    # Under vmap the callback's predicate stays unbatched, so the host is called at the reported updates only.
    calls = []
    config = _short_config(total_timesteps=4 * 32 * 250)  # 250 updates -> every 2nd update and the last
    train = jaxppo.make_train(config, progress_fn=lambda payload: calls.append(int(payload["update"])))
    jax.block_until_ready(jax.jit(jax.vmap(train))(jax.random.split(jax.random.key(0), 3)))
    reported = sorted(set(calls))
    assert reported == list(range(2, 251, 2))
    assert len(calls) == 3 * len(reported)  # once per seed, per reported update


def test_vmap_over_keys_equals_per_key_runs():
    config = _short_config()
    train = jaxppo.make_train(config)
    keys = jax.random.split(jax.random.key(3), 3)
    batched_state, batched_metrics = jax.jit(jax.vmap(train))(keys)
    single = jax.jit(train)
    for i in range(3):
        state, metrics = single(keys[i])
        chex.assert_trees_all_close(jax.tree.map(lambda x: x[i], batched_state.params), state.params,
                                    rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(batched_metrics.episode_return[i], metrics.episode_return, rtol=1e-5)


def test_same_key_identical_and_no_recompile():
    config = _short_config()
    train = jax.jit(jaxppo.make_train(config))
    state_a, metrics_a = train(jax.random.key(7))
    state_b, metrics_b = train(jax.random.key(7))
    chex.assert_trees_all_equal(state_a.params, state_b.params)
    chex.assert_trees_all_equal(metrics_a, metrics_b)
    assert train._cache_size() == 1  # the second call reused the compiled program
    state_c, _ = train(jax.random.key(8))
    assert train._cache_size() == 1
    assert not np.allclose(jax.tree.leaves(state_c.params)[0], jax.tree.leaves(state_a.params)[0])


def test_vmap_over_hyperparameters_equals_separate_configs():
    config = _short_config()
    train = jaxppo.make_train(config)
    lrs = [1e-4, 1e-2]
    hps = stack_hparams([HParams.from_config(config).replace(lr=jnp.float32(lr)) for lr in lrs])
    key = jax.random.key(0)
    states, _ = jax.jit(jax.vmap(train, in_axes=(None, 0)))(key, hps)
    for i, lr in enumerate(lrs):
        separate, _ = jax.jit(jaxppo.make_train(_short_config(lr=lr)))(key)
        # Batched and unbatched programs may sum in different orders; Adam divides by sqrt(v), so a gradient
        # that differs in its last bits moves a parameter by up to ~1e-6 of lr per step. Bugs (a wrong lr, a
        # swapped seed) show up as differences of 1e-3 and more.
        chex.assert_trees_all_close(jax.tree.map(lambda x: x[i], states.params), separate.params,
                                    rtol=1e-3, atol=1e-5)
    # Different learning rates really lead to different parameters.
    leaf = jax.tree.leaves(states.params)[1]
    assert not np.allclose(leaf[0], leaf[1])


def test_metrics_shapes_and_bookkeeping():
    config = _short_config(total_timesteps=4 * 32 * 6 + 100)
    state, metrics = jax.jit(jaxppo.make_train(config))(jax.random.key(0))
    assert config.num_updates == 6 and "running 6 updates = 768 env steps" in config.rounding_note
    for leaf in jax.tree.leaves(metrics):
        assert leaf.shape == (6,)
    for leaf in jax.tree.leaves((metrics.loss, metrics.grad_norm, metrics.explained_variance)):
        assert np.all(np.isfinite(np.asarray(leaf)))
    np.testing.assert_array_equal(metrics.env_steps, np.arange(1, 7) * 128)
    assert metrics.env_steps.dtype == np.int64
    # Linear annealing: update u uses lr * (1 - u / N).
    np.testing.assert_allclose(metrics.learning_rate, 2.5e-4 * (1 - np.arange(6) / 6), rtol=1e-6)
    assert int(state.update_step) == 6
    # Every step belongs to an episode that ended (counted with its length) or to one still running: the
    # completed episodes' lengths plus the running lengths add up to all 768 steps.
    completed = np.asarray(metrics.episodes_completed)
    lengths = np.where(completed > 0, np.asarray(metrics.episode_length), 0.0)
    running = int(np.sum(state.env.episodes.lengths))
    np.testing.assert_allclose(np.sum(completed * lengths) + running, 768, rtol=1e-6)
    assert completed.sum() > 10  # CartPole episodes are short at first


def test_episode_return_never_nan_when_no_episode_finishes():
    # Truncation after 5 steps but rollouts of 2 steps: odd updates complete no episode.
    env = probe_envs.TimeLimitNoTermination()
    config = jaxppo.PPOConfig(**{**PROBE_KW, "num_steps": 2, "num_minibatches": 1, "total_timesteps": 8 * 2 * 10})
    _, metrics = jax.jit(jaxppo.make_train(config, env=env))(jax.random.key(0))
    completed = np.asarray(metrics.episodes_completed)
    returns = np.asarray(metrics.episode_return)
    assert np.all(np.isfinite(returns[2:]))
    assert completed[0] == 0 and np.isnan(returns[0])  # nothing finished yet: no return to report
    assert completed[2] == 8 and returns[2] == 5.0  # step 5 of every env ends in update 3
    assert completed[3] == 0 and returns[3] == 5.0  # carried forward when none finish


def test_vmapped_training_does_not_hang_and_import_changes_no_process_state():
    # Regression: jit(vmap(train)) for 2 seeds x 2048 steps hung forever on one CPU device (jaxlib 0.10.2: batched
    # LAPACK QR kernels of the orthogonal initialiser block the XLA:CPU pool). jaxppo now initialises seeds one
    # after another under vmap, with XLA's default scheduler and no process-wide flag; gymnax is imported first,
    # the order that defeated the old flag.
    code = ("import os, gymnax, jax; before = dict(os.environ); import jaxppo; assert dict(os.environ) == before; "
            "cfg = jaxppo.PPOConfig(total_timesteps=2048); "
            "s, m = jax.jit(jax.vmap(jaxppo.make_train(cfg)))(jax.random.split(jax.random.key(0), 2)); "
            "jax.block_until_ready(m); print('finished')")
    result = helpers.run_python(code)
    assert result.returncode == 0 and "finished" in result.stdout, result.stderr[-2000:]


def test_the_loss_is_a_parameter_of_the_update():
    config = _short_config()
    key = jax.random.key(0)
    reference, ref_metrics = jax.jit(jaxppo.make_train(config))(key)
    # Passing ppo_loss through the seam changes nothing, bit for bit.
    same, same_metrics = jax.jit(jaxppo.make_train(config, loss_fn=lambda *args: ppo_loss(*args)))(key)
    chex.assert_trees_all_equal(same.params, reference.params)
    chex.assert_trees_all_equal(same_metrics.loss, ref_metrics.loss)
    # A new term is trained on and reported: its metric has one value per update, and the weights shrink.
    decayed, metrics = jax.jit(jaxppo.make_train(config, loss_fn=helpers.ppo_loss_with_weight_decay))(key)
    assert set(metrics.loss) == {f.name for f in dataclasses.fields(ref_metrics.loss)} | {"weight_l2"}
    assert metrics.loss["weight_l2"].shape == (config.num_updates,)
    assert np.all(np.diff(np.asarray(metrics.loss["weight_l2"])) < 0)
    assert float(helpers.weight_l2(decayed.params)) < float(helpers.weight_l2(reference.params))
