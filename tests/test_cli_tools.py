"""The sweep / plot / eval commands on tiny runs: what they write, and one-line usage errors that touch nothing."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxppo import cli, loading, outputs
from jaxppo.cli.eval import EvalArgs, eval_run as eval_command
from jaxppo.cli.flags import ConfigFlags
from jaxppo.cli.sweep import SweepArgs, parse_grid, parse_ranges, sweep as sweep_command
from jaxppo.evaluate import make_evaluate
from tests.helpers import fold_obs_normalisation, usage_error


def eval_run(run, **kwargs):
    eval_command(EvalArgs(run=run, **kwargs))


def sweep(config, **kwargs):
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    sweep_command(SweepArgs(config=config, **kwargs))

# obs_clip high enough that no observation is clipped, so folding the normalisation into the weights is exact.
TINY = ["--num-envs", "4", "--num-steps", "32", "--total-timesteps", "640", "--num-minibatches", "2", "--quiet",
        "--normalize-observations", "--obs-clip", "1000"]
FLAGS = ConfigFlags(num_envs=4, num_steps=32, total_timesteps=4 * 32 * 3, num_minibatches=2, num_epochs=1)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    assert cli.main(["train", *TINY, "--seed", "7", "--num-seeds", "2", "--out", str(out)]) == 0
    return out


def _config_and_saved(run_dir):
    config, saved, num_seeds = loading.read_final_params(run_dir)
    assert num_seeds == 2
    return config, saved


def test_eval_acts_on_each_seeds_saved_obs_statistics(run_dir, tmp_path, capsys):
    eval_run(run_dir, num_episodes=3, seed=4)
    printed = capsys.readouterr().out
    assert "seed 7: return" in printed and "seed 8: return" in printed
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["num_seeds"] == 2 and report["num_episodes"] == 3 and report["deterministic"]
    assert [entry["train_seed"] for entry in report["per_seed"]] == [7, 8]

    config, saved = _config_and_saved(run_dir)
    assert config.normalize_observations
    params = [jax.tree.map(lambda x: x[i], saved["params"]) for i in range(2)]
    moments = [jax.tree.map(lambda x: x[i], saved["normalizers"].obs) for i in range(2)]
    assert not np.allclose(moments[0].mean, moments[1].mean)  # so a seed mix-up would show
    # Reference: each seed's policy with its statistics folded into the weights, evaluated on raw observations.
    # Per seed: [statistics applied once (expected), ignored, applied twice, the other seed's].
    candidates = []
    for i in range(2):
        once = fold_obs_normalisation(params[i], moments[i])
        candidates += [once, params[i], fold_obs_normalisation(once, moments[i]),
                       fold_obs_normalisation(params[i], moments[1 - i])]
    raw_config = dataclasses.replace(config, normalize_observations=False)
    evaluate_raw = jax.jit(jax.vmap(make_evaluate(raw_config, num_episodes=3), in_axes=(0, None)))
    result = evaluate_raw(jax.tree.map(lambda *leaves: jnp.stack(leaves), *candidates), jax.random.key(4))
    returns = np.asarray(result.returns).reshape(2, 4, 3)
    lengths = np.asarray(result.lengths).reshape(2, 4, 3)
    for i, entry in enumerate(report["per_seed"]):
        np.testing.assert_allclose(entry["returns"], returns[i, 0])
        np.testing.assert_array_equal(entry["lengths"], lengths[i, 0])
        assert entry["mean_return"] == pytest.approx(float(np.mean(returns[i, 0])))
        np.testing.assert_allclose(entry["returns"], entry["lengths"])  # CartPole pays 1 per step
        for wrong in returns[i, 1:]:  # the check can tell each mistake apart
            assert not np.array_equal(wrong, returns[i, 0])

    # A second evaluation needs --overwrite; then it replaces eval.json with the same results (same key).
    with pytest.raises(cli.UsageError, match=r"eval\.json already exists; pass --overwrite"):
        eval_run(run_dir, num_episodes=3, seed=4)
    eval_run(run_dir, num_episodes=3, seed=4, overwrite=True)
    assert json.loads((run_dir / "eval.json").read_text()) == report
    # The same run read as one without normalisation is refused: its config is not the one trained with.
    plain = tmp_path / "plain"
    shutil.copytree(run_dir, plain)
    (plain / "config.json").write_text(json.dumps({**outputs.config_to_dict(config),
                                                   "normalize_observations": False}))
    with pytest.raises(cli.UsageError, match="not the config these parameters were trained with"):
        eval_run(plain, num_episodes=3, seed=4, overwrite=True)


def test_sweep_command_writes_table(tmp_path, capsys):
    out = tmp_path / "sweep"
    sweep(FLAGS, grid=["lr=1e-3"], num_seeds=1, out=out)  # an earlier sweep
    earlier = (out / "sweep.csv").read_text()
    capsys.readouterr()
    with pytest.raises(cli.UsageError, match=r"already holds results \(.*sweep\.csv.*\).*--overwrite"):
        sweep(FLAGS, grid=["lr=1e-3"], out=out)
    assert (out / "sweep.csv").read_text() == earlier
    sweep(FLAGS, grid=["lr=1e-3,3e-4"], random_samples=1, ranges=["ent_coef=0.001:0.1:log"], num_seeds=2, out=out,
          overwrite=True)
    with open(out / "sweep.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and list(rows[0]) == ["lr", "ent_coef", "mean", "std", "min", "max", "returns"]
    assert [float(r["lr"]) for r in rows[:2]] == [1e-3, 3e-4]
    assert [float(r["ent_coef"]) for r in rows[:2]] == [0.01, 0.01]  # the base value where the grid is silent
    assert 0.001 <= float(rows[2]["ent_coef"]) <= 0.1 and float(rows[2]["lr"]) == FLAGS.lr
    for row in rows:
        finals = [float(v) for v in row["returns"].split(";")]
        assert len(finals) == 2
        assert float(row["mean"]) == pytest.approx(np.mean(finals)) and float(row["std"]) == pytest.approx(
            np.std(finals))
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "config.json").read_text())["num_steps"] == 32
    # One summary line per setting, best mean first.
    lines = [line for line in capsys.readouterr().out.splitlines() if "final return" in line and " +- " in line]
    means = sorted((float(r["mean"]) for r in rows), reverse=True)
    assert [float(line.split("final return ")[1].split(" ")[0]) for line in lines] == pytest.approx(means, abs=0.006)
    with pytest.raises(cli.UsageError, match="already holds results"):
        sweep(FLAGS, grid=["lr=1e-3"], out=out)


def _usage_error(argv, capsys) -> str:
    return usage_error(argv, capsys)


@pytest.mark.parametrize("args, message", [
    (["--grid", "learning_rate=1e-3"], "--grid learning_rate: 'learning_rate' is not a sweepable hyperparameter; "
                                       "valid names: lr, gamma"),
    (["--random-samples", "2", "--ranges", "num_envs=1:8"], "--ranges num_envs: 'num_envs' is not a sweepable"),
    (["--grid", "lr="], "--grid 'lr=': expected NAME=V1,V2,..."),
    (["--grid", "gamma=0.9,1.5"], "--grid gamma: gamma=1.5: must be <= 1.0"),
    (["--random-samples", "2", "--ranges", "lr=0:1e-3:log"], "--ranges lr: 'lr' low=0.0 must be > 0 on a log scale"),
    (["--random-samples", "2", "--ranges", "lr=1e-2:1e-3"], "--ranges lr: 'lr' low=0.01 must be <= high=0.001"),
    (["--random-samples", "2", "--ranges", "lr=1e-3:1e-2", "--ranges", "lr=1e-4:1e-3"], "lr given twice"),
    (["--ranges", "lr=1e-3:1e-2"], "--ranges: pass --random-samples N"),
    (["--random-samples", "2"], "--random-samples: needs at least one --ranges"),
    ([], "nothing to sweep: pass --grid"),
    (["--grid", "lr=1e-3", "--num-seeds", "0"], "--num-seeds 0: must be at least 1"),
    (["--grid", "lr=1e-3", "--num-envs", "0"], "num_envs=0: must be a positive integer"),
])
def test_sweep_usage_errors(tmp_path, capsys, args, message):
    out = tmp_path / "sweep"
    assert message in _usage_error(["sweep", *args, "--out", str(out)], capsys)
    assert not out.exists()


def test_sweep_out_errors_touch_nothing(tmp_path, capsys):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "config.json").write_text("{}")
    line = _usage_error(["sweep", "--grid", "lr=1e-3", "--out", str(out)], capsys)
    assert "already holds results (config.json); choose another --out or pass --overwrite" in line
    assert sorted(p.name for p in out.iterdir()) == ["config.json"] and (out / "config.json").read_text() == "{}"
    (tmp_path / "file").write_text("x")
    assert "is a file, not a folder" in _usage_error(["sweep", "--grid", "lr=1e-3", "--out", str(tmp_path / "file")],
                                                     capsys)


def test_plot_usage_errors(run_dir, tmp_path, capsys):
    missing = tmp_path / "missing"
    assert f"run folder {missing} does not exist" in _usage_error(["plot", str(missing)], capsys)
    (tmp_path / "empty").mkdir()
    assert "metrics.csv is missing" in _usage_error(["plot", str(tmp_path / "empty")], capsys)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metrics.csv").write_text("seed,update\n")
    assert "metrics.csv has no metric rows" in _usage_error(["plot", str(tmp_path / "broken")], capsys)
    assert "--out x.jpg: must be a .png file" in _usage_error(["plot", str(run_dir), "--out", "x.jpg"], capsys)
    existing = tmp_path / "curves.png"
    existing.write_bytes(b"earlier figure")
    line = _usage_error(["plot", str(run_dir), "--out", str(existing)], capsys)
    assert "already exists; choose another --out or pass --overwrite" in line
    assert existing.read_bytes() == b"earlier figure"
    assert cli.main(["plot", str(run_dir), "--out", str(existing), "--overwrite"]) == 0
    assert existing.read_bytes()[:4] == b"\x89PNG"


def test_eval_usage_errors(run_dir, tmp_path, capsys):
    missing = tmp_path / "missing"
    assert f"run folder {missing} does not exist" in _usage_error(["eval", str(missing)], capsys)
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    assert "config.json is missing" in _usage_error(["eval", str(unfinished)], capsys)
    (unfinished / "config.json").write_text((run_dir / "config.json").read_text())
    line = _usage_error(["eval", str(unfinished)], capsys)
    assert "final_params.msgpack is missing; the run has not finished" in line
    (unfinished / "final_params.msgpack").write_bytes(b"\x81\xa1x\x01")  # msgpack {"x": 1}
    assert "final_params.msgpack.sha256 is missing" in _usage_error(["eval", str(unfinished)], capsys)
    trained = outputs.read_config(unfinished)
    outputs.write_params(unfinished / "final_params.msgpack", {"x": 1}, {}, trained)  # a checksummed foreign tree
    assert "does not hold per-seed parameters" in _usage_error(["eval", str(unfinished)], capsys)
    (unfinished / "config.json").write_text('{"num_envs": 0}')
    assert "config.json is invalid: num_envs=0" in _usage_error(["eval", str(unfinished)], capsys)
    for content in ("5", "null", "[]"):
        (unfinished / "config.json").write_text(content)
        assert "config.json holds" in _usage_error(["eval", str(unfinished)], capsys)
    assert "--num-episodes 0: must be at least 1" in _usage_error(["eval", str(run_dir), "--num-episodes", "0"],
                                                                  capsys)
    assert not (unfinished / "eval.json").exists()


def test_parsers():
    assert parse_grid(["lr=1e-3,3e-4", "gamma=0.9"]) == {"lr": [1e-3, 3e-4], "gamma": [0.9]}
    assert parse_ranges(["lr=1e-5:1e-2:log", "clip_eps=0.1:0.3"]) == {
        "lr": (1e-5, 1e-2, "log"), "clip_eps": (0.1, 0.3, "linear")}
    for bad in (["lr=a,b"], ["lr="], ["=1"], ["lr=1", "lr=2"], ["lr=1,,2"]):
        with pytest.raises(cli.UsageError, match="--grid"):
            parse_grid(bad)
    for bad in (["lr=1"], ["lr=1:2:cubic"], ["lr=a:b"], ["lr"], ["lr=1:2", "lr=2:3"]):
        with pytest.raises(cli.UsageError, match="--ranges"):
            parse_ranges(bad)
