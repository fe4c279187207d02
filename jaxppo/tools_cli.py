"""Research subcommands of the `jaxppo` command line: sweep, plot, eval (thin wrappers, no algorithm logic).

    jaxppo sweep --grid lr=1e-3,3e-4 --grid ent_coef=0,0.01 --num-seeds 3 --total-timesteps 100000 --out runs/sweep
    jaxppo sweep --random-samples 8 --ranges lr=1e-5:1e-2:log --ranges clip_eps=0.1:0.3 --out runs/random
    jaxppo plot runs/a runs/b --out curves.png --band iqr
    jaxppo eval runs/a --num-episodes 20

Each is a plain function for tyro (registered in jaxppo.cli.COMMANDS); user mistakes raise jaxppo.cli.UsageError.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import tyro

from jaxppo.cli import UsageError, _ConfigFlags, _to_config
from jaxppo.plotting import Band


def parse_grid(entries: list[str]) -> dict[str, list[float]]:
    """["lr=1e-3,3e-4", ...] -> {"lr": [0.001, 0.0003], ...}; UsageError naming --grid on bad syntax."""
    grid: dict[str, list[float]] = {}
    for entry in entries:
        name, sep, values = entry.partition("=")
        name = name.strip()
        try:
            parsed = [float(v) for v in values.split(",")] if sep and name and values.strip() else None
        except ValueError:
            parsed = None
        if parsed is None:
            raise UsageError(f"--grid {entry!r}: expected NAME=V1,V2,... with numbers, e.g. --grid lr=1e-3,3e-4")
        if name in grid:
            raise UsageError(f"--grid {entry!r}: {name} given twice; list all its values in one --grid")
        grid[name] = parsed
    return grid


def parse_ranges(entries: list[str]) -> dict[str, tuple[float, float, str]]:
    """["lr=1e-5:1e-2:log", "clip_eps=0.1:0.3"] -> {name: (low, high, scale)}; scale defaults to linear."""
    ranges: dict[str, tuple[float, float, str]] = {}
    for entry in entries:
        name, sep, spec = entry.partition("=")
        name = name.strip()
        parts = spec.split(":")
        scale = parts.pop() if len(parts) == 3 else "linear"
        try:
            low, high = (float(p) for p in parts) if sep and name and len(parts) == 2 else (None, None)
        except ValueError:
            low = None
        if low is None or scale not in ("linear", "log"):
            raise UsageError(f"--ranges {entry!r}: expected NAME=LOW:HIGH or NAME=LOW:HIGH:log, e.g. "
                             "--ranges lr=1e-5:1e-2:log")
        if name in ranges:
            raise UsageError(f"--ranges {entry!r}: {name} given twice; give one --ranges per name")
        ranges[name] = (low, high, scale)
    return ranges


def sweep(
    config: tyro.conf.OmitArgPrefixes[_ConfigFlags],
    preset: str | None = None,
    grid: tyro.conf.UseAppendAction[list[str]] = [],  # noqa: B006 (tyro reads the default; never mutated)
    random_samples: int = 0,
    ranges: tyro.conf.UseAppendAction[list[str]] = [],  # noqa: B006
    num_seeds: int = 3,
    seed: int = 0,
    out: Path = Path("runs/sweep"),
    overwrite: bool = False,
) -> None:
    """Train every hyperparameter setting x seed in one compiled program; write sweep.csv, sweep.png, config.json.

    Args:
      preset: base settings of a named preset (see `jaxppo train --preset`); flags given next to it win.
      grid: NAME=V1,V2,... (repeatable); the cartesian product of all --grid entries is swept.
      random_samples: random settings drawn from --ranges (in addition to the grid).
      ranges: NAME=LOW:HIGH[:log] (repeatable), sampled uniformly (log: uniformly in log space).
      num_seeds: seeds per setting; seed i uses --seed + i, like `jaxppo train`.
      seed: first training seed, and the seed of the random sampler.
      out: output folder.
      overwrite: replace the outputs of an earlier sweep or run in --out.
    """
    from jaxppo import outputs
    from jaxppo.sweep import run_sweep, summary_lines, write_sweep

    cfg = _to_config(config)
    grid_values, range_values = parse_grid(grid), parse_ranges(ranges)
    if num_seeds < 1:
        raise UsageError(f"--num-seeds {num_seeds}: must be at least 1")
    if random_samples < 0:
        raise UsageError(f"--random-samples {random_samples}: must be at least 0")
    if random_samples and not range_values:
        raise UsageError("--random-samples: needs at least one --ranges NAME=LOW:HIGH[:log]")
    if range_values and not random_samples:
        raise UsageError("--ranges: pass --random-samples N to draw N settings from them")
    if not grid_values and not random_samples:
        raise UsageError("nothing to sweep: pass --grid NAME=V1,V2,... and/or --random-samples N --ranges ...")
    if cfg.num_devices > 1:
        raise UsageError(f"--num-devices {cfg.num_devices}: a sweep runs on one device; drop --num-devices")
    _check_sweep_values(cfg, grid_values, range_values)
    _check_out_dir(out, ("sweep.csv", "sweep.png", "config.json", "metrics.csv", "summary.json"), overwrite)
    try:
        result = run_sweep(cfg, grid_values, random_samples, range_values, num_seeds, seed)
    except ValueError as error:
        raise UsageError(str(error)) from None
    out.mkdir(parents=True, exist_ok=True)
    outputs.write_json(out / "config.json", outputs.config_to_dict(cfg))
    write_sweep(result, out)
    print("\n".join(summary_lines(result)))
    print(f"done: {len(result.settings)} setting(s) x {num_seeds} seed(s) -> {out}/sweep.csv, sweep.png", flush=True)


def _check_sweep_values(cfg, grid: dict[str, list[float]], ranges: dict[str, tuple[float, float, str]]) -> None:
    """UsageError naming the flag and the name for an unknown hyperparameter or a value the config rejects."""
    from jaxppo.sweep import random_settings, setting_hparams

    entries = [("--grid", name, values) for name, values in grid.items()]
    entries += [("--ranges", name, (low, high)) for name, (low, high, _) in ranges.items()]
    for flag, name, values in entries:
        try:
            if flag == "--ranges":
                random_settings({name: ranges[name]}, 0)  # bounds in order, log scale above 0
            for value in values:
                setting_hparams(cfg, {name: value})
        except ValueError as error:
            raise UsageError(f"{flag} {name}: {error}") from None


def _check_out_dir(out: Path, names: tuple[str, ...], overwrite: bool) -> None:
    """UsageError if --out is a file, or holds any of names and --overwrite was not given."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file, not a folder; choose another --out")
    existing = [name for name in names if (out / name).exists()]
    if existing and not overwrite:
        raise UsageError(f"--out {out}: already holds results ({', '.join(existing)}); choose another --out or "
                         "pass --overwrite")


def plot(runs: tyro.conf.Positional[list[Path]], out: Path = Path("learning_curves.png"), band: Band = "std",
         overwrite: bool = False) -> None:
    """Plot episode return vs env steps of runs (a line and a band over each run's seeds) into a PNG.

    Args:
      runs: run folders written by `jaxppo train --out DIR`.
      out: PNG file to write.
      band: std (mean +- std over seeds), minmax (mean, min to max) or iqr (median, 25th to 75th percentile).
      overwrite: replace an existing --out file.
    """
    from jaxppo.plotting import plot_runs

    if not runs:
        raise UsageError("plot: give at least one run folder, e.g. jaxppo plot runs/a runs/b")
    for run in runs:
        if not run.is_dir():
            raise UsageError(f"plot: run folder {run} does not exist; pass folders written by `jaxppo train --out DIR`")
        if not (run / "metrics.csv").is_file():
            raise UsageError(f"plot: {run}/metrics.csv is missing; pass folders written by `jaxppo train --out DIR`")
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out {out}: must be a .png file, e.g. --out curves.png")
    if out.exists() and not overwrite:
        raise UsageError(f"--out {out}: already exists; choose another --out or pass --overwrite")
    try:
        plot_runs(runs, out, band=band)
    except ValueError as error:
        raise UsageError(f"plot: {error}") from None
    print(f"wrote {out}", flush=True)


def eval_run(run: tyro.conf.Positional[Path], num_episodes: int = 10, seed: int = 0, stochastic: bool = False,
             overwrite: bool = False) -> None:
    """Evaluate the final policy of every seed of a run; print the results and write RUN/eval.json.

    Args:
      run: run folder written by `jaxppo train` (config.json, final_params.msgpack).
      num_episodes: complete episodes per seed.
      seed: evaluation key; every seed's policy plays the same env resets and action draws.
      stochastic: sample actions instead of acting with the distribution's mode.
      overwrite: replace an existing RUN/eval.json.
    """
    import jax
    import numpy as np

    from jaxppo import outputs
    from jaxppo.evaluate import make_evaluate

    if num_episodes < 1:
        raise UsageError(f"--num-episodes {num_episodes}: must be at least 1")
    cfg, saved, num_seeds = _read_final_params(run)
    if (run / "eval.json").exists() and not overwrite:
        raise UsageError(f"eval: {run}/eval.json already exists; pass --overwrite to replace it")

    evaluate_seeds = jax.jit(jax.vmap(make_evaluate(cfg, num_episodes=num_episodes, deterministic=not stochastic),
                                      in_axes=(0, None, 0 if cfg.normalize_observations else None)))
    # Each seed acts on observations normalised with its own saved statistics, as during training.
    obs_moments = saved["obs_moments"] if cfg.normalize_observations else None
    result = evaluate_seeds(saved["params"], jax.random.key(seed), obs_moments)
    returns, lengths = np.asarray(result.returns, np.float64), np.asarray(result.lengths)
    first_seed = _first_seed(run)
    per_seed = []
    for i in range(num_seeds):
        entry = {"seed_index": i, "train_seed": None if first_seed is None else first_seed + i,
                 "mean_return": float(returns[i].mean()), "std_return": float(returns[i].std()),
                 "mean_length": float(lengths[i].mean()), "std_length": float(lengths[i].std()),
                 "returns": [float(r) for r in returns[i]], "lengths": [int(n) for n in lengths[i]]}
        per_seed.append(entry)
        print(f"seed {entry['train_seed'] if first_seed is not None else i}: return {entry['mean_return']:.2f} +- "
              f"{entry['std_return']:.2f}, length {entry['mean_length']:.1f} +- {entry['std_length']:.1f} "
              f"over {num_episodes} episode(s)")
    summary = {"env": cfg.env, "num_episodes": num_episodes, "seed": seed, "deterministic": not stochastic,
               "num_seeds": num_seeds, "mean_return": float(returns.mean()), "per_seed": per_seed}
    outputs.write_json(run / "eval.json", summary)
    print(f"done: mean return {summary['mean_return']:.2f} over {num_seeds} seed(s) -> {run}/eval.json", flush=True)


def _read_final_params(run: Path):
    """(config with num_devices=1, {'params', 'obs_moments'} with leaves [S, ...], S) of a finished run folder."""
    import jax
    import numpy as np
    from flax import serialization

    from jaxppo import outputs
    from jaxppo.agent import make_agent
    from jaxppo.envs import init_moments
    from jaxppo.networks import init_params

    if not run.is_dir():
        raise UsageError(f"eval: run folder {run} does not exist; pass a folder written by `jaxppo train --out DIR`")
    for name in ("config.json", "final_params.msgpack"):
        if not (run / name).is_file():
            raise UsageError(f"eval: {run}/{name} is missing; pass a folder written by a finished `jaxppo train`")
    try:
        cfg = outputs.config_from_dict(json.loads((run / "config.json").read_text()))
        # Evaluation runs on one device whatever the run trained on.
        cfg = dataclasses.replace(cfg, num_devices=1)
        agent = make_agent(cfg)
    except (TypeError, ValueError) as error:
        raise UsageError(f"eval: {run}/config.json is invalid: {error}") from None
    single = {"params": init_params(agent.network, agent.spec, jax.random.key(0)),
              "obs_moments": init_moments(agent.spec.obs_shape)}
    # `jaxppo train` saves every leaf with a leading seed axis [S, ...]; its size is read from the file.
    try:
        raw = serialization.msgpack_restore((run / "final_params.msgpack").read_bytes())
    except ValueError as error:
        raise UsageError(f"eval: {run}/final_params.msgpack is unreadable: {error}") from None
    first = jax.tree.leaves(raw.get("params", {})) if isinstance(raw, dict) else []
    reference = jax.tree.leaves(single["params"])
    if not first or np.ndim(first[0]) != np.ndim(reference[0]) + 1:
        raise UsageError(f"eval: {run}/final_params.msgpack does not hold per-seed parameters of this config")
    num_seeds = int(np.shape(first[0])[0])
    template = jax.tree.map(lambda x: np.zeros((num_seeds,) + np.shape(x), np.asarray(x).dtype), single)
    try:
        saved = outputs.read_params(run / "final_params.msgpack", template)
    except ValueError as error:
        raise UsageError(f"eval: {run}/final_params.msgpack does not match config.json: {error}") from None
    return cfg, saved, num_seeds


def _first_seed(run: Path) -> int | None:
    """The run's first training seed from run.json or summary.json (None if neither says)."""
    for name in ("run.json", "summary.json"):
        try:
            values = json.loads((run / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(values.get("seed"), int):
            return values["seed"]
        if isinstance(values.get("seeds"), list) and values["seeds"]:
            return int(values["seeds"][0])
    return None


COMMANDS = {"sweep": sweep, "plot": plot, "eval": eval_run}
"""To be merged into jaxppo.cli.COMMANDS."""
