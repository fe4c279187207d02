"""Multi-device and multi-process training on fake CPU devices (conftest.py makes 8 before jax is imported)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

import jaxppo
from jaxppo import cli
from jaxppo.agent import make_agent
from jaxppo.collectives import DEVICE_AXIS, replicas_in_sync
from jaxppo.config import HParams
from jaxppo.losses import ppo_loss
from jaxppo.networks import init_params
from jaxppo.update import init_optimizer_state, make_layout, make_replay, minibatch_step
from tests import helpers
from tests.helpers import SHORT_RUN, random_minibatch

ROOT = Path(__file__).resolve().parents[1]
NUM_DEVICES = 4


def _mesh(n: int = NUM_DEVICES) -> Mesh:
    return Mesh(np.array(jax.devices()[:n]), (DEVICE_AXIS,))


def _loss_grad(agent, params, batch, hp):
    return jax.grad(lambda p: ppo_loss(p, batch, hp, agent.config, make_replay(agent, make_layout(agent.config)))[0])(params)


def _grad_on_devices(agent, params, batch, hp, check_vma: bool):
    """Per-device gradient on a quarter of the batch, then lax.pmean: the per-device update's arithmetic."""

    def per_device(params, batch):
        return jax.lax.pmean(_loss_grad(agent, params, batch, hp), DEVICE_AXIS)

    return jax.jit(jax.shard_map(per_device, mesh=_mesh(), in_specs=(P(), P(DEVICE_AXIS)), out_specs=P(),
                                 check_vma=check_vma))(params, batch)


def test_pmean_gradient_equals_single_device_full_batch_gradient():
    agent = make_agent(jaxppo.PPOConfig())
    params = init_params(agent.network, agent.spec, jax.random.key(0))
    batch = random_minibatch(jax.random.key(1))
    hp = HParams.from_config(agent.config)
    full = _loss_grad(agent, params, batch, hp)
    chex.assert_trees_all_close(_grad_on_devices(agent, params, batch, hp, check_vma=False), full,
                                rtol=1e-5, atol=1e-7)
    # The trap jaxppo avoids: under check_vma=True the gradient w.r.t. replicated parameters is already summed
    # over devices, so the same code would step NUM_DEVICES times too far.
    summed = _grad_on_devices(agent, params, batch, hp, check_vma=True)
    chex.assert_trees_all_close(summed, jax.tree.map(lambda g: NUM_DEVICES * g, full), rtol=1e-4, atol=1e-6)


def test_minibatch_step_on_devices_equals_full_batch_step_without_clipping():
    from jax.flatten_util import ravel_pytree

    agent = make_agent(jaxppo.PPOConfig())
    params = init_params(agent.network, agent.spec, jax.random.key(0))
    flat, unravel = ravel_pytree(params)
    opt_state = init_optimizer_state(agent.config, params)
    batch = random_minibatch(jax.random.key(2))
    hp = HParams.from_config(agent.config).replace(max_grad_norm=1e9, lr=1e-2)  # no clipping
    layout = make_layout(agent.config)
    expected, _, metrics = minibatch_step(agent, layout, ppo_loss, unravel, flat, opt_state, batch, hp)

    def per_device(flat, opt_state, batch):
        return minibatch_step(agent, layout, ppo_loss, unravel, flat, opt_state, batch, hp, DEVICE_AXIS)

    got, _, got_metrics = jax.jit(jax.shard_map(per_device, mesh=_mesh(), in_specs=(P(), P(), P(DEVICE_AXIS)),
                                                out_specs=P(), check_vma=False))(flat, opt_state, batch)
    chex.assert_trees_all_close(got, expected, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(got_metrics, metrics, rtol=1e-4, atol=1e-6)


def _train(num_devices=1, seeds=None, **overrides):
    config = jaxppo.PPOConfig(**{**SHORT_RUN, **overrides}, num_devices=num_devices)
    train = jaxppo.make_train(config, check_replicas=num_devices > 1)
    if seeds is None:
        return jax.jit(train)(jax.random.key(0))
    return jax.jit(jax.vmap(train))(seeds)


@pytest.fixture(scope="module")
def single_device_run():
    return _train()


@pytest.mark.parametrize("num_devices", [2, 4])
def test_layout_invariance_short_training(single_device_run, num_devices):
    ref_state, ref_metrics = single_device_run
    state, metrics = _train(num_devices)
    # Same global batch and key, 4 minibatches per epoch: the same samples in every minibatch on any layout,
    # so only float summation order differs.
    chex.assert_trees_all_close(state.params, ref_state.params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics.episode_return, ref_metrics.episode_return, rtol=1e-5)
    np.testing.assert_allclose(metrics.loss.policy_loss, ref_metrics.loss.policy_loss, rtol=1e-3, atol=1e-6)
    # Environment arrays come back by global env index: the same env states as on one device.
    chex.assert_trees_all_close(state.env.obs, ref_state.env.obs, rtol=1e-5, atol=1e-6)
    assert bool(np.all(metrics.replicas_in_sync))


@pytest.mark.parametrize("memory, recompute, sequence_length",
                         [("none", False, 0), ("gru", False, 0), ("gru", False, 4), ("none", True, 0)])
def test_layout_invariance_one_update(memory, recompute, sequence_length):
    # With memory, minibatches are groups of environment sequences (whole, or 4 per rollout): the same groups on
    # any layout too. With recomputed advantages every epoch gathers its own minibatch statistics from every device.
    one = dict(total_timesteps=SHORT_RUN["num_envs"] * SHORT_RUN["num_steps"] * (1 if memory == "none" else 2),
               memory=memory, memory_size=8, recompute_advantages=recompute, gae_horizon=5 if recompute else 0,
               sequence_length=sequence_length)
    ref_state, ref_metrics = _train(**one)
    state, metrics = _train(NUM_DEVICES, **one)
    chex.assert_trees_all_close(state.params, ref_state.params, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(state.env.memory, ref_state.env.memory, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics.loss.value_loss, ref_metrics.loss.value_loss, rtol=1e-4)


def test_replicas_identical_on_every_device_after_training():
    state, _ = _train(NUM_DEVICES)
    for leaf in jax.tree.leaves(state.params):
        copies = [np.asarray(shard.data) for shard in leaf.addressable_shards]
        assert len(copies) == NUM_DEVICES
        for copy in copies[1:]:
            np.testing.assert_array_equal(copy, copies[0])


def test_sync_check_detects_diverged_replicas():
    check = jax.jit(jax.shard_map(lambda x: replicas_in_sync({"w": x}, DEVICE_AXIS), mesh=_mesh(),
                                  in_specs=P(DEVICE_AXIS), out_specs=P(), check_vma=False))
    assert bool(check(jnp.ones((NUM_DEVICES, 3))))
    assert not bool(check(jnp.ones((NUM_DEVICES, 3)).at[2, 1].set(1.0 + 1e-6)))


def test_vmap_over_seeds_composes_with_devices():
    keys = jax.random.split(jax.random.key(5), 2)
    states, metrics = _train(NUM_DEVICES, seeds=keys)
    assert metrics.episode_return.shape == (2, 4)
    single, _ = _train(1, seeds=keys)  # the same seeds vmapped on one device
    chex.assert_trees_all_close(states.params, single.params, rtol=1e-5, atol=1e-6)
    assert not np.allclose(jax.tree.leaves(states.params)[1][0], jax.tree.leaves(states.params)[1][1])


def test_more_devices_than_exist_is_a_clear_error():
    config = jaxppo.PPOConfig(**{**SHORT_RUN, "num_envs": 32}, num_devices=16)
    with pytest.raises(ValueError, match=r"num_devices=16: only 8 local cpu device\(s\).*xla_force_host_platform"):
        jaxppo.make_train(config)


def test_cli_num_devices_all_with_sync_check(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["train", "--num-envs", "8", "--num-steps", "16", "--total-timesteps", "512", "--num-devices",
                     "all", "--check-sync", "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["devices_per_process"] == len(jax.local_devices()) and summary["replicas_in_sync"] is True


def test_cli_gives_no_idle_device_hint_on_cpu(tmp_path, capsys):
    # On CPU one device already spreads large batches over every core, and fake devices add synchronisation
    # (docs/results.md): the hint would mislead there, so it is given on accelerators only.
    assert cli.main(["train", "--num-envs", "4", "--num-steps", "16", "--total-timesteps", "128",
                     "--num-minibatches", "1", "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert "devices are idle" not in capsys.readouterr().out


def test_one_all_reduce_per_minibatch_step_and_one_gather_per_update():
    # Collectives are expensive on XLA:CPU (an in-process rendezvous each): gradients and loss metrics travel in
    # one all-reduce per minibatch step, every statistic of an update in one all-gather. The compiled program's
    # text lists each collective op once, wherever its loop runs it.
    import re

    for memory in ("none", "gru"):
        config = jaxppo.PPOConfig(**{**SHORT_RUN, "num_minibatches": 2}, num_devices=2, memory=memory,
                                  normalize_observations=True, normalize_rewards=True)
        text = jax.jit(jaxppo.make_train(config)).lower(jax.random.key(0)).compile().as_text()
        ops = re.findall(r"= [^ ]+ (all-reduce|all-gather|all-to-all|collective-permute|reduce-scatter)(?:-start)?\(",
                         text)
        assert sorted(ops) == ["all-gather", "all-reduce"], (memory, ops)
    # Recomputed advantages: one more all-gather, per epoch (each epoch's minibatch statistics).
    config = jaxppo.PPOConfig(**SHORT_RUN, num_devices=2, recompute_advantages=True)
    text = jax.jit(jaxppo.make_train(config)).lower(jax.random.key(0)).compile().as_text()
    ops = re.findall(r"= [^ ]+ (all-reduce|all-gather)(?:-start)?\(", text)
    assert sorted(ops) == ["all-gather", "all-gather", "all-reduce"], ops
    # With check_replicas the fingerprint adds one all-gather per update.
    config = jaxppo.PPOConfig(**SHORT_RUN, num_devices=2)
    text = jax.jit(jaxppo.make_train(config, check_replicas=True)).lower(jax.random.key(0)).compile().as_text()
    ops = re.findall(r"= [^ ]+ (all-reduce|all-gather)(?:-start)?\(", text)
    assert sorted(ops) == ["all-gather", "all-gather", "all-reduce"], ops


# ------------------------------------------------------------------------------------------- multi-process
@pytest.mark.slow
def test_two_processes_match_single_process_four_devices(tmp_path):
    port = helpers.free_port()
    outs = [tmp_path / f"p{i}.npz" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, str(ROOT / "tests" / "multihost_worker.py"), str(port), "2", str(i),
                               "2", str(outs[i])], env=helpers.subprocess_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=240)[0])
    finally:
        for proc in procs:
            proc.kill()
    assert all(proc.returncode == 0 for proc in procs), "\n".join(logs)
    results = [np.load(out) for out in outs]
    assert int(results[0]["process_count"]) == 2
    ref_state, ref_metrics = _train(NUM_DEVICES)
    ref_leaves = jax.tree.leaves(ref_state.params)
    for result in results:
        assert bool(np.all(result["in_sync"]))
        for i, ref in enumerate(ref_leaves):
            np.testing.assert_allclose(result[f"param_{i}"], ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(result["episode_return"], ref_metrics.episode_return, rtol=1e-5)
    for i in range(len(ref_leaves)):  # every process ends with the same parameters
        np.testing.assert_array_equal(results[0][f"param_{i}"], results[1][f"param_{i}"])


@pytest.mark.slow
@pytest.mark.parametrize("killed", [1, 0])
def test_a_killed_peer_ends_the_others_in_one_line_and_the_last_checkpoint_stays_the_resume_point(tmp_path, killed):
    port, timeout = helpers.free_port(), 30  # the line must come at once, not after JAX's heartbeat timeout
    out = tmp_path / "run"
    env = helpers.subprocess_env(devices=2)
    command = [sys.executable, "-m", "jaxppo.cli", "train", "--coordinator", f"127.0.0.1:{port}", "--num-processes",
               "2", "--num-devices", "2", "--num-envs", "8", "--num-steps", "16", "--total-timesteps", "50000000",
               "--checkpoint-every", "4", "--timeout", str(timeout), "--out", str(out)]
    procs = [subprocess.Popen(command + ["--process-id", str(i)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    survivor = procs[1 - killed]
    try:
        assert helpers.wait_for(out / "checkpoints" / "8", timeout=180), "no checkpoint was written"
        assert survivor.poll() is None, survivor.communicate()[1]
        procs[killed].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        if killed == 0:  # JAX's coordination service lives beside process 0 and outlives it by a few seconds
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
        _, err = survivor.communicate(timeout=timeout * 3)
        elapsed = time.monotonic() - killed_at
    finally:
        for proc in procs:
            proc.kill()
    assert survivor.returncode == 1, err[-3000:]
    assert elapsed < timeout / 2, elapsed
    name = "process 0 (the coordinator)" if killed == 0 else "process 1"
    errors = [line for line in err.splitlines() if line.startswith("jaxppo: error:")]
    assert errors == [f"jaxppo: error: {name} of 2 was lost: its connection closed without a goodbye (killed or "
                      f"crashed); this process stops too; start every process again with the same command and "
                      f"--resume auto to continue from the last complete checkpoint in {out}"], err[-3000:]
    assert "Check failure stack trace" not in err and "Traceback" not in err, err[-3000:]
    if killed == 1:  # the run continues, on one process, from its newest complete checkpoint
        complete = max(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit())
        result = subprocess.run([sys.executable, "-m", "jaxppo.cli", "train", "--resume", str(out),
                                 "--stop-after-updates", "4"],
                                env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        said = result.stdout + result.stderr
        assert f"resuming {out} after update {complete}/" in said and f"stopped after update {complete + 4}/" in said, said


def test_layout_invariance_with_observation_and_reward_normalisation(single_device_run):
    overrides = dict(normalize_observations=True, normalize_rewards=True)
    ref_state, _ = _train(**overrides)
    state, _ = _train(NUM_DEVICES, **overrides)
    chex.assert_trees_all_close(state.params, ref_state.params, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(state.normalizers, ref_state.normalizers, rtol=1e-5, atol=1e-6)


def test_unreachable_coordinator_fails_within_timeout(tmp_path):
    port, timeout = helpers.free_port(), 3  # nobody listens there: process 0 never comes
    command = [sys.executable, "-m", "jaxppo.cli", "train", "--coordinator", f"127.0.0.1:{port}", "--num-processes",
               "2", "--process-id", "1", "--timeout", str(timeout), "--out", str(tmp_path / "run")]
    start = time.monotonic()
    result = subprocess.run(command, env=helpers.subprocess_env(), capture_output=True, text=True, timeout=timeout * 12)
    assert result.returncode != 0
    assert time.monotonic() - start < timeout * 8
    assert "joining coordinator" in result.stderr
    assert not (tmp_path / "run").exists()
