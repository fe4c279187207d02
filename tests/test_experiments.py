"""The experiment scripts: their statistics by hand, their pieces on tiny configs, and each script end to end on a
tiny budget, with the content of what it writes checked (rows, numbers, tables, charts)."""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxppo.config import PPOConfig
from tests import helpers
from tests.experiment_modules import load

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def common():
    return load("common")


# ------------------------------------------------------------------------------------------- statistics by hand
def test_trailing_mean_by_hand_skips_nan(common):
    values = np.array([[1.0, 3.0, np.nan, 5.0, 7.0]])
    # window 2: [1], [1,3], [3,nan], [nan,5], [5,7]
    np.testing.assert_allclose(common.trailing_mean(values, window=2), [[1.0, 2.0, 3.0, 5.0, 6.0]])
    assert np.isnan(common.trailing_mean(np.array([[np.nan, np.nan]]), window=2)).all()


def test_first_reaching_ignores_placeholders_before_the_first_episode(common):
    # Seed 0: placeholder 0.0 (no episode yet) would "reach" -5; real returns -9, -7, -3, -1.
    episode_return = np.array([[0.0, -9.0, -7.0, -3.0, -1.0],
                               [10.0, 10.0, 10.0, 10.0, 10.0],
                               [-9.0, -9.0, -9.0, -9.0, -9.0]])
    completed = np.array([[0, 2, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    # window 2, target -5: seed 0 means over real windows: u3 (-9,-7)=-8, u4 (-7,-3)=-5 -> reached at update 4.
    np.testing.assert_array_equal(common.first_reaching(episode_return, completed, -5.0, window=2), [4, 2, 0])
    # The library's placeholder is NaN: the same answer.
    episode_return[0, 0] = np.nan
    np.testing.assert_array_equal(common.first_reaching(episode_return, completed, -5.0, window=2), [4, 2, 0])


def test_iqm_is_the_mean_of_the_middle_half(common):
    assert common.iqm(np.array([100.0, 1.0, 2.0, 3.0, 4.0, -50.0, 5.0, 6.0])) == pytest.approx(3.5)  # 2,3,4,5
    assert common.iqm(np.arange(16.0)) == pytest.approx(np.mean(np.arange(4.0, 12.0)))


def test_seconds_at_update_interpolates_inside_its_chunk():
    convergence = load("convergence")
    ends, seconds = np.array([4, 8, 10]), np.array([2.0, 4.0, 1.0])
    assert convergence.seconds_at_update(4, ends, seconds) == pytest.approx(2.0)
    assert convergence.seconds_at_update(6, ends, seconds) == pytest.approx(4.0)  # half of chunk 2
    assert convergence.seconds_at_update(10, ends, seconds) == pytest.approx(7.0)


# ------------------------------------------------------------------------------------------- pieces, in process
def test_benchmark_settings_and_their_configs_by_hand():
    benchmark = load("benchmark")
    names = [s.name for s in benchmark.SETTINGS]
    assert len(set(names)) == len(names) and not any("pmap" in name for name in names)
    feed_forward = benchmark.SETTINGS_BY_NAME["cartpole-4x128"]
    gru = benchmark.SETTINGS_BY_NAME["cartpole-4x128-gru"]
    # The recurrent row differs from the feed-forward one in its memory only, and is listed right after it.
    assert gru == dataclasses.replace(feed_forward, name="cartpole-4x128-gru", memory="gru", memory_size=128)
    assert names.index("cartpole-4x128-gru") == names.index("cartpole-4x128") + 1

    config = benchmark.build_config(gru, 200_000)
    assert (config.env, config.memory, config.memory_size, config.num_minibatches) == ("CartPole-v1", "gru", 128, 4)
    assert config.num_updates == 390  # 200,000 // (4 * 128) = 390.6
    assert benchmark.build_config(feed_forward, 200_000).memory == "none"
    # 32 seeds share the budget: 200,000 // 32 = 6,250 steps each = 12 updates of 512.
    assert benchmark.build_config(benchmark.SETTINGS_BY_NAME["cartpole-32seeds"], 200_000).num_updates == 12
    # MinAtar runs a quarter: 4,096 / 4 = 1,024 < one update of 128 * 128, so exactly one update.
    breakout = benchmark.build_config(benchmark.SETTINGS_BY_NAME["breakout-128x128"], 4096)
    assert (breakout.total_timesteps, breakout.num_updates) == (16_384, 1)


@pytest.mark.parametrize("argv", [["--total-timesteps", "0"], ["--repeats", "0"], ["--settings", "cartpole-pmap"]])
def test_benchmark_refuses_bad_flags(argv):
    with pytest.raises(SystemExit) as error:
        load("benchmark").parse_args(argv)
    assert error.value.code == 2


@pytest.mark.parametrize("memory", ["none", "gru"])
def test_rollout_limit_steps_every_environment_for_every_update(common, memory):
    # 3 updates of 2 envs x 8 steps; CartPole pays reward 1 per step, so returns equal lengths.
    config = PPOConfig(env="CartPole-v1", num_envs=2, num_steps=8, total_timesteps=48, num_minibatches=2,
                       memory=memory, memory_size=8)
    carry, sums = jax.jit(common.make_rollout_limit(config))(jax.random.key(0))
    assert sums.shape == (3,) and np.isfinite(np.asarray(sums)).all()
    assert carry.obs.shape == (2, 4)
    lengths = np.asarray(carry.episodes.lengths)
    assert ((lengths >= 0) & (lengths <= 24)).all()  # the running episodes: at most 3 x 8 steps so far
    np.testing.assert_allclose(np.asarray(carry.episodes.returns), lengths)
    if memory == "gru":
        assert {leaf.shape for leaf in jax.tree.leaves(carry.memory)} == {(2, 8)}
    with pytest.raises(ValueError, match="one device"):
        common.make_rollout_limit(dataclasses.replace(config, num_devices=2, num_minibatches=1))


def test_memory_speed_programs_in_ppo_rnn_shape():
    """memory_speed's gru-ppo-rnn program has the layers of PureJaxRL's ppo_rnn.py (Dense 128 + ReLU, one GRU of 128
    for both heads, Dense 128 + ReLU in each head, then the logits / the value), and gru-shared-heads is the GRU
    program with only the shared core and a head layer of the core's width added."""
    from jaxppo.agent import make_agent
    from jaxppo.networks import init_params

    memory_speed = load("memory_speed")
    programs = {name: config for name, config, _ in memory_speed.speed_programs("cartpole-4x128", 4 * 128, None)}
    assert programs["gru-shared-heads"] == dataclasses.replace(programs["gru"], memory_shared=True,
                                                                head_hidden_sizes=(128,))
    config = programs["gru-ppo-rnn"]
    assert (config.activation, config.memory, config.memory_size, config.num_envs, config.num_steps) == (
        "relu", "gru", 128, 4, 128)
    agent = make_agent(config)
    shapes = jax.eval_shape(lambda key: init_params(agent.network, agent.spec, key), jax.random.key(0))["params"]
    kernels = {name: [leaf.shape for path, leaf in jax.tree_util.tree_leaves_with_path(shapes[name])
                      if path[-1].key == "kernel"] for name in shapes if name != "core"}
    assert kernels == {"torso": [(4, 128)], "actor_head_layers": [(128, 128)], "critic_head_layers": [(128, 128)],
                       "actor_head": [(128, 2)], "critic_head": [(128, 1)]}
    assert set(shapes) == set(kernels) | {"core"}


def test_scaling_budgets_and_flags_by_hand():
    scaling = load("scaling")
    assert scaling.updates_for(256 * 32, 1.0) == 25  # max(20, ceil(200,000 / 8,192))
    assert scaling.updates_for(4096 * 32, 1.0) == 20  # 200,000 / 131,072 < 2: the 20-update floor
    assert scaling.updates_for(256 * 32, 0.001) == 1  # never below one update
    config = scaling.make_config(256, 3, num_devices=4)
    assert (config.envs_per_device(), config.num_env_steps) == (64, 3 * 256 * 32)
    for argv in (["--devices", "3"], ["--budget-scale", "0"], ["--envs", "0"]):  # 3 does not divide 256 envs
        with pytest.raises(SystemExit):
            scaling.parse_args(argv)


def test_scaling_device_point_maps_over_two_devices():
    # conftest gives this process fake CPU devices; one update of 8 envs over 2 of them.
    if jax.local_device_count() < 2:
        pytest.skip("needs two local devices (conftest fakes CPU devices)")
    scaling = load("scaling")
    row = scaling.measure_device_point("strong", 2, 8, 1, baseline_steps_per_s=1000.0, key=jax.random.key(0))
    assert (row.parallel, row.num_devices, row.num_envs, row.envs_per_device) == ("shard_map", 2, 8, 4)
    assert row.env_steps == 8 * scaling.NUM_STEPS and row.replicas_in_sync is True
    assert row.steps_per_s == pytest.approx(row.env_steps / row.run_s)
    assert row.efficiency == pytest.approx(row.steps_per_s / 2 / 1000.0)


# --------------------------------------------------------------------------------------- scripts, end to end
def _script_env() -> dict[str, str]:
    return helpers.subprocess_env(MPLBACKEND="Agg")  # one device, as from a shell, with the session's compile flags


def _run_scripts(*commands: tuple[str, ...], timeout: int = 300) -> list[str]:
    """Run experiments/<name>.py ARGS... side by side (each compiles mostly on one core); their stdouts."""
    processes = [subprocess.Popen([sys.executable, str(ROOT / "experiments" / name), *args], cwd=ROOT,
                                  env=_script_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for name, *args in commands]
    try:
        results = [process.communicate(timeout=timeout) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    for (name, *_), process, (stdout, stderr) in zip(commands, processes, results):
        assert process.returncode == 0, f"{name}: exit {process.returncode}\n{stdout[-3000:]}{stderr[-3000:]}"
    return [stdout for stdout, _ in results]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000, path


def _positive(text: str) -> bool:
    value = float(text)
    return math.isfinite(value) and value > 0


@pytest.mark.slow
def test_convergence_and_stability_scripts_on_a_tiny_budget(tmp_path):
    convergence_dir, stability_dir = tmp_path / "convergence", tmp_path / "stability"
    _run_scripts(("convergence.py", "--envs", "CartPole-v1", "--num-seeds", "2", "--total-timesteps", "10240",
                  "--chunks", "3", "--out-dir", str(convergence_dir)),
                 ("stability.py", "--envs", "CartPole-v1", "--num-seeds", "3", "--total-timesteps", "10240",
                  "--out-dir", str(stability_dir)))

    seeds = _rows(convergence_dir / "convergence.csv")
    assert [(r["env"], r["seed"]) for r in seeds] == [("CartPole-v1", "0"), ("CartPole-v1", "1")]
    assert all(r["reached"] == "False" and float(r["env_steps"]) == 10240 for r in seeds)  # 475 needs more steps
    assert all(_positive(r["train_seconds"]) and _positive(r["compile_seconds"]) for r in seeds)
    assert all(8 <= float(r["final_return"]) < 475 for r in seeds)  # episodes ended: a real return, not NaN
    summary = _rows(convergence_dir / "convergence_summary.csv")
    assert summary[0]["reached_fraction"] == "0.0" and summary[0]["seeds"] == "2"
    assert summary[0]["env_steps_budget"] == "10240"
    markdown = (convergence_dir / "convergence.md").read_text()
    assert markdown.startswith("Budget: small. host:") and "| CartPole-v1 |" in markdown
    _assert_png(convergence_dir / "convergence.png")

    (env_row,) = _rows(stability_dir / "stability.csv")
    seed_rows = _rows(stability_dir / "stability_seeds.csv")
    assert [r["seed"] for r in seed_rows] == ["0", "1", "2"]
    finals = np.array([float(r["final_return"]) for r in seed_rows])
    assert np.isfinite(finals).all() and len(set(finals)) == 3  # different seeds, different runs
    assert float(env_row["mean"]) == pytest.approx(finals.mean())
    assert float(env_row["worst"]) == pytest.approx(finals.min())
    assert float(env_row["best"]) == pytest.approx(finals.max())
    assert float(env_row["std"]) == pytest.approx(finals.std())
    assert env_row["seeds"] == "3" and env_row["env_steps_per_seed"] == "10240"
    curves = _rows(stability_dir / "stability_curves.csv")
    assert len(curves) == 10240 // 512 and curves[-1]["env_steps"] == "10240"
    assert [int(c["update"]) for c in curves] == list(range(1, 21))
    assert float(curves[-1]["min"]) <= float(curves[-1]["median"]) <= float(curves[-1]["max"])
    assert "| CartPole-v1 |" in (stability_dir / "stability.md").read_text()
    _assert_png(stability_dir / "stability.png")


@pytest.mark.slow
def test_speed_scripts_on_a_tiny_budget(tmp_path):
    settings = ["cartpole-4x128", "cartpole-4x128-gru"]  # feed-forward and recurrent PPO on the same layout
    benchmark_stdout, _ = _run_scripts(
        ("benchmark.py", "--settings", *settings, "--total-timesteps", "4096", "--repeats", "1",
         "--out", str(tmp_path / "benchmark.csv")),
        ("scaling_runs.py", "--seeds", "2", "--envs", "4", "--target-seeds", "1", "--repeats", "1",
         "--total-timesteps", "4096", "--chunks", "2", "--out-dir", str(tmp_path)))

    rows = _rows(tmp_path / "benchmark.csv")
    assert [r["setting"] for r in rows] == settings
    for row in rows:
        assert (row["env"], row["num_envs"], row["num_steps"], row["seeds"]) == ("CartPole-v1", "4", "128", "1")
        assert row["env_steps"] == "4096"  # 8 updates of 4 x 128
        assert all(_positive(row[k]) for k in ("compile_s", "train_steps_per_s", "rollout_steps_per_s"))
        ratio = float(row["ratio"])
        assert ratio == pytest.approx(float(row["train_steps_per_s"]) / float(row["rollout_steps_per_s"]))
        assert 0 < ratio <= 1.5  # learning cannot make the same rollouts much faster
    table = [line for line in benchmark_stdout.splitlines() if line.startswith("| ")]
    assert table[0].split("|")[1].strip() == "setting"
    assert [line.split("|")[1].strip() for line in table[1:]] == settings
    assert "scheduler" not in benchmark_stdout
    _assert_png(tmp_path / "benchmark.png")

    seeds = _rows(tmp_path / "scaling_seeds.csv")
    assert [r["seeds"] for r in seeds] == ["1", "2"] and float(seeds[0]["speedup"]) == 1.0
    assert all(r["env_steps_per_seed"] == "4096" and _positive(r["steps_per_second"]) for r in seeds)
    assert float(seeds[1]["speedup"]) == pytest.approx(float(seeds[1]["steps_per_second"])
                                                      / float(seeds[0]["steps_per_second"]))
    assert float(seeds[1]["efficiency"]) == pytest.approx(float(seeds[1]["speedup"]) / 2)
    (envs,) = _rows(tmp_path / "scaling_time_to_target.csv")
    assert (envs["num_envs"], envs["batch_size"], envs["seeds"]) == ("4", "512", "1")
    assert envs["reached_fraction"] == "0.0" and _positive(envs["steps_per_second"])  # 4,096 steps: no 475 yet
    markdown = (tmp_path / "scaling_runs.md").read_text()
    assert "| seeds |" in markdown and "| num_envs |" in markdown
    _assert_png(tmp_path / "scaling_runs.png")


def test_run_all_rejects_an_unknown_budget():
    result = subprocess.run(["bash", str(ROOT / "experiments" / "run_all.sh"), "medium"], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2 and "small|full" in result.stderr


def test_run_all_calls_every_script_with_flags_it_accepts(tmp_path):
    # PYTHON=echo: run_all.sh prints each script's command line instead of running it; every parser accepts them.
    scripts = set()
    for budget in ("small", "full"):
        result = subprocess.run(["bash", str(ROOT / "experiments" / "run_all.sh"), budget, str(tmp_path)],
                                env={**os.environ, "PYTHON": "echo"}, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        for line in result.stdout.splitlines():
            script, *argv = line.split()
            name = Path(script).stem
            scripts.add(name)
            if name != "pendulum_ceiling":  # parses inside main(), which runs it
                load(name).parse_args(argv)  # a flag it does not know exits with code 2
    assert scripts == {"benchmark", "convergence", "stability", "scaling", "scaling_runs", "returns_table",
                       "pendulum_ceiling"}


def test_checkpoint_timing_of_the_pod_scaling_script():
    rows = load("pod_scaling").checkpoint_times([8, 32], repeats=1)
    assert [r["num_envs"] for r in rows] == [8, 32]
    # The state grows with the environments (400 observation values each, plus env state): 4x the envs, more MB.
    assert rows[1]["state_mb"] > rows[0]["state_mb"] > 0
    assert all(r["save_seconds"] > 0 and r["restore_seconds"] > 0 for r in rows)
