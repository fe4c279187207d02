"""`jaxppo eval`: evaluate the final policy of every seed of a run; print the results and write RUN/eval.json.

It is never silent: what it evaluates, `compiling ...` and `compiled in X s`, a line every ~5 s while it compiles or
plays, the result of every seed, then the `done:` line (--quiet: only the `done:` line and errors).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import tyro

from jaxppo.cli.flags import UsageError, parse


@dataclasses.dataclass(frozen=True)
class EvalArgs:
    """Evaluate the final policy of every seed of a run; print the results and write RUN/eval.json."""

    run: tyro.conf.Positional[Path]
    """Run folder written by `jaxppo train` (config.json, final_params.msgpack), or a policy file written by
    `jaxppo export` (evaluated and printed; nothing is written)."""
    num_episodes: int = 10
    """Complete episodes per seed."""
    seed: int = 0
    """Evaluation key; every seed's policy plays the same env resets and action draws."""
    stochastic: bool = False
    """Sample actions instead of acting with the distribution's mode."""
    overwrite: bool = False
    """Replace an existing RUN/eval.json."""
    quiet: bool = False
    """Print only errors and the final `done:` line."""


def eval_run(args: EvalArgs) -> None:
    import jax
    import numpy as np

    from jaxppo import outputs, run_folder
    from jaxppo.compile_cache import count_hits
    from jaxppo.evaluate import make_evaluate
    from jaxppo.loading import read_final_params
    from jaxppo.progress import Heartbeat

    def say(text: str) -> None:
        if not args.quiet:
            print(text, flush=True)

    run = args.run
    if args.num_episodes < 1:
        raise UsageError(f"--num-episodes {args.num_episodes}: must be at least 1")
    if not 0 <= args.seed < 2**32:
        raise UsageError(f"--seed {args.seed}: must be in [0, 2^32)")
    if run.is_file():
        return _eval_exported(args)
    if not run.is_dir():
        raise UsageError(f"eval: run folder {run} does not exist; pass a folder written by `jaxppo train --out DIR`")
    try:
        with run_folder.reopen_run_folder(run, "train"):
            if (run / outputs.EVAL_JSON).exists() and not args.overwrite:
                raise UsageError(f"eval: {run}/eval.json already exists; pass --overwrite to replace it")
            config, saved, num_seeds = read_final_params(run)
            from jaxppo.agent import make_agent
            from jaxppo.footprint import check_eval_fits

            check_eval_fits(config, make_agent(config).spec, args.num_episodes, num_seeds, jax.local_devices()[0],
                            flag="--num-episodes")
            say(f"evaluating {run}: {num_seeds} seed(s) x {args.num_episodes} episode(s) of {config.env}, "
                f"{'sampled' if args.stochastic else 'greedy'} actions")
            evaluate = jax.jit(jax.vmap(make_evaluate(config, num_episodes=args.num_episodes,
                                                      deterministic=not args.stochastic), in_axes=(0, None, 0)))
            # Each seed acts on observations normalised with its own saved statistics, as during training.
            inputs = (saved["params"], jax.random.key(args.seed), saved["normalizers"])
            say(f"compiling the evaluation program for {num_seeds} seed(s) ...")
            start = time.perf_counter()
            with count_hits() as hits, Heartbeat("compiling", enabled=not args.quiet, stream=sys.stdout):
                compiled = evaluate.lower(*inputs).compile()
            compile_seconds = time.perf_counter() - start
            say(f"compiled in {compile_seconds:.1f}s" + (" (from the compilation cache)" if hits.count else ""))
            start = time.perf_counter()
            with Heartbeat("evaluating", enabled=not args.quiet, stream=sys.stdout):
                result = jax.block_until_ready(compiled(*inputs))
            eval_seconds = time.perf_counter() - start
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
                say(f"seed {label}: return {entry['mean_return']:.2f} +- {entry['std_return']:.2f}, length "
                    f"{entry['mean_length']:.1f} +- {entry['std_length']:.1f} over {args.num_episodes} episode(s)")
            summary = {"env": config.env, "num_episodes": args.num_episodes, "seed": args.seed,
                       "deterministic": not args.stochastic, "num_seeds": num_seeds,
                       "mean_return": float(returns.mean()), "per_seed": per_seed}
            trained = outputs.read_json(run / outputs.SUMMARY, "summary") if (run / outputs.SUMMARY).exists() else {}
            if trained.get("best_member") is not None:  # a sweep or PBT run: the member its training ranked first
                best = int(trained["best_member"])
                summary["best_member"] = best
                say(f"best member (by final training return): {best}, evaluated at "
                    f"{per_seed[best]['mean_return']:.2f}; jaxppo.load(run) gives it for a PBT run")
            outputs.write_json(run / outputs.EVAL_JSON, summary)
    except ValueError as error:
        raise UsageError(f"eval: {error}") from None
    print(f"done: mean return {summary['mean_return']:.2f} over {num_seeds} seed(s) x {args.num_episodes} "
          f"episode(s) (compile {compile_seconds:.1f}s, evaluation {eval_seconds:.1f}s) -> {run}/eval.json", flush=True)


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


def _eval_exported(args: EvalArgs) -> None:
    """Evaluate a policy file written by `jaxppo export` (jaxppo.export.evaluate_exported) and print the result."""
    from jaxppo.export import evaluate_exported, load_exported

    try:
        policy = load_exported(args.run)
        policy.check_stochastic(args.stochastic)
        returns, lengths = evaluate_exported(policy, args.num_episodes, args.seed)
    except ValueError as error:
        raise UsageError(f"eval: {error}") from None
    print(f"done: mean return {returns.mean():.2f} +- {returns.std():.2f}, length {lengths.mean():.1f} over "
          f"{args.num_episodes} episode(s) of {policy.env_id} ({args.run}; nothing written)", flush=True)


def run(argv: list[str]) -> int:
    eval_run(parse(EvalArgs, argv, "jaxppo eval"))
    return 0
