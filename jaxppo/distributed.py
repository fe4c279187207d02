"""Devices and hosts: the mesh, mapping a per-device function over it, joining a multi-host run, and the host-side
agreement between processes (same settings at start, one stop decision per chunk, barriers, reading replicas).

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

import contextlib
import socket
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh

from jaxppo.collectives import DEVICE_AXIS
from jaxppo.peer_watch import PeerWatch, exit_on_lost

# how long process 0 waits for the coordinator's port to be free at start-up: the coordination service of a run
# that ended just before serves there for its grace (jaxppo.coordination_service; 3 s after the watch's defaults)
PORT_RELEASE_SECONDS = 10.0
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
               timeout_seconds: int = 300, on_lost: Callable[[str], None] | None = None) -> PeerWatch | None:
    """Join a multi-host run through JAX's distributed runtime (`jax.distributed.initialize`).

    With all three of coordinator ("HOST:PORT"), num_processes and process_id given, they are used as they are;
    with none given, JAX's cluster auto-detection (SLURM, TPU pods, Open MPI, ...) fills them in. timeout_seconds
    bounds both the wait for all processes at start-up and the detection of a dead peer (heartbeat), so a
    missing or crashed process makes the others fail instead of hanging. With explicit arguments, `rendezvous`
    runs first: a missing or duplicate process is then a ValueError naming it (JAX's runtime would abort the
    process natively), and a `PeerWatch` over the processes is returned, started: a process lost later (killed,
    crashed, frozen) makes every other one call `on_lost` with one line naming it (default: print it and exit 1,
    `peer_watch.exit_on_lost`) before JAX's runtime would abort them (process 0 runs JAX's coordination service
    in a process beside it for that, `jaxppo.coordination_service`). The watch says goodbye at interpreter exit;
    call its `close(ok=False)` first when this process ends with an error. Detected clusters get the same when
    JAX's detection yields all three values (SLURM does); None with one process.
    """
    import atexit

    check_cluster_args(coordinator, num_processes, process_id)
    if coordinator is None:
        coordinator, num_processes, process_id = _detected_params(timeout_seconds)
    connections = {}
    if coordinator is not None and num_processes > 1:
        connections = rendezvous(coordinator, num_processes, process_id, timeout_seconds)
    # Cross-process collectives on CPU (tests, CPU clusters); no effect on GPU/TPU. Must precede backend start-up.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    watch = PeerWatch(process_id, num_processes, connections, _silence_limit(timeout_seconds),
                      on_lost or exit_on_lost, interval=min(1.0, _silence_limit(timeout_seconds) / 4))
    bind = None
    try:
        if connections and process_id == 0:
            bind = _serve_beside(coordinator, num_processes, timeout_seconds, grace_seconds=watch.failure_grace + 1)
        jax.distributed.initialize(
            coordinator_address=coordinator, num_processes=num_processes, process_id=process_id,
            initialization_timeout=timeout_seconds, heartbeat_timeout_seconds=timeout_seconds,
            shutdown_timeout_seconds=timeout_seconds, coordinator_bind_address=bind,
        )
    except BaseException:
        for conn in connections.values():
            conn.close()
        raise
    if not connections:
        return None
    watch.start()
    atexit.register(watch.close)
    return watch


def _silence_limit(timeout_seconds: float) -> float:
    """Seconds of a peer's silence the watch takes as its loss: below JAX's heartbeat timeout, so that the watch
    speaks before the runtime aborts."""
    return max(2.0, 0.8 * timeout_seconds)


def _serve_beside(coordinator: str, num_processes: int, timeout_seconds: int, grace_seconds: float) -> str:
    """Process 0: JAX's coordination service in a process of its own at the coordinator's port
    (`jaxppo.coordination_service`: it outlives a killed process 0 by grace_seconds, so the watch ends the other
    processes with its one line before their runtime aborts them). Returns the loopback address on which process
    0's own, unused, in-process service is to listen instead."""
    import atexit

    from jaxppo import coordination_service

    child = coordination_service.start_beside(int(coordinator.rpartition(":")[2]), num_processes, timeout_seconds,
                                              grace_seconds)
    # holds the child for the process's lifetime; at exit, after JAX's own shutdown (registered later, run first)
    atexit.register(child.stdin.close)
    return "127.0.0.1:0"


def _detected_params(timeout_seconds: int) -> tuple[str | None, int | None, int | None]:
    """(coordinator, num_processes, process_id) as JAX's cluster detection finds them, or Nones (then
    `jax.distributed.initialize` detects by itself, without a rendezvous or watch)."""
    try:
        from jax._src.clusters import ClusterEnv

        coordinator, num_processes, process_id, _ = ClusterEnv.auto_detect_unset_distributed_params(
            None, None, None, None, None, timeout_seconds)
    except Exception:  # noqa: BLE001 - no cluster, or a JAX version without this helper
        return None, None, None
    if coordinator is None or num_processes is None or process_id is None or ":" not in str(coordinator):
        return None, None, None
    return str(coordinator), int(num_processes), int(process_id)


def rendezvous(coordinator: str, num_processes: int, process_id: int,
               timeout_seconds: float) -> dict[int, socket.socket]:
    """Every process checks in with process 0 over one plain TCP connection on the coordinator's port, before JAX's
    runtime starts there. Returns when all num_processes processes, each with its own id, have checked in;
    ValueError naming the missing or duplicate process ids otherwise (within timeout_seconds).

    Returns the connections a `PeerWatch` runs on, {peer id: socket}: process 0 one per other process, the others
    one to process 0. They use a second port process 0 picks and announces in its go-ahead (`go PORT`), so that
    the coordinator's port is free again for JAX's runtime."""
    import time

    host, _, port = coordinator.rpartition(":")
    deadline = time.monotonic() + timeout_seconds
    hello = f"jaxppo {process_id} {num_processes}\n".encode()
    if process_id == 0:
        return _gather_peers(int(port), num_processes, deadline, timeout_seconds)
    stranger_until = None  # something else answers on the port: wait PORT_RELEASE_SECONDS for it to go
    while True:  # process 0 may start later: try until the deadline
        reply = _check_in(host, int(port), hello, deadline)
        if reply is None and time.monotonic() >= deadline:
            raise ValueError(f"process {process_id}: no process 0 answered at {coordinator} within "
                             f"{timeout_seconds:g}s; start process 0 (--process-id 0) there, with the same "
                             "--coordinator and --num-processes")
        if reply is not None and reply.startswith(("go ", "duplicate", "abort")):
            break
        if reply is not None:
            stranger_until = stranger_until or min(deadline, time.monotonic() + PORT_RELEASE_SECONDS)
            if time.monotonic() >= stranger_until:
                break
        time.sleep(0.2)
    if reply.startswith("go "):
        return _join_watch(host, int(reply.split()[1]), process_id, deadline, timeout_seconds)
    if reply.startswith("duplicate"):
        raise ValueError(f"--process-id {process_id}: another process joined as process {process_id}; give every "
                         "process its own --process-id")
    if reply.startswith("abort"):
        raise ValueError(f"process {process_id}: the run did not start: {reply[6:]}")
    raise ValueError(f"process {process_id}: process 0 at {coordinator} did not answer (is another process running "
                     f"as --process-id {process_id}, or something else on that port?)")


def _check_in(host: str, port: int, hello: bytes, deadline: float) -> str | None:
    """One check-in at process 0: its reply line, stripped ('' if something answered without a line), or None if
    nothing listens on the port."""
    import time

    try:
        conn = socket.create_connection((host, port), timeout=max(0.1, deadline - time.monotonic()))
    except OSError:
        return None
    with conn:
        conn.settimeout(max(1.0, deadline - time.monotonic()) + 10)  # process 0 decides by its own deadline
        try:
            conn.sendall(hello)
            return conn.makefile(errors="replace").readline().strip()
        except OSError:
            return ""


def _gather_peers(port: int, num_processes: int, deadline: float, timeout_seconds: float) -> dict[int, socket.socket]:
    """Process 0's side of rendezvous: accept every other process once, then tell them all to go (or why not), and
    accept their watch connections on a port of its choosing."""
    import time

    server = _listen(port, until=min(deadline, time.monotonic() + PORT_RELEASE_SECONDS))
    joined: dict[int, socket.socket] = {}
    problem = None
    watch_server = socket.create_server(("", 0))
    go = f"go {watch_server.getsockname()[1]}\n".encode()
    with server:
        while len(joined) < num_processes - 1 and problem is None:
            server.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                conn, _ = server.accept()
            except (socket.timeout, OSError):
                break
            try:
                conn.settimeout(5)
                words = conn.makefile().readline().split()
                peer, count = int(words[1]), int(words[2])
            except (OSError, ValueError, IndexError):
                conn.close()  # not a jaxppo process: ignore it
                continue
            if peer in joined or peer == 0:
                conn.sendall(b"duplicate\n")
                conn.close()
                problem = f"two processes joined as --process-id {peer}; give every process its own --process-id"
            elif count != num_processes or not 0 < peer < num_processes:
                conn.sendall(b"abort processes started with different --num-processes\n")
                conn.close()
                problem = (f"process {peer} was started with --num-processes {count}, process 0 with "
                           f"{num_processes}; start every process with the same flags")
            else:
                joined[peer] = conn
        missing = sorted(set(range(1, num_processes)) - set(joined))
        if problem is None and missing:
            problem = (f"process(es) {', '.join(map(str, missing))} of {num_processes} did not join within "
                       f"{timeout_seconds:g}s; start every process (--process-id 0 .. {num_processes - 1})")
        for conn in joined.values():
            with conn:
                with contextlib.suppress(OSError):
                    conn.sendall(go if problem is None else f"abort {problem}\n".encode())
                    conn.recv(1)  # the peer closes first, so the port is free again for JAX's runtime
    with watch_server:
        if problem is not None:
            raise ValueError(f"process 0: {problem}")
        return _accept_watchers(watch_server, num_processes, deadline, timeout_seconds)


def _listen(port: int, until: float) -> socket.socket:
    """A server socket on port (all interfaces), retried while the port is in use until the monotonic time until
    (the previous run's coordination service keeps it a few seconds after its run ended: coordination_service)."""
    import errno
    import time

    while True:
        try:
            return socket.create_server(("", port))
        except OSError as error:
            if error.errno != errno.EADDRINUSE or time.monotonic() >= until:
                raise ValueError(f"process 0: cannot listen on port {port} ({error.strerror}); is another process 0 "
                                 "of this run (or another program) using it?") from None
            time.sleep(0.2)


def _accept_watchers(server: socket.socket, num_processes: int, deadline: float,
                     timeout_seconds: float) -> dict[int, socket.socket]:
    """Process 0: one watch connection from every other process (each says `watch ID`)."""
    import time

    watchers: dict[int, socket.socket] = {}
    while len(watchers) < num_processes - 1:
        server.settimeout(max(0.01, deadline + 10 - time.monotonic()))
        try:
            conn, _ = server.accept()
            conn.settimeout(5)
            words = conn.makefile().readline().split()
            peer = int(words[1]) if len(words) == 2 and words[0] == "watch" else -1
        except (socket.timeout, OSError, ValueError):
            break
        if 0 < peer < num_processes and peer not in watchers:
            watchers[peer] = conn
        else:
            conn.close()
    missing = sorted(set(range(1, num_processes)) - set(watchers))
    if missing:
        for conn in watchers.values():
            conn.close()
        raise ValueError(f"process 0: process(es) {', '.join(map(str, missing))} checked in but did not open their "
                         f"watch connection within {timeout_seconds:g}s (a firewall between the hosts?)")
    return watchers


def _join_watch(host: str, port: int, process_id: int, deadline: float,
                timeout_seconds: float) -> dict[int, socket.socket]:
    """A process other than 0: open its watch connection to process 0 (see rendezvous)."""
    import time

    try:
        conn = socket.create_connection((host, port), timeout=max(1.0, deadline + 10 - time.monotonic()))
        conn.sendall(f"watch {process_id}\n".encode())
    except OSError as error:
        raise ValueError(f"process {process_id}: cannot open the watch connection to process 0 at {host}:{port} "
                         f"({error.strerror or error}; a firewall between the hosts?)") from None
    return {0: conn}


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


# ------------------------------------------------------------------------------------ agreement across processes
def host_tree(tree: Any) -> Any:
    """Device arrays -> numpy; replicated arrays of a multi-process run are read from a local replica."""

    def leaf(x):
        return np.asarray(x if getattr(x, "is_fully_addressable", True) else x.addressable_data(0))

    return jax.tree.map(leaf, tree)


def sync_processes(name: str) -> None:
    """Wait until every process of a multi-host run got here (no-op on one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def agree_across_processes(flag: bool) -> bool:
    """True if any process raised flag (e.g. every process must stop after the same chunk)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray([flag], np.int32))))


def gather_json(values: Any) -> list[Any]:
    """Every process's JSON-ready `values`, in process order (one all-gather of length-prefixed bytes)."""
    import json

    if jax.process_count() == 1:
        return [json.loads(json.dumps(values))]
    from jax.experimental import multihost_utils

    text = json.dumps(values, sort_keys=True).encode()
    size = 1 << max(12, (len(text) + 4).bit_length())
    sizes = np.asarray(multihost_utils.process_allgather(np.asarray([size], np.int32))).reshape(-1)
    buffer = np.zeros(int(sizes.max()), np.uint8)
    buffer[:4] = np.frombuffer(np.int32(len(text)).tobytes(), np.uint8)
    buffer[4:4 + len(text)] = np.frombuffer(text, np.uint8)
    everyone = np.asarray(multihost_utils.process_allgather(buffer)).reshape(jax.process_count(), -1)
    return [json.loads(row[4:4 + int(np.frombuffer(row[:4].tobytes(), np.int32)[0])].tobytes()) for row in everyone]


def agree_on_settings(settings: dict[str, dict[str, Any]]) -> None:
    """Every process of a multi-host run must have been started with the same settings ({part: {name: value}},
    JSON-ready): ValueError naming each `part.name` that differs from process 0's, with both values. Checked once,
    right after joining; a no-op on one process."""
    if jax.process_count() == 1:
        return
    decoded = gather_json(settings)
    reference = decoded[0]
    for process, other in enumerate(decoded[1:], start=1):
        differing = [f"{part}.{name} (process 0: {reference[part].get(name)!r}, process {process}: "
                     f"{other[part].get(name)!r})" for part in sorted(reference)
                     for name in sorted(set(reference[part]) | set(other.get(part, {})))
                     if reference[part].get(name) != other.get(part, {}).get(name)]
        if differing:
            raise ValueError(f"the processes of this run were started with different settings: "
                             f"{', '.join(differing)}; start every process with the same flags")
