"""`jaxppo` command line: thin wrappers over the library (no algorithm logic here).

    jaxppo train --env CartPole-v1 --total-timesteps 500000 --seed 0 --num-seeds 1 --out runs/cartpole

Every `PPOConfig` field is a flag (`--num-envs`, `--lr`, `--no-anneal-lr`, ...). Invalid settings end with a
one-line `jaxppo: error: ...` on stderr and exit code 2.
"""

from __future__ import annotations

import dataclasses
import platform
import sys
import time
from pathlib import Path
from typing import Literal

import tyro

from jaxppo.config import PPOConfig

EXIT_USAGE = 2


class UsageError(Exception):
    """A user mistake reported as one line and exit code 2."""


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


def _host_tree(tree):
    """Device arrays -> numpy; replicated arrays of a multi-process run are read from a local replica."""
    import jax
    import numpy as np

    def leaf(x):
        return np.asarray(x if getattr(x, "is_fully_addressable", True) else x.addressable_data(0))

    return jax.tree.map(leaf, tree)


def _prepare_out_dir(out: Path, overwrite: bool) -> None:
    existing = [name for name in ("summary.json", "metrics.csv", "config.json") if (out / name).exists()]
    if existing and not overwrite:
        raise UsageError(f"--out {out}: already holds a run ({', '.join(existing)}); choose another --out or pass "
                         "--overwrite")
    out.mkdir(parents=True, exist_ok=True)


def train(
    config: tyro.conf.OmitArgPrefixes[_ConfigFlags],
    seed: int = 0,
    num_seeds: int = 1,
    out: Path = Path("runs/latest"),
    overwrite: bool = False,
    quiet: bool = False,
    check_sync: bool = False,
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout: int = 300,
) -> None:
    """Train PPO and write config.json, metrics.csv, summary.json and final_params.msgpack to --out.

    Args:
      seed: seed of the first run; seed i of --num-seeds N uses seed + i (so each equals a single-seed run).
      num_seeds: seeds trained at once in one vmapped program.
      out: output folder (written by process 0 only).
      overwrite: replace outputs of an earlier run in --out.
      quiet: no progress lines.
      check_sync: fail (exit 1) unless parameters were identical on every device after every update.
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
    from jaxppo.train import make_train

    cfg = _to_config(config)
    if num_seeds < 1:
        raise UsageError(f"--num-seeds {num_seeds}: must be at least 1")
    _check_devices(cfg)
    lead = jax.process_index() == 0
    if lead:
        _prepare_out_dir(out, overwrite)
        if cfg.rounding_note:
            print(f"note: {cfg.rounding_note}", flush=True)
        outputs.write_json(out / "config.json", outputs.config_to_dict(cfg))

    # Every process compiles the same program (callbacks included); only process 0's callback prints.
    printer = None if quiet else _silent if not lead else ProgressPrinter(cfg.num_updates, cfg.batch_size * jax.process_count(),
                                                 num_seeds=num_seeds, calls_per_update=num_seeds * cfg.num_devices)
    train_fn = make_train(cfg, progress_fn=printer)
    if num_seeds == 1:  # no vmap: the plain program, given the seed axis afterwards
        run = jax.jit(lambda keys: jax.tree.map(lambda x: x[None], train_fn(keys[0])))
    else:
        run = jax.jit(jax.vmap(train_fn))
    keys = jax.vmap(jax.random.key)(np.arange(seed, seed + num_seeds))

    start = time.perf_counter()
    compiled = run.lower(keys).compile()
    compile_seconds = time.perf_counter() - start
    if lead:
        print(f"compiled in {compile_seconds:.1f}s: {cfg.num_updates} updates x {cfg.batch_size} env steps x "
              f"{jax.process_count()} process(es), {num_seeds} seed(s), {cfg.num_devices} device(s) per process, "
              f"env {cfg.env}", flush=True)
    start = time.perf_counter()
    state, metrics = jax.block_until_ready(compiled(keys))
    train_seconds = time.perf_counter() - start
    metrics = _host_tree(metrics)
    params, obs_moments = _host_tree((state.params, state.obs_moments))
    in_sync = bool(np.all(metrics.replicas_in_sync))
    if check_sync and not in_sync:
        bad = np.argwhere(~np.asarray(metrics.replicas_in_sync))[0]
        print(f"jaxppo: error: parameters differ across devices after update {int(bad[-1]) + 1} "
              f"(seed index {int(bad[0])})", file=sys.stderr, flush=True)
        raise SystemExit(1)
    if not lead:
        return

    columns = outputs.metrics_to_columns(metrics)
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
        "steps_per_second": env_steps * num_seeds / train_seconds,
        "backend": jax.default_backend(),
        "devices_per_process": cfg.num_devices,
        "num_processes": jax.process_count(),
        "parallel": cfg.parallel if cfg.num_devices > 1 or jax.process_count() > 1 else "single-device",
        "replicas_in_sync": in_sync,
        "devices": [str(d) for d in jax.local_devices()[: cfg.num_devices]],
        "machine": f"{platform.machine()} {platform.system()}",
    }
    outputs.write_json(out / "summary.json", summary)
    print(f"done: final return {summary['final_return']:.2f} over {num_seeds} seed(s), "
          f"{summary['steps_per_second']:,.0f} env steps/s (compile {compile_seconds:.1f}s, train "
          f"{train_seconds:.1f}s) -> {out}", flush=True)


def _silent(payload) -> None:
    """Progress sink of processes other than 0."""


COMMANDS = {"train": train}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `jaxppo` console script; returns the exit code."""
    try:
        tyro.extras.subcommand_cli_from_dict(COMMANDS, args=argv, prog="jaxppo")
    except UsageError as error:
        print(f"jaxppo: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
