"""Stability across seeds: final return and learning curves of many seeds trained in ONE vmapped program.

For each environment the preset config is trained for --num-seeds seeds (default 16) as
`jax.jit(jax.vmap(train))` over keys (through `jaxppo.runner.ChunkedRun`, one chunk). Per seed the final return is
the mean episode return over the last 10 updates (as in summary.json); over seeds the script reports the mean,
standard deviation, interquartile mean (IQM: mean of the middle half), worst and best seed, and the fraction of
seeds that reach the target return at some point (trailing 10-update mean, see `common.first_reaching`) and that
end at or above it.

Run from the repository root:

    .venv/bin/python experiments/stability.py --budget small     # CPU: classic control, minutes
    .venv/bin/python experiments/stability.py --budget full --envs CartPole-v1 Acrobot-v1 Pendulum-v1 \
        Breakout-MinAtar SpaceInvaders-MinAtar                   # preset budgets (GPU)

Writes stability.csv (one row per env), stability_seeds.csv (one row per env and seed), stability_curves.csv
(per env and update: mean, std, quartiles, min, max over seeds), stability.md and stability.png to --out-dir.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import NamedTuple, Sequence

import common
import jax
import numpy as np

from jaxppo import outputs
from jaxppo.config import PPOConfig
from jaxppo.runner import ChunkedRun

SMALL_ENVS = ("CartPole-v1", "Acrobot-v1", "Pendulum-v1")
ENVS = (*SMALL_ENVS, "Breakout-MinAtar", "SpaceInvaders-MinAtar")


class EnvRow(NamedTuple):
    env: str
    seeds: int
    env_steps_per_seed: int
    target: float
    mean: float
    std: float
    iqm: float
    worst: float
    best: float
    reached_fraction: float  # trailing mean reached the target at some update
    final_at_target_fraction: float  # final return >= target
    compile_seconds: float
    train_seconds: float  # all seeds together


class SeedRow(NamedTuple):
    env: str
    seed: int
    final_return: float
    update_at_target: int  # 0: never


class CurveRow(NamedTuple):
    env: str
    update: int
    env_steps: int  # per seed
    mean: float
    std: float
    p25: float
    median: float
    p75: float
    min: float
    max: float


class EnvResult(NamedTuple):
    summary: EnvRow
    seeds: list[SeedRow]
    curves: list[CurveRow]
    smoothed: np.ndarray  # [S, U] trailing-mean returns, for the plot


def train_seeds(config: PPOConfig, num_seeds: int, first_seed: int = 0):
    """(metrics [S, U] as numpy, compile seconds, train seconds): all seeds in one compiled vmapped program."""
    runner = ChunkedRun(config, num_seeds, chunk_updates=config.num_updates)
    state = runner.init(jax.vmap(jax.random.key)(np.arange(first_seed, first_seed + num_seeds)))
    _, metrics, seconds = runner.run_chunk(state, config.num_updates)
    return metrics, runner.compile_seconds, seconds


def measure_env(config: PPOConfig, num_seeds: int) -> EnvResult:
    """Train num_seeds seeds of one env and reduce them to the summary, per-seed rows and curves."""
    metrics, compile_s, train_s = train_seeds(config, num_seeds)
    episode_return = np.asarray(metrics.episode_return, np.float64)
    target = common.TARGETS[config.env]
    finals = outputs.final_returns(episode_return)
    reached = common.first_reaching(episode_return, np.asarray(metrics.episodes_completed), target)
    summary = EnvRow(env=config.env, seeds=num_seeds, env_steps_per_seed=config.num_env_steps, target=target,
                     mean=float(finals.mean()), std=float(finals.std()), iqm=common.iqm(finals),
                     worst=float(finals.min()), best=float(finals.max()),
                     reached_fraction=float(np.mean(reached > 0)),
                     final_at_target_fraction=float(np.mean(finals >= target)),
                     compile_seconds=compile_s, train_seconds=train_s)
    seeds = [SeedRow(config.env, seed, float(finals[seed]), int(reached[seed])) for seed in range(num_seeds)]
    smoothed = common.trailing_mean(
        common.returns_after_first_episode(episode_return, np.asarray(metrics.episodes_completed)))
    quartiles = np.nanpercentile(smoothed, [25, 50, 75], axis=0) if np.isfinite(smoothed).any() \
        else np.full((3, smoothed.shape[1]), np.nan)
    env_steps = np.asarray(metrics.env_steps)[0]
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns before any episode ended
        curves = [CurveRow(config.env, u + 1, int(env_steps[u]), float(np.nanmean(smoothed[:, u])),
                           float(np.nanstd(smoothed[:, u])), float(quartiles[0, u]), float(quartiles[1, u]),
                           float(quartiles[2, u]), float(np.nanmin(smoothed[:, u])), float(np.nanmax(smoothed[:, u])))
                  for u in range(smoothed.shape[1])]
    return EnvResult(summary, seeds, curves, smoothed)


def plot(path: Path, results: Sequence[EnvResult], title: str) -> None:
    """One panel per env: every seed (thin), the mean (bold), the interquartile band and the target line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.6), squeeze=False)
    for axis, result in zip(axes[0], results):
        steps = np.array([c.env_steps for c in result.curves])
        for curve in result.smoothed:
            axis.plot(steps, curve, color="tab:blue", alpha=0.25, lw=0.7)
        axis.fill_between(steps, [c.p25 for c in result.curves], [c.p75 for c in result.curves], color="tab:orange",
                          alpha=0.3, label="interquartile range")
        axis.plot(steps, [c.mean for c in result.curves], color="black", lw=1.8, label="mean")
        axis.axhline(result.summary.target, color="tab:red", ls="--", lw=1, label=f"target {result.summary.target:g}")
        s = result.summary
        axis.set_title(f"{s.env}: {s.seeds} seeds\nfinal {s.mean:.1f} ± {s.std:.1f}, IQM {s.iqm:.1f}, "
                       f"worst {s.worst:.1f}", fontsize=8)
        axis.set_xlabel("env steps per seed")
        axis.xaxis.set_major_formatter(EngFormatter())  # 300k, not 300000 (labels would overlap)
        axis.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("episode return (10-update trailing mean)")
    axes[0][0].legend(fontsize=7, loc="lower right")
    common.save_figure(fig, path, title)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = common.experiment_parser(__doc__)
    parser.add_argument("--envs", nargs="+", choices=ENVS, default=None, metavar="ENV",
                        help=f"default: {' '.join(SMALL_ENVS)} at small, all of {' '.join(ENVS)} at full")
    parser.add_argument("--num-seeds", type=int, default=16, help="seeds in one vmapped program")
    args = parser.parse_args(argv)
    if args.num_seeds < 2:
        parser.error("--num-seeds must be at least 2 (spread over seeds is the point)")
    if args.envs is None:
        args.envs = list(SMALL_ENVS if args.budget == "small" else ENVS)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    header = common.machine_lines()
    print("\n".join(header), flush=True)
    results = []
    for env_id in args.envs:
        config = common.config_for(env_id, args.budget, args.total_timesteps)
        results.append(measure_env(config, args.num_seeds))
        s = results[-1].summary
        print(f"  {env_id}: {s.seeds} seeds x {s.env_steps_per_seed:,} steps in {s.train_seconds:.1f}s (+ compile "
              f"{s.compile_seconds:.1f}s): final {s.mean:.1f} ± {s.std:.1f}, IQM {s.iqm:.1f}, worst {s.worst:.1f}, "
              f"{s.reached_fraction:.0%} reached {s.target:g}", flush=True)
    summaries = [r.summary for r in results]
    table = common.markdown_table(summaries)
    print(table)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    common.write_csv(args.out_dir / "stability.csv", summaries)
    common.write_csv(args.out_dir / "stability_seeds.csv", [row for r in results for row in r.seeds])
    common.write_csv(args.out_dir / "stability_curves.csv", [row for r in results for row in r.curves])
    (args.out_dir / "stability.md").write_text(f"Budget: {args.budget}. " + "; ".join(header) + "\n\n" + table + "\n")
    plot(args.out_dir / "stability.png", results, f"{args.num_seeds} seeds in one vmapped program per env, budget "
         f"{args.budget}, {jax.default_backend()}")
    print(f"wrote stability.csv, stability_seeds.csv, stability_curves.csv, stability.md, stability.png to "
          f"{args.out_dir}")


if __name__ == "__main__":
    main()
