"""`jaxppo train ... --resume auto`: one idempotent command that starts a run or continues it, whatever moment a real
SIGTERM or SIGKILL ended the previous attempt (import, compile, first chunk, checkpoint write, final write); the
finished folder equals an uninterrupted run's byte for byte (every update logged once)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from jaxppo import outputs
from tests import helpers

FLAGS = [*helpers.TINY_FLAGS, "--total-timesteps", str(64 * 6), "--checkpoint-every", "2", "--resume", "auto"]

CHILD = r"""
import os, signal, sys
from jaxppo import cli, outputs
from jaxppo.runner import ChunkedRun

moment = sys.argv[1]

def die(sig):
    os.kill(os.getpid(), sig)

if moment == "compile":  # SIGTERM while the training program compiles
    original_compile = ChunkedRun.compile
    def compile(self, state):
        die(signal.SIGTERM)
        return original_compile(self, state)
    ChunkedRun.compile = compile
elif moment == "first-chunk":  # SIGKILL once the first chunk's rows are in metrics.csv, before any checkpoint
    original_append = outputs.append_metrics_csv
    def append(*args, **kwargs):
        original_append(*args, **kwargs)
        die(signal.SIGKILL)
    outputs.append_metrics_csv = append
elif moment == "checkpoint":  # SIGKILL while the checkpoint of update 4 is committed (orbax's rename)
    from orbax.checkpoint._src.path import async_path
    original_rename = async_path.rename
    async def rename(src, dst):
        if "orbax-checkpoint-tmp" in str(src) and os.path.basename(str(dst)) == "4":
            die(signal.SIGKILL)
        return await original_rename(src, dst)
    async_path.rename = rename
elif moment == "final":  # SIGKILL between the final parameters and summary.json
    def write_summary(*args, **kwargs):
        die(signal.SIGKILL)
    outputs.write_summary = write_summary
elif moment == "final-term":  # SIGTERM while the final files are written: they are completed first
    original_params = outputs.write_params
    def write_params(*args, **kwargs):
        die(signal.SIGTERM)
        return original_params(*args, **kwargs)
    outputs.write_params = write_params
sys.exit(cli.main(sys.argv[2:]))
"""


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same command, never interrupted: it starts the run (the folder does not exist yet)."""
    out = tmp_path_factory.mktemp("requeue") / "reference"
    assert helpers.train_cli(*FLAGS, "--out", str(out)) == 0
    return out


def _attempt(moment: str, out) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-c", CHILD, moment, "train", *FLAGS, "--out", str(out)]
    if moment != "import":
        return subprocess.run(argv, env=helpers.subprocess_env(), capture_output=True, text=True, timeout=300)
    proc = subprocess.Popen(argv, env=helpers.subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(0.5)  # still importing (jax alone takes longer)
    proc.send_signal(signal.SIGTERM)
    out_text, err_text = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(argv, proc.returncode, out_text, err_text)


SLOW = pytest.mark.slow  # the moments beyond the two of the default run: `pytest -m slow` (and CI) runs them


@pytest.mark.parametrize("moment, code", [pytest.param("import", -signal.SIGTERM, marks=SLOW),
                                          pytest.param("compile", 0, marks=SLOW), ("first-chunk", -signal.SIGKILL),
                                          pytest.param("checkpoint", -signal.SIGKILL, marks=SLOW),
                                          pytest.param("final", -signal.SIGKILL, marks=SLOW), ("final-term", 0)])
def test_the_same_command_continues_after_a_signal_at_any_moment(tmp_path, capsys, reference, moment, code):
    out = tmp_path / "run"
    first = _attempt(moment, out)
    assert first.returncode == code, first.stderr[-3000:]
    assert "Traceback" not in first.stderr, first.stderr[-3000:]
    if moment == "compile":
        assert "SIGTERM received: stopped after update 0/6" in first.stdout
    if moment == "checkpoint":  # killed mid-commit: the first checkpoint is complete, the second is not
        assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.isdigit()) == ["2"]
    capsys.readouterr()
    assert helpers.train_cli(*FLAGS, "--out", str(out)) == 0
    for name in (outputs.METRICS, outputs.PARAMS):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert (out / "summary.json").exists()
    capsys.readouterr()
    assert helpers.train_cli(*FLAGS, "--out", str(out)) == 0  # finished: the command changes nothing
    assert "already finished" in capsys.readouterr().out


def test_auto_refuses_a_folder_whose_run_has_other_settings(tmp_path, capsys, reference):
    line = helpers.usage_error(["train", *FLAGS, "--lr", "1e-3", "--seed", "2", "--out", str(reference)], capsys)
    assert "holds a run started with other settings: lr (saved 0.00025, given 0.001), seed (saved 0, given 2)" in line
    line = helpers.usage_error(["train", *FLAGS, "--total-timesteps", "768", "--out", str(reference)], capsys)
    assert "total_timesteps (saved 384, given 768)" in line and "--extend-total-timesteps" in line
    assert "give the run's folder with --out" in helpers.usage_error(["train", *FLAGS], capsys)
