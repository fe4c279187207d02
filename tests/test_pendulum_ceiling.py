"""experiments/pendulum_ceiling.py: its model is gymnax's Pendulum, its lookup is exact on the grid, and the
script runs end to end on a coarse grid."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import helpers
from tests.experiment_modules import load

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pendulum_ceiling():
    return load("pendulum_ceiling")


def test_dynamics_match_gymnax_step(pendulum_ceiling):
    env, params = gymnax.make("Pendulum-v1")
    rng = np.random.default_rng(0)
    for theta, theta_dot, u in rng.uniform([-7, -8, -3], [7, 8, 3], size=(20, 3)):
        _, state = env.reset(jax.random.key(0), params)
        state = state.replace(theta=jnp.float32(theta), theta_dot=jnp.float32(theta_dot))
        _, next_state, reward, _, _ = env.step_env(jax.random.key(0), state, jnp.float32(u), params)
        ours = pendulum_ceiling.dynamics(jnp.float32(theta), jnp.float32(theta_dot), jnp.float32(u), params)
        np.testing.assert_allclose([float(x) for x in ours],
                                   [float(reward), float(next_state.theta), float(next_state.theta_dot)], rtol=1e-5,
                                   atol=1e-5)


def test_lookup_is_exact_on_grid_points_and_linear_between(pendulum_ceiling):
    _, params = gymnax.make("Pendulum-v1")
    grid = pendulum_ceiling.Grid(8, 5, 3)
    values = jnp.arange(40.0).reshape(8, 5)  # V[i, j] = 5 i + j: linear in both indices
    lookup = pendulum_ceiling.make_lookup(grid, params)
    theta = -jnp.pi + 2 * jnp.pi * 3 / 8  # angle index 3
    assert float(lookup(values, theta, jnp.float32(-8.0))) == 15.0
    assert float(lookup(values, theta, jnp.float32(0.0))) == 17.0  # speed index 2 of [-8, -4, 0, 4, 8]
    assert abs(float(lookup(values, theta + jnp.pi / 8, jnp.float32(2.0))) - (5 * 3.5 + 2.5)) < 1e-4
    assert abs(float(lookup(values, theta + 2 * jnp.pi, jnp.float32(8.0))) - 19.0) < 1e-4  # periodic in the angle


def test_one_step_values_are_the_best_immediate_reward(pendulum_ceiling):
    _, params = gymnax.make("Pendulum-v1")
    grid = pendulum_ceiling.Grid(8, 5, 3)
    values, torques = pendulum_ceiling.solve(grid, params)
    assert values.shape == (params.max_steps_in_episode + 1, 8, 5)
    theta = -np.pi + 2 * np.pi * np.arange(8) / 8
    speed = np.linspace(-8, 8, 5)
    angle = (theta + np.pi) % (2 * np.pi) - np.pi
    # V_1 = max over u of -(angle^2 + 0.1 speed^2 + 0.001 u^2): u = 0 is in the torque grid [-2, 0, 2]
    expected = -(angle[:, None] ** 2 + 0.1 * speed[None, :] ** 2)
    np.testing.assert_allclose(np.asarray(values[1]), expected, rtol=1e-5, atol=1e-5)
    assert np.all(np.diff(np.asarray(values[:, 4, 2])) <= 1e-6)  # more steps left never adds reward (rewards <= 0)


def test_script_on_a_coarse_grid(tmp_path):
    env = helpers.subprocess_env()
    result = subprocess.run([sys.executable, str(ROOT / "experiments" / "pendulum_ceiling.py"), "--episodes", "8",
                             "--grids", "32x33x11", "--out", str(tmp_path)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "pendulum_ceiling.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and (rows[0]["angles"], rows[0]["speeds"], rows[0]["torques"]) == ("32", "33", "11")
    (row,) = rows
    assert row["episodes"] == "8"
    assert -1600 < float(row["mean_return"]) <= 0  # 200 steps of rewards in [-16.3, 0]
    assert float(row["worst"]) <= float(row["mean_return"]) and float(row["worst"]) <= float(row["median"]) <= 0
    assert float(row["standard_error"]) >= 0 and float(row["seconds"]) > 0
    assert "grid 32x33 states, 11 torques: mean return" in result.stdout
