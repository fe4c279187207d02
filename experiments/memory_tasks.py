"""Partially observed tasks with and without memory: MemoryChain-bsuite and CartPole with the velocities hidden.

For each task the preset (which uses a GRU) is trained as it is and with memory="none", --num-seeds seeds in one
vmapped program each, and compared with the reference: gymnax's PPO return for MemoryChain-bsuite (0.1), and 475
for CartPole-PO (CartPole-v1's solved threshold; fully observed CartPole reaches 500). Reports the final training
return (last 10 updates) and a greedy evaluation of the final policies (64 episodes per seed).

    .venv/bin/python experiments/memory_tasks.py                       # the presets' budgets (CPU: minutes)
    .venv/bin/python experiments/memory_tasks.py --total-timesteps 200000 --num-seeds 2   # a quick check

Writes memory_tasks.csv, memory_tasks.md and memory_tasks.png to --out-dir.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import time
from pathlib import Path

import jax
import numpy as np

from jaxppo.evaluate import make_evaluate
from jaxppo.outputs import final_returns
from jaxppo.presets import preset_config
from jaxppo.train import make_train

TASKS = {"memorychain-bsuite": 0.1, "jaxppo/cartpole-po-v1": 475.0}
"""Preset -> reference return."""


def run(preset: str, memory: str, num_seeds: int, total_timesteps: int | None) -> dict:
    config = preset_config(preset, **({"total_timesteps": total_timesteps} if total_timesteps else {}))
    config = dataclasses.replace(config, memory=memory)
    keys = jax.random.split(jax.random.key(0), num_seeds)
    start = time.perf_counter()
    state, metrics = jax.block_until_ready(jax.jit(jax.vmap(make_train(config)))(keys))
    seconds = time.perf_counter() - start
    evaluate = jax.jit(jax.vmap(make_evaluate(config, num_episodes=64)))
    greedy = np.asarray(evaluate(state.params, jax.random.split(jax.random.key(1), num_seeds),
                                 state.normalizers).returns)
    returns = np.asarray(metrics.episode_return, np.float64)
    finals = final_returns(returns)
    return dict(preset=preset, memory=memory, seeds=num_seeds, env_steps=config.num_env_steps,
                final=float(finals.mean()), final_std=float(finals.std()), worst=float(finals.min()),
                greedy=float(greedy.mean()), greedy_se=float(greedy.std() / np.sqrt(greedy.size)),
                reference=TASKS[preset], seconds=seconds, curves=returns, steps=np.asarray(metrics.env_steps)[0])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-seeds", type=int, default=4)
    parser.add_argument("--total-timesteps", type=int, default=None, help="replaces every preset's budget")
    parser.add_argument("--out-dir", type=Path, default=Path("experiments/results"))
    args = parser.parse_args(argv)
    if args.num_seeds < 1:
        parser.error("--num-seeds must be >= 1")
    rows = []
    for preset in TASKS:
        for memory in ("gru", "none"):
            row = run(preset, memory, args.num_seeds, args.total_timesteps)
            rows.append(row)
            print(f"{preset:24s} memory={memory:4s} final {row['final']:8.3f} ± {row['final_std']:.3f} (worst "
                  f"{row['worst']:.3f}), greedy {row['greedy']:8.3f} ± {row['greedy_se']:.3f}, reference "
                  f"{row['reference']}, {row['seconds']:.0f}s", flush=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    fields = [k for k in rows[0] if k not in ("curves", "steps")]
    with open(args.out_dir / "memory_tasks.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows([{k: r[k] for k in fields} for r in rows])
    lines = ["| preset | memory | seeds | env steps | final return (± std, worst) | greedy (± se) | reference | "
             "train s |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['preset']} | {r['memory']} | {r['seeds']} | {r['env_steps']:,} | {r['final']:.3g} ± "
              f"{r['final_std']:.2g} ({r['worst']:.3g}) | {r['greedy']:.3g} ± {r['greedy_se']:.2g} | "
              f"{r['reference']:g} | {r['seconds']:.0f} |" for r in rows]
    (args.out_dir / "memory_tasks.md").write_text("\n".join(lines) + "\n")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.5))
    FigureCanvasAgg(fig)
    for index, preset in enumerate(TASKS):
        pair = [r for r in rows if r["preset"] == preset]
        ax = fig.add_subplot(1, len(TASKS), index + 1)
        for r in pair:
            mean = np.nanmean(r["curves"], axis=0)
            std = np.nanstd(r["curves"], axis=0)
            (line,) = ax.plot(r["steps"], mean, label=f"memory={r['memory']} (n={r['seeds']})")
            ax.fill_between(r["steps"], mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.axhline(TASKS[preset], color="gray", linestyle="--", linewidth=1, label="reference")
        ax.set(title=preset, xlabel="env steps", ylabel="episode return")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out_dir / "memory_tasks.png", dpi=110)


if __name__ == "__main__":
    main()
