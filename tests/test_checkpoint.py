"""Chunked training, checkpoint/resume, killed saves, refused checkpoints and the non-finite guard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import chex
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxppo
from jaxppo import cli
from jaxppo.checkpoint import CheckpointStore
from jaxppo.runner import ChunkedRun, chunk_sizes
from tests import probe_envs

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--num-envs", "4", "--num-steps", "16", "--num-minibatches", "2", "--total-timesteps", str(4 * 16 * 12),
        "--quiet"]


def test_chunk_sizes():
    assert chunk_sizes(12, 5) == [5, 5, 2]
    assert chunk_sizes(12, 5, start=10) == [2]
    assert chunk_sizes(12, 4, start=4, stop_after=5) == [4, 1]


def test_chunked_equals_one_call():
    config = jaxppo.PPOConfig(num_envs=4, num_steps=16, num_minibatches=2, total_timesteps=4 * 16 * 8)
    runner = ChunkedRun(config, num_seeds=2)
    keys = jax.random.split(jax.random.key(3), 2)
    state = runner.init(keys)
    chunks = []
    for size, first in ((3, 0), (3, 3), (2, 6)):
        result = runner.run_chunk(state, size, first)
        state = result.state
        chunks.append(result.metrics)
    assert len(runner._compiled) == 2  # chunks of 3 share one program; the last (2) compiles once more
    chunked_returns = np.concatenate([np.asarray(c.episode_return) for c in chunks], axis=1)
    # Bitwise against the same program run in one chunk of 8 updates.
    one = runner.run_chunk(runner.init(keys), 8, 0)
    chex.assert_trees_all_equal(state.params, one.state.params)
    np.testing.assert_array_equal(chunked_returns, one.metrics.episode_return)
    # And to float tolerance against jit(vmap(train)), where XLA may fuse init and updates differently (1 ulp).
    whole_state, whole_metrics = jax.jit(jax.vmap(jaxppo.make_train(config)))(keys)
    chex.assert_trees_all_close(state.params, whole_state.params, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(chunked_returns, whole_metrics.episode_return, rtol=1e-5)


def _run(args, capsys=None):
    code = cli.main(["train", *args])
    return code


def test_stop_and_resume_equals_uninterrupted(tmp_path):
    whole, parted = tmp_path / "whole", tmp_path / "parted"
    assert _run([*TINY, "--num-seeds", "2", "--out", str(whole)]) == 0
    assert _run([*TINY, "--num-seeds", "2", "--checkpoint-every", "4", "--stop-after-updates", "6", "--out",
                 str(parted)]) == 0
    assert not (parted / "summary.json").exists()
    assert sorted(os.listdir(parted / "checkpoints")) == ["4", "6"]
    assert _run(["--resume", str(parted), "--quiet"]) == 0
    # Bitwise on CPU: the same compiled arithmetic runs on the same inputs, restored exactly from the checkpoint.
    assert (parted / "final_params.msgpack").read_bytes() == (whole / "final_params.msgpack").read_bytes()
    a, b = (json.loads((d / "summary.json").read_text()) for d in (whole, parted))
    assert a["final_return_per_seed"] == b["final_return_per_seed"]
    assert sorted(os.listdir(parted / "checkpoints"), key=int)[-1] == "12"


def test_resume_refuses_contradicting_flags_and_other_setups(tmp_path, capsys):
    run = tmp_path / "run"
    assert _run([*TINY, "--checkpoint-every", "4", "--stop-after-updates", "4", "--out", str(run)]) == 0
    capsys.readouterr()
    assert _run(["--resume", str(run), "--hidden-sizes", "32", "32"]) == 2
    assert "hidden_sizes (saved (64, 64), given (32, 32))" in capsys.readouterr().err
    # A store for another network refuses the checkpoint, naming the field.
    other = jaxppo.PPOConfig(num_envs=4, num_steps=16, num_minibatches=2, hidden_sizes=(32,))
    store = CheckpointStore(run / "checkpoints", other)
    template = ChunkedRun(other, 1).init(jax.random.key(0)[None])
    with pytest.raises(ValueError, match=r"made for another setup: hidden_sizes"):
        store.restore(4, template)


def test_corrupt_checkpoint_is_refused_and_left_untouched(tmp_path, capsys):
    run = tmp_path / "run"
    assert _run([*TINY, "--checkpoint-every", "4", "--stop-after-updates", "4", "--out", str(run)]) == 0
    target = max((p for p in (run / "checkpoints" / "4" / "state").rglob("*") if p.is_file()),
                 key=lambda p: p.stat().st_size)
    target.write_bytes(b"\\x00garbage" * 3)
    before = {str(p): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert _run(["--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "checkpoint" in err and "unreadable" in err and "nothing was changed" in err, err
    after = {str(p): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert before == after


def test_sigkill_during_saves_resumes_from_last_complete_checkpoint(tmp_path):
    run = tmp_path / "run"
    args = ["--num-envs", "4", "--num-steps", "16", "--num-minibatches", "2", "--total-timesteps",
            str(4 * 16 * 120), "--checkpoint-every", "1", "--keep-checkpoints", "2", "--quiet", "--out", str(run)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "jaxppo.cli", "train", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ckpt = run / "checkpoints"
            if ckpt.exists() and len([p for p in ckpt.iterdir() if p.name.isdigit()]) >= 2:
                break
            time.sleep(0.05)
        time.sleep(0.37)  # saves happen every update: the kill lands during or between saves
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    store = CheckpointStore(run / "checkpoints", jaxppo.PPOConfig(num_envs=4, num_steps=16, num_minibatches=2))
    last = store.latest_step()
    assert last is not None and last >= 2
    result = subprocess.run([sys.executable, "-m", "jaxppo.cli", "train", "--resume", str(run), "--quiet"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resuming {run} after update {last}/120" in result.stdout
    assert json.loads((run / "summary.json").read_text())["num_updates"] == 120


class _NaNAfterSomeSteps(probe_envs._Probe):
    """Reward 1, then NaN once the episode reaches step 40: the loss becomes non-finite mid-run."""

    episode_steps = 10**9
    max_steps = 10**6

    def _reward(self, state, action):
        return jnp.where(state.time >= 40, jnp.nan, 1.0).astype(jnp.float32)


def test_nonfinite_loss_stops_training_and_keeps_last_good_checkpoint(tmp_path, capsys):
    env_id = f"NaNProbe-{os.getpid()}"
    gymnax.register(env_id, _NaNAfterSomeSteps)
    run = tmp_path / "run"
    code = cli.main(["train", "--env", env_id, "--num-envs", "4", "--num-steps", "8", "--num-minibatches", "1",
                     "--total-timesteps", str(4 * 8 * 12), "--checkpoint-every", "2", "--quiet", "--out", str(run)])
    assert code == 1
    err = capsys.readouterr().err
    # Rewards turn NaN at step 41 = update 6 (8 steps per update); the first update with a NaN loss is 6.
    assert "training stopped: non-finite" in err and "at update 6" in err, err
    assert "last good checkpoint: update 4" in err
    assert sorted(os.listdir(run / "checkpoints"), key=int)[-1] == "4"
    assert not (run / "summary.json").exists()
