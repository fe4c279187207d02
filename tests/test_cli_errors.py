"""The command line never shows a traceback: every mistake is one line (exit 2 for usage, 1 for a failed run),
checked before anything is written; and a fuzz over random invalid commands and damaged run folders."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from gymnax.environments.classic_control import Pendulum

import jaxppo
import jaxppo.outputs
from jaxppo import cli
from tests import helpers

ROOT = Path(__file__).resolve().parents[1]
TINY_RUN = [*helpers.TINY_FLAGS, "--total-timesteps", "128"]
SWEEP_FLAGS = ["--num-envs", "4", "--num-steps", "16", "--num-minibatches", "2", "--total-timesteps", "128"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    assert helpers.train_cli(*TINY_RUN, "--checkpoint-every", "1", "--out", str(out)) == 0
    return out


def _copy(run: Path, tmp_path: Path, name: str = "copy") -> Path:
    target = tmp_path / name
    shutil.copytree(run, target)
    return target


@pytest.mark.parametrize("argv, needle", [
    (["--lr", "abc"], "Error parsing --lr: could not convert string to float: 'abc'"),
    (["--bogus-flag", "1"], "Unrecognized options: --bogus-flag"),
    (["--activation", "sigmoid"], "activation='sigmoid': must be one of tanh"),
    (["--lr", "1e300"], "lr=1e+300: must fit a float32"),
    (["--lr", "1e-50"], "lr=1e-50: is 0 in float32"),
    (["--max-grad-norm", "1e-50"], "max_grad_norm=1e-50: is 0 in float32"),
    (["--clip-eps", "1e-50"], "clip_eps=1e-50: is 0 in float32"),
    (["--reward-clip", "1e-50"], "reward_clip=1e-50: is 0 in float32"),
    (["--obs-clip", "1e-50"], "obs_clip=1e-50: is 0 in float32"),
    (["--eval-every", "1", "--eval-episodes", "1000000000000"], "--eval-episodes 1000000000000: 1,000,000,000,000 "
                                                                 "parallel episodes"),
    (["--normalize-observations", "--normalizer-warmup-steps", "1000000000000"], "normalizer_warmup_steps="),
    (["--stop-after-updates", "0"], "--stop-after-updates 0: must be at least 1"),
    (["--timeout", "-5"], "--timeout -5: must be at least 1 second"),
    (["--seed", "4294967296"], "--seed 4294967296: must be an integer in [0, 2^32 - num_seeds]"),
    (["--num-seeds", "0"], "--num-seeds 0: must be an integer >= 1"),
    (["--env", "custom"], "--env custom: environment instances can only be passed from Python"),
    (["--coordinator", "127.0.0.1", "--num-processes", "2", "--process-id", "0"], "expected HOST:PORT"),
    (["--num-envs", "1000000000", "--total-timesteps", "20000000000"], "needs at least"),
    (["--num-epochs", "1000000000"], "needs at least"),
    (["--hidden-sizes", "100000", "100000"], "needs at least"),
    (["--env", "nope/x"], "--env 'nope/x': not a registered gymnax environment"),
])
def test_bad_flags_are_one_line_and_write_nothing(tmp_path, capsys, argv, needle):
    out = tmp_path / "run"
    line = helpers.usage_error(["train", *TINY_RUN, *argv, "--out", str(out)], capsys)
    assert needle in line, line
    assert not out.exists()


def test_bad_places_are_one_line(tmp_path, capsys, finished_run):
    assert "is not a writable folder" in helpers.usage_error(["train", *TINY_RUN, "--out", "/proc/x"], capsys)
    assert "--out '': give a folder" in helpers.usage_error(["train", *TINY_RUN, "--out", ""], capsys)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert "not a folder holding a run" in helpers.usage_error(["train", "--resume", str(a_file)], capsys)
    assert "is a file, not a folder" in helpers.usage_error(["train", *TINY_RUN, "--out", str(a_file)], capsys)
    line = helpers.usage_error(["plot", str(finished_run), "--out", "/proc/nope/curves.png"], capsys)
    assert "does not exist" in line or "cannot be written" in line
    start = time.monotonic()
    line = helpers.usage_error(["sweep", "--grid", "lr=1e-3", *SWEEP_FLAGS, "--out", "/proc/sweep"], capsys)
    assert "not a writable folder" in line and time.monotonic() - start < 30  # refused before training


@pytest.mark.parametrize("damage, needle", [
    (lambda run: (run / "config.json").write_text("5"), "config.json holds int 5"),
    (lambda run: (run / "config.json").write_text("null"), "config.json holds NoneType"),
    (lambda run: (run / "config.json").write_text("[]"), "config.json holds list"),
    (lambda run: (run / "config.json").write_text("{nope"), "config.json is not readable JSON"),
    (lambda run: (run / "run.json").write_text("{}"), "run.json is invalid: it has no seed, num_seeds"),
    (lambda run: (run / "metrics.csv").unlink(), "metrics.csv is missing"),
    (lambda run: (run / "metrics.csv").write_text(""), "metrics.csv has no metric rows"),
    (lambda run: (run / "metrics.csv").write_text("seed,update,x\n0,1,zz\n"), "not numeric"),
    (lambda run: (run / "metrics.csv").write_text("seed,update,x\n0,1000000000,1\n"), "outside 1..2"),
    (lambda run: shutil.rmtree(run / "checkpoints"), "no complete checkpoint"),
])
def test_damaged_run_folders_are_one_line_on_resume(tmp_path, capsys, finished_run, damage, needle):
    run = _copy(finished_run, tmp_path)
    for name in ("summary.json", "final_params.msgpack"):  # make it look unfinished so resume reads everything
        (run / name).unlink()
    (run / "checkpoints" / "2").rename(run / "checkpoints" / "damaged-2")
    damage(run)
    assert needle in helpers.usage_error(["train", "--resume", str(run)], capsys)


def test_eval_refuses_another_config_or_damaged_parameters(tmp_path, capsys, finished_run):
    run = _copy(finished_run, tmp_path)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "env": "Acrobot-v1"}))
    assert "not the config these parameters were trained with" in helpers.usage_error(["eval", str(run)], capsys)
    (run / "config.json").write_text(json.dumps({**config, "hidden_sizes": [8]}))
    assert "not the config these parameters" in helpers.usage_error(["eval", str(run)], capsys)
    (run / "config.json").write_text(json.dumps(config))
    original = (run / "final_params.msgpack").read_bytes()
    data = bytearray(original)
    data[100] ^= 4
    (run / "final_params.msgpack").write_bytes(bytes(data))
    assert "does not match its checksum" in helpers.usage_error(["eval", str(run)], capsys)
    # Bytes of another structure with a recomputed checksum: still one line (checked, then parsed), no TypeError.
    digests = (run / "final_params.msgpack.sha256").read_text().split()
    bogus = b"\x81\xa6params\x81\x92\x01\x02\x01"  # a map with a list key: msgpack's TypeError 'unhashable type'
    (run / "final_params.msgpack").write_bytes(bogus)
    (run / "final_params.msgpack.sha256").write_text(f"{jaxppo.outputs.sha256(bogus)}\n{digests[1]}\n")
    assert "final_params.msgpack" in helpers.usage_error(["eval", str(run)], capsys)
    # The sidecar's config line deleted and config.json edited: the network would be another one; refused.
    (run / "final_params.msgpack").write_bytes(original)
    (run / "final_params.msgpack.sha256").write_text(digests[0] + "\n")
    (run / "config.json").write_text(json.dumps({**config, "activation": "relu"}))
    assert "has no config digest" in helpers.usage_error(["eval", str(run)], capsys)


def test_resuming_a_finished_run_changes_nothing(tmp_path, capsys, finished_run):
    run = _copy(finished_run, tmp_path)
    summary = (run / "summary.json").read_bytes()
    assert cli.main(["train", "--resume", str(run)]) == 0
    assert "already finished" in capsys.readouterr().out
    assert (run / "summary.json").read_bytes() == summary


def test_hparams_replace_refuses_values_that_are_not_finite_float32():
    hp = jaxppo.HParams.from_config(jaxppo.PPOConfig())
    for bad in (float("nan"), float("inf"), -float("inf"), 1e39, 1e-50):
        with pytest.raises(ValueError, match="lr="):
            hp.replace(lr=bad)
    with pytest.raises(ValueError, match="must be finite numbers that fit a float32"):
        hp.replace(lr=np.array([1e-3, np.nan], np.float32))
    assert float(hp.replace(lr=1e-3).lr) == np.float32(1e-3)  # finite values (and traced ones) pass


def test_make_train_refuses_an_instance_that_is_not_the_configured_env():
    with pytest.raises(ValueError, match=r"env='CartPole-v1': the environment instance .* \(Pendulum\) is not a "
                                         r"CartPole-v1"):
        jaxppo.make_train(jaxppo.PPOConfig(env="CartPole-v1"), env=Pendulum())


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_with_a_checkpoint_and_a_resume_line(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "jaxppo.cli", "train", "--num-envs", "4", "--num-steps", "16",
                             "--num-minibatches", "2", "--total-timesteps", str(64 * 4000), "--chunk-updates", "20",
                             "--out", str(run)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ((stdout, stderr),) = helpers.signal_once_running([proc], run / "metrics.csv", signal.SIGINT)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "SIGINT received" in stderr
    assert "SIGINT received: stopped after update" in stdout and f"jaxppo train --resume {run}" in stdout
    assert any(p.name.isdigit() for p in (run / "checkpoints").iterdir())


# ------------------------------------------------------------------------------------------------------ fuzz
BAD_VALUES = {
    "--num-envs": ["0", "-3", "x", "2.5", "1000000000"], "--num-steps": ["0", "-1", "y"],
    "--lr": ["0", "-1", "nan", "inf", "1e300", "abc"], "--gamma": ["1.5", "-0.1", "nan"],
    "--num-minibatches": ["0", "7", "abc"], "--total-timesteps": ["0", "-5", "1"], "--num-seeds": ["0", "-2"],
    "--seed": ["-1", "4294967296", "x"], "--hidden-sizes": ["0", "-4", "x"], "--activation": ["sigmoid", ""],
    "--network": ["resnet"], "--memory": ["lstm"], "--env": ["custom", "CartPol-v1", "brax/nope", ""],
    "--checkpoint-every": ["-1", "x"], "--keep-checkpoints": ["0"], "--eval-every": ["-2"],
    "--eval-episodes": ["0"], "--stop-after-updates": ["0", "-1"], "--timeout": ["0", "-5"],
    "--clip-eps": ["0", "-0.2"], "--max-grad-norm": ["0"], "--obs-clip": ["-1"], "--num-devices": ["0", "64"],
    "--out": ["", "/proc/jaxppo"], "--coordinator": ["nohost"], "--wandb-mode": ["sometimes"],
    "--init-log-std": ["99", "nan"], "--bogus": ["1"],
}
DAMAGES = {
    "resume": [("config.json", "5"), ("config.json", "{}x"), ("config.json", '{"num_envs": 0}'), ("run.json", "[]"),
               ("run.json", '{"kind": "sweep"}'), ("metrics.csv", "seed,update\n"), ("metrics.csv", "garbage")],
    "eval": [("config.json", "null"), ("config.json", '{"hidden_sizes": [3]}'), ("final_params.msgpack", "\x00\x01"),
             ("final_params.msgpack.sha256", "0" * 64), ("run.json", '{"kind": "sweep"}')],
    "plot": [("metrics.csv", "seed,update\n"), ("metrics.csv", "garbage"), ("metrics.csv", "seed,update,x\n0,0,1\n")],
}
"""Damage that each command must refuse (so every fuzz case fails fast, before any compilation)."""


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_fuzz_invalid_commands_and_damaged_folders(tmp_path, capsys, finished_run):
    rng = random.Random(1234)
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    (sandbox / "outside.txt").write_text("untouched")
    outside = _snapshot(sandbox)
    cases = 0
    for case in range(200):
        kind = rng.choice(["train", "train", "resume", "eval", "sweep", "plot"])
        run = tmp_path / f"case{case}"
        if kind in ("resume", "eval", "plot"):
            shutil.copytree(finished_run, run, ignore=None if kind == "resume" else shutil.ignore_patterns(
                "checkpoints"))
            name, content = rng.choice(DAMAGES[kind])
            (run / name).write_text(content)
            if kind == "resume":
                (run / "summary.json").unlink(missing_ok=True)
        before = _snapshot(run) if run.exists() else {}
        flags = []
        for flag in rng.sample(sorted(BAD_VALUES), rng.randint(1, 3)):
            flags += [flag, rng.choice(BAD_VALUES[flag])]
        if kind == "train":
            argv = ["train", *TINY_RUN, *flags] + (["--out", str(run)] if "--out" not in flags else [])
        elif kind == "resume":
            argv = ["train", "--resume", str(run)] + rng.choice([[], flags])
        elif kind == "eval":
            argv = ["eval", str(run)] + rng.choice([[], ["--num-episodes", "0"], ["--seed", "-1"]])
        elif kind == "sweep":
            argv = ["sweep", *SWEEP_FLAGS, rng.choice(["--grid", "--ranges"]), rng.choice(
                ["lr=", "nope=1", "gamma=2", "lr=1:0:log", "x"]), *flags, "--out", str(run)]
        else:
            argv = ["plot", str(run), "--out", str(tmp_path / f"plot{case}.png")]
        code = cli.main(argv)
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err + captured.out, argv
        if code != 0:
            cases += 1
            assert code in (1, 2), (argv, code)
            lines = captured.err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("jaxppo: error: "), (argv, captured.err)
            # Nothing inside the folder was lost (no --overwrite here): every file that was there is unchanged.
            after = _snapshot(run) if run.exists() else {}
            assert all(after.get(name) == data for name, data in before.items()), argv
        assert _snapshot(sandbox) == outside
    assert cases == 200  # every case is invalid by construction
