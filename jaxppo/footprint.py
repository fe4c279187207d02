"""A config's memory footprint, estimated before anything is compiled, so that an impossible size is refused with
the numbers instead of ending in an out-of-memory crash minutes later.

The estimate counts the arrays a training program keeps alive: parameters with their gradient, Adam moments and
flat copies; per environment the rollout [T, ...] of observations and masks plus a handful of per-step scalars;
the minibatch index tables of every epoch; twice the activations of one minibatch (forward and backward); the
normaliser warm-up rollout; the metrics of one compiled chunk. Evaluation (periodic or `jaxppo eval`) keeps its
parallel episodes' observations and activations. Each is a lower bound of the true peak (XLA keeps temporaries
too), which is all a refusal needs.
"""

from __future__ import annotations

import math
import os

from jaxppo.config import PPOConfig
from jaxppo.envs.protocol import EnvSpec

BYTES = 4  # float32 / int32
SCALARS_PER_STEP = 12  # action, log-prob, value, reward, flags, advantages, returns, ...


def parameter_count(config: PPOConfig, spec: EnvSpec) -> int:
    """Parameters of the actor-critic (both branches, torsos, memory cores, heads), from the parameters' shapes
    (`jax.eval_shape` of the initialisation: nothing is computed, and every core and head counts as built)."""
    from jaxppo.distributions import make_family
    from jaxppo.networks import count_params, make_network

    return count_params(make_network(config, spec, make_family(config, spec)), spec)


def estimate_bytes(config: PPOConfig, spec: EnvSpec, num_seeds: int = 1, num_devices: int = 1,
                   chunk_updates: int = 0) -> int:
    """Lower bound of the bytes one device needs to train config (num_seeds vmapped seeds; chunks of
    chunk_updates updates, whose metrics are kept until the chunk ends)."""
    params = parameter_count(config, spec)
    obs = math.prod(spec.obs_shape)
    per_step = obs + (spec.num_actions if spec.has_action_mask else 0) + SCALARS_PER_STEP
    envs = config.num_envs // num_devices
    rollout = envs * config.num_steps * per_step * 3  # the rollout, its normalised copy and the minibatches
    indices = config.num_epochs * envs * config.num_steps
    widest = max(config.hidden_sizes + ((config.memory_size,) if config.recurrent else ()))
    activations = 2 * (envs * config.num_steps // config.num_minibatches) * (obs + 4 * widest) * 2
    warmup = envs * config.normalizer_warmup_steps * per_step
    metrics = chunk_updates * METRICS_PER_UPDATE
    return BYTES * num_seeds * (6 * params + max(rollout, warmup) + indices + activations + metrics)


METRICS_PER_UPDATE = 24
"""Scalars one update's metrics hold (a bound for the default loss; a chunk of K updates keeps K of them)."""


def eval_bytes(config: PPOConfig, spec: EnvSpec, num_episodes: int, num_seeds: int = 1) -> int:
    """Lower bound of the bytes an evaluation of num_episodes parallel episodes per seed needs."""
    obs = math.prod(spec.obs_shape)
    widest = max(config.hidden_sizes + ((config.memory_size,) if config.recurrent else ()))
    per_episode = 3 * obs + 4 * widest + (spec.num_actions if spec.has_action_mask else 0) + SCALARS_PER_STEP
    return BYTES * num_seeds * num_episodes * per_episode


def available_bytes(device=None) -> int | None:
    """Memory the device can give: its own limit on an accelerator, MemAvailable of the host on CPU."""
    if device is not None and device.platform != "cpu":
        stats = device.memory_stats() or {}
        return stats.get("bytes_limit")
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(config: PPOConfig, spec: EnvSpec, num_seeds: int = 1, num_devices: int = 1, device=None,
               chunk_updates: int = 0) -> None:
    """ValueError naming the sizes when the estimate exceeds the memory available."""
    needed = estimate_bytes(config, spec, num_seeds, num_devices, chunk_updates)
    available = available_bytes(device)
    if available is None or needed <= available:
        return
    warmup = (f"normalizer_warmup_steps={config.normalizer_warmup_steps}; " if config.normalizer_warmup_steps
              else "")
    raise ValueError(
        f"this config needs at least {needed / 2**30:,.1f} GiB per device but {available / 2**30:,.1f} GiB are "
        f"available ({parameter_count(config, spec):,} parameters, hidden_sizes={config.hidden_sizes}; "
        f"num_envs={config.num_envs} x num_steps={config.num_steps} steps of {math.prod(spec.obs_shape):,} "
        f"observation values; num_epochs={config.num_epochs}; {warmup}{num_seeds} seed(s)); reduce these"
    )


def check_eval_fits(config: PPOConfig, spec: EnvSpec, num_episodes: int, num_seeds: int = 1, device=None,
                    flag: str = "num_episodes") -> None:
    """ValueError naming `flag` when num_episodes parallel episodes x num_seeds do not fit the memory available."""
    needed = eval_bytes(config, spec, num_episodes, num_seeds)
    available = available_bytes(device)
    if available is None or needed <= available:
        return
    fitting = max(1, int(num_episodes * available / needed))
    raise ValueError(f"{flag}={num_episodes}: {num_episodes:,} parallel episodes x {num_seeds} seed(s) need at least "
                     f"{needed / 2**30:,.1f} GiB but {available / 2**30:,.1f} GiB are available; use at most "
                     f"{fitting:,}")
