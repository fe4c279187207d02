"""The jaxppo command line, end to end on tiny runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxppo import cli, outputs

TINY = ["--num-envs", "4", "--num-steps", "16", "--total-timesteps", "200", "--num-minibatches", "2"]


def test_train_writes_outputs(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["train", *TINY, "--seed", "3", "--num-seeds", "2", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    # 200 steps -> 3 updates of 64 = 192 steps, and the rounding is said.
    assert "running 3 updates = 192 env steps" in printed
    assert "update 3/3" in printed and "done: final return" in printed
    summary = json.loads((out / "summary.json").read_text())
    for field in ("env", "total_timesteps", "num_seeds", "final_return", "compile_seconds", "train_seconds",
                  "steps_per_second", "env_steps"):
        assert field in summary
    assert summary["env"] == "CartPole-v1" and summary["num_seeds"] == 2 and summary["env_steps"] == 192
    assert summary["seeds"] == [3, 4]
    assert summary["compile_seconds"] > 0 and summary["steps_per_second"] > 0
    columns = outputs.read_metrics_csv(out / "metrics.csv")
    assert columns["episode_return"].shape == (2, 3)
    np.testing.assert_allclose(columns["env_steps"][0], [64, 128, 192])
    np.testing.assert_allclose(summary["final_return"], columns["episode_return"].mean(), rtol=1e-5)
    config = json.loads((out / "config.json").read_text())
    assert config["num_steps"] == 16 and config["hidden_sizes"] == [64, 64]
    assert outputs.config_from_dict(config).batch_size == 64
    assert (out / "final_params.msgpack").stat().st_size > 1000


def test_train_refuses_to_overwrite_existing_run(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "summary.json").write_text('{"precious": true}')
    code = cli.main(["train", *TINY, "--out", str(out)])
    assert code == 2
    assert "already holds a run" in capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text()) == {"precious": True}


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--num-minibatches", "3"], "num_minibatches=3: must divide num_envs * num_steps"),
        (["--gamma", "1.5"], "gamma=1.5: must be <= 1.0"),
        (["--env", "CartPol-v1"], "did you mean CartPole-v1"),
    ],
)
def test_bad_config_is_one_line_exit_2(tmp_path, flags, expected):
    result = subprocess.run([sys.executable, "-m", "jaxppo.cli", "train", *flags, "--out", str(tmp_path / "x")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxppo: error: ") and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x").exists()  # nothing written for a rejected config


def test_readme_test_command_is_what_ci_runs():
    root = Path(__file__).resolve().parents[1]
    ci_command = (root / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci_command in (root / "README.md").read_text()


def test_periodic_evaluation_writes_eval_csv(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["train", *TINY, "--total-timesteps", str(64 * 4), "--num-seeds", "2", "--eval-every", "2",
                     "--eval-episodes", "3", "--quiet", "--out", str(out)])
    assert code == 0
    rows = (out / "eval.csv").read_text().strip().splitlines()
    assert rows[0] == "update,env_steps,seed,mean_return,std_return,mean_length"
    assert [r.split(",")[:3] for r in rows[1:]] == [["2", "128", "0"], ["2", "128", "1"], ["4", "256", "0"],
                                                    ["4", "256", "1"]]
    for row in rows[1:]:  # CartPole pays 1 per step: mean return equals mean length, and is at least 8
        _, _, _, mean_return, _, mean_length = row.split(",")
        assert abs(float(mean_return) - float(mean_length)) < 1e-3 and float(mean_length) >= 8
    assert "eval after update 4" in capsys.readouterr().out
