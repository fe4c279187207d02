"""The learning half of an update: minibatch layout promises, the optimizer step, learning-rate annealing."""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import jaxppo
from jaxppo.config import HParams
from jaxppo.update import (apply_gradient, make_layout, init_optimizer_state, random_permutation,
                           sample_minibatches, sequence_minibatches)


def _words(key, shape):
    return jax.random.bits(key, shape, jnp.uint32)


def test_random_permutation_is_a_permutation_and_mixes():
    for n in (1, 2, 5, 512, 1000):
        perm = np.asarray(random_permutation(_words(jax.random.key(n), (n,))))
        np.testing.assert_array_equal(np.sort(perm), np.arange(n))
    # Position of element 0 over many draws is about uniform (chi-square over 8 positions).
    n, draws = 8, 4000
    perms = np.asarray(random_permutation(_words(jax.random.key(0), (draws, n))))
    counts = np.bincount(np.argmax(perms == 0, axis=1), minlength=n)
    chi2 = np.sum((counts - draws / n) ** 2 / (draws / n))
    assert chi2 < 30, counts  # 7 degrees of freedom: p(chi2 > 30) < 1e-4


def _global_sets(num_envs, num_steps, num_minibatches, num_devices, key):
    """Per minibatch, the set of global samples (env, t) the devices hold together."""
    per_device = num_envs // num_devices
    sets = [set() for _ in range(num_minibatches)]
    for device in range(num_devices):
        first_env = device * per_device
        indices = np.asarray(sample_minibatches(key, jnp.arange(1), per_device, num_steps, num_minibatches,
                                                first_env))[0]
        assert indices.shape == (num_minibatches, per_device * num_steps // num_minibatches)
        for m, row in enumerate(indices):
            sets[m] |= {(first_env + i // num_steps, i % num_steps) for i in row}
    return sets


@pytest.mark.parametrize("num_envs, num_steps, num_minibatches", [(8, 16, 4), (8, 6, 4), (16, 5, 8), (4, 128, 4)])
def test_each_sample_once_per_epoch_and_the_same_minibatches_on_any_device_count(num_envs, num_steps,
                                                                                 num_minibatches):
    key = jax.random.key(3)
    reference = _global_sets(num_envs, num_steps, num_minibatches, 1, key)
    everything = set().union(*reference)
    assert len(everything) == num_envs * num_steps and sum(map(len, reference)) == num_envs * num_steps
    for devices in (2, 4):
        per_device = num_envs // devices
        if (per_device * num_steps) % num_minibatches:
            continue  # not a valid layout (the config refuses it)
        assert _global_sets(num_envs, num_steps, num_minibatches, devices, key) == reference
    # Stratified: with T % M == 0 every minibatch holds T / M steps of every environment.
    if num_steps % num_minibatches == 0:
        for minibatch in reference:
            envs = [e for e, _ in minibatch]
            assert sorted(set(envs)) == list(range(num_envs))
            assert all(envs.count(e) == num_steps // num_minibatches for e in range(num_envs))


def test_sequence_minibatches_hold_whole_environments_the_same_on_any_device_count():
    num_envs, num_minibatches, key = 16, 4, jax.random.key(5)

    def sets(devices):
        per_device = num_envs // devices
        result = [set() for _ in range(num_minibatches)]
        for device in range(devices):
            rows = np.asarray(sequence_minibatches(key, jnp.arange(1), per_device, num_minibatches,
                                                   device * per_device))[0]
            for m, row in enumerate(rows):
                result[m] |= {device * per_device + int(e) for e in row}
        return result

    reference = sets(1)
    assert sorted(e for s in reference for e in s) == list(range(num_envs))  # each environment once
    assert all(len(s) == num_envs // num_minibatches for s in reference)
    assert sets(2) == reference and sets(4) == reference


def test_apply_gradient_equals_optax_clip_adam_lr():
    params = {"a": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(4)}
    flat, unravel = ravel_pytree(params)
    config = jaxppo.PPOConfig()
    hp = HParams.from_config(config).replace(max_grad_norm=0.5)
    reference = optax.chain(optax.clip_by_global_norm(0.5), optax.scale_by_adam(eps=config.adam_eps),
                            optax.scale_by_learning_rate(1e-2))
    ref_params, ref_state = params, reference.init(params)
    state = init_optimizer_state(config, params)
    for step in range(3):
        grads = jax.tree.map(lambda x: jnp.sin(x + step) * (3.0 if step == 0 else 0.1), params)  # clipped once
        updates, ref_state = reference.update(grads, ref_state, ref_params)
        ref_params = optax.apply_updates(ref_params, updates)
        flat, state, norm = apply_gradient(config, flat, ravel_pytree(grads)[0], state, hp.replace(lr=1e-2))
        np.testing.assert_allclose(float(norm), float(optax.tree.norm(grads)), rtol=1e-6)
    chex.assert_trees_all_close(unravel(flat), ref_params, rtol=1e-6, atol=1e-7)


def test_epochs_shuffle_differently():
    config = jaxppo.PPOConfig(num_envs=4, num_steps=16, num_epochs=3, num_minibatches=2)
    indices = np.asarray(make_layout(config).minibatches(jax.random.key(0), 4, 0))
    assert indices.shape == (3, 2, 32)
    for epoch in indices:
        np.testing.assert_array_equal(np.sort(epoch.ravel()), np.arange(64))
    assert not np.array_equal(indices[0], indices[1]) and not np.array_equal(indices[1], indices[2])


def _advantage_statistics_loss(params, batch, hp, config, evaluate):
    """A loss that reports the statistics of the advantages it is handed (per minibatch; averaged over steps)."""
    adv = batch.advantages
    zero = 0.0 * sum(jnp.sum(leaf) for leaf in jax.tree.leaves(params))  # a loss with a (zero) gradient
    return zero, {"abs_mean": jnp.abs(jnp.mean(adv)), "std_error": jnp.abs(jnp.std(adv) - 1.0)}


@pytest.mark.parametrize("memory", ["none", "gru"])
def test_the_trainer_normalises_each_minibatch_with_its_own_statistics(memory):
    # The path the trainer runs (prepare -> gathered moments -> learn): every minibatch the loss sees has mean 0
    # and population std 1 (up to the 1e-8 in the denominator); without the option the raw advantages arrive.
    overrides = dict(env="CartPole-v1", num_envs=8, num_steps=16, num_minibatches=4, total_timesteps=8 * 16 * 2,
                     memory=memory, memory_size=8)
    train = jaxppo.make_train(jaxppo.PPOConfig(**overrides), loss_fn=_advantage_statistics_loss)
    _, metrics = jax.jit(train)(jax.random.key(0))
    assert float(jnp.max(metrics.loss["abs_mean"])) < 1e-5
    assert float(jnp.max(metrics.loss["std_error"])) < 1e-4
    raw = jaxppo.make_train(jaxppo.PPOConfig(**overrides, normalize_advantages=False),
                            loss_fn=_advantage_statistics_loss)
    _, metrics = jax.jit(raw)(jax.random.key(0))
    assert float(jnp.min(metrics.loss["std_error"])) > 0.05


# ------------------------------------------------------------------------------- recomputed advantages
def _recompute_setup(memory: str, num_epochs: int = 2, gae_horizon: int = 3):
    """An agent, its initial parameters and a synthetic rollout (T = 12 steps of B = 4 environments) with episode
    starts, terminations and truncations in the middle, acted on by the policy itself (ratio 1 before learning).

    Returns (agent, params, TargetInputs, LossInputs [T, B] with the targets of the rollout's critic)."""
    from jaxppo.agent import apply_policy, make_agent
    from jaxppo.losses import LossInputs
    from jaxppo.networks import init_params
    from jaxppo.update import TargetInputs, recompute_targets

    num_steps, num_envs = 12, 4
    config = jaxppo.PPOConfig(num_envs=num_envs, num_steps=num_steps, num_minibatches=2, num_epochs=num_epochs,
                              total_timesteps=num_envs * num_steps, memory=memory, memory_size=8,
                              recompute_advantages=True, gae_horizon=gae_horizon)
    agent = make_agent(config)
    keys = jax.random.split(jax.random.key(3), 8)
    params = init_params(agent.network, agent.spec, keys[0])
    rng = np.random.default_rng(0)
    terminated = rng.random((num_steps, num_envs)) < 0.1
    truncated = rng.random((num_steps, num_envs)) < 0.1
    terminated[4, 0] = truncated[7, 1] = truncated[num_steps - 1, 2] = True
    first = np.concatenate([rng.random((1, num_envs)) < 0.5, terminated | truncated])  # [T + 1, B]
    memory_carry = jax.tree.map(lambda x: jax.random.normal(keys[1], x.shape), agent.network.initial_carry(num_envs))
    inputs = TargetInputs(
        obs=jax.random.normal(keys[2], (num_steps + 1, num_envs, 4)), first=jnp.asarray(first), memory=memory_carry,
        reward=jax.random.normal(keys[3], (num_steps, num_envs)), terminated=jnp.asarray(terminated),
        truncated=jnp.asarray(truncated),
        bootstrap_value=jnp.where(truncated, jax.random.normal(keys[4], (num_steps, num_envs)), 0.0))
    _, dist, values = apply_policy(agent, params, memory_carry, inputs.obs[:-1], inputs.first[:-1])
    actions = dist.sample(keys[5])
    hp = HParams.from_config(config)
    advantages, returns = recompute_targets(agent, params, inputs, hp)
    batch = LossInputs(obs=inputs.obs[:-1], first=inputs.first[:-1], action_mask=None, actions=actions,
                       old_log_probs=dist.log_prob(actions), old_values=values, advantages=advantages,
                       returns=returns, memory=jax.tree.map(lambda x: x[None], memory_carry))  # one sequence
    return agent, params, inputs, batch


@pytest.mark.parametrize("memory", ["none", "gru"])
def test_recomputed_targets_are_gae_of_the_critic_stepped_one_observation_at_a_time(memory):
    # Reference: the critic applied one step at a time from the stored carry (reset where `first`), over the T + 1
    # observations; truncated steps bootstrap from the rollout's value of their final observation; GAE walked
    # forward in NumPy with the horizon's cuts (tests/test_advantages.py).
    from jaxppo.agent import policy_step
    from tests.test_advantages import np_gae_delta_sum

    agent, params, inputs, batch = _recompute_setup(memory)
    step = jax.jit(lambda carry, obs, first: policy_step(agent, params, carry, obs, first))
    carry, values = inputs.memory, []
    for t in range(inputs.obs.shape[0]):
        carry, _, value = step(carry, inputs.obs[t], inputs.first[t])
        values.append(np.asarray(value, np.float64))
    values = np.stack(values)
    v_next = np.where(inputs.truncated, np.asarray(inputs.bootstrap_value), values[1:])
    terminated = np.asarray(inputs.terminated)
    done = terminated | np.asarray(inputs.truncated)
    expected = np_gae_delta_sum(np.asarray(inputs.reward, np.float64), values[:-1], v_next, terminated, done,
                                0.99, 0.95, horizon=3)
    np.testing.assert_allclose(np.asarray(batch.advantages), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(batch.returns), expected + values[:-1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("memory", ["none", "gru"])
def test_each_epoch_learns_from_the_targets_of_the_critic_it_starts_with(memory):
    # learn() with recompute_advantages over 2 epochs equals two one-epoch learns of the plain path, each handed
    # the targets recomputed under the parameters that epoch starts with (and its own minibatch statistics).
    from jaxppo.collectives import gather
    from jaxppo.losses import ppo_loss
    from jaxppo.update import UpdatePlan, learn, prepare, recompute_targets

    agent, params, inputs, batch = _recompute_setup(memory)
    layout = make_layout(agent.config)
    hp = HParams.from_config(agent.config).replace(lr=3e-3)
    opt_state = init_optimizer_state(agent.config, params)
    plan = prepare(layout, batch, jax.random.key(7), 4, 0, inputs)
    learned, _, _ = jax.jit(lambda p, o: learn(agent, layout, ppo_loss, p, o, plan, None, hp))(params, opt_state)

    def one_epoch(params, opt_state, epoch, target_params):
        advantages, returns = layout.arrange_steps(recompute_targets(agent, target_params, inputs, hp))
        indices = plan.indices[epoch:epoch + 1]
        moments = gather(layout.advantage_moments(advantages, indices), None)
        epoch_plan = UpdatePlan(plan.batch._replace(advantages=advantages, returns=returns), indices, None, None)
        return learn(agent, layout, ppo_loss, params, opt_state, epoch_plan, moments, hp)[:2]

    after_first = one_epoch(params, opt_state, 0, params)
    expected = one_epoch(*after_first, 1, after_first[0])
    stale = one_epoch(*after_first, 1, params)  # the second epoch with the rollout critic's targets
    chex.assert_trees_all_close(learned, expected[0], rtol=1e-5, atol=1e-6)
    gap = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(stale[0]), jax.tree.leaves(expected[0])))
    assert gap > 1e-4, gap  # the recomputation changes the result by far more than the tolerance


@pytest.mark.parametrize("num_envs, rows_per_env, max_rows, expected", [
    (2048, 81, 4096, 32),  # Brax's notebook batch: 32 environments x 81 steps = 2,592 rows per chunk
    (16, 129, 4096, 16),  # all rows fit: one chunk
    (2047, 81, 4096, 23),  # 2047 = 23 x 89
    (2039, 81, 4096, 2039),  # prime: chunks of one environment would be too small, so one chunk
    (64, 5000, 4096, 1),  # one environment's rows exceed the target: one environment per chunk
])
def test_env_chunk_size_is_the_largest_divisor_within_the_row_target(num_envs, rows_per_env, max_rows, expected):
    from jaxppo.update import env_chunk_size

    assert env_chunk_size(num_envs, rows_per_env, max_rows) == expected


@pytest.mark.parametrize("memory", ["none", "gru"])
def test_values_replayed_in_chunks_of_environments_equal_one_pass_over_all(memory):
    # 12 + 1 steps of 4 environments, chunks of at most 26 rows: 2 chunks of 2 environments, each replayed from
    # its own environments' stored carries (a wrong split of the carry or of the time-major arrays mixes them).
    from jaxppo.update import env_chunk_size, replayed_values

    agent, params, inputs, _ = _recompute_setup(memory)
    assert env_chunk_size(4, 13, 26) == 2
    whole = agent.network.apply(params, inputs.memory, inputs.obs, inputs.first)[2]
    chunked = jax.jit(lambda p: replayed_values(agent, p, inputs.memory, inputs.obs, inputs.first, 26))(params)
    assert chunked.shape == whole.shape == (13, 4)
    np.testing.assert_allclose(np.asarray(chunked), np.asarray(whole), rtol=1e-6, atol=1e-6)


def test_the_first_epoch_learns_from_the_rollout_targets_and_later_epochs_recompute():
    # The first epoch starts with the rollout's critic, so it keeps the targets the plan holds (no critic pass);
    # the second recomputes them. Stored targets set to 5 and 7 (never the critic's) show which epoch saw what:
    # with a zero-gradient loss the parameters never move, so the second epoch's targets are recompute_targets
    # of the initial parameters; the metrics are means over both epochs' equal-sized minibatch steps.
    from jaxppo.update import learn, prepare, recompute_targets

    agent, params, inputs, batch = _recompute_setup("none")
    config = dataclasses.replace(agent.config, normalize_advantages=False)
    agent = agent._replace(config=config)
    layout = make_layout(config)
    hp = HParams.from_config(config)
    stored = batch._replace(advantages=jnp.full_like(batch.advantages, 5.0), returns=jnp.full_like(batch.returns, 7.0))
    plan = prepare(layout, stored, jax.random.key(7), 4, 0, inputs)
    _, _, metrics = jax.jit(lambda p: learn(agent, layout, _target_statistics_loss, p,
                                            init_optimizer_state(config, p), plan, None, hp))(params)
    advantages, returns = recompute_targets(agent, params, inputs, hp)
    np.testing.assert_allclose(float(metrics.loss["advantages"]), (5.0 + float(jnp.mean(advantages))) / 2, rtol=1e-5)
    np.testing.assert_allclose(float(metrics.loss["returns"]), (7.0 + float(jnp.mean(returns))) / 2, rtol=1e-5)


def _target_statistics_loss(params, batch, hp, config, evaluate):
    """A loss with a zero gradient that reports the targets it is handed (raw advantages and value targets)."""
    zero = 0.0 * sum(jnp.sum(leaf) for leaf in jax.tree.leaves(params))
    return zero, {"returns": jnp.mean(batch.returns), "returns_sq": jnp.mean(jnp.square(batch.returns)),
                  "advantages": jnp.mean(batch.advantages), "advantages_sq": jnp.mean(jnp.square(batch.advantages))}


def test_the_trainer_recomputes_the_rollout_targets_when_the_critic_has_not_moved():
    # The trainer's wiring (the observation after the rollout, normalised as the policy saw it; its `first`; the
    # carry at the rollout's start): with parameters that never change, every epoch's recomputed targets are the
    # rollout's targets, whatever the horizon. With memory, so the carry matters (the feed-forward path differs
    # only in the layout, which test_each_epoch_learns_... covers). With advantage_form="vtrace", so both paths
    # must hand the config's form to gae (the third run, GAE's form, shows the forms differ here).
    memory = "gru"
    overrides = dict(env="CartPole-v1", num_envs=8, num_steps=16, num_minibatches=4, num_epochs=2,
                     total_timesteps=8 * 16 * 3, memory=memory, memory_size=8, normalize_advantages=False,
                     normalize_observations=True, gae_horizon=6)
    runs = [jax.jit(jaxppo.make_train(jaxppo.PPOConfig(**overrides, recompute_advantages=recompute,
                                                       advantage_form=form),
                                      loss_fn=_target_statistics_loss))(jax.random.key(0))[1].loss
            for recompute, form in ((False, "vtrace"), (True, "vtrace"), (False, "gae"))]
    for name in runs[0]:
        np.testing.assert_allclose(runs[1][name], runs[0][name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert float(jnp.max(runs[0]["returns_sq"])) > 0.1  # not trivially zero targets
    np.testing.assert_allclose(runs[2]["returns"], runs[0]["returns"], rtol=1e-5, atol=1e-6)  # same lambda-returns
    assert np.max(np.abs(np.asarray(runs[2]["advantages_sq"]) - np.asarray(runs[0]["advantages_sq"]))) > 1e-3
