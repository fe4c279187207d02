"""Throughput of whole PPO training runs, against the pure rollout limit of the same setting.

For each setting this measures, in one process and back to back:

- compile_s: wall time of `jax.jit(train).lower(key).compile()`;
- train_steps_per_s: env steps (over all seeds) per second of the compiled training run, timed with
  `jax.block_until_ready`, best of --repeats runs;
- rollout_steps_per_s: the same for the *pure rollout limit*: the same number of environments stepped by the same
  policy network with fixed (initial) parameters, for the same number of env steps, with no learning. It is built
  from the library's own pieces (`make_agent`, `init_state`, `rollout`) scanned over `config.num_updates`, and
  vmapped over seeds where the training is;
- ratio = train_steps_per_s / rollout_steps_per_s: the share of the rollout speed that survives learning.

Training and rollout runs are interleaved (train, rollout, train, rollout, ...) so both see the same machine load.
Absolute steps/s are noisy on shared machines; the ratio is the headline.

Feed-forward and recurrent PPO are compared on the same layout: cartpole-4x128 next to cartpole-4x128-gru
(`memory="gru"`, a 128-wide GRU after the torso; minibatches are then groups of whole environment sequences).

Run from the repository root:

    .venv/bin/python experiments/benchmark.py                                  # default settings and budget
    .venv/bin/python experiments/benchmark.py --settings brax-ant-256x32 jumanji-knapsack-64x64 craftax-classic-128x64
    .venv/bin/python experiments/benchmark.py --total-timesteps 20000 --repeats 1   # quick check
    .venv/bin/python experiments/benchmark.py --settings cartpole-4x128 breakout-128x128 --out /tmp/b.csv

--total-timesteps is the env-step budget of one CartPole row, summed over its seeds (the 32-seed row splits it
between seeds); the MinAtar rows run a quarter of it (their CNN is slow on a CPU). The environment-suite rows
(Brax, Jumanji, Craftax; docs/env_suites.md) run only when named with --settings. Runs are rounded down to whole
updates (at least one per seed); the env_steps column gives the steps actually run.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path
from typing import NamedTuple

import common
import jax
import jax.numpy as jnp

from jaxppo.config import PPOConfig
from jaxppo.train import make_train


@dataclasses.dataclass(frozen=True)
class Setting:
    """One benchmark row: an environment layout and the PPOConfig fields that differ from the defaults."""

    name: str
    env: str
    num_envs: int
    num_steps: int
    seeds: int = 1
    num_minibatches: int = 4
    num_epochs: int = 4
    budget_fraction: float = 1.0  # share of --total-timesteps this row runs (CNN training is slow on a CPU)
    memory: str = "none"  # PPOConfig.memory: "none" (feed-forward) or "gru"
    memory_size: int = 128
    by_default: bool = True  # run without --settings (the suite rows are off: optional extras, slow to compile)


SETTINGS = (
    Setting("cartpole-4x128", "CartPole-v1", num_envs=4, num_steps=128),
    Setting("cartpole-4x128-gru", "CartPole-v1", num_envs=4, num_steps=128, memory="gru", memory_size=128),
    Setting("cartpole-2048x16", "CartPole-v1", num_envs=2048, num_steps=16, num_minibatches=32),
    Setting("acrobot-16x128", "Acrobot-v1", num_envs=16, num_steps=128),
    Setting("pendulum-16x128", "Pendulum-v1", num_envs=16, num_steps=128, num_minibatches=32, num_epochs=10),
    Setting("breakout-128x128", "Breakout-MinAtar", num_envs=128, num_steps=128, num_minibatches=8,
            budget_fraction=0.25),
    Setting("spaceinvaders-128x128", "SpaceInvaders-MinAtar", num_envs=128, num_steps=128, num_minibatches=8,
            budget_fraction=0.25),
    Setting("cartpole-32seeds", "CartPole-v1", num_envs=4, num_steps=128, seeds=32),
    # One environment per suite (pip install -e ".[envs]"; docs/env_suites.md). Off by default: each needs its
    # extra and compiles for 20-60 s on a CPU. Brax on its default 'generalized' pipeline; Craftax resets a world
    # every step (as its own auto-reset does), so it runs a small share of the budget.
    Setting("brax-ant-256x32", "brax/ant", num_envs=256, num_steps=32, num_minibatches=8, budget_fraction=0.25,
            by_default=False),
    Setting("jumanji-knapsack-64x64", "jumanji/Knapsack-v1", num_envs=64, num_steps=64, num_minibatches=8,
            by_default=False),
    Setting("craftax-classic-128x64", "craftax/Craftax-Classic-Symbolic-v1", num_envs=128, num_steps=64,
            num_minibatches=8, budget_fraction=0.05, by_default=False),
)
SETTINGS_BY_NAME = {setting.name: setting for setting in SETTINGS}
DEFAULT_SETTINGS = [setting.name for setting in SETTINGS if setting.by_default]


class Row(NamedTuple):
    """One line of the results table (and of the CSV)."""

    setting: str
    env: str
    num_envs: int
    num_steps: int
    seeds: int
    env_steps: int  # total over seeds
    compile_s: float  # training program
    train_steps_per_s: float
    rollout_steps_per_s: float
    ratio: float  # train_steps_per_s / rollout_steps_per_s


def build_config(setting: Setting, total_timesteps: int) -> PPOConfig:
    """The PPOConfig of one seed: the row's budget split over its seeds, at least one update each."""
    batch_size = setting.num_envs * setting.num_steps
    per_seed = int(total_timesteps * setting.budget_fraction) // setting.seeds
    return PPOConfig(env=setting.env, num_envs=setting.num_envs, num_steps=setting.num_steps,
                     num_minibatches=setting.num_minibatches, num_epochs=setting.num_epochs,
                     memory=setting.memory, memory_size=setting.memory_size,
                     total_timesteps=max(per_seed, batch_size))


def measure_setting(setting: Setting, total_timesteps: int, repeats: int, seed: int = 0) -> Row:
    """Compile training and the rollout limit of one setting, then time them alternately; best of `repeats`."""
    config = build_config(setting, total_timesteps)
    train, rollout_only = make_train(config), common.make_rollout_limit(config)
    if setting.seeds == 1:
        keys = jax.random.key(seed)
    else:
        keys = jax.vmap(jax.random.key)(jnp.arange(seed, seed + setting.seeds))
        train, rollout_only = jax.vmap(train), jax.vmap(rollout_only)

    compiled_train = common.compile_timed(train, keys)
    compiled_rollout = common.compile_timed(rollout_only, keys)
    train_s, rollout_s = float("inf"), float("inf")
    for _ in range(repeats):
        train_s = min(train_s, common.time_compiled(compiled_train)[0])
        rollout_s = min(rollout_s, common.time_compiled(compiled_rollout)[0])

    env_steps = config.num_env_steps * setting.seeds
    train_rate, rollout_rate = env_steps / train_s, env_steps / rollout_s
    return Row(setting=setting.name, env=setting.env, num_envs=setting.num_envs, num_steps=setting.num_steps,
               seeds=setting.seeds, env_steps=env_steps, compile_s=compiled_train.compile_s,
               train_steps_per_s=train_rate, rollout_steps_per_s=rollout_rate, ratio=train_rate / rollout_rate)


def plot(path: Path, rows: list[Row], title: str) -> None:
    """Bars of training and rollout-limit steps/s per setting (log scale), labelled with the ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(max(6.0, 1.3 * len(rows)), 4.2))
    positions = range(len(rows))
    axis.bar([x - 0.2 for x in positions], [r.rollout_steps_per_s for r in rows], 0.4, label="pure rollout limit",
             color="tab:gray")
    axis.bar([x + 0.2 for x in positions], [r.train_steps_per_s for r in rows], 0.4, label="training",
             color="tab:blue")
    for x, row in zip(positions, rows):
        axis.annotate(f"{row.ratio:.2f}", (x + 0.2, row.train_steps_per_s), textcoords="offset points", xytext=(0, 3),
                      ha="center", fontsize=8)
    axis.set_xticks(list(positions), [r.setting for r in rows], rotation=25, ha="right", fontsize=8)
    axis.set_yscale("log")
    axis.set_ylabel("env steps / s (labels: training / rollout ratio)")
    axis.legend(fontsize=8)
    axis.grid(True, axis="y", which="both", alpha=0.3)
    axis.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; a bad value ends with a usage error (exit code 2)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("experiments/results/benchmark.csv"),
                        help="CSV output path (its folder is created)")
    parser.add_argument("--total-timesteps", type=int, default=200_000,
                        help="env steps of one CartPole row, over all its seeds; the MinAtar rows run a quarter "
                             "(default %(default)s)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="timed runs per program; the best counts (default %(default)s)")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS_BY_NAME), default=DEFAULT_SETTINGS,
                        metavar="NAME", help=f"subset to run, from: {', '.join(SETTINGS_BY_NAME)} (default: all "
                        "but the environment-suite rows)")
    parser.add_argument("--seed", type=int, default=0, help="first PRNG seed")
    args = parser.parse_args(argv)
    if args.total_timesteps < 1:
        parser.error(f"--total-timesteps {args.total_timesteps}: must be at least 1")
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    """Measure the chosen settings, print the table and write the CSV."""
    args = parse_args(argv)
    print("\n".join(common.machine_lines()))
    print("note: absolute steps/s are noisy on shared machines; the ratio (training vs. pure rollout, measured "
          "back to back) is the headline", flush=True)
    rows = []
    for name in args.settings:
        start = time.perf_counter()
        rows.append(measure_setting(SETTINGS_BY_NAME[name], args.total_timesteps, args.repeats, args.seed))
        print(f"measured {name} in {time.perf_counter() - start:.0f}s", flush=True)
    print()
    print(common.markdown_table(rows))
    common.write_csv(args.out, rows)
    plot(args.out.with_suffix(".png"), rows, f"training vs pure rollout, {jax.default_backend()}, "
         f"{os.cpu_count()} CPUs")
    print(f"\nwrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
