"""runner.find_nonfinite: names the metric and update, or the parameter array, that went non-finite."""

from __future__ import annotations

import types

import jax.numpy as jnp
import numpy as np

from jaxppo.runner import GUARDED_METRICS, ChunkResult, find_nonfinite


def _chunk(params, bad_metric=None):
    metrics = {name: np.ones((2, 3), np.float32) for name in GUARDED_METRICS}
    metrics["env_steps"] = np.ones((2, 3), np.int32)
    if bad_metric is not None:
        metrics[bad_metric][1, 2] = np.inf
    state = types.SimpleNamespace(params=params)
    return ChunkResult(state, types.SimpleNamespace(**metrics), first_update=10, seconds=0.0)


def test_finite_chunk_passes():
    assert find_nonfinite(_chunk({"actor": {"w": jnp.ones((2, 4))}})) is None


def test_nonfinite_metric_is_named_with_update_and_seed():
    message = find_nonfinite(_chunk({"w": jnp.ones(3)}, bad_metric="value_loss"))
    assert message == "non-finite value_loss (inf) at update 13 (seed index 1)"


def test_nonfinite_parameters_are_named_by_path():
    params = {"actor": {"w": jnp.ones((2, 4))}, "critic": {"b": jnp.array([[0.0, jnp.nan]])}}
    message = find_nonfinite(_chunk(params))
    assert message == "non-finite parameters ['critic']['b'] after update 13"
