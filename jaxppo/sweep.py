"""Hyperparameter sweeps: every setting x every seed trained as ONE run whose members are the settings x seeds.

    result = run_sweep(PPOConfig(env="CartPole-v1"), grid={"lr": [1e-3, 3e-4], "ent_coef": [0.0, 0.01]})
    summary_table(result)   # per setting: values, mean/std/min/max of the final return over seeds
    print("\n".join(summary_lines(result)))   # the same, best first, one line per setting
    write_sweep(result, Path("runs/sweep"))   # sweep.csv + sweep.png

A sweep is a training run with a population axis (jaxppo.population): the same compiled chunks, checkpoints, resume,
devices, progress lines and files as `jaxppo train`, plus sweep.csv / sweep.png. Only `HParams` fields can be swept
(they are traced, so no recompilation per setting); anything that changes shapes
or loop counts (num_envs, hidden_sizes, ...) is a separate run. Seed i of a sweep uses `jax.random.key(seed + i)`,
exactly like `jaxppo train --seed SEED --num-seeds N`, so a sweep row is reproducible as a single run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import sys
import tempfile
from pathlib import Path
from typing import Any, NamedTuple, TextIO

import jax
import numpy as np

from jaxppo import outputs, run_folder
from jaxppo.config import HParams, PPOConfig, hparam_names
from jaxppo.losses import LossFn, ppo_loss
from jaxppo.pbt import PBTConfig
from jaxppo.population import Population
from jaxppo.runner import RunOptions, RunResult, train_run

SWEEPABLE = hparam_names()
"""Names that can be swept: the traced hyperparameters."""

SCALES = ("linear", "log")


class SweepResult(NamedTuple):
    """Outcome of run_sweep. P settings, S seeds, U updates."""

    config: PPOConfig  # the base config (every setting overrides some of its HParams fields)
    settings: list[dict[str, float]]  # P dicts {name: value}, all with the same names
    seeds: list[int]  # S seeds
    final_returns: np.ndarray  # float [P, S]: outputs.final_returns of each setting's curves
    episode_return: np.ndarray  # float [P, S, U]: per-update mean episode return
    env_steps: np.ndarray  # int [U]: cumulative env steps after each update
    finished: bool = True  # False when the run stopped early (a stop request): resume it with jaxppo train --resume


def _check_names(names) -> None:
    for name in names:
        if name not in SWEEPABLE:
            raise ValueError(f"{name!r} is not a sweepable hyperparameter; valid names: {', '.join(SWEEPABLE)} "
                             "(other PPOConfig fields change the compiled program: run them separately)")


def grid_settings(grid: dict[str, list[float]]) -> list[dict[str, float]]:
    """Cartesian product of grid {name: values}, first name varying slowest."""
    _check_names(grid)
    for name, values in grid.items():
        if len(values) == 0:
            raise ValueError(f"{name!r} has no values")
    names = list(grid)
    return [dict(zip(names, map(float, combo))) for combo in itertools.product(*(grid[n] for n in names))]


def random_settings(ranges: dict[str, tuple[float, float, str]], num_samples: int, seed: int = 0
                    ) -> list[dict[str, float]]:
    """num_samples independent draws from ranges {name: (low, high, "linear" | "log")}, np.random.default_rng(seed).

    "log" draws log(value) uniformly in [log(low), log(high)] (low must be > 0).
    """
    _check_names(ranges)
    for name, (low, high, scale) in ranges.items():
        if scale not in SCALES:
            raise ValueError(f"{name!r} scale {scale!r} must be one of {', '.join(SCALES)}")
        if not low <= high:
            raise ValueError(f"{name!r} low={low} must be <= high={high}")
        if scale == "log" and low <= 0:
            raise ValueError(f"{name!r} low={low} must be > 0 on a log scale")
    rng = np.random.default_rng(seed)
    settings = []
    for _ in range(num_samples):
        setting = {}
        for name, (low, high, scale) in ranges.items():
            if scale == "log":
                setting[name] = float(math.exp(rng.uniform(math.log(low), math.log(high))))
            else:
                setting[name] = float(rng.uniform(low, high))
        settings.append(setting)
    return settings


def setting_hparams(config: PPOConfig, setting: dict[str, float]) -> HParams:
    """HParams of config with setting applied; validated like a config (so vf_clip_eps=None follows clip_eps)."""
    _check_names(setting)
    return HParams.from_config(dataclasses.replace(config, **setting))


def _base_value(config: PPOConfig, name: str) -> float:
    """The config's value of a swept name as a number (vf_clip_eps None: clip_eps; a schedule kind: its index)."""
    value = getattr(config, name)
    if name == "vf_clip_eps" and value is None:
        return float(config.clip_eps)
    if isinstance(value, str) or value is None:
        return float(HParams.from_config(config).as_dict()[name])
    return float(value)


def sweep_population(config: PPOConfig, grid: dict[str, list[float]] | None = None, random_samples: int = 0,
                     ranges: dict[str, tuple[float, float, str]] | None = None,
                     seed: int = 0) -> tuple[Population, list[dict[str, float]]]:
    """(the run's Population, the settings as dicts): the grid's settings, then random_samples draws from ranges;
    every setting lists every swept name (the config's value where the grid or the ranges leave one out)."""
    if random_samples < 0:
        raise ValueError(f"random_samples={random_samples}: must be >= 0")
    if random_samples and not ranges:
        raise ValueError("random_samples > 0 needs ranges {name: (low, high, scale)}")
    settings = grid_settings(grid) if grid else []
    if random_samples:
        settings += random_settings(ranges, random_samples, seed)
    elif ranges:
        _check_names(ranges)
    if not settings:
        settings = [{}]  # nothing swept: the base config, over seeds
    names = sorted({n for s in settings for n in s}, key=SWEEPABLE.index)
    base = {n: _base_value(config, n) for n in names}
    settings = [{n: s.get(n, base[n]) for n in names} for s in settings]
    try:
        for setting in settings:
            setting_hparams(config, setting)
    except ValueError as error:
        raise ValueError(f"sweep setting out of range: {error}") from None
    return Population(settings=tuple(tuple(setting.items()) for setting in settings)), settings


def run_sweep(config: PPOConfig, grid: dict[str, list[float]] | None = None, random_samples: int = 0,
              ranges: dict[str, tuple[float, float, str]] | None = None, num_seeds: int = 3,
              seed: int = 0, out: Path | None = None, options: RunOptions | None = None, overwrite: bool = False,
              quiet: bool = True, stream: TextIO | None = None) -> SweepResult:
    """Train every setting x num_seeds seeds as ONE run (a population of members, jaxppo.runner) and collect their
    learning curves.

    The run is a training run like any other: chunked, checkpointed (options.checkpoint_every), resumable with
    `jaxppo train --resume OUT`, on config.num_devices devices, with progress lines (quiet=False), metrics.csv per
    member, final parameters of every member and hparams.csv; member m is setting m // num_seeds with seed
    seed + m % num_seeds. Without `out` it runs in a temporary folder that is removed afterwards.

    Args:
      config: base config; fixes shapes, env and budget, and the values of hyperparameters not swept.
      grid: {name: values}; its cartesian product is swept.
      random_samples: number of random settings drawn from ranges (added after the grid's settings).
      ranges: {name: (low, high, "linear" | "log")} for random sampling, drawn with np.random.default_rng(seed).
      num_seeds: seeds per setting; seed i uses jax.random.key(seed + i) (as `jaxppo train`).
      seed: first training seed, and the seed of the random sampler.
      out, options, overwrite, quiet, stream: the run folder and how it is run (jaxppo.runner.train_run).

    Returns:
      SweepResult with final returns [P, S] and curves [P, S, U].
    """
    if not isinstance(num_seeds, int) or num_seeds < 1:
        raise ValueError(f"num_seeds={num_seeds}: must be at least 1")
    population, settings = sweep_population(config, grid, random_samples, ranges, seed)
    options = dataclasses.replace(options or RunOptions(), seed=seed, num_seeds=num_seeds,
                                  population=population.to_json())
    with contextlib.ExitStack() as stack:
        folder = Path(out) if out is not None else Path(stack.enter_context(tempfile.TemporaryDirectory())) / "sweep"
        if overwrite and jax.process_count() == 1 and run_folder.check_new_run(folder, "train", True):
            result = _overwrite_staged(config, folder, options, quiet, stream)
        else:
            result = train_run(config, folder, options, overwrite=overwrite, quiet=quiet, stream=stream)
    swept = sweep_result(config, settings, list(range(seed, seed + num_seeds)), result.columns)
    return swept._replace(finished=result.finished)


def _overwrite_staged(config: PPOConfig, out: Path, options: RunOptions, quiet: bool,
                      stream: TextIO | None) -> RunResult:
    """--overwrite of a folder holding results: the new sweep trains in out/.sweep-new; the old results go only
    once it has finished (run_folder.staged_overwrite). One process only."""
    with run_folder.staged_overwrite(out) as (staging, replaced):
        result = train_run(config, staging, options, quiet=quiet, stream=stream)
        if result.finished:
            run_folder.swap_in(out, staging, replaced)
            if not quiet:
                print(f"note: --overwrite replaced {', '.join(replaced)} in {out}", file=stream or sys.stdout,
                      flush=True)
        else:
            print(f"note: {out}'s earlier results are kept; the stopped sweep is in {staging} (run the sweep again, "
                  f"or jaxppo train --resume {staging})", file=stream or sys.stdout, flush=True)
    return result


def sweep_result(config: PPOConfig, settings: list[dict[str, float]], seeds: list[int],
                 columns: dict[str, np.ndarray]) -> SweepResult:
    """A SweepResult from a population run's metric columns ({name: [P * S, U]}, setting-major)."""
    episode_return = np.asarray(columns["episode_return"], np.float64)
    episode_return = episode_return.reshape(len(settings), len(seeds), -1)
    finals = np.stack([outputs.final_returns(curves) for curves in episode_return])
    env_steps = np.asarray(columns["env_steps"])[0]
    return SweepResult(config, settings, seeds, finals, episode_return, env_steps)


def summary_table(result: SweepResult) -> list[dict[str, float]]:
    """One dict per setting: its hyperparameter values, then mean, std, min, max of the final return over seeds."""
    rows = []
    for setting, finals in zip(result.settings, result.final_returns):
        rows.append({**setting, "mean": float(finals.mean()), "std": float(finals.std()),
                     "min": float(finals.min()), "max": float(finals.max())})
    return rows


def setting_label(setting: dict[str, float]) -> str:
    """'lr=0.001, ent_coef=0.01' (4 significant digits), or 'base config' when nothing is swept."""
    return ", ".join(f"{name}={value:.4g}" for name, value in setting.items()) or "base config"


def summary_lines(result: SweepResult) -> list[str]:
    """summary_table as text, best mean first: 'lr=0.001: final return 21.40 +- 1.20 [20.20, 22.60] over 3 seed(s)'."""
    rows = sorted(zip(result.settings, summary_table(result)), key=lambda pair: -pair[1]["mean"])
    return [f"{setting_label(setting)}: final return {row['mean']:.2f} +- {row['std']:.2f} "
            f"[{row['min']:.2f}, {row['max']:.2f}] over {len(result.seeds)} seed(s)" for setting, row in rows]


def write_sweep(result: SweepResult, out_dir: Path) -> None:
    """Write out_dir/sweep.csv (a row per setting; per-seed returns ';'-joined) and out_dir/sweep.png."""
    from jaxppo.plotting import plot_curves

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs.write_sweep_csv(out_dir / outputs.SWEEP_CSV, list(result.settings[0]), summary_table(result),
                            result.final_returns)
    labels = [setting_label(setting) for setting in result.settings]
    plot_curves(result.env_steps, list(result.episode_return), labels, out_dir / outputs.SWEEP_PNG,
                title=f"{result.config.env}: sweep over {len(result.settings)} setting(s) x {len(result.seeds)} "
                      "seed(s)", band="std")


def run_pbt(config: PPOConfig, out: Path, pbt: PBTConfig, options: RunOptions | None = None, *,
            overwrite: bool = False, stop_after_updates: int | None = None, quiet: bool = False,
            stream: TextIO | None = None, env: Any = None, env_params: Any = None,
            loss_fn: LossFn = ppo_loss) -> RunResult:
    """Population-based training (jaxppo.pbt) as a training run in folder `out`: pbt.population members from seed
    options.seed on, exploit/explore every pbt.ready_updates updates inside the compiled chunks; hparams.csv and
    lineage.csv beside the usual files; `jaxppo.load(out)` gives the best member. What `jaxppo pbt` runs.

        result = run_pbt(preset_config("breakout-minatar", total_timesteps=1_000_000), Path("runs/pbt"),
                         PBTConfig(population=8, ready_updates=10, explore=(ExploreRange("lr", 1e-4, 3e-3),)))
    """
    population = Population(pbt=pbt)
    options = dataclasses.replace(options or RunOptions(), num_seeds=1, population=population.to_json())
    return train_run(config, out, options, overwrite=overwrite, stop_after_updates=stop_after_updates, quiet=quiet,
                     stream=stream, env=env, env_params=env_params, loss_fn=loss_fn)
