"""Learning-curve figures from run folders (metrics.csv) and sweeps: return vs env steps, mean over seeds + band.

Uses matplotlib's object API with the Agg canvas (no pyplot, no display, no global backend switch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from jaxppo import outputs

BANDS = ("minmax", "std")


def plot_curves(env_steps: np.ndarray | Sequence[np.ndarray], curves: Sequence[np.ndarray], labels: Sequence[str],
                out: Path, title: str = "", band: str = "minmax") -> Path:
    """Draw one mean line per entry of curves (each float [S, U]) with a shaded band over seeds; save a PNG.

    Args:
      env_steps: x values [U], shared by every curve, or one array per curve.
      curves: per line, episode returns [S, U] (seeds, updates).
      labels: legend label per line.
      out: PNG path (parent folders are created).
      title: figure title.
      band: "minmax" (min to max over seeds) or "std" (mean +- std).

    Returns:
      out.
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
        mean = y.mean(axis=0)
        low, high = (y.min(axis=0), y.max(axis=0)) if band == "minmax" else (mean - y.std(axis=0),
                                                                             mean + y.std(axis=0))
        (line,) = ax.plot(x, mean, label=f"{label} (n={y.shape[0]})")
        if y.shape[0] > 1:
            ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("env steps")
    ax.set_ylabel("episode return")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out


def plot_runs(run_dirs: Sequence[Path], out: Path, labels: Sequence[str] | None = None,
              band: str = "minmax") -> Path:
    """Return vs env steps of several `jaxppo train` runs: mean over each run's seeds, shaded min-max band.

    Args:
      run_dirs: run folders, each with a metrics.csv (columns seed, update, env_steps, episode_return, ...).
      out: PNG path.
      labels: legend label per run (default: the folder names).
      band: "minmax" or "std".

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
        for name in ("env_steps", "episode_return"):
            if name not in columns:
                raise ValueError(f"{path}: no {name!r} column")
        xs.append(columns["env_steps"][0])
        curves.append(columns["episode_return"])
    return plot_curves(xs, curves, labels, out, title="episode return vs env steps", band=band)
