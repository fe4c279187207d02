"""The non-finite guard: after every chunk, the host checks that training is still sound and names what is not.

Checked, in order: every loss metric and the GUARDED metrics for NaN/Inf (episode returns may legitimately be NaN
before the first episode ends), the parameters for NaN/Inf (reduced on the device), action masks that left an
observation without a legal action, and (with check_replicas) parameters that differ across devices.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxppo.distributed import host_tree

GUARDED = ("grad_norm", "learning_rate", "explained_variance")
"""Metrics checked for NaN/Inf after every chunk, besides every loss metric."""


class RunStopped(RuntimeError):
    """Training stopped because something went wrong (non-finite values, replicas out of sync, an env without a
    legal action); the message says what, where, and which checkpoint was kept."""


def find_nonfinite(metrics: dict[str, np.ndarray], loss_names: list[str], first_update: int) -> str | None:
    """A message naming the first update and metric that is not finite, else None. metrics: {name: [S, U]}."""
    for name in list(loss_names) + [n for n in GUARDED if n in metrics]:
        values = np.asarray(metrics[name])
        bad = np.argwhere(~np.isfinite(values))
        if bad.size:
            seed, update = bad[0]
            return (f"non-finite {name} ({values[seed, update]}) at update {first_update + update + 1} "
                    f"(seed index {seed})")
    return None


@jax.jit
def _finite_leaves(params: Any) -> Any:
    """params -> the same tree of bool scalars, each True when its array holds no NaN/Inf: one program per tree
    structure (leaf by leaf would compile and dispatch two small programs per array)."""
    return jax.tree.map(lambda x: jnp.all(jnp.isfinite(x)), params)


def nonfinite_params(params: Any, after_update: int) -> str | None:
    """A message naming the first parameter array holding NaN/Inf (reduced on the device), else None."""
    finite = host_tree(_finite_leaves(params))
    for path, leaf in jax.tree_util.tree_flatten_with_path(finite)[0]:
        if not np.all(leaf):
            return f"non-finite parameters {jax.tree_util.keystr(path)} after update {after_update}"
    return None


def chunk_problem(env_id: str, columns: dict[str, np.ndarray], loss_names: list[str], params: Any, done: int,
                  end: int) -> str | None:
    """What went wrong in the chunk of updates done+1..end (columns {name: [S, U]}, params after it), else None."""
    problem = find_nonfinite(columns, loss_names, done) or nonfinite_params(params, end)
    if problem is None and "invalid_action_masks" in columns and np.any(columns["invalid_action_masks"] > 0):
        seed, update = np.argwhere(columns["invalid_action_masks"] > 0)[0]
        problem = (f"env {env_id} returned an action mask with no legal action in update {done + update + 1} "
                   f"(seed index {seed}); every observation needs at least one legal action")
    if problem is None and "replicas_in_sync" in columns and not np.all(columns["replicas_in_sync"]):
        seed, update = np.argwhere(~columns["replicas_in_sync"].astype(bool))[0]
        problem = f"parameters differ across devices after update {done + update + 1} (seed index {seed})"
    return problem
