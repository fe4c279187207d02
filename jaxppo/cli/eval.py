"""`jaxppo eval`: evaluate the final policy of every seed of a run; print the results and write RUN/eval.json."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import tyro

from jaxppo.cli.flags import UsageError, parse


@dataclasses.dataclass(frozen=True)
class EvalArgs:
    """Evaluate the final policy of every seed of a run; print the results and write RUN/eval.json."""

    run: tyro.conf.Positional[Path]
    """Run folder written by `jaxppo train` (config.json, final_params.msgpack)."""
    num_episodes: int = 10
    """Complete episodes per seed."""
    seed: int = 0
    """Evaluation key; every seed's policy plays the same env resets and action draws."""
    stochastic: bool = False
    """Sample actions instead of acting with the distribution's mode."""
    overwrite: bool = False
    """Replace an existing RUN/eval.json."""


def eval_run(args: EvalArgs) -> None:
    import jax
    import numpy as np

    from jaxppo import outputs, run_folder
    from jaxppo.evaluate import make_evaluate

    run = args.run
    if args.num_episodes < 1:
        raise UsageError(f"--num-episodes {args.num_episodes}: must be at least 1")
    if not 0 <= args.seed < 2**32:
        raise UsageError(f"--seed {args.seed}: must be in [0, 2^32)")
    if not run.is_dir():
        raise UsageError(f"eval: run folder {run} does not exist; pass a folder written by `jaxppo train --out DIR`")
    try:
        with run_folder.reopen_run_folder(run, "train"):
            if (run / outputs.EVAL_JSON).exists() and not args.overwrite:
                raise UsageError(f"eval: {run}/eval.json already exists; pass --overwrite to replace it")
            config, saved, num_seeds = outputs.read_final_params(run)
            evaluate = jax.jit(jax.vmap(make_evaluate(config, num_episodes=args.num_episodes,
                                                      deterministic=not args.stochastic), in_axes=(0, None, 0)))
            # Each seed acts on observations normalised with its own saved statistics, as during training.
            result = evaluate(saved["params"], jax.random.key(args.seed), saved["normalizers"])
            returns, lengths = np.asarray(result.returns, np.float64), np.asarray(result.lengths)
            first_seed = _first_seed(run)
            per_seed = []
            for i in range(num_seeds):
                entry = {"seed_index": i, "train_seed": None if first_seed is None else first_seed + i,
                         "mean_return": float(returns[i].mean()), "std_return": float(returns[i].std()),
                         "mean_length": float(lengths[i].mean()), "std_length": float(lengths[i].std()),
                         "returns": [float(r) for r in returns[i]], "lengths": [int(n) for n in lengths[i]]}
                per_seed.append(entry)
                label = entry["train_seed"] if first_seed is not None else i
                print(f"seed {label}: return {entry['mean_return']:.2f} +- {entry['std_return']:.2f}, length "
                      f"{entry['mean_length']:.1f} +- {entry['std_length']:.1f} over {args.num_episodes} episode(s)")
            summary = {"env": config.env, "num_episodes": args.num_episodes, "seed": args.seed,
                       "deterministic": not args.stochastic, "num_seeds": num_seeds,
                       "mean_return": float(returns.mean()), "per_seed": per_seed}
            outputs.write_json(run / outputs.EVAL_JSON, summary)
    except ValueError as error:
        raise UsageError(f"eval: {error}") from None
    print(f"done: mean return {summary['mean_return']:.2f} over {num_seeds} seed(s) -> {run}/eval.json", flush=True)


def _first_seed(run: Path) -> int | None:
    """The run's first training seed from run.json or summary.json (None if neither says)."""
    from jaxppo import outputs

    for name in (outputs.RUN, outputs.SUMMARY):
        try:
            values = outputs.read_json(run / name)
        except ValueError:
            continue
        if isinstance(values.get("seed"), int):
            return values["seed"]
        if isinstance(values.get("seeds"), list) and values["seeds"] and isinstance(values["seeds"][0], int):
            return int(values["seeds"][0])
    return None


def run(argv: list[str]) -> int:
    eval_run(parse(EvalArgs, argv, "jaxppo eval"))
    return 0
