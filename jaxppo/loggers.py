"""Host-side metric sinks for experiment trackers: TensorBoard and Weights & Biases behind one `MetricsLogger`.

(The run's own files, metrics.csv included, are written by jaxppo.outputs; this module only feeds trackers.)
Every sink has the same two methods, `log(step, metrics)` and `close()`; `step` counts env steps. Values are
written as they are, NaN and inf included (a diverging run should show up in the logs), except the NaN that
episode_return / episode_length hold before any episode has ended, which is a placeholder and is left out.

    loggers = make_seed_loggers(Path("runs/x"), seeds=[0, 1], tensorboard=True, wandb_project=None)
    log_metrics_history(loggers[0], jaxppo.outputs.metrics_columns(metrics), seed=0)
    log_evaluations(loggers, env_steps, returns, lengths)      # a periodic evaluation, every seed

Metric names are the same everywhere: a tracker's tag is the metrics.csv column (`episode_return`, `policy_loss`,
...), and the periodic evaluation's curves are EVAL_METRICS (`eval_return`, ...), as `jaxppo plot --metric` takes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

TENSORBOARD_DIR = "tb"
PLACEHOLDER_NAN = ("episode_return", "episode_length")
"""Metrics that are NaN until the first episode ends (no value yet): such points are not logged."""

EVAL_METRICS = {"eval_return": "mean_return", "eval_return_std": "std_return", "eval_length": "mean_length"}
"""The periodic evaluation's curves: name in TensorBoard, W&B and `jaxppo plot --metric` -> its eval.csv column
(mean and std of the greedy policy's episode returns, mean episode length, per seed)."""

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

    def log_image(self, step: int, tag: str, image: np.ndarray) -> None:
        """An RGB image uint8 [H, W, 3] under tag (TensorBoard's Images tab)."""
        self._writer.add_image(tag, image, int(step), dataformats="HWC")

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

    def log_image(self, step: int, tag: str, image: np.ndarray) -> None:
        """An RGB image uint8 [H, W, 3] to every sink that stores images (TensorBoard); the others skip it."""
        for sink in self.sinks:
            if hasattr(sink, "log_image"):
                sink.log_image(int(step), tag, image)

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
        metrics_columns: `jaxppo.outputs.metrics_columns(metrics)`: {name: array [S, U]}, with `env_steps`.
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
        values = {name: column[update] for name, column in columns.items()
                  if not (name in PLACEHOLDER_NAN and not math.isfinite(float(column[update])))}
        logger.log(int(steps[update]), values)


def evaluation_metrics(returns: np.ndarray, lengths: np.ndarray) -> dict[str, float]:
    """EVAL_METRICS of one seed's evaluation: returns, lengths [episodes] -> {eval_return, eval_return_std,
    eval_length} (the values eval.csv holds)."""
    returns, lengths = np.asarray(returns, np.float64), np.asarray(lengths, np.float64)
    return {"eval_return": float(returns.mean()), "eval_return_std": float(returns.std()),
            "eval_length": float(lengths.mean())}


def log_evaluations(loggers: Sequence[MetricsLogger], env_steps: int, returns: np.ndarray,
                    lengths: np.ndarray) -> None:
    """Log a periodic evaluation of every seed (EVAL_METRICS) at the env step it was made.

    Args:
        loggers: one per seed, as make_seed_loggers returns them; none (no tracker, or not the lead process): nothing
            is logged.
        env_steps: the run's env steps when the policies were evaluated.
        returns, lengths: per seed and episode, [S, episodes].
    """
    if not loggers:
        return
    returns, lengths = np.asarray(returns), np.asarray(lengths)
    if returns.shape != lengths.shape or returns.ndim != 2 or returns.shape[0] != len(loggers):
        raise ValueError(f"returns and lengths must be [{len(loggers)} seeds, episodes]; got {returns.shape} and "
                         f"{lengths.shape}")
    for logger, seed_returns, seed_lengths in zip(loggers, returns, lengths):
        logger.log(int(env_steps), evaluation_metrics(seed_returns, seed_lengths))
