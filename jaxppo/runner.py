"""Host-side driver of a run in compiled chunks: seeds axis, chunk loop, timing and the non-finite guard.

A run of config.num_updates updates is executed as chunks of K updates by the same compiled program (a shorter
last chunk compiles once more). Between chunks the host can checkpoint and log; the result equals one
uninterrupted `train(key)` because each chunk continues from the state's own update counter and keys.
"""

from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxppo.config import HParams, PPOConfig
from jaxppo.train import ProgressFn, make_train_parts

GUARDED_METRICS = ("total_loss", "policy_loss", "value_loss", "entropy", "approx_kl", "grad_norm")


class ChunkResult(NamedTuple):
    state: Any  # TrainState with a leading seed axis
    metrics: Any  # Metrics as numpy, leaves [S, K]
    first_update: int  # updates done before this chunk
    seconds: float


def _with_seed_axis(tree):
    return jax.tree.map(lambda x: x[None], tree)


def _without_seed_axis(tree):
    return jax.tree.map(lambda x: x[0], tree)


class ChunkedRun:
    """Compiled init and chunk functions for `num_seeds` seeds (seed axis leading; plain program for one seed)."""

    def __init__(self, config: PPOConfig, num_seeds: int, progress_fn: ProgressFn | None = None):
        self.config = config
        self.num_seeds = num_seeds
        self.parts = make_train_parts(config, progress_fn=progress_fn)
        self.hparams = HParams.from_config(config)
        self.compile_seconds = 0.0
        self._compiled: dict[int, Callable] = {}
        if num_seeds == 1:  # no vmap for one seed: the plain program, given the seed axis outside
            self._init = jax.jit(lambda keys: _with_seed_axis(self.parts.init(keys[0])))
        else:
            self._init = jax.jit(jax.vmap(self.parts.init))

    def init(self, keys: jax.Array):
        """Initial state [S, ...] for keys [S]."""
        return self._init(keys)

    def _chunk_fn(self, num_updates: int, state) -> Callable:
        if num_updates not in self._compiled:
            parts = self.parts
            if self.num_seeds == 1:
                fn = jax.jit(lambda s, hp: _with_seed_axis(parts.run(_without_seed_axis(s), hp, num_updates)))
            else:
                fn = jax.jit(jax.vmap(lambda s, hp: parts.run(s, hp, num_updates), in_axes=(0, None)))
            start = time.perf_counter()
            self._compiled[num_updates] = fn.lower(state, self.hparams).compile()
            self.compile_seconds += time.perf_counter() - start
        return self._compiled[num_updates]

    def run_chunk(self, state, num_updates: int, first_update: int) -> ChunkResult:
        """Run num_updates updates from state; returns the new state and host metrics [S, num_updates]."""
        fn = self._chunk_fn(num_updates, state)
        start = time.perf_counter()
        state, metrics = jax.block_until_ready(fn(state, self.hparams))
        seconds = time.perf_counter() - start
        return ChunkResult(state, host_tree(metrics), first_update, seconds)


def host_tree(tree):
    """Device arrays -> numpy; replicated arrays of a multi-process run are read from a local replica."""

    def leaf(x):
        return np.asarray(x if getattr(x, "is_fully_addressable", True) else x.addressable_data(0))

    return jax.tree.map(leaf, tree)


def chunk_sizes(num_updates: int, chunk_updates: int, start: int = 0, stop_after: int | None = None) -> list[int]:
    """Updates per chunk from `start` to num_updates (or to start + stop_after), each at most chunk_updates."""
    end = num_updates if stop_after is None else min(num_updates, start + stop_after)
    sizes, done = [], start
    while done < end:
        sizes.append(min(chunk_updates, end - done))
        done += sizes[-1]
    return sizes


def find_nonfinite(chunk: ChunkResult) -> str | None:
    """A message naming the first update and metric that is not finite in the chunk (or the params), else None."""
    for name in GUARDED_METRICS:
        values = np.asarray(getattr(chunk.metrics, name))
        bad = np.argwhere(~np.isfinite(values))
        if bad.size:
            seed, update = bad[0]
            return (f"non-finite {name} ({values[seed, update]}) at update {chunk.first_update + update + 1} "
                    f"(seed index {seed})")
    # Reduced on the device: only one bool per parameter array crosses to the host.
    finite = host_tree(jax.tree.map(lambda x: jnp.all(jnp.isfinite(x)), chunk.state.params))
    for path, leaf in jax.tree_util.tree_flatten_with_path(finite)[0]:
        if not leaf:
            return (f"non-finite parameters {jax.tree_util.keystr(path)} after update "
                    f"{chunk.first_update + np.asarray(chunk.metrics.env_steps).shape[1]}")
    return None


def concat_metrics(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Join metric columns ({name: [S, U_i]}) along the update axis."""
    return {name: np.concatenate([p[name] for p in parts], axis=1) for name in parts[0]}
