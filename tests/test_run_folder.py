"""Run folder rules: one writer (lock naming the holder; stale locks free), one kind of run per folder, no links,
and nothing removed before every check has passed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from jaxppo import run_folder
from tests import helpers

TINY_RUN = [*helpers.TINY_FLAGS, "--total-timesteps", "128"]


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with run_folder.run_lock(out):
        line = helpers.usage_error(["train", *TINY_RUN, "--overwrite", "--out", str(out)], capsys)
        assert f"in use by pid {os.getpid()}" in line
        with pytest.raises(run_folder.RunFolderError, match="in use by"):
            with run_folder.run_lock(out):
                pass
    assert not (out / ".lock").exists()  # released and removed
    assert helpers.train_cli(*TINY_RUN, "--overwrite", "--out", str(out)) == 0


def test_a_lock_left_by_a_dead_process_is_free(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    code = ("import sys, time; from jaxppo import run_folder; from pathlib import Path\n"
            "with run_folder.run_lock(Path(sys.argv[1])):\n    print('ready', flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(run_folder.RunFolderError, match=f"pid {holder.pid}"):
            with run_folder.run_lock(out):
                pass
    finally:
        holder.kill()
        holder.wait()
    assert (out / ".lock").exists()  # the dead process could not remove it ...
    with run_folder.run_lock(out):  # ... but its lock died with it
        pass


def test_overwrite_removes_nothing_when_a_later_check_fails(tmp_path, capsys):
    out = tmp_path / "run"
    assert helpers.train_cli(*TINY_RUN, "--out", str(out)) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    for bad in (["--env", "custom"], ["--env", "NoSuchEnv-v0"], ["--num-envs", "3", "--num-minibatches", "5"],
                ["--hidden-sizes", "100000", "100000", "--num-envs", "4"]):
        helpers.usage_error(["train", *TINY_RUN, *bad, "--overwrite", "--out", str(out)], capsys)
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before, bad


def test_symlinked_managed_paths_are_refused_with_overwrite_and_nothing_is_deleted(tmp_path, capsys):
    out, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    assert helpers.train_cli(*TINY_RUN, "--out", str(out)) == 0
    elsewhere.mkdir()
    (elsewhere / "keep").write_text("x")
    (out / "tb").symlink_to(elsewhere)
    line = helpers.usage_error(["train", *TINY_RUN, "--overwrite", "--out", str(out)], capsys)
    assert "tb is a symbolic link" in line
    assert (elsewhere / "keep").read_text() == "x" and (out / "summary.json").exists()


def test_commands_refuse_a_folder_holding_another_kind_of_run(tmp_path, capsys):
    # A sweep is now a training run whose members are settings x seeds; an earlier version's sweep folder
    # (kind "sweep": sweep.csv, sweep.png, config.json, run.json) is another kind, and nothing replaces it.
    out = tmp_path / "old_sweep"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"kind": "sweep", "seed": 0, "num_seeds": 2}))
    (out / "sweep.csv").write_text("lr,mean\n0.001,20.0\n")
    for command in (["train", *TINY_RUN], ["sweep", "--grid", "lr=1e-3", "--num-envs", "4", "--num-steps", "16",
                                          "--total-timesteps", "128", "--num-minibatches", "2"]):
        line = helpers.usage_error([*command, "--overwrite", "--out", str(out)], capsys)
        assert "holds a sweep run; a train run needs its own folder" in line
    assert (out / "sweep.csv").read_text() == "lr,mean\n0.001,20.0\n"
    assert sorted(p.name for p in out.iterdir()) == ["run.json", "sweep.csv"]


def test_overwrite_never_deletes_what_jaxppo_did_not_write(tmp_path, capsys):
    # A folder that is not a jaxppo run (no run.json) but has folders named like a run's: refused, nothing deleted.
    mine = tmp_path / "mine"
    (mine / "checkpoints" / "mine").mkdir(parents=True)
    (mine / "checkpoints" / "mine" / "weights.pt").write_text("precious")
    (mine / "tb").mkdir()
    (mine / "tb" / "notes").write_text("precious")
    line = helpers.usage_error(["train", *TINY_RUN, "--overwrite", "--out", str(mine)], capsys)
    assert "no run.json naming a jaxppo train run; --overwrite only replaces a jaxppo run's outputs" in line
    assert (mine / "checkpoints" / "mine" / "weights.pt").read_text() == "precious"
    assert (mine / "tb" / "notes").read_text() == "precious"
    # In a real run folder, files of the user's own inside checkpoints/ and tb/ survive --overwrite too.
    out = tmp_path / "run"
    assert helpers.train_cli(*TINY_RUN, "--checkpoint-every", "1", "--tensorboard", "--out", str(out)) == 0
    (out / "checkpoints" / "mine").mkdir()
    (out / "checkpoints" / "mine" / "weights.pt").write_text("precious")
    (out / "tb" / "notes").write_text("precious")
    assert helpers.train_cli(*TINY_RUN, "--overwrite", "--out", str(out)) == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["mine"]
    assert sorted(p.name for p in (out / "tb").iterdir()) == ["notes"]
    for root in ("/", str(__import__("pathlib").Path.home())):
        with pytest.raises(run_folder.RunFolderError, match="not a run folder"):
            run_folder.check_new_run(root, "train", overwrite=True)


@pytest.mark.parametrize("planted", ["checkpoints/2", "checkpoints/2/state", "tb/seed_0"])
def test_links_planted_inside_the_run_are_refused(tmp_path, capsys, planted):
    out, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    assert helpers.train_cli(*TINY_RUN, "--checkpoint-every", "1", "--stop-after-updates", "1", "--tensorboard",
                             "--out", str(out)) == 0
    elsewhere.mkdir()
    (elsewhere / "keep").write_text("x")
    target = out / planted
    if target.exists():
        import shutil

        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(elsewhere)
    for argv in (["train", "--resume", str(out)], ["train", *TINY_RUN, "--overwrite", "--out", str(out)]):
        line = helpers.usage_error(argv, capsys)
        assert f"{planted} is a symbolic link" in line, line
    assert sorted(p.name for p in elsewhere.iterdir()) == ["keep"] and target.is_symlink()


def test_a_folder_that_cannot_be_written_is_one_line_for_eval(tmp_path, capsys, monkeypatch):
    import errno

    out = tmp_path / "run"
    assert helpers.train_cli(*TINY_RUN, "--out", str(out)) == 0
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):  # a read-only file system (EROFS), as a mounted archive
        if str(path).startswith(str(out)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    line = helpers.usage_error(["eval", str(out)], capsys)
    assert "cannot create its lock file .lock (Read-only file system)" in line
