"""The jaxppo command line, end to end on tiny runs."""

from __future__ import annotations

import json
import shutil
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
    ci_lines = (root / ".ci" / "run").read_text().strip().splitlines()
    assert any(line.startswith("python3 -m venv") and " -m pytest " in line and line in (root / "README.md").read_text()
               for line in ci_lines)


def test_periodic_evaluation_writes_eval_csv(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["train", *TINY, "--total-timesteps", str(64 * 4), "--num-seeds", "2", "--eval-every", "2",
                     "--eval-episodes", "3", "--out", str(out)])
    assert code == 0
    rows = (out / "eval.csv").read_text().strip().splitlines()
    assert rows[0] == "update,env_steps,seed,mean_return,std_return,mean_length"
    assert [r.split(",")[:3] for r in rows[1:]] == [["2", "128", "0"], ["2", "128", "1"], ["4", "256", "0"],
                                                    ["4", "256", "1"]]
    for row in rows[1:]:  # CartPole pays 1 per step: mean return equals mean length, and is at least 8
        _, _, _, mean_return, _, mean_length = row.split(",")
        assert abs(float(mean_return) - float(mean_length)) < 1e-3 and float(mean_length) >= 8
    assert "eval after update 4" in capsys.readouterr().out


EIGHT_UPDATES = ["--num-envs", "4", "--num-steps", "8", "--total-timesteps", str(4 * 8 * 8), "--num-minibatches",
                 "2", "--quiet"]


def _scalar_series(log_dir: Path, tag: str):
    from tests.helpers import read_tensorboard

    series = read_tensorboard(log_dir)[tag]
    return [step for step, _ in series], np.array([value for _, value in series], np.float32)


def test_tensorboard_events_per_seed_equal_metrics_csv(tmp_path):
    out = tmp_path / "run"
    assert cli.main(["train", *EIGHT_UPDATES, "--seed", "5", "--num-seeds", "2", "--chunk-updates", "3",
                     "--tensorboard", "--out", str(out)]) == 0
    columns = outputs.read_metrics_csv(out / "metrics.csv")
    assert sorted(p.name for p in (out / "tb").iterdir()) == ["seed_5", "seed_6"]
    for index, seed in enumerate((5, 6)):
        for tag in ("episode_return", "value_loss", "approx_kl"):
            steps, values = _scalar_series(out / "tb" / f"seed_{seed}", tag)
            logged = np.isfinite(columns[tag][index])  # returns are NaN (not logged) until an episode ends
            assert [int(s) for s in columns["env_steps"][index]] == [32 * u for u in range(1, 9)]
            assert steps == [int(s) for s in columns["env_steps"][index][logged]]
            np.testing.assert_array_equal(values, columns[tag][index][logged].astype(np.float32))
            assert tag != "episode_return" or 0 < len(steps) < 8


def test_resume_drops_rows_and_events_logged_after_the_checkpoint(tmp_path):
    whole, run = tmp_path / "whole", tmp_path / "run"
    assert cli.main(["train", *EIGHT_UPDATES, "--out", str(whole)]) == 0
    assert cli.main(["train", *EIGHT_UPDATES, "--checkpoint-every", "2", "--chunk-updates", "1",
                     "--keep-checkpoints", "10", "--tensorboard", "--out", str(run)]) == 0
    # Make it look killed right after update 8 was logged while the newest complete checkpoint is update 4,
    # with half a row of a later append at the end of metrics.csv.
    for name in ("6", "8"):
        shutil.rmtree(run / "checkpoints" / name)
    for name in ("summary.json", "final_params.msgpack"):
        (run / name).unlink()
    with open(run / "metrics.csv", "a") as handle:
        handle.write("0,3,12.5")
    assert cli.main(["train", "--resume", str(run), "--quiet"]) == 0

    expected = outputs.read_metrics_csv(whole / "metrics.csv")
    resumed = outputs.read_metrics_csv(run / "metrics.csv")
    assert resumed.keys() == expected.keys()
    for name in expected:
        np.testing.assert_array_equal(resumed[name], expected[name], err_msg=name)
    assert len((run / "metrics.csv").read_text().splitlines()) == 1 + 8  # header + one row per update, no repeats
    steps, values = _scalar_series(run / "tb" / "seed_0", "value_loss")
    assert steps == [32 * u for u in range(1, 9)]  # events of the interrupted updates 5..8 were purged
    np.testing.assert_array_equal(values, expected["value_loss"][0].astype(np.float32))


def test_preset_gives_defaults_and_explicit_flags_win(tmp_path):
    from jaxppo.presets import preset_values

    out = tmp_path / "run"
    assert cli.main(["train", "--preset", "acrobot-v1", "--num-envs", "2", "--num-steps", "8", "--num-minibatches",
                     "1", "--total-timesteps", "32", "--quiet", "--out", str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())
    preset = preset_values("acrobot-v1")
    assert saved["env"] == "Acrobot-v1"
    assert (saved["num_envs"], saved["num_steps"], saved["num_minibatches"], saved["total_timesteps"]) == (2, 8, 1, 32)
    for name in set(preset) - {"num_envs", "num_steps", "num_minibatches", "total_timesteps"}:
        value = preset[name]
        assert saved[name] == (list(value) if isinstance(value, tuple) else value), name
    assert json.loads((out / "run.json").read_text())["preset"] == "acrobot-v1"


def test_unknown_preset_and_preset_with_resume_are_usage_errors(tmp_path, capsys):
    assert cli.main(["train", "--preset", "breakout", "--out", str(tmp_path / "a")]) == 2
    assert "--preset breakout: no such preset; did you mean breakout-minatar" in capsys.readouterr().err
    assert cli.main(["train", "--preset", "cartpole-v1", "--resume", str(tmp_path / "a")]) == 2
    assert "drop --preset" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_wandb_without_the_extra_is_a_usage_error(tmp_path, capsys, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else
                        real_find_spec(name, *a))
    out = tmp_path / "run"
    assert cli.main(["train", *TINY, "--wandb-project", "demo", "--out", str(out)]) == 2
    assert "pip install 'jaxppo[wandb]'" in capsys.readouterr().err
    assert not out.exists()


def test_wandb_offline_logs_one_run_per_seed(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from tests.wandb_records import read_run

    for name, value in (("WANDB_SILENT", "true"), ("WANDB_CONFIG_DIR", tmp_path / "config"),
                        ("WANDB_CACHE_DIR", tmp_path / "cache"), ("WANDB_DATA_DIR", tmp_path / "data")):
        monkeypatch.setenv(name, str(value))
    out = tmp_path / "demo-run"
    assert cli.main(["train", *EIGHT_UPDATES, "--seed", "7", "--num-seeds", "2", "--chunk-updates", "4",
                     "--wandb-project", "jaxppo-test", "--out", str(out)]) == 0
    columns = outputs.read_metrics_csv(out / "metrics.csv")
    runs = {}
    for path in (out / "wandb").glob("offline-run-*/run-*.wandb"):
        meta, history = read_run(path)
        runs[meta["name"]] = (meta, history)
    assert sorted(runs) == ["demo-run-seed7", "demo-run-seed8"]
    for index, seed in enumerate((7, 8)):
        meta, history = runs[f"demo-run-seed{seed}"]
        assert meta["group"] == "demo-run" and meta["project"] == "jaxppo-test"
        assert meta["config"]["seed"] == seed and meta["config"]["num_steps"] == 8
        assert [row["_step"] for row in history] == [32 * u for u in range(1, 9)]
        np.testing.assert_array_equal(np.array([row["value_loss"] for row in history], np.float32),
                                      columns["value_loss"][index].astype(np.float32))
        # Episode returns are logged from the first update in which an episode ended (NaN placeholders are not).
        logged = np.isfinite(columns["episode_return"][index])
        np.testing.assert_array_equal(
            np.array([row["episode_return"] for row in history if "episode_return" in row], np.float32),
            columns["episode_return"][index][logged].astype(np.float32))


def test_sweep_takes_a_preset_as_its_base_config(tmp_path):
    out = tmp_path / "sweep"
    assert cli.main(["sweep", "--preset", "acrobot-v1", "--grid", "ent_coef=0,0.01", "--num-seeds", "1",
                     "--num-envs", "2", "--num-steps", "8", "--num-minibatches", "1", "--total-timesteps", "32",
                     "--out", str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["env"] == "Acrobot-v1" and saved["num_envs"] == 2


def test_overwrite_removes_the_old_runs_outputs_only(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", *EIGHT_UPDATES, "--checkpoint-every", "4", "--tensorboard", "--out", str(out)]) == 0
    (out / "notes.txt").write_text("mine")
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.isdigit()) == ["4", "8"]
    assert cli.main(["train", *EIGHT_UPDATES[:-1], "--total-timesteps", str(4 * 8 * 2), "--overwrite", "--out",
                     str(out)]) == 0
    assert "--overwrite removed" in capsys.readouterr().out
    assert not (out / "checkpoints").exists() and not (out / "tb").exists()  # stale state of the old run is gone
    assert outputs.read_metrics_csv(out / "metrics.csv")["env_steps"].shape == (1, 2)
    assert (out / "notes.txt").read_text() == "mine"


def test_quiet_train_prints_only_the_final_line(tmp_path, capsys):
    # 200 steps round to 192 (a note) and the run compiles and reports progress: --quiet leaves only `done:`.
    assert cli.main(["train", *TINY, "--quiet", "--out", str(tmp_path / "run")]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("done: final return") and "(mean of the last 3 updates)" in lines[0]
    assert captured.err == ""
