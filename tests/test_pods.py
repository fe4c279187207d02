"""Pod-scale runs: exact counters past 2^31 and 2^32 env steps, elastic resume onto another layout, multi-host
checkpoints with pre-emption (SIGTERM) on two processes, and JAX's cluster detection from SLURM variables."""

from __future__ import annotations

import pytest

import io
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np

import jaxppo
from jaxppo import outputs
from jaxppo.checkpoint import CheckpointStore
from jaxppo.loading import read_final_params
from jaxppo.runner import ChunkedRun, RunOptions, resume_run, train_run
from tests import helpers


def test_counters_are_exact_across_2_31_and_2_32_env_steps(tmp_path):
    # 512 env steps per update; start the update counter just below 2^31 / 512 and 2^32 / 512 and run across.
    config = jaxppo.PPOConfig(total_timesteps=512 * 10_000_000)  # 5.1e9 env steps: allowed, counters are exact
    assert config.num_env_steps == 5_120_000_000
    runner = ChunkedRun(config, num_seeds=1, chunk_updates=4)
    state = runner.init(jax.random.key(0)[None])
    for boundary in (2**31, 2**32):
        start = boundary // 512 - 2
        state = state.replace(update_step=jnp.full((1,), start, jnp.int32))
        state, metrics, _ = runner.run_chunk(state, 4)
        steps = outputs.metrics_columns(metrics)["env_steps"][0]
        np.testing.assert_array_equal(steps, [(start + u) * 512 for u in range(1, 5)])
        assert steps[1] == boundary and steps.dtype == np.int64
        lr = (1.0 - np.arange(start, start + 4) / config.num_updates) * config.lr
        np.testing.assert_allclose(np.asarray(metrics.learning_rate)[0], lr, rtol=1e-6)
        # Files keep them exact too.
        path = tmp_path / f"metrics_{boundary}.csv"
        outputs.write_metrics_csv(path, outputs.metrics_columns(metrics))
        np.testing.assert_array_equal(outputs.read_metrics_csv(path, config.num_updates)["env_steps"][0], steps)
    # A checkpoint of that state (step ~8.4M updates) restores.
    store = CheckpointStore(tmp_path / "ckpt", config)
    store.save(int(state.update_step[0]), state, {})
    restored, _ = store.restore(store.latest_step(), runner.init(jax.random.key(1)[None]))
    assert int(restored.update_step[0]) == 2**32 // 512 + 2
    store.close()


@pytest.mark.slow
def test_elastic_resume_from_4_devices_onto_2_continues_the_same_learning(tmp_path):
    config = helpers.tiny_config(updates=6, num_envs=8, num_devices=4)
    options = RunOptions(chunk_updates=2, checkpoint_every=2)
    whole = train_run(config, tmp_path / "whole", options, stream=io.StringIO())
    train_run(config, tmp_path / "elastic", options, stop_after_updates=2, stream=io.StringIO())
    resumed = resume_run(tmp_path / "elastic", num_devices=2, stream=io.StringIO())
    assert resumed.finished and resumed.config.num_devices == 2
    chex.assert_trees_all_close(resumed.state.params, whole.state.params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(resumed.columns["episode_return"], whole.columns["episode_return"], rtol=1e-5)
    # The run's files stay those of one run: the evaluation of its final parameters reads them.
    assert read_final_params(tmp_path / "elastic")[2] == 1


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


LONG_RUN = ["--num-envs", "8", "--num-steps", "16", "--num-minibatches", "2", "--total-timesteps", str(128 * 3000),
            "--chunk-updates", "2", "--checkpoint-every", "1000", "--quiet"]


def _train_processes(args: list[str], num_processes: int, devices: int, port: int) -> list[subprocess.Popen]:
    command = [sys.executable, "-m", "jaxppo.cli", "train", *args]
    if num_processes > 1:
        command += ["--coordinator", f"127.0.0.1:{port}", "--num-processes", str(num_processes), "--timeout", "60"]
    return [subprocess.Popen(command + (["--process-id", str(i)] if num_processes > 1 else []),
                             env=helpers.subprocess_env(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
            for i in range(num_processes)]


def _checkpoint(run: Path, step: int, config: jaxppo.PPOConfig):
    store = CheckpointStore(run / "checkpoints", config)
    try:
        state, _ = store.restore(step, ChunkedRun(config, 1, 1).init(jax.random.key(0)[None]))
    finally:
        store.close()
    return state


@pytest.mark.slow
def test_two_processes_preempted_by_sigterm_resume_elastically_on_one_process_and_back(tmp_path):
    run = tmp_path / "run"
    # 1) Two processes x 2 devices; SIGTERM to both (what SLURM sends): each finishes its chunk, one consistent
    #    checkpoint is written, both exit 0 saying how to resume.
    procs = _train_processes([*LONG_RUN, "--out", str(run)], 2, 2, helpers.free_port())
    results = helpers.signal_once_running(procs, run / "metrics.csv", signal.SIGTERM)
    assert [proc.returncode for proc in procs] == [0, 0], results
    assert "SIGTERM received: stopped after update" in results[0][0] and "--resume" in results[0][0]
    steps = sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    assert len(steps) == 1 and steps[0] % 2 == 0
    stopped = steps[0]
    # 2) Elastic: the 2-process checkpoint resumes on ONE process with 4 devices, for 2 more updates.
    (one,) = _train_processes(["--resume", str(run), "--num-devices", "4", "--stop-after-updates", "2"], 1, 4, 0)
    out, err = one.communicate(timeout=180)
    assert one.returncode == 0, err
    assert f"resuming {run} after update {stopped}/3000" in out
    # 3) And back: two processes x 2 devices continue from the 1-process checkpoint for 2 more.
    procs = _train_processes(["--resume", str(run), "--num-devices", "2", "--stop-after-updates", "2"], 2, 2,
                             helpers.free_port())
    results = [proc.communicate(timeout=180) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], results
    # The same learning as one uninterrupted process with 4 devices (counts are global: the same config).
    config = outputs.read_config(run)
    reference = train_run(config, tmp_path / "reference", RunOptions(chunk_updates=2, checkpoint_every=1000),
                          stop_after_updates=stopped + 4, stream=io.StringIO())
    assert reference.updates_done == stopped + 4
    resumed = _checkpoint(run, stopped + 4, config)
    chex.assert_trees_all_close(resumed.params, reference.state.params, rtol=1e-4, atol=1e-5)
    chex.assert_trees_all_close(resumed.env.obs, reference.state.env.obs, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(outputs.read_metrics_csv(run / "metrics.csv", 3000)["episode_return"],
                               reference.columns["episode_return"], rtol=1e-4)


@pytest.mark.slow
def test_sigterm_on_one_process_checkpoints_and_exits_zero(tmp_path):
    run = tmp_path / "run"
    (proc,) = _train_processes([*LONG_RUN, "--out", str(run)], 1, 1, 0)
    ((out, err),) = helpers.signal_once_running([proc], run / "metrics.csv", signal.SIGTERM)
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert "SIGTERM received: stopped after update" in out and f"jaxppo train --resume {run}" in out
    assert any(p.name.isdigit() for p in (run / "checkpoints").iterdir())


@pytest.mark.slow
def test_slurm_variables_make_jax_detect_the_cluster(tmp_path):
    # Two local processes with the variables SLURM sets for a 2-task step: no --coordinator flags, JAX's own
    # detection finds the coordinator (first node of the step, port from the job id) and the process ids.
    job_id = next(j for j in range(7 * 4096 + 100, 8 * 4096) if _is_free(61440 + j % 4096))  # JAX's port rule
    procs = []
    for rank in range(2):
        env = helpers.subprocess_env(1, SLURM_JOB_ID=str(job_id), SLURM_STEP_NODELIST="127.0.0.1", SLURM_NTASKS="2",
                   SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank), SLURM_STEP_NUM_NODES="1")
        procs.append(subprocess.Popen([sys.executable, "-m", "jaxppo.cli", "train", *helpers.TINY_FLAGS,
                                       "--num-envs", "4", "--total-timesteps", "128", "--timeout", "60", "--out",
                                       str(tmp_path / "run")], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    try:
        results = [proc.communicate(timeout=180) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    assert [proc.returncode for proc in procs] == [0, 0], results
    assert "joining the slurm cluster" in results[0][1]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["env_steps"] == 128


def _join(port: int, num_processes: int, process_ids: list[int]) -> list[tuple[int, str]]:
    """Start `jaxppo train` processes with these ids (a 3 s start-up timeout); [(exit code, stderr)] each."""
    command = [sys.executable, "-m", "jaxppo.cli", "train", *helpers.TINY_FLAGS, "--total-timesteps", "128",
               "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(num_processes), "--timeout", "3"]
    procs = [subprocess.Popen(command + ["--process-id", str(i), "--out", f"/nonexistent-{port}"],
                              env=helpers.subprocess_env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in process_ids]
    try:
        return [(proc.wait(timeout=120), proc.communicate()[1]) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()


@pytest.mark.slow
def test_a_missing_or_duplicate_process_at_start_up_is_one_line_not_an_abort():
    cases = [
        ([1], 2, ["process 1: no process 0 answered at 127.0.0.1:"]),
        ([0], 2, ["process 0: process(es) 1 of 2 did not join within 3s"]),
        ([0, 1, 1], 3, ["process 0: two processes joined as --process-id 1", "--process-id 1",
                        "--process-id 1"]),
    ]
    for ids, num_processes, needles in cases:
        results = _join(helpers.free_port(), num_processes, ids)
        for (code, err), needle in zip(results, needles):
            errors = [line for line in err.splitlines() if line.startswith("jaxppo: error: ")]
            assert code == 2 and len(errors) == 1 and needle in errors[0], (ids, err)
            assert "Check failure" not in err and "Traceback" not in err, err
