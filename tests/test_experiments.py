"""The experiment scripts: their statistics by hand, and each script end to end on a tiny budget."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import common  # noqa: E402


def test_trailing_mean_by_hand_skips_nan():
    values = np.array([[1.0, 3.0, np.nan, 5.0, 7.0]])
    # window 2: [1], [1,3], [3,nan], [nan,5], [5,7]
    np.testing.assert_allclose(common.trailing_mean(values, window=2), [[1.0, 2.0, 3.0, 5.0, 6.0]])
    assert np.isnan(common.trailing_mean(np.array([[np.nan, np.nan]]), window=2)).all()


def test_first_reaching_ignores_placeholders_before_the_first_episode():
    # Seed 0: placeholder 0.0 (no episode yet) would "reach" -5; real returns -9, -7, -3, -1.
    episode_return = np.array([[0.0, -9.0, -7.0, -3.0, -1.0],
                               [10.0, 10.0, 10.0, 10.0, 10.0],
                               [-9.0, -9.0, -9.0, -9.0, -9.0]])
    completed = np.array([[0, 2, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    # window 2, target -5: seed 0 means over real windows: u3 (-9,-7)=-8, u4 (-7,-3)=-5 -> reached at update 4.
    np.testing.assert_array_equal(common.first_reaching(episode_return, completed, -5.0, window=2), [4, 2, 0])


def test_iqm_is_the_mean_of_the_middle_half():
    assert common.iqm(np.array([100.0, 1.0, 2.0, 3.0, 4.0, -50.0, 5.0, 6.0])) == pytest.approx(3.5)  # 2,3,4,5
    assert common.iqm(np.arange(16.0)) == pytest.approx(np.mean(np.arange(4.0, 12.0)))


def test_seconds_at_update_interpolates_inside_its_chunk():
    import convergence

    ends, seconds = np.array([4, 8, 10]), np.array([2.0, 4.0, 1.0])
    assert convergence.seconds_at_update(4, ends, seconds) == pytest.approx(2.0)
    assert convergence.seconds_at_update(6, ends, seconds) == pytest.approx(4.0)  # half of chunk 2
    assert convergence.seconds_at_update(10, ends, seconds) == pytest.approx(7.0)


def _run_script(name: str, *args: str, timeout: int = 300) -> str:
    result = subprocess.run([sys.executable, str(ROOT / "experiments" / name), *args], cwd=ROOT,
                            env={**os.environ, "MPLBACKEND": "Agg"}, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_convergence_and_stability_scripts_on_a_tiny_budget(tmp_path):
    _run_script("convergence.py", "--envs", "CartPole-v1", "--num-seeds", "2", "--total-timesteps", "10240",
                "--chunks", "3", "--out-dir", str(tmp_path))
    seeds = _rows(tmp_path / "convergence.csv")
    assert [(r["env"], r["seed"]) for r in seeds] == [("CartPole-v1", "0"), ("CartPole-v1", "1")]
    assert all(r["reached"] == "False" and float(r["env_steps"]) == 10240 for r in seeds)  # 475 needs more steps
    assert float(seeds[0]["train_seconds"]) > 0 and float(seeds[0]["compile_seconds"]) > 0
    summary = _rows(tmp_path / "convergence_summary.csv")
    assert summary[0]["reached_fraction"] == "0.0" and summary[0]["seeds"] == "2"
    assert (tmp_path / "convergence.png").stat().st_size > 1000

    _run_script("stability.py", "--envs", "CartPole-v1", "--num-seeds", "3", "--total-timesteps", "10240",
                "--out-dir", str(tmp_path))
    (env_row,) = _rows(tmp_path / "stability.csv")
    finals = np.array([float(r["final_return"]) for r in _rows(tmp_path / "stability_seeds.csv")])
    assert len(finals) == 3 and len(set(finals)) == 3  # different seeds, different runs
    assert float(env_row["mean"]) == pytest.approx(finals.mean())
    assert float(env_row["worst"]) == pytest.approx(finals.min())
    assert float(env_row["std"]) == pytest.approx(finals.std())
    curves = _rows(tmp_path / "stability_curves.csv")
    assert len(curves) == 10240 // 512 and curves[-1]["env_steps"] == "10240"
    assert (tmp_path / "stability.png").stat().st_size > 1000


def test_speed_scripts_on_a_tiny_budget(tmp_path):
    _run_script("benchmark.py", "--settings", "cartpole-4x128", "--total-timesteps", "4096", "--repeats", "1",
                "--out", str(tmp_path / "benchmark.csv"))
    (row,) = _rows(tmp_path / "benchmark.csv")
    assert float(row["ratio"]) == pytest.approx(float(row["train_steps_per_s"]) / float(row["rollout_steps_per_s"]))
    assert (tmp_path / "benchmark.png").exists()

    _run_script("scaling_runs.py", "--seeds", "2", "--envs", "4", "--target-seeds", "1", "--repeats", "1",
                "--total-timesteps", "4096", "--chunks", "2", "--out-dir", str(tmp_path))
    seeds = _rows(tmp_path / "scaling_seeds.csv")
    assert [r["seeds"] for r in seeds] == ["1", "2"] and float(seeds[0]["speedup"]) == 1.0
    assert float(seeds[1]["efficiency"]) == pytest.approx(float(seeds[1]["speedup"]) / 2)
    (envs,) = _rows(tmp_path / "scaling_time_to_target.csv")
    assert envs["num_envs"] == "4" and envs["batch_size"] == "512"
    assert (tmp_path / "scaling_runs.png").exists()


def test_run_all_rejects_an_unknown_budget():
    result = subprocess.run(["bash", str(ROOT / "experiments" / "run_all.sh"), "medium"], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2 and "small|full" in result.stderr
