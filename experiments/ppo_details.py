"""Two PPO details measured on continuous control: normaliser warm-up and the entropy coefficient.

For Pendulum-v1 and MountainCarContinuous-v0 (their presets, at the given budget) this trains every combination of
  - normalizer_warmup_steps in --warmups (0: statistics start from the first rollout; N: N steps per environment
    of the initial policy seed them before the first update), and
  - ent_coef in --ent-coefs (CleanRL's continuous PPO uses 0; jaxppo's default is 0.01),
with --num-seeds seeds in one vmapped program per combination, and reports per combination the mean final return
(last 10 updates), its standard error over seeds, the worst seed, and the return after the first 10 % of training.

    .venv/bin/python experiments/ppo_details.py                          # CPU budget (minutes)
    .venv/bin/python experiments/ppo_details.py --total-timesteps 1000000 --num-seeds 8

Writes ppo_details.csv and ppo_details.md to --out-dir.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import time
from pathlib import Path

import jax
import numpy as np

from jaxppo.outputs import final_returns
from jaxppo.presets import preset_config
from jaxppo.train import make_train

ENVS = ("pendulum-v1", "mountaincarcontinuous-v0")


def measure(preset: str, warmup: int, ent_coef: float, total_timesteps: int, num_seeds: int) -> dict:
    """Train num_seeds seeds of one combination; summary numbers of their returns."""
    base = preset_config(preset, total_timesteps=total_timesteps)
    config = preset_config(preset, total_timesteps=total_timesteps, ent_coef=ent_coef,
                           normalizer_warmup_steps=warmup if (base.normalize_observations or
                                                              base.normalize_rewards) else 0)
    keys = jax.random.split(jax.random.key(0), num_seeds)
    start = time.perf_counter()
    _, metrics = jax.block_until_ready(jax.jit(jax.vmap(make_train(config)))(keys))
    seconds = time.perf_counter() - start
    returns = np.asarray(metrics.episode_return, np.float64)
    finals = final_returns(returns)
    early = max(1, returns.shape[1] // 10)
    return dict(env=config.env, warmup=config.normalizer_warmup_steps, ent_coef=ent_coef, seeds=num_seeds,
                env_steps=config.num_env_steps, mean=float(np.mean(finals)),
                se=float(np.std(finals, ddof=1) / np.sqrt(num_seeds)) if num_seeds > 1 else float("nan"),
                worst=float(np.min(finals)), early=float(np.nanmean(returns[:, early - 1])), seconds=seconds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=list(ENVS))
    parser.add_argument("--warmups", type=int, nargs="+", default=[0, 32])
    parser.add_argument("--ent-coefs", type=float, nargs="+", default=[0.0, 0.01])
    parser.add_argument("--total-timesteps", type=int, default=300_000)
    parser.add_argument("--num-seeds", type=int, default=6)
    parser.add_argument("--out-dir", type=Path, default=Path("experiments/results"))
    args = parser.parse_args(argv)
    if args.num_seeds < 2 or args.total_timesteps < 1 or any(w < 0 for w in args.warmups):
        parser.error("--num-seeds must be >= 2, --total-timesteps >= 1, --warmups >= 0")
    rows = []
    for env, warmup, ent_coef in itertools.product(args.envs, args.warmups, args.ent_coefs):
        row = measure(env, warmup, ent_coef, args.total_timesteps, args.num_seeds)
        rows.append(row)
        print(f"{row['env']:26s} warmup {row['warmup']:3d} ent_coef {ent_coef:<5g} final {row['mean']:9.2f} "
              f"+- {row['se']:.2f} (worst {row['worst']:.2f}), after 10 %: {row['early']:.2f}, "
              f"{row['seconds']:.0f}s", flush=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with open(args.out_dir / "ppo_details.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| env | warm-up steps | ent_coef | seeds | env steps | final return (± se) | worst seed | "
             "return after 10 % |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['env']} | {r['warmup']} | {r['ent_coef']:g} | {r['seeds']} | {r['env_steps']:,} | "
              f"{r['mean']:.1f} ± {r['se']:.1f} | {r['worst']:.1f} | {r['early']:.1f} |" for r in rows]
    (args.out_dir / "ppo_details.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
