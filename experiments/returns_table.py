"""Final returns of every preset against the gymnax README's reference PPO returns: CSV, markdown table, bar chart.

For each preset (`jaxppo.presets`), or the --envs subset, this trains --num-seeds seeds of the preset as ONE
compiled program, `jax.jit(jax.vmap(make_train(config)))(keys)`, and reports per environment:

- final return: per seed the mean `episode_return` metric over the last 10 updates (`jaxppo.outputs.final_returns`),
  then mean and std over seeds;
- env_steps: env steps run per seed (the budget rounded down to whole updates);
- compile_s and train_s: wall time of `lower(...).compile()` and of the compiled run, apart;
- eval return: the final policy of every seed acting greedily (the distribution's mode) for EVAL_EPISODES complete
  episodes (`jaxppo.make_evaluate`, with the seed's observation statistics; each seed its own reset key), mean and
  std over seeds of the per-seed means, and the standard error of the mean over all seeds x episodes;
- the reference return of the gymnax README ("Ckpt (Return)" column: the return of a trained checkpoint) and a
  verdict on the better of the two returns: "meets" (>= reference); "within noise" when it is below but the greedy
  eval mean is within two standard errors of the reference (environments whose reward is mostly chance, e.g.
  UmbrellaChain's +-1 coin flips, where the optimum equals the reference and a finite sample cannot beat it
  reliably); "below"; or "no reference" for environments the README lists no PPO agent for.

Budgets: `--budget full` runs each preset's total_timesteps (sized for a GPU; the MinAtar references were trained
for about 10M steps). `--budget small` runs SMALL_BUDGETS below, picked so that the whole table (all presets,
4 seeds, compile included) takes about 15 minutes on a 2-core CPU; small-budget verdicts say how far a CPU-sized
run gets, not whether the preset reaches the reference.

Environments without a preset are listed in `jaxppo.presets.SKIPPED_ENVS` with the reason.

Run from the repository root:

    .venv/bin/python experiments/returns_table.py --budget small
    .venv/bin/python experiments/returns_table.py --budget full --num-seeds 8             # on a GPU
    .venv/bin/python experiments/returns_table.py --envs cartpole-v1 pendulum-v1 --out /tmp/returns
    .venv/bin/python experiments/returns_table.py --envs acrobot-v1 --set lr=1e-3 num_envs=32   # try a change

--set FIELD=VALUE overrides PPOConfig fields of every chosen preset (for tuning and quick checks; values are
Python literals, e.g. hidden_sizes=(128,128), or bare words for strings). The CSV and the chart are written after
every environment, so an interrupted run keeps what it finished. Each preset runs in its own Python process
(see `run_isolated`), so compile_s and train_s never include another preset's work.
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import common
import jax
import jax.numpy as jnp
import numpy as np

from jaxppo.config import PPOConfig
from jaxppo.evaluate import make_evaluate
from jaxppo.outputs import FINAL_WINDOW, final_returns
from jaxppo.presets import PRESETS, REFERENCE_RETURNS, SKIPPED_ENVS, gymnax_preset_names, preset_config
from jaxppo.train import make_train


SMALL_BUDGETS: dict[str, int] = {
    # classic control: 100-300k env steps/s on 2 CPU cores (4 seeds vmapped)
    "cartpole-v1": 500_000,
    "acrobot-v1": 1_000_000,
    "pendulum-v1": 300_000,
    "mountaincar-v0": 300_000,
    "mountaincarcontinuous-v0": 300_000,
    # MinAtar (2 x 256 MLP): about 40k env steps/s on 2 CPU cores, so 10 % of the 10M-step full budget
    "asterix-minatar": 1_000_000,
    "breakout-minatar": 1_000_000,
    "freeway-minatar": 1_000_000,
    "seaquest-minatar": 1_000_000,
    "spaceinvaders-minatar": 1_000_000,
    # bsuite and misc: small MLPs, short episodes
    "catch-bsuite": 100_000,
    "deepsea-bsuite": 100_000,
    "memorychain-bsuite": 100_000,
    "umbrellachain-bsuite": 100_000,
    "discountingchain-bsuite": 100_000,
    "simplebandit-bsuite": 50_000,
    "fourrooms-misc": 200_000,
    "metamaze-misc": 200_000,
    "pointrobot-misc": 200_000,
    "bernoullibandit-misc": 50_000,
    "gaussianbandit-misc": 50_000,
    "reacher-misc": 200_000,
    "swimmer-misc": 200_000,
    "pong-misc": 16_384,  # 30x40 images: the CNN is ~10x slower per env step than on MinAtar
}
"""Preset name -> env steps per seed of `--budget small` (capped at the preset's own total_timesteps)."""

EVAL_EPISODES = 64
"""Greedy evaluation episodes per seed of the final policy."""

NOISE_SEMS = 2.0
"""A greedy eval mean below the reference by at most this many standard errors gets the verdict "within noise"."""


class Row(NamedTuple):
    """One line of the results table (and of the CSV)."""

    preset: str
    env: str
    budget: str  # small | full
    num_seeds: int
    env_steps: int  # per seed
    return_mean: float  # over seeds of the per-seed final return
    return_std: float  # over seeds (population std, ddof=0)
    eval_mean: float  # greedy final policy, EVAL_EPISODES episodes per seed; mean over seeds
    eval_std: float  # over seeds of the per-seed eval means
    eval_sem: float  # standard error of eval_mean over all seeds x episodes (std ddof=1 / sqrt(count))
    reference: float  # NaN when the README lists none
    verdict: str  # meets | below | no reference
    compile_s: float
    train_s: float  # all seeds together


def budget_steps(name: str, budget: str) -> int:
    """Env steps per seed of a preset under a budget."""
    full = PRESETS[name]["total_timesteps"] if "total_timesteps" in PRESETS[name] else PPOConfig.total_timesteps
    if budget == "full":
        return full
    return min(SMALL_BUDGETS.get(name, 100_000), full)


def build_config(name: str, budget: str, overrides: dict[str, Any]) -> PPOConfig:
    """The preset's config at the budget; `overrides` win (total_timesteps included)."""
    values = {"total_timesteps": budget_steps(name, budget), **overrides}
    config = preset_config(name, **values)
    if config.total_timesteps < config.batch_size:  # tiny budgets: at least one update
        config = preset_config(name, **{**values, "total_timesteps": config.batch_size})
    return config


def verdict(best_mean: float, eval_mean: float, eval_sem: float, reference: float | None) -> str:
    """meets (best_mean >= reference) | within noise (eval_mean + NOISE_SEMS * eval_sem >= reference) | below |
    no reference. best_mean is the better of the final training return and the greedy eval mean."""
    if reference is None:
        return "no reference"
    if best_mean >= reference:
        return "meets"
    return "within noise" if eval_mean + NOISE_SEMS * eval_sem >= reference else "below"


def eval_statistics(returns: np.ndarray) -> tuple[float, float, float]:
    """Greedy eval returns [seeds, episodes] -> (mean, std over seeds of the per-seed means, standard error of the
    mean over all seeds x episodes; 0 for a single episode)."""
    per_seed = returns.mean(axis=1)
    sem = float(returns.std(ddof=1) / math.sqrt(returns.size)) if returns.size > 1 else 0.0
    return float(returns.mean()), float(per_seed.std()), sem


def measure(name: str, budget: str, num_seeds: int, seed: int, overrides: dict[str, Any]) -> Row:
    """Compile and run one preset over num_seeds seeds (one vmapped program); the table row."""
    config = build_config(name, budget, overrides)
    keys = jax.vmap(jax.random.key)(jnp.arange(seed, seed + num_seeds))
    start = time.perf_counter()
    compiled = jax.jit(jax.vmap(make_train(config))).lower(keys).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    state, metrics = jax.block_until_ready(compiled(keys))
    train_s = time.perf_counter() - start
    per_seed = final_returns(np.asarray(metrics.episode_return, np.float64))
    mean, std = float(per_seed.mean()), float(per_seed.std())
    evaluate_seeds = jax.jit(jax.vmap(make_evaluate(config, num_episodes=EVAL_EPISODES, deterministic=True)))
    eval_keys = jax.random.split(jax.random.key(seed + 10_000), num_seeds)
    greedy = np.asarray(evaluate_seeds(state.params, eval_keys, state.normalizers).returns, np.float64)
    eval_mean, eval_std, eval_sem = eval_statistics(greedy)
    reference = REFERENCE_RETURNS.get(config.env)
    return Row(preset=name, env=config.env, budget=budget, num_seeds=num_seeds, env_steps=config.num_env_steps,
               return_mean=mean, return_std=std, eval_mean=eval_mean, eval_std=eval_std, eval_sem=eval_sem,
               reference=math.nan if reference is None else reference,
               verdict=verdict(max(mean, eval_mean), eval_mean, eval_sem, reference), compile_s=compile_s,
               train_s=train_s)


def write_csv(path: Path, rows: list[Row]) -> None:
    """The rows as CSV with a header line (full precision; an empty reference cell when there is none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(Row._fields)
        for row in rows:
            writer.writerow(["" if isinstance(v, float) and math.isnan(v) else v for v in row])
    os.replace(tmp, path)


def markdown_table(rows: list[Row], header: str, command: str) -> str:
    """returns.md: how the table was made, the table, and the environments skipped."""
    lines = [
        "# jaxppo final returns vs. gymnax reference PPO",
        "",
        f"Made by `{command}` on: {header}",
        "",
        f"Final return = per seed, the mean training `episode_return` over the last {FINAL_WINDOW} updates "
        f"(stochastic policy); greedy eval = the final policy acting with the mode of its distribution for "
        f"{EVAL_EPISODES} episodes per seed; both mean ± std over seeds, and ± se: the standard error of the greedy "
        "mean over all seeds x episodes. Reference = the gymnax README's PPO checkpoint return; the verdict compares "
        f"the better of the two returns with it (\"within noise\": below, but the greedy mean is within "
        f"{NOISE_SEMS:g} se of it). env steps are per seed; train s covers all seeds together (one vmapped "
        "program); compile s is apart.",
        "",
        "| preset | env | budget | seeds | env steps | final return | greedy eval | se | reference | verdict "
        "| compile s | train s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        reference = "—" if math.isnan(r.reference) else f"{r.reference:g}"
        lines.append(f"| {r.preset} | {r.env} | {r.budget} | {r.num_seeds} | {r.env_steps:,} | "
                     f"{r.return_mean:.4g} ± {r.return_std:.2g} | {r.eval_mean:.4g} ± {r.eval_std:.2g} | "
                     f"{r.eval_sem:.2g} | {reference} | {r.verdict} | {r.compile_s:.1f} | "
                     f"{r.train_s:.1f} |")
    lines += ["", "Skipped (no preset):", ""]
    lines += [f"- {env}: {reason}" for env, reason in SKIPPED_ENVS.items()]
    return "\n".join(lines) + "\n"


def plot(path: Path, rows: list[Row], title: str) -> None:
    """One small panel per environment: our final return (bar, ± std over seeds) and the reference (dashed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(6, len(rows))
    nrows = math.ceil(len(rows) / cols)
    fig = Figure(figsize=(2.3 * cols, 2.3 * nrows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(nrows, cols, squeeze=False).ravel())
    colours = {"meets": "tab:green", "within noise": "tab:olive", "below": "tab:red", "no reference": "tab:gray"}
    for ax, r in zip(axes, rows):
        colour = colours.get(r.verdict, "tab:orange")  # orange: failed or timed out
        ax.bar([-0.2], [r.return_mean], yerr=[r.return_std], color=colour, width=0.35, capsize=3)
        ax.bar([0.2], [r.eval_mean], yerr=[r.eval_std], color=colour, alpha=0.5, hatch="//", width=0.35, capsize=3)
        if not math.isnan(r.reference):
            ax.axhline(r.reference, color="black", linestyle="--", linewidth=1.2, label="reference")
        ax.axhline(0.0, color="black", linewidth=0.5)
        ax.set_xticks([])
        ax.set_xlim(-0.8, 0.8)
        ax.set_title(f"{r.env}\n{r.env_steps / 1e6:.2g}M steps: {r.verdict}", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(rows):]:
        ax.set_visible(False)
    fig.suptitle(f"{title}: left bar = jaxppo final training return, hatched = greedy eval (± std over seeds), "
                 "dashed = gymnax README PPO", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def parse_override(text: str) -> tuple[str, Any]:
    """'FIELD=VALUE' -> (FIELD, VALUE as a Python literal, or the bare string)."""
    field, sep, value = text.partition("=")
    if not sep or not field:
        raise argparse.ArgumentTypeError(f"{text!r}: expected FIELD=VALUE, e.g. num_envs=8")
    if field not in PPOConfig.__dataclass_fields__:
        raise argparse.ArgumentTypeError(f"{field!r}: not a PPOConfig field")
    try:
        return field, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return field, value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; a bad value ends with a usage error (exit code 2)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", choices=("small", "full"), default="small",
                        help="small: SMALL_BUDGETS (CPU-sized); full: preset total_timesteps (default %(default)s)")
    parser.add_argument("--envs", nargs="+", choices=gymnax_preset_names(), default=list(gymnax_preset_names()),
                        metavar="PRESET",
                        help="presets to run (default: all)")
    parser.add_argument("--num-seeds", type=int, default=4, help="seeds per preset, vmapped (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="first PRNG seed")
    parser.add_argument("--out", type=Path, default=Path("experiments/results"),
                        help="folder for returns.csv, returns.md and returns.png (default %(default)s)")
    parser.add_argument("--set", nargs="+", type=parse_override, default=[], metavar="FIELD=VALUE",
                        help="PPOConfig overrides for every chosen preset (tuning, quick checks)")
    parser.add_argument("--env-timeout", type=float, default=1800.0,
                        help="seconds one preset may take (its own process) before it is retried once "
                             "(default %(default)s)")
    parser.add_argument("--no-plot", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=gymnax_preset_names(), help=argparse.SUPPRESS)  # internal: one preset, JSON out
    args = parser.parse_args(argv)
    if args.num_seeds < 1:
        parser.error(f"--num-seeds {args.num_seeds}: must be at least 1")
    return args


def failed_row(name: str, budget: str, num_seeds: int, why: str) -> Row:
    """A row for a preset whose run did not finish (NaN numbers, the reason as verdict)."""
    config = build_config(name, budget, {})
    reference = REFERENCE_RETURNS.get(config.env)
    return Row(preset=name, env=config.env, budget=budget, num_seeds=num_seeds, env_steps=config.num_env_steps,
               return_mean=math.nan, return_std=math.nan, eval_mean=math.nan, eval_std=math.nan, eval_sem=math.nan,
               reference=math.nan if reference is None else reference,
               verdict=why, compile_s=math.nan, train_s=math.nan)


def run_isolated(name: str, args: argparse.Namespace) -> Row:
    """measure() of one preset in a fresh Python process, retried once if it exceeds --env-timeout.

    A process per preset keeps the presets apart: each starts from a fresh backend (no compiled programs or device
    memory left by the previous one, so its compile_s and train_s are its own), and one that fails or runs past
    --env-timeout costs its own row only, not the table.
    """
    command = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--budget", args.budget,
               "--num-seeds", str(args.num_seeds), "--seed", str(args.seed)]
    if args.set:
        command += ["--set"] + [f"{field}={value!r}" for field, value in args.set]
    for attempt in (1, 2):
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=args.env_timeout)
        except subprocess.TimeoutExpired:
            print(f"{name}: no result after {args.env_timeout:.0f}s (attempt {attempt} of 2)", flush=True)
            continue
        lines = [line for line in result.stdout.splitlines() if line.startswith("ROW ")]
        if result.returncode == 0 and lines:
            return Row(**json.loads(lines[-1][4:]))
        print(f"{name}: failed (exit code {result.returncode}):\n{result.stderr[-2000:]}", flush=True)
        return failed_row(name, args.budget, args.num_seeds, "failed")
    return failed_row(name, args.budget, args.num_seeds, "timed out")


def main(argv: list[str] | None = None) -> None:
    """Train every chosen preset, print a line per environment, write CSV, markdown and chart."""
    args = parse_args(argv)
    overrides = dict(args.set)
    if args.child:  # one preset in this process; the row as JSON for the parent
        row = measure(args.child, args.budget, args.num_seeds, args.seed, overrides)
        print("ROW " + json.dumps(row._asdict()), flush=True)
        return
    header = "; ".join(common.machine_lines())
    command = "python experiments/returns_table.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(header, flush=True)
    rows: list[Row] = []
    start = time.perf_counter()
    for name in args.envs:
        row = run_isolated(name, args)
        rows.append(row)
        reference = "none" if math.isnan(row.reference) else f"{row.reference:g}"
        print(f"{name:26s} {row.env_steps:>11,} steps x{row.num_seeds}: {row.return_mean:9.4g} ± "
              f"{row.return_std:7.2g}, greedy {row.eval_mean:9.4g} (reference {reference}: {row.verdict}); "
              f"compile {row.compile_s:.1f}s, train {row.train_s:.1f}s", flush=True)
        write_csv(args.out / "returns.csv", rows)
        (args.out / "returns.md").write_text(markdown_table(rows, header, command))
        if not args.no_plot:
            plot(args.out / "returns.png", rows, f"budget {args.budget}, {args.num_seeds} seeds")
    print(f"\n{len(rows)} presets in {time.perf_counter() - start:.0f}s; wrote {args.out}/returns.csv, "
          f"returns.md{'' if args.no_plot else ', returns.png'}")


if __name__ == "__main__":
    main()
