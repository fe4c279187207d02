"""`jaxppo sweep`: every hyperparameter setting x seed in one compiled program; writes sweep.csv and sweep.png.

    jaxppo sweep --grid lr=1e-3,3e-4 --grid ent_coef=0,0.01 --num-seeds 3 --total-timesteps 100000 --out runs/sweep
    jaxppo sweep --random-samples 8 --ranges lr=1e-5:1e-2:log --ranges clip_eps=0.1:0.3 --out runs/random
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import tyro

from jaxppo.cli.flags import ConfigFlags, UsageError, parse_with_config, to_config


@dataclasses.dataclass(frozen=True)
class SweepArgs:
    """Train every hyperparameter setting x seed in one compiled program; write sweep.csv, sweep.png, config.json."""

    config: tyro.conf.OmitArgPrefixes[ConfigFlags]
    preset: str | None = None
    """Base settings of a named preset (see `jaxppo train --preset`); flags given next to it win."""
    grid: tyro.conf.UseAppendAction[tuple[str, ...]] = ()
    """NAME=V1,V2,... (repeatable); the cartesian product of all --grid entries is swept."""
    random_samples: int = 0
    """Random settings drawn from --ranges (in addition to the grid)."""
    ranges: tyro.conf.UseAppendAction[tuple[str, ...]] = ()
    """NAME=LOW:HIGH[:log] (repeatable), sampled uniformly (log: uniformly in log space)."""
    num_seeds: int = 3
    """Seeds per setting; seed i uses --seed + i, like `jaxppo train`."""
    seed: int = 0
    """First training seed, and the seed of the random sampler."""
    out: Path = Path("runs/sweep")
    """Output folder."""
    overwrite: bool = False
    """Replace the outputs of an earlier sweep in --out (only after every check has passed)."""
    checkpoint_every: int = 0
    """Save the whole population's state every N updates (resume with `jaxppo train --resume OUT`)."""
    quiet: bool = False
    """Only errors and the final line."""


def parse_grid(entries) -> dict[str, list[float]]:
    """["lr=1e-3,3e-4", ...] -> {"lr": [0.001, 0.0003], ...}; UsageError naming --grid on bad syntax."""
    grid: dict[str, list[float]] = {}
    for entry in entries:
        name, sep, values = entry.partition("=")
        name = name.strip()
        try:
            parsed = [float(v) for v in values.split(",")] if sep and name and values.strip() else None
        except ValueError:
            parsed = None
        if parsed is None:
            raise UsageError(f"--grid {entry!r}: expected NAME=V1,V2,... with numbers, e.g. --grid lr=1e-3,3e-4")
        if name in grid:
            raise UsageError(f"--grid {entry!r}: {name} given twice; list all its values in one --grid")
        grid[name] = parsed
    return grid


def parse_ranges(entries) -> dict[str, tuple[float, float, str]]:
    """["lr=1e-5:1e-2:log", "clip_eps=0.1:0.3"] -> {name: (low, high, scale)}; scale defaults to linear."""
    ranges: dict[str, tuple[float, float, str]] = {}
    for entry in entries:
        name, sep, spec = entry.partition("=")
        name = name.strip()
        parts = spec.split(":")
        scale = parts.pop() if len(parts) == 3 else "linear"
        try:
            low, high = (float(p) for p in parts) if sep and name and len(parts) == 2 else (None, None)
        except ValueError:
            low = None
        if low is None or scale not in ("linear", "log"):
            raise UsageError(f"--ranges {entry!r}: expected NAME=LOW:HIGH or NAME=LOW:HIGH:log, e.g. "
                             "--ranges lr=1e-5:1e-2:log")
        if name in ranges:
            raise UsageError(f"--ranges {entry!r}: {name} given twice; give one --ranges per name")
        ranges[name] = (low, high, scale)
    return ranges


def _check_values(cfg, grid: dict[str, list[float]], ranges: dict[str, tuple[float, float, str]]) -> None:
    """UsageError naming the flag and the name for an unknown hyperparameter or a value the config rejects."""
    from jaxppo.sweep import random_settings, setting_hparams

    entries = [("--grid", name, values) for name, values in grid.items()]
    entries += [("--ranges", name, (low, high)) for name, (low, high, _) in ranges.items()]
    for flag, name, values in entries:
        try:
            if flag == "--ranges":
                random_settings({name: ranges[name]}, 0)  # bounds in order, log scale above 0
            for value in values:
                setting_hparams(cfg, {name: value})
        except ValueError as error:
            raise UsageError(f"{flag} {name}: {error}") from None


def sweep(args: SweepArgs) -> None:
    from jaxppo import run_folder
    from jaxppo.agent import make_agent
    from jaxppo.cli.train import _report
    from jaxppo.runner import RunOptions
    from jaxppo.sweep import run_sweep, summary_lines, write_sweep

    cfg = to_config(args.config)
    grid, ranges = parse_grid(args.grid), parse_ranges(args.ranges)
    if args.num_seeds < 1:
        raise UsageError(f"--num-seeds {args.num_seeds}: must be at least 1")
    if args.random_samples < 0:
        raise UsageError(f"--random-samples {args.random_samples}: must be at least 0")
    if args.random_samples and not ranges:
        raise UsageError("--random-samples: needs at least one --ranges NAME=LOW:HIGH[:log]")
    if ranges and not args.random_samples:
        raise UsageError("--ranges: pass --random-samples N to draw N settings from them")
    if not grid and not args.random_samples:
        raise UsageError("nothing to sweep: pass --grid NAME=V1,V2,... and/or --random-samples N --ranges ...")
    _check_values(cfg, grid, ranges)
    try:
        make_agent(cfg)  # the environment exists and fits the network
        run_folder.check_new_run(args.out, "train", args.overwrite)
    except ValueError as error:
        raise UsageError(str(error).replace("already holds a run", "already holds results")) from None
    options = RunOptions(checkpoint_every=args.checkpoint_every, preset=args.preset)
    holder = {}

    def call():
        holder["result"] = run_sweep(cfg, grid, args.random_samples, ranges, args.num_seeds, args.seed, out=args.out,
                                     options=options, overwrite=args.overwrite, quiet=args.quiet)
        return _Finished()

    _report(call)
    result = holder["result"]
    if not result.finished:
        return
    write_sweep(result, args.out)
    if not args.quiet:
        print("\n".join(summary_lines(result)))
    print(f"done: {len(result.settings)} setting(s) x {args.num_seeds} seed(s) -> {args.out}/sweep.csv, sweep.png "
          f"(resume, plot, eval and load as a training run; member m = setting m // {args.num_seeds})", flush=True)


class _Finished:
    stopped_by = None


def run(argv: list[str]) -> int:
    args, _ = parse_with_config(SweepArgs, argv, "jaxppo sweep")
    sweep(args)
    return 0
