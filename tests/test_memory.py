"""Recurrent PPO: the carry of every core (GRU, LRU) is reset exactly where an episode starts, the update replays
the rollout exactly (ratio 1 before the first step, on one device and on two), truncation bootstraps with the carry
before the reset, a memory probe is learned only with memory, the GRU's hand-written gradient is autodiff's, and a
chunked, resumed LRU run (and shared-core GRU run) equals an uninterrupted one bitwise; memory_shared=True is one
torso and one core feeding both heads."""

from __future__ import annotations

import io

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxppo
from jaxppo.agent import make_agent
from jaxppo import outputs
from jaxppo.cli.flags import parse_with_config, to_config
from jaxppo.cli.train import TrainArgs
from jaxppo.memory import CORES, ResetGRU, ResetLRU, make_core, run_cores
from jaxppo.runner import RunOptions, resume_run, train_run
from jaxppo.networks import init_params
from jaxppo.normalizers import init_normalizers
from jaxppo.losses import LossInputs
from jaxppo.rollout import reset_envs, rollout, rollout_sequences
from jaxppo.update import make_layout
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


@pytest.mark.parametrize("memory, shared", [("gru", False), ("lru", False), ("gru", True), ("lru", True)])
def test_update_replays_the_rollout_from_the_stored_carry_with_its_resets(memory, shared):
    config = _gru_config(memory=memory, memory_shared=shared)
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


@pytest.mark.parametrize("memory", ["gru", "lru"])
def test_sequences_are_replayed_from_the_carry_the_rollout_had_at_their_start(memory):
    # sequence_length 16 of a 64-step rollout: 4 sequences per environment. The rollout is rollout()'s, step for
    # step; the carry stored at each sequence start is the network's carry there (the network stepped one
    # observation at a time); the laid-out sequence b * 4 + c, replayed from its stored carry, gives the rollout's
    # values of steps 16c ... 16c + 15 of environment b.
    config = _gru_config(memory=memory, sequence_length=16)
    agent = make_agent(config)
    params = init_params(agent.network, agent.spec, jax.random.key(0))
    ids = jnp.arange(4, dtype=jnp.int32)
    normalizers = init_normalizers((4,))
    carry, _, _ = rollout(agent, params, reset_envs(agent, jax.random.key(1), ids), jax.random.key(2), ids,
                          normalizers, 0.99)  # non-zero carries, episodes in progress
    end, traj, _, starts = rollout_sequences(agent, params, carry, jax.random.key(3), ids, normalizers, 0.99)
    plain_end, plain, _ = rollout(agent, params, carry, jax.random.key(3), ids, normalizers, 0.99)
    chex.assert_trees_all_equal((end, traj), (plain_end, plain))
    assert np.asarray(traj.first[1:]).any()
    h, expected = carry.memory, []
    for t in range(64):
        if t % 16 == 0:
            expected.append(h)
        h, _, _ = agent.network.apply(params, h, traj.obs[t:t + 1], traj.first[t:t + 1])
    chex.assert_trees_all_close(starts, jax.tree.map(lambda *x: jnp.stack(x), *expected), rtol=1e-5, atol=1e-6)

    batch = LossInputs(obs=traj.obs, first=traj.first, action_mask=None, actions=traj.action,
                       old_log_probs=traj.log_prob, old_values=traj.value, advantages=traj.reward,
                       returns=traj.reward, memory=starts)
    laid_out = make_layout(config).arrange(batch)
    _, _, values = agent.network.apply(params, laid_out.memory, laid_out.obs, laid_out.first)  # [16, 4 * 4]
    by_sequence = np.asarray(traj.value).reshape(4, 16, 4).transpose(1, 2, 0).reshape(16, 16)  # [l, b * 4 + c]
    np.testing.assert_allclose(values, by_sequence, rtol=1e-5, atol=1e-6)
    # Every sequence replayed from the rollout's first carry instead gives other values: the check can tell.
    first_carry = jax.tree.map(lambda x: jnp.repeat(x, 4, axis=0), carry.memory)
    _, _, wrong = agent.network.apply(params, first_carry, laid_out.obs, laid_out.first)
    assert not np.allclose(np.asarray(wrong), by_sequence, atol=1e-4)


@pytest.mark.parametrize("num_devices, sequence_length, shared", [(1, 0, False), (2, 0, False), (2, 16, False),
                                                                  (2, 16, True)])
def test_ratio_is_one_at_the_first_minibatch_step(num_devices, sequence_length, shared):
    # One epoch of one minibatch: the loss is evaluated at the rollout's parameters, so if the update replays the
    # rollout exactly (same carry, same resets) every ratio is 1: approx_kl 0, nothing clipped. With sequences of
    # 16 steps each is replayed from the carry stored at its start. (Policy head gain 1: the initial logits depend
    # on the carry, so a replay from another carry moves the ratio.)
    config = _gru_config(num_epochs=1, num_devices=num_devices, total_timesteps=4 * 64,
                         sequence_length=sequence_length, policy_head_gain=1.0, memory_shared=shared)
    _, metrics = jax.jit(jaxppo.make_train(config))(jax.random.key(0))
    assert int(metrics.episodes_completed[0]) > 0  # episodes ended mid-sequence
    assert abs(float(metrics.loss.approx_kl[0])) < 1e-6
    assert float(metrics.loss.clip_fraction[0]) == 0.0


def test_memory_probe_is_learned_with_memory_only():
    env = probe_envs.RememberTheCue()  # +1 for recalling a cue shown 3 steps earlier, -1 otherwise
    base = dict(env="custom", num_envs=16, num_steps=16, total_timesteps=16 * 16 * 150, num_minibatches=4,
                lr=3e-3, anneal_lr=False, hidden_sizes=(32,), ent_coef=0.0)
    results = {}
    for name, memory, shared in (("gru", "gru", False), ("gru-shared", "gru", True), ("none", "none", False)):
        config = jaxppo.PPOConfig(**base, memory=memory, memory_size=32, gamma=0.9, memory_shared=shared)
        _, metrics = jax.jit(jaxppo.make_train(config, env=env))(jax.random.key(0))
        results[name] = float(np.nanmean(np.asarray(metrics.episode_return)[-10:]))
    assert results["gru"] > 0.9 and results["gru-shared"] > 0.9, results
    assert abs(results["none"]) < 0.3, results  # chance: a memoryless policy expects 0


@pytest.mark.parametrize("shared", [False, True])
def test_truncation_bootstrap_uses_the_carry_before_the_reset(shared):
    env = probe_envs.TimeLimitNoTermination()  # reward 1 forever, truncated after 5 steps: V = 1 / (1 - gamma)
    config = jaxppo.PPOConfig(**{**helpers.PROBE, "total_timesteps": 32_768, "lr": 1e-2, "gamma": 0.9,
                                 "memory": "gru", "memory_size": 16, "num_minibatches": 2, "memory_shared": shared})
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


# ------------------------------------------------------------------------------------------------------- LRU
def _lru_reference(params, carry, inputs, first, decay_power=8.0):
    """ResetLRU step by step in float64 NumPy, from the module docstring's equations."""
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), params["params"])
    x = np.asarray(inputs, np.float64)
    h, outputs = np.asarray(carry, np.float64), []
    for t in range(x.shape[0]):
        h = np.where(np.asarray(first[t])[:, None], 0.0, h)
        value = x[t] @ p["input"]["kernel"] + p["input"]["bias"]
        a = (1.0 / (1.0 + np.exp(-p["decay"]))) ** decay_power
        h = a * h + np.sqrt(1.0 - a * a) * value
        outputs.append(np.tanh(np.concatenate([h, x[t]], -1) @ p["readout"]["kernel"] + p["readout"]["bias"]))
    return h, np.stack(outputs)


@pytest.mark.parametrize("scan", ["associative", "sequential"])
def test_lru_scan_with_resets_equals_a_step_by_step_numpy_reference(scan):
    lru = ResetLRU(6, scan=scan)
    t, b = 8, 4
    inputs = jax.random.normal(jax.random.key(0), (t, b, 5))
    # Resets on the first step (env 0), mid-sequence (env 1 twice), on the last step (env 2), never (env 3).
    first = np.zeros((t, b), bool)
    first[0, 0] = first[2, 1] = first[5, 1] = first[t - 1, 2] = True
    carry0 = jax.random.normal(jax.random.key(1), (b, 6))  # a carry from an earlier rollout
    params = lru.init(jax.random.key(2), carry0, inputs, jnp.asarray(first))
    carry, outputs = lru.apply(params, carry0, inputs, jnp.asarray(first))
    ref_carry, ref_outputs = _lru_reference(params, carry0, inputs, first)
    np.testing.assert_allclose(outputs, ref_outputs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(carry, ref_carry, rtol=1e-5, atol=1e-6)
    # One step at a time (the rollout's T = 1 calls) gives the same as the whole sequence (the update's replay).
    h, stepped = carry0, []
    for step in range(t):
        h, out = lru.apply(params, h, inputs[step:step + 1], jnp.asarray(first[step:step + 1]))
        stepped.append(out[0])
    np.testing.assert_allclose(jnp.stack(stepped), outputs, rtol=1e-5, atol=1e-6)
    # The carry matters where no reset came first, and not at all where one did.
    other = lru.apply(params, carry0 + 1.0, inputs, jnp.asarray(first))[1]
    assert not np.allclose(other[:, 3], outputs[:, 3]) and not np.allclose(other[:2, 1], outputs[:2, 1])
    np.testing.assert_array_equal(other[:, 0], outputs[:, 0])
    np.testing.assert_array_equal(other[2:, 1], outputs[2:, 1])


def test_lru_scan_by_backend_and_unknown_scan_names_the_choices():
    from jaxppo.memory import linear_recurrence

    a, b = jax.random.uniform(jax.random.key(0), (2, 5, 3, 4))
    first, carry = jnp.zeros((5, 3), bool).at[2, 1].set(True), jnp.ones((3, 4))
    by_name = {scan: linear_recurrence(carry, a, b, first, scan) for scan in ("associative", "sequential", "auto")}
    np.testing.assert_allclose(by_name["sequential"], by_name["associative"], rtol=1e-6)
    np.testing.assert_array_equal(by_name["auto"], by_name["sequential"])  # the CPU backend of the test session
    with pytest.raises(ValueError, match="scan='parallel': must be one of auto, associative, sequential"):
        linear_recurrence(carry, a, b, first, "parallel")


def test_gru_hand_written_gradient_equals_autodiff_of_the_equations():
    gru = ResetGRU(6)
    t, b = 7, 3
    inputs = jax.random.normal(jax.random.key(0), (t, b, 4))
    first = jnp.zeros((t, b), bool).at[0, 1].set(True).at[3, 0].set(True).at[t - 1, 2].set(True)
    carry0 = jax.random.normal(jax.random.key(1), (b, 6))
    params = gru.init(jax.random.key(2), carry0, inputs, first)
    w_out, w_carry = jax.random.normal(jax.random.key(3), (t, b, 6)), jax.random.normal(jax.random.key(4), (b, 6))

    def reference(params, carry, inputs):  # flax GRUCell's equations, autodiff through lax.scan
        p = params["params"]
        x = inputs @ p["input"]["kernel"] + p["input"]["bias"]
        w, b_hn = p["recurrent_kernel"], p["recurrent_bias_n"]

        def step(h, xs):
            x_t, first_t = xs
            h = jnp.where(first_t[:, None], 0.0, h)
            r = jax.nn.sigmoid(x_t[:, :6] + h @ w[:, :6])
            z = jax.nn.sigmoid(x_t[:, 6:12] + h @ w[:, 6:12])
            n = jnp.tanh(x_t[:, 12:] + r * (h @ w[:, 12:] + b_hn))
            h = (1 - z) * n + z * h
            return h, h

        return jax.lax.scan(step, carry, (x, first))

    def loss(core_fn, params, carry, inputs):
        last, outputs = core_fn(params, carry, inputs)
        return jnp.sum(outputs * w_out) + jnp.sum(last * w_carry)

    apply = lambda params, carry, inputs: gru.apply(params, carry, inputs, first)
    chex.assert_trees_all_close(apply(params, carry0, inputs), reference(params, carry0, inputs), rtol=1e-5,
                                atol=1e-6)
    grads = jax.grad(lambda *a: loss(apply, *a), argnums=(0, 1, 2))(params, carry0, inputs)
    expected = jax.grad(lambda *a: loss(reference, *a), argnums=(0, 1, 2))(params, carry0, inputs)
    chex.assert_trees_all_close(grads, expected, rtol=1e-5, atol=1e-6)


def test_lru_replays_the_rollout_exactly_on_one_and_two_devices():
    # One minibatch of one epoch per update: every update's loss is evaluated at the rollout's parameters, so if
    # the update replays the rollout exactly (stored carry, resets) every ratio is 1: approx_kl 0, nothing clipped.
    # Update 2 replays from a carry left by update 1. Two devices learn what one learns (same global minibatch).
    # (With the initial policy head, gain 0.01, the ratios are near 1 whatever the carry: the replay itself is
    # checked value by value in test_update_replays_the_rollout_from_the_stored_carry_with_its_resets.)
    results = {}
    for devices in (1, 2):
        config = jaxppo.PPOConfig(num_envs=4, num_steps=64, total_timesteps=4 * 64 * 2, num_minibatches=1,
                                  num_epochs=1, memory="lru", memory_size=16, num_devices=devices)
        results[devices] = jax.jit(jaxppo.make_train(config))(jax.random.key(0))
        _, metrics = results[devices]
        assert int(metrics.episodes_completed[0]) > 0  # episodes ended mid-sequence
        assert np.all(np.abs(np.asarray(metrics.loss.approx_kl)) < 1e-6), metrics.loss.approx_kl
        assert np.all(np.asarray(metrics.loss.clip_fraction) == 0.0)
    (one, _), (two, _) = results[1], results[2]
    chex.assert_trees_all_close(two.params, one.params, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(two.env.memory, one.env.memory, rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.asarray(one.env.memory[0]), 0.0)  # the carry is in use


@pytest.mark.slow
@pytest.mark.parametrize("memory, shared", [("lru", False), ("gru", True)])
def test_chunked_resumed_recurrent_run_equals_an_uninterrupted_one_bitwise(tmp_path, memory, shared):
    config = helpers.tiny_config(updates=4, memory=memory, memory_size=8, memory_shared=shared)
    options = RunOptions(chunk_updates=2, checkpoint_every=2)
    train_run(config, tmp_path / "whole", options, stream=io.StringIO())
    stopped = train_run(config, tmp_path / "parted", options, stop_after_updates=2, stream=io.StringIO())
    assert not stopped.finished and stopped.updates_done == 2
    resumed = resume_run(tmp_path / "parted", stream=io.StringIO())
    assert resumed.finished and resumed.updates_done == 4
    params = lambda run: (tmp_path / run / outputs.PARAMS).read_bytes()
    assert params("parted") == params("whole")


def test_cli_memory_flag_takes_lru():
    args, _ = parse_with_config(TrainArgs, ["--memory", "lru", "--memory-size", "32"], "jaxppo train")
    config = to_config(args.config)
    assert (config.memory, config.memory_size, config.recurrent, config.memory_shared) == ("lru", 32, True, False)
    args, _ = parse_with_config(TrainArgs, ["--memory", "gru", "--memory-shared"], "jaxppo train")
    assert to_config(args.config).memory_shared is True


def test_shared_memory_is_one_torso_and_one_core_feeding_both_heads():
    config = _gru_config(memory_shared=True, hidden_sizes=(8,))
    agent = make_agent(config)
    params = init_params(agent.network, agent.spec, jax.random.key(0))
    assert set(params["params"]) == {"torso", "core", "actor_head", "critic_head"}
    separate = init_params(make_agent(_gru_config(hidden_sizes=(8,))).network, agent.spec, jax.random.key(0))
    size = lambda p: sum(x.size for x in jax.tree.leaves(p))
    assert size(params) == size(separate) - size(separate["params"]["critic_torso"]) - size(
        separate["params"]["critic_core"])
    t, b = 5, 3
    obs = jax.random.normal(jax.random.key(1), (t, b, 4))
    first = jnp.zeros((t, b), bool).at[2, 1].set(True)
    carry = (jax.random.normal(jax.random.key(2), (b, 16)),)  # one carry: the one core's
    assert jax.tree.map(jnp.shape, agent.network.initial_carry(b)) == ((b, 16),)
    out_carry, logits, values = agent.network.apply(params, carry, obs, first)
    # The same composition by hand from the submodules' own parameters: torso -> core -> each head.
    p = params["params"]
    head = lambda q, x: x @ q["kernel"] + q["bias"]
    torso = jnp.tanh(head(p["torso"]["Dense_0"], obs))
    core_carry, features = make_core("gru", 16).apply({"params": p["core"]}, carry[0], torso, first)
    chex.assert_trees_all_close((out_carry, logits, values),
                                ((core_carry,), head(p["actor_head"], features),
                                 head(p["critic_head"], features)[..., 0]), rtol=1e-5, atol=1e-6)
    # The bootstrap value continues the same carry without a reset.
    value = agent.network.apply(params, carry, obs[0], method=agent.network.value_from)
    np.testing.assert_allclose(value, values[0], rtol=1e-5, atol=1e-6)


class _TwoCores(nn.Module):
    """Two cores run by jaxppo.memory.run_cores, as the actor-critic network runs its actor and critic cores."""

    core: str
    features: int

    @nn.compact
    def __call__(self, carries, inputs, first):
        cores = (CORES[self.core](self.features, name="actor"), CORES[self.core](self.features, name="critic"))
        return run_cores(cores, carries, inputs, first)


@pytest.mark.parametrize("core", ["gru", "lru"])
@pytest.mark.parametrize("widths", [(5, 5), (5, 3)])
def test_cores_run_together_give_each_core_its_own_result(core, widths):
    # Equal shapes: one program vmapped over the cores (one time loop); unequal input widths: one after another.
    # Either way each core's result is what the core alone returns with its own parameters, carry and inputs.
    t, b = 6, 3
    keys = jax.random.split(jax.random.key(0), 4)
    inputs = tuple(jax.random.normal(k, (t, b, w)) for k, w in zip(keys[:2], widths))
    carries = tuple(jax.random.normal(k, (b, 4)) for k in keys[2:])
    first = jnp.zeros((t, b), bool).at[0, 0].set(True).at[3, 1].set(True)
    pair = _TwoCores(core, 4)
    params = pair.init(jax.random.key(1), carries, inputs, first)
    out_carries, outputs = pair.apply(params, carries, inputs, first)
    alone = make_core(core, 4)
    for name, carry, x, out_carry, out in zip(("actor", "critic"), carries, inputs, out_carries, outputs):
        expected_carry, expected = alone.apply({"params": params["params"][name]}, carry, x, first)
        chex.assert_trees_all_close((out_carry, out), (expected_carry, expected), rtol=1e-5, atol=1e-6)
    assert not np.allclose(outputs[0], outputs[1])  # two cores, two results: swapping them would be seen
    loops = str(jax.make_jaxpr(lambda p: pair.apply(p, carries, inputs, first))(params)).count("scan[")
    assert loops == (1 if widths[0] == widths[1] else 2)


def test_shared_core_with_head_layers_is_purejaxrl_ppo_rnn_shape():
    """memory_shared with head_hidden_sizes=(8,): torso -> one core -> a layer of each head's own -> its output
    layer (PureJaxRL's ppo_rnn.py), by hand; the truncation bootstrap (value_from) goes through the critic's
    layer too."""
    config = _gru_config(memory_shared=True, hidden_sizes=(8,), head_hidden_sizes=(8,), activation="relu")
    agent = make_agent(config)
    params = init_params(agent.network, agent.spec, jax.random.key(0))
    p = params["params"]
    assert set(p) == {"torso", "core", "actor_head_layers", "critic_head_layers", "actor_head", "critic_head"}
    t, b = 4, 3
    obs = jax.random.normal(jax.random.key(1), (t, b, 4))
    first = jnp.zeros((t, b), bool).at[1, 0].set(True)
    carry = (jax.random.normal(jax.random.key(2), (b, 16)),)
    out_carry, logits, values = agent.network.apply(params, carry, obs, first)
    dense = lambda q, x: x @ q["kernel"] + q["bias"]
    torso = jax.nn.relu(dense(p["torso"]["Dense_0"], obs))
    core_carry, features = make_core("gru", 16).apply({"params": p["core"]}, carry[0], torso, first)
    head = lambda name, x: dense(p[name], jax.nn.relu(dense(p[f"{name}_layers"]["Dense_0"], x)))
    chex.assert_trees_all_close((out_carry, logits, values),
                                ((core_carry,), head("actor_head", features), head("critic_head", features)[..., 0]),
                                rtol=1e-5, atol=1e-6)
    value = agent.network.apply(params, carry, obs[0], method=agent.network.value_from)
    np.testing.assert_allclose(value, values[0], rtol=1e-5, atol=1e-6)
