"""`jaxppo plot`: a metric vs env steps of run folders (a line and a band over each run's seeds); prints what it
wrote."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import tyro

from jaxppo.cli.flags import UsageError, parse
from jaxppo.plotting import Band


@dataclasses.dataclass(frozen=True)
class PlotArgs:
    """Plot episode return vs env steps of runs (a line and a band over each run's seeds) into a PNG."""

    runs: tyro.conf.Positional[tuple[Path, ...]] = ()
    """Run folders written by `jaxppo train --out DIR`."""
    out: Path = Path("learning_curves.png")
    """PNG file to write."""
    band: Band = "std"
    """std (mean +- std over seeds), minmax (mean, min to max) or iqr (median, 25th to 75th percentile)."""
    smooth: int = 1
    """Moving-average window over points: updates, or evaluations for the eval_* curves (1: raw curves)."""
    metric: str = "episode_return"
    """What to plot: a metrics.csv column (episode_length, policy_loss or loss.policy_loss, grad_norm, ...) or an
    evaluation curve from eval.csv (eval_return, eval_return_std, eval_length; runs trained with --eval-every)."""
    overwrite: bool = False
    """Replace an existing --out file."""
    population: bool = False
    """Draw one sweep or PBT run's population instead: every member's return and its hyperparameters over the run
    (hparams.csv), with the copies PBT made (lineage.csv)."""


def plot(args: PlotArgs) -> None:
    from jaxppo import outputs
    from jaxppo.plotting import plot_run_curves, read_run_curve

    if not args.runs:
        raise UsageError("plot: give at least one run folder, e.g. jaxppo plot runs/a runs/b")
    for run in args.runs:
        if not run.is_dir():
            raise UsageError(f"plot: run folder {run} does not exist; pass folders written by `jaxppo train --out DIR`")
        if not (run / outputs.METRICS).is_file():
            raise UsageError(f"plot: {run}/metrics.csv is missing; pass folders written by `jaxppo train --out DIR`")
    if args.out.suffix.lower() != ".png":
        raise UsageError(f"--out {args.out}: must be a .png file, e.g. --out curves.png")
    if args.smooth < 1:
        raise UsageError(f"--smooth {args.smooth}: must be at least 1")
    if args.out.is_symlink() or (args.out.exists() and not args.overwrite):
        raise UsageError(f"--out {args.out}: already exists; choose another --out or pass --overwrite")
    parent = args.out.parent if str(args.out.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"--out {args.out}: folder {parent} does not exist")
    if args.population:
        return _plot_population(args)
    try:
        curves = [read_run_curve(run, args.metric, args.smooth) for run in args.runs]
        plot_run_curves(curves, args.out, args.metric, args.band, args.smooth)
    except ValueError as error:
        raise UsageError(f"plot: {error}") from None
    except OSError as error:
        raise UsageError(f"--out {args.out}: cannot be written ({error.strerror or error})") from None
    drawn = ", ".join(f"{run} ({c.values.shape[0]} seed(s), {c.values.shape[1]} points)"
                      for run, c in zip(args.runs, curves))
    print(f"wrote {args.out}: {args.metric} vs env steps of {drawn}", flush=True)


def _plot_population(args: PlotArgs) -> None:
    from jaxppo.plotting import population_figure

    if len(args.runs) != 1:
        raise UsageError(f"--population: give one run folder, not {len(args.runs)}")
    try:
        population_figure(args.runs[0]).savefig(args.out, dpi=120)
    except ValueError as error:
        raise UsageError(f"plot: {error}") from None
    print(f"wrote {args.out}: the population of {args.runs[0]} (returns and hyperparameters per member)", flush=True)


def run(argv: list[str]) -> int:
    plot(parse(PlotArgs, argv, "jaxppo plot"))
    return 0
