"""Hyperparameter schedules as data: the values an update uses, computed once per update from the run's HParams.

Each scheduled hyperparameter X (lr, ent_coef, clip_eps: `config.SCHEDULED`) is described by four traced values in
`HParams`: its start value X, a kind X_schedule (index into `config.SCHEDULES`), X_final (end value as a fraction of
X) and X_warmup (fraction of the run spent rising linearly from 0). With progress p = u / N of update u (0-based) of
N and q = (p - w) / (1 - w) clipped to [0, 1] after a warm-up of w:

    constant: X
    linear:   X * (1 - q) + X_final * X * q            (w = 0, X_final = 0: X * (1 - u / N), i.e. anneal_lr)
    cosine:   X_end + (X - X_end) * (1 + cos(pi q)) / 2,   X_end = X_final * X
    warm-up:  the value above times min(p / w, 1)

Everything is traced arithmetic on scalars, so a vmapped batch of settings may mix kinds without recompiling (as
optax's `inject_hyperparams` keeps hyperparameters in the optimizer state rather than in the program).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxppo.config import SCHEDULED, HParams


def scheduled_value(start: jax.Array, kind: jax.Array, final: jax.Array, warmup: jax.Array, update_index: jax.Array,
                    num_updates: int) -> jax.Array:
    """float32 []: the value of update `update_index` (0-based) of num_updates (see the module docstring)."""
    p = jnp.asarray(update_index).astype(jnp.float32) / num_updates
    q = jnp.where(warmup > 0, jnp.clip((p - warmup) / jnp.maximum(1.0 - warmup, 1e-12), 0.0, 1.0), p)
    end = start * final
    linear = start * (1.0 - q) + end * q
    cosine = end + (start - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * q))
    value = jnp.where(kind == 0, start, jnp.where(kind == 1, linear, cosine))
    ramp = jnp.where(warmup > 0, jnp.minimum(p / jnp.where(warmup > 0, warmup, 1.0), 1.0), 1.0)
    return value * ramp


def effective_hparams(hp: HParams, update_index: jax.Array, num_updates: int) -> HParams:
    """The HParams an update uses: every scheduled hyperparameter replaced by its value at update_index; every
    consumer (loss, optimizer, GAE, normalisers) reads this one object."""
    values = {name: scheduled_value(getattr(hp, name), getattr(hp, f"{name}_schedule"), getattr(hp, f"{name}_final"),
                                    getattr(hp, f"{name}_warmup"), update_index, num_updates)
              for name in SCHEDULED}
    return hp.replace(**values)
