"""The host-side run: what `jaxppo train` does, as one library call a notebook can make too.

    result = jaxppo.runner.train_run(config, Path("runs/x"), RunOptions(num_seeds=4, checkpoint_every=50))
    result = jaxppo.runner.resume_run(Path("runs/x"))

A run trains `num_seeds` seeds in one vmapped program, cut into compiled chunks of K updates (one program serves
every chunk, shorter ones included). After each chunk the host appends metrics.csv, feeds TensorBoard / W&B,
guards against non-finite values, evaluates and checkpoints on schedule (multiples of the intervals, also after
an unaligned resume), and honours a stop request: SIGTERM or Ctrl-C finish the chunk, write a checkpoint and return
(a second signal ends the process at once; checkpoints are committed atomically, so nothing is corrupted).
Resumed runs equal uninterrupted ones bitwise on CPU: the state carries its own update counter, keys and
normaliser statistics, and the same compiled chunk program runs both.
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
from jaxppo.config import HParams, PPOConfig
from jaxppo.footprint import check_fits
from jaxppo.loggers import log_metrics_history, make_seed_loggers
from jaxppo.progress import ProgressPrinter
from jaxppo.losses import LossFn, ppo_loss
from jaxppo.train import ProgressFn, make_train_parts

DEFAULT_CHUNKS = 20
"""Without intervals, a run is cut into about this many chunks, so its files and trackers fill as it goes."""

GUARDED = ("grad_norm", "learning_rate", "explained_variance")
"""Metrics checked for NaN/Inf after every chunk, besides every loss metric (episode returns may legitimately be
NaN before the first episode ends)."""


class RunStopped(RuntimeError):
    """Training stopped because something went wrong (non-finite values, replicas out of sync, an env without a
    legal action); the message says what, where, and which checkpoint was kept."""


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How a run is executed and recorded (what is learned is the PPOConfig)."""

    seed: int = 0
    num_seeds: int = 1
    chunk_updates: int = 0  # 0: the smallest interval below, else about DEFAULT_CHUNKS chunks
    checkpoint_every: int = 0
    keep_checkpoints: int = 3
    eval_every: int = 0
    eval_episodes: int = 10
    tensorboard: bool = False
    wandb_project: str | None = None
    wandb_mode: str = "offline"
    check_sync: bool = False
    preset: str | None = None

    def validate(self) -> None:
        """ValueError naming the option and the rule."""
        for name, low in (("num_seeds", 1), ("chunk_updates", 0), ("checkpoint_every", 0), ("keep_checkpoints", 1),
                          ("eval_every", 0), ("eval_episodes", 1)):
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
    """One compiled init and one compiled chunk program for num_seeds seeds (seed axis leading)."""

    def __init__(self, config: PPOConfig, num_seeds: int, chunk_updates: int, progress_fn: ProgressFn | None = None,
                 check_replicas: bool = False, env: Any = None, env_params: Any = None, loss_fn: LossFn = ppo_loss):
        self.config = config
        self.num_seeds = num_seeds
        self.chunk_updates = chunk_updates
        self.parts = make_train_parts(config, env, env_params, loss_fn=loss_fn, progress_fn=progress_fn,
                                      check_replicas=check_replicas)
        self.hparams = HParams.from_config(config)
        self.compile_seconds = 0.0
        self._init = jax.jit(jax.vmap(self.parts.init))
        self._chunk: Callable | None = None

    def init(self, keys: jax.Array):
        """Initial state [S, ...] for keys [S]."""
        return self._init(keys)

    def compile(self, state) -> float:
        """Compile the chunk program for states like `state` (once); returns the seconds it took."""
        if self._chunk is None:
            parts, size = self.parts, self.chunk_updates
            fn = jax.jit(jax.vmap(lambda s, hp, n: parts.run(s, hp, size, n), in_axes=(0, None, None)))
            start = time.perf_counter()
            self._chunk = fn.lower(state, self.hparams, jnp.int32(size)).compile()
            self.compile_seconds += time.perf_counter() - start
        return self.compile_seconds

    def run_chunk(self, state, num_updates: int) -> tuple[Any, Any, float]:
        """num_updates (<= chunk_updates) updates from state: (state, host metrics [S, num_updates], seconds)."""
        self.compile(state)
        start = time.perf_counter()
        state, metrics = jax.block_until_ready(self._chunk(state, self.hparams, jnp.int32(num_updates)))
        seconds = time.perf_counter() - start
        metrics = jax.tree.map(lambda x: x[:, :num_updates], host_tree(metrics))
        return state, metrics, seconds


def host_tree(tree):
    """Device arrays -> numpy; replicated arrays of a multi-process run are read from a local replica."""

    def leaf(x):
        return np.asarray(x if getattr(x, "is_fully_addressable", True) else x.addressable_data(0))

    return jax.tree.map(leaf, tree)


def chunk_length(config: PPOConfig, options: RunOptions) -> int:
    """Updates per compiled chunk: chunk_updates, else the smallest interval, else about DEFAULT_CHUNKS chunks."""
    chosen = [n for n in (options.chunk_updates, options.checkpoint_every, options.eval_every) if n]
    default = max(1, math.ceil(config.num_updates / DEFAULT_CHUNKS))
    return min(min(chosen) if chosen else default, config.num_updates)


def next_stop(done: int, config: PPOConfig, options: RunOptions, chunk: int, stop_at: int) -> int:
    """The update count after the next chunk: a chunk ends at the next multiple of every interval (so checkpoints
    and evaluations stay on schedule after any resume), at stop_at, or after `chunk` updates."""
    candidates = [done + chunk, stop_at, config.num_updates]
    for interval in (options.checkpoint_every, options.eval_every):
        if interval:
            candidates.append((done // interval + 1) * interval)
    return min(candidates)


def find_nonfinite(metrics: dict[str, np.ndarray], loss_names: list[str], first_update: int) -> str | None:
    """A message naming the first update and metric that is not finite, else None."""
    for name in list(loss_names) + [n for n in GUARDED if n in metrics]:
        values = np.asarray(metrics[name])
        bad = np.argwhere(~np.isfinite(values))
        if bad.size:
            seed, update = bad[0]
            return (f"non-finite {name} ({values[seed, update]}) at update {first_update + update + 1} "
                    f"(seed index {seed})")
    return None


def nonfinite_params(params: Any, after_update: int) -> str | None:
    """A message naming the first parameter array holding NaN/Inf (reduced on the device), else None."""
    finite = host_tree(jax.tree.map(lambda x: jnp.all(jnp.isfinite(x)), params))
    for path, leaf in jax.tree_util.tree_flatten_with_path(finite)[0]:
        if not leaf:
            return f"non-finite parameters {jax.tree_util.keystr(path)} after update {after_update}"
    return None


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


def sync_processes(name: str) -> None:
    """Wait until every process of a multi-host run got here (no-op on one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def agree_across_processes(flag: bool) -> bool:
    """True if any process raised flag (every process must stop after the same chunk)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray([flag], np.int32))))


def agree_on_settings(config: PPOConfig, options: RunOptions) -> None:
    """Every process of a multi-host run must train the same config with the same options: ValueError naming
    the fields that differ from process 0's (checked once, right after joining)."""
    if jax.process_count() == 1:
        return
    import json

    from jax.experimental import multihost_utils

    mine = {"config": outputs.config_to_dict(config), "options": options.to_json()}
    text = json.dumps(mine, sort_keys=True).encode()
    size = 1 << max(12, (len(text) + 4).bit_length())
    sizes = np.asarray(multihost_utils.process_allgather(np.asarray([size], np.int32))).reshape(-1)
    buffer = np.zeros(int(sizes.max()), np.uint8)
    buffer[:4] = np.frombuffer(np.int32(len(text)).tobytes(), np.uint8)
    buffer[4:4 + len(text)] = np.frombuffer(text, np.uint8)
    everyone = np.asarray(multihost_utils.process_allgather(buffer)).reshape(jax.process_count(), -1)
    decoded = [json.loads(row[4:4 + int(np.frombuffer(row[:4].tobytes(), np.int32)[0])].tobytes()) for row in everyone]
    reference = decoded[0]
    for process, other in enumerate(decoded[1:], start=1):
        differing = [f"{part}.{name} (process 0: {reference[part].get(name)!r}, process {process}: "
                     f"{other[part].get(name)!r})" for part in ("config", "options")
                     for name in sorted(set(reference[part]) | set(other[part]))
                     if reference[part].get(name) != other[part].get(name)]
        if differing:
            raise ValueError(f"the processes of this run were started with different settings: "
                             f"{', '.join(differing)}; start every process with the same flags")


# ------------------------------------------------------------------------------------------------- the run
class _Run:
    """One call of a run: the pieces the chunk loop needs."""

    def __init__(self, config: PPOConfig, out: Path, options: RunOptions, quiet: bool, stream: TextIO,
                 env: Any = None, env_params: Any = None, loss_fn: LossFn = ppo_loss):
        self.config, self.out, self.options, self.stream = config, out, options, stream
        agree_on_settings(config, options)
        self.lead = jax.process_index() == 0
        self.seeds = list(range(options.seed, options.seed + options.num_seeds))
        self.chunk = chunk_length(config, options)
        printer = None if quiet or not self.lead else ProgressPrinter(
            config.num_updates, config.batch_size, num_seeds=options.num_seeds, stream=stream)
        self.runner = ChunkedRun(config, options.num_seeds, self.chunk, printer, options.check_sync, env, env_params,
                                 loss_fn)
        check_fits(config, self.runner.parts.agent.spec, options.num_seeds, config.num_devices,
                   jax.local_devices()[0])
        self.store = None
        self.loggers: list = []
        self.evaluate = None
        self.train_seconds = 0.0

    def say(self, text: str) -> None:
        if self.lead:
            print(text, file=self.stream, flush=True)

    def open_store(self):
        if self.store is None:
            from jaxppo.checkpoint import CheckpointStore

            self.store = CheckpointStore(self.out / outputs.CHECKPOINTS, self.config, self.options.keep_checkpoints)
        return self.store

    def open_loggers(self, purge_step: int | None) -> None:
        if self.lead and (self.options.tensorboard or self.options.wandb_project is not None):
            self.loggers = make_seed_loggers(self.out, self.seeds, self.options.tensorboard,
                                             self.options.wandb_project, self.options.wandb_mode,
                                             config=outputs.config_to_dict(self.config), purge_step=purge_step)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()
        if self.store is not None:
            self.store.close()

    def initial_state(self):
        keys = jax.vmap(jax.random.key)(np.asarray(self.seeds, np.uint32))
        return self.runner.init(keys)

    def compile(self, state) -> None:
        self.say(f"compiling the training program for {self.options.num_seeds} seed(s) ...")
        seconds = self.runner.compile(state)
        self.say(f"compiled in {seconds:.1f}s")

    def periodic_eval(self, state, update: int) -> None:
        if self.evaluate is None:
            from jaxppo.evaluate import make_evaluate

            self.evaluate = jax.jit(jax.vmap(make_evaluate(self.config, num_episodes=self.options.eval_episodes),
                                             in_axes=(0, None, 0)))
        params, normalizers = host_tree((state.params, state.normalizers))
        result = self.evaluate(params, jax.random.key(update), normalizers)
        returns, lengths = np.asarray(result.returns), np.asarray(result.lengths)
        outputs.append_eval_csv(self.out / outputs.EVAL_CSV, update, update * self.config.batch_size, returns,
                                lengths)
        self.say(f"eval after update {update}: mean return {returns.mean():.2f} over {self.options.eval_episodes} "
                 f"episode(s) x {self.options.num_seeds} seed(s)")

    def save(self, done: int, state) -> None:
        self.open_store().save(done, state, {"options": self.options.to_json(),
                                             "train_seconds": self.train_seconds})

    def loop(self, state, done: int, history: list, stop_at: int, stops: StopRequests) -> tuple[Any, int]:
        """Chunks from `done` to stop_at; returns (state, updates done)."""
        config, options = self.config, self.options
        while done < stop_at:
            end = next_stop(done, config, options, self.chunk, stop_at)
            new_state, metrics, seconds = self.runner.run_chunk(state, end - done)
            columns = outputs.metrics_columns(metrics)
            if self.lead:
                outputs.append_metrics_csv(self.out / outputs.METRICS, columns, done)
                for seed_index, logger in enumerate(self.loggers):
                    log_metrics_history(logger, columns, seed=seed_index)
            self.guard(metrics, columns, new_state, done, end)
            state, done = new_state, end
            self.train_seconds += seconds
            history.append(columns)
            finished = done == config.num_updates
            if options.eval_every and self.lead and (done % options.eval_every == 0 or finished):
                self.periodic_eval(state, done)
            if options.checkpoint_every and (done % options.checkpoint_every == 0 or finished):
                self.save(done, state)
            if agree_across_processes(stops.requested is not None) and not finished:
                break
        return state, done

    def guard(self, metrics, columns: dict[str, np.ndarray], state, done: int, end: int) -> None:
        problem = find_nonfinite(columns, _loss_columns(metrics), done) or nonfinite_params(state.params, end)
        if problem is None and "invalid_action_masks" in columns and np.any(columns["invalid_action_masks"] > 0):
            seed, update = np.argwhere(columns["invalid_action_masks"] > 0)[0]
            problem = (f"env {self.config.env} returned an action mask with no legal action in update "
                       f"{done + update + 1} (seed index {seed}); every observation needs at least one legal action")
        if problem is None and "replicas_in_sync" in columns and not np.all(columns["replicas_in_sync"]):
            seed, update = np.argwhere(~columns["replicas_in_sync"].astype(bool))[0]
            problem = f"parameters differ across devices after update {done + update + 1} (seed index {seed})"
        if problem:
            last = self.store.latest_step() if self.store is not None else None
            kept = (f"last good checkpoint: update {last} in {self.store.directory}" if last
                    else "no checkpoint was kept")
            raise RunStopped(f"training stopped: {problem}; {kept}")

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
            "num_seeds": options.num_seeds,
            "seeds": self.seeds,
            "final_return": outputs.finite_or_none(float(np.nanmean(per_seed)) if np.isfinite(per_seed).any()
                                                   else math.nan),
            "final_return_per_seed": [outputs.finite_or_none(float(r)) for r in per_seed],
            "final_return_window_updates": min(outputs.FINAL_WINDOW, config.num_updates),
            "compile_seconds": self.runner.compile_seconds,
            "train_seconds": self.train_seconds,
            "steps_per_second": env_steps * options.num_seeds / max(self.train_seconds, 1e-9),
            "backend": jax.default_backend(),
            "devices_per_process": config.num_devices,
            "num_processes": jax.process_count(),
            "devices": [str(d) for d in jax.local_devices()[: config.num_devices]],
            "machine": f"{platform.machine()} {platform.system()}",
        }
        if "replicas_in_sync" in columns:
            summary["replicas_in_sync"] = bool(np.all(columns["replicas_in_sync"]))
        outputs.write_summary(self.out, summary)
        final = summary["final_return"]
        self.say(f"done: final return {final if final is None else round(final, 2)} over {options.num_seeds} "
                 f"seed(s), {summary['steps_per_second']:,.0f} env steps/s (compile "
                 f"{self.runner.compile_seconds:.1f}s, train {self.train_seconds:.1f}s) -> {self.out}")
        return summary


def _loss_columns(metrics) -> list[str]:
    """Column names of the loss metrics (as outputs.metrics_columns names them)."""
    return [outputs.leaf_name(path) for path, _ in jax.tree_util.tree_flatten_with_path(metrics.loss)[0]]


def concat_columns(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Join metric columns ({name: [S, U_i]}) along the update axis."""
    return {name: np.concatenate([p[name] for p in parts], axis=1) for name in parts[0]}


def _execute(run: _Run, state, done: int, history: list, stop_after: int | None) -> RunResult:
    stop_at = run.config.num_updates if stop_after is None else min(run.config.num_updates, done + stop_after)
    stops = StopRequests()
    try:
        with stops.installed():
            state, done = run.loop(state, done, history, stop_at, stops)
        finished = done == run.config.num_updates
        saved = run.store.latest_step() if run.store is not None else None
        if not finished and saved != done and (run.options.checkpoint_every or stops.requested or stop_after):
            run.save(done, state)  # stopped between checkpoints: keep the place
        summary = run.finish(state, history, done) if finished and run.lead else None
    finally:
        run.close()
    if not finished:
        reason = f"{stops.requested} received: " if stops.requested else ""
        run.say(f"{reason}stopped after update {done}/{run.config.num_updates}; continue with: jaxppo train "
                f"--resume {run.out}")
    return RunResult(run.out, run.config, state, concat_columns(history) if history else {}, done, finished,
                     summary, stops.requested)


def train_run(config: PPOConfig, out: Path, options: RunOptions = RunOptions(), *, overwrite: bool = False,
              stop_after_updates: int | None = None, quiet: bool = False, stream: TextIO | None = None,
              env: Any = None, env_params: Any = None, loss_fn: LossFn = ppo_loss) -> RunResult:
    """Train config for options.num_seeds seeds, writing the run folder `out` (see the module docstring).

    env/env_params: an environment instance for config.env (else built from the id); loss_fn: the loss of the
    update (jaxppo.losses.LossFn; its metrics pytree becomes metrics.csv columns named by path).

    Raises ValueError (bad options, config, folder or layout: before anything is removed or written),
    RunStopped (the run failed; earlier checkpoints kept).
    """
    options.validate()
    if stop_after_updates is not None and (not isinstance(stop_after_updates, int) or stop_after_updates < 1):
        raise ValueError(f"stop_after_updates={stop_after_updates!r}: must be a positive integer")
    if stop_after_updates is not None and not options.checkpoint_every:
        raise ValueError("stop_after_updates: needs checkpoint_every N so the run can be resumed")
    _check_tracker(options)
    stream = sys.stdout if stream is None else stream
    out = Path(out)
    if jax.process_index() == 0:
        run_folder.check_new_run(out, "train", overwrite)
    run = _Run(config, out, options, quiet, stream, env, env_params, loss_fn)  # builds the agent: env, layout
    with _lead_claim(out, overwrite) as lead:
        if lead:
            if config.rounding_note:
                run.say(f"note: {config.rounding_note}")
            outputs.write_json(out / outputs.CONFIG, outputs.config_to_dict(config))
            outputs.write_json(out / outputs.RUN, {"kind": "train", **options.to_json()})
        state = run.initial_state()
        run.compile(state)
        run.open_loggers(None)
        return _execute(run, state, 0, [], stop_after_updates)


def resume_run(out: Path, *, stop_after_updates: int | None = None, quiet: bool = False,
               stream: TextIO | None = None, overrides: dict[str, Any] | None = None,
               num_devices: int | None = None, loss_fn: LossFn = ppo_loss) -> RunResult:
    """Continue the run in folder `out` from its newest intact checkpoint, with its saved config and options.

    A run trained with a custom loss_fn must be resumed with the same loss_fn (it is code: the folder cannot hold it).

    overrides may change options that do not alter what is learned (tensorboard, wandb_*, eval_*,
    keep_checkpoints, checkpoint_every, chunk_updates, check_sync); anything else is refused. num_devices (per
    process) and the number of processes may differ from the saved run's (elastic resume): counts are global and
    the state is laid out by global environment index, so the run continues the same learning on the new layout.
    """
    out = Path(out)
    stream = sys.stdout if stream is None else stream
    if not out.is_dir():
        raise run_folder.RunFolderError(f"--resume {out}: not a folder holding a run")
    run_folder.check_no_links(out, "train")
    config = outputs.read_config(out)
    if num_devices is not None:
        config = dataclasses.replace(config, num_devices=num_devices)
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
    changeable = {"tensorboard", "wandb_project", "wandb_mode", "eval_every", "eval_episodes", "keep_checkpoints",
                  "checkpoint_every", "chunk_updates", "check_sync"}
    refused = sorted(set(overrides or {}) - changeable)
    if refused:
        raise ValueError(f"--resume {out}: {', '.join(refused)} cannot change when resuming (the saved run is "
                         "continued as it was); drop them")
    options = dataclasses.replace(options, **(overrides or {}))
    options.validate()
    if stop_after_updates is not None and (not isinstance(stop_after_updates, int) or stop_after_updates < 1):
        raise ValueError(f"stop_after_updates={stop_after_updates!r}: must be a positive integer")
    _check_tracker(options)
    if (out / outputs.SUMMARY).exists() and (out / outputs.PARAMS).exists():
        print(f"{out}: the run has already finished ({config.num_updates} updates); nothing to resume",
              file=stream, flush=True)
        return RunResult(out, config, None, {}, config.num_updates, True, outputs.read_json(out / outputs.SUMMARY))
    run = _Run(config, out, options, quiet, stream, loss_fn=loss_fn)
    with run_folder.run_lock(out) if run.lead else contextlib.nullcontext():
        state = run.initial_state()
        try:
            restored = run.open_store().restore_latest(state)
        except ValueError:
            run.close()
            raise
        for line in restored.skipped:
            run.say(f"warning: {line}; using an older checkpoint")
        if restored.skipped_steps:
            if run.lead:
                for step in restored.skipped_steps:
                    run.say(f"note: the damaged checkpoint was kept as {run.store.set_aside(step)}")
            sync_processes("jaxppo-set-aside")
            run.store.reload()
        done = restored.step
        run.train_seconds = float(restored.meta.get("train_seconds", 0.0))
        history = []
        if done and run.lead:
            columns = outputs.read_metrics_csv(out / outputs.METRICS, config.num_updates)
            if columns["env_steps"].shape[1] < done:
                run.close()
                raise outputs.OutputError(f"{out / outputs.METRICS} has fewer than the {done} updates of the "
                                          "checkpoint; it is damaged")
            kept = {name: values[:, :done] for name, values in columns.items()}
            history.append(kept)
            outputs.write_metrics_csv(out / outputs.METRICS, kept)  # drop rows logged after the checkpoint
            outputs.trim_eval_csv(out / outputs.EVAL_CSV, done)
        run.say(f"resuming {out} after update {done}/{config.num_updates}")
        run.compile(state)
        run.open_loggers(done * config.batch_size + 1 if done else None)
        return _execute(run, restored.state, done, history, stop_after_updates)


@contextlib.contextmanager
def _lead_claim(out: Path, overwrite: bool) -> Iterator[bool]:
    """Process 0 claims (checks, locks, clears) the run folder; other processes write nothing."""
    if jax.process_index() != 0:
        yield False
        return
    with run_folder.claim_run_folder(out, "train", overwrite):
        yield True


def _check_tracker(options: RunOptions) -> None:
    import importlib.util

    if options.wandb_project is not None and importlib.util.find_spec("wandb") is None:
        raise ValueError("--wandb-project: the wandb package is not installed; pip install 'jaxppo[wandb]' or drop "
                         "the flag (--tensorboard needs no extra)")
