"""Population-based training against random search and the preset's default, at equal env steps; and PBT's cost.

    python experiments/pbt_study.py --env Breakout-MinAtar --steps 500000 --population 8 --runs 3 --out results/pbt
    python experiments/pbt_study.py --overhead --env Breakout-MinAtar --steps 200000

Quality: for each of --runs independent repetitions (their own seeds), three programs of N members each train T
env steps per member (N * T in all): PBT (initial hyperparameters drawn from the ranges, exploit/explore every K
updates), random search (the same kind of draw, never changed) and the preset's default setting (N seeds). For PBT
and random search the member with the best training return over the last 10 updates is evaluated greedily on 64
episodes; the default is reported as the mean of its seeds' greedy returns (and its best seed). Mean and standard
error over runs.

Overhead: the same N-member program with and without exploit/explore (steps never taken), compiled once each and
timed alternately (train time only), same process.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxppo.evaluate import make_evaluate
from jaxppo.pbt import ExploreRange, PBTConfig, make_population_chunk, sample_hparams
from jaxppo.presets import preset_config
from jaxppo.train import default_hparams, make_train_parts

RANGES = {
    "Breakout-MinAtar": (ExploreRange("lr", 1e-4, 3e-3, "log"), ExploreRange("ent_coef", 1e-3, 5e-2, "log"),
                         ExploreRange("clip_eps", 0.1, 0.3, "linear")),
    "Pendulum-v1": (ExploreRange("lr", 1e-4, 3e-3, "log"), ExploreRange("clip_eps", 0.1, 0.3, "linear"),
                    ExploreRange("gae_lambda", 0.8, 0.99, "linear")),
}
READY = {"Breakout-MinAtar": 10, "Pendulum-v1": 40}


def population_program(config, pbt: PBTConfig, exploit: bool):
    """(init(seed) -> states [N], run(states) -> (states, metrics [N, U], records)) for one whole run."""
    parts = make_train_parts(config)
    n, k = pbt.population, pbt.ready_updates
    updates = -(-config.num_updates // k) * k  # whole periods; the last one may be partial
    hp = default_hparams(config)

    def init(seed: int, sampled: bool):
        keys = jax.vmap(jax.random.key)(jnp.arange(seed, seed + n))
        states = jax.jit(jax.vmap(parts.init, in_axes=(0, None)))(keys, hp)
        if sampled:
            draw = PBTConfig(**{**pbt.__dict__, "seed": seed})
            states = states.replace(hparams=sample_hparams(states.hparams, draw, jax.random.key(seed + 10_000)))
        return states

    if exploit:
        chunk = make_population_chunk(parts.run, pbt, updates)
        run = jax.jit(lambda s: chunk(s, jnp.int32(config.num_updates)))
    else:
        run = jax.jit(lambda s: (*jax.vmap(lambda m: parts.run(m, config.num_updates))(s), None))
    return init, run


def greedy_returns(config, states, members, key) -> np.ndarray:
    """Mean greedy return over 64 episodes of each listed member."""
    evaluate = jax.jit(make_evaluate(config, num_episodes=64, deterministic=True))
    out = []
    for i in members:
        params, normalizers = jax.tree.map(lambda x: x[i], (states.params, states.normalizers))
        out.append(float(np.mean(evaluate(params, jax.random.fold_in(key, i), normalizers).returns)))
    return np.asarray(out)


def final_training_return(metrics) -> np.ndarray:
    returns = np.asarray(metrics.episode_return)[:, : metrics.episode_return.shape[1]]
    valid = np.asarray(metrics.update) > 0
    per_member = [np.nanmean(row[mask][-10:]) for row, mask in zip(returns, valid)]
    return np.asarray(per_member)


def quality(args) -> dict:
    config = preset_config(args.env.lower(), total_timesteps=args.steps)
    pbt = PBTConfig(population=args.population, ready_updates=READY[args.env], explore=RANGES[args.env])
    pbt.validate(tuple(default_hparams(config).as_dict()))
    programs = {"pbt": population_program(config, pbt, True), "random": population_program(config, pbt, False),
                "default": population_program(config, pbt, False)}
    rows = []
    for run_index in range(args.runs):
        seed = 1000 * (run_index + 1)
        row = {"run": run_index, "seed": seed}
        for name, (init, run) in programs.items():
            states = init(seed, sampled=name != "default")
            start = time.perf_counter()
            states, metrics, _ = jax.block_until_ready(run(states))
            row[f"{name}_seconds"] = time.perf_counter() - start
            training = final_training_return(metrics)
            key = jax.random.key(seed + 77)
            if name == "default":
                greedy = greedy_returns(config, states, range(args.population), key)
                row["default_mean"], row["default_best_seed"] = float(greedy.mean()), float(greedy.max())
            else:
                best = int(np.nanargmax(training))
                row[f"{name}_best"] = float(greedy_returns(config, states, [best], key)[0])
                row[f"{name}_best_hparams"] = {item.name: float(getattr(states.hparams, item.name)[best])
                                               for item in pbt.explore}
            print(json.dumps({k: v for k, v in row.items()}), flush=True)
        rows.append(row)
    summary = {}
    for name in ("pbt_best", "random_best", "default_mean", "default_best_seed"):
        values = np.asarray([r[name] for r in rows])
        summary[name] = (float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1
                         else float("nan"))
    return {"env": args.env, "steps_per_member": config.num_env_steps, "population": args.population,
            "ready_updates": pbt.ready_updates, "ranges": [item.__dict__ for item in pbt.explore], "runs": rows,
            "summary": summary}


def overhead(args) -> dict:
    config = preset_config(args.env.lower(), total_timesteps=args.steps)
    pbt = PBTConfig(population=args.population, ready_updates=READY[args.env], explore=RANGES[args.env])
    with_pbt, without = population_program(config, pbt, True), population_program(config, pbt, False)
    times = {"pbt": [], "sweep": []}
    for (name, (init, run)) in [("pbt", with_pbt), ("sweep", without)]:
        jax.block_until_ready(run(init(0, True)))  # compile
    for _ in range(args.repeats):
        for name, (init, run) in (("pbt", with_pbt), ("sweep", without)):
            states = init(0, True)
            start = time.perf_counter()
            jax.block_until_ready(run(states))
            times[name].append(time.perf_counter() - start)
    ratio = np.median(times["pbt"]) / np.median(times["sweep"])
    return {"env": args.env, "steps_per_member": config.num_env_steps, "population": args.population,
            "times": times, "pbt_over_sweep_median": float(ratio)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Breakout-MinAtar", choices=sorted(RANGES))
    parser.add_argument("--steps", type=int, default=500_000, help="env steps per member")
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--overhead", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    result = overhead(args) if args.overhead else quality(args)
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        name = f"{'overhead' if args.overhead else 'quality'}_{args.env}.json"
        (args.out / name).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
