"""Training over several devices and hosts: mesh, `jax.shard_map` / `jax.pmap` wrappers, replica check, multi-host.

The per-device program is the single-device one (`train.init_state` + `train.run_updates`) run with
`axis_name=DEVICE_AXIS`: each device steps `num_envs / num_devices` environments, and gradients, metrics and
normaliser statistics are averaged with `lax.pmean` over the axis, so parameters stay identical everywhere.

shard_map and the varying-manual-axes check: with `check_vma=True` (JAX's default), differentiating a loss with
respect to *replicated* parameters inside shard_map already sums the gradient over devices, and the explicit
`lax.pmean` would then leave it D times too large (silently, and partly hidden by gradient clipping). jaxppo maps
with `check_vma=False`, where every device differentiates its own copy of the parameters, and averages explicitly
with `lax.pmean`, exactly as under pmap. `tests/test_distributed.py` pins this against a single-device full-batch
gradient without clipping.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P

from jaxppo.agent import make_agent
from jaxppo.collectives import DEVICE_AXIS
from jaxppo.config import HParams, PPOConfig
from jaxppo.train import Metrics, ProgressFn, TrainParts, TrainState, init_state, run_updates, train_from_parts

__all__ = ["DEVICE_AXIS", "initialize", "make_distributed_parts", "make_distributed_train", "mesh_devices"]

FAKE_DEVICES_HINT = ("on CPU, fake more with XLA_FLAGS=--xla_force_host_platform_device_count=N set before jax is "
                     "imported")


def mesh_devices(config: PPOConfig) -> list[Any]:
    """The devices of the run: the first config.num_devices local devices of every process, in process order.

    Raises ValueError if a process has fewer local devices than requested.
    """
    available = jax.local_device_count()
    if config.num_devices > available:
        raise ValueError(
            f"num_devices={config.num_devices}: only {available} local {jax.default_backend()} device(s) exist "
            f"in this process; use --num-devices {available} (or 'all'), or {FAKE_DEVICES_HINT}"
        )
    devices = []
    for process in range(jax.process_count()):
        local = [d for d in jax.devices() if d.process_index == process]
        devices.extend(local[: config.num_devices])
    return devices


def make_mesh(config: PPOConfig) -> Mesh:
    """1-D mesh over mesh_devices(config) with axis DEVICE_AXIS."""
    return Mesh(np.array(mesh_devices(config)), (DEVICE_AXIS,))


def make_distributed_parts(config: PPOConfig, env: Any = None, env_params: Any = None,
                           progress_fn: ProgressFn | None = None) -> TrainParts:
    """init/run (see train.TrainParts) over config.num_devices devices per process.

    Environment arrays in the state are laid out by global environment index (split over the device axis);
    everything else is replicated. `metrics.replicas_in_sync` checks after every update that parameters are
    identical on all devices.
    """
    agent = make_agent(config, env, env_params)
    mesh = make_mesh(config)
    state_specs = _state_specs(jax.eval_shape(lambda k: init_state(agent, k), jax.random.key(0)))

    def init_local(key_data: jax.Array) -> TrainState:
        return init_state(agent, jax.random.wrap_key_data(key_data), DEVICE_AXIS)

    def run_local(num_updates: int):
        def run(state: TrainState, hp: HParams) -> tuple[TrainState, Metrics]:
            return run_updates(agent, state, hp, num_updates, DEVICE_AXIS, progress_fn)

        return run

    if config.parallel == "shard_map":
        init_mapped = jax.shard_map(init_local, mesh=mesh, in_specs=P(), out_specs=state_specs, check_vma=False)

        def run_mapped(num_updates: int):
            return jax.shard_map(run_local(num_updates), mesh=mesh, in_specs=(state_specs, P()),
                                 out_specs=(state_specs, P()), check_vma=False)
    else:
        init_mapped, run_mapped = _pmap_parts(init_local, run_local, mesh, state_specs)

    return TrainParts(
        init=lambda key: init_mapped(jax.random.key_data(key)),
        run=lambda state, hp, num_updates: run_mapped(num_updates)(state, hp),
    )


def make_distributed_train(config: PPOConfig, env: Any = None, env_params: Any = None,
                           progress_fn: ProgressFn | None = None) -> Callable[..., tuple[TrainState, Metrics]]:
    """train(key, hparams=None) mapped over config.num_devices devices, even when that is 1 (make_train runs one
    device unmapped); experiments/scaling.py uses it to measure the mapping's own overhead."""
    return train_from_parts(config, make_distributed_parts(config, env, env_params, progress_fn))


def _state_specs(state_shapes: TrainState) -> TrainState:
    """PartitionSpecs of a TrainState: per-environment arrays split over the device axis, the rest replicated."""
    env_specs = jax.tree.map(lambda x: P(DEVICE_AXIS) if x.ndim >= 1 else P(), state_shapes.env)
    return jax.tree.map(lambda _: P(), state_shapes).replace(env=env_specs)


def _pmap_parts(init_local, run_local, mesh: Mesh, state_specs: TrainState):
    """jax.pmap versions of init/run that take and return the shard_map layout (env arrays concatenated over
    devices in device order, replicated arrays once), so both mappings share one state layout."""
    num_local = len([d for d in mesh.devices.flat if d.process_index == jax.process_index()])
    devices = list(mesh.devices.flat) if jax.process_count() == 1 else None
    if devices is None and num_local != jax.local_device_count():
        raise ValueError(
            f"parallel='pmap' across processes uses every local device: set num_devices={jax.local_device_count()} "
            "or use parallel='shard_map'"
        )
    is_spec = lambda s: isinstance(s, P)  # noqa: E731

    def merge(spec: P, x: jax.Array) -> jax.Array:
        return x.reshape((-1,) + x.shape[2:]) if spec == P(DEVICE_AXIS) else x[0]

    def split(spec: P, x: jax.Array) -> jax.Array:
        if spec == P(DEVICE_AXIS):
            return x.reshape((num_local, x.shape[0] // num_local) + x.shape[1:])
        return jnp.broadcast_to(x, (num_local,) + x.shape)

    pmapped_init = jax.pmap(lambda _, key_data: init_local(key_data), axis_name=DEVICE_AXIS, in_axes=(0, None),
                            devices=devices)

    def init_mapped(key_data):
        return jax.tree.map(merge, state_specs, pmapped_init(jnp.arange(num_local), key_data), is_leaf=is_spec)

    def run_mapped(num_updates: int):
        pmapped_run = jax.pmap(run_local(num_updates), axis_name=DEVICE_AXIS, in_axes=(0, None), devices=devices)

        def run(state, hp):
            per_device = jax.tree.map(split, state_specs, state, is_leaf=is_spec)
            state, metrics = pmapped_run(per_device, hp)
            return jax.tree.map(merge, state_specs, state, is_leaf=is_spec), jax.tree.map(lambda x: x[0], metrics)

        return run

    return init_mapped, run_mapped


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               timeout_seconds: int = 300) -> None:
    """Join a multi-host run through JAX's distributed runtime (`jax.distributed.initialize`).

    With all three of coordinator ("HOST:PORT"), num_processes and process_id given, they are used as they are;
    with none given, JAX's cluster auto-detection (SLURM, TPU pods, Open MPI, ...) fills them in. timeout_seconds
    bounds both the wait for all processes at start-up and the detection of a dead peer (heartbeat), so a
    missing or crashed process makes the others fail instead of hanging.
    """
    given = [v is not None for v in (coordinator, num_processes, process_id)]
    if any(given) and not all(given):
        raise ValueError("--coordinator, --num-processes and --process-id: give all three, or none to let JAX "
                         "detect the cluster (SLURM, TPU, MPI)")
    if num_processes is not None and not (0 <= process_id < num_processes):
        raise ValueError(f"--process-id {process_id}: must be in [0, {num_processes}) for --num-processes "
                         f"{num_processes}")
    # Cross-process collectives on CPU (tests, CPU clusters); no effect on GPU/TPU. Must precede backend start-up.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator, num_processes=num_processes, process_id=process_id,
        initialization_timeout=timeout_seconds, heartbeat_timeout_seconds=timeout_seconds,
        shutdown_timeout_seconds=timeout_seconds,
    )
