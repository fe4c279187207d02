"""Devices and hosts: the mesh, mapping a per-device function over it, and joining a multi-host run.

Generic: nothing here knows about PPO. `jaxppo.train` says which fields of its state are split over the device
axis and maps its per-device `init` / `run` with `map_over_devices`.

shard_map and the varying-manual-axes check: with `check_vma=True` (JAX's default), differentiating a loss with
respect to *replicated* parameters inside shard_map already sums the gradient over devices, and an explicit
`lax.pmean` would then leave it D times too large (silently, and partly hidden by gradient clipping). jaxppo maps
with `check_vma=False`, where every device differentiates its own copy of the parameters, and averages explicitly
with `lax.pmean`. `tests/test_distributed.py` pins this against a single-device full-batch gradient.

`jax.pmap` is not offered: in jax 0.10 it is itself a wrapper over shard_map.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh

from jaxppo.collectives import DEVICE_AXIS

FAKE_DEVICES_HINT = ("on CPU, fake more with XLA_FLAGS=--xla_force_host_platform_device_count=N set before jax is "
                     "imported")


def mesh_devices(num_devices: int) -> list[Any]:
    """The first num_devices local devices of every process, in process order (the global device order).

    Raises ValueError if a process has fewer local devices than requested.
    """
    available = jax.local_device_count()
    if num_devices > available:
        raise ValueError(
            f"num_devices={num_devices}: only {available} local {jax.default_backend()} device(s) exist "
            f"in this process; use --num-devices {available} (or 'all'), or {FAKE_DEVICES_HINT}"
        )
    devices = []
    for process in range(jax.process_count()):
        local = [d for d in jax.devices() if d.process_index == process]
        devices.extend(local[:num_devices])
    return devices


def make_mesh(num_devices: int) -> Mesh:
    """1-D mesh over mesh_devices(num_devices) with axis DEVICE_AXIS."""
    return Mesh(np.array(mesh_devices(num_devices)), (DEVICE_AXIS,))


def map_over_devices(fn: Callable, mesh: Mesh, in_specs: Any, out_specs: Any) -> Callable:
    """fn run on every device of the mesh on its shard of the inputs (jax.shard_map, check_vma=False)."""
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               timeout_seconds: int = 300) -> None:
    """Join a multi-host run through JAX's distributed runtime (`jax.distributed.initialize`).

    With all three of coordinator ("HOST:PORT"), num_processes and process_id given, they are used as they are;
    with none given, JAX's cluster auto-detection (SLURM, TPU pods, Open MPI, ...) fills them in. timeout_seconds
    bounds both the wait for all processes at start-up and the detection of a dead peer (heartbeat), so a
    missing or crashed process makes the others fail instead of hanging.
    """
    check_cluster_args(coordinator, num_processes, process_id)
    # Cross-process collectives on CPU (tests, CPU clusters); no effect on GPU/TPU. Must precede backend start-up.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator, num_processes=num_processes, process_id=process_id,
        initialization_timeout=timeout_seconds, heartbeat_timeout_seconds=timeout_seconds,
        shutdown_timeout_seconds=timeout_seconds,
    )


def detected_cluster() -> str | None:
    """The scheduler that launched this process as one of several tasks ('slurm' or 'openmpi'), else None.

    JAX's own detection (`jax.distributed.initialize()` without arguments) reads the same variables; this only
    decides whether to call it, so a single-task job (or a laptop) never waits for a coordinator.
    """
    import os

    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
    if all(name in os.environ for name in slurm) and int(os.environ["SLURM_NTASKS"] or 1) > 1:
        return "slurm"
    if int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1:
        return "openmpi"
    return None


def check_cluster_args(coordinator: str | None, num_processes: int | None, process_id: int | None) -> None:
    """ValueError naming the flag when the cluster arguments are incomplete or malformed."""
    given = [v is not None for v in (coordinator, num_processes, process_id)]
    if any(given) and not all(given):
        raise ValueError("--coordinator, --num-processes and --process-id: give all three, or none to let JAX "
                         "detect the cluster (SLURM, TPU, MPI)")
    if num_processes is not None and not (0 <= process_id < num_processes):
        raise ValueError(f"--process-id {process_id}: must be in [0, {num_processes}) for --num-processes "
                         f"{num_processes}")
    if coordinator is not None:
        host, sep, port = coordinator.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"--coordinator {coordinator}: expected HOST:PORT, e.g. 10.0.0.1:8476")
