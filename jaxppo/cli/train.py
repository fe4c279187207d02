"""`jaxppo train`: parse flags, call jaxppo.runner, print."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Callable, Literal

import tyro

from jaxppo.cli.flags import (EXIT_FAILED, ConfigFlags, UsageError, as_flag_error, flags_given, parse_with_config,
                              to_config)

RESUME_FLAGS = {"resume", "quiet", "stop_after_updates", "coordinator", "num_processes", "process_id", "timeout",
                "cluster", "extend_total_timesteps"}
"""Flags that may be given with --resume DIR besides the run options a resume may change
(jaxppo.runner.RESUMABLE_OPTIONS) and --num-devices."""
AUTO = Path("auto")
"""`--resume auto`: start the run in --out, or continue it (one idempotent command for requeued jobs)."""


@dataclasses.dataclass(frozen=True)
class TrainArgs:
    """Train PPO and write config.json, run.json, metrics.csv, summary.json and final_params.msgpack to --out."""

    config: tyro.conf.OmitArgPrefixes[ConfigFlags]
    preset: str | None = None
    """Named per-environment settings (see the list below); flags given next to it win."""
    seed: int = 0
    """Seed of the first run; seed i of --num-seeds N uses seed + i (so each equals a single-seed run)."""
    num_seeds: int = 1
    """Seeds trained at once in one vmapped program."""
    out: Path = Path("runs/latest")
    """Output folder (written by process 0 only)."""
    overwrite: bool = False
    """Replace the outputs of an earlier run in --out (only after every check has passed)."""
    quiet: bool = False
    """No progress lines."""
    tensorboard: bool = False
    """Also write TensorBoard event files to OUT/tb/seed_<seed> (after every chunk)."""
    wandb_project: str | None = None
    """Also log each seed as a Weights & Biases run in this project (needs the wandb extra)."""
    wandb_mode: Literal["offline", "online", "disabled"] = "offline"
    """W&B mode; offline needs no network (upload later with `wandb sync OUT/wandb/...`)."""
    check_sync: bool = False
    """Fail (exit 1) unless parameters were identical on every device after every update."""
    chunk_updates: int = 0
    """Updates per compiled chunk (0: the smallest of --checkpoint-every and --eval-every, else about 20 chunks);
    metrics.csv and the trackers are written after every chunk."""
    checkpoint_every: int = 0
    """Save the full training state to OUT/checkpoints every N updates (0: only when stopped early)."""
    keep_checkpoints: int = 3
    """Checkpoints kept (oldest removed first)."""
    resume: Path | None = None
    """Continue the run in this folder from its newest intact checkpoint (its config.json and run.json are used).
    `--resume auto` (with the run's flags and --out): start the run in --out, or continue it when --out already
    holds it; one command for a job that may be requeued or killed at any moment (a folder named auto: ./auto)."""
    extend_total_timesteps: int | None = None
    """With --resume DIR: train the run on to this larger total. Schedules over the run's length (lr annealing,
    linear/cosine schedules, warm-up fractions) then span the longer run, so an annealed lr rises back."""
    stop_after_updates: int | None = None
    """End (with a checkpoint) after this many updates in this call; resume later."""
    eval_every: int = 0
    """Every N updates, run --eval-episodes greedy episodes per seed and append them to OUT/eval.csv."""
    eval_episodes: int = 10
    """Episodes per periodic evaluation."""
    video_every: int = 0
    """Every N updates (and after the last), write one greedy episode of the first seed as OUT/videos/update_N.gif
    (see `jaxppo render`; Brax needs OpenGL for GIFs, so it is skipped with a note)."""
    coordinator: str | None = None
    """HOST:PORT of process 0, for a multi-host run (with --num-processes and --process-id)."""
    num_processes: int | None = None
    """Processes in a multi-host run."""
    process_id: int | None = None
    """This process's index in [0, num_processes)."""
    timeout: int = 300
    """Seconds to wait for all processes at start-up and to detect a dead peer."""
    cluster: Literal["auto", "on", "off"] = "auto"
    """Without --coordinator: auto joins through JAX's cluster detection when SLURM or Open MPI started this
    process as one of several tasks; on always asks JAX to detect the cluster (e.g. TPU pods); off never."""


def description() -> str:
    from jaxppo.envs import SUITES
    from jaxppo.presets import preset_names

    return (f"{TrainArgs.__doc__}\n\nPresets (--preset NAME): {', '.join(preset_names())}.\n"
            f"Environments: gymnax ids (CartPole-v1, Breakout-MinAtar, ...) and suite ids "
            f"{', '.join(p + '/<name>' for p in SUITES)} (pip install -e \".[envs]\").")


def _join_cluster(args: TrainArgs):
    """Join the multi-process run the flags (or the scheduler) describe; returns the run's PeerWatch or None."""
    from jaxppo.distributed import check_cluster_args, detected_cluster, initialize
    from jaxppo.peer_watch import exit_on_lost

    folder = args.resume if args.resume not in (None, AUTO) else args.out
    advice = (f"start every process again with the same command and --resume {args.resume or 'auto'} to continue "
              f"from the last complete checkpoint in {folder}")

    def on_lost(description: str) -> None:
        exit_on_lost(description, advice)

    explicit = any(v is not None for v in (args.coordinator, args.num_processes, args.process_id))
    if not explicit:
        if args.cluster == "off" or (args.cluster == "auto" and detected_cluster() is None):
            return None
        print(f"jaxppo: joining the {detected_cluster() or 'detected'} cluster through JAX's detection (timeout "
              f"{args.timeout}s)", file=sys.stderr, flush=True)
        try:
            return initialize(timeout_seconds=args.timeout, on_lost=on_lost)
        except Exception as error:  # noqa: BLE001 - the runtime's errors become one line
            lines = str(error).strip().splitlines()
            raise UsageError(f"could not join the cluster: {lines[0][:300] if lines else type(error).__name__}",
                             exit_code=EXIT_FAILED) from None

    try:
        check_cluster_args(args.coordinator, args.num_processes, args.process_id)
    except ValueError as error:
        raise UsageError(str(error)) from None
    print(f"jaxppo: process {args.process_id} of {args.num_processes} joining coordinator {args.coordinator} "
          f"(timeout {args.timeout}s; a peer that stops answering for that long ends the run)", file=sys.stderr,
          flush=True)
    try:
        return initialize(args.coordinator, args.num_processes, args.process_id, timeout_seconds=args.timeout,
                          on_lost=on_lost)
    except ValueError as error:
        raise UsageError(str(error)) from None
    except Exception as error:  # the runtime's own errors: timeouts, refused connections, duplicate ids
        lines = str(error).strip().splitlines()
        detail = lines[0][:300] if lines else type(error).__name__
        raise UsageError(f"could not join the run at {args.coordinator or 'the detected cluster'} within "
                         f"{args.timeout}s (are all {args.num_processes or ''} processes started, each with its own "
                         f"--process-id?): {detail}", exit_code=EXIT_FAILED) from None


def _check_devices(num_devices: int) -> None:
    """Device-count errors as usage errors; a hint when local devices would sit idle and could pay."""
    import jax

    from jaxppo.distributed import mesh_devices

    try:
        mesh_devices(num_devices)
    except ValueError as error:
        raise UsageError(str(error)) from None
    idle = jax.local_device_count() - num_devices
    if idle > 0 and jax.process_index() == 0 and jax.default_backend() != "cpu":
        # On CPU, one device already uses every core for large batches and extra fake devices mostly add
        # synchronisation (docs/results.md), so the hint is only given for accelerators.
        print(f"note: {idle} of {jax.local_device_count()} local {jax.default_backend()} devices are idle; "
              "--num-devices all uses every one", flush=True)


def _check_flags(args: TrainArgs, argv: list[str]) -> None:
    """Flag values tyro accepts but that make no sense (one line each, before anything happens)."""
    for index, arg in enumerate(argv):
        if arg in ("--out", "--resume") and index + 1 < len(argv) and not argv[index + 1].strip():
            raise UsageError(f"{arg} '': give a folder, e.g. {arg} runs/cartpole")
        if arg in ("--out=", "--resume="):
            raise UsageError(f"{arg[:-1]} '': give a folder, e.g. {arg[:-1]} runs/cartpole")
    if args.timeout < 1:
        raise UsageError(f"--timeout {args.timeout}: must be at least 1 second")
    if args.stop_after_updates is not None and args.stop_after_updates < 1:
        raise UsageError(f"--stop-after-updates {args.stop_after_updates}: must be at least 1")


def run(argv: list[str]) -> int:
    args, preset = parse_with_config(TrainArgs, argv, "jaxppo train", description())
    _check_flags(args, argv)
    return run_in_cluster(args, lambda: _train(args, preset, argv))


def run_in_cluster(args: TrainArgs, body: Callable[[], int]) -> int:
    """Join the multi-process run the flags describe (if any), run body, and say goodbye to the other processes:
    a normal end (exit code 0, or 130 after Ctrl-C with a checkpoint) or a failure, which ends them too with one
    line instead of leaving them in a collective that never completes. Returns body's exit code."""
    watch = _join_cluster(args)
    if watch is None:
        return body()
    try:
        code = body()
    except BaseException:
        watch.close(ok=False)
        raise
    watch.close(ok=code in (0, 130))
    return code


def _train(args: TrainArgs, preset: str | None, argv: list[str]) -> int:
    from jaxppo import runner

    auto = args.resume == AUTO
    if args.resume is not None and not auto:
        return _resume(args, argv)
    if args.extend_total_timesteps is not None:
        raise UsageError("--extend-total-timesteps: only with --resume DIR (a run to train longer); drop it or give "
                         "--resume DIR")
    if auto and args.overwrite:
        raise UsageError("--resume auto: cannot be combined with --overwrite (it continues the run in --out); drop "
                         "--overwrite")
    if auto and "out" not in flags_given(argv):
        raise UsageError("--resume auto: give the run's folder with --out DIR")
    config = to_config(args.config)
    if config.env == "custom":
        raise UsageError("--env custom: environment instances can only be passed from Python (make_train(config, "
                         "env=...)); on the command line give an environment id such as CartPole-v1")
    _check_devices(config.num_devices)
    options = runner.RunOptions(
        seed=args.seed, num_seeds=args.num_seeds, chunk_updates=args.chunk_updates,
        checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints, eval_every=args.eval_every,
        eval_episodes=args.eval_episodes, tensorboard=args.tensorboard, wandb_project=args.wandb_project,
        wandb_mode=args.wandb_mode, check_sync=args.check_sync, preset=preset, video_every=args.video_every)
    try:
        options.validate()
    except ValueError as error:
        raise as_flag_error(error) from None
    if auto:
        return _report(lambda: runner.start_or_resume(config, args.out, options,
                                                      stop_after_updates=args.stop_after_updates, quiet=args.quiet))
    return _report(lambda: runner.train_run(config, args.out, options, overwrite=args.overwrite,
                                            stop_after_updates=args.stop_after_updates, quiet=args.quiet))


def _resume(args: TrainArgs, argv: list[str]) -> int:
    from jaxppo import outputs, runner

    given = flags_given(argv)
    config_fields = {f.name for f in dataclasses.fields(ConfigFlags)}
    not_allowed = sorted((given - RESUME_FLAGS - set(runner.RESUMABLE_OPTIONS)) - config_fields)
    if not_allowed:
        flags = ", ".join("--" + name.replace("_", "-") for name in not_allowed)
        raise UsageError(f"--resume {args.resume}: {flags} cannot be given with --resume (the run continues with its "
                         f"saved settings); drop {flags}")
    if not args.resume.is_dir():
        raise UsageError(f"--resume {args.resume}: not a folder holding a run")
    try:
        saved = outputs.read_config(args.resume)
    except ValueError as error:
        raise UsageError(f"--resume {args.resume}: {error}") from None
    layout = set(outputs.LAYOUT_FIELDS)  # where the run executes, not what it learns: may change (elastic resume)
    conflicts = [f"{name} (saved {getattr(saved, name)!r}, given {getattr(args.config, name)!r})"
                 for name in sorted((given & config_fields) - layout)
                 if getattr(args.config, name) != getattr(saved, name)]
    if conflicts:
        raise UsageError(f"--resume {args.resume}: flags contradict the saved config: {', '.join(conflicts)}; drop "
                         "them (the saved config is used)")
    overrides = {name: getattr(args, name) for name in runner.RESUMABLE_OPTIONS if name in given}
    num_devices = None
    if "num_devices" in given:
        import jax

        num_devices = args.config.num_devices
        num_devices = jax.local_device_count() if num_devices == "all" else num_devices
        try:
            dataclasses.replace(saved, num_devices=num_devices)
        except ValueError as error:
            raise UsageError(f"--resume {args.resume}: {error}") from None
        _check_devices(num_devices)
    return _report(lambda: runner.resume_run(args.resume, stop_after_updates=args.stop_after_updates,
                                             quiet=args.quiet, overrides=overrides, num_devices=num_devices,
                                             extend_total_timesteps=args.extend_total_timesteps))


def _report(call) -> int:
    from jaxppo.outputs import WriteError
    from jaxppo.runner import RunStopped

    try:
        result = call()
    except (RunStopped, WriteError) as error:  # the run failed (a full disk is not a usage mistake)
        raise UsageError(str(error), exit_code=EXIT_FAILED) from None
    except ValueError as error:
        raise as_flag_error(error) from None
    except OSError as error:
        raise UsageError(f"{error.filename or ''}: {error.strerror or error}") from None
    return 130 if result.stopped_by == "SIGINT" else 0
