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

import tyro

from jaxppo.config import PPOConfig

EXIT_USAGE = 2


class UsageError(Exception):
    """A user mistake reported as one line and exit code 2."""


@dataclasses.dataclass(frozen=True)
class _ConfigFlags(PPOConfig):
    """PPOConfig fields as flags; validated when converted, so errors are one line rather than a parser box."""

    def __post_init__(self) -> None:  # validation happens in to_config
        pass


def _to_config(flags: PPOConfig) -> PPOConfig:
    try:
        return PPOConfig(**{f.name: getattr(flags, f.name) for f in dataclasses.fields(PPOConfig)})
    except ValueError as error:
        raise UsageError(str(error)) from None


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
) -> None:
    """Train PPO and write config.json, metrics.csv, summary.json and final_params.msgpack to --out.

    Args:
      seed: seed of the first run; seed i of --num-seeds N uses seed + i (so each equals a single-seed run).
      num_seeds: seeds trained at once in one vmapped program.
      out: output folder.
      overwrite: replace outputs of an earlier run in --out.
      quiet: no progress lines.
    """
    import jax
    import numpy as np

    from jaxppo import outputs
    from jaxppo.logging import ProgressPrinter
    from jaxppo.train import make_train

    cfg = _to_config(config)
    if num_seeds < 1:
        raise UsageError(f"--num-seeds {num_seeds}: must be at least 1")
    _prepare_out_dir(out, overwrite)
    if cfg.rounding_note:
        print(f"note: {cfg.rounding_note}", flush=True)
    outputs.write_json(out / "config.json", outputs.config_to_dict(cfg))

    printer = None if quiet else ProgressPrinter(cfg.num_updates, cfg.batch_size * jax.process_count(),
                                                 num_seeds=num_seeds, calls_per_update=num_seeds * cfg.num_devices)
    run = jax.jit(jax.vmap(make_train(cfg, progress_fn=printer)))
    keys = jax.vmap(jax.random.key)(np.arange(seed, seed + num_seeds))

    start = time.perf_counter()
    compiled = run.lower(keys).compile()
    compile_seconds = time.perf_counter() - start
    print(f"compiled in {compile_seconds:.1f}s: {cfg.num_updates} updates x {cfg.batch_size} env steps, "
          f"{num_seeds} seed(s), env {cfg.env}", flush=True)
    start = time.perf_counter()
    state, metrics = jax.block_until_ready(compiled(keys))
    train_seconds = time.perf_counter() - start

    columns = outputs.metrics_to_columns(metrics)
    outputs.write_metrics_csv(out / "metrics.csv", columns)
    outputs.write_params(out / "final_params.msgpack", state.params, state.obs_moments)
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
        "devices": [str(d) for d in jax.local_devices()[: cfg.num_devices]],
        "machine": f"{platform.machine()} {platform.system()}",
    }
    outputs.write_json(out / "summary.json", summary)
    print(f"done: final return {summary['final_return']:.2f} over {num_seeds} seed(s), "
          f"{summary['steps_per_second']:,.0f} env steps/s (compile {compile_seconds:.1f}s, train "
          f"{train_seconds:.1f}s) -> {out}", flush=True)


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
