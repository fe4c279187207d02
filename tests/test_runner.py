"""The host-side run: chunk schedule and pace, the non-finite guard, one compiled program for every chunk, chunked ==
whole, after-chunk hooks, stop requests, a custom environment instance through train / eval / resume / load."""

from __future__ import annotations

import io

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxppo
from jaxppo import outputs, runner
from jaxppo.guard import find_nonfinite, nonfinite_params
from jaxppo.hooks import ChunkDone
from jaxppo.runner import ChunkedRun, RunOptions, chunk_length, next_stop, resume_run, train_run
from tests import helpers, probe_envs


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
        done = next_stop(done, chunk_length(config, options), 40, [10, 4])
        stops.append(done)
    # Every multiple of 10 (checkpoints) and of 4 (evaluations) is a chunk boundary.
    assert stops == [20, 24, 28, 30, 32, 36, 40]
    # Without intervals: about 20 chunks.
    assert chunk_length(config, RunOptions()) == 2 and chunk_length(helpers.tiny_config(updates=3), RunOptions()) == 1


def test_one_program_for_chunks_of_any_length_equal_to_one_call():
    config = helpers.tiny_config(updates=8)
    chunked = ChunkedRun(config, num_seeds=2, chunk_updates=3)
    keys = jax.random.split(jax.random.key(3), 2)
    state = chunked.init(keys)
    returns = []
    for size in (3, 3, 2):  # the short last chunk runs on the same program (masked updates)
        state, metrics, _ = chunked.run_chunk(state, size)
        returns.append(np.asarray(metrics.episode_return))
        assert metrics.episode_return.shape == (2, size)
    # No XLA compilation at all for chunks of other lengths (counted by JAX's own compile events).
    compiles = []

    def count(event, seconds, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(count)
    try:
        for size in (1, 2, 3):
            chunked.run_chunk(state, size)
    finally:
        jax.monitoring.unregister_event_duration_listener(count)
    assert compiles == []
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


def test_stop_request_checkpoints_and_resume_continues(tmp_path, monkeypatch):
    # A real SIGTERM during the first chunk is honoured after that chunk: a checkpoint, a resume line, and resume ==
    # uninterrupted bitwise, with a recurrent policy (the GRU carry is part of the checkpointed state).
    import os
    import signal

    config = helpers.tiny_config(updates=6, memory="gru", memory_size=8)
    train_run(config, tmp_path / "whole", RunOptions(chunk_updates=2), stream=io.StringIO())
    original = ChunkedRun.run_chunk

    def signalled(self, state, num_updates):
        os.kill(os.getpid(), signal.SIGTERM)
        return original(self, state, num_updates)

    stream = io.StringIO()
    monkeypatch.setattr(ChunkedRun, "run_chunk", signalled)
    stopped = train_run(config, tmp_path / "parted", RunOptions(chunk_updates=2), stream=stream)
    monkeypatch.undo()
    assert not stopped.finished and stopped.updates_done == 2 and stopped.stopped_by == "SIGTERM"
    assert "SIGTERM received: stopped after update 2/6; continue with: jaxppo train --resume" in stream.getvalue()
    resumed = resume_run(tmp_path / "parted", stream=io.StringIO())
    assert resumed.finished
    for name in (outputs.PARAMS, outputs.METRICS):
        assert (tmp_path / "parted" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name


def test_a_custom_loss_runs_through_the_library_run_and_its_metrics_become_columns(tmp_path):
    result = train_run(helpers.tiny_config(updates=3), tmp_path / "run", RunOptions(chunk_updates=2),
                       stream=io.StringIO(), loss_fn=helpers.ppo_loss_with_weight_decay)
    columns = outputs.read_metrics_csv(tmp_path / "run" / outputs.METRICS)
    assert columns["weight_l2"].shape == (1, 3) and np.all(columns["weight_l2"] > 0)
    np.testing.assert_array_equal(columns["weight_l2"], result.columns["weight_l2"])
    assert "policy_loss" in columns and "total_loss" in columns


def test_chunks_are_bounded_by_time_and_memory_whatever_the_total():
    # 1e12 env steps of CartPole in 4-env x 16-step updates: ~1.6e10 updates. The compiled chunk holds at most
    # MAX_CHUNK_METRICS_BYTES of metrics, and once an update's time is known a chunk takes about CHUNK_SECONDS.
    config = helpers.tiny_config(updates=1, total_timesteps=64 * (2**31 - 1))
    for seeds in (1, 4):
        size = chunk_length(config, RunOptions(num_seeds=seeds))
        assert 1000 < size * seeds * 4 * runner.METRICS_PER_UPDATE <= runner.MAX_CHUNK_METRICS_BYTES
    pace = runner.ChunkPace(limit=10**6)
    assert pace.next() == runner.FIRST_CHUNK_UPDATES  # speed unknown: a short first chunk
    pace.record(16, 1.6)  # 0.1 s per update
    assert pace.next() == int(runner.CHUNK_SECONDS / 0.1)
    pace.record(10, 1e-6)
    assert pace.next() == 10**6  # fast: the compiled size
    pace.record(1, 1000.0)
    assert pace.next() == 1


class _Recorder:
    """An after-chunk hook of a test: records the updates it was called after."""

    def __init__(self, every: int):
        self.every, self.calls, self.closed = every, [], False

    def after_chunk(self, chunk: ChunkDone) -> None:
        assert chunk.columns["env_steps"].shape == (1, chunk.done - chunk.first)
        self.calls.append(chunk.done)

    def close(self) -> None:
        self.closed = True


def test_after_chunk_hooks_are_called_on_their_schedule_and_closed(tmp_path, monkeypatch):
    # A new kind of after-chunk work plugs in as one more hook: every 3 updates of a 7-update run (chunks of 2).
    every_chunk, every_third = _Recorder(0), _Recorder(3)
    original = runner._Run.open_hooks

    def open_hooks(self, purge_step):
        original(self, purge_step)
        self.hooks += [every_chunk, every_third]

    monkeypatch.setattr(runner._Run, "open_hooks", open_hooks)
    train_run(helpers.tiny_config(updates=7), tmp_path / "run", RunOptions(chunk_updates=2), stream=io.StringIO())
    assert every_third.calls == [3, 6, 7]  # multiples of 3 and the last update
    assert every_chunk.calls == [2, 3, 5, 6, 7]  # the loop ended chunks at the hook's multiples
    assert every_chunk.closed and every_third.closed


def test_the_options_a_resume_may_change_are_declared_once_and_the_cli_reads_them(tmp_path, capsys):
    assert runner.RESUMABLE_OPTIONS == ("chunk_updates", "checkpoint_every", "keep_checkpoints", "eval_every",
                                        "eval_episodes", "video_every", "tensorboard", "wandb_project", "wandb_mode",
                                        "check_sync")
    run = tmp_path / "run"
    assert helpers.train_cli(*helpers.TINY_FLAGS, "--total-timesteps", str(64 * 4), "--stop-after-updates", "2",
                             "--out", str(run)) == 0  # a stop writes its checkpoint without --checkpoint-every
    with pytest.raises(ValueError, match="seed cannot change when resuming"):
        resume_run(run, overrides={"seed": 3})
    assert helpers.train_cli("--resume", str(run), "--keep-checkpoints", "5", "--eval-every", "2", "--quiet") == 0
    assert (run / "eval.csv").read_text().count("\n4,") == 1


def test_a_custom_env_instance_trains_evaluates_resumes_and_loads(tmp_path):
    env = probe_envs.ConstantReward()
    config = jaxppo.PPOConfig(**helpers.PROBE, total_timesteps=8 * 16 * 4)
    run = tmp_path / "run"
    stopped = train_run(config, run, RunOptions(eval_every=2, eval_episodes=2), stop_after_updates=2, env=env,
                        stream=io.StringIO())
    assert stopped.updates_done == 2 and (run / "eval.csv").read_text().count("\n2,") == 1
    with pytest.raises(ValueError, match="env='custom'"):
        resume_run(run, stream=io.StringIO())  # the instance is code: the folder cannot hold it
    resumed = resume_run(run, env=env, stream=io.StringIO())
    assert resumed.finished and (run / "eval.csv").read_text().count("\n4,") == 1
    rows = [line.split(",") for line in (run / "eval.csv").read_text().splitlines()[1:]]
    assert all(float(r[3]) == 1.0 and float(r[5]) == 1.0 for r in rows)  # one step, reward 1: the probe's episodes
    with pytest.raises(ValueError, match=r"env='custom'\): pass the same instance"):
        jaxppo.load(run)
    loaded = jaxppo.load(run, env=env)
    assert loaded.act(np.ones((3, 1), np.float32)).shape == (3,)
