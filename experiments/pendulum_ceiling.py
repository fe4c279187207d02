"""How high can an expected Pendulum-v1 return go? Dynamic programming with the true model, as a yardstick.

Pendulum's state is two numbers (angle, angular velocity) and its dynamics are known and noise-free, so a
finite-horizon optimal policy can be computed by backward induction on a grid: V_0 = 0 and
V_k(s) = max_u [ r(s, u) + V_{k-1}(f(s, u)) ] for k = 1..200 (the episode length), with f and r exactly as in
gymnax's `Pendulum.step_env` (semi-implicit Euler, dt 0.05, speed clipped to +-8, torque to +-2),
V_{k-1} read off the grid by bilinear interpolation (periodic in the angle), and u from an even torque grid.

The grid policy is then *run in gymnax itself* (`env.step_env`, continuous states) from gymnax's own resets
(angle ~ U[-pi, pi], speed ~ U[-1, 1]), acting at each step with the u that maximises r + V_{k-1}(f(s, u)) for
the steps k left. Its mean return is achieved by a real policy, so it is a lower bound on the best expected
return; refining the grid moves it up only slightly once the grid is fine. Put next to the gymnax README's PPO
figure (-130) and the preset's greedy evaluation (experiments/results/returns*.md), it shows what is reachable in
expectation over random starts.

    .venv/bin/python experiments/pendulum_ceiling.py                      # about a minute on 2 CPU cores

Prints the mean return and its standard error for each grid size, and writes
experiments/results/pendulum_ceiling.csv (one row per grid).
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path
from typing import NamedTuple

import common
import gymnax
import jax
import jax.numpy as jnp
import numpy as np


class Grid(NamedTuple):
    """Cells of the value table: angles over [-pi, pi) (periodic), speeds over [-max_speed, max_speed], and
    torques over [-max_torque, max_torque]."""

    angles: int
    speeds: int
    torques: int


DEFAULT_GRIDS = (Grid(64, 65, 21), Grid(128, 129, 41), Grid(256, 257, 41), Grid(512, 513, 81))
"""Coarse to fine: the returns they reach show how far the discretisation still costs."""


def parse_grid(text: str) -> Grid:
    """'ANGLESxSPEEDSxTORQUES' (e.g. 256x257x41) -> Grid; argparse error for anything else."""
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"{text!r}: expected ANGLESxSPEEDSxTORQUES, e.g. 256x257x41")
    grid = Grid(*(int(part) for part in parts))
    if grid.angles < 2 or grid.speeds < 2 or grid.torques < 2:
        raise argparse.ArgumentTypeError(f"{text!r}: every count must be at least 2")
    return grid


def angle_normalize(theta: jax.Array) -> jax.Array:
    """Angle wrapped to [-pi, pi)."""
    return (theta + jnp.pi) % (2 * jnp.pi) - jnp.pi


def dynamics(theta, theta_dot, u, params):
    """gymnax Pendulum step for arrays: (reward, next theta, next theta_dot); broadcasting shapes."""
    u = jnp.clip(u, -params.max_torque, params.max_torque)
    reward = -(angle_normalize(theta) ** 2 + 0.1 * theta_dot**2 + 0.001 * u**2)
    accel = 3 * params.g / (2 * params.l) * jnp.sin(theta) + 3.0 / (params.m * params.l**2) * u
    next_theta_dot = jnp.clip(theta_dot + accel * params.dt, -params.max_speed, params.max_speed)
    return reward, theta + next_theta_dot * params.dt, next_theta_dot


def make_lookup(grid: Grid, params):
    """lookup(V [angles, speeds], theta, theta_dot) -> V interpolated bilinearly at the states (any equal shapes)."""
    angle_step = 2 * jnp.pi / grid.angles
    speed_step = 2 * params.max_speed / (grid.speeds - 1)

    def lookup(values, theta, theta_dot):
        a = (angle_normalize(theta) + jnp.pi) / angle_step
        s = jnp.clip((theta_dot + params.max_speed) / speed_step, 0.0, grid.speeds - 1.0)
        a0, s0 = jnp.floor(a), jnp.minimum(jnp.floor(s), grid.speeds - 2.0)
        wa, ws = a - a0, s - s0
        i0 = a0.astype(jnp.int32) % grid.angles
        i1 = (i0 + 1) % grid.angles
        j0 = s0.astype(jnp.int32)
        j1 = j0 + 1
        return ((1 - wa) * (1 - ws) * values[i0, j0] + wa * (1 - ws) * values[i1, j0]
                + (1 - wa) * ws * values[i0, j1] + wa * ws * values[i1, j1])

    return lookup


def solve(grid: Grid, params) -> tuple[jax.Array, jax.Array]:
    """Backward induction. Returns (values [steps + 1, angles, speeds] with values[k] = V_k, torques [torques])."""
    theta = -jnp.pi + 2 * jnp.pi * jnp.arange(grid.angles) / grid.angles
    theta_dot = jnp.linspace(-params.max_speed, params.max_speed, grid.speeds)
    torques = jnp.linspace(-params.max_torque, params.max_torque, grid.torques)
    reward, next_theta, next_theta_dot = dynamics(theta[:, None, None], theta_dot[None, :, None],
                                                  torques[None, None, :], params)
    lookup = make_lookup(grid, params)

    def backup(values, _):
        new_values = (reward + lookup(values, next_theta, next_theta_dot)).max(axis=-1)
        return new_values, new_values

    zero = jnp.zeros((grid.angles, grid.speeds))
    _, tables = jax.lax.scan(backup, zero, None, length=params.max_steps_in_episode)
    return jnp.concatenate([zero[None], tables]), torques


def make_episode(env, params, grid: Grid, values: jax.Array, torques: jax.Array):
    """episode(key) -> return of one full episode in gymnax, acting greedily on the DP values from a gymnax reset."""
    lookup = make_lookup(grid, params)
    steps = params.max_steps_in_episode

    def act(carry, steps_left):
        state, total = carry
        reward, next_theta, next_theta_dot = dynamics(state.theta, state.theta_dot, torques, params)
        u = torques[jnp.argmax(reward + lookup(values[steps_left - 1], next_theta, next_theta_dot))]
        _, state, real_reward, _, _ = env.step_env(jax.random.key(0), state, u, params)
        return (state, total + real_reward), None

    def episode(key):
        _, state = env.reset(key, params)
        (_, total), _ = jax.lax.scan(act, (state, jnp.float32(0.0)), jnp.arange(steps, 0, -1))
        return total

    return episode


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=1024, help="random starts per grid (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grids", nargs="+", type=parse_grid, default=list(DEFAULT_GRIDS),
                        metavar="AxSxT", help="grids to solve, ANGLESxSPEEDSxTORQUES (default: 64x65x21 .. 512x513x81)")
    parser.add_argument("--out", type=Path, default=Path("experiments/results"))
    args = parser.parse_args(argv)
    if args.episodes < 2:
        parser.error(f"--episodes {args.episodes}: must be at least 2 (for a standard error)")
    env, params = gymnax.make("Pendulum-v1")
    keys = jax.random.split(jax.random.key(args.seed), args.episodes)  # the same starts for every grid
    print("; ".join(common.machine_lines()))
    rows = []
    for grid in args.grids:
        start = time.perf_counter()
        values, torques = solve(grid, params)
        returns = np.asarray(jax.jit(jax.vmap(make_episode(env, params, grid, values, torques)))(keys), np.float64)
        seconds = time.perf_counter() - start
        sem = returns.std(ddof=1) / math.sqrt(returns.size)
        rows.append((*grid, args.episodes, returns.mean(), sem, np.median(returns), returns.min(), seconds))
        print(f"grid {grid.angles}x{grid.speeds} states, {grid.torques} torques: mean return {returns.mean():.1f} "
              f"(standard error {sem:.1f}) over {args.episodes} starts, median {np.median(returns):.1f}, "
              f"worst {returns.min():.1f}; {seconds:.0f}s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "pendulum_ceiling.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["angles", "speeds", "torques", "episodes", "mean_return", "standard_error", "median",
                         "worst", "seconds"])
        writer.writerows([*row[:4], *(f"{x:.6g}" for x in row[4:])] for row in rows)


if __name__ == "__main__":
    main()
