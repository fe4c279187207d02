"""Run files: writes that never follow planted links, metrics.csv round trip and damage detection, parameter
checksums, load_run."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import jaxppo
from jaxppo import outputs
from tests import helpers


def test_whole_file_writes_replace_a_planted_link_instead_of_writing_through_it(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    for name in ("eval.json", "eval.json.tmp", "summary.json.tmp"):
        (run / name).symlink_to(outside)
    outputs.write_json(run / "eval.json", {"x": 1})
    outputs.write_json(run / "summary.json", {"y": 2})
    assert outside.read_text() == "precious"
    assert not (run / "eval.json").is_symlink() and json.loads((run / "eval.json").read_text()) == {"x": 1}
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []  # no temporary file left behind


def test_appends_refuse_a_planted_link(tmp_path):
    outside = tmp_path / "outside.csv"
    outside.write_text("precious\n")
    (tmp_path / "metrics.csv").symlink_to(outside)
    columns = {"env_steps": np.array([[64]]), "episode_return": np.array([[1.0]])}
    with pytest.raises(OSError):
        outputs.append_metrics_csv(tmp_path / "metrics.csv", columns, 0)
    assert outside.read_text() == "precious\n"


def test_metrics_csv_round_trip_with_nan_placeholders(tmp_path):
    columns = {"env_steps": np.array([[64, 128], [64, 128]]),
               "episode_return": np.array([[np.nan, 2.5], [1.0, 3.0]])}
    path = tmp_path / "metrics.csv"
    outputs.append_metrics_csv(path, {k: v[:, :1] for k, v in columns.items()}, 0)
    outputs.append_metrics_csv(path, {k: v[:, 1:] for k, v in columns.items()}, 1)
    read = outputs.read_metrics_csv(path)
    np.testing.assert_array_equal(read["env_steps"], columns["env_steps"])
    np.testing.assert_array_equal(read["episode_return"], columns["episode_return"])  # NaN where no episode ended
    assert "nan" in path.read_text()
    np.testing.assert_allclose(outputs.final_returns(columns["episode_return"]), [2.5, 2.0])


@pytest.mark.parametrize("content, needle", [
    ("", "has no metric rows"),
    ("seed,update,x\n", "has no metric rows"),
    ("seed,update,x\n0,1,abc\n", "not numeric"),
    ("seed,update,x\n0,1000000000,1.0\n", "outside 1..10000000"),
    ("seed,update,x\n0,1,1.0\n0,3,1.0\n", "misses rows"),
    ("seed,update,x\n0,1\n", "wrong number of fields"),
])
def test_damaged_metrics_csv_is_one_clear_error(tmp_path, content, needle):
    path = tmp_path / "metrics.csv"
    path.write_text(content)
    with pytest.raises(outputs.OutputError, match=needle):
        outputs.read_metrics_csv(path)
    with pytest.raises(outputs.OutputError, match="is missing"):
        outputs.read_metrics_csv(tmp_path / "absent.csv")


def test_parameters_are_checked_against_their_checksum_and_config(tmp_path):
    assert helpers.train_cli(*helpers.TINY_FLAGS, "--total-timesteps", "128", "--out", str(tmp_path / "run")) == 0
    run = tmp_path / "run"
    config, saved, num_seeds = outputs.read_final_params(run)
    assert num_seeds == 1 and config.num_envs == 4
    data = bytearray((run / "final_params.msgpack").read_bytes())
    data[len(data) // 2] ^= 1
    (run / "final_params.msgpack").write_bytes(bytes(data))
    with pytest.raises(outputs.OutputError, match="does not match its checksum"):
        outputs.read_final_params(run)
    data[len(data) // 2] ^= 1
    (run / "final_params.msgpack").write_bytes(bytes(data))
    edited = {**json.loads((run / "config.json").read_text()), "lr": 0.5}
    (run / "config.json").write_text(json.dumps(edited))
    with pytest.raises(outputs.OutputError, match="not the config these parameters were trained with"):
        outputs.read_final_params(run)


def test_load_a_run_in_one_line(tmp_path):
    assert helpers.train_cli(*helpers.TINY_FLAGS, "--total-timesteps", "256", "--num-seeds", "2",
                             "--normalize-observations", "--out", str(tmp_path / "run")) == 0
    run = jaxppo.load(tmp_path / "run")
    assert run.num_seeds == 2 and run.config.normalize_observations
    action = run.act(np.zeros((3, 4), np.float32))
    assert action.shape == (3,) and set(np.asarray(action)) <= {0, 1}
    other = outputs.load_run(tmp_path / "run", seed_index=1)
    assert not np.allclose(np.asarray(other.normalizers.obs.mean), np.asarray(run.normalizers.obs.mean))
    with pytest.raises(ValueError, match="seed_index=2"):
        outputs.load_run(tmp_path / "run", seed_index=2)
    assert os.listdir(tmp_path / "run").count(".lock") == 0
