"""Host-side metric sinks: one `MetricsLogger` that fans scalars out to CSV, TensorBoard, Weights & Biases, stdout.

Every sink has the same two methods, `log(step, metrics)` and `close()`; `step` counts env steps. Values are
written as they are, NaN and inf included: a diverging run should show up in the logs, not crash the logger.

    with make_logger(Path("runs/x"), tensorboard=True, wandb_project=None) as logger:
        log_metrics_history(logger, jaxppo.outputs.metrics_to_columns(metrics))
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence, TextIO

import numpy as np

CSV_NAME = "metrics_log.csv"
TENSORBOARD_DIR = "tb"
STEP_COLUMN = "step"
STDOUT_KEYS = ("episode_return", "episode_length", "policy_loss", "value_loss", "entropy", "approx_kl")

Scalar = int | float


class Sink(Protocol):
    def log(self, step: int, metrics: Mapping[str, Scalar]) -> None: ...

    def close(self) -> None: ...


def _plain(value: Any) -> Scalar:
    """numpy / jax / python scalar -> int (integers and bools) or float (everything else, NaN kept)."""
    array = np.asarray(value)
    if array.shape != ():
        raise ValueError(f"metric values must be scalars, got shape {array.shape}")
    if np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
        return int(array)
    return float(array)


class CsvSink:
    """One row per log call: `step`, then the metrics, in the order of the first call.

    The header is fixed by the first call. If `path` already holds a CSV with the same header the rows are appended
    (a resumed run continues the file); a different header raises ValueError and leaves the file untouched.
    Each row is flushed, so a killed run keeps every row it logged.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._handle: TextIO | None = None
        self._writer: Any = None
        self._fields: list[str] | None = None

    def log(self, step: int, metrics: Mapping[str, Scalar]) -> None:
        if STEP_COLUMN in metrics:
            raise ValueError(f"{self.path}: '{STEP_COLUMN}' is reserved for the step column")
        if self._fields is None:
            self._open([STEP_COLUMN, *metrics])
        if list(metrics) != self._fields[1:]:
            raise ValueError(f"{self.path}: metrics {list(metrics)} do not match the columns {self._fields[1:]}")
        self._writer.writerow([int(step), *(_csv_value(v) for v in metrics.values())])
        self._handle.flush()

    def _open(self, fields: list[str]) -> None:
        existing = _read_header(self.path)
        if existing is not None and existing != fields:
            raise ValueError(f"{self.path}: existing header {existing} differs from {fields}; "
                             "refusing to append to or overwrite it (use another output directory)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a", newline="")
        self._writer = csv.writer(self._handle)
        if existing is None:
            self._writer.writerow(fields)
        self._fields = fields

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _read_header(path: Path) -> list[str] | None:
    """First row of an existing, non-empty CSV; None when there is no such file."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    with open(path, newline="") as handle:
        return next(csv.reader(handle), None)


def _csv_value(value: Scalar) -> str | int:
    return value if isinstance(value, int) else repr(float(value))  # repr: shortest exact float; 'nan', 'inf'


class TensorBoardSink:
    """Scalars as TensorBoard event files under `log_dir` (tensorboardX: no TensorFlow). Tag = metric name.

    Event files store scalars as float32. `purge_step` (a resumed run's first new step) tells TensorBoard to drop
    events logged at that step or later by the interrupted run, so a resumed curve has no duplicated stretch.
    """

    def __init__(self, log_dir: str | Path, purge_step: int | None = None):
        from tensorboardX import SummaryWriter

        self.log_dir = Path(log_dir)
        self._writer = SummaryWriter(str(self.log_dir), purge_step=purge_step)

    def log(self, step: int, metrics: Mapping[str, Scalar]) -> None:
        for name, value in metrics.items():
            self._writer.add_scalar(name, float(value), int(step))

    def close(self) -> None:
        self._writer.flush()
        self._writer.close()


class WandbSink:
    """One Weights & Biases run. `mode="offline"` writes under `dir/wandb/` without network (`wandb sync` later).

    wandb is an optional extra, imported here only. Each sink is its own run (`reinit="create_new"`), so several
    can be open in one process; a resumed jaxppo run starts a new W&B run.
    """

    def __init__(self, project: str, run_name: str | None = None, config: dict[str, Any] | None = None,
                 mode: str = "offline", dir: str | Path | None = None, group: str | None = None):
        try:
            import wandb
        except ImportError as err:
            raise ImportError("WandbSink needs the optional dependency wandb: pip install jaxppo[wandb]") from err
        if dir is not None:
            Path(dir).mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(project=project, name=run_name, config=dict(config or {}), mode=mode, group=group,
                               dir=None if dir is None else str(dir), reinit="create_new")

    def log(self, step: int, metrics: Mapping[str, Scalar]) -> None:
        self._run.log(dict(metrics), step=int(step))

    def close(self) -> None:
        self._run.finish()


class StdoutSink:
    """One compact line per log call: `step 12,288 | episode_return 21.4 | ...`; `keys=None` prints every metric."""

    def __init__(self, stream: TextIO | None = None, keys: Sequence[str] | None = STDOUT_KEYS):
        self.stream = stream
        self.keys = None if keys is None else tuple(keys)

    def log(self, step: int, metrics: Mapping[str, Scalar]) -> None:
        names = list(metrics) if self.keys is None else [k for k in self.keys if k in metrics]
        parts = [f"step {int(step):,}"] + [f"{name} {metrics[name]:.4g}" for name in names]
        print(" | ".join(parts), file=self.stream if self.stream is not None else sys.stdout, flush=True)

    def close(self) -> None:
        pass


class MetricsLogger:
    """Fans each `log(step, metrics)` out to every sink; a context manager that closes them all.

    Values are turned into plain Python int / float once (numpy and jax scalars accepted) before the sinks see them.
    """

    def __init__(self, sinks: Sequence[Sink]):
        self.sinks = list(sinks)
        self._closed = False

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        if self._closed:
            raise RuntimeError("MetricsLogger.log after close()")
        plain = {str(name): _plain(value) for name, value in metrics.items()}
        for sink in self.sinks:
            sink.log(int(step), plain)

    def close(self) -> None:
        """Close every sink, even if one fails (the first failure is raised afterwards). Idempotent."""
        if self._closed:
            return
        self._closed = True
        _close_all(self.sinks)

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def _close_all(sinks: Sequence[Sink]) -> None:
    error: BaseException | None = None
    for sink in sinks:
        try:
            sink.close()
        except Exception as err:  # noqa: BLE001 - the remaining sinks must still be closed
            error = error or err
    if error is not None:
        raise error


def make_logger(out_dir: Path, tensorboard: bool, wandb_project: str | None, wandb_mode: str = "offline",
                run_name: str | None = None, config: dict[str, Any] | None = None) -> MetricsLogger:
    """The run's logger: always `out_dir/metrics_log.csv`; TensorBoard in `out_dir/tb` and W&B when asked.

    Args:
        out_dir: run output directory (created if missing).
        tensorboard: add a TensorBoardSink writing to `out_dir / "tb"`.
        wandb_project: W&B project name, or None for no W&B; its files go under `out_dir / "wandb"`.
        wandb_mode: "offline" (default, no network), "online" or "disabled".
        run_name: W&B run name; default `out_dir.name`.
        config: W&B run config (e.g. `jaxppo.outputs.config_to_dict(config)`).
    Returns:
        A MetricsLogger; use it as a context manager or call close().
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sinks: list[Sink] = [CsvSink(out_dir / CSV_NAME)]
    try:
        if tensorboard:
            sinks.append(TensorBoardSink(out_dir / TENSORBOARD_DIR))
        if wandb_project is not None:
            sinks.append(WandbSink(wandb_project, run_name or out_dir.name, config, mode=wandb_mode, dir=out_dir))
    except BaseException:
        _close_all(sinks)
        raise
    return MetricsLogger(sinks)


def make_seed_loggers(out_dir: Path, seeds: Sequence[int], tensorboard: bool, wandb_project: str | None,
                      wandb_mode: str = "offline", config: dict[str, Any] | None = None,
                      purge_step: int | None = None) -> list[MetricsLogger]:
    """One logger per seed of a `jaxppo train` run (no CSV sink: the run writes metrics.csv for all seeds itself).

    Seed s logs TensorBoard events to `out_dir/tb/seed_<s>` (one TensorBoard run per seed, so their curves overlay)
    and, with a W&B project, to its own W&B run named `<out_dir.name>-seed<s>` in the group `out_dir.name`.

    Args:
        out_dir: run output directory.
        seeds: seed values, one logger each, in the order of the run's seed axis.
        tensorboard: add TensorBoard sinks.
        wandb_project: W&B project, or None.
        wandb_mode: "offline" (default, no network), "online" or "disabled".
        config: run config for W&B (the seed is added).
        purge_step: first env step of a resumed run (TensorBoard drops the interrupted run's later events).
    Returns:
        A list of MetricsLogger, possibly with no sinks (then logging is a no-op); close each when done.
    """
    out_dir = Path(out_dir)
    loggers: list[MetricsLogger] = []
    sinks: list[Sink] = []
    try:
        for seed in seeds:
            sinks = []
            if tensorboard:
                sinks.append(TensorBoardSink(out_dir / TENSORBOARD_DIR / f"seed_{seed}", purge_step=purge_step))
            if wandb_project is not None:
                sinks.append(WandbSink(wandb_project, f"{out_dir.name}-seed{seed}", {**(config or {}), "seed": seed},
                                       mode=wandb_mode, dir=out_dir, group=out_dir.name))
            loggers.append(MetricsLogger(sinks))
    except BaseException:
        _close_all(sinks + [s for logger in loggers for s in logger.sinks])
        raise
    return loggers


def log_metrics_history(logger: MetricsLogger, metrics_columns: Mapping[str, np.ndarray], seed: int = 0) -> None:
    """Log every update of one seed, with step = that update's cumulative `env_steps`.

    Args:
        logger: where to log.
        metrics_columns: `jaxppo.outputs.metrics_to_columns(metrics)`: {name: array [S, U]}, with `env_steps`.
        seed: row of the seed axis to log (an index into S, not the seed value).
    """
    if "env_steps" not in metrics_columns:
        raise ValueError(f"metrics_columns needs 'env_steps'; got {sorted(metrics_columns)}")
    shapes = {name: np.shape(column) for name, column in metrics_columns.items()}
    shape = shapes["env_steps"]
    if len(shape) != 2 or any(s != shape for s in shapes.values()):
        raise ValueError(f"metrics_columns must all be [num_seeds, num_updates]; got shapes {shapes}")
    if not 0 <= seed < shape[0]:
        raise ValueError(f"seed={seed} is outside the {shape[0]} seeds of metrics_columns")
    columns = {name: np.asarray(column)[seed] for name, column in metrics_columns.items()}
    steps = columns.pop("env_steps")
    for update in range(shape[1]):
        logger.log(int(steps[update]), {name: column[update] for name, column in columns.items()})
