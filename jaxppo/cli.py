"""`jaxppo` command line: thin wrappers over the library (no algorithm logic here).

    jaxppo train --env CartPole-v1 --total-timesteps 500000 --seed 0 --num-seeds 1 --out runs/cartpole

Every `PPOConfig` field is a flag (`--num-envs`, `--lr`, `--no-anneal-lr`, ...). Invalid settings end with a
one-line `jaxppo: error: ...` on stderr and exit code 2.
"""

from __future__ import annotations

import dataclasses
import platform
import sys
from pathlib import Path
from typing import Literal

import tyro

from jaxppo.config import PPOConfig

EXIT_USAGE = 2


class UsageError(Exception):
    """A user mistake (exit code 2) or a stopped run (exit code 1), reported as one line."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE):
        super().__init__(message)
        self.exit_code = exit_code


@dataclasses.dataclass(frozen=True)
class _ConfigFlags(PPOConfig):
    """PPOConfig fields as flags; validated when converted, so errors are one line rather than a parser box."""

    num_devices: int | Literal["all"] = 1
    """Local devices to spread the environments over; 'all' takes every local device."""

    def __post_init__(self) -> None:  # validation happens in _to_config
        pass


def _to_config(flags: PPOConfig) -> PPOConfig:
    values = {f.name: getattr(flags, f.name) for f in dataclasses.fields(PPOConfig)}
    if values["num_devices"] == "all":
        import jax

        values["num_devices"] = jax.local_device_count()
    try:
        return PPOConfig(**values)
    except ValueError as error:
        raise UsageError(str(error)) from None


def _check_devices(config: PPOConfig) -> None:
    """Device-count errors as usage errors; a hint when local devices would sit idle."""
    import jax

    from jaxppo.distributed import mesh_devices

    try:
        mesh_devices(config)
    except ValueError as error:
        raise UsageError(str(error)) from None
    idle = jax.local_device_count() - config.num_devices
    if idle > 0 and jax.process_index() == 0:
        print(f"note: {idle} of {jax.local_device_count()} local {jax.default_backend()} devices are idle; "
              "--num-devices all uses every one", flush=True)


RUN_OUTPUTS = ("summary.json", "metrics.csv", "config.json", "run.json", "final_params.msgpack", "eval.csv",
               "eval.json", "tb", "checkpoints")
"""What `jaxppo train` writes into --out (W&B offline runs under wandb/ are separate runs and are kept)."""


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    """Create --out; refuse one holding a run unless --overwrite, which then removes that run's outputs."""
    import shutil

    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file, not a folder; choose another --out")
    existing = [name for name in RUN_OUTPUTS if (out / name).exists()]
    if existing and not overwrite:
        raise UsageError(f"--out {out}: already holds a run ({', '.join(existing)}); choose another --out or pass "
                         "--overwrite")
    for name in existing:  # stale checkpoints or event files would mix with the new run's
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    if existing:
        print(f"note: --overwrite removed {', '.join(existing)} from {out}", flush=True)
    out.mkdir(parents=True, exist_ok=True)


def train(
    config: tyro.conf.OmitArgPrefixes[_ConfigFlags],
    preset: str | None = None,
    seed: int = 0,
    num_seeds: int = 1,
    out: Path = Path("runs/latest"),
    overwrite: bool = False,
    quiet: bool = False,
    tensorboard: bool = False,
    wandb_project: str | None = None,
    wandb_mode: Literal["offline", "online", "disabled"] = "offline",
    check_sync: bool = False,
    chunk_updates: int = 0,
    checkpoint_every: int = 0,
    keep_checkpoints: int = 3,
    resume: Path | None = None,
    stop_after_updates: int | None = None,
    eval_every: int = 0,
    eval_episodes: int = 10,
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout: int = 300,
) -> None:
    """Train PPO and write config.json, metrics.csv, summary.json and final_params.msgpack to --out.

    Args:
      preset: named per-environment settings (e.g. breakout-minatar; see jaxppo.presets); flags given next to it win.
      seed: seed of the first run; seed i of --num-seeds N uses seed + i (so each equals a single-seed run).
      num_seeds: seeds trained at once in one vmapped program.
      out: output folder (written by process 0 only).
      overwrite: replace outputs of an earlier run in --out.
      quiet: no progress lines.
      tensorboard: also write TensorBoard event files to OUT/tb/seed_<seed> (after every chunk).
      wandb_project: also log each seed as a Weights & Biases run in this project (needs the wandb extra).
      wandb_mode: W&B mode; offline needs no network (upload later with `wandb sync OUT/wandb/...`).
      check_sync: fail (exit 1) unless parameters were identical on every device after every update.
      chunk_updates: updates per compiled chunk (0: the smallest of --checkpoint-every and --eval-every, else the
        whole run in one call); metrics.csv and the loggers are written after every chunk.
      checkpoint_every: save the full training state to OUT/checkpoints every N updates (0: never).
      keep_checkpoints: checkpoints kept (oldest removed first).
      resume: continue the run in this folder from its latest checkpoint (its config.json is used).
      stop_after_updates: end (with a checkpoint) after this many updates in this call; resume later.
      eval_every: every N updates, run --eval-episodes greedy episodes per seed and append them to OUT/eval.csv.
      eval_episodes: episodes per periodic evaluation.
      coordinator: HOST:PORT of process 0, for a multi-host run (with --num-processes and --process-id).
      num_processes: processes in a multi-host run.
      process_id: this process's index in [0, num_processes).
      timeout: seconds to wait for all processes at start-up and to detect a dead peer.
    """
    multi_host = any(v is not None for v in (coordinator, num_processes, process_id))
    if multi_host:
        from jaxppo.distributed import initialize

        print(f"jaxppo: process {process_id} of {num_processes} joining coordinator {coordinator} (timeout "
              f"{timeout}s; a peer that stops answering for that long ends the run)", file=sys.stderr, flush=True)
        try:
            initialize(coordinator, num_processes, process_id, timeout_seconds=timeout)
        except ValueError as error:
            raise UsageError(str(error)) from None

    import jax
    import numpy as np

    from jaxppo import outputs
    from jaxppo.logging import ProgressPrinter
    from jaxppo.runner import ChunkedRun, concat_metrics

    cfg = _to_config(config)
    for name, value, low in (("--num-seeds", num_seeds, 1), ("--chunk-updates", chunk_updates, 0),
                             ("--checkpoint-every", checkpoint_every, 0), ("--keep-checkpoints", keep_checkpoints, 1),
                             ("--stop-after-updates", stop_after_updates or 1, 1), ("--eval-every", eval_every, 0),
                             ("--eval-episodes", eval_episodes, 1)):
        if value < low:
            raise UsageError(f"{name} {value}: must be at least {low}")
    if resume is not None:
        if preset is not None:
            raise UsageError(f"--preset {preset} with --resume: the resumed run keeps its saved config; drop --preset")
        out, cfg, run = _resume_settings(resume, cfg)
        num_seeds, seed = run["num_seeds"], run["seed"]
        checkpoint_every = checkpoint_every or run.get("checkpoint_every", 0)
        chunk_updates = chunk_updates or run.get("chunk_updates", 0)
    if stop_after_updates is not None and not checkpoint_every:
        raise UsageError("--stop-after-updates: needs --checkpoint-every N so the run can be resumed")
    if (checkpoint_every or resume is not None) and jax.process_count() > 1:
        raise UsageError("--checkpoint-every/--resume: checkpointing multi-host runs is not supported yet")
    if wandb_project is not None:
        _check_wandb_installed()
    _check_devices(cfg)
    lead = jax.process_index() == 0
    if lead and resume is None:
        _prepare_out_dir(out, overwrite)
        if cfg.rounding_note:
            print(f"note: {cfg.rounding_note}", flush=True)
        outputs.write_json(out / "config.json", outputs.config_to_dict(cfg))
        outputs.write_json(out / "run.json", {"seed": seed, "num_seeds": num_seeds, "preset": preset,
                                              "checkpoint_every": checkpoint_every, "chunk_updates": chunk_updates})

    # Every process compiles the same program (callbacks included); only process 0's callback prints.
    printer = None if quiet else _silent if not lead else ProgressPrinter(
        cfg.num_updates, cfg.batch_size * jax.process_count(), num_seeds=num_seeds,
        calls_per_update=num_seeds * cfg.num_devices)
    runner = ChunkedRun(cfg, num_seeds, progress_fn=printer)
    keys = jax.vmap(jax.random.key)(np.arange(seed, seed + num_seeds))
    state = runner.init(keys)
    store, done, history = None, 0, []
    if checkpoint_every or resume is not None:
        from jaxppo.checkpoint import CheckpointStore

        store = CheckpointStore(out / "checkpoints", cfg, keep_checkpoints)
    if resume is not None:
        state, done, history = _restore(store, state, out)
        print(f"resuming {out} after update {done}/{cfg.num_updates}", flush=True)

    loggers = []
    if lead and (tensorboard or wandb_project is not None):
        from jaxppo.loggers import make_seed_loggers

        loggers = make_seed_loggers(out, range(seed, seed + num_seeds), tensorboard, wandb_project, wandb_mode,
                                    config=outputs.config_to_dict(cfg),
                                    purge_step=done * cfg.batch_size * jax.process_count() + 1 if done else None)
    schedule = _Schedule(
        chunk=min(n for n in (chunk_updates, checkpoint_every, eval_every, cfg.num_updates) if n),
        checkpoint_every=checkpoint_every, eval_every=eval_every, stop_after_updates=stop_after_updates)
    host = _HostSide(out=out, lead=lead, store=store, loggers=loggers, check_sync=check_sync,
                     run_settings={"seed": seed, "num_seeds": num_seeds},
                     periodic_eval=_make_periodic_eval(cfg, num_seeds, eval_episodes) if eval_every else None)
    try:
        state, done, train_seconds = _run_chunks(runner, state, done, history, schedule, host)
    finally:
        for logger in loggers:
            logger.close()
        if store is not None:
            store.close()
    if done < cfg.num_updates:
        print(f"stopped after update {done}/{cfg.num_updates}; continue with: jaxppo train --resume {out}",
              flush=True)
        return
    if lead:
        _write_final_outputs(out, cfg, seed, num_seeds, state, concat_metrics(history), runner.compile_seconds,
                             train_seconds)


@dataclasses.dataclass(frozen=True)
class _Schedule:
    """How a `jaxppo train` call is cut into chunks, and what happens at which update."""

    chunk: int
    checkpoint_every: int
    eval_every: int
    stop_after_updates: int | None


@dataclasses.dataclass(frozen=True)
class _HostSide:
    """Where a run's between-chunk work goes: files (process 0 only), checkpoints, loggers, checks."""

    out: Path
    lead: bool
    store: object | None
    loggers: list
    check_sync: bool
    run_settings: dict
    periodic_eval: object | None


def _run_chunks(runner, state, done: int, history: list, schedule: _Schedule, host: _HostSide):
    """The chunk loop: run, log (metrics.csv + loggers), guard, evaluate, checkpoint. Appends to history.

    Returns (state, updates done, training seconds of this call). Raises UsageError (exit 1) on non-finite values
    or replicas out of sync, after the offending chunk's metrics were logged and with earlier checkpoints kept.
    """
    import numpy as np

    from jaxppo import outputs
    from jaxppo.loggers import log_metrics_history
    from jaxppo.runner import chunk_sizes, find_nonfinite

    cfg, store = runner.config, host.store
    train_seconds = 0.0
    for size in chunk_sizes(cfg.num_updates, schedule.chunk, done, schedule.stop_after_updates):
        result = runner.run_chunk(state, size, done)
        columns = outputs.metrics_to_columns(result.metrics)
        if host.lead:
            outputs.append_metrics_csv(host.out / "metrics.csv", columns, done)
            for seed_index, logger in enumerate(host.loggers):
                log_metrics_history(logger, columns, seed=seed_index)
        problem = find_nonfinite(result)
        if problem:
            last = store.latest_step() if store else None
            kept = f"last good checkpoint: update {last} in {store.directory}" if last else "no checkpoint was kept"
            raise UsageError(f"training stopped: {problem}; {kept}", exit_code=1)
        if host.check_sync and not np.all(result.metrics.replicas_in_sync):
            bad = np.argwhere(~np.asarray(result.metrics.replicas_in_sync))[0]
            raise UsageError(f"parameters differ across devices after update {done + bad[-1] + 1} "
                             f"(seed index {bad[0]})", exit_code=1)
        state, done, train_seconds = result.state, done + size, train_seconds + result.seconds
        history.append(columns)
        finished = done == cfg.num_updates
        if host.periodic_eval is not None and host.lead and (done % schedule.eval_every == 0 or finished):
            host.periodic_eval(state, done, host.out / "eval.csv")
        due = schedule.checkpoint_every and (done % schedule.checkpoint_every == 0 or finished)
        if host.lead and store is not None and due:
            store.save(done, state, host.run_settings)
    if host.lead and store is not None and store.latest_step() != done:  # stopped between checkpoints
        store.save(done, state, host.run_settings)
    return state, done, train_seconds


def _make_periodic_eval(cfg: PPOConfig, num_seeds: int, num_episodes: int):
    """A host function evaluating every seed's current policy and appending rows to a CSV (one compile)."""
    import csv

    import jax
    import numpy as np

    from jaxppo.evaluate import make_evaluate

    evaluate_seeds = jax.jit(jax.vmap(make_evaluate(cfg, num_episodes=num_episodes), in_axes=(0, None, 0)))

    def run(state, update: int, path: Path) -> None:
        obs_moments = state.obs_moments if cfg.normalize_observations else None
        result = evaluate_seeds(state.params, jax.random.key(update), obs_moments)
        returns, lengths = np.asarray(result.returns), np.asarray(result.lengths)
        new_file = not path.exists()
        with open(path, "a", newline="") as handle:
            writer = csv.writer(handle)
            if new_file:
                writer.writerow(["update", "env_steps", "seed", "mean_return", "std_return", "mean_length"])
            for seed_index in range(num_seeds):
                writer.writerow([update, update * cfg.batch_size * jax.process_count(), seed_index,
                                 float(returns[seed_index].mean()), float(returns[seed_index].std()),
                                 float(lengths[seed_index].mean())])
        print(f"eval after update {update}: mean return {returns.mean():.2f} over {num_episodes} episode(s) x "
              f"{num_seeds} seed(s)", flush=True)

    return run


def _resume_settings(run_dir: Path, flags_cfg: PPOConfig):
    """(out, config, run settings) of the run to resume; refuses flags that contradict the saved config."""
    import json

    from jaxppo import outputs

    try:
        saved = outputs.config_from_dict(json.loads((run_dir / "config.json").read_text()))
        run = json.loads((run_dir / "run.json").read_text())
    except FileNotFoundError as error:
        raise UsageError(f"--resume {run_dir}: {error.filename} is missing; not a jaxppo run folder") from None
    except ValueError as error:
        raise UsageError(f"--resume {run_dir}: config.json is invalid: {error}") from None
    default = PPOConfig()
    conflicts = [f"{f.name} (saved {getattr(saved, f.name)!r}, given {getattr(flags_cfg, f.name)!r})"
                 for f in dataclasses.fields(PPOConfig)
                 if getattr(flags_cfg, f.name) != getattr(default, f.name)
                 and getattr(flags_cfg, f.name) != getattr(saved, f.name)]
    if conflicts:
        raise UsageError(f"--resume {run_dir}: flags contradict the saved config: {', '.join(conflicts)}; drop them "
                         "(the saved config is used)")
    return run_dir, saved, run


def _restore(store, template_state, out: Path):
    """(state, updates done, metrics history) from the latest complete checkpoint of a run."""
    import numpy as np

    from jaxppo import outputs

    step = store.latest_step()
    if step is None:
        raise UsageError(f"--resume {out}: no complete checkpoint in {store.directory}")
    try:
        state, _ = store.restore(step, template_state)
    except ValueError as error:
        raise UsageError(f"--resume {out}: {error}") from None
    history = []
    if step:
        columns = outputs.read_metrics_csv(out / "metrics.csv")
        if columns["env_steps"].shape[1] < step:
            raise UsageError(f"--resume {out}: metrics.csv has fewer than {step} updates")
        typed = {name: values[:, :step].astype(np.int32 if name == "env_steps" else np.float32)
                 for name, values in columns.items()}
        history.append(typed)
        outputs.write_metrics_csv(out / "metrics.csv", typed)  # drop rows logged after the checkpoint
    return state, step, history


def _write_final_outputs(out: Path, cfg: PPOConfig, seed: int, num_seeds: int, state, columns, compile_seconds: float,
                         train_seconds: float) -> None:
    import jax
    import numpy as np

    from jaxppo import outputs
    from jaxppo.runner import host_tree

    params, obs_moments = host_tree((state.params, state.obs_moments))
    outputs.write_metrics_csv(out / "metrics.csv", columns)
    outputs.write_params(out / "final_params.msgpack", params, obs_moments)
    per_seed = outputs.final_returns(columns["episode_return"])
    env_steps = cfg.num_env_steps * jax.process_count()
    summary = {
        "env": cfg.env,
        "total_timesteps": cfg.total_timesteps,
        "env_steps": env_steps,
        "num_updates": cfg.num_updates,
        "rounding": cfg.rounding_note or "exact",
        "num_seeds": num_seeds,
        "seeds": list(range(seed, seed + num_seeds)),
        "final_return": float(np.mean(per_seed)),
        "final_return_per_seed": [float(r) for r in per_seed],
        "final_return_window_updates": min(outputs.FINAL_WINDOW, cfg.num_updates),
        "compile_seconds": compile_seconds,
        "train_seconds": train_seconds,
        "steps_per_second": env_steps * num_seeds / max(train_seconds, 1e-9),
        "backend": jax.default_backend(),
        "devices_per_process": cfg.num_devices,
        "num_processes": jax.process_count(),
        "parallel": cfg.parallel if cfg.num_devices > 1 or jax.process_count() > 1 else "single-device",
        "replicas_in_sync": bool(np.all(columns["replicas_in_sync"])),
        "devices": [str(d) for d in jax.local_devices()[: cfg.num_devices]],
        "machine": f"{platform.machine()} {platform.system()}",
    }
    outputs.write_json(out / "summary.json", summary)
    print(f"done: final return {summary['final_return']:.2f} over {num_seeds} seed(s), "
          f"{summary['steps_per_second']:,.0f} env steps/s (compile {compile_seconds:.1f}s, train "
          f"{train_seconds:.1f}s) -> {out}", flush=True)


def _check_wandb_installed() -> None:
    import importlib.util

    if importlib.util.find_spec("wandb") is None:
        raise UsageError("--wandb-project: the wandb package is not installed; pip install 'jaxppo[wandb]' or drop "
                         "the flag (--tensorboard needs no extra)")


def _silent(payload) -> None:
    """Progress sink of processes other than 0."""


COMMANDS = {"train": train}


def _preset_in(argv: list[str]) -> str | None:
    """The value of --preset in a command line (None without one); UsageError if it names no preset."""
    from jaxppo.presets import preset_values

    for index, arg in enumerate(argv):
        if arg == "--preset" and index + 1 < len(argv):
            name = argv[index + 1]
        elif arg.startswith("--preset="):
            name = arg.split("=", 1)[1]
        else:
            continue
        try:
            preset_values(name)
        except ValueError as error:
            raise UsageError(f"--preset {name}: {str(error).split(': ', 1)[1]}") from None
        return name
    return None


def _drop_preset_flag_unless_taken(argv: list[str], commands: dict) -> list[str]:
    """argv without --preset NAME when the chosen command has no `preset` parameter (its defaults carry it)."""
    import inspect

    command = commands.get(argv[0]) if argv else None
    if command is None or "preset" in inspect.signature(command).parameters:
        return argv
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--preset":
            skip = True
        elif not arg.startswith("--preset="):
            kept.append(arg)
    return kept


def _with_preset_defaults(command, preset: str):
    """`command` with its `config` flags defaulting to the preset's values (flags given explicitly still win)."""
    import functools
    import inspect

    from jaxppo.presets import preset_values

    signature = inspect.signature(command)
    if "config" not in signature.parameters:
        return command
    defaults = _ConfigFlags(**preset_values(preset))

    @functools.wraps(command)
    def with_preset(*args, **kwargs):
        return command(*args, **kwargs)

    parameters = [p.replace(default=defaults) if name == "config" else p for name, p in signature.parameters.items()]
    with_preset.__signature__ = signature.replace(parameters=parameters)
    return with_preset


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `jaxppo` console script; returns the exit code."""
    from jaxppo import tools_cli  # imports this module, so it is loaded here rather than at the top

    commands = {**COMMANDS, "sweep": tools_cli.sweep, "plot": tools_cli.plot, "eval": tools_cli.eval_run}
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        preset = _preset_in(argv)
        if preset is not None:
            commands = {name: _with_preset_defaults(command, preset) for name, command in commands.items()}
            argv = _drop_preset_flag_unless_taken(argv, commands)
        tyro.extras.subcommand_cli_from_dict(commands, args=argv, prog="jaxppo")
    except UsageError as error:
        print(f"jaxppo: error: {error}", file=sys.stderr)
        return error.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
