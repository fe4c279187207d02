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
    out = tmp_path / "run"
    assert helpers.train_cli(*TINY_RUN, "--out", str(out)) == 0
    config = (out / "config.json").read_bytes()
    line = helpers.usage_error(["sweep", "--grid", "lr=1e-3", "--num-envs", "4", "--num-steps", "16",
                                "--total-timesteps", "128", "--num-minibatches", "2", "--overwrite", "--out",
                                str(out)], capsys)
    assert "holds a train run; a sweep run needs its own folder" in line
    assert (out / "config.json").read_bytes() == config and (out / "final_params.msgpack").exists()
    assert json.loads((out / "run.json").read_text())["kind"] == "train"
