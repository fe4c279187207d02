"""The host-side run: chunk schedule, the non-finite guard, one compiled program for every chunk, chunked == whole,
stop requests."""

from __future__ import annotations

import io

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxppo
from jaxppo import outputs
from jaxppo.runner import (ChunkedRun, RunOptions, chunk_length, find_nonfinite, next_stop, nonfinite_params,
                           resume_run, train_run)
from tests import helpers


def test_nonfinite_metric_is_named_with_update_and_seed():
    metrics = {name: np.ones((2, 3), np.float32) for name in ("value_loss", "policy_loss", "grad_norm")}
    assert find_nonfinite(metrics, ["value_loss", "policy_loss"], first_update=10) is None
    metrics["value_loss"][1, 2] = np.inf
    message = find_nonfinite(metrics, ["value_loss", "policy_loss"], first_update=10)
    assert message == "non-finite value_loss (inf) at update 13 (seed index 1)"
    metrics["value_loss"][1, 2] = 1.0
    metrics["grad_norm"][0, 0] = np.nan
    assert find_nonfinite(metrics, ["value_loss"], 0) == "non-finite grad_norm (nan) at update 1 (seed index 0)"


def test_nonfinite_parameters_are_named_by_path():
    assert nonfinite_params({"actor": {"w": jnp.ones((2, 4))}}, 13) is None
    params = {"actor": {"w": jnp.ones((2, 4))}, "critic": {"b": jnp.array([[0.0, jnp.nan]])}}
    assert nonfinite_params(params, 13) == "non-finite parameters ['critic']['b'] after update 13"


def test_chunk_schedule_keeps_intervals_after_an_unaligned_resume():
    config = helpers.tiny_config(updates=40)
    options = RunOptions(checkpoint_every=10, eval_every=4)
    assert chunk_length(config, options) == 4
    stops, done = [], 17  # resumed after update 17 (e.g. --stop-after-updates 17)
    while done < 40:
        done = next_stop(done, config, options, chunk_length(config, options), 40)
        stops.append(done)
    # Every multiple of 10 (checkpoints) and of 4 (evaluations) is a chunk boundary.
    assert stops == [20, 24, 28, 30, 32, 36, 40]
    # Without intervals: about 20 chunks.
    assert chunk_length(config, RunOptions()) == 2 and chunk_length(helpers.tiny_config(updates=3), RunOptions()) == 1


def test_one_program_for_chunks_of_any_length_equal_to_one_call():
    config = helpers.tiny_config(updates=8)
    runner = ChunkedRun(config, num_seeds=2, chunk_updates=3)
    keys = jax.random.split(jax.random.key(3), 2)
    state = runner.init(keys)
    returns = []
    for size in (3, 3, 2):  # the short last chunk runs on the same program (masked updates)
        state, metrics, _ = runner.run_chunk(state, size)
        returns.append(np.asarray(metrics.episode_return))
        assert metrics.episode_return.shape == (2, size)
    assert runner._chunk._cache_size() if hasattr(runner._chunk, "_cache_size") else True
    compiled_once = runner.compile_seconds
    runner.run_chunk(state, 1)
    assert runner.compile_seconds == compiled_once  # no recompilation
    # To float tolerance against jit(vmap(train)), where XLA may fuse the masked updates differently.
    whole_state, whole_metrics = jax.jit(jax.vmap(jaxppo.make_train(config)))(keys)
    chex.assert_trees_all_close(state.params, whole_state.params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.concatenate(returns, axis=1), whole_metrics.episode_return, rtol=1e-5)


def test_library_run_writes_the_same_files_as_the_cli(tmp_path):
    stream = io.StringIO()
    result = train_run(helpers.tiny_config(updates=5), tmp_path / "lib", RunOptions(num_seeds=2, seed=3),
                       stream=stream)
    assert result.finished and result.updates_done == 5
    assert result.columns["episode_return"].shape == (2, 5)
    summary = outputs.read_json(tmp_path / "lib" / outputs.SUMMARY)
    assert summary["seeds"] == [3, 4] and summary["num_updates"] == 5
    assert "compiling" in stream.getvalue() and "compiled in" in stream.getvalue()
    assert helpers.train_cli(*helpers.TINY_FLAGS, "--total-timesteps", str(64 * 5), "--seed", "3", "--num-seeds",
                             "2", "--out", str(tmp_path / "cli")) == 0
    lib, cli = (outputs.read_metrics_csv(tmp_path / d / outputs.METRICS) for d in ("lib", "cli"))
    for name in lib:
        np.testing.assert_array_equal(lib[name], cli[name], err_msg=name)


def test_stop_request_checkpoints_and_resume_continues(tmp_path):
    # A SIGTERM-like request is honoured after the chunk: a checkpoint, a resume line, and resume == uninterrupted
    # bitwise, with a recurrent policy (the GRU carry is part of the checkpointed state).
    import jaxppo.runner as runner_module

    config = helpers.tiny_config(updates=6, memory="gru", memory_size=8)
    whole = train_run(config, tmp_path / "whole", RunOptions(chunk_updates=2), stream=io.StringIO())

    original = runner_module.StopRequests.installed

    def request_stop(self):
        self.requested = "SIGTERM"
        return original(self)

    stream = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner_module.StopRequests, "installed", request_stop)
        stopped = train_run(config, tmp_path / "parted", RunOptions(chunk_updates=2), stream=stream)
    assert not stopped.finished and stopped.updates_done == 2
    assert "SIGTERM received: stopped after update 2/6; continue with: jaxppo train --resume" in stream.getvalue()
    resumed = resume_run(tmp_path / "parted", stream=io.StringIO())
    assert resumed.finished
    assert (tmp_path / "parted" / outputs.PARAMS).read_bytes() == (tmp_path / "whole" / outputs.PARAMS).read_bytes()
    del whole


def test_a_custom_loss_runs_through_the_library_run_and_its_metrics_become_columns(tmp_path):
    result = train_run(helpers.tiny_config(updates=3), tmp_path / "run", RunOptions(chunk_updates=2),
                       stream=io.StringIO(), loss_fn=helpers.ppo_loss_with_weight_decay)
    columns = outputs.read_metrics_csv(tmp_path / "run" / outputs.METRICS)
    assert columns["weight_l2"].shape == (1, 3) and np.all(columns["weight_l2"] > 0)
    np.testing.assert_array_equal(columns["weight_l2"], result.columns["weight_l2"])
    assert "policy_loss" in columns and "total_loss" in columns
