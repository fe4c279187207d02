"""The sweep / plot / eval command functions, called as plain Python functions on tiny runs."""

from __future__ import annotations

import csv
import json

import jax
import numpy as np
import pytest

from jaxppo import cli, outputs
from jaxppo.agent import make_agent
from jaxppo.envs import init_moments
from jaxppo.evaluate import evaluate
from jaxppo.networks import init_params
from jaxppo.tools_cli import eval_run, parse_grid, parse_ranges, plot, sweep

TINY = ["--num-envs", "4", "--num-steps", "32", "--total-timesteps", "640", "--num-minibatches", "2", "--quiet"]
FLAGS = cli._ConfigFlags(num_envs=4, num_steps=32, total_timesteps=4 * 32 * 3, num_minibatches=2, num_epochs=1)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    assert cli.main(["train", *TINY, "--seed", "7", "--num-seeds", "2", "--out", str(out)]) == 0
    return out


def test_eval_writes_per_seed_returns_equal_to_evaluate(run_dir, capsys):
    eval_run(run_dir, num_episodes=3, seed=4)
    printed = capsys.readouterr().out
    assert "seed 7: return" in printed and "seed 8: return" in printed
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["num_seeds"] == 2 and report["num_episodes"] == 3 and report["deterministic"]
    assert [entry["train_seed"] for entry in report["per_seed"]] == [7, 8]

    config = outputs.config_from_dict(json.loads((run_dir / "config.json").read_text()))
    agent = make_agent(config)
    single = {"params": init_params(agent.network, agent.spec, jax.random.key(0)),
              "obs_moments": init_moments(agent.spec.obs_shape)}
    template = jax.tree.map(lambda x: np.zeros((2,) + x.shape, x.dtype), single)
    saved = outputs.read_params(run_dir / "final_params.msgpack", template)
    for i, entry in enumerate(report["per_seed"]):
        assert len(entry["returns"]) == 3 and len(entry["lengths"]) == 3
        params = jax.tree.map(lambda x: x[i], saved["params"])
        expected = evaluate(config, params, jax.random.key(4), num_episodes=3)
        np.testing.assert_allclose(entry["returns"], np.asarray(expected.returns), rtol=1e-6)
        np.testing.assert_array_equal(entry["lengths"], np.asarray(expected.lengths))
        assert entry["mean_return"] == pytest.approx(float(np.mean(expected.returns)))
        # CartPole pays 1 per step.
        np.testing.assert_allclose(entry["returns"], entry["lengths"])


def test_eval_missing_files_are_usage_errors(tmp_path, run_dir):
    with pytest.raises(cli.UsageError, match=r"config\.json is missing"):
        eval_run(tmp_path)
    (tmp_path / "config.json").write_text((run_dir / "config.json").read_text())
    with pytest.raises(cli.UsageError, match=r"final_params\.msgpack is missing"):
        eval_run(tmp_path)
    with pytest.raises(cli.UsageError, match="--num-episodes 0"):
        eval_run(run_dir, num_episodes=0)


def test_plot_command(run_dir, tmp_path, capsys):
    out = tmp_path / "curves.png"
    plot([run_dir, run_dir], out=out)
    assert out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(cli.UsageError, match="metrics.csv is missing"):
        plot([tmp_path], out=out)


def test_sweep_command_writes_table(tmp_path, capsys):
    out = tmp_path / "sweep"
    sweep(FLAGS, grid=["lr=1e-3,3e-4"], random_samples=1, ranges=["ent_coef=0.001:0.1:log"], num_seeds=2, out=out)
    with open(out / "sweep.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and list(rows[0])[:2] == ["lr", "ent_coef"]
    assert [float(r["lr"]) for r in rows[:2]] == [1e-3, 3e-4]
    assert [float(r["ent_coef"]) for r in rows[:2]] == [0.01, 0.01]  # the base value where the grid is silent
    assert 0.001 <= float(rows[2]["ent_coef"]) <= 0.1 and float(rows[2]["lr"]) == FLAGS.lr
    assert all(len(r["returns"].split(";")) == 2 for r in rows)
    assert (out / "sweep.png").stat().st_size > 5000
    assert json.loads((out / "config.json").read_text())["num_steps"] == 32
    assert "done: 3 setting(s) x 2 seed(s)" in capsys.readouterr().out
    with pytest.raises(cli.UsageError, match="already holds results"):
        sweep(FLAGS, grid=["lr=1e-3"], out=out)


def test_sweep_usage_errors():
    with pytest.raises(cli.UsageError, match="--grid 'lr'"):
        sweep(FLAGS, grid=["lr"])
    with pytest.raises(cli.UsageError, match="'learning_rate' is not a sweepable"):
        sweep(FLAGS, grid=["learning_rate=1e-3"])
    with pytest.raises(cli.UsageError, match="nothing to sweep"):
        sweep(FLAGS)
    with pytest.raises(cli.UsageError, match="--random-samples: needs"):
        sweep(FLAGS, random_samples=2)
    with pytest.raises(cli.UsageError, match="num_envs"):
        sweep(cli._ConfigFlags(num_envs=0), grid=["lr=1e-3"])


def test_parsers():
    assert parse_grid(["lr=1e-3,3e-4", "gamma=0.9"]) == {"lr": [1e-3, 3e-4], "gamma": [0.9]}
    assert parse_ranges(["lr=1e-5:1e-2:log", "clip_eps=0.1:0.3"]) == {
        "lr": (1e-5, 1e-2, "log"), "clip_eps": (0.1, 0.3, "linear")}
    for bad in (["lr=a,b"], ["lr="], ["=1"], ["lr=1", "lr=2"]):
        with pytest.raises(cli.UsageError, match="--grid"):
            parse_grid(bad)
    for bad in (["lr=1"], ["lr=1:2:cubic"], ["lr=a:b"], ["lr"]):
        with pytest.raises(cli.UsageError, match="--ranges"):
            parse_ranges(bad)
