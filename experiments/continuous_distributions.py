"""The continuous-action distribution options on the gymnax continuous presets (Pendulum-v1, MountainCarContinuous).

    python experiments/continuous_distributions.py --env Pendulum-v1 --num-seeds 8 --variants preset tanh ...
    python experiments/continuous_distributions.py --seed-key 7 --num-seeds 4 --set gamma=0.98 --results NAME

Each variant is the env's preset with some distribution fields changed (VARIANTS; --set FIELD=VALUE changes more
fields in every variant, and names the rows with them), trained for the preset's budget (or --total-timesteps) with
all seeds in one vmapped program (split from --seed-key: 0, the default, gives the table's seeds; 7 the tuning
seeds); the final policy of every seed is evaluated greedily (the distribution's mode; for tanh_gaussian, tanh of the
pre-squash mean) on 64 episodes. Rows are appended to experiments/results/<--results>.csv as each variant ends, and
its table is rewritten.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

import common
import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
EVAL_EPISODES = 64

VARIANTS: dict[str, dict] = {
    "preset": {},
    "tanh": dict(distribution="tanh_gaussian"),
    "tanh-statedep": dict(distribution="tanh_gaussian", scale_type="state_dependent", scale_fn="softplus",
                          min_scale=1e-3),
    "tanh-narrow": dict(distribution="tanh_gaussian", init_scale=0.5),
    "gauss-statedep": dict(scale_type="state_dependent", scale_fn="softplus", min_scale=1e-3),
    "gauss-softplus": dict(scale_fn="softplus", min_scale=1e-3),
}


def run_variant(env_id: str, variant: str, num_seeds: int, total_timesteps: int | None, seed_key: int = 0,
                changes: tuple[tuple[str, object], ...] = ()) -> dict:
    import jax

    from jaxppo import make_evaluate, make_train
    from jaxppo.presets import preset_config

    overrides = {**VARIANTS[variant], **dict(changes)}
    if total_timesteps:
        overrides["total_timesteps"] = total_timesteps
    config = preset_config(env_id.lower(), **overrides)
    train = jax.jit(jax.vmap(make_train(config)))
    keys = jax.random.split(jax.random.key(seed_key), num_seeds)
    start = time.perf_counter()
    state, metrics = jax.block_until_ready(train(keys))
    seconds = time.perf_counter() - start
    evaluate = jax.jit(jax.vmap(make_evaluate(config, num_episodes=EVAL_EPISODES, deterministic=True)))
    eval_keys = jax.random.split(jax.random.key(1), num_seeds)
    greedy = np.asarray(evaluate(state.params, eval_keys, state.normalizers).returns, np.float64).mean(axis=1)
    final = np.asarray(metrics.episode_return, np.float64)[:, -10:].mean(axis=1)
    se = lambda x: float(x.std(ddof=1) / math.sqrt(len(x)))  # noqa: E731
    label = " ".join([variant] + [f"{name}={value}" for name, value in changes])
    return dict(env=env_id, variant=label, seed_key=seed_key, seeds=num_seeds, env_steps=config.num_env_steps,
                greedy_mean=float(greedy.mean()), greedy_se=se(greedy), greedy_worst=float(greedy.min()),
                train_mean=float(final.mean()), train_se=se(final), seconds=round(seconds, 1))


def write_table(csv_path: Path) -> None:
    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    lines = ["| env | variant | seed key | seeds | env steps | greedy (± se) | worst seed | training return (± se) | s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['env']} | {r['variant']} | {r['seed_key']} | {r['seeds']} | {int(r['env_steps']):,} | "
                     f"{float(r['greedy_mean']):.1f} ± {float(r['greedy_se']):.1f} | {float(r['greedy_worst']):.1f} | "
                     f"{float(r['train_mean']):.1f} ± {float(r['train_se']):.1f} | {r['seconds']} |")
    csv_path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--num-seeds", type=int, default=8)
    parser.add_argument("--total-timesteps", type=int, default=None)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seed-key", type=int, default=0,
                        help="seeds: jax.random.split(key(K), --num-seeds); 0 the table's, 7 the tuning seeds")
    parser.add_argument("--set", type=common.config_field, action="append", default=[], metavar="FIELD=VALUE",
                        help="a PPOConfig field given to every variant (repeatable)")
    parser.add_argument("--results", default="continuous_distributions", help="result files' stem")
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    csv_path = RESULTS / f"{args.results}.csv"
    for variant in args.variants:
        row = run_variant(args.env, variant, args.num_seeds, args.total_timesteps, args.seed_key, tuple(args.set))
        new = not csv_path.exists()
        with csv_path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
        print(row, flush=True)
    write_table(csv_path)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
