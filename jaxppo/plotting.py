"""Learning-curve figures from run folders (metrics.csv, eval.csv) and sweeps: a metric vs env steps, a line and a
band over seeds.

    plot_runs(["runs/a", "runs/b"], "curves.png", metric="eval_return")   # what `jaxppo plot` draws

A metric is named as everywhere else (metrics.csv, TensorBoard, W&B): a metrics.csv column (`episode_return`,
`policy_loss`, ...; a loss metric also by its path in the Metrics pytree, `loss.policy_loss`), or a periodic
evaluation curve from eval.csv (`eval_return`, `eval_return_std`, `eval_length`; see jaxppo.loggers.EVAL_METRICS).

Uses matplotlib's object API with the Agg canvas (no pyplot, no display, no global backend switch).
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Literal, NamedTuple, Sequence, get_args

import numpy as np

from jaxppo import outputs
from jaxppo.loggers import EVAL_METRICS

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


class RunCurve(NamedTuple):
    """One run's curve of a metric: x values and one row per seed."""

    label: str
    env_steps: np.ndarray  # int64 [U]: env steps of each point
    values: np.ndarray  # float64 [S, U]: per seed (NaN where there is no value)


def metric_column(metric: str, columns: Sequence[str]) -> str:
    """The metrics.csv column a metric name means: the column itself, or a loss metric by its path in the Metrics
    pytree ('loss.policy_loss' or 'loss/policy_loss' -> 'policy_loss'; a custom loss's nested 'loss.a.b' -> 'a/b').

    Raises:
      ValueError: naming the metrics there are (the columns and EVAL_METRICS).
    """
    if metric in columns:
        return metric
    path = metric.replace(".", "/")
    for candidate in (path, path[len("loss/"):] if path.startswith("loss/") else None):
        if candidate and candidate in columns:
            return candidate
    names = [c for c in columns if c != "env_steps"]
    raise ValueError(f"no metric {metric!r}; metrics: {', '.join(names)} (a loss metric also as loss.NAME); "
                     f"evaluation curves: {', '.join(EVAL_METRICS)}")


def read_eval_csv(path: str | Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """eval.csv (rows update, env_steps, seed, mean_return, std_return, mean_length) -> (env_steps int64 [E],
    {column: float64 [S, E]}) over the E evaluations in update order; a repeated (seed, update) row keeps the last.

    Raises:
      ValueError: naming the file when it has no rows or a row that is not numeric.
    """
    path = Path(path)
    rows = list(csv.reader(path.read_text().splitlines()))
    header = ["update", "env_steps", "seed", *EVAL_METRICS.values()]
    if len(rows) < 2 or rows[0][: len(header)] != header:
        raise ValueError(f"{path} has no evaluation rows (expected a header {','.join(header)} and rows)")
    try:
        parsed = [(int(r[0]), int(r[1]), int(r[2]), [float(r[3 + i]) for i in range(len(EVAL_METRICS))])
                  for r in rows[1:] if r]
    except (ValueError, IndexError):
        raise ValueError(f"{path} holds a row that is not numeric or has too few fields") from None
    updates = sorted({u for u, _, _, _ in parsed})
    seeds = sorted({s for _, _, s, _ in parsed})
    steps = dict((u, e) for u, e, _, _ in parsed)
    values = np.full((len(EVAL_METRICS), len(seeds), len(updates)), np.nan)
    for update, _, seed, row in parsed:
        values[:, seeds.index(seed), updates.index(update)] = row
    env_steps = np.array([steps[u] for u in updates], np.int64)
    return env_steps, dict(zip(EVAL_METRICS.values(), values))


def read_run_curve(run_dir: str | Path, metric: str = "episode_return", smooth: int = 1,
                   label: str | None = None) -> RunCurve:
    """One run folder's curve of a metric (see metric_column and EVAL_METRICS), smoothed over `smooth` points.

    Raises:
      ValueError: naming the folder or file when the metric or the file it lives in is missing.
    """
    run_dir = Path(run_dir)
    label = label if label is not None else (run_dir.name or str(run_dir))
    if metric in EVAL_METRICS:
        path = run_dir / outputs.EVAL_CSV
        if not path.is_file():
            raise ValueError(f"{run_dir}: no eval.csv, so no {metric} curve; train with --eval-every N to evaluate "
                             "during the run")
        env_steps, columns = read_eval_csv(path)
        return RunCurve(label, env_steps, smooth_curves(columns[EVAL_METRICS[metric]], smooth))
    path = run_dir / outputs.METRICS
    if not path.is_file():
        raise ValueError(f"{run_dir}: no metrics.csv; pass folders written by `jaxppo train --out DIR`")
    columns = outputs.read_metrics_csv(path)
    if "env_steps" not in columns:
        raise ValueError(f"{path}: no 'env_steps' column (columns: {', '.join(columns)})")
    try:
        name = metric_column(metric, list(columns))
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return RunCurve(label, columns["env_steps"][0].astype(np.int64), smooth_curves(columns[name], smooth))


def plot_run_curves(curves: Sequence[RunCurve], out: Path, metric: str = "episode_return", band: str = "std",
                    smooth: int = 1) -> Path:
    """Save the curves of read_run_curve as a PNG at out, titled by the metric; returns out."""
    what = metric.replace("_", " ")
    title = f"{what} vs env steps" + (f" (moving average of {smooth} points)" if smooth > 1 else "")
    return plot_curves([c.env_steps for c in curves], [c.values for c in curves], [c.label for c in curves], out,
                       title=title, band=band, ylabel=what)


def plot_runs(run_dirs: Sequence[Path], out: Path, labels: Sequence[str] | None = None, band: str = "std",
              smooth: int = 1, metric: str = "episode_return") -> Path:
    """A metric (default the episode return) vs env steps of several `jaxppo train` runs, one line and band over
    each run's seeds, as a PNG.

    Args:
      run_dirs: run folders, each with a metrics.csv (columns seed, update, env_steps, episode_return, ...) and,
        for an evaluation curve, an eval.csv.
      out: PNG path.
      labels: legend label per run (default: the folder names).
      band: "std", "minmax" or "iqr" (see BAND_DESCRIPTIONS).
      smooth: trailing moving-average window over points (updates, or evaluations; 1: none).
      metric: a metrics.csv column (`loss.NAME` for a loss metric works too; see metric_column) or an evaluation
        curve (EVAL_METRICS: eval_return, eval_return_std, eval_length).

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
    curves = [read_run_curve(d, metric, smooth, label) for d, label in zip(run_dirs, labels)]
    return plot_run_curves(curves, out, metric, band, smooth)


def population_figure(run_dir: str | Path):
    """A population run's figure (a sweep's or PBT's): the top panel draws every member's episode return vs env
    steps; one panel per varied hyperparameter draws every member's value over the run (hparams.csv, log scale
    for positive values spanning > 10x), with a dot where a member copied another (lineage.csv, PBT).

    Returns a matplotlib Figure on an Agg canvas. ValueError naming the file when the folder has no hparams.csv.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from jaxppo.population import read_hparams

    run_dir = Path(run_dir)
    if not (run_dir / outputs.HPARAMS_CSV).is_file():
        raise ValueError(f"{run_dir}/{outputs.HPARAMS_CSV} is missing: only sweep and PBT runs (jaxppo sweep / "
                         "jaxppo pbt) have a population to draw")
    columns = outputs.read_metrics_csv(run_dir / outputs.METRICS)
    names, rows = read_hparams(run_dir)
    lineage = np.zeros((0, 5))
    if (run_dir / outputs.LINEAGE_CSV).is_file():
        lineage = np.loadtxt(run_dir / outputs.LINEAGE_CSV, delimiter=",", skiprows=1, ndmin=2).reshape(-1, 5)
    steps_per_update = outputs.read_config(run_dir).batch_size
    members = columns["episode_return"].shape[0]
    fig = Figure(figsize=(8, 2.6 * (1 + len(names))))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1 + len(names), 1, sharex=True, squeeze=False)[:, 0]
    colors = [axes[0]._get_lines.get_next_color() for _ in range(members)]
    for m in range(members):
        axes[0].plot(columns["env_steps"][m], columns["episode_return"][m], color=colors[m], lw=1, label=f"member {m}")
    axes[0].set_ylabel("episode return")
    axes[0].set_title(f"{run_dir.name}: {members} members", fontsize=10)
    for ax, (i, name) in zip(axes[1:], enumerate(names)):
        for m in range(members):
            mine = rows[rows[:, 1] == m]
            ax.step(mine[:, 0] * steps_per_update, mine[:, 2 + i], where="post", color=colors[m], lw=1)
            copied = lineage[lineage[:, 1] == m]
            if len(copied):
                at = [mine[mine[:, 0] == u][0, 2 + i] for u in copied[:, 0]]
                ax.plot(copied[:, 0] * steps_per_update, at, "o", color=colors[m], ms=3)
        values = rows[:, 2 + i]
        if np.all(values > 0) and values.max() > 10 * values.min():
            ax.set_yscale("log")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0].grid(alpha=0.3)
    if members <= 16:
        axes[0].legend(fontsize=7, ncol=4)
    axes[-1].set_xlabel("env steps" + (" (dots: the member copied a better one)" if len(lineage) else ""))
    fig.tight_layout()
    return fig
