"""Learning-curve figures from run folders (metrics.csv) and sweeps: return vs env steps, a line and a band over seeds.

Uses matplotlib's object API with the Agg canvas (no pyplot, no display, no global backend switch).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal, Sequence, get_args

import numpy as np

from jaxppo import outputs

Band = Literal["std", "minmax", "iqr"]
BANDS: tuple[str, ...] = get_args(Band)
BAND_DESCRIPTIONS = {
    "std": "mean ± std over seeds",
    "minmax": "mean, band min to max over seeds",
    "iqr": "median, band 25th to 75th percentile over seeds",
}
"""What the line and the shaded band of each curve show; written into the figure title."""


def band_over_seeds(returns: np.ndarray, band: str = "std") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(line, low, high), each float [U], of returns float [S, U] (seeds, updates); see BAND_DESCRIPTIONS.

    NaN entries (no episode ended yet) are left out; an update where every seed is NaN stays NaN (not drawn).
    """
    if band not in BANDS:
        raise ValueError(f"band={band!r}: must be one of {', '.join(BANDS)}")
    y = np.atleast_2d(np.asarray(returns, np.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns before the first episode
        if band == "iqr":
            low, line, high = np.nanpercentile(y, [25, 50, 75], axis=0)
            return line, low, high
        mean = np.nanmean(y, axis=0)
        if band == "minmax":
            return mean, np.nanmin(y, axis=0), np.nanmax(y, axis=0)
        std = np.nanstd(y, axis=0)
    return mean, mean - std, mean + std


def smooth_curves(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over the last axis (NaN skipped; the first points average what exists)."""
    if window <= 1:
        return np.asarray(y, np.float64)
    y = np.asarray(y, np.float64)
    valid = np.isfinite(y)
    values = np.where(valid, y, 0.0)
    kernel = np.ones(window)
    sums = np.apply_along_axis(lambda r: np.convolve(r, kernel)[: r.shape[0]], -1, values)
    counts = np.apply_along_axis(lambda r: np.convolve(r, kernel)[: r.shape[0]], -1, valid.astype(float))
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def curve_figure(env_steps: np.ndarray | Sequence[np.ndarray], curves: Sequence[np.ndarray], labels: Sequence[str],
                 title: str = "", band: str = "std", ylabel: str = "episode return"):
    """A matplotlib Figure with one line per entry of curves and, over two or more seeds, a shaded band.

    Args:
      env_steps: x values [U], shared by every curve, or one array per curve.
      curves: per line, episode returns [S, U] (seeds, updates).
      labels: legend label per line.
      title: first line of the figure title; the second says what line and band show.
      band: "std" (mean +- std), "minmax" (mean, min to max) or "iqr" (median, 25th to 75th percentile).

    Returns:
      matplotlib.figure.Figure on an Agg canvas: ax.lines[i] is curve i's line, ax.collections[j] the j-th band.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if band not in BANDS:
        raise ValueError(f"band={band!r}: must be one of {', '.join(BANDS)}")
    if len(curves) != len(labels):
        raise ValueError(f"{len(curves)} curves but {len(labels)} labels")
    xs = [np.asarray(env_steps)] * len(curves) if isinstance(env_steps, np.ndarray) else list(env_steps)
    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for x, y, label in zip(xs, curves, labels):
        y = np.atleast_2d(np.asarray(y, np.float64))
        if y.shape[1] != len(x):
            raise ValueError(f"{label}: {y.shape[1]} updates but {len(x)} env_steps values")
        line, low, high = band_over_seeds(y, band)
        (artist,) = ax.plot(x, line, label=f"{label} (n={y.shape[0]})")
        if y.shape[0] > 1:
            ax.fill_between(x, low, high, color=artist.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("env steps")
    ax.set_ylabel(ylabel)
    ax.set_title("\n".join(t for t in (title, BAND_DESCRIPTIONS[band]) if t), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_curves(env_steps: np.ndarray | Sequence[np.ndarray], curves: Sequence[np.ndarray], labels: Sequence[str],
                out: Path, title: str = "", band: str = "std", ylabel: str = "episode return") -> Path:
    """Save curve_figure(env_steps, curves, labels, title, band, ylabel) as a PNG at out (parent folders created).

    Returns:
      out.
    """
    fig = curve_figure(env_steps, curves, labels, title, band, ylabel)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out


def plot_runs(run_dirs: Sequence[Path], out: Path, labels: Sequence[str] | None = None, band: str = "std",
              smooth: int = 1, metric: str = "episode_return") -> Path:
    """A metric (default the episode return) vs env steps of several `jaxppo train` runs, one line and band over
    each run's seeds, as a PNG.

    Args:
      run_dirs: run folders, each with a metrics.csv (columns seed, update, env_steps, episode_return, ...).
      out: PNG path.
      labels: legend label per run (default: the folder names).
      band: "std", "minmax" or "iqr" (see BAND_DESCRIPTIONS).
      smooth: trailing moving-average window over updates (1: none).
      metric: the metrics.csv column to plot.

    Returns:
      out.
    """
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise ValueError("plot_runs: no run folders given")
    if labels is None:
        labels = [d.name or str(d) for d in run_dirs]
    if len(labels) != len(run_dirs):
        raise ValueError(f"plot_runs: {len(run_dirs)} run folders but {len(labels)} labels")
    xs, curves = [], []
    for run_dir in run_dirs:
        path = run_dir / "metrics.csv"
        if not path.is_file():
            raise ValueError(f"{run_dir}: no metrics.csv; pass folders written by `jaxppo train --out DIR`")
        columns = outputs.read_metrics_csv(path)
        for name in ("env_steps", metric):
            if name not in columns:
                raise ValueError(f"{path}: no {name!r} column (columns: {', '.join(columns)})")
        xs.append(columns["env_steps"][0])
        curves.append(smooth_curves(columns[metric], smooth))
    title = f"{metric.replace('_', ' ')} vs env steps" + (f" (moving average of {smooth} updates)" if smooth > 1
                                                           else "")
    return plot_curves(xs, curves, labels, out, title=title, band=band, ylabel=metric.replace("_", " "))
