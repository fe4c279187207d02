"""Convergence speed: wall-clock time and env steps until a run reaches its target return, per seed.

For each environment the preset config (`jaxppo.presets`) is trained at the chosen budget, one seed after another
with the same compiled program (so each seed's time is a real single-run wall clock, and compilation happens once).
A run is split into about --chunks compiled chunks (`jaxppo.runner.ChunkedRun`, identical results to one call);
the wall clock is read at every chunk boundary, and the time at the update where the target is reached is
interpolated inside its chunk (updates have fixed shapes, so they take equal time).

A seed reaches the target at the first update whose trailing mean episode return over the last 10 updates is at
or above it (see `common.first_reaching`). Reported per seed and as median and interquartile range over seeds,
with compile time excluded and included (a user's fresh run pays it once).

Run from the repository root:

    .venv/bin/python experiments/convergence.py --budget small            # CPU-sized, minutes
    .venv/bin/python experiments/convergence.py --budget full --num-seeds 10 # preset budgets (GPU)

Writes convergence.csv (one row per env and seed), convergence_summary.csv, convergence.md and convergence.png
to --out-dir.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import NamedTuple, Sequence

import common
import jax
import numpy as np

from jaxppo import outputs
from jaxppo.config import PPOConfig
from jaxppo.runner import ChunkedRun

ENVS = ("CartPole-v1", "Acrobot-v1", "Pendulum-v1", "Breakout-MinAtar")
SMALL_SEEDS = {"Breakout-MinAtar": 2}
"""Seeds per env at --budget small where fewer than --num-seeds (the CNN is slow on a CPU)."""


class SeedRow(NamedTuple):
    env: str
    seed: int
    target: float
    reached: bool
    update_at_target: int  # 0 when never reached
    env_steps_to_target: float  # nan when never reached
    seconds_to_target: float  # training only; nan when never reached
    seconds_to_target_with_compile: float
    env_steps: int  # run length
    train_seconds: float
    compile_seconds: float
    final_return: float


class SummaryRow(NamedTuple):
    env: str
    target: float
    seeds: int
    reached_fraction: float
    median_env_steps: float  # over seeds that reached the target
    iqr_env_steps: str
    median_seconds: float
    iqr_seconds: str
    median_seconds_with_compile: float
    compile_seconds: float
    env_steps_budget: int


def seconds_at_update(update: int, chunk_ends: np.ndarray, chunk_seconds: np.ndarray) -> float:
    """Wall clock (training only) at the end of `update`, interpolated inside its chunk.

    chunk_ends: [C] last update (1-based) of each chunk; chunk_seconds: [C] seconds of each chunk.
    """
    index = int(np.searchsorted(chunk_ends, update))
    start = 0 if index == 0 else int(chunk_ends[index - 1])
    before = float(np.sum(chunk_seconds[:index]))
    return before + chunk_seconds[index] * (update - start) / (chunk_ends[index] - start)


def run_seed(runner: ChunkedRun, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One seed trained in chunks of runner.chunk_updates updates (the last one shorter if need be).

    Returns (episode_return [U], episodes_completed [U], chunk_ends [C], chunk_seconds [C]).
    """
    state = runner.init(jax.vmap(jax.random.key)(np.array([seed])))
    returns, completed, ends, seconds, done = [], [], [], [], 0
    while done < runner.config.num_updates:
        size = min(runner.chunk_updates, runner.config.num_updates - done)
        state, metrics, chunk_seconds = runner.run_chunk(state, size)
        done += size
        returns.append(np.asarray(metrics.episode_return)[0])
        completed.append(np.asarray(metrics.episodes_completed)[0])
        ends.append(done)
        seconds.append(chunk_seconds)
    return np.concatenate(returns), np.concatenate(completed), np.array(ends), np.array(seconds)


def measure_env(config: PPOConfig, seeds: Sequence[int], chunks: int) -> list[SeedRow]:
    """Train every seed in turn with one compiled program; one row per seed."""
    env_id = config.env
    target = common.TARGETS[env_id]
    runner = ChunkedRun(config, num_seeds=1, chunk_updates=max(1, -(-config.num_updates // chunks)))
    start = time.perf_counter()
    jax.block_until_ready(runner.init(jax.vmap(jax.random.key)(np.array([0]))))
    init_compile = time.perf_counter() - start
    rows = []
    for seed in seeds:
        episode_return, completed, ends, seconds = run_seed(runner, seed)
        compile_s = runner.compile_seconds + init_compile
        update = int(common.first_reaching(episode_return[None], completed[None], target)[0])
        to_target = seconds_at_update(update, ends, seconds) if update else float("nan")
        rows.append(SeedRow(
            env=env_id, seed=seed, target=target, reached=bool(update), update_at_target=update,
            env_steps_to_target=float(update * config.batch_size) if update else float("nan"),
            seconds_to_target=to_target, seconds_to_target_with_compile=to_target + compile_s,
            env_steps=config.num_env_steps, train_seconds=float(seconds.sum()), compile_seconds=compile_s,
            final_return=float(outputs.final_returns(episode_return[None])[0])))
        print(f"  {env_id} seed {seed}: {'reached' if update else 'did not reach'} {target} "
              f"{f'after {update * config.batch_size:,} steps, {to_target:.1f}s' if update else ''} "
              f"(final {rows[-1].final_return:.1f}, {rows[-1].train_seconds:.1f}s)", flush=True)
    return rows


def _median_iqr(values: np.ndarray) -> tuple[float, str]:
    if not values.size:
        return float("nan"), "-"
    p25, p50, p75 = np.percentile(values, [25, 50, 75])
    return float(p50), f"{common.format_cell(float(p25))}..{common.format_cell(float(p75))}"


def summarize(rows: Sequence[SeedRow]) -> SummaryRow:
    """Median and interquartile range over the seeds that reached the target."""
    reached = [r for r in rows if r.reached]
    steps, steps_iqr = _median_iqr(np.array([r.env_steps_to_target for r in reached]))
    seconds, seconds_iqr = _median_iqr(np.array([r.seconds_to_target for r in reached]))
    with_compile, _ = _median_iqr(np.array([r.seconds_to_target_with_compile for r in reached]))
    return SummaryRow(env=rows[0].env, target=rows[0].target, seeds=len(rows),
                      reached_fraction=len(reached) / len(rows), median_env_steps=steps, iqr_env_steps=steps_iqr,
                      median_seconds=seconds, iqr_seconds=seconds_iqr, median_seconds_with_compile=with_compile,
                      compile_seconds=rows[0].compile_seconds, env_steps_budget=rows[0].env_steps)


def plot(path: Path, rows: Sequence[SeedRow], summaries: Sequence[SummaryRow], title: str) -> None:
    """Per env: time to target of each seed (dots) with the median (bar), compile time shown stacked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = [s.env for s in summaries]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for index, summary in enumerate(summaries):
        seeds = [r for r in rows if r.env == summary.env and r.reached]
        for axis, field, median in ((axes[0], "env_steps_to_target", summary.median_env_steps),
                                    (axes[1], "seconds_to_target", summary.median_seconds)):
            values = [getattr(r, field) for r in seeds]
            axis.scatter([index] * len(values), values, color="tab:blue", s=18, zorder=3)
            if np.isfinite(median):
                axis.hlines(median, index - 0.3, index + 0.3, color="black", lw=2, zorder=4)
            label = f"{summary.reached_fraction:.0%} reached"
            axis.annotate(label, (index, 0), xycoords=("data", "axes fraction"), xytext=(0, 4),
                          textcoords="offset points", ha="center", fontsize=8)
        axes[1].bar(index, summary.compile_seconds, width=0.5, color="tab:gray", alpha=0.35,
                    label="compile" if index == 0 else None)
    for axis, ylabel in ((axes[0], "env steps to target"), (axes[1], "seconds to target (training)")):
        axis.set_xticks(range(len(envs)), [f"{e}\n(target {common.TARGETS[e]:g})" for e in envs], fontsize=8)
        axis.set_ylabel(ylabel)
        if any(r.reached for r in rows) or axis is axes[1]:  # log needs some positive data
            axis.set_yscale("log")
        axis.grid(True, axis="y", alpha=0.3)
    axes[1].legend(loc="upper left", fontsize=8)
    common.save_figure(fig, path, title)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = common.experiment_parser(__doc__)
    parser.add_argument("--envs", nargs="+", choices=ENVS, default=list(ENVS), metavar="ENV")
    parser.add_argument("--num-seeds", type=int, default=5, help="seeds per env (fewer for MinAtar at small)")
    parser.add_argument("--chunks", type=int, default=25, help="compiled chunks per run (clock read between)")
    args = parser.parse_args(argv)
    if args.num_seeds < 1 or args.chunks < 1:
        parser.error("--num-seeds and --chunks must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    header = common.machine_lines()
    print("\n".join(header), flush=True)
    rows: list[SeedRow] = []
    for env_id in args.envs:
        num_seeds = min(args.num_seeds, SMALL_SEEDS.get(env_id, args.num_seeds)) if args.budget == "small" \
            else args.num_seeds
        rows += measure_env(common.config_for(env_id, args.budget, args.total_timesteps), range(num_seeds), args.chunks)
    summaries = [summarize([r for r in rows if r.env == env_id]) for env_id in args.envs]
    table = common.markdown_table(summaries)
    print(table)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    common.write_csv(args.out_dir / "convergence.csv", rows)
    common.write_csv(args.out_dir / "convergence_summary.csv", summaries)
    (args.out_dir / "convergence.md").write_text(
        f"Budget: {args.budget}. " + "; ".join(header) + "\n\n" + table + "\n\nPer seed:\n\n"
        + common.markdown_table(rows) + "\n")
    plot(args.out_dir / "convergence.png", rows, summaries, f"time to target, budget {args.budget}, "
         f"{jax.default_backend()}, {os.cpu_count()} CPUs")
    print(f"wrote convergence.csv, convergence_summary.csv, convergence.md, convergence.png to {args.out_dir}")


if __name__ == "__main__":
    main()
