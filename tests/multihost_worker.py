"""One process of a multi-process test run (spawned by tests/test_distributed.py; not a test itself).

usage: python tests/multihost_worker.py PORT NUM_PROCESSES PROCESS_ID LOCAL_DEVICES OUT.npz
Trains a short run over all processes and saves this process's view of the final parameters and metrics. Counts are
global: the config is the same on any layout.
"""

import os
import sys

port, num_processes, process_id, local_devices, out = sys.argv[1:6]
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={local_devices}"
os.environ["JAX_PLATFORMS"] = "cpu"

from jaxppo.distributed import initialize  # noqa: E402

initialize(f"127.0.0.1:{port}", int(num_processes), int(process_id), timeout_seconds=60)

import jax  # noqa: E402
import numpy as np  # noqa: E402

import jaxppo  # noqa: E402
from tests.helpers import SHORT_RUN  # noqa: E402


def local(x):
    return np.asarray(x if x.is_fully_addressable else x.addressable_data(0))


config = jaxppo.PPOConfig(**SHORT_RUN, num_devices=int(local_devices))
state, metrics = jax.jit(jaxppo.make_train(config, check_replicas=True))(jax.random.key(0))
leaves = {f"param_{i}": local(x) for i, x in enumerate(jax.tree.leaves(state.params))}
np.savez(out, episode_return=local(metrics.episode_return), in_sync=local(metrics.replicas_in_sync),
         process_count=jax.process_count(), **leaves)
print(f"process {process_id}: done", flush=True)
