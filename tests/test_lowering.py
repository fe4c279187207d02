"""Accelerator readiness without an accelerator: the training program lowers for CUDA and TPU (jax.export on this
CPU machine), on one device and sharded over several, with memory, action masks and every installed env suite.

What lowers is checked op by op: the only custom calls are the platforms' own linear algebra (the QR of the
orthogonal initialiser: cuSOLVER geqrf/orgqr on CUDA, Qr / Householder products on TPU; Brax's Cholesky: potrf).
Not exported here: the progress callback (`make_train(..., progress_fn=...)`, a `jax.debug.callback`): a host
callback is lowered against the running backend, so it cannot be exported from a CPU process for another platform
(jax 0.10: "the platform for the specified backend cpu is different from the lowering platform"); on a GPU or TPU
machine it lowers with the rest of the program as it does on CPU.
"""

from __future__ import annotations

import importlib.util
import re

import jax
import pytest

import jaxppo
from jaxppo.train import default_hparams, make_train_parts
from tests import probe_envs

PLATFORM_LINEAR_ALGEBRA = {"ProductOfElementaryHouseholderReflectors", "Qr", "cusolver_geqrf_ffi", "cusolver_orgqr_ffi",
                           "cusolver_potrf_ffi"}
TINY = dict(num_envs=4, num_steps=8, num_minibatches=2, total_timesteps=64)


def _export(config, env=None):
    parts = make_train_parts(config, env=env)
    hp = default_hparams(config)
    train = jax.jit(lambda key: parts.run(parts.init(key, hp), config.num_updates))
    return jax.export.export(train, platforms=("cuda", "tpu"))(jax.random.key(0))


def _check(exported, devices: int = 1):
    assert exported.platforms == ("cuda", "tpu") and exported.nr_devices == devices
    calls = set(re.findall(r"custom_call @(\w+)", exported.mlir_module()))
    assert calls <= PLATFORM_LINEAR_ALGEBRA, calls - PLATFORM_LINEAR_ALGEBRA
    assert "cusolver_geqrf_ffi" in calls and "Qr" in calls  # both platforms' versions are in the module


def test_sharded_recurrent_masked_training_lowers_for_cuda_and_tpu():
    config = jaxppo.PPOConfig(**{**TINY, "env": "custom", "num_devices": 2, "memory": "gru", "memory_size": 8})
    _check(_export(config, env=probe_envs.MaskedBestAction()), devices=2)


SUITES = [("brax/inverted_pendulum", "brax"), ("jumanji/Knapsack-v1", "jumanji"),
          ("craftax/Craftax-Classic-Symbolic-v1", "craftax"), ("Breakout-MinAtar", "gymnax")]


@pytest.mark.parametrize("env_id, package", SUITES)
def test_every_env_suite_lowers_for_cuda_and_tpu(env_id, package):
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed")
    _check(_export(jaxppo.PPOConfig(env=env_id, **TINY)))
