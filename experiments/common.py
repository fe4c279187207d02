"""Shared pieces of the experiment scripts: machine description, tables, CSV, targets and seed statistics.

Scripts in experiments/ are run from the repository root (`python experiments/<name>.py`), so this module is
importable as `common` from them. No library logic lives here; training goes through the public jaxppo API.
"""

from __future__ import annotations

import argparse
import ast
import csv
import dataclasses
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

TARGETS: dict[str, float] = {
    "CartPole-v1": 475.0,
    "Acrobot-v1": -100.0,
    "Pendulum-v1": -250.0,
    "Breakout-MinAtar": 20.0,
    "SpaceInvaders-MinAtar": 100.0,
}
"""Return at which a run counts as converged ("solved"-style thresholds; Breakout-MinAtar 20 as in the issue)."""

SMALL_BUDGET: dict[str, int] = {
    "CartPole-v1": 300_000,
    "Acrobot-v1": 300_000,
    "Pendulum-v1": 600_000,
    "Breakout-MinAtar": 1_000_000,
    "SpaceInvaders-MinAtar": 1_000_000,
}
"""CPU-sized env-step budgets per seed for --budget small (--budget full uses each preset's total_timesteps)."""

TARGET_WINDOW = 10
"""A run reaches its target at the first update where the mean episode return over the last TARGET_WINDOW updates
(the same window as the final return) is at or above the target."""


def config_for(env_id: str, budget: str, total_timesteps: int | None = None):
    """The env's preset config at --budget small (SMALL_BUDGET) or full (the preset's own total_timesteps).

    total_timesteps, when given, replaces either budget (quick checks and tests).
    """
    from jaxppo.presets import preset_config

    steps = total_timesteps or (SMALL_BUDGET[env_id] if budget == "small" else None)
    return preset_config(env_id.lower(), **({"total_timesteps": steps} if steps else {}))


def config_field(text: str) -> tuple[str, Any]:
    """FIELD=VALUE (VALUE a Python literal) -> (field, value), for the scripts' --set; a field PPOConfig lacks, or
    no value, is refused with argparse's one-line error."""
    from jaxppo.config import PPOConfig

    name, _, value = text.partition("=")
    if name not in {f.name for f in dataclasses.fields(PPOConfig)} or not value:
        raise argparse.ArgumentTypeError(f"{text!r}: expected FIELD=VALUE with FIELD a PPOConfig field")
    return name, ast.literal_eval(value)


def cpu_model() -> str:
    """The CPU's model name and its widest vector extension (from /proc/cpuinfo; "unknown CPU" where absent): ratios
    between programs move between CPUs (e.g. vmapped matmuls), so every results file names the one it ran on."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    fields = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in info.splitlines())}
    model = fields.get("model name", "unknown CPU")
    flags = set(fields.get("flags", "").split())
    vector = next((name for name in ("avx512f", "avx2", "avx") if name in flags), "")
    return f"{model}, {vector}" if vector else model


def machine_lines() -> list[str]:
    """Lines describing the host and the jax backend (for the top of every results file)."""
    import jax

    device = jax.devices()[0]
    try:
        usable_cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        usable_cpus = os.cpu_count()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return [
        f"host: {platform.platform()}, {platform.machine()} ({cpu_model()}), {os.cpu_count()} CPUs "
        f"({usable_cpus} usable), load average {load}, Python {platform.python_version()}",
        f"jax {jax.__version__}: backend {jax.default_backend()}, device kind {device.device_kind!r}, "
        f"{jax.local_device_count()} local device(s), XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}",
    ]


def format_cell(value: Any) -> str:
    """Text as is; ints with separators; floats to 3 significant digits (or whole numbers from 1000 up)."""
    if isinstance(value, (bool, str)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    if value is None or not np.isfinite(value):
        return "-" if value is None or np.isnan(value) else str(value)
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def markdown_table(rows: Sequence[NamedTuple]) -> str:
    """The rows as a markdown table (numbers right-aligned)."""
    fields = type(rows[0])._fields
    cells = [list(fields)] + [[format_cell(v) for v in row] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(fields))]
    numeric = [not isinstance(v, (str, bool)) for v in rows[0]]
    lines = []
    for n, line in enumerate(cells):
        lines.append("| " + " | ".join(c.rjust(w) if num else c.ljust(w)
                                       for c, w, num in zip(line, widths, numeric)) + " |")
        if n == 0:
            lines.append("|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2))
                                        for w, num in zip(widths, numeric)) + "|")
    return "\n".join(lines)


def write_csv(path: Path, rows: Sequence[NamedTuple]) -> None:
    """The rows as CSV with a header line (full precision); creates the parent folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(type(rows[0])._fields)
        writer.writerows(rows)


def trailing_mean(values: np.ndarray, window: int = TARGET_WINDOW) -> np.ndarray:
    """Mean over the last `window` entries up to each position, NaN entries left out (NaN if all are).

    values: [..., U] -> [..., U].
    """
    values = np.asarray(values, np.float64)
    finite = np.isfinite(values)

    def window_sums(x: np.ndarray) -> np.ndarray:
        cumulative = np.cumsum(x, axis=-1)
        shifted = np.zeros_like(cumulative)
        shifted[..., window:] = cumulative[..., :-window]
        return cumulative - shifted

    counts = window_sums(finite.astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, window_sums(np.where(finite, values, 0.0)) / counts, np.nan)


def returns_after_first_episode(episode_return: np.ndarray, episodes_completed: np.ndarray) -> np.ndarray:
    """episode_return with NaN before the first completed episode (the metric holds a placeholder there). [S, U]."""
    seen = np.cumsum(np.asarray(episodes_completed), axis=-1) > 0
    return np.where(seen, np.asarray(episode_return, np.float64), np.nan)


def first_reaching(episode_return: np.ndarray, episodes_completed: np.ndarray, target: float,
                   window: int = TARGET_WINDOW) -> np.ndarray:
    """Per seed, the 1-based update at which the trailing-mean return first reaches `target`; 0 if never.

    Only windows made entirely of updates at or after the first completed episode count (before it the
    episode_return metric holds a placeholder, not a return). episode_return, episodes_completed: [S, U] -> int [S].
    """
    seen = np.cumsum(np.asarray(episodes_completed), axis=-1) > 0
    window = min(window, seen.shape[-1])  # runs shorter than the window use all their updates
    window_seen = np.zeros_like(seen)
    window_seen[..., window - 1:] = seen[..., : seen.shape[-1] - window + 1]
    reached = (trailing_mean(episode_return, window) >= target) & window_seen
    return np.where(reached.any(axis=-1), reached.argmax(axis=-1) + 1, 0)


def iqm(values: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle half after sorting (floor(n/4) dropped at each end)."""
    ordered = np.sort(np.asarray(values, np.float64))
    cut = len(ordered) // 4
    return float(ordered[cut: len(ordered) - cut].mean())


def make_rollout_limit(config) -> Callable[[Any], Any]:
    """run(key) -> (final EnvCarry, float32 [num_updates]): the rollouts of a training run, without the learning.

    The *pure rollout limit* of a config: config.num_updates rollouts of config.num_steps steps by the same policy
    network (with memory, if the config has one) with its initial parameters and normaliser statistics, built from
    the library's own pieces (`make_agent`, `init_state`, `rollout`). Each rollout is reduced to the sum of its
    values, log-probabilities and episode returns: training needs them, so XLA must compute them here too, but need
    not keep the [T, B] trajectory. One device only (config.num_devices == 1).
    """
    import jax
    import jax.numpy as jnp
    from jax import lax

    from jaxppo.agent import make_agent
    from jaxppo.config import HParams
    from jaxppo.rollout import rollout
    from jaxppo.train import init_state, local_env_ids

    if config.num_devices != 1:
        raise ValueError(f"num_devices={config.num_devices}: the rollout limit runs on one device")
    agent = make_agent(config)
    hparams = HParams.from_config(config)
    gamma = hparams.gamma

    def run(key):
        state = init_state(agent, key, hparams)
        env_ids = local_env_ids(agent, None)

        def one_rollout(env_carry, rollout_key):
            env_carry, traj, tally = rollout(agent, state.params, env_carry, rollout_key, env_ids, state.normalizers,
                                             gamma)
            return env_carry, jnp.sum(traj.value) + jnp.sum(traj.log_prob) + tally.return_sum

        return lax.scan(one_rollout, state.env, jax.random.split(state.key, config.num_updates))

    return run


class Compiled(NamedTuple):
    """A compiled program, the arguments it is timed with, and its compile time."""

    run: Callable[..., Any]
    args: tuple
    compile_s: float


def compile_timed(fn: Callable[..., Any], *args: Any) -> Compiled:
    """jax.jit(fn).lower(*args).compile(), timed."""
    import jax

    start = time.perf_counter()
    run = jax.jit(fn).lower(*args).compile()
    return Compiled(run, args, time.perf_counter() - start)


def time_compiled(compiled: Compiled) -> tuple[float, Any]:
    """(seconds, outputs) of one run of a compiled program on its arguments, until the outputs are ready."""
    import jax

    start = time.perf_counter()
    outputs = jax.block_until_ready(compiled.run(*compiled.args))
    return time.perf_counter() - start, outputs


def experiment_parser(doc: str) -> argparse.ArgumentParser:
    """A parser with the flags every budgeted experiment shares: --budget, --total-timesteps, --out-dir."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--budget", choices=("small", "full"), default="small",
                        help="small: CPU-sized budgets (minutes on 2 cores); full: the presets' budgets (GPU)")
    parser.add_argument("--total-timesteps", type=int, default=None,
                        help="override every budget (quick checks and tests)")
    parser.add_argument("--out-dir", type=Path, default=Path("experiments/results"))
    return parser


def save_figure(fig, path: Path, title: str) -> None:
    """Title, tight layout, write the PNG (120 dpi) and free the figure."""
    import matplotlib.pyplot as plt

    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
