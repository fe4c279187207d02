"""Checkpoint/resume: resumed == uninterrupted, checkpoints that belong to another run (edited config.json /
run.json, copied checkpoints, another number of seeds), intended extensions, damaged checkpoints (checksums,
fallback), killed saves, schedules after unaligned resumes, and the non-finite guard."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnax
import jax
import jax.numpy as jnp
import pytest

import jaxppo
from jaxppo import cli, outputs
from jaxppo.checkpoint import CheckpointStore
from jaxppo.runner import ChunkedRun
from tests import helpers, probe_envs

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--num-envs", "4", "--num-steps", "16", "--num-minibatches", "2", "--total-timesteps", str(4 * 16 * 12),
        "--quiet"]


def _run(args):
    return cli.main(["train", *args])


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
    for flags in (["--seed", "3"], ["--num-seeds", "2"], ["--out", str(tmp_path / "elsewhere")]):
        assert _run(["--resume", str(run), *flags]) == 2
        assert "cannot be given with --resume" in capsys.readouterr().err
    # A store for another network refuses the checkpoint, naming the field.
    other = jaxppo.PPOConfig(num_envs=4, num_steps=16, num_minibatches=2, hidden_sizes=(32,))
    store = CheckpointStore(run / "checkpoints", other)
    template = ChunkedRun(other, 1, 1).init(jax.random.key(0)[None])
    with pytest.raises(ValueError, match=r"belongs to another run: hidden_sizes \(checkpoint \[64, 64\], config.json "
                                         r"\[32\]\)"):
        store.restore(4, template)
    store.close()


@pytest.fixture(scope="module")
def stopped_runs(tmp_path_factory):
    """Two stopped runs (after update 4 of 12) that differ only in lr, and a two-seed one."""
    root = tmp_path_factory.mktemp("stopped")
    for name, extra in (("a", []), ("b", ["--lr", "1e-3"]), ("two", ["--num-seeds", "2"])):
        assert _run([*TINY, *extra, "--checkpoint-every", "4", "--stop-after-updates", "4", "--out",
                     str(root / name)]) == 0
    return root


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize("case, needle", [
    ("lr", "lr (checkpoint 0.00025, config.json 0.001)"),
    ("gamma", "gamma (checkpoint 0.99, config.json 0.5)"),
    ("total", "total_timesteps (checkpoint 768, config.json 1536)"),
    ("seed", "seed (checkpoint 0, run.json 5)"),
    ("copied", "lr (checkpoint 0.001, config.json 0.00025)"),
    ("seeds", "num_seeds (checkpoint 2, run.json 1)"),
])
def test_resume_refuses_a_checkpoint_of_another_run_in_one_line(tmp_path, capsys, stopped_runs, case, needle):
    run = tmp_path / "run"
    shutil.copytree(stopped_runs / "a", run)
    edits = {"lr": {"lr": 1e-3}, "gamma": {"gamma": 0.5}, "total": {"total_timesteps": 1536}}
    if case in edits:
        _edit_json(run / "config.json", **edits[case])
    elif case == "seed":
        _edit_json(run / "run.json", seed=5)
    else:  # another run's checkpoints copied in
        shutil.rmtree(run / "checkpoints")
        shutil.copytree(stopped_runs / ("b" if case == "copied" else "two") / "checkpoints", run / "checkpoints")
    before = _snapshot(run)
    capsys.readouterr()
    assert _run(["--resume", str(run)]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "belongs to another run" in err and needle in err, err
    assert "Traceback" not in err and "Event loop" not in err and "asyncio" not in err
    assert _snapshot(run) == before


def test_an_intended_extension_is_explicit_and_says_what_happens_to_schedules(tmp_path, capsys, stopped_runs):
    run = tmp_path / "run"
    shutil.copytree(stopped_runs / "a", run)
    capsys.readouterr()
    assert _run(["--resume", str(run), "--extend-total-timesteps", "1536", "--stop-after-updates", "2"]) == 0
    out = capsys.readouterr().out
    assert "total_timesteps 768 -> 1536" in out and "24 updates instead of 12" in out and "lr rises back" in out
    assert "resuming" in out and "after update 4/24" in out
    assert json.loads((run / "config.json").read_text())["total_timesteps"] == 1536
    assert json.loads((run / "run.json").read_text())["extended"] == [{"at_update": 4, "total_timesteps": 1536}]
    assert _run(["--resume", str(run), "--quiet"]) == 0  # the extended run continues as any other
    summary = json.loads((run / "summary.json").read_text())
    assert summary["num_updates"] == 24 and summary["total_timesteps"] == 1536
    line = helpers.usage_error(["train", "--resume", str(run), "--extend-total-timesteps", "100"], capsys)
    assert "--extend-total-timesteps 100: must be an integer above the run's total_timesteps=1536" in line


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
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "Event loop" not in err, err
    assert "checkpoint" in err and ("unreadable" in err or "damaged" in err) and "nothing was changed" in err, err
    after = {str(p): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert before == after


def _flip_a_byte_of_an_array(step_dir: Path) -> None:
    """Flip bits in the middle of the largest array file of a checkpoint (a silent storage error)."""
    target = max((p for p in (step_dir / "state").rglob("*") if p.is_file() and "manifest" not in p.name),
                 key=lambda p: p.stat().st_size)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x10
    target.write_bytes(bytes(data))


def test_bit_flip_is_detected_and_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path, capsys):
    whole, run = tmp_path / "whole", tmp_path / "run"
    assert _run([*TINY, "--out", str(whole)]) == 0
    assert _run([*TINY, "--checkpoint-every", "4", "--stop-after-updates", "8", "--out", str(run)]) == 0
    _flip_a_byte_of_an_array(run / "checkpoints" / "8")
    store = CheckpointStore(run / "checkpoints", outputs.read_config(run))
    template = ChunkedRun(store.config, 1, 1).init(jax.random.key(0)[None])
    with pytest.raises(ValueError, match=r"checkpoint .*8: (damaged|unreadable)"):
        store.restore(8, template)
    store.close()
    capsys.readouterr()
    assert _run(["--resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert "warning: checkpoint" in out and "using an older checkpoint" in out and "after update 4/12" in out, out
    # Resumed from the intact update-4 checkpoint: the same result as never stopping.
    assert (run / "final_params.msgpack").read_bytes() == (whole / "final_params.msgpack").read_bytes()


def test_checkpoints_stay_on_schedule_after_an_unaligned_resume(tmp_path):
    run = tmp_path / "run"
    args = ["--num-envs", "4", "--num-steps", "8", "--num-minibatches", "2", "--total-timesteps", str(4 * 8 * 40),
            "--quiet", "--keep-checkpoints", "20", "--checkpoint-every", "10"]
    assert _run([*args, "--stop-after-updates", "17", "--out", str(run)]) == 0
    assert sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == [10, 17]
    assert _run(["--resume", str(run), "--quiet"]) == 0
    assert sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == [10, 17, 20, 30, 40]


def test_symlinked_checkpoints_folder_is_refused_and_nothing_outside_is_touched(tmp_path, capsys):
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    (elsewhere / "3").mkdir(parents=True)
    (elsewhere / "3" / "precious").write_text("keep me")
    run.mkdir()
    (run / "checkpoints").symlink_to(elsewhere)
    assert _run([*TINY, "--checkpoint-every", "1", "--keep-checkpoints", "1", "--out", str(run)]) == 2
    assert "checkpoints is a symbolic link" in capsys.readouterr().err
    assert (elsewhere / "3" / "precious").read_text() == "keep me"
    assert sorted(p.name for p in elsewhere.iterdir()) == ["3"]


@pytest.mark.slow
def test_sigkill_during_saves_resumes_from_last_complete_checkpoint(tmp_path):
    run = tmp_path / "run"
    args = ["--num-envs", "4", "--num-steps", "16", "--num-minibatches", "2", "--total-timesteps",
            str(4 * 16 * 60), "--checkpoint-every", "1", "--keep-checkpoints", "2", "--quiet", "--out", str(run)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "jaxppo.cli", "train", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed_during_save = False
    try:
        deadline = time.monotonic() + 180
        ckpt = run / "checkpoints"
        while time.monotonic() < deadline and proc.poll() is None:
            names = [p.name for p in ckpt.iterdir()] if ckpt.exists() else []
            complete = [n for n in names if n.isdigit()]
            # A save in progress shows as orbax's temporary folder: kill exactly then.
            if len(complete) >= 2 and any(not n.isdigit() for n in names):
                proc.send_signal(signal.SIGKILL)
                killed_during_save = True
                break
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert killed_during_save, "the run finished before a save could be interrupted"
    store = CheckpointStore(run / "checkpoints", jaxppo.PPOConfig(num_envs=4, num_steps=16, num_minibatches=2))
    last = store.latest_step()
    assert last is not None and last >= 2
    result = subprocess.run([sys.executable, "-m", "jaxppo.cli", "train", "--resume", str(run)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resuming {run} after update {last}/60" in result.stdout
    assert json.loads((run / "summary.json").read_text())["num_updates"] == 60
    store.close()


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


def test_a_failed_orbax_call_waits_for_its_abandoned_background_work_inside_the_quiet_window(monkeypatch):
    # What orbax leaves behind when one write of a save fails: operations still in flight that report through
    # sys.unraisablehook when they finish (here a thread, 0.3 s later), and failed asyncio tasks kept alive by the
    # error's traceback that log when collected. Neither may reach the user after the one-line error.
    import asyncio
    import logging
    import threading

    from jaxppo.checkpoint import CheckpointError, _orbax_call

    reported = []  # what would reach the terminal (pytest replaces both default outlets with its own)
    monkeypatch.setattr(sys, "unraisablehook", lambda args: reported.append(str(args.exc_value)))
    handler = logging.Handler()
    handler.emit = lambda record: reported.append(record.getMessage())
    logging.getLogger("asyncio").addHandler(handler)

    class LateReport:
        def __del__(self):
            raise RuntimeError("Event loop is closed")  # the interpreter reports it through sys.unraisablehook

    def late_report():
        time.sleep(0.3)
        LateReport()

    async def failed_write():
        raise OSError("File too large")

    def failing_save():
        threading.Thread(target=late_report).start()
        loop = asyncio.new_event_loop()
        task = loop.create_task(failed_write())  # noqa: F841 - held by this frame, i.e. by the error's traceback
        loop.run_until_complete(asyncio.sleep(0.01))
        loop.close()
        raise OSError("File too large")

    try:
        with pytest.raises(CheckpointError, match="could not be written: File too large"):
            _orbax_call(failing_save, lambda error: f"could not be written: {error}")
        time.sleep(0.5)
        import gc

        gc.collect()
    finally:
        logging.getLogger("asyncio").removeHandler(handler)
    assert reported == []


@pytest.mark.slow
def test_a_full_disk_stops_the_run_in_one_line_and_keeps_the_older_checkpoint(tmp_path):
    # A file size limit (ulimit -f; SIGXFSZ ignored, so writes fail with EFBIG as on a full disk) while the
    # checkpoint of update 8 is written: one line, exit 1, no orbax / asyncio noise; update 4 stays the resume point.
    run = tmp_path / "run"
    assert _run([*TINY, "--checkpoint-every", "4", "--stop-after-updates", "4", "--out", str(run)]) == 0
    env = helpers.subprocess_env(JAX_COMPILATION_CACHE_DIR=str(tmp_path / "cache"))  # keep truncated entries apart
    limited = ["bash", "-c", 'ulimit -f 20 && trap "" XFSZ && exec "$@"', "bash"]  # 20 KiB per file
    result = subprocess.run([*limited, sys.executable, "-m", "jaxppo.cli", "train", "--resume", str(run), "--quiet"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if "UserWarning" not in line and "warnings.warn" not in line]
    assert len(errors) == 1, result.stderr[-3000:]
    assert errors[0].startswith("jaxppo: error: training stopped: checkpoint") and "could not be written (File too " \
        "large); last good checkpoint: update 4" in errors[0], errors[0]
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == ["4"]
    assert _run(["--resume", str(run), "--quiet"]) == 0  # with room again, the same command finishes the run
    assert json.loads((run / "summary.json").read_text())["num_updates"] == 12
