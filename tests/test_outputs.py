"""Run files: writes that never follow planted links, metrics.csv round trip and damage detection, parameter
checksums verified before parsing, jaxppo.load with a seed index."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import jaxppo
from jaxppo import outputs
from jaxppo.loading import read_final_params
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
    config, saved, num_seeds = read_final_params(run)
    assert num_seeds == 1 and config.num_envs == 4
    data = bytearray((run / "final_params.msgpack").read_bytes())
    data[len(data) // 2] ^= 1
    (run / "final_params.msgpack").write_bytes(bytes(data))
    with pytest.raises(outputs.OutputError, match="does not match its checksum"):
        read_final_params(run)
    data[len(data) // 2] ^= 1
    (run / "final_params.msgpack").write_bytes(bytes(data))
    edited = {**json.loads((run / "config.json").read_text()), "lr": 0.5}
    (run / "config.json").write_text(json.dumps(edited))
    with pytest.raises(outputs.OutputError, match="not the config these parameters were trained with"):
        read_final_params(run)


def test_load_a_run_in_one_line(tmp_path):
    assert helpers.train_cli(*helpers.TINY_FLAGS, "--total-timesteps", "256", "--num-seeds", "2",
                             "--normalize-observations", "--out", str(tmp_path / "run")) == 0
    run = jaxppo.load(tmp_path / "run")
    assert run.num_seeds == 2 and run.config.normalize_observations
    action = run.act(np.zeros((3, 4), np.float32))
    assert action.shape == (3,) and set(np.asarray(action)) <= {0, 1}
    assert run.seed == 0  # the default: the first seed
    other = jaxppo.load(tmp_path / "run", seed=1)
    assert other.seed == 1
    assert not np.allclose(np.asarray(other.normalizers.obs.mean), np.asarray(run.normalizers.obs.mean))
    with pytest.raises(ValueError, match=r"seed=2: the run has 2 seed\(s\); give an index in 0..1"):
        jaxppo.load(tmp_path / "run", seed=2)
    assert os.listdir(tmp_path / "run").count(".lock") == 0


def test_metrics_csv_keeps_integer_columns_and_rewrites_to_the_same_bytes(tmp_path):
    columns = {"env_steps": np.array([[512, 1024]], np.int64), "episodes_completed": np.array([[3, 0]], np.int32),
               "replicas_in_sync": np.array([[True, True]]), "value_loss": np.array([[0.1, np.nan]], np.float32)}
    path, again = tmp_path / "metrics.csv", tmp_path / "again.csv"
    outputs.write_metrics_csv(path, columns)
    read = outputs.read_metrics_csv(path)
    assert read["env_steps"].dtype == np.int64 and read["value_loss"].dtype == np.float64
    outputs.write_metrics_csv(again, read)
    assert again.read_bytes() == path.read_bytes()
    assert "512," in path.read_text() and "512.0" not in again.read_text()


@pytest.mark.parametrize("content, needle", [
    ("seed,update,x,x\n0,1,1.0,2.0\n", "has the column 'x' twice"),
    ("seed,update,seed\n0,1,1.0\n", "has the column 'seed' twice"),
    ("seed,update,x\n0,1,1.0\n0,1,1.0\n", "holds the row of seed 0, update 1 twice"),
    ("seed,update,x\n0,1,1.0\n1999,9999999,1.0\n", "misses rows"),  # refused before allocating 2000 x 1e7 cells
])
def test_repeated_or_sparse_metrics_csv_is_one_clear_error(tmp_path, content, needle):
    path = tmp_path / "metrics.csv"
    path.write_text(content)
    with pytest.raises(outputs.OutputError, match=needle):
        outputs.read_metrics_csv(path)


def test_a_run_keeps_its_metric_columns(tmp_path):
    columns = {"env_steps": np.zeros((2, 3), np.int64), "a": np.zeros((2, 3))}
    outputs.check_metrics_columns(tmp_path / "m.csv", columns, ["env_steps", "a"], 2)
    for names, seeds, needle in ((["env_steps", "b"], 2, r"unexpected \['a'\]; missing \['b'\]"),
                                 (["env_steps"], 2, r"unexpected \['a'\]"), (["env_steps", "a"], 3, "holds 2 seed")):
        with pytest.raises(outputs.OutputError, match=needle):
            outputs.check_metrics_columns(tmp_path / "m.csv", columns, names, seeds)


def test_a_failed_write_is_one_error_naming_the_file_and_leaves_the_old_file(tmp_path, monkeypatch):
    import errno

    path = tmp_path / "summary.json"
    outputs.write_json(path, {"old": 1})

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(outputs.WriteError, match=r"cannot write .*summary.json: No space left on device"):
        outputs.write_json(path, {"new": 2})
    assert json.loads(path.read_text()) == {"old": 1} and sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_final_params_are_verified_before_they_are_parsed(tmp_path):
    from flax import serialization

    assert helpers.train_cli(*helpers.TINY_FLAGS, "--total-timesteps", "128", "--out", str(tmp_path / "run")) == 0
    run = tmp_path / "run"
    path, sidecar = run / outputs.PARAMS, run / (outputs.PARAMS + ".sha256")
    original, lines = path.read_bytes(), sidecar.read_text().split()
    # Bytes msgpack cannot take (a map with a list key: TypeError 'unhashable type'), of another structure, or cut
    # short, each with a checksum recomputed to match: still one OutputError, never a TypeError.
    list_key = b"\x81\xa6params\x81\x92\x01\x02\x01"
    other = serialization.msgpack_serialize({"params": [1, 2]})
    for data in (list_key, other, b"\x00garbage", original[: len(original) // 2]):
        path.write_bytes(data)
        sidecar.write_text(outputs.sha256(data) + "\n" + lines[1] + "\n")
        with pytest.raises(outputs.OutputError, match="final_params.msgpack"):
            jaxppo.load(run)
    # The sidecar's config line deleted and config.json edited: refused (the network would be another).
    path.write_bytes(original)
    sidecar.write_text(lines[0] + "\n")
    edited = {**json.loads((run / "config.json").read_text()), "activation": "relu"}
    (run / "config.json").write_text(json.dumps(edited))
    with pytest.raises(outputs.OutputError, match="has no config digest"):
        jaxppo.load(run)
