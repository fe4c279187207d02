"""`jaxppo pbt`: population-based training, every member in one compiled program (see jaxppo.pbt).

    jaxppo pbt --preset breakout-minatar --population 8 --ready-updates 10 --total-timesteps 1000000 \\
        --explore lr=1e-4:3e-3:log --explore ent_coef=1e-3:5e-2:log --out runs/pbt

The folder is a training run's (metrics.csv per member, checkpoints, `jaxppo train --resume DIR`, `jaxppo plot`,
`jaxppo eval`, `jaxppo.load(DIR)` — the best member by default) plus hparams.csv and lineage.csv.
"""

from __future__ import annotations

import dataclasses

import tyro

from jaxppo.cli.flags import UsageError, as_flag_error, flags_given, parse_with_config, to_config
from jaxppo.cli.train import TrainArgs, _check_devices, _check_flags, _report, run_in_cluster


@dataclasses.dataclass(frozen=True)
class PBTArgs(TrainArgs):
    """Population-based training: N members trained at once; every K updates the worst copy the best and explore
    their hyperparameters. --total-timesteps is per member (as in sweeps)."""

    population: int = 8
    """Members trained at once (member i starts from seed + i)."""
    ready_updates: int = 10
    """Updates between two exploit/explore steps."""
    explore: tyro.conf.UseAppendAction[tuple[str, ...]] = ()
    """NAME=LOW:HIGH[:log|:linear] (repeatable; default lr=1e-5:1e-2:log and ent_coef=1e-4:0.1:log): the
    hyperparameters explored and their ranges (log by default for names whose range spans > 10x)."""
    truncation: float = 0.25
    """Fraction of the population replaced at each step (and the fraction they copy from)."""
    resample_probability: float = 0.25
    """Probability of drawing an explored value afresh instead of perturbing it by x0.8 / x1.25."""
    fitness_window: int = 0
    """Updates of training return a member's fitness averages (0: --ready-updates)."""
    initial: str = "sample"
    """Starting hyperparameters: sample (drawn from the ranges) or config (everyone the config's)."""


def parse_explore(entries):
    """["lr=1e-5:1e-2:log", ...] -> (ExploreRange, ...); UsageError naming --explore on bad syntax."""
    from jaxppo.pbt import ExploreRange, PBTConfig

    if not entries:
        return PBTConfig().explore
    ranges = []
    for entry in entries:
        name, sep, spec = entry.partition("=")
        parts = spec.split(":")
        scale = parts.pop() if len(parts) == 3 else None
        try:
            low, high = (float(p) for p in parts) if sep and name.strip() and len(parts) == 2 else (None, None)
        except ValueError:
            low = high = None
        if low is None or scale not in (None, "log", "linear"):
            raise UsageError(f"--explore {entry!r}: expected NAME=LOW:HIGH or NAME=LOW:HIGH:log|linear, e.g. "
                             "--explore lr=1e-5:1e-2:log")
        if scale is None:
            scale = "log" if low > 0 and high > 10 * low else "linear"
        ranges.append(ExploreRange(name.strip(), low, high, scale))
    return tuple(ranges)


def run(argv: list[str]) -> int:
    args, preset = parse_with_config(PBTArgs, argv, "jaxppo pbt")
    _check_flags(args, argv)
    if args.resume is not None:
        raise UsageError(f"--resume {args.resume}: continue a PBT run with `jaxppo train --resume DIR`")
    if "num_seeds" in flags_given(argv):
        raise UsageError("--num-seeds: a PBT run's members are its seeds; use --population N")
    return run_in_cluster(args, lambda: _run_population(args, preset))


def _run_population(args: PBTArgs, preset: str | None) -> int:
    from jaxppo import runner
    from jaxppo.pbt import PBTConfig
    from jaxppo.population import Population
    from jaxppo.train import default_hparams

    config = to_config(args.config)
    _check_devices(config.num_devices)
    pbt = PBTConfig(population=args.population, ready_updates=args.ready_updates,
                    explore=parse_explore(args.explore), truncation=args.truncation,
                    resample_probability=args.resample_probability, fitness_window=args.fitness_window,
                    initial=args.initial, seed=args.seed)
    population = Population(pbt=pbt)
    try:
        population.validate(tuple(default_hparams(config).as_dict()), 1)
    except ValueError as error:
        message = str(error)
        for field in ("population", "ready_updates", "truncation", "resample_probability", "fitness_window",
                      "initial"):
            message = message.replace(f"{field}=", f"--{field.replace('_', '-')} ")
        raise UsageError(message.replace("explore ", "--explore ")) from None
    options = runner.RunOptions(
        seed=args.seed, num_seeds=1, chunk_updates=args.chunk_updates, checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints, eval_every=args.eval_every, eval_episodes=args.eval_episodes,
        tensorboard=args.tensorboard, wandb_project=args.wandb_project, wandb_mode=args.wandb_mode,
        check_sync=args.check_sync, preset=preset, population=population.to_json(), video_every=args.video_every)
    try:
        options.validate()
    except ValueError as error:
        raise as_flag_error(error) from None
    return _report(lambda: runner.train_run(config, args.out, options, overwrite=args.overwrite,
                                            stop_after_updates=args.stop_after_updates, quiet=args.quiet))
