"""The host-side run: what `jaxppo train` does, as one library call a notebook can make too.

    result = jaxppo.runner.train_run(config, Path("runs/x"), RunOptions(num_seeds=4, checkpoint_every=50))
    result = jaxppo.runner.resume_run(Path("runs/x"))
    result = jaxppo.runner.start_or_resume(config, Path("runs/x"), options)   # idempotent: what a requeue runs

A run trains `num_seeds` seeds in one vmapped program, cut into compiled chunks (one program of K updates serves
every chunk, shorter ones included). After each chunk the loop calls the run's after-chunk hooks (jaxppo.hooks):
metrics.csv and the trackers, the non-finite guard, periodic evaluation and checkpoints on schedule (multiples of
their intervals, also after an unaligned resume). Chunks are bounded by memory (their metrics) and by time (about
CHUNK_SECONDS once the speed is known), so a stop request is honoured within about a minute whatever the total:
SIGTERM or Ctrl-C, from the start of the call to its end, finish the current chunk, write a checkpoint and return
(a second signal ends the process at once; checkpoints and files are committed atomically, so nothing is
corrupted). Resumed runs equal uninterrupted ones bitwise on CPU, files included: the state carries its own update
counter, keys, hyperparameters and normaliser statistics, and the same compiled chunk program runs both.

A resumed run checks that its folder's files (config.json, run.json, metrics.csv) and its checkpoint belong to the
same run before anything is written; an intended longer run is `resume_run(..., extend_total_timesteps=N)`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import platform
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, TextIO

import jax
import jax.numpy as jnp
import numpy as np

from jaxppo import outputs, run_folder
from jaxppo.config import RESUMABLE, PPOConfig, field, fields_with
from jaxppo.distributed import agree_on_settings, gather_json, host_tree, sync_processes
from jaxppo.footprint import METRICS_PER_UPDATE, check_eval_fits, check_fits
from jaxppo.guard import RunStopped
from jaxppo.hooks import (Checkpointer, ChunkDone, Guard, MetricsWriter, PeriodicEval, VideoWriter, intervals,
                          is_due)
from jaxppo.population import Population, PopulationRecorder, append_hparams, best_member, hparams_rows, trim_after
from jaxppo.losses import LossFn, ppo_loss
from jaxppo.compile_cache import count_hits
from jaxppo.progress import ChunkProgress, Heartbeat
from jaxppo.train import ProgressFn, default_hparams, make_train_parts

__all__ = ["RESUMABLE_OPTIONS", "ChunkedRun", "RunOptions", "RunResult", "RunStopped", "chunk_length", "next_stop",
           "resume_run", "start_or_resume", "train_run"]

DEFAULT_CHUNKS = 20
"""Without intervals, a run is cut into about this many chunks, so its files and trackers fill as it goes."""
CHUNK_SECONDS = 5.0
"""Wall time a chunk aims at once the speed is known: a stop (honoured at a chunk end) waits about this long, and
a progress line is printed after every chunk (so at least every ~5 s of training)."""
FIRST_CHUNK_UPDATES = 16
"""Updates of the first chunk of a call, before its speed is known."""
MAX_CHUNK_METRICS_BYTES = 64 * 2**20
"""The metrics a chunk keeps until it ends are bounded by this (it caps K for long runs of many seeds)."""


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How a run is executed and recorded (what is learned is the PPOConfig). Fields marked RESUMABLE may change
    when the run is resumed (`fields_with(RunOptions, RESUMABLE)`); seed and num_seeds are part of its identity."""

    seed: int = 0
    num_seeds: int = 1
    chunk_updates: int = field(0, RESUMABLE)  # 0: the smallest interval below, else about DEFAULT_CHUNKS chunks
    checkpoint_every: int = field(0, RESUMABLE)
    keep_checkpoints: int = field(3, RESUMABLE)
    eval_every: int = field(0, RESUMABLE)
    eval_episodes: int = field(10, RESUMABLE)
    video_every: int = field(0, RESUMABLE)  # 0: no videos; N: OUT/videos/update_N.gif of the first member
    tensorboard: bool = field(False, RESUMABLE)
    wandb_project: str | None = field(None, RESUMABLE)
    wandb_mode: str = field("offline", RESUMABLE)
    check_sync: bool = field(False, RESUMABLE)
    preset: str | None = None
    population: dict | None = None  # jaxppo.population.Population.to_json(): sweep settings or PBT; None: seeds only

    def validate(self) -> None:
        """ValueError naming the option and the rule."""
        for name, low in (("num_seeds", 1), ("chunk_updates", 0), ("checkpoint_every", 0), ("keep_checkpoints", 1),
                          ("eval_every", 0), ("eval_episodes", 1), ("video_every", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name}={value!r}: must be an integer >= {low}")
        if not isinstance(self.seed, int) or not 0 <= self.seed <= 2**32 - self.num_seeds:
            raise ValueError(f"seed={self.seed!r}: must be an integer in [0, 2^32 - num_seeds] (PRNG seeds are "
                             "32-bit)")
        if self.wandb_mode not in ("offline", "online", "disabled"):
            raise ValueError(f"wandb_mode={self.wandb_mode!r}: must be offline, online or disabled")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> RunOptions:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


RESUMABLE_OPTIONS = fields_with(RunOptions, RESUMABLE)
"""The options a resume may change (they do not change what is learned): declared once, on RunOptions."""


class RunResult(NamedTuple):
    """What a call of train_run / resume_run did."""

    out: Path
    config: PPOConfig
    state: Any  # TrainState with a leading seed axis
    columns: dict[str, np.ndarray]  # metrics of every update done so far, [S, U]
    updates_done: int
    finished: bool
    summary: dict[str, Any] | None  # summary.json's content when finished
    stopped_by: str | None = None  # "SIGTERM" / "SIGINT" when a stop request ended the call early


# ---------------------------------------------------------------------------------------------- chunks
class ChunkedRun:
    """One compiled init and one compiled chunk program for a population of members (member axis leading): the
    seeds of a run, a sweep's settings x seeds, or a PBT population (then every chunk ends with the exploit/explore
    steps of its whole periods, inside the program: jaxppo.pbt.make_population_chunk)."""

    def __init__(self, config: PPOConfig, num_seeds: int, chunk_updates: int, progress_fn: ProgressFn | None = None,
                 check_replicas: bool = False, env: Any = None, env_params: Any = None, loss_fn: LossFn = ppo_loss,
                 hparams: Any = None, pbt: Any = None):
        """num_seeds: members; hparams: their HParams [num_seeds] (None: the config's for every member)."""
        self.config = config
        self.num_seeds = num_seeds
        self.chunk_updates = chunk_updates
        self.parts = make_train_parts(config, env, env_params, loss_fn=loss_fn, progress_fn=progress_fn,
                                      check_replicas=check_replicas)
        self.hparams = hparams
        self.pbt = pbt
        self.compile_seconds = 0.0
        self._init = jax.jit(jax.vmap(self.parts.init, in_axes=(0, None if hparams is None else 0)))
        self._default = default_hparams(config, loss_fn)
        self._chunk: Callable | None = None
        self.last_records = None  # the PopulationRecord [P] of the last PBT chunk (None without PBT)

    def init(self, keys: jax.Array):
        """Initial state [S, ...] for keys [S]."""
        return self._init(keys, self._default if self.hparams is None else self.hparams)

    def compile(self, state) -> float:
        """Compile the chunk program for states like `state` (once); returns the seconds it took."""
        if self._chunk is None:
            parts, size = self.parts, self.chunk_updates
            if self.pbt is None:
                fn = jax.jit(jax.vmap(lambda s, n: parts.run(s, size, n), in_axes=(0, None)))
            else:
                from jaxppo.pbt import make_population_chunk

                fn = jax.jit(make_population_chunk(parts.run, self.pbt, size))
            start = time.perf_counter()
            self._chunk = fn.lower(state, jnp.int32(size)).compile()
            self.compile_seconds += time.perf_counter() - start
        return self.compile_seconds

    def run_chunk(self, state, num_updates: int) -> tuple[Any, Any, float]:
        """num_updates (<= chunk_updates) updates from state: (state, host metrics [S, num_updates], seconds)."""
        self.compile(state)
        start = time.perf_counter()
        out = jax.block_until_ready(self._chunk(state, jnp.int32(num_updates)))
        seconds = time.perf_counter() - start
        state, metrics = out[0], out[1]
        self.last_records = host_tree(out[2]) if self.pbt is not None else None
        metrics = jax.tree.map(lambda x: x[:, :num_updates], host_tree(metrics))
        return state, metrics, seconds


def chunk_length(config: PPOConfig, options: RunOptions, members: int | None = None) -> int:
    """Updates of the compiled chunk program (the longest chunk): chunk_updates, else the smallest interval, else
    about DEFAULT_CHUNKS chunks; never more than the run, nor more than MAX_CHUNK_METRICS_BYTES of metrics."""
    chosen = [n for n in (options.chunk_updates, options.checkpoint_every, options.eval_every) if n]
    default = max(1, math.ceil(config.num_updates / DEFAULT_CHUNKS))
    members = options.num_seeds if members is None else members
    memory = max(1, MAX_CHUNK_METRICS_BYTES // (4 * METRICS_PER_UPDATE * members))
    return min(min(chosen) if chosen else default, config.num_updates, memory)


class ChunkPace:
    """Updates of the next chunk: FIRST_CHUNK_UPDATES until a chunk has been timed, then as many as take about
    CHUNK_SECONDS; never more than the compiled program's `limit`."""

    def __init__(self, limit: int):
        self.limit = limit
        self.seconds_per_update: float | None = None

    def next(self) -> int:
        if self.seconds_per_update is None:
            return min(self.limit, FIRST_CHUNK_UPDATES)
        return max(1, min(self.limit, int(CHUNK_SECONDS / max(self.seconds_per_update, 1e-9))))

    def record(self, updates: int, seconds: float) -> None:
        self.seconds_per_update = seconds / max(updates, 1)


def next_stop(done: int, chunk: int, stop_at: int, every: list[int]) -> int:
    """The update count after the next chunk: a chunk ends at the next multiple of every interval in `every` (so
    checkpoints and evaluations stay on schedule after any resume), at stop_at, or after `chunk` updates."""
    return min([done + chunk, stop_at] + [(done // n + 1) * n for n in every if n])


def _agree_on_chunk(stop: bool, proposed: int) -> tuple[bool, int]:
    """(any process asked to stop, the shortest proposed chunk): every process runs the same chunks."""
    if jax.process_count() == 1:
        return stop, proposed
    everyone = gather_json([stop, proposed])
    return any(s for s, _ in everyone), min(n for _, n in everyone)


# ------------------------------------------------------------------------------------------- stop requests
class StopRequests:
    """SIGTERM / SIGINT during the block: the first sets `requested` (the run stops after its chunk), a second
    ends the process at once. Only the main thread can install handlers; elsewhere nothing is installed."""

    def __init__(self):
        self.requested: str | None = None

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequests]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

        def handle(signum, frame):
            if self.requested is not None:
                signal.signal(signum, signal.SIG_DFL)
                signal.raise_signal(signum)
            self.requested = signal.Signals(signum).name
            print(f"\n{self.requested} received: stopping after this chunk with a checkpoint (send it again to "
                  "stop at once)", file=sys.stderr, flush=True)

        for sig in previous:
            signal.signal(sig, handle)
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


# ------------------------------------------------------------------------------------------------- the run
class _Run:
    """One call of a run: the compiled program, the checkpoint store and the after-chunk hooks."""

    def __init__(self, config: PPOConfig, out: Path, options: RunOptions, quiet: bool, stream: TextIO,
                 env: Any = None, env_params: Any = None, loss_fn: LossFn = ppo_loss,
                 may_differ: tuple[str, ...] = ()):
        self.config, self.out, self.options, self.stream = config, out, options, stream
        self.env, self.env_params = env, env_params  # a custom env instance: evaluation and videos play it too
        agree_on_settings({"config": outputs.config_to_dict(config), "options": options.to_json()})
        self.lead = jax.process_index() == 0
        self.population = Population.from_json(options.population)
        self.population.validate(tuple(default_hparams(config, loss_fn).as_dict()), options.num_seeds)
        self.seeds = self.population.member_seeds(options.seed, options.num_seeds)
        members = len(self.seeds)
        self.chunk = chunk_length(config, options, members)
        if self.population.pbt is not None:  # chunks of whole periods: exploit/explore after updates K, 2K, ...
            ready = self.population.pbt.ready_updates
            self.chunk = -(-self.chunk // ready) * ready
            for name in ("checkpoint_every", "eval_every", "video_every"):
                if getattr(options, name) % ready:
                    raise ValueError(f"{name}={getattr(options, name)}: a PBT run checkpoints and evaluates between "
                                     f"exploit/explore steps; use a multiple of ready_updates={ready}")
        self.quiet = quiet
        self.progress = None if quiet or not self.lead else ChunkProgress(
            config.num_updates, config.batch_size, members, stream=stream)
        hparams = None
        if options.population is not None:
            hparams = self.population.member_hparams(default_hparams(config, loss_fn), options.num_seeds)
        # No progress callback inside the program: progress is printed between chunks, and a program without host
        # callbacks can be served from JAX's persistent compilation cache.
        self.runner = ChunkedRun(config, members, self.chunk, None, options.check_sync, env, env_params,
                                 loss_fn, hparams, self.population.pbt)
        self.agent = self.runner.parts.agent  # built once: training, evaluation and checkpoints share it
        device = jax.local_devices()[0]
        check_fits(config, self.agent.spec, members, config.num_devices, device, self.chunk)
        if options.eval_every:
            check_eval_fits(config, self.agent.spec, options.eval_episodes, members, device,
                            flag="eval_episodes")
        self.may_differ = may_differ
        self.pace = ChunkPace(self.chunk)
        self.store = None
        self.hooks: list = []
        self.train_seconds = 0.0

    def say(self, text: str) -> None:
        if self.lead:
            print(text, file=self.stream, flush=True)

    def open_store(self):
        if self.store is None:
            from jaxppo.checkpoint import CheckpointStore

            self.store = CheckpointStore(self.out / outputs.CHECKPOINTS, self.config, self.options.keep_checkpoints,
                                         self.options.seed, self.options.num_seeds, self.may_differ)
        return self.store

    def open_hooks(self, purge_step: int | None) -> None:
        """The after-chunk hooks, in order: files and trackers, guard, evaluation, checkpoint."""
        from jaxppo.loggers import make_seed_loggers

        options, loggers = self.options, []
        if self.lead and (options.tensorboard or options.wandb_project is not None):
            loggers = make_seed_loggers(self.out, self.seeds, options.tensorboard, options.wandb_project,
                                        options.wandb_mode, config=outputs.config_to_dict(self.config),
                                        purge_step=purge_step)
        pbt = self.population.pbt
        # A PBT run replaces a member that went non-finite: only non-finite parameters left after a step stop it.
        self.hooks = [MetricsWriter(self.out, loggers, self.lead),
                      Guard(self.config.env, self.kept, params_only=pbt is not None)]
        if pbt is not None:
            self.hooks.append(PopulationRecorder(self.out, pbt, self.lead))
        if options.eval_every:
            self.hooks.append(PeriodicEval(options.eval_every, self.out, self.agent, options.eval_episodes,
                                           len(self.seeds), self.say_progress, active=self.lead, loggers=loggers))
        if options.video_every:
            self.hooks.append(VideoWriter(options.video_every, self.out, self.config, self.say_progress, self.lead,
                                          self.env, self.env_params, loggers))
        if options.checkpoint_every:
            self.hooks.append(Checkpointer(options.checkpoint_every, self.save))

    def kept(self) -> str:
        """Which checkpoint a failed run leaves to resume from."""
        last = self.store.latest_step() if self.store is not None else None
        return f"last good checkpoint: update {last} in {self.store.directory}" if last else "no checkpoint was kept"

    def close(self) -> None:
        for hook in self.hooks:
            hook.close()
        if self.store is not None:
            self.store.close()

    def initial_state(self):
        keys = jax.vmap(jax.random.key)(np.asarray(self.seeds, np.uint32))
        return self.runner.init(keys)

    def say_progress(self, text: str) -> None:
        """A line that --quiet leaves out (compilation, notes on the way); errors and the final line always print."""
        if not self.quiet:
            self.say(text)

    def compile(self, state) -> None:
        what = (f"a population of {len(self.seeds)}" if self.population.pbt is not None
                else f"{len(self.seeds)} member(s)" if self.options.population else f"{len(self.seeds)} seed(s)")
        self.say_progress(f"compiling the training program for {what} ...")
        with count_hits() as hits, Heartbeat("compiling", enabled=self.lead and not self.quiet, stream=self.stream):
            seconds = self.runner.compile(state)
        self.say_progress(f"compiled in {seconds:.1f}s" + (" (from the compilation cache)" if hits.count else ""))

    def metric_names(self) -> list[str]:
        """metrics.csv's columns, from the compiled program's output (no update is run)."""
        return outputs.metric_names(self.runner._chunk.out_info[1])

    def save(self, done: int, state) -> None:
        from jaxppo.checkpoint import CheckpointError

        try:
            self.open_store().save(done, state, {"options": self.options.to_json(),
                                                 "train_seconds": self.train_seconds})
        except (CheckpointError, OSError) as error:
            raise RunStopped(f"training stopped: {error}; {self.kept()}") from None

    def loop(self, state, done: int, history: list, stop_at: int, stops: StopRequests) -> tuple[Any, int]:
        """Chunks from `done` to stop_at (or a stop request); returns (state, updates done)."""
        num_updates = self.config.num_updates
        first, timed_seconds = done, 0.0
        while done < stop_at:
            stop, size = _agree_on_chunk(stops.requested is not None, self.pace.next())
            if stop:
                break
            if self.population.pbt is not None:  # whole periods only (chunks start at multiples of K)
                ready = self.population.pbt.ready_updates
                size = max(ready, size // ready * ready)
            end = next_stop(done, size, stop_at, intervals(self.hooks))
            if self.population.pbt is not None:  # stop_after_updates is rounded up to a whole period
                end = min(num_updates, -(-end // ready) * ready)
            new_state, metrics, seconds = self.runner.run_chunk(state, end - done)
            self.pace.record(end - done, seconds)
            self.train_seconds += seconds
            timed_seconds += seconds
            columns = outputs.metrics_columns(metrics)
            history.append(columns)
            chunk = ChunkDone(new_state, metrics, columns, done, end, end == num_updates, self.runner.last_records)
            for hook in self.hooks:
                if is_due(hook, chunk):
                    hook.after_chunk(chunk)
            if self.progress is not None:
                self.progress.report(end, columns["episode_return"][:, -1], timed_seconds, end - first)
            state, done = new_state, end
        return state, done

    def finish(self, state, history: list, done: int) -> dict[str, Any]:
        columns = concat_columns(history)
        config, options = self.config, self.options
        params, normalizers = host_tree((state.params, state.normalizers))
        outputs.write_metrics_csv(self.out / outputs.METRICS, columns)
        outputs.write_params(self.out / outputs.PARAMS, params, normalizers, config)
        per_seed = outputs.final_returns(columns["episode_return"])
        env_steps = config.num_env_steps
        summary = {
            "env": config.env,
            "total_timesteps": config.total_timesteps,
            "env_steps": env_steps,
            "num_updates": config.num_updates,
            "rounding": config.rounding_note or "exact",
            "num_seeds": len(self.seeds),
            "seeds": self.seeds,
            "final_return": outputs.finite_or_none(float(np.nanmean(per_seed)) if np.isfinite(per_seed).any()
                                                   else math.nan),
            "final_return_per_seed": [outputs.finite_or_none(float(r)) for r in per_seed],
            "final_return_window_updates": min(outputs.FINAL_WINDOW, config.num_updates),
            "compile_seconds": self.runner.compile_seconds,
            "train_seconds": self.train_seconds,
            "steps_per_second": env_steps * len(self.seeds) / max(self.train_seconds, 1e-9),
            "backend": jax.default_backend(),
            "devices_per_process": config.num_devices,
            "num_processes": jax.process_count(),
            "devices": [str(d) for d in jax.local_devices()[: config.num_devices]],
            "machine": f"{platform.machine()} {platform.system()}",
        }
        if "replicas_in_sync" in columns:
            summary["replicas_in_sync"] = bool(np.all(columns["replicas_in_sync"]))
        if options.population is not None:
            varied = self.population.varied()
            hparams = host_tree(state.hparams)
            summary["members"] = [{"seed": seed, **{name: float(getattr(hparams, name)[m]) for name in varied}}
                                  for m, seed in enumerate(self.seeds)]
            summary["best_member"] = best_member(per_seed)
        outputs.write_summary(self.out, summary)
        final = summary["final_return"]
        window = summary["final_return_window_updates"]
        self.say(f"done: final return {final if final is None else round(final, 2)} (mean of the last {window} "
                 f"updates) over {len(self.seeds)} "
                 f"seed(s), {summary['steps_per_second']:,.0f} env steps/s (compile "
                 f"{self.runner.compile_seconds:.1f}s, train {self.train_seconds:.1f}s) -> {self.out}")
        return summary


def concat_columns(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Join metric columns ({name: [S, U_i]}) along the update axis."""
    return {name: np.concatenate([p[name] for p in parts], axis=1) for name in parts[0]}


def _execute(run: _Run, state, done: int, history: list, stop_after: int | None, stops: StopRequests) -> RunResult:
    stop_at = run.config.num_updates if stop_after is None else min(run.config.num_updates, done + stop_after)
    try:
        state, done = run.loop(state, done, history, stop_at, stops)
        finished = done == run.config.num_updates
        saved = run.store.latest_step() if run.store is not None else None
        if not finished and saved != done:
            run.save(done, state)  # stopped between checkpoints (a request, stop_after_updates): keep the place
        summary = run.finish(state, history, done) if finished and run.lead else None
    finally:
        run.close()
    if not finished:
        reason = f"{stops.requested} received: " if stops.requested else ""
        run.say(f"{reason}stopped after update {done}/{run.config.num_updates}; continue with: jaxppo train "
                f"--resume {run.out}")
    return RunResult(run.out, run.config, state, concat_columns(history) if history else {}, done, finished,
                     summary, stops.requested)


def _check_call(options: RunOptions, stop_after_updates: int | None) -> None:
    """The checks every call makes before anything happens: options, stop_after_updates, the tracker's package."""
    import importlib.util

    options.validate()
    if stop_after_updates is not None and (not isinstance(stop_after_updates, int) or
                                           isinstance(stop_after_updates, bool) or stop_after_updates < 1):
        raise ValueError(f"stop_after_updates={stop_after_updates!r}: must be a positive integer")
    if options.wandb_project is not None and importlib.util.find_spec("wandb") is None:
        raise ValueError("--wandb-project: the wandb package is not installed; pip install 'jaxppo[wandb]' or drop "
                         "the flag (--tensorboard needs no extra)")


def train_run(config: PPOConfig, out: Path, options: RunOptions = RunOptions(), *, overwrite: bool = False,
              stop_after_updates: int | None = None, quiet: bool = False, stream: TextIO | None = None,
              env: Any = None, env_params: Any = None, loss_fn: LossFn = ppo_loss,
              _replaceable: tuple[str, ...] = ()) -> RunResult:
    """Train config for options.num_seeds seeds, writing the run folder `out` (see the module docstring).

    env/env_params: an environment instance for config.env (else built from the id; env='custom' needs one, and
    so do evaluating, resuming and loading the run); loss_fn: the loss of the update (jaxppo.losses.LossFn; its
    metrics pytree becomes metrics.csv columns named by path). stop_after_updates: end after that many updates
    with a checkpoint (resume later).

    Raises ValueError (bad options, config, folder or layout: before anything is removed or written),
    RunStopped (the run failed; earlier checkpoints kept).
    """
    _check_call(options, stop_after_updates)
    stream = sys.stdout if stream is None else stream
    out = Path(out)
    stops = StopRequests()
    with stops.installed():
        if jax.process_index() == 0:
            run_folder.check_new_run(out, "train", overwrite, _replaceable)
        run = _Run(config, out, options, quiet, stream, env, env_params, loss_fn)  # builds the agent: env, layout
        with _lead_claim(out, overwrite, _replaceable) as lead:
            if lead:
                if config.rounding_note:
                    run.say_progress(f"note: {config.rounding_note}")
                outputs.write_json(out / outputs.CONFIG, outputs.config_to_dict(config))
                outputs.write_json(out / outputs.RUN, {"kind": "train", **options.to_json()})
            state = run.initial_state()
            if lead and run.population.varied():
                names = run.population.varied()
                append_hparams(out, names, hparams_rows(0, names, host_tree(state.hparams)))
            run.compile(state)
            run.open_hooks(None)
            return _execute(run, state, 0, [], stop_after_updates, stops)


def _saved_options(out: Path) -> RunOptions:
    """The RunOptions in out/run.json (OutputError naming the file when it is not a training run's)."""
    saved = outputs.read_json(out / outputs.RUN, "run settings")
    if saved.get("kind", "train") != "train":
        raise run_folder.RunFolderError(f"--resume {out}: holds a {saved.get('kind')} run, not a training run")
    missing = [name for name in ("seed", "num_seeds") if name not in saved]
    if missing:
        raise outputs.OutputError(f"{out / outputs.RUN} is invalid: it has no {', '.join(missing)}")
    try:
        options = RunOptions.from_json(saved)
        options.validate()
    except (TypeError, ValueError) as error:
        raise outputs.OutputError(f"{out / outputs.RUN} is invalid: {error}") from None
    return options


def _extended(config: PPOConfig, total_timesteps: int) -> tuple[PPOConfig, str]:
    """(config with the longer total, the note saying what happens to schedules); ValueError unless longer."""
    if isinstance(total_timesteps, bool) or not isinstance(total_timesteps, int) or \
            total_timesteps <= config.total_timesteps:
        raise ValueError(f"extend_total_timesteps={total_timesteps!r}: must be an integer above the run's "
                         f"total_timesteps={config.total_timesteps}")
    longer = dataclasses.replace(config, total_timesteps=total_timesteps)
    if longer.num_updates == config.num_updates:
        raise ValueError(f"extend_total_timesteps={total_timesteps}: adds no whole update of {config.batch_size} "
                         "env steps")
    note = (f"note: total_timesteps {config.total_timesteps} -> {total_timesteps}: the run continues to "
            f"{longer.num_updates} updates instead of {config.num_updates}; schedules over the run's length (lr "
            f"annealing, linear/cosine schedules, warm-up fractions) now span {longer.num_updates} updates, so from "
            "here on their values are those of the longer run at the same update (an annealed lr rises back)")
    return longer, note


def resume_run(out: Path, *, stop_after_updates: int | None = None, quiet: bool = False,
               stream: TextIO | None = None, overrides: dict[str, Any] | None = None,
               num_devices: int | None = None, loss_fn: LossFn = ppo_loss, env: Any = None, env_params: Any = None,
               extend_total_timesteps: int | None = None, restart_without_checkpoint: bool = False) -> RunResult:
    """Continue the run in folder `out` from its newest intact checkpoint, with its saved config and options.

    The checkpoint must belong to the folder's run (its config.json and run.json: every config field but the
    layout, seed and num_seeds); otherwise one ValueError names each field with both values, before anything is
    written. A run trained with a custom loss_fn or an environment instance (env='custom', env/env_params) must be
    resumed with the same ones (they are code: the folder cannot hold them).

    overrides may change the options in RESUMABLE_OPTIONS (tensorboard, wandb_*, eval_*, keep_checkpoints,
    checkpoint_every, chunk_updates, check_sync); anything else is refused. num_devices (per process) and the
    number of processes may differ from the saved run's (elastic resume): counts are global and the state is laid
    out by global environment index, so the run continues the same learning on the new layout.

    extend_total_timesteps: train the run on to this larger total (also a finished run whose last update was
    checkpointed). Schedules over the run's length then span the longer run (a note says so); config.json and
    run.json record the extension.

    restart_without_checkpoint: a run stopped before its first checkpoint starts over from update 0 (what
    `start_or_resume` does) instead of being refused.
    """
    out = Path(out)
    stream = sys.stdout if stream is None else stream
    if not out.is_dir():
        raise run_folder.RunFolderError(f"--resume {out}: not a folder holding a run")
    run_folder.check_no_links(out, "train")
    config = outputs.read_config(out)
    options = _saved_options(out)
    refused = sorted(set(overrides or {}) - set(RESUMABLE_OPTIONS))
    if refused:
        raise ValueError(f"--resume {out}: {', '.join(refused)} cannot change when resuming (the saved run is "
                         "continued as it was); drop them")
    options = dataclasses.replace(options, **(overrides or {}))
    _check_call(options, stop_after_updates)
    if num_devices is not None:
        config = dataclasses.replace(config, num_devices=num_devices)
    note, may_differ = None, ()
    if extend_total_timesteps is not None:
        config, note = _extended(config, extend_total_timesteps)
        may_differ = ("total_timesteps",)
    finished = (out / outputs.SUMMARY).exists() and (out / outputs.PARAMS).exists()
    if finished and note is None:
        print(f"{out}: the run has already finished ({config.num_updates} updates); nothing to resume",
              file=stream, flush=True)
        return RunResult(out, config, None, {}, config.num_updates, True, outputs.read_json(out / outputs.SUMMARY))
    stops = StopRequests()
    with stops.installed():
        run = _Run(config, out, options, quiet, stream, env, env_params, loss_fn, may_differ)
        with run_folder.run_lock(out) if run.lead else contextlib.nullcontext():
            try:
                state, done, history, purge = _restore(run, restart_without_checkpoint, note, extend_total_timesteps)
            except BaseException:
                run.close()
                raise
            run.say_progress(f"resuming {out} after update {done}/{config.num_updates}")
            run.open_hooks(purge)
            return _execute(run, state, done, history, stop_after_updates, stops)


def _restore(run: _Run, restart_without_checkpoint: bool, note: str | None,
             extend_total_timesteps: int | None) -> tuple[Any, int, list, int | None]:
    """Restore the newest intact checkpoint of the run and bring its files back to that update: (state, updates
    done, metrics history, TensorBoard purge step). Everything is checked before the first file is changed."""
    out, config = run.out, run.config
    state = run.initial_state()
    store = run.open_store()
    if restart_without_checkpoint and not store.steps():
        done, meta = 0, {}
        run.say_progress(f"note: {out} holds no checkpoint yet; starting its run over from update 0")
    else:
        restored = store.restore_latest(state)
        for line in restored.skipped:
            run.say(f"warning: {line}; using an older checkpoint")
        if restored.skipped_steps:
            if run.lead:
                for step in restored.skipped_steps:
                    run.say(f"note: the damaged checkpoint was kept as {store.set_aside(step)}")
            sync_processes("jaxppo-set-aside")
            store.reload()
        state, done, meta = restored.state, restored.step, restored.meta
    run.train_seconds = float(meta.get("train_seconds", 0.0))
    if note is not None and done < config.num_updates and (out / outputs.SUMMARY).exists():
        raise ValueError(f"extend_total_timesteps: {out} finished without a checkpoint of its last update (train "
                         f"with --checkpoint-every to extend a run later); its newest checkpoint is update {done}")
    run.compile(state)  # the compiled program names metrics.csv's columns
    history: list = []
    if run.lead:
        metrics_path = out / outputs.METRICS
        if done:
            columns = outputs.read_metrics_csv(metrics_path, config.num_updates)
            outputs.check_metrics_columns(metrics_path, columns, run.metric_names(), len(run.seeds))
            if columns["env_steps"].shape[1] < done:
                raise outputs.OutputError(f"{metrics_path} has fewer than the {done} updates of the checkpoint; it "
                                          "is damaged")
            history.append({name: values[:, :done] for name, values in columns.items()})
        # Checked: now the files go back to the checkpoint's update (rows logged after it are logged again).
        if note is not None:
            run.say(note)
            for name in (outputs.SUMMARY, outputs.PARAMS, outputs.PARAMS + ".sha256"):
                (out / name).unlink(missing_ok=True)
            saved = outputs.read_json(out / outputs.RUN, "run settings")
            extended = saved.get("extended", []) + [{"at_update": done, "total_timesteps": extend_total_timesteps}]
            outputs.write_json(out / outputs.CONFIG, outputs.config_to_dict(config))
            outputs.write_json(out / outputs.RUN, {**saved, "extended": extended})
        if history:
            outputs.write_metrics_csv(metrics_path, history[0])
        else:
            metrics_path.unlink(missing_ok=True)
        outputs.trim_eval_csv(out / outputs.EVAL_CSV, done)
        trim_after(out, done)
    purge = done * config.batch_size + 1 if done else (1 if restart_without_checkpoint else None)
    return state, done, history, purge


def start_or_resume(config: PPOConfig, out: Path, options: RunOptions = RunOptions(), *,
                    stop_after_updates: int | None = None, quiet: bool = False, stream: TextIO | None = None,
                    env: Any = None, env_params: Any = None, loss_fn: LossFn = ppo_loss) -> RunResult:
    """Start the run in `out`, or continue it if `out` already holds it: one idempotent call (`jaxppo train ...
    --resume auto`), for a job that may be requeued or killed at any moment (a SLURM --requeue script, a restarted
    Kubernetes Job). Whatever the moment of the kill, calling it again with the same arguments continues the run,
    every update logged once; a finished run is left as it is.

    The folder's run must be this one: every config field but the layout, seed and num_seeds equal to the given
    ones (ValueError naming each field with both values otherwise); options in RESUMABLE_OPTIONS and num_devices
    may differ and take the given values.
    """
    out = Path(out)
    _check_call(options, stop_after_updates)
    if not run_folder.holds_run(out, "train"):
        # A folder left by a kill before the run was recorded holds at most its config.json / run.json.
        return train_run(config, out, options, stop_after_updates=stop_after_updates, quiet=quiet, stream=stream,
                         env=env, env_params=env_params, loss_fn=loss_fn,
                         _replaceable=(outputs.CONFIG, outputs.RUN))
    saved_config, saved = outputs.read_config(out), _saved_options(out)
    mine, theirs = outputs.config_to_dict(config), outputs.config_to_dict(saved_config)
    differing = [f"{name} (saved {theirs[name]!r}, given {mine[name]!r})" for name in mine
                 if name not in outputs.LAYOUT_FIELDS and mine[name] != theirs[name]]
    differing += [f"{name} (saved {getattr(saved, name)!r}, given {getattr(options, name)!r})"
                  for name in ("seed", "num_seeds") if getattr(saved, name) != getattr(options, name)]
    if differing:
        longer = " (to train longer: --resume DIR --extend-total-timesteps N)" if "total_timesteps (" in \
            "".join(differing) else ""
        raise ValueError(f"--resume auto: {out} holds a run started with other settings: {', '.join(differing)}; "
                         f"give the same flags, or another --out{longer}")
    overrides = {name: getattr(options, name) for name in RESUMABLE_OPTIONS
                 if getattr(options, name) != getattr(saved, name)}
    num_devices = config.num_devices if config.num_devices != saved_config.num_devices else None
    return resume_run(out, stop_after_updates=stop_after_updates, quiet=quiet, stream=stream, overrides=overrides,
                      num_devices=num_devices, loss_fn=loss_fn, env=env, env_params=env_params,
                      restart_without_checkpoint=True)


@contextlib.contextmanager
def _lead_claim(out: Path, overwrite: bool, replaceable: tuple[str, ...] = ()) -> Iterator[bool]:
    """Process 0 claims (checks, locks, clears) the run folder; other processes write nothing."""
    if jax.process_index() != 0:
        yield False
        return
    with run_folder.claim_run_folder(out, "train", overwrite, replaceable):
        yield True
