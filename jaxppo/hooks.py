"""After-chunk hooks: what the host does between two compiled chunks of a run.

The chunk loop (jaxppo.runner) runs a chunk, then calls every hook of the run in order with a `ChunkDone`. A hook
with `every = N > 0` is called only after updates N, 2N, ... and the last one, and the loop ends a chunk at each
multiple of N (so the schedule survives any resume); `every = 0` means after every chunk. A hook that raises ends
the run (the guard raises RunStopped). New after-chunk work (a population step, a video writer) is one more class
with `every`, `after_chunk` and `close`, appended to the run's list.

    hooks = [MetricsWriter(...), Guard(...), PeriodicEval(...), Checkpointer(...)]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, NamedTuple, Protocol, Sequence

import jax
import numpy as np

from jaxppo import outputs
from jaxppo.distributed import host_tree
from jaxppo.guard import RunStopped, chunk_problem


class ChunkDone(NamedTuple):
    """One finished chunk, as the hooks see it."""

    state: Any  # TrainState after the chunk, leading seed axis [S, ...]
    metrics: Any  # Metrics on the host, leaves [S, U] for the chunk's U updates
    columns: dict[str, np.ndarray]  # metrics as metrics.csv columns {name: [S, U]}
    first: int  # updates done before the chunk
    done: int  # updates done after it
    finished: bool  # done is the run's last update
    records: Any = None  # PBT: the chunk's PopulationRecord [P] (jaxppo.pbt), on the host; None otherwise


class Hook(Protocol):
    every: int  # 0: after every chunk; N: after every multiple of N updates and after the last update

    def after_chunk(self, chunk: ChunkDone) -> None: ...

    def close(self) -> None: ...


def is_due(hook: Hook, chunk: ChunkDone) -> bool:
    return not hook.every or chunk.done % hook.every == 0 or chunk.finished


def intervals(hooks: Sequence[Hook]) -> list[int]:
    """The update intervals the chunk loop must end chunks at."""
    return [hook.every for hook in hooks if hook.every]


class MetricsWriter:
    """Appends the chunk's rows to metrics.csv and feeds every seed's tracker (TensorBoard, W&B)."""

    every = 0

    def __init__(self, out: Path, loggers: list, write: bool):
        self.path, self.loggers, self.write = Path(out) / outputs.METRICS, loggers, write

    def after_chunk(self, chunk: ChunkDone) -> None:
        from jaxppo.loggers import log_metrics_history

        if self.write:
            outputs.append_metrics_csv(self.path, chunk.columns, chunk.first)
        for seed_index, logger in enumerate(self.loggers):
            log_metrics_history(logger, chunk.columns, seed=seed_index)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


class Guard:
    """Ends the run with RunStopped when the chunk went wrong (see jaxppo.guard), naming the checkpoint kept."""

    every = 0

    def __init__(self, env_id: str, kept: Callable[[], str], params_only: bool = False):
        """params_only: judge only the parameters after the chunk (a PBT population replaces members whose values
        went non-finite, so their metrics may hold NaN while the run is healthy)."""
        self.env_id, self.kept, self.params_only = env_id, kept, params_only

    def after_chunk(self, chunk: ChunkDone) -> None:
        loss_names = [outputs.leaf_name(path) for path, _ in jax.tree_util.tree_flatten_with_path(chunk.metrics.loss)[0]]
        columns, loss_names = ({}, []) if self.params_only else (chunk.columns, loss_names)
        problem = chunk_problem(self.env_id, columns, loss_names, chunk.state.params, chunk.first, chunk.done)
        if problem:
            raise RunStopped(f"training stopped: {problem}; {self.kept()}")

    def close(self) -> None:
        pass


class PeriodicEval:
    """Every `every` updates: greedy episodes of every seed's policy, appended to eval.csv and said in one line.

    The evaluation plays the training run's own agent (its environment instance included)."""

    def __init__(self, every: int, out: Path, agent: Any, num_episodes: int, num_seeds: int,
                 say: Callable[[str], None], active: bool = True, loggers: Sequence = ()):
        """active: whether this process evaluates (process 0; every process keeps the hook so that all of them end
        their chunks at the same updates); loggers: every seed's tracker (TensorBoard / W&B), which also get the
        evaluation curves (jaxppo.loggers.EVAL_METRICS)."""
        self.every, self.path, self.agent = every, Path(out) / outputs.EVAL_CSV, agent
        self.num_episodes, self.num_seeds, self.say, self.active = num_episodes, num_seeds, say, active
        self.loggers = list(loggers)
        self._evaluate = None

    def after_chunk(self, chunk: ChunkDone) -> None:
        if not self.active:
            return
        config = self.agent.config
        if self._evaluate is None:
            from jaxppo.evaluate import make_evaluate

            self._evaluate = jax.jit(jax.vmap(make_evaluate(config, num_episodes=self.num_episodes, agent=self.agent),
                                              in_axes=(0, None, 0)))
        params, normalizers = host_tree((chunk.state.params, chunk.state.normalizers))
        result = self._evaluate(params, jax.random.key(chunk.done), normalizers)
        returns, lengths = np.asarray(result.returns), np.asarray(result.lengths)
        outputs.append_eval_csv(self.path, chunk.done, chunk.done * config.batch_size, returns, lengths)
        from jaxppo.loggers import log_evaluations

        log_evaluations(self.loggers, chunk.done * config.batch_size, returns, lengths)
        self.say(f"eval after update {chunk.done}: mean return {returns.mean():.2f} over {self.num_episodes} "
                 f"episode(s) x {self.num_seeds} seed(s)")

    def close(self) -> None:
        pass


def frame_strip(frames: np.ndarray, count: int = 8) -> np.ndarray:
    """uint8 [H, count * W, 3]: `count` frames spread evenly over an episode's frames [F, H, W, 3], side by side."""
    picks = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    return np.concatenate([frames[i] for i in picks], axis=1)


class VideoWriter:
    """Every `every` updates (and after the last): one greedy episode of the first member's policy written as
    OUT/videos/update_NNNNNN.gif (jaxppo.render), on process 0. An environment without a renderer is said once and
    the hook stops; training goes on."""

    def __init__(self, every: int, out: Path, config: Any, say: Callable[[str], None], active: bool = True,
                 env: Any = None, env_params: Any = None, loggers: Sequence = ()):
        """loggers: every member's tracker; the first member's gets a strip of 8 frames of the episode as an image
        (`episode` tag; TensorBoard stores images, W&B's scalar sink skips them)."""
        self.every, self.folder, self.config, self.say, self.active = every, Path(out) / "videos", config, say, active
        self.env, self.env_params, self.loggers = env, env_params, list(loggers)

    def after_chunk(self, chunk: ChunkDone) -> None:
        if not self.active:
            return
        from jaxppo.render import episode_video, write_video

        params, normalizers = jax.tree.map(lambda x: x[0], host_tree((chunk.state.params, chunk.state.normalizers)))
        path = self.folder / f"update_{chunk.done:06d}.gif"
        try:
            video = episode_video(self.config, params, normalizers, ".gif", seed=chunk.done, env=self.env,
                                  env_params=self.env_params)
            rendered = write_video(video, path, 30)
        except ValueError as error:
            self.say(f"note: --video-every: no videos for this run ({error})")
            self.active = False
            return
        if self.loggers and video.frames is not None:
            self.loggers[0].log_image(chunk.done * self.config.batch_size, "episode", frame_strip(video.frames))
        self.say(f"video after update {chunk.done}: {path} (return {float(rendered.returns[0]):.2f})")

    def close(self) -> None:
        pass


class Checkpointer:
    """Every `every` updates (and after the last): the full state, through `save(done, state)`."""

    def __init__(self, every: int, save: Callable[[int, Any], None]):
        self.every, self.save = every, save

    def after_chunk(self, chunk: ChunkDone) -> None:
        self.save(chunk.done, chunk.state)

    def close(self) -> None:
        pass
