"""`jaxppo plot`: episode return vs env steps of run folders (a line and a band over each run's seeds)."""

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
    """Moving-average window over updates (1: raw curves)."""
    metric: str = "episode_return"
    """Column of metrics.csv to plot (e.g. episode_length, value_loss, entropy)."""
    overwrite: bool = False
    """Replace an existing --out file."""


def plot(args: PlotArgs) -> None:
    from jaxppo import outputs
    from jaxppo.plotting import plot_runs

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
    try:
        plot_runs(args.runs, args.out, band=args.band, smooth=args.smooth, metric=args.metric)
    except ValueError as error:
        raise UsageError(f"plot: {error}") from None
    except OSError as error:
        raise UsageError(f"--out {args.out}: cannot be written ({error.strerror or error})") from None
    print(f"wrote {args.out}", flush=True)


def run(argv: list[str]) -> int:
    plot(parse(PlotArgs, argv, "jaxppo plot"))
    return 0
