"""Scaling of whole runs: throughput vs seeds in one program, and time-to-target vs number of environments.

Complements experiments/scaling.py (steps/s vs num_envs and vs devices).

- Seeds: the CartPole-v1 preset trained for S = 1, 2, 4, ... seeds in ONE `jax.jit(jax.vmap(train))` program, the
  same env-step budget per seed. Reported: total env steps/s, speedup over S = 1 measured in the same run, and
  efficiency = speedup / S (1.0 would mean S seeds cost no more time than one).
- Environments: the CartPole-v1 preset with num_envs = 4, 8, ..., minibatches of a fixed size (num_minibatches =
  num_envs, i.e. 128 samples each), seeds trained one after another with one compiled program per setting
  (`convergence.measure_env`). Reported: median env steps and seconds (training, and with compile) to return 475.

Run from the repository root:

    .venv/bin/python experiments/scaling_runs.py --budget small
    .venv/bin/python experiments/scaling_runs.py --budget full --seeds 1 2 4 8 16 32 64 128 --envs 4 16 64 256 1024

Writes scaling_seeds.csv, scaling_time_to_target.csv, scaling_runs.md and scaling_runs.png to --out-dir.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NamedTuple, Sequence

import common
import convergence
import jax
import numpy as np

from jaxppo.config import PPOConfig
from jaxppo.presets import preset_config
from jaxppo.runner import ChunkedRun

ENV = "CartPole-v1"
BUDGET = {"small": (100_000, 500_000), "full": (1_000_000, 2_000_000)}
"""--budget -> (env steps per seed for the seeds part, env steps per run for the time-to-target part)."""


class SeedsRow(NamedTuple):
    seeds: int
    env_steps_per_seed: int
    seconds: float
    steps_per_second: float  # over all seeds
    speedup: float  # steps_per_second / steps_per_second at 1 seed
    efficiency: float  # speedup / seeds
    compile_seconds: float


class EnvsRow(NamedTuple):
    num_envs: int
    batch_size: int
    seeds: int
    reached_fraction: float
    median_env_steps_to_target: float
    median_seconds_to_target: float
    median_seconds_with_compile: float
    steps_per_second: float  # training, median over seeds


def time_seeds(config: PPOConfig, num_seeds: int, repeats: int) -> tuple[float, float]:
    """(best seconds of `repeats` runs, compile seconds) of num_seeds seeds in one vmapped program."""
    runner = ChunkedRun(config, num_seeds, chunk_updates=config.num_updates)
    best = float("inf")
    for repeat in range(repeats):
        state = runner.init(jax.vmap(jax.random.key)(np.arange(repeat, repeat + num_seeds)))
        best = min(best, runner.run_chunk(state, config.num_updates)[2])
    return best, runner.compile_seconds


def measure_seeds(seed_counts: Sequence[int], steps_per_seed: int, repeats: int) -> list[SeedsRow]:
    """One row per seed count; the 1-seed program (always measured first) is the reference."""
    config = preset_config(ENV.lower(), total_timesteps=steps_per_seed)
    rows: list[SeedsRow] = []
    for count in sorted({1, *seed_counts}):
        seconds, compile_s = time_seeds(config, count, repeats)
        rate = count * config.num_env_steps / seconds
        speedup = rate / rows[0].steps_per_second if rows else 1.0
        rows.append(SeedsRow(count, config.num_env_steps, seconds, rate, speedup, speedup / count, compile_s))
        print(f"  {count} seeds: {rate:,.0f} steps/s, speedup {speedup:.2f}", flush=True)
    return rows


def measure_envs(env_counts: Sequence[int], total_timesteps: int, num_seeds: int, chunks: int) -> list[EnvsRow]:
    """One row per num_envs: time to the target over num_seeds seeds run one after another."""
    rows = []
    for count in env_counts:
        config = preset_config(ENV.lower(), num_envs=count, num_minibatches=count, total_timesteps=total_timesteps)
        seeds = convergence.measure_env(config, range(num_seeds), chunks)
        summary = convergence.summarize(seeds)
        rows.append(EnvsRow(count, config.batch_size, num_seeds, summary.reached_fraction, summary.median_env_steps,
                            summary.median_seconds, summary.median_seconds_with_compile,
                            float(np.median([s.env_steps / s.train_seconds for s in seeds]))))
    return rows


def plot(path: Path, seeds_rows: Sequence[SeedsRow], envs_rows: Sequence[EnvsRow], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    counts = [r.seeds for r in seeds_rows]
    axes[0].plot(counts, [r.speedup for r in seeds_rows], "o-", label="measured speedup")
    axes[0].plot(counts, counts, "k--", lw=1, label="ideal (S x)")
    axes[0].set_xscale("log", base=2)
    axes[0].set_yscale("log", base=2)
    axes[0].set_xlabel("seeds in one vmapped program")
    axes[0].set_ylabel("throughput / throughput at 1 seed")
    for r in seeds_rows:
        axes[0].annotate(f"{r.efficiency:.2f}", (r.seeds, r.speedup), textcoords="offset points", xytext=(4, -10),
                         fontsize=7)
    axes[0].set_title("seeds (labels: efficiency = speedup / seeds)", fontsize=9)
    axes[0].legend(fontsize=8)
    reached = [r for r in envs_rows if np.isfinite(r.median_seconds_to_target)]
    axes[1].plot([r.num_envs for r in reached], [r.median_seconds_to_target for r in reached], "o-",
                 label="training only")
    axes[1].plot([r.num_envs for r in reached], [r.median_seconds_with_compile for r in reached], "s--",
                 label="with compile")
    axes[1].set_xscale("log", base=2)
    axes[1].set_xlabel("num_envs")
    axes[1].set_ylabel(f"median seconds to return {common.TARGETS[ENV]:g}")
    missed = [r.num_envs for r in envs_rows if not np.isfinite(r.median_seconds_to_target)]
    axes[1].set_title(f"{ENV} time to target" + (f" (not reached: num_envs {missed})" if missed else ""), fontsize=9)
    axes[1].legend(fontsize=8)
    for axis in axes:
        axis.grid(True, which="both", alpha=0.3)
    common.save_figure(fig, path, title)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = common.experiment_parser(__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32], metavar="S")
    parser.add_argument("--envs", type=int, nargs="+", default=[4, 8, 16, 32, 64], metavar="N")
    parser.add_argument("--target-seeds", type=int, default=3, help="seeds per num_envs for the time to target")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per seed count; the best counts")
    parser.add_argument("--chunks", type=int, default=25, help="compiled chunks per time-to-target run")
    args = parser.parse_args(argv)
    if min(args.seeds + args.envs) < 1 or args.target_seeds < 1 or args.repeats < 1:
        parser.error("--seeds, --envs, --target-seeds and --repeats take positive integers")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    steps_per_seed, steps_per_run = BUDGET[args.budget]
    if args.total_timesteps:
        steps_per_seed = steps_per_run = args.total_timesteps
    header = common.machine_lines()
    print("\n".join(header), flush=True)
    seeds_rows = measure_seeds(args.seeds, steps_per_seed, args.repeats)
    envs_rows = measure_envs(sorted(args.envs), steps_per_run, args.target_seeds, args.chunks)
    tables = common.markdown_table(seeds_rows) + "\n\n" + common.markdown_table(envs_rows)
    print(tables)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    common.write_csv(args.out_dir / "scaling_seeds.csv", seeds_rows)
    common.write_csv(args.out_dir / "scaling_time_to_target.csv", envs_rows)
    (args.out_dir / "scaling_runs.md").write_text(f"Budget: {args.budget}. " + "; ".join(header) + "\n\n" + tables
                                                  + "\n")
    plot(args.out_dir / "scaling_runs.png", seeds_rows, envs_rows, f"{ENV}, budget {args.budget}, "
         f"{jax.default_backend()}")
    print(f"wrote scaling_seeds.csv, scaling_time_to_target.csv, scaling_runs.md, scaling_runs.png to {args.out_dir}")


if __name__ == "__main__":
    main()
